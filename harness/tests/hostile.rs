//! The harness contains any shim (issue 19). Against each hostile mode of the faulty shim
//! (`FAULTY_SHIM`, see `shim/src/faults.rs`) the whole suite ends within its bounds with exit 1
//! and a reason that names the misbehaviour; the harness and an unrelated process survive; and
//! no process, socket file or temp dir of the run is left, counted by pid and by path before
//! and after. The runs speak containerd 2.3's handshake with a socket dir of the test's own
//! (`--socket-dir`), so the socket count is this test's alone, whatever else uses
//! `/run/containerd/s` meanwhile. A second test shows that only `harness/src/pidguard.rs`
//! signals or opens pidfds.

use std::collections::BTreeSet;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use testkit::built;

/// The environment variable that marks every process a run's shims start (it is inherited).
const MARK: &str = "REAPER_HOSTILE_RUN";
/// No run may take longer than this (the suite under its step and scenario bounds).
const RUN_BOUND: Duration = Duration::from_secs(420);
/// Runs at once (the machine has two cores; most hostile runs mostly wait).
const AT_ONCE: usize = 3;

/// A hostile mode, the `--jobs` it runs with, and what must show in the report.
struct Mode {
    fault: String,
    jobs: u8,
    /// A text some failed scenario's reason contains (or `events-omitted` for the flood).
    expect: String,
}

fn modes(unrelated: i32) -> Vec<Mode> {
    let m = |fault: &str, jobs: u8, expect: &str| Mode {
        fault: fault.to_string(),
        jobs,
        expect: expect.to_string(),
    };
    vec![
        m(
            "report-pid=0",
            2,
            "the shim reported pid 0 for the init of `main`, and pid 0 is not a process id",
        ),
        m("report-pid=1", 2, "and pid 1 is init"),
        m("report-pid=harness", 2, "is the harness itself"),
        m(
            &format!("report-pid={unrelated}"),
            2,
            &format!("pid {unrelated} (sleep, parent"),
        ),
        m(
            "report-pid=4294967295",
            2,
            "pid 4294967295 is not a process id",
        ),
        m("huge-reply", 2, "exceed maximum message size"),
        m("stall-reply", 8, "no answer within 2s"),
        m("close-mid-reply", 4, "early eof"),
        m("wrong-reply", 2, "got \"unknown\""),
        m("event-flood", 2, "events-omitted"),
        m("big-event", 2, "/tasks/oom"),
        m(
            "grandchild",
            2,
            "(sleep) started under the shim still alive",
        ),
        m("ignore-sigterm", 8, "still alive"),
    ]
}

/// (pid, start time) of every process, from `/proc`.
fn processes() -> BTreeSet<(i32, u64)> {
    harness::procfs::all_processes()
        .into_iter()
        .map(|p| (p.pid, p.starttime))
        .collect()
}

fn socket_files(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn environ_has(pid: i32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|c| *c == 0)
                .any(|kv| kv.starts_with(needle.as_bytes()))
        })
        .unwrap_or(false)
}

struct Run {
    mode: Mode,
    tmp: tempfile::TempDir,
    report: PathBuf,
    child: Child,
    started: Instant,
}

