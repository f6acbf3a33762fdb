//! The `start` and `delete` actions, both service names, Shutdown and socket removal.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};

use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::Message;

use crate::support::*;

#[tokio::test]
async fn start_prints_bare_address_and_serves_both_task_versions() {
    let bundle = Bundle::new("hs1", &["sleep", "30"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    // stdout and stderr share one pipe: the output is the address and nothing else.
    let out = String::from_utf8_lossy(shim.shim.start_output_raw()).into_owned();
    assert_eq!(out, shim.address, "start must write nothing on stderr");
    assert!(out.starts_with("unix:///run/containerd/s/"), "{out:?}");
    assert!(!out.ends_with('\n'), "address must be bare");
    let hash = out.rsplit('/').next().unwrap();
    assert_eq!(hash.len(), 64);
    let file = std::fs::read_to_string(bundle.path().join("address")).unwrap();
    assert_eq!(file, out);
    let path = out.trim_start_matches("unix://").to_string();
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // Same group: the live server is reused, no second server.
    let again = shim
        .mock
        .launch(&shim_bin(), &bundle, Default::default())
        .await
        .unwrap();
    assert_eq!(again.start_output_raw(), out.as_bytes());

    let req = ConnectRequest {
        id: "hs1".into(),
        ..Default::default()
    };
    for svc in ["containerd.task.v2.Task", "containerd.task.v3.Task"] {
        let c: ConnectResponse = shim
            .client
            .call_service(svc, "Connect", &req, RPC)
            .await
            .unwrap_or_else(|e| panic!("{svc}: {e:?}"));
        assert!(c.shim_pid > 0 && c.task_pid == 0, "{svc}: {c:?}");
    }
    // Unsupported RPCs are UNIMPLEMENTED on both names (not the generated NOT_FOUND).
    for svc in ["containerd.task.v2.Task", "containerd.task.v3.Task"] {
        let r = CheckpointTaskRequest {
            id: "hs1".into(),
            ..Default::default()
        };
        let e = shim
            .client
            .call_service::<_, Empty>(svc, "Checkpoint", &r, RPC)
            .await
            .unwrap_err();
        assert_eq!(code(&e), ttrpc::Code::UNIMPLEMENTED, "{svc}: {e:?}");
        let r = UpdateTaskRequest {
            id: "hs1".into(),
            ..Default::default()
        };
        let e = shim
            .client
            .call_service::<_, Empty>(svc, "Update", &r, RPC)
            .await
            .unwrap_err();
        assert_eq!(code(&e), ttrpc::Code::UNIMPLEMENTED, "{svc}: {e:?}");
        assert!(message(&e).contains("update"), "{e:?}");
    }
    shim.client
        .shutdown(
            // As containerd does: the Shutdown names the container it is done with, which
            // also gives up the place the second `start` reserved for it.
            ShutdownRequest {
                id: "hs1".into(),
                now: false,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while shim.alive() || std::path::Path::new(&path).exists() {
        assert!(
            Instant::now() < end,
            "server {} or its socket still there after Shutdown",
            shim.pid
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(again);
}

#[tokio::test]
async fn shutdown_waits_for_containers_and_removes_socket() {
    let bundle = Bundle::new("sd1", &["sleep", "30"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    shim.client
        .create(create_req("sd1", &bundle), RPC)
        .await
        .unwrap();
    shim.client
        .shutdown(
            ShutdownRequest {
                id: "sd1".into(),
                now: false,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(shim.alive(), "Shutdown with a container left must not exit");
    shim.delete_task("sd1").await;
    shim.client
        .shutdown(
            ShutdownRequest {
                id: "sd1".into(),
                now: false,
                ..Default::default()
            },
            RPC,
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
    let bundle = Bundle::new("term1", &["true"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    shim.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        shim.wait_gone(Duration::from_secs(5)).await,
        "SIGTERM did not stop the server"
    );
    assert!(!shim.socket_path().exists(), "socket not removed");
    shim.stop().await;
}

/// `start` forks its server rather than executing the binary a second time: a `start` whose
/// binary is deleted while it waits for its stdin (so that a re-exec of `/proc/self/exe`, now
/// "... (deleted)", would fail with ENOENT) still answers, and at the address it prints a
/// server serves: its own process group, the deleted binary as its image, the command line an
/// exec'd server has, and no `start` left in it.
#[test]
fn start_forks_its_server_without_a_second_exec() {
    use std::io::Write;
    let bundle = Bundle::new("fork1", &["true"]).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("containerd-shim-reaper-v2");
    std::fs::copy(shim_bin(), &copy).unwrap();
    let grpc = scratch.path().join("c.sock").display().to_string();
    let mut child = Command::new(&copy)
        .args(["-namespace", "hs", "-address", &grpc])
        .args(["-publish-binary", "/bin/true", "-id", "fork1", "start"])
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
    let start_pid = child.id() as i32;
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
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout:?} {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let address = reaper::service::socket_address(&grpc, "hs", "fork1");
    assert_eq!(stdout, address);

    let client = containerd_shim_protos::Client::connect(&address).unwrap();
    let task = containerd_shim_protos::TaskClient::new(client);
    let ctx = || ttrpc::context::with_timeout(5_000_000_000);
    let req = ConnectRequest {
        id: "fork1".into(),
        ..Default::default()
    };
    let pid = task.connect(ctx(), &req).unwrap().shim_pid as i32;
    // Ends the server by pid if an assertion below fails.
    struct Server(i32);
    impl Drop for Server {
        fn drop(&mut self) {
            if self.0 > 0 && pid_alive(self.0) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.0),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let server = Server(pid);
    assert!(
        pid > 0 && pid != start_pid,
        "server pid {pid}, start {start_pid}"
    );
    let image = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        image.display().to_string(),
        format!("{} (deleted)", copy.display())
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let pgrp: i32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pgrp, pid, "the server leads a process group of its own");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(
        argv[1..],
        [
            "-namespace",
            "hs",
            "-id",
            "fork1",
            "-address",
            grpc.as_str()
        ],
        "{argv:?}"
    );
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.display().to_string())
        .collect();
    assert!(
        !fds.iter().any(|l| l.starts_with("pipe:")),
        "the server holds a pipe of `start`'s: {fds:?}"
    );
    let _ = task.shutdown(
        ctx(),
        &ShutdownRequest {
            id: "fork1".into(),
            now: true,
            ..Default::default()
        },
    );
    drop(task);
    let end = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!pid_alive(pid), "the server outlived Shutdown");
    let socket = std::path::PathBuf::from(address.trim_start_matches("unix://"));
    assert!(!socket.exists(), "{} left behind", socket.display());
    drop(server);
}

#[tokio::test]
async fn delete_action_on_empty_bundle_prints_delete_response() {
    let dir = tempfile::tempdir().unwrap();
    let r = delete_action("gone1", dir.path())
        .run(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(r.duration < Duration::from_secs(5));
    assert_eq!(r.exit_status, 137);
    assert_eq!(r.pid, 0);
    assert!(r.exited_at.is_some_and(|t| t > std::time::UNIX_EPOCH));
}

#[tokio::test]
async fn delete_action_kills_what_a_dead_server_left() {
    let bundle = Bundle::new("dead1", &["sh", "-c", "sleep 30 & sleep 30"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let c = shim
        .client
        .create(create_req("dead1", &bundle), RPC)
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
    shim.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(shim.wait_gone(Duration::from_secs(5)).await);
    let action = delete_action("dead1", bundle.path());
    let r = action.run(Duration::from_secs(5)).await.unwrap();
    assert!(r.duration < Duration::from_secs(5));
    assert_eq!((r.pid, r.exit_status), (c.pid, 137));
    let end = Instant::now() + Duration::from_secs(5);
    while procs.iter().any(|p| pid_alive(*p)) {
        assert!(
            Instant::now() < end,
            "task processes survived the delete action"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!procs_file.exists(), "cgroup not removed");
    // Idempotent: a second run succeeds too.
    action.run(Duration::from_secs(5)).await.unwrap();
    shim.stop().await;
}

#[tokio::test]
async fn server_logs_to_the_bundle_log_fifo() {
    // The mock opens the bundle's log FIFO before `start` and drains it, as containerd does.
    let bundle = Bundle::new("log1", &["true"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    shim.client
        .create(create_req("log1", &bundle), RPC)
        .await
        .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while !text.contains("create") {
        assert!(Instant::now() < end, "no create line in the log: {text:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
        text = shim.shim.log_lines().join("\n");
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

/// containerd closes its connection once it has the reply of the RPC that ends a shim; the
/// exiting server waits for that hang-up (so that no reply is cut off), but not for ever: a
/// client that keeps its connection delays the exit by the bound (200 ms) only.
#[tokio::test]
async fn an_exiting_server_waits_for_its_client_to_hang_up_within_a_bound() {
    let bundle = Bundle::new("hu1", &["true"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    shim.client
        .shutdown(
            ShutdownRequest {
                id: "hu1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        shim.alive(),
        "the server exited while its client still held the connection"
    );
    assert!(
        shim.wait_gone(Duration::from_secs(5)).await,
        "the server waited for the hang-up beyond its bound"
    );
    assert!(!shim.socket_path().exists(), "socket not removed");
    shim.stop().await;
}
