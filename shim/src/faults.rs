//! Deliberate bugs for the `containerd-shim-faulty-v2` test binary. The real shim always uses
//! `Faults::default()` (no fault enabled); only the faulty binary parses `FAULTY_SHIM`.
//! Besides protocol bugs there are hostile modes, for testing that a checker contains a shim:
//! lying pids, floods, huge or broken replies, leftover processes, an unkillable-by-SIGTERM server.

use crate::error::{Error, Result};

/// The environment variable the faulty binary reads at server start.
pub const ENV: &str = "FAULTY_SHIM";
/// Set by the faulty binary's `start` action for its server: the pid of the process that ran
/// `start` (the containerd or harness under test), for `report-pid=harness`.
pub const STARTER_PID_ENV: &str = "FAULTY_STARTER_PID";
/// How many events `event-flood` sends.
pub const FLOOD_EVENTS: usize = 100_000;
/// The size of the `big-event` event's payload.
pub const BIG_EVENT_BYTES: usize = 1 << 20;

/// The Task methods a reply fault can name (`stall-reply=State`).
pub const METHODS: [&str; 17] = [
    "State",
    "Create",
    "Start",
    "Delete",
    "Pids",
    "Pause",
    "Resume",
    "Checkpoint",
    "Kill",
    "Exec",
    "ResizePty",
    "CloseIO",
    "Update",
    "Wait",
    "Stats",
    "Connect",
    "Shutdown",
];

/// How the reply to one method is broken (served by a proxy in front of the real server, see
/// [`crate::wirefault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFault {
    /// A frame announcing 64 MiB, and 64 MiB of bytes after it.
    Huge,
    /// The header and half the payload, then nothing more on that connection.
    Stall,
    /// The header and half the payload, then the connection is closed.
    CloseMidReply,
    /// A well-formed reply whose payload is another message type.
    WrongType,
}

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
    /// WaitSandbox returns at once with status 0, before the pod is stopped.
    pub sandbox_wait_early: bool,
    /// ShutdownSandbox ends the server even while containers of the pod remain.
    pub sandbox_exit_with_tasks: bool,
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
    /// Create and Start answer this pid instead of the real one (events and State keep it).
    pub report_pid: Option<u32>,
    /// At the first Create, [`FLOOD_EVENTS`] `/tasks/oom` events on a connection of their own.
    pub event_flood: bool,
    /// At each Create, one `/tasks/oom` event of [`BIG_EVENT_BYTES`].
    pub big_event: bool,
    /// The reply to one Task method is broken.
    pub reply: Option<(ReplyFault, &'static str)>,
    /// The server leaves a grandchild (in a session of its own, still running) when it exits.
    pub grandchild: bool,
    /// The server ignores SIGTERM and never exits after Shutdown.
    pub ignore_sigterm: bool,
    /// `start` answers a JSON bootstrap `{"version": N, "address", "protocol": "ttrpc"}` instead
    /// of the bare address (as containerd 2.x's own shims do with version 3).
    pub start_json: Option<u32>,
    /// `start-protocol=P`: the `protocol` of that JSON bootstrap (default `ttrpc`); empty
    /// (`start-protocol=`) leaves the field out, as a shim that forgets it does.
    pub start_protocol: Option<&'static str>,
}

