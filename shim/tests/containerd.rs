//! The reaper shim under a real containerd 1.6 (issue 2's acceptance): each test starts a private
//! daemon (own root, state, sockets; the built shim first on its PATH), drives it with `ctr`, and
//! ends by checking that no shim process, socket, task process, zombie or cgroup of ours remains.
//! `REAPER_CTD_RUNTIME=runc` runs the same checks against Debian's runc shim (fixture validation).

mod common;

use std::fs;
use std::time::Duration;

use common::{parse_events, poll, proc_state, status_kb, Daemon, DaemonOpts, Runtime};

fn daemon(ns: &str) -> Daemon {
    Daemon::start(Runtime::from_env(), ns, DaemonOpts::default())
}

#[test]
fn run_rm_echo_prints_output() {
    let mut d = daemon("echo");
    let out = d.run_rm(&[], "echo1", &["/bin/echo", "hello", "from reaper"], None);
    let out = out.ok("ctr run --rm echo");
    assert_eq!(out.stdout, "hello from reaper\n");
    d.assert_no_leaks();
}

#[test]
fn exit_code_seven_is_ctr_exit_code() {
    let mut d = daemon("exit7");
    let out = d.run_rm(&[], "exit7", &["/bin/sh", "-c", "exit 7"], None);
    assert_eq!(out.code(), 7, "{out:#?}");
    d.assert_no_leaks();
}

#[test]
fn stdin_env_and_cwd_reach_the_process() {
    let mut d = daemon("stdio");
    let cwd = d.dir.path().join("work dir");
    fs::create_dir_all(&cwd).expect("cwd");
    let cwd_s = cwd.display().to_string();
    let out = d.run_rm(
        &["--env", "FOO=bar baz", "--env", "EMPTY=", "--cwd", &cwd_s],
        "stdio1",
        &[
            "/bin/sh",
            "-c",
            // `read` needs no EOF: ctr forwards the line as soon as it is piped in.
            "read line; echo \"line=$line\"; echo \"FOO=$FOO\"; pwd; /bin/env",
        ],
        Some(b"piped data 42\n"),
    );
    let out = out.ok("ctr run with stdin/env/cwd");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"line=piped data 42"), "{out:#?}");
    assert_eq!(lines.get(1), Some(&"FOO=bar baz"), "{out:#?}");
    if d.runtime != Runtime::Runc {
        // runc resolves cwd inside the rootfs; the reaper runs on the host.
        assert_eq!(lines.get(2), Some(&cwd_s.as_str()), "{out:#?}");
    }
    let env: Vec<&str> = lines.iter().skip(3).copied().collect();
    assert!(env.contains(&"EMPTY="), "env lacks EMPTY=: {env:?}");
    for leaked in ["TTRPC_ADDRESS=", "GOMAXPROCS=", "CARGO"] {
        assert!(
            !env.iter().any(|l| l.starts_with(leaked)),
            "the shim's own env leaked into the process ({leaked}): {env:?}"
        );
    }
    d.assert_no_leaks();
}

