//! `harness matrix` from the command line: one row per dialect in human and JSON form, exit 0
//! when the shim works with every containerd version, 1 when not, 2 for a shim that is not
//! there. (Its agreement with the real daemons is checked in the shim's containerd tests.)

use testkit::reaper;

use assert_cmd::Command;
use serde_json::Value;

/// The `rows` of a `harness matrix --format json` report, and their verdicts.
fn rows_and_verdicts(stdout: &[u8]) -> (Vec<Value>, Vec<String>) {
    let v: Value = serde_json::from_slice(stdout).expect("JSON");
    let rows = v["rows"].as_array().expect("rows").clone();
    let verdicts = rows
        .iter()
        .map(|r| r["verdict"].as_str().unwrap_or_default().to_string())
        .collect();
    (rows, verdicts)
}

/// `harness matrix --format json --shim SHIM`, run to its end.
fn matrix_json(shim: &std::path::Path) -> std::process::Output {
    Command::cargo_bin("harness")
        .unwrap()
        .args(["matrix", "--format", "json", "--shim"])
        .arg(shim)
        .output()
        .unwrap()
}

/// The socket a refusal's reason names (`unix:///run/containerd/s/<hash>`) is gone.
fn assert_named_socket_gone(reason: &str) {
    let socket = regex::Regex::new(r"unix://(/run/containerd/s/[0-9a-f]{64})").unwrap();
    let path = socket
        .captures(reason)
        .unwrap_or_else(|| panic!("no socket named in {reason}"))[1]
        .to_string();
    assert!(
        !std::path::Path::new(&path).exists(),
        "{path} left behind: {reason}"
    );
}

