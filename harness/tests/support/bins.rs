//! The workspace's built binaries for the harness's tests: the harness, the reaper and the
//! faulty shim next to the test executable (target/debug), or a failure naming the build
//! command. Included by each test file that needs it (`#[path = "support/bins.rs"] mod bins;`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `target/<profile>/<name>`, which must exist.
pub fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace --bins`",
        p.display()
    );
    p
}

/// The reaper shim.
pub fn reaper() -> PathBuf {
    built("containerd-shim-reaper-v2")
}

/// The faulty shim (`FAULTY_SHIM` picks its bugs).
pub fn faulty() -> PathBuf {
    built("containerd-shim-faulty-v2")
}
