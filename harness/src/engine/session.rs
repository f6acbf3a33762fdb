//! An interactive session on one launched shim (what `harness shell` drives): the engine's own
//! step execution, one step at a time, where a failed step is reported and the session goes on.

use std::time::Duration;

use serde_json::Value;

use super::steps::{Ctx, MAIN};
use super::RunConfig;
use crate::events::RecordedEvent;
use crate::report::{ScenarioResult, Status, StepResult};
use crate::scenario::{Level, Process, Step};

/// What one step did: the step results it recorded (a `repeat` records several) and, when it
/// failed or would have skipped a scenario, why.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// The steps recorded, in order.
    pub steps: Vec<StepResult>,
    /// Why the step failed (the engine's message), if it did.
    pub failure: Option<String>,
}

/// One mock containerd and one launched shim, with the main container's bundle; steps run
/// against it one at a time. [`Session::close`] ends it as a scenario ends (tasks force-deleted,
/// shim shut down, `delete` action, leak check); dropping it without `close` still removes the
/// bundle and temp dirs and kills the shim's process group.
pub struct Session<'a> {
    // Field order matters: the context (bundles, stdio, shims) goes before its temp dir.
    ctx: Ctx<'a>,
    _tmp: tempfile::TempDir,
    shown: usize,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("shim", &self.ctx.cfg.shim)
            .field("namespace", &self.ctx.namespace)
            .finish()
    }
}

impl<'a> Session<'a> {
    /// Starts a mock containerd in a namespace of its own and launches `cfg.shim` for the main
    /// container, whose bundle holds `process` until [`Session::set_process`] changes it.
    pub async fn open(cfg: &'a RunConfig, process: Process) -> Result<Session<'a>, String> {
        let tmp = tempfile::tempdir().map_err(|e| format!("creating a temp dir: {e}"))?;
        let namespace = super::steps::unique_namespace(&cfg.namespace, tmp.path());
        let mock = crate::launch::MockContainerd::new(crate::launch::MockConfig {
            dialect: cfg.dialect,
            namespace: namespace.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("starting the mock containerd: {e}"))?;
        let mut ctx = Ctx::new(
            cfg,
            Level::Must,
            &[],
            process.clone(),
            None,
            mock,
            tmp.path().to_path_buf(),
            namespace,
        );
        let terminal = process.terminal.unwrap_or(false);
        ctx.launch(MAIN, &process, terminal).await?;
        Ok(Session {
            ctx,
            _tmp: tmp,
            shown: 0,
        })
    }

    /// The shim server's pid, when the launcher learned it.
    pub fn shim_pid(&self) -> Option<i32> {
        self.ctx.shims.first().and_then(|s| s.pid)
    }

    /// The address the shim's `start` printed.
    pub fn address(&self) -> &str {
        self.ctx
            .shims
            .first()
            .map(|s| s.address.as_str())
            .unwrap_or("")
    }

    /// The namespace of this session.
    pub fn namespace(&self) -> &str {
        &self.ctx.namespace
    }

    /// The main container's bundle directory.
    pub fn bundle(&self) -> Option<&std::path::Path> {
        self.ctx.containers.get(MAIN).map(|c| c.bundle.path())
    }

    /// The main container's process (what the next main `create` sends).
    pub fn process(&self) -> &Process {
        &self.ctx.process
    }

    /// Replaces the main container's process: rewrites `process` in its bundle's `config.json`
    /// (the shim reads it at Create) and what later steps use.
    pub fn set_process(&mut self, process: Process, terminal: bool) -> Result<(), String> {
        let Some(c) = self.ctx.containers.get(MAIN) else {
            return Err("the main container has no bundle".into());
        };
        let path = c.bundle.path().join("config.json");
        let text = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut spec: Value = serde_json::from_slice(&text)
            .map_err(|e| format!("parsing {}: {e}", path.display()))?;
        let oci = process.to_oci(terminal);
        let pv = serde_json::to_value(&oci).map_err(|e| format!("encoding the process: {e}"))?;
        match spec.as_object_mut() {
            Some(o) => o.insert("process".into(), pv),
            None => return Err(format!("{}: not a JSON object", path.display())),
        };
        let out = serde_json::to_vec_pretty(&spec)
            .map_err(|e| format!("encoding {}: {e}", path.display()))?;
        std::fs::write(&path, out).map_err(|e| format!("writing {}: {e}", path.display()))?;
        self.ctx.process = process;
        Ok(())
    }

    /// Runs one step as a scenario would (same requests, checks and variables), then clears
    /// the failure so the session goes on.
    pub async fn step(&mut self, step: &Step) -> StepOutcome {
        let before = self.ctx.script.steps.len();
        let label = format!("{} ({})", before + 1, step.name());
        super::interp::run_step(&mut self.ctx, step, &label, "", before).await;
        let failure = self.ctx.script.failure.take().map(|(_, m)| m);
        let skip = self.ctx.script.skip.take();
        StepOutcome {
            steps: self.ctx.script.steps[before..].to_vec(),
            failure: failure.or(skip),
        }
    }

    /// Events received since the last call (waiting up to `settle` for a first new one).
    pub async fn new_events(&mut self, settle: Duration) -> Vec<RecordedEvent> {
        let log = self.ctx.mock.events();
        let shown = self.shown;
        if !settle.is_zero() {
            log.wait_until(|evs| evs.len() > shown, settle).await;
        }
        let all = log.snapshot();
        self.shown = all.len();
        all.into_iter().skip(shown).collect()
    }

    /// Every event received so far.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.ctx.mock.events().snapshot()
    }

    /// The output captured so far of the main init (`exec_id` empty) or of an exec:
    /// `(stdout, stderr)`, or `None` when that process has no captured streams.
    pub fn output(&self, exec_id: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let c = self.ctx.containers.get(MAIN)?;
        let set = if exec_id.is_empty() {
            c.stdio.as_ref()
        } else {
            c.execs.get(exec_id)
        }?;
        Some((set.stdout(), set.stderr()))
    }

    /// Ends the session: live tasks are killed and deleted (as `ctr task rm -f`), the shim is
    /// closed as containerd closes it, and leftovers are checked and removed. The result's
    /// `leaks` and `reason` say what the close found.
    pub async fn close(mut self) -> ScenarioResult {
        self.ctx.force_cleanup().await;
        self.ctx.script.failure = None;
        self.ctx.script.skip = None;
        let mut res = super::aborted("shell", Level::Must, "");
        res.status = Status::Passed;
        res.reason = None;
        let Session { ctx, _tmp, .. } = self;
        ctx.finish(res).await
    }
}
