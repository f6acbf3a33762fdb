//! The Sandbox service's steps (`create-sandbox` ... `sandbox-metrics`): each request as
//! containerd's shim sandbox controller builds it (`plugins/sandbox/controller.go` at v2.1.9:
//! CreateSandbox with the bundle, no rootfs or options for a host pod), sent on the main shim's
//! connection, and the answer in the engine's JSON view.

use std::time::Duration;

use containerd_shim_protos::sandbox_api::{
    CreateSandboxRequest, PingRequest, PlatformRequest, SandboxMetricsRequest,
    SandboxStatusRequest, ShutdownSandboxRequest, StartSandboxRequest, StopSandboxRequest,
    WaitSandboxRequest,
};
use serde_json::{json, Value};

use super::convert::{
    sandbox_metrics_view, sandbox_status_view, start_sandbox_view, ts, wait_sandbox_view,
};
use super::script::Common;
use super::steps::{Ctx, MAIN};
use crate::client::RpcResult;
use crate::scenario::Step;

impl Ctx<'_> {
    /// The sandbox id of a step: its `sandbox-id` (with `${var}`s), else `main`, the id the
    /// main shim was started for.
    fn sandbox_id(&self, given: &Option<String>) -> Result<String, String> {
        match given {
            Some(s) => self.script.expand(s),
            None => Ok(MAIN.to_string()),
        }
    }

    /// Sends one Sandbox step; `None` when `s` is not one.
    pub(super) async fn send_sandbox(
        &mut self,
        s: &Step,
        c: &Common<'_>,
        t: Duration,
    ) -> Result<Option<(Value, RpcResult<Value>)>, String> {
        let (client, _) = self.target(c.container)?;
        macro_rules! call {
            ($step:ident, $method:ident, $req:ident { $($field:ident: $value:expr),* }, $view:expr) => {{
                let sandbox_id = self.sandbox_id(&$step.sandbox_id)?;
                let req = json!({"sandbox-id": sandbox_id});
                let r = client
                    .$method($req { sandbox_id, $($field: $value,)* ..Default::default() }, t)
                    .await;
                (req, r.map($view))
            }};
        }
        Ok(Some(match s {
            Step::CreateSandbox(x) => {
                let sandbox_id = self.sandbox_id(&x.sandbox_id)?;
                let bundle = self
                    .containers
                    .get(MAIN)
                    .map(|m| m.bundle.path().display().to_string())
                    .unwrap_or_default();
                let netns = match &x.netns_path {
                    Some(p) => self.script.expand(p)?,
                    None => String::new(),
                };
                let req =
                    json!({"sandbox-id": sandbox_id, "bundle-path": bundle, "netns-path": netns});
                let r = client
                    .create_sandbox(
                        CreateSandboxRequest {
                            sandbox_id,
                            bundle_path: bundle,
                            netns_path: netns,
                            annotations: x.annotations.clone().into_iter().collect(),
                            ..Default::default()
                        },
                        t,
                    )
                    .await;
                (req, r.map(|_| json!({})))
            }
            Step::StartSandbox(x) => call!(x, start_sandbox, StartSandboxRequest {}, |r| {
                start_sandbox_view(r.pid, ts(r.created_at.as_ref()))
            }),
            Step::SandboxPlatform(x) => call!(x, sandbox_platform, PlatformRequest {}, |r| {
                let p = r.platform.unwrap_or_default();
                json!({"os": p.os, "architecture": p.architecture, "variant": p.variant})
            }),
            Step::SandboxStatus(x) => call!(
                x,
                sandbox_status,
                SandboxStatusRequest { verbose: x.verbose },
                |r| sandbox_status_view(
                    r.sandbox_id,
                    r.pid,
                    r.state,
                    ts(r.created_at.as_ref()),
                    ts(r.exited_at.as_ref()),
                )
            ),
            Step::WaitSandbox(x) => call!(x, wait_sandbox, WaitSandboxRequest {}, |r| {
                wait_sandbox_view(r.exit_status, ts(r.exited_at.as_ref()))
            }),
            Step::StopSandbox(x) => call!(
                x,
                stop_sandbox,
                StopSandboxRequest {
                    timeout_secs: x.timeout_secs
                },
                |_| json!({})
            ),
            Step::PingSandbox(x) => call!(x, ping_sandbox, PingRequest {}, |_| json!({})),
            Step::ShutdownSandbox(x) => {
                call!(
                    x,
                    shutdown_sandbox,
                    ShutdownSandboxRequest {},
                    |_| json!({})
                )
            }
            Step::SandboxMetrics(x) => call!(x, sandbox_metrics, SandboxMetricsRequest {}, |r| {
                let m = r.metrics.unwrap_or_default();
                let data = m
                    .data
                    .as_ref()
                    .map(|a| a.type_url.clone())
                    .unwrap_or_default();
                sandbox_metrics_view(m.id, data)
            }),
            _ => return Ok(None),
        }))
    }
}
