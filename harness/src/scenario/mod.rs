//! The scenario format: strict serde structs for `scenarios/<group>/<name>.yaml` (the public
//! contract in docs/scenario-format.md plus the extensions in docs/scenario-extensions.md), the
//! loader that names `file:line:col` on every error, the JSON Schema and the `--profile` file.

mod bootstrap;
mod duration;
pub mod embedded;
mod load;
mod matcher;
mod process;
mod rpc;
mod signal;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use bootstrap::{
    BootstrapLogLevel, BootstrapSpec, BootstrapStdin, ExtensionSpec, ShimLogStep, StartAnswerStep,
    StartOutcome,
};
pub use duration::HumanDuration;
pub use load::{
    discover, load_embedded, load_file, load_str, Filter, LoadError, Loaded, Profile, Source,
};
pub use matcher::{
    abbreviate, expand, loose_eq, match_events, parse_time, ErrorCode, EventMatch, EventMatchFull,
    ExpectError, MatchOps, Matcher, OutputMatch,
};
pub use process::{stdio_options, Process, StdioKind, User};
pub use rpc::{
    CheckpointStep, CloseIoStep, ConnectExpect, ConnectStep, CreateSandboxStep, CreateStep,
    DeleteExpect, DeleteStep, EmptyExpect, ExecStep, KillStep, PauseStep, PidExpect, PidsExpect,
    PidsStep, PingSandboxStep, PlatformExpect, ResizePtyStep, ResponseFields, ResumeStep,
    SandboxMetricsExpect, SandboxMetricsStep, SandboxPlatformStep, SandboxStatusExpect,
    SandboxStatusStep, Save, ShutdownSandboxStep, ShutdownStep, StartAnswerExpect,
    StartSandboxExpect, StartSandboxStep, StartStep, StateExpect, StateStep, StatsExpect,
    StatsStep, StopSandboxStep, UpdateStep, WaitExpect, WaitResultStep, WaitSandboxStep, WaitStep,
};
pub use signal::Signal;

/// How binding a scenario's verdict is (RFC 2119 words of the spec it checks).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    Serialize,
    JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// A MUST of the spec: an `unimplemented` answer fails the scenario.
    #[default]
    Must,
    /// A SHOULD: an `unimplemented` answer skips it.
    Should,
    /// A MAY: an `unimplemented` answer skips it.
    May,
}

impl Level {
    /// The lowercase name used in files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Must => "must",
            Level::Should => "should",
            Level::May => "may",
        }
    }
}

/// Something a shim may or may not support; unmet `requires` skip a scenario with the reason.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Task.Exec and exec processes.
    Exec,
    /// Task.Pause / Task.Resume.
    Pause,
    /// Task.Stats.
    Stats,
    /// Task.Pids.
    Pids,
    /// A terminal (pty) for the process and Task.ResizePty.
    Terminal,
    /// Task.Update.
    Update,
    /// Task.Checkpoint.
    Checkpoint,
    /// Feeding the process's stdin.
    Stdin,
    /// The process runs on the host (e.g. the reaper shim).
    HostProcess,
    /// The process runs in its own namespaces (e.g. runc).
    Isolated,
    /// Extension: several containers served by one shim (grouping annotation).
    Grouping,
    /// The shim Sandbox service (`containerd.runtime.sandbox.v1.Sandbox`), containerd 2.x.
    Sandbox,
}

impl Capability {
    /// Every capability, in declaration order.
    pub const ALL: [Capability; 12] = [
        Capability::Exec,
        Capability::Pause,
        Capability::Stats,
        Capability::Pids,
        Capability::Terminal,
        Capability::Update,
        Capability::Checkpoint,
        Capability::Stdin,
        Capability::HostProcess,
        Capability::Isolated,
        Capability::Grouping,
        Capability::Sandbox,
    ];

