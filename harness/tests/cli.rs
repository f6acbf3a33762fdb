//! The `harness` command line: exit status 2 with a one-line located error for runs that cannot
//! happen (bad YAML, unknown step, bad duration, missing or non-executable shim), the JSON report
//! of the public contract, exit 1 on a failed scenario, `schema` and `list`.

use testkit::reaper;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

fn harness() -> Command {
    Command::cargo_bin("harness").expect("the harness binary (cargo build -p harness)")
}

/// A scenarios dir with one file `g/<name>.yaml`.
fn suite(name: &str, text: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(d.path().join("g")).expect("mkdir");
    std::fs::write(d.path().join(format!("g/{name}.yaml")), text).expect("write");
    d
}

const OK: &str = "description: exits 0\nlevel: must\nreference: https://example.invalid/spec\nprocess: {args: [true]}\nsteps:\n  - create: {}\n  - start: {}\n  - wait: {expect: {exit-status: 0}}\n  - delete: {}\n  - shutdown: {}\n";

/// Runs `harness run` on a bad file; asserts exit 2 and one stderr line `file:line:col: ...`.
fn assert_bad(text: &str, line: usize, needle: &str) {
    let d = suite("bad", text);
    let out = harness()
        .args(["run", "--shim"])
        .arg(reaper())
        .arg("--scenarios")
        .arg(d.path())
        .output()
        .expect("run harness");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    let file = d.path().join("g/bad.yaml");
    let prefix = format!("harness: error: {}:{line}:", file.display());
    assert!(lines[0].starts_with(&prefix), "{err}");
    assert!(lines[0].contains(needle), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
}

#[test]
fn bad_yaml_is_exit_2_with_location() {
    assert_bad(
        "description: d\nprocess: {args: [true]\nsteps:\n  - create: {}\n",
        3,
        "did not find expected",
    );
}

#[test]
fn unknown_step_is_exit_2_with_location() {
    assert_bad(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - create: {}\n  - teleport: {}\n",
        5,
        "unknown variant `teleport`",
    );
}

#[test]
fn bad_duration_is_exit_2_with_location() {
    assert_bad(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - sleep: 3 fortnights\n",
        4,
        "invalid duration `3 fortnights`",
    );
}

#[test]
fn unknown_key_is_exit_2_with_location() {
    assert_bad(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - create: {stdinn: null}\n",
        4,
        "unknown field `stdinn`",
    );
}

#[test]
fn missing_shim_is_exit_2() {
    let d = suite("ok", OK);
    let out = harness()
        .args([
            "run",
            "--shim",
            "/nonexistent/containerd-shim-nope-v2",
            "--scenarios",
        ])
        .arg(d.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/nonexistent/containerd-shim-nope-v2") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn non_executable_shim_is_exit_2() {
    let d = suite("ok", OK);
    let shim = d.path().join("containerd-shim-noexec-v2");
    std::fs::write(&shim, "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = harness()
        .args(["run", "--shim"])
        .arg(&shim)
        .arg("--scenarios")
        .arg(d.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not executable"), "{err}");
}

#[test]
fn bad_arguments_are_exit_2() {
    let out = harness()
        .args(["run", "--containerd-version", "9.9", "--shim"])
        .arg(reaper())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = harness()
        .args(["run", "--format", "xml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn json_report_has_the_contract_shape() {
    let d = suite("ok", OK);
    let report = d.path().join("report.json");
    let out = harness()
        .args(["run", "--format", "json", "--shim"])
        .arg(reaper())
        .arg("--scenarios")
        .arg(d.path().join("g"))
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    assert_eq!(v["harness-version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        v["shim"],
        reaper()
            .canonicalize()
            .expect("canon")
            .display()
            .to_string()
    );
    assert_eq!(v["containerd-version"], "2.0");
    assert_eq!(v["summary"]["passed"], 1);
    assert_eq!(v["summary"]["failed"], 0);
    assert_eq!(v["summary"]["skipped"], 0);
    assert!(v["summary"]["duration-ms"].is_u64());
    let s = &v["scenarios"][0];
    assert_eq!(s["name"], "ok");
    assert_eq!(s["level"], "must");
    assert_eq!(s["status"], "passed");
    assert!(s["reason"].is_null());
    assert!(s["duration-ms"].is_u64());
    assert_eq!(s["leaks"], Value::Array(vec![]));
    assert!(s["stdout"].is_string() && s["stderr"].is_string());
    let steps = s["steps"].as_array().expect("steps");
    let names: Vec<_> = steps
        .iter()
        .map(|x| x["step"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["create", "start", "wait", "delete", "shutdown"]);
    for st in steps {
        assert_eq!(st["status"], "passed");
        assert!(st["duration-ms"].is_u64() && st["response"].is_object() && st["error"].is_null());
    }
    assert!(steps[0]["response"]["pid"].as_u64().is_some_and(|p| p > 0));
    let topics: Vec<_> = s["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["topic"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(topics, testkit::LIFECYCLE_TOPICS);
    assert!(s["events"][2]["event"]["exit-status"].is_u64());
}

#[test]
fn a_failed_scenario_is_exit_1_with_expected_vs_got() {
    let d = suite("wrong", &OK.replace("exit-status: 0", "exit-status: 3"));
    let out = harness()
        .args(["run", "--shim"])
        .arg(reaper())
        .arg("--scenarios")
        .arg(d.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL  g/wrong (must)"), "{text}");
    assert!(
        text.contains("step 3 (wait): Wait response: exit-status: expected 3, got 0"),
        "{text}"
    );
    assert!(
        text.contains("events seen: [/tasks/create, /tasks/start, /tasks/exit"),
        "{text}"
    );
}

#[test]
fn tap_and_junit_formats() {
    let d = suite("ok", OK);
    let out = harness()
        .args(["run", "--format", "tap", "--shim"])
        .arg(reaper())
        .arg("--scenarios")
        .arg(d.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("TAP version 13\n1..1\nok 1 - g/ok (must)\n"),
        "{text}"
    );
    let out = harness()
        .args(["run", "--format", "junit", "--shim"])
        .arg(reaper())
        .arg("--scenarios")
        .arg(d.path())
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("<testcase classname=\"g\" name=\"g/ok\""),
        "{text}"
    );
}

#[test]
fn profile_xfail_is_not_a_failure() {
    let d = suite("wrong", &OK.replace("exit-status: 0", "exit-status: 3"));
    let profile = d.path().join("profile.yaml");
    std::fs::write(&profile, "xfail: [wrong]\n").expect("write");
    let out = harness()
        .args(["run", "--format", "json", "--shim"])
        .arg(reaper())
        .arg("--scenarios")
        .arg(d.path().join("g"))
        .arg("--profile")
        .arg(&profile)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["scenarios"][0]["status"], "xfailed");
    assert_eq!(v["summary"]["xfailed"], 1);
}

#[test]
fn schema_and_list() {
    let out = harness().arg("schema").output().expect("run");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("schema is JSON");
    assert!(v["properties"]["steps"].is_object(), "{v}");
    assert!(v.to_string().contains("expect-error"));
    let d = suite("ok", OK);
    let out = harness()
        .args(["list", "--scenarios"])
        .arg(d.path())
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("g/ok") && l.contains("must")),
        "{text}"
    );
}

#[test]
fn the_bundled_suite_is_complete() {
    // >= 60 scenarios, each with a level and a reference URL.
    let out = harness().arg("list").output().expect("run");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().count() > 60, "{text}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    for l in harness::scenario::discover(&[dir]).expect("suite loads") {
        let text = std::fs::read_to_string(&l.path).expect("read");
        assert!(text.contains("\nlevel: "), "{} has no level", l.name);
        let r = l.scenario.reference.as_deref().unwrap_or("");
        assert!(r.starts_with("https://"), "{} has no reference URL", l.name);
    }
}

/// The example of shared/docs/scenario-format.md, verbatim (comments included).
const CONTRACT_EXAMPLE: &str = r#"description: SIGTERM ends a running init process with exit status 143
level: must                  # must | should | may   (default must)
reference: https://github.com/containerd/containerd/blob/v1.7.0/runtime/v2/README.md
requires: []                 # capabilities, see below; unmet -> skipped with the reason
process:                     # the init process, as in an OCI spec's `process`
  args: [sh, -c, "sleep 30"]
  env: [PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin]   # optional
  cwd: /                     # optional
  user: {uid: 0, gid: 0}     # optional
  terminal: false            # optional
stdin: ""                    # optional text fed to the init process's stdin
timeout: 30s                 # optional bound for the whole scenario
steps:
  - create: {}
  - start: {}
  - kill: {signal: SIGTERM}
  - wait: {expect: {exit-status: 143}, timeout: 5s}
  - state: {expect: {status: stopped, exit-status: 143}}
  - delete: {expect: {exit-status: 143}}
  - events:
      expect: [/tasks/create, /tasks/start, /tasks/exit, /tasks/delete]
  - shutdown: {}
"#;

#[test]
fn the_contract_example_runs_verbatim_against_the_reaper() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(d.path().join("lifecycle")).expect("mkdir");
    std::fs::write(d.path().join("lifecycle/sigterm.yaml"), CONTRACT_EXAMPLE).expect("write");
    let out = harness()
        .args(["run", "--format", "json", "--shim"])
        .arg(reaper())
        .arg("--scenarios")
        .arg(d.path())
        .output()
        .expect("run");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["scenarios"][0]["name"], "lifecycle/sigterm");
    assert_eq!(
        v["scenarios"][0]["status"], "passed",
        "{}",
        v["scenarios"][0]["reason"]
    );
    assert_eq!(out.status.code(), Some(0));
}

/// One scenario calling Update, which the reaper does not implement, at the given level.
fn update_scenario(level: &str) -> String {
    format!(
        "description: update\nlevel: {level}\nreference: https://example.invalid/spec\nprocess: {{args: [sleep, \"30\"]}}\nsteps:\n  - create: {{}}\n  - start: {{}}\n  - update: {{resources: {{cpu: {{shares: 512}}}}}}\n  - kill: {{signal: SIGKILL}}\n  - wait: {{}}\n  - delete: {{}}\n  - shutdown: {{}}\n"
    )
}

fn run_json(dir: &Path, extra: &[&str]) -> (Option<i32>, Value) {
    let out = harness()
        .args(["run", "--format", "json", "--shim"])
        .arg(reaper())
        .arg("--scenarios")
        .arg(dir)
        .args(extra)
        .output()
        .expect("run");
    let v = serde_json::from_slice(&out.stdout).expect("json");
    (out.status.code(), v)
}

#[test]
fn unimplemented_fails_a_must_and_skips_a_should() {
    let d = suite("upd", &update_scenario("must"));
    let (code, v) = run_json(d.path(), &[]);
    assert_eq!(code, Some(1));
    let s = &v["scenarios"][0];
    assert_eq!(s["status"], "failed");
    let reason = s["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("step 3 (update): Update: expected success, got error unimplemented"),
        "{reason}"
    );
    // The task left running by the failed step is ended before the leak check.
    assert_eq!(s["leaks"], Value::Array(vec![]), "{s}");
    let d = suite("upd", &update_scenario("should"));
    let (code, v) = run_json(d.path(), &[]);
    assert_eq!(code, Some(0));
    assert_eq!(v["scenarios"][0]["status"], "skipped");
    let reason = v["scenarios"][0]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("unimplemented to Update: capability update absent"),
        "{reason}"
    );
}

#[test]
fn profile_capabilities_skip_without_running() {
    let d = suite(
        "needs-exec",
        "description: d\nrequires: [exec]\nprocess: {args: [true]}\nsteps:\n  - create: {}\n",
    );
    let profile = d.path().join("p.yaml");
    std::fs::write(&profile, "capabilities: {exec: false}\n").expect("write");
    let (code, v) = run_json(
        &d.path().join("g"),
        &["--profile", profile.to_str().expect("utf8")],
    );
    assert_eq!(code, Some(0));
    let s = &v["scenarios"][0];
    assert_eq!(s["status"], "skipped");
    assert_eq!(s["reason"], "requires exec: absent (profile)");
    assert_eq!(s["steps"], Value::Array(vec![]));
}
