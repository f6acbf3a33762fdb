//! The bounds on every wait the mock performs (start, connect, each RPC, delete action, shutdown).

use std::time::Duration;

/// Bounds on the mock's waits. Defaults: start 10s, connect 5s, rpc 10s, delete action 5s,
/// shutdown (server exit after the connection closes) 3s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The `start` action must exit and close its output within this.
    pub start: Duration,
    /// Dialing the printed address.
    pub connect: Duration,
    /// Default bound for one task RPC.
    pub rpc: Duration,
    /// The `delete` action (containerd's `io.containerd.timeout.shim.cleanup` is 5s).
    pub delete_action: Duration,
    /// How long the server may take to exit after the connection is closed.
    pub shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            start: Duration::from_secs(10),
            connect: Duration::from_secs(5),
            rpc: Duration::from_secs(10),
            delete_action: Duration::from_secs(5),
            shutdown: Duration::from_secs(3),
        }
    }
}
