//! The install story's command-line surface: `--version`, an example in every subcommand's
//! help, `harness completions SHELL` (bash output accepted by `bash -n`), and the reaper's `-v`.

use testkit::reaper;

use std::path::Path;

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

/// `cargo` as the test runner got it (`$CARGO`), else on PATH.
fn cargo() -> std::process::Command {
    let mut c =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    c
}

#[test]
fn installable_packages_have_full_crate_metadata() {
    let out = cargo()
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    for name in ["harness", "containerd-shim-reaper"] {
        let pkg = meta["packages"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("package {name} not in the workspace"));
        for key in [
            "description",
            "license",
            "repository",
            "readme",
            "homepage",
            "rust_version",
        ] {
            let v = pkg[key].as_str().unwrap_or("");
            assert!(!v.is_empty(), "{name}: `{key}` is not set");
        }
        for key in ["keywords", "categories"] {
            let n = pkg[key].as_array().map(Vec::len).unwrap_or(0);
            assert!(
                (1..=5).contains(&n),
                "{name}: {n} {key} (crates.io takes 1 to 5)"
            );
        }
        let readme = pkg["readme"].as_str().unwrap_or("");
        let dir = Path::new(pkg["manifest_path"].as_str().unwrap_or("/"))
            .parent()
            .expect("package dir")
            .to_path_buf();
        assert!(
            dir.join(readme).is_file(),
            "{name}: readme {readme} is missing in {}",
            dir.display()
        );
        let bins: Vec<&str> = pkg["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
            })
            .filter_map(|t| t["name"].as_str())
            .collect();
        let want = if name == "harness" {
            "harness"
        } else {
            "containerd-shim-reaper-v2"
        };
        assert!(
            bins.contains(&want),
            "{name}: no `{want}` binary to install: {bins:?}"
        );
    }
}

#[test]
fn packaged_crates_carry_their_readme() {
    for pkg in ["harness", "containerd-shim-reaper"] {
        let out = cargo()
            .args(["package", "--list", "--allow-dirty", "--offline", "-p", pkg])
            .output()
            .expect("run cargo package --list");
        assert!(
            out.status.success(),
            "cargo package --list -p {pkg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let files = String::from_utf8_lossy(&out.stdout);
        for f in ["README.md", "Cargo.toml", "src/main.rs"] {
            assert!(
                files.lines().any(|l| l == f),
                "{pkg}: {f} not packaged:\n{files}"
            );
        }
    }
}
