//! `containerd-shim-stub-v2`: a shim that does nothing, for measuring the harness, and a real
//! containerd, without a shim's own work. Its `start` forks a server on a socket in the bundle
//! and prints the bare address, which every containerd release reads (task API v2 then, served
//! under both the v2 and v3 names); every Task call answers at once (the init "is" the server
//! process, which exits 0 the moment it is asked); `delete` prints a `DeleteResponse`. A
//! lifecycle through it costs what the mock containerd (or the real one, under `ctr run`) and
//! TTRPC cost, so the `lifecycle/stub` bench and `benches/ctr-run.sh` show the floor under
//! every shim's figure.

use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// The server: serves the listening socket `fd` until Shutdown, then removes the socket file.
fn serve(fd: RawFd, sock: &Path) -> ExitCode {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::from(1);
    };
    let ok = rt.block_on(async {
        let stub = Stub {
            shutdown: Arc::new(tokio::sync::Notify::new()),
        };
        let done = stub.shutdown.clone();
        // The generated code names the service `containerd.task.v3.Task`; containerd 1.6 and
        // 1.7, and 2.x for a shim that answers with a bare address, call the v2 name.
        let mut services = create_task(Arc::new(stub.clone()));
        if let Some(v2) = create_task(Arc::new(stub)).remove("containerd.task.v3.Task") {
            services.insert("containerd.task.v2.Task".to_string(), v2);
        }
        // SAFETY: `fd` is the listening socket `start` bound; nothing else uses it.
        let mut server = unsafe {
            ttrpc::r#async::Server::new()
                .register_service(services)
                .add_unix_listener(fd)
        }?;
        server.start().await?;
        done.notified().await;
        // The Shutdown reply is queued before the handler returns; one turn of the scheduler
        // lets the connection write it before the server closes its connections.
        tokio::task::yield_now().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), server.shutdown()).await;
        Ok::<(), ttrpc::Error>(())
    });
    let _ = std::fs::remove_file(sock);
    if ok.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `start`: binds the socket, forks the server (its own process group, /dev/null as stdio, so
/// that the output pipe closes when `start` exits) and prints the address. No second exec and
/// no polling: the least a shim's `start` can do.
#[allow(clippy::print_stdout)]
fn start() -> ExitCode {
    let Ok(cwd) = std::env::current_dir() else {
        return ExitCode::from(1);
    };
    // Absolute, so `/proc/net/unix` names it as the address does (the harness finds the
    // server by it).
    let sock = cwd.join(SOCKET);
    let _ = std::fs::remove_file(&sock);
    let Ok(listener) = std::os::unix::net::UnixListener::bind(&sock) else {
        return ExitCode::from(1);
    };
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return ExitCode::from(1);
    };
    // SAFETY: fork(2) of this single-threaded process; the child then only uses its own copy.
    match unsafe { libc::fork() } {
        -1 => return ExitCode::from(1),
        0 => {
            // SAFETY: setpgid and dup2 on this process's own fds.
            unsafe {
                libc::setpgid(0, 0);
                for fd in 0..3 {
                    libc::dup2(null.as_raw_fd(), fd);
                }
            }
            drop(null);
            return serve(listener.into_raw_fd(), &sock);
        }
        _ => {}
    }
    // The bare address: containerd 1.6 reads nothing else (runtime/v2/shim.go `newShim`,
    // v1.6.20), and 2.x takes it as task API v2 (core/runtime/v2/shim.go `parseStartResponse`,
    // v2.1.9).
    print!("unix://{}", sock.display());
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
        _ => ExitCode::from(2),
    }
}
