//! Operating the shim: containerd's CRI plugin accepts `deploy/containerd-config.toml`, and the
//! idle server's memory (printed, and bounded by Debian's runc shim).

use std::fs;
use std::time::Duration;

use rstest::rstest;

use crate::common;
use crate::common::Version::{self, V1_6, V1_7, V2_1, V2_3};
use crate::common::{status_kb, Daemon, DaemonOpts, Runtime};
use crate::daemon;

/// A CRI snippet under `deploy/`: the config version it is written for, and the table of the CRI
/// runtime settings in that version (where the probe below goes).
struct Snippet {
    file: &'static str,
    config_version: u32,
    cri_containerd_table: &'static str,
}

/// For containerd 1.6/1.7 (and 2.x, which migrates it).
const SNIPPET_V2: Snippet = Snippet {
    file: "containerd-config.toml",
    config_version: 2,
    cri_containerd_table: "plugins.\"io.containerd.grpc.v1.cri\".containerd",
};

/// For containerd 2.x: the CRI runtime settings moved to their own plugin,
/// `io.containerd.cri.v1.runtime` (`plugins/cri/runtime/plugin.go` at v2.1.9; the version 2 to 3
/// migration moves `containerd.*` there, `configMigration` in the same file).
const SNIPPET_V3: Snippet = Snippet {
    file: "containerd-config-v3.toml",
    config_version: 3,
    cri_containerd_table: "plugins.'io.containerd.cri.v1.runtime'.containerd",
};

impl Snippet {
    fn text(&self) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(self.file);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

/// containerd's config (version `s.config_version`) with the CRI plugin on, `text` merged in,
/// and `default_runtime_name = "reaper"` as a probe: the CRI plugin validates that the default
/// runtime exists in `containerd.runtimes`, so a snippet with a wrong table path fails the plugin.
fn cri_daemon(containerd: Version, s: &Snippet, text: &str) -> Daemon {
    let extra = format!(
        "[{}]\n  default_runtime_name = \"reaper\"\n\n{text}\n",
        s.cri_containerd_table
    );
    Daemon::start(
        containerd,
        Runtime::from_env(),
        "cri",
        DaemonOpts {
            cri: true,
            extra_config: extra,
            config_version: Some(s.config_version),
            ..Default::default()
        },
    )
}

fn cri_plugin_status(d: &Daemon) -> String {
    let out = d.ctr(&["plugins", "ls"]).ok("ctr plugins ls");
    out.stdout
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[0] == "io.containerd.grpc.v1" && f[1] == "cri")
                .then(|| f[f.len() - 1].to_string())
        })
        .unwrap_or_else(|| panic!("no cri plugin in `ctr plugins ls`:\n{}", out.stdout))
}

/// The CRI plugin is up and its logged config has the `reaper` handler of our runtime type.
/// 1.x logs the Go struct (`Start cri plugin with config`, `pkg/cri/cri.go` at v1.7.24); 2.x logs
/// the runtime plugin's config as JSON (`starting cri plugin`, `plugins/cri/runtime/plugin.go`
/// at v2.1.9).
fn assert_reaper_handler_loaded(d: &Daemon) {
    assert_eq!(
        cri_plugin_status(d),
        "ok",
        "log:\n{}",
        common::tail(&d.log_text(), 30)
    );
    let (msg, entry) = if d.version.is_2x() {
        (
            "msg=\"starting cri plugin\"",
            r#"\"reaper\":{\"runtimeType\":\"io.containerd.reaper.v2\""#,
        )
    } else {
        (
            "Start cri plugin with config",
            "Runtimes:map[reaper:{Type:io.containerd.reaper.v2 ",
        )
    };
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains(msg))
        .unwrap_or_else(|| panic!("the CRI plugin did not log its config ({msg}):\n{log}"));
    assert!(
        line.contains(entry),
        "the reaper runtime is not in the CRI config: {line}"
    );
}

