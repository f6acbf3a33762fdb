//! Acceptance tests of the harness core (issue 3): full lifecycles through the library API
//! against real shims, and bad shims that must fail clearly, within their bounds, leaving
//! nothing running.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use containerd_shim_protos::api::{
    DeleteRequest, KillRequest, ShutdownRequest, StartRequest, StateRequest, WaitRequest,
};
use harness::bundle::{process, Bundle, BundleOptions, RootfsKind};
use harness::client::RpcError;
use harness::dialect::{Dialect, TaskApi};
use harness::error::{AddressError, LaunchError};
use harness::events::{EventSource, RecordedEvent};
use harness::launch::{LaunchOptions, MockConfig, MockContainerd, Timeouts};
use harness::leaks;
use harness::procfs;
use harness::stdio::{StdioMode, StdioOptions, StdioSet};

#[path = "core/bad_shims.rs"]
mod bad_shims;
#[path = "core/interop.rs"]
mod interop;
#[path = "core/launch.rs"]
mod launch;
#[path = "core/lifecycle.rs"]
mod lifecycle;

const RUNC_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";

const RUNC_RS_SHIM: &str = "/opt/runc-rs/bin/containerd-shim-runc-v2-rs";

/// `<target>/debug/containerd-shim-reaper-v2`, derived from this test executable's location.
fn reaper_shim() -> Result<PathBuf> {
    Ok(testkit::reaper())
}

fn require(path: &str, hint: &str) -> Result<PathBuf> {
    let p = PathBuf::from(path);
    ensure!(p.is_file(), "{path} missing: {hint}");
    Ok(p)
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// The init process of the lifecycle: announces itself once the TERM trap is set, then
/// exits 143 on SIGTERM (pid 1 in a pid namespace ignores signals without a handler).
const TRAP_INIT: &str = "trap 'kill $! 2>/dev/null; exit 143' TERM; echo ready; sleep 30 & wait";

fn topics_for<'a>(evs: &'a [RecordedEvent], id: &str) -> Vec<&'a str> {
    evs.iter()
        .filter(|e| e.event.container_id() == id)
        .map(|e| e.topic.as_str())
        .collect()
}

