//! The connection to a real containerd and one scenario's run through it, as a containerd
//! client does: a subscription to the namespace's `/tasks/*` events (proven live by a marker
//! event), the steps (driven by `steps`: container, task with cio-style FIFOs, Start, Kill,
//! Wait, Exec, Delete, ...), the cleanup and the namespace's removal, all bounded; the result is
//! a [`Trace`] to compare with the mock's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::{PublishRequest, SubscribeRequest};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use serde_json::Value;

use super::DiffError;
use crate::bundle::RootfsKind;

/// How long the daemon side waits for late events after the last step and after cleanup.
pub(super) const SETTLE: Duration = Duration::from_millis(300);
/// How much of the captured output is kept (as the engine does).
const OUTPUT_KEEP: usize = 4096;

/// A connection to containerd plus what to run scenarios with.
#[derive(Clone)]
pub struct Daemon {
    pub(super) channel: Channel,
    /// The daemon's own version string (`v2.1.9`, `1.6.20~ds1`, ...), from its Version service.
    pub version: String,
    /// The runtime given to containers: a name (`io.containerd.runc.v2`) or a binary path.
    pub runtime: String,
    /// Root filesystem of the containers.
    pub rootfs: RootfsKind,
    /// Default bound of one call.
    pub step_timeout: Duration,
}

pub(super) type Events = Arc<Mutex<Vec<(String, Value)>>>;

/// The kebab-case name of a tonic status code (the same numbers as ttrpc's).
pub(super) fn code_name(c: Code) -> &'static str {
    crate::wire::Code::from_i32(c as i32).as_str()
}

/// A daemon's error status as the interpreter judges it (the codes are gRPC's, as ttrpc's).
pub(super) fn rpc_error(e: Status) -> crate::client::RpcError {
    crate::client::RpcError::Status {
        code: crate::wire::Code::from_i32(e.code() as i32).into(),
        message: e.message().to_string(),
    }
}

pub(super) fn req<T>(msg: T, ns: &str, t: Duration) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = ns.parse() {
        r.metadata_mut().insert("containerd-namespace", v);
    }
    r.set_timeout(t);
    r
}

/// Runs one call bounded by `t` (plus a margin for the daemon's own answer). A call that fails
/// once its deadline has passed failed *by* it, whatever code the failure came with: tonic's
/// own timer answers `cancelled` ("Timeout expired"), a stream the daemon reset at its
/// grpc-timeout `cancelled` with an h2 protocol error, and containerd's sandbox controller
/// `unknown` ("failed to wait sandbox ...: context deadline exceeded", its error wrapped in
/// plugins/sandbox/controller.go at v2.1.9); all are `deadline-exceeded`, as the mock reports.
pub(super) async fn bounded<T>(
    t: Duration,
    f: impl std::future::Future<Output = Result<containerd_client::tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    let t0 = Instant::now();
    match tokio::time::timeout(t + Duration::from_millis(500), f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(e)) if t0.elapsed() >= t && by_deadline(&e) => {
            Err(Status::deadline_exceeded(e.message().to_string()))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no answer within {}",
            humantime::format_duration(t)
        ))),
    }
}

/// Whether a failure that came past the call's deadline reads as caused by it.
fn by_deadline(e: &Status) -> bool {
    match e.code() {
        Code::Cancelled | Code::DeadlineExceeded => true,
        Code::Unknown => e.message().contains("deadline exceeded"),
        _ => false,
    }
}

pub(super) fn ts(t: Option<&prost_types::Timestamp>) -> Value {
    let pt = t.map(|t| protobuf::well_known_types::timestamp::Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
        ..Default::default()
    });
    match pt {
        Some(t) if t.seconds > 0 => crate::events::timestamp_json(Some(&t)),
        _ => Value::Null,
    }
}

pub(super) fn json_any(type_url: &str, v: &impl serde::Serialize) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.into(),
        value: serde_json::to_vec(v).unwrap_or_default(),
    }
}

