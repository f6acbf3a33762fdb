//! The inherent `task_*` layer: every Task RPC as a plain async method on [`Shim`], free of ttrpc
//! contexts, so tests can call it directly and `task.rs` stays a thin adapter.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim_protos::api::{
    CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, ExecProcessRequest,
    KillRequest, StartRequest, StartResponse, StateRequest, StateResponse, Status as ApiStatus,
    WaitRequest, WaitResponse,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskIO, TaskStart,
};
use containerd_shim_protos::topics;
use tokio::sync::watch;

use crate::cgroup::Cgroup;
use crate::container::{monitor, validate_id, Container, ExitContext};
use crate::error::{Error, Result};
use crate::events::{timestamp, EventSender};
use crate::faults::Faults;
use crate::group::Membership;
use crate::io::{self, LogContext, StdioPaths};
use crate::process::{self, Process, Status};
use crate::reaper::Reaper;
use crate::spec;

/// The shim's state: every container it serves, keyed by id.
pub struct Shim {
    /// containerd namespace (`-namespace`).
    pub namespace: String,
    /// The one reaper.
    pub reaper: Arc<Reaper>,
    /// Enabled faults (none in the real binary).
    pub faults: Faults,
    /// Whether tasks get a cgroup (else the session fallback is used).
    pub cgroups: bool,
    /// Set to true when the server should exit.
    pub exit: watch::Sender<bool>,
    /// Reservations of joining containers and the exit decision (see [`crate::group`]).
    pub membership: Membership,
    /// The host pods served through the Sandbox service (see [`crate::sandbox`]).
    pub sandboxes: crate::pod::Sandboxes,
    pub(crate) events: Arc<dyn EventSender>,
    exit_ctx: Arc<ExitContext>,
    /// cgroup removals still running after their Delete returned, by container id: a Create
    /// of the same id awaits its predecessor's, and the server awaits all before it exits.
    cleanups: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
}

/// The highest valid signal number (SIGRTMAX on Linux).
pub const MAX_SIGNAL: u32 = 64;

