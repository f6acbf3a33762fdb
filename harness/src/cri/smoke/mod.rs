//! The CRI smoke test's steps, as the kubelet takes them: a host-network pod, a container that
//! prints and exits, a long-running one with an ExecSync, stops inside and past a grace period,
//! and the pod's removal; then what must be gone (through CRI and `/proc`). Each RPC is bounded;
//! the sequence stops at the first failure and the pod is removed anyway.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use super::checks::{
    check_exit, check_log, info_pid, short, ECHO_CODE, ECHO_ERR, ECHO_OUT, EXEC_CODE, EXEC_OUT,
};
use super::{image, CriConfig, CriReport, StepResult};

mod teardown;
use crate::procfs::{self, PidMark};

/// `ContainerState` values (`runtime/v1/api.proto` of cri-api).
const CONTAINER_RUNNING: i32 = 1;
const CONTAINER_EXITED: i32 = 2;
/// `PodSandboxState::SANDBOX_READY`.
const SANDBOX_READY: i32 = 0;
/// `NamespaceMode::NODE`: the host's network namespace, so no CNI is needed.
const NODE: i32 = 2;

/// Runs the smoke test on a runtime of its own; `Err` when it could not run at all (no answer
/// at the endpoint, the images could not be imported).
pub fn run_blocking(cfg: &CriConfig, endpoint: &str) -> Result<CriReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(cfg, endpoint))
}

