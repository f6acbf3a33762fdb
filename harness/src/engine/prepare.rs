//! The start of a scenario: the main bundle, the launch of a shim (main or extra) with its
//! grouping annotations, the capability probes that turn into skips, and the pids the shims
//! report (kept for the pid guard).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{
    CheckpointTaskRequest, ExecProcessRequest, PauseRequest, PidsRequest, StatsRequest,
    UpdateTaskRequest,
};
use containerd_shim_protos::sandbox_api::PingRequest;

use super::probe_able;
use super::steps::{Container, Ctx, Reported, ShimSlot, MAIN};
use crate::bundle::{Bundle, BundleOptions};
use crate::client::{RpcResult, TaskClient};
use crate::launch::LaunchOptions;
use crate::pidguard::{Proc, Refused};
use crate::scenario::{Capability, Process, Step};

/// Grouping annotations a shim may honour (runc shim: the first present wins).
const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// Sends the throwaway request that tells whether the shim implements `cap` (an
/// `unimplemented` answer means absent; any other answer, even an error, means present).
async fn probe(client: &TaskClient, cap: Capability, t: Duration) -> RpcResult<()> {
    const ID: &str = "harness-probe";
    macro_rules! ask {
        ($method:ident, $req:ident { $($field:ident),* }) => {
            client
                .$method(
                    $req {
                        id: ID.to_string(),
                        $($field: ID.to_string(),)*
                        ..Default::default()
                    },
                    t,
                )
                .await
                .map(|_| ())
        };
    }
    match cap {
        Capability::Exec => ask!(exec, ExecProcessRequest { exec_id }),
        Capability::Pause => ask!(pause, PauseRequest {}),
        Capability::Stats => ask!(stats, StatsRequest {}),
        Capability::Pids => ask!(pids, PidsRequest {}),
        Capability::Update => ask!(update, UpdateTaskRequest {}),
        Capability::Checkpoint => ask!(checkpoint, CheckpointTaskRequest {}),
        Capability::Sandbox => client
            .ping_sandbox(
                PingRequest {
                    sandbox_id: ID.to_string(),
                    ..Default::default()
                },
                t,
            )
            .await
            .map(|_| ()),
        _ => Ok(()),
    }
}

impl<'a> Ctx<'a> {
    /// Launches the main container's shim and probes the required capabilities.
    pub(super) async fn prepare(&mut self, steps: &[Step]) -> bool {
        let terminal = steps
            .iter()
            .find_map(|s| match s {
                Step::Create(c) if c.container.as_deref().unwrap_or(MAIN) == MAIN => c.terminal,
                _ => None,
            })
            .or(self.process.terminal)
            .unwrap_or(false);
        let process = self.process.clone();
        if self.bootstrap_prepare().is_err() {
            return false;
        }
        let t0 = Instant::now();
        let launched = self.launch(MAIN, &process, terminal).await;
        if let super::bootstrap::Launched::Stop = self.bootstrap_judge(launched, t0) {
            return false;
        }
        let client = self.shims[0].client.clone();
        let t = self.cfg.step_timeout;
        for cap in self.requires.iter().copied() {
            let known = self.cfg.profile.capabilities.get(&cap).copied();
            if known == Some(true) || !probe_able(cap) {
                continue;
            }
            let r = probe(&client, cap, t).await;
            if cap == Capability::Sandbox && r.is_ok() {
                // A Sandbox service that says yes about a pod it never created is a stub, not
                // pods: containerd 1.7's runc shim registers such a `pause` extension
                // (runtime/v2/runc/pause/sandbox.go at v1.7.24: every call succeeds, empty).
                self.script.skip = Some(
                    "requires sandbox: absent (the shim answered PingSandbox of a pod it never created with success: a stub, not a Sandbox service)"
                        .into(),
                );
                return false;
            }
            if let Err(e) = r {
                // A service the shim does not serve at all: Go ttrpc says unimplemented, Rust
                // ttrpc invalid-argument "... service does not exist".
                if e.code_name() == "unimplemented" || e.is_service_absent() {
                    self.script.skip = Some(format!(
                        "requires {cap}: absent (the shim answered {} to a probe)",
                        e.code_name()
                    ));
                    return false;
                }
            }
        }
        true
    }

    /// Creates a container's bundle and launches (or, grouped, re-launches) its shim.
    pub(super) async fn launch(
        &mut self,
        name: &str,
        process: &Process,
        terminal: bool,
    ) -> Result<(), String> {
        let mut annotations = BTreeMap::new();
        if name != MAIN {
            for a in GROUP_ANNOTATIONS {
                annotations.insert(a.to_string(), MAIN.to_string());
            }
        }
        let bundle = Bundle::create_in_namespace(
            &self.tmp.join("bundles"),
            &self.namespace,
            name,
            process.to_oci(terminal),
            BundleOptions {
                rootfs: self.cfg.rootfs,
                annotations,
            },
        )
        .map_err(|e| format!("bundle for `{name}`: {e}"))?;
        let shim = self
            .mock
            .launch(
                &self.cfg.shim,
                &bundle,
                LaunchOptions {
                    extra_env: self.cfg.shim_env.clone(),
                    bootstrap: self.bootstrap_overrides(name),
                    ..LaunchOptions::default()
                },
            )
            .await
            .map_err(|e| format!("launching the shim for `{name}`: {e}"))?;
        self.note_answer(name, &shim.answer().clone());
        let slot = ShimSlot {
            client: shim.client(),
            address: shim.address.clone(),
            pid: shim.pid,
            shim: Some(shim),
            closed: None,
        };
        if name == MAIN {
            if let Some(p) = slot.pid {
                self.script.vars.insert("shim-pid".into(), p.to_string());
            }
        }
        self.shims.push(slot);
        let idx = self.shims.len() - 1;
        self.containers.insert(
            name.to_string(),
            Container {
                id: name.to_string(),
                bundle,
                shim: idx,
                stdio: None,
                execs: BTreeMap::new(),
                cursor: 0,
            },
        );
        Ok(())
    }

    /// The client and id for a step's `container` (an unknown name is sent as an id through the
    /// main shim, to check NotFound answers).
    /// The pid of the server behind shim slot `idx`; a grouped `start` reuses a running server,
    /// whose pid is the first launch's.
    pub(super) fn server_pid(&self, idx: usize) -> Option<i32> {
        let slot = self.shims.get(idx)?;
        slot.pid.or_else(|| {
            self.shims
                .iter()
                .find(|o| o.address == slot.address && o.pid.is_some())
                .and_then(|o| o.pid)
        })
    }

    /// Puts a pid the shim reported for (`container` name, `exec_id`) through the guard and
    /// remembers the verdict. Refusals other than "already gone" (a fast process may have
    /// exited and been reaped before the check) are problems of the scenario.
    pub(super) fn note_reported_pid(&mut self, container: &str, exec_id: &str, pid: u32) {
        let idx = self.containers.get(container).map_or(0, |c| c.shim);
        let checked = Proc::reported(pid, self.server_pid(idx));
        match &checked {
            Ok(p) => self.pids.push(*p),
            Err(Refused::Gone(_) | Refused::ServerUnknown(_)) => {}
            Err(e) => {
                let who = if exec_id.is_empty() {
                    format!("the init of `{container}`")
                } else {
                    format!("exec `{exec_id}` of `{container}`")
                };
                let m = format!("the shim reported pid {pid} for {who}, and {e}");
                if !self.refused_pids.contains(&m) {
                    self.refused_pids.push(m);
                }
            }
        }
        self.proc_pids.insert(
            (container.to_string(), exec_id.to_string()),
            Reported { pid, checked },
        );
    }
}
