//! In-process tests of the inherent `task_*` and `sandbox_*` layers: a [`Shim`] built in this
//! test process and called without a socket, running real host processes from real bundles, with
//! the server's reaper wiring and its events recorded on a channel.

mod sandbox;
mod tasks;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use containerd_shim_protos::api::{
    CreateTaskRequest, KillRequest, StartRequest, StateRequest, StateResponse, WaitRequest,
    WaitResponse,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskStart,
};
use containerd_shim_protos::protobuf::MessageDyn;
use tokio::sync::watch;

use crate::api::Shim;
use crate::events::EventSender;
use crate::faults::Faults;
use crate::reaper::{become_subreaper, Reaper};

/// The bound of every wait in these tests.
pub(super) const LIMIT: Duration = Duration::from_secs(10);

/// PATH for the bundles' processes.
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The one reaper of this test process, wired as the server wires its own (subreaper, then the
/// SIGCHLD loop), on a thread of its own so that it outlives each test's runtime. One for all
/// tests: its `waitpid(-1)` reaps every child of the process, and hands each exit to the shim
/// that subscribed the pid (a reaper per test would take other tests' exits as orphans').
fn reaper() -> Arc<Reaper> {
    static REAPER: OnceLock<Arc<Reaper>> = OnceLock::new();
    REAPER
        .get_or_init(|| {
            become_subreaper();
            let reaper = Reaper::new();
            let (started_tx, started_rx) = std::sync::mpsc::channel();
            let r = reaper.clone();
            std::thread::Builder::new()
                .name("test-reaper".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("the reaper's runtime");
                    rt.block_on(async move {
                        let _ = started_tx.send(r.start().map_err(|e| e.to_string()));
                        std::future::pending::<()>().await
                    })
                })
                .expect("spawn the reaper thread");
            started_rx
                .recv_timeout(LIMIT)
                .expect("the reaper thread answers")
                .expect("install the SIGCHLD handler");
            reaper
        })
        .clone()
}

impl Shim {
    /// A shim as the server builds it (the process-wide reaper, no faults) in a namespace of its
    /// own, whose tasks run on their sessions rather than cgroups, publishing to `events`.
    pub(crate) fn for_test(events: Arc<dyn EventSender>) -> Arc<Shim> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let namespace = format!("reaper-unit-{}-{n}", std::process::id());
        Shim::new(namespace, reaper(), events, Faults::default(), false)
    }
}

/// Stands in for the shim binary's `pause` action when a test starts a pod: the pause is this
/// binary run with [`crate::pod::PAUSE_ARGS`]. Ignored in test runs; it acts only when its parent is this
/// same binary, so a `cargo test -- --ignored` returns at once.
#[test]
#[ignore = "a pod's pause process, started by the sandbox tests"]
fn pause_stand_in() {
    let me = std::env::current_exe().ok();
    // SAFETY: getppid is a plain syscall.
    let parent = std::fs::read_link(format!("/proc/{}/exe", unsafe { libc::getppid() })).ok();
    if me.is_some() && me == parent {
        std::process::exit(crate::service::pause_action());
    }
}

/// One published event: the fields the tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ev {
    /// The topic, e.g. `/tasks/exit`.
    pub topic: &'static str,
    /// The container.
    pub container: String,
    /// The process: the container id for init, else the exec id (empty if the event names none).
    pub id: String,
    /// The pid.
    pub pid: u32,
    /// The exit status (exit and delete events).
    pub status: u32,
}

fn decode(topic: &'static str, m: &dyn MessageDyn) -> Ev {
    let or = |id: &str, container: &str| {
        if id.is_empty() {
            container.to_string()
        } else {
            id.to_string()
        }
    };
    let (container, id, pid, status) = if let Some(e) = m.downcast_ref::<TaskCreate>() {
        (e.container_id.clone(), e.container_id.clone(), e.pid, 0)
    } else if let Some(e) = m.downcast_ref::<TaskStart>() {
        (e.container_id.clone(), e.container_id.clone(), e.pid, 0)
    } else if let Some(e) = m.downcast_ref::<TaskExit>() {
        (e.container_id.clone(), e.id.clone(), e.pid, e.exit_status)
    } else if let Some(e) = m.downcast_ref::<TaskDelete>() {
        let id = or(&e.id, &e.container_id);
        (e.container_id.clone(), id, e.pid, e.exit_status)
    } else if let Some(e) = m.downcast_ref::<TaskExecAdded>() {
        (e.container_id.clone(), e.exec_id.clone(), 0, 0)
    } else if let Some(e) = m.downcast_ref::<TaskExecStarted>() {
        (e.container_id.clone(), e.exec_id.clone(), e.pid, 0)
    } else {
        Default::default()
    };
    Ev {
        topic,
        container,
        id,
        pid,
        status,
    }
}

/// The events publisher of the in-process shim: every event, in order, on a watch channel.
pub(super) struct Recorder {
    seen: watch::Sender<Vec<Ev>>,
}

impl EventSender for Recorder {
    fn send(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        let ev = decode(topic, event.as_ref());
        self.seen.send_modify(|all| all.push(ev));
    }
}

