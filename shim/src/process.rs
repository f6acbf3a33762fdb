//! One host process (a container's init or an exec): created at Create, exec'd at Start, its
//! state machine (created → running → stopped) and its exit for any number of waiters.
//!
//! The child is created early and blocks reading a "start" pipe, like `runc create`. It shares
//! the server's address space until its exec (`clone(CLONE_VM)` on its own stack; a fork where
//! [`crate::sys`] has no raw system calls) and until then makes raw system calls only, on data
//! prepared before it was created and kept until it has exec'd or is gone. Errors of the
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
    /// What the child reads until its exec (see [`ChildImage`]); dropped once it has exec'd or
    /// been reaped.
    image: Option<Box<ChildImage>>,
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
    let Created {
        pid,
        exit_rx,
        start_w,
        err_r,
        image,
    } = new_child(reaper, spec, program, stdio, cgroup_tasks)?;
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
        Ok(Some((stage, errno))) => {
            release_after_failure(pid, &err_r, image, false).await;
            return Err(stage_error(&program_s, stage, errno));
        }
        Ok(None) => {
            return Err(Error::Other(format!(
                "{program_s}: child exited during setup"
            )))
        }
        Err(e) => {
            release_after_failure(pid, &err_r, image, true).await;
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
                image: Some(image),
            }),
            exit_tx,
        },
        exit_rx,
    })
}

/// A child just created by [`new_child`].
struct Created {
    pid: i32,
    exit_rx: oneshot::Receiver<Exit>,
    /// The start pipe's write end.
    start_w: OwnedFd,
    /// The status pipe's read end.
    err_r: OwnedFd,
    /// The data the child reads until its exec.
    image: Box<ChildImage>,
}

/// The synchronous part of [`spawn`]: prepares the child's data, creates the child, subscribes
/// the pid.
fn new_child(
    reaper: &Reaper,
    spec: &ProcessSpec,
    program: &Path,
    stdio: ChildStdio,
    cgroup_tasks: &[CString],
) -> Result<Created> {
    // Everything the child touches is prepared here, before it exists.
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
    let stack = if crate::sys::shared_memory_spawn() {
        Some(Stack::new()?)
    } else {
        None
    };
    let image = Box::new(ChildImage {
        prog,
        _argv: argv,
        argv_p,
        _envp: envp,
        envp_p,
        cwd,
        gids: spec.additional_gids.clone(),
        rlimits,
        uid: spec.uid,
        gid: spec.gid,
        no_new_privs: spec.no_new_privileges,
        stdin: stdio.stdin.as_raw_fd(),
        stdout: stdio.stdout.as_raw_fd(),
        stderr: stdio.stderr.as_raw_fd(),
        ctty: stdio.ctty,
        start_r: start_r.as_raw_fd(),
        err_w: err_w.as_raw_fd(),
        cgroup_tasks: cgroup_tasks.to_vec(),
        stack,
    });

    // Race: the pid is subscribed before the reaper can look it up (same lock).
    let mut subs = reaper.lock();
    let pid = create_child(&image);
    if pid < 0 {
        return Err(Error::io(
            "create the process",
            std::io::Error::last_os_error(),
        ));
    }
    let (tx, exit_rx) = oneshot::channel();
    subs.insert(pid, tx);
    drop(subs);
    drop(start_r);
    drop(err_w);
    drop(stdio);
    Ok(Created {
        pid,
        exit_rx,
        start_w,
        err_r,
        image,
    })
}

