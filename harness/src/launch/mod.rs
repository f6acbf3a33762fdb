//! The mock containerd: one per scenario, owning a temp state dir, the events endpoint at
//! `<tmp>/c.sock.ttrpc` and the publish endpoint at `<tmp>/c.sock`; it launches shims exactly as
//! the chosen containerd version does (doc 2: argv, env, stdin, cwd, `log` FIFO, combined and
//! trimmed output, setpgid), and closes them as containerd does (doc 2.10: close, `delete`
//! action, synthetic exit/delete events, then the harness's own leak check).
//!
//! Fidelity, in short (protocol doc sections in brackets):
//! - argv, env (`GOMAXPROCS=2`, `TTRPC_ADDRESS`; from 1.7 `MAX_SHIM_VERSION=2`, `GRPC_ADDRESS`,
//!   `NAMESPACE`), stdin (options `Any` or /dev/null; for 2.3 a protobuf `BootstrapParams`),
//!   cwd = bundle, `setpgid`, the `log` FIFO opened O_RDWR|O_NONBLOCK before `start` and
//!   drained for the shim's life, start output combined (and trimmed, before 2.3), address read
//!   per dialect [0, 2.1–2.9];
//! - `shim-binary-path` (and, for 2.x, `bootstrap.json`) written into the bundle after start;
//! - task requests carry `containerd-namespace-ttrpc` from 1.7 on (1.6.20 sent none) [4.3];
//! - on close: the `delete` action with `-bundle`, then containerd's synthetic `/tasks/exit` +
//!   `/tasks/delete` (source `Mock`) only if the task was never deleted [2.10, 3].
//!
//! Deliberate differences: the gRPC address serves only the publish route (over ttrpc); bounds
//! are tighter than containerd's (connect 5s, not 100s) and configurable; `close` sends
//! `Shutdown` itself when the caller did not (containerd always does after Delete); after the
//! shim's life the mock checks for leftovers and ends them, which containerd does not; the
//! bundle belongs to the caller's [`crate::bundle::Bundle`] (containerd removes it after a
//! successful `delete` action); a 2.3 protobuf answer asking for `grpc` is refused (the mock
//! dials ttrpc only). A restart
//! (`shim_load`) is the engine's `restart-containerd` step, using [`MockContainerd::endpoints_down`]
//! and [`MockContainerd::endpoints_up`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::bundle::Bundle;
use crate::client::TaskClient;
use crate::delete::DeleteAction;
use crate::dialect::{self, Dialect, TaskApi};
use crate::error::{HarnessError, LaunchError};
use crate::events::{Endpoint, EventLog, EventSource};
use crate::procfs;
use crate::{leaks, pidguard};

pub use crate::timeouts::Timeouts;

mod log;
mod shim;
mod start;

use log::LogDrain;
pub use shim::{CloseReport, Shim};
use start::Started;

/// How the mock behaves.
#[derive(Debug, Clone, Default)]
pub struct MockConfig {
    /// The containerd version to imitate.
    pub dialect: Dialect,
    /// The namespace (`default` if empty).
    pub namespace: String,
    /// Pass `-debug` (containerd at debug log level).
    pub debug: bool,
    /// Bounds on every wait.
    pub timeouts: Timeouts,
}

/// Per-launch options.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// Runtime options sent on `start`'s stdin (marshalled `Any`); `None` → /dev/null.
    pub runtime_options: Option<protobuf::well_known_types::any::Any>,
    /// Extra environment for the shim (containerd's per-runtime `env`).
    pub extra_env: Vec<(String, String)>,
    /// A scenario's changes to 2.3's `BootstrapParams`.
    pub bootstrap: Option<dialect::BootstrapOverrides>,
}

/// A mock containerd instance.
pub struct MockContainerd {
    cfg: MockConfig,
    namespace: String,
    dir: tempfile::TempDir,
    grpc_address: String,
    ttrpc_address: String,
    publish_binary: PathBuf,
    events: EventLog,
    /// The events endpoint at `TTRPC_ADDRESS` (first) and the publish route at `-address`.
    servers: Vec<Endpoint>,
    registry: Registry,
    /// 2.3's per-runtime `socket_dir` (`BootstrapParams.socket_dir`; unset, the default).
    socket_dir: Option<String>,
}