    /// The kebab-case name used in files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Exec => "exec",
            Capability::Pause => "pause",
            Capability::Stats => "stats",
            Capability::Pids => "pids",
            Capability::Terminal => "terminal",
            Capability::Update => "update",
            Capability::Checkpoint => "checkpoint",
            Capability::Stdin => "stdin",
            Capability::HostProcess => "host-process",
            Capability::Isolated => "isolated",
            Capability::Grouping => "grouping",
            Capability::Sandbox => "sandbox",
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One scenario file: one behaviour of a shim.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Scenario {
    /// What behaviour this scenario checks, in one sentence.
    pub description: String,
    /// must | should | may (default must).
    #[serde(default)]
    pub level: Level,
    /// URL of the requirement this scenario checks.
    #[serde(default)]
    pub reference: Option<String>,
    /// Capabilities the shim needs; unmet ones skip the scenario with the reason.
    #[serde(default)]
    pub requires: Vec<Capability>,
    /// The init process, as in an OCI spec's `process`.
    pub process: Process,
    /// Text fed to the init process's stdin.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Bound for the whole scenario (default 60s).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Extension: how `start` is run (containerd 2.3's `BootstrapParams`); a scenario with this
    /// key runs only under `--containerd-version 2.3` and is skipped, with the reason, otherwise.
    #[serde(default)]
    pub bootstrap: Option<BootstrapSpec>,
    /// The steps, run in order; each is a map with exactly one key.
    #[serde(with = "serde_yaml_ng::with::singleton_map_recursive")]
    #[schemars(with = "Vec<Step>")]
    pub steps: Vec<Step>,
}

/// `events`: checks the events received so far, waiting up to `timeout` for missing ones.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EventsStep {
    /// Topics or `{topic, fields}`, matched as an ordered subsequence.
    pub expect: Vec<EventMatch>,
    /// The events of this task must be exactly this sequence.
    #[serde(default)]
    pub exact: bool,
    /// Extension: topics that must not have been received for this task.
    #[serde(default)]
    pub forbid: Vec<String>,
    /// Extension: only consider events after those matched by this container's previous
    /// `events` step (for checks inside `repeat`).
    #[serde(default)]
    pub fresh: bool,
    /// How long to wait for missing events (default 10s).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Extension: whose events (default: the scenario's main container; `*` = all).
    #[serde(default)]
    pub container: Option<String>,
}

/// `output`: waits until the captured output matches.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutputStep {
    /// Whose output (default: the init process).
    #[serde(default)]
    pub exec_id: Option<String>,
    /// Matcher for stdout.
    #[serde(default)]
    pub stdout: Option<OutputMatch>,
    /// Matcher for stderr.
    #[serde(default)]
    pub stderr: Option<OutputMatch>,
    /// How long to wait (default 10s).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Extension: which container (default: the main one).
    #[serde(default)]
    pub container: Option<String>,
    /// Extension: `{variable: stdout|stderr}` stores the output captured once the matchers hold
    /// (e.g. to check later that a paused process printed nothing more).
    #[serde(default)]
    pub save: BTreeMap<String, Stream>,
}

/// An output stream, for `output` `save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Extension: `repeat` runs its steps `times` times; `${iteration}` is 1, 2, ...
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RepeatStep {
    /// How many iterations.
    pub times: u32,
    /// The steps of one iteration.
    pub steps: Vec<Step>,
}

/// Extension: `shim-alive` checks whether the shim server process is still running.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ShimAliveStep {
    /// `true`: it must be alive; `false`: it must have exited (waiting up to `timeout`).
    pub alive: bool,
    /// How long to wait for an exit (default 3s).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// With `alive: false`: the shim's socket file must be gone too.
    #[serde(default)]
    pub socket_removed: bool,
}

