//! The RPC steps of the format: one struct per Task RPC (`create`, `start`, `state`, ...) with
//! its `expect`, `expect-error`, `save` and `timeout`, and the expect structs naming the response
//! fields each can match and save.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{ExpectError, HumanDuration, Matcher, Process, Signal, StdioKind};

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

expect_struct!(
    /// Fields of StartSandboxResponse.
    StartSandboxExpect { pid = "pid", created_at = "created-at" }
);
expect_struct!(
    /// Fields of SandboxStatusResponse (`state`: the shim's own words, e.g. `SANDBOX_READY`).
    SandboxStatusExpect {
        sandbox_id = "sandbox-id",
        pid = "pid",
        state = "state",
        created_at = "created-at",
        exited_at = "exited-at",
    }
);
expect_struct!(
    /// Fields of PlatformResponse.
    PlatformExpect { os = "os", architecture = "architecture", variant = "variant" }
);
expect_struct!(
    /// Fields of SandboxMetricsResponse: the metric's `id` and the type URL of its `data`.
    SandboxMetricsExpect { id = "id", data = "data" }
);

rpc_step!(
    /// Sandbox.CreateSandbox: the bundle is the main container's, no rootfs, no options.
    CreateSandboxStep, EmptyExpect {
        /// The sandbox id (default: the id the shim was started for, `main`).
        #[serde(default)] sandbox_id: Option<String>,
        /// The network namespace path (default none: a host pod).
        #[serde(default)] netns_path: Option<String>,
        /// Annotations.
        #[serde(default)] annotations: BTreeMap<String, String>,
    }
);
rpc_step!(
    /// Sandbox.StartSandbox.
    StartSandboxStep, StartSandboxExpect {
        /// The sandbox id (default `main`).
        #[serde(default)] sandbox_id: Option<String>,
    }
);
rpc_step!(
    /// Sandbox.Platform.
    SandboxPlatformStep, PlatformExpect {
        /// The sandbox id (default `main`).
        #[serde(default)] sandbox_id: Option<String>,
    }
);
rpc_step!(
    /// Sandbox.SandboxStatus.
    SandboxStatusStep, SandboxStatusExpect {
        /// The sandbox id (default `main`).
        #[serde(default)] sandbox_id: Option<String>,
        /// Ask for the verbose `info`.
        #[serde(default)] verbose: bool,
    }
);
rpc_step!(
    /// Sandbox.WaitSandbox.
    WaitSandboxStep, WaitExpect {
        /// The sandbox id (default `main`).
        #[serde(default)] sandbox_id: Option<String>,
    }
);
rpc_step!(
    /// Sandbox.StopSandbox.
    StopSandboxStep, EmptyExpect {
        /// The sandbox id (default `main`).
        #[serde(default)] sandbox_id: Option<String>,
        /// The grace period in seconds (0: the shim's default).
        #[serde(default)] timeout_secs: u32,
    }
);
rpc_step!(
    /// Sandbox.PingSandbox.
    PingSandboxStep, EmptyExpect {
        /// The sandbox id (default `main`).
        #[serde(default)] sandbox_id: Option<String>,
    }
);
rpc_step!(
    /// Sandbox.ShutdownSandbox.
    ShutdownSandboxStep, EmptyExpect {
        /// The sandbox id (default `main`).
        #[serde(default)] sandbox_id: Option<String>,
        /// Extension: after the reply, the shim server must exit within `exits-within`
        /// (`true`) or stay alive for that long (`false`).
        #[serde(default)] exits: Option<bool>,
        /// Extension: how long to watch the server for `exits` (default 3s).
        #[serde(default)] exits_within: Option<HumanDuration>,
    }
);
rpc_step!(
    /// Sandbox.SandboxMetrics.
    SandboxMetricsStep, SandboxMetricsExpect {
        /// The sandbox id (default `main`).
        #[serde(default)] sandbox_id: Option<String>,
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

expect_struct!(
    /// Fields of a `start` answer: `format` is `protobuf` (a `BootstrapResult`), `json` (the
    /// JSON bootstrap, version 2 or more) or `bare` (an address alone); `version` the shim API
    /// version the daemon takes from it (2 or 3); `protocol` (`ttrpc`); `address`.
    StartAnswerExpect { format = "format", version = "version", protocol = "protocol", address = "address" }
);
