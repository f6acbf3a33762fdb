//! What a shim leaves behind: processes (by pid, process group and descent), zombies, socket
//! files and mounts under the bundle; plus the /proc look-ups that find a leaked server by the
//! socket it listens on (`/proc/net/unix` inode → `/proc/<pid>/fd`). Everything found is ended
//! by pid, never by name.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pidguard::{end_found, group_exists};
use crate::procfs::{all_processes, is_alive, proc_info, processes_since, PidMark, ProcInfo};

/// The class of a leftover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeakKind {
    /// The shim server (or another process the shim started) still running.
    Process,
    /// A process still in the process group of the `start` action or of the server.
    ProcessGroup,
    /// An unreaped child of the shim.
    Zombie,
    /// The shim's socket file still on disk after the server exited.
    Socket,
    /// Something still mounted under the bundle (e.g. `rootfs`).
    Mount,
    /// A host process still using the bundle (its cwd or an open file is inside it).
    BundleInUse,
}

/// One leftover, reported and then cleaned up by the harness.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Leak {
    /// What it is.
    pub kind: LeakKind,
    /// Human-readable detail (`pid 123 (containerd-shim) still alive`).
    pub detail: String,
    /// The process, when it is one.
    pub pid: Option<i32>,
    /// The path, when it is a file or a mount.
    pub path: Option<PathBuf>,
    /// Whether the harness ended/removed it afterwards.
    pub cleaned: bool,
}

/// Inodes of unix sockets bound to `name` (`/path` or `@abstract`) from `/proc/net/unix`.
pub fn unix_socket_inodes(name: &str) -> Vec<u64> {
    let Ok(text) = std::fs::read_to_string("/proc/net/unix") else {
        return vec![];
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path
            if f.len() >= 8 && f[7..].join(" ") == name {
                f[6].parse().ok()
            } else {
                None
            }
        })
        .collect()
}

/// Pids (other than this process) holding any of `inodes` as `socket:[inode]` fds.
pub fn pids_holding_sockets(inodes: &[u64]) -> Vec<i32> {
    pids_holding_sockets_since(inodes, 0)
}

/// Like [`pids_holding_sockets`], among processes started at or after `not_before` (clock
/// ticks since boot) only: the fds of older processes are never read.
pub fn pids_holding_sockets_since(inodes: &[u64], not_before: u64) -> Vec<i32> {
    if inodes.is_empty() {
        return vec![];
    }
    holders_among(
        inodes,
        all_processes()
            .into_iter()
            .filter(|p| p.starttime >= not_before),
    )
}

