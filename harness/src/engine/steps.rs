//! One scenario's flow: the context owning its mock, bundles, shims, stdio and variables; the
//! launch and capability probes; running the steps in order (repeat, sleep, background waits);
//! judging RPC answers (expect / expect-error / save) and skips. Requests are built in `rpc`,
//! events/output/shim-alive checked in `checks`, the fault steps in `faults`, the shims closed in
//! `close`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use containerd_shim_protos::api::{
    CheckpointTaskRequest, ExecProcessRequest, PauseRequest, PidsRequest, StatsRequest,
    UpdateTaskRequest, WaitResponse,
};
use serde_json::{json, Value};

use super::{convert, probe_able, RunConfig};
use crate::bundle::{Bundle, BundleOptions};
use crate::client::{RpcError, RpcResult, TaskClient};
use crate::launch::{LaunchOptions, MockConfig, MockContainerd, Shim};
use crate::pidguard::{Proc, Refused};
use crate::report::{ScenarioResult, Status, StepResult};
use crate::scenario::expand;
use crate::scenario::{Capability, ExpectError, Level, Loaded, Matcher, Process, Step};
use crate::stdio::StdioSet;

/// The id of a scenario's main container.
pub const MAIN: &str = "main";
/// Grouping annotations a shim may honour (runc shim: the first present wins).
const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];
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

