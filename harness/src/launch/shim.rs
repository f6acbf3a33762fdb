//! A launched shim and its end of life as containerd handles it (doc 2.10): Shutdown, close the
//! connection, the `delete` action, synthetic `/tasks/exit` + `/tasks/delete` when the task was
//! never deleted, then the harness's own leak check; dropping an unclosed shim ends its server.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::api::ShutdownRequest;
use containerd_shim_protos::events::task::{TaskDelete, TaskExit};

use crate::client::TaskClient;
use crate::delete::{DeleteAction, DeleteActionOutcome};
use crate::dialect::{self, TaskApi};
use crate::events::{
    event_fields, system_to_timestamp, EventLog, EventSource, RecordedEvent, TaskEvent,
};
use crate::leaks::{self, Leak, LeakScope};
use crate::procfs;

use super::log::LogDrain;
use super::Timeouts;

/// A launched shim: its address, the task API chosen, a client, and what is needed to close it.
pub struct Shim {
    /// The server's pid, found through the socket it listens on (if it could be found).
    pub pid: Option<i32>,
    /// The address printed by `start` (the `address` field of a JSON reply).
    pub address: String,
    /// The task API the dialect chose.
    pub api: TaskApi,
    pub(super) client: TaskClient,
    pub(super) start_output: String,
    pub(super) start_raw: Vec<u8>,
    pub(super) answer: crate::dialect::StartAnswer,
    pub(super) log: LogDrain,
    pub(super) pgids: Vec<i32>,
    pub(super) events: EventLog,
    pub(super) timeouts: Timeouts,
    pub(super) delete: DeleteAction,
    pub(super) rootfs_dir: Option<PathBuf>,
    pub(super) closed: bool,
    /// Set by [`Shim::close`] once it let go of the server's registry entry: whether another
    /// connection still shares the server. A close cancelled later (a scenario's timeout) leaves
    /// the rest of the clean-up to `Drop`, which must not release the entry twice.
    pub(super) released: Option<bool>,
    pub(super) since: u64,
    /// The pid allocation before the server's `start` was spawned (see [`procfs::PidMark`]).
    pub(super) mark: Option<procfs::PidMark>,
    pub(super) registry: super::Registry,
}

impl Drop for Shim {
    /// A shim dropped without [`Shim::close`] (an error path, a panic), or whose close was
    /// cancelled half-way (a scenario's timeout), is not left running:
    /// the connection is closed, its server and process groups are ended by pid.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.client.close();
        let shared = match self.released {
            Some(shared) => shared,
            None => super::release(&self.registry, &self.address),
        };
        if shared {
            return; // the server still serves other containers
        }
        let scope = LeakScope {
            server_pid: self.pid,
            pgids: self.pgids.clone(),
            descendants: self
                .pid
                .map(|p| procfs::descendants(p, self.mark))
                .unwrap_or_default(),
            socket: dialect::socket_path(&self.address),
            dirs: vec![],
            bundle: None,
            not_before: self.since,
            spare: vec![],
            mark: self.mark,
        };
        let found = leaks::check_and_clean(&scope);
        if !found.is_empty() {
            tracing::warn!(id = %self.delete.id, ?found, "shim dropped without close: ended its leftovers");
        }
    }
}

impl std::fmt::Debug for Shim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shim")
            .field("pid", &self.pid)
            .field("address", &self.address)
            .field("api", &self.api)
            .finish()
    }
}

/// What happened when the harness closed a shim.
#[derive(Debug, Clone)]
pub struct CloseReport {
    /// The `delete` action's decoded response, or why it failed.
    pub delete_action: Result<DeleteActionOutcome, String>,
    /// `/tasks/exit` + `/tasks/delete` the mock published because a task was still live.
    pub synthetic_events: Vec<RecordedEvent>,
    /// Leftovers found (and then cleaned up).
    pub leaks: Vec<Leak>,
    /// Whether `close` had to send `Shutdown` itself (the caller had not).
    pub sent_shutdown: bool,
    /// Whether the server exited within the shutdown bound (before any kill).
    pub server_exited: bool,
    /// Whether the server still serves other connections of this mock (grouping): then it
    /// is left running and only this container's leftovers are checked.
    pub server_shared: bool,
    /// All lines drained from the `log` FIFO.
    pub log: Vec<String>,
}

