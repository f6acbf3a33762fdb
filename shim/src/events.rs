//! Task events: one ordered queue and one forwarder calling
//! `containerd.services.events.ttrpc.v1.Events/Forward` on `$TTRPC_ADDRESS`.
//!
//! Order rule: events leave in the order they were queued. A failed Forward is retried at the head
//! of the queue with backoff (never overtaken by later events) and dropped with a log after ~1 min.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageDyn;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::EventsClient;
use tokio::sync::{mpsc, watch};

/// Where the task layer sends events (a channel in tests, the forwarder in the server).
pub trait EventSender: Send + Sync {
    /// Queues one event; never blocks.
    fn send(&self, topic: &'static str, event: Box<dyn MessageDyn>);

    /// How many queued events are not forwarded yet, for [`room`]; `None` without a queue.
    fn backlog(&self) -> Option<watch::Receiver<usize>> {
        None
    }
}

/// How many queued events make a new task wait for the forwarder ([`room`]): the Go runc
/// shim's event channel holds 128, and its handlers block while it is full
/// (`events: make(chan interface{}, 128)`, runtime/v2/runc/task/service.go at v1.6.20).
pub const QUEUE_LIMIT: usize = 128;

/// The longest a new task waits for [`room`] (the events endpoint may be down for longer).
pub const ROOM_WAIT: Duration = Duration::from_secs(5);

/// Waits (at most [`ROOM_WAIT`]) until fewer than [`QUEUE_LIMIT`] events are queued: Create
/// and Exec call it first, so that a client starting tasks faster than their events can be
/// forwarded is slowed down instead of the queue (and the server's memory) growing without
/// bound.
pub async fn room(events: &dyn EventSender) {
    if let Some(mut rx) = events.backlog() {
        let _ = tokio::time::timeout(ROOM_WAIT, rx.wait_for(|n| *n < QUEUE_LIMIT)).await;
    }
}

/// Converts a `SystemTime` to a protobuf Timestamp.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// Packs a message into an Any with the given type URL. containerd uses bare full names
/// (`containerd.events.TaskExit`); they are spelled out (see [`event_type`]) rather than taken
/// from protobuf reflection, whose descriptor tables would cost the shim memory and time.
pub fn to_any(type_url: &str, m: &dyn MessageDyn) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: encode(m),
        ..Default::default()
    }
}

/// The wire bytes of `m` (empty if it cannot be encoded), without touching its descriptor.
/// `write_to_bytes_dyn` asks for `descriptor_dyn().name()` up front, for an error message it
/// rarely needs (`src/message_dyn.rs` of protobuf 3.7.2), and the first such call in a process
/// builds the reflection tables of the message's whole .proto file and its imports: 0.6 ms of
/// a fresh server's first Create (timed) and memory it keeps. The size and the fields' writer
/// are the generated code's own.
fn encode(m: &dyn MessageDyn) -> Vec<u8> {
    let size = m.compute_size_dyn();
    let mut v = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut os = protobuf::CodedOutputStream::vec(&mut v);
    let ok = m.write_to_with_cached_sizes_dyn(&mut os).is_ok() && os.flush().is_ok();
    drop(os);
    if ok {
        v
    } else {
        Vec::new()
    }
}

/// The protobuf full name of the event published on `topic`.
pub fn event_type(topic: &str) -> &'static str {
    match topic {
        "/tasks/create" => "containerd.events.TaskCreate",
        "/tasks/start" => "containerd.events.TaskStart",
        "/tasks/exit" => "containerd.events.TaskExit",
        "/tasks/delete" => "containerd.events.TaskDelete",
        "/tasks/exec-added" => "containerd.events.TaskExecAdded",
        "/tasks/exec-started" => "containerd.events.TaskExecStarted",
        "/tasks/paused" => "containerd.events.TaskPaused",
        "/tasks/resumed" => "containerd.events.TaskResumed",
        "/tasks/oom" => "containerd.events.TaskOOM",
        "/tasks/checkpointed" => "containerd.events.TaskCheckpointed",
        _ => "containerd.events.Unknown",
    }
}

/// Queues envelopes for the forwarder.
pub struct Publisher {
    namespace: String,
    tx: mpsc::UnboundedSender<Envelope>,
    /// How many queued events are not forwarded or dropped yet.
    pending: watch::Sender<usize>,
}

