//! The scenario format: strict serde structs for `scenarios/<group>/<name>.yaml` (the public
//! contract in docs/scenario-format.md plus the extensions in docs/scenario-extensions.md), the
//! loader that names `file:line:col` on every error, the JSON Schema and the `--profile` file.

mod duration;
pub mod embedded;
mod load;
mod matcher;
mod signal;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use duration::HumanDuration;
pub use load::{
    discover, load_embedded, load_file, load_str, Filter, LoadError, Loaded, Profile, Source,
};
pub use matcher::{
    abbreviate, expand, loose_eq, match_events, parse_time, ErrorCode, EventMatch, EventMatchFull,
    ExpectError, MatchOps, Matcher, OutputMatch,
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
}

impl Capability {
    /// Every capability, in declaration order.
    pub const ALL: [Capability; 11] = [
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

/// Extension: what the mock puts in the main container's `BootstrapParams` (containerd 2.3,
/// pkg/shim/util.go `Command` v2.3.4) beyond what it always sends, and how `start` must end.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BootstrapSpec {
    /// Send `socket_dir`: a fresh directory of the scenario's own (`${socket-dir}`), as a
    /// runtime's `socket_dir` setting does.
    #[serde(default)]
    pub socket_dir: bool,
    /// The `log_level` sent, independent of the legacy `-debug` flag (which stays off).
    #[serde(default)]
    pub log_level: Option<BootstrapLogLevel>,
    /// Extensions appended after the runtime options (unknown type URLs a shim must ignore).
    #[serde(default)]
    pub extensions: Vec<ExtensionSpec>,
    /// `instance_id` instead of the container id (disagreeing with `-id`).
    #[serde(default)]
    pub instance_id: Option<String>,
    /// `namespace` instead of the scenario's namespace (disagreeing with `-namespace`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// `whole` (default) or `cut`: only the first half of the message, then end of input.
    #[serde(default)]
    pub stdin: BootstrapStdin,
    /// How the main container's `start` must end: `works` (default), `refused` (non-zero exit
    /// or an answer the daemon cannot use; the steps are then not run) or `any` (either, as
    /// long as it ends within the start timeout and leaves nothing behind).
    #[serde(default)]
    pub start: StartOutcome,
}

/// A `BootstrapParams.log_level` by name (containerd.runtime.bootstrap.v1.LogLevel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BootstrapLogLevel {
    /// LOG_LEVEL_TRACE.
    Trace,
    /// LOG_LEVEL_DEBUG.
    Debug,
    /// LOG_LEVEL_INFO.
    Info,
    /// LOG_LEVEL_WARN.
    Warn,
    /// LOG_LEVEL_ERROR.
    Error,
    /// LOG_LEVEL_FATAL.
    Fatal,
    /// LOG_LEVEL_PANIC.
    Panic,
}

/// One extra `BootstrapParams` extension: an `Any` of this type URL with `size` bytes of value.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExtensionSpec {
    /// The `Any`'s type URL.
    pub type_url: String,
    /// The value's length in bytes (filled with a repeating pattern; default 0).
    #[serde(default)]
    pub size: usize,
}

/// How much of the `BootstrapParams` message the shim's stdin carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BootstrapStdin {
    /// The whole message, then end of input.
    #[default]
    Whole,
    /// The first half of it, then end of input.
    Cut,
}

/// How a scenario's main `start` must end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StartOutcome {
    /// It answers an address the mock connects to.
    #[default]
    Works,
    /// It fails (non-zero exit, or an answer that cannot be used).
    Refused,
    /// Either.
    Any,
}

/// An OCI `process` (the subset the harness sets; the rest comes from containerd's default spec).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Process {
    /// argv; the first element is looked up in PATH.
    pub args: Vec<String>,
    /// `KEY=value` strings (default: containerd's default PATH).
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Working directory (default `/`).
    #[serde(default)]
    pub cwd: Option<String>,
    /// User to run as (default root).
    #[serde(default)]
    pub user: Option<User>,
    /// Allocate a terminal for the process.
    #[serde(default)]
    pub terminal: Option<bool>,
}

impl Process {
    /// The OCI process spec of this scenario process: containerd's defaults
    /// ([`crate::bundle::process`]) with the scenario's args, env, cwd and user, and `terminal`.
    pub fn to_oci(&self, terminal: bool) -> oci_spec::runtime::Process {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut op = crate::bundle::process(&args);
        if let Some(env) = &self.env {
            op.set_env(Some(env.clone()));
        }
        if let Some(cwd) = &self.cwd {
            op.set_cwd(cwd.into());
        }
        if let Some(u) = &self.user {
            let mut user = oci_spec::runtime::User::default();
            user.set_uid(u.uid);
            user.set_gid(u.gid);
            if !u.additional_gids.is_empty() {
                user.set_additional_gids(Some(u.additional_gids.clone()));
            }
            op.set_user(user);
        }
        op.set_terminal(Some(terminal));
        op
    }
}