/// An executable shell script `dir/name` with `body`.
fn script(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

#[test]
fn the_reaper_works_with_every_dialect_in_both_formats() {
    let out = matrix_json(&reaper());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows: Vec<(String, String)> = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["containerd"].as_str().unwrap().into(),
                r["verdict"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = ["1.6", "1.7", "2.0", "2.3"]
        .iter()
        .map(|d| (d.to_string(), "works".to_string()))
        .collect();
    assert_eq!(rows, want);
    let human = Command::cargo_bin("harness")
        .unwrap()
        .args(["matrix", "--shim"])
        .arg(reaper())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert_eq!(human.status.code(), Some(0), "{human:?}");
    assert_eq!(
        text.lines().filter(|l| l.contains(" works")).count(),
        4,
        "{text}"
    );
}

#[test]
fn a_shim_that_prints_json_version_3_is_refused_by_1_6_and_1_7_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    // A `start` that answers JSON version 3 with a socket nobody serves: 1.6 dials the JSON as a
    // path, 1.7 refuses version 3, 2.0 and 2.3 dial the address and cannot connect.
    let shim = script(
        dir.path(),
        "containerd-shim-v3only-v2",
        "#!/bin/sh\nprintf '{\"version\":3,\"address\":\"unix:///run/containerd/s/harness-matrix-none\",\"protocol\":\"ttrpc\"}'\n",
    );
    let out = matrix_json(&shim);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows = v["rows"].as_array().expect("rows");
    let reason = |i: usize| rows[i]["reason"].as_str().unwrap_or_default().to_string();
    assert!(rows.iter().all(|r| r["verdict"] == "refused"), "{rows:?}");
    assert!(
        reason(0).contains("containerd 1.6 dials it as a path"),
        "{}",
        reason(0)
    );
    assert!(
        reason(1).contains("unsupported shim version (3)"),
        "{}",
        reason(1)
    );
    assert!(reason(2).starts_with("connect:"), "{}", reason(2));
    // 2.3: not a protobuf BootstrapResult ('{' opens a group that never ends), so the JSON.
    assert!(reason(3).starts_with("connect:"), "{}", reason(3));
}

#[test]
fn a_missing_shim_is_exit_2_naming_it() {
    let out = Command::cargo_bin("harness")
        .unwrap()
        .args(["matrix", "--shim", "/nonexistent/containerd-shim-x-v2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/containerd-shim-x-v2"));
}

#[test]
fn a_refused_protobuf_answer_leaves_no_server_and_no_socket() {
    // containerd 2.3.4's runc shim answers a protobuf BootstrapResult, which 1.6, 1.7 and 2.0
    // cannot use: the server it started must be ended and its socket removed each time.
    let shim = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/containerd/2.3.4/containerd-shim-runc-v2");
    assert!(
        shim.is_file(),
        "{} is missing: the project's shared/containerd/2.3.4 belongs beside the checkout",
        shim.display()
    );
    let out = matrix_json(&shim);
    let (rows, verdicts) = rows_and_verdicts(&out.stdout);
    assert_eq!(
        verdicts,
        ["refused", "refused", "refused", "works"],
        "{rows:?}"
    );
    for r in &rows[..3] {
        let reason = r["reason"].as_str().unwrap_or_default();
        assert_named_socket_gone(reason);
        assert!(reason.contains("was ended (pids ["), "{reason}");
    }
    let shim = std::fs::canonicalize(&shim).unwrap();
    let left: Vec<i32> = harness::procfs::all_processes()
        .into_iter()
        .filter(|p| p.state != 'Z')
        .filter(|p| {
            std::fs::read_link(format!("/proc/{}/exe", p.pid))
                .ok()
                .as_ref()
                == Some(&shim)
        })
        .map(|p| p.pid)
        .collect();
    assert!(left.is_empty(), "2.3.4 runc shim processes left: {left:?}");
}

#[test]
fn a_json_version_3_answer_refused_by_1_7_leaves_no_server_and_no_socket() {
    // The faulty shim's `start-json=3`: a real server behind a JSON version 3 answer, which 1.6
    // dials as a path and 1.7 refuses (containerd#10984); both times its server must be ended.
    let mark = format!("REAPER_MATRIX_TEST={}", std::process::id());
    let out = Command::cargo_bin("harness")
        .unwrap()
        .args([
            "matrix",
            "--format",
            "json",
            "--shim-env",
            "FAULTY_SHIM=start-json=3",
        ])
        .args(["--shim-env", &mark, "--shim"])
        .arg(testkit::faulty())
        .output()
        .unwrap();
    let (rows, verdicts) = rows_and_verdicts(&out.stdout);
    assert_eq!(
        verdicts,
        ["refused", "refused", "works", "works"],
        "{rows:?}"
    );
    let reason = rows[1]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("unsupported shim version (3)"), "{reason}");
    // 1.6's message quotes the JSON, and so the socket; 1.7's names only the version.
    assert_named_socket_gone(rows[0]["reason"].as_str().unwrap_or_default());
    for r in &rows[..2] {
        let reason = r["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("was ended (pids ["), "{reason}");
    }
    // Every process the runs started carries the mark: none may be left.
    let left: Vec<i32> = harness::procfs::all_processes()
        .into_iter()
        .filter(|p| p.state != 'Z')
        .filter(|p| {
            std::fs::read(format!("/proc/{}/environ", p.pid))
                .map(|e| e.split(|b| *b == 0).any(|kv| kv == mark.as_bytes()))
                .unwrap_or(false)
        })
        .map(|p| p.pid)
        .collect();
    assert!(left.is_empty(), "processes of the runs left: {left:?}");
}

/// A shim whose grouped `start` (the bundle carries the group annotation) answers the JSON
/// bootstrap version 3 where the first `start` answered otherwise: a wrapper around the reaper,
/// which gets no stdin for that `start` and so prints its bare address.
fn regrouping_shim(dir: &std::path::Path) -> std::path::PathBuf {
    let body = format!(
        "#!/bin/sh\n\
         for a in \"$@\"; do last=$a; done\n\
         if [ \"$last\" = start ] && grep -q io.containerd.runc.v2.group config.json 2>/dev/null; then\n\
         \x20 addr=$({real} \"$@\" </dev/null) || exit $?\n\
         \x20 printf '{{\"version\":3,\"address\":\"%s\",\"protocol\":\"ttrpc\"}}' \"$addr\"\n\
         \x20 exit 0\n\
         fi\n\
         exec {real} \"$@\"\n",
        real = reaper().display()
    );
    script(dir, "containerd-shim-regroup-v2", &body)
}

#[test]
fn a_grouped_start_that_answers_another_version_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let shim = regrouping_shim(dir.path());
    let out = matrix_json(&shim);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let (rows, verdicts) = rows_and_verdicts(&out.stdout);
    // 1.6 and 1.7 cannot use a JSON version 3 at all; 2.0 dials task v3 for the second
    // container where the first answered v2. 2.3 read the first answer (a BootstrapResult) as
    // version 3 too: the same address, version and protocol, in another form, which is fine.
    assert_eq!(
        verdicts,
        [
            "grouped-start-differs",
            "grouped-start-differs",
            "grouped-start-differs",
            "works"
        ],
        "{rows:#?}"
    );
    let reason = rows[2]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(r#"(start-answer): version: expected "2", got 3"#),
        "{reason}"
    );
    let human = Command::cargo_bin("harness")
        .unwrap()
        .args(["matrix", "--shim"])
        .arg(&shim)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("2.0") && l.contains("grouped-start-differs")),
        "{text}"
    );
}
