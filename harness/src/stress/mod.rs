//! The stress mode: N task lifecycles with P in flight against one shim (or one shim per task),
//! with per-operation latency percentiles, throughput, and the shim's RSS and open file
//! descriptors sampled at idle, at peak and at the end.
//!
//! In the one-shim mode every task is created through one connection, each in its own bundle
//! carrying the grouping annotations (`io.kubernetes.cri.sandbox-id`,
//! `io.containerd.runc.v2.group`, `io.containerd.reaper.v2.group`), as a pod's containers reach
//! one shim under containerd. The `start` handshake runs once; with `--shim-per-task` it runs
//! for every task, each shim is shut down and its `delete` action run, as containerd does.
//!
//! With a soak ([`SoakOptions`]) lifecycles start until a deadline instead of N times, and the
//! one shim's resources are sampled at intervals and judged for growth ([`soak`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::bundle::RootfsKind;
use crate::dialect::Dialect;
use crate::provenance::{Provenance, ShimUnderTest};

mod benchmark;
mod lifecycle;
mod run;
pub mod soak;

pub use benchmark::BenchmarkEntry;
pub use soak::{SoakOptions, SoakReport, SoakSample};

/// What to run.
#[derive(Debug, Clone)]
pub struct StressOptions {
    /// The shim binary.
    pub shim: PathBuf,
    /// Number of task lifecycles.
    pub tasks: usize,
    /// Lifecycles in flight at once.
    pub parallel: usize,
    /// Launch one shim per task instead of one shim for all.
    pub shim_per_task: bool,
    /// The containerd dialect to imitate.
    pub dialect: Dialect,
    /// The rootfs for bundles (busybox for shims that isolate, e.g. runc).
    pub rootfs: RootfsKind,
    /// The init process of every task.
    pub args: Vec<String>,
    /// Bound on every RPC.
    pub rpc_timeout: Duration,
    /// Run lifecycles until this much time has passed (one-shim mode), sampling the shim for
    /// growth; `tasks` is ignored then.
    pub soak: Option<SoakOptions>,
}

impl Default for StressOptions {
    fn default() -> Self {
        StressOptions {
            shim: PathBuf::new(),
            tasks: 1000,
            parallel: 8,
            shim_per_task: false,
            dialect: Dialect::default(),
            rootfs: RootfsKind::None,
            args: vec!["true".into()],
            rpc_timeout: Duration::from_secs(10),
            soak: None,
        }
    }
}

/// Percentiles of one operation, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Percentiles {
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

impl Percentiles {
    /// Percentiles of `samples` (nearest-rank); all zero when empty.
    pub fn of(samples: &mut [Duration]) -> Percentiles {
        samples.sort_unstable();
        let at = |q: f64| -> u64 {
            if samples.is_empty() {
                return 0;
            }
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1].as_micros() as u64
        };
        Percentiles {
            count: samples.len(),
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: samples.last().map(|d| d.as_micros() as u64).unwrap_or(0),
        }
    }
}

/// RSS and file descriptors of the shim server(s) at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct Sample {
    /// Resident set size in KiB (summed over the live servers).
    pub rss_kib: u64,
    /// Open file descriptors (summed over the live servers).
    pub fds: u64,
    /// Threads (summed over the live servers).
    pub threads: u64,
    /// Servers sampled.
    pub servers: u64,
}

/// Resource samples of the run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Resources {
    /// After the launch and one warm-up lifecycle, before the measured ones (one-shim mode
    /// only): what the shim keeps open for its whole life is counted here.
    pub idle: Option<Sample>,
    /// The largest RSS seen while tasks ran (with the fds and threads of that moment).
    pub peak: Sample,
    /// After every task was deleted, before Shutdown (one-shim mode only).
    pub end: Option<Sample>,
}

/// The result of a stress run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StressReport {
    /// Lifecycles asked for.
    pub tasks: usize,
    /// In flight at once.
    pub parallel: usize,
    /// `one-shim` or `shim-per-task`.
    pub mode: String,
    /// Lifecycles that completed.
    pub completed: usize,
    /// Lifecycles that failed, with the first few reasons.
    pub failed: usize,
    /// Up to ten failure messages.
    pub errors: Vec<String>,
    /// Wall time of all lifecycles.
    pub duration_ms: u64,
    /// Completed lifecycles per second.
    pub tasks_per_sec: f64,
    /// Latency per operation: launch (per-task mode), create, start, wait (start → exit seen),
    /// delete, shutdown (per-task mode), lifecycle (the whole task).
    pub latency: BTreeMap<String, Percentiles>,
    /// Shim resources.
    pub resources: Resources,
    /// Leftovers found after the run (processes, sockets, zombies).
    pub leaks: Vec<String>,
    /// Where it ran.
    #[serde(serialize_with = "crate::provenance::kebab_case")]
    pub provenance: Provenance<ShimUnderTest, ()>,
    /// The soak's samples and verdict (soak runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakReport>,
}

