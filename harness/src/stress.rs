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
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{DeleteRequest, ShutdownRequest, StartRequest, WaitRequest};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::bundle::{process, Bundle, BundleOptions, RootfsKind};
use crate::client::TaskClient;
use crate::dialect::Dialect;
use crate::launch::{LaunchOptions, MockConfig, MockContainerd, Shim};
use crate::procfs;
use crate::provenance::{shim_version, Provenance, ShimUnderTest};
use crate::stdio::{StdioMode, StdioOptions, StdioSet};
use crate::timeouts::Timeouts;

mod benchmark;
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

#[derive(Default)]
struct Stats {
    ops: BTreeMap<&'static str, Vec<Duration>>,
    errors: Vec<String>,
    failed: usize,
    completed: usize,
}

impl Stats {
    fn add(&mut self, op: &'static str, d: Duration) {
        self.ops.entry(op).or_default().push(d);
    }
}

const GROUP: &str = "stress-group";

fn group_annotations() -> BTreeMap<String, String> {
    [
        "io.kubernetes.cri.sandbox-id",
        "io.containerd.runc.v2.group",
        "io.containerd.reaper.v2.group",
    ]
    .into_iter()
    .map(|k| (k.to_string(), GROUP.to_string()))
    .collect()
}

struct Ctx {
    opts: StressOptions,
    mock: MockContainerd,
    stats: Mutex<Stats>,
    peak: Mutex<Sample>,
    server_pids: Mutex<Vec<i32>>,
    /// Where bundles go: `<scratch>/io.containerd.runtime.v2.task/<ns>`.
    bundle_parent: PathBuf,
    /// Where the stdio FIFOs go.
    fifo_dir: PathBuf,
}

/// A scratch directory on tmpfs for the run's bundles, as containerd keeps its task state under
/// /run (tmpfs): on a disk filesystem every bundle's files cost the shim and the harness inode
/// allocations (on this host's ext4 that was 39% of the reaper's CPU under stress). `None`
/// when /dev/shm is not a writable tmpfs; the mock's own state dir is used then.
fn tmpfs_scratch() -> Option<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let st = nix::sys::statfs::statfs(shm).ok()?;
    if st.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return None;
    }
    tempfile::Builder::new()
        .prefix("harness-stress-")
        .tempdir_in(shm)
        .ok()
}

/// A namespace of the run's own (`stress-<pid>-<n>`): the reaper names a task's cgroup
/// `reaper/<ns>/<id>`, and two runs at once (the two stress tests of one test binary, or
/// another engineer's) with the same namespace and ids would share cgroups, so one task's
/// kill-all-on-exit would kill the other run's process.
fn run_namespace() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "stress-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        .run_until(run_local(opts))
        .await
}

