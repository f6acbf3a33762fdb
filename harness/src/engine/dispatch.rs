//! Running a scenario's steps in order (repeat, sleep, background waits) and judging each RPC
//! answer against its `expect`, `expect-error` and `save`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::convert;
use super::steps::{Common, Ctx, Flow};
use crate::client::{RpcError, RpcResult};
use crate::pidguard::Proc;
use crate::report::Status;
use crate::scenario::{Capability, Level, Matcher, Step};

macro_rules! common {
    ($s:expr) => {
        Common {
            expect_error: $s.expect_error.as_ref(),
            allow_success: $s.allow_success,
            timeout: $s.timeout.map(|d| d.get()),
            save: &$s.save.0,
            container: $s.container.as_deref(),
        }
    };
}

fn err_json(e: &RpcError) -> Value {
    match e {
        RpcError::Status { message, .. } => json!({"code": e.code_name(), "message": message}),
        other => json!({"code": other.code_name(), "message": other.to_string()}),
    }
}

fn rpc_method(step: &str) -> &'static str {
    match step {
        "create" => "Create",
        "start" => "Start",
        "state" => "State",
        "kill" => "Kill",
        "wait" | "wait-result" => "Wait",
        "delete" => "Delete",
        "exec" => "Exec",
        "pids" => "Pids",
        "pause" => "Pause",
        "resume" => "Resume",
        "stats" => "Stats",
        "close-io" => "CloseIO",
        "resize-pty" => "ResizePty",
        "update" => "Update",
        "checkpoint" => "Checkpoint",
        "connect" => "Connect",
        "shutdown" => "Shutdown",
        "create-sandbox" => "CreateSandbox",
        "start-sandbox" => "StartSandbox",
        "sandbox-platform" => "Platform",
        "sandbox-status" => "SandboxStatus",
        "wait-sandbox" => "WaitSandbox",
        "stop-sandbox" => "StopSandbox",
        "ping-sandbox" => "PingSandbox",
        "shutdown-sandbox" => "ShutdownSandbox",
        "sandbox-metrics" => "SandboxMetrics",
        _ => "?",
    }
}

/// A hint for errors shim authors often misread.
fn hint(e: &RpcError, step: &str) -> String {
    match e {
        RpcError::Status { code, message }
            if *code == ttrpc::Code::NOT_FOUND && message.contains("is not supported") =>
        {
            " (a default trait method answered; unsupported RPCs must answer unimplemented)".into()
        }
        RpcError::Timeout(d) => format!(
            " (no answer within {}; is the shim blocked?)",
            humantime::format_duration(*d)
        ),
        _ if step == "wait-result" => String::new(),
        _ => String::new(),
    }
}

impl<'a> Ctx<'a> {
    pub(super) fn run_steps<'s>(
        &'s mut self,
        steps: &'s [Step],
        prefix: &'s str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Flow> + 's>>
    where
        'a: 's,
    {
        Box::pin(async move {
            for (i, s) in steps.iter().enumerate() {
                if self.stopped() {
                    return Flow::Stop;
                }
                let label = format!("{prefix}step {} ({})", i + 1, s.name());
                if let Flow::Stop = self.run_step(s, &label, prefix, i).await {
                    return Flow::Stop;
                }
            }
            Flow::Go
        })
    }

