//! Test support written once for the workspace's test binaries and benches: where the built
//! binaries are (next to the executable that asks), and a failure naming the build command when
//! one is missing.
//!
//! Cargo puts a package's binaries in `target/<profile>/` and its test, bench and example
//! executables one level below (`deps/`, `examples/`), so a test finds the binaries it drives
//! from its own path, whichever `CARGO_TARGET_DIR` and profile it was built with.

use std::path::{Path, PathBuf};

/// The command that builds every binary the tests look for.
pub const BUILD: &str = "cargo build --workspace --bins";

/// The reaper shim's binary name.
pub const REAPER: &str = "containerd-shim-reaper-v2";

/// The deliberately broken shim's binary name (`FAULTY_SHIM` picks its bugs).
pub const FAULTY: &str = "containerd-shim-faulty-v2";

/// The topics of one task's whole life as the shim publishes them, in order: what the
/// lifecycle tests of the harness, the shim and the containerd fixture all expect.
pub const LIFECYCLE_TOPICS: [&str; 4] = [
    "/tasks/create",
    "/tasks/start",
    "/tasks/exit",
    "/tasks/delete",
];

/// The environment variable naming another directory to take the shims from (e.g.
/// `target/release`, for figures of an optimised build): read by [`shim`], [`reaper`] and
/// [`faulty`].
pub const SHIM_DIR_ENV: &str = "REAPER_SHIM_DIR";

/// `target/<profile>`: the directory of the running executable's binaries (the executable's own
/// directory, or its parent when that is `deps` or `examples`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let dir = exe.parent().expect("the executable has a parent dir");
    let nested = matches!(
        dir.file_name().and_then(|n| n.to_str()),
        Some("deps" | "examples")
    );
    let dir = if nested {
        dir.parent().expect("deps has a parent dir")
    } else {
        dir
    };
    dir.to_path_buf()
}

/// `target/`: the directory above the profiles (`debug`, `release`, ...).
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("the profile dir has a parent dir")
        .to_path_buf()
}

/// `name` in the first of `dirs` that has it, else a message naming where it was looked for and
/// `build`, the command that builds it.
pub fn locate(name: &str, dirs: &[PathBuf], build: &str) -> Result<PathBuf, String> {
    if let Some(p) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return Ok(p);
    }
    let looked: Vec<String> = dirs
        .iter()
        .map(|d| d.join(name).display().to_string())
        .collect();
    Err(format!(
        "{} is missing: run `{build}`",
        looked.join(" and ")
    ))
}

/// `name` in `dir`, which must exist: a failure names the build command.
pub fn built_in(dir: &Path, name: &str) -> PathBuf {
    locate(name, &[dir.to_path_buf()], BUILD).unwrap_or_else(|m| panic!("{m}"))
}

/// The workspace binary `name` next to the running executable (`target/<profile>/<name>`),
/// which must exist.
pub fn built(name: &str) -> PathBuf {
    built_in(&profile_dir(), name)
}

/// The shim binary `name`: in `$REAPER_SHIM_DIR` if set, else as [`built`].
pub fn shim(name: &str) -> PathBuf {
    match std::env::var_os(SHIM_DIR_ENV) {
        Some(dir) => built_in(Path::new(&dir), name),
        None => built(name),
    }
}

/// The reaper shim ([`shim`] of [`REAPER`]).
pub fn reaper() -> PathBuf {
    shim(REAPER)
}

/// The faulty shim ([`shim`] of [`FAULTY`]).
pub fn faulty() -> PathBuf {
    shim(FAULTY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_executable_finds_its_profile_dir() {
        // This test runs from target/<profile>/deps.
        let p = profile_dir();
        assert!(p.join("deps").is_dir(), "{}", p.display());
        assert_eq!(target_dir(), p.parent().unwrap());
    }

    #[test]
    fn a_missing_binary_names_the_build_command() {
        let dirs = [
            PathBuf::from("/nonexistent-a"),
            PathBuf::from("/nonexistent-b"),
        ];
        let m = locate("x", &dirs, "cargo build -p y").unwrap_err();
        assert_eq!(
            m,
            "/nonexistent-a/x and /nonexistent-b/x is missing: run `cargo build -p y`"
        );
        let sh = PathBuf::from("/bin");
        assert_eq!(
            locate("sh", &[dirs[0].clone(), sh], BUILD).unwrap(),
            Path::new("/bin/sh")
        );
    }
}