macro_rules! common {
    ($s:expr) => {
        Common {
            expect_error: $s.expect_error.as_ref(),
            allow_success: $s.allow_success,
            timeout: $s.timeout.map(|d| d.get()),
            save: &$s.save.0,
            container: $s.container.as_deref(),
        }
    };
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

fn err_json(e: &RpcError) -> Value {
    match e {
        RpcError::Status { message, .. } => json!({"code": e.code_name(), "message": message}),
        other => json!({"code": other.code_name(), "message": other.to_string()}),
    }
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

    fn stopped(&self) -> bool {
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

    /// Launches the main container's shim and probes the required capabilities.
    async fn prepare(&mut self, steps: &[Step]) -> bool {
        let terminal = steps
            .iter()
            .find_map(|s| match s {
                Step::Create(c) if c.container.as_deref().unwrap_or(MAIN) == MAIN => c.terminal,
                _ => None,
            })
            .or(self.process.terminal)
            .unwrap_or(false);
        let process = self.process.clone();
        if self.bootstrap_prepare().is_err() {
            return false;
        }
        let t0 = Instant::now();
        let launched = self.launch(MAIN, &process, terminal).await;
        if let super::bootstrap::Launched::Stop = self.bootstrap_judge(launched, t0) {
            return false;
        }
        let client = self.shims[0].client.clone();
        let t = self.cfg.step_timeout;
        for cap in self.requires.iter().copied() {
            let known = self.cfg.profile.capabilities.get(&cap).copied();
            if known == Some(true) || !probe_able(cap) {
                continue;
            }
            let r = probe(&client, cap, t).await;
            if let Err(e) = r {
                if e.code_name() == "unimplemented" {
                    self.skip = Some(format!(
                        "requires {cap}: absent (the shim answered unimplemented to a probe)"
                    ));
                    return false;
                }
            }
        }
        true
    }

    /// Creates a container's bundle and launches (or, grouped, re-launches) its shim.
    pub(super) async fn launch(
        &mut self,
        name: &str,
        process: &Process,
        terminal: bool,
    ) -> Result<(), String> {
        let mut annotations = BTreeMap::new();
        if name != MAIN {
            for a in GROUP_ANNOTATIONS {
                annotations.insert(a.to_string(), MAIN.to_string());
            }
        }
        let bundle = Bundle::create_in_namespace(
            &self.tmp.join("bundles"),
            &self.namespace,
            name,
            process.to_oci(terminal),
            BundleOptions {
                rootfs: self.cfg.rootfs,
                annotations,
            },
        )
        .map_err(|e| format!("bundle for `{name}`: {e}"))?;
        let shim = self
            .mock
            .launch(
                &self.cfg.shim,
                &bundle,
                LaunchOptions {
                    extra_env: self.cfg.shim_env.clone(),
                    bootstrap: self.bootstrap_overrides(name),
                    ..LaunchOptions::default()
                },
            )
            .await
            .map_err(|e| format!("launching the shim for `{name}`: {e}"))?;
        self.note_answer(name, &shim.answer().clone());
        let slot = ShimSlot {
            client: shim.client(),
            address: shim.address.clone(),
            pid: shim.pid,
            shim: Some(shim),
            closed: None,
        };
        if name == MAIN {
            if let Some(p) = slot.pid {
                self.vars.insert("shim-pid".into(), p.to_string());
            }
        }
        self.shims.push(slot);
        let idx = self.shims.len() - 1;
        self.containers.insert(
            name.to_string(),
            Container {
                id: name.to_string(),
                bundle,
                shim: idx,
                stdio: None,
                execs: BTreeMap::new(),
                cursor: 0,
            },
        );
        Ok(())
    }

    /// The client and id for a step's `container` (an unknown name is sent as an id through the
    /// main shim, to check NotFound answers).
    /// The pid of the server behind shim slot `idx`; a grouped `start` reuses a running server,
    /// whose pid is the first launch's.
    pub(super) fn server_pid(&self, idx: usize) -> Option<i32> {
        let slot = self.shims.get(idx)?;
        slot.pid.or_else(|| {
            self.shims
                .iter()
                .find(|o| o.address == slot.address && o.pid.is_some())
                .and_then(|o| o.pid)
        })
    }

    /// Puts a pid the shim reported for (`container` name, `exec_id`) through the guard and
    /// remembers the verdict. Refusals other than "already gone" (a fast process may have
    /// exited and been reaped before the check) are problems of the scenario.
    pub(super) fn note_reported_pid(&mut self, container: &str, exec_id: &str, pid: u32) {
        let idx = self.containers.get(container).map_or(0, |c| c.shim);
        let checked = Proc::reported(pid, self.server_pid(idx));
        match &checked {
            Ok(p) => self.pids.push(*p),
            Err(Refused::Gone(_) | Refused::ServerUnknown(_)) => {}
            Err(e) => {
                let who = if exec_id.is_empty() {
                    format!("the init of `{container}`")
                } else {
                    format!("exec `{exec_id}` of `{container}`")
                };
                let m = format!("the shim reported pid {pid} for {who}, and {e}");
                if !self.refused_pids.contains(&m) {
                    self.refused_pids.push(m);
                }
            }
        }
        self.proc_pids.insert(
            (container.to_string(), exec_id.to_string()),
            Reported { pid, checked },
        );
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

    pub(super) fn run_steps<'s>(
        &'s mut self,
        steps: &'s [Step],
        prefix: &'s str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Flow> + 's>>
    where
        'a: 's,
    {
        Box::pin(async move {
            for (i, s) in steps.iter().enumerate() {
                if self.stopped() {
                    return Flow::Stop;
                }
                let label = format!("{prefix}step {} ({})", i + 1, s.name());
                if let Flow::Stop = self.run_step(s, &label, prefix, i).await {
                    return Flow::Stop;
                }
            }
            Flow::Go
        })
    }

    pub(super) async fn run_step(
        &mut self,
        s: &Step,
        label: &str,
        prefix: &str,
        index: usize,
    ) -> Flow {
        let t0 = Instant::now();
        match s {
            Step::Sleep(d) => {
                tokio::time::sleep(d.get()).await;
                self.passed("sleep", t0, json!({}), None)
            }
            Step::Repeat(r) => {
                for it in 1..=r.times {
                    self.vars.insert("iteration".into(), it.to_string());
                    let p = format!("{prefix}step {} iteration {it}: ", index + 1);
                    if let Flow::Stop = self.run_steps(&r.steps, &p).await {
                        return Flow::Stop;
                    }
                }
                Flow::Go
            }
            Step::Events(e) => {
                let r = self.events_step(e).await;
                let r = r.map(|matched| json!({"matched": matched}));
                self.judged(label, "events", t0, r)
            }
            Step::Output(o) => {
                let r = self.output_step(o).await.map(|()| json!({}));
                self.judged(label, "output", t0, r)
            }
            Step::ShimAlive(a) => {
                let r = self
                    .shim_alive(a.alive, a.timeout.map(|d| d.get()), a.socket_removed)
                    .await
                    .map(|()| json!({}));
                self.judged(label, "shim-alive", t0, r)
            }
            Step::WaitResult(w) => self.wait_result(w, label).await,
            Step::RestartContainerd(r) => self.restart_containerd(r, label, prefix, index).await,
            Step::EventsDown(_) => self.events_endpoint(false, label).await,
            Step::EventsUp(_) => self.events_endpoint(true, label).await,
            Step::StallStdout(d) => self.stall_stdout(d.get(), label),
            Step::KillProcess(k) => self.kill_process(k, label),
            Step::StartAnswer(a) => self.start_answer_step(a, label),
            Step::ShimLog(l) => self.shim_log_step(l, label).await,
            Step::KillShim(k) => {
                let Some(pid) = self.shims[0].pid else {
                    return self.step_failed(
                        label,
                        "kill-shim",
                        t0.elapsed(),
                        "the shim server's pid is unknown".into(),
                    );
                };
                let sig = nix::sys::signal::Signal::try_from(k.signal.0 as i32)
                    .unwrap_or(nix::sys::signal::Signal::SIGKILL);
                let signalled = Proc::found(pid)
                    .map_err(|e| format!("refused to signal the shim server: {e}"))
                    .and_then(|p| p.signal(sig).map(|()| p));
                let server = match signalled {
                    Ok(p) => p,
                    Err(m) => return self.step_failed(label, "kill-shim", t0.elapsed(), m),
                };
                server.wait_gone(Duration::from_secs(3)).await;
                // A killed server cannot remove its socket; the next `start` of a runc shim
                // would (EADDRINUSE and not connectable): do that here, so the leak check judges
                // the `delete` action.
                if let Some(p) = crate::dialect::socket_path(&self.shims[0].address) {
                    let _ = std::fs::remove_file(p);
                }
                // containerd notices the closed connection at once (ttrpc `WithOnClose`) and
                // runs `cleanupAfterDeadShim`: the `delete` action, then `/tasks/exit` and
                // `/tasks/delete` on the dead shim's behalf, so later steps can expect them.
                let mut response = json!({});
                if let Some(shim) = self.shims[0].shim.take() {
                    self.shims[0].client.close();
                    let lines = shim.log_lines();
                    let report = shim.close().await;
                    if let Ok(o) = &report.delete_action {
                        response =
                            json!({"delete-action": {"pid": o.pid, "exit-status": o.exit_status}});
                    }
                    self.shims[0].closed = Some((lines, report));
                }
                self.record(
                    "kill-shim",
                    Status::Passed,
                    t0.elapsed(),
                    response,
                    None,
                    Some(json!({"signal": k.signal.0})),
                    None,
                );
                Flow::Go
            }
            _ => self.rpc_step(s, label).await,
        }
    }

    async fn rpc_step(&mut self, s: &Step, label: &str) -> Flow {
        let name = s.name();
        let t_default = self.cfg.step_timeout;
        let prep: Result<_, String> = (|| {
            Ok(match s {
                Step::Create(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::Start(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::State(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::Kill(c) => (common!(c), vec![]),
                Step::Wait(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::Delete(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::Exec(c) => (common!(c), vec![]),
                Step::Pids(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::Pause(c) => (common!(c), vec![]),
                Step::Resume(c) => (common!(c), vec![]),
                Step::Stats(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::CloseIo(c) => (common!(c), vec![]),
                Step::ResizePty(c) => (common!(c), vec![]),
                Step::Update(c) => (common!(c), vec![]),
                Step::Checkpoint(c) => (common!(c), vec![]),
                Step::Connect(c) => (
                    common!(c),
                    c.expect.as_ref().map(|e| e.matchers()).unwrap_or_default(),
                ),
                Step::Shutdown(c) => (common!(c), vec![]),
                _ => return Err(format!("`{name}` is not an RPC step")),
            })
        })();
        let (common, matchers) = match prep {
            Ok(x) => x,
            Err(m) => return self.step_failed(label, name, Duration::ZERO, m),
        };
        // containerd puts no deadline of its own on a task's Delete, and the 2.x runc shim
        // spends up to 10 s draining a created task's stdio before `runc delete` ends the
        // process that holds it (cmd/containerd-shim-runc-v2/process/init.go `delete`, v2.1.9;
        // 2 s in v1.6.20's pkg/process/init.go): a Delete gets half as long again as other
        // steps, so that wait is not mistaken for a hang.
        let t_default = if matches!(s, Step::Delete(_)) {
            t_default + t_default / 2
        } else {
            t_default
        };
        let timeout = common.timeout.unwrap_or(t_default);
        let t0 = Instant::now();
        let sent = match self.send(s, &common, timeout).await {
            Ok(x) => x,
            Err(m) => return self.step_failed(label, name, t0.elapsed(), m),
        };
        let Some((request, result)) = sent else {
            // A background wait: recorded as sent.
            return Flow::Go;
        };
        let flow = self.judge(
            label,
            name,
            t0.elapsed(),
            request,
            result,
            &common,
            &matchers,
            s.capability(),
        );
        if let (Flow::Go, Step::Shutdown(sd)) = (&flow, s) {
            if let Some(exits) = sd.exits {
                let within = sd
                    .exits_within
                    .map(|d| d.get())
                    .unwrap_or(Duration::from_secs(3));
                let container = common.container;
                if let Err(m) = self
                    .shim_alive_of(container, !exits, Some(within), false)
                    .await
                {
                    let i = self.steps.len() - 1;
                    self.steps[i].status = Status::Failed;
                    self.steps[i].message = Some(m.clone());
                    self.fail(Some(i), format!("{label}: {m}"));
                    return if self.cfg.keep_going {
                        Flow::Go
                    } else {
                        Flow::Stop
                    };
                }
            }
        }
        flow
    }

    /// Judges an RPC answer against expect / expect-error, saves variables, records the step.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &mut self,
        label: &str,
        name: &str,
        dur: Duration,
        request: Value,
        result: RpcResult<Value>,
        c: &Common<'_>,
        matchers: &[(&str, &Matcher)],
        cap: Option<Capability>,
    ) -> Flow {
        let method = rpc_method(name);
        let verdict: Result<Value, (String, bool)> = match (&result, c.expect_error) {
            (Err(e), Some(want)) if want.accepts(e.code_name()) => Ok(json!({})),
            (Err(e), _) if e.code_name() == "unimplemented" && self.level != Level::Must => {
                let what = cap
                    .map(|c| format!(": capability {c} absent"))
                    .unwrap_or_default();
                self.skip = Some(format!("the shim answered unimplemented to {method}{what}"));
                Err((String::new(), true))
            }
            (Err(e), Some(want)) => Err((
                format!(
                    "{method}: expected error {}, got {}{}",
                    want.describe(),
                    e,
                    hint(e, name)
                ),
                false,
            )),
            (Err(e), None) => Err((
                format!("{method}: expected success, got error {e}{}", hint(e, name)),
                false,
            )),
            (Ok(v), Some(want)) if !c.allow_success => Err((
                format!(
                    "{method}: expected error {}, got success {v}",
                    want.describe()
                ),
                false,
            )),
            (Ok(v), _) => {
                let mut bad = Vec::new();
                for (field, m) in matchers {
                    if let Err(msg) = m.check(v.get(*field), &self.lookup()) {
                        bad.push(format!("{field}: {msg}"));
                    }
                }
                if bad.is_empty() {
                    Ok(v.clone())
                } else {
                    Err((format!("{method} response: {}", bad.join("; ")), false))
                }
            }
        };
        let (response, error) = match &result {
            Ok(v) => (v.clone(), None),
            Err(e) => (json!({}), Some(err_json(e))),
        };
        match verdict {
            Ok(v) => {
                for (var, field) in c.save {
                    let val = match v.get(field) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    };
                    self.vars.insert(var.clone(), val);
                }
                self.record(
                    name,
                    Status::Passed,
                    dur,
                    response,
                    error,
                    Some(request),
                    None,
                );
                Flow::Go
            }
            Err((_, true)) => {
                self.record(
                    name,
                    Status::Skipped,
                    dur,
                    response,
                    error,
                    Some(request),
                    self.skip.clone(),
                );
                Flow::Stop
            }
            Err((msg, false)) => {
                let i = self.record(
                    name,
                    Status::Failed,
                    dur,
                    response,
                    error,
                    Some(request),
                    Some(msg.clone()),
                );
                self.fail(Some(i), format!("{label}: {msg}"));
                if self.cfg.keep_going {
                    Flow::Go
                } else {
                    Flow::Stop
                }
            }
        }
    }

    async fn wait_result(&mut self, w: &crate::scenario::WaitResultStep, label: &str) -> Flow {
        let t0 = Instant::now();
        let c = common!(w);
        let Some(bg) = self.waits.get(&w.handle) else {
            return self.step_failed(
                label,
                "wait-result",
                Duration::ZERO,
                format!("no background wait named `{}`", w.handle),
            );
        };
        if w.pending {
            if bg.handle.is_finished() {
                let bg = self.waits.remove(&w.handle).expect("present");
                let got = match bg.handle.await {
                    Ok(Ok(r)) => format!("an answer {}", convert::wait(&r)),
                    Ok(Err(e)) => format!("an error {e}"),
                    Err(e) => format!("a crash of the waiting task: {e}"),
                };
                return self.step_failed(
                    label,
                    "wait-result",
                    t0.elapsed(),
                    format!("Wait returned early: expected it to block while the process runs, got {got}"),
                );
            }
            self.record(
                "wait-result",
                Status::Passed,
                t0.elapsed(),
                json!({"pending": true}),
                None,
                None,
                None,
            );
            return Flow::Go;
        }
        let bg = self.waits.remove(&w.handle).expect("present");
        let t = c.timeout.unwrap_or(self.cfg.step_timeout);
        let mut handle = bg.handle;
        let r = match tokio::time::timeout(t, &mut handle).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(RpcError::Transport(format!("the waiting task failed: {e}"))),
            Err(_) => {
                handle.abort();
                Err(RpcError::Timeout(t))
            }
        };
        let matchers = w.expect.as_ref().map(|e| e.matchers()).unwrap_or_default();
        self.judge(
            label,
            "wait-result",
            t0.elapsed(),
            bg.request,
            r.map(|r| convert::wait(&r)),
            &c,
            &matchers,
            None,
        )
    }
}

fn rpc_method(step: &str) -> &'static str {
    match step {
        "create" => "Create",
        "start" => "Start",
        "state" => "State",
        "kill" => "Kill",
        "wait" | "wait-result" => "Wait",
        "delete" => "Delete",
        "exec" => "Exec",
        "pids" => "Pids",
        "pause" => "Pause",
        "resume" => "Resume",
        "stats" => "Stats",
        "close-io" => "CloseIO",
        "resize-pty" => "ResizePty",
        "update" => "Update",
        "checkpoint" => "Checkpoint",
        "connect" => "Connect",
        "shutdown" => "Shutdown",
        _ => "?",
    }
}

/// A hint for errors shim authors often misread.
fn hint(e: &RpcError, step: &str) -> String {
    match e {
        RpcError::Status { code, message }
            if *code == ttrpc::Code::NOT_FOUND && message.contains("is not supported") =>
        {
            " (a default trait method answered; unsupported RPCs must answer unimplemented)".into()
        }
        RpcError::Timeout(d) => format!(
            " (no answer within {}; is the shim blocked?)",
            humantime::format_duration(*d)
        ),
        _ if step == "wait-result" => String::new(),
        _ => String::new(),
    }
}

/// Sends the throwaway request that tells whether the shim implements `cap` (an
/// `unimplemented` answer means absent; any other answer, even an error, means present).
async fn probe(client: &TaskClient, cap: Capability, t: Duration) -> RpcResult<()> {
    const ID: &str = "harness-probe";
    macro_rules! ask {
        ($method:ident, $req:ident { $($field:ident),* }) => {
            client
                .$method(
                    $req {
                        id: ID.to_string(),
                        $($field: ID.to_string(),)*
                        ..Default::default()
                    },
                    t,
                )
                .await
                .map(|_| ())
        };
    }
    match cap {
        Capability::Exec => ask!(exec, ExecProcessRequest { exec_id }),
        Capability::Pause => ask!(pause, PauseRequest {}),
        Capability::Stats => ask!(stats, StatsRequest {}),
        Capability::Pids => ask!(pids, PidsRequest {}),
        Capability::Update => ask!(update, UpdateTaskRequest {}),
        Capability::Checkpoint => ask!(checkpoint, CheckpointTaskRequest {}),
        _ => Ok(()),
    }
}
