//! `containerd-shim-stub-v2`: a shim that does nothing, for measuring the harness itself. Its
//! `start` runs a server on a socket in the bundle (task API v3, so for containerd 2.x dialects); every Task call answers at once (the init
//! "is" the server process, which exits 0 the moment it is asked); `delete` prints a
//! `DeleteResponse`. A lifecycle through it costs what the mock containerd and TTRPC cost, so
//! the `lifecycle/stub` bench shows the floor under every shim's figure.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::api::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, Empty, KillRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest,
    StateResponse, WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::{create_task, Task};
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;

/// The socket, in the bundle (the start action's and the server's working directory).
const SOCKET: &str = "stub.sock";

fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// Every call answered at once; Shutdown ends the server.
#[derive(Clone)]
struct Stub {
    shutdown: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl Task for Stub {
    async fn connect(&self, _: &TtrpcContext, _: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: std::process::id(),
            ..Default::default()
        })
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        _: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        Ok(CreateTaskResponse {
            pid: std::process::id(),
            ..Default::default()
        })
    }

    async fn start(&self, _: &TtrpcContext, _: StartRequest) -> ttrpc::Result<StartResponse> {
        Ok(StartResponse {
            pid: std::process::id(),
            ..Default::default()
        })
    }

    async fn state(&self, _: &TtrpcContext, r: StateRequest) -> ttrpc::Result<StateResponse> {
        Ok(StateResponse {
            id: r.id,
            pid: std::process::id(),
            status: containerd_shim_protos::types::task::Status::STOPPED.into(),
            exited_at: Some(now()).into(),
            ..Default::default()
        })
    }

    async fn wait(&self, _: &TtrpcContext, _: WaitRequest) -> ttrpc::Result<WaitResponse> {
        Ok(WaitResponse {
            exit_status: 0,
            exited_at: Some(now()).into(),
            ..Default::default()
        })
    }

    async fn kill(&self, _: &TtrpcContext, _: KillRequest) -> ttrpc::Result<Empty> {
        Ok(Empty::new())
    }

    async fn delete(&self, _: &TtrpcContext, _: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        Ok(DeleteResponse {
            pid: std::process::id(),
            exit_status: 0,
            exited_at: Some(now()).into(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _: &TtrpcContext, _: ShutdownRequest) -> ttrpc::Result<Empty> {
        self.shutdown.notify_one();
        Ok(Empty::new())
    }
}

/// The server: listens on the bundle's socket until Shutdown, then removes it.
fn serve() -> ExitCode {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::from(1);
    };
    // Absolute, so `/proc/net/unix` names it as the address does (the harness finds the
    // server by it).
    let sock = std::env::current_dir()
        .map(|d| d.join(SOCKET))
        .unwrap_or_else(|_| PathBuf::from(SOCKET));
    let ok = rt.block_on(async {
        let stub = Stub {
            shutdown: Arc::new(tokio::sync::Notify::new()),
        };
        let done = stub.shutdown.clone();
        let addr = format!("unix://{}", sock.display());
        let mut server = ttrpc::r#async::Server::new()
            .bind(&addr)?
            .register_service(create_task(Arc::new(stub)));
        server.start().await?;
        done.notified().await;
        // The reply to Shutdown leaves before the listener goes.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), server.shutdown()).await;
        Ok::<(), ttrpc::Error>(())
    });
    let _ = std::fs::remove_file(&sock);
    if ok.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `start`: the server in a process group of its own, and its address once it answers.
#[allow(clippy::print_stdout)]
fn start() -> ExitCode {
    let Ok(exe) = std::env::current_exe() else {
        return ExitCode::from(1);
    };
    let _ = std::fs::remove_file(SOCKET);
    let spawned = Command::new(exe)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    if spawned.is_err() {
        return ExitCode::from(1);
    }
    let end = Instant::now() + Duration::from_secs(5);
    while std::os::unix::net::UnixStream::connect(SOCKET).is_err() {
        if Instant::now() > end {
            return ExitCode::from(1);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let Ok(cwd) = std::env::current_dir() else {
        return ExitCode::from(1);
    };
    // Task API v3 (all the generated server offers): the JSON bootstrap of containerd 2.x
    // (core/runtime/v2/shim.go `parseStartResponse`, v2.1.9), which the mock's default dialect
    // reads as 2.x does.
    print!(
        r#"{{"version":3,"address":"unix://{}","protocol":"ttrpc"}}"#,
        cwd.join(SOCKET).display()
    );
    ExitCode::SUCCESS
}

/// `delete`: nothing to clean; the answer containerd decodes.
fn delete() -> ExitCode {
    use std::io::Write;
    let r = DeleteResponse {
        exit_status: 0,
        exited_at: Some(now()).into(),
        ..Default::default()
    };
    let bytes = r.write_to_bytes().unwrap_or_default();
    if std::io::stdout().write_all(&bytes).is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    // The action is the last argument (Go flags first, as containerd passes them).
    match std::env::args().next_back().as_deref() {
        Some("start") => start(),
        Some("delete") => delete(),
        Some("serve") => serve(),
        _ => ExitCode::from(2),
    }
}
