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
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use harness::bundle::{process, Bundle, BundleOptions, RootfsKind};
//! use harness::launch::{LaunchOptions, MockConfig, MockContainerd};
//! use harness::stdio::{StdioOptions, StdioSet};
//!
//! let mock = MockContainerd::new(MockConfig::default()).await?; // dialect 2.0
//! let opts = BundleOptions { rootfs: RootfsKind::Busybox, ..Default::default() };
//! let bundle = Bundle::create(&mock.bundle_parent(), "c1", process(&["echo", "hi"]), opts)?;
//! let stdio = StdioSet::create(&mock.state_dir().join("fifo"), "c1", StdioOptions::default())?;
//! let shim = mock
//!     .launch("/usr/bin/containerd-shim-runc-v2".as_ref(), &bundle, LaunchOptions::default())
//!     .await?;
//! let req = bundle.create_request(stdio.paths(), false, None);
//! let created = shim.client().create(req, Duration::from_secs(10)).await?;
//! assert!(created.pid > 0);
//! let report = shim.close().await; // delete action, synthetic events, leak check
//! assert!(report.leaks.is_empty());
//! # Ok(()) }
//! ```

pub mod bundle;
pub mod client;
pub mod compare;
pub mod cri;
pub mod delete;
pub mod dialect;
#[cfg(feature = "containerd")]
pub mod differential;
pub mod engine;
pub mod error;
pub mod events;
pub mod launch;
pub mod leaks;
pub mod matrix;
pub mod pidguard;
pub mod procfs;
pub mod provenance;
pub mod publish;
pub mod record;
pub mod redact;
pub mod report;
pub mod scenario;
pub mod shell;
pub mod stdio;
pub mod stress;
pub mod timeouts;
pub mod wire;
