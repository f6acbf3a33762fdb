//! The preflight: before a run, the shim is launched once (same dialect, environment and rootfs as
//! the scenarios, through [`MockContainerd::launch`]) and closed as containerd closes it, so a
//! shim whose `start` cannot work is reported once instead of as every scenario's failure.

use std::time::{Duration, Instant};

use super::RunConfig;
use crate::bundle::{self, Bundle, BundleOptions};
use crate::error::LaunchError;
use crate::launch::{CloseReport, LaunchOptions, MockConfig, MockContainerd, Timeouts};

/// What a successful preflight saw: the shim started, answered on its address and was closed.
#[derive(Debug)]
pub struct PreflightReport {
    /// From spawning `start` to a connected client.
    pub launch: Duration,
    /// What closing the preflight shim found (its `delete` action, leftovers, which were ended).
    pub close: CloseReport,
}

/// Why the preflight failed: the run cannot happen.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The shim's `start` (or the first connection to the address it printed) failed.
    #[error(
        "preflight: shim `{}` did not start under containerd {dialect}'s `start` handshake ({kind}): {cause}; no scenario can run (pass --no-preflight to run them anyway and see each one fail)",
        shim.display()
    )]
    Start {
        /// The shim binary.
        shim: std::path::PathBuf,
        /// The containerd version whose handshake was used.
        dialect: crate::dialect::Dialect,
        /// What failed (`start-failed`, `start-timeout`, `address`, `connect`).
        kind: String,
        /// What went wrong, with the shim's own output where the launcher kept it (in the
        /// daemon's wording for an answer it refuses).
        cause: String,
    },
    /// The harness could not set up the mock containerd or the bundle.
    #[error("preflight: {0}")]
    Harness(String),
}

/// Launches `cfg.shim` once for a container `preflight` in a namespace of its own, then closes
/// it (Shutdown, the `delete` action, leak check: whatever it left is ended). Bounded by the
/// mock's start timeout plus its connect, shutdown and delete-action bounds.
pub async fn preflight(cfg: &RunConfig) -> Result<PreflightReport, PreflightError> {
    let tmp = tempfile::Builder::new()
        .prefix("harness-preflight-")
        .tempdir()
        .map_err(|e| PreflightError::Harness(format!("creating a temp dir: {e}")))?;
    let namespace = super::steps::unique_namespace("preflight", tmp.path());
    let timeouts = Timeouts::default();
    let mut mock = MockContainerd::new(MockConfig {
        dialect: cfg.dialect,
        namespace: namespace.clone(),
        timeouts,
        ..Default::default()
    })
    .await
    .map_err(|e| PreflightError::Harness(format!("starting the mock containerd: {e}")))?;
    mock.set_socket_dir(cfg.socket_dir.clone());
    let result = launch_and_close(cfg, &mock, tmp.path(), &namespace, &timeouts).await;
    // Stopped here, not by the mock's drop: that hands the endpoints' shutdown to a task, which
    // can race the runtime's own shutdown when the run ends right after a failed preflight.
    mock.shutdown().await;
    result
}

async fn launch_and_close(
    cfg: &RunConfig,
    mock: &MockContainerd,
    tmp: &std::path::Path,
    namespace: &str,
    timeouts: &Timeouts,
) -> Result<PreflightReport, PreflightError> {
    let bundle = Bundle::create_in_namespace(
        &tmp.join("bundles"),
        namespace,
        "preflight",
        bundle::process(&["true"]),
        BundleOptions {
            rootfs: cfg.rootfs,
            ..Default::default()
        },
    )
    .map_err(|e| PreflightError::Harness(format!("creating the bundle: {e}")))?;
    let started = Instant::now();
    let options = LaunchOptions {
        extra_env: cfg.shim_env.clone(),
        ..LaunchOptions::default()
    };
    let shim = mock
        .launch(&cfg.shim, &bundle, options)
        .await
        .map_err(|e| PreflightError::Start {
            shim: cfg.shim.clone(),
            dialect: cfg.dialect,
            kind: e.kind().to_string(),
            cause: describe(&e, cfg.dialect, timeouts),
        })?;
    let launch = started.elapsed();
    let close = shim.close().await;
    Ok(PreflightReport { launch, close })
}

/// What went wrong in a failed launch, with the shim's own output where the launcher kept it.
fn describe(e: &LaunchError, dialect: crate::dialect::Dialect, t: &Timeouts) -> String {
    let what = match e {
        LaunchError::StartFailed { output, status } => format!(
            "`start` exited with status {status}; its output: {}",
            shown(output)
        ),
        LaunchError::StartTimeout { timeout, output } => format!(
            "`start` did not finish within the start timeout ({}); its output so far: {}; its process group was killed",
            humantime::format_duration(*timeout),
            shown(output)
        ),
        LaunchError::Address { reason, killed } => {
            let mut s = format!("containerd {dialect} cannot use what `start` printed: {reason}");
            if !killed.is_empty() {
                s.push_str(&format!("; the server it left listening was ended (pids {killed:?})"));
            }
            s
        }
        LaunchError::Connect {
            address,
            message,
            killed,
        } => {
            let mut s = format!(
                "`start` printed {address}, but connecting to it failed (bound {}): {message}",
                humantime::format_duration(t.connect)
            );
            if !killed.is_empty() {
                s.push_str(&format!("; the server found there was ended (pids {killed:?})"));
            }
            s
        }
        other => other.to_string(),
    };
    what
}

fn shown(output: &str) -> String {
    if output.is_empty() {
        "(nothing)".into()
    } else {
        crate::scenario::abbreviate(output, 2000)
    }
}
