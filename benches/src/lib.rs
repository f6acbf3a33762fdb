//! Shared set-up for the criterion benches: which shims to measure (and why one is left out),
//! one live fixture per shim, and the bare ttrpc baseline server.
//!
//! The benches drive shims exactly as the harness does (the mock containerd of the `harness`
//! crate), so what they time is what a shim author's scenario pays: the `start` handshake,
//! TTRPC round trips through the real client, and event delivery to the mock's endpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use containerd_shim_protos::api::{
    DeleteRequest, ShutdownRequest, StartRequest, StateRequest, StateResponse, WaitRequest,
};
use containerd_shim_protos::shim_async::{create_task, Task};
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use harness::bundle::{process, Bundle, BundleOptions, RootfsKind};
use harness::client::{RpcError, TaskClient};
use harness::dialect::TaskApi;
use harness::launch::{LaunchOptions, MockConfig, MockContainerd, Shim};
use harness::stdio::{StdioMode, StdioOptions, StdioSet};

/// Debian's Go runc shim.
pub const RUNC_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";

/// Bound on every RPC a bench sends.
pub const RPC: Duration = Duration::from_secs(10);

/// One shim binary under measurement.
#[derive(Debug, Clone)]
pub struct Target {
    /// Short name used in benchmark ids (`reaper`, `runc-v2`).
    pub name: &'static str,
    /// The binary.
    pub path: PathBuf,
    /// The rootfs its bundles need (runc isolates: busybox).
    pub rootfs: RootfsKind,
}

/// The bundled reaper shim: `$REAPER_SHIM`, else the release build, else the debug build of
/// the bench executable's target dir.
pub fn reaper_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("REAPER_SHIM") {
        return Ok(PathBuf::from(p));
    }
    let target = testkit::target_dir();
    let dirs = [target.join("release"), target.join("debug")];
    testkit::locate(
        testkit::REAPER,
        &dirs,
        "cargo build --release -p containerd-shim-reaper",
    )
    .map_err(anyhow::Error::msg)
}

