//! `ctr task` verbs on running tasks: kill (signals, `--all`, paused), exec (output, codes,
//! tty, events, `ps`), pause/resume, metrics, and what is refused after init has exited.

use std::fs;
use std::time::Duration;

use crate::common;
use rstest::rstest;

use crate::common::Version::{self, V1_6, V1_7, V2_1, V2_3};
use crate::common::{parse_events, poll, proc_state};
use crate::{daemon, subscribe_events};

#[rstest]
fn task_kill_ends_attached_run_with_143_and_sigkill_with_137(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    let mut d = daemon(containerd, "kill");
    let (mut term, _) = d.run_bg(&[], "term1", &["/bin/sleep", "30"]);
    let (mut killed, _) = d.run_bg(&[], "kill1", &["/bin/sleep", "30"]);
    d.ctr(&["task", "kill", "term1"]).ok("task kill term1");
    d.ctr(&["task", "kill", "-s", "SIGKILL", "kill1"])
        .ok("task kill -s SIGKILL kill1");
    let t = term.wait(Duration::from_secs(15));
    let k = killed.wait(Duration::from_secs(15));
    assert_eq!(t.code(), 143, "SIGTERM: {t:#?}");
    assert_eq!(k.code(), 137, "SIGKILL: {k:#?}");
    d.assert_no_leaks();
}

#[rstest]
fn kill_all_reaches_descendants(#[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version) {
    let mut d = daemon(containerd, "killall");
    let marker = d.dir.path().join("child.pid");
    let script = format!("/bin/sleep 30 & echo $! > {}; wait", marker.display());
    let (mut run, _) = d.run_bg(&[], "ka1", &["/bin/sh", "-c", &script]);
    let child: u32 = poll(Duration::from_secs(5), || {
        fs::read_to_string(&marker).ok()?.trim().parse().ok()
    })
    .expect("the child wrote its pid");
    d.track(child, "background child of ka1");
    d.ctr(&["task", "kill", "--all", "-s", "SIGKILL", "ka1"])
        .ok("task kill --all");
    assert_eq!(run.wait(Duration::from_secs(15)).code(), 137);
    d.assert_no_leaks();
}

#[rstest]
fn a_paused_task_can_still_be_killed(#[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version) {
    let mut d = daemon(containerd, "pausekill");
    let (mut run, _) = d.run_bg(&[], "pk1", &["/bin/sleep", "30"]);
    d.ctr(&["task", "pause", "pk1"]).ok("task pause");
    d.ctr(&["task", "kill", "-s", "SIGKILL", "pk1"])
        .ok("task kill of a paused task");
    assert_eq!(run.wait(Duration::from_secs(15)).code(), 137);
    d.assert_no_leaks();
}

/// An init that leaves a background child behind: the child (reparented to the subreaper shim)
/// must not outlive the task, and nothing stays a zombie.
#[rstest]
fn an_orphaned_child_does_not_outlive_its_task(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    let mut d = daemon(containerd, "orphan");
    let marker = d.dir.path().join("orphan.pid");
    let script = format!("/bin/sleep 30 & echo $! > {}; exit 0", marker.display());
    let out = d.run_rm(&[], "or1", &["/bin/sh", "-c", &script], None);
    assert_eq!(out.code(), 0, "{out:#?}");
    let orphan: u32 = fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .expect("init wrote its child's pid");
    // It may already be gone; if not it is tracked and must go.
    d.track(orphan, "orphaned child of or1");
    d.assert_no_leaks();
}

