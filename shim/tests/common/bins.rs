//! The package's built binaries for its tests (target/debug, or the dir named by
//! `REAPER_SHIM_DIR`, e.g. target/release for RSS figures), or a failure naming the build
//! command. Included by the `containerd` and `shim` test binaries alike.
#![allow(dead_code)]

use std::path::PathBuf;

/// target/debug (the test exe lives in target/debug/deps).
pub fn target_debug_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test exe has a parent dir");
    deps.parent().expect("deps has a parent dir").to_path_buf()
}

/// A binary of package `containerd-shim-reaper`, which must exist.
pub fn built_binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("REAPER_SHIM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(target_debug_dir);
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p containerd-shim-reaper`",
        bin.display()
    );
    bin
}

/// The built reaper shim.
pub fn reaper_binary() -> PathBuf {
    built_binary("containerd-shim-reaper-v2")
}
