//! TAP 13 output (as opencontainers/runtime-tools' validation prints it): one test point per
//! scenario, a YAML diagnostic block for failures, `# SKIP` and `# TODO` directives.

use super::{failure_text, RunReport, Status};

fn yaml_block(text: &str) -> String {
    let mut out = String::from("  ---\n  message: |\n");
    for l in text.lines() {
        out.push_str("    ");
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("  ...\n");
    out
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '#'], " ")
}

/// The report as TAP version 13.
pub fn tap(r: &RunReport) -> String {
    let mut out = format!("TAP version 13\n1..{}\n", r.scenarios.len());
    for (i, s) in r.scenarios.iter().enumerate() {
        let n = i + 1;
        let title = format!("{} ({})", s.name, s.level);
        match s.status {
            Status::Passed => out.push_str(&format!("ok {n} - {title}\n")),
            Status::Skipped => out.push_str(&format!(
                "ok {n} - {title} # SKIP {}\n",
                one_line(s.reason.as_deref().unwrap_or(""))
            )),
            Status::Xfailed => {
                out.push_str(&format!(
                    "not ok {n} - {title} # TODO expected failure (profile)\n"
                ));
                out.push_str(&yaml_block(&failure_text(s)));
            }
            Status::Failed => {
                out.push_str(&format!("not ok {n} - {title}\n"));
                out.push_str(&yaml_block(&failure_text(s)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tap13_points_and_directives() {
        let t = super::tap(&super::super::sample());
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines[0], "TAP version 13");
        assert_eq!(lines[1], "1..3");
        assert_eq!(
            lines[2],
            "ok 1 - exec/added (must) # SKIP requires exec: absent"
        );
        assert_eq!(lines[3], "ok 2 - lifecycle/exit-zero (must)");
        assert_eq!(lines[4], "not ok 3 - lifecycle/sigterm (must)");
        assert_eq!(lines[5], "  ---");
        assert!(t.contains("    step 4 (wait): exit-status: expected 143, got 0"));
        assert!(t.trim_end().ends_with("  ..."));
    }
}
