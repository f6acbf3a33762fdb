//! The recording proxy shim's actions. `start`: run the real shim's `start` (same arguments,
//! environment, directory and stdin, but with the events address pointed at the proxy), then
//! serve a socket of the proxy's own in front of the real shim's and answer containerd with
//! that address in the form the real shim used. The server relays every TTRPC frame both ways
//! and records each request and response; it also stands between the real shim and containerd's
//! events endpoint. `delete`: recorded and passed through. Anything else (`-v`, `-info`): the
//! real shim, as it is. The server ends, removing its sockets, once the real shim is gone.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use protobuf::Message;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use ttrpc::proto::GenMessage;

use super::{new_session_dir, now_ms, Config, Entry, Recorder, ShimArgs};
use crate::dialect::{self, AnswerFormat, Dialect};

/// containerd's default directory for shim sockets (`defaults.DefaultStateDir` + `/s`).
const SOCKET_DIR: &str = "/run/containerd/s";
/// Bound on the real shim's `start` and `delete`.
const ACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// The hidden action the proxy runs its server as.
const SERVE: &str = "__record-serve";

/// The proxy binary's whole life: returns its exit status.
pub fn main(argv: Vec<String>) -> i32 {
    if argv.first().map(String::as_str) == Some(SERVE) {
        return match serve_main(&argv[1..]) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("containerd-shim-record-v2: serve: {e:#}");
                1
            }
        };
    }
    let cfg = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("containerd-shim-record-v2: {e:#}");
            return 1;
        }
    };
    let args = ShimArgs::parse(&argv);
    let r = match args.action.as_deref() {
        Some("start") => start(&cfg, &args, &argv),
        Some("delete") => pass_through(&cfg, &args, &argv),
        _ => {
            // `-v`, `-info` and the like: the real shim answers for itself.
            let e = Command::new(&cfg.shim).args(&argv).exec();
            Err(e).with_context(|| format!("exec {}", cfg.shim.display()))
        }
    };
    r.unwrap_or_else(|e| {
        eprintln!("containerd-shim-record-v2: {e:#}");
        1
    })
}

/// What a real shim action did.
struct ActionRun {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: i32,
}

/// Runs the real shim with `argv`, `stdin` and extra environment, bounded.
fn run_real(
    cfg: &Config,
    argv: &[String],
    stdin: &[u8],
    env: &[(&str, String)],
) -> Result<ActionRun> {
    let mut cmd = Command::new(&cfg.shim);
    cmd.args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", cfg.shim.display()))?;
    let mut input = child.stdin.take().expect("piped");
    let data = stdin.to_vec();
    std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_t = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err_t = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let end = std::time::Instant::now() + ACTION_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if std::time::Instant::now() >= end {
            // Our own child, through its handle (not yet reaped, so the pid is still its).
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} did not finish within {ACTION_TIMEOUT:?}",
                cfg.shim.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // containerd reads the output to EOF too: a process the action left holding it is waited
    // for as long, no longer.
    while !(out_t.is_finished() && err_t.is_finished()) {
        if std::time::Instant::now() >= end {
            bail!(
                "{}: its output was never closed (a process it started holds it)",
                cfg.shim.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = std::process::Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    };
    use std::os::unix::process::ExitStatusExt;
    let status = out
        .status
        .code()
        .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
    Ok(ActionRun {
        stdout: out.stdout,
        stderr: out.stderr,
        status,
    })
}

fn action_entry(cfg: &Config, argv: &[String], stdin: &[u8], run: &ActionRun) -> Entry {
    Entry::Action {
        t: now_ms(),
        argv: argv.to_vec(),
        env: std::env::vars_os()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect(),
        cwd: std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        stdin: hex::encode(stdin),
        stdout: hex::encode(&run.stdout),
        status: run.status,
        real: cfg.shim.display().to_string(),
    }
}

fn read_stdin() -> Vec<u8> {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    stdin
}

/// `delete`: recorded in the shim's latest recording and passed through.
fn pass_through(cfg: &Config, args: &ShimArgs, argv: &[String]) -> Result<i32> {
    let stdin = read_stdin();
    let run = run_real(cfg, argv, &stdin, &[])?;
    let dir = match super::latest_session_dir(&cfg.dir, &args.namespace, &args.id) {
        Some(d) => d,
        None => new_session_dir(&cfg.dir, &args.namespace, &args.id)?,
    };
    Recorder::open(&dir)?.write(&action_entry(cfg, argv, &stdin, &run));
    std::io::stdout().write_all(&run.stdout)?;
    std::io::stderr().write_all(&run.stderr)?;
    Ok(run.status)
}

/// 2.3's `BootstrapParams` on stdin, if that is what came.
fn bootstrap_params(stdin: &[u8]) -> Option<bootstrap::BootstrapParams> {
    let p = bootstrap::BootstrapParams::parse_from_bytes(stdin).ok()?;
    (!p.instance_id.is_empty() && !p.containerd_ttrpc_address.is_empty()).then_some(p)
}

/// A socket path in `dir` named by the hash of `key`, as containerd names shim sockets.
fn hashed_socket(dir: &str, key: &str) -> PathBuf {
    Path::new(dir).join(hex::encode(Sha256::digest(key.as_bytes())))
}

/// Binds a unix socket at `path` (removing a stale file first).
fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let _ = std::fs::remove_file(path);
    std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("listening on {}", path.display()))
}

