//! Container stdio as containerd's `cio` provides it (doc 6): FIFOs created and opened by the
//! client *before* Create (stdin write side, stdout/stderr read side), output captured in the
//! background, stdin written and closed on request; `null` (empty path) and `file://` modes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::error::HarnessError;

/// Bytes kept per captured stream (the rest is drained and dropped so the writer never blocks).
pub const MAX_CAPTURE: usize = 16 << 20;

/// How one stdio stream is provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdioMode {
    /// A named pipe (`fifo` in scenarios, the default).
    #[default]
    Fifo,
    /// Not wanted: the empty string in the request.
    Null,
    /// A `file:///abs/path` URI the shim appends to (stdout/stderr only).
    File,
}

/// What stdio to set up for one process.
#[derive(Debug, Clone, Default)]
pub struct StdioOptions {
    /// Stdin mode.
    pub stdin: StdioMode,
    /// Stdout mode.
    pub stdout: StdioMode,
    /// Stderr mode (forced to `Null` with a terminal, as `cio` does).
    pub stderr: StdioMode,
    /// Whether the process gets a terminal.
    pub terminal: bool,
    /// Bytes written to stdin right after the FIFOs are opened.
    pub stdin_data: Option<Vec<u8>>,
}

#[derive(Default)]
struct Captured {
    stdout: Mutex<Vec<u8>>,
    stderr: Mutex<Vec<u8>>,
}

/// The stdio of one process; dropping it stops capture and removes the FIFOs.
pub struct StdioSet {
    paths: (String, String, String),
    files: Vec<PathBuf>,
    out_file: Option<PathBuf>,
    err_file: Option<PathBuf>,
    stdin: Arc<tokio::sync::Mutex<Option<pipe::Sender>>>,
    captured: Arc<Captured>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    terminal: bool,
    /// Until when the stdout reader does not read (the `stall-stdout` fault).
    stall_out: Arc<tokio::sync::watch::Sender<Option<tokio::time::Instant>>>,
}

impl std::fmt::Debug for StdioSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioSet")
            .field("paths", &self.paths)
            .finish()
    }
}

fn mkfifo(p: &Path) -> Result<(), HarnessError> {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o700)).map_err(|e| {
        HarnessError::io(
            format!("mkfifo {}", p.display()),
            std::io::Error::from_raw_os_error(e as i32),
        )
    })
}

impl StdioSet {
    /// Creates `<dir>/<id>-stdin|-stdout|-stderr` as requested and opens them (must be called
    /// inside a tokio runtime: capture runs as tasks).
    /// `id` names the FIFOs, so a path-like one (empty, `.`, `..`, or with a `/` or NUL) is
    /// refused with an error naming it.
    pub fn create(dir: &Path, id: &str, opts: StdioOptions) -> Result<StdioSet, HarnessError> {
        if id.is_empty() || id == "." || id == ".." || id.contains(['/', '\0']) {
            return Err(HarnessError::Invalid {
                field: "stdio id".into(),
                message: format!(
                    "{id:?} must be one non-empty path component other than `.` and `..`"
                ),
            });
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(HarnessError::Invalid {
                field: "StdioSet::create".into(),
                message: "must be called inside a tokio runtime".into(),
            });
        }
        let dir = std::path::absolute(dir)
            .map_err(|e| HarnessError::io(format!("resolving {}", dir.display()), e))?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
        let stderr_mode = if opts.terminal {
            StdioMode::Null
        } else {
            opts.stderr
        };
        let captured = Arc::new(Captured::default());
        let changed = Arc::new(tokio::sync::watch::channel(0u64).0);
        let mut set = StdioSet {
            paths: Default::default(),
            files: vec![],
            out_file: None,
            err_file: None,
            stdin: Arc::new(tokio::sync::Mutex::new(None)),
            captured: captured.clone(),
            changed: changed.clone(),
            tasks: vec![],
            terminal: opts.terminal,
            stall_out: Arc::new(tokio::sync::watch::channel(None).0),
        };
        // stdin: the write side, opened read-write so the open never blocks and data written
        // before the shim opens its reader waits in the pipe buffer.
        match opts.stdin {
            StdioMode::Null => {}
            StdioMode::File => {
                return Err(HarnessError::Invalid {
                    field: "stdin".into(),
                    message: "file mode is only for stdout/stderr".into(),
                })
            }
            StdioMode::Fifo => {
                let p = dir.join(format!("{id}-stdin"));
                mkfifo(&p)?;
                set.files.push(p.clone());
                let tx = pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(&p)
                    .map_err(|e| HarnessError::io(format!("opening {}", p.display()), e))?;
                set.stdin = Arc::new(tokio::sync::Mutex::new(Some(tx)));
                set.paths.0 = p.display().to_string();
            }
        }
        for (is_out, mode) in [(true, opts.stdout), (false, stderr_mode)] {
            let name = if is_out { "stdout" } else { "stderr" };
            match mode {
                StdioMode::Null => {}
                StdioMode::File => {
                    let p = dir.join(format!("{id}-{name}.log"));
                    std::fs::write(&p, b"")
                        .map_err(|e| HarnessError::io(format!("creating {}", p.display()), e))?;
                    set.files.push(p.clone());
                    let uri = format!("file://{}", p.display());
                    if is_out {
                        set.paths.1 = uri;
                        set.out_file = Some(p);
                    } else {
                        set.paths.2 = uri;
                        set.err_file = Some(p);
                    }
                }
                StdioMode::Fifo => {
                    let p = dir.join(format!("{id}-{name}"));
                    mkfifo(&p)?;
                    set.files.push(p.clone());
                    // Read side opened read-write: never EOF before the shim opens its writer.
                    let rx = pipe::OpenOptions::new()
                        .read_write(true)
                        .open_receiver(&p)
                        .map_err(|e| HarnessError::io(format!("opening {}", p.display()), e))?;
                    let cap = captured.clone();
                    let ch = changed.clone();
                    // stderr is never stalled: its sender is dropped at once.
                    let stall = if is_out {
                        set.stall_out.subscribe()
                    } else {
                        tokio::sync::watch::channel(None).1
                    };
                    set.tasks.push(capture(rx, is_out, cap, ch, stall));
                    if is_out {
                        set.paths.1 = p.display().to_string();
                    } else {
                        set.paths.2 = p.display().to_string();
                    }
                }
            }
        }
        if let Some(data) = opts.stdin_data {
            set.prefill_stdin(&data)?;
        }
        Ok(set)
    }

