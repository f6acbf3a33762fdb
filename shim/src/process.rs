//! One host process (a container's init or an exec): fork at Create, exec at Start, its state
//! machine (created → running → stopped) and its exit for any number of waiters.
//!
//! The child is forked early and blocks reading a "start" pipe, like `runc create`. Between fork
//! and exec it only makes async-signal-safe calls on data prepared before the fork. Errors of the
//! child come back over a close-on-exec pipe as `(stage, errno)`: an 8-byte zero record means
//! "ready, waiting for start"; EOF after the start byte means exec succeeded.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result};
use crate::io::{ChildStdio, IoHandles, StdioPaths};
use crate::reaper::{Exit, Reaper};
use crate::spec::ProcessSpec;

/// Lifecycle state of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Forked, waiting for Start.
    Created,
    /// Exec'd.
    Running,
    /// Exited and reaped.
    Stopped,
}

/// The final status of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code or 128+signal.
    pub status: u32,
    /// When the reaper saw the exit.
    pub at: SystemTime,
}

struct Inner {
    status: Status,
    start_tx: Option<OwnedFd>,
    err_rx: Option<AsyncFd<OwnedFd>>,
    start_failed: bool,
    reaped: bool,
    io: IoHandles,
}

/// One process of a task.
pub struct Process {
    /// Exec id, or empty for the init process.
    pub exec_id: String,
    /// Its pid (from Create/Exec on).
    pub pid: i32,
    /// Requested stdio, echoed by State.
    pub stdio: StdioPaths,
    /// The resolved program, for error messages.
    pub program: String,
    inner: Mutex<Inner>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
}

// Stage numbers reported by the child over the error pipe; [`JOIN_CGROUP`] is a warning.
const STAGES: [&str; 12] = [
    "ready",
    "setsid",
    "dup2 stdio",
    "set controlling terminal",
    "setrlimit",
    "setgroups",
    "setgid",
    "setuid",
    "set no_new_privs",
    "chdir",
    "exec",
    "join the task's cgroup",
];

/// The record of a child that could not move itself into its cgroup: it goes on without
/// (as a task without cgroup would), and the server logs it.
const JOIN_CGROUP: u32 = 11;

/// What a fork returns: the process and the receiver of its exit.
pub struct Spawned {
    /// The created process.
    pub process: Process,
    /// Fires once when the reaper reaps the pid.
    pub exit_rx: oneshot::Receiver<Exit>,
}

fn cstr(s: &[u8], what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("{what} contains a NUL byte")))
}

/// Reads one `(stage, errno)` record from the child's error pipe without blocking the runtime:
/// `None` at EOF (exec succeeded or the child exited). Times out after `limit`.
async fn read_record(afd: &AsyncFd<OwnedFd>, limit: Duration) -> Result<Option<(u32, i32)>> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    let read = async {
        while got < 8 {
            let mut g = afd
                .readable()
                .await
                .map_err(|e| Error::io("poll child status", e))?;
            let r = g.try_io(|inner| {
                // SAFETY: read into our buffer from a non-blocking fd we own.
                let n = unsafe {
                    libc::read(inner.as_raw_fd(), buf[got..].as_mut_ptr().cast(), 8 - got)
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => got += n,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(Error::io("read child status", e)),
                Err(_would_block) => {}
            }
        }
        Ok(())
    };
    match tokio::time::timeout(limit, read).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::Other(format!(
                "process did not answer within {} ms",
                limit.as_millis()
            )))
        }
    }
    if got == 0 {
        return Ok(None);
    }
    let stage = u32::from_ne_bytes(buf[..4].try_into().unwrap_or([0; 4]));
    let errno = i32::from_ne_bytes(buf[4..].try_into().unwrap_or([0; 4]));
    Ok(Some((stage, errno)))
}

