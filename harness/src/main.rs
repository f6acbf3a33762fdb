//! `harness`: the command-line front door of the mock containerd and conformance runner.

fn main() {}
