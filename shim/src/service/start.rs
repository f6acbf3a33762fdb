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
pub fn start_answer(flags: &Flags) -> Result<Vec<u8>> {
    let (addr, bootstrapped) = start_from_stdin(flags)?;
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
