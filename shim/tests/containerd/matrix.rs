//! `harness matrix` against the real daemons (issue 12): for the reaper and the Go runc shim of
//! each release at hand, the mock's verdict per dialect (works or not) must be what that
//! release's real containerd does with `ctr run --rm ... echo` through the same shim.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::Version::{self, V1_6, V1_7, V2_1, V2_3};
use crate::common::{self, Daemon, DaemonOpts, Runtime};

/// `harness matrix --format json` for `shim`: (dialect, works, reason) per row.
fn mock_verdicts(shim: &Path) -> Vec<(String, bool, String)> {
    let harness = testkit::built("harness");
    let out = std::process::Command::new(&harness)
        .args(["matrix", "--format", "json", "--shim"])
        .arg(shim)
        .output()
        .expect("run harness matrix");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "harness matrix --shim {}: no JSON ({e}): {}",
            shim.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["containerd"].as_str().unwrap_or_default().to_string(),
                r["verdict"] == "works",
                r["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// What `version`'s real daemon does with `runtime` (and, for runc, the shim in `runc_dir`):
/// whether `ctr run --rm` of echo works, and ctr's error when not.
fn real_verdict(version: Version, runtime: Runtime, runc_dir: Option<&Path>) -> (bool, String) {
    let opts = DaemonOpts {
        shim_dir: runc_dir.map(Path::to_path_buf),
        ..Default::default()
    };
    let started = std::time::SystemTime::now();
    let mut d = Daemon::start(version, runtime, "matrix", opts);
    let out = d.run_rm(&[], "mx", &["/bin/echo", "hi"], None);
    let works = out.code() == 0 && out.stdout == "hi\n";
    drop(d);
    let ended = std::time::SystemTime::now();
    // A shim whose start the daemon refused leaves its socket file, which containerd does not
    // remove (its process the fixture ends): socket files made while this daemon ran, bound by
    // no process (not in /proc/net/unix), are stale and go. The directory is listed before
    // /proc/net/unix is read: other tests of this binary bind sockets there meanwhile, and a
    // socket made between a snapshot of /proc/net/unix and the listing looked stale (once, one
    // was removed that way and containerd 1.6 failed that test's `ctr run` with "dial unix
    // ...: no such file or directory").
    if !works {
        let made: Vec<PathBuf> = std::fs::read_dir(common::SOCKET_DIR)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= started && t <= ended)
            })
            .map(|e| e.path())
            .collect();
        let bound = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
        for p in made {
            if !bound.contains(p.to_string_lossy().as_ref()) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    (works, out.stderr.trim().to_string())
}

#[test]
fn the_matrix_agrees_with_every_real_daemon_for_every_shim_at_hand() {
    let mut shims: Vec<(String, Runtime, Option<std::path::PathBuf>)> =
        vec![("reaper".into(), Runtime::Reaper, None)];
    for r in [V1_6, V1_7, V2_1, V2_3] {
        shims.push((
            format!("runc shim {}", r.release()),
            Runtime::Runc,
            Some(r.bin_dir()),
        ));
    }
    // The faulty shim's start-related faults: a JSON bootstrap of version 2 or 3 instead of the
    // bare address, and one of version 2 without a protocol, each switched on by a wrapper (the
    // daemon passes its own environment on).
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, faults) in [
        "start-json=2",
        "start-json=3",
        "start-json=2,start-protocol=",
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tmp.path().join(format!("json{i}"));
        std::fs::create_dir(&dir).expect("mkdir");
        let wrapper = dir.join("containerd-shim-faulty-v2");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nFAULTY_SHIM={faults} exec {} \"$@\"\n",
                testkit::faulty().display()
            ),
        )
        .expect("write wrapper");
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        shims.push((format!("faulty shim {faults}"), Runtime::Faulty, Some(dir)));
    }
    let mut problems = vec![];
    for (name, runtime, dir) in &shims {
        let bin = match (runtime, dir) {
            (Runtime::Runc, Some(d)) => d.join("containerd-shim-runc-v2"),
            (Runtime::Faulty, Some(d)) => d.join("containerd-shim-faulty-v2"),
            _ => testkit::reaper(),
        };
        let mock = mock_verdicts(&bin);
        assert_eq!(mock.len(), 4, "{name}: {mock:?}");
        for version in [V1_6, V1_7, V2_1, V2_3] {
            let (real, why) = real_verdict(version, *runtime, dir.as_deref());
            let (_, predicted, reason) = mock
                .iter()
                .find(|(d, _, _)| d == version.dialect())
                .unwrap_or_else(|| panic!("{name}: no row for dialect {}", version.dialect()));
            eprintln!(
                "{name} under containerd {}: real {} | mock {} {reason}",
                version.release(),
                if real { "works" } else { "fails" },
                if *predicted { "works" } else { "refused" },
            );
            if real != *predicted {
                problems.push(format!(
                    "{name} under containerd {}: the daemon {} ({why}), the mock says {} ({reason})",
                    version.release(),
                    if real { "runs it" } else { "fails" },
                    if *predicted { "works" } else { "not" },
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