/// An OCI `process.user`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct User {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
    /// Supplementary group ids.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// Where a stdio stream of a task or exec goes. YAML's `null` (unquoted) means `null` too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StdioKind {
    /// A FIFO created and opened by the harness, as containerd's `cio` does (default).
    #[default]
    Fifo,
    /// No stream: the empty string is sent.
    Null,
    /// A `file:///abs/path` URI; the harness reads the file afterwards.
    File,
}

impl From<StdioKind> for crate::stdio::StdioMode {
    fn from(k: StdioKind) -> Self {
        match k {
            StdioKind::Fifo => crate::stdio::StdioMode::Fifo,
            StdioKind::Null => crate::stdio::StdioMode::Null,
            StdioKind::File => crate::stdio::StdioMode::File,
        }
    }
}

/// The response fields of an RPC step (kebab-case protobuf names), for `save` validation.
pub trait ResponseFields {
    /// Field names.
    const FIELDS: &'static [&'static str];
}

/// `save: {variable: response-field}`; the field names are checked against the response type.
#[derive(Debug, Clone)]
pub struct Save<E>(pub BTreeMap<String, String>, std::marker::PhantomData<E>);

impl<E> Default for Save<E> {
    fn default() -> Self {
        Save(BTreeMap::new(), std::marker::PhantomData)
    }
}

impl<'de, E: ResponseFields> Deserialize<'de> for Save<E> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(d)?;
        for (var, field) in &map {
            if !E::FIELDS.contains(&field.as_str()) {
                let expected = if E::FIELDS.is_empty() {
                    "this call's response has no fields".to_string()
                } else {
                    format!("expected one of {}", E::FIELDS.join(", "))
                };
                return Err(serde::de::Error::custom(format!(
                    "save `{var}`: unknown response field `{field}`; {expected}"
                )));
            }
        }
        Ok(Save(map, std::marker::PhantomData))
    }
}

impl<E: ResponseFields> JsonSchema for Save<E> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Save_{}", E::FIELDS.join("_")).into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "{variable: response-field}",
            "additionalProperties": {"type": "string", "enum": E::FIELDS}
        })
    }
}

