//! One scenario's context: the [`Ctx`] owning its mock, bundles, shims, stdio and variables,
//! [`execute`] (prepare, run the steps, close), and the recording of each step's result. The
//! launch and capability probes are in `prepare`, running and judging the steps in `dispatch`,
//! requests in `rpc`, events/output/shim-alive checks in `checks`, the fault steps in `faults`,
//! the shims closed in `close`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use containerd_shim_protos::api::WaitResponse;
use serde_json::{json, Value};

use super::RunConfig;
use crate::bundle::Bundle;
use crate::client::{RpcResult, TaskClient};
use crate::launch::{MockConfig, MockContainerd, Shim};
use crate::pidguard::{Proc, Refused};
use crate::report::{ScenarioResult, Status, StepResult};
use crate::scenario::expand;
use crate::scenario::{Capability, ExpectError, Level, Loaded, Process};
use crate::stdio::StdioSet;

/// The id of a scenario's main container.
pub const MAIN: &str = "main";
/// How many shim log lines a failure shows.
pub(super) const LOG_TAIL: usize = 20;
/// How much of the captured output a result keeps.
pub(super) const OUTPUT_KEEP: usize = 4096;

pub(super) struct Container {
    pub(super) id: String,
    pub(super) bundle: Bundle,
    pub(super) shim: usize,
    pub(super) stdio: Option<StdioSet>,
    pub(super) execs: BTreeMap<String, StdioSet>,
    pub(super) cursor: usize,
}

pub(super) struct ShimSlot {
    pub(super) shim: Option<Shim>,
    pub(super) client: TaskClient,
    pub(super) address: String,
    pub(super) pid: Option<i32>,
    /// The close report (and log lines) of a shim already closed during the steps.
    pub(super) closed: Option<(Vec<String>, crate::launch::CloseReport)>,
}

pub(super) struct Wait {
    pub(super) request: Value,
    pub(super) handle: tokio::task::JoinHandle<RpcResult<WaitResponse>>,
}

pub(super) enum Flow {
    Go,
    Stop,
}

pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a RunConfig,
    pub(super) level: Level,
    pub(super) requires: &'a [Capability],
    pub(super) process: Process,
    pub(super) stdin: Option<&'a str>,
    pub(super) mock: MockContainerd,
    pub(super) tmp: PathBuf,
    pub(super) containers: BTreeMap<String, Container>,
    pub(super) shims: Vec<ShimSlot>,
    pub(super) vars: BTreeMap<String, String>,
    pub(super) waits: BTreeMap<String, Wait>,
    pub(super) steps: Vec<StepResult>,
    pub(super) failure: Option<(Option<usize>, String)>,
    pub(super) skip: Option<String>,
    pub(super) ns_checked: bool,
    pub(super) namespace: String,
    pub(super) stdio_seq: u32,
    /// Every process the shim reported (init and exec) that the guard accepted as the shim's:
    /// checked after the close.
    pub(super) pids: Vec<Proc>,
    /// Reported pids the guard refused (not a process of the shim, init, the harness, ...):
    /// each is a problem of the scenario, reported after the close.
    pub(super) refused_pids: Vec<String>,
    /// The pid the shim reported per (container id, exec id; empty = init), with the guard's
    /// verdict, for `kill-process`.
    pub(super) proc_pids: BTreeMap<(String, String), Reported>,
    /// The scenario's `bootstrap:` key (containerd 2.3's `BootstrapParams`), if any.
    pub(super) bootstrap: Option<&'a crate::scenario::BootstrapSpec>,
}

/// A pid the shim reported, and whether the harness may signal it ([`Proc::reported`]).
pub(super) struct Reported {
    pub(super) pid: u32,
    pub(super) checked: Result<Proc, Refused>,
}

/// Common arguments of RPC steps.
pub(super) struct Common<'s> {
    pub(super) expect_error: Option<&'s ExpectError>,
    pub(super) allow_success: bool,
    pub(super) timeout: Option<Duration>,
    pub(super) save: &'s BTreeMap<String, String>,
    pub(super) container: Option<&'s str>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// `<base>-<suffix of the temp dir>`: a valid containerd identifier unique to this scenario run.
pub(super) fn unique_namespace(base: &str, tmp: &std::path::Path) -> String {
    let suffix: String = tmp
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    let base = if base.is_empty() { "harness" } else { base };
    format!("{base}-{suffix}")
}

