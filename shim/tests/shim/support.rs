//! Test support: launch the built shim with the real `start` handshake, a bundle in a temp dir,
//! an events server that records envelopes, stdio FIFOs, and cleanup that ends what it started.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::{Message, MessageFull};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{create_events, Events, TaskClient};
use ttrpc::asynchronous::TtrpcContext;

/// Per-call bound for every RPC in the tests.
pub const RPC: Duration = Duration::from_secs(10);

pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_duration(RPC)
}

/// The built reaper next to the test executable.
pub fn shim_bin() -> PathBuf {
    testkit::reaper()
}

/// Makes the test process the subreaper of the shim servers it starts, so it can reap exactly
/// those pids (by pid, never -1) and leave no zombie behind.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Records every forwarded envelope and the namespace metadata it came with.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Envelope>>>, pub Arc<Mutex<Vec<String>>>);

#[async_trait]
impl Events for Recorder {
    async fn forward(&self, ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let md = ctx
            .metadata
            .get("containerd-namespace-ttrpc")
            .and_then(|v| v.first().cloned())
            .unwrap_or_default();
        self.1.lock().unwrap().push(md);
        self.0
            .lock()
            .unwrap()
            .push(req.envelope.unwrap_or_default());
        Ok(Empty::new())
    }
}

/// A decoded event: topic plus the fields tests look at.
#[derive(Debug, Clone)]
pub struct Ev {
    pub topic: String,
    pub namespace: String,
    pub type_url: String,
    pub id: String,
    pub pid: u32,
    pub exit_status: u32,
}

fn decode<M: MessageFull>(v: &[u8]) -> M {
    M::parse_from_bytes(v).expect("decode event")
}

impl Recorder {
    pub fn events(&self) -> Vec<Ev> {
        use containerd_shim_protos::events::task::*;
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                let any = e.event.clone().unwrap_or_default();
                let v = any.value.as_slice();
                let (id, pid, exit_status) = match e.topic.as_str() {
                    "/tasks/create" => {
                        let m: TaskCreate = decode(v);
                        (m.container_id, m.pid, 0)
                    }
                    "/tasks/start" => {
                        let m: TaskStart = decode(v);
                        (m.container_id, m.pid, 0)
                    }
                    "/tasks/exit" => {
                        let m: TaskExit = decode(v);
                        (m.id, m.pid, m.exit_status)
                    }
                    "/tasks/delete" => {
                        let m: TaskDelete = decode(v);
                        let id = if m.id.is_empty() {
                            m.container_id
                        } else {
                            m.id
                        };
                        (id, m.pid, m.exit_status)
                    }
                    "/tasks/exec-added" => {
                        let m: TaskExecAdded = decode(v);
                        (m.exec_id, 0, 0)
                    }
                    "/tasks/exec-started" => {
                        let m: TaskExecStarted = decode(v);
                        (m.exec_id, m.pid, 0)
                    }
                    "/tasks/paused" => (decode::<TaskPaused>(v).container_id, 0, 0),
                    "/tasks/resumed" => (decode::<TaskResumed>(v).container_id, 0, 0),
                    _ => (String::new(), 0, 0),
                };
                Ev {
                    topic: e.topic.clone(),
                    namespace: e.namespace.clone(),
                    type_url: any.type_url,
                    id,
                    pid,
                    exit_status,
                }
            })
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
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let ev = self.events();
            if pred(&ev) {
                return Ok(ev);
            }
            if Instant::now() > end {
                bail!("timed out waiting for {what}; events: {:?}", self.summary());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A running events endpoint on a socket in `dir`.
pub struct EventsServer {
    pub path: PathBuf,
    pub rec: Recorder,
    server: ttrpc::asynchronous::Server,
}

impl EventsServer {
    pub async fn start(dir: &Path) -> Result<Self> {
        let path = dir.join("events.sock");
        let rec = Recorder::default();
        let mut server = ttrpc::asynchronous::Server::new()
            .bind(&format!("unix://{}", path.display()))?
            .register_service(create_events(Arc::new(rec.clone())));
        server.start().await?;
        Ok(EventsServer { path, rec, server })
    }

    pub async fn stop(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(3), self.server.shutdown()).await;
    }
}

