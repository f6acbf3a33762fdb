//! The scenario engine: runs each scenario on its own mock containerd, bundle(s) and shim
//! instance, scenarios in parallel up to `jobs` on one tokio runtime, every wait bounded; turns
//! what happened into a [`ScenarioResult`] (steps, events, output, leaks, verdict).

mod bootstrap;
mod checks;
mod close;
pub mod convert;
mod dispatch;
mod faults;
pub(crate) mod interp;
mod preflight;
mod prepare;
mod rpc;
mod sandbox;
pub(crate) mod script;
mod session;
mod steps;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bundle::RootfsKind;
use crate::dialect::Dialect;
use crate::report::{ScenarioResult, Status};
use crate::scenario::{Capability, Level, Loaded, Profile};

pub use convert::normalize_times;
pub use preflight::{preflight, PreflightError, PreflightReport};
pub use session::{Session, StepOutcome};

/// How to run scenarios.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The shim binary under test.
    pub shim: PathBuf,
    /// Which containerd to imitate.
    pub dialect: Dialect,
    /// Scenarios run at once.
    pub jobs: usize,
    /// Known capabilities and expected failures.
    pub profile: Profile,
    /// Extra environment for the shim.
    pub shim_env: Vec<(String, String)>,
    /// Run a scenario's remaining steps after a failed one.
    pub keep_going: bool,
    /// Default bound of one RPC step.
    pub step_timeout: Duration,
    /// Default bound of a whole scenario.
    pub scenario_timeout: Duration,
    /// The bundles' root filesystem (busybox serves both host and isolated shims).
    pub rootfs: RootfsKind,
    /// The namespace the mock uses.
    pub namespace: String,
    /// Dialect 2.3: the runtime's `socket_dir`, sent in `BootstrapParams` (default: the
    /// daemon's own default, [`crate::dialect::default_socket_dir`]).
    pub socket_dir: Option<String>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            shim: PathBuf::new(),
            dialect: Dialect::default(),
            jobs: 1,
            profile: Profile::default(),
            shim_env: Vec::new(),
            keep_going: false,
            step_timeout: Duration::from_secs(10),
            scenario_timeout: Duration::from_secs(60),
            rootfs: RootfsKind::Busybox,
            namespace: "default".into(),
            socket_dir: None,
        }
    }
}

