//! Dialect fidelity (issue 12): a recording wrapper, installed as `containerd-shim-reaper-v2`,
//! logs what it was started with (argv, the environment its parent added, cwd, the bundle's
//! files, stdin bytes) and then execs the real shim. Each real daemon starts it for a `ctr run`
//! and for a task whose shim is then SIGKILLed, the mock for `lifecycle/exit-zero` and
//! `faults/kill-shim` in the matching dialect; the `start` and `delete` recordings must be equal
//! after named redactions (addresses, ids, namespaces, paths; in 2.3's protobuf stdin the fields
//! that repeat a flag or variable). A doctored recording (one env var, one flag, one stdin byte)
//! shows the comparison can fail.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use rstest::rstest;

use crate::common::Version::{self, V1_6, V1_7, V2_1, V2_3};
use crate::common::{Daemon, DaemonOpts, Runtime};

/// What one `start` of the wrapper saw.
#[derive(Debug, Clone, PartialEq)]
struct Recording {
    argv: Vec<String>,
    /// Variables set or changed relative to the parent's (the daemon's or the harness's) own.
    added_env: BTreeMap<String, String>,
    cwd: String,
    files: Vec<String>,
    stdin: Vec<u8>,
}

/// Writes `dir/containerd-shim-reaper-v2`, recording into `records` and exec'ing the reaper.
fn install_wrapper(dir: &Path, records: &Path) {
    let real = testkit::reaper();
    let script = format!(
        "#!/bin/sh\n\
         # Recording wrapper (shim/tests/containerd/fidelity.rs): what this shim was started with.\n\
         d={records}/$(date +%s%N)-$$\n\
         mkdir -p \"$d\"\n\
         for a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$d/argv\"\n\
         env -0 > \"$d/env\"\n\
         cat /proc/$PPID/environ > \"$d/parent-env\"\n\
         pwd > \"$d/cwd\"\n\
         ls -A > \"$d/files\"\n\
         timeout 5 cat > \"$d/stdin\"\n\
         exec {real} \"$@\" < \"$d/stdin\"\n",
        records = records.display(),
        real = real.display()
    );
    let path = dir.join("containerd-shim-reaper-v2");
    fs::write(&path, script).expect("write wrapper");
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod wrapper");
}

fn env_map(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The recordings of `action` (`start`, `delete`) in `records`, oldest first.
fn recordings(records: &Path, action: &str) -> Vec<Recording> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(records)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .filter_map(|d| {
            let argv: Vec<String> = fs::read_to_string(d.join("argv"))
                .ok()?
                .lines()
                .map(str::to_string)
                .collect();
            if argv.last().map(String::as_str) != Some(action) {
                return None;
            }
            let env = env_map(&fs::read(d.join("env")).ok()?);
            let parent = env_map(&fs::read(d.join("parent-env")).ok()?);
            let added_env = env
                .into_iter()
                // The shell's own bookkeeping, not the parent's doing.
                .filter(|(k, _)| !matches!(k.as_str(), "PWD" | "OLDPWD" | "SHLVL" | "_"))
                .filter(|(k, v)| parent.get(k) != Some(v))
                // A value the parent extended in front (PATH): only what it put there.
                .map(
                    |(k, v)| match parent.get(&k).and_then(|p| v.strip_suffix(p.as_str())) {
                        Some(prefix) if !prefix.is_empty() => (k, format!("{prefix}…")),
                        _ => (k, v),
                    },
                )
                .collect();
            let mut files: Vec<String> = fs::read_to_string(d.join("files"))
                .ok()?
                .lines()
                .map(str::to_string)
                .collect();
            files.sort();
            Some(Recording {
                argv,
                added_env,
                cwd: fs::read_to_string(d.join("cwd")).ok()?.trim().to_string(),
                files,
                stdin: fs::read(d.join("stdin")).ok()?,
            })
        })
        .collect()
}