/// A bundle directory with a config.json for `args`.
pub struct Bundle {
    pub dir: tempfile::TempDir,
}

pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Bundle {
    pub fn new(args: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("reaper-test-").tempdir()?;
        let b = Bundle { dir };
        b.write_spec(args, &[PATH_ENV], "/", false)?;
        Ok(b)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_spec(&self, args: &[&str], env: &[&str], cwd: &str, terminal: bool) -> Result<()> {
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": terminal,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": env,
                "cwd": cwd,
            },
            "root": {"path": "rootfs"},
        });
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(&spec)?,
        )?;
        Ok(())
    }

    /// Makes a FIFO in the bundle dir and returns its path.
    pub fn fifo(&self, name: &str) -> Result<PathBuf> {
        let p = self.path().join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        Ok(p)
    }
}

/// The client's read side of an output FIFO, opened before Create like containerd's cio.
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

/// Output of the `start` action.
pub struct Started {
    pub stdout: String,
    pub stderr: String,
    pub status: std::process::ExitStatus,
}

/// Runs `<shim> -namespace ns -address addr -publish-binary /bin/true -id id start` in `bundle`.
pub fn run_start(
    shim: &Path,
    bundle: &Path,
    ns: &str,
    address: &str,
    id: &str,
    ttrpc: &Path,
) -> Result<Started> {
    let out = Command::new(shim)
        .args([
            "-namespace",
            ns,
            "-address",
            address,
            "-publish-binary",
            "/bin/true",
            "-id",
            id,
            "-debug",
            "start",
        ])
        .current_dir(bundle)
        .env("TTRPC_ADDRESS", ttrpc)
        .stdin(Stdio::null())
        .output()
        .context("run start")?;
    Ok(Started {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status,
    })
}

/// A shim server started through `start`, with a v3 client. Dropping it shuts it down.
pub struct ShimProc {
    pub address: String,
    pub pid: i32,
    pub client: TaskClient,
    pub events: EventsServer,
    stopped: bool,
    _scratch: tempfile::TempDir,
}

impl Drop for ShimProc {
    /// A failed test still ends its server: SIGTERM (the server kills its tasks and removes its
    /// socket), SIGKILL after 3 s, then the zombie is reaped.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // SAFETY: kill(2) by the pid Connect reported.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(3);
        while self.alive() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.alive() {
            // SAFETY: as above.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            std::thread::sleep(Duration::from_millis(50));
            reap(self.pid);
        }
        let _ = std::fs::remove_file(self.socket_path());
    }
}

impl ShimProc {
    /// Starts a shim for the container `id` of `bundle`.
    pub async fn start(bundle: &Bundle, id: &str) -> Result<Self> {
        Self::start_bin(&shim_bin(), bundle, id, &[]).await
    }

    pub async fn start_bin(
        bin: &Path,
        bundle: &Bundle,
        id: &str,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        become_subreaper();
        let scratch = tempfile::Builder::new().prefix("reaper-ctd-").tempdir()?;
        let events = EventsServer::start(scratch.path()).await?;
        let grpc_address = scratch.path().join("containerd.sock").display().to_string();
        let ns = "reaper-test".to_string();
        let mut cmd = Command::new(bin);
        cmd.args([
            "-namespace",
            &ns,
            "-address",
            &grpc_address,
            "-publish-binary",
            "/bin/true",
            "-id",
            id,
            "start",
        ])
        .current_dir(bundle.path())
        .env("TTRPC_ADDRESS", &events.path)
        .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output()?;
        let address = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "start failed: {address} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let raw = tokio::time::timeout(RPC, ttrpc::asynchronous::Client::connect(&address))
            .await
            .context("connect timed out")??;
        let client = TaskClient::new(raw);
        let c = client
            .connect(
                ctx(),
                &ConnectRequest {
                    id: id.into(),
                    ..Default::default()
                },
            )
            .await?;
        Ok(ShimProc {
            address,
            pid: c.shim_pid as i32,
            client,
            events,
            stopped: false,
            _scratch: scratch,
        })
    }

