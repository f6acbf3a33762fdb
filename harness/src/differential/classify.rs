//! Which scenarios a containerd *client* can express: a derived classification of a scenario's
//! steps. Raw shim-RPC misuse (calls before Create, a second Create of a live task, Connect,
//! Shutdown in mid-scenario, the shim process itself, other containers) cannot be sent through
//! the daemon's Tasks API, so such scenarios are skipped there with the reason this returns.

use crate::scenario::{Scenario, StdioKind, Step};

/// The id every scenario's main container has (as in the mock).
const MAIN: &str = "main";

/// Variables only the mock knows: containerd keeps its bundle path and shim pid to itself.
const MOCK_ONLY_VARS: [&str; 2] = ["${bundle}", "${shim-pid}"];

/// Why the scenario file `text` cannot run through a real containerd's API (a variable only
/// the mock can set), or `None`.
pub fn mock_only_variable(text: &str) -> Option<String> {
    MOCK_ONLY_VARS
        .iter()
        .find(|v| text.contains(*v))
        .map(|v| format!("uses {v}, which containerd does not tell its clients"))
}

/// Why `sc` cannot run through a real containerd's API, or `None` when it can.
pub fn inexpressible(sc: &Scenario) -> Option<String> {
    if sc.bootstrap.is_some() {
        return Some(
            "`bootstrap`: the daemon writes its own BootstrapParams; its API cannot change them"
                .into(),
        );
    }
    let mut st = Walk::default();
    let n = sc.steps.len();
    for (i, s) in sc.steps.iter().enumerate() {
        let trailing = sc.steps[i..]
            .iter()
            .all(|t| matches!(t, Step::Shutdown(_) | Step::Events(_) | Step::Sleep(_)));
        if let Some(why) = st.step(s, trailing && i < n) {
            return Some(format!("step {} ({}): {why}", i + 1, s.name()));
        }
    }
    None
}

#[derive(Default)]
struct Walk {
    /// A task exists (created and not yet deleted).
    live: bool,
    /// A Create was sent at least once.
    created: bool,
    /// The scenario's pod: created through the sandbox controller, then shut down.
    pod_created: bool,
    pod_shut: bool,
}

impl Walk {
    fn step(&mut self, s: &Step, trailing: bool) -> Option<String> {
        if let Some(c) = container_of(s) {
            // `*` (every container's events) is the main one's alone here.
            if c != MAIN && c != "*" {
                return Some(if matches!(s, Step::Create(_)) {
                    format!("container `{c}`: several containers (grouping) are not driven through the daemon")
                } else {
                    format!("container `{c}` has no task: containerd answers it itself, no shim involved")
                });
            }
        }
        match s {
            Step::Create(c) => {
                if c.expect_error.is_some() {
                    return Some("a Create expected to fail is raw RPC misuse".into());
                }
                if self.live {
                    return Some(
                        "a second Create of a live task: containerd refuses it itself, the shim never sees it"
                            .into(),
                    );
                }
                if [c.stdin, c.stdout, c.stderr].contains(&StdioKind::File) {
                    return Some("`file` stdio is not expressed through the daemon".into());
                }
                self.live = true;
                self.created = true;
                None
            }
            Step::Delete(d) if d.exec_id.is_none() => {
                if !self.live {
                    return Some("Delete with no task: containerd answers it itself".into());
                }
                if d.expect_error.is_none() {
                    self.live = false;
                }
                None
            }
            Step::Connect(_) => {
                Some("Connect is containerd's own call; its API cannot send it".into())
            }
            Step::Shutdown(sd) => {
                let plain = sd.expect_error.is_none() && sd.exits.is_none() && !sd.now;
                let in_pod = self.pod_created && sd.expect_error.is_none() && !sd.now;
                if ((trailing && plain) || in_pod) && !self.live {
                    // containerd sends it itself after the task's Delete (1.x, and 2.x below
                    // task API 3), or leaves the shim to its pod (2.x at 3: `shimTask.delete`
                    // in core/runtime/v2/shim.go at v2.1.9).
                    None
                } else {
                    Some(
                        "Shutdown is sent by containerd itself (after Delete); its API cannot send it"
                            .into(),
                    )
                }
            }
            Step::ShimAlive(_) | Step::KillShim(_) | Step::StartAnswer(_) | Step::ShimLog(_) => {
                Some("the shim process belongs to containerd; its API does not expose it".into())
            }
            Step::RestartContainerd(_)
            | Step::EventsDown(_)
            | Step::EventsUp(_)
            | Step::StallStdout(_)
            | Step::KillProcess(_) => Some(format!(
                "`{}` is a fault injected by the mock; the daemon run does not inject it",
                s.name()
            )),
            Step::Stats(_) => {
                Some("containerd answers Metrics, not the shim's Stats message".into())
            }
            Step::Checkpoint(_) => {
                Some("containerd's Checkpoint writes an image, not the shim's call".into())
            }
            Step::Repeat(r) => {
                for s in &r.steps {
                    if let Some(why) = self.step(s, false) {
                        return Some(why);
                    }
                }
                None
            }
            s if s.is_sandbox_call() => self.sandbox_step(s),
            Step::Events(_) | Step::Output(_) | Step::Sleep(_) | Step::WaitResult(_) => None,
            _ if !self.live => Some(if self.created {
                "an RPC after the task was deleted: containerd answers it itself".into()
            } else {
                "an RPC before Create: containerd has no task to send it to".into()
            }),
            _ => None,
        }
    }
}