/// `start`: the real shim's `start` with the events address pointed at the proxy, then the
/// proxy's server, and the answer with the proxy's address.
fn start(cfg: &Config, args: &ShimArgs, argv: &[String]) -> Result<i32> {
    let stdin = read_stdin();
    let params = bootstrap_params(&stdin);
    let socket_dir = params
        .as_ref()
        .and_then(|p| p.socket_dir.clone())
        .unwrap_or_else(|| SOCKET_DIR.to_string());
    let containerd_ttrpc = match &params {
        Some(p) => p.containerd_ttrpc_address.clone(),
        None => std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
    };
    let nonce = format!(
        "record-events/{}/{}/{}/{}",
        args.namespace,
        args.id,
        std::process::id(),
        now_ms()
    );
    let events_path = hashed_socket(&socket_dir, &nonce);
    let events = bind(&events_path)?;
    let events_addr = events_path.display().to_string();
    let real_stdin = match &params {
        Some(p) => {
            let mut p = p.clone();
            p.containerd_ttrpc_address = events_addr.clone();
            p.write_to_bytes()?
        }
        None => stdin.clone(),
    };
    let run = run_real(
        cfg,
        argv,
        &real_stdin,
        &[("TTRPC_ADDRESS", events_addr.clone())],
    );
    let run = match run {
        Ok(r) if r.status == 0 => r,
        other => {
            let _ = std::fs::remove_file(&events_path);
            let r = other?;
            std::io::stdout().write_all(&r.stdout)?;
            std::io::stderr().write_all(&r.stderr)?;
            return Ok(r.status);
        }
    };
    std::io::stderr().write_all(&run.stderr)?;
    let dialect = if params.is_some() {
        Dialect::V2_3
    } else {
        Dialect::V2_0
    };
    let answer = dialect
        .read_start_answer(&run.stdout)
        .map_err(|e| anyhow::anyhow!("the real shim's start answer: {e}"))?;
    let real_dir = dialect::socket_path(&answer.address)
        .and_then(|p| p.parent().map(|d| d.display().to_string()))
        .unwrap_or(socket_dir);
    let proxy_path = hashed_socket(&real_dir, &format!("record/{}", answer.address));
    let map = cfg
        .dir
        .join(".proxies")
        .join(proxy_path.file_name().expect("a name"));
    let session = match std::fs::read_to_string(&map) {
        // The real shim answered with a server that already has a proxy (a group's second
        // container): record there and give containerd that proxy.
        Ok(dir) if std::os::unix::net::UnixStream::connect(&proxy_path).is_ok() => {
            let _ = std::fs::remove_file(&events_path);
            let rec = Recorder::open(Path::new(dir.trim()))?;
            rec.write(&action_entry(cfg, argv, &stdin, &run));
            None
        }
        _ => Some(new_session_dir(&cfg.dir, &args.namespace, &args.id)?),
    };
    if let Some(dir) = session {
        let rec = Recorder::open(&dir)?;
        rec.write(&action_entry(cfg, argv, &stdin, &run));
        let task = bind(&proxy_path)?;
        std::fs::create_dir_all(map.parent().expect("has a parent"))?;
        std::fs::write(&map, dir.display().to_string())?;
        let s = ServeArgs {
            real: answer.address.clone(),
            containerd_ttrpc,
            session: dir,
            task_sock: proxy_path.clone(),
            events_sock: events_path,
            map,
        };
        spawn_server(&s, task.into(), events.into())?;
    }
    std::io::stdout().write_all(&answer_with(&run.stdout, &answer, &proxy_path)?)?;
    Ok(0)
}

