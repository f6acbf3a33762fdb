//! The checks of a scenario's steps on containerd's side: `events` judged on what containerd
//! delivered, `output` on what the process wrote.

use std::time::{Duration, Instant};

use super::compare::Outcome;
use crate::scenario::match_events;
use crate::scenario::{EventsStep, OutputStep};

use super::steps::Run;

impl Run<'_> {
    /// `events`: the main container's events judged by the scenario format's `match_events`, waiting up to the timeout; `forbid` fails at once.
    pub(super) async fn events(&mut self, e: &EventsStep) {
        let t = self.t(e.timeout);
        let deadline = Instant::now() + t;
        let res = loop {
            let got = self.main_events();
            let got = &got[if e.fresh {
                self.cursor.min(got.len())
            } else {
                0
            }..];
            let r = match_events(got, &e.expect, e.exact, &|n: &str| {
                self.vars.get(n).cloned()
            })
            .map_err(|why| {
                let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
                format!("{why}; got [{}]", topics.join(", "))
            });
            let forbidden = e
                .forbid
                .iter()
                .find(|f| got.iter().any(|(t, _)| &t == f))
                .map(|f| format!("event {f} must not be published"));
            match (r, forbidden) {
                (Ok(end), None) => break Ok(end),
                (_, Some(f)) => break Err(f),
                (Err(why), None) if Instant::now() >= deadline => break Err(why),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        match res {
            Ok(end) => {
                if e.fresh {
                    self.cursor += end;
                } else {
                    self.cursor = end;
                }
                self.push("events", "", Outcome::Check(true, String::new()));
            }
            Err(why) => self.push("events", "", Outcome::Check(false, why)),
        }
    }

    /// `output`: the process's stdout and stderr judged, waiting up to the timeout; `save` stores them.
    pub(super) async fn output(&mut self, o: &OutputStep) {
        let t = self.t(o.timeout);
        let exec_id = o
            .exec_id
            .as_deref()
            .map(|e| self.expand(e))
            .unwrap_or_default();
        let set = if exec_id.is_empty() {
            self.init_stdio.as_ref()
        } else {
            self.execs.get(&exec_id)
        };
        let Some(set) = set else {
            self.push(
                "output",
                &exec_id,
                Outcome::Check(false, "no such process's output".into()),
            );
            return;
        };
        let vars = self.vars.clone();
        let lookup = move |n: &str| vars.get(n).cloned();
        let check = |out: &[u8], err: &[u8]| -> Result<(), String> {
            if let Some(m) = &o.stdout {
                m.check(out, &lookup).map_err(|e| format!("stdout: {e}"))?;
            }
            if let Some(m) = &o.stderr {
                m.check(err, &lookup).map_err(|e| format!("stderr: {e}"))?;
            }
            Ok(())
        };
        set.wait_output(|a, b| check(a, b).is_ok(), t).await;
        let res = check(&set.stdout(), &set.stderr());
        let mut saved = Vec::new();
        if res.is_ok() {
            for (var, stream) in &o.save {
                let b = match stream {
                    crate::scenario::Stream::Stdout => set.stdout(),
                    crate::scenario::Stream::Stderr => set.stderr(),
                };
                saved.push((var.clone(), String::from_utf8_lossy(&b).into_owned()));
            }
        }
        self.vars.extend(saved);
        let o = match res {
            Ok(()) => Outcome::Check(true, String::new()),
            Err(e) => Outcome::Check(false, e),
        };
        self.push("output", &exec_id, o);
    }
}
