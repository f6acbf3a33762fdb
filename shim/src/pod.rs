//! A server's host pods as state: each pod's bundle, phase (created, running with its pause's
//! pid and cgroup, stopped) and exit, by sandbox id, and the command of a pod's pause process.
//! The Sandbox service over them is `sandbox`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::cgroup::Cgroup;
use crate::error::{Error, Result};
use crate::reaper::Exit;

/// `SandboxStatus.state` of a started pod, as containerd's shim controller reports it
/// (`plugins/sandbox/controller.go` at v2.1.9 passes the shim's string through; CRI's own
/// pod sandbox uses these names: `internal/cri/store/sandbox/status.go`).
pub const READY: &str = "SANDBOX_READY";
/// `SandboxStatus.state` of a pod not (or no longer) running.
pub const NOT_READY: &str = "SANDBOX_NOTREADY";

/// One host pod.
pub(crate) struct Pod {
    pub(crate) bundle: PathBuf,
    pub(crate) phase: Mutex<Phase>,
    /// The pause process's exit, once seen.
    pub(crate) exited: watch::Sender<Option<Exit>>,
}

/// Where a pod is in its life.
#[derive(Clone)]
pub(crate) enum Phase {
    /// CreateSandbox seen, no pause yet.
    Created,
    /// The pause runs.
    Running {
        pid: i32,
        started: SystemTime,
        cgroup: Option<Cgroup>,
    },
    /// The pause has ended.
    Stopped {
        pid: i32,
        started: Option<SystemTime>,
    },
}

/// The pods this server hosts, by sandbox id.
#[derive(Default)]
pub struct Sandboxes {
    pub(crate) pods: Mutex<HashMap<String, Arc<Pod>>>,
}

impl Sandboxes {
    pub(crate) fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Pod>>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many pods are not shut down (each keeps the server).
    pub fn live(&self) -> usize {
        self.map().len()
    }

    pub(crate) fn get(&self, id: &str) -> Result<Arc<Pod>> {
        self.map()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("sandbox {id}")))
    }
}

/// A pod's phase, locked (a poisoned lock still gives its value).
pub(crate) fn phase(p: &Pod) -> std::sync::MutexGuard<'_, Phase> {
    p.phase.lock().unwrap_or_else(|e| e.into_inner())
}

/// The program and arguments of a pod's pause process: this binary's built-in `pause` action
/// ([`crate::service::pause_action`]). The unit tests' binary is the test harness: there the
/// arguments select the ignored test that runs that same action.
pub(crate) fn pause_command() -> Result<(PathBuf, Vec<String>)> {
    let exe = std::env::current_exe().map_err(|e| Error::io("the shim's executable", e))?;
    #[cfg(not(test))]
    let args = vec!["pause".to_string()];
    #[cfg(test)]
    let args = PAUSE_ARGS.iter().map(|a| a.to_string()).collect();
    Ok((exe, args))
}

/// The arguments with which the unit tests' binary runs its `tests::pause_stand_in` as a pod's
/// pause (see [`pause_command`]).
#[cfg(test)]
pub(crate) const PAUSE_ARGS: [&str; 5] = [
    "tests::pause_stand_in",
    "--exact",
    "--ignored",
    "--test-threads=1",
    "--quiet",
];