/// Runs a scenario from a fresh mock to the closed shims.
pub(super) async fn execute(
    cfg: &RunConfig,
    l: &Loaded,
    mut res: ScenarioResult,
) -> ScenarioResult {
    let sc = &l.scenario;
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            res.status = Status::Failed;
            res.reason = Some(format!("creating a temp dir: {e}"));
            return res;
        }
    };
    // A namespace of its own: runc keys its state and the shims their cgroups by namespace and
    // id, and every scenario's main container is called `main`.
    let namespace = unique_namespace(&cfg.namespace, tmp.path());
    let mut mock = match MockContainerd::new(MockConfig {
        dialect: cfg.dialect,
        namespace: namespace.clone(),
        ..MockConfig::default()
    })
    .await
    {
        Ok(m) => m,
        Err(e) => {
            res.status = Status::Failed;
            res.reason = Some(format!("starting the mock containerd: {e}"));
            return res;
        }
    };
    mock.set_socket_dir(cfg.socket_dir.clone());
    let mut ctx = Ctx::new(
        cfg,
        sc.level,
        &sc.requires,
        sc.process.clone(),
        sc.stdin.as_deref(),
        mock,
        tmp.path().to_path_buf(),
        namespace,
    );
    ctx.bootstrap = sc.bootstrap.as_ref();
    let total = sc.timeout.map(|d| d.get()).unwrap_or(cfg.scenario_timeout);
    let began = crate::procfs::ticks_now();
    let mark = crate::procfs::PidMark::now();
    let ran = tokio::time::timeout(total, async {
        if ctx.prepare(&sc.steps).await {
            ctx.run_steps(&sc.steps, "").await;
        }
    })
    .await;
    if ran.is_err() {
        let at = ctx.steps.len();
        ctx.fail(
            None,
            format!(
                "scenario timed out after {} (during step {} of the transcript)",
                humantime::format_duration(total),
                at + 1
            ),
        );
    }
    let timed_out = ran.is_err();
    let scenario_dir = ctx.tmp.clone();
    let mut res = ctx.finish(res).await;
    if timed_out {
        // The timeout may have cancelled a launch or a close half-way: whatever process was
        // started since and still works in this scenario's directory (a server's cwd is its
        // bundle, and it holds the bundle's `log` FIFO) is ended here.
        let scope = crate::leaks::LeakScope {
            bundle: Some(scenario_dir),
            not_before: began,
            mark,
            ..Default::default()
        };
        let swept = tokio::task::spawn_blocking(move || crate::leaks::check_and_clean(&scope))
            .await
            .unwrap_or_default();
        res.leaks.extend(swept.into_iter().map(|l| l.detail));
    }
    res
}

impl<'a> Ctx<'a> {
    /// A fresh context (no shim launched yet) with `${id}` set; the scenario engine and the
    /// shell's session both start from here.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: &'a RunConfig,
        level: Level,
        requires: &'a [Capability],
        process: Process,
        stdin: Option<&'a str>,
        mock: MockContainerd,
        tmp: PathBuf,
        namespace: String,
    ) -> Ctx<'a> {
        let mut ctx = Ctx {
            cfg,
            level,
            requires,
            process,
            stdin,
            mock,
            tmp,
            containers: BTreeMap::new(),
            shims: Vec::new(),
            vars: BTreeMap::new(),
            waits: BTreeMap::new(),
            steps: Vec::new(),
            failure: None,
            skip: None,
            ns_checked: false,
            namespace,
            stdio_seq: 0,
            pids: Vec::new(),
            refused_pids: Vec::new(),
            proc_pids: BTreeMap::new(),
            bootstrap: None,
        };
        ctx.vars.insert("id".into(), MAIN.into());
        ctx
    }

    pub(super) fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |n: &str| self.vars.get(n).cloned()
    }

    pub(super) fn expand(&self, s: &str) -> Result<String, String> {
        expand(s, &self.lookup())
    }

    pub(super) fn fail(&mut self, step: Option<usize>, msg: String) {
        if self.failure.is_none() {
            self.failure = Some((step, msg));
        }
    }

    pub(super) fn stopped(&self) -> bool {
        self.skip.is_some() || (self.failure.is_some() && !self.cfg.keep_going)
    }

    /// Records a passed step (what it observed, and what it asked when that is not in the
    /// scenario's words) and goes on.
    pub(super) fn passed(
        &mut self,
        name: &str,
        t0: Instant,
        response: Value,
        request: Option<Value>,
    ) -> Flow {
        self.record(
            name,
            Status::Passed,
            t0.elapsed(),
            response,
            None,
            request,
            None,
        );
        Flow::Go
    }

    /// A step that sends no RPC, judged: passed with what it observed, or failed with why.
    pub(super) fn judged(
        &mut self,
        label: &str,
        name: &str,
        t0: Instant,
        outcome: Result<Value, String>,
    ) -> Flow {
        match outcome {
            Ok(v) => self.passed(name, t0, v, None),
            Err(m) => self.step_failed(label, name, t0.elapsed(), m),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn record(
        &mut self,
        name: &str,
        status: Status,
        dur: Duration,
        response: Value,
        error: Option<Value>,
        request: Option<Value>,
        message: Option<String>,
    ) -> usize {
        self.steps.push(StepResult {
            step: name.to_string(),
            status,
            duration_ms: ms(dur),
            response,
            error,
            request,
            message,
        });
        self.steps.len() - 1
    }

    /// Records a failed non-RPC step and the scenario's failure.
    pub(super) fn step_failed(
        &mut self,
        label: &str,
        name: &str,
        dur: Duration,
        msg: String,
    ) -> Flow {
        let i = self.record(
            name,
            Status::Failed,
            dur,
            json!({}),
            None,
            None,
            Some(msg.clone()),
        );
        self.fail(Some(i), format!("{label}: {msg}"));
        if self.cfg.keep_going {
            Flow::Go
        } else {
            Flow::Stop
        }
    }

    pub(super) fn target(&self, container: Option<&str>) -> Result<(TaskClient, String), String> {
        let name = match container {
            Some(c) => self.expand(c)?,
            None => MAIN.to_string(),
        };
        match self.containers.get(&name) {
            Some(c) => Ok((self.shims[c.shim].client.clone(), c.id.clone())),
            None => Ok((self.shims[0].client.clone(), name)),
        }
    }

    /// A fresh directory for one process's FIFOs (ids repeat across re-creates).
    pub(super) fn stdio_dir(&mut self) -> PathBuf {
        self.stdio_seq += 1;
        self.tmp.join("stdio").join(self.stdio_seq.to_string())
    }

    pub(super) fn opt_exec(&self, e: &Option<String>) -> Result<String, String> {
        match e {
            Some(s) => self.expand(s),
            None => Ok(String::new()),
        }
    }
}
