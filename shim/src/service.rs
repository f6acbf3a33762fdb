//! The shim binary's three modes: the `start` action (bind the socket, spawn the server, print the
//! address, or to containerd 2.3's protobuf `BootstrapParams` a protobuf `BootstrapResult`), the
//! `delete` action (clean up from the bundle alone), and the server lifecycle
//! (subreaper, logging to the bundle's `log` FIFO, serving Task v2+v3, exit on Shutdown/SIGTERM).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, SignalKind};

use crate::api::Shim;
use crate::cgroup::Cgroup;
use crate::container::{proc_stat, session_members, EXIT_FILE};
use crate::error::{Error, Result};
use crate::events::{self, timestamp};
use crate::faults::Faults;
use crate::flags::{self, Flags};
use crate::reaper::Reaper;
use crate::spec;
use crate::task::{services, TaskService};

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

/// `unix:///run/containerd/s/<hex sha256(address/namespace/group)>` (containerd's SocketAddress).
pub fn socket_address(address: &str, namespace: &str, group: &str) -> String {
    socket_address_in(SOCKET_DIR, address, namespace, group)
}

/// [`socket_address`] in the directory `dir`.
pub fn socket_address_in(dir: &str, address: &str, namespace: &str, group: &str) -> String {
    let joined = [address, namespace, group]
        .iter()
        .map(|s| s.trim_end_matches('/'))
        .collect::<Vec<_>>()
        .join("/");
    let hash = hex::encode(Sha256::digest(joined.as_bytes()));
    format!("unix://{}/{hash}", dir.trim_end_matches('/'))
}

/// The most `start` reads from stdin (containerd's own shim reads at most 10 MiB,
/// pkg/shim/shim.go v2.3.4).
const STDIN_LIMIT: u64 = 10 << 20;

/// Reads `start`'s stdin (nothing from a terminal).
fn read_stdin() -> Vec<u8> {
    let mut input = Vec::new();
    // SAFETY: isatty on fd 0.
    if unsafe { libc::isatty(0) } == 0 {
        let _ = std::io::stdin().take(STDIN_LIMIT).read_to_end(&mut input);
    }
    input
}

/// containerd 2.3's `BootstrapParams` if that is what `input` holds, `None` for the older stdin
/// (empty, or the runtime options `Any`). containerd's own shim takes any input that decodes
/// (pkg/shim/shim.go v2.3.4), but an options `Any` decodes too: its type URL (field 1) lands in
/// `instance_id` and its value (field 2), when UTF-8, in `namespace`. Decoded params are ours
/// when `instance_id` and `namespace` equal `-id` and `-namespace`; when they disagree, params
/// that carry anything a daemon sends beyond those two fields (an options `Any` has nothing
/// else) are refused, as containerd main's shim refuses them (pkg/shim/compat.go
/// `parseBootstrapParams`: "bootstrap parameters do not match command-line arguments").
pub fn bootstrap_params(input: &[u8], flags: &Flags) -> Result<Option<bootstrap::BootstrapParams>> {
    if input.is_empty() {
        return Ok(None);
    }
    let Ok(p) = <bootstrap::BootstrapParams as Message>::parse_from_bytes(input) else {
        return Ok(None);
    };
    if p.instance_id == flags.id && p.namespace == flags.namespace {
        return Ok(Some(p));
    }
    let from_a_daemon = p.log_level.value() != 0
        || !p.containerd_version.is_empty()
        || !p.containerd_ttrpc_address.is_empty()
        || !p.containerd_grpc_address.is_empty()
        || !p.containerd_binary.is_empty()
        || !p.extensions.is_empty()
        || p.socket_dir.is_some();
    if from_a_daemon {
        return Err(Error::InvalidArgument(format!(
            "bootstrap parameters (instance_id {:?}, namespace {:?}) do not match the command line (-id {:?}, -namespace {:?})",
            p.instance_id, p.namespace, flags.id, flags.namespace
        )));
    }
    Ok(None)
}

/// The shim API version the reaper answers a 2.3 daemon with: 3, as it serves
/// `containerd.task.v3.Task` (and v2) on its socket.
pub const SHIM_API_VERSION: i32 = 3;