/// Registers the read end of the child's status pipe with the runtime (non-blocking).
fn status_pipe(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>> {
    crate::io::set_nonblocking(fd.as_raw_fd(), true)?;
    // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and unchanged while registered.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| Error::io("register child status pipe", e.into_parts().1))
}

/// How long a child may take to reach "ready" (Create) or to exec (Start).
const CHILD_ANSWER: Duration = Duration::from_secs(10);

fn stage_error(program: &str, stage: u32, errno: i32) -> Error {
    let what = STAGES.get(stage as usize).copied().unwrap_or("setup");
    let e = std::io::Error::from_raw_os_error(errno);
    Error::Other(format!("{what} {program}: {e}"))
}

/// Forks a child that prepares `spec` and waits for [`Process::start`]. The child first moves
/// itself into the cgroup of each of `cgroup_tasks` (`tasks` files, [`crate::cgroup::enter_self`]).
/// The wait for the child's "ready" record is asynchronous: the runtime serves other requests
/// meanwhile.
#[allow(clippy::too_many_arguments)]
pub async fn spawn(
    reaper: &Reaper,
    exec_id: &str,
    spec: &ProcessSpec,
    program: &Path,
    stdio: ChildStdio,
    paths: StdioPaths,
    io: IoHandles,
    cgroup_tasks: &[CString],
) -> Result<Spawned> {
    let (pid, exit_rx, start_w, err_r) = fork_child(reaper, spec, program, stdio, cgroup_tasks)?;
    let program_s = program.display().to_string();
    // Wait for the child to reach "ready" (or fail a setup stage): Create then reports it. The
    // registered read end is kept for Start, which reads the exec result from it.
    let err_r = status_pipe(err_r)?;
    let mut record = read_record(&err_r, CHILD_ANSWER).await;
    while let Ok(Some((JOIN_CGROUP, errno))) = record {
        let e = std::io::Error::from_raw_os_error(errno);
        tracing::warn!("{program_s} (pid {pid}) runs outside its cgroup: {e}");
        record = read_record(&err_r, CHILD_ANSWER).await;
    }
    match record {
        Ok(Some((0, _))) => {}
        Ok(Some((stage, errno))) => return Err(stage_error(&program_s, stage, errno)),
        Ok(None) => {
            return Err(Error::Other(format!(
                "{program_s}: child exited during setup"
            )))
        }
        Err(e) => {
            // SAFETY: kill our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(e);
        }
    }
    let (exit_tx, _) = watch::channel(None);
    Ok(Spawned {
        process: Process {
            exec_id: exec_id.to_string(),
            pid,
            stdio: paths,
            program: program_s,
            inner: Mutex::new(Inner {
                status: Status::Created,
                start_tx: Some(start_w),
                err_rx: Some(err_r),
                start_failed: false,
                reaped: false,
                io,
            }),
            exit_tx,
        },
        exit_rx,
    })
}

/// The synchronous part of [`spawn`]: prepares the child's data, forks, subscribes the pid.
/// Returns the pid, its exit receiver, the start pipe's write end and the status pipe's read end.
fn fork_child(
    reaper: &Reaper,
    spec: &ProcessSpec,
    program: &Path,
    stdio: ChildStdio,
    cgroup_tasks: &[CString],
) -> Result<(i32, oneshot::Receiver<Exit>, OwnedFd, OwnedFd)> {
    // Everything the child touches is prepared here, before fork.
    let prog = cstr(program.as_os_str().as_bytes(), "program path")?;
    let argv: Vec<CString> = spec
        .args
        .iter()
        .map(|a| cstr(a.as_bytes(), "process.args"))
        .collect::<Result<_>>()?;
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|a| cstr(a.as_bytes(), "process.env"))
        .collect::<Result<_>>()?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let cwd = cstr(spec.cwd.as_os_str().as_bytes(), "process.cwd")?;
    let gids: Vec<libc::gid_t> = spec.additional_gids.clone();
    let rlimits: Vec<(i32, libc::rlimit)> = spec
        .rlimits
        .iter()
        .map(|r| {
            (
                r.resource,
                libc::rlimit {
                    rlim_cur: r.soft,
                    rlim_max: r.hard,
                },
            )
        })
        .collect();
    let (start_r, start_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::errno("pipe", e))?;
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::errno("pipe", e))?;
    let child = ChildArgs {
        prog: prog.as_ptr(),
        argv: argv_p.as_ptr(),
        envp: envp_p.as_ptr(),
        cwd: cwd.as_ptr(),
        gids: &gids,
        rlimits: &rlimits,
        uid: spec.uid,
        gid: spec.gid,
        no_new_privs: spec.no_new_privileges,
        stdin: stdio.stdin.as_raw_fd(),
        stdout: stdio.stdout.as_raw_fd(),
        stderr: stdio.stderr.as_raw_fd(),
        ctty: stdio.ctty,
        start_r: start_r.as_raw_fd(),
        err_w: err_w.as_raw_fd(),
        cgroup_tasks,
    };

    // Race: the pid is subscribed before the reaper can look it up (same lock).
    let mut subs = reaper.lock();
    // SAFETY: the child only runs `child_main`, which makes async-signal-safe calls.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the freshly forked child.
        unsafe { child_main(&child) }
    }
    if pid < 0 {
        return Err(Error::io("fork", std::io::Error::last_os_error()));
    }
    let (tx, exit_rx) = oneshot::channel();
    subs.insert(pid, tx);
    drop(subs);
    drop(start_r);
    drop(err_w);
    drop(stdio);
    Ok((pid, exit_rx, start_w, err_r))
}

