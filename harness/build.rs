//! Embeds the bundled suite (`../scenarios/**.yaml`) into the harness binary: generates
//! `$OUT_DIR/embedded_scenarios.rs`, one `(relative path, include_str!(absolute path))` entry per
//! file in name order, so an installed or copied harness runs the suite without a checkout.
//! A build.rs rather than a crate such as `include_dir`: cargo's `rerun-if-changed` on the
//! directory rebuilds when a scenario is added or removed (a proc macro is not told about new
//! files), and no dependency is added. A package built without the directory (e.g. from a
//! `cargo package` tarball, which cannot hold files outside the crate) embeds an empty suite.

// cargo reads a build script's directives from its stdout.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let dir = manifest.join("..").join("scenarios");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    if dir.is_dir() {
        walk(&dir, &mut files);
    } else {
        println!(
            "cargo:warning=no {} next to the harness crate: the binary embeds no suite (pass --scenarios DIR)",
            dir.display()
        );
    }
    let mut src = String::from(
        "/// The bundled suite, embedded at build time: (path relative to `scenarios/`, text).\npub static EMBEDDED_SCENARIOS: &[(&str, &str)] = &[\n",
    );
    for f in &files {
        let rel = f
            .strip_prefix(&dir)
            .expect("under the dir")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let abs = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        writeln!(
            src,
            "    ({rel:?}, include_str!({:?})),",
            abs.display().to_string()
        )
        .expect("write to a String");
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("embedded_scenarios.rs"), src).expect("write embedded_scenarios.rs");
}
