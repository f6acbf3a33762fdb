//! The per-step driver of a scenario on containerd's side: the run's state ([`Run`]), each
//! step dispatched in order (the task calls in `tasks`, the pod's in `sandbox`, the `events` and
//! `output` checks in `checks`), the container's creation and the cleanup (as `ctr task rm -f` + `ctr c rm`).
//! Every call is bounded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteNamespaceRequest, DeleteTaskRequest, KillRequest, WaitRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Request, Status};
use serde_json::{json, Value};

use super::compare::{Obs, Outcome, Trace, MAIN};
use super::daemon::{bounded, code_name, json_any, keep, req, Daemon, Events, SETTLE};
use crate::bundle::{Bundle, BundleOptions};
use crate::scenario::{expand, Scenario, StdioKind, Step};
use crate::stdio::{StdioMode, StdioOptions, StdioSet};

/// Why a task Shutdown step is not sent through the daemon.
const SENT_BY_CONTAINERD: &str = "sent by containerd itself";

type WaitHandle = tokio::task::JoinHandle<Result<Value, Status>>;

impl Daemon {
    /// Runs `sc` in namespace `ns` and returns what happened; `Err` when the run itself could
    /// not happen (the subscription or the container could not be set up).
    pub async fn run(&self, sc: &Scenario, ns: &str) -> Result<Trace, String> {
        let tmp = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let events: Events = Arc::new(Mutex::new(Vec::new()));
        let sub = self.subscribe(ns, events.clone()).await?;
        let mut run = Run {
            d: self,
            ns: ns.to_string(),
            sc,
            tmp: tmp.path().to_path_buf(),
            events: events.clone(),
            tasks: TasksClient::new(self.channel.clone()),
            container: None,
            task_live: false,
            init_stdio: None,
            execs: BTreeMap::new(),
            waits: BTreeMap::new(),
            vars: BTreeMap::from([("id".to_string(), MAIN.to_string())]),
            steps: Vec::new(),
            seq: 0,
            cursor: 0,
            pod: None,
        };
        let total = sc
            .timeout
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(60));
        let ran = tokio::time::timeout(total, run.steps(&sc.steps)).await;
        tokio::time::sleep(SETTLE).await;
        let stdout = run
            .init_stdio
            .as_ref()
            .map(|s| keep(&s.stdout()))
            .unwrap_or_default();
        let stderr = run
            .init_stdio
            .as_ref()
            .map(|s| keep(&s.stderr()))
            .unwrap_or_default();
        run.cleanup().await;
        tokio::time::sleep(SETTLE).await;
        sub.abort();
        let steps = std::mem::take(&mut run.steps);
        drop(run);
        if ran.is_err() {
            return Err(format!(
                "timed out after {} on containerd's side",
                humantime::format_duration(total)
            ));
        }
        let events = events
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, f)| f.get("container-id").and_then(Value::as_str) == Some(MAIN))
            .collect();
        let mut ns_client = NamespacesClient::new(self.channel.clone());
        let _ = bounded(
            Duration::from_secs(5),
            ns_client.delete(Request::new(DeleteNamespaceRequest {
                name: ns.to_string(),
            })),
        )
        .await;
        crate::leaks::remove_namespace_cgroups(ns);
        Ok(Trace {
            steps,
            events,
            stdout,
            stderr,
        })
    }
}

/// What a step's task call goes through: the namespace, the main container's id and a client of
/// containerd's Tasks service.
pub(super) struct Target {
    pub(super) ns: String,
    pub(super) id: String,
    pub(super) tasks: TasksClient<Channel>,
}

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
    pub(super) waits: BTreeMap<String, WaitHandle>,
    pub(super) vars: BTreeMap<String, String>,
    pub(super) steps: Vec<Obs>,
    pub(super) seq: u32,
    pub(super) cursor: usize,
    /// The scenario's pod, once CreateSandbox has made its record.
    pub(super) pod: Option<super::sandbox::Pod>,
}

