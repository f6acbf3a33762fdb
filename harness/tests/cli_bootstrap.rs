//! containerd 2.3's bootstrap from the command line: `--socket-dir` reaches the shim through
//! `BootstrapParams` (the reaper then listens there, and leaves nothing behind), is checked as
//! containerd checks its `socket_dir` setting, and is refused outside dialect 2.3.

use testkit::reaper;

use assert_cmd::Command;
use serde_json::Value;

/// A scenario that checks where the main shim listens, through `--scenarios FILE`.
const WHERE: &str = r#"description: "The shim listens in the socket dir the run was given"
level: must
process:
  args: [sh, -c, "exit 0"]
steps:
  - start-answer: {expect: {format: protobuf, address: {contains: "unix://DIR/"}}}
  - create: {}
  - start: {}
  - wait: {expect: {exit-status: 0}}
  - delete: {}
  - shutdown: {}
"#;

#[test]
fn socket_dir_reaches_the_shim_and_nothing_is_left_there() {
    // Short, as containerd requires (42 characters at most).
    let dir = tempfile::Builder::new()
        .prefix("hsd-")
        .tempdir_in("/tmp")
        .unwrap();
    let scen = tempfile::tempdir().unwrap();
    let file = scen.path().join("where.yaml");
    std::fs::write(
        &file,
        WHERE.replace("DIR", &dir.path().display().to_string()),
    )
    .unwrap();
    let out = Command::cargo_bin("harness")
        .unwrap()
        .args(["run", "--containerd-version", "2.3", "--format", "json"])
        .arg("--socket-dir")
        .arg(dir.path())
        .arg("--scenarios")
        .arg(&file)
        .arg("--shim")
        .arg(reaper())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    let steps = v["scenarios"][0]["steps"].as_array().expect("steps");
    let address = steps[0]["response"]["address"].as_str().unwrap_or_default();
    assert!(
        address.starts_with(&format!("unix://{}/", dir.path().display())),
        "{address}"
    );
    // The preflight's server and the scenario's are gone, and so are their sockets.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the socket dir: {left:?}");

    // Without it, 2.3 sends the daemon's default: the same scenario fails, naming the address.
    let out = Command::cargo_bin("harness")
        .unwrap()
        .args(["run", "--containerd-version", "2.3", "--scenarios"])
        .arg(&file)
        .arg("--shim")
        .arg(reaper())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(r#"got "unix:///run/containerd/s/"#), "{text}");
}

#[test]
fn a_bad_socket_dir_is_a_usage_error_naming_it() {
    for (args, want) in [
        (
            vec!["--containerd-version", "2.3", "--socket-dir", "run/s"],
            "--socket-dir: socket_dir must be an absolute path: \"run/s\"",
        ),
        (
            vec![
                "--containerd-version",
                "2.3",
                "--socket-dir",
                "/run/a-directory-name-longer-than-containerd-takes",
            ],
            "--socket-dir: socket_dir length must be no longer than 42 characters",
        ),
        (
            vec!["--containerd-version", "1.7", "--socket-dir", "/run/s"],
            "--socket-dir: only containerd 2.3 sends a socket dir",
        ),
    ] {
        let out = Command::cargo_bin("harness")
            .unwrap()
            .arg("run")
            .args(&args)
            .arg("--shim")
            .arg(reaper())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: ran anyway");
    }
}
