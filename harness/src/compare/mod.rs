//! `harness compare`: runs the conformance suite (the [`crate::engine`]) and the stress mode
//! ([`crate::stress`]) against several shims, one after the other, and writes the results side
//! by side: `compare.json` (the data, with provenance and a `schema_version`) and `index.html`
//! (one self-contained page: the conformance matrix, the latency and throughput table, plots).

mod doc;
mod html;
mod shims;
mod svg;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::bundle::RootfsKind;
use crate::dialect::Dialect;
use crate::engine::{self, RunConfig};
use crate::provenance::Provenance;
use crate::report::RunReport;
use crate::scenario::Loaded;
use crate::stress::{self, StressOptions};

pub use doc::{
    CompareDoc, CompareRun, Invocation, Latency, Resource, ScenarioOutcome, ShimResult,
    StressResult, StressSettings, SuiteResult,
};
pub use html::render as render_html;
pub use shims::{shim_specs, ShimSpec};

/// The version of `compare.json`'s layout; raised when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// The options of `harness compare` (the scenario selection is the CLI's own).
#[derive(clap::Args, Debug, Clone)]
pub struct CompareOptions {
    /// A shim binary to compare; give it two or more times (the same path twice is allowed,
    /// e.g. with different `--shim-env`).
    #[arg(long = "shim", value_name = "PATH", required = true)]
    pub shims: Vec<PathBuf>,
    /// Directory for compare.json and index.html (created when missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Which containerd to imitate for every shim: 1.6, 1.7, 2.0 or 2.3.
    #[arg(long, value_name = "VERSION", default_value = "2.0")]
    pub containerd_version: Dialect,
    /// Scenarios run in parallel (default: the number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Extra environment for a shim: `N:K=V` for the N-th `--shim` only (1-based), `K=V` for
    /// every shim; repeatable.
    #[arg(long = "shim-env", value_name = "[N:]K=V")]
    pub shim_env: Vec<String>,
    /// A profile (capabilities, expected failures shown as `xfailed`) as in `harness run
    /// --profile`: `N:FILE` for the N-th `--shim` only, `FILE` for every shim; repeatable, the
    /// last one for a shim wins.
    #[arg(long = "profile", value_name = "[N:]FILE")]
    pub profiles: Vec<String>,
    /// Root filesystem of the bundles, in the suite and in the stress run.
    #[arg(long, value_enum, default_value = "busybox")]
    pub rootfs: RootfsKind,
    /// Stress: task lifecycles per shim (default 200, 20 with --quick).
    #[arg(short = 'n', long = "stress-tasks", value_name = "N")]
    pub stress_tasks: Option<usize>,
    /// Stress: lifecycles in flight at once.
    #[arg(
        short = 'p',
        long = "stress-parallel",
        value_name = "P",
        default_value_t = 8
    )]
    pub stress_parallel: usize,
    /// Stress: one shim per task instead of one shim for all tasks.
    #[arg(long)]
    pub shim_per_task: bool,
    /// Leave out the stress run (conformance matrix only).
    #[arg(long, conflicts_with_all = ["stress_tasks", "shim_per_task"])]
    pub no_stress: bool,
    /// A short run: 20 stress lifecycles per shim unless -n says otherwise.
    #[arg(long)]
    pub quick: bool,
}

