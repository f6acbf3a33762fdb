//! The `start` action as containerd runs it: the dialect's argv, environment and stdin, the
//! bundle as cwd, its own process group, one pipe for stdout and stderr (Go's
//! `CombinedOutput`), bounded by the start timeout; on a timeout or a failure, what it left
//! is ended.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::log::LogDrain;
use super::{end_leaked, lock, LaunchOptions, MockContainerd};
use crate::dialect::{self, Dialect};
use crate::error::{HarnessError, LaunchError};
use crate::{leaks, procfs};

/// A `start` that exited successfully with its output closed.
pub(super) struct Started {
    /// The combined output, as read.
    pub(super) raw: Vec<u8>,
    /// The same, as trimmed text.
    pub(super) text: String,
    /// The `start` process's pid (the leader of its process group).
    pub(super) pid: i32,
    /// Its start time (clock ticks since boot): servers started earlier are not its.
    pub(super) since: u64,
    /// The pid allocation before it was spawned.
    pub(super) mark: Option<procfs::PidMark>,
    /// The shim's `log` FIFO drain, handed back.
    pub(super) log: LogDrain,
}

/// A `start` process just spawned, its stdin being written.
struct Spawned {
    child: tokio::process::Child,
    /// The read end of its combined output.
    rd: OwnedFd,
    start_pid: i32,
    since: u64,
    mark: Option<procfs::PidMark>,
}

impl MockContainerd {
    /// Runs `<shim> ... start` in `bundle_dir` and waits, up to the start timeout, for it to exit
    /// and close its output, as Go's `CombinedOutput` does.
    pub(super) async fn run_start(
        &self,
        shim: &Path,
        id: &str,
        bundle_dir: &Path,
        pb: &str,
        opts: &LaunchOptions,
        log: LogDrain,
    ) -> Result<Started, LaunchError> {
        let t = self.cfg.timeouts;
        let Spawned {
            mut child,
            rd,
            start_pid,
            since,
            mark,
        } = self.spawn_start(shim, id, bundle_dir, pb, opts).await?;
        let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(rd)
            .map_err(|e| HarnessError::io("reading the start output pipe", e))?;
        let output = Arc::new(Mutex::new(Vec::<u8>::new()));
        let out2 = output.clone();
        let collect = async move {
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => lock(&out2).extend_from_slice(&buf[..n]),
                }
            }
        };
        // Go's CombinedOutput returns when the process has exited *and* the pipe hit EOF.
        let both = async { tokio::join!(child.wait(), collect).0 };
        let status = match tokio::time::timeout(t.start, both).await {
            Ok(st) => st,
            Err(_) => {
                let text = String::from_utf8_lossy(&lock(&output)).trim().to_string();
                let _ = child.start_kill();
                let _ = end_leaked(start_pid, since, &text, bundle_dir);
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                log.stop().await;
                return Err(LaunchError::StartTimeout {
                    timeout: t.start,
                    output: text,
                });
            }
        };
        let raw = lock(&output).clone();
        let text = String::from_utf8_lossy(&raw).trim().to_string();
        let status = status.map_err(|e| LaunchError::Spawn {
            path: shim.to_path_buf(),
            source: e,
        })?;
        if !status.success() {
            let _ = end_leaked(start_pid, since, &text, bundle_dir);
            log.stop().await;
            return Err(LaunchError::StartFailed {
                output: text,
                status: leaks::exit_code(&status),
            });
        }
        Ok(Started {
            raw,
            text,
            pid: start_pid,
            since,
            mark,
            log,
        })
    }

    /// Spawns `<shim> ... start` with the dialect's argv, environment and stdin (written by a
    /// task of its own, bounded by the start timeout).
    async fn spawn_start(
        &self,
        shim: &Path,
        id: &str,
        bundle_dir: &Path,
        pb: &str,
        opts: &LaunchOptions,
    ) -> Result<Spawned, LaunchError> {
        let t = self.cfg.timeouts;
        let dialect = self.cfg.dialect;
        let argv = dialect.start_argv(&self.namespace, &self.grpc_address, pb, id, self.cfg.debug);
        let env = dialect.start_env(&self.ttrpc_address, &self.grpc_address, &self.namespace);
        let stdin_bytes = dialect.start_stdin(
            shim,
            &dialect::StartParams {
                id,
                namespace: &self.namespace,
                debug: self.cfg.debug,
                ttrpc_address: &self.ttrpc_address,
                grpc_address: &self.grpc_address,
                containerd_binary: pb,
                runtime_options: opts.runtime_options.as_ref(),
                socket_dir: self.socket_dir.as_deref(),
                overrides: opts.bootstrap.as_ref(),
            },
        );

        // One pipe for stdout and stderr: Go's CombinedOutput.
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
            HarnessError::io("creating the start output pipe", std::io::Error::from(e))
        })?;
        let wr2 = wr
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the start output pipe", e))?;
        let mut cmd = tokio::process::Command::new(shim);
        cmd.args(&argv)
            .current_dir(bundle_dir)
            .env_clear()
            .envs(Dialect::inherited_env())
            .envs(env.iter().cloned())
            .envs(opts.extra_env.iter().cloned())
            .stdout(Stdio::from(wr))
            .stderr(Stdio::from(wr2))
            .stdin(if stdin_bytes.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .process_group(0);
        let mark = procfs::PidMark::now();
        let mut spawned = cmd.spawn();
        // ETXTBSY: a shim binary just written (by a build or a test) can still be open for
        // writing in a child that another thread forked and that has not exec'd yet. That lasts
        // microseconds, so retry briefly rather than fail the launch.
        for _ in 0..50 {
            match &spawned {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    spawned = cmd.spawn();
                }
                _ => break,
            }
        }
        drop(cmd); // closes our copies of the pipe's write end
        let mut child = spawned.map_err(|e| LaunchError::Spawn {
            path: shim.to_path_buf(),
            source: e,
        })?;
        let start_pid = child.id().map(|p| p as i32).unwrap_or(0);
        // Not reaped before `child.wait()`, so readable even if it already exited.
        let since = procfs::proc_info(start_pid)
            .map(|p| p.starttime)
            .unwrap_or(u64::MAX);
        if let (Some(bytes), Some(mut stdin)) = (stdin_bytes, child.stdin.take()) {
            let bound = t.start;
            tokio::spawn(async move {
                // A shim that never reads a large payload must not pin this task forever.
                let _ = tokio::time::timeout(bound, stdin.write_all(&bytes)).await;
            });
        }
        Ok(Spawned {
            child,
            rd,
            start_pid,
            since,
            mark,
        })
    }
}