impl StressReport {
    /// Whether every lifecycle completed, nothing leaked and (in a soak) nothing grew.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.leaks.is_empty() && self.soak.as_ref().is_none_or(|s| s.ok())
    }

    /// A human-readable summary.
    pub fn render_human(&self) -> String {
        let mut s = format!(
            "{} lifecycles ({}, {} in flight): {} completed, {} failed in {} ms = {:.0} tasks/s\n",
            self.tasks,
            self.mode,
            self.parallel,
            self.completed,
            self.failed,
            self.duration_ms,
            self.tasks_per_sec
        );
        s.push_str(&format!(
            "{:<10} {:>8} {:>10} {:>10} {:>10} {:>10}\n",
            "op", "n", "p50 µs", "p90 µs", "p99 µs", "max µs"
        ));
        for (op, p) in &self.latency {
            s.push_str(&format!(
                "{:<10} {:>8} {:>10} {:>10} {:>10} {:>10}\n",
                op, p.count, p.p50_us, p.p90_us, p.p99_us, p.max_us
            ));
        }
        let fmt = |x: &Option<Sample>| {
            x.map(|x| {
                format!(
                    "{} KiB rss, {} fds, {} threads",
                    x.rss_kib, x.fds, x.threads
                )
            })
            .unwrap_or_else(|| "-".into())
        };
        s.push_str(&format!(
            "shim: idle {}; peak {}; end {}\n",
            fmt(&self.resources.idle),
            fmt(&Some(self.resources.peak)),
            fmt(&self.resources.end)
        ));
        if let Some(soak) = &self.soak {
            s.push_str(&soak.render_human());
        }
        for e in &self.errors {
            s.push_str(&format!("error: {e}\n"));
        }
        for l in &self.leaks {
            s.push_str(&format!("leak: {l}\n"));
        }
        s
    }
}

/// The number after `name` (`VmRSS:`, `Threads:`) in a `/proc/<pid>/status` text; 0 when absent.
pub(crate) fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Samples `/proc/<pid>` of the live servers among `pids`: an exited server that its parent
/// (here PID 1) has not reaped yet is a zombie with no memory or fds of its own, and is not
/// counted (with `--shim-per-task` they made "61 servers" of one lifecycle in flight).
pub fn sample(pids: &[i32]) -> Sample {
    let mut out = Sample::default();
    for &pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let state = status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .and_then(|v| v.trim().chars().next());
        if matches!(state, Some('Z' | 'X')) {
            continue;
        }
        out.rss_kib += status_field(&status, "VmRSS:");
        out.threads += status_field(&status, "Threads:");
        out.fds += std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        out.servers += 1;
    }
    out
}

/// Why a stress run could not happen at all (failed lifecycles are counted in the report).
#[derive(Debug, thiserror::Error)]
pub enum StressError {
    /// The mock or a bundle could not be set up.
    #[error(transparent)]
    Harness(#[from] crate::error::HarnessError),
    /// The one shim of the run could not be launched.
    #[error("launching {shim}: {source}")]
    Launch {
        /// The shim binary.
        shim: String,
        /// Why.
        #[source]
        source: crate::error::LaunchError,
    },
    /// The options contradict each other.
    #[error("{0}")]
    Options(String),
}

/// Runs the stress mode. The lifecycles run as local tasks of one thread (the mock is not
/// shareable across threads); the shim does the work being measured.
pub async fn run(opts: StressOptions) -> Result<StressReport, StressError> {
    tokio::task::LocalSet::new()
        .run_until(run::run_local(opts))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs;

    #[test]
    fn a_zombie_server_is_not_sampled_a_live_one_is() {
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dpid = dead.id() as i32;
        // Not reaped yet: a zombie until the wait below.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while procfs::proc_info(dpid).is_some_and(|p| p.state != 'Z') {
            assert!(std::time::Instant::now() < deadline, "true did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
        let both = sample(&[live.id() as i32, dpid]);
        let zombie = sample(&[dpid]);
        live.kill().unwrap();
        live.wait().unwrap();
        dead.wait().unwrap();
        assert_eq!(zombie.servers, 0, "{zombie:?}");
        assert_eq!(both.servers, 1, "{both:?}");
        assert!(both.threads >= 1 && both.rss_kib > 0, "{both:?}");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(
            (p.count, p.p50_us, p.p90_us, p.p99_us, p.max_us),
            (100, 50, 90, 99, 100)
        );
        let p = Percentiles::of(&mut []);
        assert_eq!(p.count, 0);
        assert_eq!(p.p99_us, 0);
    }

    #[test]
    fn sample_reads_this_process() {
        let s = sample(&[std::process::id() as i32]);
        assert_eq!(s.servers, 1);
        assert!(s.rss_kib > 0 && s.fds > 0 && s.threads > 0, "{s:?}");
        assert_eq!(sample(&[i32::MAX]).servers, 0);
    }
}
