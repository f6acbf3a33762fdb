//! The one gate between a pid and a signal or a wait: every `kill`, `pidfd_open` and process-group
//! probe of the harness goes through this module (`harness/tests/pidguard.rs` checks that no other
//! file names them).
//!
//! The shim under test is untrusted. A pid it reports (Create, Start, an exec's Start) is only
//! data until [`Proc::reported`] has shown it to be the shim's own: pid 0 would signal the
//! harness's process group, 4294967295 becomes −1 (every process on the machine), and any other
//! number may be an unrelated process. A pid the harness found itself (the socket holder started
//! since the launch, a member of the shim's process group, a process using the bundle) still goes
//! through [`Proc::found`]: never init, the harness, its process group or one of its ancestors.
//! A checked [`Proc`] remembers its start time, so a pid reused by another process later is left
//! alone.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::procfs::{proc_info, ProcInfo};

/// Why the harness will not signal or wait on a pid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// 0, or a value that is not a positive `pid_t` (it would wrap to a negative number).
    #[error(
        "pid {0} is not a process id (0 names the harness's own process group; values above \
         2147483647 wrap to negative pids, and -1 is every process on the machine)"
    )]
    NotAPid(u64),
    /// Pid 1.
    #[error("pid 1 is init")]
    Init,
    /// The harness's own pid.
    #[error("pid {0} is the harness itself")]
    Harness(i32),
    /// A process in the harness's own process group.
    #[error("pid {pid} is in the harness's own process group {pgrp}")]
    HarnessGroup {
        /// The pid.
        pid: i32,
        /// The harness's process group.
        pgrp: i32,
    },
    /// A process the harness descends from (its shell, `cargo`, the CI job).
    #[error("pid {0} is an ancestor of the harness")]
    Ancestor(i32),
    /// No such process (or it is another process than the one checked).
    #[error("no process has pid {0} (any more)")]
    Gone(i32),
    /// A live process that neither is the shim server nor descends from it.
    #[error(
        "pid {pid} ({comm}, parent {ppid}) is not a process of the shim: neither the shim server \
         (pid {server}) nor one of its descendants"
    )]
    NotOfShim {
        /// The pid.
        pid: i32,
        /// Its command name.
        comm: String,
        /// Its parent pid.
        ppid: i32,
        /// The shim server's pid.
        server: i32,
    },
    /// The shim server's pid is unknown, so descent cannot be checked.
    #[error("pid {0} cannot be checked: the shim server's pid is unknown")]
    ServerUnknown(i32),
}

/// A process the harness may signal or wait on. Made only by [`Proc::reported`] or
/// [`Proc::found`]; recognised by its start time afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pid: i32,
    starttime: u64,
}

/// Deepest parent chain followed when checking descent (pid namespaces nest at most 32 deep;
/// process trees of shims are a few levels).
const MAX_DEPTH: usize = 4096;

impl Proc {
    /// Checks a pid the shim reported: a positive `pid_t`, not init, not the harness, its group
    /// or an ancestor, alive (a zombie counts), and either the shim server `server` itself or one
    /// of its descendants (containerd's shims are child subreapers: their tasks stay under them).
    pub fn reported(pid: u32, server: Option<i32>) -> Result<Proc, Refused> {
        let info = checked(u64::from(pid))?;
        let server = server.ok_or(Refused::ServerUnknown(info.pid))?;
        // A task being released by its reaping parent shows parent 0 (`pid_alive` is false in
        // the kernel's `do_task_stat`): it is gone, not someone else's.
        if info.ppid == 0 || info.state == 'X' {
            return Err(Refused::Gone(info.pid));
        }
        if info.pid != server && !descends_from(&info, server) {
            return Err(Refused::NotOfShim {
                pid: info.pid,
                comm: info.comm,
                ppid: info.ppid,
                server,
            });
        }
        Ok(Proc::of(&info))
    }

    /// Checks a pid the harness found itself (by socket, process group, descent or bundle
    /// use): the same rules as [`Proc::reported`] without the descent check.
    pub fn found(pid: i32) -> Result<Proc, Refused> {
        let raw = u64::try_from(pid).map_err(|_| Refused::NotAPid(pid as u32 as u64))?;
        checked(raw).map(|info| Proc::of(&info))
    }

