//! The end of a scenario: what is left is force-ended after a failure, every shim is closed as
//! containerd closes it (Shutdown, connection close, `delete` action, bounded wait, leak check),
//! container processes still alive are leaks, and the verdict is built.

use std::time::Duration;

use containerd_shim_protos::api::{DeleteRequest, KillRequest, WaitRequest};

use super::convert;
use super::steps::{Ctx, LOG_TAIL, MAIN, OUTPUT_KEEP};
use crate::client::RpcError;
use crate::report::{EventRecord, ScenarioResult, Status};
use crate::scenario::{abbreviate, Level};

impl Ctx<'_> {
    /// After a failed or skipped scenario, ends what is left as `ctr task rm -f` would (SIGKILL,
    /// Wait, Delete for each live task), so the leak check judges the shim, not the scenario.
    pub(super) async fn force_cleanup(&mut self) {
        let t = Duration::from_secs(2);
        // A shim that let one of these go unanswered (or broke the connection) gets no more of
        // them: its close (Shutdown, `delete` action, leak check) ends what is left.
        let answered = |r: Result<(), RpcError>| {
            !matches!(r, Err(RpcError::Timeout(_) | RpcError::Transport(_)))
        };
        for slot in &self.shims {
            if slot.shim.is_none() || slot.client.is_closed() {
                continue;
            }
            for id in slot.client.live_tasks().into_keys() {
                let c = &slot.client;
                let kill = KillRequest {
                    id: id.clone(),
                    signal: 9,
                    all: true,
                    ..Default::default()
                };
                if !answered(c.kill(kill, t).await.map(drop)) {
                    break;
                }
                let wait = WaitRequest {
                    id: id.clone(),
                    ..Default::default()
                };
                if !answered(c.wait(wait, t).await.map(drop)) {
                    break;
                }
                let delete = DeleteRequest {
                    id,
                    ..Default::default()
                };
                if !answered(c.delete(delete, t).await.map(drop)) {
                    break;
                }
            }
        }
    }

    /// Ends background waits, closes every shim as containerd does, and builds the result.
    pub(super) async fn finish(mut self, mut res: ScenarioResult) -> ScenarioResult {
        for (_, w) in std::mem::take(&mut self.script.waits) {
            w.handle.abort();
        }
        let mut leaks = Vec::new();
        let mut close_problems = Vec::new();
        let mut log_tail = Vec::new();
        if self.script.failure.is_some() || self.script.skip.is_some() {
            self.force_cleanup().await;
        }
        // Extra containers first: with grouping the main connection's close ends the server.
        for slot in self.shims.iter_mut().rev() {
            // A shim closed during the steps (`kill-shim`) brings its report.
            let (lines, report) = match (slot.closed.take(), slot.shim.take()) {
                (Some(done), _) => done,
                (None, Some(shim)) => (shim.log_lines(), shim.close().await),
                (None, None) => continue,
            };
            if let Err(e) = &report.delete_action {
                close_problems.push(format!("the `delete` action failed: {e}"));
            }
            for l in &report.leaks {
                leaks.push(l.detail.clone());
            }
            if log_tail.is_empty() || lines.len() > log_tail.len() {
                log_tail = lines;
            }
        }
        // Container processes must not outlive the shim's close (the delete action ends them).
        let mut seen = std::collections::BTreeSet::new();
        for proc in &self.pids {
            if !seen.insert(proc.pid()) {
                continue;
            }
            if let Some(info) = proc.info().filter(|i| i.state != 'Z') {
                leaks.push(format!(
                    "container process pid {} ({}) still running after the shim was closed",
                    info.pid, info.comm
                ));
                proc.kill_and_wait(Duration::from_secs(2));
            }
        }
        close_problems.append(&mut self.refused_pids);
        let start = log_tail.len().saturating_sub(LOG_TAIL);
        res.shim_log_tail = log_tail[start..].to_vec();
        let all = self.mock.events().snapshot();
        res.events_omitted = all
            .len()
            .checked_sub(crate::report::MAX_EVENTS_KEPT)
            .filter(|n| *n > 0);
        let events: Vec<EventRecord> = all
            .into_iter()
            .take(crate::report::MAX_EVENTS_KEPT)
            .map(|e| {
                let mut f = e.fields.clone();
                convert::normalize_times(&mut f);
                let source = serde_json::to_value(e.source)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                EventRecord {
                    topic: e.topic,
                    event: f,
                    source,
                }
            })
            .collect();
        res.events = events;
        if let Some(c) = self.containers.get(MAIN) {
            if let Some(set) = &c.stdio {
                res.stdout = keep(&set.stdout());
                res.stderr = keep(&set.stderr());
            }
        }
        res.leaks = leaks;
        res.steps = std::mem::take(&mut self.script.steps);
        let must = self.script.level == Level::Must;
        match (&self.script.failure, &self.script.skip) {
            (Some((step, msg)), _) => {
                res.status = Status::Failed;
                res.failed_step = *step;
                res.reason = Some(msg.clone());
            }
            (None, Some(why)) => {
                res.status = Status::Skipped;
                res.reason = Some(why.clone());
            }
            (None, None) if must && (!res.leaks.is_empty() || !close_problems.is_empty()) => {
                res.status = Status::Failed;
                let mut why = close_problems.clone();
                if !res.leaks.is_empty() {
                    why.push(format!("left behind: {}", res.leaks.join("; ")));
                }
                res.reason = Some(format!("after the steps: {}", why.join("; ")));
            }
            (None, None) => {
                res.status = Status::Passed;
                if !close_problems.is_empty() {
                    res.reason = Some(close_problems.join("; "));
                }
            }
        }
        drop(self.containers);
        res
    }
}

fn keep(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() <= OUTPUT_KEEP {
        s.into_owned()
    } else {
        abbreviate(&s, OUTPUT_KEEP)
    }
}
