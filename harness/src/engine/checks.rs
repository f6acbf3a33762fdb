//! The checking steps of a scenario: `events` (ordered subsequence, `exact`, `forbid`, `fresh`),
//! `output` and `shim-alive`, each waiting at most its bound (the event matcher itself is the
//! scenario format's, [`crate::scenario::match_events`]).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::convert;
use super::steps::{Ctx, MAIN};
use crate::events::RecordedEvent;
use crate::scenario::{match_events, OutputMatch};

impl Ctx<'_> {
    pub(super) fn container_id(
        &self,
        container: &Option<String>,
    ) -> Result<Option<String>, String> {
        match container.as_deref() {
            Some("*") => Ok(None),
            Some(c) => Ok(Some(self.expand(c)?)),
            None => Ok(Some(MAIN.to_string())),
        }
    }

    pub(super) async fn events_step(
        &mut self,
        e: &crate::scenario::EventsStep,
    ) -> Result<usize, String> {
        let cid = self.container_id(&e.container)?;
        let key = cid.clone().unwrap_or_else(|| "*".into());
        let cursor = if e.fresh {
            self.containers.get(&key).map(|c| c.cursor).unwrap_or(0)
        } else {
            0
        };
        let timeout = e.timeout.map(|d| d.get()).unwrap_or(self.cfg.step_timeout);
        let vars = self.vars.clone();
        let lookup = move |n: &str| vars.get(n).cloned();
        let pick = |evs: &[RecordedEvent]| -> Vec<(String, Value)> {
            evs.iter()
                .filter(|ev| match &cid {
                    None => true,
                    Some(id) => {
                        ev.fields.get("container-id").and_then(Value::as_str) == Some(id.as_str())
                    }
                })
                .map(|ev| {
                    let mut f = ev.fields.clone();
                    convert::normalize_times(&mut f);
                    (ev.topic.clone(), f)
                })
                .skip(cursor)
                .collect()
        };
        let log = self.mock.events();
        log.wait_until(
            |evs| match_events(&pick(evs), &e.expect, e.exact, &lookup).is_ok(),
            timeout,
        )
        .await;
        let got = pick(&log.snapshot());
        let res = match_events(&got, &e.expect, e.exact, &lookup);
        let who = cid
            .as_deref()
            .map(|c| format!("container `{c}`"))
            .unwrap_or_else(|| "all containers".into());
        let end = match res {
            Ok(end) => end,
            Err(why) => {
                let want: Vec<_> = e.expect.iter().map(|m| m.0.topic.as_str()).collect();
                let seen: Vec<_> = got.iter().map(|(t, _)| t.as_str()).collect();
                return Err(format!(
                    "expected events [{}] ({}) for {who} within {}; got [{}]: {why}",
                    want.join(", "),
                    if e.exact { "exactly" } else { "in this order" },
                    humantime::format_duration(timeout),
                    crate::report::listed(&seen)
                ));
            }
        };
        for f in &e.forbid {
            if let Some((t, fields)) = got.iter().find(|(t, _)| t == f) {
                return Err(format!(
                    "event {t} must not be published for {who}, got {fields}"
                ));
            }
        }
        if let Some(c) = self.containers.get_mut(&key) {
            c.cursor = cursor + end;
        }
        Ok(end)
    }

    pub(super) async fn output_step(
        &mut self,
        o: &crate::scenario::OutputStep,
    ) -> Result<(), String> {
        let exec_id = self.opt_exec(&o.exec_id)?;
        let timeout = o.timeout.map(|d| d.get()).unwrap_or(self.cfg.step_timeout);
        let Some(set) = self.stdio_of(o.container.as_deref(), &exec_id)? else {
            return Err(format!(
                "no captured output for {}",
                if exec_id.is_empty() {
                    "the init process (not created?)".to_string()
                } else {
                    format!("exec `{exec_id}`")
                }
            ));
        };
        let vars = self.vars.clone();
        let lookup = move |n: &str| vars.get(n).cloned();
        let check = |out: &[u8], err: &[u8]| -> Result<(), String> {
            let quick = |m: &OutputMatch, b: &[u8]| m.length.is_none_or(|n| n == b.len());
            if let Some(m) = &o.stdout {
                if !quick(m, out) {
                    return Err(format!(
                        "stdout: expected {} bytes, got {} bytes",
                        m.length.unwrap_or(0),
                        out.len()
                    ));
                }
            }
            if let Some(m) = &o.stderr {
                if !quick(m, err) {
                    return Err(format!(
                        "stderr: expected {} bytes, got {} bytes",
                        m.length.unwrap_or(0),
                        err.len()
                    ));
                }
            }
            if let Some(m) = &o.stdout {
                m.check(out, &lookup).map_err(|e| format!("stdout: {e}"))?;
            }
            if let Some(m) = &o.stderr {
                m.check(err, &lookup).map_err(|e| format!("stderr: {e}"))?;
            }
            Ok(())
        };
        set.wait_output(|out, err| check(out, err).is_ok(), timeout)
            .await;
        let (out, err) = (set.stdout(), set.stderr());
        check(&out, &err)
            .map_err(|e| format!("{e} (waited {})", humantime::format_duration(timeout)))?;
        for (var, stream) in &o.save {
            let bytes = match stream {
                crate::scenario::Stream::Stdout => &out,
                crate::scenario::Stream::Stderr => &err,
            };
            self.vars
                .insert(var.clone(), String::from_utf8_lossy(bytes).into_owned());
        }
        Ok(())
    }

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
                let n = self.expand(c)?;
                self.containers.get(&n).map(|c| c.shim).unwrap_or(0)
            }
            None => 0,
        };
        let slot = &self.shims[idx];
        let Some(pid) = self.server_pid(idx) else {
            return Err("the shim server's pid is unknown, cannot tell whether it runs".into());
        };
        let bound = timeout.unwrap_or(Duration::from_secs(3));
        let deadline = Instant::now() + bound;
        if alive {
            // Give a wrongly exiting shim a moment to show it.
            tokio::time::sleep(Duration::from_millis(100).min(bound)).await;
            if !crate::procfs::is_alive(pid) {
                return Err(format!(
                    "the shim server (pid {pid}) exited; expected it to keep running"
                ));
            }
            return Ok(());
        }
        while crate::procfs::is_alive(pid) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "the shim server (pid {pid}) is still running {} later; expected it to exit",
                    humantime::format_duration(bound)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
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
