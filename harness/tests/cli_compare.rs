//! `harness compare`: the reaper against the faulty shim with one bug switched on
//! (`FAULTY_SHIM=sigterm-exit-zero`, a real behavioural difference) on a small scenario
//! selection and a small stress run; checks compare.json's shape and content and that
//! index.html is self-contained and carries the matrix. Plus the bad-input exits.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

use testkit::built as bin;

const SCENARIOS: &[&str] = &[
    "lifecycle/sigterm",
    "lifecycle/exit-zero",
    "errors/delete-twice",
];
const TASKS: u64 = 12;

fn scenario<'a>(shim: &'a Value, id: &str) -> &'a Value {
    shim["suite"]["scenarios"]
        .as_array()
        .expect("suite.scenarios")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("{id} missing in {}", shim["name"]))
}

#[test]
fn reaper_vs_faulty_writes_json_and_a_self_contained_page() {
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join("cmp");
    // The faulty shim's profile expects the SIGTERM failure: its cell is `xfailed`.
    let profile = out.path().join("faulty.yaml");
    std::fs::write(&profile, "xfail:\n  - lifecycle/sigterm\n").expect("write profile");
    let mut cmd = Command::cargo_bin("harness").expect("the harness binary");
    cmd.arg("compare")
        .arg("--shim")
        .arg(bin("containerd-shim-reaper-v2"))
        .arg("--shim")
        .arg(bin("containerd-shim-faulty-v2"))
        .args(["--shim-env", "2:FAULTY_SHIM=sigterm-exit-zero"])
        .arg("--profile")
        .arg(format!("2:{}", profile.display()))
        .args(["-j", "2", "-n", &TASKS.to_string(), "-p", "4", "--out"])
        .arg(&dir)
        .timeout(std::time::Duration::from_secs(120));
    for s in SCENARIOS {
        cmd.args(["--filter", s]);
    }
    // A filter is a substring match: `lifecycle/sigterm` also selects this one.
    cmd.args(["--skip", "lifecycle/sigterm-trapped"]);
    let res = cmd.output().expect("run harness compare");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(0), "harness compare: {stderr}");

    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("compare.json")).expect("compare.json"),
    )
    .expect("compare.json parses");
    assert_eq!(v["schema_version"], 1);
    let p = &v["provenance"];
    assert_eq!(p["containerd_version"], "2.0");
    assert_eq!(p["scenarios"], SCENARIOS.len());
    assert_eq!(p["stress"]["tasks"], TASKS);
    assert!(p["cpus"].as_u64().unwrap_or(0) >= 1, "{p}");
    assert!(!p["kernel"].as_str().unwrap_or("").is_empty(), "{p}");
    assert!(p["command"].as_array().is_some_and(|c| c.len() > 5), "{p}");

    let shims = v["shims"].as_array().expect("shims");
    assert_eq!(shims.len(), 2);
    let (reaper, faulty) = (&shims[0], &shims[1]);
    assert_eq!(reaper["name"], "containerd-shim-reaper-v2");
    assert_eq!(
        faulty["name"],
        "containerd-shim-faulty-v2 [FAULTY_SHIM=sigterm-exit-zero]"
    );
    assert_eq!(faulty["env"][0], "FAULTY_SHIM=sigterm-exit-zero");
    assert_eq!(faulty["profile"], profile.display().to_string());
    assert!(reaper["profile"].is_null());
    for shim in shims {
        for id in SCENARIOS {
            let s = scenario(shim, id);
            assert_eq!(s["group"], id.split('/').next().unwrap());
            assert_eq!(s["level"], "must");
        }
        // Both shims agree where the fault plays no part.
        assert_eq!(scenario(shim, "lifecycle/exit-zero")["outcome"], "passed");
        assert_eq!(scenario(shim, "errors/delete-twice")["outcome"], "passed");

        let st = &shim["stress"];
        assert_eq!(st["completed"], TASKS, "{}: {st}", shim["name"]);
        assert_eq!(st["failed"], 0, "{}: {st}", shim["name"]);
        assert!(st["tasks_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{st}");
        for op in ["create", "start", "wait", "delete", "lifecycle"] {
            let l = &st["latency"][op];
            assert_eq!(l["count"], TASKS, "{op}: {l}");
            let q = |k: &str| l[k].as_u64().unwrap_or_else(|| panic!("{op}.{k}: {l}"));
            assert!(
                q("p50_us") <= q("p90_us") && q("p90_us") <= q("p99_us"),
                "{l}"
            );
        }
        assert!(st["latency"]["lifecycle"]["p50_us"].as_u64().unwrap() > 0);
        for moment in ["idle", "peak", "end"] {
            let r = &st["resources"][moment];
            assert!(
                r["rss_kib"].as_u64().unwrap_or(0) > 0 && r["fds"].as_u64().unwrap_or(0) > 0,
                "{moment}: {r}"
            );
        }
        assert!(shim["stress_error"].is_null());
    }
    // The difference the fault makes: SIGTERM must give 143.
    assert_eq!(scenario(reaper, "lifecycle/sigterm")["outcome"], "passed");
    let bad = scenario(faulty, "lifecycle/sigterm");
    assert_eq!(bad["outcome"], "xfailed");
    let reason = bad["reason"].as_str().unwrap_or("");
    assert!(reason.contains("143"), "{reason}");
    assert_eq!(reaper["suite"]["failed"], 0);
    assert_eq!(faulty["suite"]["failed"], 0);
    assert_eq!(faulty["suite"]["xfailed"], 1);

    let page = std::fs::read_to_string(dir.join("index.html")).expect("index.html");
    assert!(page.starts_with("<!DOCTYPE html>"));
    for net in [
        "http://", "https://", "src=", "href=", "<script", "@import", "url(",
    ] {
        assert!(!page.contains(net), "index.html contains `{net}`");
    }
    for id in SCENARIOS {
        assert!(
            page.contains(&format!("<td>{id}</td>")),
            "no matrix row {id}"
        );
    }
    assert!(page.contains("<tr class=\"differs\"><td>lifecycle/sigterm</td>"));
    assert_eq!(page.matches("<tr class=\"differs\">").count(), 1);
    assert!(page.contains("containerd-shim-faulty-v2 [FAULTY_SHIM=sigterm-exit-zero]"));
    // The expected failure's cell carries its reason (escaped) as the title.
    let reason_attr = reason
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;");
    assert!(
        page.contains(&format!(
            "<td class=\"xfailed\" title=\"{reason_attr}\">xfailed</td>"
        )),
        "no xfailed cell with the reason"
    );
    assert!(page.matches("<svg").count() >= 3, "plots missing");
}