/// An envelope of `event` on `topic`, stamped now.
fn envelope(namespace: &str, topic: &str, event: &dyn MessageDyn) -> Envelope {
    Envelope {
        timestamp: Some(timestamp(SystemTime::now())).into(),
        namespace: namespace.to_string(),
        topic: topic.to_string(),
        event: Some(to_any(event_type(topic), event)).into(),
        ..Default::default()
    }
}

/// `$TTRPC_ADDRESS` as a ttrpc address (`unix://` added to a plain path; empty stays empty).
fn events_address(address: String) -> String {
    if address.is_empty() || address.contains("://") {
        address
    } else {
        format!("unix://{address}")
    }
}

/// Dials the events endpoint, bounded to 5 s.
async fn connect(addr: &str) -> Option<EventsClient> {
    match tokio::time::timeout(
        Duration::from_secs(5),
        ttrpc::asynchronous::Client::connect(addr),
    )
    .await
    {
        Ok(Ok(c)) => Some(EventsClient::new(c)),
        Ok(Err(e)) => {
            tracing::warn!("connect events {addr}: {e}");
            None
        }
        Err(_) => {
            tracing::warn!("connect events {addr}: timed out");
            None
        }
    }
}

/// One Forward of `env`, bounded to 5 s.
async fn forward(c: &EventsClient, env: &Envelope) -> ttrpc::Result<()> {
    let mut ctx = ttrpc::context::with_timeout(5_000_000_000);
    ctx.add(
        "containerd-namespace-ttrpc".to_string(),
        env.namespace.clone(),
    );
    let req = ForwardRequest {
        envelope: Some(env.clone()).into(),
        ..Default::default()
    };
    c.forward(ctx, &req).await.map(|_| ())
}

/// The faulty shim's `event-flood`: `n` `/tasks/oom` events for `container_id` on a connection
/// of their own (beside the ordered queue), 64 in flight at once; returns how many were taken.
pub async fn flood(address: String, namespace: String, container_id: String, n: usize) -> usize {
    use containerd_shim_protos::events::task::TaskOOM;
    let addr = events_address(address);
    let Some(c) = connect(&addr).await else {
        return 0;
    };
    let env = envelope(
        &namespace,
        "/tasks/oom",
        &TaskOOM {
            container_id,
            ..Default::default()
        },
    );
    let c = Arc::new(c);
    let env = Arc::new(env);
    let mut sent = 0;
    let mut left = n;
    while left > 0 {
        let batch = left.min(64);
        left -= batch;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let (c, env) = (c.clone(), env.clone());
            set.spawn(async move { forward(&c, &env).await.is_ok() });
        }
        while let Some(ok) = set.join_next().await {
            sent += usize::from(ok.unwrap_or(false));
        }
    }
    tracing::warn!(sent, n, "faulty: event flood done");
    sent
}

impl EventSender for Publisher {
    fn send(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        let env = envelope(&self.namespace, topic, event.as_ref());
        tracing::debug!(topic, "event queued");
        self.pending.send_modify(|n| *n += 1);
        if self.tx.send(env).is_err() {
            self.pending.send_modify(|n| *n -= 1);
        }
    }

    fn backlog(&self) -> Option<watch::Receiver<usize>> {
        Some(self.pending.subscribe())
    }
}

impl Publisher {
    /// Waits (at most `limit`) until every queued event has been forwarded or dropped.
    pub async fn flush(&self, limit: Duration) {
        let mut rx = self.pending.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
    }
}

