//! `harness cri`: a smoke test of one runtime handler through the kubelet's CRI API against a
//! real containerd, its configuration, the report of its steps (human, JSON, JUnit) and its exit
//! code. The steps themselves are in `smoke.rs` (feature `containerd`); the local images in
//! [`image`].

#[cfg(feature = "containerd")]
mod checks;
pub mod image;
#[cfg(feature = "containerd")]
mod smoke;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

#[cfg(feature = "containerd")]
pub use smoke::run_blocking;

/// What to test and how.
#[derive(Debug, Clone)]
pub struct CriConfig {
    /// containerd's socket (the CRI endpoint, `unix://` stripped).
    pub socket: PathBuf,
    /// The runtime handler (`RuntimeClass.handler`, a runtime table of containerd's CRI config).
    pub handler: String,
    /// Import the harness's images first, with this `ctr`.
    pub import_with: Option<PathBuf>,
    /// The image the containers run (default [`image::WORKLOAD_IMAGE`]).
    pub image: String,
    /// Bound on each RPC and each wait for a state.
    pub timeout: Duration,
    /// The grace period given to StopContainer of the process that ignores SIGTERM.
    pub grace: Duration,
}

/// One checked step: its name (`run-pod-sandbox`, `container-status echo`, ...), how long it
/// took, and what was seen (or why it failed, with containerd's own error quoted).
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// The step's name.
    pub name: String,
    /// Whether its checks held.
    pub passed: bool,
    /// Milliseconds from the request to the last check.
    pub millis: f64,
    /// What was seen when it passed, what went wrong when it failed.
    pub detail: String,
}

impl StepResult {
    /// A step that passed, begun at `t0`.
    pub fn passed(name: &str, t0: std::time::Instant, detail: String) -> StepResult {
        StepResult {
            name: name.to_string(),
            passed: true,
            millis: t0.elapsed().as_secs_f64() * 1000.0,
            detail,
        }
    }
}

/// The whole smoke test's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CriReport {
    /// The endpoint as given.
    pub endpoint: String,
    /// The handler tested.
    pub handler: String,
    /// `RuntimeName RuntimeVersion (CRI RuntimeApiVersion)` from the Version RPC.
    pub runtime: String,
    /// The steps in the order they ran; the sequence stops at the first failure, then the
    /// clean-up steps run.
    pub steps: Vec<StepResult>,
}

impl CriReport {
    /// Whether every step passed.
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.passed)
    }

    /// 0 when every step passed, 1 when one failed.
    pub fn exit_code(&self) -> u8 {
        if self.passed() {
            0
        } else {
            1
        }
    }

    /// The first failed step.
    pub fn first_failure(&self) -> Option<&StepResult> {
        self.steps.iter().find(|s| !s.passed)
    }

    /// One line per step and a verdict.
    pub fn human(&self) -> String {
        let mut out = format!(
            "cri smoke test of handler `{}` at {} ({})\n",
            self.handler, self.endpoint, self.runtime
        );
        let width = self.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &self.steps {
            let tag = if s.passed { "ok  " } else { "FAIL" };
            out.push_str(&format!(
                "  {tag}  {:width$}  {:>9.1} ms  {}\n",
                s.name, s.millis, s.detail
            ));
        }
        out.push_str(&self.summary_line());
        out
    }

    /// The verdict line.
    pub fn summary_line(&self) -> String {
        let total: f64 = self.steps.iter().map(|s| s.millis).sum();
        match self.first_failure() {
            None => format!(
                "cri: handler `{}` passed {} steps in {:.0} ms\n",
                self.handler,
                self.steps.len(),
                total
            ),
            Some(f) => format!(
                "cri: handler `{}` FAILED at `{}`: {}\n",
                self.handler, f.name, f.detail
            ),
        }
    }

    /// The report as JSON (`endpoint`, `handler`, `runtime`, `passed`, `steps`).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("the report serialises");
        v["passed"] = self.passed().into();
        serde_json::to_string_pretty(&v).expect("a JSON value serialises") + "\n"
    }

    /// The report as JUnit XML: one test suite, one test case per step.
    pub fn junit(&self) -> String {
        use crate::report::xml_escape as x;
        let failures = self.steps.iter().filter(|s| !s.passed).count();
        let total: f64 = self.steps.iter().map(|s| s.millis).sum();
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">\n  <testsuite name=\"cri/{}\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">\n",
            self.steps.len(),
            total / 1000.0,
            x(&self.handler),
            self.steps.len(),
            total / 1000.0
        );
        for s in &self.steps {
            out.push_str(&format!(
                "    <testcase classname=\"cri.{}\" name=\"{}\" time=\"{:.3}\"",
                x(&self.handler),
                x(&s.name),
                s.millis / 1000.0
            ));
            if s.passed {
                out.push_str(&format!(
                    ">\n      <system-out>{}</system-out>\n    </testcase>\n",
                    x(&s.detail)
                ));
            } else {
                out.push_str(&format!(
                    ">\n      <failure message=\"{}\"/>\n    </testcase>\n",
                    x(&s.detail)
                ));
            }
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
}