impl<'de> Deserialize<'de> for StdioKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = StdioKind;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("one of `fifo`, `null`, `file`")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<StdioKind, E> {
                Ok(StdioKind::Null)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StdioKind, E> {
                match v {
                    "fifo" => Ok(StdioKind::Fifo),
                    "null" | "" => Ok(StdioKind::Null),
                    "file" => Ok(StdioKind::File),
                    other => Err(E::custom(format!(
                        "unknown stdio kind `{other}`, expected one of `fifo`, `null`, `file`"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

macro_rules! expect_struct {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident = $key:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $( $(#[$fm])* #[serde(default, rename = $key)] pub $f: Option<Matcher>, )*
        }
        impl ResponseFields for $name {
            const FIELDS: &'static [&'static str] = &[$($key),*];
        }
        impl $name {
            /// The response field names (kebab-case protobuf names) this response has.
            pub const FIELDS: &'static [&'static str] = &[$($key),*];
            /// The matchers given, with their field names, in declaration order.
            pub fn matchers(&self) -> Vec<(&'static str, &Matcher)> {
                #[allow(unused_mut)]
                let mut v = Vec::new();
                $( if let Some(m) = &self.$f { v.push(($key, m)); } )*
                v
            }
        }
    };
}

expect_struct!(
    /// Fields of a response carrying only a pid (Create, Start).
    PidExpect { pid = "pid" }
);
expect_struct!(
    /// Fields of StateResponse.
    StateExpect {
        /// Container id (or exec id for an exec).
        id = "id",
        /// Bundle path.
        bundle = "bundle",
        /// Process id.
        pid = "pid",
        /// `unknown`, `created`, `running`, `stopped`, `paused`, `pausing`.
        status = "status",
        /// Echoed stdin path.
        stdin = "stdin",
        /// Echoed stdout path.
        stdout = "stdout",
        /// Echoed stderr path.
        stderr = "stderr",
        /// Terminal flag.
        terminal = "terminal",
        /// Exit status.
        exit_status = "exit-status",
        /// Exit time (RFC 3339; `null` when unset or the zero time).
        exited_at = "exited-at",
        /// Exec id.
        exec_id = "exec-id",
    }
);
expect_struct!(
    /// Fields of DeleteResponse.
    DeleteExpect { pid = "pid", exit_status = "exit-status", exited_at = "exited-at" }
);
expect_struct!(
    /// Fields of WaitResponse.
    WaitExpect { exit_status = "exit-status", exited_at = "exited-at" }
);
expect_struct!(
    /// Fields of PidsResponse: `processes` is a list of pids; `count` its length.
    PidsExpect { processes = "processes", count = "count" }
);
expect_struct!(
    /// Fields of StatsResponse: `stats` is the type URL of the metrics `Any`; `stats-size` its byte size.
    StatsExpect { stats = "stats", stats_size = "stats-size" }
);
expect_struct!(
    /// Fields of ConnectResponse.
    ConnectExpect { shim_pid = "shim-pid", task_pid = "task-pid", version = "version" }
);
expect_struct!(
    /// An empty response (google.protobuf.Empty): no fields.
    EmptyExpect {}
);

macro_rules! rpc_step {
    ($(#[$m:meta])* $name:ident, $expect:ty { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct $name {
            $( $(#[$fm])* pub $f: $t, )*
            /// Response fields that must match (kebab-case protobuf names).
            #[serde(default)]
            pub expect: Option<$expect>,
            /// The call must fail with this code (or one of these codes, or `any`).
            #[serde(default)]
            pub expect_error: Option<ExpectError>,
            /// Extension: with `expect-error`, a successful answer is acceptable too (only the
            /// kind of error is checked).
            #[serde(default)]
            pub allow_success: bool,
            /// Bound for this call (default 10s).
            #[serde(default)]
            pub timeout: Option<HumanDuration>,
            /// `{variable: response-field}`: stores a response field for `${variable}` later.
            #[serde(default)]
            pub save: Save<$expect>,
            /// Extension: which container this call targets (default: the scenario's main one).
            #[serde(default)]
            pub container: Option<String>,
        }
    };
}

rpc_step!(
    /// Task.Create.
    CreateStep, PidExpect {
        /// Allocate a terminal (default: the process's `terminal`).
        #[serde(default)] terminal: Option<bool>,
        /// stdin: `fifo` (default), `null` or `file`.
        #[serde(default)] stdin: StdioKind,
        /// stdout: `fifo` (default), `null` or `file`.
        #[serde(default)] stdout: StdioKind,
        /// stderr: `fifo` (default), `null` or `file`.
        #[serde(default)] stderr: StdioKind,
        /// Extension: the process of this container (default: the scenario's `process`).
        #[serde(default)] process: Option<Process>,
        /// Extension: text fed to this container's stdin (default: the scenario's `stdin`).
        #[serde(default)] stdin_data: Option<String>,
    }
);
rpc_step!(
    /// Task.Start.
    StartStep, PidExpect {
        /// Exec id (empty = init).
        #[serde(default)] exec_id: Option<String>,
    }
);
rpc_step!(
    /// Task.State.
    StateStep, StateExpect {
        /// Exec id (empty = init).
        #[serde(default)] exec_id: Option<String>,
    }
);
rpc_step!(
    /// Task.Kill.
    KillStep, EmptyExpect {
        /// Signal name (`SIGTERM`, `TERM`) or number.
        signal: Signal,
        /// Signal every process of the container.
        #[serde(default)] all: bool,
        /// Exec id (empty = init).
        #[serde(default)] exec_id: Option<String>,
    }
);
rpc_step!(
    /// Task.Wait.
    WaitStep, WaitExpect {
        /// Exec id (empty = init).
        #[serde(default)] exec_id: Option<String>,
        /// Extension: send the call in the background and collect its answer at a later
        /// `wait-result` step with the same `handle`.
        #[serde(default)] background: Option<String>,
    }
);
rpc_step!(
    /// Extension: collects the answer of a `wait` sent with `background: NAME`.
    WaitResultStep, WaitExpect {
        /// The `background` name of the earlier `wait`.
        handle: String,
        /// Extension: the answer must not have arrived yet (checked without waiting).
        #[serde(default)] pending: bool,
    }
);
rpc_step!(
    /// Task.Delete.
    DeleteStep, DeleteExpect {
        /// Exec id (empty = init).
        #[serde(default)] exec_id: Option<String>,
    }
);
rpc_step!(
    /// Task.Exec.
    ExecStep, EmptyExpect {
        /// The exec id (required).
        exec_id: String,
        /// The exec's process (required).
        process: Process,
        /// Allocate a terminal (default: the process's `terminal`).
        #[serde(default)] terminal: Option<bool>,
        /// stdin: `fifo` (default), `null` or `file`.
        #[serde(default)] stdin: StdioKind,
        /// stdout: `fifo` (default), `null` or `file`.
        #[serde(default)] stdout: StdioKind,
        /// stderr: `fifo` (default), `null` or `file`.
        #[serde(default)] stderr: StdioKind,
        /// Extension: text fed to the exec's stdin.
        #[serde(default)] stdin_data: Option<String>,
    }
);
rpc_step!(
    /// Task.Pids.
    PidsStep, PidsExpect {}
);
rpc_step!(
    /// Task.Pause.
    PauseStep, EmptyExpect {}
);
rpc_step!(
    /// Task.Resume.
    ResumeStep, EmptyExpect {}
);
rpc_step!(
    /// Task.Stats.
    StatsStep, StatsExpect {}
);
rpc_step!(
    /// Task.CloseIO.
    CloseIoStep, EmptyExpect {
        /// Exec id (empty = init).
        #[serde(default)] exec_id: Option<String>,
        /// Close stdin (default true).
        #[serde(default = "yes")] stdin: bool,
        /// Extension: close the harness's own write end of the stdin FIFO first, as containerd's
        /// client does (default true).
        #[serde(default = "yes")] client_close: bool,
    }
);
rpc_step!(
    /// Task.ResizePty.
    ResizePtyStep, EmptyExpect {
        /// Exec id (empty = init).
        #[serde(default)] exec_id: Option<String>,
        /// Columns (default 80).
        #[serde(default = "cols")] width: u32,
        /// Rows (default 24).
        #[serde(default = "rows")] height: u32,
    }
);
rpc_step!(
    /// Task.Update.
    UpdateStep, EmptyExpect {
        /// OCI LinuxResources as a map (sent as JSON in an `Any`).
        #[serde(default)] resources: Option<serde_json::Value>,
        /// Annotations.
        #[serde(default)] annotations: BTreeMap<String, String>,
    }
);
rpc_step!(
    /// Task.Checkpoint (extension).
    CheckpointStep, EmptyExpect {
        /// Checkpoint directory (default: a temp dir of the scenario).
        #[serde(default)] path: Option<String>,
    }
);
rpc_step!(
    /// Task.Connect.
    ConnectStep, ConnectExpect {}
);
rpc_step!(
    /// Task.Shutdown.
    ShutdownStep, EmptyExpect {
        /// Shut down now.
        #[serde(default)] now: bool,
        /// Extension: after the reply, the shim server must exit within `exits-within`
        /// (`true`) or stay alive for that long (`false`).
        #[serde(default)] exits: Option<bool>,
        /// Extension: how long to watch the server for `exits` (default 3s).
        #[serde(default)] exits_within: Option<HumanDuration>,
    }
);

fn yes() -> bool {
    true
}
fn cols() -> u32 {
    80
}
fn rows() -> u32 {
    24
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

expect_struct!(
    /// Fields of a `start` answer: `format` is `protobuf` (a `BootstrapResult`), `json` (the
    /// JSON bootstrap, version 2 or more) or `bare` (an address alone); `version` the shim API
    /// version the daemon takes from it (2 or 3); `protocol` (`ttrpc`); `address`.
    StartAnswerExpect { format = "format", version = "version", protocol = "protocol", address = "address" }
);

/// Extension: `start-answer` checks the answer of a container's `start` action.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StartAnswerStep {
    /// Which container's `start` (default: the main one).
    #[serde(default)]
    pub container: Option<String>,
    /// Matchers of the answer's fields.
    pub expect: StartAnswerExpect,
}

/// Extension: `shim-log` waits for the shim's log output to match.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ShimLogStep {
    /// Which container's shim (default: the main one).
    #[serde(default)]
    pub container: Option<String>,
    /// The log contains this text.
    #[serde(default)]
    pub contains: Option<String>,
    /// The log does not contain this text (checked once the other matchers hold).
    #[serde(default)]
    pub not_contains: Option<String>,
    /// The log matches this regex (e.g. `(?i)level=debug`).
    #[serde(default, deserialize_with = "matcher::regex_checked")]
    pub matches: Option<String>,
    /// How long to wait (default 10s).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

impl ShimLogStep {
    /// The matchers as an [`OutputMatch`].
    pub fn matcher(&self) -> OutputMatch {
        OutputMatch {
            contains: self.contains.clone(),
            not_contains: self.not_contains.clone(),
            matches: self.matches.clone(),
            ..OutputMatch::default()
        }
    }
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
            _ => None,
        }
    }
}

/// The JSON Schema of a scenario file (what `harness schema` prints).
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Scenario);
    serde_json::to_value(&schema).unwrap_or(serde_json::Value::Null)
}
