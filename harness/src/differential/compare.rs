//! The comparison of one scenario's two runs: a [`Trace`] per side (step outcomes, the main
//! container's `/tasks/*` events, the init's output), normalised (pids become relations such as
//! `init` or `exec:e1`, times become present/absent, FIFO paths set/unset) and diffed into
//! [`Difference`]s that show both sides.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::report::{ScenarioResult, Status, StepResult};

/// The container id every scenario's main container has.
pub const MAIN: &str = "main";

/// What one step did on one side.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An RPC answered; its response view (kebab-case protobuf names).
    Ok(Value),
    /// An RPC failed with this code name (`not-found`, `unknown`, ...) and message.
    Err(String, String),
    /// A check (`events`, `output`, a pending `wait-result`): whether it held, and why not.
    Check(bool, String),
    /// Not sent on this side, and why: containerd sends it itself (a trailing Shutdown), or its
    /// API has no call for this query (PingSandbox, the sandbox Platform). Never compared.
    Implicit(String),
}

/// One step of a trace.
#[derive(Debug, Clone)]
pub struct Obs {
    /// The step's key (`create`, `wait`, ...).
    pub step: String,
    /// The request's exec id (empty for the init or non-RPC steps).
    pub exec_id: String,
    /// What happened.
    pub outcome: Outcome,
}

/// Everything compared of one run of a scenario.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Each step, in order (a `repeat` contributes each iteration's steps).
    pub steps: Vec<Obs>,
    /// The main container's task events `(topic, fields)`, in arrival order.
    pub events: Vec<(String, Value)>,
    /// The init's stdout.
    pub stdout: String,
    /// The init's stderr.
    pub stderr: String,
}

/// One fidelity difference, with both sides shown.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Difference {
    /// What differs (`step 4 (wait)`, `events`, `stdout`).
    pub what: String,
    /// The real containerd's side.
    pub containerd: Value,
    /// The mock's side.
    pub mock: Value,
}

impl Trace {
    /// The trace of a mock run, from the engine's result.
    pub fn from_mock(r: &ScenarioResult) -> Trace {
        let events = r
            .events
            .iter()
            .filter(|e| e.topic.starts_with("/tasks/"))
            .filter(|e| e.event.get("container-id").and_then(Value::as_str) == Some(MAIN))
            .map(|e| (e.topic.clone(), e.event.clone()))
            .collect();
        Trace::from_steps(&r.steps, events, r.stdout.clone(), r.stderr.clone())
    }

