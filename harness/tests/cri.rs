//! `harness cri` against real containerd 1.6.20 to 2.3.4 with their CRI plugins (feature
//! `containerd`; root): the reaper and runc handlers pass the smoke test in the default
//! `podsandbox` mode with the harness's own images; a handler whose shim binary is missing fails
//! at `run-pod-sandbox` quoting containerd, and the faulty shim answering SIGTERM with exit 0
//! fails at the stopped container's exit code; an image that cannot be pulled fails at `image`;
//! nothing of the pods remains afterwards.
//! Run: `cargo test -p harness --features containerd --test cri`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rstest::rstest;
use serde_json::Value;

#[path = "../../shim/tests/common/mod.rs"]
mod common;
use common::{run_bounded, Daemon, DaemonOpts, Runtime, Version};

use harness::cri::image::SANDBOX_IMAGE;

/// The handlers registered in every daemon besides `reaper`, which comes from the project's own
/// `deploy/` snippet: the release's own runc shim, a runtime whose binary does not exist, and the
/// faulty reaper with `sigterm-exit-zero`.
const HANDLERS: &[(&str, &str)] = &[
    ("runc", "io.containerd.runc.v2"),
    ("missing", "io.containerd.missing.v2"),
    ("faulty", "io.containerd.faulty.v2"),
];

