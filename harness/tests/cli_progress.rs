//! `harness run`'s progress: on a terminal a live line (done/total, failures so far, the
//! scenarios running now) under the finished scenarios' lines; through a pipe only the plain
//! `[ n/N] PASS  group/name (level) Nms` lines, with no escape sequence, as CI logs always had.
//! Both run the bundled suite against the reaper (the harness finds it next to itself).

use std::time::Duration;

use regex::Regex;

#[path = "support/pty.rs"]
mod pty;
use pty::Terminal;

fn harness() -> std::process::Command {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("harness"))
}

/// How many scenarios `harness list` shows for these selection arguments.
fn count(selection: &[&str]) -> usize {
    let out = harness()
        .arg("list")
        .args(selection)
        .output()
        .expect("harness list");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).lines().count() - 1
}

#[test]
fn a_terminal_shows_done_total_failures_and_running_scenarios() {
    let total = count(&[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = harness();
    cmd.args(["run", "--jobs", "2"]).env("TMPDIR", tmp.path());
    let mut t = Terminal::start(cmd);
    // The live line while the suite runs: the counter, the failures, a scenario by name.
    let running = Regex::new(r"\d+ failed \| running: [a-z-]+/[a-z0-9-]+").expect("re");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !running.is_match(&t.output()) {
        assert!(
            std::time::Instant::now() < deadline,
            "no live line with a running scenario; the terminal shows:\n{}",
            t.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t.expect(0, &format!("/{total} "));
    let status = t.wait(Duration::from_secs(300));
    let out = t.output();
    assert_eq!(status.code(), Some(0), "{out}");
    // The finished scenarios' lines are printed above the live line, and the summary follows.
    assert!(out.contains("] PASS  lifecycle/sigterm (must) "), "{out}");
    let summary = Regex::new(&format!(r"{total} scenarios: \d+ passed, 0 failed, ")).expect("re");
    assert!(summary.is_match(&out), "{out}");
    assert!(
        out.contains("\x1b["),
        "no terminal control sequence at all:\n{out}"
    );
}

#[test]
fn a_pipe_gets_the_plain_lines_only() {
    let sel = ["--filter", "lifecycle/*"];
    let total = count(&sel);
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = harness()
        .arg("run")
        .args(sel)
        .env("TMPDIR", tmp.path())
        .output()
        .expect("harness run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains('\x1b') && !text.contains('\r'),
            "a control character off a terminal:\n{text:?}"
        );
    }
    let w = total.to_string().len();
    let line = Regex::new(&format!(
        r"^\[ *(\d+)/{total}\] (PASS |FAIL |SKIP |XFAIL) [a-z-]+/[a-z0-9-]+ \((must|should|may)\) \d+ms"
    ))
    .expect("re");
    let progress: Vec<&str> = stdout.lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(progress.len(), total, "{stdout}");
    for (i, l) in progress.iter().enumerate() {
        let m = line
            .captures(l)
            .unwrap_or_else(|| panic!("not a plain progress line: {l:?}"));
        assert_eq!(m[1].parse::<usize>().ok(), Some(i + 1), "{l}");
        assert_eq!(l.find(']'), Some(2 * w + 2), "counter width: {l}");
    }
    assert!(
        stdout.contains(&format!("{total} scenarios: {total} passed, 0 failed")),
        "{stdout}"
    );
}
