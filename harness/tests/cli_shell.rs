//! `harness shell` driven through a pipe against the reaper shim (debug build): a full task
//! lifecycle with an exec, the answers and events it prints, the processes it really started and
//! ended, the saved scenario replayed by `harness run`; bad input that names itself while the
//! session goes on; and the session's temp dirs and shim gone afterwards.

use testkit::reaper;

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

#[path = "support/pty.rs"]
mod pty;
use pty::Terminal;

fn harness() -> Command {
    Command::cargo_bin("harness").expect("the harness binary (cargo build -p harness)")
}

struct Session {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `harness shell --shim <reaper>` with `script` on stdin and a private TMPDIR.
fn shell(script: &str, tmpdir: &Path) -> Session {
    let out = harness()
        .arg("shell")
        .arg("--shim")
        .arg(reaper())
        .env("TMPDIR", tmpdir)
        .write_stdin(script)
        .timeout(Duration::from_secs(90))
        .output()
        .expect("run harness shell");
    let s = Session {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !s.stderr.contains("panicked"),
        "the shell panicked:\n{}",
        s.stderr
    );
    s
}

/// The value of `key=` in the first output line starting with `prefix` after `after`.
fn field_after(out: &str, after: &str, prefix: &str, key: &str) -> String {
    let start = out
        .find(after)
        .unwrap_or_else(|| panic!("`{after}` not in:\n{out}"));
    let line = out[start..]
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line `{prefix}..` after `{after}` in:\n{out}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no `{key}=` in `{line}`"))
        .to_string()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            // `pid (comm) S ...`: a zombie has exited.
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z")
        })
        .unwrap_or(false)
}

