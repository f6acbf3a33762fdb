//! `harness compare`: runs the conformance suite (the [`crate::engine`]) and the stress mode
//! ([`crate::stress`]) against several shims, one after the other, and writes the results side
//! by side: `compare.json` (the data, with provenance and a `schema_version`) and `index.html`
//! (one self-contained page: the conformance matrix, the latency and throughput table, plots).

mod html;
mod svg;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::bundle::RootfsKind;
use crate::dialect::Dialect;
use crate::engine::{self, RunConfig};
use crate::provenance::Provenance;
use crate::report::RunReport;
use crate::scenario::{Loaded, Profile};
use crate::stress::{self, StressOptions, StressReport};

pub use html::render as render_html;

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

/// One shim to run, after validation.
#[derive(Debug, Clone)]
pub struct ShimSpec {
    /// The name on the page: the file name, disambiguated.
    pub name: String,
    /// The binary (canonical path).
    pub path: PathBuf,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Its profile and the file it came from.
    pub profile: Option<(PathBuf, Profile)>,
}

/// The whole `compare.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareDoc {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Where, when and how it was measured.
    pub provenance: Provenance<Invocation, CompareRun>,
    /// One entry per `--shim`, in command-line order.
    pub shims: Vec<ShimResult>,
}

/// The compare report's subject: the command line that ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invocation {
    /// The command line.
    pub command: Vec<String>,
}

/// How the comparison ran, after the machine in its provenance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareRun {
    /// Wall time of the whole comparison.
    pub duration_ms: u64,
    /// Scenarios run against each shim.
    pub scenarios: usize,
    /// Scenario jobs in parallel.
    pub jobs: usize,
    /// `busybox` or `none`.
    pub rootfs: String,
    /// The stress settings, or null when `--no-stress`.
    pub stress: Option<StressSettings>,
}

/// How the stress mode ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StressSettings {
    /// Lifecycles per shim.
    pub tasks: usize,
    /// In flight at once.
    pub parallel: usize,
    /// `one-shim` or `shim-per-task`.
    pub mode: String,
}

/// One shim's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimResult {
    /// The name on the page.
    pub name: String,
    /// The binary.
    pub path: String,
    /// The first line of `<shim> -v`, when it prints one.
    pub version: Option<String>,
    /// Extra environment given to it (`K=V`).
    pub env: Vec<String>,
    /// The `--profile` file used for it.
    pub profile: Option<String>,
    /// The conformance suite.
    pub suite: SuiteResult,
    /// The stress run; null when left out or when it could not run (see `stress_error`).
    pub stress: Option<StressResult>,
    /// Why the stress run could not happen at all.
    pub stress_error: Option<String>,
}

/// The suite's results against one shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteResult {
    /// Passed scenarios.
    pub passed: usize,
    /// Failed scenarios.
    pub failed: usize,
    /// Skipped scenarios.
    pub skipped: usize,
    /// Expected failures.
    pub xfailed: usize,
    /// Wall time of the suite.
    pub duration_ms: u64,
    /// Per scenario, in name order.
    pub scenarios: Vec<ScenarioOutcome>,
}

/// One cell of the matrix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioOutcome {
    /// `group/name`.
    pub id: String,
    /// The group.
    pub group: String,
    /// must | should | may.
    pub level: String,
    /// passed | failed | skipped | xfailed.
    pub outcome: String,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
    /// Wall time.
    pub duration_ms: u64,
}

/// The stress run's numbers against one shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StressResult {
    /// Lifecycles asked for.
    pub tasks: usize,
    /// In flight at once.
    pub parallel: usize,
    /// `one-shim` or `shim-per-task`.
    pub mode: String,
    /// Lifecycles that completed.
    pub completed: usize,
    /// Lifecycles that failed.
    pub failed: usize,
    /// The first failure messages.
    pub errors: Vec<String>,
    /// Wall time.
    pub duration_ms: u64,
    /// Completed lifecycles per second.
    pub tasks_per_sec: f64,
    /// Per operation (create, start, wait, delete, lifecycle, ...).
    pub latency: BTreeMap<String, Latency>,
    /// RSS and file descriptors at idle, peak and end (idle and end: one-shim mode only).
    pub resources: BTreeMap<String, Option<Resource>>,
    /// Leftovers after the run.
    pub leaks: Vec<String>,
}

/// Percentiles of one operation, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// The shim server's resources at one moment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resource {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
}