#[test]
fn task_kill_ends_attached_run_with_143_and_sigkill_with_137() {
    let mut d = daemon("kill");
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

#[test]
fn task_exec_output_and_exit_code() {
    let mut d = daemon("exec");
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
    let line = poll(Duration::from_secs(10), || {
        let ps = d.ctr(&["task", "ps", "exec1"]);
        ps.stdout
            .lines()
            .find(|l| l.contains("ExecID:long"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("exec `long` never in task ps: {}", long.errors()));
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

#[test]
fn task_ps_pause_resume_and_metrics() {
    let mut d = daemon("pause");
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

/// `ctr events` in the background, returned once it is subscribed (one of our own probe events
/// came through: ctr may subscribe after it starts).
fn subscribe_events(d: &Daemon) -> common::Bg {
    let ev = common::Bg::spawn(d.ctr_cmd(&["events"]), d.dir.path(), "events");
    // Subscribed once one of our own probe events comes through (ctr may subscribe late).
    let subscribed = (0..40).any(|i| {
        let name = format!("probe{i}");
        d.ctr(&["namespaces", "create", &name])
            .ok("namespaces create");
        poll(Duration::from_millis(250), || {
            parse_events(&ev.output())
                .iter()
                .any(|e| e.topic == "/namespaces/create" && e.body["name"] == name.as_str())
                .then_some(())
        })
        .is_some()
    });
    assert!(
        subscribed,
        "ctr events never showed our /namespaces/create: {}",
        ev.errors()
    );
    ev
}

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
    let ours: Vec<(String, serde_json::Value)> = events
        .into_iter()
        .filter(|e| e.topic.starts_with("/tasks/") && e.body["container_id"] == "ev1")
        .map(|e| (e.topic, e.body))
        .collect();
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
    drop(ev);
    d.assert_no_leaks();
}

#[test]
fn twenty_back_to_back_instant_exits_report_their_codes() {
    let mut d = daemon("burst");
    for n in 0..20 {
        let id = format!("burst{n}");
        let code = format!("exit {n}");
        let out = d.run_rm(&[], &id, &["/bin/sh", "-c", &code], None);
        assert_eq!(out.code(), n, "run {n}: {out:#?}");
    }
    d.assert_no_leaks();
}

#[test]
fn run_with_tty_smoke() {
    common::require_tools(&["script"]);
    let mut d = daemon("tty");
    let args = d.run_args(
        true,
        &["-t"],
        "tty1",
        &[
            "/bin/sh",
            "-c",
            "test -t 0 && test -t 1 && echo on-a-tty; exit 4",
        ],
    );
    let mut line = format!(
        "ctr --address {} --namespace {}",
        d.address.display(),
        d.namespace
    );
    for a in &args {
        line.push_str(&format!(" '{a}'"));
    }
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"]);
    let out = common::run_bounded(cmd, None, common::CTR_TIMEOUT);
    assert!(out.stdout.contains("on-a-tty"), "{out:#?}");
    assert_eq!(out.code(), 4, "{out:#?}");
    d.assert_no_leaks();
}

/// Debian's Go runc shim with one idle task on the same machine (issue 2: 13.2 MB). Our server
/// must stay below it even as a debug build.
const RUNC_SHIM_IDLE_KB: u64 = 13_200;

/// Prints VmRSS (and its anon/file split) of `pid` to stderr; returns VmRSS in kB.
fn report_rss(pid: u32, rt: Runtime, what: &str) -> u64 {
    let rss = status_kb(pid, "VmRSS").expect("VmRSS");
    let anon = status_kb(pid, "RssAnon").unwrap_or(0);
    let file = status_kb(pid, "RssFile").unwrap_or(0);
    // Memory the server alone costs: clean file pages (text) are shared and reclaimable.
    let dirty = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Private_Dirty:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    eprintln!(
        "{} server idle RSS {what}: {rss} kB (anon {anon} kB, file {file} kB, private dirty {dirty} kB); {}",
        rt.name(),
        exe.display()
    );
    rss
}

#[test]
fn idle_rss_of_the_server() {
    let rt = Runtime::from_env();
    let mut d = daemon("rss");
    let (mut run, _) = d.run_bg(&[], "rss1", &["/bin/sleep", "30"]);
    let shims = d.server_pids();
    assert_eq!(shims.len(), 1, "expected one shim server, got {shims:?}");
    std::thread::sleep(Duration::from_millis(300));
    let rss = report_rss(shims[0], rt, "with one idle task");
    d.ctr(&["task", "kill", "-s", "SIGKILL", "rss1"])
        .ok("task kill rss1");
    assert_eq!(run.wait(Duration::from_secs(15)).code(), 137);
    if rt != Runtime::Runc {
        assert!(rss < RUNC_SHIM_IDLE_KB, "idle server RSS {rss} kB");
    }
    d.assert_no_leaks();
}

/// The `start` action run by hand the way containerd runs it (cwd = bundle, `log` FIFO held open
/// read-write, `TTRPC_ADDRESS`), so the server has no task at all; then SIGTERM must end it and
/// remove its socket.
#[test]
fn idle_rss_of_a_server_without_tasks() {
    use nix::sys::stat::Mode;
    use std::os::unix::fs::OpenOptionsExt;

    let mut d = daemon("rss0");
    let bundle = d.dir.path().join("bundle-idle0");
    fs::create_dir_all(bundle.join("rootfs")).expect("bundle");
    fs::write(
        bundle.join("config.json"),
        r#"{"ociVersion":"1.0.2","process":{"args":["/bin/true"],"cwd":"/"},"root":{"path":"rootfs"}}"#,
    )
    .expect("config.json");
    nix::unistd::mkfifo(&bundle.join("log"), Mode::from_bits_truncate(0o600)).expect("mkfifo log");
    let _log = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"))
        .expect("open log fifo");
    d.use_id("idle0");
    let mut cmd = std::process::Command::new(d.shim_binary());
    cmd.args(["-namespace", "rss0", "-address"])
        .arg(&d.address)
        .args([
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "idle0",
            "start",
        ])
        .current_dir(&bundle)
        .env("TTRPC_ADDRESS", &d.ttrpc);
    let out = common::run_bounded(cmd, None, Duration::from_secs(10)).ok("shim start");
    let expected = format!("unix://{}", d.socket_paths()[0].display());
    assert_eq!(out.stdout, expected, "start printed {out:#?}");
    assert_eq!(out.stderr, "", "start wrote to stderr");
    let shims = d.server_pids();
    assert_eq!(shims.len(), 1, "expected one server, got {shims:?}");
    let pid = shims[0];
    d.track(pid, "idle shim server");
    std::thread::sleep(Duration::from_millis(300));
    let rt = d.runtime;
    let rss = report_rss(pid, rt, "without tasks");
    if rt != Runtime::Runc {
        assert!(rss < RUNC_SHIM_IDLE_KB, "idle server RSS {rss} kB");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the server");
    d.assert_no_leaks();
}

/// containerd's config with the CRI plugin on, `deploy/containerd-config.toml` merged in, and
/// `default_runtime_name = "reaper"` as a probe: the CRI plugin validates that the default runtime
/// exists in `containerd.runtimes`, so a snippet with a wrong table path fails the plugin.
fn cri_daemon(snippet: &str) -> Daemon {
    let extra = format!(
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"reaper\"\n\n{snippet}\n"
    );
    Daemon::start(
        Runtime::from_env(),
        "cri",
        DaemonOpts {
            cri: true,
            extra_config: extra,
        },
    )
}

fn cri_plugin_status(d: &Daemon) -> String {
    let out = d.ctr(&["plugins", "ls"]).ok("ctr plugins ls");
    out.stdout
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[0] == "io.containerd.grpc.v1" && f[1] == "cri")
                .then(|| f[f.len() - 1].to_string())
        })
        .unwrap_or_else(|| panic!("no cri plugin in `ctr plugins ls`:\n{}", out.stdout))
}

#[test]
fn cri_plugin_accepts_the_deploy_snippet() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/containerd-config.toml");
    let snippet = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));

    let d = cri_daemon(&snippet);
    assert_eq!(
        cri_plugin_status(&d),
        "ok",
        "log:\n{}",
        common::tail(&d.log_text(), 30)
    );
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("Start cri plugin with config"))
        .expect("the CRI plugin logs its config");
    assert!(
        line.contains("Runtimes:map[reaper:{Type:io.containerd.reaper.v2 "),
        "the reaper runtime is not in the CRI config: {line}"
    );
    drop(d);

    // Negative control: the same snippet with a misspelt handler must break the plugin, so the
    // check above can fail.
    let broken = snippet.replace("runtimes.reaper]", "runtimes.reaper-typo]");
    assert_ne!(broken, snippet, "the snippet has no runtimes.reaper table");
    let d = cri_daemon(&broken);
    assert_eq!(cri_plugin_status(&d), "error");
    assert!(
        d.log_text()
            .contains("no corresponding runtime configured in `containerd.runtimes`"),
        "log:\n{}",
        common::tail(&d.log_text(), 30)
    );
}