impl Daemon {
    /// Connects to containerd's gRPC socket and checks that it answers.
    pub async fn connect(socket: &std::path::Path, runtime: String) -> Result<Daemon, DiffError> {
        let channel =
            tokio::time::timeout(Duration::from_secs(10), containerd_client::connect(socket))
                .await
                .map_err(|_| DiffError::Connect {
                    socket: socket.to_path_buf(),
                    message: "no connection within 10s".into(),
                })?
                .map_err(|e| DiffError::Connect {
                    socket: socket.to_path_buf(),
                    message: error_chain(&e),
                })?;
        let mut v =
            containerd_client::services::v1::version_client::VersionClient::new(channel.clone());
        let version = bounded(Duration::from_secs(5), v.version(Request::new(())))
            .await
            .map_err(|e| DiffError::Connect {
                socket: socket.to_path_buf(),
                message: format!("Version: {}: {}", code_name(e.code()), e.message()),
            })?
            .version;
        Ok(Daemon {
            channel,
            version,
            runtime,
            rootfs: RootfsKind::Busybox,
            step_timeout: Duration::from_secs(10),
        })
    }

    /// Subscribes to the namespace's `/tasks/*` events and returns once the subscription is
    /// proven live (a marker event published to the namespace came back through it).
    pub(super) async fn subscribe(
        &self,
        ns: &str,
        events: Events,
    ) -> Result<tokio::task::JoinHandle<()>, String> {
        let mut client = EventsClient::new(self.channel.clone());
        let filter = format!("namespace==\"{ns}\",topic~=\"^/tasks/\"");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let handle = tokio::spawn(async move {
            let sub = client
                .subscribe(Request::new(SubscribeRequest {
                    filters: vec![filter],
                }))
                .await;
            let Ok(mut stream) = sub.map(|r| r.into_inner()) else {
                return;
            };
            while let Ok(Some(env)) = stream.message().await {
                let Some(any) = env.event else { continue };
                if env.topic == MARKER {
                    let _ = tx.send(());
                    continue;
                }
                let pany = protobuf::well_known_types::any::Any {
                    type_url: any.type_url,
                    value: any.value,
                    ..Default::default()
                };
                let (_, mut fields) = crate::events::decode_any(&pany);
                crate::engine::normalize_times(&mut fields);
                if let Ok(mut g) = events.lock() {
                    g.push((env.topic, fields));
                }
            }
        });
        let mut pubc = EventsClient::new(self.channel.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let marker = PublishRequest {
                topic: MARKER.into(),
                event: Some(prost_types::Any {
                    type_url: "containerd.events.TaskPaused".into(),
                    value: vec![],
                }),
            };
            if let Err(e) = bounded(
                Duration::from_secs(5),
                pubc.publish(req(marker, ns, Duration::from_secs(5))),
            )
            .await
            {
                handle.abort();
                return Err(format!(
                    "publishing the subscription marker: {}: {}",
                    code_name(e.code()),
                    e.message()
                ));
            }
            if tokio::time::timeout(Duration::from_millis(200), rx.recv())
                .await
                .is_ok()
            {
                return Ok(handle);
            }
            if Instant::now() > deadline {
                handle.abort();
                return Err("the events subscription delivered nothing within 10s".into());
            }
        }
    }
}

/// An error with its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(&format!(": {text}"));
        }
        src = s.source();
    }
    msg
}

/// The topic of the marker that proves the subscription live (filtered out of the trace).
const MARKER: &str = "/tasks/harness-differential-marker";

pub(super) fn keep(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() <= OUTPUT_KEEP {
        s.into_owned()
    } else {
        crate::scenario::abbreviate(&s, OUTPUT_KEEP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_deadline_shaped_failures_count_as_the_deadline() {
        assert!(by_deadline(&Status::cancelled("Timeout expired")));
        assert!(by_deadline(&Status::cancelled(
            "h2 protocol error: http2 error"
        )));
        assert!(by_deadline(&Status::unknown(
            "failed to wait sandbox main-pod: context deadline exceeded"
        )));
        assert!(!by_deadline(&Status::unknown(
            "failed to wait sandbox: ttrpc: closed"
        )));
        assert!(!by_deadline(&Status::not_found("no such task")));
    }
}
