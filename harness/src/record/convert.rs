//! A recording as a scenario in the public format: the main container's init process from its
//! bundle, one step per Task request in the order the answers came (a Wait containerd sent
//! before Start lands where its answer did), expectations from what the real shim answered
//! (the same rules as `harness shell`'s `save`), and the events the shim sent, in order. The
//! text is checked with the strict loader before it is written.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use containerd_shim_protos::api;
use protobuf::Message;
use serde_json::{json, Map, Value};

use super::{read_session, Entry};
use crate::engine::convert;
use crate::shell::save::{observed, Recorder};

/// One Task request with its answer (`None`: none came before the recording ended).
struct Call {
    method: String,
    request: Vec<u8>,
    answer: Option<(f64, i32, String, Vec<u8>)>,
    sent: f64,
}

/// What a recording holds, sorted out.
struct Session {
    calls: Vec<Call>,
    events: Vec<(String, Value)>,
    specs: HashMap<String, Value>,
    real: String,
    /// Which containerd started the shim, as far as its `start` tells.
    containerd: String,
}

/// Which containerd ran a `start`, from what it gave the shim: 2.3 sends `BootstrapParams`
/// with its version (pkg/shim/util.go `Command` at v2.3.4); 1.7 and later set `NAMESPACE` in
/// the environment, 1.6 does not (runtime/v2/shim/util.go `Command` at v1.6.20, v1.7.24).
fn containerd_of(stdin: &str, env: &[String]) -> String {
    let params = bootstrap::BootstrapParams::parse_from_bytes(&unhex(stdin))
        .ok()
        .filter(|p| !p.containerd_version.is_empty());
    match params {
        Some(p) => format!(
            "containerd {} (replay with --containerd-version 2.3)",
            p.containerd_version
        ),
        None if env.iter().any(|e| e.starts_with("NAMESPACE=")) => {
            "containerd 1.7 or 2.x before 2.3 (replay with --containerd-version 1.7 or 2.0)".into()
        }
        None => "containerd 1.6 (replay with --containerd-version 1.6)".into(),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_default()
}

fn sort_out(entries: Vec<Entry>) -> Session {
    let mut calls: Vec<Call> = Vec::new();
    let mut open: HashMap<(u32, u32), usize> = HashMap::new();
    let mut events = Vec::new();
    let mut specs = HashMap::new();
    let mut real = String::new();
    let mut containerd = String::new();
    for e in entries {
        match e {
            Entry::Action {
                real: r,
                argv,
                stdin,
                env,
                ..
            } => {
                if containerd.is_empty() && argv.last().map(String::as_str) == Some("start") {
                    containerd = containerd_of(&stdin, &env);
                }
                real = r;
            }
            Entry::Bundle { id, spec, .. } => {
                specs.entry(id).or_insert(spec);
            }
            Entry::Request {
                events: true,
                method,
                payload,
                ..
            } => {
                if method == "Forward" {
                    if let Ok(f) =
                        containerd_shim_protos::shim::events::ForwardRequest::parse_from_bytes(
                            &unhex(&payload),
                        )
                    {
                        let env = f.envelope.unwrap_or_default();
                        let (_, fields) = crate::events::decode_any(&env.event.unwrap_or_default());
                        events.push((env.topic, fields));
                    }
                }
            }
            Entry::Request {
                t,
                conn,
                stream,
                service,
                method,
                payload,
                ..
            } => {
                if service.contains(".task.") {
                    open.insert((conn, stream), calls.len());
                    calls.push(Call {
                        method,
                        request: unhex(&payload),
                        answer: None,
                        sent: t,
                    });
                }
            }
            Entry::Response {
                t,
                conn,
                stream,
                events: false,
                code,
                message,
                payload,
            } => {
                if let Some(i) = open.remove(&(conn, stream)) {
                    calls[i].answer = Some((t, code, message, unhex(&payload)));
                }
            }
            Entry::Response { .. } => {}
        }
    }
    // In the order the answers came; unanswered calls where they were sent.
    calls.sort_by(|a, b| {
        let ka = a.answer.as_ref().map_or(a.sent, |x| x.0);
        let kb = b.answer.as_ref().map_or(b.sent, |x| x.0);
        ka.total_cmp(&kb)
    });
    Session {
        calls,
        events,
        specs,
        real,
        containerd,
    }
}

/// The scenario's `process` from an OCI spec's `process`.
fn init_process(spec: &Value) -> Value {
    let p = &spec["process"];
    let mut out = Map::new();
    for key in ["args", "env", "cwd", "terminal"] {
        if let Some(v) = p.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(u) = p.get("user") {
        out.insert("user".into(), json!({"uid": u["uid"], "gid": u["gid"]}));
    }
    Value::Object(out)
}

/// `exec-id` when set.
fn with_exec(mut m: Map<String, Value>, exec_id: &str) -> Map<String, Value> {
    if !exec_id.is_empty() {
        m.insert("exec-id".into(), json!(exec_id));
    }
    m
}

/// A stdio path as the `create` step's kind: `null` when containerd gave none.
fn stdio_kind(m: &mut Map<String, Value>, key: &str, path: &str) {
    if path.is_empty() {
        m.insert(key.into(), json!("null"));
    }
}

/// The `create` step's arguments: the terminal, and which stdio containerd gave none of.
fn create_args(r: &api::CreateTaskRequest, requires: &mut Vec<&'static str>) -> Map<String, Value> {
    let mut m = Map::new();
    if r.terminal {
        m.insert("terminal".into(), json!(true));
        requires.push("terminal");
    }
    stdio_kind(&mut m, "stdin", &r.stdin);
    stdio_kind(&mut m, "stdout", &r.stdout);
    if !r.terminal {
        stdio_kind(&mut m, "stderr", &r.stderr);
    }
    m
}

/// The step for one request of the main container: its name, arguments, the response as the
/// engine's JSON view; `Err(why)` when it is not replayed.
fn step_of(
    c: &Call,
    main: &str,
    requires: &mut Vec<&'static str>,
) -> Result<(String, Map<String, Value>), String> {
    fn parse<M: Message>(b: &[u8]) -> Result<M, String> {
        M::parse_from_bytes(b).map_err(|e| format!("undecodable request: {e}"))
    }
    let not_main =
        |id: &str| (id != main).then(|| format!("container {id:?} (a scenario replays one)"));
    let (name, args) = match c.method.as_str() {
        "Create" => {
            let r: api::CreateTaskRequest = parse(&c.request)?;
            if let Some(why) = not_main(&r.id) {
                return Err(why);
            }
            ("create", create_args(&r, requires))
        }
        "Start" | "State" | "Wait" | "Delete" => {
            let (id, exec) = match c.method.as_str() {
                "Start" => {
                    let r: api::StartRequest = parse(&c.request)?;
                    (r.id, r.exec_id)
                }
                "State" => {
                    let r: api::StateRequest = parse(&c.request)?;
                    (r.id, r.exec_id)
                }
                "Wait" => {
                    let r: api::WaitRequest = parse(&c.request)?;
                    (r.id, r.exec_id)
                }
                _ => {
                    let r: api::DeleteRequest = parse(&c.request)?;
                    (r.id, r.exec_id)
                }
            };
            if let Some(why) = not_main(&id) {
                return Err(why);
            }
            let name = match c.method.as_str() {
                "Start" => "start",
                "State" => "state",
                "Wait" => "wait",
                _ => "delete",
            };
            (name, with_exec(Map::new(), &exec))
        }
        "Kill" => {
            let r: api::KillRequest = parse(&c.request)?;
            if let Some(why) = not_main(&r.id) {
                return Err(why);
            }
            let mut m = with_exec(Map::new(), &r.exec_id);
            m.insert("signal".into(), json!(r.signal));
            if r.all {
                m.insert("all".into(), json!(true));
            }
            ("kill", m)
        }
        "Exec" => {
            let r: api::ExecProcessRequest = parse(&c.request)?;
            if let Some(why) = not_main(&r.id) {
                return Err(why);
            }
            requires.push("exec");
            let spec: Value = serde_json::from_slice(&r.spec.value)
                .map_err(|e| format!("the exec's process spec: {e}"))?;
            let mut m = with_exec(Map::new(), &r.exec_id);
            m.insert("process".into(), init_process(&json!({"process": spec})));
            if r.terminal {
                m.insert("terminal".into(), json!(true));
            }
            ("exec", m)
        }
        "Pids" => {
            requires.push("pids");
            ("pids", Map::new())
        }
        "Pause" => {
            requires.push("pause");
            ("pause", Map::new())
        }
        "Resume" => {
            requires.push("pause");
            ("resume", Map::new())
        }
        "Stats" => {
            requires.push("stats");
            ("stats", Map::new())
        }
        "Connect" => ("connect", Map::new()),
        "CloseIO" => {
            let r: api::CloseIORequest = parse(&c.request)?;
            let mut m = with_exec(Map::new(), &r.exec_id);
            m.insert("stdin".into(), json!(r.stdin));
            ("close-io", m)
        }
        "ResizePty" => {
            let r: api::ResizePtyRequest = parse(&c.request)?;
            let mut m = with_exec(Map::new(), &r.exec_id);
            m.insert("width".into(), json!(r.width));
            m.insert("height".into(), json!(r.height));
            ("resize-pty", m)
        }
        "Shutdown" => ("shutdown", Map::new()),
        other => return Err(format!("{other} is not a scenario step")),
    };
    Ok((name.to_string(), args))
}

/// The engine's view of an answer, for the expectation rules.
fn response_view(method: &str, b: &[u8]) -> Value {
    fn p<M: Message + Default>(b: &[u8]) -> M {
        M::parse_from_bytes(b).unwrap_or_default()
    }
    match method {
        "Create" => convert::create(&p(b)),
        "Start" => convert::start(&p(b)),
        "State" => convert::state(&p(b)),
        "Wait" => convert::wait(&p(b)),
        "Delete" => convert::delete(&p(b)),
        _ => convert::empty(),
    }
}

/// Converts the recording at `dir` into scenario text; the number of steps.
pub fn to_scenario(dir: &Path) -> Result<(String, usize)> {
    let s = sort_out(read_session(dir)?);
    let Some(first) = s.calls.iter().find(|c| c.method == "Create") else {
        bail!(
            "{}: no Create in the recording: nothing to replay",
            dir.display()
        );
    };
    let main = api::CreateTaskRequest::parse_from_bytes(&first.request)
        .context("the first Create")?
        .id;
    let Some(spec) = s.specs.get(&main) else {
        bail!("{}: the bundle of {main:?} was not recorded", dir.display());
    };
    let mut rec = Recorder::default();
    let mut requires = Vec::new();
    let mut waited: Vec<String> = Vec::new();
    let mut events_at = None;
    for (i, c) in s.calls.iter().enumerate() {
        let line = format!("{} (recorded)", c.method);
        let (name, mut args) = match step_of(c, &main, &mut requires) {
            Ok(x) => x,
            Err(why) => {
                rec.push_comment(&line, &why);
                continue;
            }
        };
        // A shim may exit on Shutdown before its answer is out: containerd takes that as done.
        let closed = (0.0, 0, String::new(), Vec::new());
        let answer = match (&c.answer, name.as_str()) {
            (Some(a), _) => a,
            (None, "shutdown") => &closed,
            (None, _) => {
                rec.push_comment(&line, "no answer before the recording ended");
                continue;
            }
        };
        let (_, code, message, payload) = answer;
        let exec = args
            .get("exec-id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if *code != 0 {
            args.insert(
                "expect-error".into(),
                json!(crate::wire::Code::from_i32(*code).as_str()),
            );
            rec.push_step(&format!("{line}: {message}"), json!({ name.clone(): args }));
            continue;
        }
        let view = response_view(&c.method, payload);
        if name == "state" && view["status"] == "stopped" && !waited.contains(&exec) {
            // The real shim had reaped it by then; a replay waits for that first.
            rec.push_step(
                "Wait (before a State that saw it stopped)",
                json!({"wait": with_exec(Map::new(), &exec)}),
            );
            waited.push(exec.clone());
        }
        if name == "wait" {
            waited.push(exec.clone());
        }
        if name == "shutdown" && events_at.is_none() {
            events_at = Some(());
            push_events(&mut rec, &s.events, &main);
        }
        let live = name == "state" && view["status"] != "stopped";
        if live && !killed_later(&s.calls[i + 1..], &exec) {
            // It ended on its own later: whether it was still running at a State is timing.
            let line = format!(
                "{line}: {} when recorded, not judged (it ends on its own)",
                view["status"]
            );
            rec.push_step(&line, json!({ name: args }));
            continue;
        }
        if let Some(e) = observed(&name, &args, &view) {
            args.insert("expect".into(), e);
        }
        rec.push_step(&line, json!({ name: args }));
    }
    if events_at.is_none() {
        push_events(&mut rec, &s.events, &main);
    }
    requires.sort();
    requires.dedup();
    let steps = rec.steps();
    rec.set_scenario(
        init_process(spec),
        format!("Recorded through containerd-shim-record-v2 in front of {}: container {main}, {steps} step(s)", s.real),
        requires.into_iter().map(String::from).collect(),
    );
    let header = [
        format!("harness record --to-scenario {}", dir.display()),
        format!("recorded under {}", s.containerd),
    ];
    let text = rec.render(&header).map_err(anyhow::Error::msg)?;
    crate::scenario::load_str(Path::new("recorded.yaml"), &text).map_err(|e| {
        anyhow::anyhow!(
            "the scenario made from {} does not load (a harness bug): {e}",
            dir.display()
        )
    })?;
    Ok((text, steps))
}

/// Whether one of `later` calls kills process `exec` (`""`: the init).
fn killed_later(later: &[Call], exec: &str) -> bool {
    later.iter().any(|c| {
        c.method == "Kill"
            && api::KillRequest::parse_from_bytes(&c.request).is_ok_and(|k| k.exec_id == exec)
    })
}

/// The main container's events the shim sent, in order, as an `events` check.
fn push_events(rec: &mut Recorder, events: &[(String, Value)], main: &str) {
    let topics: Vec<Value> = events
        .iter()
        .filter(|(_, f)| f.get("container-id").and_then(Value::as_str) == Some(main))
        .map(|(t, _)| json!(t))
        .collect();
    if topics.is_empty() {
        rec.push_comment(
            "events (recorded)",
            "the shim sent no event for the container",
        );
    } else {
        rec.push_step(
            "events the shim sent (recorded)",
            json!({"events": {"expect": topics}}),
        );
    }
}
