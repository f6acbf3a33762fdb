//! `compare.json`: the document [`super::run`] writes and the page is rendered from, one
//! entry per shim (its suite and stress results), with the provenance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::provenance::Provenance;
use crate::report::RunReport;
use crate::stress::{self, StressReport};

/// The whole `compare.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareDoc {
    /// [`SCHEMA_VERSION`](super::SCHEMA_VERSION).
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
    pub(super) fn from_report(r: &RunReport) -> SuiteResult {
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
