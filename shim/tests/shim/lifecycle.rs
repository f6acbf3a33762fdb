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
        .create(create_req(id, bundle), RPC)
        .await
        .unwrap();
    // Wait before Start, like ctr: it blocks on a created process.
    let waiter = {
        let client = shim.client.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            client
                .wait(
                    WaitRequest {
                        id,
                        ..Default::default()
                    },
                    Duration::from_secs(20),
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
                KillRequest {
                    id: id.into(),
                    signal: sig,
                    ..Default::default()
                },
                RPC,
            )
            .await
            .unwrap();
    }
    waiter.await.unwrap().unwrap()
}

#[tokio::test]
async fn exit_codes_events_and_delete() {
    let bundle = Bundle::new("lc7", &["sh", "-c", "exit 7"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
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
            KillRequest {
                id: "lc7".into(),
                signal: 9,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::NOT_FOUND, "{e:?}");
    let d = shim.delete_task("lc7").await;
    assert_eq!((d.pid, d.exit_status), (st.pid, 7));
    for e in [
        shim.client
            .state(
                StateRequest {
                    id: "lc7".into(),
                    ..Default::default()
                },
                RPC,
            )
            .await
            .unwrap_err(),
        shim.client
            .delete(
                DeleteRequest {
                    id: "lc7".into(),
                    ..Default::default()
                },
                RPC,
            )
            .await
            .unwrap_err(),
    ] {
        assert_eq!(code(&e), ttrpc::Code::NOT_FOUND, "{e:?}");
    }
    let ev = shim
        .wait_for("delete event", |e| {
            e.iter().any(|e| e.topic == "/tasks/delete")
        })
        .await
        .unwrap();
    let topics: Vec<&str> = ev.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(topics, testkit::LIFECYCLE_TOPICS);
    assert!(ev.iter().all(|e| e.namespace == "reaper-test"));
    let sent = shim.mock.events().forwarded();
    let md: Vec<_> = sent
        .iter()
        .map(|f| f.metadata_namespace.as_deref())
        .collect();
    assert!(
        md.iter().all(|m| *m == Some("reaper-test")),
        "ttrpc namespace metadata: {md:?}"
    );
    let exit = sent.iter().find(|f| f.topic == "/tasks/exit").unwrap();
    assert_eq!(exit.type_url, "containerd.events.TaskExit");
    assert_eq!((ev[2].pid, ev[2].exit_status), (st.pid, 7));
    shim.stop().await;
}

#[tokio::test]
async fn signal_deaths_are_128_plus_signal() {
    for (sig, want) in [(15u32, 143u32), (9, 137)] {
        let id = format!("sig{sig}");
        let bundle = Bundle::new(&id, &["sleep", "30"]).unwrap();
        let shim = ShimProc::start(&bundle).await.unwrap();
        let w = run_to_exit(&shim, &bundle, &id, Some(sig)).await;
        assert_eq!(w.exit_status, want, "signal {sig}");
        shim.stop().await;
    }
}

#[tokio::test]
async fn zero_exit_and_exact_env_and_cwd() {
    let mut bundle = Bundle::new("env1", &["true"]).unwrap();
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
    let shim = ShimProc::start(&bundle).await.unwrap();
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
    let mut bundle = Bundle::new("inst0", &["true"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
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
                DeleteRequest {
                    id: id.clone(),
                    ..Default::default()
                },
                RPC,
            )
            .await
            .unwrap();
    }
    let ev = shim
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
        assert_eq!(mine, testkit::LIFECYCLE_TOPICS, "{id}");
    }
    shim.stop().await;
}

#[tokio::test]
async fn created_task_can_be_deleted_and_orphans_are_reaped() {
    let mut bundle = Bundle::new("cr1", &["sleep", "30"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let c = shim
        .client
        .create(create_req("cr1", &bundle), RPC)
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
    let bundle = Bundle::new("late1", &["sh", "-c", "exit 5"]).unwrap();
    // The events endpoint is down from before `start`.
    let mut mock = mock().await.unwrap();
    mock.endpoints_down(false).await;
    let mut shim = ShimProc::launch(mock, &shim_bin(), &bundle, &[])
        .await
        .unwrap();
    shim.client
        .create(create_req("late1", &bundle), RPC)
        .await
        .unwrap();
    shim.start_task("late1").await;
    let w = shim.wait_task("late1").await;
    assert_eq!(w.exit_status, 5);
    shim.delete_task("late1").await;
    // The endpoint appears only now (the shim has been retrying the head of its queue).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(shim.events().is_empty(), "{:?}", shim.summary());
    shim.mock.endpoints_up().await.unwrap();
    let ev = shim
        .wait_for("all four events", |e| e.len() >= 4)
        .await
        .unwrap();
    let topics: Vec<&str> = ev.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(topics, testkit::LIFECYCLE_TOPICS);
    shim.client
        .shutdown(ShutdownRequest::default(), RPC)
        .await
        .unwrap();
    assert!(
        shim.wait_gone(Duration::from_secs(5)).await,
        "server did not exit"
    );
    shim.stop().await;
}

#[tokio::test]
async fn exec_failure_at_start_is_a_clear_error_without_events() {
    let mut bundle = Bundle::new("badexec", &["true"]).unwrap();
    let bad = bundle.path().join("not-a-binary");
    std::fs::write(&bad, b"\x7fELF-but-not-really").unwrap();
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bundle
        .write_spec(&[&bad.display().to_string()], &[PATH_ENV], "/", false)
        .unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    shim.client
        .create(create_req("badexec", &bundle), RPC)
        .await
        .unwrap();
    let e = shim
        .client
        .start(
            StartRequest {
                id: "badexec".into(),
                ..Default::default()
            },
            RPC,
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

/// A created process shares the server's memory until its exec (`clone(CLONE_VM)` on kernels
/// from 5.16), so none of the server's signal handlers may run in it and a core-dumping signal
/// must end it alone. A SIGTERM sent straight to a created process ends that process (143),
/// not the server (whose SIGTERM handler, run in the child, would tell the server to exit);
/// a SIGQUIT (core-dumping) ends the next one alone (131). The server then still runs a task.
#[tokio::test]
async fn signals_to_a_created_process_end_it_and_not_the_server() {
    use nix::sys::signal::{kill, Signal};
    let mut bundle = Bundle::new("sig1", &["true"]).unwrap();
    // Any core file lands in the bundle (removed with it).
    let cwd = bundle.path().display().to_string();
    bundle
        .write_spec(&["true"], &[PATH_ENV], &cwd, false)
        .unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    for (id, sig, code) in [
        ("sig1", Signal::SIGTERM, 143),
        ("sig2", Signal::SIGQUIT, 131),
    ] {
        let c = shim
            .client
            .create(create_req(id, &bundle), RPC)
            .await
            .unwrap();
        let st = shim.state_task(id).await;
        assert_eq!(st.status.enum_value_or_default(), Status::CREATED);
        kill(nix::unistd::Pid::from_raw(c.pid as i32), sig).unwrap();
        let w = shim.wait_task(id).await;
        assert_eq!(w.exit_status, code, "{id} after {sig}");
        assert!(
            shim.alive(),
            "the server ended with its created child after {sig}"
        );
        shim.delete_task(id).await;
    }
    let w = run_to_exit(&shim, &bundle, "sig3", None).await;
    assert_eq!(w.exit_status, 0);
    assert!(shim.alive());
    let report = shim.stop().await;
    assert!(report.leaks.is_empty(), "{:?}", report.leaks);
}
