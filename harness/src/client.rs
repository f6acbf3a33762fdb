//! The task client: every Task RPC (and the Sandbox service's, on the same connection) over ttrpc for task API v2 or v3 (service name chosen by
//! [`TaskApi`]; the generated clients hard-code v3), with the namespace metadata containerd
//! sends, a bound on every call, and typed results (a response, or a status code + message).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim_protos::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::sandbox_api::{
    CreateSandboxRequest, CreateSandboxResponse, PingRequest, PingResponse, PlatformRequest,
    PlatformResponse, SandboxMetricsRequest, SandboxMetricsResponse, SandboxStatusRequest,
    SandboxStatusResponse, ShutdownSandboxRequest, ShutdownSandboxResponse, StartSandboxRequest,
    StartSandboxResponse, StopSandboxRequest, StopSandboxResponse, WaitSandboxRequest,
    WaitSandboxResponse,
};
use protobuf::well_known_types::empty::Empty;
use protobuf::Message;

use crate::dialect::TaskApi;

/// The ttrpc metadata key carrying the namespace.
pub const NAMESPACE_METADATA_KEY: &str = "containerd-namespace-ttrpc";

/// The outcome of one RPC.
pub type RpcResult<T> = Result<T, RpcError>;

/// Why an RPC did not return a response.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RpcError {
    /// The shim answered with a non-OK status.
    #[error("{}: {message}", code_name_of(*code))]
    Status {
        /// The ttrpc (gRPC) code.
        code: ttrpc::Code,
        /// The status message.
        message: String,
    },
    /// No answer within the bound.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or was closed.
    #[error("transport: {0}")]
    Transport(String),
}

/// kebab-case name of a gRPC code (`not-found`, `failed-precondition`, ...).
pub fn code_name_of(code: ttrpc::Code) -> &'static str {
    crate::wire::Code::from(code).as_str()
}

impl RpcError {
    /// The kebab-case code name; `deadline-exceeded` for timeouts, `unavailable` for transport.
    pub fn code_name(&self) -> &'static str {
        match self {
            RpcError::Status { code, .. } => code_name_of(*code),
            RpcError::Timeout(_) => "deadline-exceeded",
            RpcError::Transport(_) => "unavailable",
        }
    }

    /// Whether this says the called service is not served: Go ttrpc answers UNIMPLEMENTED
    /// `service X`, Rust ttrpc 0.10 INVALID_ARGUMENT `X service does not exist` (doc 12).
    pub fn is_service_absent(&self) -> bool {
        match self {
            RpcError::Status { code, message } => {
                (*code == ttrpc::Code::UNIMPLEMENTED && message.starts_with("service "))
                    || (*code == ttrpc::Code::INVALID_ARGUMENT
                        && message.ends_with("service does not exist"))
            }
            _ => false,
        }
    }

    fn from_ttrpc(e: ttrpc::Error, timeout: Duration) -> Self {
        match e {
            ttrpc::Error::RpcStatus(s) => RpcError::Status {
                code: s.code(),
                message: s.message().to_string(),
            },
            ttrpc::Error::Others(m) if m.contains("deadline elapsed") => RpcError::Timeout(timeout),
            other => RpcError::Transport(other.to_string()),
        }
    }
}

/// What the client saw of one task (init) between Create and Delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskRecord {
    /// The pid returned by Create.
    pub pid: u32,
}

struct Shared {
    conn: Mutex<Option<ttrpc::r#async::Client>>,
    api: TaskApi,
    namespace: String,
    metadata: bool,
    tasks: Mutex<BTreeMap<String, TaskRecord>>,
    /// Sandboxes created through this connection and not shut down.
    sandboxes: Mutex<std::collections::BTreeSet<String>>,
    shutdown_sent: std::sync::atomic::AtomicBool,
    /// Held while a request takes its stream id and is queued for writing (see [`TaskClient::call`]).
    send_gate: tokio::sync::Mutex<()>,
}

/// A cheap-to-clone handle to one shim connection.
#[derive(Clone)]
pub struct TaskClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TaskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskClient")
            .field("api", &self.shared.api)
            .field("namespace", &self.shared.namespace)
            .finish()
    }
}