/// The shims to measure, printing on stderr which are measured and why any is left out.
pub fn targets() -> Vec<Target> {
    let mut out = vec![];
    match reaper_path() {
        Ok(path) => {
            eprintln!("measuring reaper: {}", path.display());
            out.push(Target {
                name: "reaper",
                path,
                rootfs: RootfsKind::None,
            });
        }
        Err(e) => eprintln!("not measuring reaper: {e}"),
    }
    let runc = Path::new(RUNC_SHIM);
    let root = nix_is_root();
    if !runc.is_file() {
        eprintln!("not measuring runc-v2: {RUNC_SHIM} missing (run ci/setup.sh)");
    } else if !root {
        eprintln!("not measuring runc-v2: runc needs root");
    } else if std::env::var_os("BENCH_SKIP_RUNC").is_some() {
        eprintln!("not measuring runc-v2: BENCH_SKIP_RUNC is set");
    } else {
        eprintln!("measuring runc-v2: {RUNC_SHIM}");
        out.push(Target {
            name: "runc-v2",
            path: runc.to_path_buf(),
            rootfs: RootfsKind::Busybox,
        });
    }
    out
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh container id for one iteration.
pub fn next_id(prefix: &str) -> String {
    format!("{prefix}{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

/// A mock containerd for one bench (default dialect, no `-debug`: the shim logs less).
pub async fn mock() -> Result<MockContainerd> {
    Ok(MockContainerd::new(MockConfig {
        namespace: "bench".into(),
        ..Default::default()
    })
    .await?)
}

/// A launched shim with one created task whose stdio is /dev/null.
pub struct Live {
    /// The shim (closed by [`Live::finish`]).
    pub shim: Shim,
    /// Its client.
    pub client: TaskClient,
    /// The bundle (removed on drop).
    pub bundle: Bundle,
    /// The task's stdio (all null).
    pub stdio: StdioSet,
}

/// Null stdio for a bench task.
pub fn null_stdio(mock: &MockContainerd, id: &str) -> Result<StdioSet> {
    Ok(StdioSet::create(
        &mock.state_dir().join("fifo"),
        id,
        StdioOptions {
            stdin: StdioMode::Null,
            stdout: StdioMode::Null,
            stderr: StdioMode::Null,
            ..Default::default()
        },
    )?)
}

/// Launches `target` with a bundle running `args` and creates the task (not started).
pub async fn launch_created(
    mock: &MockContainerd,
    target: &Target,
    id: &str,
    args: &[&str],
) -> Result<Live> {
    let bundle = Bundle::create(
        &mock.bundle_parent(),
        id,
        process(args),
        BundleOptions {
            rootfs: target.rootfs,
            ..Default::default()
        },
    )?;
    let stdio = null_stdio(mock, id)?;
    let shim = mock
        .launch(&target.path, &bundle, LaunchOptions::default())
        .await
        .with_context(|| format!("launching {}", target.path.display()))?;
    let client = shim.client();
    let created = client
        .create(bundle.create_request(stdio.paths(), false, None), RPC)
        .await
        .context("create")?;
    ensure!(created.pid > 0, "create returned pid 0");
    Ok(Live {
        shim,
        client,
        bundle,
        stdio,
    })
}

impl Live {
    /// Starts the init process.
    pub async fn start(&self) -> Result<()> {
        self.client
            .start(
                StartRequest {
                    id: self.bundle.id().into(),
                    ..Default::default()
                },
                RPC,
            )
            .await
            .context("start")?;
        Ok(())
    }

    /// Waits for the init to exit, deletes it, shuts the shim down and runs the delete action.
    pub async fn finish(self, kill_first: bool) -> Result<()> {
        let id = self.bundle.id().to_string();
        if kill_first {
            self.client
                .kill(
                    containerd_shim_protos::api::KillRequest {
                        id: id.clone(),
                        signal: 9,
                        all: true,
                        ..Default::default()
                    },
                    RPC,
                )
                .await
                .context("kill")?;
        }
        self.client
            .wait(
                WaitRequest {
                    id: id.clone(),
                    ..Default::default()
                },
                RPC,
            )
            .await
            .context("wait")?;
        self.client
            .delete(
                DeleteRequest {
                    id: id.clone(),
                    ..Default::default()
                },
                RPC,
            )
            .await
            .context("delete")?;
        // The Go shim exits before its Shutdown reply leaves: containerd treats the closed
        // connection as success (ttrpc.ErrClosed), and so does the bench.
        match self
            .client
            .shutdown(
                ShutdownRequest {
                    id,
                    ..Default::default()
                },
                RPC,
            )
            .await
        {
            Ok(_) | Err(RpcError::Transport(_)) => {}
            Err(e) => return Err(anyhow::Error::new(e).context("shutdown")),
        }
        let report = self.shim.close().await;
        ensure!(
            report.leaks.is_empty(),
            "shim left things behind: {:?}",
            report.leaks
        );
        drop(self.stdio);
        drop(self.bundle);
        Ok(())
    }
}

/// A Task service with no logic: State answers a fixed response; everything else is the
/// generated default. It measures what TTRPC itself costs.
#[derive(Clone, Default)]
struct Bare;

#[async_trait::async_trait]
impl Task for Bare {
    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        Ok(StateResponse {
            id: req.id,
            pid: 1,
            ..Default::default()
        })
    }
}

/// The bare ttrpc baseline: a server in this process on a unix socket, and a harness client.
pub struct Baseline {
    /// A client speaking task v3 to the bare server.
    pub client: TaskClient,
    server: ttrpc::r#async::Server,
    _dir: tempfile::TempDir,
}

impl Baseline {
    /// Binds the bare server on a temp socket and connects the harness client to it.
    pub async fn start() -> Result<Baseline> {
        let dir = tempfile::Builder::new().prefix("bench-ttrpc-").tempdir()?;
        let addr = format!("unix://{}", dir.path().join("s.sock").display());
        let mut server = ttrpc::r#async::Server::new()
            .bind(&addr)?
            .register_service(create_task(Arc::new(Bare)));
        server.start().await?;
        let conn = ttrpc::r#async::Client::connect(&addr).await?;
        Ok(Baseline {
            client: TaskClient::new(conn, TaskApi::V3, "bench", false),
            server,
            _dir: dir,
        })
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        self.client.close();
        let _ = self.server.shutdown().await;
    }
}
