//! Shim lifecycle as containerd sees it: event order, one server per group or pod, a killed
//! shim, and containerd restarts (also with an exit while it is down).

use std::fs;
use std::time::Duration;

use crate::common;
use crate::common::{normalize_time, parse_events, poll, Runtime};
use crate::{daemon, subscribe_events};

#[test]
fn events_create_start_exit_delete_in_order() {
    let mut d = daemon("events");
    let ev = subscribe_events(&d);
    let out = d.run_rm(&[], "ev1", &["/bin/sh", "-c", "echo hi; exit 3"], None);
    assert_eq!(out.code(), 3, "{out:#?}");
    let events = poll(Duration::from_secs(10), || {
        let evs = parse_events(&ev.output());
        evs.iter()
            .any(|e| e.topic == "/containers/delete")
            .then_some(evs)
    })
    .unwrap_or_else(|| panic!("no /containers/delete event: {}", ev.output()));
    let ours: Vec<common::Event> = events
        .into_iter()
        .filter(|e| e.topic.starts_with("/tasks/") && e.body["container_id"] == "ev1")
        .collect();
    let times: Vec<String> = ours.iter().map(|e| e.time.clone()).collect();
    let ours: Vec<(String, serde_json::Value)> =
        ours.into_iter().map(|e| (e.topic, e.body)).collect();
    let topics: Vec<&str> = ours.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{ours:#?}"
    );
    let pid = &ours[1].1["pid"];
    assert!(pid.as_u64().unwrap_or(0) > 0, "{ours:#?}");
    assert_eq!(&ours[2].1["pid"], pid, "exit pid != start pid: {ours:#?}");
    assert_eq!(ours[2].1["exit_status"], 3, "{ours:#?}");
    assert_eq!(ours[3].1["exit_status"], 3, "{ours:#?}");
    // exited_at is the real exit time: after the start was published, before the exit was, and
    // the same in /tasks/exit and /tasks/delete.
    let exited_at = ours[2].1["exited_at"].as_str().map(normalize_time);
    let exited_at = exited_at.unwrap_or_else(|| panic!("no exited_at: {ours:#?}"));
    let (start_t, exit_t) = (&times[1], &times[2]);
    assert!(
        start_t <= &exited_at && &exited_at <= exit_t,
        "exited_at {exited_at} outside [{start_t}, {exit_t}]"
    );
    assert_eq!(ours[3].1["exited_at"], ours[2].1["exited_at"], "{ours:#?}");
    drop(ev);
    d.assert_no_leaks();
}

#[test]
fn two_containers_of_one_group_share_one_server() {
    let mut d = daemon("group");
    let ann = match d.runtime {
        Runtime::Reaper | Runtime::Faulty => "io.containerd.reaper.v2.group=g1",
        Runtime::Runc => "io.containerd.runc.v2.group=g1",
    };
    let (mut a, _) = d.run_bg(&["--annotation", ann], "ga", &["/bin/sleep", "30"]);
    let (mut b, _) = d.run_bg(&["--annotation", ann], "gb", &["/bin/sleep", "30"]);
    d.use_id("g1");
    let shims = d.server_pids();
    assert_eq!(
        shims.len(),
        1,
        "two containers of group g1, servers {shims:?}"
    );
    // An exec in the second container goes to the right task.
    let fifo = d.dir.path().join("fifo").display().to_string();
    let out = d.ctr(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "x1",
        "gb",
        "/bin/sh",
        "-c",
        "exit 9",
    ]);
    assert_eq!(out.code(), 9, "{out:#?}");
    d.ctr(&["task", "kill", "-s", "SIGKILL", "ga"])
        .ok("kill ga");
    assert_eq!(a.wait(Duration::from_secs(15)).code(), 137);
    // The server still serves the other container.
    assert_eq!(d.server_pids(), shims, "server gone while gb runs");
    let (_, st) = d.task_status("gb").expect("gb listed");
    assert_eq!(st, "RUNNING");
    d.ctr(&["task", "kill", "-s", "SIGKILL", "gb"])
        .ok("kill gb");
    assert_eq!(b.wait(Duration::from_secs(15)).code(), 137);
    d.assert_no_leaks();
}

/// A CRI-style pod through plain ctr: the sandbox (annotated `container-type=sandbox`) runs the
/// shim's built-in pause instead of the image's `/pause`, a container of the same sandbox shares
/// its server, and SIGTERM ends the pause with 0.
#[test]
fn pod_sandbox_runs_the_builtin_pause_and_shares_its_server() {
    let mut d = daemon("pod");
    assert_ne!(
        d.runtime,
        Runtime::Runc,
        "the built-in pause is reaper behaviour"
    );
    let sandbox = [
        "--annotation",
        "io.kubernetes.cri.container-type=sandbox",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=sb1",
    ];
    let (mut pause, pid) = d.run_bg(&sandbox, "sb1", &["/pause"]);
    let shims = d.server_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let exe = fs::read_link(format!("/proc/{pid}/exe")).expect("pause exe");
    assert!(
        // (a rebuilt binary shows as `<path> (deleted)`)
        exe.display()
            .to_string()
            .starts_with(&d.shim_binary().display().to_string()),
        "sandbox runs {} instead of the built-in pause",
        exe.display()
    );
    let member = [
        "--annotation",
        "io.kubernetes.cri.container-type=container",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=sb1",
    ];
    let out = d.run_rm(&member, "c1", &["/bin/echo", "in the pod"], None);
    assert_eq!(out.ok("pod member").stdout, "in the pod\n");
    assert_eq!(
        d.server_pids(),
        shims,
        "the member did not share the sandbox's server"
    );
    d.ctr(&["task", "kill", "sb1"]).ok("task kill sb1");
    let out = pause.wait(Duration::from_secs(15));
    assert_eq!(out.code(), 0, "pause on SIGTERM: {out:#?}");
    d.assert_no_leaks();
}