async fn run(cfg: &CriConfig, endpoint: &str) -> Result<CriReport> {
    let mark = PidMark::now();
    let channel = tokio::time::timeout(cfg.timeout, containerd_client::connect(&cfg.socket))
        .await
        .map_err(|_| anyhow!("{endpoint}: no connection within {:?}", cfg.timeout))?
        .map_err(|e| anyhow!("{endpoint}: {e:#}"))?;
    let images = ImageServiceClient::new(channel.clone());
    let mut client = RuntimeServiceClient::new(channel);
    let mut steps = Vec::new();
    let t0 = Instant::now();
    let v = bounded(cfg.timeout, client.version(req(cfg, cri::VersionRequest::default())))
        .await
        .map_err(|e| {
            let hint = if format!("{e}").starts_with("unimplemented") {
                " (is containerd's CRI plugin running? `ctr plugins ls` lists io.containerd.grpc.v1.cri and says why not in its status)"
            } else {
                ""
            };
            anyhow!("{endpoint}: the CRI Version RPC: {e}{hint}")
        })?;
    let runtime = format!(
        "{} {} (CRI {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );
    steps.push(StepResult::passed("version", t0, runtime.clone()));
    if let Some(ctr) = &cfg.import_with {
        let t0 = Instant::now();
        let (ctr, socket, t) = (ctr.clone(), cfg.socket.clone(), cfg.timeout);
        tokio::task::spawn_blocking(move || image::import(&ctr, &socket, t))
            .await
            .context("the image import")??;
        let detail = format!("{} and {}", image::WORKLOAD_IMAGE, image::SANDBOX_IMAGE);
        steps.push(StepResult::passed("import-images", t0, detail));
    }
    let logs = tempfile::Builder::new()
        .prefix("harness-cri-logs-")
        .tempdir()
        .context("creating the pod's log directory")?;
    let mut s = Smoke {
        client,
        images,
        cfg,
        logs: logs.path().to_path_buf(),
        steps,
        pod: None,
        created_pod: None,
        pod_config: None,
        created: Vec::new(),
        pids: Vec::new(),
        mark,
    };
    // The sequence stops at its first failure; the pod is removed whatever happened.
    let _ = s.sequence().await;
    s.clean_up().await;
    Ok(CriReport {
        endpoint: endpoint.to_string(),
        handler: cfg.handler.clone(),
        runtime,
        steps: s.steps,
    })
}

/// A request bounded by the configured timeout (the deadline travels to containerd too).
fn req<T>(cfg: &CriConfig, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(cfg.timeout);
    r
}

/// Awaits a call within `t`; an error quotes containerd's code name and message.
async fn bounded<T>(
    t: Duration,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(t + Duration::from_millis(500), f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(anyhow!(
            "{}: {}",
            crate::wire::Code::from_i32(s.code() as i32).as_str(),
            s.message()
        )),
        Err(_) => Err(anyhow!(
            "no answer within {}",
            humantime::format_duration(t)
        )),
    }
}

/// One container of the pod: its name in the steps and its CRI id.
struct Container {
    name: &'static str,
    id: String,
}

struct Smoke<'a> {
    client: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    cfg: &'a CriConfig,
    logs: PathBuf,
    steps: Vec<StepResult>,
    /// The pod while it is not removed.
    pod: Option<String>,
    /// The pod, once created (for the checks at the end).
    created_pod: Option<String>,
    pod_config: Option<cri::PodSandboxConfig>,
    /// Every container created.
    created: Vec<String>,
    /// The containers' processes (pid and start time), which must be gone at the end.
    pids: Vec<(i32, u64, &'static str)>,
    mark: Option<PidMark>,
}

impl Smoke<'_> {
    /// Records a step that started at `t0`; `Some(value)` when it passed.
    fn record<T>(&mut self, name: String, t0: Instant, r: Result<(T, String)>) -> Option<T> {
        let millis = t0.elapsed().as_secs_f64() * 1000.0;
        match r {
            Ok((v, detail)) => {
                self.steps.push(StepResult {
                    name,
                    passed: true,
                    millis,
                    detail,
                });
                Some(v)
            }
            Err(e) => {
                self.steps.push(StepResult {
                    name,
                    passed: false,
                    millis,
                    detail: format!("{e:#}"),
                });
                None
            }
        }
    }

    async fn sequence(&mut self) -> Option<()> {
        self.image().await?;
        self.run_pod().await?;
        let echo = self
            .container(
                "echo",
                &[
                    "/bin/sh",
                    "-c",
                    &format!("echo {ECHO_OUT}; echo {ECHO_ERR} >&2; exit {ECHO_CODE}"),
                ],
            )
            .await?;
        self.start(&echo).await?;
        self.exited(&echo, ECHO_CODE, "Error", None).await?;
        self.log(&echo).await?;
        let sleeper = self.container("sleeper", &["/bin/sleep", "3600"]).await?;
        self.start(&sleeper).await?;
        self.running(&sleeper).await?;
        self.exec_sync(&sleeper).await?;
        // SIG_IGN survives exec: the sleep itself ignores SIGTERM.
        let stubborn = self
            .container(
                "stubborn",
                &["/bin/sh", "-c", "trap '' TERM; exec /bin/sleep 3600"],
            )
            .await?;
        self.start(&stubborn).await?;
        self.running(&stubborn).await?;
        let long = self.cfg.timeout;
        self.stop(&sleeper, long).await?;
        self.exited(&sleeper, 128 + 15, "Error", Some(long)).await?;
        let grace = self.cfg.grace;
        self.stop(&stubborn, grace).await?;
        self.exited(&stubborn, 128 + 9, "Error", None).await?;
        for c in [echo, sleeper, stubborn] {
            self.remove(c).await?;
        }
        self.stop_pod().await?;
        self.remove_pod().await
    }

    /// The containers' image: present in containerd's CRI namespace, or pulled as the kubelet
    /// would before CreateContainer.
    async fn image(&mut self) -> Option<()> {
        let t0 = Instant::now();
        let spec = cri::ImageSpec {
            image: self.cfg.image.clone(),
            ..Default::default()
        };
        let msg = cri::ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false,
        };
        let r = match bounded(
            self.cfg.timeout,
            self.images.image_status(req(self.cfg, msg)),
        )
        .await
        {
            Ok(st) if st.image.is_some() => Ok(((), format!("{} is present", self.cfg.image))),
            Ok(_) => {
                let msg = cri::PullImageRequest {
                    image: Some(spec),
                    ..Default::default()
                };
                bounded(self.cfg.timeout, self.images.pull_image(req(self.cfg, msg)))
                    .await
                    .map(|p| ((), format!("pulled {} ({})", self.cfg.image, p.image_ref)))
                    .map_err(|e| {
                        e.context(format!("{} is not present; pulling it", self.cfg.image))
                    })
            }
            Err(e) => Err(e),
        };
        self.record("image".into(), t0, r)
    }

    async fn run_pod(&mut self) -> Option<()> {
        let uid = format!("harness-cri-{}", std::process::id());
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "harness-cri-smoke".into(),
                uid: uid.clone(),
                namespace: "harness".into(),
                attempt: 0,
            }),
            // No hostname: a host-network pod keeps the node's (the kubelet sets none for it,
            // and runc refuses one without a private UTS namespace).
            log_directory: self.logs.display().to_string(),
            labels: HashMap::from([("harness.cri/smoke".to_string(), uid)]),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: NODE,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t0 = Instant::now();
        let msg = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: self.cfg.handler.clone(),
        };
        let r = bounded(
            self.cfg.timeout,
            self.client.run_pod_sandbox(req(self.cfg, msg)),
        )
        .await;
        let id = self.record(
            "run-pod-sandbox".into(),
            t0,
            r.map(|r| {
                (
                    r.pod_sandbox_id.clone(),
                    format!("pod {}", short(&r.pod_sandbox_id)),
                )
            }),
        )?;
        self.pod = Some(id.clone());
        self.created_pod = Some(id.clone());
        self.pod_config = Some(config);
        let t0 = Instant::now();
        let msg = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id,
            verbose: false,
        };
        let r = bounded(
            self.cfg.timeout,
            self.client.pod_sandbox_status(req(self.cfg, msg)),
        )
        .await
        .and_then(|r| {
            let s = r.status.context("no status in the answer")?;
            if s.state != SANDBOX_READY {
                bail!("state {} (SANDBOX_READY expected)", s.state);
            }
            if s.runtime_handler != self.cfg.handler {
                bail!(
                    "runtime_handler {:?}, expected {:?}",
                    s.runtime_handler,
                    self.cfg.handler
                );
            }
            Ok(((), "SANDBOX_READY".to_string()))
        });
        self.record("pod-sandbox-status".into(), t0, r)
    }

    async fn container(&mut self, name: &'static str, command: &[&str]) -> Option<Container> {
        let pod = self.pod.clone()?;
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.cfg.image.clone(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        };
        let msg = cri::CreateContainerRequest {
            pod_sandbox_id: pod,
            config: Some(config),
            sandbox_config: self.pod_config.clone(),
        };
        let t0 = Instant::now();
        let r = bounded(
            self.cfg.timeout,
            self.client.create_container(req(self.cfg, msg)),
        )
        .await;
        let id = self.record(
            format!("create-container {name}"),
            t0,
            r.map(|r| {
                (
                    r.container_id.clone(),
                    format!("container {}", short(&r.container_id)),
                )
            }),
        )?;
        self.created.push(id.clone());
        Some(Container { name, id })
    }

    async fn start(&mut self, c: &Container) -> Option<()> {
        let t0 = Instant::now();
        let msg = cri::StartContainerRequest {
            container_id: c.id.clone(),
        };
        let r = bounded(
            self.cfg.timeout,
            self.client.start_container(req(self.cfg, msg)),
        )
        .await;
        self.record(
            format!("start-container {}", c.name),
            t0,
            r.map(|_| ((), String::new())),
        )
    }

    /// ContainerStatus, verbose (its `info` has the process's pid).
    async fn status(&mut self, id: &str) -> Result<cri::ContainerStatusResponse> {
        let msg = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        bounded(
            self.cfg.timeout,
            self.client.container_status(req(self.cfg, msg)),
        )
        .await
    }

    async fn running(&mut self, c: &Container) -> Option<()> {
        let t0 = Instant::now();
        let r = self.status(&c.id).await.and_then(|r| {
            let s = r.status.as_ref().context("no status in the answer")?;
            if s.state != CONTAINER_RUNNING {
                bail!(
                    "state {} (CONTAINER_RUNNING expected), reason {:?}",
                    s.state,
                    s.reason
                );
            }
            let pid = info_pid(&r.info).context("verbose status gives no pid")?;
            Ok((pid, format!("CONTAINER_RUNNING, pid {pid}")))
        });
        let pid = self.record(format!("container-status {}", c.name), t0, r)?;
        // Only read from /proc, never signalled: the pid is the runtime's word.
        if let Some(p) = i32::try_from(pid)
            .ok()
            .filter(|p| *p > 1)
            .and_then(procfs::proc_info)
        {
            self.pids.push((p.pid, p.starttime, c.name));
        }
        Some(())
    }

    /// Polls ContainerStatus until EXITED (within `within`, default the timeout), then checks the
    /// exit code and reason.
    async fn exited(
        &mut self,
        c: &Container,
        code: i32,
        reason: &str,
        within: Option<Duration>,
    ) -> Option<()> {
        let t0 = Instant::now();
        let end = t0 + within.unwrap_or(self.cfg.timeout);
        let r = loop {
            match self.status(&c.id).await {
                Ok(r) => {
                    let s = r.status.unwrap_or_default();
                    if s.state == CONTAINER_EXITED {
                        break check_exit(&s, code, reason);
                    }
                    if Instant::now() >= end {
                        break Err(anyhow!(
                            "still in state {} after {:?}",
                            s.state,
                            t0.elapsed()
                        ));
                    }
                }
                Err(e) => break Err(e),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        self.record(format!("container-exited {}", c.name), t0, r)
    }

    /// The container's CRI log file: every line `<RFC 3339 time> <stream> <F|P> <text>`, both of
    /// its streams there (containerd may still be copying when the status says exited).
    async fn log(&mut self, c: &Container) -> Option<()> {
        let t0 = Instant::now();
        let path = self.logs.join(format!("{}.log", c.name));
        let end = t0 + self.cfg.timeout;
        let r = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            match check_log(&text) {
                Ok(n) => break Ok(((), format!("{n} lines in the kubelet's format"))),
                Err(e) if Instant::now() >= end => {
                    break Err(e.context(format!("{}: {text:?}", path.display())))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        };
        self.record(format!("container-log {}", c.name), t0, r)
    }

    async fn exec_sync(&mut self, c: &Container) -> Option<()> {
        let t0 = Instant::now();
        let msg = cri::ExecSyncRequest {
            container_id: c.id.clone(),
            cmd: [
                "/bin/sh",
                "-c",
                &format!("echo {EXEC_OUT}; exit {EXEC_CODE}"),
            ]
            .map(String::from)
            .to_vec(),
            timeout: self.cfg.timeout.as_secs() as i64,
        };
        let r = bounded(self.cfg.timeout, self.client.exec_sync(req(self.cfg, msg)))
            .await
            .and_then(|r| {
                let out = String::from_utf8_lossy(&r.stdout);
                if out != format!("{EXEC_OUT}\n") || r.exit_code != EXEC_CODE {
                    bail!(
                        "stdout {out:?} and exit code {} (expected {:?} and {EXEC_CODE}), stderr {:?}",
                        r.exit_code,
                        format!("{EXEC_OUT}\n"),
                        String::from_utf8_lossy(&r.stderr)
                    );
                }
                Ok(((), format!("stdout {out:?}, exit code {EXEC_CODE}")))
            });
        self.record(format!("exec-sync {}", c.name), t0, r)
    }
}