/// One step; each list item is a map with exactly one key.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Step {
    /// Task.Create.
    Create(CreateStep),
    /// Task.Start.
    Start(StartStep),
    /// Task.State.
    State(StateStep),
    /// Task.Kill.
    Kill(KillStep),
    /// Task.Wait.
    Wait(WaitStep),
    /// Extension: the answer of a background `wait`.
    WaitResult(WaitResultStep),
    /// Task.Delete.
    Delete(DeleteStep),
    /// Task.Exec.
    Exec(ExecStep),
    /// Task.Pids.
    Pids(PidsStep),
    /// Task.Pause.
    Pause(PauseStep),
    /// Task.Resume.
    Resume(ResumeStep),
    /// Task.Stats.
    Stats(StatsStep),
    /// Task.CloseIO.
    CloseIo(CloseIoStep),
    /// Task.ResizePty.
    ResizePty(ResizePtyStep),
    /// Task.Update.
    Update(UpdateStep),
    /// Task.Checkpoint (extension).
    Checkpoint(CheckpointStep),
    /// Task.Connect.
    Connect(ConnectStep),
    /// Task.Shutdown.
    Shutdown(ShutdownStep),
    /// Sandbox.CreateSandbox.
    CreateSandbox(CreateSandboxStep),
    /// Sandbox.StartSandbox.
    StartSandbox(StartSandboxStep),
    /// Sandbox.Platform.
    SandboxPlatform(SandboxPlatformStep),
    /// Sandbox.SandboxStatus.
    SandboxStatus(SandboxStatusStep),
    /// Sandbox.WaitSandbox.
    WaitSandbox(WaitSandboxStep),
    /// Sandbox.StopSandbox.
    StopSandbox(StopSandboxStep),
    /// Sandbox.PingSandbox.
    PingSandbox(PingSandboxStep),
    /// Sandbox.ShutdownSandbox.
    ShutdownSandbox(ShutdownSandboxStep),
    /// Sandbox.SandboxMetrics.
    SandboxMetrics(SandboxMetricsStep),
    /// Checks received events.
    Events(EventsStep),
    /// Waits for captured output to match.
    Output(OutputStep),
    /// Sleeps.
    Sleep(HumanDuration),
    /// Extension: repeats steps.
    Repeat(RepeatStep),
    /// Extension: checks the shim server process is (not) alive.
    ShimAlive(ShimAliveStep),
    /// Extension: sends a signal to the shim server process (e.g. to test the `delete` action
    /// after a shim died).
    KillShim(KillShimStep),
    /// Extension (fault): containerd restarts: its connections to the shims and its events
    /// endpoint go away, then it comes back on the same addresses and reconnects through each
    /// bundle's `address` file (Connect within 5s), as containerd's `loadShim` does.
    RestartContainerd(RestartContainerdStep),
    /// Extension (fault): the events endpoint at `TTRPC_ADDRESS` refuses connections (its
    /// socket is closed and removed) until `events-up`.
    EventsDown(EmptyStep),
    /// Extension (fault): the events endpoint listens again on the same address.
    EventsUp(EmptyStep),
    /// Extension (fault): the main init's stdout FIFO is not read for this long, starting now;
    /// later steps run meanwhile (e.g. `state` during the stall).
    StallStdout(HumanDuration),
    /// Extension (fault): signals a task's process from outside the shim, by the pid the shim
    /// reported (Create for the init, Start for an exec).
    KillProcess(KillProcessStep),
    /// Extension: checks what a container's `start` action answered (`format`, `version`,
    /// `protocol`, `address`).
    StartAnswer(StartAnswerStep),
    /// Extension: waits until the shim's `log` FIFO output (the lines so far, joined by
    /// newlines) matches.
    ShimLog(ShimLogStep),
}

/// A step without arguments (`events-down: {}`).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyStep {}

