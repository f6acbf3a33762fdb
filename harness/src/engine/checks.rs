//! The shim-alive check of the mock: whether the shim server runs (or exits within its
//! bound, its socket removed); the `events` and `output` checks are the interpreter's.

use std::time::{Duration, Instant};

use super::steps::Ctx;

impl Ctx<'_> {
    pub(super) async fn shim_alive(
        &mut self,
        alive: bool,
        timeout: Option<Duration>,
        socket_removed: bool,
    ) -> Result<(), String> {
        self.shim_alive_of(None, alive, timeout, socket_removed)
            .await
    }

    pub(super) async fn shim_alive_of(
        &mut self,
        container: Option<&str>,
        alive: bool,
        timeout: Option<Duration>,
        socket_removed: bool,
    ) -> Result<(), String> {
        let idx = match container {
            Some(c) => {
                let n = self.script.expand(c)?;
                self.containers.get(&n).map(|c| c.shim).unwrap_or(0)
            }
            None => 0,
        };
        let slot = &self.shims[idx];
        let Some(pid) = self.server_pid(idx) else {
            return Err("the shim server's pid is unknown, cannot tell whether it runs".into());
        };
        // Watched until the server exits, or for the whole bound:
        // `exits-within` of a shutdown step (a wrongly exiting shim may first finish its
        // replies or wait for its clients to hang up; the reaper waits up to 200 ms), else a
        // moment for `alive`, 3 s for an exit.
        let bound = timeout.unwrap_or(if alive {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(3)
        });
        let deadline = Instant::now() + bound;
        while crate::procfs::is_alive(pid) {
            if Instant::now() >= deadline {
                return if alive {
                    Ok(())
                } else {
                    Err(format!(
                        "the shim server (pid {pid}) is still running {} later; expected it to exit",
                        humantime::format_duration(bound)
                    ))
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if alive {
            return Err(format!(
                "the shim server (pid {pid}) exited; expected it to keep running"
            ));
        }
        if socket_removed {
            if let Some(p) = crate::dialect::socket_path(&slot.address) {
                while p.exists() {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "the shim exited but left its socket {}",
                            p.display()
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Ok(())
    }
}