impl Recorder {
    /// The events of `container` so far, as `(topic, id, status)`.
    pub fn of(&self, container: &str) -> Vec<(&'static str, String, u32)> {
        self.seen
            .borrow()
            .iter()
            .filter(|e| e.container == container)
            .map(|e| (e.topic, e.id.clone(), e.status))
            .collect()
    }

    /// Waits (bounded) until `container` has had an event on `topic` for process `id`.
    pub async fn wait_for(&self, container: &str, topic: &str, id: &str) -> Ev {
        let mut rx = self.seen.subscribe();
        let found = |all: &Vec<Ev>| {
            all.iter()
                .find(|e| e.container == container && e.topic == topic && e.id == id)
                .cloned()
        };
        let what = format!("{topic} of {container}/{id}");
        bounded(&what, rx.wait_for(|all| found(all).is_some()))
            .await
            .map(|all| found(&all))
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("{what}: the recorder went away"))
    }
}

/// Awaits `f`, failing the test after [`LIMIT`].
pub(super) async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {LIMIT:?}"))
}

/// An in-process shim, its recorded events and its bundles. Dropping it ends whatever the test
/// left running the way the server ends it at exit ([`Shim::kill_all_tasks`]: by the pids the
/// shim owns), then removes the bundles.
pub(super) struct Fixture {
    /// The shim under test.
    pub shim: Arc<Shim>,
    /// What it published.
    pub events: Arc<Recorder>,
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

impl Fixture {
    /// A fresh shim with no container.
    pub fn new() -> Self {
        let events = Arc::new(Recorder {
            seen: watch::channel(Vec::new()).0,
        });
        Fixture {
            shim: Shim::for_test(events.clone()),
            events,
            dirs: Mutex::default(),
        }
    }

    /// An empty bundle directory (a pod's), removed with the fixture.
    pub fn dir(&self) -> String {
        let d = tempfile::Builder::new()
            .prefix("reaper-unit-")
            .tempdir()
            .expect("temp dir");
        let path = d.path().display().to_string();
        self.dirs.lock().expect("dirs").push(d);
        path
    }

    /// A bundle whose config.json runs `args` as this user, in `/`.
    pub fn bundle(&self, args: &[&str]) -> String {
        let dir = self.dir();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": process_json(args),
            "root": {"path": "rootfs"},
        });
        let bytes = serde_json::to_vec(&spec).expect("spec json");
        std::fs::write(std::path::Path::new(&dir).join("config.json"), bytes).expect("config");
        dir
    }

    /// Create of `id` running `args`, with no stdio.
    pub fn create_req(&self, id: &str, args: &[&str]) -> CreateTaskRequest {
        CreateTaskRequest {
            id: id.into(),
            bundle: self.bundle(args),
            ..Default::default()
        }
    }

    /// Creates and starts `id` running `args`; its pid.
    pub async fn run(&self, id: &str, args: &[&str]) -> u32 {
        let created = self.shim.task_create(self.create_req(id, args)).await;
        let pid = created.expect("create").pid;
        let started = self.shim.task_start(start(id, "")).await.expect("start");
        assert_eq!(started.pid, pid, "Start reports the pid of Create");
        pid
    }

    /// State of `id`'s process `exec` (empty: init).
    pub async fn state(&self, id: &str, exec: &str) -> StateResponse {
        let req = StateRequest {
            id: id.into(),
            exec_id: exec.into(),
            ..Default::default()
        };
        self.shim.task_state(req).await.expect("state")
    }

    /// Waits (bounded) for `id`'s process `exec` to exit.
    pub async fn wait(&self, id: &str, exec: &str) -> WaitResponse {
        let req = WaitRequest {
            id: id.into(),
            exec_id: exec.into(),
            ..Default::default()
        };
        let what = format!("wait {id}/{exec}");
        bounded(&what, self.shim.task_wait(req)).await.expect(&what)
    }

    /// Sends `signal` to `id`'s process `exec`.
    pub async fn kill(&self, id: &str, exec: &str, signal: i32) -> crate::error::Result<()> {
        let req = KillRequest {
            id: id.into(),
            exec_id: exec.into(),
            signal: signal as u32,
            ..Default::default()
        };
        self.shim.task_kill(req).await
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // On a thread of its own: this may run inside the test's runtime (or while a panic
        // unwinds out of it), where no other runtime may block.
        let shim = self.shim.clone();
        let ended = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), shim.kill_all_tasks()).await
            })
            .is_ok()
        })
        .join();
        if !std::thread::panicking() {
            assert!(ended.expect("cleanup thread"), "tasks left after 30 s");
        }
    }
}

/// An OCI process running `args` as this user in `/`.
pub(super) fn process_json(args: &[&str]) -> serde_json::Value {
    // SAFETY: getuid and getgid are plain syscalls.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    serde_json::json!({
        "terminal": false,
        "user": {"uid": uid, "gid": gid},
        "args": args,
        "env": [PATH_ENV],
        "cwd": "/",
    })
}

/// Start of `id`'s process `exec`.
pub(super) fn start(id: &str, exec: &str) -> StartRequest {
    StartRequest {
        id: id.into(),
        exec_id: exec.into(),
        ..Default::default()
    }
}
