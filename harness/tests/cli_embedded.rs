//! The suite embedded in the harness binary: a harness copied alone into an empty directory
//! lists and runs the whole bundled suite (against the reaper given with `--shim`); `--scenarios`
//! replaces it; `harness list` says where each scenario came from.

use testkit::reaper;

use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

/// The harness binary copied alone into a fresh empty directory (which is also the cwd).
fn lone_harness() -> (tempfile::TempDir, Command) {
    let built = assert_cmd::cargo::cargo_bin("harness");
    let d = tempfile::tempdir().expect("tempdir");
    let copy = d.path().join("harness");
    std::fs::copy(&built, &copy).expect("copy the harness");
    // A process another test thread forks while the copy's write fd is open keeps it until its
    // exec, and an exec of the copy meanwhile fails with ETXTBSY: wait until one succeeds.
    for _ in 0..100 {
        match Command::new(&copy).arg("--version").output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => break,
        }
    }
    let mut cmd = Command::new(&copy);
    cmd.current_dir(d.path()).env_remove("HARNESS_SCENARIOS");
    (d, cmd)
}

/// Names of the checkout's `scenarios/**.yaml`, as the harness names them.
fn checkout_suite() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut names: Vec<String> = harness::scenario::discover(&[dir])
        .expect("the checkout's suite loads")
        .into_iter()
        .map(|l| l.name)
        .collect();
    names.sort();
    names
}

#[test]
fn a_lone_harness_lists_the_embedded_suite() {
    let (d, mut cmd) = lone_harness();
    let out = cmd.arg("list").output().expect("harness list");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().expect("a header");
    assert!(
        header.starts_with("name ") && header.ends_with("  source"),
        "{header}"
    );
    let mut names = Vec::new();
    for l in lines {
        assert!(l.ends_with("  embedded"), "{l}");
        names.push(l.split_whitespace().next().expect("a name").to_string());
    }
    names.sort();
    assert_eq!(names, checkout_suite());
    // Only the binary is there: nothing was read from (or written to) the directory.
    let entries: Vec<_> = std::fs::read_dir(d.path())
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, ["harness"]);
}

#[test]
fn scenarios_replace_the_embedded_suite_and_list_shows_their_path() {
    let (d, mut cmd) = lone_harness();
    let mine = d.path().join("mine");
    std::fs::create_dir_all(mine.join("g")).expect("mkdir");
    std::fs::write(
        mine.join("g/ok.yaml"),
        "description: exits 0\nprocess: {args: [true]}\nsteps:\n  - create: {}\n",
    )
    .expect("write");
    let out = cmd
        .args(["list", "--scenarios"])
        .arg(&mine)
        .output()
        .expect("harness list");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<_> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "only the given scenario: {text}");
    assert!(rows[0].starts_with("g/ok "), "{text}");
    assert!(
        rows[0].ends_with(&format!("  {}", mine.join("g/ok.yaml").display())),
        "{text}"
    );
}

#[test]
fn a_lone_harness_runs_the_whole_embedded_suite_against_the_reaper() {
    let (_d, mut cmd) = lone_harness();
    let t0 = Instant::now();
    let out = cmd
        .args(["run", "--format", "json", "--shim"])
        .arg(reaper())
        .timeout(Duration::from_secs(300))
        .output()
        .expect("harness run");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let failed: Vec<String> = v["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .filter(|s| s["status"] == "failed")
        .map(|s| format!("{}: {}", s["name"], s["reason"]))
        .collect();
    assert!(failed.is_empty(), "failed: {failed:#?}");
    assert_eq!(out.status.code(), Some(0), "{}", v["summary"]);
    let mut names: Vec<String> = v["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    assert_eq!(names, checkout_suite());
    eprintln!("whole suite from a lone harness: {:?}", t0.elapsed());
}
