//! Differential mode (`harness run --containerd SOCKET`, cargo feature `containerd`): each
//! selected scenario runs through the real containerd's API ([`daemon`]) and through the mock
//! (the engine), and the two runs are compared ([`compare`]): step outcomes and key response
//! fields, the main container's task events, exit statuses and the init's output. A difference
//! is a fidelity failure shown with both sides. Scenarios a containerd client cannot express are
//! skipped with the reason ([`classify`]), as are those the mock itself skips.

pub mod classify;
pub mod compare;
pub mod daemon;
mod run;
mod sandbox;
mod steps;
mod tasks;

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::engine::{self, RunConfig};
use crate::report::Status;
use crate::scenario::{Loaded, Step};
pub use compare::{Difference, Trace};
pub use daemon::Daemon;

/// Why a differential run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// containerd's socket did not answer.
    #[error("containerd at `{socket}`: {message}")]
    Connect {
        /// The socket given with `--containerd`.
        socket: PathBuf,
        /// What failed.
        message: String,
    },
    /// The tokio runtime could not be built.
    #[error("tokio runtime: {0}")]
    Runtime(String),
}

/// What a differential run needs.
#[derive(Debug, Clone)]
pub struct DiffConfig {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// Base of the per-scenario namespaces (`<base>-<pid>-<n>`).
    pub namespace: String,
    /// The runtime containers get: a name (`io.containerd.reaper.v2`) or the shim's path.
    pub runtime: String,
    /// The mock's configuration (shim, rootfs, timeouts); `keep_going` is forced on so both
    /// sides run every step.
    pub run: RunConfig,
}

/// One scenario's differential verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Both runs agree.
    Same,
    /// A fidelity difference (see `differences`).
    Different,
    /// Not compared (inexpressible through the daemon, or skipped by the mock).
    Skipped,
    /// The daemon run could not happen.
    Error,
}

/// One scenario's outcome.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DiffScenario {
    /// `group/name`.
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Why it was skipped or errored.
    pub reason: Option<String>,
    /// Each difference, both sides shown.
    pub differences: Vec<Difference>,
    /// The mock run's own verdict (`passed`, `failed`, `skipped`).
    pub mock_status: String,
    /// The task event topics containerd published for the main container (what was compared).
    pub containerd_events: Vec<String>,
    /// How many steps each side recorded (containerd, mock).
    pub steps_compared: (usize, usize),
    /// Wall time of both runs.
    pub duration_ms: u64,
}

/// A differential run's report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DiffReport {
    /// containerd's socket.
    pub containerd: String,
    /// The runtime given to containerd.
    pub runtime: String,
    /// The shim the mock launched.
    pub shim: String,
    /// Counts.
    pub summary: DiffSummary,
    /// Each scenario, in run order.
    pub scenarios: Vec<DiffScenario>,
}

/// Counts of a differential run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DiffSummary {
    /// Scenarios where both runs agree.
    pub same: usize,
    /// Scenarios with a fidelity difference.
    pub different: usize,
    /// Scenarios not compared.
    pub skipped: usize,
    /// Scenarios whose daemon run failed.
    pub errors: usize,
}

impl DiffReport {
    /// 0 when nothing differed or errored, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.summary.different + self.summary.errors > 0)
    }

    /// The JSON report.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A human report: each scenario's [`progress_line`], then the [`DiffReport::summary_line`].
    pub fn human(&self) -> String {
        let mut s: String = self.scenarios.iter().map(progress_line).collect();
        s.push_str(&self.summary_line());
        s
    }

    /// The counts in one line.
    pub fn summary_line(&self) -> String {
        let m = &self.summary;
        format!(
            "differential ({} via {}): {} same, {} different, {} skipped, {} errors\n",
            self.runtime, self.containerd, m.same, m.different, m.skipped, m.errors
        )
    }
}

