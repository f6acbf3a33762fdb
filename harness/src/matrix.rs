//! `harness matrix`: which containerd versions a shim works with, and why not the others. For
//! each dialect the shim is started as that version starts it (the [preflight], which reads the
//! answer as that daemon does and words a refusal as it does, e.g. `unsupported shim version
//! (3)`), and when it starts, one minimal lifecycle (`lifecycle/exit-zero`) runs in the dialect,
//! then a second, grouped `start` must answer the address, version and protocol the first did
//! (`grouping/repeated-start-same-answer`, containerd#10888: the daemon dials the second
//! container with what its `start` answered).
//!
//! [preflight]: crate::engine::preflight

use serde::Serialize;

use crate::dialect::Dialect;
use crate::engine::{self, PreflightError, RunConfig};
use crate::report::Status;
use crate::scenario::Loaded;

/// The scenario the matrix runs once the shim starts.
pub const LIFECYCLE: &str = "lifecycle/exit-zero";

/// The scenario the matrix runs once the lifecycle works: a grouped container's `start`
/// answers the same address, version and protocol as the first (a shim that does not
/// group skips it).
pub const REPEATED_START: &str = "grouping/repeated-start-same-answer";

/// The verdict for one containerd version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// It starts and runs the lifecycle.
    Works,
    /// `start`, or the first connection to the address it printed, fails.
    Refused,
    /// It starts, but the lifecycle fails.
    LifecycleFails,
    /// The lifecycle works, but a grouped container's `start` answers differently.
    GroupedStartDiffers,
}

impl Verdict {
    /// The kebab-case name (as in the JSON).
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Works => "works",
            Verdict::Refused => "refused",
            Verdict::LifecycleFails => "lifecycle-fails",
            Verdict::GroupedStartDiffers => "grouped-start-differs",
        }
    }
}

/// One row of the matrix.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Row {
    /// The dialect (`1.6`, `1.7`, `2.0`, `2.3`).
    pub containerd: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Why it is not `works`: the daemon's wording for a refused start, the lifecycle's reason.
    pub reason: Option<String>,
}

/// Runs the matrix for `base.shim` (its environment and rootfs; the dialect is each of
/// [`Dialect::ALL`] in turn) with `lifecycle` as the minimal scenario and `repeated` as the
/// grouped-start check.
pub async fn matrix(base: &RunConfig, lifecycle: &Loaded, repeated: &Loaded) -> Vec<Row> {
    let mut rows = Vec::new();
    for dialect in Dialect::ALL {
        let cfg = RunConfig {
            dialect,
            ..base.clone()
        };
        let containerd = dialect.to_string();
        let row = match engine::preflight(&cfg).await {
            Err(e) => Row {
                containerd,
                verdict: Verdict::Refused,
                reason: Some(match e {
                    PreflightError::Start { kind, cause, .. } => format!("{kind}: {cause}"),
                    other => other.to_string(),
                }),
            },
            Ok(_) => {
                let r = engine::run_scenario(&cfg, lifecycle).await;
                if r.status != Status::Passed {
                    Row {
                        containerd,
                        verdict: Verdict::LifecycleFails,
                        reason: r.reason,
                    }
                } else {
                    let g = engine::run_scenario(&cfg, repeated).await;
                    let differs = matches!(g.status, Status::Failed | Status::Xfailed);
                    Row {
                        containerd,
                        verdict: if differs {
                            Verdict::GroupedStartDiffers
                        } else {
                            Verdict::Works
                        },
                        reason: if differs { g.reason } else { None },
                    }
                }
            }
        };
        rows.push(row);
    }
    rows
}

/// The matrix as a table for people.
pub fn human(shim: &str, rows: &[Row]) -> String {
    let mut out = format!("{shim}\ncontainerd  verdict               reason\n");
    for r in rows {
        out.push_str(&format!(
            "{:<11} {:<21} {}\n",
            r.containerd,
            r.verdict.as_str(),
            r.reason.as_deref().unwrap_or("")
        ));
    }
    out
}
