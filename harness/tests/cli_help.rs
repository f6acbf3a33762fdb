//! The install story's command-line surface: `--version`, an example in every subcommand's
//! help, `harness completions SHELL` (bash output accepted by `bash -n`), and the reaper's `-v`.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn harness() -> Command {
    Command::cargo_bin("harness").expect("the harness binary (cargo build -p harness)")
}

fn stdout_of(args: &[&str]) -> String {
    let out = harness().args(args).output().expect("run harness");
    assert!(out.status.success(), "harness {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The subcommands `harness --help` lists (without clap's own `help`).
fn subcommands() -> Vec<String> {
    let help = stdout_of(&["--help"]);
    let list = help
        .split("Commands:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no `Commands:` section in:\n{help}"));
    list.lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_subcommand_help_has_an_example() {
    let subs = subcommands();
    for expected in ["run", "list", "schema", "stress", "shell", "completions"] {
        assert!(
            subs.iter().any(|s| s == expected),
            "`{expected}` not listed: {subs:?}"
        );
    }
    let top = stdout_of(&["--help"]);
    assert!(top.contains("Example"), "harness --help:\n{top}");
    for sub in &subs {
        let help = stdout_of(&[sub, "--help"]);
        assert!(
            help.contains("Example"),
            "`harness {sub} --help` has no example:\n{help}"
        );
        assert!(
            help.contains(&format!("harness {sub}")) || sub == "publish",
            "`harness {sub} --help`: the example does not show `harness {sub}`:\n{help}"
        );
    }
}

#[test]
fn version_flag_prints_the_package_version() {
    let v = stdout_of(&["--version"]);
    assert_eq!(v.trim(), format!("harness {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn bash_completions_are_valid_bash_and_know_the_subcommands() {
    let script = stdout_of(&["completions", "bash"]);
    assert!(!script.trim().is_empty(), "empty completion script");
    for word in ["shell", "run", "completions", "--containerd-version"] {
        assert!(
            script.contains(word),
            "`{word}` not in the bash completions"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("harness.bash");
    std::fs::write(&file, &script).expect("write");
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("bash is needed for this test (apt-get install bash)");
    assert!(
        check.status.success(),
        "bash -n rejects the completions: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn completions_for_every_supported_shell_are_non_empty() {
    for sh in ["zsh", "fish", "elvish", "powershell"] {
        let script = stdout_of(&["completions", sh]);
        assert!(
            script.contains("harness") && script.contains("shell"),
            "{sh}: {script}"
        );
    }
}

#[test]
fn completions_for_an_unknown_shell_name_it() {
    let out = harness()
        .args(["completions", "tcsh"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcsh"), "{err}");
}

fn reaper() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("containerd-shim-reaper-v2");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build -p containerd-shim-reaper`",
        p.display()
    );
    p
}

#[test]
fn the_reaper_prints_its_version_with_dash_v() {
    let out = std::process::Command::new(reaper())
        .arg("-v")
        .output()
        .expect("run the reaper");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!(
            "containerd-shim-reaper-v2 {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}