/// The socket path of a CRI endpoint: `unix:///run/containerd/containerd.sock` or a bare path.
pub fn endpoint_socket(endpoint: &str) -> Result<PathBuf, String> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if endpoint.contains("://") && !endpoint.starts_with("unix://") {
        return Err(format!(
            "--endpoint {endpoint:?}: only unix:// endpoints are supported"
        ));
    }
    if !path.starts_with('/') {
        return Err(format!(
            "--endpoint {endpoint:?}: expected an absolute socket path (unix:///PATH)"
        ));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(fail_at: Option<usize>) -> CriReport {
        let steps = ["version", "run-pod-sandbox", "create-container echo"]
            .iter()
            .enumerate()
            .map(|(i, n)| StepResult {
                name: n.to_string(),
                passed: Some(i) != fail_at,
                millis: 1.5,
                detail: if Some(i) == fail_at {
                    "Unknown: no runtime for \"missing\" is configured".into()
                } else {
                    "seen <ok>".into()
                },
            })
            .collect();
        CriReport {
            endpoint: "unix:///c.sock".into(),
            handler: "reaper".into(),
            runtime: "containerd v2.1.9 (CRI v1)".into(),
            steps,
        }
    }

    #[test]
    fn a_failed_step_is_named_in_the_verdict_and_the_exit_code_is_one() {
        let r = report(Some(1));
        assert_eq!(r.exit_code(), 1);
        let line = r.summary_line();
        assert!(line.contains("FAILED at `run-pod-sandbox`"), "{line}");
        assert!(line.contains("no runtime for \"missing\""), "{line}");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["passed"], false);
        assert_eq!(v["steps"][1]["passed"], false);
        let xml = r.junit();
        assert!(xml.contains("failures=\"1\""), "{xml}");
        assert!(xml.contains("&quot;missing&quot;"), "{xml}");
        assert!(xml.contains("seen &lt;ok&gt;"), "{xml}");
    }

    #[test]
    fn all_passed_exits_zero() {
        let r = report(None);
        assert_eq!(r.exit_code(), 0);
        assert!(r.summary_line().contains("passed 3 steps"));
        assert!(r.human().contains("ok    run-pod-sandbox"), "{}", r.human());
    }

    #[test]
    fn endpoints_are_unix_sockets_by_absolute_path() {
        assert_eq!(
            endpoint_socket("unix:///run/c.sock").unwrap(),
            PathBuf::from("/run/c.sock")
        );
        assert_eq!(
            endpoint_socket("/run/c.sock").unwrap(),
            PathBuf::from("/run/c.sock")
        );
        assert!(endpoint_socket("tcp://1.2.3.4:1")
            .unwrap_err()
            .contains("only unix://"));
        assert!(endpoint_socket("unix://rel.sock")
            .unwrap_err()
            .contains("absolute"));
    }
}