/// The deploy snippet for the release's own config format (version 2 for 1.x, version 3 for 2.x)
/// registers the handler, and a misspelt one breaks the plugin.
#[rstest]
fn cri_plugin_accepts_the_deploy_snippet(#[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version) {
    let s = if containerd.is_2x() {
        &SNIPPET_V3
    } else {
        &SNIPPET_V2
    };
    let snippet = s.text();
    let d = cri_daemon(containerd, s, &snippet);
    assert_reaper_handler_loaded(&d);
    drop(d);

    // Negative control: the same snippet with a misspelt handler must break the plugin, so the
    // check above can fail.
    let broken = snippet.replace("runtimes.reaper]", "runtimes.reaper-typo]");
    assert_ne!(broken, snippet, "the snippet has no runtimes.reaper table");
    let d = cri_daemon(containerd, s, &broken);
    assert_eq!(cri_plugin_status(&d), "error");
    assert!(
        d.log_text()
            .contains("no corresponding runtime configured in `containerd.runtimes`"),
        "log:\n{}",
        common::tail(&d.log_text(), 30)
    );
}

/// 2.x still accepts the 1.x snippet in a version 2 config: it migrates the file at start (and
/// says so: `cmd/containerd/server/server.go` at v2.1.9) and the handler is registered (the CRI
/// plugins' `configMigration`, `plugins/cri/runtime/plugin.go` at v2.1.9). 1.x cannot read a version 3 file, so there is no
/// converse case.
#[rstest]
fn containerd_2x_migrates_the_version_2_deploy_snippet(#[values(V2_1)] containerd: Version) {
    let d = cri_daemon(containerd, &SNIPPET_V2, &SNIPPET_V2.text());
    assert_reaper_handler_loaded(&d);
    assert!(
        d.log_text()
            .contains("Configuration migrated from version 2"),
        "no migration warning:\n{}",
        common::tail(&d.log_text(), 30)
    );
}

/// Debian's Go runc shim with one idle task on the same machine (issue 2: 13.2 MB). Our server
/// must stay below it even as a debug build.
const RUNC_SHIM_IDLE_KB: u64 = 13_200;

/// Prints VmRSS (and its anon/file split) of `pid` to stderr; returns VmRSS in kB.
fn report_rss(pid: u32, rt: Runtime, what: &str) -> u64 {
    let rss = status_kb(pid, "VmRSS").expect("VmRSS");
    let anon = status_kb(pid, "RssAnon").unwrap_or(0);
    let file = status_kb(pid, "RssFile").unwrap_or(0);
    // Memory the server alone costs: clean file pages (text) are shared and reclaimable.
    let dirty = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Private_Dirty:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    eprintln!(
        "{} server idle RSS {what}: {rss} kB (anon {anon} kB, file {file} kB, private dirty {dirty} kB); {}",
        rt.name(),
        exe.display()
    );
    rss
}

#[rstest]
fn idle_rss_of_the_server(#[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version) {
    let rt = Runtime::from_env();
    let mut d = daemon(containerd, "rss");
    let (mut run, _) = d.run_bg(&[], "rss1", &["/bin/sleep", "30"]);
    let shims = d.server_pids();
    assert_eq!(shims.len(), 1, "expected one shim server, got {shims:?}");
    std::thread::sleep(Duration::from_millis(300));
    let rss = report_rss(shims[0], rt, "with one idle task");
    let wakeups = idle_wakeups(shims[0], Duration::from_secs(1));
    d.ctr(&["task", "kill", "-s", "SIGKILL", "rss1"])
        .ok("task kill rss1");
    assert_eq!(run.wait(Duration::from_secs(15)).code(), 137);
    if rt != Runtime::Runc {
        assert!(rss < RUNC_SHIM_IDLE_KB, "idle server RSS {rss} kB");
        // An exit-polling or busy-looping server wakes up all the time; ours waits on SIGCHLD.
        assert!(wakeups <= 5, "idle server woke up {wakeups} times in 1 s");
    }
    d.assert_no_leaks();
}

