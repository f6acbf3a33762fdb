//! Decoding of event payloads (`Any` by type URL, as containerd's typeurl) into [`TaskEvent`]s
//! and their kebab-case field maps; protobuf timestamp conversions.

use std::time::{Duration, SystemTime};

use containerd_shim_protos::events::task::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM,
    TaskPaused, TaskResumed, TaskStart,
};
use protobuf::well_known_types::any::Any;
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::Message;
use serde_json::{json, Value};

use super::TaskEvent;

/// Converts a protobuf timestamp (possibly before the epoch, e.g. Go's zero time).
pub fn timestamp_to_system(t: &Timestamp) -> SystemTime {
    let nanos = Duration::new(0, t.nanos.clamp(0, 999_999_999) as u32);
    if t.seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.seconds as u64) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(t.seconds.unsigned_abs()) + nanos
    }
}

/// Converts a system time into a protobuf timestamp.
pub fn system_to_timestamp(t: SystemTime) -> Timestamp {
    let mut ts = Timestamp::new();
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => {
            ts.seconds = d.as_secs() as i64;
            ts.nanos = d.subsec_nanos() as i32;
        }
        Err(e) => {
            let d = e.duration();
            ts.seconds = -(d.as_secs() as i64);
            ts.nanos = 0;
        }
    }
    ts
}

/// A timestamp as RFC 3339 text (`null` when absent); pre-epoch values as seconds.
pub fn timestamp_json(t: Option<&Timestamp>) -> Value {
    match t {
        None => Value::Null,
        Some(t) if t.seconds >= 0 => {
            Value::String(humantime::format_rfc3339_nanos(timestamp_to_system(t)).to_string())
        }
        Some(t) => json!({"seconds": t.seconds, "nanos": t.nanos}),
    }
}

fn decode<M: Message>(any: &Any) -> Option<M> {
    M::parse_from_bytes(&any.value).ok()
}

/// Decodes an event `Any` by the last segment of its type URL (as containerd's typeurl does).
pub fn decode_any(any: &Any) -> (TaskEvent, Value) {
    let name = any.type_url.rsplit('/').next().unwrap_or("");
    let other = || {
        (
            TaskEvent::Other {
                type_url: any.type_url.clone(),
            },
            Value::Object(Default::default()),
        )
    };
    macro_rules! dec {
        ($t:ty, $var:ident) => {
            match decode::<$t>(any) {
                Some(m) => {
                    let ev = TaskEvent::$var(m);
                    let f = event_fields(&ev);
                    (ev, f)
                }
                None => other(),
            }
        };
    }
    match name {
        "containerd.events.TaskCreate" => dec!(TaskCreate, Create),
        "containerd.events.TaskStart" => dec!(TaskStart, Start),
        "containerd.events.TaskExit" => dec!(TaskExit, Exit),
        "containerd.events.TaskDelete" => dec!(TaskDelete, Delete),
        "containerd.events.TaskExecAdded" => dec!(TaskExecAdded, ExecAdded),
        "containerd.events.TaskExecStarted" => dec!(TaskExecStarted, ExecStarted),
        "containerd.events.TaskPaused" => dec!(TaskPaused, Paused),
        "containerd.events.TaskResumed" => dec!(TaskResumed, Resumed),
        "containerd.events.TaskOOM" => dec!(TaskOOM, Oom),
        "containerd.events.TaskCheckpointed" => dec!(TaskCheckpointed, Checkpointed),
        _ => other(),
    }
}

/// The kebab-case field map of a decoded event (all fields, zero values included).
pub fn event_fields(ev: &TaskEvent) -> Value {
    match ev {
        TaskEvent::Create(e) => {
            let io = e.io.as_ref();
            json!({
                "container-id": e.container_id,
                "bundle": e.bundle,
                "rootfs": e.rootfs.iter().map(|m| json!({
                    "type": m.type_, "source": m.source, "target": m.target, "options": m.options,
                })).collect::<Vec<_>>(),
                "io": {
                    "stdin": io.map(|i| i.stdin.clone()).unwrap_or_default(),
                    "stdout": io.map(|i| i.stdout.clone()).unwrap_or_default(),
                    "stderr": io.map(|i| i.stderr.clone()).unwrap_or_default(),
                    "terminal": io.map(|i| i.terminal).unwrap_or_default(),
                },
                "checkpoint": e.checkpoint,
                "pid": e.pid,
            })
        }
        TaskEvent::Start(e) => json!({"container-id": e.container_id, "pid": e.pid}),
        TaskEvent::Exit(e) => json!({
            "container-id": e.container_id, "id": e.id, "pid": e.pid,
            "exit-status": e.exit_status, "exited-at": timestamp_json(e.exited_at.as_ref()),
        }),
        TaskEvent::Delete(e) => json!({
            "container-id": e.container_id, "pid": e.pid, "exit-status": e.exit_status,
            "exited-at": timestamp_json(e.exited_at.as_ref()), "id": e.id,
        }),
        TaskEvent::ExecAdded(e) => json!({"container-id": e.container_id, "exec-id": e.exec_id}),
        TaskEvent::ExecStarted(e) => {
            json!({"container-id": e.container_id, "exec-id": e.exec_id, "pid": e.pid})
        }
        TaskEvent::Paused(e) => json!({"container-id": e.container_id}),
        TaskEvent::Resumed(e) => json!({"container-id": e.container_id}),
        TaskEvent::Oom(e) => json!({"container-id": e.container_id}),
        TaskEvent::Checkpointed(e) => {
            json!({"container-id": e.container_id, "checkpoint": e.checkpoint})
        }
        TaskEvent::Other { .. } => Value::Object(Default::default()),
    }
}
