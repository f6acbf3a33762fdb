//! Reading processes from `/proc`: a process's facts from `/proc/<pid>/stat`, the clock they are
//! counted in, every process or those started since a [`PidMark`], a process's descendants and
//! argv.
//! Below both the leak checks and the pid guard, which use it; it signals nothing.

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

/// A process's argv from `/proc/<pid>/cmdline` (empty when it is gone or a kernel thread).
pub fn argv(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
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
    processes_since(None)
}

/// The pids listed in `/proc` (no process is read).
fn listed_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Where the pid allocation of this pid namespace stood at one moment: the last pid handed out
/// (`/proc/sys/kernel/ns_last_pid`) and the number of forks since boot (`processes` in
/// `/proc/stat`, threads included). A process started later has a pid allocated after the mark,
/// so a scan for it reads only those pids' `/proc` entries instead of every process's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidMark {
    last_pid: i32,
    forks: u64,
}

impl PidMark {
    /// The mark now; `None` when `/proc` does not tell.
    pub fn now() -> Option<PidMark> {
        let last_pid = read_number("/proc/sys/kernel/ns_last_pid")?;
        Some(PidMark {
            last_pid: i32::try_from(last_pid).ok()?,
            forks: forks_since_boot()?,
        })
    }

    /// Whether a pid was (or may have been) allocated after the mark; `None` when so many forks
    /// happened since that the allocation may have gone all the way round the pid space.
    fn allocated_after(&self) -> Option<impl Fn(i32) -> bool> {
        let now = PidMark::now()?;
        let pid_max = read_number("/proc/sys/kernel/pid_max")?;
        // Pids are handed out upwards from the last one and wrap at pid_max (to 300, the
        // kernel's RESERVED_PIDS). Going all the way round takes at least pid_max - 300 forks
        // minus the live pids skipped on the way: half of pid_max keeps well clear of that.
        if now.forks.saturating_sub(self.forks) >= pid_max / 2 {
            return None;
        }
        let (mark, last) = (self.last_pid, now.last_pid);
        Some(move |p: i32| {
            if last >= mark {
                p > mark && p <= last
            } else {
                p > mark || p <= last
            }
        })
    }
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn forks_since_boot() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("processes "))?
        .trim()
        .parse()
        .ok()
}

/// The processes whose pids were allocated after `mark`: only their `/proc` entries are read.
/// Without a mark, or when the pid space may have wrapped round since, every process.
pub fn processes_since(mark: Option<PidMark>) -> Vec<ProcInfo> {
    let pids = listed_pids();
    match mark.as_ref().and_then(PidMark::allocated_after) {
        Some(recent) => pids
            .into_iter()
            .filter(|p| recent(*p))
            .filter_map(proc_info)
            .collect(),
        None => pids.into_iter().filter_map(proc_info).collect(),
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    matches!(proc_info(pid), Some(p) if p.state != 'Z' && p.state != 'X')
}

/// All descendants of `root` (not including it), from one `/proc` scan. With the [`PidMark`]
/// of a moment before `root` started, only the processes started since are read (a
/// descendant of `root` is one of them).
pub fn descendants(root: i32, root_started_after: Option<PidMark>) -> Vec<ProcInfo> {
    let procs = processes_since(root_started_after);
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