/// Creates the child running [`child_main`] on `image`: with a shared address space where
/// [`crate::sys`] has raw system calls (no copy of the server's page tables, and no
/// copy-on-write fault for each page the server writes while the child waits for Start), else
/// with fork. Every signal is blocked around it, so that no handler of the server's runs in
/// the child before the child has put them back to their defaults. Returns the pid or -1.
fn create_child(image: &ChildImage) -> i32 {
    // SAFETY: signal masks of this thread, saved and restored; the child runs only
    // `child_main`, which makes raw system calls on `image`, which the caller keeps alive (and
    // unmoved, in its Box) until the child has exec'd or is gone.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let arg = image as *const ChildImage as *mut libc::c_void;
        let pid = match &image.stack {
            Some(stack) => libc::clone(
                child_entry,
                stack.top(),
                libc::CLONE_VM | libc::SIGCHLD,
                arg,
            ),
            None => match libc::fork() {
                0 => child_main(image),
                pid => pid,
            },
        };
        let errno = *libc::__errno_location();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        *libc::__errno_location() = errno;
        pid
    }
}

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildImage` that `create_child` passed, alive until the exec.
    unsafe { child_main(&*(arg as *const ChildImage)) }
}

/// Everything the child reads between its creation and its exec. With a shared address space
/// the child reads the server's own copy, so the [`Process`] keeps it until the child has
/// exec'd (its status pipe closed after a Start) or has been reaped.
struct ChildImage {
    prog: CString,
    _argv: Vec<CString>,
    argv_p: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_p: Vec<*const libc::c_char>,
    cwd: CString,
    gids: Vec<libc::gid_t>,
    rlimits: Vec<(i32, libc::rlimit)>,
    uid: u32,
    gid: u32,
    no_new_privs: bool,
    stdin: i32,
    stdout: i32,
    stderr: i32,
    ctty: bool,
    start_r: i32,
    err_w: i32,
    cgroup_tasks: Vec<CString>,
    /// The child's stack when it shares the address space.
    stack: Option<Stack>,
}

// SAFETY: the raw pointers point into the CStrings owned by the same value; nothing mutates it.
unsafe impl Send for ChildImage {}

/// A child's own stack in the shared address space: 64 KiB above a guard page.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    const SIZE: usize = 64 * 1024;
    const GUARD: usize = 4096;

    fn new() -> Result<Stack> {
        let len = Self::SIZE + Self::GUARD;
        // SAFETY: a fresh anonymous mapping, checked; its lowest page is made inaccessible.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(Error::io("map a stack", std::io::Error::last_os_error()));
            }
            libc::mprotect(base, Self::GUARD, libc::PROT_NONE);
            Ok(Stack { base, len })
        }
    }

    /// The initial stack pointer (stacks grow down; the end is page-aligned).
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used by any child (see ChildImage).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Frees `image` once the child that failed its setup (or, `hung`, did not answer and is
/// killed first) is gone: its status pipe at EOF means it has exited and no longer runs on the
/// image. A child still there after [`CHILD_GONE`] is killed, and its image is left allocated
/// rather than freed under it.
async fn release_after_failure(
    pid: i32,
    err_r: &AsyncFd<OwnedFd>,
    image: Box<ChildImage>,
    hung: bool,
) {
    let kill = || {
        // SAFETY: kill our own child (subscribed to the reaper, not yet reaped).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    };
    if hung {
        kill();
    }
    loop {
        match read_record(err_r, CHILD_GONE).await {
            Ok(Some(_)) => continue,
            Ok(None) => return drop(image),
            Err(_) => {
                kill();
                tracing::warn!(
                    pid,
                    "child still there after a failed setup; its data is kept"
                );
                std::mem::forget(image);
                return;
            }
        }
    }
}

/// How long a child that failed its setup may take to exit.
const CHILD_GONE: Duration = Duration::from_secs(2);

fn report(fd: i32, stage: u32, errno: i32) {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&stage.to_ne_bytes());
    b[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write(2) of a local buffer to the status pipe.
    unsafe { crate::sys::write(fd, &b) };
}

/// A step's raw result: on failure, the stage and errno are reported and the child exits 127.
fn check(a: &ChildImage, stage: u32, ret: isize) {
    if ret < 0 {
        report(a.err_w, stage, -ret as i32);
        crate::sys::exit(127);
    }
}

fn raw(n: libc::c_long, a0: usize, a1: usize, a2: usize, a3: usize) -> isize {
    // SAFETY: each caller in `child_main` passes valid arguments for `n`.
    unsafe { crate::sys::syscall(n, [a0, a1, a2, a3, 0, 0]) }
}

/// The kernel's `struct sigaction` (handler, flags, restorer, mask), large enough on x86_64
/// and aarch64.
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: usize,
    flags: usize,
    restorer: usize,
    mask: u64,
}

/// Every signal the server catches back to its default (its handlers, in the server's memory,
/// must never run in the child; an exec would reset them too), SIGPIPE too (Rust ignores it),
/// then none blocked.
fn reset_signals() {
    for sig in 1..=64usize {
        if sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize {
            continue;
        }
        let mut old = KernelSigaction::default();
        let got = raw(
            libc::SYS_rt_sigaction,
            sig,
            0,
            &mut old as *mut _ as usize,
            8,
        );
        if got == 0 && (old.handler > 1 || sig == libc::SIGPIPE as usize) {
            let dfl = KernelSigaction::default();
            raw(libc::SYS_rt_sigaction, sig, &dfl as *const _ as usize, 0, 8);
        }
    }
    let none = 0u64;
    raw(
        libc::SYS_rt_sigprocmask,
        libc::SIG_SETMASK as usize,
        &none as *const u64 as usize,
        0,
        8,
    );
}

/// `from` as fd `to`, inherited across the exec.
fn dup_to(from: i32, to: i32) -> isize {
    if from == to {
        raw(libc::SYS_fcntl, to as usize, libc::F_SETFD as usize, 0, 0)
    } else {
        raw(libc::SYS_dup3, from as usize, to as usize, 0, 0)
    }
}

fn close_range(first: i32, last: i32) {
    if first <= last {
        raw(libc::SYS_close_range, first as usize, last as usize, 0, 0);
    }
}

/// The child between its creation and its exec: raw system calls only ([`crate::sys`]), on
/// `a` and its own stack, nothing that could panic.
fn child_main(a: &ChildImage) -> ! {
    reset_signals();
    // First, while still root: into the task's cgroup (not fatal, as for the server).
    // SAFETY: raw open/write/close of prepared paths.
    if let Err(errno) = unsafe { crate::cgroup::enter_self(&a.cgroup_tasks) } {
        report(a.err_w, JOIN_CGROUP, errno);
    }
    check(a, 1, raw(libc::SYS_setsid, 0, 0, 0, 0));
    check(a, 2, dup_to(a.stdin, 0));
    check(a, 2, dup_to(a.stdout, 1));
    check(a, 2, dup_to(a.stderr, 2));
    if a.ctty {
        check(
            a,
            3,
            raw(libc::SYS_ioctl, 0, libc::TIOCSCTTY as usize, 0, 0),
        );
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
    for (res, lim) in &a.rlimits {
        let lim = lim as *const libc::rlimit as usize;
        check(a, 4, raw(libc::SYS_prlimit64, 0, *res as usize, lim, 0));
    }
    if raw(libc::SYS_geteuid, 0, 0, 0, 0) == 0 {
        let gids = a.gids.as_ptr() as usize;
        check(a, 5, raw(libc::SYS_setgroups, a.gids.len(), gids, 0, 0));
    }
    check(a, 6, raw(libc::SYS_setgid, a.gid as usize, 0, 0, 0));
    check(a, 7, raw(libc::SYS_setuid, a.uid as usize, 0, 0, 0));
    if a.no_new_privs {
        let set = libc::PR_SET_NO_NEW_PRIVS as usize;
        check(a, 8, raw(libc::SYS_prctl, set, 1, 0, 0));
    }
    check(a, 9, raw(libc::SYS_chdir, a.cwd.as_ptr() as usize, 0, 0, 0));
    report(a.err_w, 0, 0);
    let mut b = 0u8;
    loop {
        let n = raw(
            libc::SYS_read,
            a.start_r as usize,
            &mut b as *mut u8 as usize,
            1,
            0,
        );
        if n == 1 {
            break;
        }
        if n == -(libc::EINTR as isize) {
            continue;
        }
        // The shim went away or deleted us before Start.
        crate::sys::exit(137);
    }
    let argv = a.argv_p.as_ptr() as usize;
    let envp = a.envp_p.as_ptr() as usize;
    let r = raw(libc::SYS_execve, a.prog.as_ptr() as usize, argv, envp, 0);
    report(a.err_w, 10, -r as i32);
    crate::sys::exit(127)
}

impl Drop for Process {
    /// A child neither exec'd nor reaped (a process dropped on an error path right after a
    /// SIGKILL) may still be running on its data for a moment: that is left allocated.
    fn drop(&mut self) {
        let i = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(image) = i.image.take() {
            std::mem::forget(image);
        }
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
                // Exec'd: the child runs its own program in its own memory now.
                i.image.take();
            }
            Err(_) => i.start_failed = true,
        }
        res
    }

    /// Marks the pid reaped (first thing on exit, before output is drained).
    pub fn mark_reaped(&self) {
        let mut i = self.inner();
        i.reaped = true;
        // Gone: nothing runs on the child's data any more.
        i.image.take();
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
