//! The step interpreter, written once for every backend a scenario runs through: the steps in
//! order (`repeat`, `sleep`), each RPC step's common arguments, bound, answer judged and recorded
//! ([`Script::judge`]), background waits and `wait-result`, the `events` and `output` checks, and
//! the `start-time` / `init-pid` variables. A [`Backend`] sends one RPC step and says what it
//! observed: the mock containerd (`engine::steps::Ctx`, ttrpc to the shim) and a real containerd
//! (`differential`, gRPC); a backend that cannot express a step says so and why.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::convert;
use super::script::{Common, Flow, Script, Wait};
use crate::client::{RpcError, RpcResult};
use crate::report::Status;
use crate::scenario::{match_events, EventsStep, Matcher, OutputMatch, OutputStep, Step};
use crate::stdio::StdioSet;

/// The id of a scenario's main container.
pub const MAIN: &str = "main";

/// Task events as `(topic, fields)`, in arrival order, borrowed from the backend's log (a
/// check looks at them on every arrival: no copy).
pub(crate) type TaskEvents<'a> = [(&'a str, &'a Value)];

/// What sending one RPC step gave.
pub(crate) enum Sent {
    /// The request as the transcript shows it, and the answer in the JSON view.
    Answer(Value, RpcResult<Value>),
    /// A Wait sent in the background (its request, and the call answering in the JSON view).
    Background(Value, tokio::task::JoinHandle<RpcResult<Value>>),
}

