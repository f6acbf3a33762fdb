//! `containerd-shim-reaper-v2`: entry point of the reaper shim (no faults).

fn main() {
    std::process::exit(reaper::service::main(reaper::faults::Faults::none));
}