/// The real shim's answer with the proxy's address in the real one's place, in its form.
fn answer_with(raw: &[u8], answer: &dialect::StartAnswer, proxy: &Path) -> Result<Vec<u8>> {
    let proxy_addr = if answer.address.starts_with("unix://") {
        format!("unix://{}", proxy.display())
    } else {
        proxy.display().to_string()
    };
    if answer.format == AnswerFormat::Protobuf {
        let mut r = bootstrap::BootstrapResult::parse_from_bytes(raw)?;
        r.address = proxy_addr;
        return Ok(r.write_to_bytes()?);
    }
    let text = String::from_utf8_lossy(raw);
    Ok(text.replace(&answer.address, &proxy_addr).into_bytes())
}

/// What the server needs.
struct ServeArgs {
    real: String,
    containerd_ttrpc: String,
    session: PathBuf,
    task_sock: PathBuf,
    events_sock: PathBuf,
    map: PathBuf,
}

/// Starts the server in a session of its own with the two listening sockets as fds 3 and 4;
/// its output goes to `proxy.log` in the recording.
fn spawn_server(s: &ServeArgs, task: OwnedFd, events: OwnedFd) -> Result<()> {
    let log = std::fs::File::create(s.session.join("proxy.log"))?;
    let exe = std::env::current_exe().context("the proxy's own executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg(SERVE)
        .args([&s.real, &s.containerd_ttrpc])
        .args([&s.session, &s.task_sock, &s.events_sock, &s.map])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // Out of the way of 3 and 4 first, so that neither dup2 overwrites the other's source.
    let high = |fd: &OwnedFd| {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
            // SAFETY: a fresh descriptor F_DUPFD_CLOEXEC returned, owned by nothing else.
            .map(|n| unsafe { OwnedFd::from_raw_fd(n) })
    };
    let (task, events) = (high(&task)?, high(&events)?);
    let (t, e) = (task.as_raw_fd(), events.as_raw_fd());
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, dup2).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            for (from, to) in [(t, 3), (e, 4)] {
                if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().context("starting the proxy server")?;
    Ok(())
}

fn serve_main(argv: &[String]) -> Result<()> {
    let [real, containerd_ttrpc, session, task_sock, events_sock, map] = argv else {
        bail!("expected 6 arguments, got {argv:?}");
    };
    // SAFETY: fds 3 and 4 were set up by `spawn_server` and are owned by nothing else here.
    let (task, events) = unsafe { (OwnedFd::from_raw_fd(3), OwnedFd::from_raw_fd(4)) };
    let s = ServeArgs {
        real: real.clone(),
        containerd_ttrpc: containerd_ttrpc.clone(),
        session: session.into(),
        task_sock: task_sock.into(),
        events_sock: events_sock.into(),
        map: map.into(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(serve(&s, task, events));
    for p in [&s.task_sock, &s.events_sock, &s.map] {
        let _ = std::fs::remove_file(p);
    }
    r
}

/// Dials an address as containerd does: `unix://PATH`, a bare path, or an abstract name.
async fn dial(address: &str) -> std::io::Result<UnixStream> {
    match dialect::socket_path(address) {
        Some(p) => UnixStream::connect(p).await,
        None if address.starts_with('/') => UnixStream::connect(address).await,
        None => {
            use std::os::linux::net::SocketAddrExt;
            let name = address
                .trim_start_matches("unix://")
                .trim_start_matches('@');
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            let s = std::os::unix::net::UnixStream::connect_addr(&addr)?;
            s.set_nonblocking(true)?;
            UnixStream::from_std(s)
        }
    }
}

async fn serve(s: &ServeArgs, task: OwnedFd, events: OwnedFd) -> Result<()> {
    let rec = Arc::new(Recorder::open(&s.session)?);
    let to_listener = |fd: OwnedFd| -> Result<tokio::net::UnixListener> {
        let l = std::os::unix::net::UnixListener::from(fd);
        l.set_nonblocking(true)?;
        Ok(tokio::net::UnixListener::from_std(l)?)
    };
    let (task, events) = (to_listener(task)?, to_listener(events)?);
    let gone = Arc::new(tokio::sync::Notify::new());
    let mut conn = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            a = task.accept() => {
                conn += 1;
                let down = a?.0;
                let (rec, gone, real) = (rec.clone(), gone.clone(), s.real.clone());
                tokio::spawn(async move {
                    if let Ok(up) = dial(&real).await {
                        relay(down, up, conn, false, rec).await;
                    }
                    if dial(&real).await.is_err() {
                        gone.notify_one();
                    }
                });
            }
            a = events.accept() => {
                conn += 1;
                let down = a?.0;
                let (rec, addr) = (rec.clone(), s.containerd_ttrpc.clone());
                tokio::spawn(async move {
                    if let Ok(up) = dial(&addr).await {
                        relay(down, up, conn, true, rec).await;
                    }
                });
            }
            _ = gone.notified() => break,
            _ = tick.tick() => {
                if dialect::socket_path(&s.real).is_some_and(|p| !p.exists()) {
                    break;
                }
            }
        }
    }
    // Events the real shim sent just before it went are still being forwarded.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// Relays frames between `down` (the side that sends requests) and `up`, recording each
/// request and response; when either side closes, the other is closed too.
async fn relay(down: UnixStream, up: UnixStream, conn: u32, events: bool, rec: Arc<Recorder>) {
    let (mut dr, mut dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    let rec2 = rec.clone();
    let requests = async move {
        while let Ok(m) = GenMessage::read_from(&mut dr).await {
            note_request(&rec, conn, events, &m);
            if m.write_to(&mut uw).await.is_err() {
                break;
            }
        }
        let _ = uw.shutdown().await;
    };
    let responses = async move {
        while let Ok(m) = GenMessage::read_from(&mut ur).await {
            note_response(&rec2, conn, events, &m);
            if m.write_to(&mut dw).await.is_err() {
                break;
            }
        }
        let _ = dw.shutdown().await;
    };
    tokio::join!(requests, responses);
}

fn note_request(rec: &Recorder, conn: u32, events: bool, m: &GenMessage) {
    if m.header.type_ != ttrpc::proto::MESSAGE_TYPE_REQUEST {
        return;
    }
    let Ok(r) = ttrpc::proto::Request::parse_from_bytes(&m.payload) else {
        return;
    };
    if !events && r.method == "Create" {
        note_bundle(rec, &r.payload);
    }
    rec.write(&Entry::Request {
        t: now_ms(),
        conn,
        stream: m.header.stream_id,
        events,
        service: r.service.clone(),
        method: r.method.clone(),
        payload: hex::encode(&r.payload),
        timeout_nano: r.timeout_nano,
    });
}

/// The bundle's `config.json` as the Create found it (the bundle is removed later).
fn note_bundle(rec: &Recorder, payload: &[u8]) {
    let Ok(c) = containerd_shim_protos::api::CreateTaskRequest::parse_from_bytes(payload) else {
        return;
    };
    let path = Path::new(&c.bundle).join("config.json");
    let spec = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(spec) = spec {
        rec.write(&Entry::Bundle {
            t: now_ms(),
            id: c.id,
            spec,
        });
    }
}

fn note_response(rec: &Recorder, conn: u32, events: bool, m: &GenMessage) {
    if m.header.type_ != ttrpc::proto::MESSAGE_TYPE_RESPONSE {
        return;
    }
    let Ok(r) = ttrpc::proto::Response::parse_from_bytes(&m.payload) else {
        return;
    };
    let (code, message) = r
        .status
        .as_ref()
        .map(|s| (s.code.value(), s.message.clone()))
        .unwrap_or((0, String::new()));
    rec.write(&Entry::Response {
        t: now_ms(),
        conn,
        stream: m.header.stream_id,
        events,
        code,
        message,
        payload: hex::encode(&r.payload),
    });
}
