//! One scenario on the mock containerd: the [`Ctx`] owning its mock, bundles, shims and stdio
//! beside the run's [`Script`], and [`execute`] (prepare, run the steps through the interpreter,
//! close). The launch and capability probes are in `prepare`, the mock as the interpreter's
//! backend in `dispatch`, requests in `rpc`, the shim-alive check in `checks`, the fault steps in
//! `faults`, the shims closed in `close`.

use super::script::Script;
use super::RunConfig;
use crate::bundle::Bundle;
use crate::client::TaskClient;
use crate::launch::{MockConfig, MockContainerd, Shim};
use crate::pidguard::{Proc, Refused};
use crate::report::{ScenarioResult, Status};
use crate::scenario::{Capability, Level, Loaded, Process};
use crate::stdio::StdioSet;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub use super::interp::MAIN;
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

pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a RunConfig,
    /// The run's variables, transcript and verdict.
    pub(super) script: Script,
    pub(super) requires: &'a [Capability],
    pub(super) process: Process,
    pub(super) stdin: Option<&'a str>,
    pub(super) mock: MockContainerd,
    pub(super) tmp: PathBuf,
    pub(super) containers: BTreeMap<String, Container>,
    pub(super) shims: Vec<ShimSlot>,
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
            super::interp::run_steps(&mut ctx, &sc.steps, "").await;
        }
    })
    .await;
    if ran.is_err() {
        let at = ctx.script.steps.len();
        ctx.script.fail(
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
        Ctx {
            cfg,
            script: Script::new(MAIN, level, cfg.step_timeout, cfg.keep_going),
            requires,
            process,
            stdin,
            mock,
            tmp,
            containers: BTreeMap::new(),
            shims: Vec::new(),
            ns_checked: false,
            namespace,
            stdio_seq: 0,
            pids: Vec::new(),
            refused_pids: Vec::new(),
            proc_pids: BTreeMap::new(),
            bootstrap: None,
        }
    }

    pub(super) fn target(&self, container: Option<&str>) -> Result<(TaskClient, String), String> {
        let name = match container {
            Some(c) => self.script.expand(c)?,
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
}
