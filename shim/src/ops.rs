//! Task-wide operations of the inherent layer: Pids, Pause/Resume, Stats, CloseIO, ResizePty,
//! Connect, Shutdown, and killing every task when the server exits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, PidsRequest, PidsResponse, ProcessInfo,
    ResizePtyRequest, ShutdownRequest, StatsRequest, StatsResponse,
};
use containerd_shim_protos::events::task::{TaskPaused, TaskResumed};
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::topics;

use crate::api::Shim;
use crate::container::{proc_stat, validate_id, Container};
use crate::error::{Error, Result};
use crate::events::to_any;
use crate::process::Status;

impl Shim {
    /// Pids: every process of the task; exec pids carry `ProcessDetails{exec_id}`.
    pub async fn task_pids(&self, req: PidsRequest) -> Result<PidsResponse> {
        let c = self.container(&req.id)?;
        let execs: HashMap<i32, String> = c
            .execs()
            .iter()
            .map(|e| (e.pid, e.exec_id.clone()))
            .collect();
        let processes = c
            .all_pids()
            .into_iter()
            .map(|pid| {
                let mut pi = ProcessInfo {
                    pid: pid as u32,
                    ..Default::default()
                };
                if let Some(exec_id) = execs.get(&pid) {
                    let d = ProcessDetails {
                        exec_id: exec_id.clone(),
                        ..Default::default()
                    };
                    pi.info = Some(to_any("containerd.runc.v1.ProcessDetails", &d)).into();
                }
                pi
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn check_running(&self, c: &Container, verb: &str) -> Result<()> {
        match c.init.status() {
            Status::Created => Err(Error::FailedPrecondition(format!(
                "cannot {verb} task in created state"
            ))),
            Status::Stopped => Err(Error::FailedPrecondition(format!(
                "cannot {verb} a stopped container"
            ))),
            Status::Running => Ok(()),
        }
    }

    /// Pause: freeze every process (cgroup freezer, else SIGSTOP).
    pub async fn task_pause(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        self.check_running(&c, "pause")?;
        if c.paused() {
            return Err(Error::FailedPrecondition(
                "cannot pause a paused container".into(),
            ));
        }
        match &c.cgroup {
            Some(cg) if cg.has_freezer() => cg.freeze()?,
            _ => {
                c.signal_all(libc::SIGSTOP);
            }
        }
        c.set_paused(true);
        let ev = TaskPaused {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.events
            .send(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(ev));
        Ok(())
    }

    /// Resume: thaw every process.
    pub async fn task_resume(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        self.check_running(&c, "resume")?;
        if !c.paused() {
            return Err(Error::FailedPrecondition(
                "cannot resume a running process".into(),
            ));
        }
        match &c.cgroup {
            Some(cg) if cg.has_freezer() => cg.thaw()?,
            _ => {
                c.signal_all(libc::SIGCONT);
            }
        }
        c.set_paused(false);
        let ev = TaskResumed {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.events
            .send(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(ev));
        Ok(())
    }

    /// Stats: cgroup v1 metrics (or /proc figures without a cgroup) as an Any.
    pub async fn task_stats(&self, req: StatsRequest) -> Result<StatsResponse> {
        let c = self.container(&req.id)?;
        let m = match &c.cgroup {
            Some(cg) => cg.metrics(),
            None => proc_metrics(&c.all_pids()),
        };
        let any = to_any("io.containerd.cgroups.v1.Metrics", &m);
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    /// CloseIO: EOF on the process's stdin.
    pub async fn task_close_io(&self, req: CloseIORequest) -> Result<()> {
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        if req.stdin {
            p.close_stdin();
        }
        Ok(())
    }

    /// ResizePty: resize the pty (no-op without a terminal).
    pub async fn task_resize_pty(&self, req: ResizePtyRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        c.process(&req.exec_id)?.resize(req.width, req.height)
    }

    /// Connect: shim pid, task pid.
    pub async fn task_connect(&self, req: ConnectRequest) -> Result<ConnectResponse> {
        let task_pid = self
            .container(&req.id)
            .map(|c| c.init.pid as u32)
            .unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    /// On server exit (Shutdown `now` or SIGTERM with tasks left): a host task has no pid
    /// namespace to outlive the shim in, so every process left is killed (its exit is recorded
    /// in the bundle for the `delete` action) and the cgroups are removed.
    pub async fn kill_all_tasks(&self) {
        self.stop_all_pods().await;
        let all: Vec<Arc<Container>> = self.map().drain().map(|(_, c)| c).collect();
        for c in &all {
            if c.paused() {
                if let Some(cg) = &c.cgroup {
                    let _ = cg.thaw();
                }
            }
            c.signal_all(libc::SIGKILL);
            let _ = c.init.signal(libc::SIGKILL);
            for e in c.execs() {
                let _ = e.signal(libc::SIGKILL);
            }
        }
        for c in &all {
            let _ = tokio::time::timeout(Duration::from_secs(2), c.init.wait()).await;
            if let Some(cg) = &c.cgroup {
                cg.remove_async(true).await;
            }
        }
        self.await_cleanups().await;
        crate::cgroup::remove_namespace(&self.namespace);
    }

    /// Shutdown: exit once no container remains and no joining container holds a
    /// reservation; `now` exits at once.
    pub async fn task_shutdown(&self, req: ShutdownRequest) -> Result<()> {
        if self.faults.shutdown_never_exits || self.faults.ignore_sigterm {
            return Ok(());
        }
        // A pod served through the Sandbox service keeps the server until its ShutdownSandbox.
        if self.membership.try_exit(&req.id, self.members(), req.now) {
            self.exit.send_replace(true);
        }
        Ok(())
    }

    /// Connect from a joining `start` (see [`crate::group`]): reserve a place for `req.id` so
    /// the server stays until its Create, or refuse when the server is exiting. A reservation
    /// that lapses finishes a Shutdown that it held up.
    pub async fn task_join(self: &Arc<Self>, req: ConnectRequest) -> Result<ConnectResponse> {
        validate_id("container", &req.id)?;
        if !self.membership.reserve(&req.id) {
            return Err(Error::FailedPrecondition(
                "the shim server is shutting down".into(),
            ));
        }
        let shim = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(crate::group::RESERVATION_TTL).await;
            if shim.membership.expire(shim.members()) {
                shim.exit.send_replace(true);
            }
        });
        self.task_connect(req).await
    }
}

fn proc_metrics(pids: &[i32]) -> containerd_shim_protos::cgroups::metrics::Metrics {
    use containerd_shim_protos::cgroups::metrics::{
        CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics,
    };
    // SAFETY: sysconf is a plain libc call.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let (mut ticks, mut pages) = (0u64, 0u64);
    for pid in pids {
        if let Some(s) = proc_stat(*pid) {
            ticks += s.cpu_ticks;
            pages += s.rss_pages;
        }
    }
    let mut m = Metrics::new();
    let mut u = CPUUsage::new();
    u.total = ticks * 1_000_000_000 / tck;
    let mut cpu = CPUStat::new();
    cpu.usage = Some(u).into();
    m.cpu = Some(cpu).into();
    let mut e = MemoryEntry::new();
    e.usage = pages * page;
    let mut mem = MemoryStat::new();
    mem.rss = pages * page;
    mem.usage = Some(e).into();
    m.memory = Some(mem).into();
    m
}