/// The `start` action as `main` runs it: reads stdin, starts (or joins) the server and returns
/// what to print: to `BootstrapParams`, a protobuf `BootstrapResult` (version
/// [`SHIM_API_VERSION`], protocol ttrpc), else the bare address (containerd 1.6 to 2.2).
pub fn start_answer(flags: &Flags) -> Result<Vec<u8>> {
    let (addr, bootstrapped) = start_from_stdin(flags)?;
    if !bootstrapped {
        return Ok(addr.into_bytes());
    }
    let result = bootstrap::BootstrapResult {
        version: SHIM_API_VERSION,
        address: addr,
        protocol: "ttrpc".into(),
        ..Default::default()
    };
    result
        .write_to_bytes()
        .map_err(|e| Error::Other(format!("encoding the BootstrapResult: {e}")))
}

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

/// How long a `start` waits for an exiting server of its group to let go of the socket.
const JOIN_WAIT: Duration = Duration::from_secs(3);

/// Reserves a place for container `id` on the live server at `addr` (a `Connect` carrying
/// [`crate::group::JOIN_METADATA`]); `false` when the server refuses (it is exiting) or does not
/// answer within a second.
fn join(addr: &str, id: &str) -> bool {
    let Ok(client) = containerd_shim_protos::Client::connect(addr) else {
        return false;
    };
    let task = containerd_shim_protos::TaskClient::new(client);
    let mut ctx = ttrpc::context::with_timeout(1_000_000_000);
    ctx.add(crate::group::JOIN_METADATA.to_string(), "1".to_string());
    let req = containerd_shim_protos::api::ConnectRequest {
        id: id.to_string(),
        ..Default::default()
    };
    task.connect(ctx, &req).is_ok()
}

/// The `start` action. Returns the address to print. Stdin is read: the options `Any` is
/// ignored; `BootstrapParams` count for their `socket_dir` and log level (see [`start_answer`]).
pub fn start_action(flags: &Flags) -> Result<String> {
    start_from_stdin(flags).map(|(addr, _)| addr)
}

/// Reads `start`'s stdin and starts (or joins) the server: its address, and whether stdin held
/// `BootstrapParams`. The socket goes to their `socket_dir`; the server logs at debug when their
/// log level (2.3) or the `-debug` flag asks for it.
fn start_from_stdin(flags: &Flags) -> Result<(String, bool)> {
    let params = bootstrap_params(&read_stdin(), flags)?;
    let dir = params
        .as_ref()
        .and_then(|p| p.socket_dir.as_deref())
        .filter(|d| !d.is_empty());
    let debug = flags.debug || params.as_ref().is_some_and(|p| p.level().is_debug());
    Ok((start_in(flags, dir, debug)?, params.is_some()))
}

/// `start` with the socket in `socket_dir` (default [`SOCKET_DIR`]), the server at debug level
/// when `debug`.
fn start_in(flags: &Flags, socket_dir: Option<&str>, debug: bool) -> Result<String> {
    if flags.id.is_empty() || flags.namespace.is_empty() {
        return Err(Error::InvalidArgument(
            "start needs -id and -namespace".into(),
        ));
    }
    let bundle = bundle_dir(flags)?;
    let group = spec::load_bundle(&bundle)
        .map(|b| spec::group_of(&b.annotations, &flags.id))
        .unwrap_or_else(|_| flags.id.clone());
    let addr = socket_address_in(
        socket_dir.unwrap_or(SOCKET_DIR),
        &flags.address,
        &flags.namespace,
        &group,
    );
    let path = socket_path(&addr).to_string();
    let address_file = bundle.join("address");
    if let Some(dir) = socket_dir {
        write_atomic(&bundle.join(SOCKET_DIR_FILE), dir)?;
    }
    // A live server serves this group: join it, unless it is on its way out (it then removes
    // its socket at once, and this `start` binds a server of its own).
    let deadline = std::time::Instant::now() + JOIN_WAIT;
    while UnixStream::connect(&path).is_ok() {
        if join(&addr, &flags.id) {
            write_atomic(&address_file, &addr)?;
            return Ok(addr);
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Other(format!(
                "the server on {path} accepts connections but refuses to be joined (exiting?) and kept its socket for {JOIN_WAIT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if Path::new(&path).exists() {
        let _ = std::fs::remove_file(&path);
    }
    if let Some(dir) = Path::new(&path).parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            // A concurrent `start` of the same group won the race: join its server.
            if UnixStream::connect(&path).is_ok() && join(&addr, &flags.id) {
                write_atomic(&address_file, &addr)?;
                return Ok(addr);
            }
            return Err(Error::io(format!("bind {path}"), e));
        }
        Err(e) => return Err(Error::io(format!("bind {path}"), e)),
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod {path}"), e))?;

    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "-namespace",
        &flags.namespace,
        "-id",
        &flags.id,
        "-address",
        &flags.address,
    ]);
    if debug {
        cmd.arg("-debug");
    }
    cmd.current_dir(&bundle)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let lfd = listener.as_raw_fd();
    let max_fd = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft.min(1 << 20) as i32)
        .unwrap_or(1024);
    // SAFETY: only dup2/fcntl (async-signal-safe) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if lfd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(lfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The server inherits stdio (/dev/null) and the listener only. The other fds are
            // marked close-on-exec, not closed: one of them is the pipe on which `spawn` learns
            // whether the exec worked, and closing it here made `spawn` return before the exec
            // (so `start` could exit with the server not yet exec'd, and a failed exec went
            // unreported). CLOSE_RANGE_CLOEXEC needs Linux 5.11; older kernels get a loop.
            const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
            if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, CLOSE_RANGE_CLOEXEC) < 0 {
                for fd in 4..max_fd {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        let _ = std::fs::remove_file(&path);
        Error::io("spawn the shim server", e)
    })?;
    drop(child);
    drop(listener);
    write_atomic(&address_file, &addr)?;
    Ok(addr)
}