    fn of(info: &ProcInfo) -> Proc {
        Proc {
            pid: info.pid,
            starttime: info.starttime,
        }
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The process as it is now, while it is still the one checked (a zombie included).
    pub fn info(&self) -> Option<ProcInfo> {
        proc_info(self.pid).filter(|i| i.starttime == self.starttime)
    }

    /// Whether the checked process still runs (not a zombie, pid not reused).
    pub fn is_alive(&self) -> bool {
        self.info()
            .is_some_and(|i| i.state != 'Z' && i.state != 'X')
    }

    /// Sends `sig`, unless the pid now belongs to another process (or none).
    pub fn signal(&self, sig: Signal) -> Result<(), String> {
        if self.info().is_none() {
            return Err(Refused::Gone(self.pid).to_string());
        }
        kill(Pid::from_raw(self.pid), sig).map_err(|e| format!("kill({}, {sig}): {e}", self.pid))
    }

    /// SIGKILLs the process and waits (at most `bound`) until it is gone or a zombie; returns
    /// whether it is.
    pub fn kill_and_wait(&self, bound: Duration) -> bool {
        let _ = self.signal(Signal::SIGKILL);
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if !self.is_alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        !self.is_alive()
    }

    /// Waits (at most `bound`) until the process is gone or a zombie; returns whether it is.
    /// Event-driven through a pidfd (readable once the process exits); polls every 5 ms where
    /// pidfds are unavailable.
    pub async fn wait_gone(&self, bound: Duration) -> bool {
        if !self.is_alive() {
            return true;
        }
        let deadline = tokio::time::Instant::now() + bound;
        // SAFETY: pidfd_open(2) with a positive pid and no flags; the result is checked.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) };
        // Opened after the identity check: still the same process if it still is one now.
        if raw >= 0 && self.info().is_some() {
            // SAFETY: a fresh fd that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
            // SAFETY: the AsyncFd owns `fd`, which stays open and the same pidfd until dropped.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            };
            if let Ok(afd) = registered {
                let _ = tokio::time::timeout_at(deadline, afd.readable()).await;
                return !self.is_alive();
            }
        } else if raw >= 0 {
            // SAFETY: closing the fd just opened, owned by nothing else.
            drop(unsafe { OwnedFd::from_raw_fd(raw as i32) });
        }
        while self.is_alive() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        !self.is_alive()
    }

    /// The process's pid namespace (`/proc/<pid>/ns/pid`), while it is still the one checked.
    pub fn pid_namespace(&self) -> Option<std::path::PathBuf> {
        let ns = std::fs::read_link(format!("/proc/{}/ns/pid", self.pid)).ok()?;
        self.info().map(|_| ns)
    }
}

/// Ends a process the harness found itself ([`Proc::found`], then SIGKILL and a bounded wait);
/// returns whether it is gone. A refused pid is left alone (`false`).
pub fn end_found(pid: i32, bound: Duration) -> bool {
    Proc::found(pid).is_ok_and(|p| p.kill_and_wait(bound))
}

/// Whether any process (a zombie included) is in process group `pgid`: `kill(-pgid, 0)`, no
/// `/proc` scan. Never probes group 0, 1 or the harness's own (always `false`).
pub fn group_exists(pgid: i32) -> bool {
    if pgid <= 1 || pgid == nix::unistd::getpgrp().as_raw() {
        return false;
    }
    !matches!(
        kill(Pid::from_raw(-pgid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// The rules common to every pid: range, init, the harness, its group, its ancestors, alive.
fn checked(raw: u64) -> Result<ProcInfo, Refused> {
    if raw == 0 || raw > i32::MAX as u64 {
        return Err(Refused::NotAPid(raw));
    }
    let pid = raw as i32;
    if pid == 1 {
        return Err(Refused::Init);
    }
    let me = std::process::id() as i32;
    if pid == me {
        return Err(Refused::Harness(pid));
    }
    let info = proc_info(pid).ok_or(Refused::Gone(pid))?;
    let pgrp = nix::unistd::getpgrp().as_raw();
    if info.pgrp == pgrp {
        return Err(Refused::HarnessGroup { pid, pgrp });
    }
    if is_ancestor_of_me(pid) {
        return Err(Refused::Ancestor(pid));
    }
    Ok(info)
}

fn is_ancestor_of_me(pid: i32) -> bool {
    on_parent_chain(std::os::unix::process::parent_id() as i32, pid)
}

/// Whether `server` is among the ancestors of `info`.
fn descends_from(info: &ProcInfo, server: i32) -> bool {
    server > 1 && on_parent_chain(info.ppid, server)
}

/// Whether `target` is `first` or one of its ancestors (stopping at init or a gone process).
fn on_parent_chain(first: i32, target: i32) -> bool {
    let mut cur = first;
    for _ in 0..MAX_DEPTH {
        if cur == target {
            return true;
        }
        if cur <= 1 {
            return false;
        }
        match proc_info(cur) {
            Some(i) => cur = i.ppid,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    fn me() -> i32 {
        std::process::id() as i32
    }

    #[test]
    fn refuses_pids_that_name_groups_everything_init_or_the_harness() {
        assert_eq!(Proc::reported(0, Some(me())), Err(Refused::NotAPid(0)));
        assert_eq!(
            Proc::reported(u32::MAX, Some(me())),
            Err(Refused::NotAPid(4294967295))
        );
        assert_eq!(
            Proc::reported(1 << 31, Some(me())),
            Err(Refused::NotAPid(1 << 31))
        );
        assert_eq!(Proc::reported(1, Some(me())), Err(Refused::Init));
        assert_eq!(
            Proc::reported(me() as u32, Some(me())),
            Err(Refused::Harness(me()))
        );
        assert_eq!(Proc::found(-1), Err(Refused::NotAPid(4294967295)));
        assert_eq!(Proc::found(0), Err(Refused::NotAPid(0)));
        let parent = std::os::unix::process::parent_id() as i32;
        assert!(
            matches!(
                Proc::found(parent),
                Err(Refused::Ancestor(_) | Refused::HarnessGroup { .. } | Refused::Init)
            ),
            "{:?}",
            Proc::found(parent)
        );
        assert!(!group_exists(0) && !group_exists(1));
        assert!(!group_exists(nix::unistd::getpgrp().as_raw()));
        // The message names the value and why.
        let m = Refused::NotAPid(4294967295).to_string();
        assert!(
            m.contains("4294967295") && m.contains("every process"),
            "{m}"
        );
    }

    #[test]
    fn a_process_in_the_harness_group_is_refused_and_survives() {
        // Same process group as the test: what a shim reporting "pid of my parent's group" names.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let r = Proc::found(pid);
        let alive = proc_info(pid).is_some_and(|i| i.state != 'Z');
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            matches!(r, Err(Refused::HarnessGroup { .. })),
            "{r:?} (pgrp of the test: {})",
            nix::unistd::getpgrp()
        );
        assert!(alive);
    }

    #[test]
    fn descent_from_the_server_decides_a_reported_pid() {
        // A "server" in its own group with a grandchild; an unrelated process beside it.
        let mut server = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let spid = server.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        let grandchild = loop {
            let kids = crate::procfs::descendants(spid, None);
            if let Some(k) = kids.iter().find(|k| k.comm == "sleep") {
                break k.pid;
            }
            assert!(Instant::now() < deadline, "no grandchild appeared");
            std::thread::sleep(Duration::from_millis(10));
        };
        let opid = other.id() as i32;
        let of_server = Proc::reported(grandchild as u32, Some(spid));
        let itself = Proc::reported(spid as u32, Some(spid));
        let unrelated = Proc::reported(opid as u32, Some(spid));
        let unknown = Proc::reported(grandchild as u32, None);
        let ended = of_server
            .clone()
            .map(|p| p.kill_and_wait(Duration::from_secs(2)));
        let other_alive = proc_info(opid).is_some_and(|i| i.state != 'Z');
        for c in [&mut server, &mut other] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(of_server.map(|p| p.pid()), Ok(grandchild));
        assert_eq!(itself.map(|p| p.pid()), Ok(spid));
        assert!(
            matches!(unrelated, Err(Refused::NotOfShim { pid, server, .. }) if pid == opid && server == spid),
            "{unrelated:?}"
        );
        assert_eq!(unknown, Err(Refused::ServerUnknown(grandchild)));
        assert_eq!(ended, Ok(true));
        assert!(other_alive, "the unrelated process must survive");
    }

    #[tokio::test]
    async fn a_reused_pid_is_not_signalled_and_wait_gone_is_event_driven() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let p = Proc::found(pid).unwrap();
        assert!(group_exists(pid));
        let t = Instant::now();
        assert!(!p.wait_gone(Duration::from_millis(50)).await, "gone early");
        assert!(p.wait_gone(Duration::from_secs(5)).await);
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
        child.wait().unwrap();
        assert!(!group_exists(pid), "the reaped child's group is gone");
        // Another start time at the same pid: not the checked process, never signalled.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let opid = other.id() as i32;
        let real = Proc::found(opid).unwrap();
        let stale = Proc {
            pid: opid,
            starttime: real.starttime + 1,
        };
        let refused = stale.signal(Signal::SIGKILL);
        let survived = real.is_alive();
        let ended = real.kill_and_wait(Duration::from_secs(2));
        other.wait().unwrap();
        assert_eq!(refused, Err(Refused::Gone(opid).to_string()));
        assert!(stale.info().is_none() && !stale.is_alive());
        assert!(survived && ended);
    }
}
