//! The harness library: a mock containerd that launches any shim and drives it over TTRPC.
//!
//! The core (this crate's library) is a faithful mock containerd for runtime-v2 shims:
//! - [`launch::MockContainerd`] launches a shim per containerd [`dialect::Dialect`] (argv, env,
//!   stdin, cwd, `log` FIFO, combined start output), serves the events endpoint ([`events`]) and
//!   the legacy publish route ([`publish`]);
//! - [`client::TaskClient`] sends every Task RPC (v2 or v3) with bounds and typed errors;
//! - [`launch::Shim::close`] runs the `delete` action ([`delete`]), publishes containerd's
//!   synthetic exit/delete events and checks for leftovers ([`leaks`]);
//! - [`bundle`] and [`stdio`] build bundles and cio-style stdio; [`redact`] stabilises output.

pub mod bundle;
pub mod client;
pub mod delete;
pub mod dialect;
pub mod engine;
pub mod error;
pub mod events;
pub mod launch;
pub mod leaks;
pub mod publish;
pub mod redact;
pub mod report;
pub mod scenario;
pub mod stdio;
pub mod timeouts;