#[rstest]
fn task_exec_output_and_exit_code(#[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version) {
    let mut d = daemon(containerd, "exec");
    let (mut run, _) = d.run_bg(&[], "exec1", &["/bin/sleep", "30"]);
    let fifo = d.dir.path().join("fifo").display().to_string();
    let out = d.ctr(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "e1",
        "exec1",
        "/bin/sh",
        "-c",
        "echo from-exec; echo to-stderr >&2; exit 5",
    ]);
    assert_eq!(out.code(), 5, "{out:#?}");
    assert_eq!(out.stdout, "from-exec\n", "{out:#?}");
    assert!(out.stderr.contains("to-stderr"), "{out:#?}");
    let ok = d.ctr(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "e2",
        "exec1",
        "/bin/true",
    ]);
    assert_eq!(ok.code(), 0, "{ok:#?}");

    // A running exec shows in `task ps` with its exec id; killing init ends it too.
    let long = d.ctr_cmd(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "long",
        "exec1",
        "/bin/sleep",
        "30",
    ]);
    let mut long = common::Bg::spawn(long, d.dir.path(), "exec-long");
    let mut last_ps = String::new();
    let line = poll(Duration::from_secs(10), || {
        last_ps = d.ctr(&["task", "ps", "exec1"]).stdout;
        last_ps
            .lines()
            .find(|l| info_names_exec(l, "long"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| {
        panic!(
            "exec `long` never in task ps: {}\nlast task ps:\n{last_ps}",
            long.errors()
        )
    });
    let exec_pid: u32 = line
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("pid column");
    d.track(exec_pid, "exec `long` of exec1");
    d.ctr(&["task", "kill", "-s", "SIGKILL", "exec1"])
        .ok("task kill exec1");
    assert_eq!(run.wait(Duration::from_secs(15)).code(), 137);
    let long_out = long.wait(Duration::from_secs(15));
    assert_ne!(long_out.code(), 0, "exec outlived init: {long_out:#?}");
    d.assert_no_leaks();
}

/// Whether a `ctr task ps` line's INFO (the shim's `ProcessDetails`, printed with `%+v`:
/// `cmd/ctr/commands/tasks/ps.go`) names exec `id`. ctr 1.6's gogo types print
/// `&ProcessDetails{ExecID:long,}`; 1.7's and 2.1's google.golang.org/protobuf types print their
/// text format, `exec_id:"long"`, where protobuf-go may put a space after the colon (its output is
/// deliberately unstable).
fn info_names_exec(line: &str, id: &str) -> bool {
    let info = line
        .split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ");
    info.contains(&format!("ExecID:{id},"))
        || info.contains(&format!("exec_id:\"{id}\""))
        || info.contains(&format!("exec_id: \"{id}\""))
}

#[rstest]
fn exec_with_tty_and_a_failing_exec_leave_the_task_unharmed(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    common::require_tools(&["script"]);
    let mut d = daemon(containerd, "exectty");
    let (mut run, pid) = d.run_bg(&[], "et1", &["/bin/sleep", "30"]);
    let line = format!(
        "{} --address {} --namespace {} task exec -t --exec-id t1 et1 \
         /bin/sh -c 'test -t 0 && test -t 1 && echo exec-on-a-tty; exit 6'",
        d.ctr_path().display(),
        d.address.display(),
        d.namespace
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"]);
    let out = common::run_bounded(cmd, None, common::CTR_TIMEOUT);
    assert!(out.stdout.contains("exec-on-a-tty"), "{out:#?}");
    assert_eq!(out.code(), 6, "{out:#?}");

    let fifo = d.dir.path().join("fifo").display().to_string();
    let bad = d.ctr(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "bad1",
        "et1",
        "/nonexistent/prog",
    ]);
    assert_ne!(bad.code(), 0, "{bad:#?}");
    assert!(bad.stderr.contains("/nonexistent/prog"), "{bad:#?}");
    assert_eq!(
        d.task_status("et1"),
        Some((pid, "RUNNING".to_string())),
        "a failed exec harmed the task"
    );
    d.ctr(&["task", "kill", "-s", "SIGKILL", "et1"])
        .ok("task kill et1");
    assert_eq!(run.wait(Duration::from_secs(15)).code(), 137);
    d.assert_no_leaks();
}

/// Exec events come in README order (exec-added < exec-started < exit < delete, all naming the
/// exec), and bad kill requests (unknown signal number, unknown exec id) are clear errors that
/// leave the task running.
#[rstest]
fn exec_events_in_order_and_bad_kills_are_clear_errors(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    let mut d = daemon(containerd, "execev");
    let (mut run, pid) = d.run_bg(&[], "xe1", &["/bin/sleep", "30"]);
    let ev = subscribe_events(&d);
    let fifo = d.dir.path().join("fifo").display().to_string();
    let out = d.ctr(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "e9",
        "xe1",
        "/bin/sh",
        "-c",
        "exit 4",
    ]);
    assert_eq!(out.code(), 4, "{out:#?}");
    let evs = poll(Duration::from_secs(10), || {
        let evs = parse_events(&ev.output());
        evs.iter()
            .any(|e| e.topic == "/tasks/delete" && e.body["id"] == "e9")
            .then_some(evs)
    })
    .unwrap_or_else(|| panic!("no /tasks/delete for exec e9: {}", ev.output()));
    let topics: Vec<&str> = evs
        .iter()
        .filter(|e| e.body["container_id"] == "xe1" && e.topic.starts_with("/tasks/"))
        .map(|e| e.topic.as_str())
        .collect();
    assert_eq!(
        topics,
        [
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{evs:#?}"
    );
    let exit = evs.iter().find(|e| e.topic == "/tasks/exit").expect("exit");
    assert_eq!(exit.body["id"], "e9");
    assert_eq!(exit.body["exit_status"], 4);
    drop(ev);

    let bad = d.ctr(&["task", "kill", "-s", "99", "xe1"]);
    assert_ne!(bad.code(), 0, "{bad:#?}");
    assert!(
        bad.stderr.contains("99"),
        "the error does not name the signal: {bad:#?}"
    );
    let bad = d.ctr(&["task", "kill", "--exec-id", "nope", "xe1"]);
    assert!(bad.stderr.contains("not found"), "{bad:#?}");
    assert_eq!(
        d.task_status("xe1"),
        Some((pid, "RUNNING".to_string())),
        "bad kills harmed the task"
    );
    d.ctr(&["task", "kill", "-s", "SIGKILL", "xe1"])
        .ok("task kill xe1");
    assert_eq!(run.wait(Duration::from_secs(15)).code(), 137);
    d.assert_no_leaks();
}

#[rstest]
fn task_ps_pause_resume_and_metrics(#[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version) {
    let mut d = daemon(containerd, "pause");
    // A heartbeat: a counter written every 50 ms to a host file (bind-mounted at the same path
    // for runc; the reaper runs on the host).
    let hb_dir = d.dir.path().join("hb");
    fs::create_dir_all(&hb_dir).expect("hb dir");
    let hb = hb_dir.join("beat");
    let mount = format!(
        "type=bind,src={0},dst={0},options=rbind:rw",
        hb_dir.display()
    );
    let script = format!(
        "i=0; while :; do i=$((i+1)); echo $i > {}; /bin/sleep 0.05; done",
        hb.display()
    );
    let (mut run, pid) = d.run_bg(&["--mount", &mount], "pause1", &["/bin/sh", "-c", &script]);
    let beat = || -> u64 {
        fs::read_to_string(&hb)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        poll(Duration::from_secs(5), || (beat() >= 2).then_some(())).is_some(),
        "heartbeat never advanced"
    );

    let ps = d.ctr(&["task", "ps", "pause1"]).ok("task ps");
    let pids: Vec<u32> = ps
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        pids.contains(&pid),
        "task ps lacks init {pid}: {}",
        ps.stdout
    );

    d.ctr(&["task", "pause", "pause1"]).ok("task pause");
    let (_, status) = d.task_status("pause1").expect("task listed");
    assert_eq!(status, "PAUSED");
    // Frozen by the cgroup freezer (D) or SIGSTOP (T): either way it must not run.
    let st = proc_state(pid).expect("init exists");
    assert!(st == "T" || st == "D", "paused init {pid} is in state {st}");
    let before = beat();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(beat(), before, "heartbeat advanced while PAUSED");

    d.ctr(&["task", "resume", "pause1"]).ok("task resume");
    let (_, status) = d.task_status("pause1").expect("task listed");
    assert_eq!(status, "RUNNING");
    assert!(
        poll(Duration::from_secs(5), || (beat() > before + 1)
            .then_some(()))
        .is_some(),
        "heartbeat did not resume"
    );

    let m = d.ctr(&["task", "metrics", "pause1"]).ok("task metrics");
    let figure = |prefix: &str| -> Option<u64> {
        m.stdout.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let k = f.next()?;
            (k.starts_with(prefix)).then(|| f.next()?.parse().ok())?
        })
    };
    let mem = figure("memory.usage").unwrap_or(0);
    let cpu = figure("cpuacct.usage")
        .or_else(|| figure("cpu.usage_usec"))
        .unwrap_or(0);
    assert!(mem > 0, "no memory usage figure: {}", m.stdout);
    assert!(cpu > 0, "no cpu usage figure: {}", m.stdout);

    d.ctr(&["task", "kill", "-s", "SIGKILL", "pause1"])
        .ok("task kill pause1");
    assert_eq!(run.wait(Duration::from_secs(15)).code(), 137);
    d.assert_no_leaks();
}

