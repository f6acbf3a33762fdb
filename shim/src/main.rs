//! `containerd-shim-reaper-v2`: entry point of the reaper shim.

fn main() {}