    /// A trace from a run's transcript (either side's), the main container's task events and
    /// the init's output.
    pub fn from_steps(
        steps: &[StepResult],
        events: Vec<(String, Value)>,
        stdout: String,
        stderr: String,
    ) -> Trace {
        let steps = steps
            .iter()
            .map(|s| {
                let exec_id = s
                    .request
                    .as_ref()
                    .and_then(|q| q.get("exec-id"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let pending = s.response.get("pending").is_some();
                let check = matches!(s.step.as_str(), "events" | "output" | "sleep")
                    || (s.step == "wait-result"
                        && (pending || (s.request.is_none() && s.error.is_none())));
                let outcome = if s.status == Status::Skipped && s.request.is_none() {
                    Outcome::Implicit(s.message.clone().unwrap_or_default())
                } else if check {
                    Outcome::Check(
                        s.status == Status::Passed,
                        s.message.clone().unwrap_or_default(),
                    )
                } else if let Some(e) = &s.error {
                    Outcome::Err(
                        e.get("code")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        e.get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    )
                } else {
                    Outcome::Ok(s.response.clone())
                };
                Obs {
                    step: s.step.clone(),
                    exec_id,
                    outcome,
                }
            })
            .collect();
        Trace {
            steps,
            events,
            stdout,
            stderr,
        }
    }

    /// Pid → relation: the pid Create answered is `init`, an exec's Start pid `exec:<id>`,
    /// StartSandbox's `pod`.
    fn pid_labels(&self) -> BTreeMap<u64, String> {
        let mut m = BTreeMap::new();
        for s in &self.steps {
            let Outcome::Ok(v) = &s.outcome else { continue };
            let Some(pid) = v.get("pid").and_then(Value::as_u64) else {
                continue;
            };
            match s.step.as_str() {
                "create" => {
                    m.insert(pid, "init".to_string());
                }
                "start" if !s.exec_id.is_empty() => {
                    m.insert(pid, format!("exec:{}", s.exec_id));
                }
                "start" => {
                    m.entry(pid).or_insert_with(|| "init".to_string());
                }
                "start-sandbox" => {
                    m.insert(pid, "pod".to_string());
                }
                _ => {}
            }
        }
        m
    }
}

fn label(labels: &BTreeMap<u64, String>, v: Option<&Value>) -> Value {
    match v.and_then(Value::as_u64) {
        None => Value::Null,
        Some(0) => json!(0),
        Some(p) => json!(labels.get(&p).cloned().unwrap_or_else(|| "other".into())),
    }
}

fn present(v: Option<&Value>) -> Value {
    json!(!matches!(v, None | Some(Value::Null)))
}

fn set(v: Option<&Value>) -> Value {
    json!(v.and_then(Value::as_str).is_some_and(|s| !s.is_empty()))
}

/// The key fields of an RPC answer, normalised.
fn norm_response(step: &str, v: &Value, labels: &BTreeMap<u64, String>) -> Value {
    let pick = |keys: &[&str]| -> Map<String, Value> {
        keys.iter()
            .filter_map(|k| v.get(*k).map(|x| (k.to_string(), x.clone())))
            .collect()
    };
    let mut m = match step {
        "create" | "start" => Map::new(),
        "state" => pick(&["status", "exit-status", "terminal"]),
        "wait" | "wait-result" => pick(&["exit-status", "background", "pending"]),
        "delete" => pick(&["exit-status"]),
        "sandbox-status" => pick(&["sandbox-id", "state"]),
        "wait-sandbox" => pick(&["exit-status"]),
        "sandbox-platform" => pick(&["os", "architecture"]),
        "sandbox-metrics" => pick(&["data"]),
        _ => Map::new(),
    };
    if matches!(step, "start-sandbox" | "sandbox-status") {
        m.insert("pid".into(), label(labels, v.get("pid")));
        m.insert("created-at".into(), present(v.get("created-at")));
    }
    if matches!(step, "sandbox-status" | "wait-sandbox") {
        m.insert("exited-at".into(), present(v.get("exited-at")));
    }
    if matches!(step, "create" | "start" | "state" | "delete") {
        m.insert("pid".into(), label(labels, v.get("pid")));
    }
    if matches!(step, "state" | "wait" | "wait-result" | "delete") && v.get("background").is_none()
    {
        m.insert("exited-at".into(), present(v.get("exited-at")));
    }
    if step == "pids" {
        let mut ps: Vec<Value> = v
            .get("processes")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|p| label(labels, Some(p))).collect())
            .unwrap_or_default();
        ps.sort_by_key(|p| p.to_string());
        m.insert("processes".into(), Value::Array(ps));
    }
    Value::Object(m)
}

/// The key fields of an event, normalised.
fn norm_event(topic: &str, f: &Value, labels: &BTreeMap<u64, String>) -> Value {
    let mut m = Map::new();
    m.insert("topic".into(), json!(topic));
    for k in ["exit-status", "exec-id", "checkpoint"] {
        if let Some(v) = f.get(k) {
            if !(v.is_null() || v == &json!("")) {
                m.insert(k.into(), v.clone());
            }
        }
    }
    if let Some(id) = f.get("id").and_then(Value::as_str) {
        // TaskExit's `id` is the exec id, or the container id for the init.
        let id = if id.is_empty() || id == MAIN {
            "init"
        } else {
            id
        };
        m.insert("id".into(), json!(id));
    }
    if f.get("pid").is_some() {
        m.insert("pid".into(), label(labels, f.get("pid")));
    }
    if topic == "/tasks/exit" || topic == "/tasks/delete" {
        m.insert("exited-at".into(), present(f.get("exited-at")));
    }
    if let Some(io) = f.get("io") {
        m.insert(
            "io".into(),
            json!({
                "stdin": set(io.get("stdin")),
                "stdout": set(io.get("stdout")),
                "stderr": set(io.get("stderr")),
                "terminal": io.get("terminal").cloned().unwrap_or(json!(false)),
            }),
        );
    }
    Value::Object(m)
}

fn show(o: &Outcome, step: &str, labels: &BTreeMap<u64, String>) -> Value {
    match o {
        Outcome::Ok(v) => json!({"ok": norm_response(step, v, labels)}),
        Outcome::Err(code, msg) => json!({"error": code, "message": msg}),
        Outcome::Check(ok, msg) => {
            if *ok {
                json!("held")
            } else {
                json!({"did-not-hold": msg})
            }
        }
        Outcome::Implicit(why) => json!(why),
    }
}

