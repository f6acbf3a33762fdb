//! The mock's events endpoint and log: `containerd.services.events.ttrpc.v1.Events/Forward`
//! served at `TTRPC_ADDRESS`, envelopes validated as containerd's exchange does (doc 5.1),
//! recorded with their arrival time and decoded into typed task events (doc 5.2).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use containerd_shim_protos::events::task::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM,
    TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::shim::event::Envelope;
use protobuf::well_known_types::any::Any;
use serde_json::Value;

/// Who delivered an event to the mock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventSource {
    /// The shim, through ttrpc `Forward` at `TTRPC_ADDRESS`.
    Shim,
    /// The legacy `-publish-binary` route (`harness publish`).
    PublishBinary,
    /// The mock itself (synthetic events after a dead shim, as containerd publishes them).
    Mock,
}

/// A decoded task event (package `containerd.events`).
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    /// `/tasks/create`.
    Create(TaskCreate),
    /// `/tasks/start`.
    Start(TaskStart),
    /// `/tasks/exit`.
    Exit(TaskExit),
    /// `/tasks/delete`.
    Delete(TaskDelete),
    /// `/tasks/exec-added`.
    ExecAdded(TaskExecAdded),
    /// `/tasks/exec-started`.
    ExecStarted(TaskExecStarted),
    /// `/tasks/paused`.
    Paused(TaskPaused),
    /// `/tasks/resumed`.
    Resumed(TaskResumed),
    /// `/tasks/oom`.
    Oom(TaskOOM),
    /// `/tasks/checkpointed`.
    Checkpointed(TaskCheckpointed),
    /// Any other payload type (or one that failed to decode), kept by its type URL.
    Other {
        /// The `Any.type_url` as sent.
        type_url: String,
    },
}

impl TaskEvent {
    /// The container id the event is about (empty for `Other`).
    pub fn container_id(&self) -> &str {
        match self {
            TaskEvent::Create(e) => &e.container_id,
            TaskEvent::Start(e) => &e.container_id,
            TaskEvent::Exit(e) => &e.container_id,
            TaskEvent::Delete(e) => &e.container_id,
            TaskEvent::ExecAdded(e) => &e.container_id,
            TaskEvent::ExecStarted(e) => &e.container_id,
            TaskEvent::Paused(e) => &e.container_id,
            TaskEvent::Resumed(e) => &e.container_id,
            TaskEvent::Oom(e) => &e.container_id,
            TaskEvent::Checkpointed(e) => &e.container_id,
            TaskEvent::Other { .. } => "",
        }
    }

    /// The payload as an `Any` with containerd's bare type URL (`containerd.events.TaskExit`).
    pub fn to_any(&self) -> Option<Any> {
        fn pack<M: protobuf::MessageFull>(m: &M) -> Option<Any> {
            Some(Any {
                type_url: M::descriptor().full_name().to_string(),
                value: m.write_to_bytes().ok()?,
                ..Default::default()
            })
        }
        match self {
            TaskEvent::Create(e) => pack(e),
            TaskEvent::Start(e) => pack(e),
            TaskEvent::Exit(e) => pack(e),
            TaskEvent::Delete(e) => pack(e),
            TaskEvent::ExecAdded(e) => pack(e),
            TaskEvent::ExecStarted(e) => pack(e),
            TaskEvent::Paused(e) => pack(e),
            TaskEvent::Resumed(e) => pack(e),
            TaskEvent::Oom(e) => pack(e),
            TaskEvent::Checkpointed(e) => pack(e),
            TaskEvent::Other { .. } => None,
        }
    }
}

/// One envelope the mock accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Envelope topic (`/tasks/exit`).
    pub topic: String,
    /// Envelope namespace.
    pub namespace: String,
    /// Envelope timestamp as sent by the publisher (containerd keeps it).
    pub timestamp: Option<SystemTime>,
    /// When the mock received it.
    pub received: SystemTime,
    /// Which route delivered it.
    pub source: EventSource,
    /// The decoded payload.
    pub event: TaskEvent,
    /// The payload's fields, kebab-case proto names (`{"container-id":..,"exit-status":143}`).
    pub fields: Value,
}

