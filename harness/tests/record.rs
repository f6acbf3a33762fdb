//! The recording proxy shim under real containerd daemons (root): `ctr run --rm` of echo, and a
//! detached task with an exec, a kill and a delete, recorded through `containerd-shim-record-v2`
//! in front of the reaper and of the release's Go runc shim; `harness record --to-scenario` makes
//! scenarios of them that pass against the same shim under the mock and fail against the faulty
//! shim with a matching fault; the proxy leaves no socket, process or map file behind.
//! Run: `cargo test -p harness --test record`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rstest::rstest;

#[path = "../../shim/tests/common/mod.rs"]
mod common;
use common::{poll, run_bounded, Daemon, DaemonOpts, Out, Runtime, Version};

const RUNTIME: &str = "io.containerd.record.v2";

/// A private daemon whose PATH has the proxy (in front of `real`), recording into `rec/`.
struct Recording {
    d: Daemon,
    shims: tempfile::TempDir,
    real: PathBuf,
}

impl Recording {
    fn start(v: Version, runtime: Runtime, name: &str) -> Recording {
        let shims = tempfile::Builder::new()
            .prefix("harness-record-")
            .tempdir()
            .expect("temp dir");
        let real = match runtime {
            Runtime::Runc => v.bin_dir().join("containerd-shim-runc-v2"),
            _ => testkit::reaper(),
        };
        let rec = shims.path().join("rec");
        let proxy = shims.path().join("containerd-shim-record-v2");
        std::fs::write(
            &proxy,
            format!(
                "#!/bin/sh\nRECORD_SHIM={} RECORD_DIR={} exec {} \"$@\"\n",
                real.display(),
                rec.display(),
                env!("CARGO_BIN_EXE_containerd-shim-record-v2")
            ),
        )
        .unwrap();
        std::fs::set_permissions(&proxy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let d = Daemon::start(
            v,
            runtime,
            name,
            DaemonOpts {
                shim_dir: Some(shims.path().to_path_buf()),
                ..Default::default()
            },
        );
        Recording { d, shims, real }
    }

    fn rec_dir(&self) -> PathBuf {
        self.shims.path().join("rec")
    }

    /// `ctr <args>` with the proxy as the runtime and our FIFO dir and rootfs.
    fn ctr_run(&mut self, opts: &[&str], id: &str, cmd: &[&str]) -> Out {
        self.d.use_id(id);
        let fifo = self.d.dir.path().join("fifo").display().to_string();
        let rootfs = self.d.rootfs.display().to_string();
        // `--rootfs` is a switch: the rootfs dir is the first positional argument.
        let mut args = vec!["run", "--fifo-dir", &fifo, "--runtime", RUNTIME];
        args.extend(opts);
        args.extend(["--rootfs", &rootfs, id]);
        args.extend(cmd);
        self.d.ctr(&args)
    }

    /// The recording of `id` in the daemon's namespace.
    fn session(&self, id: &str) -> PathBuf {
        let dir = self.rec_dir().join(&self.d.namespace).join(id);
        assert!(
            dir.join("session.jsonl").is_file(),
            "no recording at {}",
            dir.display()
        );
        dir
    }

    /// The task and events sockets of the running proxy server (from its command line).
    fn proxy_sockets(&self) -> Vec<PathBuf> {
        let rec = self.rec_dir().display().to_string();
        harness::procfs::all_processes()
            .into_iter()
            .map(|p| harness::procfs::argv(p.pid))
            .find(|a| {
                a.get(1).map(String::as_str) == Some("__record-serve")
                    && a.iter().any(|x| x.contains(&rec))
            })
            .map(|a| a[5..7].iter().map(PathBuf::from).collect())
            .unwrap_or_default()
    }

    /// The proxy is gone: its map files removed, no process naming the recording dir.
    fn assert_proxy_gone(&self) {
        let rec = self.rec_dir().display().to_string();
        let gone = poll(Duration::from_secs(5), || {
            let maps = std::fs::read_dir(self.rec_dir().join(".proxies"))
                .map(|d| d.count())
                .unwrap_or(0);
            let procs = harness::procfs::all_processes()
                .into_iter()
                .filter(|p| {
                    harness::procfs::argv(p.pid)
                        .iter()
                        .any(|a| a.contains(&rec))
                })
                .count();
            (maps == 0 && procs == 0).then_some(())
        });
        assert!(gone.is_some(), "the proxy outlived its shim ({rec})");
    }
}

/// `harness record --to-scenario DIR OUT`, then `harness run` of it against `shim` in the
/// dialect of `v` (with `FAULTY_SHIM=fault` when given); the run's exit code and output.
fn replay(session: &Path, v: Version, shim: &Path, fault: Option<&str>) -> (i32, String) {
    let out = session.join("replay.yaml");
    let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
    c.args(["record", "--to-scenario"]).arg(session).arg(&out);
    let made = run_bounded(c, None, Duration::from_secs(30));
    assert_eq!(made.code(), 0, "record --to-scenario: {made:?}");
    let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
    c.args(["run", "--scenarios"])
        .arg(&out)
        .arg("--shim")
        .arg(shim)
        // Under the mock as the recording's containerd started the shim.
        .args(["--containerd-version", v.dialect()]);
    if let Some(f) = fault {
        c.args(["--shim-env", &format!("FAULTY_SHIM={f}")]);
    }
    let run = run_bounded(c, None, Duration::from_secs(120));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    (
        run.code(),
        format!("{}{}\n--- scenario:\n{text}", run.stdout, run.stderr),
    )
}

#[rstest]
#[case::reaper_1_6(Version::V1_6, Runtime::Reaper)]
#[case::reaper_1_7(Version::V1_7, Runtime::Reaper)]
#[case::reaper_2_1(Version::V2_1, Runtime::Reaper)]
#[case::reaper_2_3(Version::V2_3, Runtime::Reaper)]
#[case::runc_2_1(Version::V2_1, Runtime::Runc)]
fn ctr_run_rm_of_echo_replays(#[case] v: Version, #[case] runtime: Runtime) {
    let mut r = Recording::start(v, runtime, "record-echo");
    let out = r.ctr_run(&["--rm"], "echo", &["/bin/echo", "hello recorded"]);
    assert_eq!(out.code(), 0, "{out:?}\n{}", r.d.log_text());
    assert_eq!(out.stdout, "hello recorded\n");
    let session = r.session("echo");
    r.assert_proxy_gone();
    r.d.assert_no_leaks();
    let (code, text) = replay(&session, v, &r.real, None);
    assert_eq!(code, 0, "{text}");
    let faulty = testkit::faulty();
    let (code, text) = replay(&session, v, &faulty, Some("exit-before-start"));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no /tasks/exit after /tasks/start"), "{text}");
}

#[rstest]
fn a_detached_task_with_exec_kill_and_delete_replays(
    #[values(Runtime::Reaper, Runtime::Runc)] runtime: Runtime,
) {
    let v = Version::V2_1;
    let mut r = Recording::start(v, runtime, "record-detached");
    let out = r.ctr_run(&["-d"], "det", &["/bin/sleep", "300"]);
    assert_eq!(out.code(), 0, "{out:?}");
    // The proxy server while the task runs: its sockets must be gone at the end.
    let sockets = r.proxy_sockets();
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    assert!(sockets.iter().all(|s| s.exists()), "{sockets:?}");
    let exec = r.d.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "det",
        "/bin/echo",
        "from the exec",
    ]);
    assert_eq!(exec.code(), 0, "{exec:?}");
    assert_eq!(exec.stdout, "from the exec\n");
    r.d.ctr(&["task", "kill", "-s", "SIGKILL", "det"])
        .ok("kill");
    let stopped = poll(Duration::from_secs(10), || {
        r.d.task_status("det").filter(|(_, s)| s == "STOPPED")
    });
    assert!(stopped.is_some(), "det not STOPPED after SIGKILL");
    r.d.ctr(&["task", "delete", "det"]).ok("task delete");
    r.d.ctr(&["container", "delete", "det"])
        .ok("container delete");
    let session = r.session("det");
    r.assert_proxy_gone();
    for s in &sockets {
        assert!(!s.exists(), "the proxy left {}", s.display());
    }
    r.d.assert_no_leaks();
    let (code, text) = replay(&session, v, &r.real, None);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("exec-id: e1"), "{text}");
    assert!(text.contains("signal: 9"), "{text}");
    if runtime == Runtime::Reaper {
        let faulty = testkit::faulty();
        let (code, text) = replay(&session, v, &faulty, Some("no-exit-event"));
        assert_eq!(code, 1, "{text}");
        assert!(text.contains("/tasks/exit"), "{text}");
    }
}