/// One shim server as the mock knows it, shared by every connection to its address (a shim
/// that groups containers answers several `start`s with one address).
#[derive(Debug, Clone)]
pub(crate) struct ServerEntry {
    pub(crate) pid: Option<i32>,
    pub(crate) pgids: Vec<i32>,
    pub(crate) since: u64,
    /// The pid allocation before the first `start` of this server was spawned.
    pub(crate) mark: Option<procfs::PidMark>,
    pub(crate) connections: usize,
}

/// Live servers by address.
pub(crate) type Registry = Arc<Mutex<std::collections::HashMap<String, ServerEntry>>>;

/// Drops one connection to `address`; returns whether others remain.
pub(crate) fn release(registry: &Registry, address: &str) -> bool {
    let mut reg = lock(registry);
    let Some(e) = reg.get_mut(address) else {
        return false;
    };
    e.connections = e.connections.saturating_sub(1);
    if e.connections == 0 {
        reg.remove(address);
        false
    } else {
        true
    }
}

impl std::fmt::Debug for MockContainerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockContainerd")
            .field("dialect", &self.cfg.dialect)
            .field("state_dir", &self.dir.path())
            .finish()
    }
}

impl MockContainerd {
    /// Creates the state dir and starts the events endpoints.
    pub async fn new(cfg: MockConfig) -> Result<Self, HarnessError> {
        let namespace = if cfg.namespace.is_empty() {
            "default".to_string()
        } else {
            cfg.namespace.clone()
        };
        crate::events::validate_identifier(&namespace).map_err(|m| HarnessError::Invalid {
            field: "namespace".into(),
            message: m,
        })?;
        // Short path: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("harness-")
            .tempdir_in("/tmp")
            .map_err(|e| HarnessError::io("creating the mock's state dir in /tmp", e))?;
        let grpc = dir.path().join("c.sock");
        let ttrpc_path = dir.path().join("c.sock.ttrpc");
        let events = EventLog::new();
        let s1 = Endpoint::start(&ttrpc_path, events.clone(), EventSource::Shim).await?;
        let s2 = Endpoint::start(&grpc, events.clone(), EventSource::PublishBinary).await?;
        Ok(MockContainerd {
            cfg,
            namespace,
            grpc_address: grpc.display().to_string(),
            ttrpc_address: ttrpc_path.display().to_string(),
            publish_binary: crate::publish::publish_binary(),
            dir,
            events,
            servers: vec![s1, s2],
            registry: Registry::default(),
            socket_dir: None,
        })
    }

    /// The shared event log.
    pub fn events(&self) -> EventLog {
        self.events.clone()
    }

    /// The mock's temp state dir.
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where bundles go, as containerd lays them out: `<state>/io.containerd.runtime.v2.task/<ns>`.
    pub fn bundle_parent(&self) -> PathBuf {
        self.dir
            .path()
            .join("io.containerd.runtime.v2.task")
            .join(&self.namespace)
    }

    /// The namespace in use.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The configuration.
    pub fn config(&self) -> &MockConfig {
        &self.cfg
    }

    /// `-address` (containerd's gRPC socket path; the mock serves only publish forwarding there).
    pub fn grpc_address(&self) -> &str {
        &self.grpc_address
    }

    /// `TTRPC_ADDRESS` (the events endpoint).
    pub fn ttrpc_address(&self) -> &str {
        &self.ttrpc_address
    }

    /// `-publish-binary`.
    pub fn publish_binary(&self) -> &Path {
        &self.publish_binary
    }

    /// Overrides `-publish-binary` (default: `$HARNESS_PUBLISH_BINARY`, else the harness binary).
    pub fn set_publish_binary(&mut self, path: PathBuf) {
        self.publish_binary = path;
    }

    /// Sets the socket directory containerd 2.3 passes as `BootstrapParams.socket_dir` (its
    /// runtime's `socket_dir` setting; unset, 2.3 sends its default; older dialects send none).
    pub fn set_socket_dir(&mut self, dir: Option<String>) {
        self.socket_dir = dir;
    }

