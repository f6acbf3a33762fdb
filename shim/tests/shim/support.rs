//! Test support: the harness library's mock containerd ([`harness::launch`]) launches the built
//! shim with the real `start` handshake, serves its events endpoint and ends what it started;
//! this module adds only the tests' shorthands: a bundle in a temp dir of its own, one mock per
//! shim, the fields of an event the tests compare, error codes, and output FIFOs read to EOF.

use std::fs::OpenOptions;
use std::io::Read;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use containerd_shim_protos::api::*;
use harness::bundle::{process, BundleOptions};
use harness::client::{RpcError, TaskClient};
use harness::events::{EventSource, RecordedEvent, TaskEvent};
use harness::launch::{CloseReport, LaunchOptions, MockConfig, MockContainerd, Shim};

/// Per-call bound for every RPC in the tests.
pub const RPC: Duration = Duration::from_secs(10);

/// The namespace of every mock.
pub const NS: &str = "reaper-test";

/// The PATH of every process spec.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The built reaper next to the test executable.
pub fn shim_bin() -> PathBuf {
    testkit::reaper()
}

/// A harness bundle for container `id` (its spec running `args`) in a temp dir of its own.
pub struct Bundle {
    inner: harness::bundle::Bundle,
    /// Dropped after `inner`, which removes the bundle dir first.
    _parent: tempfile::TempDir,
}

impl Deref for Bundle {
    type Target = harness::bundle::Bundle;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Bundle {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl Bundle {
    pub fn new(id: &str, args: &[&str]) -> Result<Self> {
        let parent = tempfile::Builder::new().prefix("reaper-test-").tempdir()?;
        let inner = harness::bundle::Bundle::create_in_namespace(
            parent.path(),
            NS,
            id,
            process(args),
            BundleOptions::default(),
        )?;
        Ok(Bundle {
            inner,
            _parent: parent,
        })
    }

    /// Makes the bundle run `args` with exactly `env`, in `cwd`, on a terminal or not.
    pub fn write_spec(
        &mut self,
        args: &[&str],
        env: &[&str],
        cwd: &str,
        terminal: bool,
    ) -> Result<()> {
        let mut p = process(args);
        p.set_env(Some(env.iter().map(|s| s.to_string()).collect()));
        p.set_cwd(cwd.into());
        p.set_terminal(Some(terminal));
        Ok(self.inner.set_process(p)?)
    }

    /// Makes a FIFO in the bundle dir and returns its path.
    pub fn fifo(&self, name: &str) -> Result<PathBuf> {
        let p = self.path().join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        Ok(p)
    }
}

/// A Create of container `id` from `bundle`, no stdio.
pub fn create_req(id: &str, bundle: &Bundle) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: bundle.path().display().to_string(),
        ..Default::default()
    }
}

/// containerd's `delete` action for container `id` of `bundle` (as after a dead shim: no
/// daemon at `-address`).
pub fn delete_action(id: &str, bundle: &Path) -> harness::delete::DeleteAction {
    harness::delete::DeleteAction {
        shim: shim_bin(),
        dialect: Default::default(),
        namespace: NS.into(),
        grpc_address: "/nonexistent".into(),
        ttrpc_address: "/nonexistent.ttrpc".into(),
        publish_binary: "/bin/true".into(),
        id: id.into(),
        bundle: bundle.to_path_buf(),
        debug: false,
        extra_env: vec![],
    }
}

/// A mock containerd in namespace [`NS`] whose `-publish-binary` is `/bin/true`.
pub async fn mock() -> Result<MockContainerd> {
    let mut mock = MockContainerd::new(MockConfig {
        namespace: NS.into(),
        ..Default::default()
    })
    .await?;
    mock.set_publish_binary("/bin/true".into());
    Ok(mock)
}

/// An event as the tests compare it: its topic and namespace, the process it names (the exec
/// id for exec events and an exec's exit or delete, else the container id), its pid and exit
/// status (0 where the event has none).
#[derive(Debug, Clone)]
pub struct Ev {
    pub topic: String,
    pub namespace: String,
    pub id: String,
    pub pid: u32,
    pub exit_status: u32,
}

impl From<&RecordedEvent> for Ev {
    fn from(r: &RecordedEvent) -> Self {
        let id = match &r.event {
            TaskEvent::Exit(m) => m.id.clone(),
            TaskEvent::Delete(m) if !m.id.is_empty() => m.id.clone(),
            TaskEvent::ExecAdded(m) => m.exec_id.clone(),
            TaskEvent::ExecStarted(m) => m.exec_id.clone(),
            e => e.container_id().to_string(),
        };
        let num = |k: &str| r.fields[k].as_u64().unwrap_or(0) as u32;
        Ev {
            topic: r.topic.clone(),
            namespace: r.namespace.clone(),
            id,
            pid: num("pid"),
            exit_status: num("exit-status"),
        }
    }
}

/// A shim server launched by its own mock containerd, with the mock's client and the server
/// pid Connect reported. Dropping it ends the server (the harness's [`Shim`] does).
pub struct ShimProc {
    pub shim: Shim,
    pub client: TaskClient,
    pub address: String,
    pub pid: i32,
    /// Dropped after `shim`.
    pub mock: MockContainerd,
}

impl ShimProc {
    /// Starts the reaper for `bundle`'s container.
    pub async fn start(bundle: &Bundle) -> Result<Self> {
        Self::start_bin(&shim_bin(), bundle, &[]).await
    }

    /// Starts `bin` for `bundle`'s container with `env` added to its environment.
    pub async fn start_bin(bin: &Path, bundle: &Bundle, env: &[(&str, &str)]) -> Result<Self> {
        Self::launch(mock().await?, bin, bundle, env).await
    }

