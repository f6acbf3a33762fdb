//! The Sandbox layer in process: a host pod's pause from StartSandbox to StopSandbox and
//! WaitSandbox, its status, and the server's exit decision at ShutdownSandbox.

use containerd_shim_protos::api::{DeleteRequest, KillRequest};
use containerd_shim_protos::sandbox_api::{
    CreateSandboxRequest, PingRequest, PlatformRequest, SandboxStatusRequest,
    ShutdownSandboxRequest, StartSandboxRequest, StopSandboxRequest, WaitSandboxRequest,
};
use ttrpc::Code;

use super::{bounded, Fixture};
use crate::container::proc_stat;
use crate::pod::{NOT_READY, READY};

/// A request that names only the pod.
macro_rules! pod {
    ($t:ident, $id:expr) => {
        $t {
            sandbox_id: $id.into(),
            ..Default::default()
        }
    };
}

async fn create_pod(fx: &Fixture, id: &str) {
    let req = CreateSandboxRequest {
        sandbox_id: id.into(),
        bundle_path: fx.dir(),
        ..Default::default()
    };
    fx.shim.sandbox_create(req).await.expect("create sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_its_pause_until_stopped_and_waits_report_a_clean_exit() {
    let fx = Fixture::new();
    let s = &fx.shim;
    create_pod(&fx, "p1").await;
    let again = CreateSandboxRequest {
        sandbox_id: "p1".into(),
        bundle_path: fx.dir(),
        ..Default::default()
    };
    let e = s.sandbox_create(again).await.expect_err("second create");
    assert_eq!(e.code(), Code::ALREADY_EXISTS);
    let st = s.sandbox_status(pod!(SandboxStatusRequest, "p1")).await;
    let st = st.expect("status");
    assert_eq!((st.state.as_str(), st.pid), (NOT_READY, 0));
    let started = s.sandbox_start(pod!(StartSandboxRequest, "p1")).await;
    let pid = started.expect("start sandbox").pid;
    assert!(pid > 0);
    let stat = proc_stat(pid as i32).expect("the pause is a live process");
    assert_ne!(stat.state, 'Z');
    let st = s.sandbox_status(pod!(SandboxStatusRequest, "p1")).await;
    let st = st.expect("status");
    assert_eq!((st.state.as_str(), st.pid), (READY, pid));
    assert!(st.created_at.is_some() && st.exited_at.is_none());
    let twice = s.sandbox_start(pod!(StartSandboxRequest, "p1")).await;
    assert_eq!(
        twice.expect_err("start twice").code(),
        Code::FAILED_PRECONDITION
    );
    s.sandbox_ping(pod!(PingRequest, "p1")).await.expect("ping");
    let platform = s.sandbox_platform(pod!(PlatformRequest, "p1")).await;
    assert_eq!(platform.expect("platform").platform.os, "linux");
    let stop = StopSandboxRequest {
        sandbox_id: "p1".into(),
        timeout_secs: 5,
        ..Default::default()
    };
    bounded("stop sandbox", s.sandbox_stop(stop))
        .await
        .expect("stop");
    let w = bounded(
        "wait sandbox",
        s.sandbox_wait(pod!(WaitSandboxRequest, "p1")),
    )
    .await;
    assert_eq!(
        w.expect("wait sandbox").exit_status,
        0,
        "the pause ends cleanly on SIGTERM (not 143, not 137 after the grace)"
    );
    let st = s.sandbox_status(pod!(SandboxStatusRequest, "p1")).await;
    let st = st.expect("status");
    assert_eq!((st.state.as_str(), st.pid), (NOT_READY, pid));
    assert!(st.exited_at.is_some());
    let exit = s.exit.subscribe();
    let shut = s.sandbox_shutdown(pod!(ShutdownSandboxRequest, "p1"));
    bounded("shutdown sandbox", shut).await.expect("shutdown");
    assert!(
        *exit.borrow(),
        "no container and no pod left: the server may exit"
    );
    let gone = s.sandbox_ping(pod!(PingRequest, "p1")).await;
    assert_eq!(
        gone.expect_err("ping after shutdown").code(),
        Code::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_pods_are_not_found_and_their_shutdown_is_idempotent() {
    let fx = Fixture::new();
    let s = &fx.shim;
    let codes = [
        s.sandbox_start(pod!(StartSandboxRequest, "nope"))
            .await
            .map(|_| ()),
        s.sandbox_stop(pod!(StopSandboxRequest, "nope")).await,
        s.sandbox_wait(pod!(WaitSandboxRequest, "nope"))
            .await
            .map(|_| ()),
        s.sandbox_status(pod!(SandboxStatusRequest, "nope"))
            .await
            .map(|_| ()),
        s.sandbox_ping(pod!(PingRequest, "nope")).await,
        s.sandbox_platform(pod!(PlatformRequest, "nope"))
            .await
            .map(|_| ()),
    ]
    .map(|r| r.expect_err("unknown pod").code());
    assert_eq!(codes, [Code::NOT_FOUND; 6]);
    let shut = s.sandbox_shutdown(pod!(ShutdownSandboxRequest, "nope"));
    shut.await.expect("a shutdown of an unknown pod");
    let bad = CreateSandboxRequest {
        sandbox_id: "../p".into(),
        ..Default::default()
    };
    let e = s.sandbox_create(bad).await.expect_err("a bad id");
    assert_eq!(e.code(), Code::INVALID_ARGUMENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_never_started_stops_at_once_with_0() {
    let fx = Fixture::new();
    let s = &fx.shim;
    create_pod(&fx, "p1").await;
    let stop = s.sandbox_stop(pod!(StopSandboxRequest, "p1"));
    bounded("stop sandbox", stop).await.expect("stop");
    let w = bounded(
        "wait sandbox",
        s.sandbox_wait(pod!(WaitSandboxRequest, "p1")),
    )
    .await;
    assert_eq!(w.expect("wait").exit_status, 0);
    let start = s.sandbox_start(pod!(StartSandboxRequest, "p1")).await;
    assert_eq!(
        start.expect_err("start after stop").code(),
        Code::FAILED_PRECONDITION
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_shut_down_with_a_container_left_ends_the_server_at_its_delete() {
    let fx = Fixture::new();
    let s = &fx.shim;
    let exit = s.exit.subscribe();
    create_pod(&fx, "p1").await;
    let pause = s.sandbox_start(pod!(StartSandboxRequest, "p1")).await;
    pause.expect("start sandbox");
    fx.run("c1", &["sleep", "30"]).await;
    let shut = s.sandbox_shutdown(pod!(ShutdownSandboxRequest, "p1"));
    bounded("shutdown sandbox", shut).await.expect("shutdown");
    assert!(!*exit.borrow(), "c1 is left: the server stays");
    let ping = s.sandbox_ping(pod!(PingRequest, "p1")).await;
    assert_eq!(ping.expect_err("the pod is gone").code(), Code::NOT_FOUND);
    let kill = KillRequest {
        id: "c1".into(),
        signal: libc::SIGKILL as u32,
        ..Default::default()
    };
    s.task_kill(kill).await.expect("kill");
    assert_eq!(fx.wait("c1", "").await.exit_status, 137);
    let del = DeleteRequest {
        id: "c1".into(),
        ..Default::default()
    };
    s.task_delete(del).await.expect("delete");
    assert!(
        *exit.borrow(),
        "the last container's Delete finishes the pod's shutdown"
    );
}