struct ChildArgs<'a> {
    prog: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    gids: &'a [libc::gid_t],
    rlimits: &'a [(i32, libc::rlimit)],
    uid: u32,
    gid: u32,
    no_new_privs: bool,
    stdin: i32,
    stdout: i32,
    stderr: i32,
    ctty: bool,
    start_r: i32,
    err_w: i32,
    cgroup_tasks: &'a [CString],
}

unsafe fn report(fd: i32, stage: u32, errno: i32) {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&stage.to_ne_bytes());
    b[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write(2) is async-signal-safe.
    unsafe { libc::write(fd, b.as_ptr().cast(), 8) };
}

unsafe fn fail(a: &ChildArgs, stage: u32) -> ! {
    // SAFETY: errno location and _exit are async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        report(a.err_w, stage, errno);
        libc::_exit(127)
    }
}

unsafe fn close_range(first: i32, last: i32) {
    if first <= last {
        // SAFETY: close_range(2) is a plain syscall.
        unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
    }
}

/// The child between fork and exec. Only async-signal-safe calls.
unsafe fn child_main(a: &ChildArgs) -> ! {
    // SAFETY: every call below is an async-signal-safe libc call on prepared data.
    unsafe {
        // First, while still root: into the task's cgroup (not fatal, as for the server).
        if let Err(errno) = crate::cgroup::enter_self(a.cgroup_tasks) {
            report(a.err_w, JOIN_CGROUP, errno);
        }
        // Rust ignores SIGPIPE and the runtime may have masked signals: restore the defaults.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        if libc::setsid() < 0 {
            fail(a, 1);
        }
        if libc::dup2(a.stdin, 0) < 0 || libc::dup2(a.stdout, 1) < 0 || libc::dup2(a.stderr, 2) < 0
        {
            fail(a, 2);
        }
        if a.ctty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            fail(a, 3);
        }
        // Close every other inherited fd (other tasks' pipes) except our two control pipes.
        let (lo, hi) = if a.start_r < a.err_w {
            (a.start_r, a.err_w)
        } else {
            (a.err_w, a.start_r)
        };
        close_range(3, lo - 1);
        close_range(lo + 1, hi - 1);
        close_range(hi + 1, i32::MAX);
        for (res, lim) in a.rlimits {
            if libc::setrlimit(*res as _, lim) < 0 {
                fail(a, 4);
            }
        }
        if libc::geteuid() == 0 && libc::setgroups(a.gids.len(), a.gids.as_ptr()) < 0 {
            fail(a, 5);
        }
        if libc::setgid(a.gid) < 0 {
            fail(a, 6);
        }
        if libc::setuid(a.uid) < 0 {
            fail(a, 7);
        }
        if a.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            fail(a, 8);
        }
        if libc::chdir(a.cwd) < 0 {
            fail(a, 9);
        }
        report(a.err_w, 0, 0);
        let mut b = 0u8;
        loop {
            let n = libc::read(a.start_r, (&mut b as *mut u8).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            // The shim went away or deleted us before Start.
            libc::_exit(137);
        }
        libc::execve(a.prog, a.argv, a.envp);
        fail(a, 10)
    }
}

