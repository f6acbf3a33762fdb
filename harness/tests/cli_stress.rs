//! `harness stress` on the command line: the JSON report's shape (counts, percentiles per
//! operation, resources at idle/peak/end, provenance), exit statuses, and argument errors.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn harness() -> Command {
    Command::cargo_bin("harness").expect("the harness binary (cargo build -p harness)")
}

fn reaper() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("containerd-shim-reaper-v2");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build -p containerd-shim-reaper`",
        p.display()
    );
    p
}

fn stress_json(extra: &[&str]) -> Value {
    let out = harness()
        .args(["stress", "--format", "json", "--shim"])
        .arg(reaper())
        .args(extra)
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .expect("harness stress");
    assert!(
        out.status.success(),
        "harness stress exited {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} is not a number in {v:#}"))
}

#[test]
fn one_shim_json_has_counts_percentiles_resources_and_provenance() {
    let v = stress_json(&["-n", "20", "-p", "4"]);
    assert_eq!(v["mode"], "one-shim");
    assert_eq!(u(&v, "/tasks"), 20);
    assert_eq!(u(&v, "/parallel"), 4);
    assert_eq!(u(&v, "/completed"), 20);
    assert_eq!(u(&v, "/failed"), 0);
    assert!(
        v["tasks-per-sec"].as_f64().is_some_and(|x| x > 0.0),
        "{v:#}"
    );
    for op in ["create", "start", "wait", "delete", "lifecycle"] {
        let base = format!("/latency/{op}");
        assert_eq!(u(&v, &format!("{base}/count")), 20, "{op}");
        let (p50, p90, p99, max) = (
            u(&v, &format!("{base}/p50-us")),
            u(&v, &format!("{base}/p90-us")),
            u(&v, &format!("{base}/p99-us")),
            u(&v, &format!("{base}/max-us")),
        );
        assert!(
            p50 <= p90 && p90 <= p99 && p99 <= max,
            "{op}: {p50} {p90} {p99} {max}"
        );
    }
    for at in ["idle", "peak", "end"] {
        assert!(u(&v, &format!("/resources/{at}/rss-kib")) > 0, "{at}");
        assert!(u(&v, &format!("/resources/{at}/fds")) > 0, "{at}");
        assert_eq!(u(&v, &format!("/resources/{at}/servers")), 1, "{at}");
    }
    assert_eq!(
        u(&v, "/resources/end/fds"),
        u(&v, "/resources/idle/fds"),
        "the shim's fds after the run differ from idle: {:#}",
        v["resources"]
    );
    assert_eq!(v["leaks"], Value::Array(vec![]));
    let p = &v["provenance"];
    for k in [
        "harness-version",
        "shim",
        "containerd-version",
        "kernel",
        "cpu",
        "host",
    ] {
        assert!(
            p[k].as_str().is_some_and(|s| !s.is_empty()),
            "provenance.{k} in {p:#}"
        );
    }
    assert_eq!(p["containerd-version"], "2.0");
    assert!(u(&v, "/provenance/cpus") >= 1);
}

#[test]
fn shim_per_task_reports_launch_and_shutdown() {
    let v = stress_json(&[
        "-n",
        "4",
        "-p",
        "2",
        "--shim-per-task",
        "--containerd-version",
        "1.6",
    ]);
    assert_eq!(v["mode"], "shim-per-task");
    assert_eq!(u(&v, "/completed"), 4);
    assert_eq!(u(&v, "/latency/launch/count"), 4);
    assert_eq!(u(&v, "/latency/shutdown/count"), 4);
    assert!(v["resources"]["idle"].is_null(), "no idle sample per task");
    assert_eq!(v["provenance"]["containerd-version"], "1.6");
}

#[test]
fn a_failing_process_makes_exit_status_one() {
    let out = harness()
        .args(["stress", "-n", "3", "-p", "1", "--shim"])
        .arg(reaper())
        .args(["--process", "false"])
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .expect("harness stress");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 failed"), "{text}");
    assert!(text.contains("exited 1 (want 0)"), "{text}");
}

#[test]
fn bad_arguments_exit_two_with_one_line() {
    for args in [
        vec!["stress", "-n", "0"],
        vec!["stress", "--containerd-version", "9.9"],
        vec!["stress", "--shim", "/nonexistent/containerd-shim-x-v2"],
    ] {
        let out = harness()
            .args(&args)
            .timeout(std::time::Duration::from_secs(30))
            .output()
            .expect("harness");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("harness: error:"), "{args:?}: {err}");
    }
}
