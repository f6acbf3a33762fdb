//! The `start` and `delete` actions, both service names, Shutdown and socket removal.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};

use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::Message;

use crate::support::*;

#[tokio::test]
async fn start_prints_bare_address_and_serves_both_task_versions() {
    become_subreaper();
    let bundle = Bundle::new(&["sleep", "30"]).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let grpc = scratch.path().join("c.sock").display().to_string();
    let st = run_start(
        &shim_bin(),
        bundle.path(),
        "hs",
        &grpc,
        "hs1",
        &scratch.path().join("none"),
    )
    .unwrap();
    assert!(st.status.success(), "start failed: {}", st.stdout);
    assert_eq!(st.stderr, "", "start must write nothing on stderr");
    assert!(
        st.stdout.starts_with("unix:///run/containerd/s/"),
        "{:?}",
        st.stdout
    );
    assert!(!st.stdout.ends_with('\n'), "address must be bare");
    let hash = st.stdout.rsplit('/').next().unwrap();
    assert_eq!(hash.len(), 64);
    let file = std::fs::read_to_string(bundle.path().join("address")).unwrap();
    assert_eq!(file, st.stdout);
    let path = st.stdout.trim_start_matches("unix://").to_string();
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // Same group: the live server is reused, no second server.
    let st2 = run_start(
        &shim_bin(),
        bundle.path(),
        "hs",
        &grpc,
        "hs1",
        &scratch.path().join("none"),
    )
    .unwrap();
    assert!(st2.status.success());
    assert_eq!(st2.stdout, st.stdout);

    let raw = ttrpc::asynchronous::Client::connect(&st.stdout)
        .await
        .unwrap();
    let req = ConnectRequest {
        id: "hs1".into(),
        ..Default::default()
    };
    for svc in ["containerd.task.v2.Task", "containerd.task.v3.Task"] {
        let resp = raw_call(&raw, svc, "Connect", &req).await.unwrap();
        assert!(
            resp.status.is_none() || resp.status.code() == ttrpc::Code::OK,
            "{svc}: {:?}",
            resp.status
        );
        let c = ConnectResponse::parse_from_bytes(&resp.payload).unwrap();
        assert!(c.shim_pid > 0 && c.task_pid == 0, "{svc}: {c:?}");
    }
    // Unsupported RPCs are UNIMPLEMENTED on both names (not the generated NOT_FOUND).
    for svc in ["containerd.task.v2.Task", "containerd.task.v3.Task"] {
        let r = CheckpointTaskRequest {
            id: "hs1".into(),
            ..Default::default()
        };
        let e = raw_call(&raw, svc, "Checkpoint", &r).await.unwrap_err();
        assert_eq!(code(&e), ttrpc::Code::UNIMPLEMENTED, "{svc}: {e:?}");
        let r = UpdateTaskRequest {
            id: "hs1".into(),
            ..Default::default()
        };
        let e = raw_call(&raw, svc, "Update", &r).await.unwrap_err();
        assert_eq!(code(&e), ttrpc::Code::UNIMPLEMENTED, "{svc}: {e:?}");
        assert!(message(&e).contains("update"), "{e:?}");
    }
    let client = containerd_shim_protos::shim_async::TaskClient::new(raw);
    let pid = client
        .connect(ctx(), &ConnectRequest::default())
        .await
        .unwrap()
        .shim_pid as i32;
    client
        .shutdown(
            ctx(),
            // As containerd does: the Shutdown names the container it is done with, which
            // also gives up the place the second `start` reserved for it.
            &ShutdownRequest {
                id: "hs1".into(),
                now: false,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) || std::path::Path::new(&path).exists() {
        reap(pid);
        assert!(
            Instant::now() < end,
            "server {pid} or its socket still there after Shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reap(pid);
}

#[tokio::test]
async fn shutdown_waits_for_containers_and_removes_socket() {
    let bundle = Bundle::new(&["sleep", "30"]).unwrap();
    let shim = ShimProc::start(&bundle, "sd1").await.unwrap();
    shim.client
        .create(ctx(), &create_req("sd1", &bundle))
        .await
        .unwrap();
    shim.client
        .shutdown(
            ctx(),
            &ShutdownRequest {
                id: "sd1".into(),
                now: false,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(shim.alive(), "Shutdown with a container left must not exit");
    shim.delete_task("sd1").await;
    shim.client
        .shutdown(
            ctx(),
            &ShutdownRequest {
                id: "sd1".into(),
                now: false,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        shim.wait_gone(Duration::from_secs(5)).await,
        "server did not exit"
    );
    assert!(!shim.socket_path().exists(), "socket not removed");
    shim.stop().await;
}

#[tokio::test]
async fn sigterm_stops_the_server() {
    let bundle = Bundle::new(&["true"]).unwrap();
    let shim = ShimProc::start(&bundle, "term1").await.unwrap();
    // SAFETY: kill(2) on the server pid Connect reported.
    unsafe { libc::kill(shim.pid, libc::SIGTERM) };
    assert!(
        shim.wait_gone(Duration::from_secs(5)).await,
        "SIGTERM did not stop the server"
    );
    assert!(!shim.socket_path().exists(), "socket not removed");
    shim.stop().await;
}

/// `start` must not answer before its server is running: when the server cannot be executed,
/// `start` fails, names it, and leaves no socket or address behind. The binary `start` runs from
/// is deleted while `start` waits for its stdin, so its re-exec of itself (`/proc/self/exe`,
/// now "... (deleted)") fails with ENOENT.
#[test]
fn start_fails_when_its_server_cannot_be_executed() {
    use std::io::Write;
    let bundle = Bundle::new(&["true"]).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("containerd-shim-reaper-v2");
    std::fs::copy(shim_bin(), &copy).unwrap();
    let grpc = scratch.path().join("c.sock").display().to_string();
    let mut child = Command::new(&copy)
        .args(["-namespace", "hs", "-address", &grpc])
        .args(["-publish-binary", "/bin/true", "-id", "noexec1", "start"])
        .current_dir(bundle.path())
        .env("TTRPC_ADDRESS", scratch.path().join("none"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the start process runs our copy, the copy can go.
    let exe = format!("/proc/{}/exe", child.id());
    let end = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(&exe).ok().as_deref() != Some(copy.as_path()) {
        assert!(Instant::now() < end, "start never ran {}", copy.display());
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::remove_file(&copy).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"").unwrap();
    drop(stdin);
    let end = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("start did not end within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "start succeeded without a server: {stdout:?} {stderr:?}"
    );
    // containerd shows the combined output of a failed `start`; the reaper writes its error
    // to stdout.
    assert!(
        stdout.contains("reaper start: spawn the shim server") && stdout.contains("No such file"),
        "{stdout:?}"
    );
    assert!(!bundle.path().join("address").exists(), "address written");
    let address = reaper::service::socket_address(&grpc, "hs", "noexec1");
    let socket = std::path::PathBuf::from(address.trim_start_matches("unix://"));
    assert!(!socket.exists(), "{} left behind", socket.display());
}

#[test]
fn delete_action_on_empty_bundle_prints_delete_response() {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let out = Command::new(shim_bin())
        .args([
            "-namespace",
            "reaper-test",
            "-address",
            "/nonexistent",
            "-id",
            "gone1",
        ])
        .args(["-bundle", &dir.path().display().to_string(), "delete"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = DeleteResponse::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(r.exit_status, 137);
    assert_eq!(r.pid, 0);
    assert!(r.exited_at.seconds > 0);
}

#[tokio::test]
async fn delete_action_kills_what_a_dead_server_left() {
    let bundle = Bundle::new(&["sh", "-c", "sleep 30 & sleep 30"]).unwrap();
    let shim = ShimProc::start(&bundle, "dead1").await.unwrap();
    let c = shim
        .client
        .create(ctx(), &create_req("dead1", &bundle))
        .await
        .unwrap();
    shim.start_task("dead1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cg_rel = std::fs::read_to_string(bundle.path().join("reaper-cgroup")).unwrap();
    let procs_file = std::path::Path::new("/sys/fs/cgroup/pids")
        .join(cg_rel.trim())
        .join("cgroup.procs");
    let procs: Vec<i32> = std::fs::read_to_string(&procs_file)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(procs.len() >= 2, "task processes {procs:?}");
    // The server dies without cleaning up (like a crash).
    // SAFETY: kill(2) by the pid Connect reported.
    unsafe { libc::kill(shim.pid, libc::SIGKILL) };
    assert!(shim.wait_gone(Duration::from_secs(5)).await);
    let t = Instant::now();
    let out = Command::new(shim_bin())
        .args([
            "-namespace",
            "reaper-test",
            "-address",
            "/nonexistent",
            "-id",
            "dead1",
        ])
        .args(["-bundle", &bundle.path().display().to_string(), "delete"])
        .current_dir(bundle.path())
        .output()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = DeleteResponse::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!((r.pid, r.exit_status), (c.pid, 137));
    let end = Instant::now() + Duration::from_secs(5);
    while procs.iter().any(|p| pid_alive(*p)) {
        // They were re-parented to this test process (subreaper): reap them here.
        procs.iter().for_each(|p| reap(*p));
        assert!(
            Instant::now() < end,
            "task processes survived the delete action"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    procs.iter().for_each(|p| reap(*p));
    assert!(!procs_file.exists(), "cgroup not removed");
    // Idempotent: a second run succeeds too.
    let again = Command::new(shim_bin())
        .args([
            "-namespace",
            "reaper-test",
            "-id",
            "dead1",
            "-bundle",
            &bundle.path().display().to_string(),
            "delete",
        ])
        .output()
        .unwrap();
    assert!(again.status.success());
    shim.stop().await;
}

#[tokio::test]
async fn server_logs_to_the_bundle_log_fifo() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let bundle = Bundle::new(&["true"]).unwrap();
    let log = bundle.fifo("log").unwrap();
    // containerd opens the log FIFO before `start`; we read it without blocking.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&log)
        .unwrap();
    let shim = ShimProc::start(&bundle, "log1").await.unwrap();
    shim.client
        .create(ctx(), &create_req("log1", &bundle))
        .await
        .unwrap();
    let mut text = String::new();
    let end = Instant::now() + Duration::from_secs(5);
    while !text.contains("create") {
        let mut buf = [0u8; 4096];
        match reader.read(&mut buf) {
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read log: {e}"),
        }
        assert!(Instant::now() < end, "no create line in the log: {text:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(text.contains("level=INFO"), "{text}");
    assert!(text.contains("id=\"log1\""), "{text}");
    shim.stop().await;
}

#[test]
fn info_flag_prints_runtime_info() {
    let out = Command::new(shim_bin())
        .arg("-info")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let info =
        containerd_shim_protos::types::introspection::RuntimeInfo::parse_from_bytes(&out.stdout)
            .unwrap();
    assert_eq!(info.name, "io.containerd.reaper.v2");
    assert!(!info.version.version.is_empty());
}
