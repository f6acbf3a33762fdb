//! The shim binary's three modes: the `start` action (bind the socket, spawn the server, print the
//! address, or to containerd 2.3's protobuf `BootstrapParams` a protobuf `BootstrapResult`), the
//! `delete` action (clean up from the bundle alone), and the server lifecycle
//! (subreaper, logging to the bundle's `log` FIFO, serving Task v2+v3, exit on Shutdown/SIGTERM).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use tokio::signal::unix::{signal, SignalKind};

use crate::api::Shim;
use crate::error::{Error, Result};
use crate::events::{self};
use crate::faults::Faults;
use crate::flags::{self, Flags};
use crate::reaper::Reaper;
use crate::task::{services, TaskService};

mod delete;
mod hangup;
mod start;

pub use delete::delete_action;
pub use start::{
    bootstrap_params, socket_address, socket_address_in, start_action, start_answer,
    SHIM_API_VERSION,
};

/// Where containerd expects shim sockets (hard-coded, independent of containerd's `--state`).
pub const SOCKET_DIR: &str = "/run/containerd/s";
/// Set (non-empty) in the server's environment to run tasks without cgroups: kill-all, Pids and
/// Pause then work on the tasks' sessions (SIGSTOP/SIGCONT), Stats on /proc.
pub const NO_CGROUP_ENV: &str = "REAPER_NO_CGROUP";
/// The runtime name.
pub const RUNTIME: &str = "io.containerd.reaper.v2";

/// The bundle file where `start` records a socket directory other than [`SOCKET_DIR`] (given in
/// `BootstrapParams.socket_dir`), for the `delete` action, which is not given it.
pub const SOCKET_DIR_FILE: &str = "socket-dir";

/// How the server loads its faults (none for the reaper; `FAULTY_SHIM` for the faulty shim).
pub type LoadFaults = fn() -> Result<Faults>;

fn socket_path(addr: &str) -> &str {
    addr.strip_prefix("unix://").unwrap_or(addr)
}

fn bundle_dir(flags: &Flags) -> Result<PathBuf> {
    if flags.bundle.is_empty() {
        std::env::current_dir().map_err(|e| Error::io("cwd", e))
    } else {
        Ok(PathBuf::from(&flags.bundle))
    }
}

/// Writes `contents` to `path` atomically (temp file + rename).
pub fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("file")
    ));
    std::fs::write(&tmp, contents).map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("rename to {}", path.display()), e))
}

fn init_logging(bundle: &Path, debug: bool) {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: with no reader the open fails (ENXIO) instead of blocking the server.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"));
    let Ok(f) = f else {
        return;
    };
    let _ = crate::io::set_nonblocking(f.as_raw_fd(), false);
    let level = if debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let _ = tracing::subscriber::set_global_default(crate::logging::LineLogger::new(f, level));
}

/// The server's listening socket: bound here (`-socket`) or inherited from `start` on fd 3, and
/// removed at most once, and only while the file at its path is still this socket: once this
/// server has decided to exit, the next `start` of the group may bind a new server on the same
/// path. An inode number alone does not tell: ext4 gives the new socket the one the old just
/// freed (seen: a server winding down removed its successor's socket, and containerd 2.3.4
/// failed the next Create with "dial unix ...: no such file"); the change time tells them apart.
struct ServerSocket {
    path: Option<std::path::PathBuf>,
    /// (device, inode, ctime, ctime nsec) of the socket file as the server started.
    identity: Option<(u64, u64, i64, i64)>,
    removed: std::sync::atomic::AtomicBool,
}

