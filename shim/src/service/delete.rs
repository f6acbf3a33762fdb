//! The `delete` action: cleaning up from the bundle alone (the exit file, the server's socket
//! when nothing serves it) and answering as a killed task.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::api::DeleteResponse;

use super::{bundle_dir, socket_path, SOCKET_DIR, SOCKET_DIR_FILE};
use crate::cgroup::Cgroup;
use crate::container::{proc_stat, session_members, EXIT_FILE};
use crate::error::Result;
use crate::events::timestamp;
use crate::flags::Flags;

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
