//! Reading processes from `/proc`: a process's facts from `/proc/<pid>/stat`, the clock they are
//! counted in, every process, a process's descendants. Below both the leak checks and the pid
//! guard, which use it; it signals nothing.

use std::collections::HashSet;

/// Basic facts about a process from `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id.
    pub pid: i32,
    /// Command name (`comm`).
    pub comm: String,
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group id.
    pub pgrp: i32,
    /// Start time in clock ticks since boot (tells a process from a later one with its pid).
    pub starttime: u64,
}

/// Reads `/proc/<pid>/stat`; `None` when the process is gone.
pub fn proc_info(pid: i32) -> Option<ProcInfo> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let mut rest = s[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    // Fields after pgrp: session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
    // cutime cstime priority nice num_threads itrealvalue starttime (field 22 overall).
    let starttime = rest.nth(16)?.parse().ok()?;
    Some(ProcInfo {
        pid,
        comm,
        state,
        ppid,
        pgrp,
        starttime,
    })
}

/// Now, in the unit of [`ProcInfo::starttime`]: clock ticks since boot.
pub fn ticks_now() -> u64 {
    // SAFETY: sysconf with a constant name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |up| (up * hz) as u64)
}

/// Every process currently visible in `/proc`.
pub fn all_processes() -> Vec<ProcInfo> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_info)
        .collect()
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    matches!(proc_info(pid), Some(p) if p.state != 'Z' && p.state != 'X')
}

/// All descendants of `root` (not including it), from one `/proc` scan.
pub fn descendants(root: i32) -> Vec<ProcInfo> {
    let procs = all_processes();
    let mut out = vec![];
    let mut frontier = vec![root];
    let mut seen = HashSet::new();
    while let Some(p) = frontier.pop() {
        for c in procs.iter().filter(|c| c.ppid == p) {
            if seen.insert(c.pid) {
                frontier.push(c.pid);
                out.push(c.clone());
            }
        }
    }
    out
}
