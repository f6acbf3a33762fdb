//! The `delete` action containerd runs after every shim connection closes (doc 2.10, 3):
//! `<shim> -namespace ns -address A -publish-binary P -id ID -bundle B [-debug] delete`, cwd the
//! bundle, stdin /dev/null; stdout must be a serialized `DeleteResponse`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use containerd_shim_protos::api::DeleteResponse;
use protobuf::Message;
use tokio::io::AsyncReadExt;

use crate::dialect::Dialect;
use crate::events::timestamp_to_system;

/// The decoded result of a successful `delete` action.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteActionOutcome {
    /// `DeleteResponse.pid`.
    pub pid: u32,
    /// `DeleteResponse.exit_status` (the runc shim always says 137).
    pub exit_status: u32,
    /// `DeleteResponse.exited_at`.
    pub exited_at: Option<SystemTime>,
    /// What the action wrote to stderr (containerd logs it as cleanup warnings).
    pub stderr: String,
    /// How long it took.
    pub duration: Duration,
}

/// Everything needed to run the action.
#[derive(Debug, Clone)]
pub struct DeleteAction {
    /// The shim binary.
    pub shim: PathBuf,
    /// The containerd version to imitate.
    pub dialect: Dialect,
    /// Namespace.
    pub namespace: String,
    /// containerd's gRPC address (`-address`).
    pub grpc_address: String,
    /// containerd's ttrpc address (`TTRPC_ADDRESS`).
    pub ttrpc_address: String,
    /// `-publish-binary`.
    pub publish_binary: String,
    /// Container id.
    pub id: String,
    /// Bundle directory (also the cwd).
    pub bundle: PathBuf,
    /// Pass `-debug` (2.x only).
    pub debug: bool,
    /// Extra environment.
    pub extra_env: Vec<(String, String)>,
}

impl DeleteAction {
    /// Runs the action, bounded by `timeout` (then its process group is killed).
    pub async fn run(&self, timeout: Duration) -> Result<DeleteActionOutcome, String> {
        let argv = self.dialect.delete_argv(
            &self.namespace,
            &self.grpc_address,
            &self.publish_binary,
            &self.id,
            &self.bundle.display().to_string(),
            self.debug,
        );
        let cwd: &Path = if self.bundle.is_dir() {
            &self.bundle
        } else {
            Path::new("/")
        };
        let mut cmd = tokio::process::Command::new(&self.shim);
        cmd.args(&argv)
            .current_dir(cwd)
            .env_clear()
            .envs(crate::dialect::Dialect::inherited_env())
            .envs(
                self.dialect
                    .start_env(&self.ttrpc_address, &self.grpc_address, &self.namespace),
            )
            .envs(self.extra_env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawning {} delete: {e}", self.shim.display()))?;
        let pid = child.id().map(|p| p as i32);
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let work = async {
            let mut o = vec![];
            let mut e = vec![];
            let (r1, r2, st) = tokio::join!(
                async {
                    match out.as_mut() {
                        Some(s) => s.read_to_end(&mut o).await.map(|_| ()),
                        None => Ok(()),
                    }
                },
                async {
                    match err.as_mut() {
                        Some(s) => s.read_to_end(&mut e).await.map(|_| ()),
                        None => Ok(()),
                    }
                },
                child.wait()
            );
            let _ = (r1, r2);
            (o, e, st)
        };
        let (stdout, stderr, status) = match tokio::time::timeout(timeout, work).await {
            Ok(v) => v,
            Err(_) => {
                if let Some(pid) = pid {
                    crate::leaks::kill_process_group_members(pid);
                }
                return Err(format!(
                    "delete action did not finish within {timeout:?}; killed"
                ));
            }
        };
        if let Some(pid) = pid {
            // Anything the action left in its own process group is ended now.
            crate::leaks::kill_process_group_members(pid);
        }
        let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
        let status = status.map_err(|e| format!("waiting for delete action: {e}"))?;
        if !status.success() {
            let code = crate::leaks::exit_code(&status);
            return Err(format!(
                "delete action failed: {stderr}: exit status {code}"
            ));
        }
        let resp = DeleteResponse::parse_from_bytes(&stdout).map_err(|e| {
            format!(
                "delete action stdout is not a DeleteResponse ({e}): {:?}",
                String::from_utf8_lossy(&stdout)
            )
        })?;
        Ok(DeleteActionOutcome {
            pid: resp.pid,
            exit_status: resp.exit_status,
            exited_at: resp.exited_at.as_ref().map(timestamp_to_system),
            stderr,
            duration: started.elapsed(),
        })
    }
}