/// A private containerd `v` with the CRI plugin, our handlers and sandbox image. This machine's
/// root may not lower `oom_score_adj` (runc's init fails writing the sandbox's -998), so the CRI
/// plugin is told to keep it at containerd's own (`restrict_oom_score_adj`, the setting for
/// containerd in a container).
fn cri_daemon(v: Version, name: &str) -> Cri {
    // The shims containerd finds first on its PATH.
    let shims = tempfile::Builder::new()
        .prefix("harness-cri-shims-")
        .tempdir()
        .expect("temp dir");
    let dir = shims.path();
    std::os::unix::fs::symlink(testkit::reaper(), dir.join("containerd-shim-reaper-v2")).unwrap();
    std::os::unix::fs::symlink(
        v.bin_dir().join("containerd-shim-runc-v2"),
        dir.join("containerd-shim-runc-v2"),
    )
    .unwrap();
    let faulty = dir.join("containerd-shim-faulty-v2");
    std::fs::write(
        &faulty,
        format!(
            "#!/bin/sh\nFAULTY_SHIM=sigterm-exit-zero exec {} \"$@\"\n",
            testkit::faulty().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&faulty, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (runtimes, mut extra, cri_keys) = if v.is_2x() {
        (
            "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes",
            format!(
                "[plugins.'io.containerd.cri.v1.runtime']\n  restrict_oom_score_adj = true\n\
                 [plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = \"{SANDBOX_IMAGE}\"\n"
            ),
            String::new(),
        )
    } else {
        (
            "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes",
            String::new(),
            format!("  restrict_oom_score_adj = true\n  sandbox_image = \"{SANDBOX_IMAGE}\"\n"),
        )
    };
    // The `reaper` handler exactly as an operator installs it (docs/guides/kubernetes.md).
    let snippet = if v.is_2x() {
        "containerd-config-v3.toml"
    } else {
        "containerd-config.toml"
    };
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(snippet);
    extra.push_str(
        &std::fs::read_to_string(&deploy).unwrap_or_else(|e| panic!("{}: {e}", deploy.display())),
    );
    for (handler, ty) in HANDLERS {
        extra.push_str(&format!(
            "[{runtimes}.{handler}]\n  runtime_type = \"{ty}\"\n"
        ));
    }
    if v.is_2x() {
        // The reaper as the pod's sandbox controller (its Sandbox service) instead of a pause
        // container run through the Task API (`sandboxer`, `internal/cri/config/config.go` at
        // v2.1.9).
        extra.push_str(&format!(
            "[{runtimes}.reaper-shim]\n  runtime_type = \"io.containerd.reaper.v2\"\n  sandboxer = \"shim\"\n"
        ));
    }
    let d = Daemon::start(
        v,
        Runtime::Reaper,
        name,
        DaemonOpts {
            cri: true,
            cri_keys,
            extra_config: extra,
            shim_dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
    );
    Cri { d, _shims: shims }
}

/// The daemon and its shim dir, removed after it (fields drop in order).
struct Cri {
    d: Daemon,
    _shims: tempfile::TempDir,
}

/// `harness cri` for `handler` against `d`, JSON report; its exit code and report.
fn smoke(d: &Daemon, handler: &str, import: bool, extra: &[&str]) -> (i32, Value, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.arg("cri")
        .arg("--endpoint")
        .arg(format!("unix://{}", d.address.display()))
        .args(["--handler", handler, "--format", "json", "--timeout", "20s"]);
    if import {
        cmd.arg("--import-images").arg("--ctr").arg(d.ctr_path());
    }
    cmd.args(extra);
    let out = run_bounded(cmd, None, Duration::from_secs(120));
    let report = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "harness cri --handler {handler}: no JSON report ({e}); exit {}, stdout {:?}, stderr {:?}\ncontainerd log:\n{}",
            out.code(),
            out.stdout,
            out.stderr,
            common::tail(&d.log_text(), 30)
        )
    });
    (out.code(), report, out.stderr)
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {report:#}"))
}

#[rstest]
fn reaper_and_runc_pass_the_smoke_test(
    #[values(Version::V1_6, Version::V1_7, Version::V2_1, Version::V2_3)] v: Version,
) {
    let cri = cri_daemon(v, "cri-pass");
    let d = &cri.d;
    for (i, handler) in ["reaper", "runc"].into_iter().enumerate() {
        let (code, report, stderr) = smoke(d, handler, i == 0, &[]);
        assert_eq!(
            code,
            0,
            "{handler} on {}: {report:#}\n{stderr}",
            v.release()
        );
        assert_eq!(report["passed"], true);
        assert!(
            report["runtime"].as_str().unwrap().contains(v.release()),
            "{report:#}"
        );
        let exited = step(&report, "container-exited stubborn");
        assert!(
            exited["detail"].as_str().unwrap().contains("exit code 137"),
            "{exited:#}"
        );
        let stop = step(&report, "stop-container stubborn");
        assert!(
            stop["millis"].as_f64().unwrap() >= 900.0,
            "SIGKILL came before the 1 s grace period: {stop:#}"
        );
        let left = step(&report, "nothing-left");
        assert_eq!(left["passed"], true, "{left:#}");
    }
    d.assert_no_leaks();
}

/// In `shim` sandboxer mode the pod is the reaper's: containerd drives its Sandbox service
/// (`plugins/sandbox/controller.go`) and the containers' tasks go to the same server. Only 2.3:
/// before v2.3.0 containerd's shim controller dereferences the nil spec of a host-network pod
/// and the daemon panics (`NewBundle`, `core/runtime/v2/bundle.go` at v2.1.9; fixed by "fix:
/// handle nil spec for hostNetwork containers" in v2.3.0).
#[test]
fn the_reaper_as_the_sandbox_controller_passes() {
    let cri = cri_daemon(Version::V2_3, "cri-shim");
    let d = &cri.d;
    let (code, report, stderr) = smoke(d, "reaper-shim", true, &[]);
    assert_eq!(
        code,
        0,
        "{report:#}\n{stderr}\n{}",
        common::tail(&d.log_text(), 40)
    );
    let log = d.log_text();
    for said in [
        "create sandbox",
        "start sandbox",
        "stop sandbox",
        "shutdown sandbox",
    ] {
        assert!(
            log.contains(said),
            "the reaper never logged `{said}`: its Sandbox service was not used"
        );
    }
    assert_eq!(step(&report, "nothing-left")["passed"], true, "{report:#}");
    d.assert_no_leaks();
}

#[rstest]
fn broken_handlers_fail_naming_the_step(#[values(Version::V1_7, Version::V2_1)] v: Version) {
    let cri = cri_daemon(v, "cri-fail");
    let d = &cri.d;
    let (code, report, stderr) = smoke(d, "missing", true, &[]);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    let failed = step(&report, "run-pod-sandbox");
    assert_eq!(failed["passed"], false);
    let why = failed["detail"].as_str().unwrap();
    // containerd's own words (`core/runtime/v2/binary.go`... `binary not installed`).
    assert!(why.contains("containerd-shim-missing-v2"), "{why}");
    assert_eq!(step(&report, "nothing-left")["passed"], true, "{report:#}");

    // An image that is not there is pulled as the kubelet would; no registry answers here.
    let (code, report, _) = smoke(d, "reaper", false, &["--image", "localhost:1/none:1"]);
    assert_eq!(code, 1, "{report:#}");
    let failed = step(&report, "image");
    assert_eq!(failed["passed"], false, "{report:#}");
    assert!(
        failed["detail"]
            .as_str()
            .unwrap()
            .contains("localhost:1/none:1 is not present; pulling it"),
        "{failed:#}"
    );

    let (code, report, _) = smoke(d, "faulty", false, &[]);
    assert_eq!(code, 1, "{report:#}");
    let failed = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["passed"] == false)
        .unwrap();
    assert_eq!(failed["name"], "container-exited sleeper", "{report:#}");
    assert!(
        failed["detail"].as_str().unwrap().contains("exit code 0"),
        "{failed:#}"
    );
    // The pod was removed anyway.
    assert_eq!(
        step(&report, "remove-pod-sandbox")["passed"],
        true,
        "{report:#}"
    );
    assert_eq!(step(&report, "nothing-left")["passed"], true, "{report:#}");
    d.assert_no_leaks();
}

/// Without an answer at the endpoint the test cannot run: exit 2, naming the endpoint.
#[test]
fn no_containerd_at_the_endpoint_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out = run_bounded(
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
            c.args([
                "cri",
                "--handler",
                "reaper",
                "--timeout",
                "2s",
                "--endpoint",
            ])
            .arg(format!("unix://{}", sock.display()));
            c
        },
        None,
        Duration::from_secs(30),
    );
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(out.stderr.contains(&sock.display().to_string()), "{out:?}");
}