    pub(super) async fn run_step(
        &mut self,
        s: &Step,
        label: &str,
        prefix: &str,
        index: usize,
    ) -> Flow {
        let t0 = Instant::now();
        match s {
            Step::Sleep(d) => {
                tokio::time::sleep(d.get()).await;
                self.passed("sleep", t0, json!({}), None)
            }
            Step::Repeat(r) => {
                for it in 1..=r.times {
                    self.vars.insert("iteration".into(), it.to_string());
                    let p = format!("{prefix}step {} iteration {it}: ", index + 1);
                    if let Flow::Stop = self.run_steps(&r.steps, &p).await {
                        return Flow::Stop;
                    }
                }
                Flow::Go
            }
            Step::Events(e) => {
                let r = self.events_step(e).await;
                let r = r.map(|matched| json!({"matched": matched}));
                self.judged(label, "events", t0, r)
            }
            Step::Output(o) => {
                let r = self.output_step(o).await.map(|()| json!({}));
                self.judged(label, "output", t0, r)
            }
            Step::ShimAlive(a) => {
                let r = self
                    .shim_alive(a.alive, a.timeout.map(|d| d.get()), a.socket_removed)
                    .await
                    .map(|()| json!({}));
                self.judged(label, "shim-alive", t0, r)
            }
            Step::WaitResult(w) => self.wait_result(w, label).await,
            Step::RestartContainerd(r) => self.restart_containerd(r, label, prefix, index).await,
            Step::EventsDown(_) => self.events_endpoint(false, label).await,
            Step::EventsUp(_) => self.events_endpoint(true, label).await,
            Step::StallStdout(d) => self.stall_stdout(d.get(), label),
            Step::KillProcess(k) => self.kill_process(k, label),
            Step::StartAnswer(a) => self.start_answer_step(a, label),
            Step::ShimLog(l) => self.shim_log_step(l, label).await,
            Step::KillShim(k) => {
                let Some(pid) = self.shims[0].pid else {
                    return self.step_failed(
                        label,
                        "kill-shim",
                        t0.elapsed(),
                        "the shim server's pid is unknown".into(),
                    );
                };
                let sig = nix::sys::signal::Signal::try_from(k.signal.0 as i32)
                    .unwrap_or(nix::sys::signal::Signal::SIGKILL);
                let signalled = Proc::found(pid)
                    .map_err(|e| format!("refused to signal the shim server: {e}"))
                    .and_then(|p| p.signal(sig).map(|()| p));
                let server = match signalled {
                    Ok(p) => p,
                    Err(m) => return self.step_failed(label, "kill-shim", t0.elapsed(), m),
                };
                server.wait_gone(Duration::from_secs(3)).await;
                // A killed server cannot remove its socket; the next `start` of a runc shim
                // would (EADDRINUSE and not connectable): do that here, so the leak check judges
                // the `delete` action.
                if let Some(p) = crate::dialect::socket_path(&self.shims[0].address) {
                    let _ = std::fs::remove_file(p);
                }
                // containerd notices the closed connection at once (ttrpc `WithOnClose`) and
                // runs `cleanupAfterDeadShim`: the `delete` action, then `/tasks/exit` and
                // `/tasks/delete` on the dead shim's behalf, so later steps can expect them.
                let mut response = json!({});
                if let Some(shim) = self.shims[0].shim.take() {
                    self.shims[0].client.close();
                    let lines = shim.log_lines();
                    let report = shim.close().await;
                    if let Ok(o) = &report.delete_action {
                        response =
                            json!({"delete-action": {"pid": o.pid, "exit-status": o.exit_status}});
                    }
                    self.shims[0].closed = Some((lines, report));
                }
                self.record(
                    "kill-shim",
                    Status::Passed,
                    t0.elapsed(),
                    response,
                    None,
                    Some(json!({"signal": k.signal.0})),
                    None,
                );
                Flow::Go
            }
            _ => self.rpc_step(s, label).await,
        }
    }