/// What a scenario runs through. The interpreter owns the meaning of each step; a backend sends
/// RPCs, runs the steps only it knows, and shows what it saw (events, a process's output).
#[allow(async_fn_in_trait)]
pub(crate) trait Backend {
    /// The run's variables, transcript and verdict.
    fn script(&self) -> &Script;
    /// The same, to change.
    fn script_mut(&mut self) -> &mut Script;
    /// Why this backend does not send the first of `rest` (the step and those after it at its
    /// level), if it does not: recorded as not sent, never judged.
    fn not_sent(&self, _rest: &[Step]) -> Option<String> {
        None
    }
    /// Runs a step only this backend knows (the mock's faults and probes); `None` when `s` is
    /// not one.
    async fn own_step(&mut self, s: &Step, label: &str, prefix: &str, index: usize)
        -> Option<Flow>;
    /// Builds and sends one RPC step bounded by `t`; `Err` when it could not be sent (the
    /// scenario's problem or the harness's, not the shim's answer).
    async fn send(&mut self, s: &Step, c: &Common<'_>, t: Duration) -> Result<Sent, String>;
    /// A check after an answer that passed (a Shutdown's `exits`): `Err` fails the step.
    async fn after_answer(&mut self, _s: &Step, _c: &Common<'_>) -> Result<(), String> {
        Ok(())
    }
    /// The task events received so far, `(topic, fields)` in arrival order, once `until` holds
    /// of them or `t` has passed.
    async fn await_events(
        &self,
        until: &dyn Fn(&TaskEvents<'_>) -> bool,
        t: Duration,
    ) -> Vec<(String, Value)>;
    /// How many of a container's events (`*`: everyone's) earlier `fresh` checks consumed.
    fn cursor(&self, key: &str) -> usize;
    /// Notes that the events of `key` up to `at` are consumed.
    fn set_cursor(&mut self, key: &str, at: usize);
    /// The captured stdio of a container's (default: the main one's) init or exec process.
    fn stdio_of(&self, container: Option<&str>, exec_id: &str)
        -> Result<Option<&StdioSet>, String>;
}

/// Runs `steps` in order until one stops the scenario.
pub(crate) fn run_steps<'s, B: Backend>(
    b: &'s mut B,
    steps: &'s [Step],
    prefix: &'s str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Flow> + 's>> {
    Box::pin(async move {
        for (i, s) in steps.iter().enumerate() {
            if b.script().stopped() {
                return Flow::Stop;
            }
            if let Some(why) = b.not_sent(&steps[i..]) {
                b.script_mut().not_sent(s.name(), why);
                continue;
            }
            let label = format!("{prefix}step {} ({})", i + 1, s.name());
            if let Flow::Stop = run_step(b, s, &label, prefix, i).await {
                return Flow::Stop;
            }
        }
        Flow::Go
    })
}

/// Runs one step.
pub(crate) async fn run_step<B: Backend>(
    b: &mut B,
    s: &Step,
    label: &str,
    prefix: &str,
    index: usize,
) -> Flow {
    let t0 = Instant::now();
    match s {
        Step::Sleep(d) => {
            tokio::time::sleep(d.get()).await;
            b.script_mut().passed("sleep", t0, json!({}), None)
        }
        Step::Repeat(r) => {
            for it in 1..=r.times {
                b.script_mut()
                    .vars
                    .insert("iteration".into(), it.to_string());
                let p = format!("{prefix}step {} iteration {it}: ", index + 1);
                if let Flow::Stop = run_steps(b, &r.steps, &p).await {
                    return Flow::Stop;
                }
            }
            Flow::Go
        }
        Step::Events(e) => {
            let r = events_step(b, e).await;
            let r = r.map(|matched| json!({"matched": matched}));
            b.script_mut().judged(label, "events", t0, r)
        }
        Step::Output(o) => {
            let r = output_step(b, o).await.map(|()| json!({}));
            b.script_mut().judged(label, "output", t0, r)
        }
        Step::WaitResult(w) => wait_result(b, w, label).await,
        _ => match b.own_step(s, label, prefix, index).await {
            Some(flow) => flow,
            None => rpc_step(b, s, label).await,
        },
    }
}

/// An RPC step's common arguments and `expect` matchers.
fn rpc_parts(s: &Step) -> Option<(Common<'_>, Vec<(&str, &Matcher)>)> {
    macro_rules! parts {
        ($c:expr) => {
            Common {
                expect_error: $c.expect_error.as_ref(),
                allow_success: $c.allow_success,
                timeout: $c.timeout.map(|d| d.get()),
                save: &$c.save.0,
                container: $c.container.as_deref(),
            }
        };
    }
    macro_rules! with {
        ($c:expr) => {
            (
                parts!($c),
                $c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
            )
        };
    }
    macro_rules! without {
        ($c:expr) => {
            (parts!($c), vec![])
        };
    }
    Some(match s {
        Step::Create(c) => with!(c),
        Step::Start(c) => with!(c),
        Step::State(c) => with!(c),
        Step::Wait(c) => with!(c),
        Step::Delete(c) => with!(c),
        Step::Pids(c) => with!(c),
        Step::Stats(c) => with!(c),
        Step::Connect(c) => with!(c),
        Step::StartSandbox(c) => with!(c),
        Step::SandboxPlatform(c) => with!(c),
        Step::SandboxStatus(c) => with!(c),
        Step::WaitSandbox(c) => with!(c),
        Step::SandboxMetrics(c) => with!(c),
        Step::Kill(c) => without!(c),
        Step::Exec(c) => without!(c),
        Step::Pause(c) => without!(c),
        Step::Resume(c) => without!(c),
        Step::CloseIo(c) => without!(c),
        Step::ResizePty(c) => without!(c),
        Step::Update(c) => without!(c),
        Step::Checkpoint(c) => without!(c),
        Step::Shutdown(c) => without!(c),
        Step::CreateSandbox(c) => without!(c),
        Step::StopSandbox(c) => without!(c),
        Step::PingSandbox(c) => without!(c),
        Step::ShutdownSandbox(c) => without!(c),
        _ => return None,
    })
}

/// The name of the container a step addresses (`main` by default).
fn container_name(script: &Script, c: &Common<'_>) -> Result<String, String> {
    match c.container {
        Some(x) => script.expand(x),
        None => Ok(MAIN.to_string()),
    }
}

/// `start-time` (the main container's) or `<name>-start-time`, taken as a container's Start is
/// sent.
fn note_start_time(script: &mut Script, s: &Step, c: &Common<'_>) -> Result<(), String> {
    let Step::Start(x) = s else { return Ok(()) };
    if !script.opt_exec(&x.exec_id)?.is_empty() {
        return Ok(());
    }
    let name = container_name(script, c)?;
    let key = if name == MAIN {
        "start-time".to_string()
    } else {
        format!("{name}-start-time")
    };
    let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    script.vars.insert(key, now);
    Ok(())
}

/// `init-pid` (the main container's) or `<name>-init-pid`, from a Create's answer.
fn note_init_pid(script: &mut Script, s: &Step, c: &Common<'_>, answer: &RpcResult<Value>) {
    let (Step::Create(_), Ok(v)) = (s, answer) else {
        return;
    };
    let Some(pid) = v.get("pid") else { return };
    let Ok(name) = container_name(script, c) else {
        return;
    };
    let key = if name == MAIN {
        "init-pid".to_string()
    } else {
        format!("{name}-init-pid")
    };
    script.vars.insert(key, pid.to_string());
}

/// Sends an RPC step through the backend and judges its answer.
async fn rpc_step<B: Backend>(b: &mut B, s: &Step, label: &str) -> Flow {
    let name = s.name();
    let Some((common, matchers)) = rpc_parts(s) else {
        let why = format!("`{name}` is not an RPC step");
        return b.script_mut().step_failed(label, name, Duration::ZERO, why);
    };
    // containerd puts no deadline of its own on a task's Delete, and the 2.x runc shim
    // spends up to 10 s draining a created task's stdio before `runc delete` ends the
    // process that holds it (cmd/containerd-shim-runc-v2/process/init.go `delete`, v2.1.9;
    // 2 s in v1.6.20's pkg/process/init.go): a Delete gets half as long again as other
    // steps, so that wait is not mistaken for a hang.
    let t_default = b.script().step_timeout;
    let t_default = if matches!(s, Step::Delete(_)) {
        t_default + t_default / 2
    } else {
        t_default
    };
    let timeout = common.timeout.unwrap_or(t_default);
    let t0 = Instant::now();
    if let Err(m) = note_start_time(b.script_mut(), s, &common) {
        return b.script_mut().step_failed(label, name, t0.elapsed(), m);
    }
    let (request, result) = match b.send(s, &common, timeout).await {
        Ok(Sent::Answer(request, result)) => (request, result),
        Ok(Sent::Background(request, handle)) => {
            let h = match s {
                Step::Wait(w) => w.background.clone().unwrap_or_default(),
                _ => String::new(),
            };
            let script = b.script_mut();
            script.record(
                "wait",
                Status::Passed,
                Duration::ZERO,
                json!({"background": h}),
                None,
                Some(request.clone()),
                None,
            );
            script.waits.insert(h, Wait { request, handle });
            return Flow::Go;
        }
        Err(m) => return b.script_mut().step_failed(label, name, t0.elapsed(), m),
    };
    note_init_pid(b.script_mut(), s, &common, &result);
    let flow = b.script_mut().judge(
        label,
        name,
        t0.elapsed(),
        request,
        result,
        &common,
        &matchers,
        s.capability(),
    );
    if let Flow::Go = &flow {
        if let Err(m) = b.after_answer(s, &common).await {
            return b.script_mut().fail_last(label, m);
        }
    }
    flow
}

/// `wait-result`: a background Wait still held (`pending`), or its answer judged.
async fn wait_result<B: Backend>(
    b: &mut B,
    w: &crate::scenario::WaitResultStep,
    label: &str,
) -> Flow {
    let t0 = Instant::now();
    let script = b.script_mut();
    let Some(bg) = script.waits.get(&w.handle) else {
        let why = format!("no background wait named `{}`", w.handle);
        return script.step_failed(label, "wait-result", Duration::ZERO, why);
    };
    if w.pending {
        if bg.handle.is_finished() {
            let bg = script.waits.remove(&w.handle).expect("present");
            let got = match bg.handle.await {
                Ok(Ok(v)) => format!("an answer {v}"),
                Ok(Err(e)) => format!("an error {e}"),
                Err(e) => format!("a crash of the waiting task: {e}"),
            };
            let why = format!(
                "Wait returned early: expected it to block while the process runs, got {got}"
            );
            return script.step_failed(label, "wait-result", t0.elapsed(), why);
        }
        script.record(
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
    let bg = script.waits.remove(&w.handle).expect("present");
    let t = w.timeout.map(|d| d.get()).unwrap_or(script.step_timeout);
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
    let common = Common {
        expect_error: w.expect_error.as_ref(),
        allow_success: w.allow_success,
        timeout: w.timeout.map(|d| d.get()),
        save: &w.save.0,
        container: w.container.as_deref(),
    };
    script.judge(
        label,
        "wait-result",
        t0.elapsed(),
        bg.request,
        r,
        &common,
        &matchers,
        None,
    )
}

/// `(topic, fields)` pairs as [`TaskEvents`].
pub(crate) fn borrowed(evs: &[(String, Value)]) -> Vec<(&str, &Value)> {
    evs.iter().map(|(t, f)| (t.as_str(), f)).collect()
}

/// `events`: the container's (or everyone's) events, times normalised, matched by the scenario
/// format's [`match_events`] within the step's bound; `forbid` after a match; `fresh` from where
/// the last fresh check of that container ended. The number of events matched.
async fn events_step<B: Backend>(b: &mut B, e: &EventsStep) -> Result<usize, String> {
    let script = b.script();
    let cid = match e.container.as_deref() {
        Some("*") => None,
        Some(c) => Some(script.expand(c)?),
        None => Some(MAIN.to_string()),
    };
    let key = cid.clone().unwrap_or_else(|| "*".into());
    let cursor = if e.fresh { b.cursor(&key) } else { 0 };
    let timeout = e.timeout.map(|d| d.get()).unwrap_or(script.step_timeout);
    let vars = script.vars.clone();
    let lookup = move |n: &str| vars.get(n).cloned();
    let pick = |evs: &TaskEvents<'_>| -> Vec<(String, Value)> {
        evs.iter()
            .filter(|(_, f)| match &cid {
                None => true,
                Some(id) => f.get("container-id").and_then(Value::as_str) == Some(id.as_str()),
            })
            .skip(cursor)
            .map(|(t, f)| {
                let mut f = (*f).clone();
                convert::normalize_times(&mut f);
                (t.to_string(), f)
            })
            .collect()
    };
    let until =
        |evs: &TaskEvents<'_>| match_events(&pick(evs), &e.expect, e.exact, &lookup).is_ok();
    let all = b.await_events(&until, timeout).await;
    let got = pick(&borrowed(&all));
    let who = cid
        .as_deref()
        .map(|c| format!("container `{c}`"))
        .unwrap_or_else(|| "all containers".into());
    let end = match match_events(&got, &e.expect, e.exact, &lookup) {
        Ok(end) => end,
        Err(why) => {
            let want: Vec<_> = e.expect.iter().map(|m| m.0.topic.as_str()).collect();
            let seen: Vec<_> = got.iter().map(|(t, _)| t.as_str()).collect();
            return Err(format!(
                "expected events [{}] ({}) for {who} within {}; got [{}]: {why}",
                want.join(", "),
                if e.exact { "exactly" } else { "in this order" },
                humantime::format_duration(timeout),
                crate::report::listed(&seen)
            ));
        }
    };
    for f in &e.forbid {
        if let Some((t, fields)) = got.iter().find(|(t, _)| t == f) {
            return Err(format!(
                "event {t} must not be published for {who}, got {fields}"
            ));
        }
    }
    b.set_cursor(&key, cursor + end);
    Ok(end)
}

/// `output`: a process's stdout and stderr judged once they hold or the bound passed; `save`
/// stores them.
async fn output_step<B: Backend>(b: &mut B, o: &OutputStep) -> Result<(), String> {
    let script = b.script();
    let exec_id = script.opt_exec(&o.exec_id)?;
    let timeout = o.timeout.map(|d| d.get()).unwrap_or(script.step_timeout);
    let vars = script.vars.clone();
    let lookup = move |n: &str| vars.get(n).cloned();
    let check = |out: &[u8], err: &[u8]| -> Result<(), String> {
        let quick = |m: &OutputMatch, b: &[u8]| m.length.is_none_or(|n| n == b.len());
        for (name, m, got) in [("stdout", &o.stdout, out), ("stderr", &o.stderr, err)] {
            if let Some(m) = m {
                if !quick(m, got) {
                    return Err(format!(
                        "{name}: expected {} bytes, got {} bytes",
                        m.length.unwrap_or(0),
                        got.len()
                    ));
                }
            }
        }
        if let Some(m) = &o.stdout {
            m.check(out, &lookup).map_err(|e| format!("stdout: {e}"))?;
        }
        if let Some(m) = &o.stderr {
            m.check(err, &lookup).map_err(|e| format!("stderr: {e}"))?;
        }
        Ok(())
    };
    let Some(set) = b.stdio_of(o.container.as_deref(), &exec_id)? else {
        return Err(format!(
            "no captured output for {}",
            if exec_id.is_empty() {
                "the init process (not created?)".to_string()
            } else {
                format!("exec `{exec_id}`")
            }
        ));
    };
    set.wait_output(|out, err| check(out, err).is_ok(), timeout)
        .await;
    let (out, err) = (set.stdout(), set.stderr());
    check(&out, &err)
        .map_err(|e| format!("{e} (waited {})", humantime::format_duration(timeout)))?;
    for (var, stream) in &o.save {
        let bytes = match stream {
            crate::scenario::Stream::Stdout => &out,
            crate::scenario::Stream::Stderr => &err,
        };
        let v = String::from_utf8_lossy(bytes).into_owned();
        b.script_mut().vars.insert(var.clone(), v);
    }
    Ok(())
}