macro_rules! rpcs {
    ($($(#[$doc:meta])* $fn:ident, $method:literal, $req:ty, $resp:ty;)*) => {
        $(
            $(#[$doc])*
            pub async fn $fn(&self, req: $req, timeout: Duration) -> RpcResult<$resp> {
                self.call($method, &req, timeout).await
            }
        )*
    };
}

/// The shim Sandbox service (`api/runtime/sandbox/v1/sandbox.proto`).
pub const SANDBOX_SERVICE: &str = "containerd.runtime.sandbox.v1.Sandbox";

macro_rules! sandbox_rpcs {
    ($($(#[$doc:meta])* $fn:ident, $method:literal, $req:ty, $resp:ty;)*) => {
        $(
            $(#[$doc])*
            pub async fn $fn(&self, req: $req, timeout: Duration) -> RpcResult<$resp> {
                self.call_service(SANDBOX_SERVICE, $method, &req, timeout).await
            }
        )*
    };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TaskClient {
    /// Wraps a connected ttrpc client. `metadata`: send `containerd-namespace-ttrpc` (1.7+).
    pub fn new(
        conn: ttrpc::r#async::Client,
        api: TaskApi,
        namespace: &str,
        metadata: bool,
    ) -> Self {
        TaskClient {
            shared: Arc::new(Shared {
                conn: Mutex::new(Some(conn)),
                api,
                namespace: namespace.to_string(),
                metadata,
                tasks: Mutex::new(BTreeMap::new()),
                sandboxes: Mutex::new(Default::default()),
                shutdown_sent: std::sync::atomic::AtomicBool::new(false),
                send_gate: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The task API the client speaks.
    pub fn api(&self) -> TaskApi {
        self.shared.api
    }

    /// The namespace sent with each request.
    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    /// Tasks created through this client and not deleted (what containerd's task list holds).
    pub fn live_tasks(&self) -> BTreeMap<String, TaskRecord> {
        lock(&self.shared.tasks).clone()
    }

    /// Whether the connection has been closed by [`TaskClient::close`].
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.conn).is_none()
    }

    /// Closes the connection for every clone; later calls fail with `Transport`.
    pub fn close(&self) {
        lock(&self.shared.conn).take();
    }

    /// Puts a new connection in place of the closed (or live) one, for every clone: what a
    /// restarted containerd does through the bundle's `address` file. The task list is kept
    /// (containerd restores it from its state).
    pub fn reconnect(&self, conn: ttrpc::r#async::Client) {
        *lock(&self.shared.conn) = Some(conn);
    }

    /// Sends one unary request to the task service's `method` and decodes the reply.
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp> {
        self.call_service(self.shared.api.service(), method, req, timeout)
            .await
    }

    /// Sends one unary request to `/<service>/<method>` on this connection and decodes the
    /// reply (the Sandbox service shares the task connection, as containerd's shim controller
    /// uses `shim.Client()` for both: `plugins/sandbox/controller.go` at v2.1.9).
    pub async fn call_service<Req: Message, Resp: Message>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp> {
        let conn = lock(&self.shared.conn)
            .clone()
            .ok_or_else(|| RpcError::Transport("connection closed by the harness".into()))?;
        let payload = req
            .write_to_bytes()
            .map_err(|e| RpcError::Transport(format!("encoding {method} request: {e}")))?;
        let mut treq = ttrpc::Request::new();
        treq.service = service.to_string();
        treq.method = method.to_string();
        treq.payload = payload;
        treq.timeout_nano = i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX);
        if self.shared.metadata {
            let mut kv = ttrpc::proto::KeyValue::new();
            kv.key = NAMESPACE_METADATA_KEY.to_string();
            kv.value = self.shared.namespace.clone();
            treq.metadata.push(kv);
        }
        // ttrpc enforces timeout_nano itself; the outer bound also covers a stuck write.
        let mut pending = Box::pin(tokio::time::timeout(
            timeout + Duration::from_millis(500),
            conn.request(treq),
        ));
        // Stream ids must rise on the wire: ttrpc-go's server (containerd 2.x's shims) answers
        // "StreamID cannot be re-used and must increment" otherwise. ttrpc-rust's client takes
        // the id and queues the frame in the request's first poll, but two requests on one
        // connection can still interleave there (a background Wait beside a State); their first
        // polls are therefore taken one at a time, as containerd's Go client sends under a lock.
        let first = {
            let _gate = self.shared.send_gate.lock().await;
            std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::future::Future::poll(pending.as_mut(), cx))
            })
            .await
        };
        let res = match first {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => pending.await,
        }
        .map_err(|_| RpcError::Timeout(timeout))?
        .map_err(|e| RpcError::from_ttrpc(e, timeout))?;
        Resp::parse_from_bytes(&res.payload)
            .map_err(|e| RpcError::Transport(format!("decoding {method} response: {e}")))
    }

    /// Sandbox.CreateSandbox; records the sandbox as live on success.
    pub async fn create_sandbox(
        &self,
        req: CreateSandboxRequest,
        timeout: Duration,
    ) -> RpcResult<CreateSandboxResponse> {
        let id = req.sandbox_id.clone();
        let r = self
            .call_service(SANDBOX_SERVICE, "CreateSandbox", &req, timeout)
            .await;
        if r.is_ok() {
            lock(&self.shared.sandboxes).insert(id);
        }
        r
    }

    /// Sandbox.ShutdownSandbox; the sandbox is no longer live once it was sent.
    pub async fn shutdown_sandbox(
        &self,
        req: ShutdownSandboxRequest,
        timeout: Duration,
    ) -> RpcResult<ShutdownSandboxResponse> {
        lock(&self.shared.sandboxes).remove(&req.sandbox_id);
        self.call_service(SANDBOX_SERVICE, "ShutdownSandbox", &req, timeout)
            .await
    }

    /// Sandboxes created through this connection and not shut down (what containerd's
    /// sandbox store holds for this shim).
    pub fn live_sandboxes(&self) -> Vec<String> {
        lock(&self.shared.sandboxes).iter().cloned().collect()
    }

    sandbox_rpcs! {
        /// Sandbox.StartSandbox.
        start_sandbox, "StartSandbox", StartSandboxRequest, StartSandboxResponse;
        /// Sandbox.Platform.
        sandbox_platform, "Platform", PlatformRequest, PlatformResponse;
        /// Sandbox.StopSandbox.
        stop_sandbox, "StopSandbox", StopSandboxRequest, StopSandboxResponse;
        /// Sandbox.WaitSandbox.
        wait_sandbox, "WaitSandbox", WaitSandboxRequest, WaitSandboxResponse;
        /// Sandbox.SandboxStatus.
        sandbox_status, "SandboxStatus", SandboxStatusRequest, SandboxStatusResponse;
        /// Sandbox.PingSandbox.
        ping_sandbox, "PingSandbox", PingRequest, PingResponse;
        /// Sandbox.SandboxMetrics.
        sandbox_metrics, "SandboxMetrics", SandboxMetricsRequest, SandboxMetricsResponse;
    }

    /// Task.Create; records the task as live on success.
    pub async fn create(
        &self,
        req: CreateTaskRequest,
        timeout: Duration,
    ) -> RpcResult<CreateTaskResponse> {
        let id = req.id.clone();
        let r: CreateTaskResponse = self.call("Create", &req, timeout).await?;
        lock(&self.shared.tasks).insert(id, TaskRecord { pid: r.pid });
        Ok(r)
    }

    /// Task.Delete; an init delete (empty `exec_id`) that succeeds or answers NotFound removes
    /// the task from the live list, as containerd's `shimTask.delete` does.
    pub async fn delete(&self, req: DeleteRequest, timeout: Duration) -> RpcResult<DeleteResponse> {
        let id = req.id.clone();
        let init = req.exec_id.is_empty();
        let r = self.call("Delete", &req, timeout).await;
        let gone = match &r {
            Ok(_) => true,
            Err(RpcError::Status { code, .. }) => *code == ttrpc::Code::NOT_FOUND,
            Err(_) => false,
        };
        if init && gone {
            lock(&self.shared.tasks).remove(&id);
        }
        r
    }

    /// Task.Shutdown (remembered, so closing does not send a second one).
    pub async fn shutdown(&self, req: ShutdownRequest, timeout: Duration) -> RpcResult<Empty> {
        self.shared
            .shutdown_sent
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.call("Shutdown", &req, timeout).await
    }

    /// Whether Shutdown was sent through this connection.
    pub fn shutdown_sent(&self) -> bool {
        self.shared
            .shutdown_sent
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    rpcs! {
        /// Task.State.
        state, "State", StateRequest, StateResponse;
        /// Task.Start.
        start, "Start", StartRequest, StartResponse;
        /// Task.Kill.
        kill, "Kill", KillRequest, Empty;
        /// Task.Wait.
        wait, "Wait", WaitRequest, WaitResponse;
        /// Task.Exec.
        exec, "Exec", ExecProcessRequest, Empty;
        /// Task.Pids.
        pids, "Pids", PidsRequest, PidsResponse;
        /// Task.Pause.
        pause, "Pause", PauseRequest, Empty;
        /// Task.Resume.
        resume, "Resume", ResumeRequest, Empty;
        /// Task.Stats.
        stats, "Stats", StatsRequest, StatsResponse;
        /// Task.CloseIO.
        close_io, "CloseIO", CloseIORequest, Empty;
        /// Task.ResizePty.
        resize_pty, "ResizePty", ResizePtyRequest, Empty;
        /// Task.Update.
        update, "Update", UpdateTaskRequest, Empty;
        /// Task.Checkpoint.
        checkpoint, "Checkpoint", CheckpointTaskRequest, Empty;
        /// Task.Connect.
        connect, "Connect", ConnectRequest, ConnectResponse;
    }
}

/// The `type_url` containerd gives an exec's OCI process spec.
pub const PROCESS_SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// An `ExecProcessRequest` as containerd builds it: the OCI process as JSON in an `Any`, the
/// stdio paths, and `terminal` (which must match `process.terminal`).
pub fn exec_request(
    id: &str,
    exec_id: &str,
    process: &oci_spec::runtime::Process,
    stdio: (String, String, String),
    terminal: bool,
) -> Result<ExecProcessRequest, serde_json::Error> {
    let spec = protobuf::well_known_types::any::Any {
        type_url: PROCESS_SPEC_TYPE_URL.to_string(),
        value: serde_json::to_vec(process)?,
        ..Default::default()
    };
    Ok(ExecProcessRequest {
        id: id.to_string(),
        exec_id: exec_id.to_string(),
        terminal,
        stdin: stdio.0,
        stdout: stdio.1,
        stderr: stdio.2,
        spec: protobuf::MessageField::some(spec),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_kebab_case() {
        let e = RpcError::Status {
            code: ttrpc::Code::FAILED_PRECONDITION,
            message: "x".into(),
        };
        assert_eq!(e.code_name(), "failed-precondition");
        assert_eq!(e.to_string(), "failed-precondition: x");
        assert_eq!(
            RpcError::Timeout(Duration::from_secs(1)).code_name(),
            "deadline-exceeded"
        );
        assert_eq!(RpcError::Transport("x".into()).code_name(), "unavailable");
        assert_eq!(code_name_of(ttrpc::Code::NOT_FOUND), "not-found");
        assert_eq!(code_name_of(ttrpc::Code::ALREADY_EXISTS), "already-exists");
        assert_eq!(
            code_name_of(ttrpc::Code::INVALID_ARGUMENT),
            "invalid-argument"
        );
        assert_eq!(code_name_of(ttrpc::Code::UNIMPLEMENTED), "unimplemented");
    }

    #[test]
    fn service_absent_is_recognised_for_go_and_rust_ttrpc() {
        let go = RpcError::Status {
            code: ttrpc::Code::UNIMPLEMENTED,
            message: "service containerd.task.v3.Task".into(),
        };
        let rust = RpcError::Status {
            code: ttrpc::Code::INVALID_ARGUMENT,
            message: "containerd.task.v2.Task service does not exist".into(),
        };
        assert!(go.is_service_absent() && rust.is_service_absent());
        assert!(!RpcError::Timeout(Duration::ZERO).is_service_absent());
    }
}