/// Extension: `restart-containerd` drops the mock's connections and endpoints, waits, and
/// reconnects as a restarted containerd does.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestartContainerdStep {
    /// How long containerd stays down after the `during` steps (default 500ms).
    #[serde(default)]
    pub downtime: Option<HumanDuration>,
    /// Steps run while containerd is down (only steps that need no connection: `kill-process`,
    /// `sleep`, `output`, `shim-alive`, `stall-stdout`).
    #[serde(default)]
    pub during: Vec<Step>,
    /// Bound of the reconnect and of the Connect call (default 5s, containerd's
    /// `io.containerd.timeout.shim.load`).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

/// Extension: `kill-process` signals a task's process by pid, from outside the shim.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KillProcessStep {
    /// The signal (default SIGKILL).
    #[serde(default = "sigkill")]
    pub signal: Signal,
    /// The exec whose process to signal (default: the init).
    #[serde(default)]
    pub exec_id: Option<String>,
    /// Which container (default: the main one).
    #[serde(default)]
    pub container: Option<String>,
}

/// Extension: `kill-shim` signals the main shim server process by pid and waits (up to 3s) for
/// it to die.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KillShimStep {
    /// The signal (default SIGKILL).
    #[serde(default = "sigkill")]
    pub signal: Signal,
}

fn sigkill() -> Signal {
    Signal(9)
}

