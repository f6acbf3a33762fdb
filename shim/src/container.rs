//! One container (task): its init process, its execs, its cgroup or session, the per-container
//! event lock, and the exit path that turns a reaped pid into `/tasks/exit`.
//!
//! Ordering rules kept here:
//! - Start holds `event_lock` across "let the child exec + queue the start event", and the exit
//!   path takes the same lock before queuing the exit event, so a start event always precedes
//!   the exit event of its pid, even for a program that exits at once.
//! - A host task has no pid namespace, so when init exits the shim kills every process left in
//!   the task (like runc's kill-all-on-exit for shared pid namespaces) and waits for the running
//!   execs' exits to be queued first: init's `/tasks/exit` is always the last exit of a task.
//! - The exit event is queued only after the process's output has been drained to the client's
//!   FIFOs, and before waiters are woken, so Wait → Delete cannot overtake it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim_protos::events::task::TaskExit;
use containerd_shim_protos::topics::TASK_EXIT_EVENT_TOPIC;
use tokio::sync::oneshot;

use crate::cgroup::Cgroup;
use crate::error::{Error, Result};
use crate::events::{timestamp, EventSender};
use crate::faults::Faults;
use crate::process::{ExitInfo, Process, Status};
use crate::reaper::Exit;

/// The file (in the bundle) where the server records init's exit: `status secs nanos`; the
/// `delete` action reads it.
pub const EXIT_FILE: &str = "init.exit";

/// One task served by the shim.
pub struct Container {
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// The init process.
    pub init: Arc<Process>,
    /// The per-task cgroup, when the shim could create one.
    pub cgroup: Option<Cgroup>,
    /// Serialises "start + start event" against "exit event" (see the module docs).
    pub event_lock: tokio::sync::Mutex<()>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    paused: AtomicBool,
}

/// Checks a container or exec id: not empty, no `/`, no `..`.
pub fn validate_id(kind: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(format!("{kind} id is empty")));
    }
    if id.contains('/') || id.contains("..") || id.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "{kind} id {id:?} must not contain '/' or '..'"
        )));
    }
    Ok(())
}

/// Pids of every process whose session id is in `sids` (read from /proc).
pub fn session_members(sids: &[i32]) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(st) = proc_stat(pid) {
            if sids.contains(&st.session) && st.state != 'Z' {
                out.push(pid);
            }
        }
    }
    out.sort_unstable();
    out
}

/// The fields of /proc/<pid>/stat the shim uses.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    /// State letter.
    pub state: char,
    /// Session id.
    pub session: i32,
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parses /proc/<pid>/stat.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state(0) ppid(1) pgrp(2) session(3) ... utime(11) stime(12) ... rss(21)
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        session: f.get(3)?.parse().ok()?,
        cpu_ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
        rss_pages: f.get(21)?.parse().ok()?,
    })
}

impl Container {
    /// A new container around its (created) init process.
    pub fn new(id: String, bundle: PathBuf, init: Arc<Process>, cgroup: Option<Cgroup>) -> Self {
        Container {
            id,
            bundle,
            init,
            cgroup,
            event_lock: tokio::sync::Mutex::new(()),
            execs: Mutex::new(HashMap::new()),
            paused: AtomicBool::new(false),
        }
    }

    fn execs_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Process>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The process named by `exec_id` (empty = init), or NotFound.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs_map()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("process {exec_id} of container {}", self.id)))
    }

    /// Every exec.
    pub fn execs(&self) -> Vec<Arc<Process>> {
        self.execs_map().values().cloned().collect()
    }

    /// Registers an exec; AlreadyExists if the id is taken.
    pub fn add_exec(&self, p: Arc<Process>) -> Result<()> {
        let mut m = self.execs_map();
        if m.contains_key(&p.exec_id) {
            return Err(Error::AlreadyExists(format!("exec {}", p.exec_id)));
        }
        m.insert(p.exec_id.clone(), p);
        Ok(())
    }

    /// Whether the exec id is taken.
    pub fn has_exec(&self, exec_id: &str) -> bool {
        self.execs_map().contains_key(exec_id)
    }

    /// Forgets an exec.
    pub fn remove_exec(&self, exec_id: &str) {
        self.execs_map().remove(exec_id);
    }

    /// Whether the task is paused.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Sets the paused flag.
    pub fn set_paused(&self, v: bool) {
        self.paused.store(v, Ordering::SeqCst)
    }

    /// Every live process of the task, descendants included.
    pub fn all_pids(&self) -> Vec<i32> {
        if let Some(cg) = &self.cgroup {
            let mut v = cg.procs();
            v.sort_unstable();
            return v;
        }
        let mut sids = vec![self.init.pid];
        sids.extend(self.execs().iter().map(|e| e.pid));
        session_members(&sids)
    }

    /// Signals every process of the task; returns how many got it.
    pub fn signal_all(&self, sig: i32) -> usize {
        if let Some(cg) = &self.cgroup {
            return cg.kill_all(sig);
        }
        let mut n = 0;
        for pid in self.all_pids() {
            // SAFETY: kill(2) on a member of the task's sessions.
            if unsafe { libc::kill(pid, sig) } == 0 {
                n += 1;
            }
        }
        n
    }
}