/// Whether two outcomes agree (messages are shown, never compared: they are the shim's or
/// containerd's wording).
fn same(
    d: &Outcome,
    m: &Outcome,
    step: &str,
    dl: &BTreeMap<u64, String>,
    ml: &BTreeMap<u64, String>,
) -> bool {
    match (d, m) {
        (Outcome::Implicit(_), _) | (_, Outcome::Implicit(_)) => true,
        (Outcome::Ok(a), Outcome::Ok(b)) => {
            norm_response(step, a, dl) == norm_response(step, b, ml)
        }
        (Outcome::Err(a, _), Outcome::Err(b, _)) => a == b,
        (Outcome::Check(a, _), Outcome::Check(b, _)) => a == b,
        _ => false,
    }
}

/// Compares the daemon's trace with the mock's.
pub fn compare(daemon: &Trace, mock: &Trace) -> Vec<Difference> {
    let dl = daemon.pid_labels();
    let ml = mock.pid_labels();
    let mut out = Vec::new();
    let n = daemon.steps.len().max(mock.steps.len());
    for i in 0..n {
        match (daemon.steps.get(i), mock.steps.get(i)) {
            (Some(d), Some(m)) => {
                if d.step != m.step {
                    out.push(Difference {
                        what: format!("step {} kind", i + 1),
                        containerd: json!(d.step),
                        mock: json!(m.step),
                    });
                    break;
                }
                if !same(&d.outcome, &m.outcome, &d.step, &dl, &ml) {
                    out.push(Difference {
                        what: format!("step {} ({})", i + 1, d.step),
                        containerd: show(&d.outcome, &d.step, &dl),
                        mock: show(&m.outcome, &m.step, &ml),
                    });
                }
            }
            (d, m) => {
                out.push(Difference {
                    what: format!("step {}: recorded on one side only", i + 1),
                    containerd: d.map(|o| json!(o.step)).unwrap_or(Value::Null),
                    mock: m.map(|o| json!(o.step)).unwrap_or(Value::Null),
                });
            }
        }
    }
    let de: Vec<Value> = daemon
        .events
        .iter()
        .map(|(t, f)| norm_event(t, f, &dl))
        .collect();
    let me: Vec<Value> = mock
        .events
        .iter()
        .map(|(t, f)| norm_event(t, f, &ml))
        .collect();
    if de != me && !only_shim_final_deletes_lost(&de, &me) {
        out.push(Difference {
            what: "events".into(),
            containerd: Value::Array(de),
            mock: Value::Array(me),
        });
    }
    if daemon.stdout != mock.stdout {
        out.push(Difference {
            what: "stdout".into(),
            containerd: json!(daemon.stdout),
            mock: json!(mock.stdout),
        });
    }
    if daemon.stderr != mock.stderr {
        out.push(Difference {
            what: "stderr".into(),
            containerd: json!(daemon.stderr),
            mock: json!(mock.stderr),
        });
    }
    out
}