#[test]
fn full_lifecycle_through_a_pipe_and_the_saved_scenario_replays() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).expect("mkdir");
    let saved = tmp.path().join("recorded.yaml");
    let script = format!(
        "create sh -c 'sleep 30'\n\
         start\n\
         state\n\
         exec e1 sh -c 'echo hi from e1; exit 3'\n\
         start e1\n\
         wait e1\n\
         stdout e1\n\
         kill SIGTERM\n\
         wait\n\
         state\n\
         delete\n\
         events\n\
         shutdown\n\
         save {}\n\
         quit\n",
        saved.display()
    );
    let s = shell(&script, &scratch);
    let out = &s.stdout;
    assert_eq!(s.code, Some(0), "stdout:\n{out}\nstderr:\n{}", s.stderr);

    // The shim server really ran, and is gone after the session.
    let banner = out.lines().next().expect("a banner line");
    let shim_pid: i32 = banner
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no shim pid in `{banner}`"));
    assert!(!alive(shim_pid), "shim pid {shim_pid} still running");

    // Create and Start answer the same, real pid; State sees it running.
    let init: i32 = field_after(out, "> create", "create:", "pid")
        .parse()
        .expect("init pid");
    assert!(init > 1, "{out}");
    assert_eq!(
        field_after(out, "> start\n", "start:", "pid"),
        init.to_string()
    );
    assert_eq!(field_after(out, "> state\n", "state:", "status"), "running");
    assert_eq!(
        field_after(out, "> state\n", "state:", "pid"),
        init.to_string()
    );
    // The exec is another process, with its own exit status and output.
    let exec_pid: i32 = field_after(out, "> start e1", "start:", "pid")
        .parse()
        .expect("exec pid");
    assert!(exec_pid > 1 && exec_pid != init, "{out}");
    assert_eq!(field_after(out, "> wait e1", "wait:", "exit-status"), "3");
    assert!(
        out.contains("stdout of exec e1 (11 bytes):\n  | hi from e1\n"),
        "{out}"
    );
    // SIGTERM ends the init with 128+15; State and Delete agree.
    assert_eq!(field_after(out, "> wait\n", "wait:", "exit-status"), "143");
    let after_kill = &out[out.find("> kill SIGTERM").expect("kill")..];
    assert_eq!(
        field_after(after_kill, "> state", "state:", "status"),
        "stopped"
    );
    assert_eq!(
        field_after(after_kill, "> delete", "delete:", "exit-status"),
        "143"
    );
    assert!(!alive(init), "init pid {init} still running");
    // Events were printed as they arrived, each after the command that caused it.
    for (cmd, topic) in [
        ("> create", "  event /tasks/create "),
        ("> start\n", "  event /tasks/start "),
        ("> exec e1", "  event /tasks/exec-added "),
        ("> start e1", "  event /tasks/exec-started "),
        ("> delete", "  event /tasks/delete "),
    ] {
        let at = out.find(cmd).expect("command echoed");
        let next_cmd = out[at + 1..]
            .find("\n> ")
            .map(|i| at + 1 + i)
            .unwrap_or(out.len());
        assert!(
            out[at..next_cmd].contains(topic),
            "`{topic}` not printed after `{cmd}`:\n{out}"
        );
    }
    assert!(
        out.contains("  event /tasks/exit container-id=main exit-status=143"),
        "{out}"
    );
    // `events` lists everything so far, in order.
    let listing = &out[out.find("events (").expect("events listing")..];
    let order = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/exit",
        "/tasks/exit",
        "/tasks/delete",
    ];
    let mut at = 0;
    for t in order {
        let i = listing[at..]
            .find(t)
            .unwrap_or_else(|| panic!("{t} missing or out of order in:\n{listing}"));
        at += i + t.len();
    }
    assert!(out.contains("shim closed; nothing left behind"), "{out}");
    // The session's bundle, stdio and rootfs lived under TMPDIR and are gone.
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .expect("read scratch")
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .expect("list scratch");
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");

    // The saved file loads with the strict loader and says what was observed.
    assert!(out.contains("saved 13 step(s) to"), "{out}");
    let text = std::fs::read_to_string(&saved).expect("saved file");
    let sc = harness::scenario::load_file(&saved).expect("the saved scenario loads");
    assert_eq!(sc.process.args, ["sh", "-c", "sleep 30"]);
    assert_eq!(sc.steps.len(), 13, "{text}");
    for needle in [
        "exit-status: 143",
        "exit-status: 3",
        "status: running",
        "status: stopped",
        "contains: |",
        "- /tasks/exec-started",
        "signal: SIGTERM",
    ] {
        assert!(text.contains(needle), "`{needle}` not in:\n{text}");
    }
    // ... and `harness run` replays it against the same shim.
    let run = harness()
        .args(["run", "--format", "json", "--shim"])
        .arg(reaper())
        .arg("--scenarios")
        .arg(&saved)
        .env("TMPDIR", &scratch)
        .timeout(Duration::from_secs(90))
        .output()
        .expect("harness run");
    let report: Value = serde_json::from_slice(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        )
    });
    assert_eq!(run.status.code(), Some(0), "{report:#}");
    assert_eq!(report["summary"]["passed"], 1, "{report:#}");
    assert_eq!(report["scenarios"][0]["status"], "passed", "{report:#}");
    assert_eq!(
        report["scenarios"][0]["steps"].as_array().map(Vec::len),
        Some(13)
    );
}

#[test]
fn bad_input_names_itself_and_the_session_goes_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = "frobnicate now\n\
                  kil SIGTERM\n\
                  state\n\
                  create\n\
                  create sh -c 'exit 7'\n\
                  kill SIGBOGUS\n\
                  kill\n\
                  start\n\
                  wait\n\
                  exec e1 'unbalanced\n\
                  wait e9 timeout=1s\n\
                  save\n\
                  help\n\
                  quit\n";
    let s = shell(script, tmp.path());
    let out = &s.stdout;
    // Some commands failed: exit 1, not a crash and not 2 (the session itself ran).
    assert_eq!(s.code, Some(1), "stdout:\n{out}\nstderr:\n{}", s.stderr);
    for needle in [
        "error: unknown command `frobnicate`; type `help` for the list",
        "error: unknown command `kil` (did you mean `kill`?); type `help` for the list",
        "error: create: give the init process, e.g. `create sh -c 'sleep 30'`",
        "error: kill: unknown signal `SIGBOGUS`",
        "error: kill: missing SIGNAL; usage: kill SIGNAL [EXEC-ID]",
        "error: unbalanced quotes",
        "error: save: missing FILE",
    ] {
        assert!(out.contains(needle), "`{needle}` not in:\n{out}");
    }
    // State before any Create: the shim's own NotFound answer, reported, not fatal.
    assert!(
        out.contains("state: error: State: expected success, got error not-found"),
        "{out}"
    );
    // An unknown exec: the shim's answer again.
    let after = &out[out.find("> wait e9").expect("wait e9 echoed")..];
    assert!(
        after.contains("wait: error: Wait: expected success, got error"),
        "{out}"
    );
    // Between the errors the session kept working against the real shim.
    assert_eq!(field_after(out, "> wait\n", "wait:", "exit-status"), "7");
    // `help` lists the vocabulary.
    for word in [
        "create",
        "start",
        "state",
        "kill SIGNAL",
        "wait",
        "exec EXEC-ID",
        "events",
        "stdout",
        "delete",
        "shutdown",
        "save FILE",
    ] {
        assert!(
            out.contains(&format!("\n  {word}")),
            "help lacks `{word}`:\n{out}"
        );
    }
    assert!(out.contains("shim closed; nothing left behind"), "{out}");
}

