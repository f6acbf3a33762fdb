//! The task calls of a scenario's steps on containerd's side: each RPC step as the Tasks
//! service call it stands for (Start, Get, Kill, Wait, Delete, Exec, ListPids, Pause, Resume,
//! CloseIO, ResizePty, Update), bounded, with the request as the transcript shows it and the
//! answer in the engine's JSON view.

use std::future::Future;
use std::time::Duration;

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetRequest,
    KillRequest, ListPidsRequest, PauseTaskRequest, ResizePtyRequest, ResumeTaskRequest,
    StartRequest, UpdateTaskRequest, WaitRequest,
};
use containerd_client::tonic::Status;
use serde_json::{json, Value};

use super::compare::MAIN;
use super::daemon::{bounded, json_any, req, ts};
use super::run::{Run, Target};
use crate::engine::convert::{delete_view, pids_view, state_view, wait_view, ProcessState};
use crate::scenario::{stdio_options, ExecStep, Step, WaitStep};
use crate::stdio::StdioSet;

/// A call's request as the transcript shows it, and its answer.
type Called = (Value, Result<Value, Status>);

impl Run<'_> {
    /// Tasks.Wait of the task or an exec: the request, and the call to await now or in the
    /// background.
    pub(super) fn wait(
        &self,
        c: &WaitStep,
        to: Target,
        t: Duration,
    ) -> Result<
        (
            Value,
            impl Future<Output = Result<Value, Status>> + Send + 'static,
        ),
        String,
    > {
        let Target { ns, id, mut tasks } = to;
        let exec_id = self.script.opt_exec(&c.exec_id)?;
        let request = json!({"id": id, "exec-id": exec_id});
        let call = async move {
            let w = WaitRequest {
                container_id: id,
                exec_id,
            };
            bounded(t, tasks.wait(req(w, &ns, t)))
                .await
                .map(|r| wait_view(r.exit_status, ts(r.exited_at.as_ref())))
        };
        Ok((request, call))
    }

    /// Every other task call of a step.
    pub(super) async fn task_call(
        &mut self,
        s: &Step,
        to: Target,
        t: Duration,
    ) -> Result<Called, String> {
        let Target { ns, id, mut tasks } = to;
        let exec_id = match s {
            Step::Start(c) => self.script.opt_exec(&c.exec_id)?,
            Step::State(c) => self.script.opt_exec(&c.exec_id)?,
            Step::Kill(c) => self.script.opt_exec(&c.exec_id)?,
            Step::Delete(c) => self.script.opt_exec(&c.exec_id)?,
            Step::CloseIo(c) => self.script.opt_exec(&c.exec_id)?,
            Step::ResizePty(c) => self.script.opt_exec(&c.exec_id)?,
            _ => String::new(),
        };
        let request = json!({"id": id, "exec-id": exec_id});
        let (container_id, e) = (id.clone(), exec_id.clone());
        macro_rules! call {
            ($method:ident, $req:expr, $view:expr) => {
                bounded(t, tasks.$method(req($req, &ns, t)))
                    .await
                    .map($view)
            };
        }
        let r = match s {
            Step::Start(_) => call!(
                start,
                StartRequest {
                    container_id,
                    exec_id: e
                },
                |r| json!({"pid": r.pid})
            ),
            Step::State(_) => call!(
                get,
                GetRequest {
                    container_id,
                    exec_id: e
                },
                |r| {
                    let p = r.process.unwrap_or_default();
                    state_view(ProcessState {
                        id: &p.id,
                        bundle: "",
                        exec_id: "",
                        pid: p.pid,
                        status: p.status,
                        stdio: [&p.stdin, &p.stdout, &p.stderr],
                        terminal: p.terminal,
                        exit_status: p.exit_status,
                        exited_at: ts(p.exited_at.as_ref()),
                    })
                }
            ),
            Step::Kill(c) => call!(
                kill,
                KillRequest {
                    container_id,
                    exec_id: e,
                    signal: c.signal.0,
                    all: c.all,
                },
                |_| json!({})
            ),
            Step::Delete(_) => {
                let r = self
                    .delete(&container_id, &e, Target { ns, id, tasks }, t)
                    .await;
                if r.is_ok() && exec_id.is_empty() {
                    self.task_live = false;
                }
                r
            }
            Step::Exec(c) => return self.exec(c, Target { ns, id, tasks }, t).await,
            Step::Pids(_) => call!(list_pids, ListPidsRequest { container_id }, |r| {
                pids_view(
                    r.processes
                        .into_iter()
                        .map(|p| (p.pid, p.info.map(|a| a.type_url))),
                )
            }),
            Step::Pause(_) => call!(pause, PauseTaskRequest { container_id }, |_| json!({})),
            Step::Resume(_) => call!(resume, ResumeTaskRequest { container_id }, |_| json!({})),
            Step::CloseIo(c) => {
                if c.client_close {
                    if let Ok(Some(set)) = crate::engine::interp::Backend::stdio_of(self, None, &e)
                    {
                        set.close_stdin();
                    }
                }
                let r = CloseIoRequest {
                    container_id,
                    exec_id: e,
                    stdin: c.stdin,
                };
                call!(close_io, r, |_| json!({}))
            }
            Step::ResizePty(c) => {
                let r = ResizePtyRequest {
                    container_id,
                    exec_id: e,
                    width: c.width,
                    height: c.height,
                };
                call!(resize_pty, r, |_| json!({}))
            }
            Step::Update(c) => self.update(c, Target { ns, id, tasks }, t).await,
            other => {
                return Err(format!(
                    "`{}` cannot be sent through containerd's API",
                    other.name()
                ))
            }
        };
        Ok((request, r))
    }

    /// Tasks.Update with the step's resources and annotations.
    async fn update(
        &self,
        c: &crate::scenario::UpdateStep,
        to: Target,
        t: Duration,
    ) -> Result<Value, Status> {
        let Target { ns, id, mut tasks } = to;
        let res = c.resources.clone().unwrap_or(json!({}));
        let r = UpdateTaskRequest {
            container_id: id,
            resources: Some(json_any(
                "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
                &res,
            )),
            annotations: c.annotations.clone().into_iter().collect(),
        };
        bounded(t, tasks.update(req(r, &ns, t)))
            .await
            .map(|_| json!({}))
    }

    /// Tasks.Delete of the task, or Tasks.DeleteProcess of an exec.
    async fn delete(
        &self,
        container_id: &str,
        exec_id: &str,
        to: Target,
        t: Duration,
    ) -> Result<Value, Status> {
        let Target { ns, mut tasks, .. } = to;
        let container_id = container_id.to_string();
        let r = if exec_id.is_empty() {
            let d = DeleteTaskRequest { container_id };
            bounded(t, tasks.delete(req(d, &ns, t))).await
        } else {
            let d = DeleteProcessRequest {
                container_id,
                exec_id: exec_id.to_string(),
            };
            bounded(t, tasks.delete_process(req(d, &ns, t))).await
        };
        r.map(|r| delete_view(r.pid, r.exit_status, ts(r.exited_at.as_ref())))
    }

    /// Tasks.Exec with the exec's own stdio (kept for `output`).
    async fn exec(&mut self, c: &ExecStep, to: Target, t: Duration) -> Result<Called, String> {
        let Target { ns, id, mut tasks } = to;
        let exec_id = self.script.expand(&c.exec_id)?;
        let terminal = c.terminal.or(c.process.terminal).unwrap_or(false);
        let stdin_data = c.stdin_data.as_ref().map(|s| s.as_bytes().to_vec());
        let opts = stdio_options([c.stdin, c.stdout, c.stderr], terminal, stdin_data, false);
        let dir = self.stdio_dir();
        let set = StdioSet::create(&dir, &format!("{MAIN}-{exec_id}"), opts)
            .map_err(|e| format!("stdio for exec `{exec_id}`: {e}"))?;
        let (i, o, e) = set.paths();
        let p = c.process.expanded(&self.script.lookup())?;
        let spec = json_any(
            "types.containerd.io/opencontainers/runtime-spec/1/Process",
            &p.to_oci(terminal),
        );
        let request = json!({"id": id, "exec-id": exec_id, "terminal": terminal});
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
            self.execs.insert(exec_id, set);
        }
        Ok((request, r))
    }
}