impl Shim {
    /// A shim with no containers.
    pub fn new(
        namespace: String,
        reaper: Arc<Reaper>,
        events: Arc<dyn EventSender>,
        faults: Faults,
        cgroups: bool,
    ) -> Arc<Self> {
        let (exit, _) = watch::channel(false);
        Arc::new(Shim {
            namespace,
            reaper,
            faults,
            cgroups,
            exit,
            membership: Membership::default(),
            sandboxes: Default::default(),
            exit_ctx: Arc::new(ExitContext {
                events: events.clone(),
                faults,
            }),
            events,
            containers: Mutex::new(HashMap::new()),
            cleanups: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cleanups_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, tokio::task::JoinHandle<()>>> {
        self.cleanups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the background removal of `id`'s previous cgroup, if one is running.
    async fn await_cleanup(&self, id: &str) {
        let h = self.cleanups_map().remove(id);
        if let Some(h) = h {
            let _ = h.await;
        }
    }

    /// Waits for every background cgroup removal (before the server exits).
    pub(crate) async fn await_cleanups(&self) {
        let all: Vec<_> = self.cleanups_map().drain().map(|(_, h)| h).collect();
        for h in all {
            let _ = h.await;
        }
    }

    /// The container `id`, or NotFound.
    pub fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.map()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }

    /// How many containers the shim serves.
    pub fn count(&self) -> usize {
        self.map().len()
    }

    /// Create: fork the init now (it execs at Start) and publish `/tasks/create`.
    pub async fn task_create(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse> {
        let id = req.id.clone();
        let res = self.create(req).await;
        // Only now, with the container in the map (or refused), is a joiner's reservation
        // used up: a Shutdown in between must not see an empty server.
        self.membership.arrived(&id);
        res
    }

    async fn create(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse> {
        validate_id("container", &req.id)?;
        crate::events::room(self.events.as_ref()).await;
        if self.map().contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!("container {}", req.id)));
        }
        let bundle = if req.bundle.is_empty() {
            std::env::current_dir().map_err(|e| Error::io("cwd", e))?
        } else {
            PathBuf::from(&req.bundle)
        };
        let bspec = spec::load_bundle(&bundle)?;
        let mut pspec = bspec.process;
        pspec.terminal = req.terminal;
        let program = if spec::is_sandbox(&bspec.annotations) {
            // A pod sandbox: the shim binary's own `pause` action stands in for `/pause`.
            let (exe, args) = crate::pod::pause_command()?;
            pspec.args = std::iter::once(exe.display().to_string())
                .chain(args)
                .collect();
            exe
        } else {
            spec::resolve_program(&pspec)?
        };
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        self.await_cleanup(&req.id).await;
        // The cgroup is made before the fork; the child moves itself in.
        let cgroup = self
            .cgroups
            .then(|| Cgroup::create(&self.namespace, &req.id))
            .flatten();
        if let Some(cg) = &cgroup {
            let text = cg.rel_path().display().to_string();
            if let Err(e) = std::fs::write(bundle.join(crate::cgroup::BUNDLE_FILE), text) {
                tracing::warn!("record cgroup path: {e}");
            }
        }
        let tasks = cgroup.as_ref().map(Cgroup::tasks_files).unwrap_or_default();
        let res = self
            .spawn_process("", &pspec, &program, &paths, &req.id, &tasks)
            .await;
        let (p, rx) = match res {
            Ok(v) => v,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    cg.remove_async(false).await;
                }
                return Err(e);
            }
        };
        let pid = p.pid;
        if let Err(e) = std::fs::write(bundle.join("init.pid"), pid.to_string()) {
            tracing::warn!("write init.pid: {e}");
        }
        let c = Arc::new(Container::new(
            req.id.clone(),
            bundle.clone(),
            p.clone(),
            cgroup,
        ));
        {
            let mut m = self.map();
            if m.contains_key(&req.id) {
                let _ = p.signal(libc::SIGKILL);
                return Err(Error::AlreadyExists(format!("container {}", req.id)));
            }
            m.insert(req.id.clone(), c.clone());
        }
        monitor(self.exit_ctx.clone(), c, p, rx);
        let ev = TaskCreate {
            container_id: req.id.clone(),
            bundle: bundle.display().to_string(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            checkpoint: req.checkpoint,
            pid: pid as u32,
            ..Default::default()
        };
        self.events
            .send(topics::TASK_CREATE_EVENT_TOPIC, Box::new(ev));
        self.hostile_events(&req.id);
        Ok(CreateTaskResponse {
            pid: self.faults.report_pid.unwrap_or(pid as u32),
            ..Default::default()
        })
    }

    async fn spawn_process(
        &self,
        exec_id: &str,
        pspec: &spec::ProcessSpec,
        program: &std::path::Path,
        paths: &StdioPaths,
        id: &str,
        cgroup_tasks: &[std::ffi::CString],
    ) -> Result<(
        Arc<Process>,
        tokio::sync::oneshot::Receiver<crate::reaper::Exit>,
    )> {
        let mut io_paths = paths.clone();
        if self.faults.no_stdout {
            io_paths.stdout.clear();
        }
        let ctx = LogContext {
            namespace: self.namespace.clone(),
            id: id.to_string(),
        };
        let (child, handles) = io::setup(&io_paths, &ctx).await?;
        let s = process::spawn(
            &self.reaper,
            exec_id,
            pspec,
            program,
            child,
            paths.clone(),
            handles,
            cgroup_tasks,
        )
        .await?;
        Ok((Arc::new(s.process), s.exit_rx))
    }

    /// Start: let init or an exec run; the start event is queued before any exit event.
    pub async fn task_start(&self, req: StartRequest) -> Result<StartResponse> {
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        if !req.exec_id.is_empty() && c.init.status() == Status::Stopped {
            return Err(Error::FailedPrecondition(format!(
                "container {} init process is not running",
                req.id
            )));
        }
        // Order: hold the event lock across start + start event (the exit path takes it too).
        let guard = c.event_lock.lock().await;
        if let Err(e) = p.start().await {
            drop(guard);
            if p.start_failed() {
                // The child reports its failure, then exits 127. Let that exit land before we
                // answer, so a Delete right after reports 127 instead of killing a process that
                // is already on its way out (seen as 137 on a loaded machine).
                let _ = tokio::time::timeout(Duration::from_secs(2), p.wait()).await;
            }
            return Err(e);
        }
        if self.faults.exit_before_start {
            drop(guard);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if req.exec_id.is_empty() {
            let ev = TaskStart {
                container_id: req.id.clone(),
                pid: p.pid as u32,
                ..Default::default()
            };
            self.events
                .send(topics::TASK_START_EVENT_TOPIC, Box::new(ev));
        } else {
            let ev = TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: p.pid as u32,
                ..Default::default()
            };
            self.events
                .send(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(ev));
        }
        Ok(StartResponse {
            pid: self.faults.report_pid.unwrap_or(p.pid as u32),
            ..Default::default()
        })
    }

    /// The faulty shim's `big-event` (each Create) and `event-flood` (the server's first Create).
    fn hostile_events(&self, id: &str) {
        static FLOODED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if self.faults.big_event {
            // An OOM event for this container, carried in 1 MiB (an unknown field 15 of zeros:
            // a reader that decodes it skips the padding).
            let mut ev = containerd_shim_protos::events::task::TaskOOM {
                container_id: id.to_string(),
                ..Default::default()
            };
            ev.special_fields
                .mut_unknown_fields()
                .add_length_delimited(15, vec![0; crate::faults::BIG_EVENT_BYTES]);
            self.events.send(topics::TASK_OOM_EVENT_TOPIC, Box::new(ev));
        }
        if self.faults.event_flood && !FLOODED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tokio::spawn(crate::events::flood(
                std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
                self.namespace.clone(),
                id.to_string(),
                crate::faults::FLOOD_EVENTS,
            ));
        }
    }

