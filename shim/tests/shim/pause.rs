//! Pause/Resume (cgroup freezer and the SIGSTOP fallback), Stats, the no-cgroup session
//! fallback, and the built-in pause of CRI pod sandboxes.

use std::time::Duration;

use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::Message;

use crate::support::*;
use crate::tasks::started;

fn read_counter(p: &std::path::Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn pause_freezes_and_resume_thaws_every_process() {
    let mut bundle = Bundle::new("pz1", &["true"]).unwrap();
    let counter = bundle.path().join("count");
    let script = format!(
        "i=0; while true; do i=$((i+1)); echo $i > {0}.tmp; mv {0}.tmp {0}; sleep 0.01; done",
        counter.display()
    );
    bundle
        .write_spec(&["sh", "-c", &script], &[PATH_ENV], "/", false)
        .unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let e = {
        shim.client
            .create(create_req("pz1", &bundle), RPC)
            .await
            .unwrap();
        shim.client
            .pause(
                PauseRequest {
                    id: "pz1".into(),
                    ..Default::default()
                },
                RPC,
            )
            .await
            .unwrap_err()
    };
    assert_eq!(
        code(&e),
        ttrpc::Code::FAILED_PRECONDITION,
        "pause while created: {e:?}"
    );
    shim.start_task("pz1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(read_counter(&counter) > 0, "loop not running");
    let e = shim
        .client
        .resume(
            ResumeRequest {
                id: "pz1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        ttrpc::Code::FAILED_PRECONDITION,
        "resume while running: {e:?}"
    );
    shim.client
        .pause(
            PauseRequest {
                id: "pz1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let st = shim.state_task("pz1").await;
    assert_eq!(st.status.enum_value_or_default(), Status::PAUSED);
    let e = shim
        .client
        .pause(
            PauseRequest {
                id: "pz1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        ttrpc::Code::FAILED_PRECONDITION,
        "pause while paused: {e:?}"
    );
    let a = read_counter(&counter);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        read_counter(&counter),
        a,
        "processes kept running while paused"
    );
    shim.client
        .resume(
            ResumeRequest {
                id: "pz1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(read_counter(&counter) > a, "processes did not resume");
    let stats = shim
        .client
        .stats(
            StatsRequest {
                id: "pz1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    assert_eq!(stats.stats.type_url, "io.containerd.cgroups.v1.Metrics");
    let m = containerd_shim_protos::cgroups::metrics::Metrics::parse_from_bytes(&stats.stats.value)
        .unwrap();
    assert!(m.cpu.usage.total > 0, "cpu usage {m:?}");
    assert!(m.memory.usage.usage > 0, "memory usage {m:?}");
    shim.client
        .kill(
            KillRequest {
                id: "pz1".into(),
                signal: 9,
                all: true,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let w = shim.wait_task("pz1").await;
    assert_eq!(w.exit_status, 137);
    shim.wait_for("paused+resumed", |e| {
        let t: Vec<&str> = e.iter().map(|e| e.topic.as_str()).collect();
        let p = t.iter().position(|t| *t == "/tasks/paused");
        let r = t.iter().position(|t| *t == "/tasks/resumed");
        matches!((p, r), (Some(p), Some(r)) if p < r)
    })
    .await
    .unwrap();
    shim.stop().await;
}

#[tokio::test]
async fn pod_sandbox_runs_the_builtin_pause() {
    let bundle = Bundle::new("sb1", &["/pause"]).unwrap();
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.path().join("config.json")).unwrap()).unwrap();
    spec["annotations"] = serde_json::json!({
        "io.kubernetes.cri.container-type": "sandbox",
        "io.kubernetes.cri.sandbox-id": "sb1",
    });
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let pid = started(&shim, &bundle, "sb1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = shim.state_task("sb1").await;
    assert_eq!(
        st.status.enum_value_or_default(),
        Status::RUNNING,
        "pause must keep running"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        cmdline.ends_with(b"pause\0"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    shim.client
        .kill(
            KillRequest {
                id: "sb1".into(),
                signal: 15,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let w = shim.wait_task("sb1").await;
    assert_eq!(w.exit_status, 0, "pause exits 0 on SIGTERM");
    shim.stop().await;
}

#[tokio::test]
async fn without_cgroups_sessions_carry_kill_all_pids_pause_and_stats() {
    let mut bundle = Bundle::new("nocg1", &["true"]).unwrap();
    let counter = bundle.path().join("count");
    let script = format!(
        "sleep 30 & echo $! > kid.pid; i=0; while true; do i=$((i+1)); echo $i > {0}.tmp; mv {0}.tmp {0}; sleep 0.01; done",
        counter.display()
    );
    bundle
        .write_spec(
            &["sh", "-c", &script],
            &[PATH_ENV],
            &bundle.path().display().to_string(),
            false,
        )
        .unwrap();
    let env = [("REAPER_NO_CGROUP", "1")];
    let shim = ShimProc::start_bin(&shim_bin(), &bundle, &env)
        .await
        .unwrap();
    started(&shim, &bundle, "nocg1").await;
    assert!(
        !bundle.path().join("reaper-cgroup").exists(),
        "a cgroup was created"
    );
    let kid_file = bundle.path().join("kid.pid");
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while read_counter(&counter) == 0 || !kid_file.exists() {
        assert!(std::time::Instant::now() < end, "task never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let kid: u32 = std::fs::read_to_string(&kid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pids = shim
        .client
        .pids(
            PidsRequest {
                id: "nocg1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    assert!(
        pids.processes.iter().any(|p| p.pid == kid),
        "descendant {kid} missing: {pids:?}"
    );

    shim.client
        .pause(
            PauseRequest {
                id: "nocg1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = read_counter(&counter);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        read_counter(&counter),
        a,
        "SIGSTOP pause did not stop the loop"
    );
    shim.client
        .resume(
            ResumeRequest {
                id: "nocg1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        read_counter(&counter) > a,
        "SIGCONT resume did not restart the loop"
    );

    let stats = shim
        .client
        .stats(
            StatsRequest {
                id: "nocg1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let m = containerd_shim_protos::cgroups::metrics::Metrics::parse_from_bytes(&stats.stats.value)
        .unwrap();
    assert!(m.memory.usage.usage > 0, "memory from /proc: {m:?}");

    shim.client
        .kill(
            KillRequest {
                id: "nocg1".into(),
                signal: 9,
                all: true,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let w = shim.wait_task("nocg1").await;
    assert_eq!(w.exit_status, 137);
    assert!(!pid_alive(kid as i32), "descendant survived kill --all");
    shim.stop().await;
}