impl Process {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Current status.
    pub fn status(&self) -> Status {
        self.inner().status
    }

    /// Whether the reaper has reaped this pid (a kill would hit a recycled pid).
    pub fn reaped(&self) -> bool {
        self.inner().reaped
    }

    /// Whether Start failed (its exit is not an event).
    pub fn start_failed(&self) -> bool {
        self.inner().start_failed
    }

    /// The exit, once stopped.
    pub fn exit(&self) -> Option<ExitInfo> {
        *self.exit_tx.borrow()
    }

    /// Lets the child exec. Errors name the program and the failing step.
    pub async fn start(&self) -> Result<()> {
        let (start_tx, err_rx) = {
            let mut i = self.inner();
            match i.status {
                Status::Created if !i.start_failed => {}
                Status::Created => {
                    return Err(Error::FailedPrecondition(
                        "process failed to start before".into(),
                    ))
                }
                Status::Running => {
                    return Err(Error::FailedPrecondition(
                        "cannot start a running process".into(),
                    ))
                }
                Status::Stopped => {
                    return Err(Error::FailedPrecondition(
                        "cannot start a stopped process".into(),
                    ))
                }
            }
            (i.start_tx.take(), i.err_rx.take())
        };
        let (Some(start_tx), Some(err_rx)) = (start_tx, err_rx) else {
            return Err(Error::FailedPrecondition("process already started".into()));
        };
        // SAFETY: write one byte to our pipe.
        let n = unsafe { libc::write(start_tx.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        drop(start_tx);
        let res = if n != 1 {
            Err(Error::Other(format!(
                "start {}: the process is gone",
                self.program
            )))
        } else {
            match read_record(&err_rx, CHILD_ANSWER).await {
                Ok(None) => Ok(()),
                Ok(Some((stage, errno))) => Err(stage_error(&self.program, stage, errno)),
                Err(e) => Err(e),
            }
        };
        let mut i = self.inner();
        match &res {
            Ok(()) => {
                if i.status == Status::Created {
                    i.status = Status::Running;
                }
            }
            Err(_) => i.start_failed = true,
        }
        res
    }

    /// Marks the pid reaped (first thing on exit, before output is drained).
    pub fn mark_reaped(&self) {
        self.inner().reaped = true;
    }

    /// Takes the output copiers so the exit path can drain them.
    pub fn take_outputs(&self) -> Vec<tokio::task::JoinHandle<()>> {
        std::mem::take(&mut self.inner().io.outputs)
    }

    /// Records the exit and wakes every waiter.
    pub fn set_exited(&self, exit: ExitInfo) {
        {
            let mut i = self.inner();
            i.status = Status::Stopped;
            i.io.stdin_close.take();
            i.start_tx.take();
        }
        self.exit_tx.send_replace(Some(exit));
    }

    /// Waits for the exit (also while created).
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit_tx.subscribe();
        loop {
            if let Some(e) = *rx.borrow_and_update() {
                return e;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`; unreachable in practice.
                return ExitInfo {
                    status: 255,
                    at: SystemTime::now(),
                };
            }
        }
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) -> Result<()> {
        {
            let i = self.inner();
            if i.reaped || i.status == Status::Stopped {
                return Err(Error::NotFound("process already finished".into()));
            }
        }
        // SAFETY: kill(2) on our own child's pid, which is not yet reaped.
        if unsafe { libc::kill(self.pid, sig) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Err(Error::NotFound("process already finished".into()));
            }
            return Err(Error::io(format!("kill {} with signal {sig}", self.pid), e));
        }
        Ok(())
    }

    /// Closes stdin (CloseIO).
    pub fn close_stdin(&self) {
        if let Some(tx) = self.inner().io.stdin_close.take() {
            let _ = tx.send(());
        }
    }

    /// Resizes the pty; a no-op without a terminal.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let i = self.inner();
        match &i.io.pty_master {
            Some(m) => crate::pty::resize(m, width, height),
            None => Ok(()),
        }
    }
}