impl Walk {
    /// A Sandbox step as containerd's sandbox controller API (sandboxer `shim`) sends it
    /// (`plugins/sandbox/controller.go` at v2.1.9): only the scenario's own pod, created once,
    /// and nothing the controller answers without the shim.
    fn sandbox_step(&mut self, s: &Step) -> Option<String> {
        if let Some(Some(id)) = s.sandbox_id() {
            if id != MAIN {
                return Some(format!(
                    "pod `{id}`: only the scenario's own pod is created through the daemon; its sandbox controller answers any other itself"
                ));
            }
        }
        if let Step::CreateSandbox(c) = s {
            if c.expect_error.is_some() {
                return Some("a CreateSandbox expected to fail is raw RPC misuse".into());
            }
            if self.pod_created {
                return Some(
                    "a second CreateSandbox: containerd refuses it itself, the shim never sees it"
                        .into(),
                );
            }
            self.pod_created = true;
            return None;
        }
        if !self.pod_created {
            return Some(
                "a Sandbox call before CreateSandbox: containerd has no pod to send it to".into(),
            );
        }
        if self.pod_shut {
            return Some(
                "a Sandbox call after ShutdownSandbox: containerd's sandbox controller has let the shim go and answers itself"
                    .into(),
            );
        }
        if matches!(s, Step::ShutdownSandbox(_)) {
            self.pod_shut = true;
        }
        None
    }
}

fn container_of(s: &Step) -> Option<&str> {
    match s {
        Step::Create(c) => c.container.as_deref(),
        Step::Start(c) => c.container.as_deref(),
        Step::State(c) => c.container.as_deref(),
        Step::Kill(c) => c.container.as_deref(),
        Step::Wait(c) => c.container.as_deref(),
        Step::Delete(c) => c.container.as_deref(),
        Step::Exec(c) => c.container.as_deref(),
        Step::Pids(c) => c.container.as_deref(),
        Step::Pause(c) => c.container.as_deref(),
        Step::Resume(c) => c.container.as_deref(),
        Step::CloseIo(c) => c.container.as_deref(),
        Step::ResizePty(c) => c.container.as_deref(),
        Step::Update(c) => c.container.as_deref(),
        Step::Events(c) => c.container.as_deref(),
        Step::Output(c) => c.container.as_deref(),
        Step::StartAnswer(c) => c.container.as_deref(),
        Step::ShimLog(c) => c.container.as_deref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(steps: &str) -> Scenario {
        let y = format!("description: t\nprocess: {{args: [true]}}\nsteps:\n{steps}");
        crate::scenario::load_str(std::path::Path::new("t.yaml"), &y).expect("parses")
    }

    #[test]
    fn a_plain_lifecycle_is_expressible() {
        let s =
            sc("  - create: {}\n  - start: {}\n  - wait: {}\n  - delete: {}\n  - shutdown: {}\n");
        assert_eq!(inexpressible(&s), None);
    }

    #[test]
    fn a_pod_with_its_containers_is_expressible() {
        let s = sc("  - create-sandbox: {}\n  - start-sandbox: {}\n  - ping-sandbox: {}\n  - sandbox-platform: {}\n  - create: {}\n  - start: {}\n  - wait: {}\n  - delete: {}\n  - shutdown: {exits: false}\n  - stop-sandbox: {}\n  - shutdown-sandbox: {exits: true}\n");
        assert_eq!(inexpressible(&s), None);
    }

    #[test]
    fn variables_only_the_mock_knows_are_named() {
        let why = mock_only_variable("fields: {bundle: \"${bundle}\"}").unwrap_or_default();
        assert!(why.contains("${bundle}"), "{why}");
        assert_eq!(mock_only_variable("pid: \"${init-pid}\""), None);
    }

    #[test]
    fn raw_misuse_is_named() {
        let cases = [
            ("  - state: {expect-error: not-found}\n", "before Create"),
            (
                "  - create: {}\n  - create: {expect-error: any}\n",
                "Create expected to fail",
            ),
            ("  - create: {}\n  - connect: {}\n", "Connect"),
            (
                "  - create: {}\n  - shutdown: {}\n  - delete: {}\n",
                "Shutdown",
            ),
            ("  - create: {}\n  - kill-shim: {}\n", "shim process"),
            (
                "  - create: {}\n  - kill-process: {}\n",
                "`kill-process` is a fault",
            ),
            (
                "  - create: {}\n  - events-down: {}\n",
                "injected by the mock",
            ),
            (
                "  - create: {}\n  - delete: {}\n  - state: {}\n",
                "after the task was deleted",
            ),
            ("  - create: {container: b}\n", "grouping"),
            ("  - create: {}\n  - state: {container: nope}\n", "no task"),
            ("  - start-sandbox: {}\n", "before CreateSandbox"),
            (
                "  - create-sandbox: {}\n  - shutdown-sandbox: {}\n  - shutdown-sandbox: {}\n",
                "after ShutdownSandbox",
            ),
            ("  - create-sandbox: {sandbox-id: p2}\n", "pod `p2`"),
        ];
        for (steps, want) in cases {
            let why = inexpressible(&sc(steps)).unwrap_or_default();
            assert!(why.contains(want), "{steps:?}: {why:?} lacks {want:?}");
        }
    }
}