impl Run<'_> {
    pub(super) fn expand(&self, s: &str) -> String {
        let vars = &self.vars;
        expand(s, &|n: &str| vars.get(n).cloned()).unwrap_or_else(|_| s.to_string())
    }

    /// A step's `exec-id` with variables expanded; empty for the init process.
    pub(super) fn exec_id(&self, id: Option<&str>) -> String {
        id.map(|e| self.expand(e)).unwrap_or_default()
    }

    pub(super) fn push(&mut self, step: &str, exec_id: &str, outcome: Outcome) {
        self.steps.push(Obs {
            step: step.into(),
            exec_id: exec_id.into(),
            outcome,
        });
    }

    pub(super) fn rpc(&mut self, step: &str, exec_id: &str, r: Result<Value, Status>) {
        let o = match r {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::Err(code_name(e.code()).into(), e.message().to_string()),
        };
        self.push(step, exec_id, o);
    }

    pub(super) fn save(&mut self, save: &BTreeMap<String, String>) {
        let Some(Obs {
            outcome: Outcome::Ok(v),
            ..
        }) = self.steps.last()
        else {
            return;
        };
        let mut add = Vec::new();
        for (var, field) in save {
            let val = match v.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            add.push((var.clone(), val));
        }
        self.vars.extend(add);
    }

    pub(super) fn stdio_dir(&mut self) -> PathBuf {
        self.seq += 1;
        self.tmp.join("stdio").join(self.seq.to_string())
    }

    pub(super) fn t(&self, x: Option<crate::scenario::HumanDuration>) -> Duration {
        x.map(|d| d.get()).unwrap_or(self.d.step_timeout)
    }

    pub(super) fn steps<'s>(
        &'s mut self,
        steps: &'s [Step],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 's>> {
        Box::pin(async move {
            for (i, s) in steps.iter().enumerate() {
                let trailing_shutdown = matches!(s, Step::Shutdown(_))
                    && steps[i..]
                        .iter()
                        .all(|t| matches!(t, Step::Shutdown(_) | Step::Events(_) | Step::Sleep(_)));
                if trailing_shutdown {
                    self.push("shutdown", "", Outcome::Implicit(SENT_BY_CONTAINERD));
                    continue;
                }
                if let Step::Repeat(r) = s {
                    for it in 1..=r.times {
                        self.vars.insert("iteration".into(), it.to_string());
                        self.steps(&r.steps).await;
                    }
                    continue;
                }
                self.step(s).await;
            }
        })
    }

    async fn step(&mut self, s: &Step) {
        if self.sandbox(s).await {
            return;
        }
        let to = Target {
            ns: self.ns.clone(),
            id: MAIN.to_string(),
            tasks: self.tasks.clone(),
        };
        match s {
            Step::Sleep(d) => {
                tokio::time::sleep(d.get()).await;
                self.push("sleep", "", Outcome::Check(true, String::new()));
            }
            Step::Create(c) => {
                let t = self.t(c.timeout);
                let r = self.create(c, t).await;
                if let Ok(v) = &r {
                    if let Some(p) = v.get("pid") {
                        self.vars.insert("init-pid".into(), p.to_string());
                    }
                    self.task_live = true;
                }
                self.rpc("create", "", r);
                self.save(&c.save.0);
            }
            Step::Start(c) => self.start(c, to).await,
            Step::State(c) => self.state(c, to).await,
            Step::Kill(c) => self.kill(c, to).await,
            Step::Wait(c) => self.wait(c, to).await,
            Step::WaitResult(w) => self.wait_result(w).await,
            Step::Delete(c) => self.delete(c, to).await,
            Step::Exec(c) => self.exec(c, to).await,
            Step::Pids(c) => self.pids(c, to).await,
            Step::Pause(c) => self.pause(c, to).await,
            Step::Resume(c) => self.resume(c, to).await,
            Step::CloseIo(c) => self.close_io(c, to).await,
            Step::ResizePty(c) => self.resize_pty(c, to).await,
            Step::Update(c) => self.update(c, to).await,
            Step::Events(e) => self.events(e).await,
            Step::Output(o) => self.output(o).await,
            Step::Shutdown(_) if self.pod.is_some() => {
                // A pod's container: containerd sends it or not by version (the classification).
                self.push("shutdown", "", Outcome::Implicit(SENT_BY_CONTAINERD));
            }
            other => {
                // The classification keeps these out; say so if one slips through.
                self.push(
                    other.name(),
                    "",
                    Outcome::Err(
                        "inexpressible".into(),
                        format!("`{}` cannot be sent through containerd's API", other.name()),
                    ),
                );
            }
        }
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

    /// The container (first time) and the task, with fresh FIFOs.
    pub(super) async fn create(
        &mut self,
        c: &crate::scenario::CreateStep,
        t: Duration,
    ) -> Result<Value, Status> {
        let ns = self.ns.clone();
        let terminal = c.terminal.or(self.sc.process.terminal).unwrap_or(false);
        if self.container.is_none() {
            let bundle = Bundle::create_in_namespace(
                &self.tmp.join("spec"),
                &ns,
                MAIN,
                self.sc.process.to_oci(terminal),
                BundleOptions {
                    rootfs: self.d.rootfs,
                    annotations: BTreeMap::new(),
                },
            )
            .map_err(|e| Status::internal(format!("harness: building the spec: {e}")))?;
            let spec = json_any(
                "types.containerd.io/opencontainers/runtime-spec/1/Spec",
                bundle.spec(),
            );
            let mut cc = ContainersClient::new(self.d.channel.clone());
            let container = Container {
                id: MAIN.into(),
                runtime: Some(Runtime {
                    name: self.d.runtime.clone(),
                    options: None,
                }),
                spec: Some(spec),
                sandbox: self.pod.as_ref().map(|p| p.id.clone()).unwrap_or_default(),
                ..Default::default()
            };
            bounded(
                t,
                cc.create(req(
                    CreateContainerRequest {
                        container: Some(container),
                    },
                    &ns,
                    t,
                )),
            )
            .await
            .map_err(|e| Status::new(e.code(), format!("containers.Create: {}", e.message())))?;
            self.container = Some(bundle);
        }
        let stdin_data = c
            .stdin_data
            .as_deref()
            .or(self.sc.stdin.as_deref())
            .map(|s| s.as_bytes().to_vec());
        let wants_stdin = self
            .sc
            .requires
            .contains(&crate::scenario::Capability::Stdin);
        let opts = StdioOptions {
            stdin: if c.stdin == StdioKind::Fifo && stdin_data.is_none() && !wants_stdin {
                StdioMode::Null
            } else {
                StdioMode::from(c.stdin)
            },
            stdout: StdioMode::from(c.stdout),
            stderr: StdioMode::from(c.stderr),
            terminal,
            stdin_data,
        };
        let dir = self.stdio_dir();
        let set = StdioSet::create(&dir, MAIN, opts)
            .map_err(|e| Status::internal(format!("harness: stdio: {e}")))?;
        let (i, o, e) = set.paths();
        self.init_stdio = Some(set);
        for (k, v) in [("stdin-path", &i), ("stdout-path", &o), ("stderr-path", &e)] {
            self.vars.insert(k.to_string(), v.clone());
        }
        let mut tasks = self.tasks.clone();
        bounded(
            t,
            tasks.create(req(
                CreateTaskRequest {
                    container_id: MAIN.into(),
                    stdin: i,
                    stdout: o,
                    stderr: e,
                    terminal,
                    ..Default::default()
                },
                &ns,
                t,
            )),
        )
        .await
        .map(|r| json!({"pid": r.pid}))
    }

    /// Kills and deletes what is left (as `ctr task rm -f` + `ctr c rm`), bounded.
    pub(super) async fn cleanup(&mut self) {
        for (_, h) in std::mem::take(&mut self.waits) {
            h.abort();
        }
        let ns = self.ns.clone();
        let t = Duration::from_secs(5);
        let mut tasks = self.tasks.clone();
        if self.task_live {
            let _ = bounded(
                t,
                tasks.kill(req(
                    KillRequest {
                        container_id: MAIN.into(),
                        exec_id: String::new(),
                        signal: 9,
                        all: true,
                    },
                    &ns,
                    t,
                )),
            )
            .await;
            let _ = bounded(
                t,
                tasks.wait(req(
                    WaitRequest {
                        container_id: MAIN.into(),
                        exec_id: String::new(),
                    },
                    &ns,
                    t,
                )),
            )
            .await;
            let _ = bounded(
                t,
                tasks.delete(req(
                    DeleteTaskRequest {
                        container_id: MAIN.into(),
                    },
                    &ns,
                    t,
                )),
            )
            .await;
            self.task_live = false;
        }
        if self.container.is_some() {
            let mut cc = ContainersClient::new(self.d.channel.clone());
            let _ = bounded(
                t,
                cc.delete(req(DeleteContainerRequest { id: MAIN.into() }, &ns, t)),
            )
            .await;
        }
        self.cleanup_pod().await;
    }
}
