//! The Sandbox service (`containerd.runtime.sandbox.v1.Sandbox`) of the built shim, over its
//! socket as containerd's shim sandbox controller drives it (`plugins/sandbox/controller.go` at
//! v2.1.9): the pod's pause process, its status and wait, stop, and a server that stays while the
//! pod or a container of it remains. As containerd's controller does, the Sandbox calls go over
//! the task connection (the harness client's `*_sandbox` methods).

use std::time::Duration;

use containerd_shim_protos::api::*;
use containerd_shim_protos::sandbox_api::*;

use crate::support::*;

/// A Sandbox request naming pod `$id`, every other field left at its default.
macro_rules! req {
    ($t:ident, $id:expr) => {
        $t {
            sandbox_id: $id.into(),
            ..Default::default()
        }
    };
}

fn create(id: &str, bundle: &Bundle) -> CreateSandboxRequest {
    CreateSandboxRequest {
        sandbox_id: id.into(),
        bundle_path: bundle.path().display().to_string(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_pod_starts_its_pause_reports_it_and_waits_for_its_stop() {
    let bundle = Bundle::new("pod1", &["true"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let sb = shim.client.clone();
    sb.create_sandbox(create("pod1", &bundle), RPC)
        .await
        .unwrap();
    let st = sb
        .sandbox_status(req!(SandboxStatusRequest, "pod1"), RPC)
        .await
        .unwrap();
    assert_eq!(st.state, "SANDBOX_NOTREADY", "created, not started");
    let started = sb
        .start_sandbox(req!(StartSandboxRequest, "pod1"), RPC)
        .await
        .unwrap();
    assert!(started.pid > 0);
    assert!(started.created_at.seconds > 0);
    // `<the shim binary>\0pause\0`: the built-in pause.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", started.pid)).unwrap_or_default();
    assert!(
        cmdline.ends_with(b"\0pause\0"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    let st = sb
        .sandbox_status(req!(SandboxStatusRequest, "pod1"), RPC)
        .await
        .unwrap();
    assert_eq!((st.state.as_str(), st.pid), ("SANDBOX_READY", started.pid));
    let p = sb
        .sandbox_platform(req!(PlatformRequest, "pod1"), RPC)
        .await
        .unwrap();
    assert_eq!(p.platform.os, "linux");
    // WaitSandbox blocks while the pod runs, and returns once it is stopped.
    let waiter = {
        let sb = sb.clone();
        tokio::spawn(async move {
            sb.wait_sandbox(req!(WaitSandboxRequest, "pod1"), Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "WaitSandbox returned while the pod runs"
    );
    sb.stop_sandbox(
        StopSandboxRequest {
            sandbox_id: "pod1".into(),
            timeout_secs: 5,
            ..Default::default()
        },
        RPC,
    )
    .await
    .unwrap();
    let w = waiter.await.unwrap().unwrap();
    assert_eq!(w.exit_status, 0, "the pause exits 0 on SIGTERM");
    assert!(w.exited_at.seconds > 0);
    assert!(
        !pid_alive(started.pid as i32),
        "the pause still runs after StopSandbox"
    );
    let st = sb
        .sandbox_status(req!(SandboxStatusRequest, "pod1"), RPC)
        .await
        .unwrap();
    assert_eq!(st.state, "SANDBOX_NOTREADY");
    assert!(st.exited_at.seconds > 0);
    // A stopped pod still answers Ping; a second Stop is fine.
    sb.ping_sandbox(req!(PingRequest, "pod1"), RPC)
        .await
        .unwrap();
    sb.stop_sandbox(req!(StopSandboxRequest, "pod1"), RPC)
        .await
        .unwrap();
    // Nothing else keeps the server: ShutdownSandbox ends it.
    sb.shutdown_sandbox(req!(ShutdownSandboxRequest, "pod1"), RPC)
        .await
        .unwrap();
    assert!(
        shim.wait_gone(Duration::from_secs(5)).await,
        "the server outlived its only pod"
    );
}

/// A StopSandbox right after StartSandbox, before the pause can have set itself up, still ends
/// it as a stop ends it later: exit status 0, never a death by SIGTERM (143).
#[tokio::test]
async fn a_stop_right_after_the_start_ends_the_pause_with_zero() {
    let bundle = Bundle::new("quick0", &["true"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let sb = shim.client.clone();
    let mut statuses = Vec::new();
    for i in 0..10 {
        let id = format!("quick{i}");
        sb.create_sandbox(create(&id, &bundle), RPC).await.unwrap();
        sb.start_sandbox(req!(StartSandboxRequest, id.as_str()), RPC)
            .await
            .unwrap();
        sb.stop_sandbox(req!(StopSandboxRequest, id.as_str()), RPC)
            .await
            .unwrap();
        let w = sb
            .wait_sandbox(req!(WaitSandboxRequest, id.as_str()), RPC)
            .await
            .unwrap();
        statuses.push(w.exit_status);
    }
    for i in 0..10 {
        let id = format!("quick{i}");
        sb.shutdown_sandbox(req!(ShutdownSandboxRequest, id.as_str()), RPC)
            .await
            .unwrap();
    }
    assert!(
        statuses.iter().all(|s| *s == 0),
        "exit statuses {statuses:?}"
    );
    assert!(
        shim.wait_gone(Duration::from_secs(5)).await,
        "the server outlived its pods"
    );
}

/// The ShutdownSandbox that ends the server is answered before it goes: containerd's sandbox
/// controller fails a pod's removal on "ttrpc: closed" (`controllerLocal.Shutdown` in
/// plugins/sandbox/controller.go at v2.1.9), unlike the task Shutdown, where it tolerates it.
#[tokio::test]
async fn the_last_shutdown_sandbox_is_answered_before_the_server_exits() {
    for i in 0..10 {
        let id = format!("bye{i}");
        let bundle = Bundle::new(&id, &["true"]).unwrap();
        let shim = ShimProc::start(&bundle).await.unwrap();
        let sb = shim.client.clone();
        sb.create_sandbox(create(&id, &bundle), RPC).await.unwrap();
        let r = sb
            .shutdown_sandbox(req!(ShutdownSandboxRequest, id.as_str()), RPC)
            .await;
        assert!(r.is_ok(), "round {i}: {r:?}");
        assert!(
            shim.wait_gone(Duration::from_secs(5)).await,
            "round {i}: the server outlived its only pod"
        );
    }
}

/// Kill, wait and delete container `id`.
async fn end_task(shim: &ShimProc, id: &str) {
    shim.client
        .kill(
            KillRequest {
                id: id.into(),
                signal: 9,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    shim.wait_task(id).await;
    shim.delete_task(id).await;
}

/// [`end_task`], then the task Shutdown containerd 1.x sends after a Delete.
async fn finish(shim: &ShimProc, id: &str) {
    end_task(shim, id).await;
    // The server may go as it answers.
    let _ = shim
        .client
        .shutdown(
            ShutdownRequest {
                id: id.into(),
                ..Default::default()
            },
            RPC,
        )
        .await;
}

#[tokio::test]
async fn the_server_stays_while_the_pod_or_one_of_its_containers_remains() {
    let bundle = Bundle::new("pod2", &["sh", "-c", "sleep 30"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let sb = shim.client.clone();
    sb.create_sandbox(create("pod2", &bundle), RPC)
        .await
        .unwrap();
    sb.start_sandbox(req!(StartSandboxRequest, "pod2"), RPC)
        .await
        .unwrap();
    // A container of the pod, on the same connection (task API v3, no `start` of its own),
    // deleted, then containerd's task Shutdown for it: with the pod live, the server stays.
    shim.client
        .create(create_req("c1", &bundle), RPC)
        .await
        .unwrap();
    shim.start_task("c1").await;
    finish(&shim, "c1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        shim.alive(),
        "a task Shutdown ended the server of a live pod"
    );
    // The pod is shut down while c2 runs: the server stays for c2.
    shim.client
        .create(create_req("c2", &bundle), RPC)
        .await
        .unwrap();
    shim.start_task("c2").await;
    sb.shutdown_sandbox(req!(ShutdownSandboxRequest, "pod2"), RPC)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        shim.alive(),
        "ShutdownSandbox ended the server of a running container"
    );
    // ShutdownSandbox again: idempotent.
    sb.shutdown_sandbox(req!(ShutdownSandboxRequest, "pod2"), RPC)
        .await
        .unwrap();
    // containerd 2.x sends no task Shutdown after deleting a container of a pod served at
    // version 3: the Delete of the last one ends the server of a pod already shut down.
    end_task(&shim, "c2").await;
    assert!(
        shim.wait_gone(Duration::from_secs(5)).await,
        "the server outlived its last container"
    );
}

#[tokio::test]
async fn unknown_pods_and_repeated_calls_get_their_codes() {
    let bundle = Bundle::new("pod3", &["true"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let sb = shim.client.clone();
    let e = sb
        .start_sandbox(req!(StartSandboxRequest, "nope"), RPC)
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::NOT_FOUND, "{e:?}");
    let e = sb
        .wait_sandbox(req!(WaitSandboxRequest, "nope"), RPC)
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::NOT_FOUND, "{e:?}");
    sb.create_sandbox(create("pod3", &bundle), RPC)
        .await
        .unwrap();
    let e = sb
        .create_sandbox(create("pod3", &bundle), RPC)
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::ALREADY_EXISTS, "{e:?}");
    sb.start_sandbox(req!(StartSandboxRequest, "pod3"), RPC)
        .await
        .unwrap();
    let e = sb
        .start_sandbox(req!(StartSandboxRequest, "pod3"), RPC)
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::FAILED_PRECONDITION, "{e:?}");
    let e = sb
        .create_sandbox(create("../escape", &bundle), RPC)
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{e:?}");
    // Metrics come from the pod's own cgroup (the shim tests run as root, with cgroups).
    let m = sb
        .sandbox_metrics(req!(SandboxMetricsRequest, "pod3"), RPC)
        .await
        .unwrap();
    assert_eq!(m.metrics.id, "pod3");
    assert!(
        m.metrics
            .data
            .type_url
            .ends_with("io.containerd.cgroups.v1.Metrics"),
        "{:?}",
        m.metrics.data.type_url
    );
    sb.shutdown_sandbox(req!(ShutdownSandboxRequest, "pod3"), RPC)
        .await
        .unwrap();
    assert!(shim.wait_gone(Duration::from_secs(5)).await);
}
