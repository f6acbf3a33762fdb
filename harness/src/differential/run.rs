//! One scenario's run through a real containerd: what the containerd backend holds (the
//! daemon, the namespace, the main container's bundle, task and FIFOs, the pod, the run's
//! script) and what each call goes through.

use std::collections::BTreeMap;
use std::path::PathBuf;

use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::tonic::transport::Channel;
use serde_json::Value;

use super::compare::MAIN;
use super::daemon::{Daemon, Events};
use crate::bundle::Bundle;
use crate::engine::script::Script;
use crate::scenario::Scenario;
use crate::stdio::StdioSet;

/// What a step's task call goes through: the namespace, the main container's id and a client of
/// containerd's Tasks service.
pub(super) struct Target {
    pub(super) ns: String,
    pub(super) id: String,
    pub(super) tasks: TasksClient<Channel>,
}

/// One scenario's run through containerd: the daemon, the namespace, the main container's
/// bundle, task and stdio, the pod, and the run's [`Script`].
pub(super) struct Run<'a> {
    pub(super) d: &'a Daemon,
    pub(super) ns: String,
    pub(super) sc: &'a Scenario,
    pub(super) tmp: PathBuf,
    pub(super) events: Events,
    pub(super) tasks: TasksClient<Channel>,
    pub(super) container: Option<Bundle>,
    pub(super) task_live: bool,
    pub(super) init_stdio: Option<StdioSet>,
    pub(super) execs: BTreeMap<String, StdioSet>,
    /// The run's variables, transcript and verdict.
    pub(super) script: Script,
    pub(super) seq: u32,
    pub(super) cursor: usize,
    /// The scenario's pod, once CreateSandbox has made its record.
    pub(super) pod: Option<Pod>,
}

/// The scenario's pod in the daemon. containerd keeps one shim per id for tasks and pods alike
/// (`ShimManager.shims`), so the pod gets an id of its own beside the `main` container's.
pub(super) struct Pod {
    /// The id the daemon knows it by (its sandbox record exists from the start).
    pub(super) id: String,
    /// Shut down through the controller (nothing left for the cleanup to end).
    pub(super) shut: bool,
}

impl Run<'_> {
    /// A fresh directory for one process's FIFOs.
    pub(super) fn stdio_dir(&mut self) -> PathBuf {
        self.seq += 1;
        self.tmp.join("stdio").join(self.seq.to_string())
    }

    pub(super) fn main_events(&self) -> Vec<(String, Value)> {
        self.events
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, f)| f.get("container-id").and_then(Value::as_str) == Some(MAIN))
            .collect()
    }
}