    /// Writes `data` into the stdin FIFO before the shim reads: up to the pipe buffer, larger
    /// input is an error (use `write_stdin`).
    fn prefill_stdin(&self, data: &[u8]) -> Result<(), HarnessError> {
        let mut guard = self.stdin.try_lock().expect("no other user yet");
        if let Some(tx) = guard.as_mut() {
            // Up to the pipe buffer (64 KiB) is written now; larger input needs write_stdin.
            use std::os::fd::AsFd;
            let n = nix::unistd::write(tx.as_fd(), data).unwrap_or(0);
            if n < data.len() {
                return Err(HarnessError::Invalid {
                    field: "stdin".into(),
                    message: format!(
                        "only {n} of {} bytes fit in the FIFO before the shim reads; use write_stdin",
                        data.len()
                    ),
                });
            }
        }
        drop(guard);

        Ok(())
    }

    /// `(stdin, stdout, stderr)` as put into Create/Exec requests (`""` when not wanted).
    pub fn paths(&self) -> (String, String, String) {
        self.paths.clone()
    }

    /// Whether the set was made for a terminal.
    pub fn terminal(&self) -> bool {
        self.terminal
    }

    /// Everything captured on stdout so far (read from the file in `file` mode).
    pub fn stdout(&self) -> Vec<u8> {
        match &self.out_file {
            Some(p) => std::fs::read(p).unwrap_or_default(),
            None => self
                .captured
                .stdout
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Everything captured on stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        match &self.err_file {
            Some(p) => std::fs::read(p).unwrap_or_default(),
            None => self
                .captured
                .stderr
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Writes to the stdin FIFO (bounded by `timeout` in [`StdioSet::write_stdin_timeout`]; this
    /// form waits at most 10s).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), HarnessError> {
        self.write_stdin_timeout(data, Duration::from_secs(10))
            .await
    }

    /// Writes to the stdin FIFO, failing after `timeout` if the shim does not read.
    pub async fn write_stdin_timeout(
        &self,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let mut g = self.stdin.lock().await;
        let Some(tx) = g.as_mut() else {
            return Err(HarnessError::Invalid {
                field: "stdin".into(),
                message: "stdin is not a FIFO or was closed".into(),
            });
        };
        match tokio::time::timeout(timeout, tx.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(HarnessError::io("writing stdin FIFO", e)),
            Err(_) => Err(HarnessError::io(
                "writing stdin FIFO",
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the shim did not read within {timeout:?}"),
                ),
            )),
        }
    }

    /// Stops reading the stdout FIFO for `d` from now (a slow or stuck log reader): the
    /// process's writes fill the pipe and then block; reading resumes by itself afterwards.
    pub fn stall_stdout(&self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        self.stall_out.send_replace(Some(until));
    }

    /// Whether stdout is a FIFO the harness reads (what `stall_stdout` can stall).
    pub fn stdout_is_fifo(&self) -> bool {
        self.out_file.is_none() && !self.paths.1.is_empty()
    }

    /// Closes the harness's side of stdin: the process sees EOF once the shim's copy ends.
    pub fn close_stdin(&self) {
        if let Ok(mut g) = self.stdin.try_lock() {
            g.take();
        } else if let Ok(rt) = tokio::runtime::Handle::try_current() {
            // A write is in flight; drop the sender as soon as it finishes.
            let stdin = self.stdin.clone();
            rt.spawn(async move {
                stdin.lock().await.take();
            });
        }
    }

    /// Waits until `pred(stdout, stderr)` holds, at most `timeout`; returns whether it held.
    pub async fn wait_output(
        &self,
        pred: impl Fn(&[u8], &[u8]) -> bool,
        timeout: Duration,
    ) -> bool {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let poll = Duration::from_millis(50); // file mode has no notifications
        loop {
            rx.borrow_and_update();
            if pred(&self.stdout(), &self.stderr()) {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let step = (deadline - now).min(poll);
            let _ = tokio::time::timeout(step, rx.changed()).await;
        }
    }
}

impl Drop for StdioSet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// The task draining one output FIFO into `cap` (the first [`MAX_CAPTURE`] bytes kept), telling
/// `ch` of every read; while `stall` holds a deadline (stdout only) it does not read, so the
/// writer's pipe fills and blocks.
fn capture(
    mut rx: pipe::Receiver,
    is_out: bool,
    cap: Arc<Captured>,
    ch: Arc<tokio::sync::watch::Sender<u64>>,
    mut stall: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let until = *stall.borrow_and_update();
            if let Some(until) = until {
                if tokio::time::Instant::now() < until {
                    // Not reading: the writer's pipe fills and blocks.
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = stall.changed() => {}
                    }
                    continue;
                }
            }
            // A read is cancel-safe: a stall starting now wins over a pending read.
            let r = tokio::select! {
                r = rx.read(&mut buf) => r,
                Ok(()) = stall.changed() => continue,
            };
            match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let target = if is_out { &cap.stdout } else { &cap.stderr };
                    let mut t = target.lock().unwrap_or_else(|p| p.into_inner());
                    // Keep the first MAX_CAPTURE bytes; keep draining the rest.
                    let room = MAX_CAPTURE.saturating_sub(t.len());
                    t.extend_from_slice(&buf[..n.min(room)]);
                    ch.send_modify(|c| *c += 1);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fifo_output_is_captured_from_a_real_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StdioSet::create(tmp.path(), "c1", StdioOptions::default()).unwrap();
        let (i, o, e) = s.paths();
        assert!(i.ends_with("c1-stdin") && o.ends_with("c1-stdout") && e.ends_with("c1-stderr"));
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("echo hello > {o}; echo oops > {e}"))
            .status()
            .unwrap();
        assert!(st.success());
        assert!(
            s.wait_output(
                |o, e| o == b"hello\n" && e == b"oops\n",
                Duration::from_secs(5)
            )
            .await,
            "got {:?} {:?}",
            s.stdout(),
            s.stderr()
        );
    }

