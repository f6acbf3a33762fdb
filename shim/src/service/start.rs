//! The `start` action: the socket address (containerd's hash of address, namespace and group),
//! what containerd 2.3 sends on stdin (`BootstrapParams`) and the answer it reads, joining a
//! group's running server, or binding the socket and spawning the server.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use containerd_shim_protos::protobuf::Message;
use sha2::{Digest, Sha256};

use super::{bundle_dir, socket_path, write_atomic, SOCKET_DIR, SOCKET_DIR_FILE};
use crate::error::{Error, Result};
use crate::flags::Flags;
use crate::spec;

use super::LoadFaults;

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
/// [`SHIM_API_VERSION`], protocol ttrpc); for a pod of 2.0 to 2.2's shim sandbox controller the
/// same as JSON; else the bare address (containerd 1.6 to 2.2).
pub fn start_answer(flags: &Flags, load_faults: LoadFaults) -> Result<Vec<u8>> {
    let (addr, bootstrapped) = start_from_stdin(flags, load_faults)?;
    if !bootstrapped {
        let pod_of_2x = std::env::current_dir().is_ok_and(|d| started_by_shim_sandboxer(&d));
        if pod_of_2x {
            // containerd 2.0 to 2.2 read this JSON (`parseStartResponse`, core/runtime/v2/shim.go
            // at v2.1.9); at version 3 the pod's containers join this server through its
            // bootstrap.json instead of a `start` each (`ShimManager.Start`, shim_manager.go).
            let answer = serde_json::json!({
                "version": SHIM_API_VERSION,
                "address": addr,
                "protocol": "ttrpc",
            });
            return Ok(answer.to_string().into_bytes());
        }
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

/// containerd's shim sandbox controller, the plugin `io.containerd.sandbox.controller.v1.shim`
/// of 2.0 and later (plugins/sandbox/controller.go at v2.1.9), keeps the bundles of the pods it
/// starts shims for in its own state dir, `<state>/<plugin>/<namespace>/<id>`: no 1.x daemon
/// starts a shim there, and no 2.x daemon starts one there but for a pod.
const SHIM_SANDBOXER_DIR: &str = "io.containerd.sandbox.controller.v1.shim";

/// Whether `bundle` (the cwd `start` runs in) is a pod's under containerd's shim sandbox
/// controller, which takes a JSON answer at version 3.
pub fn started_by_shim_sandboxer(bundle: &std::path::Path) -> bool {
    bundle
        .parent()
        .and_then(std::path::Path::parent)
        .and_then(std::path::Path::file_name)
        .is_some_and(|n| n == SHIM_SANDBOXER_DIR)
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
pub fn start_action(flags: &Flags, load_faults: LoadFaults) -> Result<String> {
    start_from_stdin(flags, load_faults).map(|(addr, _)| addr)
}

/// Reads `start`'s stdin and starts (or joins) the server: its address, and whether stdin held
/// `BootstrapParams`. The socket goes to their `socket_dir`; the server logs at debug when their
/// log level (2.3) or the `-debug` flag asks for it.
fn start_from_stdin(flags: &Flags, load_faults: LoadFaults) -> Result<(String, bool)> {
    let params = bootstrap_params(&read_stdin(), flags)?;
    let dir = params
        .as_ref()
        .and_then(|p| p.socket_dir.as_deref())
        .filter(|d| !d.is_empty());
    let debug = flags.debug || params.as_ref().is_some_and(|p| p.level().is_debug());
    Ok((start_in(flags, dir, debug, load_faults)?, params.is_some()))
}

/// `start` with the socket in `socket_dir` (default [`SOCKET_DIR`]), the server at debug level
/// when `debug`.
fn start_in(
    flags: &Flags,
    socket_dir: Option<&str>,
    debug: bool,
    load_faults: LoadFaults,
) -> Result<String> {
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

    let server = Flags {
        namespace: flags.namespace.clone(),
        id: flags.id.clone(),
        address: flags.address.clone(),
        debug,
        ..Flags::default()
    };
    let spawned = if single_threaded() {
        fork_server(&server, &bundle, &listener, load_faults)
    } else {
        exec_server(&server, &bundle, &listener)
    };
    if let Err(e) = spawned {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    drop(listener);
    write_atomic(&address_file, &addr)?;
    Ok(addr)
}

/// Whether this process has one thread (`/proc/self/task` lists it alone): then a forked child
/// may go on running anything, as nothing else held a lock at the fork.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// The server as a forked child of `start` that goes straight on to serve, without a second
/// exec of this binary (~1 ms of the container's start, docs/performance.md). Only for a
/// single-threaded `start` (a `join` attempt may have left a TTRPC client's threads behind).
/// The child gets what [`exec_server`] would give it: its own process group, the bundle as
/// cwd, /dev/null as stdio (containerd reads `start`'s output until every writer is gone, so
/// the server must not hold it) and the listener as fd 3, nothing else.
fn fork_server(
    server: &Flags,
    bundle: &Path,
    listener: &UnixListener,
    load_faults: LoadFaults,
) -> Result<()> {
    // SAFETY: fork(2) in a single-threaded process (checked by the caller): the child owns a
    // consistent copy of everything, allocator included.
    match unsafe { libc::fork() } {
        -1 => Err(Error::io(
            "fork the shim server",
            std::io::Error::last_os_error(),
        )),
        0 => {
            let code = match become_server(server, bundle, listener.as_raw_fd()) {
                Ok(()) => match super::run_server(server, load_faults) {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::error!("server: {e}");
                        1
                    }
                },
                Err(_) => 1,
            };
            std::process::exit(code)
        }
        _ => Ok(()),
    }
}

/// In the forked server: its own process group, the bundle as cwd, /dev/null on 0-2, the
/// listener on 3 and every other inherited fd closed, and the command line an exec'd server has.
fn become_server(server: &Flags, bundle: &Path, lfd: i32) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let mut argv = vec![argv0.as_encoded_bytes()];
    argv.extend(server_args(server).iter().map(|a| a.as_bytes()));
    set_cmdline(&argv);
    nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))?;
    std::env::set_current_dir(bundle)?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into_raw_fd();
    // SAFETY: dup2/close on fds of this (single-threaded) process; nothing holds them as
    // owned Rust values past this point but the listener, which is moved to fd 3.
    unsafe {
        for fd in 0..3 {
            if libc::dup2(null, fd) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if lfd != 3 && libc::dup2(lfd, 3) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) < 0 {
            for fd in 4..fd_limit() {
                libc::close(fd);
            }
        }
    }
    Ok(())
}

