//! The per-task cgroup (v1 freezer/memory/cpuacct/pids under `/sys/fs/cgroup/<ctrl>/reaper/<ns>/<id>`):
//! membership, freeze/thaw, listing and killing every process, metrics, removal. When no
//! controller can be created the task falls back to its session id (see `container.rs`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};

use crate::error::{Error, Result};

const ROOT: &str = "/sys/fs/cgroup";
const CONTROLLERS: [&str; 4] = ["freezer", "pids", "cpuacct", "memory"];

/// One task's cgroup directories, one per available v1 controller.
#[derive(Debug, Clone)]
pub struct Cgroup {
    rel: PathBuf,
    dirs: Vec<(&'static str, PathBuf)>,
}

fn rel(ns: &str, id: &str) -> PathBuf {
    Path::new("reaper").join(ns).join(id)
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The bundle file recording which cgroup the task got (read by the `delete` action).
pub const BUNDLE_FILE: &str = "reaper-cgroup";

/// The controllers mounted here (each `/sys/fs/cgroup/<ctrl>/cgroup.procs` exists), looked up
/// once per process.
fn mounted() -> &'static [&'static str] {
    static MOUNTED: OnceLock<Vec<&'static str>> = OnceLock::new();
    MOUNTED.get_or_init(|| {
        CONTROLLERS
            .into_iter()
            .filter(|c| Path::new(ROOT).join(c).join("cgroup.procs").exists())
            .collect()
    })
}

fn busy(rel: &Path) -> bool {
    CONTROLLERS.iter().any(|c| {
        std::fs::read_to_string(Path::new(ROOT).join(c).join(rel).join("cgroup.procs"))
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false)
    })
}

/// Removes the namespace level `reaper/<ns>` of every controller once it is empty (fails
/// harmlessly while another shim's tasks use it).
pub fn remove_namespace(ns: &str) {
    for c in CONTROLLERS {
        let _ = std::fs::remove_dir(Path::new(ROOT).join(c).join("reaper").join(ns));
    }
}

impl Cgroup {
    /// Creates the task's cgroup in every v1 controller that allows it; `None` when none does.
    /// If `reaper/<ns>/<id>` is in use by live processes (another containerd with the same
    /// namespace and id), the shim's pid is appended so two tasks never share a cgroup.
    pub fn create(ns: &str, id: &str) -> Option<Cgroup> {
        let mut r = rel(ns, id);
        // A stat per controller first: reading `cgroup.procs` only when the directory is there.
        let exists = mounted()
            .iter()
            .any(|c| Path::new(ROOT).join(c).join(&r).exists());
        if exists && busy(&r) {
            r = rel(ns, &format!("{id}.{}", std::process::id()));
        }
        let mut dirs = Vec::new();
        for c in mounted() {
            let d = Path::new(ROOT).join(c).join(&r);
            match std::fs::create_dir_all(&d) {
                Ok(()) => dirs.push((*c, d)),
                Err(e) => tracing::debug!("cgroup {}: {e}", d.display()),
            }
        }
        if dirs.is_empty() {
            None
        } else {
            Some(Cgroup { rel: r, dirs })
        }
    }

    /// The cgroup path below each controller's root.
    pub fn rel_path(&self) -> &Path {
        &self.rel
    }

    /// Opens whatever directories of a task's cgroup exist (the `delete` action), from the path
    /// the server recorded in the bundle; `None` without that record (never guess: another
    /// task could own `reaper/<ns>/<id>`).
    pub fn existing(bundle: &Path) -> Option<Cgroup> {
        let r = std::fs::read_to_string(bundle.join(BUNDLE_FILE))
            .ok()
            .map(|s| PathBuf::from(s.trim()))
            .filter(|p| {
                p.starts_with("reaper") && !p.components().any(|c| c.as_os_str() == "..")
            })?;
        let dirs: Vec<_> = CONTROLLERS
            .iter()
            .map(|c| (*c, Path::new(ROOT).join(c).join(&r)))
            .filter(|(_, d)| d.is_dir())
            .collect();
        if dirs.is_empty() {
            None
        } else {
            Some(Cgroup { rel: r, dirs })
        }
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    /// Whether the freezer controller is available.
    pub fn has_freezer(&self) -> bool {
        self.dir("freezer").is_some()
    }

    /// The `tasks` file of every controller's directory, for a child to move itself in with
    /// [`enter_self`] between fork and exec.
    pub fn tasks_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .filter_map(|(_, d)| CString::new(d.join("tasks").as_os_str().as_bytes()).ok())
            .collect()
    }