#[test]
fn a_killed_shim_is_cleaned_up_by_containerd() {
    let mut d = daemon("shimdeath");
    let ev = subscribe_events(&d);
    let (mut run, _) = d.run_bg(&[], "sd1", &["/bin/sleep", "30"]);
    let shims = d.server_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the shim");
    // containerd runs the `delete` action, which must end the task, and publishes the exit
    // itself from the DeleteResponse. ctr's pending Wait fails with `ttrpc: closed` (as with the
    // runc shim): it must end, whatever its code.
    let out = run.wait(Duration::from_secs(20));
    assert!(out.stderr.contains("closed"), "{out:#?}");
    let evs = poll(Duration::from_secs(10), || {
        let evs = parse_events(&ev.output());
        evs.iter()
            .any(|e| e.topic == "/tasks/delete" && e.body["container_id"] == "sd1")
            .then_some(evs)
    })
    .unwrap_or_else(|| panic!("no /tasks/delete for sd1: {}", ev.output()));
    let exit = evs
        .iter()
        .find(|e| e.topic == "/tasks/exit" && e.body["container_id"] == "sd1")
        .unwrap_or_else(|| panic!("no /tasks/exit for sd1: {evs:#?}"));
    assert_eq!(exit.body["exit_status"], 137, "{evs:#?}");
    drop(ev);
    d.assert_no_leaks();
}

/// containerd restarts while a detached task runs: the shim survives, containerd reloads it from
/// the bundle (`address` + Connect), and the task can still be killed, reported and deleted.
#[test]
fn a_task_survives_a_containerd_restart() {
    let mut d = daemon("restart");
    let args = d.run_args(false, &["-d"], "rs1", &["/bin/sleep", "30"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    d.ctr(&args).ok("ctr run -d");
    let (pid, st) = d.task_status("rs1").expect("rs1 listed");
    assert_eq!(st, "RUNNING");
    d.track(pid, "init of rs1");
    let shims = d.server_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");

    d.restart();
    assert_eq!(
        d.server_pids(),
        shims,
        "the shim did not survive the restart"
    );
    assert_eq!(
        d.task_status("rs1"),
        Some((pid, "RUNNING".to_string())),
        "after restart; log:\n{}",
        common::tail(&d.log_text(), 30)
    );
    d.ctr(&["task", "kill", "-s", "SIGKILL", "rs1"])
        .ok("task kill after restart");
    let stopped = poll(Duration::from_secs(10), || {
        d.task_status("rs1").filter(|(_, s)| s == "STOPPED")
    });
    assert!(
        stopped.is_some(),
        "rs1 never STOPPED: {:?}",
        d.task_status("rs1")
    );
    d.ctr(&["task", "delete", "rs1"]).ok("task delete");
    d.ctr(&["container", "delete", "rs1"])
        .ok("container delete");
    d.assert_no_leaks();
}

/// The task exits while containerd is down: after the restart containerd still learns the exit
/// (State says STOPPED; the queued `/tasks/exit` is delivered once the endpoint is back), and
/// `task delete` reports the real status.
#[test]
fn an_exit_while_containerd_is_down_is_reported_after_restart() {
    let mut d = daemon("downexit");
    let args = d.run_args(false, &["-d"], "de1", &["/bin/sleep", "30"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    d.ctr(&args).ok("ctr run -d");
    let (pid, _) = d.task_status("de1").expect("de1 listed");
    d.track(pid, "init of de1");
    d.stop_daemon();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the task while containerd is down");
    std::thread::sleep(Duration::from_millis(300));
    d.start_daemon();
    let stopped = poll(Duration::from_secs(10), || {
        d.task_status("de1").filter(|(_, s)| s == "STOPPED")
    });
    assert!(stopped.is_some(), "de1: {:?}", d.task_status("de1"));
    // The shim's queued /tasks/exit reaches the restarted containerd (its debug log records
    // every forwarded event; `ctr events` could subscribe too late to see it).
    let forwarded = poll(Duration::from_secs(20), || {
        let log = d.log_text();
        let after = log
            .rsplit("containerd successfully booted")
            .next()?
            .to_string();
        after
            .lines()
            .any(|l| {
                l.contains("msg=\"event forwarded\"")
                    && l.contains("ns=downexit")
                    && l.contains("topic=/tasks/exit")
            })
            .then_some(())
    });
    assert!(
        forwarded.is_some(),
        "the exit queued while containerd was down never arrived:\n{}",
        common::tail(&d.log_text(), 30)
    );
    let del = d.ctr(&["task", "delete", "de1"]).ok("task delete");
    assert!(del.stderr.contains("exit code 137"), "{del:#?}");
    d.ctr(&["container", "delete", "de1"])
        .ok("container delete");
    d.assert_no_leaks();
}

/// A stale socket (a file nobody listens on) at the path a container hashes to is replaced by
/// `start`, and removed again when the server exits.
#[test]
fn a_stale_socket_is_replaced() {
    let mut d = daemon("stale");
    d.use_id("st1");
    let sock = d.socket_paths().pop().expect("socket path");
    fs::create_dir_all(sock.parent().expect("socket dir")).expect("socket dir");
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind a stale socket"));
    assert!(
        sock.exists(),
        "the stale socket file should remain after close"
    );
    let out = d.run_rm(&[], "st1", &["/bin/echo", "over a stale socket"], None);
    assert_eq!(
        out.ok("run over a stale socket").stdout,
        "over a stale socket\n"
    );
    d.assert_no_leaks();
}