    #[tokio::test]
    async fn a_stalled_stdout_reads_nothing_then_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StdioSet::create(tmp.path(), "st", StdioOptions::default()).unwrap();
        assert!(s.stdout_is_fifo());
        let (_, o, _) = s.paths();
        s.stall_stdout(Duration::from_millis(800));
        let t0 = std::time::Instant::now();
        // More than a pipe buffer: the writer must block until the stall ends.
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!("head -c 300000 /dev/zero > {o}"))
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(s.stdout().len(), 0, "read during the stall");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the writer finished although nobody read"
        );
        assert!(
            s.wait_output(|o, _| o.len() == 300_000, Duration::from_secs(10))
                .await,
            "got {} bytes",
            s.stdout().len()
        );
        let st = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(st.success());
        assert!(t0.elapsed() >= Duration::from_millis(800));
    }

    #[tokio::test]
    async fn stdin_data_reaches_a_reader_and_close_gives_eof() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StdioSet::create(
            tmp.path(),
            "c2",
            StdioOptions {
                stdin_data: Some(b"abc".to_vec()),
                ..Default::default()
            },
        )
        .unwrap();
        let (i, o, _) = s.paths();
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!("cat < {i} > {o}"))
            .spawn()
            .unwrap();
        s.write_stdin(b"def").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.close_stdin();
        let out = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
            .await
            .expect("cat did not see EOF")
            .unwrap();
        assert!(out.status.success());
        assert!(
            s.wait_output(|o, _| o == b"abcdef", Duration::from_secs(5))
                .await
        );
    }

    #[tokio::test]
    async fn null_and_terminal_modes_give_empty_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StdioSet::create(
            tmp.path(),
            "c3",
            StdioOptions {
                stdin: StdioMode::Null,
                terminal: true,
                ..Default::default()
            },
        )
        .unwrap();
        let (i, o, e) = s.paths();
        assert_eq!((i.as_str(), e.as_str()), ("", ""));
        assert!(!o.is_empty());
        let f = StdioSet::create(
            tmp.path(),
            "c4",
            StdioOptions {
                stdout: StdioMode::File,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(f.paths().1.starts_with("file:///"));
    }
}
