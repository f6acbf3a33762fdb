//! The preflight of `harness run`: a shim whose `start` cannot work (sleeps forever, exits
//! non-zero, prints garbage, writes to stderr before its address) is reported once, with its
//! output and why, as exit status 2 within the start timeout plus a few seconds, and leaves
//! nothing running; a good shim runs the suite as before; `--no-preflight` brings back one
//! failure per scenario.

use testkit::reaper;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

fn harness() -> Command {
    Command::cargo_bin("harness").expect("the harness binary (cargo build -p harness)")
}

/// An executable `/bin/sh` script `shim` in `dir`.
fn shim(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("containerd-shim-bad-v2");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write shim");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// `harness run --shim SHIM --filter lifecycle/sigterm` (plus `extra`) with the scratch space
/// in `dir`: exit status, stderr, how long it took.
fn run(dir: &Path, shim: &Path, extra: &[&str]) -> (Option<i32>, String, String, Duration) {
    let t0 = Instant::now();
    let out = harness()
        .env("TMPDIR", dir)
        .args(["run", "--filter", "lifecycle/sigterm", "--shim"])
        .arg(shim)
        .args(extra)
        .timeout(Duration::from_secs(60))
        .output()
        .expect("run harness");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t0.elapsed(),
    )
}

/// Exit status 2, nothing on stdout, and exactly one stderr line: the preflight's.
fn assert_one_preflight_error(code: Option<i32>, stdout: &str, stderr: &str) -> String {
    assert_eq!(code, Some(2), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(
        lines[0].starts_with("harness: error: preflight: shim `"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("did not start").count(), 1, "{stderr}");
    lines[0].to_string()
}

/// The pids a script recorded in `dir/pids` are all gone (reaped or never ours).
fn assert_gone(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
    let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(!pids.is_empty(), "the shim recorded no pid");
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // A reused pid would be some other program; ours were `sh` or `sleep`. A zombie has
        // been killed (init reaps it).
        let ours = stat.contains("(sh)") || stat.contains("(sleep)");
        let zombie = stat.contains(") Z ");
        assert!(!ours || zombie, "pid {pid} still runs: {stat}");
    }
}

/// No process runs with its working directory under `dir` (a shim server's cwd is its bundle).
fn assert_no_process_in(dir: &Path) {
    let dir = std::fs::canonicalize(dir).expect("canonical dir");
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) else {
            continue;
        };
        assert!(
            !cwd.starts_with(&dir),
            "process {:?} left running in {}",
            e.file_name(),
            cwd.display()
        );
    }
}

#[test]
fn a_start_that_never_ends_is_one_error_naming_the_start_timeout() {
    let d = tempfile::tempdir().expect("tempdir");
    // `sleep` keeps the output pipe open, as a server that forgot to detach would.
    let s = shim(
        d.path(),
        &format!(
            "echo $$ >> {0}/pids; sleep 1000 & echo $! >> {0}/pids; wait",
            d.path().display()
        ),
    );
    let (code, out, err, took) = run(d.path(), &s, &[]);
    let line = assert_one_preflight_error(code, &out, &err);
    assert!(
        line.contains("did not finish within the start timeout (10s)"),
        "{line}"
    );
    assert!(line.contains("(start-timeout)"), "{line}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_gone(d.path());
}

#[test]
fn a_start_that_exits_3_is_one_error_with_its_output() {
    let d = tempfile::tempdir().expect("tempdir");
    let s = shim(
        d.path(),
        &format!(
            "echo $$ >> {}/pids; echo 'cannot start: no runtime' >&2; exit 3",
            d.path().display()
        ),
    );
    let (code, out, err, took) = run(d.path(), &s, &[]);
    let line = assert_one_preflight_error(code, &out, &err);
    assert!(
        line.contains("`start` exited with status 3; its output: \"cannot start: no runtime\""),
        "{line}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_gone(d.path());
}

#[test]
fn a_start_that_prints_garbage_is_one_error_with_the_dialects_reason() {
    let d = tempfile::tempdir().expect("tempdir");
    let s = shim(
        d.path(),
        &format!(
            "echo $$ >> {}/pids; echo 'hello, I am a shim!'",
            d.path().display()
        ),
    );
    for (version, reason) in [
        ("2.0", "containerd 2.0 cannot use what `start` printed: start output is not an address: \"hello, I am a shim!\""),
        ("1.6", "containerd 1.6 cannot use what `start` printed: start output is not an address: \"hello, I am a shim!\""),
    ] {
        let (code, out, err, took) = run(d.path(), &s, &["--containerd-version", version]);
        let line = assert_one_preflight_error(code, &out, &err);
        assert!(line.contains(reason), "{line}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }
    assert_gone(d.path());
}

#[test]
fn an_address_nobody_listens_on_is_one_error() {
    let d = tempfile::tempdir().expect("tempdir");
    let s = shim(
        d.path(),
        &format!(
            "echo $$ >> {}/pids; printf unix:///nonexistent/s.sock",
            d.path().display()
        ),
    );
    let (code, out, err, took) = run(d.path(), &s, &[]);
    let line = assert_one_preflight_error(code, &out, &err);
    assert!(
        line.contains("(connect): `start` printed unix:///nonexistent/s.sock, but connecting to it failed (bound 5s)"),
        "{line}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_gone(d.path());
}

#[test]
fn stderr_before_a_good_address_is_one_error_and_the_server_is_ended() {
    let d = tempfile::tempdir().expect("tempdir");
    // The real reaper, but something logs to stderr first: containerd's CombinedOutput mixes
    // it into the address.
    let s = shim(
        d.path(),
        &format!(
            "echo 'level=info msg=\"starting shim\"' >&2\nexec {} \"$@\"",
            reaper().display()
        ),
    );
    let (code, out, err, took) = run(d.path(), &s, &[]);
    let line = assert_one_preflight_error(code, &out, &err);
    assert!(line.contains("starting shim"), "{line}");
    assert!(line.contains("not an address"), "{line}");
    assert!(
        line.contains("the server it left listening was ended"),
        "{line}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_no_process_in(d.path());
}

#[test]
fn a_good_shim_runs_the_suite_and_its_preflight_leaves_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    let (code, out, err, took) = run(d.path(), &reaper(), &["--format", "json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(!err.contains("preflight"), "{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(v["summary"]["failed"], 0, "{v}");
    assert_eq!(v["summary"]["passed"], 2, "{v}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_no_process_in(d.path());
}

#[test]
fn no_preflight_gives_one_failure_per_scenario() {
    let d = tempfile::tempdir().expect("tempdir");
    let s = shim(
        d.path(),
        &format!(
            "echo $$ >> {}/pids; echo 'cannot start: no runtime' >&2; exit 3",
            d.path().display()
        ),
    );
    let t0 = Instant::now();
    let out = harness()
        .env("TMPDIR", d.path())
        .args(["run", "--no-preflight", "--format", "json", "--filter"])
        .arg("lifecycle/sig*")
        .arg("--shim")
        .arg(&s)
        .timeout(Duration::from_secs(60))
        .output()
        .expect("run harness");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let scenarios = v["scenarios"].as_array().expect("scenarios");
    assert!(scenarios.len() > 1, "{v}");
    for sc in scenarios {
        assert_eq!(sc["status"], "failed", "{sc}");
        let reason = sc["reason"].as_str().unwrap_or("");
        assert!(
            reason.starts_with("launching the shim for `main`: start failed: cannot start: no runtime: exit status 3"),
            "{reason}"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_gone(d.path());
}