    /// Stops the endpoints (also done, less gracefully, on drop).
    pub async fn shutdown(mut self) {
        for s in self.servers.iter_mut() {
            s.down().await;
        }
    }

    /// Fault injection: takes the events endpoint down (and, with `publish`, the publish route
    /// too, as a stopped containerd does): connections dropped, sockets removed, connects
    /// refused until [`MockContainerd::endpoints_up`].
    pub async fn endpoints_down(&mut self, publish: bool) {
        let n = if publish { self.servers.len() } else { 1 };
        for s in self.servers.iter_mut().take(n) {
            s.down().await;
        }
    }

    /// Serves every endpoint that is down again, on the same address.
    pub async fn endpoints_up(&mut self) -> Result<(), HarnessError> {
        for s in self.servers.iter_mut() {
            s.up().await?;
        }
        Ok(())
    }

    /// Runs `<shim> ... start` for `bundle` and connects to the address it prints.
    pub async fn launch(
        &self,
        shim: &Path,
        bundle: &Bundle,
        opts: LaunchOptions,
    ) -> Result<Shim, LaunchError> {
        check_executable(shim)?;
        let t = self.cfg.timeouts;
        let dialect = self.cfg.dialect;
        let id = bundle.id().to_string();
        let bundle_dir = bundle.path().to_path_buf();
        let log = LogDrain::open(&bundle_dir.join("log"))?;
        let pb = self.publish_binary.display().to_string();
        let Started {
            raw,
            text,
            pid: start_pid,
            since,
            mark,
            log,
        } = self
            .run_start(shim, &id, &bundle_dir, &pb, &opts, log)
            .await?;
        let answer = match dialect.read_start_answer(&raw) {
            Ok(a) => a,
            Err(reason) => {
                // containerd never learns the address: the server it started is leaked; find it.
                let killed = end_leaked(start_pid, since, &text, &bundle_dir);
                log.stop().await;
                return Err(LaunchError::Address { reason, killed });
            }
        };
        let (address, api) = (
            answer.address.clone(),
            if answer.version == 3 {
                TaskApi::V3
            } else {
                TaskApi::V2
            },
        );
        let conn = match dial(&address, t.connect).await {
            Ok(c) => c,
            Err(message) => {
                let killed = end_leaked(start_pid, since, &text, &bundle_dir);
                log.stop().await;
                return Err(LaunchError::Connect {
                    address,
                    message,
                    killed,
                });
            }
        };
        record_start(&bundle_dir, shim, dialect, api, &address);
        let entry = self.register(&address, start_pid, since, mark);
        let (pid, since, mark) = (entry.pid, entry.since, entry.mark);
        let mut pgids = entry.pgids;
        if !pgids.contains(&start_pid) {
            pgids.push(start_pid);
        }
        let client = TaskClient::new(
            conn,
            api,
            &self.namespace,
            dialect.sends_namespace_metadata(),
        );
        Ok(Shim {
            pid,
            address,
            api,
            client,
            start_output: text,
            start_raw: raw,
            answer,
            log,
            pgids,
            events: self.events.clone(),
            timeouts: t,
            delete: DeleteAction {
                shim: shim.to_path_buf(),
                dialect,
                namespace: self.namespace.clone(),
                grpc_address: self.grpc_address.clone(),
                ttrpc_address: self.ttrpc_address.clone(),
                publish_binary: pb,
                id,
                bundle: bundle_dir,
                debug: self.cfg.debug,
                extra_env: opts.extra_env,
            },
            rootfs_dir: bundle.rootfs_dir().map(Path::to_path_buf),
            closed: false,
            released: None,
            since,
            mark,
            registry: self.registry.clone(),
        })
    }

