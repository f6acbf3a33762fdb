//! Human output: a progress line per scenario as it finishes, each failure explained (expected vs
//! got, the step, the events seen, the tail of the shim's log), and a summary table by group and
//! level.

use std::collections::BTreeMap;

use super::{failure_text, RunReport, ScenarioResult, Status};

fn tag(s: Status) -> &'static str {
    match s {
        Status::Passed => "PASS",
        Status::Failed => "FAIL",
        Status::Skipped => "SKIP",
        Status::Xfailed => "XFAIL",
    }
}

/// `[ 3/64] PASS  lifecycle/sigterm (must) 12ms` plus the skip reason, for one finished scenario.
pub fn human_progress(done: usize, total: usize, s: &ScenarioResult) -> String {
    let w = total.to_string().len();
    let mut line = format!(
        "[{done:>w$}/{total}] {:<5} {} ({}) {}ms",
        tag(s.status),
        s.name,
        s.level,
        s.duration_ms
    );
    if matches!(s.status, Status::Skipped | Status::Xfailed) {
        if let Some(r) = &s.reason {
            line.push_str(" — ");
            line.push_str(r.lines().next().unwrap_or(""));
        }
    }
    line
}

/// A failure explained, indented under its name.
pub fn human_failure(s: &ScenarioResult) -> String {
    let mut out = format!("--- {} ({}): {}\n", s.name, s.level, s.description);
    if let Some(r) = &s.reference {
        out.push_str(&format!("    reference: {r}\n"));
    }
    for l in failure_text(s).lines() {
        out.push_str("    ");
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The failures, then a table of counts per group and level, then the totals.
pub fn human_summary(r: &RunReport) -> String {
    let mut out = String::new();
    let failures: Vec<_> = r
        .scenarios
        .iter()
        .filter(|s| s.status == Status::Failed)
        .collect();
    if !failures.is_empty() {
        out.push_str("\nfailures:\n");
        for s in &failures {
            out.push_str(&human_failure(s));
        }
    }
    // (group, level) -> [passed, failed, skipped, xfailed]
    let mut table: BTreeMap<(String, String), [usize; 4]> = BTreeMap::new();
    for s in &r.scenarios {
        let row = table
            .entry((s.group().to_string(), s.level.clone()))
            .or_default();
        row[s.status as usize] += 1;
    }
    let gw = table.keys().map(|(g, _)| g.len()).max().unwrap_or(5).max(5);
    out.push_str(&format!(
        "\n{:<gw$}  {:<6}  {:>6}  {:>6}  {:>7}  {:>7}\n",
        "group", "level", "passed", "failed", "skipped", "xfailed"
    ));
    for ((g, l), c) in &table {
        out.push_str(&format!(
            "{g:<gw$}  {l:<6}  {:>6}  {:>6}  {:>7}  {:>7}\n",
            c[0], c[1], c[2], c[3]
        ));
    }
    let s = &r.summary;
    out.push_str(&format!(
        "\n{} scenarios: {} passed, {} failed, {} skipped, {} xfailed in {:.2}s ({} against {}, containerd {})\n",
        r.scenarios.len(),
        s.passed,
        s.failed,
        s.skipped,
        s.xfailed,
        s.duration_ms as f64 / 1000.0,
        if s.failed == 0 { "ok" } else { "FAILED" },
        r.shim,
        r.containerd_version
    ));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn summary_has_table_and_failure_details() {
        let r = super::super::sample();
        let h = super::human_summary(&r);
        assert!(h.contains("--- lifecycle/sigterm (must): SIGTERM gives 143"));
        assert!(h.contains("exit-status: expected 143, got 0"));
        assert!(h.contains("events seen: [/tasks/create]"));
        assert!(h.contains("shim log (tail):"));
        assert!(
            h.contains("lifecycle  must         1       1        0        0"),
            "{h}"
        );
        assert!(h.contains("3 scenarios: 1 passed, 1 failed, 1 skipped, 0 xfailed"));
        let p = super::human_progress(2, 10, &r.scenarios[0]);
        assert!(p.starts_with("[ 2/10] SKIP  exec/added (must)"), "{p}");
    }
}
