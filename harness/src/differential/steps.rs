//! The per-step driver of a scenario on containerd's side: each scenario step as the
//! containerd client call it stands for (Tasks Create/Start/Get/Kill/Wait/Exec/Delete/...), the
//! `events` and `output` checks judged on what containerd delivered, and the cleanup (as
//! `ctr task rm -f` + `ctr c rm`). Every call is bounded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteNamespaceRequest, DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest,
    GetRequest, KillRequest, ListPidsRequest, PauseTaskRequest, ResizePtyRequest,
    ResumeTaskRequest, StartRequest, UpdateTaskRequest, WaitRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use serde_json::{json, Value};

use super::compare::{Obs, Outcome, Trace, MAIN};
use super::daemon::{
    bounded, code_name, json_any, keep, req, status_name, ts, Daemon, Events, SETTLE,
};
use crate::bundle::{Bundle, BundleOptions};
use crate::scenario::{expand, match_events, Scenario, StdioKind, Step};
use crate::stdio::{StdioMode, StdioOptions, StdioSet};

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
        Ok(Trace {
            steps,
            events,
            stdout,
            stderr,
        })
    }
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
}

impl Run<'_> {
    fn expand(&self, s: &str) -> String {
        let vars = &self.vars;
        expand(s, &|n: &str| vars.get(n).cloned()).unwrap_or_else(|_| s.to_string())
    }

    /// A step's `exec-id` with variables expanded; empty for the init process.
    fn exec_id(&self, id: Option<&str>) -> String {
        id.map(|e| self.expand(e)).unwrap_or_default()
    }

    fn push(&mut self, step: &str, exec_id: &str, outcome: Outcome) {
        self.steps.push(Obs {
            step: step.into(),
            exec_id: exec_id.into(),
            outcome,
        });
    }

    fn rpc(&mut self, step: &str, exec_id: &str, r: Result<Value, Status>) {
        let o = match r {
            Ok(v) => Outcome::Ok(v),
            // tonic's own client deadline answers `cancelled`; the mock's is deadline-exceeded.
            Err(e) if e.code() == Code::Cancelled && e.message().contains("Timeout expired") => {
                Outcome::Err("deadline-exceeded".into(), e.message().to_string())
            }
            Err(e) => Outcome::Err(code_name(e.code()).into(), e.message().to_string()),
        };
        self.push(step, exec_id, o);
    }

    fn save(&mut self, save: &BTreeMap<String, String>) {
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

    fn stdio_dir(&mut self) -> PathBuf {
        self.seq += 1;
        self.tmp.join("stdio").join(self.seq.to_string())
    }

    fn t(&self, x: Option<crate::scenario::HumanDuration>) -> Duration {
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
                    self.push("shutdown", "", Outcome::Implicit);
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
        let ns = self.ns.clone();
        let id = MAIN.to_string();
        let mut tasks = self.tasks.clone();
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
            Step::Start(c) => {
                let t = self.t(c.timeout);
                let exec_id = self.exec_id(c.exec_id.as_deref());
                if exec_id.is_empty() {
                    let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now());
                    self.vars.insert("start-time".into(), now.to_string());
                }
                let r = bounded(
                    t,
                    tasks.start(req(
                        StartRequest {
                            container_id: id,
                            exec_id: exec_id.clone(),
                        },
                        &ns,
                        t,
                    )),
                )
                .await
                .map(|r| json!({"pid": r.pid}));
                self.rpc("start", &exec_id, r);
                self.save(&c.save.0);
            }
            Step::State(c) => {
                let t = self.t(c.timeout);
                let exec_id = self.exec_id(c.exec_id.as_deref());
                let r = bounded(
                    t,
                    tasks.get(req(
                        GetRequest {
                            container_id: id,
                            exec_id: exec_id.clone(),
                        },
                        &ns,
                        t,
                    )),
                )
                .await
                .map(|r| {
                    let p = r.process.unwrap_or_default();
                    json!({
                        "id": p.id, "pid": p.pid, "status": status_name(p.status),
                        "stdin": p.stdin, "stdout": p.stdout, "stderr": p.stderr,
                        "terminal": p.terminal, "exit-status": p.exit_status,
                        "exited-at": ts(p.exited_at.as_ref()),
                    })
                });
                self.rpc("state", &exec_id, r);
                self.save(&c.save.0);
            }
            Step::Kill(c) => {
                let t = self.t(c.timeout);
                let exec_id = self.exec_id(c.exec_id.as_deref());
                let r = bounded(
                    t,
                    tasks.kill(req(
                        KillRequest {
                            container_id: id,
                            exec_id: exec_id.clone(),
                            signal: c.signal.0,
                            all: c.all,
                        },
                        &ns,
                        t,
                    )),
                )
                .await
                .map(|_| json!({}));
                self.rpc("kill", &exec_id, r);
            }
            Step::Wait(c) => {
                let t = self.t(c.timeout);
                let exec_id = self.exec_id(c.exec_id.as_deref());
                let call = async move {
                    bounded(
                        t,
                        tasks.wait(req(
                            WaitRequest {
                                container_id: id,
                                exec_id: exec_id.clone(),
                            },
                            &ns,
                            t,
                        )),
                    )
                    .await
                    .map(|r| {
                        json!({"exit-status": r.exit_status, "exited-at": ts(r.exited_at.as_ref())})
                    })
                };
                let exec_id = self.exec_id(c.exec_id.as_deref());
                if let Some(h) = &c.background {
                    self.waits.insert(h.clone(), tokio::spawn(call));
                    self.push("wait", &exec_id, Outcome::Ok(json!({"background": h})));
                } else {
                    let r = call.await;
                    self.rpc("wait", &exec_id, r);
                    self.save(&c.save.0);
                }
            }
            Step::WaitResult(w) => {
                let Some(h) = self.waits.remove(&w.handle) else {
                    self.push(
                        "wait-result",
                        "",
                        Outcome::Check(false, format!("no background wait named `{}`", w.handle)),
                    );
                    return;
                };
                if w.pending {
                    let held = !h.is_finished();
                    self.waits.insert(w.handle.clone(), h);
                    let msg = if held { "" } else { "Wait returned early" };
                    self.push("wait-result", "", Outcome::Check(held, msg.into()));
                    return;
                }
                let t = self.t(w.timeout);
                let mut h = h;
                let r = match tokio::time::timeout(t, &mut h).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => Err(Status::internal(format!("the waiting task failed: {e}"))),
                    Err(_) => {
                        h.abort();
                        Err(Status::deadline_exceeded("no answer"))
                    }
                };
                self.rpc("wait-result", "", r);
                self.save(&w.save.0);
            }
            Step::Delete(c) => {
                let t = self.t(c.timeout);
                let exec_id = self.exec_id(c.exec_id.as_deref());
                let r = if exec_id.is_empty() {
                    bounded(
                        t,
                        tasks.delete(req(DeleteTaskRequest { container_id: id }, &ns, t)),
                    )
                    .await
                } else {
                    bounded(
                        t,
                        tasks.delete_process(req(
                            DeleteProcessRequest {
                                container_id: id,
                                exec_id: exec_id.clone(),
                            },
                            &ns,
                            t,
                        )),
                    )
                    .await
                };
                let r = r.map(|r| {
                    json!({"pid": r.pid, "exit-status": r.exit_status, "exited-at": ts(r.exited_at.as_ref())})
                });
                if r.is_ok() && exec_id.is_empty() {
                    self.task_live = false;
                }
                self.rpc("delete", &exec_id, r);
                self.save(&c.save.0);
            }
            Step::Exec(c) => {
                let t = self.t(c.timeout);
                let exec_id = self.expand(&c.exec_id);
                let terminal = c.terminal.or(c.process.terminal).unwrap_or(false);
                let stdin_data = c.stdin_data.as_ref().map(|s| s.as_bytes().to_vec());
                let opts = StdioOptions {
                    stdin: if c.stdin == StdioKind::Fifo && stdin_data.is_none() {
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
                let set = match StdioSet::create(&dir, &format!("{MAIN}-{exec_id}"), opts) {
                    Ok(s) => s,
                    Err(e) => {
                        self.push(
                            "exec",
                            &exec_id,
                            Outcome::Err("harness".into(), e.to_string()),
                        );
                        return;
                    }
                };
                let (i, o, e) = set.paths();
                let mut p = c.process.clone();
                p.args = p.args.iter().map(|a| self.expand(a)).collect();
                let spec = json_any(
                    "types.containerd.io/opencontainers/runtime-spec/1/Process",
                    &p.to_oci(terminal),
                );
                let r = bounded(
                    t,
                    tasks.exec(req(
                        ExecProcessRequest {
                            container_id: id,
                            stdin: i,
                            stdout: o,
                            stderr: e,
                            terminal,
                            spec: Some(spec),
                            exec_id: exec_id.clone(),
                        },
                        &ns,
                        t,
                    )),
                )
                .await
                .map(|_| json!({}));
                if r.is_ok() {
                    self.execs.insert(exec_id.clone(), set);
                }
                self.rpc("exec", &exec_id, r);
            }
            Step::Pids(c) => {
                let t = self.t(c.timeout);
                let r = bounded(
                    t,
                    tasks.list_pids(req(ListPidsRequest { container_id: id }, &ns, t)),
                )
                .await
                .map(|r| {
                    let pids: Vec<u32> = r.processes.iter().map(|p| p.pid).collect();
                    json!({"processes": pids, "count": pids.len()})
                });
                self.rpc("pids", "", r);
                self.save(&c.save.0);
            }
            Step::Pause(c) => {
                let t = self.t(c.timeout);
                let r = bounded(
                    t,
                    tasks.pause(req(PauseTaskRequest { container_id: id }, &ns, t)),
                )
                .await
                .map(|_| json!({}));
                self.rpc("pause", "", r);
            }
            Step::Resume(c) => {
                let t = self.t(c.timeout);
                let r = bounded(
                    t,
                    tasks.resume(req(ResumeTaskRequest { container_id: id }, &ns, t)),
                )
                .await
                .map(|_| json!({}));
                self.rpc("resume", "", r);
            }
            Step::CloseIo(c) => {
                let t = self.t(c.timeout);
                let exec_id = self.exec_id(c.exec_id.as_deref());
                if c.client_close {
                    let set = if exec_id.is_empty() {
                        self.init_stdio.as_ref()
                    } else {
                        self.execs.get(&exec_id)
                    };
                    if let Some(s) = set {
                        s.close_stdin();
                    }
                }
                let r = bounded(
                    t,
                    tasks.close_io(req(
                        CloseIoRequest {
                            container_id: id,
                            exec_id: exec_id.clone(),
                            stdin: c.stdin,
                        },
                        &ns,
                        t,
                    )),
                )
                .await
                .map(|_| json!({}));
                self.rpc("close-io", &exec_id, r);
            }
            Step::ResizePty(c) => {
                let t = self.t(c.timeout);
                let exec_id = self.exec_id(c.exec_id.as_deref());
                let r = bounded(
                    t,
                    tasks.resize_pty(req(
                        ResizePtyRequest {
                            container_id: id,
                            exec_id: exec_id.clone(),
                            width: c.width,
                            height: c.height,
                        },
                        &ns,
                        t,
                    )),
                )
                .await
                .map(|_| json!({}));
                self.rpc("resize-pty", &exec_id, r);
            }
            Step::Update(c) => {
                let t = self.t(c.timeout);
                let res = c.resources.clone().unwrap_or(json!({}));
                let r = bounded(
                    t,
                    tasks.update(req(
                        UpdateTaskRequest {
                            container_id: id,
                            resources: Some(json_any(
                                "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
                                &res,
                            )),
                            annotations: c
                                .annotations
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                        },
                        &ns,
                        t,
                    )),
                )
                .await
                .map(|_| json!({}));
                self.rpc("update", "", r);
            }
            Step::Events(e) => {
                let t = self.t(e.timeout);
                let deadline = Instant::now() + t;
                let res = loop {
                    let got = self.main_events();
                    let got = &got[if e.fresh {
                        self.cursor.min(got.len())
                    } else {
                        0
                    }..];
                    let r = match_events(got, &e.expect, e.exact, &|n: &str| {
                        self.vars.get(n).cloned()
                    })
                    .map_err(|why| {
                        let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
                        format!("{why}; got [{}]", topics.join(", "))
                    });
                    let forbidden = e
                        .forbid
                        .iter()
                        .find(|f| got.iter().any(|(t, _)| &t == f))
                        .map(|f| format!("event {f} must not be published"));
                    match (r, forbidden) {
                        (Ok(end), None) => break Ok(end),
                        (_, Some(f)) => break Err(f),
                        (Err(why), None) if Instant::now() >= deadline => break Err(why),
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                match res {
                    Ok(end) => {
                        if e.fresh {
                            self.cursor += end;
                        } else {
                            self.cursor = end;
                        }
                        self.push("events", "", Outcome::Check(true, String::new()));
                    }
                    Err(why) => self.push("events", "", Outcome::Check(false, why)),
                }
            }
            Step::Output(o) => {
                let t = self.t(o.timeout);
                let exec_id = o
                    .exec_id
                    .as_deref()
                    .map(|e| self.expand(e))
                    .unwrap_or_default();
                let set = if exec_id.is_empty() {
                    self.init_stdio.as_ref()
                } else {
                    self.execs.get(&exec_id)
                };
                let Some(set) = set else {
                    self.push(
                        "output",
                        &exec_id,
                        Outcome::Check(false, "no such process's output".into()),
                    );
                    return;
                };
                let vars = self.vars.clone();
                let lookup = move |n: &str| vars.get(n).cloned();
                let check = |out: &[u8], err: &[u8]| -> Result<(), String> {
                    if let Some(m) = &o.stdout {
                        m.check(out, &lookup).map_err(|e| format!("stdout: {e}"))?;
                    }
                    if let Some(m) = &o.stderr {
                        m.check(err, &lookup).map_err(|e| format!("stderr: {e}"))?;
                    }
                    Ok(())
                };
                set.wait_output(|a, b| check(a, b).is_ok(), t).await;
                let res = check(&set.stdout(), &set.stderr());
                let mut saved = Vec::new();
                if res.is_ok() {
                    for (var, stream) in &o.save {
                        let b = match stream {
                            crate::scenario::Stream::Stdout => set.stdout(),
                            crate::scenario::Stream::Stderr => set.stderr(),
                        };
                        saved.push((var.clone(), String::from_utf8_lossy(&b).into_owned()));
                    }
                }
                self.vars.extend(saved);
                let o = match res {
                    Ok(()) => Outcome::Check(true, String::new()),
                    Err(e) => Outcome::Check(false, e),
                };
                self.push("output", &exec_id, o);
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

    fn main_events(&self) -> Vec<(String, Value)> {
        self.events
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, f)| f.get("container-id").and_then(Value::as_str) == Some(MAIN))
            .collect()
    }

    /// The container (first time) and the task, with fresh FIFOs.
    async fn create(
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
    }
}
