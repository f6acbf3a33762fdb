//! Conversions between the wire messages and the engine's JSON view (kebab-case protobuf field
//! names, RFC 3339 times, lowercase status names) and from scenario processes to OCI processes.

use containerd_shim_protos::api::{
    ConnectResponse, CreateTaskResponse, DeleteResponse, PidsResponse, StartResponse,
    StateResponse, StatsResponse, WaitResponse,
};
use protobuf::well_known_types::timestamp::Timestamp;
use serde_json::{json, Map, Value};

/// A timestamp as RFC 3339 text; `null` when absent, the zero time, or before the epoch.
pub fn ts(t: Option<&Timestamp>) -> Value {
    match t {
        Some(t) if t.seconds > 0 || (t.seconds == 0 && t.nanos > 0) => {
            let st = std::time::UNIX_EPOCH
                + std::time::Duration::new(t.seconds as u64, t.nanos.max(0) as u32);
            Value::String(humantime::format_rfc3339_nanos(st).to_string())
        }
        _ => Value::Null,
    }
}

/// The JSON view of a StartSandbox answer (`created-at` already as [`ts`] gives it); the mock
/// and the differential's daemon side build their Sandbox answers through these views.
pub fn start_sandbox_view(pid: u32, created_at: Value) -> Value {
    json!({"pid": pid, "created-at": created_at})
}

/// The JSON view of a SandboxStatus answer.
pub fn sandbox_status_view(
    sandbox_id: String,
    pid: u32,
    state: String,
    created_at: Value,
    exited_at: Value,
) -> Value {
    json!({
        "sandbox-id": sandbox_id,
        "pid": pid,
        "state": state,
        "created-at": created_at,
        "exited-at": exited_at,
    })
}

/// The JSON view of a WaitSandbox answer.
pub fn wait_sandbox_view(exit_status: u32, exited_at: Value) -> Value {
    json!({"exit-status": exit_status, "exited-at": exited_at})
}

/// The JSON view of a SandboxMetrics answer: the metric's id and its data's type URL.
pub fn sandbox_metrics_view(id: String, data_type_url: String) -> Value {
    json!({"id": id, "data": data_type_url})
}

/// Replaces pre-epoch `{seconds, nanos}` objects (Go's zero time) by `null`, recursively.
pub fn normalize_times(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let zero_time = o.len() == 2
                && o.get("seconds")
                    .and_then(Value::as_i64)
                    .is_some_and(|s| s <= 0)
                && o.contains_key("nanos");
            if zero_time {
                *v = Value::Null;
            } else {
                o.values_mut().for_each(normalize_times);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize_times),
        _ => {}
    }
}

/// The name of a task status number (containerd's `task.Status`, the shim API's and the daemon's
/// alike).
pub fn status_name(s: i32) -> &'static str {
    match s {
        1 => "created",
        2 => "running",
        3 => "stopped",
        4 => "paused",
        5 => "pausing",
        _ => "unknown",
    }
}

/// Create's response.
pub fn create(r: &CreateTaskResponse) -> Value {
    json!({"pid": r.pid})
}

/// Start's response.
pub fn start(r: &StartResponse) -> Value {
    json!({"pid": r.pid})
}

/// A process's state as either side reports it (the shim's State, the daemon's Get, which has no
/// bundle or exec id).
pub struct ProcessState<'a> {
    /// The container id (or the exec id, from the daemon).
    pub id: &'a str,
    /// The bundle path (empty from the daemon).
    pub bundle: &'a str,
    /// The exec id (empty for the init, and from the daemon).
    pub exec_id: &'a str,
    /// The process's pid.
    pub pid: u32,
    /// The status number.
    pub status: i32,
    /// The stdio paths.
    pub stdio: [&'a str; 3],
    /// Whether it has a terminal.
    pub terminal: bool,
    /// Its exit status.
    pub exit_status: u32,
    /// When it exited, in the view (null when not).
    pub exited_at: Value,
}

/// A process's state.
pub fn state_view(p: ProcessState<'_>) -> Value {
    json!({
        "id": p.id,
        "bundle": p.bundle,
        "pid": p.pid,
        "status": status_name(p.status),
        "stdin": p.stdio[0],
        "stdout": p.stdio[1],
        "stderr": p.stdio[2],
        "terminal": p.terminal,
        "exit-status": p.exit_status,
        "exited-at": p.exited_at,
        "exec-id": p.exec_id,
    })
}