#[test]
fn sixteen_mib_burst_before_exit_is_not_lost() {
    let mut d = daemon("burst16");
    let out = d.run_rm(
        &[],
        "big1",
        &[
            "/bin/sh",
            "-c",
            "/bin/dd if=/dev/zero bs=65536 count=256 status=none; exit 2",
        ],
        None,
    );
    assert_eq!(out.code(), 2, "stderr: {}", out.stderr);
    assert_eq!(out.stdout.len(), 16 << 20, "bytes printed by ctr run");
    assert!(out.stdout.bytes().all(|b| b == 0));
    d.assert_no_leaks();
}

#[test]
fn a_missing_program_is_a_clear_error_and_leaves_nothing() {
    let mut d = daemon("enoent");
    let out = d.run_rm(&[], "enoent1", &["/nonexistent/prog", "x"], None);
    assert_ne!(out.code(), 0, "{out:#?}");
    assert!(
        out.stderr.contains("/nonexistent/prog"),
        "the error does not name the program: {out:#?}"
    );
    // The daemon and runtime still work afterwards.
    let ok = d.run_rm(&[], "enoent2", &["/bin/echo", "still fine"], None);
    assert_eq!(ok.ok("run after a failed create").stdout, "still fine\n");
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

#[test]
fn kill_all_reaches_descendants() {
    let mut d = daemon("killall");
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

#[test]
fn stdin_eof_reaches_the_process_and_a_mebibyte_passes_through() {
    let mut d = daemon("stdineof");
    // ctr sends CloseIO when its stdin ends; cat must then see EOF and exit.
    let input: Vec<u8> = (0..(1u32 << 20)).map(|i| b'a' + (i % 26) as u8).collect();
    let out = d.run_rm(&[], "cat1", &["/bin/cat"], Some(&input));
    let out = out.ok("cat of 1 MiB");
    assert_eq!(out.stdout.len(), input.len());
    assert!(
        out.stdout.as_bytes() == input.as_slice(),
        "cat output differs"
    );
    let out = d.run_rm(&[], "wc1", &["/usr/bin/wc", "-c"], Some(b"12345"));
    assert_eq!(out.ok("wc -c").stdout.trim(), "5");
    d.assert_no_leaks();
}

#[test]
fn log_uri_file_receives_stdout_and_stderr() {
    let mut d = daemon("logfile");
    let log = d.dir.path().join("task.log");
    let uri = format!("file://{}", log.display());
    let out = d.run_rm(
        &["--log-uri", &uri],
        "lf1",
        &["/bin/sh", "-c", "echo to-out; echo to-err >&2; exit 3"],
        None,
    );
    assert_eq!(out.code(), 3, "{out:#?}");
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("to-out\n") && text.contains("to-err\n"),
        "{}: {text:?}",
        log.display()
    );
    d.assert_no_leaks();
}

#[test]
fn a_paused_task_can_still_be_killed() {
    let mut d = daemon("pausekill");
    let (mut run, _) = d.run_bg(&[], "pk1", &["/bin/sleep", "30"]);
    d.ctr(&["task", "pause", "pk1"]).ok("task pause");
    d.ctr(&["task", "kill", "-s", "SIGKILL", "pk1"])
        .ok("task kill of a paused task");
    assert_eq!(run.wait(Duration::from_secs(15)).code(), 137);
    d.assert_no_leaks();
}

#[test]
fn exec_with_tty_and_a_failing_exec_leave_the_task_unharmed() {
    common::require_tools(&["script"]);
    let mut d = daemon("exectty");
    let (mut run, pid) = d.run_bg(&[], "et1", &["/bin/sleep", "30"]);
    let line = format!(
        "ctr --address {} --namespace {} task exec -t --exec-id t1 et1 \
         /bin/sh -c 'test -t 0 && test -t 1 && echo exec-on-a-tty; exit 6'",
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
#[test]
fn exec_events_in_order_and_bad_kills_are_clear_errors() {
    let mut d = daemon("execev");
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

/// An init that leaves a background child behind: the child (reparented to the subreaper shim)
/// must not outlive the task, and nothing stays a zombie.
#[test]
fn an_orphaned_child_does_not_outlive_its_task() {
    let mut d = daemon("orphan");
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

/// A full OCI spec through `ctr run --config`: user (uid, gid, additionalGids), rlimits,
/// noNewPrivileges, exactly the spec's env and its cwd reach the process.
#[test]
fn spec_user_rlimits_env_and_no_new_privileges_apply() {
    let mut d = daemon("spec");
    let cwd = d.dir.path().join("spec-cwd");
    fs::create_dir_all(&cwd).expect("cwd");
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 65534, "gid": 65534, "additionalGids": [1234, 4321]},
            "args": ["/bin/sh", "-c",
                "id -u; id -g; id -G; ulimit -Sn; ulimit -Hn; \
                 grep NoNewPrivs /proc/self/status; /usr/bin/env | /usr/bin/sort; pwd"],
            "env": ["A=1", "PATH=/usr/bin:/bin"],
            "cwd": cwd.display().to_string(),
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 123, "soft": 100}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "linux": {}
    });
    let spec_path = d.dir.path().join("spec.json");
    fs::write(&spec_path, spec.to_string()).expect("spec.json");
    d.use_id("spec1");
    let fifo = d.dir.path().join("fifo").display().to_string();
    let spec_s = spec_path.display().to_string();
    let rt = d.runtime.name();
    let out = d.ctr(&[
        "run",
        "--rm",
        "--fifo-dir",
        &fifo,
        "--config",
        &spec_s,
        "--runtime",
        rt,
        "spec1",
    ]);
    let out = out.ok("ctr run --config");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let cwd_s = cwd.display().to_string();
    assert_eq!(
        lines.get(..6),
        Some(
            &[
                "65534",
                "65534",
                "65534 1234 4321",
                "100",
                "123",
                "NoNewPrivs:\t1"
            ][..]
        ),
        "{out:#?}"
    );
    assert_eq!(lines.last(), Some(&cwd_s.as_str()), "{out:#?}");
    // The env is exactly the spec's, plus what the shell itself adds (PWD, SHLVL, _).
    let env: Vec<&str> = lines[6..lines.len() - 1]
        .iter()
        .copied()
        .filter(|l| !["PWD=", "SHLVL=", "_="].iter().any(|p| l.starts_with(p)))
        .collect();
    assert_eq!(env, ["A=1", "PATH=/usr/bin:/bin"], "{out:#?}");
    d.assert_no_leaks();
}

/// `ctr run --log-uri binary:///logger?out=PREFIX`: the shim starts the logger with the
/// process's stdout on fd 3 and stderr on fd 4, waits for it to close fd 5, and passes
/// CONTAINER_ID / CONTAINER_NAMESPACE and the query as arguments.
#[test]
fn log_uri_binary_logger_gets_both_streams() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = daemon("logbin");
    let logger = d.dir.path().join("logger.sh");
    fs::write(
        &logger,
        "#!/bin/sh\nexec 5>&-\n\
         echo \"$1=$2 id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE\" > \"$2.meta\"\n\
         /bin/cat <&3 > \"$2.out\" &\n/bin/cat <&4 > \"$2.err\" &\nwait\n",
    )
    .expect("logger");
    fs::set_permissions(&logger, fs::Permissions::from_mode(0o755)).expect("chmod");
    let prefix = d.dir.path().join("lg");
    let uri = format!("binary://{}?out={}", logger.display(), prefix.display());
    let out = d.run_rm(
        &["--log-uri", &uri],
        "bl1",
        &["/bin/sh", "-c", "echo o1; echo e1 >&2; exit 2"],
        None,
    );
    assert_eq!(out.code(), 2, "{out:#?}");
    let read = |ext: &str| fs::read_to_string(format!("{}.{ext}", prefix.display()));
    // The logger may still be flushing when ctr returns.
    let done = poll(Duration::from_secs(5), || {
        (read("out").ok()? == "o1\n" && read("err").ok()? == "e1\n").then_some(())
    });
    assert!(
        done.is_some(),
        "logger files: out {:?} err {:?}",
        read("out"),
        read("err")
    );
    assert_eq!(
        read("meta").unwrap_or_default(),
        format!("out={} id=bl1 ns=logbin\n", prefix.display())
    );
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

/// Ten `ctr run --rm` at once, all in one group (one server handles concurrent Creates, Starts,
/// exits and Deletes): each reports its own output and exit code.
#[test]
fn ten_concurrent_runs_in_one_group_report_their_own_codes() {
    let mut d = daemon("conc");
    let mut runs = Vec::new();
    for n in 0..10 {
        let id = format!("cc{n}");
        let script = format!("echo out-{n}; exit {}", n + 10);
        let args = d.run_args(
            true,
            &["--annotation", "io.containerd.reaper.v2.group=conc"],
            &id,
            &["/bin/sh", "-c", &script],
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        runs.push((n, common::Bg::spawn(d.ctr_cmd(&args), d.dir.path(), &id)));
    }
    d.use_id("conc");
    for (n, mut bg) in runs {
        let out = bg.wait(Duration::from_secs(30));
        assert_eq!(out.code(), n + 10, "run {n}: {out:#?}");
        assert_eq!(out.stdout, format!("out-{n}\n"), "run {n}: {out:#?}");
    }
    d.assert_no_leaks();
}

/// A detached task whose init exits at once stays STOPPED: exec and pause are refused with a
/// clear error, and `task delete` reports its code.
#[test]
fn exec_and_pause_after_init_exit_are_refused() {
    let mut d = daemon("afterexit");
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
