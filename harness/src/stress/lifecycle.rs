//! What every lifecycle of a stress run shares (the [`Ctx`]: options, mock, latency samples,
//! the shim servers' pids) and one task lifecycle: (launch) → create → start → wait → delete
//! (→ shutdown → close), timed per operation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{DeleteRequest, ShutdownRequest, StartRequest, WaitRequest};

use super::{Sample, StressOptions};
use crate::bundle::{process, Bundle, BundleOptions};
use crate::client::TaskClient;
use crate::launch::{LaunchOptions, MockContainerd, Shim};
use crate::stdio::{StdioMode, StdioOptions, StdioSet};

/// The latency samples and outcomes of a run.
#[derive(Default)]
pub(super) struct Stats {
    pub(super) ops: BTreeMap<&'static str, Vec<Duration>>,
    pub(super) errors: Vec<String>,
    pub(super) failed: usize,
    pub(super) completed: usize,
}

impl Stats {
    pub(super) fn add(&mut self, op: &'static str, d: Duration) {
        self.ops.entry(op).or_default().push(d);
    }
}

const GROUP: &str = "stress-group";

pub(super) fn group_annotations() -> BTreeMap<String, String> {
    [
        "io.kubernetes.cri.sandbox-id",
        "io.containerd.runc.v2.group",
        "io.containerd.reaper.v2.group",
    ]
    .into_iter()
    .map(|k| (k.to_string(), GROUP.to_string()))
    .collect()
}

/// What the lifecycles of one run share.
pub(super) struct Ctx {
    pub(super) opts: StressOptions,
    pub(super) mock: MockContainerd,
    pub(super) stats: Mutex<Stats>,
    pub(super) peak: Mutex<Sample>,
    pub(super) server_pids: Mutex<Vec<i32>>,
    /// Where bundles go: `<scratch>/io.containerd.runtime.v2.task/<ns>`.
    pub(super) bundle_parent: PathBuf,
    /// Where the stdio FIFOs go.
    pub(super) fifo_dir: PathBuf,
}

/// Locks `m`, poisoned or not.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One task lifecycle: (launch) → create → start → wait → delete (→ shutdown → close).
pub(super) async fn one(ctx: &Ctx, i: usize, shared: Option<TaskClient>) -> anyhow::Result<()> {
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
            let shim = launch_own(ctx, &bundle).await?;
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
        shut_down_own(ctx, &client, shim, &id).await?;
    }
    if let Some(why) = bad_exit {
        anyhow::bail!(why);
    }
    timed("lifecycle", life);
    drop(stdio);
    drop(bundle);
    Ok(())
}

/// Shim-per-task mode: launches the task's own shim, timed as `launch`.
async fn launch_own(ctx: &Ctx, bundle: &Bundle) -> anyhow::Result<Shim> {
    let t = Instant::now();
    let shim = ctx
        .mock
        .launch(&ctx.opts.shim, bundle, LaunchOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("launch: {e}"))?;
    lock(&ctx.stats).add("launch", t.elapsed());
    if let Some(pid) = shim.pid {
        lock(&ctx.server_pids).push(pid);
    }
    Ok(shim)
}

/// Shim-per-task mode: shuts the task's own shim down and closes it (the `delete` action),
/// timed as `shutdown`; what it leaves behind fails the lifecycle.
async fn shut_down_own(ctx: &Ctx, client: &TaskClient, shim: Shim, id: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let t = Instant::now();
    client
        .shutdown(
            ShutdownRequest {
                id: id.to_string(),
                ..Default::default()
            },
            ctx.opts.rpc_timeout,
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
    lock(&ctx.stats).add("shutdown", t.elapsed());
    anyhow::ensure!(
        report.leaks.is_empty(),
        "leaks after the shim of {id}: {:?}",
        report.leaks.iter().map(|l| &l.detail).collect::<Vec<_>>()
    );
    Ok(())
}
