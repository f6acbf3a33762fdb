//! One stress run: the mock, the one shim (or one per task), the lifecycles with P in flight,
//! the peak and soak samplers, and the report built from what they measured.

use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use containerd_shim_protos::api::ShutdownRequest;
use tokio::sync::Semaphore;

use super::lifecycle::{group_annotations, lock, one, Ctx, Stats};
use super::{
    sample, soak, Percentiles, Resources, Sample, SoakOptions, SoakReport, SoakSample, StressError,
    StressOptions, StressReport,
};
use crate::bundle::{process, Bundle, BundleOptions};
use crate::client::TaskClient;
use crate::launch::{LaunchOptions, MockConfig, MockContainerd, Shim};
use crate::procfs;
use crate::provenance::{shim_version, Provenance, ShimUnderTest};
use crate::timeouts::Timeouts;

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

/// Refuses options that contradict each other.
fn check_options(opts: &StressOptions) -> Result<(), StressError> {
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
    Ok(())
}

impl Ctx {
    /// The run's mock and where its bundles and FIFOs go; the tmpfs scratch, when there is one,
    /// is returned to live as long as the run.
    async fn new(
        opts: &StressOptions,
    ) -> Result<(Rc<Ctx>, Option<tempfile::TempDir>), StressError> {
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
        Ok((ctx, scratch))
    }
}

/// The one shim of a one-shim run, with what was measured before the lifecycles.
struct Anchor {
    shim: Shim,
    /// Its own bundle, kept for the whole run.
    bundle: Bundle,
    /// The sample after the warm-up lifecycle.
    idle: Sample,
    /// The soak's probe of the shim server (soak runs only).
    probe: Option<soak::SoakProbe>,
}

/// One-shim mode: launches the shim once, with a bundle of its own, runs one warm-up lifecycle
/// and samples it idle.
async fn launch_anchor(ctx: &Rc<Ctx>) -> Result<Anchor, StressError> {
    let opts = &ctx.opts;
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
    if let Err(e) = one(ctx, usize::MAX, Some(client.clone())).await {
        let mut st = lock(&ctx.stats);
        st.errors.push(format!("warm-up task: {e:#}"));
    }
    lock(&ctx.stats).ops.clear();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let idle = sample(&lock(&ctx.server_pids));
    let mut probe = None;
    if let (Some(_), Some(pid)) = (opts.soak, shim.pid) {
        let dir = crate::dialect::socket_path(&shim.address)
            .and_then(|p| p.parent().map(Path::to_path_buf));
        probe = Some(soak::SoakProbe::new(pid, dir, ctx.bundle_parent.clone()));
    }
    Ok(Anchor {
        shim,
        bundle,
        idle,
        probe,
    })
}

/// A sampler for the peak: every 20 ms, the servers' resources, keeping the largest.
fn spawn_peak_sampler(ctx: Rc<Ctx>) -> tokio::task::JoinHandle<()> {
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
}

/// The soak's sampler: the shim at every interval from `t0` up to the soak's end, into `series`.
fn spawn_soak_sampler(
    ctx: Rc<Ctx>,
    probe: soak::SoakProbe,
    series: Rc<Mutex<Vec<SoakSample>>>,
    so: SoakOptions,
    t0: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
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
    })
}

/// Starts lifecycles with at most `parallel` in flight, N of them or (a soak) until its
/// deadline, and waits for the last to end; returns how many started.
async fn run_lifecycles(
    ctx: &Rc<Ctx>,
    shared_client: Option<TaskClient>,
    parallel: usize,
    t0: Instant,
) -> usize {
    let opts = &ctx.opts;
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
    started
}

/// The soak's verdict: a quiescent last sample (a reap or a close still under way gets up to
/// two seconds) judged with the series against the idle sample.
async fn judge_soak(
    probe: &soak::SoakProbe,
    so: &SoakOptions,
    parallel: usize,
    idle_s: SoakSample,
    series: &Mutex<Vec<SoakSample>>,
    t0: Instant,
    done: u64,
) -> SoakReport {
    let t = t0.elapsed().as_millis() as u64;
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
    let series = std::mem::take(&mut *lock(series));
    SoakReport::judge(so, parallel, idle_s, series, last, &stale)
}

/// Shuts the one shim down and closes it as containerd does; returns what it left behind.
async fn close_anchor(ctx: &Ctx, anchor: Anchor) -> Vec<String> {
    let client = anchor.shim.client();
    let _ = client
        .shutdown(ShutdownRequest::default(), ctx.opts.rpc_timeout)
        .await;
    let report = anchor.shim.close().await;
    drop(anchor.bundle);
    report.leaks.iter().map(|l| l.detail.clone()).collect()
}

/// The run itself, on the caller's `LocalSet`: options checked, the one shim launched (one-shim
/// mode), the lifecycles run while the samplers watch, the shim closed, the report built.
pub(super) async fn run_local(opts: StressOptions) -> Result<StressReport, StressError> {
    check_options(&opts)?;
    let provenance = provenance(&opts);
    let (ctx, _scratch) = Ctx::new(&opts).await?;
    // One-shim mode: one launch, with a bundle of its own that stays for the whole run.
    let mut anchor = if opts.shim_per_task {
        None
    } else {
        Some(launch_anchor(&ctx).await?)
    };
    let idle = anchor.as_ref().map(|a| a.idle);
    let probe = anchor.as_mut().and_then(|a| a.probe.take());
    let shared_client = anchor.as_ref().map(|a| a.shim.client());
    if opts.soak.is_some() && probe.is_none() {
        return Err(StressError::Options(
            "the soak found no shim server to sample (its pid is unknown)".into(),
        ));
    }
    let soak_idle = probe.as_ref().map(|p| p.sample(0, 0));

    let sampler = spawn_peak_sampler(ctx.clone());
    let t0 = Instant::now();
    let series = Rc::new(Mutex::new(Vec::<SoakSample>::new()));
    let soak_sampler = match (&probe, opts.soak) {
        (Some(probe), Some(so)) => Some(spawn_soak_sampler(
            ctx.clone(),
            probe.clone(),
            series.clone(),
            so,
            t0,
        )),
        _ => None,
    };
    let parallel = opts.parallel.max(1);
    let started = run_lifecycles(&ctx, shared_client, parallel, t0).await;
    let elapsed = t0.elapsed();
    sampler.abort();
    if let Some(s) = soak_sampler {
        s.abort();
    }

    let mut end = None;
    let mut leak_list = vec![];
    let mut soak_report = None;
    if let Some(anchor) = anchor.take() {
        // Let the last exits and deletes settle before the end sample.
        tokio::time::sleep(Duration::from_millis(100)).await;
        end = Some(sample(&lock(&ctx.server_pids)));
        if let (Some(probe), Some(so), Some(idle_s)) = (&probe, opts.soak, soak_idle) {
            let done = lock(&ctx.stats).completed as u64;
            soak_report = Some(judge_soak(probe, &so, parallel, idle_s, &series, t0, done).await);
        }
        leak_list.extend(close_anchor(&ctx, anchor).await);
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

/// Where this run happens: the shim and its version, the dialect, the machine; the CPU as
/// `<model> x<cpus>`.
fn provenance(opts: &StressOptions) -> Provenance<ShimUnderTest, ()> {
    let subject = ShimUnderTest {
        shim: opts.shim.display().to_string(),
        shim_version: shim_version(&opts.shim),
    };
    let mut p = Provenance::probe(opts.dialect.to_string(), subject, ());
    p.cpu = format!("{} x{}", p.cpu, p.cpus);
    p
}