/// State's response.
pub fn state(r: &StateResponse) -> Value {
    state_view(ProcessState {
        id: &r.id,
        bundle: &r.bundle,
        exec_id: &r.exec_id,
        pid: r.pid,
        status: r.status.value(),
        stdio: [&r.stdin, &r.stdout, &r.stderr],
        terminal: r.terminal,
        exit_status: r.exit_status,
        exited_at: ts(r.exited_at.as_ref()),
    })
}

/// A Delete's answer: the process's pid, exit status and time.
pub fn delete_view(pid: u32, exit_status: u32, exited_at: Value) -> Value {
    json!({"pid": pid, "exit-status": exit_status, "exited-at": exited_at})
}

/// Delete's response.
pub fn delete(r: &DeleteResponse) -> Value {
    delete_view(r.pid, r.exit_status, ts(r.exited_at.as_ref()))
}

/// A Wait's answer: the exit status and time.
pub fn wait_view(exit_status: u32, exited_at: Value) -> Value {
    json!({"exit-status": exit_status, "exited-at": exited_at})
}

/// Wait's response.
pub fn wait(r: &WaitResponse) -> Value {
    wait_view(r.exit_status, ts(r.exited_at.as_ref()))
}

/// A Pids answer from `(pid, type URL of its info)` pairs: `processes` is the list of pids,
/// `count` its length, `details` each pid with its info's type.
pub fn pids_view(processes: impl Iterator<Item = (u32, Option<String>)>) -> Value {
    let (pids, infos): (Vec<u32>, Vec<Value>) = processes
        .map(|(pid, info)| match info {
            Some(t) => (pid, json!({"pid": pid, "info": t})),
            None => (pid, json!({"pid": pid})),
        })
        .unzip();
    json!({"processes": pids, "count": pids.len(), "details": infos})
}

/// Pids' response.
pub fn pids(r: &PidsResponse) -> Value {
    pids_view(
        r.processes
            .iter()
            .map(|p| (p.pid, p.info.as_ref().map(|a| a.type_url.clone()))),
    )
}

/// Stats' response: the metrics' type URL and size.
pub fn stats(r: &StatsResponse) -> Value {
    match r.stats.as_ref() {
        Some(a) => json!({"stats": a.type_url, "stats-size": a.value.len()}),
        None => json!({"stats": Value::Null, "stats-size": 0}),
    }
}

/// Connect's response.
pub fn connect(r: &ConnectResponse) -> Value {
    json!({"shim-pid": r.shim_pid, "task-pid": r.task_pid, "version": r.version})
}

/// An empty response.
pub fn empty() -> Value {
    Value::Object(Map::new())
}

/// The `Any` carrying an exec's process spec (JSON, as containerd sends it).
pub fn process_any(p: &oci_spec::runtime::Process) -> protobuf::well_known_types::any::Any {
    let mut a = protobuf::well_known_types::any::Any::new();
    a.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
    a.value = serde_json::to_vec(p).unwrap_or_default();
    a
}

/// The `Any` carrying LinuxResources JSON for Update.
pub fn resources_any(v: &Value) -> protobuf::well_known_types::any::Any {
    let mut a = protobuf::well_known_types::any::Any::new();
    a.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    a.value = serde_json::to_vec(v).unwrap_or_default();
    a
}

/// Sorts the string lists of a spec (oci-spec keeps capabilities in hash sets) for stable output.
pub fn sorted_sets(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Array(a) if a.iter().all(Value::is_string) => {
                a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            Value::Object(o) => o.values_mut().for_each(walk),
            _ => {}
        }
    }
    if let Some(c) = v.get_mut("capabilities") {
        walk(c);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_times_are_null() {
        let mut t = Timestamp::new();
        t.seconds = -62135596800;
        assert_eq!(ts(Some(&t)), Value::Null);
        assert_eq!(ts(None), Value::Null);
        t.seconds = 1_700_000_000;
        assert_eq!(ts(Some(&t)), json!("2023-11-14T22:13:20.000000000Z"));
        let mut v = json!({"a": {"seconds": -62135596800i64, "nanos": 0}, "b": 1});
        normalize_times(&mut v);
        assert_eq!(v, json!({"a": null, "b": 1}));
    }
}
