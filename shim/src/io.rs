//! Stdio of a process: FIFOs (`fifo://` or bare paths), `file://`, `binary://` loggers, ptys and
//! /dev/null, plus the copy loops between the process's pipes and the client's FIFOs.
//!
//! Rules: the shim keeps its own `O_RDONLY` fd on each stdout/stderr FIFO, so it never blocks
//! opening the write side and never gets EPIPE when the client goes away; output is copied until
//! the process side reaches EOF, so nothing written before an exit is lost.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::pty;

/// The stdio paths of a Create or Exec request, echoed by State.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// stdin FIFO path or empty.
    pub stdin: String,
    /// stdout URI or empty.
    pub stdout: String,
    /// stderr URI or empty.
    pub stderr: String,
    /// Run on a pty.
    pub terminal: bool,
}

/// The fds the child gets as 0, 1, 2.
pub struct ChildStdio {
    /// fd 0.
    pub stdin: OwnedFd,
    /// fd 1.
    pub stdout: OwnedFd,
    /// fd 2.
    pub stderr: OwnedFd,
    /// Make fd 0 the controlling terminal.
    pub ctty: bool,
}

/// The shim side of a process's stdio.
#[derive(Default)]
pub struct IoHandles {
    /// Tells the stdin copier to finish (CloseIO).
    pub stdin_close: Option<oneshot::Sender<()>>,
    /// The pty master, for ResizePty.
    pub pty_master: Option<OwnedFd>,
    /// Output copiers; they end at EOF of the process side.
    pub outputs: Vec<JoinHandle<()>>,
}

/// Who the process is, for `binary://` loggers.
#[derive(Debug, Clone)]
pub struct LogContext {
    /// containerd namespace.
    pub namespace: String,
    /// container id.
    pub id: String,
}

#[derive(Debug)]
enum Target {
    Null,
    Fifo(String),
    File(String),
    Binary(String),
}

fn parse_uri(s: &str) -> Result<Target> {
    if s.is_empty() {
        return Ok(Target::Null);
    }
    if let Some(p) = s.strip_prefix("fifo://") {
        return Ok(Target::Fifo(p.to_string()));
    }
    if let Some(p) = s.strip_prefix("file://") {
        return Ok(Target::File(p.to_string()));
    }
    if let Some(p) = s.strip_prefix("binary://") {
        return Ok(Target::Binary(p.to_string()));
    }
    if s.contains("://") {
        return Err(Error::InvalidArgument(format!(
            "unsupported stdio URI {s:?}"
        )));
    }
    Ok(Target::Fifo(s.to_string()))
}

fn dev_null(write: bool) -> Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map_err(|e| Error::io("open /dev/null", e))?;
    Ok(f.into())
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::errno("pipe", e))
}

fn open_fifo(path: &str, write: bool) -> Result<OwnedFd> {
    let mut o = OpenOptions::new();
    if write {
        o.write(true);
    } else {
        o.read(true);
    }
    let f = o
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::InvalidArgument(format!("open stdio fifo {path}: {e}")))?;
    Ok(f.into())
}

