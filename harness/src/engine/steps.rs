//! One scenario's execution: the mock, bundles, shims and stdio it owns, each step sent and
//! judged (expect / expect-error / save / events / output), capability probes and skips, and
//! the closing of every shim (delete action, leak check) at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use containerd_shim_protos::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, DeleteRequest, ExecProcessRequest,
    KillRequest, PauseRequest, PidsRequest, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StateRequest, StatsRequest, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use serde_json::{json, Value};

use super::{convert, probe_able, RunConfig};
use crate::bundle::{Bundle, BundleOptions};
use crate::client::{RpcError, RpcResult, TaskClient};
use crate::events::RecordedEvent;
use crate::launch::{LaunchOptions, MockConfig, MockContainerd, Shim};
use crate::report::{EventRecord, ScenarioResult, Status, StepResult};
use crate::scenario::{abbreviate, expand};
use crate::scenario::{
    Capability, EventMatch, ExpectError, Level, Loaded, Matcher, OutputMatch, Process, StdioKind,
    Step,
};
use crate::stdio::{StdioMode, StdioOptions, StdioSet};

/// The id of a scenario's main container.
pub const MAIN: &str = "main";
/// Grouping annotations a shim may honour (runc shim: the first present wins).
const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];
/// How many shim log lines a failure shows.
const LOG_TAIL: usize = 20;
/// How much of the captured output a result keeps.
const OUTPUT_KEEP: usize = 4096;

struct Container {
    id: String,
    bundle: Bundle,
    shim: usize,
    stdio: Option<StdioSet>,
    execs: BTreeMap<String, StdioSet>,
    cursor: usize,
}

struct ShimSlot {
    shim: Option<Shim>,
    client: TaskClient,
    address: String,
    pid: Option<i32>,
}

struct Wait {
    request: Value,
    handle: tokio::task::JoinHandle<RpcResult<WaitResponse>>,
}

enum Flow {
    Go,
    Stop,
}

struct Ctx<'a> {
    cfg: &'a RunConfig,
    level: Level,
    requires: &'a [Capability],
    process: &'a Process,
    stdin: Option<&'a str>,
    mock: MockContainerd,
    tmp: PathBuf,
    containers: BTreeMap<String, Container>,
    shims: Vec<ShimSlot>,
    vars: BTreeMap<String, String>,
    waits: BTreeMap<String, Wait>,
    steps: Vec<StepResult>,
    failure: Option<(Option<usize>, String)>,
    skip: Option<String>,
    ns_checked: bool,
    namespace: String,
    stdio_seq: u32,
    /// Every process pid the shim reported (init and exec), checked after the close.
    pids: Vec<u32>,
}

/// Common arguments of RPC steps.
struct Common<'s> {
    expect_error: Option<&'s ExpectError>,
    allow_success: bool,
    timeout: Option<Duration>,
    save: &'s BTreeMap<String, String>,
    container: Option<&'s str>,
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

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

fn err_json(e: &RpcError) -> Value {
    match e {
        RpcError::Status { message, .. } => json!({"code": e.code_name(), "message": message}),
        other => json!({"code": other.code_name(), "message": other.to_string()}),
    }
}

fn mode(k: StdioKind) -> StdioMode {
    match k {
        StdioKind::Fifo => StdioMode::Fifo,
        StdioKind::Null => StdioMode::Null,
        StdioKind::File => StdioMode::File,
    }
}