impl From<&StressReport> for StressResult {
    fn from(r: &StressReport) -> StressResult {
        let res = |s: Option<stress::Sample>| {
            s.map(|s| Resource {
                rss_kib: s.rss_kib,
                fds: s.fds,
                threads: s.threads,
            })
        };
        let resources = [
            ("idle", res(r.resources.idle)),
            ("peak", res(Some(r.resources.peak))),
            ("end", res(r.resources.end)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        StressResult {
            tasks: r.tasks,
            parallel: r.parallel,
            mode: r.mode.clone(),
            completed: r.completed,
            failed: r.failed,
            errors: r.errors.clone(),
            duration_ms: r.duration_ms,
            tasks_per_sec: r.tasks_per_sec,
            latency: r
                .latency
                .iter()
                .map(|(k, p)| {
                    (
                        k.clone(),
                        Latency {
                            count: p.count,
                            p50_us: p.p50_us,
                            p90_us: p.p90_us,
                            p99_us: p.p99_us,
                            max_us: p.max_us,
                        },
                    )
                })
                .collect(),
            resources,
            leaks: r.leaks.clone(),
        }
    }
}

impl SuiteResult {
    fn from_report(r: &RunReport) -> SuiteResult {
        SuiteResult {
            passed: r.summary.passed,
            failed: r.summary.failed,
            skipped: r.summary.skipped,
            xfailed: r.summary.xfailed,
            duration_ms: r.summary.duration_ms,
            scenarios: r
                .scenarios
                .iter()
                .map(|s| ScenarioOutcome {
                    id: s.name.clone(),
                    group: s.group().to_string(),
                    level: s.level.clone(),
                    outcome: s.status.as_str().to_string(),
                    reason: s.reason.clone(),
                    duration_ms: s.duration_ms,
                })
                .collect(),
        }
    }
}

/// Checks every `--shim` (exists, regular file, executable), names them and splits
/// `--shim-env` and `--profile` per shim.
pub fn shim_specs(
    paths: &[PathBuf],
    env: &[String],
    profiles: &[String],
) -> Result<Vec<ShimSpec>, CompareError> {
    if paths.len() < 2 {
        return Err(CompareError::Option {
            option: "--shim",
            why: format!("give at least two shims to compare (got {})", paths.len()),
        });
    }
    let mut specs = Vec::new();
    for p in paths {
        let shim_err = |why: &str| CompareError::Shim {
            path: p.display().to_string(),
            why: why.to_string(),
        };
        let meta = std::fs::metadata(p).map_err(|e| {
            shim_err(&if e.kind() == std::io::ErrorKind::NotFound {
                "not found".to_string()
            } else {
                e.to_string()
            })
        })?;
        if !meta.is_file() {
            return Err(shim_err("not a regular file"));
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(shim_err("not executable (chmod +x it)"));
        }
        specs.push(ShimSpec {
            name: String::new(),
            path: std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
            env: vec![],
            profile: None,
        });
    }
    for kv in env {
        let (target, kv2) = shim_index("--shim-env", kv, specs.len())?;
        let (k, v) = kv2
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| CompareError::Option {
                option: "--shim-env",
                why: format!("`{kv}`: expected K=V or N:K=V"),
            })?;
        for (i, s) in specs.iter_mut().enumerate() {
            if target.is_none_or(|t| t == i) {
                s.env.push((k.to_string(), v.to_string()));
            }
        }
    }
    for arg in profiles {
        let (target, file) = shim_index("--profile", arg, specs.len())?;
        let path = PathBuf::from(file);
        let profile = Profile::load(&path).map_err(CompareError::Profile)?;
        for (i, s) in specs.iter_mut().enumerate() {
            if target.is_none_or(|t| t == i) {
                s.profile = Some((path.clone(), profile.clone()));
            }
        }
    }
    let names = display_names(&specs);
    for (s, n) in specs.iter_mut().zip(names) {
        s.name = n;
    }
    Ok(specs)
}

/// Splits `N:rest` (the N-th shim, 1-based, returned 0-based) from a plain `rest` (every shim).
fn shim_index<'a>(
    option: &'static str,
    arg: &'a str,
    shims: usize,
) -> Result<(Option<usize>, &'a str), CompareError> {
    match arg.split_once(':') {
        Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            let i: usize = n.parse().unwrap_or(0);
            if i == 0 || i > shims {
                return Err(CompareError::Option {
                    option,
                    why: format!("`{arg}`: shim {n} does not exist (1..={shims})"),
                });
            }
            Ok((Some(i - 1), rest))
        }
        _ => Ok((None, arg)),
    }
}