/// Which of `candidates` (never this process) hold any of `inodes` as `socket:[inode]` fds.
fn holders_among(inodes: &[u64], candidates: impl IntoIterator<Item = ProcInfo>) -> Vec<i32> {
    let wanted: HashSet<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let me = std::process::id() as i32;
    let mut out = BTreeSet::new();
    for p in candidates {
        if p.pid == me {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(format!("/proc/{}/fd", p.pid)) else {
            continue;
        };
        for e in rd.flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                if wanted.contains(t.to_string_lossy().as_ref()) {
                    out.insert(p.pid);
                    break;
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The live server holding the socket of `address`, started at or after `not_before` (clock
/// ticks since boot). With `mark` (taken before the `start` action was spawned), the processes
/// started since are looked at first, so that usually only their `/proc` entries are read; when
/// none of them holds the socket, every process started since `not_before` is.
pub fn socket_server_since(address: &str, not_before: u64, mark: Option<PidMark>) -> Option<i32> {
    let name = crate::dialect::proc_net_unix_name(address)?;
    let inodes = unix_socket_inodes(&name);
    if inodes.is_empty() {
        return None;
    }
    let live = |p: &i32| proc_info(*p).is_some_and(|i| i.state != 'Z');
    if mark.is_some() {
        let candidates = processes_since(mark)
            .into_iter()
            .filter(|p| p.starttime >= not_before);
        if let Some(p) = holders_among(&inodes, candidates).into_iter().find(live) {
            return Some(p);
        }
    }
    pids_holding_sockets_since(&inodes, not_before)
        .into_iter()
        .find(live)
}

/// Pids of the processes listening on (or serving connections of) the socket of `address`.
pub fn socket_owners(address: &str) -> Vec<i32> {
    match crate::dialect::proc_net_unix_name(address) {
        Some(name) => pids_holding_sockets(&unix_socket_inodes(&name)),
        None => vec![],
    }
}

/// Like [`socket_owners`], keeping only processes started no earlier than `not_before` (the
/// `start` action's start time): a shim naming someone else's socket (containerd's own, say)
/// must never get that process killed.
pub fn socket_owners_since(address: &str, not_before: u64) -> Vec<i32> {
    match crate::dialect::proc_net_unix_name(address) {
        Some(name) => pids_holding_sockets_since(&unix_socket_inodes(&name), not_before),
        None => vec![],
    }
}

/// Every `unix://` address (or bare `/run/...` socket path) mentioned in a text (e.g. JSON output).
pub fn addresses_in(text: &str) -> Vec<String> {
    // An address ends at whitespace, JSON punctuation, or a control or replacement character:
    // in a protobuf `BootstrapResult` (containerd 2.3) the next field's tag byte follows it.
    let re = regex::Regex::new(r#"unix://[^\s"',}\x00-\x1f\x7f\u{fffd}]+"#).expect("static regex");
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

/// Mount points at or under `dir` (from `/proc/self/mountinfo`), shallowest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|p| p.components().count());
    v
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| c.is_ascii_digit()) {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the leak check looks at after one shim's life.
#[derive(Debug, Clone, Default)]
pub struct LeakScope {
    /// The server pid (if known).
    pub server_pid: Option<i32>,
    /// Process groups to scan (`start` action's and server's).
    pub pgids: Vec<i32>,
    /// Descendants of the server seen while it lived.
    pub descendants: Vec<ProcInfo>,
    /// The shim's socket file, if a path.
    pub socket: Option<PathBuf>,
    /// Directories checked for leftover mounts (bundle `rootfs/`, the busybox rootfs).
    pub dirs: Vec<PathBuf>,
    /// The bundle directory: no process may still use it.
    pub bundle: Option<PathBuf>,
    /// Only processes started at or after this (clock ticks since boot) count as using the
    /// bundle: a user's shell sitting in it is not the shim's doing.
    pub not_before: u64,
    /// Pids never reported or ended (a server still serving other containers).
    pub spare: Vec<i32>,
    /// The pid allocation before the shim's `start` was spawned: the process-group and bundle
    /// checks read only the processes started since (every process without it).
    pub mark: Option<PidMark>,
}

/// Processes other than this one whose cwd or an open file lies under `dir`, with what it is.
pub fn processes_using(dir: &Path) -> Vec<(ProcInfo, PathBuf)> {
    processes_using_among(dir, all_processes())
}

/// Like [`processes_using`], looking only at `candidates` (e.g. the processes started since a
/// shim was launched: the cwd and fds of the others are never read).
pub fn processes_using_among(
    dir: &Path,
    candidates: impl IntoIterator<Item = ProcInfo>,
) -> Vec<(ProcInfo, PathBuf)> {
    let me = std::process::id() as i32;
    let my_exe = std::fs::read_link("/proc/self/exe").ok();
    let mut out = vec![];
    for p in candidates {
        if p.pid == me || p.state == 'Z' {
            continue;
        }
        // A child this process is spawning right now (forked, not yet exec'd) briefly holds
        // copies of all our fds, e.g. other shims' `log` FIFOs: it is not a leftover.
        if p.ppid == me
            && my_exe.is_some()
            && std::fs::read_link(format!("/proc/{}/exe", p.pid)).ok() == my_exe
        {
            continue;
        }
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", p.pid)).ok();
        let mut hit = cwd.filter(|c| c.starts_with(dir));
        if hit.is_none() {
            if let Ok(rd) = std::fs::read_dir(format!("/proc/{}/fd", p.pid)) {
                hit = rd
                    .flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .find(|t| t.starts_with(dir));
            }
        }
        if let Some(h) = hit {
            out.push((p, h));
        }
    }
    out
}

/// Checks `scope` for leftovers, reports each, then ends/removes them (by pid / path).
pub fn check_and_clean(scope: &LeakScope) -> Vec<Leak> {
    let mut leaks = vec![];
    let mut to_kill: BTreeSet<i32> = BTreeSet::new();
    surviving_processes(scope, &mut leaks, &mut to_kill);
    let procs = scanned_processes(scope);
    group_members(scope, &procs, &mut leaks, &mut to_kill);
    let killed: HashSet<i32> = to_kill
        .iter()
        .copied()
        .filter(|&pid| end_found(pid, Duration::from_secs(2)))
        .collect();
    for l in leaks.iter_mut() {
        if let Some(pid) = l.pid {
            l.cleaned = killed.contains(&pid) || !is_alive(pid);
        }
    }
    leaks.extend(socket_left(scope));
    leaks.extend(bundle_users(scope, &procs, &to_kill));
    leaks.extend(mounts_left(scope));
    leaks
}

/// The server still alive, and the descendants seen while it lived that still run (to end) or
/// are zombies no parent reaped.
fn surviving_processes(scope: &LeakScope, leaks: &mut Vec<Leak>, to_kill: &mut BTreeSet<i32>) {
    if let Some(pid) = scope.server_pid {
        if let Some(p) = proc_info(pid).filter(|p| p.state != 'Z') {
            leaks.push(Leak {
                kind: LeakKind::Process,
                detail: format!("shim server pid {pid} ({}) still alive", p.comm),
                pid: Some(pid),
                path: None,
                cleaned: false,
            });
            to_kill.insert(pid);
        }
    }
    for d in &scope.descendants {
        match proc_info(d.pid) {
            // Same pid, same command: still the process we saw.
            Some(p) if p.comm == d.comm && !to_kill.contains(&p.pid) => {
                if p.state == 'Z' {
                    leaks.push(Leak {
                        kind: LeakKind::Zombie,
                        detail: format!(
                            "zombie pid {} ({}) not reaped by parent {}",
                            p.pid, p.comm, p.ppid
                        ),
                        pid: Some(p.pid),
                        path: None,
                        cleaned: false,
                    });
                } else {
                    leaks.push(Leak {
                        kind: LeakKind::Process,
                        detail: format!(
                            "process pid {} ({}) started under the shim still alive",
                            p.pid, p.comm
                        ),
                        pid: Some(p.pid),
                        path: None,
                        cleaned: false,
                    });
                    to_kill.insert(p.pid);
                }
            }
            _ => {}
        }
    }
}

/// One /proc scan for the process-group check and the bundle check (empty when neither runs).
fn scanned_processes(scope: &LeakScope) -> Vec<ProcInfo> {
    // One /proc scan serves the process-group check and the bundle check (which reads the cwd
    // and fds only of processes started since the shim's launch). The shim's groups were made
    // after the mark, so their members are normally among the processes started since; should
    // a live group have none there, every process is read.
    let live_groups: Vec<i32> = scope
        .pgids
        .iter()
        .copied()
        .filter(|g| group_exists(*g))
        .collect();
    if !live_groups.is_empty() || scope.bundle.is_some() {
        let recent = processes_since(scope.mark);
        if live_groups
            .iter()
            .all(|g| recent.iter().any(|p| p.pgrp == *g))
        {
            recent
        } else {
            all_processes()
        }
    } else {
        vec![]
    }
}

/// Members of the shim's process groups still alive (other than this process and its group,
/// and the spare pids).
fn group_members(
    scope: &LeakScope,
    procs: &[ProcInfo],
    leaks: &mut Vec<Leak>,
    to_kill: &mut BTreeSet<i32>,
) {
    let me = std::process::id() as i32;
    let my_pgrp = nix::unistd::getpgrp().as_raw();
    if !scope.pgids.is_empty() {
        for p in procs.iter().cloned() {
            if p.pid != me
                && scope.pgids.contains(&p.pgrp)
                && p.pgrp != my_pgrp
                && p.state != 'Z'
                && !to_kill.contains(&p.pid)
                && !scope.spare.contains(&p.pid)
            {
                leaks.push(Leak {
                    kind: LeakKind::ProcessGroup,
                    detail: format!(
                        "pid {} ({}) still in shim process group {}",
                        p.pid, p.comm, p.pgrp
                    ),
                    pid: Some(p.pid),
                    path: None,
                    cleaned: false,
                });
                to_kill.insert(p.pid);
            }
        }
    }
}

/// The shim's socket file left after the server exited (removed).
fn socket_left(scope: &LeakScope) -> Option<Leak> {
    let sock = scope.socket.as_ref()?;
    if std::fs::symlink_metadata(sock).is_err() {
        return None;
    }
    let cleaned = std::fs::remove_file(sock).is_ok();
    Some(Leak {
        kind: LeakKind::Socket,
        detail: format!(
            "socket file {} left after the server exited",
            sock.display()
        ),
        pid: None,
        path: Some(sock.clone()),
        cleaned,
    })
}

/// Processes started since the launch that still use the bundle (ended).
fn bundle_users(scope: &LeakScope, procs: &[ProcInfo], to_kill: &BTreeSet<i32>) -> Vec<Leak> {
    let mut leaks = vec![];
    if let Some(b) = &scope.bundle {
        let candidates = procs
            .iter()
            .filter(|p| {
                p.starttime >= scope.not_before
                    && !scope.spare.contains(&p.pid)
                    && !to_kill.contains(&p.pid)
            })
            .cloned();
        for (p, what) in processes_using_among(b, candidates) {
            let cleaned = end_found(p.pid, Duration::from_secs(2));
            leaks.push(Leak {
                kind: LeakKind::BundleInUse,
                detail: format!(
                    "pid {} ({}) still uses the bundle: {}",
                    p.pid,
                    p.comm,
                    what.display()
                ),
                pid: Some(p.pid),
                path: Some(what),
                cleaned,
            });
        }
    }
    leaks
}

/// Mounts left under the scope's directories (detached).
fn mounts_left(scope: &LeakScope) -> Vec<Leak> {
    let mut leaks = vec![];
    for d in &scope.dirs {
        for m in mounts_under(d).into_iter().rev() {
            let cleaned = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).is_ok();
            leaks.push(Leak {
                kind: LeakKind::Mount,
                detail: format!("{} still mounted", m.display()),
                pid: None,
                path: Some(m),
                cleaned,
            });
        }
    }
    leaks
}

/// The exit code as containerd prints it (128+signal when killed).
pub fn exit_code(st: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// SIGKILLs every process whose process group is `pgid` (one by one, by pid).
pub fn kill_process_group_members(pgid: i32) -> Vec<i32> {
    // Never our own group (a shim could have joined it): only groups the shim made.
    if !group_exists(pgid) {
        return vec![];
    }
    all_processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid && p.state != 'Z')
        .filter(|p| end_found(p.pid, Duration::from_secs(2)))
        .map(|p| p.pid)
        .collect()
}

/// The namespace level of the cgroups made for a namespace's containers (`cgroupsPath` is
/// `/<ns>/<id>`, as containerd writes it: `oci.WithNamespacedCgroup` in
/// `pkg/oci/spec_opts.go` at v1.6.20). runc removes the `<id>` level at delete and leaves
/// `/<ns>`, which containerd, with its few long-lived namespaces, never removes. The harness
/// makes a namespace per scenario (the mock's, and the differential's in a real containerd),
/// so its level goes when the scenario is done, in every hierarchy. `rmdir` only: a level
/// still in use stays. `default` is left alone (a real containerd on the host may use it).
pub fn remove_namespace_cgroups(ns: &str) {
    const ROOT: &str = "/sys/fs/cgroup";
    if ns == "default" || ns.is_empty() || ns.contains('/') {
        return;
    }
    let _ = std::fs::remove_dir(Path::new(ROOT).join(ns));
    let Ok(entries) = std::fs::read_dir(ROOT) else {
        return;
    };
    for e in entries.flatten() {
        let _ = std::fs::remove_dir(e.path().join(ns));
    }
}

#[cfg(test)]
mod tests;
