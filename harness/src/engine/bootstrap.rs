//! The scenario side of containerd 2.3's bootstrap: a scenario's `bootstrap:` key (what the
//! main `start` gets in its `BootstrapParams` and how it must end), the `start-answer` step and
//! the `shim-log` step.

use std::time::{Duration, Instant};

use serde_json::json;

use super::script::Flow;
use super::steps::{Ctx, MAIN};
use crate::dialect::{BootstrapOverrides, Dialect, StartAnswer};
use crate::report::Status;
use crate::scenario::{
    BootstrapLogLevel, BootstrapStdin, ShimLogStep, StartAnswerStep, StartOutcome,
};

/// What a refused or failed main `start` means for the scenario.
pub(super) enum Launched {
    /// It worked and was meant to (or `any`): run the steps.
    Go,
    /// The scenario ends here (passed, skipped or failed, as recorded).
    Stop,
}

impl Ctx<'_> {
    /// Before the main launch: skips a `bootstrap:` scenario outside dialect 2.3 and makes the
    /// scenario's socket directory when asked for (`${socket-dir}`).
    pub(super) fn bootstrap_prepare(&mut self) -> Result<(), ()> {
        let Some(b) = self.bootstrap else {
            return Ok(());
        };
        if self.cfg.dialect != Dialect::V2_3 {
            self.script.skip = Some(format!(
                "`bootstrap` needs containerd 2.3's BootstrapParams (--containerd-version 2.3); \
                 this run imitates {}",
                self.cfg.dialect
            ));
            return Err(());
        }
        if b.socket_dir {
            let dir = self.tmp.join("sockets");
            let made = std::fs::DirBuilder::new()
                .recursive(true)
                .create(&dir)
                .map_err(|e| format!("creating the socket dir {}: {e}", dir.display()));
            if let Err(m) = made {
                self.script.fail(None, m);
                return Err(());
            }
            let dir = match crate::dialect::check_socket_dir(&dir.display().to_string()) {
                Ok(d) => d,
                Err(e) => {
                    self.script.fail(
                        None,
                        format!("the scenario's socket dir: {e} (choose a shorter TMPDIR)"),
                    );
                    return Err(());
                }
            };
            self.script.vars.insert("socket-dir".into(), dir.clone());
            self.mock.set_socket_dir(Some(dir));
        }
        Ok(())
    }

    /// The `BootstrapParams` changes for container `name`'s `start` (the main one's only).
    pub(super) fn bootstrap_overrides(&self, name: &str) -> Option<BootstrapOverrides> {
        let b = self.bootstrap.filter(|_| name == MAIN)?;
        Some(BootstrapOverrides {
            log_level: b.log_level.map(|l| match l {
                BootstrapLogLevel::Trace => bootstrap::LogLevel::Trace,
                BootstrapLogLevel::Debug => bootstrap::LogLevel::Debug,
                BootstrapLogLevel::Info => bootstrap::LogLevel::Info,
                BootstrapLogLevel::Warn => bootstrap::LogLevel::Warn,
                BootstrapLogLevel::Error => bootstrap::LogLevel::Error,
                BootstrapLogLevel::Fatal => bootstrap::LogLevel::Fatal,
                BootstrapLogLevel::Panic => bootstrap::LogLevel::Panic,
            }),
            extensions: b
                .extensions
                .iter()
                .map(|e| protobuf::well_known_types::any::Any {
                    type_url: e.type_url.clone(),
                    value: (0..e.size).map(|i| (i % 251) as u8).collect(),
                    ..Default::default()
                })
                .collect(),
            instance_id: b.instance_id.clone(),
            namespace: b.namespace.clone(),
            cut: b.stdin == BootstrapStdin::Cut,
        })
    }

    /// Judges the main launch against the scenario's `bootstrap.start`.
    pub(super) fn bootstrap_judge(
        &mut self,
        launched: Result<(), String>,
        t0: Instant,
    ) -> Launched {
        let want = self.bootstrap.map(|b| b.start).unwrap_or_default();
        match (want, launched) {
            (StartOutcome::Works | StartOutcome::Any, Ok(())) => Launched::Go,
            (StartOutcome::Works, Err(e)) => {
                self.script.fail(None, e);
                Launched::Stop
            }
            (StartOutcome::Refused, Ok(())) => {
                let answer = self
                    .script
                    .vars
                    .get("start-address")
                    .cloned()
                    .unwrap_or_default();
                let i = self.script.record(
                    "bootstrap-start",
                    Status::Failed,
                    t0.elapsed(),
                    json!({"address": answer}),
                    None,
                    None,
                    None,
                );
                self.script.fail(
                    Some(i),
                    format!(
                        "`start` answered {answer:?}, but these BootstrapParams ({}) must be \
                         refused",
                        self.bootstrap_summary()
                    ),
                );
                Launched::Stop
            }
            (StartOutcome::Refused | StartOutcome::Any, Err(e)) => {
                self.script
                    .passed("bootstrap-start", t0, json!({"refused": e}), None);
                Launched::Stop
            }
        }
    }

    /// The scenario's changes, for messages.
    fn bootstrap_summary(&self) -> String {
        let Some(b) = self.bootstrap else {
            return String::new();
        };
        let mut parts = vec![];
        if let Some(i) = &b.instance_id {
            parts.push(format!("instance_id {i:?} with -id {MAIN:?}"));
        }
        if let Some(n) = &b.namespace {
            parts.push(format!(
                "namespace {n:?} with -namespace {:?}",
                self.namespace
            ));
        }
        if b.stdin == BootstrapStdin::Cut {
            parts.push("only the first half of the message".into());
        }
        if parts.is_empty() {
            parts.push("as written".into());
        }
        parts.join(", ")
    }

    /// Remembers what container `name`'s `start` answered: `${start-format}`, `${start-version}`,
    /// `${start-protocol}`, `${start-address}` (prefixed `NAME-` for other containers).
    pub(super) fn note_answer(&mut self, name: &str, a: &StartAnswer) {
        let prefix = if name == MAIN {
            String::new()
        } else {
            format!("{name}-")
        };
        for (k, v) in [
            ("start-format", a.format.as_str().to_string()),
            ("start-version", a.version.to_string()),
            ("start-protocol", a.protocol.clone()),
            ("start-address", a.address.clone()),
        ] {
            self.script.vars.insert(format!("{prefix}{k}"), v);
        }
    }

    /// The `start-answer` step.
    pub(super) fn start_answer_step(&mut self, s: &StartAnswerStep, label: &str) -> Flow {
        let t0 = Instant::now();
        let name = s.container.as_deref().unwrap_or(MAIN);
        let prefix = if name == MAIN {
            String::new()
        } else {
            format!("{name}-")
        };
        let get = |k: &str| self.script.vars.get(&format!("{prefix}{k}")).cloned();
        let Some(format) = get("start-format") else {
            let m = format!("container `{name}` was never started (no `create` launched it)");
            return self.script.judged(label, "start-answer", t0, Err(m));
        };
        let view = json!({
            "format": format,
            "version": get("start-version").and_then(|v| v.parse::<u64>().ok()),
            "protocol": get("start-protocol"),
            "address": get("start-address"),
        });
        let problems: Vec<String> = {
            let lookup = self.script.lookup();
            s.expect
                .matchers()
                .into_iter()
                .filter_map(|(field, m)| {
                    m.check(view.get(field), &lookup)
                        .err()
                        .map(|e| format!("{field}: {e}"))
                })
                .collect()
        };
        let outcome = if problems.is_empty() {
            Ok(view)
        } else {
            Err(problems.join("; "))
        };
        self.script.judged(label, "start-answer", t0, outcome)
    }

    /// The `shim-log` step: polls the container's log lines until the matchers hold.
    pub(super) async fn shim_log_step(&mut self, s: &ShimLogStep, label: &str) -> Flow {
        let t0 = Instant::now();
        let name = s.container.as_deref().unwrap_or(MAIN);
        let Some(idx) = self.containers.get(name).map(|c| c.shim) else {
            let m = format!("container `{name}` was never started (no `create` launched it)");
            return self.script.step_failed(label, "shim-log", t0.elapsed(), m);
        };
        let bound = s.timeout.map(|d| d.get()).unwrap_or(self.cfg.step_timeout);
        let m = s.matcher();
        let end = Instant::now() + bound;
        loop {
            let slot = &self.shims[idx];
            let lines = match (&slot.shim, &slot.closed) {
                (Some(shim), _) => shim.log_lines(),
                (None, Some((lines, _))) => lines.clone(),
                (None, None) => vec![],
            };
            let text = lines.join("\n");
            let verdict = m.check(text.as_bytes(), &self.script.lookup());
            match verdict {
                Ok(()) => return self.script.passed("shim-log", t0, json!({}), None),
                Err(e) if Instant::now() >= end => {
                    let m = format!(
                        "the shim's log after {}: {e}",
                        humantime::format_duration(bound)
                    );
                    return self.script.step_failed(label, "shim-log", t0.elapsed(), m);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}