/// Names for the page: the file name; with extra environment, the `K=V`s in brackets; and when
/// two are still the same, `#N` (the shim's place on the command line).
fn display_names(specs: &[ShimSpec]) -> Vec<String> {
    let base: Vec<String> = specs
        .iter()
        .map(|s| {
            let mut n = s
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| s.path.display().to_string());
            if !s.env.is_empty() {
                let kv: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                n.push_str(&format!(" [{}]", kv.join(" ")));
            }
            n
        })
        .collect();
    base.iter()
        .enumerate()
        .map(|(i, n)| {
            if base.iter().filter(|m| *m == n).count() > 1 {
                format!("{n} #{}", i + 1)
            } else {
                n.clone()
            }
        })
        .collect()
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
    let dialect = opts.containerd_version;
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

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(jobs.clamp(2, 16))
        .enable_all()
        .build()
        .map_err(CompareError::Runtime)?;
    let scenario_count = scenarios.len();
    let mut shims = Vec::new();
    for spec in &specs {
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
        let results = rt.block_on(engine::run_scenarios(&cfg, scenarios.clone(), |_| {}));
        let report = RunReport::new(
            spec.path.display().to_string(),
            dialect.to_string(),
            results,
            t.elapsed().as_millis() as u64,
        );
        let suite = SuiteResult::from_report(&report);
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
            let sopts = StressOptions {
                shim: spec.path.clone(),
                tasks,
                parallel: opts.stress_parallel,
                shim_per_task: opts.shim_per_task,
                dialect,
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
        scenarios: scenario_count,
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
    let mut provenance = Provenance::probe(dialect, Invocation { command }, run);
    provenance.started_unix = started_unix;
    let doc = CompareDoc {
        schema_version: SCHEMA_VERSION,
        provenance,
        shims,
    };
    write(&opts.out, &doc)?;
    Ok(doc)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, env: &[(&str, &str)]) -> ShimSpec {
        ShimSpec {
            name: String::new(),
            path: path.into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            profile: None,
        }
    }

    #[test]
    fn names_are_file_names_disambiguated() {
        let names = display_names(&[
            spec("/usr/bin/containerd-shim-runc-v2", &[]),
            spec("/opt/x/containerd-shim-runc-v2", &[]),
            spec("/t/containerd-shim-reaper-v2", &[]),
            spec(
                "/t/containerd-shim-faulty-v2",
                &[("FAULTY_SHIM", "no-stdout")],
            ),
        ]);
        assert_eq!(
            names,
            [
                "containerd-shim-runc-v2 #1",
                "containerd-shim-runc-v2 #2",
                "containerd-shim-reaper-v2",
                "containerd-shim-faulty-v2 [FAULTY_SHIM=no-stdout]",
            ]
        );
    }

    #[test]
    fn shim_env_goes_to_the_numbered_shim_or_to_all() {
        let t = std::env::current_exe().unwrap();
        let specs = shim_specs(
            &[t.clone(), t.clone()],
            &["2:A=1".into(), "B=x:y".into()],
            &[],
        )
        .unwrap();
        assert_eq!(specs[0].env, [("B".to_string(), "x:y".to_string())]);
        assert_eq!(
            specs[1].env,
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x:y".to_string())
            ]
        );
        assert_ne!(specs[0].name, specs[1].name);
        let e = shim_specs(&[t.clone(), t.clone()], &["3:A=1".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("shim 3 does not exist"), "{e}");
        let e = shim_specs(&[t.clone(), t.clone()], &["novalue".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("`novalue`"), "{e}");
        let e = shim_specs(&[t.clone(), "/nonexistent/shim-x".into()], &[], &[]).unwrap_err();
        assert_eq!(e.to_string(), "shim `/nonexistent/shim-x`: not found");
        let e = shim_specs(&[t], &[], &[]).unwrap_err();
        assert!(e.to_string().contains("at least two"), "{e}");
    }

    #[test]
    fn profiles_go_to_the_numbered_shim_and_bad_ones_are_named() {
        let t = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("p.yaml");
        std::fs::write(&good, "xfail:\n  - lifecycle/sigterm\n").unwrap();
        let arg = format!("2:{}", good.display());
        let specs = shim_specs(&[t.clone(), t.clone()], &[], &[arg]).unwrap();
        assert!(specs[0].profile.is_none());
        let (path, prof) = specs[1].profile.as_ref().unwrap();
        assert_eq!(path, &good);
        assert!(prof.is_xfail("lifecycle/sigterm"));
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "xfail: [a]\nbogus: 1\n").unwrap();
        let e = shim_specs(&[t.clone(), t], &[], &[bad.display().to_string()]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("--profile: ") && msg.contains("bad.yaml:"),
            "{msg}"
        );
    }
}