    /// Every pid in the cgroup.
    pub fn procs(&self) -> Vec<i32> {
        let Some((_, d)) = self.dirs.first() else {
            return Vec::new();
        };
        std::fs::read_to_string(d.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn set_freezer(&self, state: &str) -> Result<()> {
        let d = self
            .dir("freezer")
            .ok_or_else(|| Error::Other("no freezer cgroup".into()))?;
        let f = d.join("freezer.state");
        std::fs::write(&f, state).map_err(|e| Error::io(format!("write {}", f.display()), e))?;
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let now = std::fs::read_to_string(&f).unwrap_or_default();
            if now.trim() == state {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(Error::Other(format!(
                    "{} stuck at {} (wanted {state})",
                    f.display(),
                    now.trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
            let _ = std::fs::write(&f, state);
        }
    }

    /// Freezes every process of the task.
    pub fn freeze(&self) -> Result<()> {
        self.set_freezer("FROZEN")
    }

    /// Thaws every process of the task.
    pub fn thaw(&self) -> Result<()> {
        self.set_freezer("THAWED")
    }

    /// Signals every process in the cgroup; returns how many were signalled.
    pub fn kill_all(&self, sig: i32) -> usize {
        let mut n = 0;
        for pid in self.procs() {
            // SAFETY: kill(2); pids come from the task's own cgroup.
            if unsafe { libc::kill(pid, sig) } == 0 {
                n += 1;
            }
        }
        n
    }

    /// cgroup v1 metrics of the task.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        if let Some(d) = self.dir("cpuacct") {
            let mut u = CPUUsage::new();
            u.total = read_u64(&d.join("cpuacct.usage")).unwrap_or(0);
            // SAFETY: sysconf is a plain libc call.
            let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            for line in std::fs::read_to_string(d.join("cpuacct.stat"))
                .unwrap_or_default()
                .lines()
            {
                let mut it = line.split_whitespace();
                let (Some(k), Some(v)) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok()))
                else {
                    continue;
                };
                let ns = v * 1_000_000_000 / tck;
                match k {
                    "user" => u.user = ns,
                    "system" => u.kernel = ns,
                    _ => {}
                }
            }
            u.per_cpu = std::fs::read_to_string(d.join("cpuacct.usage_percpu"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            let mut c = CPUStat::new();
            c.usage = Some(u).into();
            m.cpu = Some(c).into();
        }
        if let Some(d) = self.dir("memory") {
            let mut s = MemoryStat::new();
            let mut e = MemoryEntry::new();
            e.usage = read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0);
            e.max = read_u64(&d.join("memory.max_usage_in_bytes")).unwrap_or(0);
            e.limit = read_u64(&d.join("memory.limit_in_bytes")).unwrap_or(0);
            e.failcnt = read_u64(&d.join("memory.failcnt")).unwrap_or(0);
            s.usage = Some(e).into();
            for line in std::fs::read_to_string(d.join("memory.stat"))
                .unwrap_or_default()
                .lines()
            {
                let mut it = line.split_whitespace();
                let (Some(k), Some(v)) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok()))
                else {
                    continue;
                };
                match k {
                    "cache" => s.cache = v,
                    "rss" => s.rss = v,
                    "rss_huge" => s.rss_huge = v,
                    "mapped_file" => s.mapped_file = v,
                    "dirty" => s.dirty = v,
                    "writeback" => s.writeback = v,
                    "pgfault" => s.pg_fault = v,
                    "pgmajfault" => s.pg_maj_fault = v,
                    "inactive_anon" => s.inactive_anon = v,
                    "active_anon" => s.active_anon = v,
                    "inactive_file" => s.inactive_file = v,
                    "active_file" => s.active_file = v,
                    "unevictable" => s.unevictable = v,
                    "total_cache" => s.total_cache = v,
                    "total_rss" => s.total_rss = v,
                    _ => {}
                }
            }
            m.memory = Some(s).into();
        }
        if let Some(d) = self.dir("pids") {
            let mut p = PidsStat::new();
            p.current = read_u64(&d.join("pids.current")).unwrap_or(0);
            p.limit = read_u64(&d.join("pids.max")).unwrap_or(0);
            m.pids = Some(p).into();
        }
        m
    }

