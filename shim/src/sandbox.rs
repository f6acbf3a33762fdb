//! The shim Sandbox service (`containerd.runtime.sandbox.v1.Sandbox`) for host pods: the
//! inherent `sandbox_*` layer on [`Shim`] and its ttrpc adapter. A host pod is the group its
//! containers already share (one server per sandbox id); StartSandbox runs the binary's built-in
//! pause as the pod's process (its pid, in a cgroup of its own for the metrics), StopSandbox
//! ends it, WaitSandbox returns once it has ended, and ShutdownSandbox lets the server exit once
//! no container of the pod remains. The flow is containerd's shim sandbox controller
//! (`plugins/sandbox/controller.go` at v2.1.9).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use containerd_shim_protos::sandbox_api::{
    CreateSandboxRequest, CreateSandboxResponse, PingRequest, PingResponse, PlatformRequest,
    PlatformResponse, SandboxMetricsRequest, SandboxMetricsResponse, SandboxStatusRequest,
    SandboxStatusResponse, ShutdownSandboxRequest, ShutdownSandboxResponse, StartSandboxRequest,
    StartSandboxResponse, StopSandboxRequest, StopSandboxResponse, WaitSandboxRequest,
    WaitSandboxResponse,
};
use containerd_shim_protos::sandbox_async::{create_sandbox, Sandbox};
use tokio::sync::watch;
use ttrpc::asynchronous::{Service, TtrpcContext};

use crate::api::Shim;
use crate::cgroup::Cgroup;
use crate::container::validate_id;
use crate::error::{Error, Result};
use crate::events::{timestamp, to_any};
use crate::pod::{pause_command, phase, Phase, Pod, NOT_READY, READY};
use crate::reaper::Exit;

impl Shim {
    /// CreateSandbox: remember the pod (its bundle; the rootfs, options and netns path mean
    /// nothing to host processes).
    pub async fn sandbox_create(&self, req: CreateSandboxRequest) -> Result<()> {
        validate_id("sandbox", &req.sandbox_id)?;
        let mut pods = self.sandboxes.map();
        if pods.contains_key(&req.sandbox_id) {
            return Err(Error::AlreadyExists(format!("sandbox {}", req.sandbox_id)));
        }
        let (exited, _) = watch::channel(None);
        pods.insert(
            req.sandbox_id,
            Arc::new(Pod {
                bundle: PathBuf::from(req.bundle_path),
                phase: Mutex::new(Phase::Created),
                exited,
            }),
        );
        Ok(())
    }

