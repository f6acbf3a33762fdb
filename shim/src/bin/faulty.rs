//! `containerd-shim-faulty-v2`: the reaper shim with deliberate bugs chosen by `FAULTY_SHIM`
//! (a comma list, see `reaper::faults::Faults`), for testing conformance checkers.

fn main() {
    if std::env::args().skip(1).any(|a| a == "start") {
        // For `report-pid=harness`: the server learns who ran `start` (it is reparented later).
        // SAFETY: single-threaded here, before anything reads the environment concurrently.
        unsafe {
            std::env::set_var(
                reaper::faults::STARTER_PID_ENV,
                std::os::unix::process::parent_id().to_string(),
            )
        };
    }
    std::process::exit(reaper::service::main(reaper::faults::Faults::from_env));
}