    /// Removes the directories without blocking the runtime thread: while a directory is busy
    /// (the kernel still detaching the last exited process) it retries every 5 ms for 2 s.
    /// `parent` also removes the namespace level once empty; pointless while the caller still
    /// has other tasks there, so the shim passes `false` then and saves a failing rmdir.
    pub async fn remove_async(&self, parent: bool) {
        for (_, d) in &self.dirs {
            let end = Instant::now() + Duration::from_secs(2);
            loop {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > end => {
                        tracing::warn!("remove cgroup {}: {e}", d.display());
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            if parent {
                if let Some(p) = d.parent() {
                    let _ = std::fs::remove_dir(p);
                }
            }
        }
    }

    /// Removes the directories (after the processes are gone); retries briefly while busy.
    /// Blocking: for the `delete` action, which has no runtime; the server uses
    /// [`Cgroup::remove_async`].
    pub fn remove(&self) {
        for (_, d) in &self.dirs {
            let end = Instant::now() + Duration::from_secs(2);
            while d.exists() {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if Instant::now() > end => {
                        tracing::warn!("remove cgroup {}: {e}", d.display());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // The namespace level too, once empty (fails harmlessly while other tasks use it).
            if let Some(parent) = d.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

/// Moves the calling thread into the cgroup of each `tasks` file (written before the fork by
/// [`Cgroup::tasks_files`]): `Err(errno)` of the first that fails, after trying every one.
///
/// For a child between fork and exec, which has one thread, so the thread is the process. It
/// is what makes Create fast: a thread that moves itself through `tasks` ("0") needs no
/// thread-group lock, whereas a parent writing the child's pid to `cgroup.procs` takes
/// `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period (10–20 ms on
/// this kernel's v1 memory controller, paid on the server's one thread); see
/// `cgroup_procs_write_start` in the kernel's `kernel/cgroup/cgroup.c` (v6.1 and later).
///
/// # Safety
/// Only raw system calls (open, write, close: [`crate::sys`], so that a child sharing the
/// server's memory leaves its `errno` alone) on data prepared before the fork.
pub unsafe fn enter_self(files: &[CString]) -> std::result::Result<(), i32> {
    let mut first = Ok(());
    for f in files {
        // SAFETY: open/write/close on a NUL-terminated path made before the fork.
        let errno = unsafe {
            let fd = crate::sys::syscall(
                libc::SYS_openat,
                [
                    libc::AT_FDCWD as usize,
                    f.as_ptr() as usize,
                    (libc::O_WRONLY | libc::O_CLOEXEC) as usize,
                    0,
                    0,
                    0,
                ],
            );
            if fd < 0 {
                -fd as i32
            } else {
                let wrote = crate::sys::write(fd as i32, b"0");
                crate::sys::close(fd as i32);
                if wrote == 1 {
                    0
                } else if wrote < 0 {
                    -wrote as i32
                } else {
                    libc::EIO
                }
            }
        };
        if errno != 0 && first.is_ok() {
            first = Err(errno);
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Forks a child that runs [`enter_self`] on `files`, sends back its errno (0: moved) and
    /// exits once told; `look(pid)` runs while the child waits.
    fn child_entering(files: &[CString], look: impl FnOnce(i32)) -> i32 {
        let (res_r, res_w) = nix::unistd::pipe().expect("pipe");
        let (go_r, go_w) = nix::unistd::pipe().expect("pipe");
        let (rw, gr, gw) = (res_w.as_raw_fd(), go_r.as_raw_fd(), go_w.as_raw_fd());
        // SAFETY: the child makes only async-signal-safe calls (open, write, read, _exit).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: the freshly forked child, see above.
            unsafe {
                let errno = match enter_self(files) {
                    Ok(()) => 0i32,
                    Err(e) => e,
                };
                libc::write(rw, errno.to_ne_bytes().as_ptr().cast(), 4);
                // Its copy of the write end closed, a parent that panics releases it too.
                libc::close(gw);
                let mut b = 0u8;
                libc::read(gr, (&mut b as *mut u8).cast(), 1);
                libc::_exit(0)
            }
        }
        drop(res_w);
        drop(go_r);
        let mut b = [0u8; 4];
        let n = nix::unistd::read(&res_r, &mut b).expect("the child's answer");
        assert_eq!(n, 4, "the child answered {n} bytes");
        look(pid);
        drop(go_w);
        // Another test's reaper may reap it first: either way it is gone.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        i32::from_ne_bytes(b)
    }

    #[test]
    fn a_child_moves_itself_into_the_cgroup_and_a_missing_one_is_reported() {
        let ns = format!("reaper-unit-enter-{}", std::process::id());
        let cg = Cgroup::create(&ns, "c1").unwrap_or_else(|| {
            panic!("no cgroup v1 controller under {ROOT} could be made (needs root and cgroup v1)")
        });
        let errno = child_entering(&cg.tasks_files(), |pid| {
            for (c, d) in &cg.dirs {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                assert!(
                    procs.lines().any(|l| l.trim() == pid.to_string()),
                    "{c}: pid {pid} not in {}: {procs:?}",
                    d.display()
                );
            }
        });
        assert_eq!(
            errno,
            0,
            "enter_self failed: {}",
            std::io::Error::from_raw_os_error(errno)
        );
        assert_eq!(
            cg.dirs.len(),
            mounted().len(),
            "a controller's directory is missing"
        );
        cg.remove();
        remove_namespace(&ns);

        let missing = CString::new(format!("{ROOT}/freezer/reaper/{ns}-missing/tasks")).unwrap();
        let errno = child_entering(&[missing], |_| {});
        assert_eq!(errno, libc::ENOENT, "a missing cgroup: errno {errno}");
    }
}