/// The server's flags on a command line (after the binary's name).
fn server_args(server: &Flags) -> Vec<&str> {
    let mut args = vec![
        "-namespace",
        &server.namespace,
        "-id",
        &server.id,
        "-address",
        &server.address,
    ];
    if server.debug {
        args.push("-debug");
    }
    args
}

/// Makes `/proc/self/cmdline` read `argv` (what `ps` shows, and what tells a server from a
/// `start` there), as setproctitle(3) does: written over the process's argument area, the rest
/// zeroed. The area is the one the kernel reports (`arg_start` and `arg_end`, fields 48 and 49
/// of `/proc/self/stat`), used only if it holds exactly what `/proc/self/cmdline` reads; left
/// as is when anything does not match or `argv` does not fit.
fn set_cmdline(argv: &[&[u8]]) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    let Some(fields) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return;
    };
    // Field 3 (the state) is the first after the command's closing parenthesis.
    let mut fields = fields.split_whitespace().skip(48 - 3);
    let mut next = || fields.next().and_then(|f| f.parse::<usize>().ok());
    let (Some(start), Some(end)) = (next(), next()) else {
        return;
    };
    let Ok(current) = std::fs::read("/proc/self/cmdline") else {
        return;
    };
    let len = end.saturating_sub(start);
    let mut title: Vec<u8> = argv
        .iter()
        .flat_map(|a| a.iter().copied().chain([0]))
        .collect();
    if len == 0 || current.len() != len || title.len() > len {
        return;
    }
    title.resize(len, 0);
    // SAFETY: [start, end) is this process's argument area as the kernel reports it: mapped,
    // writable (the initial stack) and, as checked here, holding the command line. Rust keeps
    // no reference into it: the flags were parsed into owned strings.
    unsafe {
        let area = std::slice::from_raw_parts(start as *const u8, len);
        if area == current.as_slice() {
            std::ptr::copy_nonoverlapping(title.as_ptr(), start as *mut u8, len);
        }
    }
}

/// One past the highest fd number this process may have open (its soft RLIMIT_NOFILE, at most
/// 2^20): how far the fd loops go where close_range(2) is missing (before Linux 5.9/5.11).
fn fd_limit() -> i32 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft.min(1 << 20) as i32)
        .unwrap_or(1024)
}

/// The server as a new exec of this binary (`start` is multi-threaded): the flags on its
/// command line, the listener as fd 3.
fn exec_server(server: &Flags, bundle: &Path, listener: &UnixListener) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(server_args(server));
    cmd.current_dir(bundle)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let lfd = listener.as_raw_fd();
    let max_fd = fd_limit();
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
    cmd.spawn()
        .map(drop)
        .map_err(|e| Error::io("spawn the shim server", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn only_a_bundle_of_the_shim_sandbox_controller_is_a_2x_pod() {
        let pod = Path::new("/run/containerd/io.containerd.sandbox.controller.v1.shim/k8s.io/p1");
        assert!(started_by_shim_sandboxer(pod));
        for other in [
            "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1",
            "/run/containerd/io.containerd.sandbox.controller.v1.shim/k8s.io",
            "/io.containerd.sandbox.controller.v1.shim",
            "/",
        ] {
            assert!(!started_by_shim_sandboxer(Path::new(other)), "{other}");
        }
    }
}
