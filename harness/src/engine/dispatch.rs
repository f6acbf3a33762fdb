//! The mock containerd as the interpreter's backend: the steps only the mock can run (shim
//! faults and probes: `kill-shim`, `restart-containerd`, `events-down`, `kill-process`, ...),
//! RPC steps sent to the shim (`rpc`, `sandbox`), a Shutdown's `exits` check, the events the
//! mock's endpoint received, the FIFOs of each process.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::interp::{Backend, Sent, TaskEvents};
use super::script::{Common, Flow, Script};
use super::steps::Ctx;
use crate::pidguard::Proc;
use crate::report::Status;
use crate::scenario::Step;
use crate::stdio::StdioSet;

impl Backend for Ctx<'_> {
    fn script(&self) -> &Script {
        &self.script
    }

    fn script_mut(&mut self) -> &mut Script {
        &mut self.script
    }

    async fn own_step(
        &mut self,
        s: &Step,
        label: &str,
        prefix: &str,
        index: usize,
    ) -> Option<Flow> {
        let t0 = Instant::now();
        Some(match s {
            Step::ShimAlive(a) => {
                let r = self
                    .shim_alive(a.alive, a.timeout.map(|d| d.get()), a.socket_removed)
                    .await
                    .map(|()| json!({}));
                self.script.judged(label, "shim-alive", t0, r)
            }
            Step::RestartContainerd(r) => self.restart_containerd(r, label, prefix, index).await,
            Step::EventsDown(_) => self.events_endpoint(false, label).await,
            Step::EventsUp(_) => self.events_endpoint(true, label).await,
            Step::StallStdout(d) => self.stall_stdout(d.get(), label),
            Step::KillProcess(k) => self.kill_process(k, label),
            Step::StartAnswer(a) => self.start_answer_step(a, label),
            Step::ShimLog(l) => self.shim_log_step(l, label).await,
            Step::KillShim(k) => self.kill_shim(k, label).await,
            _ => return None,
        })
    }

    async fn send(&mut self, s: &Step, c: &Common<'_>, t: Duration) -> Result<Sent, String> {
        self.send_rpc(s, c, t).await
    }

    async fn after_answer(&mut self, s: &Step, c: &Common<'_>) -> Result<(), String> {
        let exits = match s {
            Step::Shutdown(sd) => sd.exits.map(|e| (e, sd.exits_within)),
            Step::ShutdownSandbox(sd) => sd.exits.map(|e| (e, sd.exits_within)),
            _ => None,
        };
        let Some((exits, exits_within)) = exits else {
            return Ok(());
        };
        let within = exits_within
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(3));
        self.shim_alive_of(c.container, !exits, Some(within), false)
            .await
    }

    async fn await_events(
        &self,
        until: &dyn Fn(&TaskEvents<'_>) -> bool,
        t: Duration,
    ) -> Vec<(String, Value)> {
        let log = self.mock.events();
        log.wait_until(
            |evs| {
                let refs: Vec<(&str, &Value)> =
                    evs.iter().map(|e| (e.topic.as_str(), &e.fields)).collect();
                until(&refs)
            },
            t,
        )
        .await;
        log.snapshot()
            .into_iter()
            .map(|e| (e.topic, e.fields))
            .collect()
    }

    fn cursor(&self, key: &str) -> usize {
        self.containers.get(key).map(|c| c.cursor).unwrap_or(0)
    }

    fn set_cursor(&mut self, key: &str, at: usize) {
        if let Some(c) = self.containers.get_mut(key) {
            c.cursor = at;
        }
    }

    fn stdio_of(
        &self,
        container: Option<&str>,
        exec_id: &str,
    ) -> Result<Option<&StdioSet>, String> {
        self.process_stdio(container, exec_id)
    }
}

impl Ctx<'_> {
    /// `kill-shim`: the server signalled (through the pid guard), then closed as containerd
    /// closes a dead shim.
    async fn kill_shim(&mut self, k: &crate::scenario::KillShimStep, label: &str) -> Flow {
        let t0 = Instant::now();

        let Some(pid) = self.shims[0].pid else {
            return self.script.step_failed(
                label,
                "kill-shim",
                t0.elapsed(),
                "the shim server's pid is unknown".into(),
            );
        };
        let sig = nix::sys::signal::Signal::try_from(k.signal.0 as i32)
            .unwrap_or(nix::sys::signal::Signal::SIGKILL);
        let signalled = Proc::found(pid)
            .map_err(|e| format!("refused to signal the shim server: {e}"))
            .and_then(|p| p.signal(sig).map(|()| p));
        let server = match signalled {
            Ok(p) => p,
            Err(m) => return self.script.step_failed(label, "kill-shim", t0.elapsed(), m),
        };
        server.wait_gone(Duration::from_secs(3)).await;
        // A killed server cannot remove its socket; the next `start` of a runc shim
        // would (EADDRINUSE and not connectable): do that here, so the leak check judges
        // the `delete` action.
        if let Some(p) = crate::dialect::socket_path(&self.shims[0].address) {
            let _ = std::fs::remove_file(p);
        }
        // containerd notices the closed connection at once (ttrpc `WithOnClose`) and
        // runs `cleanupAfterDeadShim`: the `delete` action, then `/tasks/exit` and
        // `/tasks/delete` on the dead shim's behalf, so later steps can expect them.
        let mut response = json!({});
        if let Some(shim) = self.shims[0].shim.take() {
            self.shims[0].client.close();
            let lines = shim.log_lines();
            let report = shim.close().await;
            if let Ok(o) = &report.delete_action {
                response = json!({"delete-action": {"pid": o.pid, "exit-status": o.exit_status}});
            }
            self.shims[0].closed = Some((lines, report));
        }
        self.script.record(
            "kill-shim",
            Status::Passed,
            t0.elapsed(),
            response,
            None,
            Some(json!({"signal": k.signal.0})),
            None,
        );
        Flow::Go
    }
}
