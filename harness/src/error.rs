//! Typed errors of the harness library: one enum per failure domain (setup, launch, address).

use std::path::PathBuf;
use std::time::Duration;

/// A failure preparing the mock containerd's own resources (temp dirs, sockets, bundles, FIFOs).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A filesystem or OS call failed; `what` names the operation and its target.
    #[error("{what}: {source}")]
    Io {
        /// The operation and the path it was applied to.
        what: String,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },
    /// A ttrpc endpoint of the mock could not be set up.
    #[error("events endpoint at {address}: {message}")]
    Endpoint {
        /// The socket address.
        address: String,
        /// What went wrong.
        message: String,
    },
    /// The OCI spec could not be built or written.
    #[error("bundle {id}: {message}")]
    Spec {
        /// The container id of the bundle.
        id: String,
        /// What went wrong.
        message: String,
    },
    /// A caller-supplied value is not usable.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The offending field or argument.
        field: String,
        /// Why it was rejected.
        message: String,
    },
    /// A prerequisite on the host is missing.
    #[error("missing prerequisite {what}: {hint}")]
    Prerequisite {
        /// What is missing (e.g. `/bin/busybox`).
        what: String,
        /// The set-up command that provides it.
        hint: String,
    },
}

impl HarnessError {
    /// Wraps an I/O error with the operation it came from.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        HarnessError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Why a dialect could not use the output of a shim's `start` action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// `start` printed nothing (after trimming).
    #[error("start printed nothing: containerd would dial an empty address")]
    Empty,
    /// containerd 1.6 only accepts a bare address; JSON is dialed as a path.
    #[error("start printed a JSON bootstrap; containerd 1.6 dials it as a path: {output}")]
    JsonOn16 {
        /// The combined, trimmed output.
        output: String,
    },
    /// The JSON bootstrap names a version this dialect does not implement.
    #[error("unsupported shim version ({version}): not implemented")]
    UnsupportedVersion {
        /// The `version` field printed by the shim.
        version: i64,
    },
    /// The JSON bootstrap asks for a protocol the harness cannot dial.
    #[error("unsupported shim protocol {protocol:?}: the harness speaks ttrpc only")]
    UnsupportedProtocol {
        /// The `protocol` field printed by the shim.
        protocol: String,
    },
    /// The output cannot be an address (spaces, control characters, several lines...).
    #[error("start output is not an address: {output:?}")]
    NotAnAddress {
        /// The combined, trimmed output.
        output: String,
    },
    /// containerd dials only `ttrpc` and `grpc` (core/runtime/v2/shim.go `makeConnection` v2.3.4,
    /// the same in 1.7.24 and 2.1.9); an empty protocol, in a protobuf or JSON answer, too.
    #[error("unexpected protocol: {protocol:?}")]
    UnexpectedProtocol {
        /// The `protocol` field of the answer.
        protocol: String,
    },
    /// A protobuf `BootstrapResult` whose version is neither 2 nor 3: containerd 2.3 starts the
    /// shim but cannot make a task client for it (core/runtime/v2/bridge.go `NewTaskClient` v2.3.4).
    #[error("containerd client supports only v2 and v3 TTRPC task client (got {version})")]
    UnsupportedTaskClient {
        /// The `version` field of the answer.
        version: i32,
    },
    /// containerd 2.3 could read the output neither way: why each reading failed.
    #[error(
        "start output is neither a protobuf BootstrapResult ({protobuf}) nor a JSON bootstrap \
         ({json}) nor an address: {output:?}"
    )]
    Unreadable {
        /// Why it is not a protobuf `BootstrapResult`.
        protobuf: String,
        /// Why it is not a JSON bootstrap of version 2 or more.
        json: String,
        /// The combined, trimmed output (lossily decoded).
        output: String,
    },
}

/// A failure launching a shim (the `start` handshake and the first connection).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The shim binary does not exist or is not executable.
    #[error("shim {path}: {message}")]
    Binary {
        /// The path that was given.
        path: PathBuf,
        /// Why it cannot be run.
        message: String,
    },
    /// The harness could not prepare the launch (log FIFO, stdin file...).
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// `start` could not be spawned.
    #[error("spawning {path} start: {source}")]
    Spawn {
        /// The shim path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `start` exited non-zero (message as containerd words it).
    #[error("start failed: {output}: exit status {status}")]
    StartFailed {
        /// Combined and trimmed stdout+stderr of `start`.
        output: String,
        /// The exit status (128+signal when killed).
        status: i32,
    },
    /// `start` did not exit (or kept its output open) within the start timeout.
    #[error("start did not finish within {timeout:?} (output so far: {output:?}); its process group was killed")]
    StartTimeout {
        /// The bound that expired.
        timeout: Duration,
        /// What it had printed so far.
        output: String,
    },
    /// The dialect cannot use the start output.
    #[error("{reason}; leaked servers ended: {killed:?}")]
    Address {
        /// Why the output is unusable.
        reason: AddressError,
        /// Pids of servers found listening on the printed/`address` socket and killed.
        killed: Vec<i32>,
    },
    /// Dialing the address failed or timed out.
    #[error("connecting to {address}: {message}; leaked servers ended: {killed:?}")]
    Connect {
        /// The address printed by `start`.
        address: String,
        /// What went wrong.
        message: String,
        /// Pids of servers found listening on that socket and killed.
        killed: Vec<i32>,
    },
}

impl LaunchError {
    /// A short kebab-case class for reports (`start-failed`, `address`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            LaunchError::Binary { .. } => "binary",
            LaunchError::Harness(_) => "harness",
            LaunchError::Spawn { .. } => "spawn",
            LaunchError::StartFailed { .. } => "start-failed",
            LaunchError::StartTimeout { .. } => "start-timeout",
            LaunchError::Address { .. } => "address",
            LaunchError::Connect { .. } => "connect",
        }
    }
}
