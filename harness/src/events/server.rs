//! The ttrpc `containerd.services.events.ttrpc.v1.Events` endpoint: `Forward` validates and
//! records each envelope into an [`EventLog`], answering InvalidArgument when containerd would.

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::Events;
use protobuf::well_known_types::empty::Empty;

use super::{EventLog, EventSource};

/// The ttrpc `Events` service: validates and records each forwarded envelope.
pub(crate) struct ForwardService {
    pub(crate) log: EventLog,
    pub(crate) source: EventSource,
}

#[async_trait]
impl Events for ForwardService {
    async fn forward(
        &self,
        ctx: &ttrpc::r#async::TtrpcContext,
        req: ForwardRequest,
    ) -> ttrpc::Result<Empty> {
        let env = req.envelope.into_option().unwrap_or_default();
        self.log.note_forward(super::Forwarded {
            topic: env.topic.clone(),
            metadata_namespace: ctx
                .metadata
                .get(crate::client::NAMESPACE_METADATA_KEY)
                .and_then(|v| v.first().cloned()),
            type_url: env
                .event
                .as_ref()
                .map(|a| a.type_url.clone())
                .unwrap_or_default(),
            source: self.source,
        });
        match self.log.accept_envelope(&env, self.source) {
            Ok(()) => Ok(Empty::new()),
            Err(reason) => Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::INVALID_ARGUMENT,
                reason,
            ))),
        }
    }
}

/// Starts a ttrpc server at `path` serving `Events/Forward` into `log`, tagging events with `source`.
pub(crate) async fn serve(
    path: &std::path::Path,
    log: EventLog,
    source: EventSource,
) -> Result<ttrpc::r#async::Server, crate::error::HarnessError> {
    let address = format!("unix://{}", path.display());
    let svc =
        containerd_shim_protos::shim_async::create_events(Arc::new(ForwardService { log, source }));
    let err = |m: String| crate::error::HarnessError::Endpoint {
        address: address.clone(),
        message: m,
    };
    let mut server = ttrpc::r#async::Server::new()
        .bind(&address)
        .map_err(|e| err(e.to_string()))?
        .register_service(svc);
    server.start().await.map_err(|e| err(e.to_string()))?;
    Ok(server)
}

/// One endpoint of the mock (a socket path serving `Forward` into a log) that can be taken down
/// and brought back on the same path, for the fault steps `events-down` / `events-up` and
/// `restart-containerd`.
pub struct Endpoint {
    path: std::path::PathBuf,
    log: EventLog,
    source: EventSource,
    server: Option<ttrpc::r#async::Server>,
}

impl Endpoint {
    /// Starts serving at `path`.
    pub(crate) async fn start(
        path: &std::path::Path,
        log: EventLog,
        source: EventSource,
    ) -> Result<Self, crate::error::HarnessError> {
        let server = serve(path, log.clone(), source).await?;
        Ok(Endpoint {
            path: path.to_path_buf(),
            log,
            source,
            server: Some(server),
        })
    }

    /// Whether the endpoint is serving.
    pub fn is_up(&self) -> bool {
        self.server.is_some()
    }

    /// Stops accepting, drops every established connection (a publisher's next Forward fails)
    /// and removes the socket file, so a new connect is refused (ENOENT) as when containerd is
    /// gone.
    pub async fn down(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.shutdown().await;
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// Serves again on the same path (a no-op when already up).
    pub async fn up(&mut self) -> Result<(), crate::error::HarnessError> {
        if self.server.is_some() {
            return Ok(());
        }
        let _ = std::fs::remove_file(&self.path);
        self.server = Some(serve(&self.path, self.log.clone(), self.source).await?);
        Ok(())
    }

    /// The running server, if any (handed over for a final shutdown).
    pub(crate) fn take_server(&mut self) -> Option<ttrpc::r#async::Server> {
        self.server.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::shim::event::Envelope;
    use containerd_shim_protos::shim_async::EventsClient;
    use std::time::{Duration, SystemTime};

    fn request(topic: &str) -> ForwardRequest {
        ForwardRequest {
            envelope: Some(Envelope {
                timestamp: Some(crate::events::system_to_timestamp(SystemTime::now())).into(),
                namespace: "default".into(),
                topic: topic.into(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        }
    }

    async fn forward(c: &EventsClient, topic: &str) -> ttrpc::Result<Empty> {
        c.forward(ttrpc::context::with_timeout(2_000_000_000), &request(topic))
            .await
    }

    async fn connect(path: &std::path::Path) -> ttrpc::Result<EventsClient> {
        let addr = format!("unix://{}", path.display());
        tokio::time::timeout(
            Duration::from_secs(2),
            ttrpc::r#async::Client::connect(&addr),
        )
        .await
        .map_err(|_| ttrpc::Error::Others("connect timed out".into()))?
        .map(EventsClient::new)
    }

    #[tokio::test]
    async fn an_endpoint_goes_down_and_comes_back_on_the_same_path() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("e.sock");
        let log = EventLog::new();
        let mut ep = Endpoint::start(&path, log.clone(), EventSource::Shim)
            .await
            .unwrap();
        let old = connect(&path).await.unwrap();
        forward(&old, "/tasks/create").await.unwrap();

        ep.down().await;
        assert!(!ep.is_up());
        assert!(!path.exists(), "the socket file must be removed");
        assert!(
            forward(&old, "/tasks/start").await.is_err(),
            "an established connection must be dropped"
        );
        assert!(connect(&path).await.is_err(), "a new connect must fail");

        ep.up().await.unwrap();
        let new = connect(&path).await.unwrap();
        forward(&new, "/tasks/exit").await.unwrap();
        let topics: Vec<_> = log.snapshot().into_iter().map(|e| e.topic).collect();
        assert_eq!(topics, ["/tasks/create", "/tasks/exit"]);
        ep.down().await;
    }

    /// What the mock's `Drop` relies on: a server taken out and dropped stops accepting (its
    /// accept loop ends and closes the listener) without `shutdown`.
    #[tokio::test]
    async fn a_dropped_server_stops_listening() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("d.sock");
        let mut ep = Endpoint::start(&path, EventLog::new(), EventSource::Shim)
            .await
            .unwrap();
        forward(&connect(&path).await.unwrap(), "/tasks/create")
            .await
            .unwrap();
        drop(ep.take_server());
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while std::os::unix::net::UnixStream::connect(&path).is_ok() {
            assert!(
                std::time::Instant::now() < end,
                "still accepting 5 s after the drop"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            path.exists(),
            "the socket file stays (it goes with the temp dir)"
        );
    }
}
