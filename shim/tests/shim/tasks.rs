//! Exec, Kill rules (kill --all over descendants), Pids and bad input.

use std::time::Duration;

use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::ProcessDetails;

use crate::support::*;

fn exec_spec(args: &[&str]) -> Any {
    let p = serde_json::json!({
        "args": args, "env": [PATH_ENV], "cwd": "/", "user": {"uid": 0, "gid": 0}
    });
    Any {
        type_url: harness::client::PROCESS_SPEC_TYPE_URL.into(),
        value: serde_json::to_vec(&p).unwrap(),
        ..Default::default()
    }
}

pub async fn started(shim: &ShimProc, bundle: &Bundle, id: &str) -> u32 {
    let c = shim
        .client
        .create(create_req(id, bundle), RPC)
        .await
        .unwrap();
    shim.start_task(id).await;
    c.pid
}

#[tokio::test]
async fn exec_lifecycle_output_events_and_pids() {
    let bundle = Bundle::new("ex1", &["sleep", "30"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let init = started(&shim, &bundle, "ex1").await;
    let out = bundle.fifo("exec-out").unwrap();
    let reader = OutFifo::open(&out).unwrap();
    let req = ExecProcessRequest {
        id: "ex1".into(),
        exec_id: "e1".into(),
        stdout: out.display().to_string(),
        spec: Some(exec_spec(&[
            "sh",
            "-c",
            "echo from-exec; sleep 0.5; exit 3",
        ]))
        .into(),
        ..Default::default()
    };
    shim.client.exec(req.clone(), RPC).await.unwrap();
    let h = reader.collect();
    let e = shim.client.exec(req.clone(), RPC).await.unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::ALREADY_EXISTS, "{e:?}");
    let st = shim
        .client
        .state(
            StateRequest {
                id: "ex1".into(),
                exec_id: "e1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    assert_eq!(st.id, "e1");
    assert_eq!(st.status.enum_value_or_default(), Status::CREATED);
    let e = shim
        .client
        .kill(
            KillRequest {
                id: "ex1".into(),
                exec_id: "e1".into(),
                signal: 15,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::FAILED_PRECONDITION, "{e:?}");
    let s = shim
        .client
        .start(
            StartRequest {
                id: "ex1".into(),
                exec_id: "e1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let pids = shim
        .client
        .pids(
            PidsRequest {
                id: "ex1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let got: Vec<u32> = pids.processes.iter().map(|p| p.pid).collect();
    assert!(
        got.contains(&init) && got.contains(&s.pid),
        "pids {got:?} lack {init} or {}",
        s.pid
    );
    let info = pids.processes.iter().find(|p| p.pid == s.pid).unwrap();
    assert_eq!(info.info.type_url, "containerd.runc.v1.ProcessDetails");
    assert_eq!(
        ProcessDetails::parse_from_bytes(&info.info.value)
            .unwrap()
            .exec_id,
        "e1"
    );
    let e = shim
        .client
        .delete(
            DeleteRequest {
                id: "ex1".into(),
                exec_id: "e1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::FAILED_PRECONDITION, "{e:?}");
    let w = shim
        .client
        .wait(
            WaitRequest {
                id: "ex1".into(),
                exec_id: "e1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    assert_eq!(w.exit_status, 3);
    assert_eq!(join_output(h).await.unwrap(), b"from-exec\n");
    let d = shim
        .client
        .delete(
            DeleteRequest {
                id: "ex1".into(),
                exec_id: "e1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    assert_eq!((d.pid, d.exit_status), (s.pid, 3));
    let e = shim
        .client
        .state(
            StateRequest {
                id: "ex1".into(),
                exec_id: "e1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::NOT_FOUND);

    // After init exits, Exec is refused.
    shim.client
        .kill(
            KillRequest {
                id: "ex1".into(),
                signal: 9,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    shim.wait_task("ex1").await;
    let mut late = req.clone();
    late.exec_id = "e2".into();
    late.stdout.clear();
    let e = shim.client.exec(late, RPC).await.unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::FAILED_PRECONDITION, "{e:?}");

    let ev = shim
        .wait_for("init exit", |e| {
            e.iter().any(|e| e.topic == "/tasks/exit" && e.id == "ex1")
        })
        .await
        .unwrap();
    let s: Vec<String> = ev.iter().map(|e| format!("{} {}", e.topic, e.id)).collect();
    assert_eq!(
        s,
        [
            "/tasks/create ex1",
            "/tasks/start ex1",
            "/tasks/exec-added e1",
            "/tasks/exec-started e1",
            "/tasks/exit e1",
            "/tasks/delete e1",
            "/tasks/exit ex1",
        ]
    );
    shim.stop().await;
}

#[tokio::test]
async fn running_exec_exits_before_init() {
    let bundle = Bundle::new("ord1", &["sleep", "30"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    started(&shim, &bundle, "ord1").await;
    let req = ExecProcessRequest {
        id: "ord1".into(),
        exec_id: "long".into(),
        spec: Some(exec_spec(&["sleep", "30"])).into(),
        ..Default::default()
    };
    shim.client.exec(req, RPC).await.unwrap();
    shim.client
        .start(
            StartRequest {
                id: "ord1".into(),
                exec_id: "long".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    shim.client
        .kill(
            KillRequest {
                id: "ord1".into(),
                signal: 9,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let ev = shim
        .wait_for("init exit", |e| {
            e.iter().any(|e| e.topic == "/tasks/exit" && e.id == "ord1")
        })
        .await
        .unwrap();
    let exits: Vec<&str> = ev
        .iter()
        .filter(|e| e.topic == "/tasks/exit")
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(exits, ["long", "ord1"], "init's exit must be the last exit");
    shim.stop().await;
}

#[tokio::test]
async fn kill_all_reaches_descendants() {
    let mut bundle = Bundle::new("ka1", &["true"]).unwrap();
    bundle
        .write_spec(
            &["sh", "-c", "sleep 30 & echo $! > kid.pid; wait"],
            &[PATH_ENV],
            &bundle.path().display().to_string(),
            false,
        )
        .unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    started(&shim, &bundle, "ka1").await;
    let kid_file = bundle.path().join("kid.pid");
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !kid_file.exists() {
        assert!(std::time::Instant::now() < end, "child never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let kid: u32 = std::fs::read_to_string(&kid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pids = shim
        .client
        .pids(
            PidsRequest {
                id: "ka1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    assert!(
        pids.processes.iter().any(|p| p.pid == kid),
        "descendant {kid} missing from Pids"
    );
    shim.client
        .kill(
            KillRequest {
                id: "ka1".into(),
                signal: 15,
                all: true,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let w = shim.wait_task("ka1").await;
    assert_eq!(w.exit_status, 143);
    assert!(!pid_alive(kid as i32), "descendant survived kill --all");
    shim.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_harms_nothing() {
    let bundle = Bundle::new("good", &["sleep", "30"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let good_pid = started(&shim, &bundle, "good").await;

    let missing = tempfile::tempdir().unwrap();
    let mut req = create_req("nocfg", &bundle);
    req.bundle = missing.path().display().to_string();
    let e = shim.client.create(req.clone(), RPC).await.unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{e:?}");
    assert!(message(&e).contains("config.json"), "{e:?}");

    let garbage = tempfile::tempdir().unwrap();
    std::fs::write(garbage.path().join("config.json"), "{\n \"process\": [1,\n").unwrap();
    req.id = "garbage".into();
    req.bundle = garbage.path().display().to_string();
    let e = shim.client.create(req, RPC).await.unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{e:?}");
    assert!(message(&e).contains("config.json:"), "{e:?}");

    let noprog = Bundle::new("noprog", &["/no/such/program-xyz"]).unwrap();
    let e = shim
        .client
        .create(create_req("noprog", &noprog), RPC)
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{e:?}");
    assert!(message(&e).contains("program-xyz"), "{e:?}");

    for bad in ["a/b", "..", "x..y", ""] {
        let e = shim
            .client
            .create(create_req(bad, &bundle), RPC)
            .await
            .unwrap_err();
        assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "id {bad:?}: {e:?}");
    }
    let e = shim
        .client
        .kill(
            KillRequest {
                id: "good".into(),
                signal: 99,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{e:?}");
    assert!(message(&e).contains("99"), "{e:?}");
    let e = shim
        .client
        .kill(
            KillRequest {
                id: "nope".into(),
                signal: 9,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::NOT_FOUND, "{e:?}");
    let e = shim
        .client
        .exec(
            ExecProcessRequest {
                id: "good".into(),
                exec_id: "bad/exec".into(),
                spec: Some(exec_spec(&["true"])).into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{e:?}");

    // The good task is untouched, and the shim still serves new tasks.
    assert!(pid_alive(good_pid as i32));
    let st = shim.state_task("good").await;
    assert_eq!(st.status.enum_value_or_default(), Status::RUNNING);
    let ok = Bundle::new("after", &["true"]).unwrap();
    started(&shim, &ok, "after").await;
    let w = shim.wait_task("after").await;
    assert_eq!(w.exit_status, 0);
    shim.stop().await;
}
