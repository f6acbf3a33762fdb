//! The fault steps: `restart-containerd` (drop every connection and endpoint, then come back as a
//! restarted containerd does: same endpoint addresses, reconnect through each bundle's `address`
//! file, Connect within 5s), `events-down` / `events-up`, `stall-stdout` and `kill-process`.
//! (`kill-shim` lives with the other steps.)
//!
//! containerd 1.6's restart path, followed here: `runtime/v2/manager.go` `loadShims` walks the
//! bundles; `shim.go` `loadShim` reads `<bundle>/address`, dials it, opens the shim log and checks
//! the connection with `Connect` under `io.containerd.timeout.shim.load` (5s). It never re-runs
//! `start`; a shim that cannot be reached is cleaned up (`cleanupAfterDeadShim`), which the
//! engine's close does here. 2.x reads the address from `bootstrap.json` instead. While
//! containerd is down nobody reads the bundle's `log` FIFO: the mock closes its reader too, so a
//! shim that dies of SIGPIPE (or blocks) when logging then is caught.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use containerd_shim_protos::api::ConnectRequest;
use serde_json::{json, Value};

use super::script::Flow;
use super::steps::{Ctx, MAIN};
use crate::dialect::{self, Dialect};
use crate::scenario::{KillProcessStep, RestartContainerdStep};

/// containerd's `io.containerd.timeout.shim.load`.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long containerd stays away when the scenario does not say.
const DEFAULT_DOWNTIME: Duration = Duration::from_millis(500);

/// The address a restarted containerd reconnects to: `bootstrap.json`'s for 2.x when present,
/// else the `address` file the shim wrote at `start`.
fn bundle_address(bundle: &std::path::Path, dialect: Dialect) -> Result<String, String> {
    if dialect >= Dialect::V2_0 {
        let p = bundle.join("bootstrap.json");
        if let Ok(text) = std::fs::read_to_string(&p) {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not JSON: {e}", p.display()))?;
            return v
                .get("address")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("{}: no `address`", p.display()));
        }
    }
    let p = bundle.join("address");
    let a = std::fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))?;
    let a = a.trim().to_string();
    if a.is_empty() {
        return Err(format!("{} is empty", p.display()));
    }
    Ok(a)
}