#[test]
fn bad_input_exits_two_with_the_culprit_named() {
    let reaper = bin("containerd-shim-reaper-v2");
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join("cmp");
    let run = |args: &[&std::ffi::OsStr]| {
        let res = Command::cargo_bin("harness")
            .expect("the harness binary")
            .arg("compare")
            .args(args)
            .arg("--out")
            .arg(&dir)
            .timeout(std::time::Duration::from_secs(30))
            .output()
            .expect("run harness compare");
        (
            res.status.code(),
            String::from_utf8_lossy(&res.stderr).into_owned(),
        )
    };
    let missing = "/nonexistent/containerd-shim-nope-v2";
    let (code, err) = run(&[
        "--shim".as_ref(),
        reaper.as_os_str(),
        "--shim".as_ref(),
        missing.as_ref(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("shim `{missing}`: not found")),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        !dir.exists(),
        "nothing is written for a comparison that cannot run"
    );

    let (code, err) = run(&[
        "--shim".as_ref(),
        reaper.as_os_str(),
        "--shim".as_ref(),
        reaper.as_os_str(),
        "--profile".as_ref(),
        "1:/nonexistent/profile.yaml".as_ref(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--profile") && err.contains("/nonexistent/profile.yaml"),
        "{err}"
    );

    let (code, err) = run(&["--shim".as_ref(), reaper.as_os_str()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("at least two"), "{err}");

    let (code, err) = run(&[
        "--shim".as_ref(),
        reaper.as_os_str(),
        "--shim".as_ref(),
        reaper.as_os_str(),
        "--shim-env".as_ref(),
        "3:FAULTY_SHIM=no-stdout".as_ref(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--shim-env") && err.contains("shim 3"),
        "{err}"
    );

    let (code, err) = run(&[
        "--shim".as_ref(),
        reaper.as_os_str(),
        "--shim".as_ref(),
        reaper.as_os_str(),
        "--filter".as_ref(),
        "no-such-scenario-*".as_ref(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no scenario matches"), "{err}");
}

#[test]
fn reaper_vs_debian_go_runc_shim() {
    const RUNC_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
    for tool in [RUNC_SHIM, "/usr/sbin/runc", "/bin/busybox"] {
        let alt = tool.replace("/usr/sbin/", "/usr/bin/");
        assert!(
            Path::new(tool).exists() || Path::new(&alt).exists(),
            "{tool} is missing: run ci/setup.sh (apt-get install containerd runc busybox-static)"
        );
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "runc needs root: run the tests as root"
    );
    let out = tempfile::tempdir().expect("tempdir");
    let res = Command::cargo_bin("harness")
        .expect("the harness binary")
        .arg("compare")
        .arg("--shim")
        .arg(bin("containerd-shim-reaper-v2"))
        .args(["--shim", RUNC_SHIM, "-j", "2", "-n", "6", "-p", "2"])
        .args([
            "--filter",
            "lifecycle/sigterm",
            "--filter",
            "lifecycle/exit-zero",
        ])
        .args(["--skip", "lifecycle/sigterm-trapped", "--out"])
        .arg(out.path())
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .expect("run harness compare");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(0), "harness compare: {stderr}");
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("compare.json")).expect("compare.json"),
    )
    .expect("compare.json parses");
    let (reaper, runc) = (&v["shims"][0], &v["shims"][1]);
    assert_eq!(runc["name"], "containerd-shim-runc-v2");
    assert!(
        runc["version"]
            .as_str()
            .is_some_and(|s| s.contains("Version")),
        "{}",
        runc["version"]
    );
    for shim in [reaper, runc] {
        assert_eq!(scenario(shim, "lifecycle/exit-zero")["outcome"], "passed");
        assert_eq!(shim["stress"]["completed"], 6, "{}", shim["stress"]);
        assert_eq!(shim["stress"]["failed"], 0, "{}", shim["stress"]);
    }
    // SIGTERM of a pid-namespace init without a handler is ignored, so the scenario needs a
    // host process: run on the reaper, skipped (with the reason) on runc.
    assert_eq!(scenario(reaper, "lifecycle/sigterm")["outcome"], "passed");
    let s = scenario(runc, "lifecycle/sigterm");
    assert_eq!(s["outcome"], "skipped");
    assert!(
        s["reason"].as_str().unwrap_or("").contains("host-process"),
        "{s}"
    );
    let page = std::fs::read_to_string(out.path().join("index.html")).expect("index.html");
    assert!(page.contains("<td class=\"skipped\" title=\"requires host-process"));
}