/// Context switches (voluntary + involuntary, all threads) of an idle `pid` over `window`.
fn idle_wakeups(pid: u32, window: Duration) -> u64 {
    let switches = || -> u64 {
        fs::read_dir(format!("/proc/{pid}/task"))
            .map(|rd| {
                rd.filter_map(|t| {
                    let status = fs::read_to_string(t.ok()?.path().join("status")).ok()?;
                    Some(
                        status
                            .lines()
                            .filter(|l| l.contains("ctxt_switches:"))
                            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                            .sum::<u64>(),
                    )
                })
                .sum()
            })
            .unwrap_or(0)
    };
    let before = switches();
    std::thread::sleep(window);
    let n = switches().saturating_sub(before);
    eprintln!("server {pid}: {n} context switches while idle for {window:?}");
    n
}

/// The `start` action run by hand the way containerd runs it (cwd = bundle, `log` FIFO held open
/// read-write, `TTRPC_ADDRESS`), so the server has no task at all; then SIGTERM must end it and
/// remove its socket.
#[rstest]
fn idle_rss_of_a_server_without_tasks(#[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version) {
    use nix::sys::stat::Mode;
    use std::os::unix::fs::OpenOptionsExt;

    let mut d = daemon(containerd, "rss0");
    let bundle = d.dir.path().join("bundle-idle0");
    fs::create_dir_all(bundle.join("rootfs")).expect("bundle");
    fs::write(
        bundle.join("config.json"),
        r#"{"ociVersion":"1.0.2","process":{"args":["/bin/true"],"cwd":"/"},"root":{"path":"rootfs"}}"#,
    )
    .expect("config.json");
    nix::unistd::mkfifo(&bundle.join("log"), Mode::from_bits_truncate(0o600)).expect("mkfifo log");
    let _log = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"))
        .expect("open log fifo");
    d.use_id("idle0");
    let mut cmd = std::process::Command::new(d.shim_binary());
    cmd.args(["-namespace", &d.namespace, "-address"])
        .arg(&d.address)
        .args([
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "idle0",
            "start",
        ])
        .current_dir(&bundle)
        .env("TTRPC_ADDRESS", &d.ttrpc);
    let out = common::run_bounded(cmd, None, Duration::from_secs(10)).ok("shim start");
    let expected = format!("unix://{}", d.socket_paths()[0].display());
    // The reaper answers with the bare address. 2.x's runc shim (`REAPER_CTD_RUNTIME=runc`)
    // answers with the JSON bootstrap `{"version":3,"address":…,"protocol":"ttrpc"}` (`Start` in
    // `cmd/containerd-shim-runc-v2/manager/manager_linux.go`, printed by `pkg/shim/shim.go` at
    // v2.1.9).
    let address = if d.runtime == Runtime::Runc && d.version.is_2x() {
        let reply: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("start printed {out:#?}: {e}"));
        assert_eq!(reply["version"], 3, "start printed {out:#?}");
        assert_eq!(reply["protocol"], "ttrpc", "start printed {out:#?}");
        reply["address"].as_str().unwrap_or_default().to_string()
    } else {
        out.stdout.clone()
    };
    assert_eq!(address, expected, "start printed {out:#?}");
    assert_eq!(out.stderr, "", "start wrote to stderr");
    let shims = d.server_pids();
    assert_eq!(shims.len(), 1, "expected one server, got {shims:?}");
    let pid = shims[0];
    d.track(pid, "idle shim server");
    std::thread::sleep(Duration::from_millis(300));
    let rt = d.runtime;
    let rss = report_rss(pid, rt, "without tasks");
    if rt != Runtime::Runc {
        assert!(rss < RUNC_SHIM_IDLE_KB, "idle server RSS {rss} kB");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the server");
    d.assert_no_leaks();
}
