//! Fuzzes the mock's events endpoint: an arbitrary protobuf `Envelope` through containerd's
//! validation and the event log (`EventLog::accept_envelope`), and `decode_any` on an `Any` of
//! every known event type with an arbitrary payload.
#![no_main]

use containerd_shim_protos::shim::event::Envelope;
use harness::events::{decode_any, validate_envelope, EventLog, EventSource};
use libfuzzer_sys::fuzz_target;
use protobuf::well_known_types::any::Any;
use protobuf::Message;

const TYPES: &[&str] = &[
    "containerd.events.TaskCreate",
    "containerd.events.TaskStart",
    "containerd.events.TaskExit",
    "containerd.events.TaskDelete",
    "containerd.events.TaskExecAdded",
    "containerd.events.TaskExecStarted",
    "containerd.events.TaskPaused",
    "containerd.events.TaskResumed",
    "containerd.events.TaskOOM",
    "containerd.events.TaskCheckpointed",
];

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::parse_from_bytes(data) {
        let valid = validate_envelope(&env).is_ok();
        let log = EventLog::new();
        assert_eq!(log.accept_envelope(&env, EventSource::Shim).is_ok(), valid);
        assert_eq!(log.snapshot().len() + log.rejected().len(), 1);
    }
    if let Some((&sel, rest)) = data.split_first() {
        let any = Any {
            type_url: format!("types.containerd.io/{}", TYPES[sel as usize % TYPES.len()]),
            value: rest.to_vec(),
            ..Default::default()
        };
        let (_ev, fields) = decode_any(&any);
        assert!(fields.is_object());
    }
});