impl ServerSocket {
    /// The listening fd and its socket.
    fn listen(flags: &Flags) -> Result<(i32, ServerSocket)> {
        let fd = if flags.socket.is_empty() {
            3
        } else {
            let p = socket_path(&flags.socket);
            let _ = std::fs::remove_file(p);
            let l = UnixListener::bind(p).map_err(|e| Error::io(format!("bind {p}"), e))?;
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
            l.into_raw_fd()
        };
        crate::pty::set_cloexec(fd)
            .map_err(|e| Error::Other(format!("no listening socket on fd 3 ({e}); run `start`")))?;
        let path = nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(fd)
            .ok()
            .and_then(|a| a.path().map(Path::to_path_buf));
        let identity = path
            .as_deref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| Self::identity(&m));
        let removed = std::sync::atomic::AtomicBool::new(false);
        Ok((
            fd,
            ServerSocket {
                path,
                identity,
                removed,
            },
        ))
    }

    fn identity(m: &std::fs::Metadata) -> (u64, u64, i64, i64) {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
    }

    /// Removes the socket file if it is still this server's (the first call only).
    fn remove(&self) {
        if self.removed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let Some(p) = &self.path else { return };
        let ours = std::fs::metadata(p)
            .map(|m| Some(Self::identity(&m)) == self.identity)
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Server mode: serve the Task API until Shutdown (no containers left) or SIGTERM.
pub fn run_server(flags: &Flags, load_faults: LoadFaults) -> Result<()> {
    crate::reaper::become_subreaper();
    let bundle = bundle_dir(flags)?;
    init_logging(&bundle, flags.debug);
    let (fd, socket) = ServerSocket::listen(flags)?;
    let sock_path = socket.path.clone();
    let faults = match load_faults() {
        Ok(f) => f,
        Err(e) => {
            socket.remove();
            return Err(e);
        }
    };
    tracing::info!(pid = std::process::id(), socket = ?sock_path, ?faults, "server starting");
    // The faulty shim's broken replies: the real server moves behind a proxy on our socket.
    let (serve_fd, proxy) = match faults.reply {
        Some((kind, method)) => {
            let inner = crate::wirefault::inner_name(std::process::id());
            let inner_fd = crate::wirefault::bind_inner(&inner)?;
            (inner_fd, Some((fd, inner, kind, method)))
        }
        None => (fd, None),
    };
    if faults.grandchild {
        leave_grandchild(&bundle);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))?;
    let ns = flags.namespace.clone();
    let socket = Arc::new(socket);
    let socket_at_exit = socket.clone();
    let res = rt.block_on(async move {
        // Handlers first: a SIGTERM from now on is an orderly exit that removes the socket.
        let mut term = signal(SignalKind::terminate()).map_err(|e| Error::io("SIGTERM", e))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::io("SIGINT", e))?;
        let reaper = Reaper::new();
        reaper.start()?;
        let publisher = Arc::new(events::start(
            std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
            ns.clone(),
            !faults.no_event_retry,
        ));
        let cgroups = std::env::var(NO_CGROUP_ENV)
            .map(|v| v.is_empty())
            .unwrap_or(true);
        let shim = Shim::new(ns, reaper, publisher.clone(), faults, cgroups);
        let svc = TaskService { shim: shim.clone() };
        if let Some((outer, inner, kind, method)) = proxy {
            crate::wirefault::spawn(outer, inner, kind, method)?;
        }
        let clients = hangup::Clients::of(serve_fd);
        // SAFETY: serve_fd is our listening socket and nothing else uses it.
        let mut server = unsafe {
            ttrpc::asynchronous::Server::new()
                .register_service(services(svc))
                .add_unix_listener(serve_fd)
        }
        .map_err(|e| Error::Other(format!("ttrpc listener: {e}")))?;
        server
            .start()
            .await
            .map_err(|e| Error::Other(format!("ttrpc server: {e}")))?;
        let mut exit_rx = shim.exit.subscribe();
        tokio::select! {
            _ = exit_rx.wait_for(|v| *v) => tracing::info!("shutdown requested"),
            _ = term.recv(), if !faults.ignore_sigterm => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
        // Refuse joins from now on, and let go of the socket at once so that a `start` of the
        // group that comes while this server winds down binds a server of its own.
        shim.membership.try_exit("", 0, true);
        socket_at_exit.remove();
        shim.kill_all_tasks().await;
        // The queued events (e.g. /tasks/delete) leave first.
        publisher.flush(Duration::from_secs(5)).await;
        // The RPC that asked for the exit (Shutdown, ShutdownSandbox, a Delete) is answered
        // meanwhile; its client hangs up once it has the reply.
        if let Some(c) = &clients {
            c.wait_hangup(hangup::CLIENT_HANGUP).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown()).await;
        Ok::<(), Error>(())
    });
    socket.remove();
    tracing::info!("server exiting");
    res
}

/// The faulty shim's `grandchild`: a `sh` that leaves a `sleep` in a session of its own (still
/// in the bundle, a descendant of this subreaper) and exits.
fn leave_grandchild(bundle: &Path) {
    let status = std::process::Command::new("/bin/sh")
        .args(["-c", "setsid sleep 3600 </dev/null >/dev/null 2>&1 &"])
        .current_dir(bundle)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    tracing::warn!(?status, "faulty: left a grandchild");
}

/// The built-in pause process of a pod sandbox: sleeps until SIGTERM or SIGINT, then exits 0.
pub fn pause_action() -> i32 {
    // SAFETY: signal-mask calls on a local sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut sig = 0;
        while libc::sigwait(&set, &mut sig) != 0 {}
    }
    0
}

/// Entry point shared by the real and the faulty binary; returns the process exit code.
/// `load_faults` is called once, at server start.
#[allow(clippy::print_stdout)]
pub fn main(load_faults: LoadFaults) -> i32 {
    let flags = match flags::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            // Never stderr: containerd concatenates it into the `start` output.
            print!("{e}");
            return 2;
        }
    };
    if flags.version {
        println!(
            "containerd-shim-reaper-v2 {} ({RUNTIME})",
            env!("CARGO_PKG_VERSION")
        );
        return 0;
    }
    if flags.info {
        // SAFETY: isatty on fd 0.
        if unsafe { libc::isatty(0) } == 0 {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        }
        let info = RuntimeInfo {
            name: RUNTIME.to_string(),
            version: Some(RuntimeVersion {
                version: env!("CARGO_PKG_VERSION").to_string(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let mut out = std::io::stdout();
        let _ = out.write_all(&info.write_to_bytes().unwrap_or_default());
        let _ = out.flush();
        return 0;
    }
    match flags.action.as_deref() {
        Some("start") => match start_answer(&flags, load_faults) {
            Ok(answer) => {
                let mut out = std::io::stdout();
                let _ = out.write_all(&answer);
                let _ = out.flush();
                0
            }
            Err(e) => {
                print!("reaper start: {e}");
                1
            }
        },
        Some("pause") => pause_action(),
        Some("delete") => match delete_action(&flags) {
            Ok(resp) => {
                let bytes = resp.write_to_bytes().unwrap_or_default();
                let mut out = std::io::stdout();
                let _ = out.write_all(&bytes);
                let _ = out.flush();
                0
            }
            Err(e) => {
                eprintln!("reaper delete: {e}");
                1
            }
        },
        None => match run_server(&flags, load_faults) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("server: {e}");
                1
            }
        },
        Some(other) => {
            print!("unknown action {other:?} (want start or delete)");
            2
        }
    }
}

#[cfg(test)]
mod tests;
