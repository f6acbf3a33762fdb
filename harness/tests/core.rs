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
use harness::stdio::{StdioMode, StdioOptions, StdioSet};

const RUNC_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
const RUNC_RS_SHIM: &str = "/opt/runc-rs/bin/containerd-shim-runc-v2-rs";

/// `<target>/debug/containerd-shim-reaper-v2`, derived from this test executable's location.
fn reaper_shim() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let debug = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target/debug parent")?;
    let p = debug.join("containerd-shim-reaper-v2");
    ensure!(
        p.is_file(),
        "{} missing: run `cargo build -p containerd-shim-reaper`",
        p.display()
    );
    Ok(p)
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
    let want = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
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
    ensure!(!leaks::is_alive(server.unwrap()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_runc_shim_dialect_2_0() -> Result<()> {
    let shim = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    lifecycle(
        &shim,
        Dialect::V2_0,
        RootfsKind::Busybox,
        "runc20",
        Some(TaskApi::V2),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_runc_shim_dialect_1_6() -> Result<()> {
    let shim = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    lifecycle(
        &shim,
        Dialect::V1_6,
        RootfsKind::Busybox,
        "runc16",
        Some(TaskApi::V2),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_runc_shim_dialect_1_7() -> Result<()> {
    let shim = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    lifecycle(
        &shim,
        Dialect::V1_7,
        RootfsKind::Busybox,
        "runc17",
        Some(TaskApi::V2),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_reaper_shim_dialect_2_0() -> Result<()> {
    let shim = reaper_shim()?;
    lifecycle(&shim, Dialect::V2_0, RootfsKind::None, "reaper20", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_reaper_shim_dialect_1_6() -> Result<()> {
    let shim = reaper_shim()?;
    lifecycle(
        &shim,
        Dialect::V1_6,
        RootfsKind::None,
        "reaper16",
        Some(TaskApi::V2),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Bad shims: each a clear error within its bound, no hang, nothing left running.

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
            !leaks::is_alive(p),
            "pid {p} ({:?}) left running",
            leaks::proc_info(p)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shim_not_executable() -> Result<()> {
    let b = bad_setup(Dialect::V2_0, "noexec").await?;
    let shim = script(
        b.dir.path(),
        "containerd-shim-noexec-v2",
        "echo unix:///x",
        false,
    )?;
    let t0 = Instant::now();
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("a non-executable shim launched")?;
    ensure!(matches!(err, LaunchError::Binary { .. }), "{err:?}");
    ensure!(err.to_string().contains("not executable"), "{err}");
    ensure!(
        err.to_string().contains("containerd-shim-noexec-v2"),
        "{err}"
    );
    ensure!(t0.elapsed() < ms(500));
    let missing = b
        .mock
        .launch(
            &b.dir.path().join("nope"),
            &b.bundle,
            LaunchOptions::default(),
        )
        .await
        .err()
        .context("a missing shim launched")?;
    ensure!(missing.to_string().contains("nope"), "{missing}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shim_exits_non_zero_at_start() -> Result<()> {
    let b = bad_setup(Dialect::V2_0, "exit3").await?;
    let shim = script(
        b.dir.path(),
        "shim",
        "echo $$ >> pids; echo 'cannot start: no runtime' >&2; exit 3",
        true,
    )?;
    let t0 = Instant::now();
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("launched")?;
    match &err {
        LaunchError::StartFailed { output, status } => {
            ensure!(
                *status == 3 && output == "cannot start: no runtime",
                "{err:?}"
            );
        }
        other => bail!("unexpected {other:?}"),
    }
    ensure!(
        err.to_string() == "start failed: cannot start: no runtime: exit status 3",
        "{err}"
    );
    ensure!(t0.elapsed() < Duration::from_secs(5));
    assert_all_gone(&recorded_pids(&b.bundle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shim_prints_garbage() -> Result<()> {
    let b = bad_setup(Dialect::V1_7, "garbage").await?;
    let shim = script(b.dir.path(), "shim", "echo 'hello, I am a shim!'", true)?;
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("launched")?;
    ensure!(
        matches!(
            &err,
            LaunchError::Address {
                reason: AddressError::NotAnAddress { .. },
                ..
            }
        ),
        "{err:?}"
    );
    ensure!(err.to_string().contains("hello, I am a shim!"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shim_never_prints_is_bounded_and_killed() -> Result<()> {
    let b = bad_setup(Dialect::V2_0, "silent").await?;
    // A child that keeps the output pipe open, as a daemon that forgot to detach would.
    let shim = script(
        b.dir.path(),
        "shim",
        "sleep 60 & echo $! >> pids; echo $$ >> pids; wait",
        true,
    )?;
    let t0 = Instant::now();
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("launched")?;
    let took = t0.elapsed();
    ensure!(matches!(err, LaunchError::StartTimeout { .. }), "{err:?}");
    ensure!(
        err.to_string().contains("did not finish within 5s"),
        "{err}"
    );
    ensure!(took < Duration::from_secs(8), "took {took:?}");
    let pids = recorded_pids(&b.bundle);
    ensure!(pids.len() == 2, "pids {pids:?}");
    assert_all_gone(&pids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shim_writes_to_stderr_during_start() -> Result<()> {
    let runc = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    let b = bad_setup(Dialect::V2_0, "chatty").await?;
    // The real runc shim, but something logs to stderr first: CombinedOutput mixes it in.
    let shim = script(
        b.dir.path(),
        "shim",
        &format!(
            "echo 'level=info msg=\"starting shim\"' >&2\nexec {} \"$@\"",
            runc.display()
        ),
        true,
    )?;
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("launched")?;
    let LaunchError::Address { reason, killed } = &err else {
        bail!("unexpected {err:?}");
    };
    ensure!(
        matches!(reason, AddressError::NotAnAddress { .. }),
        "{reason:?}"
    );
    ensure!(err.to_string().contains("starting shim"), "{err}");
    // The server the runc shim started is found through its socket and ended.
    ensure!(
        !killed.is_empty(),
        "leaked runc shim server not found: {err}"
    );
    assert_all_gone(killed)?;
    let addr = std::fs::read_to_string(b.bundle.path().join("address"))?;
    let sock = harness::dialect::socket_path(addr.trim()).context("address file")?;
    ensure!(!sock.exists(), "socket {} left", sock.display());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shim_server_never_answers() -> Result<()> {
    let b = bad_setup(Dialect::V2_0, "mute").await?;
    let shim = silent_server_shim(b.dir.path(), "@ADDR@")?;
    let s = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .context("launch of a shim whose server accepts but never answers")?;
    let helper = recorded_pids(&b.bundle);
    ensure!(helper.len() == 1, "{helper:?}");
    ensure!(
        s.pid == Some(helper[0]),
        "server pid {:?} vs {helper:?}",
        s.pid
    );
    ensure!(s.api == TaskApi::V2);
    let t0 = Instant::now();
    let err = s
        .client()
        .create(
            b.bundle.create_request(Default::default(), false, None),
            tight().rpc,
        )
        .await
        .err()
        .context("create answered")?;
    let took = t0.elapsed();
    ensure!(matches!(err, RpcError::Timeout(_)), "{err:?}");
    ensure!(err.code_name() == "deadline-exceeded");
    ensure!(took < Duration::from_secs(5), "took {took:?}");
    let t1 = Instant::now();
    let report = s.close().await;
    ensure!(
        t1.elapsed() < Duration::from_secs(8),
        "close took {:?}",
        t1.elapsed()
    );
    let de = report
        .delete_action
        .as_ref()
        .err()
        .context("delete action succeeded")?;
    ensure!(
        de.contains("nothing to delete") && de.contains("exit status 1"),
        "{de}"
    );
    ensure!(report.sent_shutdown && !report.server_exited);
    ensure!(
        report
            .leaks
            .iter()
            .any(|l| l.pid == Some(helper[0]) && l.cleaned),
        "leaks {:#?}",
        report.leaks
    );
    ensure!(report.synthetic_events.is_empty(), "no task was created");
    let sock = b.bundle.path().join("s.sock");
    ensure!(
        report
            .leaks
            .iter()
            .any(|l| l.kind == leaks::LeakKind::Socket && l.path.as_deref() == Some(&*sock)),
        "socket leak not reported: {:#?}",
        report.leaks
    );
    ensure!(!sock.exists());
    assert_all_gone(&helper)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bootstrap_under_1_6_is_refused_and_its_server_ended() -> Result<()> {
    let b = bad_setup(Dialect::V1_6, "json16").await?;
    let shim = silent_server_shim(
        b.dir.path(),
        r#"{\"version\":3,\"address\":\"@ADDR@\",\"protocol\":\"ttrpc\"}"#,
    )?;
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("launched under 1.6")?;
    ensure!(
        err.to_string()
            .starts_with("start printed a JSON bootstrap; containerd 1.6 dials it as a path"),
        "{err}"
    );
    let helper = recorded_pids(&b.bundle);
    let LaunchError::Address { killed, .. } = &err else {
        bail!("{err:?}")
    };
    ensure!(killed == &helper, "killed {killed:?}, started {helper:?}");
    assert_all_gone(&helper)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_version_3_under_1_7_is_unsupported() -> Result<()> {
    let b = bad_setup(Dialect::V1_7, "json17").await?;
    let shim = silent_server_shim(
        b.dir.path(),
        r#"{\"version\":3,\"address\":\"@ADDR@\",\"protocol\":\"ttrpc\"}"#,
    )?;
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("launched under 1.7")?;
    ensure!(
        err.to_string().contains("unsupported shim version (3)"),
        "{err}"
    );
    assert_all_gone(&recorded_pids(&b.bundle))
}

// ---------------------------------------------------------------------------------------------
// Interop with the Rust runc shim (`cargo install containerd-runc-shim`): run by ci/interop.sh.

fn runc_rs() -> Result<PathBuf> {
    require(
        RUNC_RS_SHIM,
        "run ci/interop.sh (cargo install containerd-runc-shim --root /opt/runc-rs)",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd-shim-runc-v2-rs (about 6 min to build); run ci/interop.sh"]
async fn interop_runc_rs_lifecycle_dialect_2_0() -> Result<()> {
    lifecycle(
        &runc_rs()?,
        Dialect::V2_0,
        RootfsKind::Busybox,
        "rs20",
        Some(TaskApi::V3),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd-shim-runc-v2-rs (about 6 min to build); run ci/interop.sh"]
async fn interop_runc_rs_is_incompatible_with_1_6() -> Result<()> {
    let shim = runc_rs()?;
    let b = bad_setup(Dialect::V1_6, "rs16").await?;
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("the Rust runc shim launched under containerd 1.6")?;
    let LaunchError::Address { reason, killed } = &err else {
        bail!("unexpected {err:?}")
    };
    ensure!(
        matches!(reason, AddressError::JsonOn16 { .. }),
        "{reason:?}"
    );
    ensure!(
        err.to_string()
            .starts_with("start printed a JSON bootstrap; containerd 1.6 dials it as a path"),
        "{err}"
    );
    // As under the real containerd 1.6 the server was started; the harness finds and ends it.
    ensure!(!killed.is_empty(), "leaked server not found: {err}");
    assert_all_gone(killed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd-shim-runc-v2-rs (about 6 min to build); run ci/interop.sh"]
async fn interop_runc_rs_is_unsupported_under_1_7() -> Result<()> {
    let shim = runc_rs()?;
    let b = bad_setup(Dialect::V1_7, "rs17").await?;
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("the Rust runc shim launched under containerd 1.7")?;
    let LaunchError::Address { reason, killed } = &err else {
        bail!("unexpected {err:?}")
    };
    ensure!(
        *reason == AddressError::UnsupportedVersion { version: 3 },
        "{reason:?}"
    );
    ensure!(!killed.is_empty(), "leaked server not found: {err}");
    assert_all_gone(killed)
}

// ---------------------------------------------------------------------------------------------
// The launch itself, observed from inside a recording shim.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_matches_each_dialect_argv_env_cwd_stdin_and_log_fifo() -> Result<()> {
    for (dialect, debug) in [
        (Dialect::V1_6, true),
        (Dialect::V1_7, false),
        (Dialect::V2_0, true),
    ] {
        let id = format!("rec{}", dialect.to_string().replace('.', ""));
        let mock = MockContainerd::new(MockConfig {
            dialect,
            namespace: "probe".into(),
            debug,
            timeouts: tight(),
        })
        .await?;
        let bundle = Bundle::create(
            &mock.bundle_parent(),
            &id,
            process(&["true"]),
            BundleOptions::default(),
        )?;
        let dir = tempfile::tempdir()?;
        let shim = recorder_shim(dir.path())?;
        let opts = protobuf::well_known_types::any::Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: b"\x12\x0f/run/ctd/rt.toml".to_vec(),
            ..Default::default()
        };
        let s = mock
            .launch(
                &shim,
                &bundle,
                LaunchOptions {
                    runtime_options: Some(opts.clone()),
                    extra_env: vec![("RUNTIME_ENV".into(), "from-config".into())],
                },
            )
            .await
            .with_context(|| format!("launch under {dialect}"))?;
        let pb = mock.publish_binary().display().to_string();
        ensure!(
            mock.publish_binary()
                .file_name()
                .is_some_and(|n| n == "harness"),
            "-publish-binary is {pb}, not the harness binary"
        );
        let argv: Vec<String> = read(&bundle, "argv")?.lines().map(String::from).collect();
        ensure!(
            argv == dialect.start_argv("probe", mock.grpc_address(), &pb, &id, debug),
            "{dialect} argv {argv:?}"
        );
        let env = read(&bundle, "env")?;
        let has = |kv: &str| env.lines().any(|l| l == kv);
        ensure!(has("GOMAXPROCS=2"), "{dialect} env lacks GOMAXPROCS=2");
        ensure!(has(&format!("TTRPC_ADDRESS={}", mock.ttrpc_address())));
        ensure!(has("RUNTIME_ENV=from-config"));
        let newer = dialect != Dialect::V1_6;
        ensure!(
            has("MAX_SHIM_VERSION=2") == newer,
            "{dialect} MAX_SHIM_VERSION"
        );
        ensure!(has("NAMESPACE=probe") == newer, "{dialect} NAMESPACE");
        ensure!(
            has(&format!("GRPC_ADDRESS={}", mock.grpc_address())) == newer,
            "{dialect} GRPC_ADDRESS"
        );
        ensure!(read(&bundle, "cwd")?.trim() == bundle.path().display().to_string());
        let stdin = std::fs::read(bundle.path().join("stdin.bin"))?;
        ensure!(
            stdin == protobuf::Message::write_to_bytes(&opts)?,
            "stdin {stdin:?}"
        );
        // setpgid: the start process leads its own group.
        ensure!(read(&bundle, "pgid")?.trim() == read(&bundle, "pid")?.trim());
        ensure!(
            read(&bundle, "log.kind")?.trim() == "fifo",
            "log was not a FIFO"
        );
        let drained = s.log_lines();
        ensure!(
            drained.iter().any(|l| l == "hello from start"),
            "log lines {drained:?}"
        );
        ensure!(
            std::fs::read_to_string(bundle.path().join("shim-binary-path"))?
                == shim.display().to_string()
        );
        let bootstrap = bundle.path().join("bootstrap.json");
        if dialect == Dialect::V2_0 {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&bootstrap)?)?;
            ensure!(
                v["version"] == 2 && v["address"] == s.address.as_str(),
                "{v}"
            );
        } else {
            ensure!(!bootstrap.exists(), "{dialect} wrote bootstrap.json");
        }
        let report = s.close().await;
        ensure!(report.delete_action.is_ok(), "{:?}", report.delete_action);
        let dargv: Vec<String> = read(&bundle, "delete.argv")?
            .lines()
            .map(String::from)
            .collect();
        let b = bundle.path().display().to_string();
        ensure!(
            dargv == dialect.delete_argv("probe", mock.grpc_address(), &pb, &id, &b, debug),
            "{dialect} delete argv {dargv:?}"
        );
        ensure!(read(&bundle, "delete.cwd")?.trim() == b);
        // The silent listener never exits on its own: reported, ended, its socket removed.
        let kinds: Vec<_> = report.leaks.iter().map(|l| l.kind).collect();
        ensure!(
            kinds.contains(&leaks::LeakKind::Process) && kinds.contains(&leaks::LeakKind::Socket),
            "{dialect} leaks {:#?}",
            report.leaks
        );
        ensure!(
            report.leaks.iter().all(|l| l.cleaned),
            "{:#?}",
            report.leaks
        );
        assert_all_gone(&recorded_pids(&bundle))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_without_runtime_options_gives_an_empty_stdin() -> Result<()> {
    let mock = MockContainerd::new(MockConfig {
        timeouts: tight(),
        ..Default::default()
    })
    .await?;
    let bundle = Bundle::create(
        &mock.bundle_parent(),
        "nostdin",
        process(&["true"]),
        Default::default(),
    )?;
    let dir = tempfile::tempdir()?;
    let s = mock
        .launch(
            &recorder_shim(dir.path())?,
            &bundle,
            LaunchOptions::default(),
        )
        .await?;
    ensure!(std::fs::read(bundle.path().join("stdin.bin"))?.is_empty());
    drop(s); // dropping without close still ends the server
    assert_all_gone(&recorded_pids(&bundle))
}

// ---------------------------------------------------------------------------------------------
// Events through the legacy publish route.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_binary_route_feeds_the_same_log() -> Result<()> {
    use containerd_shim_protos::events::task::TaskOOM;
    use harness::events::TaskEvent;
    let mock = MockContainerd::new(MockConfig::default()).await?;
    let any = TaskEvent::Oom(TaskOOM {
        container_id: "c9".into(),
        ..Default::default()
    })
    .to_any()
    .context("any")?;
    let bytes = protobuf::Message::write_to_bytes(&any)?;
    let bin = env!("CARGO_BIN_EXE_harness");
    let run = |topic: &str, ns: &str| {
        let mut child = std::process::Command::new(bin)
            .args([
                "--address",
                mock.grpc_address(),
                "publish",
                "--topic",
                topic,
                "--namespace",
                ns,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(child.stdin.as_mut().context("stdin")?, &bytes)?;
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        anyhow::Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        ))
    };
    let (ok, err) = tokio::task::block_in_place(|| run("/tasks/oom", "default"))?;
    ensure!(ok, "publish failed: {err}");
    let evs = mock.events().snapshot();
    ensure!(evs.len() == 1, "{evs:?}");
    ensure!(evs[0].source == EventSource::PublishBinary && evs[0].topic == "/tasks/oom");
    ensure!(evs[0].fields["container-id"] == "c9");
    // containerd validates the topic: a bad one is refused and the command fails.
    let (ok, err) = tokio::task::block_in_place(|| run("tasks/oom", "default"))?;
    ensure!(
        !ok && err.contains("must start with '/'"),
        "bad topic accepted: {err}"
    );
    ensure!(mock.events().rejected().len() == 1);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A shim that dies while its task exists, and a terminal.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_shim_gets_containerds_synthetic_exit_and_delete() -> Result<()> {
    let runc = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    let mock = MockContainerd::new(MockConfig::default()).await?;
    let id = "killed9";
    let bundle = Bundle::create(
        &mock.bundle_parent(),
        id,
        process(&["sleep", "30"]),
        BundleOptions {
            rootfs: RootfsKind::Busybox,
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
        .launch(&runc, &bundle, LaunchOptions::default())
        .await?;
    let client = shim.client();
    let rpc = Duration::from_secs(10);
    let created = client
        .create(bundle.create_request(stdio.paths(), false, None), rpc)
        .await?;
    client
        .start(
            StartRequest {
                id: id.into(),
                ..Default::default()
            },
            rpc,
        )
        .await?;
    let server = shim.pid.context("server pid unknown")?;
    // The shim dies (as `kill -9 <shim>` in the doc's observation).
    ensure!(leaks::kill_and_wait(server, Duration::from_secs(5)));
    let err = client
        .state(
            StateRequest {
                id: id.into(),
                ..Default::default()
            },
            ms(2000),
        )
        .await
        .err()
        .context("a dead shim answered")?;
    ensure!(err.code_name() == "unavailable", "{err:?}");
    let report = shim.close().await;
    let outcome = report
        .delete_action
        .as_ref()
        .map_err(|e| anyhow::anyhow!("runc delete action: {e}"))?;
    ensure!(outcome.exit_status == 137, "delete action {outcome:?}");
    let syn: Vec<_> = report
        .synthetic_events
        .iter()
        .map(|e| (e.topic.as_str(), e.source, e.fields["exit-status"].clone()))
        .collect();
    ensure!(
        syn == vec![
            ("/tasks/exit", EventSource::Mock, 137.into()),
            ("/tasks/delete", EventSource::Mock, 137.into())
        ],
        "synthetic {syn:?}"
    );
    ensure!(report.synthetic_events[0].fields["container-id"] == id);
    let logged = mock.events().snapshot();
    ensure!(
        topics_for(&logged, id).ends_with(&["/tasks/exit", "/tasks/delete"]),
        "{:?}",
        topics_for(&logged, id)
    );
    // runc delete --force ended the container's process; nothing is left.
    ensure!(
        !leaks::is_alive(created.pid as i32),
        "container init survived"
    );
    ensure!(
        report.leaks.iter().all(|l| l.cleaned),
        "{:#?}",
        report.leaks
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_output_arrives_on_stdout_through_a_pty() -> Result<()> {
    let runc = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    let mock = MockContainerd::new(MockConfig::default()).await?;
    let id = "tty1";
    let mut p = process(&["sh", "-c", "tty; exit 5"]);
    p.set_terminal(Some(true));
    let bundle = Bundle::create(
        &mock.bundle_parent(),
        id,
        p,
        BundleOptions {
            rootfs: RootfsKind::Busybox,
            ..Default::default()
        },
    )?;
    let stdio = StdioSet::create(
        &mock.state_dir().join("fifo"),
        id,
        StdioOptions {
            terminal: true,
            ..Default::default()
        },
    )?;
    let (i, o, e) = stdio.paths();
    ensure!(
        !i.is_empty() && !o.is_empty() && e.is_empty(),
        "cio with a tty has no stderr"
    );
    let shim = mock
        .launch(&runc, &bundle, LaunchOptions::default())
        .await?;
    let c = shim.client();
    let rpc = Duration::from_secs(10);
    c.create(bundle.create_request(stdio.paths(), true, None), rpc)
        .await?;
    c.start(
        StartRequest {
            id: id.into(),
            ..Default::default()
        },
        rpc,
    )
    .await?;
    let w = c
        .wait(
            WaitRequest {
                id: id.into(),
                ..Default::default()
            },
            rpc,
        )
        .await?;
    ensure!(w.exit_status == 5, "exit {}", w.exit_status);
    ensure!(
        stdio
            .wait_output(
                |o, _| String::from_utf8_lossy(o).contains("/dev/pts/"),
                ms(5000)
            )
            .await,
        "stdout {:?}",
        String::from_utf8_lossy(&stdio.stdout())
    );
    c.delete(
        DeleteRequest {
            id: id.into(),
            ..Default::default()
        },
        rpc,
    )
    .await?;
    let ev = mock.events().snapshot();
    let create = ev
        .iter()
        .find(|e| e.topic == "/tasks/create")
        .context("no create event")?;
    ensure!(create.fields["io"]["terminal"] == true, "{}", create.fields);
    let report = shim.close().await;
    ensure!(report.sent_shutdown && report.server_exited);
    ensure!(report.leaks.is_empty(), "{:#?}", report.leaks);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreaped_children_of_a_shim_are_reported_as_zombies() -> Result<()> {
    let b = bad_setup(Dialect::V2_0, "zombie").await?;
    let shim = silent_server_shim(b.dir.path(), "@ADDR@")?;
    let s = b
        .mock
        .launch(
            &shim,
            &b.bundle,
            LaunchOptions {
                extra_env: vec![("HARNESS_TEST_ZOMBIE".into(), "1".into())],
                ..Default::default()
            },
        )
        .await?;
    let server = s.pid.context("server pid")?;
    // Wait until the server's child has exited unreaped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !leaks::descendants(server).iter().any(|d| d.state == 'Z') {
        ensure!(
            Instant::now() < deadline,
            "no zombie appeared under {server}"
        );
        tokio::time::sleep(ms(20)).await;
    }
    let report = s.close().await;
    let zombies: Vec<_> = report
        .leaks
        .iter()
        .filter(|l| l.kind == leaks::LeakKind::Zombie)
        .collect();
    ensure!(zombies.len() == 1, "leaks {:#?}", report.leaks);
    ensure!(
        zombies[0].detail.contains(&format!("parent {server}")),
        "{:?}",
        zombies[0]
    );
    assert_all_gone(&recorded_pids(&b.bundle))
}