fn read_exit_file(bundle: &Path) -> Option<(u32, SystemTime)> {
    let s = std::fs::read_to_string(bundle.join(EXIT_FILE)).ok()?;
    let mut it = s.split_whitespace();
    let status = it.next()?.parse().ok()?;
    let secs: u64 = it.next()?.parse().ok()?;
    let nanos: u32 = it.next()?.parse().ok()?;
    Some((status, SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)))
}

/// The `delete` action: kill what is left of the task, remove its cgroup, return the
/// DeleteResponse (pid from init.pid, the recorded exit or 137, its time or now).
pub fn delete_action(flags: &Flags) -> Result<DeleteResponse> {
    let bundle = bundle_dir(flags)?;
    let pid: i32 = std::fs::read_to_string(bundle.join("init.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let recorded = read_exit_file(&bundle);
    let cg = Cgroup::existing(&bundle);
    if let Some(cg) = &cg {
        if cg.has_freezer() {
            let _ = cg.thaw();
        }
        let end = std::time::Instant::now() + Duration::from_secs(2);
        while cg.kill_all(libc::SIGKILL) > 0 && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        cg.remove();
    } else if pid > 0 && recorded.is_none() {
        // Only while init is alive is its pid still its session id (pid reuse otherwise).
        if proc_stat(pid).map(|s| s.session == pid).unwrap_or(false) {
            for p in session_members(&[pid]) {
                // SAFETY: kill(2) on members of the task's session.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
    }
    remove_dead_socket(&bundle);
    let (status, at) = recorded.unwrap_or((137, SystemTime::now()));
    Ok(DeleteResponse {
        pid: pid.max(0) as u32,
        exit_status: status,
        exited_at: Some(timestamp(at)).into(),
        ..Default::default()
    })
}

/// Removes the socket named by the bundle's `address` file when no server listens on it any more
/// (a killed server cannot remove it itself). A live server (another task of the group) keeps it.
fn remove_dead_socket(bundle: &Path) {
    let Ok(addr) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = Path::new(socket_path(addr.trim()));
    let given = std::fs::read_to_string(bundle.join(SOCKET_DIR_FILE)).ok();
    let dirs = [
        Some(SOCKET_DIR),
        given.as_deref().map(|d| d.trim_end_matches('/')),
    ];
    if !dirs.contains(&path.parent().and_then(Path::to_str)) {
        return;
    }
    if let Err(e) = UnixStream::connect(path) {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            let _ = std::fs::remove_file(path);
        }
    }
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

/// Server mode: serve the Task API until Shutdown (no containers left) or SIGTERM.
pub fn run_server(flags: &Flags, load_faults: fn() -> Result<Faults>) -> Result<()> {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let bundle = bundle_dir(flags)?;
    init_logging(&bundle, flags.debug);
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
    let sock_path = nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(fd)
        .ok()
        .and_then(|a| a.path().map(Path::to_path_buf));
    // The socket file is removed only while it is still ours: once this server has decided to
    // exit, the next `start` of the group may bind a new server on the same path.
    let sock_ino = sock_path
        .as_deref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let remove_socket = move |p: &Path| {
        let ours = std::fs::metadata(p)
            .map(|m| Some(std::os::unix::fs::MetadataExt::ino(&m)) == sock_ino)
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(p);
        }
    };
    let faults = match load_faults() {
        Ok(f) => f,
        Err(e) => {
            if let Some(p) = &sock_path {
                let _ = std::fs::remove_file(p);
            }
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
    let sock = sock_path.clone();
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
        if let Some(p) = &sock {
            remove_socket(p);
        }
        shim.kill_all_tasks().await;
        // Let the Shutdown reply go out and the queued events (e.g. /tasks/delete) leave.
        publisher.flush(Duration::from_secs(5)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown()).await;
        Ok::<(), Error>(())
    });
    if let Some(p) = &sock_path {
        remove_socket(p);
    }
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
pub fn main(load_faults: fn() -> Result<Faults>) -> i32 {
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
        Some("start") => match start_answer(&flags) {
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
mod tests {
    use super::*;

    #[test]
    fn socket_address_matches_containerd() {
        let a = socket_address("/run/containerd/containerd.sock", "default", "123");
        assert_eq!(
            a,
            "unix:///run/containerd/s/0ddfbd72d02b3551e75f3a0ed90b9965b533401be618f43a568bc522764e0ad0"
        );
    }

    #[test]
    fn socket_address_in_another_dir_keeps_the_hash() {
        let a = socket_address("/run/containerd/containerd.sock", "default", "123");
        let b = socket_address_in(
            "/tmp/s/",
            "/run/containerd/containerd.sock",
            "default",
            "123",
        );
        assert_eq!(b, a.replace("/run/containerd/s/", "/tmp/s/"));
    }

    fn start_flags(id: &str, ns: &str) -> Flags {
        Flags {
            id: id.into(),
            namespace: ns.into(),
            ..Default::default()
        }
    }

    #[test]
    fn bootstrap_params_are_told_from_the_legacy_stdin() {
        let params = bootstrap::BootstrapParams {
            instance_id: "c1".into(),
            namespace: "default".into(),
            containerd_ttrpc_address: "/run/c.sock.ttrpc".into(),
            socket_dir: Some("/tmp/s".into()),
            ..Default::default()
        };
        let bytes = params.write_to_bytes().unwrap();
        let got = bootstrap_params(&bytes, &start_flags("c1", "default"))
            .unwrap()
            .unwrap();
        assert_eq!(got.socket_dir.as_deref(), Some("/tmp/s"));
        // Params for another container or namespace are refused, naming both sides.
        let e = bootstrap_params(&bytes, &start_flags("c2", "default")).unwrap_err();
        assert!(
            e.to_string().contains(r#"instance_id "c1""#) && e.to_string().contains(r#"-id "c2""#),
            "{e}"
        );
        assert!(bootstrap_params(&bytes, &start_flags("c1", "k8s.io")).is_err());
        // Empty stdin (ctr without options) and garbage: legacy.
        assert!(bootstrap_params(&[], &start_flags("c1", "default"))
            .unwrap()
            .is_none());
        assert!(bootstrap_params(b"\xff\xff", &start_flags("c1", "default"))
            .unwrap()
            .is_none());
        // An options Any decodes as BootstrapParams (type URL as instance_id, UTF-8 value as
        // namespace), but is not taken for one, even with an id equal to its type URL.
        let any = protobuf::well_known_types::any::Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0x50, 0x01],
            ..Default::default()
        };
        let legacy = any.write_to_bytes().unwrap();
        assert!(<bootstrap::BootstrapParams as Message>::parse_from_bytes(&legacy).is_ok());
        assert!(bootstrap_params(&legacy, &start_flags("c1", "default"))
            .unwrap()
            .is_none());
        assert!(bootstrap_params(
            &legacy,
            &start_flags("containerd.runc.v1.Options", "default")
        )
        .unwrap()
        .is_none());
    }

    #[test]
    fn delete_action_on_an_empty_bundle_reports_137() {
        let dir = tempfile::tempdir().unwrap();
        let flags = Flags {
            bundle: dir.path().display().to_string(),
            id: "reaper-unit-empty".into(),
            namespace: "reaper-unit".into(),
            ..Default::default()
        };
        let r = delete_action(&flags).unwrap();
        assert_eq!((r.pid, r.exit_status), (0, 137));
        std::fs::write(dir.path().join("init.pid"), "4242").unwrap();
        std::fs::write(dir.path().join(EXIT_FILE), "7 100 5\n").unwrap();
        let r = delete_action(&flags).unwrap();
        assert_eq!((r.pid, r.exit_status), (4242, 7));
        assert_eq!(r.exited_at.seconds, 100);
    }
}
