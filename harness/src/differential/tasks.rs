//! The task calls of a scenario's steps on containerd's side: each RPC step as the Tasks
//! service call it stands for (Start, Get, Kill, Wait, Delete, Exec, ListPids, Pause, Resume,
//! CloseIO, ResizePty, Update), bounded, its answer recorded in the engine's JSON view.

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetRequest,
    KillRequest, ListPidsRequest, PauseTaskRequest, ResizePtyRequest, ResumeTaskRequest,
    StartRequest, UpdateTaskRequest, WaitRequest,
};
use containerd_client::tonic::Status;
use serde_json::json;

use super::compare::{Outcome, MAIN};
use super::daemon::{bounded, json_any, req, status_name, ts};
use crate::scenario::StdioKind;
use crate::scenario::{
    CloseIoStep, DeleteStep, ExecStep, KillStep, PauseStep, PidsStep, ResizePtyStep, ResumeStep,
    StartStep, StateStep, UpdateStep, WaitResultStep, WaitStep,
};
use crate::stdio::{StdioMode, StdioOptions, StdioSet};

use super::steps::{Run, Target};

impl Run<'_> {
    /// Tasks.Start of the task or an exec; the task's start saves `start-time`.
    pub(super) async fn start(&mut self, c: &StartStep, to: Target) {
        let Target { ns, id, mut tasks } = to;
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

    /// Tasks.Get: the process's state as the engine's JSON view.
    pub(super) async fn state(&mut self, c: &StateStep, to: Target) {
        let Target { ns, id, mut tasks } = to;
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

    /// Tasks.Kill with the step's signal (and `all`).
    pub(super) async fn kill(&mut self, c: &KillStep, to: Target) {
        let Target { ns, id, mut tasks } = to;
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

    /// Tasks.Wait, answered now or (`background`) kept under a handle for `wait-result`.
    pub(super) async fn wait(&mut self, c: &WaitStep, to: Target) {
        let Target { ns, id, mut tasks } = to;
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
            .map(|r| json!({"exit-status": r.exit_status, "exited-at": ts(r.exited_at.as_ref())}))
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

    /// The answer of a background wait: held (`pending`) or within the timeout.
    pub(super) async fn wait_result(&mut self, w: &WaitResultStep) {
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

    /// Tasks.Delete of the task, or Tasks.DeleteProcess of an exec.
    pub(super) async fn delete(&mut self, c: &DeleteStep, to: Target) {
        let Target { ns, id, mut tasks } = to;
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

    /// Tasks.Exec with the exec's own stdio (kept for `output`).
    pub(super) async fn exec(&mut self, c: &ExecStep, to: Target) {
        let Target { ns, id, mut tasks } = to;
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

    /// Tasks.ListPids.
    pub(super) async fn pids(&mut self, c: &PidsStep, to: Target) {
        let Target { ns, id, mut tasks } = to;
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

    /// Tasks.Pause.
    pub(super) async fn pause(&mut self, c: &PauseStep, to: Target) {
        let Target { ns, id, mut tasks } = to;
        let t = self.t(c.timeout);
        let r = bounded(
            t,
            tasks.pause(req(PauseTaskRequest { container_id: id }, &ns, t)),
        )
        .await
        .map(|_| json!({}));
        self.rpc("pause", "", r);
    }

    /// Tasks.Resume.
    pub(super) async fn resume(&mut self, c: &ResumeStep, to: Target) {
        let Target { ns, id, mut tasks } = to;
        let t = self.t(c.timeout);
        let r = bounded(
            t,
            tasks.resume(req(ResumeTaskRequest { container_id: id }, &ns, t)),
        )
        .await
        .map(|_| json!({}));
        self.rpc("resume", "", r);
    }

    /// Tasks.CloseIO, the client's end of stdin closed first when asked.
    pub(super) async fn close_io(&mut self, c: &CloseIoStep, to: Target) {
        let Target { ns, id, mut tasks } = to;
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

    /// Tasks.ResizePty.
    pub(super) async fn resize_pty(&mut self, c: &ResizePtyStep, to: Target) {
        let Target { ns, id, mut tasks } = to;
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

    /// Tasks.Update with the step's resources and annotations.
    pub(super) async fn update(&mut self, c: &UpdateStep, to: Target) {
        let Target { ns, id, mut tasks } = to;
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
}