async fn run_local(opts: StressOptions) -> Result<StressReport, StressError> {
    if opts.soak.is_some() && opts.shim_per_task {
        return Err(StressError::Options(
            "a soak samples one shim for its whole life: it cannot run with --shim-per-task".into(),
        ));
    }
    if opts
        .soak
        .is_some_and(|s| s.duration.is_zero() || s.interval().is_zero())
    {
        return Err(StressError::Options(
            "a soak needs a duration and a sampling interval above zero".into(),
        ));
    }
    let provenance = provenance(&opts);
    let mock = MockContainerd::new(MockConfig {
        dialect: opts.dialect,
        namespace: run_namespace(),
        debug: false,
        timeouts: Timeouts::default(),
    })
    .await?;
    let scratch = tmpfs_scratch();
    let (bundle_parent, fifo_dir) = match &scratch {
        Some(d) => (
            d.path()
                .join("io.containerd.runtime.v2.task")
                .join(mock.namespace()),
            d.path().join("fifo"),
        ),
        None => (mock.bundle_parent(), mock.state_dir().join("fifo")),
    };
    let ctx = Rc::new(Ctx {
        opts: opts.clone(),
        mock,
        stats: Mutex::new(Stats::default()),
        peak: Mutex::new(Sample::default()),
        server_pids: Mutex::new(vec![]),
        bundle_parent,
        fifo_dir,
    });

    // One-shim mode: launch once, with a bundle of its own that stays for the whole run.
    let mut anchor: Option<(Shim, Bundle)> = None;
    let mut idle = None;
    let mut probe = None;
    if !opts.shim_per_task {
        let bundle = Bundle::create(
            &ctx.bundle_parent,
            "stress-anchor",
            process(&["true"]),
            BundleOptions {
                rootfs: opts.rootfs,
                annotations: group_annotations(),
            },
        )?;
        let shim = ctx
            .mock
            .launch(&opts.shim, &bundle, LaunchOptions::default())
            .await
            .map_err(|source| StressError::Launch {
                shim: opts.shim.display().to_string(),
                source,
            })?;
        if let Some(pid) = shim.pid {
            lock(&ctx.server_pids).push(pid);
        }
        // One warm-up lifecycle first, so that "idle" includes what a shim opens once and
        // keeps (its connection to the events endpoint, lazily made at the first event).
        let client = shim.client();
        if let Err(e) = one(&ctx, usize::MAX, Some(client.clone())).await {
            let mut st = lock(&ctx.stats);
            st.errors.push(format!("warm-up task: {e:#}"));
        }
        lock(&ctx.stats).ops.clear();
        tokio::time::sleep(Duration::from_millis(50)).await;
        idle = Some(sample(&lock(&ctx.server_pids)));
        if let (Some(_), Some(pid)) = (opts.soak, shim.pid) {
            let dir = crate::dialect::socket_path(&shim.address)
                .and_then(|p| p.parent().map(Path::to_path_buf));
            probe = Some(soak::SoakProbe::new(pid, dir, ctx.bundle_parent.clone()));
        }
        anchor = Some((shim, bundle));
    }
    let shared_client = anchor.as_ref().map(|(s, _)| s.client());
    if opts.soak.is_some() && probe.is_none() {
        return Err(StressError::Options(
            "the soak found no shim server to sample (its pid is unknown)".into(),
        ));
    }
    let soak_idle = probe.as_ref().map(|p| p.sample(0, 0));

    // A sampler for the peak.
    let sampler = {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            loop {
                let pids = lock(&ctx.server_pids).clone();
                let s = sample(&pids);
                {
                    let mut peak = lock(&ctx.peak);
                    if s.rss_kib > peak.rss_kib || s.fds > peak.fds {
                        *peak = Sample {
                            rss_kib: s.rss_kib.max(peak.rss_kib),
                            fds: s.fds.max(peak.fds),
                            threads: s.threads.max(peak.threads),
                            servers: s.servers.max(peak.servers),
                        };
                    }
                }
                // Nobody reads the events of a stress run: keep the harness's memory flat.
                ctx.mock.events().clear();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let t0 = Instant::now();
    let series = Rc::new(Mutex::new(Vec::<SoakSample>::new()));
    let soak_sampler = match (&probe, opts.soak) {
        (Some(probe), Some(so)) => {
            let (ctx, probe, series) = (ctx.clone(), probe.clone(), series.clone());
            Some(tokio::task::spawn_local(async move {
                let every = so.interval();
                let mut next = tokio::time::Instant::from_std(t0) + every;
                // Samples at every interval up to the soak's end (late ticks catch up).
                while next <= tokio::time::Instant::from_std(t0) + so.duration {
                    tokio::time::sleep_until(next).await;
                    next += every;
                    let done = lock(&ctx.stats).completed as u64;
                    let p = probe.clone();
                    let t = t0.elapsed().as_millis() as u64;
                    // /proc reads off the runtime thread that drives the lifecycles.
                    if let Ok(s) = tokio::task::spawn_blocking(move || p.sample(t, done)).await {
                        lock(&series).push(s);
                    }
                }
            }))
        }
        _ => None,
    };

    let parallel = opts.parallel.max(1);
    let sem = Arc::new(Semaphore::new(parallel));
    let deadline = opts
        .soak
        .map(|s| tokio::time::Instant::from_std(t0) + s.duration);
    let mut started = 0;
    loop {
        let permit = match deadline {
            None if started >= opts.tasks => break,
            None => sem.clone().acquire_owned().await,
            Some(d) => match tokio::time::timeout_at(d, sem.clone().acquire_owned()).await {
                Ok(p) => p,
                Err(_) => break,
            },
        }
        .expect("semaphore never closed");
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        let i = started;
        started += 1;
        let ctx = ctx.clone();
        let client = shared_client.clone();
        tokio::task::spawn_local(async move {
            let res = one(&ctx, i, client).await;
            let mut st = lock(&ctx.stats);
            match res {
                Ok(()) => st.completed += 1,
                Err(e) => {
                    st.failed += 1;
                    if st.errors.len() < 10 {
                        st.errors.push(format!("task {i}: {e:#}"));
                    }
                }
            }
            drop(permit);
        });
    }
    // Every lifecycle holds a permit until it ends (a panicking one drops it too).
    let all = sem
        .acquire_many(parallel as u32)
        .await
        .expect("semaphore never closed");
    drop(all);
    let elapsed = t0.elapsed();
    sampler.abort();
    if let Some(s) = soak_sampler {
        s.abort();
    }

    let mut end = None;
    let mut leak_list = vec![];
    let mut soak_report = None;
    if let Some((shim, bundle)) = anchor.take() {
        // Let the last exits and deletes settle before the end sample.
        tokio::time::sleep(Duration::from_millis(100)).await;
        end = Some(sample(&lock(&ctx.server_pids)));
        if let (Some(probe), Some(so), Some(idle_s)) = (&probe, opts.soak, soak_idle) {
            let done = lock(&ctx.stats).completed as u64;
            let t = t0.elapsed().as_millis() as u64;
            // A quiescent end: a reap or a close still under way gets up to two seconds.
            let settled = |s: &SoakSample| {
                s.fds <= idle_s.fds
                    && s.unix_sockets <= idle_s.unix_sockets
                    && s.zombies == 0
                    && s.socket_files == 0
            };
            let mut last = probe.sample(t, done);
            let until = Instant::now() + Duration::from_secs(2);
            while !settled(&last) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(100)).await;
                last = probe.sample(t0.elapsed().as_millis() as u64, done);
            }
            let stale = probe.stale_socket_files();
            let series = std::mem::take(&mut *lock(&series));
            soak_report = Some(SoakReport::judge(
                &so, parallel, idle_s, series, last, &stale,
            ));
        }
        let client = shim.client();
        let _ = client
            .shutdown(ShutdownRequest::default(), opts.rpc_timeout)
            .await;
        let report = shim.close().await;
        leak_list.extend(report.leaks.iter().map(|l| l.detail.clone()));
        drop(bundle);
    }
    let mut st = std::mem::take(&mut *lock(&ctx.stats));
    let latency = st
        .ops
        .iter_mut()
        .map(|(k, v)| (k.to_string(), Percentiles::of(v)))
        .collect();
    for pid in lock(&ctx.server_pids).iter() {
        if procfs::proc_info(*pid).is_some_and(|p| p.state != 'Z') {
            leak_list.push(format!("shim server pid {pid} still running after the run"));
        }
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let peak = *lock(&ctx.peak);
    let report = StressReport {
        tasks: if opts.soak.is_some() {
            started
        } else {
            opts.tasks
        },
        parallel: opts.parallel,
        mode: if opts.shim_per_task {
            "shim-per-task".into()
        } else {
            "one-shim".into()
        },
        completed: st.completed,
        failed: st.failed,
        errors: st.errors,
        duration_ms: elapsed.as_millis() as u64,
        tasks_per_sec: st.completed as f64 / secs,
        latency,
        resources: Resources { idle, peak, end },
        leaks: leak_list,
        provenance,
        soak: soak_report,
    };
    match Rc::try_unwrap(ctx) {
        Ok(ctx) => ctx.mock.shutdown().await,
        Err(_) => tracing::warn!("stress: tasks still hold the mock; it is dropped instead"),
    }
    Ok(report)
}

/// One task lifecycle: (launch) → create → start → wait → delete (→ shutdown → close).
async fn one(ctx: &Ctx, i: usize, shared: Option<TaskClient>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let opts = &ctx.opts;
    let rpc = opts.rpc_timeout;
    let id = if i == usize::MAX {
        "stress-warm-up".to_string()
    } else {
        format!("stress-{i}")
    };
    let life = Instant::now();
    let args: Vec<&str> = opts.args.iter().map(String::as_str).collect();
    let bundle = Bundle::create(
        &ctx.bundle_parent,
        &id,
        process(&args),
        BundleOptions {
            rootfs: opts.rootfs,
            annotations: if shared.is_some() {
                group_annotations()
            } else {
                BTreeMap::new()
            },
        },
    )?;
    let stdio = StdioSet::create(
        &ctx.fifo_dir,
        &id,
        StdioOptions {
            stdin: StdioMode::Null,
            stdout: StdioMode::Null,
            stderr: StdioMode::Null,
            ..Default::default()
        },
    )?;
    let mut own: Option<Shim> = None;
    let client = match shared {
        Some(c) => c,
        None => {
            let t = Instant::now();
            let shim = ctx
                .mock
                .launch(&opts.shim, &bundle, LaunchOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("launch: {e}"))?;
            lock(&ctx.stats).add("launch", t.elapsed());
            if let Some(pid) = shim.pid {
                lock(&ctx.server_pids).push(pid);
            }
            let c = shim.client();
            own = Some(shim);
            c
        }
    };
    let timed = |op: &'static str, t: Instant| lock(&ctx.stats).add(op, t.elapsed());

    let t = Instant::now();
    client
        .create(bundle.create_request(stdio.paths(), false, None), rpc)
        .await
        .context("create")?;
    timed("create", t);
    let waiter = {
        let c = client.clone();
        let req = WaitRequest {
            id: id.clone(),
            ..Default::default()
        };
        tokio::spawn(async move { c.wait(req, rpc).await })
    };
    let t = Instant::now();
    client
        .start(
            StartRequest {
                id: id.clone(),
                ..Default::default()
            },
            rpc,
        )
        .await
        .context("start")?;
    timed("start", t);
    let t = Instant::now();
    let w = waiter
        .await
        .context("wait task panicked")?
        .context("wait")?;
    timed("wait", t);
    // A wrong exit status fails the lifecycle, but only after the task was deleted (and its
    // shim shut down), as containerd deletes it whatever its status: an early return left the
    // task, and with it the reaper's cgroup, behind.
    let bad_exit = (w.exit_status != 0)
        .then(|| format!("`{}` exited {} (want 0)", args.join(" "), w.exit_status));
    let t = Instant::now();
    client
        .delete(
            DeleteRequest {
                id: id.clone(),
                ..Default::default()
            },
            rpc,
        )
        .await
        .context("delete")?;
    timed("delete", t);
    if let Some(shim) = own {
        let t = Instant::now();
        client
            .shutdown(
                ShutdownRequest {
                    id: id.clone(),
                    ..Default::default()
                },
                rpc,
            )
            .await
            .or_else(|e| match e {
                // The Go shim exits before its Shutdown reply leaves; containerd takes the
                // closed connection as success (ttrpc.ErrClosed).
                crate::client::RpcError::Transport(_) => Ok(Default::default()),
                e => Err(e),
            })
            .context("shutdown")?;
        let report = shim.close().await;
        timed("shutdown", t);
        anyhow::ensure!(
            report.leaks.is_empty(),
            "leaks after the shim of {id}: {:?}",
            report.leaks.iter().map(|l| &l.detail).collect::<Vec<_>>()
        );
    }
    if let Some(why) = bad_exit {
        anyhow::bail!(why);
    }
    timed("lifecycle", life);
    drop(stdio);
    drop(bundle);
    Ok(())
}

/// Where this run happens: the shim and its version, the dialect, the machine; the CPU as
/// `<model> x<cpus>`.
fn provenance(opts: &StressOptions) -> Provenance<ShimUnderTest, ()> {
    let subject = ShimUnderTest {
        shim: opts.shim.display().to_string(),
        shim_version: shim_version(&opts.shim),
    };
    let mut p = Provenance::probe(opts.dialect, subject, ());
    p.cpu = format!("{} x{}", p.cpu, p.cpus);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

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