    /// The server behind `address`, counted once more: a server already serving it (grouping)
    /// is the same server and shares its entry; a new one is found by its socket.
    fn register(
        &self,
        address: &str,
        start_pid: i32,
        since: u64,
        mark: Option<procfs::PidMark>,
    ) -> ServerEntry {
        let mut reg = lock(&self.registry);
        let e = reg.entry(address.to_string()).or_insert_with(|| {
            let pid = leaks::socket_server_since(address, since, mark);
            let mut pgids = vec![start_pid];
            if let Some(info) = pid.and_then(procfs::proc_info) {
                if !pgids.contains(&info.pgrp)
                    && info.pgrp > 1
                    && info.pgrp != nix::unistd::getpgrp().as_raw()
                {
                    pgids.push(info.pgrp);
                }
            }
            ServerEntry {
                pid,
                pgids,
                since,
                mark,
                connections: 0,
            }
        });
        e.connections += 1;
        e.clone()
    }
}

/// Dials a `start` answer's address within `bound`; why not, as the connect error says it.
async fn dial(address: &str, bound: Duration) -> Result<ttrpc::r#async::Client, String> {
    let dial = dialect::dial_address(address);
    match tokio::time::timeout(bound, ttrpc::r#async::Client::connect(&dial)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {bound:?}")),
    }
}

/// What containerd records next to the bundle after a `start`: the binary it used and, from
/// 2.0, the bootstrap parameters it reconnects with after a restart.
fn record_start(bundle_dir: &Path, shim: &Path, dialect: Dialect, api: TaskApi, address: &str) {
    let _ = std::fs::write(
        bundle_dir.join("shim-binary-path"),
        shim.display().to_string(),
    );
    if dialect >= Dialect::V2_0 {
        let version = if api == TaskApi::V3 { 3 } else { 2 };
        let params =
            serde_json::json!({"version": version, "address": address, "protocol": "ttrpc"});
        let _ = std::fs::write(bundle_dir.join("bootstrap.json"), params.to_string());
    }
}

impl Drop for MockContainerd {
    fn drop(&mut self) {
        // Stop the endpoints' accept loops (their sockets go with the temp dir): a dropped ttrpc
        // server's accept loop ends by itself once its stop channel closes. (An explicit
        // `Server::shutdown` spawned from here panicked in ttrpc's `stop_listen` when the
        // runtime was going down and the accept loop was already gone: ttrpc 0.10
        // `src/asynchronous/server.rs` unwraps both channel operations.)
        for s in self.servers.iter_mut() {
            drop(s.take_server());
        }
        crate::leaks::remove_namespace_cgroups(&self.namespace);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn check_executable(shim: &Path) -> Result<(), LaunchError> {
    let bad = |m: &str| LaunchError::Binary {
        path: shim.to_path_buf(),
        message: m.to_string(),
    };
    let md = std::fs::metadata(shim).map_err(|e| bad(&format!("cannot be run: {e}")))?;
    if !md.is_file() {
        return Err(bad("is not a regular file"));
    }
    if md.permissions().mode() & 0o111 == 0
        || nix::unistd::access(shim, nix::unistd::AccessFlags::X_OK).is_err()
    {
        return Err(bad("is not executable (chmod +x it)"));
    }
    Ok(())
}

/// Ends what a failed `start` left: servers on the sockets it named (first, by socket, since
/// real shims put their server in its own process group), then its own process group.
fn end_leaked(start_pid: i32, since: u64, output: &str, bundle: &Path) -> Vec<i32> {
    let mut killed = end_leaked_servers(output, bundle, since);
    killed.extend(leaks::kill_process_group_members(start_pid));
    killed.sort_unstable();
    killed.dedup();
    killed
}

/// Finds servers listening on any socket named in `output` or in the bundle's `address` file
/// that started no earlier than `since` (clock ticks since boot, see [`procfs::ProcInfo`]), ends
/// them by pid, removes their socket files; returns the pids ended.
pub fn end_leaked_servers(output: &str, bundle: &Path, since: u64) -> Vec<i32> {
    let mut addrs = leaks::addresses_in(output);
    if let Ok(a) = std::fs::read_to_string(bundle.join("address")) {
        let a = a.trim().to_string();
        if !a.is_empty() && !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    let mut killed = vec![];
    for a in &addrs {
        for pid in leaks::socket_owners_since(a, since) {
            if pidguard::end_found(pid, Duration::from_secs(2)) {
                killed.push(pid);
            }
        }
        if let Some(p) = dialect::socket_path(a) {
            if !killed.is_empty() {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    killed.sort_unstable();
    killed.dedup();
    killed
}