impl Shim {
    /// A client on this shim's connection (clones share it).
    pub fn client(&self) -> TaskClient {
        self.client.clone()
    }

    /// Lines read from the bundle's `log` FIFO so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lines()
    }

    /// Fault injection (`restart-containerd`): containerd's reader of the bundle's `log` FIFO
    /// goes away, as when containerd stops; [`Shim::log_reader_up`] opens it again.
    pub async fn log_reader_down(&mut self) {
        self.log.close_reader().await;
    }

    /// Opens the bundle's `log` FIFO again, as a restarted containerd's `loadShim` does.
    pub fn log_reader_up(&mut self) -> Result<(), crate::error::HarnessError> {
        self.log.reopen(&self.delete.bundle.join("log"))
    }

    /// What `start` answered, as the dialect read it.
    pub fn answer(&self) -> &crate::dialect::StartAnswer {
        &self.answer
    }

    /// The combined, trimmed output of `start`.
    pub fn start_output(&self) -> &str {
        &self.start_output
    }

    /// The output of `start` exactly as read (stdout and stderr on one pipe, untrimmed): what
    /// a test of the `start` action itself compares byte for byte.
    pub fn start_output_raw(&self) -> &[u8] {
        &self.start_raw
    }

    /// The container id this connection was launched for.
    pub fn id(&self) -> &str {
        &self.delete.id
    }

    /// Closes as containerd does after a task's life: Shutdown (if the caller did not send
    /// one), close the connection, run the `delete` action, publish synthetic exit/delete if the
    /// task was never deleted, wait (bounded) for the server to exit, then check for leaks and
    /// end whatever is left.
    pub async fn close(mut self) -> CloseReport {
        let t = self.timeouts;
        let descendants = self
            .pid
            .map(|p| procfs::descendants(p, self.mark))
            .unwrap_or_default();
        let mut zombie_leaks = unreaped_zombies(&descendants).await;
        // A pod this connection created and no step shut down: containerd's shim controller
        // shuts a sandbox down with ShutdownSandbox before the `delete` action
        // (`plugins/sandbox/controller.go` `Shutdown` at v2.1.9).
        if !self.client.is_closed() {
            for sandbox_id in self.client.live_sandboxes() {
                let req = containerd_shim_protos::sandbox_api::ShutdownSandboxRequest {
                    sandbox_id,
                    ..Default::default()
                };
                let _ = self.client.shutdown_sandbox(req, t.shutdown).await;
            }
        }
        let mut sent_shutdown = false;
        if !self.client.shutdown_sent() && !self.client.is_closed() {
            sent_shutdown = true;
            let req = ShutdownRequest {
                id: self.delete.id.clone(),
                ..Default::default()
            };
            let _ = self.client.shutdown(req, t.shutdown).await;
        }
        let live = self.client.live_tasks();
        self.client.close();
        // Another connection still uses this server (grouping): it must live on, untouched.
        let shared = super::release(&self.registry, &self.address);
        self.released = Some(shared);
        let delete_action = self.delete.run(t.delete_action).await;
        let synthetic = if live.contains_key(&self.delete.id) {
            self.publish_synthetic(&delete_action)
        } else {
            vec![]
        };
        let mut server_exited = !shared;
        if let Some(pid) = self.pid.filter(|_| !shared) {
            server_exited = match crate::pidguard::Proc::found(pid) {
                Ok(server) => server.wait_gone(t.shutdown).await,
                Err(_) => !procfs::is_alive(pid),
            };
        }
        // Zombies need a moment: the server may be reaping right now.
        let scope = self.leak_scope(shared, descendants);
        let mut leaks = tokio::task::spawn_blocking(move || leaks::check_and_clean(&scope))
            .await
            .unwrap_or_default();
        for z in zombie_leaks.iter_mut() {
            // Killing the parent hands the zombie to init, which reaps it.
            z.cleaned = z
                .pid
                .map(|p| !procfs::is_alive(p) && procfs::proc_info(p).is_none())
                .unwrap_or(true);
        }
        zombie_leaks.extend(
            leaks
                .drain(..)
                .filter(|l| l.kind != leaks::LeakKind::Zombie),
        );
        let leaks = zombie_leaks;
        let log = std::mem::replace(&mut self.log, LogDrain::empty())
            .stop()
            .await;
        self.closed = true;
        CloseReport {
            delete_action,
            synthetic_events: synthetic,
            leaks,
            sent_shutdown,
            server_exited,
            server_shared: shared,
            log,
        }
    }

    /// containerd's cleanupAfterDeadShim for a task never deleted: synthetic `/tasks/exit` and
    /// `/tasks/delete` (source `Mock`), recorded and returned.
    fn publish_synthetic(
        &self,
        delete_action: &Result<DeleteActionOutcome, String>,
    ) -> Vec<RecordedEvent> {
        let mut synthetic = vec![];
        // containerd's cleanupAfterDeadShim: the DeleteResponse values, or 255 and now.
        let (pid, status, at) = match delete_action {
            Ok(o) => (
                o.pid,
                o.exit_status,
                o.exited_at.unwrap_or_else(SystemTime::now),
            ),
            Err(_) => (0, 255, SystemTime::now()),
        };
        let id = self.delete.id.clone();
        let exit = TaskEvent::Exit(TaskExit {
            container_id: id.clone(),
            id: id.clone(),
            pid,
            exit_status: status,
            exited_at: protobuf::MessageField::some(system_to_timestamp(at)),
            ..Default::default()
        });
        let del = TaskEvent::Delete(TaskDelete {
            container_id: id,
            pid,
            exit_status: status,
            exited_at: protobuf::MessageField::some(system_to_timestamp(at)),
            ..Default::default()
        });
        for (topic, ev) in [("/tasks/exit", exit), ("/tasks/delete", del)] {
            let now = SystemTime::now();
            let rec = RecordedEvent {
                topic: topic.into(),
                namespace: self.delete.namespace.clone(),
                timestamp: Some(now),
                received: now,
                source: EventSource::Mock,
                fields: event_fields(&ev),
                event: ev,
            };
            self.events.record(rec.clone());
            synthetic.push(rec);
        }

        synthetic
    }

    /// What the leak check looks at: everything of the server's when it was this shim's own;
    /// when another connection still uses it (grouping), only the bundle and mounts, sparing the
    /// server and its processes.
    fn leak_scope(&self, shared: bool, descendants: Vec<procfs::ProcInfo>) -> LeakScope {
        let dirs = std::iter::once(self.delete.bundle.join("rootfs"))
            .chain(self.rootfs_dir.clone())
            .collect();
        if shared {
            let spare = self
                .pid
                .into_iter()
                .chain(descendants.iter().map(|d| d.pid))
                .collect();
            LeakScope {
                dirs,
                bundle: Some(self.delete.bundle.clone()),
                not_before: self.since,
                spare,
                mark: self.mark,
                ..Default::default()
            }
        } else {
            LeakScope {
                server_pid: self.pid,
                pgids: self.pgids.clone(),
                descendants,
                socket: dialect::socket_path(&self.address),
                dirs,
                bundle: Some(self.delete.bundle.clone()),
                not_before: self.since,
                spare: vec![],
                mark: self.mark,
            }
        }
    }
}

/// Unreaped children of a live server: given a moment, whatever is still a zombie under the
/// same parent is reported.
async fn unreaped_zombies(descendants: &[procfs::ProcInfo]) -> Vec<Leak> {
    let mut leaks = vec![];
    if descendants.iter().any(|d| d.state == 'Z') {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for d in descendants.iter().filter(|d| d.state == 'Z') {
            if let Some(p) = procfs::proc_info(d.pid) {
                if p.state == 'Z' && p.ppid == d.ppid {
                    leaks.push(Leak {
                        kind: leaks::LeakKind::Zombie,
                        detail: format!(
                            "zombie pid {} ({}) not reaped by its parent {}",
                            p.pid, p.comm, p.ppid
                        ),
                        pid: Some(p.pid),
                        path: None,
                        cleaned: false,
                    });
                }
            }
        }
    }
    leaks
}
