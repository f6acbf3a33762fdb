//! The bundle's `log` FIFO, created and opened O_RDWR|O_NONBLOCK before `start` as containerd
//! does (doc 2.9), and drained line by line for the shim's whole life.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::error::HarnessError;

use super::lock;

/// Lines kept from one shim's `log` FIFO; the rest is drained and dropped.
pub const MAX_LOG_LINES: usize = 100_000;

/// Drains the bundle's `log` FIFO (opened O_RDWR|O_NONBLOCK before `start`, as containerd does).
pub(crate) struct LogDrain {
    lines: Arc<Mutex<Vec<String>>>,
    task: Option<tokio::task::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Splits complete lines off `pending` into `lines` (bounded by [`MAX_LOG_LINES`]).
fn take_lines(pending: &mut Vec<u8>, lines: &Mutex<Vec<String>>) {
    while let Some(i) = pending.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = pending.drain(..=i).collect();
        let s = String::from_utf8_lossy(&line).trim_end().to_string();
        tracing::debug!(target: "shim-log", "{s}");
        let mut l = lock(lines);
        if l.len() < MAX_LOG_LINES {
            l.push(s);
        } else if l.len() == MAX_LOG_LINES {
            l.push(format!(
                "[harness: log truncated after {MAX_LOG_LINES} lines]"
            ));
        }
    }
}

impl LogDrain {
    pub(crate) fn open(path: &Path) -> Result<LogDrain, HarnessError> {
        Self::open_into(path, Arc::new(Mutex::new(Vec::new())))
    }

    /// Opens `path` (creating the FIFO if needed) and drains it into `lines`.
    fn open_into(path: &Path, lines: Arc<Mutex<Vec<String>>>) -> Result<LogDrain, HarnessError> {
        if std::fs::symlink_metadata(path).is_err() {
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o700)).map_err(
                |e| {
                    HarnessError::io(
                        format!("mkfifo {}", path.display()),
                        std::io::Error::from(e),
                    )
                },
            )?;
        }
        let mut rx = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(path)
            .map_err(|e| HarnessError::io(format!("opening {}", path.display()), e))?;
        let l2 = lines.clone();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut pending = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                tokio::select! {
                    // `read` is cancel-safe: nothing is lost when the stop wins.
                    r = rx.read(&mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            pending.extend_from_slice(&buf[..n]);
                            take_lines(&mut pending, &l2);
                        }
                    },
                    _ = &mut stop_rx => {
                        // Take what the FIFO holds now (every write of an exited shim is
                        // in it), then end.
                        while let Ok(n) = rx.try_read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            pending.extend_from_slice(&buf[..n]);
                            take_lines(&mut pending, &l2);
                        }
                        break;
                    }
                }
            }
        });
        Ok(LogDrain {
            lines,
            task: Some(task),
            stop: Some(stop_tx),
        })
    }

    pub(crate) fn empty() -> LogDrain {
        LogDrain {
            lines: Arc::new(Mutex::new(Vec::new())),
            task: None,
            stop: None,
        }
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }

    /// Fault injection (containerd stopped): takes what the FIFO holds, then closes the reader,
    /// so the shim's log writes fail (EPIPE, or SIGPIPE where not ignored) until
    /// [`LogDrain::reopen`]. The lines read so far are kept.
    pub(crate) async fn close_reader(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(mut t) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(1), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }

    /// Opens the FIFO again and drains it into the same lines (containerd's `openShimLog` after a
    /// restart); a no-op while the reader is open.
    pub(crate) fn reopen(&mut self, path: &Path) -> Result<(), HarnessError> {
        if self.task.is_some() {
            return Ok(());
        }
        let mut fresh = Self::open_into(path, self.lines.clone())?;
        self.task = fresh.task.take();
        self.stop = fresh.stop.take();
        Ok(())
    }

    /// Takes what the FIFO holds now, then stops the drain (bounded to one second).
    pub(crate) async fn stop(mut self) -> Vec<String> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(mut t) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(1), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
        self.lines()
    }
}

impl Drop for LogDrain {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