    /// StartSandbox: run the built-in pause as the pod's process; its pid and start time.
    pub async fn sandbox_start(&self, req: StartSandboxRequest) -> Result<StartSandboxResponse> {
        let pod = self.sandboxes.get(&req.sandbox_id)?;
        if !matches!(*phase(&pod), Phase::Created) {
            return Err(Error::FailedPrecondition(format!(
                "sandbox {} was started already",
                req.sandbox_id
            )));
        }
        let cgroup = self
            .cgroups
            .then(|| Cgroup::create(&self.namespace, &req.sandbox_id))
            .flatten();
        let (pid, exit_rx) = match self.spawn_pause(&pod, cgroup.as_ref()) {
            Ok(v) => v,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    cg.remove_async(false).await;
                }
                return Err(e);
            }
        };
        if let Some(cg) = &cgroup {
            let _ = std::fs::write(
                pod.bundle.join(crate::cgroup::BUNDLE_FILE),
                cg.rel_path().display().to_string(),
            );
        }
        let started = SystemTime::now();
        *phase(&pod) = Phase::Running {
            pid,
            started,
            cgroup,
        };
        let watcher = pod.clone();
        tokio::spawn(async move {
            if let Ok(exit) = exit_rx.await {
                let cgroup = {
                    let mut ph = phase(&watcher);
                    match ph.clone() {
                        Phase::Running {
                            pid,
                            started,
                            cgroup,
                        } => {
                            *ph = Phase::Stopped {
                                pid,
                                started: Some(started),
                            };
                            cgroup
                        }
                        _ => None,
                    }
                };
                if let Some(cg) = cgroup {
                    cg.remove_async(false).await;
                }
                watcher.exited.send_replace(Some(exit));
            }
        });
        Ok(StartSandboxResponse {
            pid: pid as u32,
            created_at: Some(timestamp(started)).into(),
            ..Default::default()
        })
    }

    /// Forks and execs `<this binary> pause` with the reaper subscribed to its pid; the child
    /// moves itself into `cgroup` first (a failure fails the spawn, naming the cgroup).
    fn spawn_pause(
        &self,
        pod: &Pod,
        cgroup: Option<&Cgroup>,
    ) -> Result<(i32, tokio::sync::oneshot::Receiver<Exit>)> {
        let cgroup_tasks = cgroup.map(Cgroup::tasks_files).unwrap_or_default();
        let (exe, args) = pause_command()?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(args)
            .current_dir(&pod.bundle)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // SIGTERM and SIGINT are blocked from before the exec (std resets the mask first, then
        // runs this), so a StopSandbox that comes before the pause reaches `sigwait` still ends
        // it with 0 rather than killing it (143). `spawn` returns only after the exec.
        // SAFETY: open/write/close of prepared paths and sigprocmask on a local set are
        // async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                crate::cgroup::enter_self(&cgroup_tasks)
                    .map_err(std::io::Error::from_raw_os_error)?;
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::sigaddset(&mut set, libc::SIGINT);
                if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The pid is subscribed before the reaper can look it up (same lock).
        let mut subs = self.reaper.lock();
        let child = cmd.spawn().map_err(|e| {
            let what = match cgroup {
                Some(cg) => format!(
                    "starting the sandbox's pause in cgroup {}",
                    cg.rel_path().display()
                ),
                None => "starting the sandbox's pause".to_string(),
            };
            Error::io(what, e)
        })?;
        let pid = child.id() as i32;
        let (tx, rx) = tokio::sync::oneshot::channel();
        subs.insert(pid, tx);
        Ok((pid, rx))
    }

    /// Platform: this host's.
    pub async fn sandbox_platform(&self, req: PlatformRequest) -> Result<PlatformResponse> {
        self.sandboxes.get(&req.sandbox_id)?;
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let mut p = containerd_shim_protos::types::platform::Platform::new();
        p.os = "linux".into();
        p.architecture = arch.into();
        Ok(PlatformResponse {
            platform: Some(p).into(),
            ..Default::default()
        })
    }

    /// StopSandbox: SIGTERM to the pause (it exits 0 on it), SIGKILL after `timeout_secs`
    /// (default 10 s); returns once it has ended. A pod never started just becomes stopped.
    pub async fn sandbox_stop(&self, req: StopSandboxRequest) -> Result<()> {
        let pod = self.sandboxes.get(&req.sandbox_id)?;
        // Read apart from the match: a guard in its scrutinee would be held through the arms,
        // and the Created arm's own lock would deadlock.
        let current = phase(&pod).clone();
        let pid = match current {
            Phase::Running { pid, .. } => pid,
            Phase::Created => {
                *phase(&pod) = Phase::Stopped {
                    pid: 0,
                    started: None,
                };
                pod.exited.send_replace(Some(Exit {
                    pid: 0,
                    status: 0,
                    at: SystemTime::now(),
                }));
                return Ok(());
            }
            Phase::Stopped { .. } => return Ok(()),
        };
        let grace = match req.timeout_secs {
            0 => Duration::from_secs(10),
            s => Duration::from_secs(s.into()),
        };
        let mut rx = pod.exited.subscribe();
        // SAFETY: kill(2) of the pause we forked and have not seen exit (the reaper holds its
        // zombie until it reports the exit, so the pid is not reused meanwhile).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if tokio::time::timeout(grace, rx.wait_for(Option::is_some))
            .await
            .is_err()
        {
            if matches!(*phase(&pod), Phase::Running { .. }) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ =
                tokio::time::timeout(Duration::from_secs(5), rx.wait_for(Option::is_some)).await;
        }
        Ok(())
    }

    /// WaitSandbox: blocks until the pod's process has ended; its exit status and time.
    pub async fn sandbox_wait(&self, req: WaitSandboxRequest) -> Result<WaitSandboxResponse> {
        let pod = self.sandboxes.get(&req.sandbox_id)?;
        if self.faults.sandbox_wait_early {
            tracing::warn!("faulty: WaitSandbox returns before the pod stops");
            return Ok(WaitSandboxResponse {
                exited_at: Some(timestamp(SystemTime::now())).into(),
                ..Default::default()
            });
        }
        let mut rx = pod.exited.subscribe();
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::Other("the sandbox went away".into()))?
            .ok_or_else(|| Error::Other("the sandbox's exit was not recorded".into()))?;
        Ok(WaitSandboxResponse {
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    /// SandboxStatus: id, pid, state, times.
    pub async fn sandbox_status(&self, req: SandboxStatusRequest) -> Result<SandboxStatusResponse> {
        let pod = self.sandboxes.get(&req.sandbox_id)?;
        let exit = *pod.exited.borrow();
        let (pid, state, started) = match phase(&pod).clone() {
            Phase::Created => (0, NOT_READY, None),
            Phase::Running { pid, started, .. } => (pid, READY, Some(started)),
            Phase::Stopped { pid, started } => (pid, NOT_READY, started),
        };
        Ok(SandboxStatusResponse {
            sandbox_id: req.sandbox_id,
            pid: pid.max(0) as u32,
            state: state.into(),
            created_at: started.map(timestamp).into(),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    /// PingSandbox: the pod is known (whatever its state).
    pub async fn sandbox_ping(&self, req: PingRequest) -> Result<()> {
        self.sandboxes.get(&req.sandbox_id).map(|_| ())
    }

    /// ShutdownSandbox: ends the pause if it still runs and forgets the pod; the server exits
    /// once no container remains. Idempotent.
    pub async fn sandbox_shutdown(&self, req: ShutdownSandboxRequest) -> Result<()> {
        if let Ok(pod) = self.sandboxes.get(&req.sandbox_id) {
            if matches!(*phase(&pod), Phase::Running { .. }) {
                self.sandbox_stop(StopSandboxRequest {
                    sandbox_id: req.sandbox_id.clone(),
                    timeout_secs: 1,
                    ..Default::default()
                })
                .await?;
            }
            self.sandboxes.map().remove(&req.sandbox_id);
        }
        let now = self.faults.sandbox_exit_with_tasks;
        if now {
            tracing::warn!("faulty: ShutdownSandbox ends the server whatever remains");
        }
        if self
            .membership
            .try_exit_pod(&req.sandbox_id, self.members(), now)
        {
            self.exit.send_replace(true);
        }
        Ok(())
    }

    /// SandboxMetrics: the cgroup v1 metrics of the pod's own cgroup.
    pub async fn sandbox_metrics(
        &self,
        req: SandboxMetricsRequest,
    ) -> Result<SandboxMetricsResponse> {
        let pod = self.sandboxes.get(&req.sandbox_id)?;
        let Phase::Running {
            cgroup: Some(cg), ..
        } = phase(&pod).clone()
        else {
            return Err(Error::FailedPrecondition(format!(
                "sandbox {} has no cgroup (not running, or cgroups are off)",
                req.sandbox_id
            )));
        };
        // The `Metric` type is not exported by name; the field makes one.
        let mut r = SandboxMetricsResponse::new();
        let m = r.metrics.mut_or_insert_default();
        m.timestamp = Some(timestamp(SystemTime::now())).into();
        m.id = req.sandbox_id;
        m.data = Some(to_any("io.containerd.cgroups.v1.Metrics", &cg.metrics())).into();
        Ok(r)
    }

    /// On server exit: every pod's pause is ended (SIGKILL), as the tasks are.
    pub async fn stop_all_pods(&self) {
        let ids: Vec<String> = self.sandboxes.map().keys().cloned().collect();
        for id in ids {
            let _ = self
                .sandbox_stop(StopSandboxRequest {
                    sandbox_id: id,
                    timeout_secs: 1,
                    ..Default::default()
                })
                .await;
        }
    }

    /// What keeps the server: its containers and its pods.
    pub fn members(&self) -> usize {
        self.count() + self.sandboxes.live()
    }
}

/// The Sandbox service over a shared [`Shim`].
#[derive(Clone)]
pub struct SandboxService {
    /// The state and logic.
    pub shim: Arc<Shim>,
}

/// The service's name and its methods, for the server.
pub fn services(svc: SandboxService) -> HashMap<String, Service> {
    create_sandbox(Arc::new(svc))
}

type R<T> = ttrpc::Result<T>;

#[async_trait]
impl Sandbox for SandboxService {
    async fn create_sandbox(
        &self,
        _c: &TtrpcContext,
        r: CreateSandboxRequest,
    ) -> R<CreateSandboxResponse> {
        tracing::info!(id = r.sandbox_id, bundle = r.bundle_path, "create sandbox");
        self.shim
            .sandbox_create(r)
            .await
            .map(|()| CreateSandboxResponse::new())
            .map_err(Into::into)
    }

    async fn start_sandbox(
        &self,
        _c: &TtrpcContext,
        r: StartSandboxRequest,
    ) -> R<StartSandboxResponse> {
        tracing::info!(id = r.sandbox_id, "start sandbox");
        self.shim.sandbox_start(r).await.map_err(Into::into)
    }

    async fn platform(&self, _c: &TtrpcContext, r: PlatformRequest) -> R<PlatformResponse> {
        self.shim.sandbox_platform(r).await.map_err(Into::into)
    }

    async fn stop_sandbox(
        &self,
        _c: &TtrpcContext,
        r: StopSandboxRequest,
    ) -> R<StopSandboxResponse> {
        tracing::info!(id = r.sandbox_id, timeout = r.timeout_secs, "stop sandbox");
        self.shim
            .sandbox_stop(r)
            .await
            .map(|()| StopSandboxResponse::new())
            .map_err(Into::into)
    }

    async fn wait_sandbox(
        &self,
        _c: &TtrpcContext,
        r: WaitSandboxRequest,
    ) -> R<WaitSandboxResponse> {
        self.shim.sandbox_wait(r).await.map_err(Into::into)
    }

    async fn sandbox_status(
        &self,
        _c: &TtrpcContext,
        r: SandboxStatusRequest,
    ) -> R<SandboxStatusResponse> {
        self.shim.sandbox_status(r).await.map_err(Into::into)
    }

    async fn ping_sandbox(&self, _c: &TtrpcContext, r: PingRequest) -> R<PingResponse> {
        self.shim
            .sandbox_ping(r)
            .await
            .map(|()| PingResponse::new())
            .map_err(Into::into)
    }

    async fn shutdown_sandbox(
        &self,
        _c: &TtrpcContext,
        r: ShutdownSandboxRequest,
    ) -> R<ShutdownSandboxResponse> {
        tracing::info!(id = r.sandbox_id, "shutdown sandbox");
        self.shim
            .sandbox_shutdown(r)
            .await
            .map(|()| ShutdownSandboxResponse::new())
            .map_err(Into::into)
    }

    async fn sandbox_metrics(
        &self,
        _c: &TtrpcContext,
        r: SandboxMetricsRequest,
    ) -> R<SandboxMetricsResponse> {
        self.shim.sandbox_metrics(r).await.map_err(Into::into)
    }
}