/// Why a comparison could not happen (failed scenarios and failed lifecycles are results).
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A `--shim` that is missing, not a file or not executable.
    #[error("shim `{path}`: {why}")]
    Shim {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A bad option value.
    #[error("{option}: {why}")]
    Option {
        /// The option (`--shim-env`, `-n`, ...).
        option: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The output directory or a file in it could not be written.
    #[error("--out `{path}`: {source}")]
    Out {
        /// The file or directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `--profile` file that cannot be read or parsed (names the file, line and column).
    #[error("--profile: {0}")]
    Profile(#[source] crate::scenario::LoadError),
    /// The async runtime could not start.
    #[error("tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Runs the comparison and writes `compare.json` and `index.html` into `opts.out`; returns the
/// document. `progress` sees one line per finished phase.
pub fn run(
    opts: &CompareOptions,
    scenarios: Vec<Loaded>,
    command: Vec<String>,
    mut progress: impl FnMut(&str),
) -> Result<CompareDoc, CompareError> {
    let started = Instant::now();
    let started_unix = crate::provenance::unix_now();
    let specs = shim_specs(&opts.shims, &opts.shim_env, &opts.profiles)?;
    let (jobs, tasks) = check_options(opts, &scenarios)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(jobs.clamp(2, 16))
        .enable_all()
        .build()
        .map_err(CompareError::Runtime)?;
    let mut shims = Vec::new();
    for spec in &specs {
        let suite = run_suite(&rt, opts, spec, &scenarios, jobs);
        progress(&format!(
            "{}: suite {} passed, {} failed, {} skipped, {} xfailed in {:.1}s",
            spec.name,
            suite.passed,
            suite.failed,
            suite.skipped,
            suite.xfailed,
            suite.duration_ms as f64 / 1000.0
        ));
        let (stress, stress_error) = if opts.no_stress {
            (None, None)
        } else {
            run_stress(&rt, opts, spec, tasks, &mut progress)
        };
        shims.push(ShimResult {
            name: spec.name.clone(),
            path: spec.path.display().to_string(),
            version: crate::provenance::shim_version(&spec.path),
            env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            profile: spec.profile.as_ref().map(|(p, _)| p.display().to_string()),
            suite,
            stress,
            stress_error,
        });
    }
    let run = CompareRun {
        duration_ms: started.elapsed().as_millis() as u64,
        scenarios: scenarios.len(),
        jobs,
        rootfs: opts.rootfs.as_str().into(),
        stress: (!opts.no_stress).then(|| StressSettings {
            tasks,
            parallel: opts.stress_parallel,
            mode: if opts.shim_per_task {
                "shim-per-task".into()
            } else {
                "one-shim".into()
            },
        }),
    };
    let mut provenance = Provenance::probe(
        opts.containerd_version.to_string(),
        Invocation { command },
        run,
    );
    provenance.started_unix = started_unix;
    let doc = CompareDoc {
        schema_version: SCHEMA_VERSION,
        provenance,
        shims,
    };
    write(&opts.out, &doc)?;
    Ok(doc)
}

/// Checks the options, and that the output directory can be written before the long part;
/// returns the scenario jobs and the stress lifecycles per shim.
fn check_options(
    opts: &CompareOptions,
    scenarios: &[Loaded],
) -> Result<(usize, usize), CompareError> {
    if opts.jobs == Some(0) {
        return Err(CompareError::Option {
            option: "--jobs",
            why: "expected at least 1".into(),
        });
    }
    let jobs = opts.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let tasks = opts
        .stress_tasks
        .unwrap_or(if opts.quick { 20 } else { 200 });
    if tasks == 0 || opts.stress_parallel == 0 {
        return Err(CompareError::Option {
            option: "-n/-p",
            why: "stress tasks and parallelism must be at least 1".into(),
        });
    }
    if scenarios.is_empty() {
        return Err(CompareError::Option {
            option: "--filter/--skip",
            why: "no scenario matches the selection".into(),
        });
    }
    // Fail before the long part when the output cannot be written.
    std::fs::create_dir_all(&opts.out).map_err(|source| CompareError::Out {
        path: opts.out.display().to_string(),
        source,
    })?;
    let probe = opts.out.join(".compare-write-test");
    std::fs::write(&probe, b"").map_err(|source| CompareError::Out {
        path: opts.out.display().to_string(),
        source,
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok((jobs, tasks))
}

/// The conformance suite against one shim.
fn run_suite(
    rt: &tokio::runtime::Runtime,
    opts: &CompareOptions,
    spec: &ShimSpec,
    scenarios: &[Loaded],
    jobs: usize,
) -> SuiteResult {
    let dialect = opts.containerd_version;
    let cfg = RunConfig {
        shim: spec.path.clone(),
        dialect,
        jobs,
        profile: spec
            .profile
            .as_ref()
            .map(|(_, p)| p.clone())
            .unwrap_or_default(),
        shim_env: spec.env.clone(),
        rootfs: opts.rootfs,
        ..RunConfig::default()
    };
    let t = Instant::now();
    let results = rt.block_on(engine::run_scenarios(&cfg, scenarios.to_vec(), |_| {}));
    let report = RunReport::new(
        spec.path.display().to_string(),
        dialect.to_string(),
        results,
        t.elapsed().as_millis() as u64,
    );
    SuiteResult::from_report(&report)
}

/// The stress mode against one shim, with its environment: its result, or why it could not run.
fn run_stress(
    rt: &tokio::runtime::Runtime,
    opts: &CompareOptions,
    spec: &ShimSpec,
    tasks: usize,
    progress: &mut dyn FnMut(&str),
) -> (Option<StressResult>, Option<String>) {
    let sopts = StressOptions {
        shim: spec.path.clone(),
        tasks,
        parallel: opts.stress_parallel,
        shim_per_task: opts.shim_per_task,
        dialect: opts.containerd_version,
        rootfs: opts.rootfs,
        ..Default::default()
    };
    // The stress mode has no environment option: the shim inherits this process's.
    let _env = EnvGuard::set(&spec.env);
    match rt.block_on(stress::run(sopts)) {
        Ok(r) => {
            progress(&format!(
                "{}: stress {} of {} lifecycles completed, {:.0} tasks/s",
                spec.name, r.completed, r.tasks, r.tasks_per_sec
            ));
            (Some(StressResult::from(&r)), None)
        }
        Err(e) => {
            let msg = error_chain(&e);
            progress(&format!("{}: stress could not run: {msg}", spec.name));
            (None, Some(msg))
        }
    }
}

/// Writes `compare.json` and `index.html` into `dir`.
pub fn write(dir: &Path, doc: &CompareDoc) -> Result<(), CompareError> {
    let out = |name: &str, body: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, body).map_err(|source| CompareError::Out {
            path: p.display().to_string(),
            source,
        })
    };
    let json = serde_json::to_string_pretty(doc).expect("the document serialises");
    out("compare.json", json.as_bytes())?;
    out("index.html", html::render(doc).as_bytes())
}

/// Sets environment variables for the life of the guard (the stress mode's shims inherit this
/// process's environment), restoring the previous values on drop. Only called between runs,
/// while no scenario or stress task is in flight.
struct EnvGuard(Vec<(String, Option<std::ffi::OsString>)>);

impl EnvGuard {
    fn set(env: &[(String, String)]) -> EnvGuard {
        let mut old = Vec::new();
        for (k, v) in env {
            old.push((k.clone(), std::env::var_os(k)));
            std::env::set_var(k, v);
        }
        EnvGuard(old)
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        for (k, v) in self.0.drain(..).rev() {
            match v {
                Some(v) => std::env::set_var(&k, v),
                None => std::env::remove_var(&k),
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}
