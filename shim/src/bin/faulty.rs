//! `containerd-shim-faulty-v2`: the reaper shim with deliberate bugs chosen by `FAULTY_SHIM`
//! (a comma list, see `reaper::faults::Faults`), for testing conformance checkers.

use std::io::Write;

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
        if let Ok(f) = reaper::faults::Faults::from_env() {
            if let Some(version) = f.start_json {
                std::process::exit(start_json(version, f.start_protocol.unwrap_or("ttrpc")));
            }
        }
    }
    std::process::exit(reaper::service::main(reaper::faults::Faults::from_env));
}

/// `start-json=N`: the real `start`, answered as a JSON bootstrap of version `N` with
/// `protocol` (left out when empty).
#[allow(clippy::print_stdout)]
fn start_json(version: u32, protocol: &str) -> i32 {
    let flags = match reaper::flags::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            print!("{e}");
            return 2;
        }
    };
    match reaper::service::start_action(&flags, reaper::faults::Faults::from_env) {
        Ok(address) => {
            let mut answer = serde_json::json!({"version": version, "address": address});
            if !protocol.is_empty() {
                answer["protocol"] = protocol.into();
            }
            print!("{answer}");
            let _ = std::io::stdout().flush();
            0
        }
        Err(e) => {
            print!("reaper start: {e}");
            1
        }
    }
}
