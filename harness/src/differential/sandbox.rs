//! The Sandbox steps on containerd's side: the scenario's pod through the daemon's sandbox
//! store and its sandbox controller API with sandboxer `shim` (`plugins/sandbox/controller.go`
//! and `plugins/services/sandbox/controller_service.go` at v2.1.9), which starts the shim for
//! the pod and relays each call to its Sandbox service; the pod's containers join it through
//! their `sandbox_id` (`ShimManager.Start` in core/runtime/v2/shim_manager.go). Each answer is
//! recorded in the engine's JSON view, under the scenario's own pod id.

use std::collections::BTreeMap;
use std::time::Duration;

use containerd_client::services::v1::sandbox::controller_client::ControllerClient;
use containerd_client::services::v1::sandbox::store_client::StoreClient;
use containerd_client::services::v1::sandbox::{
    ControllerCreateRequest, ControllerMetricsRequest, ControllerShutdownRequest,
    ControllerStartRequest, ControllerStatusRequest, ControllerStopRequest, ControllerWaitRequest,
    StoreCreateRequest, StoreDeleteRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::Status;
use containerd_client::types::sandbox::Runtime as SandboxRuntime;
use containerd_client::types::Sandbox;
use serde_json::{json, Value};

use super::compare::MAIN;
use super::daemon::{bounded, json_any, req, ts};
use super::run::{Pod, Run};
use crate::bundle::{Bundle, BundleOptions};
use crate::engine::convert::{
    sandbox_metrics_view, sandbox_status_view, start_sandbox_view, wait_sandbox_view,
};
use crate::scenario::Step;

/// The sandbox controller containerd runs a pod with when its shim serves the Sandbox service.
const SANDBOXER: &str = "shim";

/// Why a PingSandbox step is not sent through the daemon.
const NO_PING: &str =
    "not sent: containerd's sandbox controller API has no Ping (the daemon pings only for itself)";

/// Why a sandbox Platform step is not sent: the controller API declares Platform, but the
/// daemon's gRPC service leaves it unimplemented (`controllerService` in
/// plugins/services/sandbox/controller_service.go at v2.1.9 and v2.3.4).
const NO_PLATFORM: &str =
    "not sent: containerd's sandbox controller service does not implement Platform";

/// The daemon's id for the scenario's pod `main`.
fn pod_id() -> String {
    format!("{MAIN}-pod")
}

/// Whether the containerd `version` (its Version service's string) has the shim sandbox
/// controller: 2.0 and later.
pub(super) fn has_shim_sandboxer(version: &str) -> bool {
    let v = version.trim_start_matches('v');
    v.split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|m| m >= 2)
}

/// Why a Sandbox step is not sent through the daemon, if it is not.
pub(super) fn not_sent(s: &Step) -> Option<&'static str> {
    match s {
        Step::PingSandbox(_) => Some(NO_PING),
        Step::SandboxPlatform(_) => Some(NO_PLATFORM),
        _ => None,
    }
}

