//! The harness library: a mock containerd that launches any shim and drives it over TTRPC.

pub mod dialect;
pub mod error;
pub mod events;
pub mod timeouts;
pub mod bundle;
pub mod leaks;
pub mod stdio;
pub mod client;
pub mod delete;
pub mod launch;
pub mod publish;
pub mod redact;
pub mod scenario;
pub mod report;
pub mod engine;