    pub fn socket_path(&self) -> PathBuf {
        PathBuf::from(self.address.trim_start_matches("unix://"))
    }

    /// Whether the server process still exists (reaping it if it became our zombie).
    pub fn alive(&self) -> bool {
        reap(self.pid);
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// Waits (bounded) for the server to exit.
    pub async fn wait_gone(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while self.alive() {
            if Instant::now() > end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Shuts the server down (now), kills it by pid as a last resort, removes its socket.
    pub async fn stop(mut self) -> Recorder {
        self.stopped = true;
        let _ = tokio::time::timeout(
            Duration::from_secs(3),
            self.client.shutdown(
                ctx(),
                &ShutdownRequest {
                    now: true,
                    ..Default::default()
                },
            ),
        )
        .await;
        if !self.wait_gone(Duration::from_secs(3)).await {
            // SAFETY: kill(2) by the pid Connect reported.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            self.wait_gone(Duration::from_secs(3)).await;
        }
        let _ = std::fs::remove_file(self.socket_path());
        let rec = self.events.rec.clone();
        self.events.stop().await;
        rec
    }
}

/// Reaps `pid` if it is our zombie (never waits for any other pid).
pub fn reap(pid: i32) {
    let mut st = 0;
    // SAFETY: waitpid on one specific pid with WNOHANG.
    unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, r)| !r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Zombie children of `ppid`.
pub fn zombies_of(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((_, rest)) = s.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.first() == Some(&"Z") && f.get(1).and_then(|p| p.parse().ok()) == Some(ppid) {
                out.push(pid);
            }
        }
    }
    out
}

pub fn create_req(id: &str, bundle: &Bundle) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: bundle.path().display().to_string(),
        ..Default::default()
    }
}

/// The ttrpc code of an error.
pub fn code(e: &ttrpc::Error) -> ttrpc::Code {
    match e {
        ttrpc::Error::RpcStatus(s) => s.code(),
        _ => ttrpc::Code::UNKNOWN,
    }
}

pub fn message(e: &ttrpc::Error) -> String {
    match e {
        ttrpc::Error::RpcStatus(s) => s.message().to_string(),
        other => other.to_string(),
    }
}

/// Sends one raw request naming `service` and `method`.
pub async fn raw_call<M: Message>(
    c: &ttrpc::asynchronous::Client,
    service: &str,
    method: &str,
    req: &M,
) -> ttrpc::Result<ttrpc::Response> {
    let r = ttrpc::Request {
        service: service.into(),
        method: method.into(),
        payload: req.write_to_bytes().expect("encode request"),
        timeout_nano: RPC.as_nanos() as i64,
        ..Default::default()
    };
    c.request(r).await
}

/// One-id Task calls that must succeed: the request boilerplate of most tests, in one place.
impl ShimProc {
    /// Start of `id`'s init process; panics with the error if it fails.
    pub async fn start_task(&self, id: impl Into<String>) -> StartResponse {
        let req = StartRequest {
            id: id.into(),
            ..Default::default()
        };
        self.client.start(ctx(), &req).await.unwrap()
    }

    /// Wait for `id`'s init process; panics with the error if it fails.
    pub async fn wait_task(&self, id: impl Into<String>) -> WaitResponse {
        let req = WaitRequest {
            id: id.into(),
            ..Default::default()
        };
        self.client.wait(ctx(), &req).await.unwrap()
    }

    /// State of `id`'s init process; panics with the error if it fails.
    pub async fn state_task(&self, id: impl Into<String>) -> StateResponse {
        let req = StateRequest {
            id: id.into(),
            ..Default::default()
        };
        self.client.state(ctx(), &req).await.unwrap()
    }

    /// Delete of `id`'s init process; panics with the error if it fails.
    pub async fn delete_task(&self, id: impl Into<String>) -> DeleteResponse {
        let req = DeleteRequest {
            id: id.into(),
            ..Default::default()
        };
        self.client.delete(ctx(), &req).await.unwrap()
    }
}
