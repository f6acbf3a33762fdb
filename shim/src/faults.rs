//! Deliberate bugs for the `containerd-shim-faulty-v2` test binary. The real shim always uses
//! `Faults::default()` (no fault enabled); only the faulty binary parses `FAULTY_SHIM`.

use crate::error::{Error, Result};

/// The environment variable the faulty binary reads at server start.
pub const ENV: &str = "FAULTY_SHIM";

/// Which bugs are switched on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Queue `/tasks/exit` before `/tasks/start`.
    pub exit_before_start: bool,
    /// Never publish `/tasks/exit`.
    pub no_exit_event: bool,
    /// Report 0 for processes killed by a signal.
    pub sigterm_exit_zero: bool,
    /// Wait returns at once with status 0.
    pub wait_early: bool,
    /// Unsupported RPCs answer NOT_FOUND instead of UNIMPLEMENTED.
    pub notfound_for_unimplemented: bool,
    /// Delete of a running init succeeds.
    pub delete_running_ok: bool,
    /// The process's stdout is not connected.
    pub no_stdout: bool,
    /// Shutdown answers OK but the server never exits.
    pub shutdown_never_exits: bool,
    /// An event whose Forward fails is dropped instead of retried.
    pub no_event_retry: bool,
}

impl Faults {
    /// Parses a comma list such as `exit-before-start,no-stdout`; unknown names are an error.
    pub fn parse(list: &str) -> Result<Faults> {
        let mut f = Faults::default();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "exit-before-start" => f.exit_before_start = true,
                "no-exit-event" => f.no_exit_event = true,
                "sigterm-exit-zero" => f.sigterm_exit_zero = true,
                "wait-early" => f.wait_early = true,
                "notfound-for-unimplemented" => f.notfound_for_unimplemented = true,
                "delete-running-ok" => f.delete_running_ok = true,
                "no-stdout" => f.no_stdout = true,
                "shutdown-never-exits" => f.shutdown_never_exits = true,
                "no-event-retry" => f.no_event_retry = true,
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "{ENV}: unknown fault {other:?}"
                    )))
                }
            }
        }
        Ok(f)
    }

    /// Reads `FAULTY_SHIM` (unset = no faults).
    pub fn from_env() -> Result<Faults> {
        Faults::parse(&std::env::var(ENV).unwrap_or_default())
    }

    /// The real shim: no faults.
    pub fn none() -> Result<Faults> {
        Ok(Faults::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_and_rejects_unknown() {
        let f = Faults::parse("exit-before-start, no-stdout").unwrap();
        assert!(f.exit_before_start && f.no_stdout && !f.wait_early);
        assert_eq!(Faults::parse("").unwrap(), Faults::default());
        let e = Faults::parse("bogus").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