/// launch → create → (wait) → start → kill SIGTERM → wait 143 → state → delete → shutdown →
/// close (delete action), with the event sequence and the leak report checked.
async fn lifecycle(
    shim: &Path,
    dialect: Dialect,
    rootfs: RootfsKind,
    id: &str,
    api: Option<TaskApi>,
) -> Result<()> {
    let cfg = MockConfig {
        dialect,
        namespace: "default".into(),
        debug: true,
        timeouts: Timeouts::default(),
    };
    let mock = MockContainerd::new(cfg).await?;
    let bundle = Bundle::create(
        &mock.bundle_parent(),
        id,
        process(&["sh", "-c", TRAP_INIT]),
        BundleOptions {
            rootfs,
            ..Default::default()
        },
    )?;
    let stdio = StdioSet::create(
        &mock.state_dir().join("fifo"),
        id,
        StdioOptions {
            stdin: StdioMode::Null,
            ..Default::default()
        },
    )?;
    let shim = mock
        .launch(shim, &bundle, LaunchOptions::default())
        .await
        .with_context(|| format!("launching {} under {dialect}", shim.display()))?;
    if let Some(api) = api {
        ensure!(shim.api == api, "task api {} (want {api})", shim.api);
    }
    let rpc = Duration::from_secs(10);
    let client = shim.client();
    let created = client
        .create(bundle.create_request(stdio.paths(), false, None), rpc)
        .await
        .context("create")?;
    ensure!(created.pid > 0, "create returned pid 0");
    // As ctr does: Wait before Start so a fast exit cannot be missed.
    let waiter = {
        let c = client.clone();
        let req = WaitRequest {
            id: id.into(),
            ..Default::default()
        };
        tokio::spawn(async move { c.wait(req, Duration::from_secs(30)).await })
    };
    let started = client
        .start(
            StartRequest {
                id: id.into(),
                ..Default::default()
            },
            rpc,
        )
        .await
        .context("start")?;
    ensure!(started.pid > 0, "start returned pid 0");
    ensure!(
        stdio
            .wait_output(|o, _| o.windows(5).any(|w| w == b"ready"), ms(10_000))
            .await,
        "init never printed `ready` on stdout: {:?}",
        String::from_utf8_lossy(&stdio.stdout())
    );
    client
        .kill(
            KillRequest {
                id: id.into(),
                signal: 15,
                ..Default::default()
            },
            rpc,
        )
        .await
        .context("kill SIGTERM")?;
    let waited = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .context("wait did not return within 15s")??
        .context("wait")?;
    ensure!(
        waited.exit_status == 143,
        "wait: exit status {}",
        waited.exit_status
    );
    let st = client
        .state(
            StateRequest {
                id: id.into(),
                ..Default::default()
            },
            rpc,
        )
        .await
        .context("state")?;
    ensure!(
        st.exit_status == 143,
        "state exit status {}",
        st.exit_status
    );
    let del = client
        .delete(
            DeleteRequest {
                id: id.into(),
                ..Default::default()
            },
            rpc,
        )
        .await
        .context("delete")?;
    ensure!(
        del.exit_status == 143,
        "delete exit status {}",
        del.exit_status
    );
    let events = mock.events();
    let want = testkit::LIFECYCLE_TOPICS;
    // The delete event may be sent in the background (doc 12): wait for it.
    let seen = events
        .wait_until(|evs| topics_for(evs, id) == want, Duration::from_secs(5))
        .await;
    let all = events.snapshot();
    ensure!(seen, "events for {id}: {:?}", topics_for(&all, id));
    let exit = all
        .iter()
        .find(|e| e.topic == "/tasks/exit")
        .context("no exit event")?;
    ensure!(
        exit.fields["exit-status"] == 143,
        "exit event {}",
        exit.fields
    );
    ensure!(exit.source == EventSource::Shim);
    ensure!(all.iter().all(|e| e.namespace == "default"));
    let create_ev = all.iter().find(|e| e.topic == "/tasks/create").unwrap();
    ensure!(
        create_ev.fields["pid"] == created.pid,
        "create event {}",
        create_ev.fields
    );
    ensure!(
        events.rejected().is_empty(),
        "rejected: {:?}",
        events.rejected()
    );
    client
        .shutdown(
            ShutdownRequest {
                id: id.into(),
                ..Default::default()
            },
            rpc,
        )
        .await
        .or_else(|e| match e {
            // Exiting before the reply is written is tolerated, as containerd does.
            RpcError::Transport(_) => Ok(Default::default()),
            e => Err(e),
        })
        .context("shutdown")?;
    let server = shim.pid;
    ensure!(server.is_some(), "server pid not found through its socket");
    let report = shim.close().await;
    let outcome = report
        .delete_action
        .as_ref()
        .map_err(|e| anyhow::anyhow!("delete action: {e}"))?;
    ensure!(
        outcome.duration < Duration::from_secs(5),
        "delete action took {:?}",
        outcome.duration
    );
    ensure!(
        report.synthetic_events.is_empty(),
        "synthetic events after a clean delete"
    );
    ensure!(!report.sent_shutdown);
    ensure!(report.server_exited, "server did not exit after Shutdown");
    ensure!(report.leaks.is_empty(), "leaks: {:#?}", report.leaks);
    ensure!(!procfs::is_alive(server.unwrap()));
    Ok(())
}

/// Tight bounds so a hang shows up fast.
fn tight() -> Timeouts {
    Timeouts {
        start: Duration::from_secs(5),
        connect: Duration::from_secs(1),
        rpc: Duration::from_secs(1),
        delete_action: Duration::from_secs(2),
        shutdown: Duration::from_secs(1),
    }
}

struct Bad {
    mock: MockContainerd,
    bundle: Bundle,
    dir: tempfile::TempDir,
}