/// What [`run_scenarios_observed`] reports while scenarios run.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The scenario of this name got a job slot and is running now.
    Started(&'a str),
    /// A scenario ended (its name is in the result).
    Finished(&'a ScenarioResult),
}

/// Runs scenarios, `cfg.jobs` at a time; `progress` sees each result as it finishes. Results
/// come back in completion order.
pub async fn run_scenarios(
    cfg: &RunConfig,
    scenarios: Vec<Loaded>,
    mut progress: impl FnMut(&ScenarioResult),
) -> Vec<ScenarioResult> {
    run_scenarios_observed(cfg, scenarios, |p| {
        if let Progress::Finished(r) = p {
            progress(r)
        }
    })
    .await
}

/// [`run_scenarios`], with `observe` also told when each scenario starts (it gets a job slot),
/// always before that scenario's [`Progress::Finished`].
pub async fn run_scenarios_observed(
    cfg: &RunConfig,
    scenarios: Vec<Loaded>,
    mut observe: impl FnMut(Progress<'_>),
) -> Vec<ScenarioResult> {
    let cfg = Arc::new(cfg.clone());
    let sem = Arc::new(tokio::sync::Semaphore::new(cfg.jobs.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let mut names = BTreeMap::new();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Longest first, so the slow ones do not form a tail at the end of a parallel run.
    let mut scenarios = scenarios;
    scenarios.sort_by_key(|l| std::cmp::Reverse(estimated_cost(&l.scenario.steps)));
    for l in scenarios {
        let cfg = cfg.clone();
        let sem = sem.clone();
        let name = l.name.clone();
        let level = l.scenario.level;
        let started = started_tx.clone();
        // The mock holds non-`Sync` ttrpc servers, so a scenario's future is not `Send`: each
        // runs on a blocking-pool thread driving it with the shared runtime's handle (its I/O,
        // timers and spawned tasks stay on the one runtime).
        let handle = tokio::runtime::Handle::current();
        let (name2, level2) = (name.clone(), level);
        let id = set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            // Nobody listening (the run is over) is not the scenario's concern.
            let _ = started.send(name2.clone());
            drop(started);
            tokio::task::spawn_blocking(move || handle.block_on(run_scenario(&cfg, &l)))
                .await
                .unwrap_or_else(|e| aborted(&name2, level2, &format!("the scenario crashed: {e}")))
        });
        names.insert(id.id(), (name, level));
    }
    drop(started_tx);
    let mut out = Vec::new();
    loop {
        // Starts first: a scenario's start is always seen before its end.
        let joined = tokio::select! {
            biased;
            Some(name) = started_rx.recv() => {
                observe(Progress::Started(&name));
                continue;
            }
            j = set.join_next_with_id() => j,
        };
        let Some(r) = joined else { break };
        let res = match r {
            Ok((_, res)) => res,
            Err(e) => {
                let (name, level) = names.get(&e.id()).cloned().unwrap_or_default();
                aborted(
                    &name,
                    level,
                    &format!("the scenario task ended abnormally: {e}"),
                )
            }
        };
        observe(Progress::Finished(&res));
        out.push(res);
    }
    out
}

/// A result for a scenario that could not run at all.
fn aborted(name: &str, level: Level, reason: &str) -> ScenarioResult {
    ScenarioResult {
        name: name.to_string(),
        level: level.as_str().to_string(),
        status: Status::Failed,
        reason: Some(reason.to_string()),
        duration_ms: 0,
        steps: vec![],
        events: vec![],
        events_omitted: None,
        stdout: String::new(),
        stderr: String::new(),
        leaks: vec![],
        description: String::new(),
        reference: None,
        failed_step: None,
        shim_log_tail: vec![],
    }
}

/// Runs one scenario in its own mock containerd and shim, bounded by the scenario timeout.
pub async fn run_scenario(cfg: &RunConfig, l: &Loaded) -> ScenarioResult {
    let started = Instant::now();
    let sc = &l.scenario;
    let mut base = aborted(&l.name, sc.level, "");
    base.reason = None;
    base.description = sc.description.clone();
    base.reference = sc.reference.clone();
    // Requirements the profile settles need no shim at all.
    for cap in &sc.requires {
        if cfg.profile.capabilities.get(cap) == Some(&false) {
            base.status = Status::Skipped;
            base.reason = Some(format!("requires {cap}: absent (profile)"));
            return base;
        }
    }
    let mut res = steps::execute(cfg, l, base).await;
    res.duration_ms = started.elapsed().as_millis() as u64;
    if cfg.profile.is_xfail(&l.name) {
        match res.status {
            Status::Failed => res.status = Status::Xfailed,
            Status::Passed => {
                res.reason = Some("listed as an expected failure (profile xfail) but passed".into())
            }
            _ => {}
        }
    }
    res
}

/// A rough cost of a scenario in "RPC units" for scheduling: sleeps count by duration, repeats
/// by iterations, every other step as one.
fn estimated_cost(steps: &[crate::scenario::Step]) -> u64 {
    use crate::scenario::Step;
    steps
        .iter()
        .map(|s| match s {
            Step::Repeat(r) => u64::from(r.times) * estimated_cost(&r.steps),
            Step::Sleep(d) => (d.get().as_millis() / 20) as u64 + 1,
            Step::RestartContainerd(r) => {
                let down = r.downtime.map(|d| d.get().as_millis()).unwrap_or(500);
                (down / 20) as u64 + 5 + estimated_cost(&r.during)
            }
            Step::StallStdout(d) => (d.get().as_millis() / 40) as u64 + 1,
            Step::Output(o) if o.stdout.as_ref().and_then(|m| m.length).unwrap_or(0) > 1 << 20 => {
                50
            }
            _ => 1,
        })
        .sum::<u64>()
        + 6
}

/// Capabilities a probe can learn from an `unimplemented` answer.
pub(crate) fn probe_able(c: Capability) -> bool {
    matches!(
        c,
        Capability::Exec
            | Capability::Pause
            | Capability::Stats
            | Capability::Pids
            | Capability::Update
            | Capability::Checkpoint
            | Capability::Sandbox
    )
}
