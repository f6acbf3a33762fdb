//! The `containerd-shim-faulty-v2` seam: each fault really changes behaviour, and the real shim
//! ignores `FAULTY_SHIM`.

use std::time::Duration;

use containerd_shim_protos::api::*;

use crate::support::*;

fn faulty_bin() -> std::path::PathBuf {
    testkit::faulty()
}

#[tokio::test]
async fn faulty_wait_early_and_notfound_for_unimplemented() {
    let bundle = Bundle::new("fw1", &["sleep", "30"]).unwrap();
    let env = [("FAULTY_SHIM", "wait-early,notfound-for-unimplemented")];
    let shim = ShimProc::start_bin(&faulty_bin(), &bundle, &env)
        .await
        .unwrap();
    shim.client
        .create(create_req("fw1", &bundle), RPC)
        .await
        .unwrap();
    let w = tokio::time::timeout(
        Duration::from_secs(2),
        shim.client.wait(
            WaitRequest {
                id: "fw1".into(),
                ..Default::default()
            },
            RPC,
        ),
    )
    .await
    .expect("wait-early: Wait must return at once")
    .unwrap();
    assert_eq!(w.exit_status, 0);
    let e = shim
        .client
        .checkpoint(
            CheckpointTaskRequest {
                id: "fw1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::NOT_FOUND, "{e:?}");
    shim.stop().await;
}

#[tokio::test]
async fn faulty_exit_before_start_and_sigterm_exit_zero() {
    let bundle = Bundle::new("fe1", &["true"]).unwrap();
    let env = [("FAULTY_SHIM", "exit-before-start,sigterm-exit-zero")];
    let shim = ShimProc::start_bin(&faulty_bin(), &bundle, &env)
        .await
        .unwrap();
    shim.client
        .create(create_req("fe1", &bundle), RPC)
        .await
        .unwrap();
    shim.start_task("fe1").await;
    let ev = shim
        .wait_for("start and exit", |e| {
            e.iter().filter(|e| e.id == "fe1").count() >= 3
        })
        .await
        .unwrap();
    let t: Vec<&str> = ev.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(t, ["/tasks/create", "/tasks/exit", "/tasks/start"]);

    let sleeper = Bundle::new("fe2", &["sleep", "30"]).unwrap();
    shim.client
        .create(create_req("fe2", &sleeper), RPC)
        .await
        .unwrap();
    shim.start_task("fe2").await;
    shim.client
        .kill(
            KillRequest {
                id: "fe2".into(),
                signal: 15,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let w = shim.wait_task("fe2").await;
    assert_eq!(w.exit_status, 0, "sigterm-exit-zero");
    shim.stop().await;
}

#[tokio::test]
async fn faulty_unknown_fault_fails_and_real_shim_ignores_the_variable() {
    let bundle = Bundle::new("fu1", &["true"]).unwrap();
    let env = [("FAULTY_SHIM", "no-such-fault")];
    let r = ShimProc::start_bin(&faulty_bin(), &bundle, &env).await;
    assert!(r.is_err(), "a server with an unknown fault must not serve");
    let addr = std::fs::read_to_string(bundle.path().join("address")).unwrap();
    let sock = addr.trim_start_matches("unix://").to_string();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&sock).exists() {
        assert!(std::time::Instant::now() < end, "socket {sock} left behind");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let sleeper = Bundle::new("real1", &["sleep", "30"]).unwrap();
    let env = [("FAULTY_SHIM", "wait-early")];
    let shim = ShimProc::start_bin(&shim_bin(), &sleeper, &env)
        .await
        .unwrap();
    shim.client
        .create(create_req("real1", &sleeper), RPC)
        .await
        .unwrap();
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        shim.client.wait(
            WaitRequest {
                id: "real1".into(),
                ..Default::default()
            },
            RPC,
        ),
    )
    .await;
    assert!(r.is_err(), "the real shim must not honour FAULTY_SHIM");
    shim.stop().await;
}

#[tokio::test]
async fn faulty_no_exit_event_no_stdout_delete_running_ok_shutdown_never_exits() {
    let bundle = Bundle::new("fn1", &["sh", "-c", "echo visible; sleep 30"]).unwrap();
    let out = bundle.fifo("stdout").unwrap();
    let reader = OutFifo::open(&out).unwrap();
    let env = [(
        "FAULTY_SHIM",
        "no-exit-event,no-stdout,delete-running-ok,shutdown-never-exits",
    )];
    let shim = ShimProc::start_bin(&faulty_bin(), &bundle, &env)
        .await
        .unwrap();
    let mut req = create_req("fn1", &bundle);
    req.stdout = out.display().to_string();
    shim.client.create(req, RPC).await.unwrap();
    shim.start_task("fn1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // delete-running-ok: Delete of a running init succeeds.
    shim.client
        .delete(
            DeleteRequest {
                id: "fn1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .expect("delete-running-ok");
    // no-stdout: the FIFO never saw the output (the shim never opened its write side, so a
    // non-blocking read finds no writer: EOF with nothing).
    let got = join_output(reader.collect()).await.unwrap();
    assert!(
        got.is_empty(),
        "no-stdout: got {:?}",
        String::from_utf8_lossy(&got)
    );
    // shutdown-never-exits.
    shim.client
        .shutdown(ShutdownRequest::default(), RPC)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(shim.alive(), "shutdown-never-exits: server exited");
    // no-exit-event: the kill above never produced /tasks/exit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let topics: Vec<String> = shim.summary();
    assert!(
        topics.iter().all(|t| !t.starts_with("/tasks/exit")),
        "{topics:?}"
    );
    assert!(
        topics.iter().any(|t| t.starts_with("/tasks/delete")),
        "{topics:?}"
    );
    shim.stop().await;
}