/// Shared context of the exit path.
pub struct ExitContext {
    /// Where events go.
    pub events: Arc<dyn EventSender>,
    /// Enabled faults.
    pub faults: Faults,
}

/// Waits for `p`'s reaped exit and runs the exit path (see the module docs).
pub fn monitor(
    ctx: Arc<ExitContext>,
    c: Arc<Container>,
    p: Arc<Process>,
    rx: oneshot::Receiver<Exit>,
) {
    tokio::spawn(async move {
        let Ok(exit) = rx.await else {
            return;
        };
        p.mark_reaped();
        let mut status = exit.status;
        if ctx.faults.sigterm_exit_zero && (129..=128 + 64).contains(&status) {
            status = 0;
        }
        let is_init = p.exec_id.is_empty();
        if is_init {
            // No pid namespace: what is left of the task dies with its init.
            if c.paused() {
                if let Some(cg) = &c.cgroup {
                    let _ = cg.thaw();
                }
            }
            c.signal_all(libc::SIGKILL);
            // Report init's exit only once nothing of the task is left running.
            let end = std::time::Instant::now() + Duration::from_secs(2);
            while !c.all_pids().is_empty() && std::time::Instant::now() < end {
                c.signal_all(libc::SIGKILL);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for e in c.execs() {
                if e.status() == Status::Running {
                    let _ = e.signal(libc::SIGKILL);
                    let _ = tokio::time::timeout(Duration::from_secs(5), e.wait()).await;
                }
            }
        }
        // Drain the output written before the exit; bounded because a descendant may hold the pipe.
        let limit = Duration::from_secs(if is_init { 10 } else { 3 });
        for mut h in p.take_outputs() {
            if tokio::time::timeout(limit, &mut h).await.is_err() {
                tracing::warn!(pid = p.pid, "output not drained in {limit:?}; closing it");
                h.abort();
            }
        }
        let _guard = if ctx.faults.exit_before_start {
            None
        } else {
            Some(c.event_lock.lock().await)
        };
        let started = p.status() == Status::Running && !p.start_failed();
        let info = ExitInfo {
            status,
            at: exit.at,
        };
        if started && !ctx.faults.no_exit_event {
            let ev = TaskExit {
                container_id: c.id.clone(),
                id: if is_init {
                    c.id.clone()
                } else {
                    p.exec_id.clone()
                },
                pid: p.pid as u32,
                exit_status: status,
                exited_at: Some(timestamp(exit.at)).into(),
                ..Default::default()
            };
            ctx.events.send(TASK_EXIT_EVENT_TOPIC, Box::new(ev));
        }
        if is_init {
            let at = exit
                .at
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let text = format!("{} {} {}\n", status, at.as_secs(), at.subsec_nanos());
            if let Err(e) = std::fs::write(c.bundle.join(EXIT_FILE), text) {
                tracing::warn!("write exit status file: {e}");
            }
        }
        p.set_exited(info);
        tracing::info!(id = c.id, exec = p.exec_id, pid = p.pid, status, "exited");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_slash_dots_or_empty_are_invalid_arguments() {
        for bad in ["", "a/b", "..", "x..y", "/abs"] {
            let e = validate_id("container", bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad:?}: {e:?}");
        }
        for good in ["c1", "a.b", "A_b-9"] {
            validate_id("exec", good).unwrap();
        }
    }

    #[test]
    fn proc_stat_reads_our_own_session() {
        let me = std::process::id() as i32;
        let st = proc_stat(me).expect("own stat");
        // SAFETY: getsid(0) is a plain syscall.
        let sid = unsafe { libc::getsid(0) };
        assert_eq!(st.session, sid);
        assert!(st.rss_pages > 0);
        assert!(session_members(&[sid]).contains(&me));
    }
}
