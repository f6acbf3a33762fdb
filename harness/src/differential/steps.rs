//! A real containerd as the step interpreter's backend: one scenario's run ([`Daemon::run`]),
//! the [`Backend`] impl (which steps the daemon sends itself or has no call for, each RPC step
//! sent: the task calls in `tasks`, the pod's in `sandbox`; the main container's events as the
//! subscription delivered them, each process's FIFOs), the container's creation and the cleanup
//! (as `ctr task rm -f` + `ctr c rm`). Every call is bounded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteNamespaceRequest, DeleteTaskRequest, KillRequest, WaitRequest,
};
use containerd_client::tonic::{Request, Status};
use serde_json::{json, Value};

use super::compare::{Trace, MAIN};
use super::daemon::{bounded, json_any, keep, req, rpc_error, Daemon, Events, SETTLE};
use super::run::{Run, Target};
use crate::bundle::{Bundle, BundleOptions};
use crate::engine::interp::{self, Backend, Sent, TaskEvents};
use crate::engine::script::{Common, Flow, Script};
use crate::scenario::{stdio_options, Scenario, Step};
use crate::stdio::{StdioOptions, StdioSet};

/// Why a task Shutdown step is not sent through the daemon.
const SENT_BY_CONTAINERD: &str = "sent by containerd itself";

impl Daemon {
    /// Runs `sc` in namespace `ns` and returns what happened; `Err` when the run itself could
    /// not happen (the subscription or the container could not be set up).
    pub async fn run(&self, sc: &Scenario, ns: &str) -> Result<Trace, String> {
        let tmp = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let events: Events = Arc::new(Mutex::new(Vec::new()));
        let sub = self.subscribe(ns, events.clone()).await?;
        // Every step runs, whatever the one before gave, and an `unimplemented` answer is
        // recorded, not taken as a missing capability: the mock's run judges the shim.
        let mut script = Script::new(MAIN, sc.level, self.step_timeout, true);
        script.skip_unimplemented = false;
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
            script,
            seq: 0,
            cursor: 0,
            pod: None,
        };
        let total = sc
            .timeout
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(60));
        let ran = tokio::time::timeout(total, interp::run_steps(&mut run, &sc.steps, "")).await;
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
        let steps = std::mem::take(&mut run.script.steps);
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
        Ok(Trace::from_steps(&steps, events, stdout, stderr))
    }
}

impl Backend for Run<'_> {
    fn script(&self) -> &Script {
        &self.script
    }

    fn script_mut(&mut self) -> &mut Script {
        &mut self.script
    }

    fn not_sent(&self, rest: &[Step]) -> Option<String> {
        let s = rest.first()?;
        let trailing_shutdown = matches!(s, Step::Shutdown(_))
            && rest
                .iter()
                .all(|t| matches!(t, Step::Shutdown(_) | Step::Events(_) | Step::Sleep(_)));
        match s {
            // A pod's container: containerd sends it or not by version (the classification).
            Step::Shutdown(_) if trailing_shutdown || self.pod.is_some() => {
                Some(SENT_BY_CONTAINERD.into())
            }
            _ => super::sandbox::not_sent(s).map(str::to_string),
        }
    }

    async fn own_step(&mut self, _: &Step, _: &str, _: &str, _: usize) -> Option<Flow> {
        None
    }

    async fn send(&mut self, s: &Step, _: &Common<'_>, t: Duration) -> Result<Sent, String> {
        if s.sandbox_id().is_some() {
            let (request, r) = self.sandbox(s, t).await?;
            return Ok(Sent::Answer(request, r.map_err(rpc_error)));
        }
        let to = Target {
            ns: self.ns.clone(),
            id: MAIN.to_string(),
            tasks: self.tasks.clone(),
        };
        let (request, r) = match s {
            Step::Create(x) => {
                let r = self.create(x, t).await?;
                if r.1.is_ok() {
                    self.task_live = true;
                }
                r
            }
            Step::Wait(x) if x.background.is_some() => {
                let (request, call) = self.wait(x, to, t)?;
                let call = async move { call.await.map_err(rpc_error) };
                return Ok(Sent::Background(request, tokio::spawn(call)));
            }
            Step::Wait(x) => {
                let (request, call) = self.wait(x, to, t)?;
                (request, call.await)
            }
            _ => self.task_call(s, to, t).await?,
        };
        Ok(Sent::Answer(request, r.map_err(rpc_error)))
    }

    async fn await_events(
        &self,
        until: &dyn Fn(&TaskEvents<'_>) -> bool,
        t: Duration,
    ) -> Vec<(String, Value)> {
        let deadline = Instant::now() + t;
        loop {
            let got = self.main_events();
            if until(&interp::borrowed(&got)) || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn cursor(&self, _: &str) -> usize {
        self.cursor
    }

    fn set_cursor(&mut self, _: &str, at: usize) {
        self.cursor = at;
    }

    fn stdio_of(&self, _: Option<&str>, exec_id: &str) -> Result<Option<&StdioSet>, String> {
        Ok(if exec_id.is_empty() {
            self.init_stdio.as_ref()
        } else {
            self.execs.get(exec_id)
        })
    }
}

impl Run<'_> {
    /// The container (first time) and the task, with fresh FIFOs; the request as the
    /// transcript shows it and the answer.
    pub(super) async fn create(
        &mut self,
        c: &crate::scenario::CreateStep,
        t: Duration,
    ) -> Result<(Value, Result<Value, Status>), String> {
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
            .map_err(|e| format!("building the spec: {e}"))?;
            if let Err(e) = self.create_container(&bundle, t).await {
                let r = Err(Status::new(
                    e.code(),
                    format!("containers.Create: {}", e.message()),
                ));
                return Ok((json!({"id": MAIN}), r));
            }
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
        let opts: StdioOptions = stdio_options(
            [c.stdin, c.stdout, c.stderr],
            terminal,
            stdin_data,
            wants_stdin,
        );
        let dir = self.stdio_dir();
        let set = StdioSet::create(&dir, MAIN, opts).map_err(|e| format!("stdio: {e}"))?;
        let (i, o, e) = set.paths();
        self.init_stdio = Some(set);
        for (k, v) in [("stdin-path", &i), ("stdout-path", &o), ("stderr-path", &e)] {
            self.script.vars.insert(k.to_string(), v.clone());
        }
        let request =
            json!({"id": MAIN, "terminal": terminal, "stdin": i, "stdout": o, "stderr": e});
        let mut tasks = self.tasks.clone();
        let r = bounded(
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
        .map(|r| json!({"pid": r.pid}));
        Ok((request, r))
    }

    /// The main container's record, joined to the scenario's pod when there is one.
    async fn create_container(&self, bundle: &Bundle, t: Duration) -> Result<(), Status> {
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
        let request = CreateContainerRequest {
            container: Some(container),
        };
        bounded(t, cc.create(req(request, &self.ns, t))).await?;
        Ok(())
    }

    /// Kills and deletes what is left (as `ctr task rm -f` + `ctr c rm`), bounded.
    pub(super) async fn cleanup(&mut self) {
        for (_, h) in std::mem::take(&mut self.script.waits) {
            h.handle.abort();
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