/// The named redactions: values that differ by nature between two runs (addresses, ids,
/// namespaces, paths) become placeholders; everything else is compared as it is.
fn redacted(r: &Recording) -> Recording {
    let mut out = r.clone();
    let mut it = r.argv.iter().peekable();
    let mut argv = vec![];
    while let Some(a) = it.next() {
        // The daemons run at log level debug here, and containerd passes `-debug` then
        // (runtime/v2/binary.go:68, v1.6.20); the mock passes it when asked to.
        if a == "-debug" {
            continue;
        }
        argv.push(a.clone());
        let placeholder = match a.as_str() {
            "-address" => Some("<grpc-address>"),
            "-publish-binary" => Some("<publish-binary>"),
            "-id" => Some("<id>"),
            "-namespace" => Some("<namespace>"),
            "-bundle" => Some("<bundle>"),
            _ => None,
        };
        if let (Some(p), Some(_)) = (placeholder, it.peek()) {
            it.next();
            argv.push(p.to_string());
        }
    }
    out.argv = argv;
    for (k, v) in out.added_env.iter_mut() {
        let p = match k.as_str() {
            "TTRPC_ADDRESS" => "<ttrpc-address>",
            "GRPC_ADDRESS" => "<grpc-address>",
            "NAMESPACE" => "<namespace>",
            _ => continue,
        };
        *v = p.to_string();
    }
    // The bundle is `<state>/<namespace>/<id>` for both.
    out.cwd = "<bundle>".into();
    out.stdin = redacted_params(r);
    out
}

/// 2.3's stdin, a protobuf `BootstrapParams` (pkg/shim/util.go `Command` v2.3.4), with the
/// fields that repeat a flag or variable of the same recording replaced by that placeholder, and
/// the log level checked against `-debug` (both come from the daemon's level, which the two
/// sides choose differently) and then cleared. Other stdin (empty, an options `Any`) stays.
fn redacted_params(r: &Recording) -> Vec<u8> {
    use protobuf::Message;
    if r.stdin.is_empty() || !r.argv.iter().any(|a| a == "start") {
        return r.stdin.clone();
    }
    let Ok(mut p) = bootstrap::BootstrapParams::parse_from_bytes(&r.stdin) else {
        return r.stdin.clone();
    };
    let flag = |name: &str| {
        r.argv
            .iter()
            .position(|a| a == name)
            .and_then(|i| r.argv.get(i + 1))
            .cloned()
            .unwrap_or_default()
    };
    let env = |k: &str| r.added_env.get(k).cloned().unwrap_or_default();
    let swap = |field: &mut String, same_as: String, placeholder: &str| {
        if *field == same_as {
            *field = placeholder.to_string();
        }
    };
    swap(&mut p.instance_id, flag("-id"), "<id>");
    swap(&mut p.namespace, flag("-namespace"), "<namespace>");
    swap(
        &mut p.containerd_ttrpc_address,
        env("TTRPC_ADDRESS"),
        "<ttrpc-address>",
    );
    swap(
        &mut p.containerd_grpc_address,
        flag("-address"),
        "<grpc-address>",
    );
    swap(
        &mut p.containerd_binary,
        flag("-publish-binary"),
        "<publish-binary>",
    );
    let debug = r.argv.iter().any(|a| a == "-debug");
    assert_eq!(
        p.level().is_debug(),
        debug,
        "log_level {:?} disagrees with -debug ({debug}) in {r:#?}",
        p.level()
    );
    p.log_level = protobuf::EnumOrUnknown::from_i32(0);
    p.write_to_bytes().expect("encode the redacted params")
}

/// What differs between two redacted recordings, named.
fn differences(daemon: &Recording, mock: &Recording) -> Vec<String> {
    let (d, m) = (redacted(daemon), redacted(mock));
    let mut out = vec![];
    if d.argv != m.argv {
        out.push(format!("argv: containerd {:?}, mock {:?}", d.argv, m.argv));
    }
    if d.added_env != m.added_env {
        out.push(format!(
            "environment added: containerd {:?}, mock {:?}",
            d.added_env, m.added_env
        ));
    }
    if d.files != m.files {
        out.push(format!(
            "bundle files: containerd {:?}, mock {:?}",
            d.files, m.files
        ));
    }
    if d.stdin != m.stdin {
        out.push(format!(
            "stdin: containerd {:?}, mock {:?}",
            d.stdin, m.stdin
        ));
    }
    out
}

