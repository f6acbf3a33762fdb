//! `harness stress` on the command line: the JSON report's shape (counts, percentiles per
//! operation, resources at idle/peak/end, provenance, the soak's series and verdict), exit
//! statuses, and argument errors.

use testkit::reaper;

use assert_cmd::Command;
use serde_json::Value;

fn harness() -> Command {
    Command::cargo_bin("harness").expect("the harness binary (cargo build -p harness)")
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
fn soak_json_has_series_growth_per_metric_and_an_ok_verdict() {
    let v = stress_json(&["--soak", "6s", "--sample-interval", "250ms", "-p", "4"]);
    assert_eq!(v["mode"], "one-shim");
    assert_eq!(u(&v, "/failed"), 0, "{:#}", v["errors"]);
    let done = u(&v, "/completed");
    assert!(done > 0 && u(&v, "/tasks") == done, "{v:#}");
    let soak = &v["soak"];
    assert_eq!(u(soak, "/duration-ms"), 6000);
    assert_eq!(u(soak, "/interval-ms"), 250);
    let series = soak["series"].as_array().expect("soak.series");
    // 24 ticks fit in 6 s (none after); a busy machine may leave the last few untaken.
    assert!(
        (12..=24).contains(&series.len()),
        "{} samples",
        series.len()
    );
    let mut prev = (0, 0);
    for s in series {
        let (t, n) = (u(s, "/t-ms"), u(s, "/lifecycles"));
        assert!(t > prev.0 && n >= prev.1, "series not in order at {s}");
        prev = (t, n);
        assert!(
            u(s, "/rss-kib") > 0 && u(s, "/fds") > 0 && u(s, "/threads") > 0,
            "{s}"
        );
        // The listener and the connections to the mock are unix sockets.
        assert!(u(s, "/unix-sockets") >= 2, "{s}");
        for k in ["zombies", "socket-files"] {
            u(s, &format!("/{k}"));
        }
    }
    assert!(prev.1 <= done);
    for m in [
        "rss-kib",
        "fds",
        "threads",
        "zombies",
        "unix-sockets",
        "socket-files",
    ] {
        let g = &soak["metrics"][m];
        for k in ["idle", "first", "last", "end", "noise"] {
            u(g, &format!("/{k}"));
        }
        assert!(
            g["growth"].is_i64() && g["slope-per-min"].is_f64(),
            "{m}: {g}"
        );
        assert_eq!(g["verdict"], "ok", "{m}: {g}");
    }
    // Quiescent before and after: the reaper holds what it held at idle.
    assert_eq!(
        u(soak, "/idle/fds"),
        u(soak, "/end/fds"),
        "{:#}",
        soak["metrics"]
    );
    assert_eq!(u(soak, "/end/zombies"), 0);
    assert_eq!(u(soak, "/end/socket-files"), 0);
    assert_eq!(soak["verdict"], "ok", "{:#}", soak["findings"]);
    assert_eq!(soak["findings"], Value::Array(vec![]));
}

#[test]
fn soak_refuses_shim_per_task_and_task_counts() {
    for extra in [vec!["--shim-per-task"], vec!["-n", "5"]] {
        let out = harness()
            .args(["stress", "--soak", "2s"])
            .args(&extra)
            .timeout(std::time::Duration::from_secs(30))
            .output()
            .expect("harness");
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--soak"), "{extra:?}: {err}");
    }
    let out = harness()
        .args(["stress", "--soak", "ten minutes"])
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .expect("harness");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ten minutes"));
}

#[test]
fn a_failing_process_makes_exit_status_one() {
    use std::time::{Duration, Instant};
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("harness"))
        .args(["stress", "-n", "3", "-p", "1", "--shim"])
        .arg(reaper())
        .args(["--process", "false"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("harness stress");
    let end = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > end {
            child.kill().expect("kill harness");
            child.wait().expect("reap harness");
            panic!("harness stress did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id();
    let out = child.wait_with_output().expect("harness output");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 failed"), "{text}");
    assert!(text.contains("exited 1 (want 0)"), "{text}");
    // The failed tasks were still deleted: the reaper removed their cgroups
    // (`reaper/<ns>/<id>` under each v1 controller; the run's namespace is `stress-<pid>-0`).
    let left: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|c| c.path().join(format!("reaper/stress-{pid}-0")))
        .filter(|d| d.exists())
        .collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
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

/// Every entry is exactly `{name, unit, value, extra}` (github-action-benchmark's custom
/// format): a non-empty name, the unit, a number, a string.
fn assert_benchmark_entries(v: &Value, unit: &str) -> Vec<String> {
    let entries = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v:#}"));
    assert!(!entries.is_empty(), "{v:#}");
    let mut names = Vec::new();
    for e in entries {
        let o = e
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {e}"));
        let mut keys: Vec<_> = o.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["extra", "name", "unit", "value"], "{e}");
        assert_eq!(e["unit"], unit, "{e}");
        assert!(e["value"].as_f64().is_some_and(|x| x > 0.0), "{e}");
        assert!(e["extra"].as_str().is_some_and(|x| !x.is_empty()), "{e}");
        names.push(e["name"].as_str().expect("name").to_string());
    }
    names
}

#[test]
fn benchmark_json_is_github_action_benchmark_input() {
    let d = tempfile::tempdir().expect("tempdir");
    let (big, report) = (d.path().join("big.json"), d.path().join("report.json"));
    let out = harness()
        .args([
            "stress",
            "-n",
            "20",
            "-p",
            "2",
            "--format",
            "benchmark-json",
            "--shim",
        ])
        .arg(reaper())
        .arg("--benchmark-bigger")
        .arg(&big)
        .arg("--report")
        .arg(&report)
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .expect("harness stress");
    assert!(out.status.success(), "{out:?}");
    // customSmallerIsBetter on stdout: p50, p90, p99 and max of every operation, in µs.
    let small: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON array");
    let names = assert_benchmark_entries(&small, "us");
    let mut expected = Vec::new();
    for op in ["create", "delete", "lifecycle", "start", "wait"] {
        for q in ["p50", "p90", "p99", "max"] {
            expected.push(format!("stress one-shim {op} {q}"));
        }
    }
    assert_eq!(names, expected);
    assert!(
        small[0]["extra"]
            .as_str()
            .is_some_and(|x| x.starts_with("20 samples; -n 20 -p 2; containerd-shim-reaper-v2")),
        "{small:#}"
    );
    // The values are the report's.
    let full: Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("JSON");
    assert_eq!(
        small[2]["value"].as_f64(),
        full["latency"]["create"]["p99-us"].as_f64()
    );
    // customBiggerIsBetter in the file: the throughput.
    let big: Value =
        serde_json::from_str(&std::fs::read_to_string(&big).expect("big file")).expect("JSON");
    let names = assert_benchmark_entries(&big, "tasks/s");
    assert_eq!(names, ["stress one-shim throughput"]);
    let tps = full["tasks-per-sec"].as_f64().expect("tasks-per-sec");
    assert!((big[0]["value"].as_f64().expect("value") - tps).abs() < 0.01);
}
