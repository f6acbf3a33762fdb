//! A scenario run's own state, whatever it runs through: the variables, the transcript of step
//! results, the verdict so far (failure or skip), the background waits, and the judging of an
//! RPC answer against `expect`, `expect-error` and `save`. The mock's context and the containerd
//! backend each own one; the interpreter (`interp`) reads and writes it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{RpcError, RpcResult};
use crate::report::{Status, StepResult};
use crate::scenario::{expand, Capability, ExpectError, Level, Matcher};

/// Whether the steps go on.
pub(crate) enum Flow {
    /// The next step runs.
    Go,
    /// The scenario stops here (failed without `--keep-going`, or skipped).
    Stop,
}

/// Common arguments of RPC steps.
pub(crate) struct Common<'s> {
    pub(crate) expect_error: Option<&'s ExpectError>,
    pub(crate) allow_success: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) save: &'s BTreeMap<String, String>,
    pub(crate) container: Option<&'s str>,
}

/// A Wait sent in the background, for a later `wait-result`: what was asked and the call, whose
/// answer is already in the JSON view.
pub(crate) struct Wait {
    pub(crate) request: Value,
    pub(crate) handle: tokio::task::JoinHandle<RpcResult<Value>>,
}

/// One run's variables, transcript and verdict.
pub(crate) struct Script {
    /// `${name}` values: `id`, what steps saved, what the backend noted (`init-pid`, ...).
    pub(crate) vars: BTreeMap<String, String>,
    /// Every step's result, in order.
    pub(crate) steps: Vec<StepResult>,
    /// The first failure: the transcript index of its step (if any) and the message.
    pub(crate) failure: Option<(Option<usize>, String)>,
    /// Why the scenario is skipped, once it is.
    pub(crate) skip: Option<String>,
    /// Background waits by handle.
    pub(crate) waits: BTreeMap<String, Wait>,
    /// Steps go on after a failure.
    pub(crate) keep_going: bool,
    /// The bound of a step that names none.
    pub(crate) step_timeout: Duration,
    /// The scenario's level: below `must`, an `unimplemented` answer skips it.
    pub(crate) level: Level,
    /// Whether an `unimplemented` answer may skip the scenario (the mock judges a shim's
    /// capabilities; through containerd the answer is only recorded, to compare).
    pub(crate) skip_unimplemented: bool,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// An RPC error as the transcript records it.
fn err_json(e: &RpcError) -> Value {
    match e {
        RpcError::Status { message, .. } => json!({"code": e.code_name(), "message": message}),
        other => json!({"code": other.code_name(), "message": other.to_string()}),
    }
}

/// The method a step's name stands for, as messages name it.
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
fn hint(e: &RpcError) -> String {
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
        _ => String::new(),
    }
}

impl Script {
    /// A fresh run's state with `${id}` set to `id`.
    pub(crate) fn new(id: &str, level: Level, step_timeout: Duration, keep_going: bool) -> Script {
        Script {
            vars: BTreeMap::from([("id".to_string(), id.to_string())]),
            steps: Vec::new(),
            failure: None,
            skip: None,
            waits: BTreeMap::new(),
            keep_going,
            step_timeout,
            level,
            skip_unimplemented: true,
        }
    }

