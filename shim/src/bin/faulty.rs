//! `containerd-shim-faulty-v2`: the reaper shim with deliberate bugs chosen by `FAULTY_SHIM`
//! (a comma list, see `reaper::faults::Faults`), for testing conformance checkers.

fn main() {
    std::process::exit(reaper::service::main(reaper::faults::Faults::from_env));
}