impl Step {
    /// The step's key as written in files (`create`, `close-io`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Step::Create(_) => "create",
            Step::Start(_) => "start",
            Step::State(_) => "state",
            Step::Kill(_) => "kill",
            Step::Wait(_) => "wait",
            Step::WaitResult(_) => "wait-result",
            Step::Delete(_) => "delete",
            Step::Exec(_) => "exec",
            Step::Pids(_) => "pids",
            Step::Pause(_) => "pause",
            Step::Resume(_) => "resume",
            Step::Stats(_) => "stats",
            Step::CloseIo(_) => "close-io",
            Step::ResizePty(_) => "resize-pty",
            Step::Update(_) => "update",
            Step::Checkpoint(_) => "checkpoint",
            Step::Connect(_) => "connect",
            Step::Shutdown(_) => "shutdown",
            Step::CreateSandbox(_) => "create-sandbox",
            Step::StartSandbox(_) => "start-sandbox",
            Step::SandboxPlatform(_) => "sandbox-platform",
            Step::SandboxStatus(_) => "sandbox-status",
            Step::WaitSandbox(_) => "wait-sandbox",
            Step::StopSandbox(_) => "stop-sandbox",
            Step::PingSandbox(_) => "ping-sandbox",
            Step::ShutdownSandbox(_) => "shutdown-sandbox",
            Step::SandboxMetrics(_) => "sandbox-metrics",
            Step::Events(_) => "events",
            Step::Output(_) => "output",
            Step::Sleep(_) => "sleep",
            Step::Repeat(_) => "repeat",
            Step::ShimAlive(_) => "shim-alive",
            Step::KillShim(_) => "kill-shim",
            Step::RestartContainerd(_) => "restart-containerd",
            Step::EventsDown(_) => "events-down",
            Step::EventsUp(_) => "events-up",
            Step::StallStdout(_) => "stall-stdout",
            Step::KillProcess(_) => "kill-process",
            Step::StartAnswer(_) => "start-answer",
            Step::ShimLog(_) => "shim-log",
        }
    }

    /// The response fields a `save` of this step may name (empty for non-RPC steps).
    pub fn response_fields(&self) -> &'static [&'static str] {
        match self {
            Step::Create(_) | Step::Start(_) => PidExpect::FIELDS,
            Step::State(_) => StateExpect::FIELDS,
            Step::Wait(_) | Step::WaitResult(_) => WaitExpect::FIELDS,
            Step::Delete(_) => DeleteExpect::FIELDS,
            Step::Pids(_) => PidsExpect::FIELDS,
            Step::Stats(_) => StatsExpect::FIELDS,
            Step::Connect(_) => ConnectExpect::FIELDS,
            Step::StartSandbox(_) => StartSandboxExpect::FIELDS,
            Step::SandboxStatus(_) => SandboxStatusExpect::FIELDS,
            Step::WaitSandbox(_) => WaitExpect::FIELDS,
            Step::SandboxPlatform(_) => PlatformExpect::FIELDS,
            Step::SandboxMetrics(_) => SandboxMetricsExpect::FIELDS,
            _ => &[],
        }
    }

    /// The `save` map of an RPC step (empty otherwise).
    pub fn save(&self) -> Option<&BTreeMap<String, String>> {
        Some(match self {
            Step::Create(s) => &s.save.0,
            Step::Start(s) => &s.save.0,
            Step::State(s) => &s.save.0,
            Step::Kill(s) => &s.save.0,
            Step::Wait(s) => &s.save.0,
            Step::WaitResult(s) => &s.save.0,
            Step::Delete(s) => &s.save.0,
            Step::Exec(s) => &s.save.0,
            Step::Pids(s) => &s.save.0,
            Step::Pause(s) => &s.save.0,
            Step::Resume(s) => &s.save.0,
            Step::Stats(s) => &s.save.0,
            Step::CloseIo(s) => &s.save.0,
            Step::ResizePty(s) => &s.save.0,
            Step::Update(s) => &s.save.0,
            Step::Checkpoint(s) => &s.save.0,
            Step::Connect(s) => &s.save.0,
            Step::Shutdown(s) => &s.save.0,
            Step::CreateSandbox(s) => &s.save.0,
            Step::StartSandbox(s) => &s.save.0,
            Step::SandboxPlatform(s) => &s.save.0,
            Step::SandboxStatus(s) => &s.save.0,
            Step::WaitSandbox(s) => &s.save.0,
            Step::StopSandbox(s) => &s.save.0,
            Step::PingSandbox(s) => &s.save.0,
            Step::ShutdownSandbox(s) => &s.save.0,
            Step::SandboxMetrics(s) => &s.save.0,
            _ => return None,
        })
    }

    /// The capability an `unimplemented` answer to this step reveals as absent.
    pub fn capability(&self) -> Option<Capability> {
        match self {
            Step::Exec(_) => Some(Capability::Exec),
            Step::Pause(_) | Step::Resume(_) => Some(Capability::Pause),
            Step::Stats(_) => Some(Capability::Stats),
            Step::Pids(_) => Some(Capability::Pids),
            Step::ResizePty(_) => Some(Capability::Terminal),
            Step::Update(_) => Some(Capability::Update),
            Step::Checkpoint(_) => Some(Capability::Checkpoint),
            Step::CloseIo(_) => Some(Capability::Stdin),
            s if s.is_sandbox_call() => Some(Capability::Sandbox),
            _ => None,
        }
    }

    /// The pod a Sandbox step names: `Some(None)` for the default (`main`), `None` when the
    /// step is not a Sandbox call.
    pub fn sandbox_id(&self) -> Option<Option<&str>> {
        let id = match self {
            Step::CreateSandbox(s) => &s.sandbox_id,
            Step::StartSandbox(s) => &s.sandbox_id,
            Step::SandboxPlatform(s) => &s.sandbox_id,
            Step::SandboxStatus(s) => &s.sandbox_id,
            Step::WaitSandbox(s) => &s.sandbox_id,
            Step::StopSandbox(s) => &s.sandbox_id,
            Step::PingSandbox(s) => &s.sandbox_id,
            Step::ShutdownSandbox(s) => &s.sandbox_id,
            Step::SandboxMetrics(s) => &s.sandbox_id,
            _ => return None,
        };
        Some(id.as_deref())
    }

    /// Whether this step calls the Sandbox service.
    pub fn is_sandbox_call(&self) -> bool {
        self.sandbox_id().is_some()
    }
}

/// The JSON Schema of a scenario file (what `harness schema` prints).
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Scenario);
    serde_json::to_value(&schema).unwrap_or(serde_json::Value::Null)
}
