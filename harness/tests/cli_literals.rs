//! Literal lists and maps in `expect` (and in events' `fields`), against the reaper: a file with
//! `processes: []` loads (it used to be refused as "invalid type: sequence"), matches and
//! mismatches as a value; `harness schema` describes the literal forms.

use testkit::reaper;

use assert_cmd::Command;
use serde_json::Value;

fn harness() -> Command {
    Command::cargo_bin("harness").expect("the harness binary (cargo build -p harness)")
}

const HEAD: &str = "description: literals\nlevel: must\nprocess: {args: [sleep, '30']}\nsteps:\n  - create: {}\n  - start: {}\n";
const TAIL: &str = "  - kill: {signal: SIGKILL}\n  - wait: {}\n  - delete: {}\n  - shutdown: {}\n";

/// Runs one scenario made of `HEAD`, `steps` and `TAIL`; the exit status and its JSON result.
fn run(steps: &str) -> (Option<i32>, Value) {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(d.path().join("lit")).expect("mkdir");
    let file = d.path().join("lit/case.yaml");
    std::fs::write(&file, format!("{HEAD}{steps}{TAIL}")).expect("write");
    let out = harness()
        .args(["run", "--format", "json", "--rootfs", "none", "--shim"])
        .arg(reaper())
        .arg("--scenarios")
        .arg(d.path())
        .output()
        .expect("run harness");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    (out.status.code(), v["scenarios"][0].clone())
}

#[test]
fn literal_lists_and_maps_match() {
    let (code, sc) = run(concat!(
        "  - pids: {expect: {processes: ['${init-pid}'], count: 1}}\n",
        "  - events:\n",
        "      expect:\n",
        "        - {topic: /tasks/create, fields: {io: {stdin: '', stdout: '${stdout-path}', stderr: '${stderr-path}', terminal: false}}}\n",
    ));
    assert_eq!(code, Some(0), "{sc}");
    assert_eq!(sc["status"], "passed", "{sc}");
}

#[test]
fn an_empty_list_is_refused_by_a_running_task() {
    let (code, sc) = run("  - pids: {expect: {processes: []}}\n");
    assert_eq!(code, Some(1), "{sc}");
    let reason = sc["reason"].as_str().unwrap_or_default();
    let pid = sc["steps"][0]["response"]["pid"]
        .as_u64()
        .expect("init pid");
    assert!(
        reason.contains(&format!("processes: expected [], got [{pid}]")),
        "{reason}"
    );
}

#[test]
fn a_literal_map_mismatch_names_both_maps() {
    let (code, sc) = run(concat!(
        "  - events:\n",
        "      expect:\n",
        "        - {topic: /tasks/create, fields: {io: {stdin: '', terminal: true}}}\n",
        "      timeout: 200ms\n",
    ));
    assert_eq!(code, Some(1), "{sc}");
    let reason = sc["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(r#"expected {"stdin":"","terminal":true}"#),
        "{reason}"
    );
}

#[test]
fn the_schema_describes_literal_lists_and_maps() {
    let out = harness().arg("schema").output().expect("harness schema");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("A literal list: same length"), "{text}");
    assert!(text.contains("A literal map (none of its keys is an operator)"));
}
