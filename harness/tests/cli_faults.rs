//! The suite catches real shim bugs: `containerd-shim-faulty-v2` (the reaper with one bug
//! switched on by `FAULTY_SHIM`, passed through `--shim-env`) must fail exactly the scenarios
//! that name that behaviour, each with a message a shim author understands; the fault scenarios
//! (`scenarios/faults/`) among them.

use testkit::faulty;

use assert_cmd::Command;
use serde_json::Value;

/// Runs the named scenarios against the faulty shim with `fault` on; every one must fail and
/// its reason must contain the paired text.
fn assert_caught(fault: &str, expected: &[(&str, &str)]) {
    let mut cmd = Command::cargo_bin("harness").expect("the harness binary");
    cmd.args(["run", "--format", "json", "--jobs", "4", "--shim"])
        .arg(faulty())
        .arg("--shim-env")
        .arg(format!("FAULTY_SHIM={fault}"));
    for (name, _) in expected {
        cmd.arg("--filter").arg(name);
    }
    let out = cmd.output().expect("run harness");
    assert_eq!(
        out.status.code(),
        Some(1),
        "fault {fault} went unnoticed: {out:?}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    for (name, text) in expected {
        let s = v["scenarios"]
            .as_array()
            .expect("scenarios")
            .iter()
            .find(|s| s["name"] == *name)
            .unwrap_or_else(|| panic!("{name} did not run"));
        let reason = s["reason"].as_str().unwrap_or("");
        assert_eq!(s["status"], "failed", "{fault}: {name} should fail: {s}");
        assert!(
            reason.contains(text),
            "{fault}: {name}: `{text}` not in: {reason}"
        );
    }
}

#[test]
fn exit_before_start() {
    assert_caught(
        "exit-before-start",
        &[
            (
                "events/exit-follows-start-instant",
                "event 2 is /tasks/exit, expected /tasks/start",
            ),
            ("race/instant-exits", "no /tasks/exit after /tasks/start"),
        ],
    );
}

#[test]
fn no_exit_event() {
    assert_caught(
        "no-exit-event",
        &[
            (
                "events/exit-follows-start",
                "no /tasks/exit after /tasks/start",
            ),
            (
                "events/lifecycle-exact",
                "got [/tasks/create, /tasks/start, /tasks/delete]",
            ),
        ],
    );
}

#[test]
fn sigterm_exit_zero() {
    assert_caught(
        "sigterm-exit-zero",
        &[
            ("lifecycle/sigterm", "exit-status: expected 143, got 0"),
            ("exec/sigterm", "exit-status: expected 143, got 0"),
        ],
    );
}

#[test]
fn sandbox_wait_early() {
    assert_caught(
        "sandbox-wait-early",
        &[(
            "sandbox/wait-returns-after-stop",
            "WaitSandbox: expected error deadline-exceeded, got success",
        )],
    );
}

#[test]
fn sandbox_exit_with_tasks() {
    assert_caught(
        "sandbox-exit-with-tasks",
        &[
            (
                "sandbox/shim-stays-while-tasks-remain",
                "exited; expected it to keep running",
            ),
            (
                "sandbox/shutdown-idempotent",
                "exited; expected it to keep running",
            ),
        ],
    );
}

#[test]
fn wait_early() {
    assert_caught(
        "wait-early",
        &[
            ("wait/blocks-while-running", "Wait returned early"),
            ("wait/before-start", "Wait returned early"),
        ],
    );
}

#[test]
fn notfound_for_unimplemented() {
    assert_caught(
        "notfound-for-unimplemented",
        &[(
            "errors/unsupported-rpc-is-unimplemented",
            "unsupported RPCs must answer unimplemented",
        )],
    );
}

#[test]
fn delete_running_ok() {
    assert_caught(
        "delete-running-ok",
        &[
            (
                "errors/delete-running",
                "Delete: expected error any, got success",
            ),
            (
                "errors/delete-running-keeps-it-running",
                "Delete: expected error any, got success",
            ),
        ],
    );
}

#[test]
fn no_stdout() {
    assert_caught(
        "no-stdout",
        &[("stdio/stdout", "stdout: expected \"hello\\n\", got \"\"")],
    );
}

#[test]
fn shutdown_never_exits() {
    assert_caught(
        "shutdown-never-exits",
        &[(
            "shutdown/exits-when-empty",
            "is still running 3s later; expected it to exit",
        )],
    );
}

#[test]
fn fault_scenarios_catch_a_lost_exit() {
    assert_caught(
        "no-exit-event",
        &[
            (
                "faults/kill-process-init",
                "no /tasks/exit after /tasks/start",
            ),
            (
                "faults/restart-containerd-exit-during-outage",
                "no /tasks/exit after /tasks/start",
            ),
        ],
    );
}

#[test]
fn fault_scenarios_catch_a_wrong_signal_status() {
    assert_caught(
        "sigterm-exit-zero",
        &[(
            "faults/kill-process-exec",
            "exit-status: expected 143, got 0",
        )],
    );
}

#[test]
fn fault_scenarios_catch_lost_output() {
    assert_caught(
        "no-stdout",
        &[(
            "faults/stall-stdout",
            "stdout: expected \"begin\\n\", got \"\"",
        )],
    );
}

#[test]
fn schema_names_the_fault_steps() {
    let out = Command::cargo_bin("harness")
        .expect("the harness binary")
        .arg("schema")
        .output()
        .expect("run harness schema");
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("schema is JSON");
    let text = v.to_string();
    for step in [
        "restart-containerd",
        "events-down",
        "events-up",
        "stall-stdout",
        "kill-process",
        "downtime",
        "during",
    ] {
        assert!(
            text.contains(&format!("\"{step}\"")),
            "`{step}` not in the schema"
        );
    }
}

#[test]
fn fault_scenarios_catch_events_dropped_instead_of_retried() {
    assert_caught(
        "no-event-retry",
        &[
            ("faults/events-delivered-after-outage", "no /tasks/create"),
            // The scenario waits for the start event before the restart, so the event the
            // broken connection eats is the exit.
            (
                "faults/restart-containerd-running",
                "no /tasks/exit after /tasks/start",
            ),
        ],
    );
}
