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
}

impl LogDrain {
    pub(crate) fn open(path: &Path) -> Result<LogDrain, HarnessError> {
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
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let task = tokio::spawn(async move {
            let mut pending = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                match rx.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = pending.drain(..=i).collect();
                            let s = String::from_utf8_lossy(&line).trim_end().to_string();
                            tracing::debug!(target: "shim-log", "{s}");
                            let mut l = lock(&l2);
                            if l.len() < MAX_LOG_LINES {
                                l.push(s);
                            } else if l.len() == MAX_LOG_LINES {
                                l.push(format!(
                                    "[harness: log truncated after {MAX_LOG_LINES} lines]"
                                ));
                            }
                        }
                    }
                }
            }
        });
        Ok(LogDrain {
            lines,
            task: Some(task),
        })
    }

    pub(crate) fn empty() -> LogDrain {
        LogDrain {
            lines: Arc::new(Mutex::new(Vec::new())),
            task: None,
        }
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }

    /// Gives the drain a moment to take what is buffered, then stops it.
    pub(crate) async fn stop(mut self) -> Vec<String> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(t) = self.task.take() {
            t.abort();
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