/// Whether the two event lists differ only by `/tasks/delete`s of the init that one side lacks,
/// each the last event of its shim's life (the last event, or the one before the next task's
/// `/tasks/create`, which a new shim sends). A shim built on containerd 2.x's `pkg/shim` exits
/// once its shutdown callbacks ran (`run` waits for `sd.Done()`, pkg/shim/shim.go v2.1.9), while
/// its `forward` goroutine may still hold the `/tasks/delete` queued by the Delete just before
/// Shutdown; 1.6's shims waited for `publisher.Done()` (runtime/v2/shim/shim.go v1.6.20). That
/// loss happens under the daemon and under the mock alike, run to run, to any shim of a
/// scenario (`lifecycle/recreate-after-delete` has two): it is the shim's, not the mock's.
fn only_shim_final_deletes_lost(a: &[Value], b: &[Value]) -> bool {
    fn kept(list: &[Value]) -> Vec<&Value> {
        list.iter()
            .enumerate()
            .filter(|(i, e)| {
                let shim_final = e["topic"] == "/tasks/delete"
                    && e["pid"] == "init"
                    && list
                        .get(i + 1)
                        .is_none_or(|next| next["topic"] == "/tasks/create");
                !shim_final
            })
            .map(|(_, e)| e)
            .collect()
    }
    kept(a) == kept(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(step: &str, exec: &str, o: Outcome) -> Obs {
        Obs {
            step: step.into(),
            exec_id: exec.into(),
            outcome: o,
        }
    }

    fn trace(init: u64, exec: u64, exit: u64) -> Trace {
        Trace {
            steps: vec![
                obs("create", "", Outcome::Ok(json!({"pid": init}))),
                obs("start", "e1", Outcome::Ok(json!({"pid": exec}))),
                obs(
                    "wait",
                    "",
                    Outcome::Ok(json!({"exit-status": exit, "exited-at": "2026-01-01T00:00:00Z"})),
                ),
            ],
            events: vec![(
                "/tasks/exit".into(),
                json!({"container-id": MAIN, "id": "e1", "pid": exec, "exit-status": exit, "exited-at": "x"}),
            )],
            stdout: "hi\n".into(),
            stderr: String::new(),
        }
    }

    #[test]
    fn pids_compare_by_relation_not_value() {
        assert_eq!(compare(&trace(100, 101, 0), &trace(5000, 6000, 0)), vec![]);
    }

    #[test]
    fn exit_status_and_roles_differences_show_both_sides() {
        let d = compare(&trace(100, 101, 0), &trace(5000, 6000, 137));
        let whats: Vec<_> = d.iter().map(|x| x.what.as_str()).collect();
        assert_eq!(whats, ["step 3 (wait)", "events"]);
        assert_eq!(d[0].containerd["ok"]["exit-status"], json!(0));
        assert_eq!(d[0].mock["ok"]["exit-status"], json!(137));
        // An exec pid reported as the init's is a difference of relation.
        let mut t = trace(100, 101, 0);
        t.events[0].1["pid"] = json!(100);
        let d = compare(&t, &trace(100, 101, 0));
        assert_eq!(d[0].containerd[0]["pid"], json!("init"));
        assert_eq!(d[0].mock[0]["pid"], json!("exec:e1"));
    }

    #[test]
    fn only_a_lost_final_init_delete_is_tolerated() {
        let delete = |pid: u64| {
            (
                "/tasks/delete".to_string(),
                json!({"container-id": MAIN, "pid": pid, "exit-status": 0, "exited-at": "x"}),
            )
        };
        let mut with = trace(100, 101, 0);
        with.events.push(delete(100));
        let without = trace(5000, 6000, 0);
        assert_eq!(compare(&with, &without), vec![]);
        assert_eq!(compare(&without, &with), vec![]);
        // Not the last event, not the init's, or one more than that: a difference.
        let mut middle = trace(100, 101, 0);
        middle.events.insert(0, delete(100));
        let mut of_exec = trace(100, 101, 0);
        of_exec.events.push(delete(101));
        let mut two = trace(100, 101, 0);
        two.events.push(delete(100));
        two.events.push(delete(100));
        for t in [&middle, &of_exec, &two] {
            let d = compare(t, &without);
            assert_eq!(d.len(), 1, "{d:?}");
            assert_eq!(d[0].what, "events");
        }
    }

    #[test]
    fn error_codes_and_outputs_are_compared() {
        let mut a = trace(1, 2, 0);
        a.steps.push(obs(
            "delete",
            "",
            Outcome::Err("unknown".into(), "x".into()),
        ));
        let mut b = trace(1, 2, 0);
        b.steps.push(obs(
            "delete",
            "",
            Outcome::Err("not-found".into(), "y".into()),
        ));
        b.stdout = "other\n".into();
        let d = compare(&a, &b);
        let whats: Vec<_> = d.iter().map(|x| x.what.as_str()).collect();
        assert_eq!(whats, ["step 4 (delete)", "stdout"]);
    }

    #[test]
    fn a_lost_delete_at_the_end_of_any_shim_is_tolerated_and_nothing_else() {
        let ev = |t: &str| json!({"topic": t, "pid": "init"});
        let (create, start, exit, delete) = (
            ev("/tasks/create"),
            ev("/tasks/start"),
            ev("/tasks/exit"),
            ev("/tasks/delete"),
        );
        let life = [create.clone(), start.clone(), exit.clone(), delete.clone()];
        let twice: Vec<Value> = life.iter().chain(life.iter()).cloned().collect();
        // The first shim's delete lost (containerd 2.1.9's runc shim, run to run).
        let first_lost: Vec<Value> = [&life[..3], &life[..]].concat();
        assert!(only_shim_final_deletes_lost(&twice, &first_lost));
        // The last one lost, and one lost on each side.
        assert!(only_shim_final_deletes_lost(&twice, &twice[..7]));
        let last_lost = &twice[..7];
        assert!(only_shim_final_deletes_lost(&first_lost, last_lost));
        // Anything else is a difference: a lost exit, a delete that is not a shim's last event,
        // an extra event.
        let no_exit: Vec<Value> = vec![create.clone(), start.clone(), delete.clone()];
        assert!(!only_shim_final_deletes_lost(&life, &no_exit));
        let early = vec![create.clone(), delete.clone(), start.clone(), exit.clone()];
        assert!(!only_shim_final_deletes_lost(&early, &life[..3]));
        let mut extra = twice.clone();
        extra.push(ev("/tasks/oom"));
        assert!(!only_shim_final_deletes_lost(&twice, &extra));
    }
}
