//! Calibration of the suite's MUST levels on containerd's own shims (issue 20): the Go runc shim
//! of each release at hand (1.6.20 from Debian's package, 1.7.24 and 2.1.9 unpacked by
//! `ci/setup.sh` into target/containerd/, 2.3.4 from the project's shared/containerd/) runs the
//! whole suite under the mock in that release's dialect. Every must-level failure must be a known deviation listed, with its evidence, in
//! `tests/calibration/known.yaml`; a new one fails the test, and so does a listed one that no
//! longer fails (a stale entry).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Known {
    release: String,
    scenario: String,
    evidence: String,
}

/// (release, dialect, the shim binary).
fn shims() -> Vec<(&'static str, &'static str, PathBuf)> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/containerd");
    vec![
        (
            "1.6.20",
            "1.6",
            PathBuf::from("/usr/bin/containerd-shim-runc-v2"),
        ),
        (
            "1.7.24",
            "1.7",
            target.join("1.7.24/usr/bin/containerd-shim-runc-v2"),
        ),
        (
            "2.1.9",
            "2.0",
            target.join("2.1.9/usr/bin/containerd-shim-runc-v2"),
        ),
        // Built from containerd's release source into the project's shared/ (no Debian package).
        (
            "2.3.4",
            "2.3",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/containerd/2.3.4/containerd-shim-runc-v2"),
        ),
    ]
}

/// Runs the suite against `shim` in `dialect`; returns the names of the failed must scenarios
/// and a one-line summary.
fn must_failures(release: &str, dialect: &str, shim: &Path) -> (BTreeSet<String>, String) {
    let out = Command::new(testkit::built("harness"))
        .args([
            "run",
            "--format",
            "json",
            "--jobs",
            "4",
            "--containerd-version",
        ])
        .arg(dialect)
        .arg("--shim")
        .arg(shim)
        .output()
        .expect("run harness");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{release}: no JSON report ({e}); exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let scenarios = v["scenarios"].as_array().cloned().unwrap_or_default();
    assert!(
        scenarios.len() > 100,
        "{release}: only {} scenarios ran",
        scenarios.len()
    );
    let mut failed = BTreeSet::new();
    let mut reasons = vec![];
    for s in &scenarios {
        if s["level"] == "must" && s["status"] == "failed" {
            let name = s["name"].as_str().unwrap_or_default().to_string();
            reasons.push(format!(
                "  {name}: {}",
                s["reason"].as_str().unwrap_or_default()
            ));
            failed.insert(name);
        }
    }
    let summary = format!(
        "{release} (dialect {dialect}): {} | must failed: {}{}",
        v["summary"],
        failed.len(),
        if reasons.is_empty() {
            String::new()
        } else {
            format!("\n{}", reasons.join("\n"))
        }
    );
    (failed, summary)
}

#[test]
fn go_runc_shims_fail_only_known_must_scenarios_in_their_own_dialect() {
    let known: Vec<Known> = serde_yaml_ng::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/calibration/known.yaml"),
        )
        .expect("tests/calibration/known.yaml"),
    )
    .expect("tests/calibration/known.yaml parses");
    for k in &known {
        assert!(
            k.evidence.len() > 40,
            "{} {}: the evidence says too little",
            k.release,
            k.scenario
        );
    }
    for (release, _, shim) in shims() {
        assert!(
            shim.is_file(),
            "containerd {release}'s runc shim {} is missing: run ci/setup.sh (2.3.4: the project's shared/containerd/2.3.4 beside the checkout)",
            shim.display()
        );
    }
    // The runs at once: the 2.x shim spends most of its time waiting (10 s stdio drains).
    let runs: Vec<_> = shims()
        .into_iter()
        .map(|(release, dialect, shim)| {
            std::thread::spawn(move || (release, must_failures(release, dialect, &shim)))
        })
        .collect();
    let mut problems = vec![];
    for r in runs {
        let (release, (failed, summary)) = r.join().expect("a run panicked");
        eprintln!("{summary}");
        let listed: BTreeSet<String> = known
            .iter()
            .filter(|k| k.release == release)
            .map(|k| k.scenario.clone())
            .collect();
        for new in failed.difference(&listed) {
            problems.push(format!(
                "containerd {release}'s runc shim fails must scenario {new}, not a known deviation"
            ));
        }
        for stale in listed.difference(&failed) {
            problems.push(format!(
                "containerd {release}'s runc shim passes {stale} now: remove it from known.yaml"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