impl Ctx<'_> {
    /// `restart-containerd`: down, the `during` steps, the downtime, up, reconnect.
    pub(super) async fn restart_containerd(
        &mut self,
        r: &RestartContainerdStep,
        label: &str,
        prefix: &str,
        index: usize,
    ) -> Flow {
        const NAME: &str = "restart-containerd";
        let t0 = Instant::now();
        let downtime = r.downtime.map(|d| d.get()).unwrap_or(DEFAULT_DOWNTIME);
        let bound = r.timeout.map(|d| d.get()).unwrap_or(LOAD_TIMEOUT);
        // containerd's in-flight calls die with it; their clones would keep the old
        // connection open.
        for (_, w) in std::mem::take(&mut self.script.waits) {
            w.handle.abort();
        }
        let restore = self.drop_connections().await;
        self.mock.endpoints_down(true).await;
        let during = format!("{prefix}step {} during the outage: ", index + 1);
        let flow = super::interp::run_steps(self, &r.during, &during).await;
        if let Flow::Go = flow {
            tokio::time::sleep(downtime).await;
        }
        if let Err(e) = self.mock.endpoints_up().await {
            return self.script.step_failed(
                label,
                NAME,
                t0.elapsed(),
                format!("bringing the mock's endpoints back: {e}"),
            );
        }
        let mut main_pids = json!({});
        let mut names = Vec::new();
        for (name, i, bundle) in restore {
            match self.restore(&name, i, &bundle, bound).await {
                Ok(Some(pids)) => main_pids = pids,
                Ok(None) => {}
                Err(m) => return self.script.step_failed(label, NAME, t0.elapsed(), m),
            }
            names.push(name);
        }
        if let Flow::Stop = flow {
            return Flow::Stop;
        }
        let mut response = json!({"restored": names});
        if let (Some(o), Some(p)) = (response.as_object_mut(), main_pids.as_object()) {
            o.extend(p.clone());
        }
        let request = json!({"downtime": humantime::format_duration(downtime).to_string()});
        self.script.passed(NAME, t0, response, Some(request))
    }

    /// Closes the connections a restarted containerd restores (live ones, of shims not told to
    /// shut down) and their log readers; returns them: name, shim slot, bundle.
    async fn drop_connections(&mut self) -> Vec<(String, usize, PathBuf)> {
        let mut restore = Vec::new();
        for (name, c) in &self.containers {
            let slot = &self.shims[c.shim];
            if slot.shim.is_some() && !slot.client.is_closed() && !slot.client.shutdown_sent() {
                restore.push((name.clone(), c.shim, c.bundle.path().to_path_buf()));
            }
        }
        for (_, i, _) in &restore {
            self.shims[*i].client.close();
            if let Some(shim) = self.shims[*i].shim.as_mut() {
                shim.log_reader_down().await;
            }
        }
        restore
    }

    /// Restores one connection as containerd's `loadShim` does: the log FIFO reopened, the
    /// address read from the bundle, dialed, then Connect; the main container's pids from its
    /// answer, or why it failed.
    async fn restore(
        &mut self,
        name: &str,
        i: usize,
        bundle: &Path,
        bound: Duration,
    ) -> Result<Option<Value>, String> {
        // `loadShim` opens the shim's log FIFO again before it dials.
        if let Some(Err(e)) = self.shims[i].shim.as_mut().map(|s| s.log_reader_up()) {
            return Err(format!("restoring `{name}`: reopening its log FIFO: {e}"));
        }
        let address = bundle_address(bundle, self.cfg.dialect)
            .map_err(|m| format!("restoring `{name}`: {m}"))?;
        let dial = dialect::dial_address(&address);
        let conn = match tokio::time::timeout(bound, ttrpc::r#async::Client::connect(&dial)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(format!(
                "restoring `{name}`: connecting to {address} (from the bundle's address file): {e}"
            ))
            }
            Err(_) => {
                return Err(format!(
                    "restoring `{name}`: no connection to {address} within {}",
                    humantime::format_duration(bound)
                ))
            }
        };
        let client = self.shims[i].client.clone();
        client.reconnect(conn);
        let req = ConnectRequest {
            id: name.to_string(),
            ..Default::default()
        };
        match client.connect(req, bound).await {
            Ok(resp) => Ok((name == MAIN)
                .then(|| json!({"task-pid": resp.task_pid, "shim-pid": resp.shim_pid}))),
            Err(e) => Err(format!(
                "restoring `{name}`: Connect after reconnecting to {address}: {e} (containerd gives up after {} and cleans the shim up)",
                humantime::format_duration(bound)
            )),
        }
    }

    /// `events-down` / `events-up`.
    pub(super) async fn events_endpoint(&mut self, up: bool, label: &str) -> Flow {
        let t0 = Instant::now();
        let name = if up { "events-up" } else { "events-down" };
        if up {
            if let Err(e) = self.mock.endpoints_up().await {
                return self.script.step_failed(
                    label,
                    name,
                    t0.elapsed(),
                    format!("serving the events endpoint again: {e}"),
                );
            }
        } else {
            self.mock.endpoints_down(false).await;
        }
        self.script.passed(name, t0, json!({}), None)
    }

    /// `stall-stdout`: the main init's stdout FIFO is not read for `d`, starting now.
    pub(super) fn stall_stdout(&mut self, d: Duration, label: &str) -> Flow {
        let t0 = Instant::now();
        let set = self.containers.get(MAIN).and_then(|c| c.stdio.as_ref());
        match set {
            Some(s) if s.stdout_is_fifo() => {
                s.stall_stdout(d);
                let request = json!({"duration": humantime::format_duration(d).to_string()});
                self.script
                    .passed("stall-stdout", t0, json!({}), Some(request))
            }
            Some(_) => self.script.step_failed(
                label,
                "stall-stdout",
                Duration::ZERO,
                "the main container's stdout is not a FIFO (create it with `stdout: fifo`)".into(),
            ),
            None => self.script.step_failed(
                label,
                "stall-stdout",
                Duration::ZERO,
                "no stdout to stall: the main container was not created".into(),
            ),
        }
    }

    /// `kill-process`: signals the process by the pid the shim reported.
    pub(super) fn kill_process(&mut self, k: &KillProcessStep, label: &str) -> Flow {
        const NAME: &str = "kill-process";
        let t0 = Instant::now();
        let looked_up = (|| -> Result<(String, String), String> {
            let container = match &k.container {
                Some(c) => self.script.expand(c)?,
                None => MAIN.to_string(),
            };
            Ok((container, self.script.opt_exec(&k.exec_id)?))
        })();
        let (container, exec_id) = match looked_up {
            Ok(x) => x,
            Err(m) => return self.script.step_failed(label, NAME, Duration::ZERO, m),
        };
        let who = if exec_id.is_empty() {
            format!("the init of `{container}`")
        } else {
            format!("exec `{exec_id}` of `{container}`")
        };
        let Some(reported) = self.proc_pids.get(&(container.clone(), exec_id.clone())) else {
            return self.script.step_failed(
                label,
                NAME,
                Duration::ZERO,
                format!("no pid known for {who} (the shim reports it at Create for an init, at Start for an exec)"),
            );
        };
        let pid = reported.pid;
        let target = match &reported.checked {
            Ok(p) => *p,
            Err(e) => {
                let m = format!("refused to signal pid {pid} reported for {who}: {e}");
                return self.script.step_failed(label, NAME, Duration::ZERO, m);
            }
        };
        let sig = match nix::sys::signal::Signal::try_from(k.signal.0 as i32) {
            Ok(s) => s,
            Err(e) => {
                return self.script.step_failed(
                    label,
                    NAME,
                    Duration::ZERO,
                    format!("signal {}: {e}", k.signal),
                )
            }
        };
        let request = json!({"pid": pid, "signal": k.signal.0, "exec-id": exec_id});
        if let Err(e) = target.signal(sig) {
            return self
                .script
                .step_failed(label, NAME, t0.elapsed(), format!("{e} (for {who})"));
        }
        self.script.passed(NAME, t0, json!({}), Some(request))
    }
}