    async fn rpc_step(&mut self, s: &Step, label: &str) -> Flow {
        let name = s.name();
        let t_default = self.cfg.step_timeout;
        let prep: Result<_, String> = (|| {
            Ok(match s {
                Step::Create(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::Start(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::State(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::Kill(c) => (common!(c), vec![]),
                Step::Wait(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::Delete(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::Exec(c) => (common!(c), vec![]),
                Step::Pids(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::Pause(c) => (common!(c), vec![]),
                Step::Resume(c) => (common!(c), vec![]),
                Step::Stats(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::CloseIo(c) => (common!(c), vec![]),
                Step::ResizePty(c) => (common!(c), vec![]),
                Step::Update(c) => (common!(c), vec![]),
                Step::Checkpoint(c) => (common!(c), vec![]),
                Step::Connect(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::Shutdown(c) => (common!(c), vec![]),
                Step::CreateSandbox(c) => (common!(c), vec![]),
                Step::StartSandbox(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::SandboxPlatform(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::SandboxStatus(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::WaitSandbox(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::StopSandbox(c) => (common!(c), vec![]),
                Step::PingSandbox(c) => (common!(c), vec![]),
                Step::ShutdownSandbox(c) => (common!(c), vec![]),
                Step::SandboxMetrics(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                _ => return Err(format!("`{name}` is not an RPC step")),
            })
        })();
        let (common, matchers) = match prep {
            Ok(x) => x,
            Err(m) => return self.step_failed(label, name, Duration::ZERO, m),
        };
        // containerd puts no deadline of its own on a task's Delete, and the 2.x runc shim
        // spends up to 10 s draining a created task's stdio before `runc delete` ends the
        // process that holds it (cmd/containerd-shim-runc-v2/process/init.go `delete`, v2.1.9;
        // 2 s in v1.6.20's pkg/process/init.go): a Delete gets half as long again as other
        // steps, so that wait is not mistaken for a hang.
        let t_default = if matches!(s, Step::Delete(_)) {
            t_default + t_default / 2
        } else {
            t_default
        };
        let timeout = common.timeout.unwrap_or(t_default);
        let t0 = Instant::now();
        let sent = match self.send(s, &common, timeout).await {
            Ok(x) => x,
            Err(m) => return self.step_failed(label, name, t0.elapsed(), m),
        };
        let Some((request, result)) = sent else {
            // A background wait: recorded as sent.
            return Flow::Go;
        };
        let flow = self.judge(
            label,
            name,
            t0.elapsed(),
            request,
            result,
            &common,
            &matchers,
            s.capability(),
        );
        let exits = match s {
            Step::Shutdown(sd) => sd.exits.map(|e| (e, sd.exits_within)),
            Step::ShutdownSandbox(sd) => sd.exits.map(|e| (e, sd.exits_within)),
            _ => None,
        };
        if let Flow::Go = &flow {
            if let Some((exits, exits_within)) = exits {
                let within = exits_within
                    .map(|d| d.get())
                    .unwrap_or(Duration::from_secs(3));
                let container = common.container;
                if let Err(m) = self
                    .shim_alive_of(container, !exits, Some(within), false)
                    .await
                {
                    let i = self.steps.len() - 1;
                    self.steps[i].status = Status::Failed;
                    self.steps[i].message = Some(m.clone());
                    self.fail(Some(i), format!("{label}: {m}"));
                    return if self.cfg.keep_going {
                        Flow::Go
                    } else {
                        Flow::Stop
                    };
                }
            }
        }
        flow
    }

    /// Judges an RPC answer against expect / expect-error, saves variables, records the step.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &mut self,
        label: &str,
        name: &str,
        dur: Duration,
        request: Value,
        result: RpcResult<Value>,
        c: &Common<'_>,
        matchers: &[(&str, &Matcher)],
        cap: Option<Capability>,
    ) -> Flow {
        let method = rpc_method(name);
        let verdict: Result<Value, (String, bool)> = match (&result, c.expect_error) {
            (Err(e), Some(want)) if want.accepts(e.code_name()) => Ok(json!({})),
            (Err(e), _) if e.code_name() == "unimplemented" && self.level != Level::Must => {
                let what = cap
                    .map(|c| format!(": capability {c} absent"))
                    .unwrap_or_default();
                self.skip = Some(format!("the shim answered unimplemented to {method}{what}"));
                Err((String::new(), true))
            }
            (Err(e), Some(want)) => Err((
                format!(
                    "{method}: expected error {}, got {}{}",
                    want.describe(),
                    e,
                    hint(e, name)
                ),
                false,
            )),
            (Err(e), None) => Err((
                format!("{method}: expected success, got error {e}{}", hint(e, name)),
                false,
            )),
            (Ok(v), Some(want)) if !c.allow_success => Err((
                format!(
                    "{method}: expected error {}, got success {v}",
                    want.describe()
                ),
                false,
            )),
            (Ok(v), _) => {
                let mut bad = Vec::new();
                for (field, m) in matchers {
                    if let Err(msg) = m.check(v.get(*field), &self.lookup()) {
                        bad.push(format!("{field}: {msg}"));
                    }
                }
                if bad.is_empty() {
                    Ok(v.clone())
                } else {
                    Err((format!("{method} response: {}", bad.join("; ")), false))
                }
            }
        };
        let (response, error) = match &result {
            Ok(v) => (v.clone(), None),
            Err(e) => (json!({}), Some(err_json(e))),
        };
        match verdict {
            Ok(v) => {
                for (var, field) in c.save {
                    let val = match v.get(field) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    };
                    self.vars.insert(var.clone(), val);
                }
                self.record(
                    name,
                    Status::Passed,
                    dur,
                    response,
                    error,
                    Some(request),
                    None,
                );
                Flow::Go
            }
            Err((_, true)) => {
                self.record(
                    name,
                    Status::Skipped,
                    dur,
                    response,
                    error,
                    Some(request),
                    self.skip.clone(),
                );
                Flow::Stop
            }
            Err((msg, false)) => {
                let i = self.record(
                    name,
                    Status::Failed,
                    dur,
                    response,
                    error,
                    Some(request),
                    Some(msg.clone()),
                );
                self.fail(Some(i), format!("{label}: {msg}"));
                if self.cfg.keep_going {
                    Flow::Go
                } else {
                    Flow::Stop
                }
            }
        }
    }

    async fn wait_result(&mut self, w: &crate::scenario::WaitResultStep, label: &str) -> Flow {
        let t0 = Instant::now();
        let c = common!(w);
        let Some(bg) = self.waits.get(&w.handle) else {
            return self.step_failed(
                label,
                "wait-result",
                Duration::ZERO,
                format!("no background wait named `{}`", w.handle),
            );
        };
        if w.pending {
            if bg.handle.is_finished() {
                let bg = self.waits.remove(&w.handle).expect("present");
                let got = match bg.handle.await {
                    Ok(Ok(r)) => format!("an answer {}", convert::wait(&r)),
                    Ok(Err(e)) => format!("an error {e}"),
                    Err(e) => format!("a crash of the waiting task: {e}"),
                };
                return self.step_failed(
                    label,
                    "wait-result",
                    t0.elapsed(),
                    format!("Wait returned early: expected it to block while the process runs, got {got}"),
                );
            }
            self.record(
                "wait-result",
                Status::Passed,
                t0.elapsed(),
                json!({"pending": true}),
                None,
                None,
                None,
            );
            return Flow::Go;
        }
        let bg = self.waits.remove(&w.handle).expect("present");
        let t = c.timeout.unwrap_or(self.cfg.step_timeout);
        let mut handle = bg.handle;
        let r = match tokio::time::timeout(t, &mut handle).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(RpcError::Transport(format!("the waiting task failed: {e}"))),
            Err(_) => {
                handle.abort();
                Err(RpcError::Timeout(t))
            }
        };
        let matchers = w.expect.as_ref().map(|e| e.matchers()).unwrap_or_default();
        self.judge(
            label,
            "wait-result",
            t0.elapsed(),
            bg.request,
            r.map(|r| convert::wait(&r)),
            &c,
            &matchers,
            None,
        )
    }
}