    /// State of init or an exec.
    pub async fn task_state(&self, req: StateRequest) -> Result<StateResponse> {
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let exit = p.exit();
        let status = match p.status() {
            Status::Created => ApiStatus::CREATED,
            Status::Running if c.paused() => ApiStatus::PAUSED,
            Status::Running => ApiStatus::RUNNING,
            Status::Stopped => ApiStatus::STOPPED,
        };
        Ok(StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: c.bundle.display().to_string(),
            pid: p.pid as u32,
            status: status.into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: exit.map(|e| e.status).unwrap_or(0),
            exited_at: Some(exit.map(|e| timestamp(e.at)).unwrap_or_default()).into(),
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    /// Wait: blocks until the process exits (also while created).
    pub async fn task_wait(&self, req: WaitRequest) -> Result<WaitResponse> {
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        if self.faults.wait_early {
            return Ok(WaitResponse {
                exit_status: 0,
                exited_at: Some(timestamp(std::time::SystemTime::now())).into(),
                ..Default::default()
            });
        }
        let e = p.wait().await;
        Ok(WaitResponse {
            exit_status: e.status,
            exited_at: Some(timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    /// Kill: one process, or with `all` every process of the task.
    pub async fn task_kill(&self, req: KillRequest) -> Result<()> {
        if req.signal == 0 || req.signal > MAX_SIGNAL {
            return Err(Error::InvalidArgument(format!(
                "unknown signal {} (valid: 1..={MAX_SIGNAL})",
                req.signal
            )));
        }
        let sig = req.signal as i32;
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        if !req.exec_id.is_empty() {
            if p.status() == Status::Created {
                return Err(Error::FailedPrecondition(format!(
                    "process not created: exec {} has not been started",
                    req.exec_id
                )));
            }
            return p.signal(sig);
        }
        if req.all {
            let frozen = c.paused() && sig == libc::SIGKILL;
            c.signal_all(sig);
            if frozen {
                if let Some(cg) = &c.cgroup {
                    let _ = cg.thaw();
                } else {
                    c.signal_all(libc::SIGCONT);
                }
                c.set_paused(false);
            }
            return Ok(());
        }
        p.signal(sig)?;
        if c.paused() && sig == libc::SIGKILL {
            if let Some(cg) = &c.cgroup {
                let _ = cg.thaw();
            }
            c.set_paused(false);
        }
        Ok(())
    }

    /// Delete: an exec once stopped or never started; init once stopped or never started.
    pub async fn task_delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let running = p.status() == Status::Running;
        if running && !(req.exec_id.is_empty() && self.faults.delete_running_ok) {
            return Err(Error::FailedPrecondition(
                "cannot delete a running process".into(),
            ));
        }
        if p.status() != Status::Stopped {
            // Never started (or the faulty shim's running init): kill it and collect its exit.
            if running {
                c.signal_all(libc::SIGKILL);
            }
            let _ = p.signal(libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), p.wait()).await;
        }
        let exit = p.exit();
        let (status, at) = match exit {
            Some(e) => (e.status, timestamp(e.at)),
            None => (137, timestamp(std::time::SystemTime::now())),
        };
        if req.exec_id.is_empty() {
            for e in c.execs() {
                if e.status() != Status::Stopped {
                    let _ = e.signal(libc::SIGKILL);
                }
            }
            let others = {
                let mut m = self.map();
                m.remove(&req.id);
                !m.is_empty()
            };
            if self.membership.after_delete(self.members()) {
                self.exit.send_replace(true);
            }
            if let Some(cg) = c.cgroup.clone() {
                // After the reply: rmdir is slow in the kernel (memory cgroups most). The task
                // yields first: spawned during this handler, it would otherwise run before the
                // connection's writer task sends the reply.
                let h = tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    cg.remove_async(!others).await
                });
                let mut pending = self.cleanups_map();
                pending.retain(|_, h| !h.is_finished());
                pending.insert(req.id.clone(), h);
            }
        } else {
            c.remove_exec(&req.exec_id);
        }
        let ev = TaskDelete {
            container_id: req.id.clone(),
            pid: p.pid as u32,
            exit_status: status,
            exited_at: Some(at.clone()).into(),
            id: req.exec_id.clone(),
            ..Default::default()
        };
        self.events
            .send(topics::TASK_DELETE_EVENT_TOPIC, Box::new(ev));
        Ok(DeleteResponse {
            pid: p.pid as u32,
            exit_status: status,
            exited_at: Some(at).into(),
            ..Default::default()
        })
    }

    /// Exec: fork a host process from a JSON OCI Process; publish `/tasks/exec-added`.
    pub async fn task_exec(&self, req: ExecProcessRequest) -> Result<()> {
        crate::events::room(self.events.as_ref()).await;
        let c = self.container(&req.id)?;
        validate_id("exec", &req.exec_id)?;
        match c.init.status() {
            Status::Stopped => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot exec in a stopped state: container {} has exited",
                    req.id
                )))
            }
            _ if c.paused() => {
                return Err(Error::FailedPrecondition(
                    "cannot exec in a paused state".into(),
                ))
            }
            _ => {}
        }
        if c.has_exec(&req.exec_id) {
            return Err(Error::AlreadyExists(format!("exec {}", req.exec_id)));
        }
        let value = req
            .spec
            .as_ref()
            .map(|a| a.value.as_slice())
            .unwrap_or_default();
        if value.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "exec {}: field `spec` is empty",
                req.exec_id
            )));
        }
        let mut pspec = spec::parse_process(value, &format!("exec {} spec", req.exec_id))?;
        pspec.terminal = req.terminal;
        let program = spec::resolve_program(&pspec)?;
        let paths = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let tasks = c
            .cgroup
            .as_ref()
            .map(Cgroup::tasks_files)
            .unwrap_or_default();
        let (p, rx) = self
            .spawn_process(&req.exec_id, &pspec, &program, &paths, &req.id, &tasks)
            .await?;
        if let Err(e) = c.add_exec(p.clone()) {
            let _ = p.signal(libc::SIGKILL);
            return Err(e);
        }
        monitor(self.exit_ctx.clone(), c.clone(), p, rx);
        let ev = TaskExecAdded {
            container_id: req.id,
            exec_id: req.exec_id,
            ..Default::default()
        };
        self.events
            .send(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(ev));
        Ok(())
    }
}