    /// Starts `bin` for `bundle`'s container through `mock`.
    pub async fn launch(
        mock: MockContainerd,
        bin: &Path,
        bundle: &Bundle,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let opts = LaunchOptions {
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let shim = mock.launch(bin, bundle, opts).await?;
        let client = shim.client();
        let req = ConnectRequest {
            id: bundle.id().into(),
            ..Default::default()
        };
        let c = client.connect(req, RPC).await?;
        Ok(ShimProc {
            address: shim.address.clone(),
            pid: c.shim_pid as i32,
            shim,
            client,
            mock,
        })
    }

    /// The server's socket file.
    pub fn socket_path(&self) -> PathBuf {
        harness::dialect::socket_path(&self.address).expect("a unix socket address")
    }

    /// Whether the server still runs (a zombie does not).
    pub fn alive(&self) -> bool {
        pid_alive(self.pid)
    }

    /// Sends `sig` to the server (the pid Connect reported, checked by the harness first).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let p = harness::pidguard::Proc::found(self.pid).expect("the server's pid");
        p.signal(sig).expect("signal the server");
    }

    /// Waits (bounded) for the server to exit.
    pub async fn wait_gone(&self, limit: Duration) -> bool {
        match harness::pidguard::Proc::found(self.pid) {
            Ok(server) => server.wait_gone(limit).await,
            Err(_) => !self.alive(),
        }
    }

    /// The events the shim forwarded so far, in arrival order.
    pub fn events(&self) -> Vec<Ev> {
        self.mock
            .events()
            .snapshot()
            .iter()
            .filter(|e| e.source == EventSource::Shim)
            .map(Ev::from)
            .collect()
    }

    /// `topic id` strings, in arrival order.
    pub fn summary(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| format!("{} {}", e.topic, e.id))
            .collect()
    }

    /// Waits until `pred` holds on the events (bounded).
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Ev]) -> bool) -> Result<Vec<Ev>> {
        let log = self.mock.events();
        let held = log
            .wait_until(|_| pred(&self.events()), Duration::from_secs(10))
            .await;
        if !held {
            bail!("timed out waiting for {what}; events: {:?}", self.summary());
        }
        Ok(self.events())
    }

    /// Shuts the server down (now), then closes as containerd does (the `delete` action) and
    /// lets the harness end whatever is left.
    pub async fn stop(self) -> CloseReport {
        let req = ShutdownRequest {
            now: true,
            ..Default::default()
        };
        let _ = self.client.shutdown(req, Duration::from_secs(3)).await;
        let report = self.shim.close().await;
        self.mock.shutdown().await;
        report
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    harness::procfs::is_alive(pid)
}

/// Zombie children of `ppid`.
pub fn zombies_of(ppid: i32) -> Vec<i32> {
    harness::procfs::all_processes()
        .into_iter()
        .filter(|p| p.state == 'Z' && p.ppid == ppid)
        .map(|p| p.pid)
        .collect()
}

/// The ttrpc code of an error.
pub fn code(e: &RpcError) -> ttrpc::Code {
    match e {
        RpcError::Status { code, .. } => *code,
        _ => ttrpc::Code::UNKNOWN,
    }
}

/// The status message of an error (or what else went wrong).
pub fn message(e: &RpcError) -> String {
    match e {
        RpcError::Status { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The client's read side of an output FIFO, opened before Create like containerd's cio, and
/// read to EOF without a cap (the harness's [`harness::stdio::StdioSet`] keeps at most 16 MiB
/// and does not say when the shim closed its side).
pub struct OutFifo {
    fd: OwnedFd,
}

impl OutFifo {
    pub fn open(p: &Path) -> Result<Self> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(p)?;
        Ok(OutFifo { fd: f.into() })
    }

    /// Reads to EOF in a thread (call after Create, when the shim holds the write side).
    pub fn collect(self) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let fd = self.fd;
            // SAFETY: fcntl on our fd.
            unsafe {
                let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
            let mut f = std::fs::File::from(fd);
            let mut out = Vec::new();
            let _ = f.read_to_end(&mut out);
            out
        })
    }
}

/// Joins a collector thread with a bound.
pub async fn join_output(h: std::thread::JoinHandle<Vec<u8>>) -> Result<Vec<u8>> {
    let end = Instant::now() + Duration::from_secs(20);
    while !h.is_finished() {
        if Instant::now() > end {
            bail!("stdout FIFO never reached EOF");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.join().map_err(|_| anyhow!("collector panicked"))
}

/// One-id Task calls that must succeed: the request boilerplate of most tests, in one place.
impl ShimProc {
    /// Start of `id`'s init process; panics with the error if it fails.
    pub async fn start_task(&self, id: impl Into<String>) -> StartResponse {
        let req = StartRequest {
            id: id.into(),
            ..Default::default()
        };
        self.client.start(req, RPC).await.unwrap()
    }

    /// Wait for `id`'s init process; panics with the error if it fails.
    pub async fn wait_task(&self, id: impl Into<String>) -> WaitResponse {
        let req = WaitRequest {
            id: id.into(),
            ..Default::default()
        };
        self.client.wait(req, RPC).await.unwrap()
    }

    /// State of `id`'s init process; panics with the error if it fails.
    pub async fn state_task(&self, id: impl Into<String>) -> StateResponse {
        let req = StateRequest {
            id: id.into(),
            ..Default::default()
        };
        self.client.state(req, RPC).await.unwrap()
    }

    /// Delete of `id`'s init process; panics with the error if it fails.
    pub async fn delete_task(&self, id: impl Into<String>) -> DeleteResponse {
        let req = DeleteRequest {
            id: id.into(),
            ..Default::default()
        };
        self.client.delete(req, RPC).await.unwrap()
    }
}
