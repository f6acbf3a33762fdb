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

/// The first second protobuf's `Timestamp` can hold: 0001-01-01T00:00:00Z (Go's zero time).
pub const TIMESTAMP_MIN_SECONDS: i64 = -62_135_596_800;
/// The last second protobuf's `Timestamp` can hold: 9999-12-31T23:59:59Z.
pub const TIMESTAMP_MAX_SECONDS: i64 = 253_402_300_799;

/// Converts a protobuf timestamp (possibly before the epoch, e.g. Go's zero time). Seconds
/// outside protobuf's valid range (years 1 to 9999) are clamped to it, never overflowing.
pub fn timestamp_to_system(t: &Timestamp) -> SystemTime {
    let nanos = Duration::new(0, t.nanos.clamp(0, 999_999_999) as u32);
    let seconds = t
        .seconds
        .clamp(TIMESTAMP_MIN_SECONDS, TIMESTAMP_MAX_SECONDS);
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds as u64) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs()) + nanos
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

/// A timestamp as RFC 3339 text (`null` when absent); pre-epoch values, and those past year
/// 9999 that RFC 3339 cannot write, as seconds and nanos.
pub fn timestamp_json(t: Option<&Timestamp>) -> Value {
    match t {
        None => Value::Null,
        Some(t) if (0..=TIMESTAMP_MAX_SECONDS).contains(&t.seconds) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp {
            seconds,
            nanos,
            ..Default::default()
        }
    }

    /// Seen while writing the `event_envelope` fuzz target: out-of-range seconds used to
    /// overflow `SystemTime` and RFC 3339 formatting panicked past year 9999.
    #[test]
    fn extreme_timestamps_neither_panic_nor_wrap() {
        let max = timestamp_to_system(&ts(i64::MAX, i32::MAX));
        assert_eq!(
            max,
            timestamp_to_system(&ts(TIMESTAMP_MAX_SECONDS, 999_999_999))
        );
        let min = timestamp_to_system(&ts(i64::MIN, i32::MIN));
        assert_eq!(min, timestamp_to_system(&ts(TIMESTAMP_MIN_SECONDS, 0)));
        assert!(min < SystemTime::UNIX_EPOCH && SystemTime::UNIX_EPOCH < max);
        assert_eq!(
            timestamp_json(Some(&ts(i64::MAX, 1))),
            json!({"seconds": i64::MAX, "nanos": 1})
        );
        assert_eq!(
            timestamp_json(Some(&ts(TIMESTAMP_MAX_SECONDS + 1, 0))),
            json!({"seconds": TIMESTAMP_MAX_SECONDS + 1, "nanos": 0})
        );
        assert_eq!(
            timestamp_json(Some(&ts(TIMESTAMP_MAX_SECONDS, 0))),
            json!("9999-12-31T23:59:59.000000000Z")
        );
    }

    #[test]
    fn an_exit_event_stamped_past_year_9999_decodes() {
        let exit = TaskExit {
            container_id: "c1".into(),
            exited_at: protobuf::MessageField::some(ts(i64::MAX, 0)),
            ..Default::default()
        };
        let any = Any {
            type_url: "containerd.events.TaskExit".into(),
            value: exit.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let (ev, fields) = decode_any(&any);
        assert_eq!(ev, TaskEvent::Exit(exit));
        assert_eq!(fields["exited-at"]["seconds"], i64::MAX);
    }
}