#[rstest]
fn the_mock_starts_a_shim_as_the_daemon_does(
    #[values(V1_6, V1_7, V2_1, V2_3)] containerd: Version,
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (wrap_d, rec_d, wrap_m, rec_m) = (
        tmp.path().join("wrap-daemon"),
        tmp.path().join("rec-daemon"),
        tmp.path().join("wrap-mock"),
        tmp.path().join("rec-mock"),
    );
    for d in [&wrap_d, &rec_d, &wrap_m, &rec_m] {
        fs::create_dir_all(d).expect("mkdir");
    }
    install_wrapper(&wrap_d, &rec_d);
    install_wrapper(&wrap_m, &rec_m);

    // The real daemon: `ctr run --rm` starts the wrapper once.
    let opts = DaemonOpts {
        shim_dir: Some(wrap_d.clone()),
        ..Default::default()
    };
    let mut d = Daemon::start(containerd, Runtime::Reaper, "fidelity", opts);
    let out = d.run_rm(&[], "fid", &["/bin/echo", "hi"], None);
    assert_eq!(out.stdout, "hi\n", "{out:#?}");
    // A shim that dies makes containerd run its `delete` action (`cleanupAfterDeadShim`).
    let (mut bg, _) = d.run_bg(&[], "fidd", &["/bin/sleep", "30"]);
    let servers = d.server_pids();
    assert_eq!(servers.len(), 1, "{servers:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(servers[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the shim");
    let _ = bg.wait(std::time::Duration::from_secs(20));
    d.assert_no_leaks();
    drop(d);

    // The mock in the matching dialect: a lifecycle, and a shim killed under a running task.
    // One at a time, in the daemon's order. containerd runs the `delete` action after a normal
    // lifecycle too, as the mock does (two of each action).
    for scenario in ["lifecycle/exit-zero", "faults/kill-shim"] {
        let run = std::process::Command::new(testkit::built("harness"))
            .args(["run", "--no-preflight", "--filter", scenario])
            .args(["--containerd-version", containerd.dialect(), "--shim"])
            .arg(wrap_m.join("containerd-shim-reaper-v2"))
            .output()
            .expect("harness run");
        assert_eq!(run.status.code(), Some(0), "{scenario}: {run:?}");
    }

    let mut problems = vec![];
    for action in ["start", "delete"] {
        let (daemon, mock) = (recordings(&rec_d, action), recordings(&rec_m, action));
        assert_eq!(daemon.len(), 2, "containerd's {action}s: {daemon:#?}");
        assert_eq!(mock.len(), 2, "the mock's {action}s: {mock:#?}");
        for (dr, mr) in daemon.iter().zip(&mock) {
            problems.extend(
                differences(dr, mr)
                    .into_iter()
                    .map(|p| format!("{action}: {p}")),
            );
        }
    }
    assert!(
        problems.is_empty(),
        "containerd {} vs the mock (dialect {}):\n{}",
        containerd.release(),
        containerd.dialect(),
        problems.join("\n")
    );
    let (daemon, mock) = (recordings(&rec_d, "start"), recordings(&rec_m, "start"));
    assert!(daemon[0].cwd.ends_with("/fid"), "{:?}", daemon[0].cwd);

    // The comparison fails on one differing env var, flag or stdin byte.
    let mut env = mock[0].clone();
    env.added_env.insert("EXTRA".into(), "1".into());
    let mut flag = mock[0].clone();
    flag.argv.insert(0, "-socket-dir".into());
    let mut byte = mock[0].clone();
    byte.stdin.push(0);
    for (what, doctored) in [("env", env), ("flag", flag), ("stdin", byte)] {
        assert_eq!(
            differences(&daemon[0], &doctored).len(),
            1,
            "a doctored {what} went unnoticed"
        );
    }
}
