//! The one reaper: a SIGCHLD-driven `waitpid(-1, WNOHANG)` loop that records every exit and hands
//! it to the process that subscribed to its pid; unknown pids (orphans) are simply reaped.
//!
//! Race rule: a child is forked while the subscriber table is locked and its pid is inserted
//! before the lock is released, so the reaper (which looks pids up under the same lock) can never
//! see an exit before its subscriber exists. Nothing else in the shim may call `wait*`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// One reaped child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The pid.
    pub pid: i32,
    /// Exit code, or 128 + signal number for a signal death.
    pub status: u32,
    /// When the reaper saw it.
    pub at: SystemTime,
}

/// Makes this process the subreaper of its descendants (`PR_SET_CHILD_SUBREAPER`): a task's
/// orphaned grandchild is reparented to it, so [`Reaper::reap_all`] reaps it rather than init.
/// The server calls it before it forks anything; the unit tests' in-process shim does too.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Subscribers by pid.
pub type Subscribers = HashMap<i32, oneshot::Sender<Exit>>;

/// The shim-wide reaper.
#[derive(Default)]
pub struct Reaper {
    subs: Mutex<Subscribers>,
}

/// Converts a raw `waitpid` status into the containerd exit status (code, or 128+signal).
pub fn exit_status(raw: i32) -> u32 {
    if libc::WIFEXITED(raw) {
        libc::WEXITSTATUS(raw) as u32
    } else if libc::WIFSIGNALED(raw) {
        128 + libc::WTERMSIG(raw) as u32
    } else {
        255
    }
}

impl Reaper {
    /// A reaper with no subscribers; call [`Reaper::start`] inside the runtime.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Locks the subscriber table: fork while holding this guard, then insert the child's pid.
    pub fn lock(&self) -> MutexGuard<'_, Subscribers> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs the SIGCHLD handler and spawns the reaping loop on the current runtime.
    pub fn start(self: &Arc<Self>) -> Result<()> {
        let mut sig =
            signal(SignalKind::child()).map_err(|e| Error::io("install SIGCHLD handler", e))?;
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.reap_all();
                if sig.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(())
    }

    /// Reaps every child that has exited, dispatching to subscribers.
    pub fn reap_all(&self) {
        loop {
            let mut raw = 0;
            // SAFETY: plain syscall with a valid out pointer.
            let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
            if pid <= 0 {
                if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return;
            }
            let exit = Exit {
                pid,
                status: exit_status(raw),
                at: SystemTime::now(),
            };
            let sub = self.lock().remove(&pid);
            match sub {
                Some(tx) => {
                    tracing::debug!(pid, status = exit.status, "reaped");
                    let _ = tx.send(exit);
                }
                None => tracing::debug!(pid, status = exit.status, "reaped orphan"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_signal_deaths() {
        // Build raw statuses the way the kernel encodes them.
        assert_eq!(exit_status(7 << 8), 7);
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(libc::SIGTERM), 143);
        assert_eq!(exit_status(libc::SIGKILL), 137);
    }
}