    /// The variables as a lookup function.
    pub(crate) fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |n: &str| self.vars.get(n).cloned()
    }

    /// `s` with its `${var}`s expanded; an unknown variable is an error naming it.
    pub(crate) fn expand(&self, s: &str) -> Result<String, String> {
        expand(s, &self.lookup())
    }

    /// An optional `exec-id`, expanded; empty for the init process.
    pub(crate) fn opt_exec(&self, e: &Option<String>) -> Result<String, String> {
        match e {
            Some(s) => self.expand(s),
            None => Ok(String::new()),
        }
    }

    /// Notes the scenario's first failure.
    pub(crate) fn fail(&mut self, step: Option<usize>, msg: String) {
        if self.failure.is_none() {
            self.failure = Some((step, msg));
        }
    }

    /// Whether no more steps run.
    pub(crate) fn stopped(&self) -> bool {
        self.skip.is_some() || (self.failure.is_some() && !self.keep_going)
    }

    /// After a failure: go on only with `keep_going`.
    pub(crate) fn after_failure(&self) -> Flow {
        if self.keep_going {
            Flow::Go
        } else {
            Flow::Stop
        }
    }

    /// Appends a step result; returns its index.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &mut self,
        name: &str,
        status: Status,
        dur: Duration,
        response: Value,
        error: Option<Value>,
        request: Option<Value>,
        message: Option<String>,
    ) -> usize {
        self.steps.push(StepResult {
            step: name.to_string(),
            status,
            duration_ms: ms(dur),
            response,
            error,
            request,
            message,
        });
        self.steps.len() - 1
    }

    /// Records a passed step (what it observed, and what it asked when that is not in the
    /// scenario's words) and goes on.
    pub(crate) fn passed(
        &mut self,
        name: &str,
        t0: Instant,
        response: Value,
        request: Option<Value>,
    ) -> Flow {
        self.record(
            name,
            Status::Passed,
            t0.elapsed(),
            response,
            None,
            request,
            None,
        );
        Flow::Go
    }

    /// A step that sends no RPC, judged: passed with what it observed, or failed with why.
    pub(crate) fn judged(
        &mut self,
        label: &str,
        name: &str,
        t0: Instant,
        outcome: Result<Value, String>,
    ) -> Flow {
        match outcome {
            Ok(v) => self.passed(name, t0, v, None),
            Err(m) => self.step_failed(label, name, t0.elapsed(), m),
        }
    }

    /// Records a failed non-RPC step and the scenario's failure.
    pub(crate) fn step_failed(
        &mut self,
        label: &str,
        name: &str,
        dur: Duration,
        msg: String,
    ) -> Flow {
        let i = self.record(
            name,
            Status::Failed,
            dur,
            json!({}),
            None,
            None,
            Some(msg.clone()),
        );
        self.fail(Some(i), format!("{label}: {msg}"));
        self.after_failure()
    }

    /// Records a step this run did not send, and why (a containerd client has no such call, or
    /// the daemon sends it itself): never judged, never compared.
    pub(crate) fn not_sent(&mut self, name: &str, why: String) {
        self.record(
            name,
            Status::Skipped,
            Duration::ZERO,
            json!({}),
            None,
            None,
            Some(why),
        );
    }

    /// Fails the last recorded step with `msg` (a check after its answer did not hold).
    pub(crate) fn fail_last(&mut self, label: &str, msg: String) -> Flow {
        let i = self.steps.len() - 1;
        self.steps[i].status = Status::Failed;
        self.steps[i].message = Some(msg.clone());
        self.fail(Some(i), format!("{label}: {msg}"));
        self.after_failure()
    }

    /// Stores the fields `save` names of an answer.
    fn save(&mut self, save: &BTreeMap<String, String>, v: &Value) {
        for (var, field) in save {
            let val = match v.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            self.vars.insert(var.clone(), val);
        }
    }

    /// What an answer means against `expect-error` and the `expect` matchers: `Ok` with the
    /// view to save from, or why not (and whether that skips the scenario).
    fn verdict(
        &mut self,
        name: &str,
        result: &RpcResult<Value>,
        c: &Common<'_>,
        matchers: &[(&str, &Matcher)],
        cap: Option<Capability>,
    ) -> Result<Value, (String, bool)> {
        let method = rpc_method(name);
        match (result, c.expect_error) {
            (Err(e), Some(want)) if want.accepts(e.code_name()) => Ok(json!({})),
            (Err(e), _)
                if e.code_name() == "unimplemented"
                    && self.level != Level::Must
                    && self.skip_unimplemented =>
            {
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
                    hint(e)
                ),
                false,
            )),
            (Err(e), None) => Err((
                format!("{method}: expected success, got error {e}{}", hint(e)),
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
        }
    }

    /// Judges an RPC answer against expect / expect-error, saves variables, records the step.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn judge(
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
        let verdict = self.verdict(name, &result, c, matchers, cap);
        let (response, error) = match &result {
            Ok(v) => (v.clone(), None),
            Err(e) => (json!({}), Some(err_json(e))),
        };
        match verdict {
            Ok(v) => {
                self.save(c.save, &v);
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
                let why = self.skip.clone();
                self.record(
                    name,
                    Status::Skipped,
                    dur,
                    response,
                    error,
                    Some(request),
                    why,
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
                self.after_failure()
            }
        }
    }
}