impl Run<'_> {
    fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.d.channel.clone())
    }

    /// The pod's sandbox record (store), then the controller's Create: the spec is given, as
    /// CRI gives it (2.1.9's `NewBundle` cannot take a pod without one).
    async fn create_pod(
        &mut self,
        c: &crate::scenario::CreateSandboxStep,
        t: Duration,
    ) -> Result<Value, Status> {
        let ns = self.ns.clone();
        let id = pod_id();
        let spec_bundle = Bundle::create_in_namespace(
            &self.tmp.join("pod-spec"),
            &ns,
            &id,
            self.sc.process.to_oci(false),
            BundleOptions {
                rootfs: self.d.rootfs,
                annotations: BTreeMap::new(),
            },
        )
        .map_err(|e| Status::internal(format!("harness: building the pod's spec: {e}")))?;
        let sandbox = Sandbox {
            sandbox_id: id.clone(),
            runtime: Some(SandboxRuntime {
                name: self.d.runtime.clone(),
                options: None,
            }),
            spec: Some(json_any(
                "types.containerd.io/opencontainers/runtime-spec/1/Spec",
                spec_bundle.spec(),
            )),
            sandboxer: SANDBOXER.into(),
            ..Default::default()
        };
        let mut store = StoreClient::new(self.d.channel.clone());
        bounded(
            t,
            store.create(req(
                StoreCreateRequest {
                    sandbox: Some(sandbox.clone()),
                },
                &ns,
                t,
            )),
        )
        .await
        .map_err(|e| Status::new(e.code(), format!("sandbox store: {}", e.message())))?;
        self.pod = Some(Pod {
            id: id.clone(),
            shut: false,
        });
        let netns = c
            .netns_path
            .as_deref()
            .map(|p| self.script.expand(p))
            .transpose()
            .map_err(Status::invalid_argument)?
            .unwrap_or_default();
        let mut ctl = self.controller();
        bounded(
            t,
            ctl.create(req(
                ControllerCreateRequest {
                    sandbox_id: id,
                    netns_path: netns,
                    annotations: c.annotations.clone().into_iter().collect(),
                    sandbox: Some(sandbox),
                    sandboxer: SANDBOXER.into(),
                    ..Default::default()
                },
                &ns,
                t,
            )),
        )
        .await
        .map(|_| json!({}))
    }

    /// One Sandbox step through the controller: the request as the transcript shows it and
    /// the answer.
    pub(super) async fn sandbox(
        &mut self,
        s: &Step,
        t: Duration,
    ) -> Result<(Value, Result<Value, Status>), String> {
        let Some(given) = s.sandbox_id() else {
            return Err(format!("`{}` is not a Sandbox step", s.name()));
        };
        let ns = self.ns.clone();
        let id = pod_id();
        let sandboxer = SANDBOXER.to_string();
        let scenario_id = match given {
            Some(g) => self.script.expand(g)?,
            None => MAIN.to_string(),
        };
        let request = json!({"sandbox-id": scenario_id});
        let mut ctl = self.controller();
        macro_rules! call {
            ($method:ident, $req:ident { $($field:ident: $value:expr),* }, $view:expr) => {{
                bounded(
                    t,
                    ctl.$method(req(
                        $req { sandbox_id: id.clone(), sandboxer: sandboxer.clone(), $($field: $value,)* },
                        &ns,
                        t,
                    )),
                )
                .await
                .map($view)
            }};
        }
        let r = match s {
            Step::CreateSandbox(c) => self.create_pod(c, t).await,
            Step::StartSandbox(_) => call!(start, ControllerStartRequest {}, |r| {
                start_sandbox_view(r.pid, ts(r.created_at.as_ref()))
            }),
            Step::SandboxStatus(c) => call!(
                status,
                ControllerStatusRequest { verbose: c.verbose },
                |r| sandbox_status_view(
                    // The daemon's pod id is the scenario's pod under another name.
                    if r.sandbox_id == id {
                        scenario_id.clone()
                    } else {
                        r.sandbox_id
                    },
                    r.pid,
                    r.state,
                    ts(r.created_at.as_ref()),
                    ts(r.exited_at.as_ref()),
                )
            ),
            Step::WaitSandbox(_) => call!(wait, ControllerWaitRequest {}, |r| {
                wait_sandbox_view(r.exit_status, ts(r.exited_at.as_ref()))
            }),
            Step::StopSandbox(c) => {
                let secs = c.timeout_secs;
                call!(
                    stop,
                    ControllerStopRequest { timeout_secs: secs },
                    |_| json!({})
                )
            }
            Step::ShutdownSandbox(_) => {
                let r = call!(shutdown, ControllerShutdownRequest {}, |_| json!({}));
                if r.is_ok() {
                    if let Some(p) = &mut self.pod {
                        p.shut = true;
                    }
                }
                r
            }
            Step::SandboxMetrics(_) => call!(metrics, ControllerMetricsRequest {}, |r| {
                let m = r.metrics.unwrap_or_default();
                let data = m.data.map(|a| a.type_url).unwrap_or_default();
                sandbox_metrics_view(m.id, data)
            }),
            other => {
                return Err(format!(
                    "`{}` cannot be sent through containerd's API",
                    other.name()
                ))
            }
        };
        Ok((request, r))
    }

    /// Ends what is left of the pod (as CRI's StopPodSandbox and RemovePodSandbox do: Stop,
    /// Shutdown, then its sandbox record), bounded.
    pub(super) async fn cleanup_pod(&mut self) {
        let Some(pod) = self.pod.take() else { return };
        let ns = self.ns.clone();
        let t = Duration::from_secs(5);
        let sandboxer = SANDBOXER.to_string();
        let mut ctl = self.controller();
        if !pod.shut {
            let _ = bounded(
                t,
                ctl.stop(req(
                    ControllerStopRequest {
                        sandbox_id: pod.id.clone(),
                        timeout_secs: 1,
                        sandboxer: sandboxer.clone(),
                    },
                    &ns,
                    t,
                )),
            )
            .await;
            let _ = bounded(
                t,
                ctl.shutdown(req(
                    ControllerShutdownRequest {
                        sandbox_id: pod.id.clone(),
                        sandboxer,
                    },
                    &ns,
                    t,
                )),
            )
            .await;
        }
        let mut store = StoreClient::new(self.d.channel.clone());
        let _ = bounded(
            t,
            store.delete(req(StoreDeleteRequest { sandbox_id: pod.id }, &ns, t)),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_sandboxer_is_known_from_two_on() {
        for (v, want) in [
            ("v2.1.9", true),
            ("2.3.4", true),
            ("1.7.24~ds1", false),
            ("1.6.20~ds1", false),
            ("", false),
        ] {
            assert_eq!(has_shim_sandboxer(v), want, "{v}");
        }
    }
}
