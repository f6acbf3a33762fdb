//! The format's containerd 2.3 bootstrap: a scenario's `bootstrap:` key (what the main `start`
//! gets in its `BootstrapParams` and how it must end), the `start-answer` and `shim-log` steps.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{matcher, HumanDuration, OutputMatch, StartAnswerExpect};

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