/// A detached task whose init exits at once stays STOPPED: exec and pause are refused with a
/// clear error, and `task delete` reports its code.
#[rstest]
fn exec_and_pause_after_init_exit_are_refused(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    let mut d = daemon(containerd, "afterexit");
    let args = d.run_args(false, &["-d"], "ae1", &["/bin/sh", "-c", "exit 3"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    d.ctr(&args).ok("ctr run -d");
    let stopped = poll(Duration::from_secs(10), || {
        d.task_status("ae1").filter(|(_, s)| s == "STOPPED")
    });
    assert!(stopped.is_some(), "ae1: {:?}", d.task_status("ae1"));
    let fifo = d.dir.path().join("fifo").display().to_string();
    let exec = d.ctr(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "late",
        "ae1",
        "/bin/true",
    ]);
    assert_ne!(exec.code(), 0, "exec after exit: {exec:#?}");
    assert!(
        exec.stderr.contains("precondition") || exec.stderr.contains("stopped"),
        "{exec:#?}"
    );
    let pause = d.ctr(&["task", "pause", "ae1"]);
    assert_ne!(pause.code(), 0, "pause after exit: {pause:#?}");
    let del = d.ctr(&["task", "delete", "ae1"]).ok("task delete");
    assert!(del.stderr.contains("exit code 3"), "{del:#?}");
    d.ctr(&["container", "delete", "ae1"])
        .ok("container delete");
    d.assert_no_leaks();
}

/// `task delete` of a running task is refused, and `task checkpoint` (the client pauses, calls
/// Checkpoint, resumes) fails as *not implemented* with the shim's reason; the task runs on.
#[rstest]
fn delete_while_running_and_checkpoint_are_refused(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    let mut d = daemon(containerd, "refused");
    let (mut run, pid) = d.run_bg(&[], "rf1", &["/bin/sleep", "30"]);
    let del = d.ctr(&["task", "delete", "rf1"]);
    assert_ne!(del.code(), 0, "delete of a running task: {del:#?}");
    let ckpt = d.ctr(&["task", "checkpoint", "rf1"]);
    assert_ne!(ckpt.code(), 0, "{ckpt:#?}");
    assert!(
        ckpt.stderr.contains("not implemented"),
        "checkpoint is not reported as unimplemented: {ckpt:#?}"
    );
    assert_eq!(
        d.task_status("rf1"),
        Some((pid, "RUNNING".to_string())),
        "the refused calls harmed the task"
    );
    d.ctr(&["task", "kill", "-s", "SIGKILL", "rf1"])
        .ok("task kill rf1");
    assert_eq!(run.wait(Duration::from_secs(15)).code(), 137);
    d.assert_no_leaks();
}
