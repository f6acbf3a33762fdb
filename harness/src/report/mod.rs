//! Results of a run and their writers: the JSON report of the public contract, JUnit XML, TAP 13
//! and the human summary. The result types here are what the engine produces.

mod human;
mod junit;
mod live;
mod tap;

use serde::Serialize;
use serde_json::Value;

pub use human::{human_failure, human_progress, human_summary};
pub use junit::{junit, xml_escape};
pub use live::{status_message, LiveLine};
pub use tap::tap;

/// A scenario's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Every step held and nothing leaked.
    Passed,
    /// A step did not hold, the scenario timed out, or (in a `must`) something leaked.
    Failed,
    /// Not run: an unmet requirement or an `unimplemented` answer in a should/may scenario.
    Skipped,
    /// Extension: failed, and the `--profile` lists it as an expected failure.
    Xfailed,
}

impl Status {
    /// The lowercase name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Xfailed => "xfailed",
        }
    }
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StepResult {
    /// The step's key (`create`, `wait`, ...).
    pub step: String,
    /// `passed`, `failed` or `skipped` (not reached).
    pub status: Status,
    /// Wall time of the step.
    pub duration_ms: u64,
    /// The response (kebab-case protobuf field names), `{}` for non-RPC steps.
    pub response: Value,
    /// The error answer `{code, message}`, or null.
    pub error: Option<Value>,
    /// Extension: the request sent (kebab-case protobuf field names), or null.
    pub request: Option<Value>,
    /// Extension: why the step failed (expected vs got).
    pub message: Option<String>,
}

/// How many events a scenario's result keeps.
pub const MAX_EVENTS_KEPT: usize = 1000;
/// How many names a list in a message shows before it says how many more there are.
pub const MAX_LISTED: usize = 24;

/// `a, b, c` for a message, the first [`MAX_LISTED`] of `items` and then `… and N more`.
pub fn listed<S: AsRef<str>>(items: &[S]) -> String {
    let shown: Vec<&str> = items.iter().take(MAX_LISTED).map(AsRef::as_ref).collect();
    let mut out = shown.join(", ");
    if items.len() > MAX_LISTED {
        out.push_str(&format!(", … and {} more", items.len() - MAX_LISTED));
    }
    out
}

/// One received event.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// Its topic.
    pub topic: String,
    /// Its fields (kebab-case protobuf names).
    pub event: Value,
    /// Extension: who delivered it: `shim`, `publish-binary` or `mock` (synthetic, as
    /// containerd publishes for a dead shim).
    pub source: String,
}

/// A scenario's outcome.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ScenarioResult {
    /// `group/name`.
    pub name: String,
    /// must | should | may.
    pub level: String,
    /// The verdict.
    pub status: Status,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
    /// Wall time.
    pub duration_ms: u64,
    /// Each step.
    pub steps: Vec<StepResult>,
    /// Every event received during the scenario, in arrival order (the first
    /// [`MAX_EVENTS_KEPT`]).
    pub events: Vec<EventRecord>,
    /// Extension: how many events arrived after the first [`MAX_EVENTS_KEPT`] and are left out
    /// of `events` (a flooding shim); absent when none were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_omitted: Option<usize>,
    /// The init's captured stdout (lossy UTF-8; long output abbreviated).
    pub stdout: String,
    /// The init's captured stderr.
    pub stderr: String,
    /// What was left behind after the scenario.
    pub leaks: Vec<String>,
    /// Extension: the scenario's description.
    pub description: String,
    /// Extension: the reference URL.
    pub reference: Option<String>,
    /// Extension: the index of the failed step, if a step failed.
    pub failed_step: Option<usize>,
    /// Extension: the last lines of the shim's log.
    pub shim_log_tail: Vec<String>,
}

impl ScenarioResult {
    /// The group (first component of the name).
    pub fn group(&self) -> &str {
        self.name.split_once('/').map(|(g, _)| g).unwrap_or(".")
    }
}

/// Counts of a run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    /// Passed scenarios.
    pub passed: usize,
    /// Failed scenarios.
    pub failed: usize,
    /// Skipped scenarios.
    pub skipped: usize,
    /// Extension: expected failures (profile `xfail`).
    pub xfailed: usize,
    /// Wall time of the run.
    pub duration_ms: u64,
}

/// The whole report (`--format json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RunReport {
    /// This harness's version.
    pub harness_version: String,
    /// Absolute path of the shim under test.
    pub shim: String,
    /// The containerd dialect used.
    pub containerd_version: String,
    /// Counts.
    pub summary: Summary,
    /// Per scenario, in name order.
    pub scenarios: Vec<ScenarioResult>,
}

