//! `harness stress --format benchmark-json`: the report as github-action-benchmark's
//! `customSmallerIsBetter` / `customBiggerIsBetter` input, a JSON array of
//! `{name, unit, value, extra}`, so a shim's CI can chart its latency and throughput per commit
//! and alert on regressions.

use serde::Serialize;

use super::StressReport;

/// One figure of a benchmark run, in github-action-benchmark's custom format.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchmarkEntry {
    /// What was measured, stable across runs of the same command (the chart's key):
    /// `stress one-shim create p99`, `stress one-shim throughput`.
    pub name: String,
    /// `us` (latencies) or `tasks/s` (throughput).
    pub unit: String,
    /// The figure.
    pub value: f64,
    /// One line of context shown next to the value: samples, tasks, parallelism, shim, host.
    pub extra: String,
}

impl StressReport {
    /// The figures where smaller is better (`customSmallerIsBetter`): for every operation in
    /// `latency`, its p50, p90, p99 and max in microseconds.
    pub fn benchmark_smaller(&self) -> Vec<BenchmarkEntry> {
        let mut out = Vec::new();
        for (op, p) in &self.latency {
            let extra = format!("{} samples; {}", p.count, self.benchmark_context());
            for (q, v) in [
                ("p50", p.p50_us),
                ("p90", p.p90_us),
                ("p99", p.p99_us),
                ("max", p.max_us),
            ] {
                out.push(BenchmarkEntry {
                    name: format!("stress {} {op} {q}", self.mode),
                    unit: "us".into(),
                    value: v as f64,
                    extra: extra.clone(),
                });
            }
        }
        out
    }

    /// The figures where bigger is better (`customBiggerIsBetter`): completed lifecycles per
    /// second.
    pub fn benchmark_bigger(&self) -> Vec<BenchmarkEntry> {
        vec![BenchmarkEntry {
            name: format!("stress {} throughput", self.mode),
            unit: "tasks/s".into(),
            value: (self.tasks_per_sec * 100.0).round() / 100.0,
            extra: format!(
                "{} completed, {} failed in {} ms; {}",
                self.completed,
                self.failed,
                self.duration_ms,
                self.benchmark_context()
            ),
        }]
    }

    fn benchmark_context(&self) -> String {
        let p = &self.provenance;
        let shim = p.subject.shim_version.as_deref().unwrap_or(&p.subject.shim);
        format!(
            "-n {} -p {}; {}; containerd {}; {} cpus ({}); harness {}",
            self.tasks,
            self.parallel,
            shim.lines().next().unwrap_or_default(),
            p.containerd_version,
            p.cpus,
            p.cpu,
            p.harness_version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::{Provenance, ShimUnderTest};
    use crate::stress::{Percentiles, Resources};

    fn report() -> StressReport {
        let mut latency = std::collections::BTreeMap::new();
        latency.insert(
            "create".to_string(),
            Percentiles {
                count: 10,
                p50_us: 100,
                p90_us: 200,
                p99_us: 300,
                max_us: 400,
            },
        );
        StressReport {
            tasks: 10,
            parallel: 2,
            mode: "one-shim".into(),
            completed: 10,
            failed: 0,
            errors: vec![],
            duration_ms: 50,
            tasks_per_sec: 200.123,
            latency,
            resources: Resources::default(),
            leaks: vec![],
            provenance: Provenance {
                harness_version: "0.1.0".into(),
                subject: ShimUnderTest {
                    shim: "/x/containerd-shim-x-v2".into(),
                    shim_version: None,
                },
                containerd_version: "2.0".into(),
                kernel: "Linux".into(),
                cpu: "cpu".into(),
                cpus: 2,
                mem_total_kib: 1,
                host: "h".into(),
                started_unix: 0,
                run: (),
            },
            soak: None,
        }
    }

    #[test]
    fn one_entry_per_percentile_and_one_for_throughput() {
        let r = report();
        let small = r.benchmark_smaller();
        let names: Vec<_> = small.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "stress one-shim create p50",
                "stress one-shim create p90",
                "stress one-shim create p99",
                "stress one-shim create max"
            ]
        );
        assert_eq!(small[2].value, 300.0);
        assert_eq!(small[2].unit, "us");
        assert_eq!(
            small[0].extra,
            "10 samples; -n 10 -p 2; /x/containerd-shim-x-v2; containerd 2.0; 2 cpus (cpu); harness 0.1.0"
        );
        let big = r.benchmark_bigger();
        assert_eq!(big.len(), 1);
        assert_eq!(big[0].name, "stress one-shim throughput");
        assert_eq!(big[0].unit, "tasks/s");
        assert_eq!(big[0].value, 200.12);
    }
}