/// How long the head of the queue is retried before it is dropped.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// Starts the forwarder task. `address` is a plain path (or `unix://` address); empty = events are
/// logged and dropped. `retry: false` (the faulty shim's `no-event-retry`) drops an event whose
/// first Forward fails.
pub fn start(address: String, namespace: String, retry: bool) -> Publisher {
    let (tx, mut rx) = mpsc::unbounded_channel::<Envelope>();
    let (pending, _) = watch::channel(0usize);
    let left = pending.clone();
    tokio::spawn(async move {
        let addr = events_address(address);
        let mut client: Option<EventsClient> = None;
        while let Some(env) = rx.recv().await {
            let first = Instant::now();
            let mut backoff = Duration::from_millis(50);
            loop {
                if addr.is_empty() {
                    tracing::warn!(topic = env.topic, "no TTRPC_ADDRESS: event dropped");
                    break;
                }
                if client.is_none() {
                    client = connect(&addr).await;
                }
                if let Some(c) = &client {
                    match forward(c, &env).await {
                        Ok(()) => {
                            tracing::debug!(topic = env.topic, "event forwarded");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(topic = env.topic, "forward: {e}");
                            client = None;
                        }
                    }
                }
                if !retry {
                    tracing::error!(topic = env.topic, "event dropped (fault no-event-retry)");
                    break;
                }
                if first.elapsed() > GIVE_UP_AFTER {
                    tracing::error!(topic = env.topic, "event dropped after retrying for 1 min");
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            left.send_modify(|n| *n -= 1);
        }
    });
    Publisher {
        namespace,
        tx,
        pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::events::task::*;
    use containerd_shim_protos::protobuf::MessageFull;
    use containerd_shim_protos::topics::*;

    /// A queue whose length the test sets.
    struct Queue(watch::Sender<usize>);

    impl EventSender for Queue {
        fn send(&self, _topic: &'static str, _event: Box<dyn MessageDyn>) {}
        fn backlog(&self) -> Option<watch::Receiver<usize>> {
            Some(self.0.subscribe())
        }
    }

    #[tokio::test]
    async fn a_new_task_waits_while_the_event_queue_is_full() {
        let q = Queue(watch::channel(QUEUE_LIMIT).0);
        let waiting = room(&q);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut waiting)
                .await
                .is_err(),
            "room() returned with {QUEUE_LIMIT} events queued"
        );
        q.0.send_replace(QUEUE_LIMIT - 1);
        tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("room() once the queue has room");
    }

    #[test]
    fn an_event_is_encoded_as_the_generated_code_encodes_it() {
        use containerd_shim_protos::protobuf::Message;
        let create = TaskCreate {
            container_id: "c1".into(),
            bundle: "/run/b/c1".into(),
            io: Some(TaskIO {
                stdin: "/fifo/in".into(),
                stdout: "/fifo/out".into(),
                terminal: true,
                ..Default::default()
            })
            .into(),
            pid: 4242,
            ..Default::default()
        };
        let exit = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 4242,
            exit_status: 137,
            exited_at: Some(timestamp(SystemTime::now())).into(),
            ..Default::default()
        };
        let any = to_any(event_type(TASK_CREATE_EVENT_TOPIC), &create);
        assert_eq!(any.value, create.write_to_bytes().unwrap());
        assert_eq!(TaskCreate::parse_from_bytes(&any.value).unwrap(), create);
        let any = to_any(event_type(TASK_EXIT_EVENT_TOPIC), &exit);
        assert_eq!(any.value, exit.write_to_bytes().unwrap());
        assert_eq!(TaskExit::parse_from_bytes(&any.value).unwrap(), exit);
        assert_eq!(any.type_url, "containerd.events.TaskExit");
    }

    #[test]
    fn spelled_out_type_names_match_the_descriptors() {
        let cases: [(&str, String); 8] = [
            (
                TASK_CREATE_EVENT_TOPIC,
                TaskCreate::descriptor().full_name().to_string(),
            ),
            (
                TASK_START_EVENT_TOPIC,
                TaskStart::descriptor().full_name().to_string(),
            ),
            (
                TASK_EXIT_EVENT_TOPIC,
                TaskExit::descriptor().full_name().to_string(),
            ),
            (
                TASK_DELETE_EVENT_TOPIC,
                TaskDelete::descriptor().full_name().to_string(),
            ),
            (
                TASK_EXEC_ADDED_EVENT_TOPIC,
                TaskExecAdded::descriptor().full_name().to_string(),
            ),
            (
                TASK_EXEC_STARTED_EVENT_TOPIC,
                TaskExecStarted::descriptor().full_name().to_string(),
            ),
            (
                TASK_PAUSED_EVENT_TOPIC,
                TaskPaused::descriptor().full_name().to_string(),
            ),
            (
                TASK_RESUMED_EVENT_TOPIC,
                TaskResumed::descriptor().full_name().to_string(),
            ),
        ];
        for (topic, name) in cases {
            assert_eq!(event_type(topic), name, "{topic}");
        }
    }
}