/// A finished scenario: its verdict line, then each difference with both sides.
pub fn progress_line(sc: &DiffScenario) -> String {
    let word = match sc.verdict {
        Verdict::Same => "same",
        Verdict::Different => "DIFFERENT",
        Verdict::Skipped => "skipped",
        Verdict::Error => "ERROR",
    };
    let mut s = match &sc.reason {
        Some(r) => format!("{word:>9}  {}  ({r})\n", sc.name),
        None => format!("{word:>9}  {}\n", sc.name),
    };
    for d in &sc.differences {
        s.push_str(&format!(
            "    {}:\n      containerd: {}\n      mock:       {}\n",
            d.what, d.containerd, d.mock
        ));
    }
    s
}

/// Runs every scenario on both sides, one at a time; `progress` sees each result.
pub async fn run(
    cfg: &DiffConfig,
    scenarios: Vec<Loaded>,
    mut progress: impl FnMut(&DiffScenario),
) -> Result<DiffReport, DiffError> {
    let mut daemon = Daemon::connect(&cfg.socket, cfg.runtime.clone()).await?;
    daemon.rootfs = cfg.run.rootfs;
    daemon.step_timeout = cfg.run.step_timeout;
    let mut mock_cfg = cfg.run.clone();
    mock_cfg.keep_going = true;
    let mut out = Vec::new();
    let mut summary = DiffSummary::default();
    for (n, l) in scenarios.iter().enumerate() {
        let t0 = Instant::now();
        let ns = format!("{}-{}-{n}", cfg.namespace, std::process::id());
        let r = one(&daemon, &mock_cfg, l, &ns).await;
        let r = DiffScenario {
            duration_ms: t0.elapsed().as_millis() as u64,
            ..r
        };
        match r.verdict {
            Verdict::Same => summary.same += 1,
            Verdict::Different => summary.different += 1,
            Verdict::Skipped => summary.skipped += 1,
            Verdict::Error => summary.errors += 1,
        }
        progress(&r);
        out.push(r);
    }
    Ok(DiffReport {
        containerd: cfg.socket.display().to_string(),
        runtime: cfg.runtime.clone(),
        shim: cfg.run.shim.display().to_string(),
        summary,
        scenarios: out,
    })
}

async fn one(daemon: &Daemon, mock_cfg: &RunConfig, l: &Loaded, ns: &str) -> DiffScenario {
    let mut r = DiffScenario {
        name: l.name.clone(),
        verdict: Verdict::Skipped,
        reason: None,
        differences: vec![],
        mock_status: String::new(),
        containerd_events: vec![],
        steps_compared: (0, 0),
        duration_ms: 0,
    };
    if let Some(why) =
        classify::inexpressible(&l.scenario).or_else(|| classify::mock_only_variable(&l.text))
    {
        r.reason = Some(format!("not expressible through containerd's API: {why}"));
        return r;
    }
    if l.scenario.steps.iter().any(Step::is_sandbox_call)
        && !sandbox::has_shim_sandboxer(&daemon.version)
    {
        r.reason = Some(format!(
            "containerd {} has no shim sandbox controller (sandboxer `shim` came with 2.0)",
            daemon.version
        ));
        return r;
    }
    let mock = engine::run_scenario(mock_cfg, l).await;
    r.mock_status = mock.status.as_str().to_string();
    if mock.status == Status::Skipped {
        r.reason = Some(format!(
            "skipped by the mock: {}",
            mock.reason.clone().unwrap_or_default()
        ));
        return r;
    }
    match daemon.run(&l.scenario, ns).await {
        Err(e) => {
            r.verdict = Verdict::Error;
            r.reason = Some(format!("containerd run: {e}"));
        }
        Ok(trace) => {
            let mock = Trace::from_mock(&mock);
            r.differences = compare::compare(&trace, &mock);
            r.containerd_events = trace.events.iter().map(|(t, _)| t.clone()).collect();
            r.steps_compared = (trace.steps.len(), mock.steps.len());
            r.verdict = if r.differences.is_empty() {
                Verdict::Same
            } else {
                Verdict::Different
            };
        }
    }
    r
}

/// [`run`] on a runtime of its own (for the CLI).
pub fn run_blocking(
    cfg: &DiffConfig,
    scenarios: Vec<Loaded>,
    progress: impl FnMut(&DiffScenario),
) -> Result<DiffReport, DiffError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DiffError::Runtime(e.to_string()))?;
    rt.block_on(run(cfg, scenarios, progress))
}