/// An envelope the mock refused, with containerd's reason.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedEvent {
    /// Envelope topic as sent.
    pub topic: String,
    /// Envelope namespace as sent.
    pub namespace: String,
    /// Which route delivered it.
    pub source: EventSource,
    /// The reason (the message returned to the publisher, code InvalidArgument).
    pub reason: String,
    /// When it arrived.
    pub received: SystemTime,
}

/// One `Forward` call as it reached an endpoint, before validation: what a [`RecordedEvent`]
/// does not keep (the request's metadata, the payload's type URL exactly as sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarded {
    /// Envelope topic as sent.
    pub topic: String,
    /// The request's `containerd-namespace-ttrpc` metadata, if it carried one.
    pub metadata_namespace: Option<String>,
    /// The payload's `Any.type_url` as sent (empty without a payload).
    pub type_url: String,
    /// Which route delivered it.
    pub source: EventSource,
}

#[derive(Default)]
struct Inner {
    events: Mutex<Vec<RecordedEvent>>,
    rejected: Mutex<Vec<RejectedEvent>>,
    forwarded: Mutex<Vec<Forwarded>>,
}

/// The shared, append-only log of events received by one mock containerd.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("events", &self.snapshot().len())
            .finish()
    }
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        EventLog {
            inner: Arc::new(Inner::default()),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// Everything accepted so far, in arrival order.
    pub fn snapshot(&self) -> Vec<RecordedEvent> {
        lock(&self.inner.events).clone()
    }

    /// Everything refused so far, in arrival order.
    pub fn rejected(&self) -> Vec<RejectedEvent> {
        lock(&self.inner.rejected).clone()
    }

    /// Every `Forward` call the endpoints received so far, accepted or refused, in arrival
    /// order.
    pub fn forwarded(&self) -> Vec<Forwarded> {
        lock(&self.inner.forwarded).clone()
    }

    /// Forgets everything accepted and refused so far (long runs that never read the log, such
    /// as `harness stress`, keep the harness's memory flat this way).
    pub fn clear(&self) {
        lock(&self.inner.events).clear();
        lock(&self.inner.rejected).clear();
        lock(&self.inner.forwarded).clear();
    }

    /// Notes one `Forward` call as it arrived (before [`EventLog::accept_envelope`]).
    pub(crate) fn note_forward(&self, f: Forwarded) {
        lock(&self.inner.forwarded).push(f);
    }

    /// Appends an event and wakes waiters.
    pub fn record(&self, ev: RecordedEvent) {
        lock(&self.inner.events).push(ev);
        self.changed.send_modify(|n| *n += 1);
    }

    fn reject(&self, ev: RejectedEvent) {
        lock(&self.inner.rejected).push(ev);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Waits until `pred` holds on the accepted events, at most `timeout`; returns whether it held.
    pub async fn wait_until(
        &self,
        pred: impl Fn(&[RecordedEvent]) -> bool,
        timeout: Duration,
    ) -> bool {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            // Evaluated on a copy: `pred` may itself look at the log.
            if pred(&self.snapshot()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return pred(&self.snapshot()),
            }
        }
    }

    /// Validates and records an envelope as containerd's exchange `Forward` does.
    pub fn accept_envelope(&self, env: &Envelope, source: EventSource) -> Result<(), String> {
        let received = SystemTime::now();
        if let Err(reason) = validate_envelope(env) {
            self.reject(RejectedEvent {
                topic: env.topic.clone(),
                namespace: env.namespace.clone(),
                source,
                reason: reason.clone(),
                received,
            });
            return Err(reason);
        }
        let (event, fields) = match env.event.as_ref() {
            Some(any) => decode_any(any),
            None => (
                TaskEvent::Other {
                    type_url: String::new(),
                },
                Value::Object(Default::default()),
            ),
        };
        self.record(RecordedEvent {
            topic: env.topic.clone(),
            namespace: env.namespace.clone(),
            timestamp: env.timestamp.as_ref().map(timestamp_to_system),
            received,
            source,
            event,
            fields,
        });
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

mod decode;
mod server;
mod validate;

pub use decode::{
    decode_any, event_fields, system_to_timestamp, timestamp_json, timestamp_to_system,
};
pub use server::Endpoint;
pub use validate::{validate_envelope, validate_identifier, validate_topic};

#[cfg(test)]
mod tests {
    use super::*;

    fn env(ns: &str, topic: &str, ev: Option<TaskEvent>) -> Envelope {
        Envelope {
            timestamp: protobuf::MessageField::some(system_to_timestamp(SystemTime::now())),
            namespace: ns.into(),
            topic: topic.into(),
            event: ev.and_then(|e| e.to_any()).into(),
            ..Default::default()
        }
    }

    #[test]
    fn identifiers_follow_containerd() {
        for ok in ["default", "k8s.io", "a-b_c.d", "x1"] {
            assert!(validate_identifier(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a/b", "a b", &"x".repeat(77)] {
            assert!(validate_identifier(bad).is_err(), "{bad}");
        }
        assert!(validate_topic("/tasks/exit").is_ok());
        assert!(validate_topic("tasks/exit").is_err());
        assert!(validate_topic("/").is_err());
        assert!(validate_topic("/tasks//exit").is_err());
        assert!(validate_topic("").is_err());
    }

    #[test]
    fn accepted_envelopes_are_decoded_with_kebab_fields() {
        let log = EventLog::new();
        let exit = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 42,
            exit_status: 143,
            ..Default::default()
        };
        log.accept_envelope(
            &env(
                "default",
                "/tasks/exit",
                Some(TaskEvent::Exit(exit.clone())),
            ),
            EventSource::Shim,
        )
        .unwrap();
        let got = log.snapshot();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event, TaskEvent::Exit(exit));
        assert_eq!(got[0].fields["exit-status"], 143);
        assert_eq!(got[0].fields["container-id"], "c1");
        assert!(got[0].timestamp.is_some());
    }

    #[test]
    fn invalid_envelopes_are_refused_and_kept_aside() {
        let log = EventLog::new();
        assert!(log
            .accept_envelope(&env("bad ns", "/tasks/exit", None), EventSource::Shim)
            .unwrap_err()
            .contains("invalid namespace"));
        assert!(log
            .accept_envelope(&env("default", "tasks", None), EventSource::Shim)
            .unwrap_err()
            .contains("must start with '/'"));
        let mut epoch = env("default", "/tasks/exit", None);
        epoch.timestamp = protobuf::MessageField::some(Default::default());
        assert!(log.accept_envelope(&epoch, EventSource::Shim).is_ok());
        let mut go_zero = env("default", "/tasks/exit", None);
        go_zero.timestamp.as_mut().unwrap().seconds = validate::GO_ZERO_TIME_UNIX;
        go_zero.timestamp.as_mut().unwrap().nanos = 0;
        assert!(log.accept_envelope(&go_zero, EventSource::Shim).is_err());
        let mut no_ts = env("default", "/tasks/exit", None);
        no_ts.timestamp = protobuf::MessageField::none();
        assert!(log
            .accept_envelope(&no_ts, EventSource::Shim)
            .unwrap_err()
            .contains("timestamp"));
        assert_eq!(log.snapshot().len(), 1, "only the epoch-stamped one");
        assert_eq!(log.rejected().len(), 4);
    }

    #[test]
    fn unknown_type_urls_are_kept_as_other() {
        let any = Any {
            type_url: "containerd.events.ContainerCreate".into(),
            ..Default::default()
        };
        let (ev, _) = decode_any(&any);
        assert!(matches!(ev, TaskEvent::Other { .. }));
        let prefixed = TaskEvent::Start(TaskStart {
            container_id: "c".into(),
            pid: 7,
            ..Default::default()
        });
        let mut any = prefixed.to_any().unwrap();
        any.type_url = format!("type.googleapis.com/{}", any.type_url);
        assert_eq!(decode_any(&any).0, prefixed);
    }

    #[tokio::test]
    async fn wait_until_wakes_on_record_and_times_out() {
        let log = EventLog::new();
        let l2 = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            l2.accept_envelope(&env("default", "/tasks/oom", None), EventSource::Mock)
                .unwrap();
        });
        assert!(
            log.wait_until(|e| !e.is_empty(), Duration::from_secs(5))
                .await
        );
        assert!(
            !log.wait_until(|e| e.len() > 1, Duration::from_millis(50))
                .await
        );
    }
}