pub(crate) fn set_nonblocking(fd: i32, on: bool) -> Result<()> {
    // SAFETY: fcntl on an fd owned by the caller.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        let fl = if on {
            fl | libc::O_NONBLOCK
        } else {
            fl & !libc::O_NONBLOCK
        };
        if libc::fcntl(fd, libc::F_SETFL, fl) < 0 {
            return Err(Error::io(
                "fcntl O_NONBLOCK",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

fn async_fd(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>> {
    set_nonblocking(fd.as_raw_fd(), true)?;
    // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and unchanged while registered.
    unsafe { AsyncFd::register(fd) }
        .map_err(|e| Error::io("register fd with the runtime", e.into_parts().1))
}

async fn read_some(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut g = fd.readable().await?;
        let r = g.try_io(|inner| {
            // SAFETY: read into a buffer we own.
            let n = unsafe { libc::read(inner.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                // A pty master reads EIO once every slave fd is closed: that is EOF.
                if e.raw_os_error() == Some(libc::EIO) {
                    return Ok(0);
                }
                return Err(e);
            }
            Ok(n as usize)
        });
        match r {
            Ok(res) => return res,
            Err(_would_block) => continue,
        }
    }
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let mut g = fd.writable().await?;
        let r = g.try_io(|inner| {
            // SAFETY: write from a buffer we own.
            let n = unsafe { libc::write(inner.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(n as usize)
        });
        match r {
            Ok(Ok(n)) => buf = &buf[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// Copies `src` to `dst` until EOF of `src`; `keep` is held open until then.
fn spawn_output(
    src: AsyncFd<OwnedFd>,
    dst: AsyncFd<OwnedFd>,
    keep: Option<OwnedFd>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match read_some(&src, &mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = write_all(&dst, &buf[..n]).await {
                        tracing::warn!("stdio copy: write: {e}");
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!("stdio copy: read: {e}");
                    break;
                }
            }
        }
        wait_read(&dst).await;
        drop(keep);
    })
}

/// How long the end of an output copy waits for the client to read what is still in the FIFO.
const READ_WAIT: Duration = Duration::from_secs(2);

/// Waits (at most [`READ_WAIT`]) until the client has read everything written to the FIFO
/// `dst`. The exit event follows the end of the copy, and containerd 1.6's client closes its
/// FIFO readers as soon as it deletes the task (`task.Delete` calls `io.Close` before
/// `io.Wait`, task.go at v1.6.20): output still in the FIFO then is lost, which happened to the
/// last 16 KiB of a 1 MiB `ctr run` on a loaded machine.
async fn wait_read(dst: &AsyncFd<OwnedFd>) {
    let unread = || {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD on a FIFO we own writes one int.
        let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FIONREAD, &mut n) };
        r == 0 && n > 0
    };
    let end = std::time::Instant::now() + READ_WAIT;
    while unread() && std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Copies the stdin FIFO into the process until EOF of the FIFO or CloseIO.
fn spawn_stdin(src: AsyncFd<OwnedFd>, dst: AsyncFd<OwnedFd>) -> oneshot::Sender<()> {
    let (tx, mut rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4 * 1024];
        let mut closing = false;
        loop {
            let n = if closing {
                // CloseIO: forward what is already buffered in the FIFO, then stop.
                let n = unsafe {
                    // SAFETY: read into a buffer we own from a non-blocking fd.
                    libc::read(src.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n <= 0 {
                    break;
                }
                n as usize
            } else {
                tokio::select! {
                    r = read_some(&src, &mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    },
                    _ = &mut rx => { closing = true; continue; }
                }
            };
            if write_all(&dst, &buf[..n]).await.is_err() {
                break;
            }
        }
        // Dropping `dst` closes the process's stdin: EOF.
    });
    tx
}

/// Sets up stdio for one process: returns the child's fds and the shim's handles.
pub async fn setup(paths: &StdioPaths, ctx: &LogContext) -> Result<(ChildStdio, IoHandles)> {
    let mut h = IoHandles::default();
    if paths.terminal {
        let p = pty::open()?;
        let slave = p.slave;
        let master = p.master;
        let stdin = slave.try_clone().map_err(|e| Error::io("dup pty", e))?;
        let stdout = slave.try_clone().map_err(|e| Error::io("dup pty", e))?;
        let child = ChildStdio {
            stdin,
            stdout,
            stderr: slave,
            ctty: true,
        };
        match parse_uri(&paths.stdout)? {
            Target::Fifo(path) => {
                let keep = open_fifo(&path, false)?;
                let w = async_fd(open_fifo(&path, true)?)?;
                let src = async_fd(master.try_clone().map_err(|e| Error::io("dup pty", e))?)?;
                h.outputs.push(spawn_output(src, w, Some(keep)));
            }
            Target::Null => {}
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "terminal stdout must be a fifo, got {:?}",
                    paths.stdout
                )))
            }
        }
        if let Target::Fifo(path) = parse_uri(&paths.stdin)? {
            let src = async_fd(open_fifo(&path, false)?)?;
            let dst = async_fd(master.try_clone().map_err(|e| Error::io("dup pty", e))?)?;
            h.stdin_close = Some(spawn_stdin(src, dst));
        }
        h.pty_master = Some(master);
        return Ok((child, h));
    }

    let stdin = match parse_uri(&paths.stdin)? {
        Target::Null => dev_null(false)?,
        Target::Fifo(path) => {
            let (r, w) = pipe()?;
            let src = async_fd(open_fifo(&path, false)?)?;
            h.stdin_close = Some(spawn_stdin(src, async_fd(w)?));
            r
        }
        _ => {
            return Err(Error::InvalidArgument(format!(
                "stdin must be a fifo path, got {:?}",
                paths.stdin
            )))
        }
    };

    // file:// and binary:// name one destination for both streams (containerd's LogURI).
    match parse_uri(&paths.stdout)? {
        Target::File(path) => {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(&path)
                .map_err(|e| Error::InvalidArgument(format!("open log file {path}: {e}")))?;
            let out: OwnedFd = f.into();
            let err = out.try_clone().map_err(|e| Error::io("dup", e))?;
            return Ok((
                ChildStdio {
                    stdin,
                    stdout: out,
                    stderr: err,
                    ctty: false,
                },
                h,
            ));
        }
        Target::Binary(uri) => {
            let (out, err) = start_logger(&uri, ctx).await?;
            return Ok((
                ChildStdio {
                    stdin,
                    stdout: out,
                    stderr: err,
                    ctty: false,
                },
                h,
            ));
        }
        _ => {}
    }
    let stdout = output(&paths.stdout, &mut h)?;
    let stderr = output(&paths.stderr, &mut h)?;
    Ok((
        ChildStdio {
            stdin,
            stdout,
            stderr,
            ctty: false,
        },
        h,
    ))
}

fn output(uri: &str, h: &mut IoHandles) -> Result<OwnedFd> {
    match parse_uri(uri)? {
        Target::Null => dev_null(true),
        Target::Fifo(path) => {
            // Our own reader first: the write-side open then never blocks.
            let keep = open_fifo(&path, false)?;
            let w = async_fd(open_fifo(&path, true)?)?;
            let (r, pw) = pipe()?;
            h.outputs.push(spawn_output(async_fd(r)?, w, Some(keep)));
            Ok(pw)
        }
        Target::File(_) | Target::Binary(_) => Err(Error::InvalidArgument(format!(
            "stderr {uri:?}: file:// and binary:// are given as stdout only"
        ))),
    }
}

/// Starts a containerd logging binary: fd 3 = stdout pipe, fd 4 = stderr pipe, fd 5 = ready
/// pipe (closed by the logger when ready); env CONTAINER_ID and CONTAINER_NAMESPACE.
async fn start_logger(uri: &str, ctx: &LogContext) -> Result<(OwnedFd, OwnedFd)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    if !Path::new(path).is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "binary:// logger path must be absolute: {path:?}"
        )));
    }
    let mut args = Vec::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        args.push(k.to_string());
        if !v.is_empty() {
            args.push(v.to_string());
        }
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = std::process::Command::new(path);
    cmd.args(&args)
        .env("CONTAINER_ID", &ctx.id)
        .env("CONTAINER_NAMESPACE", &ctx.namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only dup2/fcntl (async-signal-safe) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Move the three fds above 5 first so the dup2s below cannot clobber each other.
            let mut moved = [0; 3];
            for (i, fd) in fds.iter().enumerate() {
                moved[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if moved[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in moved.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    // The logger is never waited for with Child::wait: the reaper reaps it as an orphan.
    let child = cmd
        .spawn()
        .map_err(|e| Error::InvalidArgument(format!("start logging binary {path}: {e}")))?;
    drop(child);
    drop(out_r);
    drop(err_r);
    drop(ready_w);
    let ready = async_fd(ready_r)?;
    let mut b = [0u8; 16];
    let wait = async {
        loop {
            match read_some(&ready, &mut b).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .map_err(|_| Error::Other(format!("logging binary {path} not ready after 10s")))?;
    Ok((out_w, err_w))
}

/// Wraps a raw fd number we own (tests and the server's fd 3).
///
/// # Safety
/// `fd` must be open and owned by nobody else.
pub unsafe fn owned(fd: i32) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_uris() {
        assert!(matches!(parse_uri("").unwrap(), Target::Null));
        assert!(matches!(parse_uri("/run/f").unwrap(), Target::Fifo(p) if p == "/run/f"));
        assert!(matches!(parse_uri("fifo:///run/f").unwrap(), Target::Fifo(p) if p == "/run/f"));
        assert!(
            matches!(parse_uri("file:///var/log/x").unwrap(), Target::File(p) if p == "/var/log/x")
        );
        assert!(
            matches!(parse_uri("binary:///bin/l?a=b").unwrap(), Target::Binary(p) if p == "/bin/l?a=b")
        );
        let e = parse_uri("tcp://host:1").unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    }

    /// The end of an output copy (after which the exit event goes) waits for the client to
    /// read what is left in the FIFO: containerd 1.6's client closes its readers on Delete.
    #[tokio::test]
    async fn an_output_copy_ends_only_once_the_client_has_read_the_fifo() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("out");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let path = fifo.display().to_string();
        // The client's reader, open but not read yet.
        let client = open_fifo(&path, false).expect("client reader");
        let mut h = IoHandles::default();
        let process_end = output(&path, &mut h).expect("output");
        let data = vec![b'x'; 48 * 1024];
        let mut w = std::fs::File::from(process_end);
        std::io::Write::write_all(&mut w, &data).expect("write");
        drop(w);
        let copy = h.outputs.pop().expect("one copy");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !copy.is_finished(),
            "the copy ended with the output still unread in the FIFO"
        );
        let mut got = 0;
        let mut buf = vec![0u8; 8192];
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while got < data.len() && std::time::Instant::now() < end {
            // SAFETY: read into a buffer we own from a non-blocking fd we own.
            let n = unsafe { libc::read(client.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                got += n as usize;
            } else {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        assert_eq!(got, data.len());
        tokio::time::timeout(Duration::from_secs(1), copy)
            .await
            .expect("the copy ends once the FIFO is read")
            .expect("copy task");
    }
}
