//! JUnit XML output (written by hand): one `<testsuite>` per group, one `<testcase>` per
//! scenario, `<failure>` with the explanation, `<skipped>` with the reason.

use std::collections::BTreeMap;

use super::{failure_text, RunReport, ScenarioResult, Status};

/// Escapes text for XML attributes and content; drops characters XML 1.0 forbids.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// The report as JUnit XML.
pub fn junit(r: &RunReport) -> String {
    let mut groups: BTreeMap<&str, Vec<&ScenarioResult>> = BTreeMap::new();
    for s in &r.scenarios {
        groups.entry(s.group()).or_default().push(s);
    }
    let fails = |v: &[&ScenarioResult]| v.iter().filter(|s| s.status == Status::Failed).count();
    let skips = |v: &[&ScenarioResult]| {
        v.iter()
            .filter(|s| matches!(s.status, Status::Skipped | Status::Xfailed))
            .count()
    };
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"harness\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{}\">\n",
        r.scenarios.len(),
        r.summary.failed,
        r.summary.skipped + r.summary.xfailed,
        secs(r.summary.duration_ms)
    ));
    for (g, v) in groups {
        let time: u64 = v.iter().map(|s| s.duration_ms).sum();
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{}\">\n",
            xml_escape(g),
            v.len(),
            fails(&v),
            skips(&v),
            secs(time)
        ));
        for s in v {
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\">",
                xml_escape(g),
                xml_escape(&s.name),
                secs(s.duration_ms)
            ));
            let reason = xml_escape(s.reason.as_deref().unwrap_or(""));
            match s.status {
                Status::Passed => {}
                Status::Skipped => out.push_str(&format!("<skipped message=\"{reason}\"/>")),
                Status::Xfailed => out.push_str(&format!(
                    "<skipped message=\"expected failure (profile): {reason}\"/>"
                )),
                Status::Failed => out.push_str(&format!(
                    "\n      <failure message=\"{reason}\" type=\"{}\">{}</failure>\n    ",
                    s.level,
                    xml_escape(&failure_text(s))
                )),
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn junit_is_escaped_and_counted() {
        let x = super::junit(&super::super::sample());
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"harness\" tests=\"3\" failures=\"1\" skipped=\"1\""));
        assert!(
            x.contains("<testsuite name=\"lifecycle\" tests=\"2\" failures=\"1\" skipped=\"0\"")
        );
        assert!(x.contains("<skipped message=\"requires exec: absent\"/>"));
        assert!(x.contains(
            "<failure message=\"step 4 (wait): exit-status: expected 143, got 0\" type=\"must\">"
        ));
        assert_eq!(
            super::xml_escape("a<b>&\"'\u{1}"),
            "a&lt;b&gt;&amp;&quot;&apos;"
        );
        assert_eq!(x.matches("<testcase").count(), 3);
        assert_eq!(x.matches("</testcase>").count(), 3);
    }
}