impl Faults {
    /// Parses a comma list such as `exit-before-start,no-stdout`; unknown names are an error.
    pub fn parse(list: &str) -> Result<Faults> {
        let mut f = Faults::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (item, None),
            };
            let reply = match name {
                "huge-reply" => Some(ReplyFault::Huge),
                "stall-reply" => Some(ReplyFault::Stall),
                "close-mid-reply" => Some(ReplyFault::CloseMidReply),
                "wrong-reply" => Some(ReplyFault::WrongType),
                _ => None,
            };
            if let Some(kind) = reply {
                let method = value.unwrap_or("State");
                let Some(m) = METHODS.iter().find(|m| **m == method) else {
                    return Err(Error::InvalidArgument(format!(
                        "{ENV}: {name}={method:?}: not a Task method (one of {})",
                        METHODS.join(", ")
                    )));
                };
                f.reply = Some((kind, m));
                continue;
            }
            if name == "report-pid" {
                f.report_pid = Some(parse_pid(value)?);
                continue;
            }
            if name == "start-json" {
                let v = value.unwrap_or_default();
                f.start_json = Some(v.parse().map_err(|e| {
                    Error::InvalidArgument(format!("{ENV}: start-json={v:?}: {e}"))
                })?);
                continue;
            }
            if name == "start-protocol" {
                // Parsed once per process; leaking keeps `Faults` `Copy`.
                f.start_protocol = Some(Box::leak(value.unwrap_or_default().into()));
                continue;
            }
            if let Some(v) = value {
                return Err(Error::InvalidArgument(format!(
                    "{ENV}: fault {name:?} takes no value (got {v:?})"
                )));
            }
            match name {
                "exit-before-start" => f.exit_before_start = true,
                "no-exit-event" => f.no_exit_event = true,
                "sigterm-exit-zero" => f.sigterm_exit_zero = true,
                "wait-early" => f.wait_early = true,
                "sandbox-wait-early" => f.sandbox_wait_early = true,
                "sandbox-exit-with-tasks" => f.sandbox_exit_with_tasks = true,
                "notfound-for-unimplemented" => f.notfound_for_unimplemented = true,
                "delete-running-ok" => f.delete_running_ok = true,
                "no-stdout" => f.no_stdout = true,
                "shutdown-never-exits" => f.shutdown_never_exits = true,
                "no-event-retry" => f.no_event_retry = true,
                "event-flood" => f.event_flood = true,
                "big-event" => f.big_event = true,
                "grandchild" => f.grandchild = true,
                "ignore-sigterm" => f.ignore_sigterm = true,
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

/// `report-pid=N` (any u32, 4294967295 included) or `report-pid=harness` (the pid that ran
/// `start`, from [`STARTER_PID_ENV`]).
fn parse_pid(value: Option<&str>) -> Result<u32> {
    let bad = |why: String| Error::InvalidArgument(format!("{ENV}: report-pid: {why}"));
    match value {
        None => Err(bad("needs a value: a number or `harness`".into())),
        Some("harness") => std::env::var(STARTER_PID_ENV)
            .map_err(|_| {
                bad(format!(
                    "`harness` needs {STARTER_PID_ENV} (set by `start`)"
                ))
            })?
            .parse()
            .map_err(|e| bad(format!("{STARTER_PID_ENV}: {e}"))),
        Some(n) => n.parse().map_err(|e| bad(format!("{n:?}: {e}"))),
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

    #[test]
    fn parses_hostile_modes_with_values() {
        let f = Faults::parse("report-pid=4294967295,stall-reply=Create,event-flood").unwrap();
        assert_eq!(f.report_pid, Some(u32::MAX));
        assert_eq!(f.reply, Some((ReplyFault::Stall, "Create")));
        assert!(f.event_flood && !f.big_event);
        assert_eq!(
            Faults::parse("wrong-reply").unwrap().reply,
            Some((ReplyFault::WrongType, "State"))
        );
        assert_eq!(Faults::parse("start-json=3").unwrap().start_json, Some(3));
        assert!(Faults::parse("start-json=x").is_err());
        let f = Faults::parse("start-json=2,start-protocol=").unwrap();
        assert_eq!(f.start_protocol, Some(""));
        assert_eq!(f.start_json, Some(2));
        assert_eq!(
            Faults::parse("start-protocol=grpc").unwrap().start_protocol,
            Some("grpc")
        );
        let f = Faults::parse("grandchild,ignore-sigterm,big-event,huge-reply=Wait").unwrap();
        assert!(f.grandchild && f.ignore_sigterm && f.big_event);
        assert_eq!(f.reply, Some((ReplyFault::Huge, "Wait")));
        for (bad, named) in [
            ("report-pid=-1", "-1"),
            ("report-pid", "needs a value"),
            ("close-mid-reply=Nope", "Nope"),
            ("no-stdout=1", "takes no value"),
        ] {
            let e = Faults::parse(bad).unwrap_err().to_string();
            assert!(e.contains(named), "{bad}: {e}");
        }
    }
}