#[test]
fn quitting_with_a_running_task_ends_it_and_the_shim() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = shell("create sleep 60\nstart\n", tmp.path());
    assert_eq!(s.code, Some(0), "{}\n{}", s.stdout, s.stderr);
    let pid: i32 = field_after(&s.stdout, "> start", "start:", "pid")
        .parse()
        .expect("pid");
    assert!(!alive(pid), "the task's process {pid} outlived the session");
    assert!(
        s.stdout.contains("shim closed; nothing left behind"),
        "{}",
        s.stdout
    );
}

#[test]
fn a_missing_shim_is_exit_2_naming_it() {
    let out = harness()
        .args(["shell", "--shim", "/nonexistent/containerd-shim-nope-v2"])
        .write_stdin("state\n")
        .timeout(Duration::from_secs(30))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/containerd-shim-nope-v2"),
        "{err}"
    );
}

/// `harness shell --shim <reaper>` on a terminal, with a private TMPDIR.
fn shell_on_a_terminal(tmpdir: &Path) -> Terminal {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("harness"));
    cmd.arg("shell")
        .arg("--shim")
        .arg(reaper())
        .env("TMPDIR", tmpdir);
    Terminal::start(cmd)
}

#[test]
fn a_terminal_gets_completion_history_and_ctrl_c_ends_only_the_step() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut t = shell_on_a_terminal(tmp.path());
    t.expect(0, "harness> ");
    // Tab completes the command word.
    let at = t.len();
    t.send("crea\t sleep 30\r");
    let out = t.expect(at, "event /tasks/create");
    assert!(out[at..].contains("create: pid="), "{out}");
    // Up-arrow brings the previous line back: the second create is refused by the shim.
    let at = t.len();
    t.send("\x1b[A\r");
    t.expect(at, "already-exists");
    let at = t.len();
    t.send("start\r");
    t.expect(at, "event /tasks/start");
    // Ctrl-C while Wait blocks ends that step, not the session.
    let at = t.len();
    t.send("wait\r");
    std::thread::sleep(Duration::from_millis(1000));
    t.send("\x03");
    t.expect(at, "wait: interrupted");
    let at = t.len();
    t.send("state\r");
    t.expect(at, "status=running");
    let at = t.len();
    t.send("quit\r");
    let out = t.expect(at, "shim closed; nothing left behind");
    let status = t.wait(Duration::from_secs(20));
    // The interrupted wait counts as a failed command, as does the refused create.
    assert_eq!(status.code(), Some(1), "{out}");
}

#[test]
fn sigterm_while_waiting_for_input_still_closes_the_shim() {
    use std::io::{BufRead, BufReader, Write};
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("harness"))
        .arg("shell")
        .arg("--shim")
        .arg(reaper())
        .env("TMPDIR", tmp.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn harness shell");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"create sleep 60\nstart\n")
        .expect("write commands");
    // stdin stays open: the shell waits for more input when the signal comes.
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let task_pid: i32 = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("no `start: pid=` line ({e}); saw {seen:#?}"));
        if let Some(rest) = line.strip_prefix("start: pid=") {
            break rest
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .expect("pid");
        }
        seen.push(line);
    };
    assert!(alive(task_pid), "the task {task_pid} is not running");
    let harness_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(harness_pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        rest.push(line);
    }
    let status = child.wait().expect("wait for harness");
    drop(stdin);
    let text = rest.join("\n");
    assert!(text.contains("(SIGTERM: ending the session)"), "{text}");
    assert!(text.contains("shim closed; nothing left behind"), "{text}");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(!alive(task_pid), "the task {task_pid} outlived the session");
}