/// `<base>-<suffix of the temp dir>`: a valid containerd identifier unique to this scenario run.
fn unique_namespace(base: &str, tmp: &std::path::Path) -> String {
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

fn pid_ns(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
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
    let mock = match MockContainerd::new(MockConfig {
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
    let mut ctx = Ctx {
        cfg,
        level: sc.level,
        requires: &sc.requires,
        process: &sc.process,
        stdin: sc.stdin.as_deref(),
        mock,
        tmp: tmp.path().to_path_buf(),
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
    };
    ctx.vars.insert("id".into(), MAIN.into());
    let total = sc.timeout.map(|d| d.get()).unwrap_or(cfg.scenario_timeout);
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
    ctx.finish(res).await
}

impl<'a> Ctx<'a> {
    fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |n: &str| self.vars.get(n).cloned()
    }

    fn expand(&self, s: &str) -> Result<String, String> {
        expand(s, &self.lookup())
    }

    fn fail(&mut self, step: Option<usize>, msg: String) {
        if self.failure.is_none() {
            self.failure = Some((step, msg));
        }
    }

    fn stopped(&self) -> bool {
        self.skip.is_some() || (self.failure.is_some() && !self.cfg.keep_going)
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
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
    fn step_failed(&mut self, label: &str, name: &str, dur: Duration, msg: String) -> Flow {
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
        if let Err(e) = self.launch(MAIN, &process, terminal).await {
            self.fail(None, e);
            return false;
        }
        let client = self.shims[0].client.clone();
        let t = self.cfg.step_timeout;
        for cap in self.requires.iter().copied() {
            let known = self.cfg.profile.capabilities.get(&cap).copied();
            if known == Some(true) || !probe_able(cap) {
                continue;
            }
            let probe_id = "harness-probe".to_string();
            let r: RpcResult<()> = match cap {
                Capability::Exec => client
                    .exec(
                        ExecProcessRequest {
                            id: probe_id.clone(),
                            exec_id: probe_id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await
                    .map(|_| ()),
                Capability::Pause => client
                    .pause(
                        PauseRequest {
                            id: probe_id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await
                    .map(|_| ()),
                Capability::Stats => client
                    .stats(
                        StatsRequest {
                            id: probe_id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await
                    .map(|_| ()),
                Capability::Pids => client
                    .pids(
                        PidsRequest {
                            id: probe_id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await
                    .map(|_| ()),
                Capability::Update => client
                    .update(
                        UpdateTaskRequest {
                            id: probe_id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await
                    .map(|_| ()),
                Capability::Checkpoint => client
                    .checkpoint(
                        CheckpointTaskRequest {
                            id: probe_id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await
                    .map(|_| ()),
                _ => Ok(()),
            };
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
    async fn launch(
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
            convert::oci_process(process, terminal),
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
                    ..LaunchOptions::default()
                },
            )
            .await
            .map_err(|e| format!("launching the shim for `{name}`: {e}"))?;
        let slot = ShimSlot {
            client: shim.client(),
            address: shim.address.clone(),
            pid: shim.pid,
            shim: Some(shim),
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
    fn target(&self, container: Option<&str>) -> Result<(TaskClient, String), String> {
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
    fn stdio_dir(&mut self) -> PathBuf {
        self.stdio_seq += 1;
        self.tmp.join("stdio").join(self.stdio_seq.to_string())
    }

    fn opt_exec(&self, e: &Option<String>) -> Result<String, String> {
        match e {
            Some(s) => self.expand(s),
            None => Ok(String::new()),
        }
    }

    fn run_steps<'s>(
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

    async fn run_step(&mut self, s: &Step, label: &str, prefix: &str, index: usize) -> Flow {
        let t0 = Instant::now();
        match s {
            Step::Sleep(d) => {
                tokio::time::sleep(d.get()).await;
                self.record(
                    "sleep",
                    Status::Passed,
                    t0.elapsed(),
                    json!({}),
                    None,
                    None,
                    None,
                );
                Flow::Go
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
                match r {
                    Ok(matched) => {
                        self.record(
                            "events",
                            Status::Passed,
                            t0.elapsed(),
                            json!({"matched": matched}),
                            None,
                            None,
                            None,
                        );
                        Flow::Go
                    }
                    Err(m) => self.step_failed(label, "events", t0.elapsed(), m),
                }
            }
            Step::Output(o) => match self.output_step(o).await {
                Ok(()) => {
                    self.record(
                        "output",
                        Status::Passed,
                        t0.elapsed(),
                        json!({}),
                        None,
                        None,
                        None,
                    );
                    Flow::Go
                }
                Err(m) => self.step_failed(label, "output", t0.elapsed(), m),
            },
            Step::ShimAlive(a) => match self
                .shim_alive(a.alive, a.timeout.map(|d| d.get()), a.socket_removed)
                .await
            {
                Ok(()) => {
                    self.record(
                        "shim-alive",
                        Status::Passed,
                        t0.elapsed(),
                        json!({}),
                        None,
                        None,
                        None,
                    );
                    Flow::Go
                }
                Err(m) => self.step_failed(label, "shim-alive", t0.elapsed(), m),
            },
            Step::WaitResult(w) => self.wait_result(w, label).await,
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
                if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
                    return self.step_failed(
                        label,
                        "kill-shim",
                        t0.elapsed(),
                        format!("kill({pid}, {}): {e}", k.signal),
                    );
                }
                let deadline = Instant::now() + Duration::from_secs(3);
                while crate::leaks::is_alive(pid) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // A killed server cannot remove its socket; the next `start` of a runc shim
                // would (EADDRINUSE and not connectable): do that here, so the leak check judges
                // the `delete` action.
                if let Some(p) = crate::dialect::socket_path(&self.shims[0].address) {
                    let _ = std::fs::remove_file(p);
                }
                self.record(
                    "kill-shim",
                    Status::Passed,
                    t0.elapsed(),
                    json!({}),
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

    /// Builds and sends one RPC; `None` when it was sent in the background.
    async fn send(
        &mut self,
        s: &Step,
        c: &Common<'_>,
        t: Duration,
    ) -> Result<Option<(Value, RpcResult<Value>)>, String> {
        if let Step::Create(cs) = s {
            return self.create(cs, c, t).await.map(Some);
        }
        if let Step::Exec(es) = s {
            return self.exec(es, c, t).await.map(Some);
        }
        let (client, id) = self.target(c.container)?;
        let main = id == MAIN;
        Ok(Some(match s {
            Step::Start(x) => {
                let exec_id = self.opt_exec(&x.exec_id)?;
                if exec_id.is_empty() {
                    let key = if main {
                        "start-time".to_string()
                    } else {
                        format!("{id}-start-time")
                    };
                    self.vars.insert(key, now_rfc3339());
                }
                let req = json!({"id": id, "exec-id": exec_id});
                let r = client
                    .start(
                        StartRequest {
                            id,
                            exec_id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                if let Ok(x) = &r {
                    self.pids.push(x.pid);
                }
                (req, r.map(|r| convert::start(&r)))
            }
            Step::State(x) => {
                let exec_id = self.opt_exec(&x.exec_id)?;
                let req = json!({"id": id, "exec-id": exec_id});
                let r = client
                    .state(
                        StateRequest {
                            id,
                            exec_id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                (req, r.map(|r| convert::state(&r)))
            }
            Step::Kill(x) => {
                let exec_id = self.opt_exec(&x.exec_id)?;
                let req = json!({"id": id, "exec-id": exec_id, "signal": x.signal.0, "all": x.all});
                let r = client
                    .kill(
                        KillRequest {
                            id,
                            exec_id,
                            signal: x.signal.0,
                            all: x.all,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                (req, r.map(|_| convert::empty()))
            }
            Step::Wait(x) => {
                let exec_id = self.opt_exec(&x.exec_id)?;
                let req = json!({"id": id, "exec-id": exec_id});
                let wreq = WaitRequest {
                    id,
                    exec_id,
                    ..Default::default()
                };
                if let Some(h) = &x.background {
                    let handle = tokio::spawn(async move { client.wait(wreq, t).await });
                    self.waits.insert(
                        h.clone(),
                        Wait {
                            request: req.clone(),
                            handle,
                        },
                    );
                    self.record(
                        "wait",
                        Status::Passed,
                        Duration::ZERO,
                        json!({"background": h}),
                        None,
                        Some(req),
                        None,
                    );
                    return Ok(None);
                }
                let r = client.wait(wreq, t).await;
                (req, r.map(|r| convert::wait(&r)))
            }
            Step::Delete(x) => {
                let exec_id = self.opt_exec(&x.exec_id)?;
                let req = json!({"id": id, "exec-id": exec_id});
                let r = client
                    .delete(
                        DeleteRequest {
                            id,
                            exec_id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                (req, r.map(|r| convert::delete(&r)))
            }
            Step::Pids(_) => {
                let req = json!({"id": id});
                let r = client
                    .pids(
                        PidsRequest {
                            id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                (req, r.map(|r| convert::pids(&r)))
            }
            Step::Pause(_) => {
                let req = json!({"id": id});
                let r = client
                    .pause(
                        PauseRequest {
                            id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                (req, r.map(|_| convert::empty()))
            }
            Step::Resume(_) => {
                let req = json!({"id": id});
                let r = client
                    .resume(
                        ResumeRequest {
                            id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                (req, r.map(|_| convert::empty()))
            }
            Step::Stats(_) => {
                let req = json!({"id": id});
                let r = client
                    .stats(
                        StatsRequest {
                            id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                (req, r.map(|r| convert::stats(&r)))
            }
            Step::CloseIo(x) => {
                let exec_id = self.opt_exec(&x.exec_id)?;
                if x.client_close {
                    if let Some(set) = self.stdio_of(c.container, &exec_id)? {
                        set.close_stdin();
                    }
                }
                let req = json!({"id": id, "exec-id": exec_id, "stdin": x.stdin});
                let r = client
                    .close_io(
                        CloseIORequest {
                            id,
                            exec_id,
                            stdin: x.stdin,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                (req, r.map(|_| convert::empty()))
            }
            Step::ResizePty(x) => {
                let exec_id = self.opt_exec(&x.exec_id)?;
                let req =
                    json!({"id": id, "exec-id": exec_id, "width": x.width, "height": x.height});
                let r = client
                    .resize_pty(
                        ResizePtyRequest {
                            id,
                            exec_id,
                            width: x.width,
                            height: x.height,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                (req, r.map(|_| convert::empty()))
            }
            Step::Update(x) => {
                let res = x.resources.clone().unwrap_or(json!({}));
                let req = json!({"id": id, "resources": res, "annotations": x.annotations});
                let mut ureq = UpdateTaskRequest {
                    id,
                    ..Default::default()
                };
                ureq.resources = Some(convert::resources_any(&res)).into();
                ureq.annotations = x.annotations.clone().into_iter().collect();
                let r = client.update(ureq, t).await;
                (req, r.map(|_| convert::empty()))
            }
            Step::Checkpoint(x) => {
                let path = match &x.path {
                    Some(p) => self.expand(p)?,
                    None => self.tmp.join("checkpoint").display().to_string(),
                };
                let req = json!({"id": id, "path": path});
                let r = client
                    .checkpoint(
                        CheckpointTaskRequest {
                            id,
                            path,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                (req, r.map(|_| convert::empty()))
            }
            Step::Connect(_) => {
                let req = json!({"id": id});
                let r = client
                    .connect(
                        ConnectRequest {
                            id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                (req, r.map(|r| convert::connect(&r)))
            }
            Step::Shutdown(x) => {
                let req = json!({"id": id, "now": x.now});
                let r = client
                    .shutdown(
                        ShutdownRequest {
                            id,
                            now: x.now,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                // containerd ignores a connection closed by a shim exiting before its reply.
                let r = match r {
                    Err(RpcError::Transport(_)) if c.expect_error.is_none() => Ok(()),
                    other => other.map(|_| ()),
                };
                (req, r.map(|_| convert::empty()))
            }
            _ => return Err(format!("`{}` is not an RPC step", s.name())),
        }))
    }

    fn stdio_of(
        &self,
        container: Option<&str>,
        exec_id: &str,
    ) -> Result<Option<&StdioSet>, String> {
        let name = match container {
            Some(c) => self.expand(c)?,
            None => MAIN.to_string(),
        };
        let Some(c) = self.containers.get(&name) else {
            return Ok(None);
        };
        Ok(if exec_id.is_empty() {
            c.stdio.as_ref()
        } else {
            c.execs.get(exec_id)
        })
    }

    async fn create(
        &mut self,
        cs: &crate::scenario::CreateStep,
        c: &Common<'_>,
        t: Duration,
    ) -> Result<(Value, RpcResult<Value>), String> {
        let name = match c.container {
            Some(x) => self.expand(x)?,
            None => MAIN.to_string(),
        };
        let process = if name == MAIN {
            if cs.process.is_some() {
                return Err("`process` in `create` is only for extra containers; the main one uses the scenario's".into());
            }
            self.process.clone()
        } else {
            cs.process.clone().unwrap_or_else(|| self.process.clone())
        };
        let terminal = cs.terminal.or(process.terminal).unwrap_or(false);
        if !self.containers.contains_key(&name) {
            self.launch(&name, &process, terminal).await?;
            let (a, b) = (&self.shims[0], &self.shims[self.shims.len() - 1]);
            if self.requires.contains(&Capability::Grouping) && a.address != b.address {
                self.skip = Some(format!(
                    "requires grouping: absent (the `start` of `{name}` with a grouping annotation returned a new shim {} instead of {})",
                    b.address, a.address
                ));
                return Err("grouping absent".into());
            }
        }
        let stdin_data = cs
            .stdin_data
            .as_deref()
            .or(if name == MAIN { self.stdin } else { None })
            .map(|s| s.as_bytes().to_vec());
        let opts = StdioOptions {
            stdin: if cs.stdin == StdioKind::Fifo
                && stdin_data.is_none()
                && cs.stdin_data.is_none()
                && !self.requires.contains(&Capability::Stdin)
            {
                // containerd's cio opens a stdin FIFO only when the client has input.
                StdioMode::Null
            } else {
                mode(cs.stdin)
            },
            stdout: mode(cs.stdout),
            stderr: mode(cs.stderr),
            terminal,
            stdin_data,
        };
        let set = StdioSet::create(&self.stdio_dir(), &name, opts)
            .map_err(|e| format!("stdio for `{name}`: {e}"))?;
        let paths = set.paths();
        let container = self.containers.get_mut(&name).ok_or("container vanished")?;
        container.stdio = Some(set);
        let creq = container
            .bundle
            .create_request(paths.clone(), terminal, None);
        let req = json!({
            "id": creq.id, "bundle": creq.bundle, "terminal": terminal,
            "stdin": paths.0, "stdout": paths.1, "stderr": paths.2,
        });
        let client = self.shims[container.shim].client.clone();
        let r = client.create(creq, t).await;
        if let Ok(resp) = &r {
            self.pids.push(resp.pid);
            let key = if name == MAIN {
                "init-pid".to_string()
            } else {
                format!("{name}-init-pid")
            };
            self.vars.insert(key, resp.pid.to_string());
            if name == MAIN {
                self.check_isolation(resp.pid);
            }
        }
        Ok((req, r.map(|r| convert::create(&r))))
    }

    /// Learns host-process / isolated from the created process's pid namespace.
    fn check_isolation(&mut self, pid: u32) {
        if self.ns_checked {
            return;
        }
        self.ns_checked = true;
        let wants_host = self.requires.contains(&Capability::HostProcess);
        let wants_iso = self.requires.contains(&Capability::Isolated);
        if !wants_host && !wants_iso {
            return;
        }
        let (Some(theirs), Some(ours)) =
            (pid_ns(pid), std::fs::read_link("/proc/self/ns/pid").ok())
        else {
            return;
        };
        let host = theirs == ours;
        if wants_host && !host {
            self.skip = Some(format!(
                "requires host-process: absent (pid {pid} runs in its own pid namespace)"
            ));
        } else if wants_iso && host {
            self.skip = Some(format!(
                "requires isolated: absent (pid {pid} runs in the host's pid namespace)"
            ));
        }
    }

    async fn exec(
        &mut self,
        es: &crate::scenario::ExecStep,
        c: &Common<'_>,
        t: Duration,
    ) -> Result<(Value, RpcResult<Value>), String> {
        let (client, id) = self.target(c.container)?;
        let exec_id = self.expand(&es.exec_id)?;
        let terminal = es.terminal.or(es.process.terminal).unwrap_or(false);
        let stdin_data = es.stdin_data.as_ref().map(|s| s.as_bytes().to_vec());
        let opts = StdioOptions {
            stdin: if es.stdin == StdioKind::Fifo && stdin_data.is_none() {
                StdioMode::Null
            } else {
                mode(es.stdin)
            },
            stdout: mode(es.stdout),
            stderr: mode(es.stderr),
            terminal,
            stdin_data,
        };
        let set = StdioSet::create(&self.stdio_dir(), &format!("{id}-{exec_id}"), opts)
            .map_err(|e| format!("stdio for exec `{exec_id}`: {e}"))?;
        let paths = set.paths();
        let mut args = Vec::new();
        for a in &es.process.args {
            args.push(self.expand(a)?);
        }
        let mut p = es.process.clone();
        p.args = args;
        let oci = convert::oci_process(&p, terminal);
        let req = json!({
            "id": id, "exec-id": exec_id, "terminal": terminal,
            "stdin": paths.0, "stdout": paths.1, "stderr": paths.2,
            "spec": sorted_sets(serde_json::to_value(&oci).unwrap_or(Value::Null)),
        });
        let ereq = ExecProcessRequest {
            id: id.clone(),
            exec_id: exec_id.clone(),
            terminal,
            stdin: paths.0,
            stdout: paths.1,
            stderr: paths.2,
            spec: Some(convert::process_any(&oci)).into(),
            ..Default::default()
        };
        let r = client.exec(ereq, t).await;
        if r.is_ok() {
            if let Some(cn) = self.containers.values_mut().find(|x| x.id == id) {
                cn.execs.insert(exec_id, set);
            }
        }
        Ok((req, r.map(|_| convert::empty())))
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

    fn container_id(&self, container: &Option<String>) -> Result<Option<String>, String> {
        match container.as_deref() {
            Some("*") => Ok(None),
            Some(c) => Ok(Some(self.expand(c)?)),
            None => Ok(Some(MAIN.to_string())),
        }
    }

    async fn events_step(&mut self, e: &crate::scenario::EventsStep) -> Result<usize, String> {
        let cid = self.container_id(&e.container)?;
        let key = cid.clone().unwrap_or_else(|| "*".into());
        let cursor = if e.fresh {
            self.containers.get(&key).map(|c| c.cursor).unwrap_or(0)
        } else {
            0
        };
        let timeout = e.timeout.map(|d| d.get()).unwrap_or(self.cfg.step_timeout);
        let vars = self.vars.clone();
        let lookup = move |n: &str| vars.get(n).cloned();
        let pick = |evs: &[RecordedEvent]| -> Vec<(String, Value)> {
            evs.iter()
                .filter(|ev| match &cid {
                    None => true,
                    Some(id) => {
                        ev.fields.get("container-id").and_then(Value::as_str) == Some(id.as_str())
                    }
                })
                .map(|ev| {
                    let mut f = ev.fields.clone();
                    convert::normalize_times(&mut f);
                    (ev.topic.clone(), f)
                })
                .skip(cursor)
                .collect()
        };
        let log = self.mock.events();
        log.wait_until(
            |evs| match_events(&pick(evs), &e.expect, e.exact, &lookup).is_ok(),
            timeout,
        )
        .await;
        let got = pick(&log.snapshot());
        let res = match_events(&got, &e.expect, e.exact, &lookup);
        let who = cid
            .as_deref()
            .map(|c| format!("container `{c}`"))
            .unwrap_or_else(|| "all containers".into());
        let end = match res {
            Ok(end) => end,
            Err(why) => {
                let want: Vec<_> = e.expect.iter().map(|m| m.0.topic.as_str()).collect();
                let seen: Vec<_> = got.iter().map(|(t, _)| t.as_str()).collect();
                return Err(format!(
                    "expected events [{}] ({}) for {who} within {}; got [{}]: {why}",
                    want.join(", "),
                    if e.exact { "exactly" } else { "in this order" },
                    humantime::format_duration(timeout),
                    seen.join(", ")
                ));
            }
        };
        for f in &e.forbid {
            if let Some((t, fields)) = got.iter().find(|(t, _)| t == f) {
                return Err(format!(
                    "event {t} must not be published for {who}, got {fields}"
                ));
            }
        }
        if let Some(c) = self.containers.get_mut(&key) {
            c.cursor = cursor + end;
        }
        Ok(end)
    }

    async fn output_step(&mut self, o: &crate::scenario::OutputStep) -> Result<(), String> {
        let exec_id = self.opt_exec(&o.exec_id)?;
        let timeout = o.timeout.map(|d| d.get()).unwrap_or(self.cfg.step_timeout);
        let Some(set) = self.stdio_of(o.container.as_deref(), &exec_id)? else {
            return Err(format!(
                "no captured output for {}",
                if exec_id.is_empty() {
                    "the init process (not created?)".to_string()
                } else {
                    format!("exec `{exec_id}`")
                }
            ));
        };
        let vars = self.vars.clone();
        let lookup = move |n: &str| vars.get(n).cloned();
        let check = |out: &[u8], err: &[u8]| -> Result<(), String> {
            let quick = |m: &OutputMatch, b: &[u8]| m.length.is_none_or(|n| n == b.len());
            if let Some(m) = &o.stdout {
                if !quick(m, out) {
                    return Err(format!(
                        "stdout: expected {} bytes, got {} bytes",
                        m.length.unwrap_or(0),
                        out.len()
                    ));
                }
            }
            if let Some(m) = &o.stderr {
                if !quick(m, err) {
                    return Err(format!(
                        "stderr: expected {} bytes, got {} bytes",
                        m.length.unwrap_or(0),
                        err.len()
                    ));
                }
            }
            if let Some(m) = &o.stdout {
                m.check(out, &lookup).map_err(|e| format!("stdout: {e}"))?;
            }
            if let Some(m) = &o.stderr {
                m.check(err, &lookup).map_err(|e| format!("stderr: {e}"))?;
            }
            Ok(())
        };
        set.wait_output(|out, err| check(out, err).is_ok(), timeout)
            .await;
        check(&set.stdout(), &set.stderr())
            .map_err(|e| format!("{e} (waited {})", humantime::format_duration(timeout)))
    }

    async fn shim_alive(
        &mut self,
        alive: bool,
        timeout: Option<Duration>,
        socket_removed: bool,
    ) -> Result<(), String> {
        self.shim_alive_of(None, alive, timeout, socket_removed)
            .await
    }

    async fn shim_alive_of(
        &mut self,
        container: Option<&str>,
        alive: bool,
        timeout: Option<Duration>,
        socket_removed: bool,
    ) -> Result<(), String> {
        let idx = match container {
            Some(c) => {
                let n = self.expand(c)?;
                self.containers.get(&n).map(|c| c.shim).unwrap_or(0)
            }
            None => 0,
        };
        let slot = &self.shims[idx];
        // A grouped `start` reuses a running server: its pid is the first launch's.
        let pid = slot.pid.or_else(|| {
            self.shims
                .iter()
                .find(|o| o.address == slot.address && o.pid.is_some())
                .and_then(|o| o.pid)
        });
        let Some(pid) = pid else {
            return Err("the shim server's pid is unknown, cannot tell whether it runs".into());
        };
        let bound = timeout.unwrap_or(Duration::from_secs(3));
        let deadline = Instant::now() + bound;
        if alive {
            // Give a wrongly exiting shim a moment to show it.
            tokio::time::sleep(Duration::from_millis(100).min(bound)).await;
            if !crate::leaks::is_alive(pid) {
                return Err(format!(
                    "the shim server (pid {pid}) exited; expected it to keep running"
                ));
            }
            return Ok(());
        }
        while crate::leaks::is_alive(pid) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "the shim server (pid {pid}) is still running {} later; expected it to exit",
                    humantime::format_duration(bound)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if socket_removed {
            if let Some(p) = crate::dialect::socket_path(&slot.address) {
                while p.exists() {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "the shim exited but left its socket {}",
                            p.display()
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Ok(())
    }

    /// After a failed or skipped scenario, ends what is left as `ctr task rm -f` would (SIGKILL,
    /// Wait, Delete for each live task), so the leak check judges the shim, not the scenario.
    async fn force_cleanup(&mut self) {
        let t = Duration::from_secs(2);
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
                let _ = c.kill(kill, t).await;
                let _ = c
                    .wait(
                        WaitRequest {
                            id: id.clone(),
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                let _ = c
                    .delete(
                        DeleteRequest {
                            id,
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
            }
        }
    }

    /// Ends background waits, closes every shim as containerd does, and builds the result.
    async fn finish(mut self, mut res: ScenarioResult) -> ScenarioResult {
        for (_, w) in std::mem::take(&mut self.waits) {
            w.handle.abort();
        }
        let mut leaks = Vec::new();
        let mut close_problems = Vec::new();
        let mut log_tail = Vec::new();
        if self.failure.is_some() || self.skip.is_some() {
            self.force_cleanup().await;
        }
        // Extra containers first: with grouping the main connection's close ends the server.
        for slot in self.shims.iter_mut().rev() {
            let Some(shim) = slot.shim.take() else {
                continue;
            };
            let lines = shim.log_lines();
            let report = shim.close().await;
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
        for pid in self.pids.iter().copied().filter(|p| *p > 0) {
            if !seen.insert(pid) {
                continue;
            }
            let p = pid as i32;
            if let Some(info) = crate::leaks::proc_info(p).filter(|i| i.state != 'Z') {
                leaks.push(format!(
                    "container process pid {p} ({}) still running after the shim was closed",
                    info.comm
                ));
                crate::leaks::kill_and_wait(p, Duration::from_secs(2));
            }
        }
        let start = log_tail.len().saturating_sub(LOG_TAIL);
        res.shim_log_tail = log_tail[start..].to_vec();
        let events: Vec<EventRecord> = self
            .mock
            .events()
            .snapshot()
            .into_iter()
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
        res.steps = std::mem::take(&mut self.steps);
        let must = self.level == Level::Must;
        match (&self.failure, &self.skip) {
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

/// Sorts the string lists of a spec (oci-spec keeps capabilities in hash sets) for stable output.
fn sorted_sets(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Array(a) if a.iter().all(Value::is_string) => {
                a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            Value::Object(o) => o.values_mut().for_each(walk),
            _ => {}
        }
    }
    if let Some(c) = v.get_mut("capabilities") {
        walk(c);
    }
    v
}

fn keep(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() <= OUTPUT_KEEP {
        s.into_owned()
    } else {
        abbreviate(&s, OUTPUT_KEEP)
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

/// Matches expected events against `(topic, fields)`; returns the index after the last matched.
fn match_events(
    got: &[(String, Value)],
    expect: &[EventMatch],
    exact: bool,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<usize, String> {
    let fields_ok = |m: &EventMatch, f: &Value| -> Result<(), String> {
        for (k, mm) in &m.0.fields {
            mm.check(f.get(k), lookup)
                .map_err(|e| format!("{k}: {e}"))?;
        }
        Ok(())
    };
    if exact {
        if got.len() != expect.len() {
            return Err(format!("{} events instead of {}", got.len(), expect.len()));
        }
        for (i, (m, (t, f))) in expect.iter().zip(got).enumerate() {
            if &m.0.topic != t {
                return Err(format!("event {} is {t}, expected {}", i + 1, m.0.topic));
            }
            fields_ok(m, f).map_err(|e| format!("{t}: {e}"))?;
        }
        return Ok(got.len());
    }
    let mut j = 0;
    let mut last: Option<&str> = None;
    for m in expect {
        let mut note = None;
        loop {
            let Some((t, f)) = got.get(j) else {
                let after = last.map(|l| format!(" after {l}")).unwrap_or_default();
                return Err(match note {
                    Some(n) => format!("{} came with {n}", m.0.topic),
                    None => format!("no {}{after}", m.0.topic),
                });
            };
            j += 1;
            if t == &m.0.topic {
                match fields_ok(m, f) {
                    Ok(()) => {
                        last = Some(t.as_str());
                        break;
                    }
                    Err(e) => note = Some(e),
                }
            }
        }
    }
    Ok(j)
}