fn start(mode: Mode, harness: &Path, shim: &Path, sockets: &Path) -> Run {
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = tmp.path().join("report.json");
    let work = tmp.path().join("tmp");
    std::fs::create_dir(&work).unwrap();
    let child = Command::new(harness)
        .args(["run", "--step-timeout", "2s", "--format", "json"])
        .args(["--containerd-version", "2.3", "--socket-dir"])
        .arg(sockets)
        .arg("--jobs")
        .arg(mode.jobs.to_string())
        .arg("--report")
        .arg(&report)
        .arg("--shim")
        .arg(shim)
        .arg("--shim-env")
        .arg(format!("FAULTY_SHIM={}", mode.fault))
        .arg("--shim-env")
        .arg(format!("{MARK}={}", mode.fault))
        // The harness's temp dirs (bundles, FIFOs, sockets of the mock) go here: empty after.
        .env("TMPDIR", &work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // A file, not a pipe: nobody reads while it runs, and progress lines would fill a pipe.
        .stderr(std::fs::File::create(tmp.path().join("stderr")).expect("stderr file"))
        // Its own process group: a harness that signalled its group would not take us along.
        .process_group(0)
        .spawn()
        .expect("spawn harness");
    Run {
        mode,
        tmp,
        report,
        child,
        started: Instant::now(),
    }
}

/// Waits for the run (bounded), then checks what it reported; returns its problems.
fn finish(mut run: Run) -> Vec<String> {
    let mut problems = vec![];
    let fault = run.mode.fault.clone();
    let status = loop {
        if let Some(s) = run.child.try_wait().expect("try_wait") {
            break Some(s);
        }
        if run.started.elapsed() > RUN_BOUND {
            // SAFETY: kill(2) on the process group of the harness we started.
            unsafe { libc::kill(-(run.child.id() as i32), libc::SIGKILL) };
            let _ = run.child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = run.started.elapsed();
    let stderr = std::fs::read_to_string(run.tmp.path().join("stderr")).unwrap_or_default();
    let stderr = stderr.lines().rev().take(5).collect::<Vec<_>>().join(" / ");
    match status {
        None => problems.push(format!("{fault}: still running after {RUN_BOUND:?}")),
        Some(s) if s.signal().is_some() => problems.push(format!(
            "{fault}: the harness died by signal {:?} after {took:?}: {stderr}",
            s.signal()
        )),
        Some(s) if s.code() != Some(1) => problems.push(format!(
            "{fault}: exit {:?} (want 1) after {took:?}: {stderr}",
            s.code()
        )),
        Some(_) => {}
    }
    eprintln!("{fault}: {took:.1?}, exit {status:?}");
    match std::fs::read(&run.report) {
        Ok(bytes) => {
            let v: Value = serde_json::from_slice(&bytes).expect("JSON report");
            let scenarios = v["scenarios"].as_array().cloned().unwrap_or_default();
            if scenarios.len() < 100 {
                problems.push(format!("{fault}: only {} scenarios ran", scenarios.len()));
            }
            let shown = if run.mode.expect == "events-omitted" {
                scenarios
                    .iter()
                    .any(|s| s["events-omitted"].as_u64() > Some(0))
            } else {
                scenarios.iter().any(|s| {
                    s["status"] == "failed"
                        && s["reason"]
                            .as_str()
                            .is_some_and(|r| r.contains(&run.mode.expect))
                })
            };
            if !shown {
                problems.push(format!(
                    "{fault}: no failed scenario says {:?}",
                    run.mode.expect
                ));
            }
        }
        Err(e) => problems.push(format!("{fault}: no report ({e}): {stderr}")),
    }
    let left: Vec<_> = std::fs::read_dir(run.tmp.path().join("tmp"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    if !left.is_empty() {
        problems.push(format!("{fault}: temp dirs left: {left:?}"));
    }
    problems
}

#[test]
fn every_hostile_mode_over_the_whole_suite_is_contained() {
    let harness = built("harness");
    let shim = built("containerd-shim-faulty-v2");
    // An unrelated process, which one mode reports as its task: it must survive.
    let mut unrelated = Command::new("sleep")
        .arg("900")
        .process_group(0)
        .spawn()
        .expect("spawn sleep");
    let upid = unrelated.id() as i32;
    let ustart = harness::procfs::proc_info(upid)
        .expect("sleep runs")
        .starttime;
    let procs_before = processes();
    // Short, as containerd requires of a socket dir (42 characters at most).
    let sockets = tempfile::Builder::new()
        .prefix("hostile-")
        .tempdir_in("/tmp")
        .expect("socket dir");
    let t0 = Instant::now();

    let mut todo = modes(upid);
    todo.reverse();
    let mut running: Vec<Run> = vec![];
    let mut problems = vec![];
    while !todo.is_empty() || !running.is_empty() {
        while running.len() < AT_ONCE {
            match todo.pop() {
                Some(m) => running.push(start(m, &harness, &shim, sockets.path())),
                None => break,
            }
        }
        let done = running.iter_mut().position(|r| {
            matches!(r.child.try_wait(), Ok(Some(_))) || r.started.elapsed() > RUN_BOUND
        });
        match done {
            Some(i) => problems.extend(finish(running.remove(i))),
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    eprintln!("all modes: {:.1?}", t0.elapsed());

    // Processes started since, still alive, that belong to a run: counted by pid, ended by pid.
    let mut leftovers = vec![];
    for p in harness::procfs::all_processes() {
        if procs_before.contains(&(p.pid, p.starttime)) || p.state == 'Z' {
            continue;
        }
        let exe = std::fs::read_link(format!("/proc/{}/exe", p.pid)).ok();
        if environ_has(p.pid, MARK) || exe.as_deref() == Some(shim.as_path()) {
            leftovers.push(format!("pid {} ({})", p.pid, p.comm));
            // SAFETY: kill(2) on a process of this test's runs, found above by pid.
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
        }
    }
    if !leftovers.is_empty() {
        problems.push(format!("processes left: {leftovers:?}"));
    }
    let new_sockets: Vec<_> = socket_files(sockets.path()).into_iter().collect();
    for s in &new_sockets {
        let _ = std::fs::remove_file(s);
    }
    if !new_sockets.is_empty() {
        problems.push(format!("socket files left: {new_sockets:?}"));
    }
    let still =
        harness::procfs::proc_info(upid).is_some_and(|p| p.starttime == ustart && p.state != 'Z');
    let _ = unrelated.kill();
    let _ = unrelated.wait();
    if !still {
        problems.push(format!("the unrelated process {upid} did not survive"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Lines of `src` that signal, wait on or open a pidfd of a process (comments excluded).
fn signalling_lines(src: &str) -> Vec<String> {
    let call = regex::Regex::new(r"(^|[^.\w])kill\s*\(").unwrap();
    let named = [
        "killpg",
        "pidfd_open",
        "SYS_kill",
        "tgkill",
        "waitpid",
        "signal::kill",
        "libc::kill",
    ];
    src.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        .filter(|l| {
            (call.is_match(l) && !l.contains("fn kill")) || named.iter().any(|n| l.contains(n))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn only_the_pid_guard_signals_or_opens_pidfds() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    let mut todo = vec![src.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut found = vec![];
    let mut in_guard = 0;
    for f in &files {
        let lines = signalling_lines(&std::fs::read_to_string(f).unwrap());
        if f.ends_with("pidguard.rs") {
            in_guard = lines.len();
        } else {
            found.extend(lines.into_iter().map(|l| format!("{}: {l}", f.display())));
        }
    }
    assert!(files.len() > 20, "the walk found only {files:?}");
    assert!(found.is_empty(), "outside pidguard.rs: {found:#?}");
    // The guard itself is found by the same patterns (so they can fail).
    assert!(in_guard >= 2, "pidguard.rs: {in_guard} lines matched");
    // And the patterns catch the ways a call can be spelled.
    for bad in [
        "let _ = kill(Pid::from_raw(p), Signal::SIGKILL);",
        "nix::sys::signal::killpg(pg, sig)",
        "unsafe { libc::kill(pid, 9) };",
        "libc::syscall(libc::SYS_pidfd_open, pid, 0)",
        "nix::sys::wait::waitpid(pid, None)",
    ] {
        assert_eq!(signalling_lines(bad).len(), 1, "{bad}");
    }
    for fine in [
        "c.kill(req, t).await",
        "// kill(pid) is what we avoid",
        "pub async fn kill(&self, r: KillRequest)",
    ] {
        assert!(signalling_lines(fine).is_empty(), "{fine}");
    }
}