impl RunReport {
    /// Builds a report and its summary from results.
    pub fn new(
        shim: String,
        containerd_version: String,
        mut scenarios: Vec<ScenarioResult>,
        duration_ms: u64,
    ) -> RunReport {
        scenarios.sort_by(|a, b| a.name.cmp(&b.name));
        let mut summary = Summary {
            duration_ms,
            ..Summary::default()
        };
        for s in &scenarios {
            match s.status {
                Status::Passed => summary.passed += 1,
                Status::Failed => summary.failed += 1,
                Status::Skipped => summary.skipped += 1,
                Status::Xfailed => summary.xfailed += 1,
            }
        }
        RunReport {
            harness_version: env!("CARGO_PKG_VERSION").to_string(),
            shim,
            containerd_version,
            summary,
            scenarios,
        }
    }

    /// The JSON report.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Process exit status of the run: 1 when any scenario failed, else 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.summary.failed > 0)
    }
}

/// One-paragraph explanation of a failure: the reason plus the failed step's request.
pub fn failure_text(s: &ScenarioResult) -> String {
    let mut out = s.reason.clone().unwrap_or_default();
    if let Some(i) = s.failed_step {
        if let Some(st) = s.steps.get(i) {
            if let Some(req) = &st.request {
                out.push_str(&format!("\nrequest: {req}"));
            }
            if let Some(err) = &st.error {
                out.push_str(&format!("\nerror answer: {err}"));
            } else if !st.response.is_null() && st.response != Value::Object(Default::default()) {
                out.push_str(&format!("\nresponse: {}", st.response));
            }
        }
    }
    let topics: Vec<_> = s
        .events
        .iter()
        .map(|e| {
            if e.source == "shim" {
                e.topic.clone()
            } else {
                format!("{} (from {})", e.topic, e.source)
            }
        })
        .collect();
    let omitted = s
        .events_omitted
        .map(|n| format!(" (and {n} more, not kept)"))
        .unwrap_or_default();
    out.push_str(&format!("\nevents seen: [{}]{omitted}", listed(&topics)));
    if !s.leaks.is_empty() {
        out.push_str(&format!("\nleaks: {}", s.leaks.join("; ")));
    }
    if !s.shim_log_tail.is_empty() {
        out.push_str("\nshim log (tail):");
        for l in &s.shim_log_tail {
            out.push_str("\n  ");
            out.push_str(l);
        }
    }
    out
}

#[cfg(test)]
pub(crate) fn sample() -> RunReport {
    let step = StepResult {
        step: "wait".into(),
        status: Status::Failed,
        duration_ms: 3,
        response: serde_json::json!({"exit-status": 0}),
        error: None,
        request: Some(serde_json::json!({"id": "main"})),
        message: Some("exit-status: expected 143, got 0".into()),
    };
    let failed = ScenarioResult {
        name: "lifecycle/sigterm".into(),
        level: "must".into(),
        status: Status::Failed,
        reason: Some("step 4 (wait): exit-status: expected 143, got 0".into()),
        duration_ms: 12,
        steps: vec![step],
        events: vec![EventRecord {
            topic: "/tasks/create".into(),
            event: serde_json::json!({"container-id": "main"}),
            source: "shim".into(),
        }],
        events_omitted: None,
        stdout: "a <b> & \"c\"".into(),
        stderr: String::new(),
        leaks: vec![],
        description: "SIGTERM gives 143".into(),
        reference: Some("https://example.invalid/spec".into()),
        failed_step: Some(0),
        shim_log_tail: vec!["level=info msg=x".into()],
    };
    let mut skipped = failed.clone();
    skipped.name = "exec/added".into();
    skipped.status = Status::Skipped;
    skipped.reason = Some("requires exec: absent".into());
    skipped.failed_step = None;
    let mut passed = failed.clone();
    passed.name = "lifecycle/exit-zero".into();
    passed.status = Status::Passed;
    passed.reason = None;
    passed.failed_step = None;
    RunReport::new(
        "/x/shim".into(),
        "2.0".into(),
        vec![failed, skipped, passed],
        40,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_follows_the_contract() {
        let r = sample();
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        for k in [
            "harness-version",
            "shim",
            "containerd-version",
            "summary",
            "scenarios",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["summary"]["failed"], 1);
        assert_eq!(v["summary"]["passed"], 1);
        assert_eq!(v["summary"]["skipped"], 1);
        let s = &v["scenarios"][1];
        assert_eq!(s["name"], "lifecycle/exit-zero");
        for k in [
            "name",
            "level",
            "status",
            "reason",
            "duration-ms",
            "steps",
            "events",
            "stdout",
            "stderr",
            "leaks",
        ] {
            assert!(s.get(k).is_some(), "scenario missing {k}");
        }
        let st = &v["scenarios"][2]["steps"][0];
        for k in ["step", "status", "duration-ms", "response", "error"] {
            assert!(st.get(k).is_some(), "step missing {k}");
        }
        assert_eq!(v["scenarios"][2]["events"][0]["topic"], "/tasks/create");
        assert_eq!(r.exit_code(), 1);
    }
}
