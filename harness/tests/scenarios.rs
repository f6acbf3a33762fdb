//! The bundled suite as tests: one libtest-mimic trial per `scenarios/**/*.yaml`, named by its
//! path (`lifecycle/sigterm`), run against the reaper shim; a pass snapshots the redacted
//! transcript (requests, responses, events, output) with insta under `tests/snapshots/`. A
//! scenario the reaper cannot run (unmet requirement) shows as ignored with the reason.

use std::path::{Path, PathBuf};

use harness::engine::{run_scenario, RunConfig};
use harness::redact::Redactor;
use harness::report::{ScenarioResult, Status};
use harness::scenario::{self, Loaded};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use serde_json::Value;

fn reaper() -> Result<PathBuf, String> {
    Ok(testkit::reaper())
}

fn one_line(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The transcript of a passed scenario, redacted: stable across runs and machines.
fn transcript(r: &ScenarioResult) -> String {
    let mut red = Redactor::new();
    for s in &r.steps {
        let id = s
            .request
            .as_ref()
            .and_then(|q| q.get("id"))
            .and_then(Value::as_str)
            .unwrap_or("main")
            .to_string();
        let exec = s
            .request
            .as_ref()
            .and_then(|q| q.get("exec-id"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let pid = |k: &str| s.response.get(k).and_then(Value::as_u64).filter(|p| *p > 0);
        match s.step.as_str() {
            "create" => {
                if let Some(p) = pid("pid") {
                    let name = if id == "main" {
                        "init".to_string()
                    } else {
                        format!("init-{id}")
                    };
                    red.add_pid(p, &name);
                }
            }
            "start" if !exec.is_empty() => {
                if let Some(p) = pid("pid") {
                    red.add_pid(p, &format!("exec-{exec}"));
                }
            }
            "connect" => {
                if let Some(p) = pid("shim-pid") {
                    red.add_pid(p, "shim");
                }
            }
            _ => {}
        }
    }
    // Any other pid (e.g. a created exec's) by order of first appearance.
    let mut known: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();
    for s in &r.steps {
        for k in ["pid", "shim-pid", "task-pid"] {
            if let Some(p) = s.response.get(k).and_then(Value::as_u64).filter(|p| *p > 0) {
                if known.insert(p) && red.redact(&p.to_string()) == p.to_string() {
                    red.add_pid(p, &format!("p{}", known.len()));
                }
            }
        }
    }
    // Scratch dirs under any $TMPDIR (the built-in rule covers /tmp only).
    let tmp = std::env::temp_dir().display().to_string();
    let tmp = tmp.trim_end_matches('/');
    let _ = red.add_regex(
        &format!(r"{}/\.tmp[A-Za-z0-9_]+", regex::escape(tmp)),
        "[TMP]",
    );
    // Socket names hash the scenario's own namespace; that namespace is random.
    let _ = red.add_regex(r"[0-9a-f]{64}", "[HASH]");
    let _ = red.add_regex(r"default-tmp[A-Za-z0-9_]+", "[NAMESPACE]");
    // Metrics differ run to run.
    let _ = red.add_regex(r#""stats-size":\d+"#, r#""stats-size":[SIZE]"#);
    let mut out = format!(
        "scenario: {} ({})\n{}\nsteps:\n",
        r.name, r.level, r.description
    );
    for s in &r.steps {
        let req = s.request.as_ref().map(one_line).unwrap_or_default();
        let answer = match &s.error {
            Some(e) => format!("error {}", one_line(e)),
            None => one_line(&s.response),
        };
        out.push_str(&format!(
            "  {} {} => {} [{}]\n",
            s.step,
            req,
            answer,
            s.status.as_str()
        ));
    }
    out.push_str("events:\n");
    // Per container in arrival order: the order between containers is a race.
    let mut events: Vec<_> = r.events.iter().collect();
    events.sort_by_key(|e| {
        e.event
            .get("container-id")
            .and_then(Value::as_str)
            .unwrap_or("")
    });
    for e in events {
        let from = if e.source == "shim" {
            String::new()
        } else {
            format!(" (from {})", e.source)
        };
        out.push_str(&format!("  {}{} {}\n", e.topic, from, one_line(&e.event)));
    }
    out.push_str(&format!("stdout: {:?}\nstderr: {:?}\n", r.stdout, r.stderr));
    let mut v = Value::String(out);
    red.redact_json(&mut v);
    v.as_str().unwrap_or_default().to_string()
}

fn run_one(l: Loaded) -> Result<Completion, Failed> {
    let shim = reaper()?;
    // A `bootstrap:` scenario needs containerd 2.3's handshake; the rest run in the default.
    let dialect = if l.scenario.bootstrap.is_some() {
        harness::dialect::Dialect::V2_3
    } else {
        harness::dialect::Dialect::default()
    };
    let cfg = RunConfig {
        shim,
        dialect,
        ..RunConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let r = rt.block_on(run_scenario(&cfg, &l));
    match r.status {
        Status::Skipped => Ok(Completion::ignored_with(
            r.reason.unwrap_or_else(|| "skipped".into()),
        )),
        Status::Failed | Status::Xfailed => {
            let mut r2 = r.clone();
            r2.status = Status::Failed;
            Err(harness::report::human_failure(&r2).into())
        }
        Status::Passed => {
            let t = transcript(&r);
            let snap_name = l.name.replace('/', "__");
            let mut settings = insta::Settings::clone_current();
            settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots"));
            settings.set_prepend_module_to_snapshot(false);
            settings.set_omit_expression(true);
            settings.set_input_file(&l.path);
            settings.bind(|| insta::assert_snapshot!(snap_name, t));
            Ok(Completion::Completed)
        }
    }
}

fn main() {
    // As `harness run` does: scratch space on tmpfs unless TMPDIR says otherwise (set before any
    // thread starts).
    let shm = Path::new("/dev/shm");
    if std::env::var_os("TMPDIR").is_none()
        && shm.is_dir()
        && nix::unistd::access(shm, nix::unistd::AccessFlags::W_OK).is_ok()
    {
        std::env::set_var("TMPDIR", shm);
    }
    let args = Arguments::from_args();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let trials = match scenario::discover(&[dir]) {
        Ok(all) => all
            .into_iter()
            .map(|l| {
                let name = l.name.clone();
                Trial::ignorable_test(name, move || run_one(l)).with_kind("scenario")
            })
            .collect(),
        // A suite that does not load is one failing trial naming the file, line and column.
        Err(e) => vec![Trial::test("suite-loads", move || {
            Err(e.to_string().into())
        })],
    };
    libtest_mimic::run(&args, trials).exit();
}
