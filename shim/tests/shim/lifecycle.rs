//! Create/Start/Wait/Kill/Delete of the init process, exit codes and event order.

use std::time::Duration;

use containerd_shim_protos::api::*;

use crate::support::*;

async fn run_to_exit(
    shim: &ShimProc,
    bundle: &Bundle,
    id: &str,
    kill: Option<u32>,
) -> WaitResponse {
    let c = shim
        .client
        .create(ctx(), &create_req(id, bundle))
        .await
        .unwrap();
    // Wait before Start, like ctr: it blocks on a created process.
    let waiter = {
        let client = shim.client.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            client
                .wait(
                    ttrpc::context::with_duration(Duration::from_secs(20)),
                    &WaitRequest {
                        id,
                        ..Default::default()
                    },
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "Wait returned before Start");
    let s = shim.start_task(id).await;
    assert_eq!(s.pid, c.pid, "Start pid must be the Create pid");
    if let Some(sig) = kill {
        tokio::time::sleep(Duration::from_millis(100)).await;
        shim.client
            .kill(
                ctx(),
                &KillRequest {
                    id: id.into(),
                    signal: sig,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    waiter.await.unwrap().unwrap()
}

#[tokio::test]
async fn exit_codes_events_and_delete() {
    let bundle = Bundle::new(&["sh", "-c", "exit 7"]).unwrap();
    let shim = ShimProc::start(&bundle, "lc7").await.unwrap();
    let w = run_to_exit(&shim, &bundle, "lc7", None).await;
    assert_eq!(w.exit_status, 7);
    assert!(w.exited_at.seconds > 0);
    let st = shim.state_task("lc7").await;
    assert_eq!(st.status.enum_value_or_default(), Status::STOPPED);
    assert_eq!(st.exit_status, 7);
    assert_eq!(st.exited_at.seconds, w.exited_at.seconds);
    assert_eq!(st.exited_at.nanos, w.exited_at.nanos);
    // Running → Kill after exit is NotFound.
    let e = shim
        .client
        .kill(
            ctx(),
            &KillRequest {
                id: "lc7".into(),
                signal: 9,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::NOT_FOUND, "{e:?}");
    let d = shim.delete_task("lc7").await;
    assert_eq!((d.pid, d.exit_status), (st.pid, 7));
    for e in [
        shim.client
            .state(
                ctx(),
                &StateRequest {
                    id: "lc7".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err(),
        shim.client
            .delete(
                ctx(),
                &DeleteRequest {
                    id: "lc7".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err(),
    ] {
        assert_eq!(code(&e), ttrpc::Code::NOT_FOUND, "{e:?}");
    }
    let ev = shim
        .events
        .rec
        .wait_for("delete event", |e| {
            e.iter().any(|e| e.topic == "/tasks/delete")
        })
        .await
        .unwrap();
    let topics: Vec<&str> = ev.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    assert!(ev.iter().all(|e| e.namespace == "reaper-test"));
    let md = shim.events.rec.1.lock().unwrap().clone();
    assert!(
        md.iter().all(|m| m == "reaper-test"),
        "ttrpc namespace metadata: {md:?}"
    );
    assert_eq!(ev[2].type_url, "containerd.events.TaskExit");
    assert_eq!((ev[2].pid, ev[2].exit_status), (st.pid, 7));
    shim.stop().await;
}

#[tokio::test]
async fn signal_deaths_are_128_plus_signal() {
    for (sig, want) in [(15u32, 143u32), (9, 137)] {
        let bundle = Bundle::new(&["sleep", "30"]).unwrap();
        let id = format!("sig{sig}");
        let shim = ShimProc::start(&bundle, &id).await.unwrap();
        let w = run_to_exit(&shim, &bundle, &id, Some(sig)).await;
        assert_eq!(w.exit_status, want, "signal {sig}");
        shim.stop().await;
    }
}

#[tokio::test]
async fn zero_exit_and_exact_env_and_cwd() {
    let bundle = Bundle::new(&["true"]).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("env.txt");
    let script = format!("env > {0}; pwd >> {0}", out.display());
    bundle
        .write_spec(
            &["sh", "-c", &script],
            &[PATH_ENV, "REAPER_A=1"],
            "/tmp",
            false,
        )
        .unwrap();
    let shim = ShimProc::start(&bundle, "env1").await.unwrap();
    let w = run_to_exit(&shim, &bundle, "env1", None).await;
    assert_eq!(w.exit_status, 0);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.pop(), Some("/tmp"), "cwd: {text}");
    // sh adds PWD (and may add SHLVL / _); nothing of the shim's own environment may leak.
    let leaked: Vec<&&str> = lines
        .iter()
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
        .filter(|l| **l != PATH_ENV && **l != "REAPER_A=1")
        .collect();
    assert!(leaked.is_empty(), "environment leaked: {leaked:?}");
    assert!(lines.contains(&"REAPER_A=1"), "{text}");
    assert!(!text.contains("TTRPC_ADDRESS"), "{text}");
    shim.stop().await;
}

#[tokio::test]
async fn instant_exits_publish_start_before_exit() {
    let bundle = Bundle::new(&["true"]).unwrap();
    let shim = ShimProc::start(&bundle, "inst0").await.unwrap();
    // One server, many containers (same bundle config, different ids).
    for i in 0..10 {
        let id = format!("inst{i}");
        let code_ = i % 3;
        bundle
            .write_spec(
                &["sh", "-c", &format!("exit {code_}")],
                &[PATH_ENV],
                "/",
                false,
            )
            .unwrap();
        let w = run_to_exit(&shim, &bundle, &id, None).await;
        assert_eq!(w.exit_status, code_ as u32, "{id}");
        shim.client
            .delete(
                ctx(),
                &DeleteRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let ev = shim
        .events
        .rec
        .wait_for("10 deletes", |e| {
            e.iter().filter(|e| e.topic == "/tasks/delete").count() == 10
        })
        .await
        .unwrap();
    for i in 0..10 {
        let id = format!("inst{i}");
        let mine: Vec<&str> = ev
            .iter()
            .filter(|e| e.id == id)
            .map(|e| e.topic.as_str())
            .collect();
        assert_eq!(
            mine,
            [
                "/tasks/create",
                "/tasks/start",
                "/tasks/exit",
                "/tasks/delete"
            ],
            "{id}"
        );
    }
    shim.stop().await;
}

#[tokio::test]
async fn created_task_can_be_deleted_and_orphans_are_reaped() {
    let bundle = Bundle::new(&["sleep", "30"]).unwrap();
    let shim = ShimProc::start(&bundle, "cr1").await.unwrap();
    let c = shim
        .client
        .create(ctx(), &create_req("cr1", &bundle))
        .await
        .unwrap();
    assert!(pid_alive(c.pid as i32));
    let st = shim.state_task("cr1").await;
    assert_eq!(st.status.enum_value_or_default(), Status::CREATED);
    assert_eq!((st.exited_at.seconds, st.exited_at.nanos), (0, 0));
    let d = shim.delete_task("cr1").await;
    assert_eq!(d.pid, c.pid);
    assert!(
        !pid_alive(c.pid as i32),
        "created process not killed by Delete"
    );

    // A task that leaves a background child: it dies with init and nothing stays a zombie.
    bundle
        .write_spec(
            &["sh", "-c", "sleep 30 & echo $! > bg.pid; exit 0"],
            &[PATH_ENV],
            &bundle.path().display().to_string(),
            false,
        )
        .unwrap();
    let w = run_to_exit(&shim, &bundle, "cr2", None).await;
    assert_eq!(w.exit_status, 0);
    let bg: i32 = std::fs::read_to_string(bundle.path().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while pid_alive(bg) || !zombies_of(shim.pid).is_empty() {
        assert!(
            std::time::Instant::now() < end,
            "background {bg} alive or zombies {:?}",
            zombies_of(shim.pid)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shim.stop().await;
}

#[tokio::test]
async fn events_are_queued_until_the_endpoint_comes_up() {
    become_subreaper();
    let bundle = Bundle::new(&["sh", "-c", "exit 5"]).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let events_path = scratch.path().join("events.sock");
    let grpc = scratch.path().join("c.sock").display().to_string();
    let st = run_start(
        &shim_bin(),
        bundle.path(),
        "reaper-test",
        &grpc,
        "late1",
        &events_path,
    )
    .unwrap();
    assert!(st.status.success(), "{}", st.stdout);
    let raw = ttrpc::asynchronous::Client::connect(&st.stdout)
        .await
        .unwrap();
    let client = containerd_shim_protos::shim_async::TaskClient::new(raw);
    client
        .create(ctx(), &create_req("late1", &bundle))
        .await
        .unwrap();
    client
        .start(
            ctx(),
            &StartRequest {
                id: "late1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let w = client
        .wait(
            ctx(),
            &WaitRequest {
                id: "late1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(w.exit_status, 5);
    client
        .delete(
            ctx(),
            &DeleteRequest {
                id: "late1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // The endpoint appears only now (the shim has been retrying the head of its queue).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut events = EventsServer::start(scratch.path()).await.unwrap();
    let ev = events
        .rec
        .wait_for("all four events", |e| e.len() >= 4)
        .await
        .unwrap();
    let topics: Vec<&str> = ev.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    let pid = client
        .connect(ctx(), &ConnectRequest::default())
        .await
        .unwrap()
        .shim_pid as i32;
    client
        .shutdown(ctx(), &ShutdownRequest::default())
        .await
        .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) {
        reap(pid);
        assert!(std::time::Instant::now() < end, "server did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reap(pid);
    events.stop().await;
}

#[tokio::test]
async fn exec_failure_at_start_is_a_clear_error_without_events() {
    let bundle = Bundle::new(&["true"]).unwrap();
    let bad = bundle.path().join("not-a-binary");
    std::fs::write(&bad, b"\x7fELF-but-not-really").unwrap();
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bundle
        .write_spec(&[&bad.display().to_string()], &[PATH_ENV], "/", false)
        .unwrap();
    let shim = ShimProc::start(&bundle, "badexec").await.unwrap();
    shim.client
        .create(ctx(), &create_req("badexec", &bundle))
        .await
        .unwrap();
    let e = shim
        .client
        .start(
            ctx(),
            &StartRequest {
                id: "badexec".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    let msg = message(&e);
    assert!(
        msg.contains("not-a-binary") && msg.contains("exec"),
        "{msg}"
    );
    let d = shim.delete_task("badexec").await;
    assert_eq!(d.exit_status, 127);
    let ev = shim
        .events
        .rec
        .wait_for("delete", |e| e.iter().any(|e| e.topic == "/tasks/delete"))
        .await
        .unwrap();
    let topics: Vec<&str> = ev.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(
        topics,
        ["/tasks/create", "/tasks/delete"],
        "no start/exit for a failed start"
    );
    shim.stop().await;
}