async fn bad_setup(dialect: Dialect, id: &str) -> Result<Bad> {
    let mock = MockContainerd::new(MockConfig {
        dialect,
        namespace: "default".into(),
        debug: false,
        timeouts: tight(),
    })
    .await?;
    let bundle = Bundle::create(
        &mock.bundle_parent(),
        id,
        process(&["true"]),
        BundleOptions::default(),
    )?;
    Ok(Bad {
        mock,
        bundle,
        dir: tempfile::tempdir()?,
    })
}

/// Writes an executable shell script (the `bad shim`) and returns its path.
fn script(dir: &Path, name: &str, body: &str, exec: bool) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n"))?;
    std::fs::set_permissions(
        &p,
        std::fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
    )?;
    Ok(p)
}

/// Pids recorded by a bad shim (it appends `$$` of anything it starts to `<bundle>/pids`).
fn recorded_pids(bundle: &Bundle) -> Vec<i32> {
    std::fs::read_to_string(bundle.path().join("pids"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn assert_all_gone(pids: &[i32]) -> Result<()> {
    for &p in pids {
        ensure!(
            !procfs::is_alive(p),
            "pid {p} ({:?}) left running",
            procfs::proc_info(p)
        );
    }
    Ok(())
}

/// Not a test on its own: the listener process of the bad shims below (a socket that accepts
/// connections in the kernel backlog and never answers). Runs only with HARNESS_TEST_LISTEN.
#[test]
#[ignore = "helper process started by the bad-shim tests"]
fn helper_silent_listener() {
    let Some(path) = std::env::var_os("HARNESS_TEST_LISTEN") else {
        panic!("HARNESS_TEST_LISTEN not set: this helper is started by bad-shim tests");
    };
    let _l = std::os::unix::net::UnixListener::bind(path).expect("bind");
    if std::env::var_os("HARNESS_TEST_ZOMBIE").is_some() {
        // A child that exits and is never waited for: a zombie under the "server".
        let child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        std::mem::forget(child);
    }
    std::thread::sleep(Duration::from_secs(60));
}

/// A shim script whose `start` leaves a silent listener behind and prints `print` (with
/// `@ADDR@` replaced by its address); its `delete` fails.
fn silent_server_shim(dir: &Path, print: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let print = print.replace("@ADDR@", "unix://$PWD/s.sock");
    script(
        dir,
        "shim",
        &format!(
            r#"case "$*" in *delete) echo 'nothing to delete' >&2; exit 1;; esac
HARNESS_TEST_LISTEN="$PWD/s.sock" {exe} --exact helper_silent_listener --ignored --nocapture </dev/null >/dev/null 2>&1 &
echo $! >> pids
i=0; while [ ! -S "$PWD/s.sock" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
printf '%s' "{print}""#,
            exe = exe.display()
        ),
        true,
    )
}

fn runc_rs() -> Result<PathBuf> {
    require(
        RUNC_RS_SHIM,
        "run ci/interop.sh (cargo install containerd-runc-shim --root /opt/runc-rs)",
    )
}

/// A shim script that records what it was given (argv, env, cwd, stdin, pgid, the `log` FIFO)
/// into its bundle, writes a line to `log`, leaves a listener and prints its address.
fn recorder_shim(dir: &Path) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    script(
        dir,
        "recorder",
        &format!(
            r#"case "$*" in *delete) printf '%s\n' "$@" > delete.argv; pwd > delete.cwd; exit 0;; esac
printf '%s\n' "$@" > argv
env > env
pwd > cwd
cat > stdin.bin
cut -d' ' -f5 /proc/$$/stat > pgid
echo $$ > pid
[ -p log ] && echo fifo > log.kind
echo "hello from start" > log
HARNESS_TEST_LISTEN="$PWD/s.sock" {exe} --exact helper_silent_listener --ignored --nocapture </dev/null >/dev/null 2>&1 &
echo $! >> pids
i=0; while [ ! -S "$PWD/s.sock" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
printf 'unix://%s/s.sock' "$PWD""#,
            exe = exe.display()
        ),
        true,
    )
}

fn read(bundle: &Bundle, name: &str) -> Result<String> {
    std::fs::read_to_string(bundle.path().join(name))
        .with_context(|| format!("{name} not written by the recorder shim"))
}
