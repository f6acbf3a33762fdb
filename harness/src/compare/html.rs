//! The comparison page: one self-contained HTML document (inline CSS and SVG, no script, no
//! external asset) rendered from a [`CompareDoc`]. Every string that comes from a scenario, a
//! shim or the command line is escaped with [`escape`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::svg::{bar_chart, escape, Chart, Scale, PALETTE};
use super::{CompareDoc, ScenarioOutcome};

/// Microseconds as `850 µs`, `12.3 ms`, `1.20 s`.
pub(crate) fn fmt_us(us: f64) -> String {
    // Trailing zeros go (`1.0 ms` → `1 ms`), so that axis ticks read cleanly.
    let trim = |t: String| {
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        }
    };
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{} ms", trim(format!("{:.1}", us / 1000.0)))
    } else {
        format!("{} s", trim(format!("{:.2}", us / 1_000_000.0)))
    }
}

const CSS: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.group th{background:#e4e9f0;text-align:left}
td.passed{background:#c8ecc8}td.failed{background:#f6c0c0}td.skipped{background:#e6e6e6;color:#555}
td.xfailed{background:#f9e4b0}td.missing{background:#fff}
tr.differs td:first-child{border-left:4px solid #d55e00}
.lvl-must{font-weight:600}.lvl-may{color:#666}
dl.prov{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dl.prov dt{font-weight:600}
dl.prov dd{margin:0}code{font-size:12px}
.chart text{font-size:12px}.chart .ctitle{font-size:14px;font-weight:600}
.chart .cat{text-anchor:end}.chart .tick{text-anchor:middle;fill:#666;font-size:11px}
.chart .grid{stroke:#ddd}.note{color:#555}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px}
"#;

/// Renders the page.
pub fn render(doc: &CompareDoc) -> String {
    let mut h = String::new();
    let p = &doc.provenance;
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<title>Shim comparison</title>\n<style>");
    h.push_str(CSS);
    h.push_str("</style>\n</head>\n<body>\n<h1>Shim comparison</h1>\n");
    let names: Vec<String> = doc.shims.iter().map(|s| s.name.clone()).collect();

    // Provenance.
    h.push_str("<dl class=\"prov\">\n");
    let mut prov = |k: &str, v: String| {
        let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    };
    prov("command", p.subject.command.join(" "));
    prov("harness", p.harness_version.clone());
    prov("containerd dialect", p.containerd_version.clone());
    prov(
        "machine",
        format!(
            "{} ({} CPUs, {} MiB), {}, host {}",
            p.cpu,
            p.cpus,
            p.mem_total_kib / 1024,
            p.kernel,
            p.host
        ),
    );
    prov(
        "run",
        format!(
            "{} scenarios per shim, {} at a time, rootfs {}; started at {} (Unix), took {:.1} s",
            p.run.scenarios,
            p.run.jobs,
            p.run.rootfs,
            p.started_unix,
            p.run.duration_ms as f64 / 1000.0
        ),
    );
    prov(
        "stress",
        match &p.run.stress {
            Some(s) => format!(
                "{} lifecycles, {} in flight, {}",
                s.tasks, s.parallel, s.mode
            ),
            None => "left out (--no-stress)".into(),
        },
    );
    h.push_str("</dl>\n");

    // Shims.
    h.push_str("<h2>Shims</h2>\n<table>\n<tr><th>shim</th><th>path</th><th>version</th>\
                <th>passed</th><th>failed</th><th>skipped</th><th>xfailed</th><th>tasks/s</th></tr>\n");
    for (i, s) in doc.shims.iter().enumerate() {
        let tps = match (&s.stress, &s.stress_error) {
            (Some(st), _) => format!("{:.0}", st.tasks_per_sec),
            (None, Some(e)) => format!("could not run: {e}"),
            (None, None) => "–".into(),
        };
        let _ = writeln!(
            h,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td><code>{}</code></td>\
             <td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            PALETTE[i % PALETTE.len()],
            escape(&s.name),
            escape(&s.path),
            escape(&match &s.profile {
                Some(p) => format!("{}; profile {p}", s.version.as_deref().unwrap_or("–")),
                None => s.version.as_deref().unwrap_or("–").to_string(),
            }),
            s.suite.passed,
            s.suite.failed,
            s.suite.skipped,
            s.suite.xfailed,
            escape(&tps)
        );
    }
    h.push_str("</table>\n");

    matrix(&mut h, doc, &names);
    if doc.shims.iter().any(|s| s.stress.is_some()) {
        latency(&mut h, doc, &names);
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// The conformance matrix: a row per scenario, grouped, a column per shim.
fn matrix(h: &mut String, doc: &CompareDoc, names: &[String]) {
    // scenario id → (group, level, per-shim outcome)
    let mut rows: BTreeMap<&str, (&str, &str, Vec<Option<&ScenarioOutcome>>)> = BTreeMap::new();
    for (i, s) in doc.shims.iter().enumerate() {
        for o in &s.suite.scenarios {
            let row = rows
                .entry(&o.id)
                .or_insert_with(|| (&o.group, &o.level, vec![None; doc.shims.len()]));
            row.2[i] = Some(o);
        }
    }
    let differs = |cells: &[Option<&ScenarioOutcome>]| {
        cells
            .iter()
            .map(|c| c.map(|o| o.outcome.as_str()))
            .collect::<BTreeSet<_>>()
            .len()
            > 1
    };
    let n_diff = rows.values().filter(|r| differs(&r.2)).count();
    let _ = writeln!(
        h,
        "<h2>Conformance matrix</h2>\n<p class=\"note\">{} scenarios; {} with different outcomes \
         (marked at the left edge). Hover a cell for the reason.</p>",
        rows.len(),
        n_diff
    );
    h.push_str("<table class=\"matrix\">\n<tr><th>scenario</th><th>level</th>");
    for n in names {
        let _ = write!(h, "<th>{}</th>", escape(n));
    }
    h.push_str("</tr>\n");
    let groups: BTreeSet<&str> = rows.values().map(|r| r.0).collect();
    for g in groups {
        let _ = writeln!(
            h,
            "<tr class=\"group\"><th colspan=\"{}\">{}</th></tr>",
            names.len() + 2,
            escape(g)
        );
        for (id, (_, level, cells)) in rows.iter().filter(|(_, r)| r.0 == g) {
            let _ = write!(
                h,
                "<tr{}><td>{}</td><td class=\"lvl-{}\">{}</td>",
                if differs(cells) {
                    " class=\"differs\""
                } else {
                    ""
                },
                escape(id),
                escape(level),
                escape(level)
            );
            for c in cells {
                match c {
                    Some(o) => {
                        let title = o
                            .reason
                            .clone()
                            .unwrap_or_else(|| format!("{} in {} ms", o.outcome, o.duration_ms));
                        let _ = write!(
                            h,
                            "<td class=\"{}\" title=\"{}\">{}</td>",
                            escape(&o.outcome),
                            escape(&title),
                            escape(&o.outcome)
                        );
                    }
                    None => h.push_str("<td class=\"missing\">–</td>"),
                }
            }
            h.push_str("</tr>\n");
        }
    }
    h.push_str("</table>\n");
}

/// The latency and throughput table, the resources table and the plots.
fn latency(h: &mut String, doc: &CompareDoc, names: &[String]) {
    let ops = operations(doc);
    latency_table(h, doc, names, &ops);
    plots(h, doc, &ops);
}

/// The operations measured by any shim: the lifecycle order, then anything else alphabetically.
fn operations(doc: &CompareDoc) -> Vec<String> {
    let set: BTreeSet<&String> = doc
        .shims
        .iter()
        .filter_map(|s| s.stress.as_ref())
        .flat_map(|s| s.latency.keys())
        .collect();
    // The lifecycle order, then anything else alphabetically.
    let order = [
        "launch",
        "create",
        "start",
        "wait",
        "delete",
        "shutdown",
        "lifecycle",
    ];
    let mut v: Vec<String> = order
        .iter()
        .filter(|o| set.iter().any(|s| s.as_str() == **o))
        .map(|o| o.to_string())
        .collect();
    v.extend(
        set.iter()
            .filter(|s| !order.contains(&s.as_str()))
            .map(|s| s.to_string()),
    );
    v
}

/// The latency table (p50, p90, p99 per operation and shim), then throughput, resources and
/// leaks, and each shim's stress errors.
fn latency_table(h: &mut String, doc: &CompareDoc, names: &[String], ops: &[String]) {
    h.push_str("<h2>Latency and throughput (stress mode)</h2>\n<table>\n<tr><th>operation</th>");
    for n in names {
        let _ = write!(h, "<th colspan=\"3\">{}</th>", escape(n));
    }
    h.push_str("</tr>\n<tr><th></th>");
    for _ in names {
        h.push_str("<th>p50</th><th>p90</th><th>p99</th>");
    }
    h.push_str("</tr>\n");
    for op in ops {
        let _ = write!(h, "<tr><td>{}</td>", escape(op));
        for s in &doc.shims {
            match s.stress.as_ref().and_then(|st| st.latency.get(op)) {
                Some(l) => {
                    for v in [l.p50_us, l.p90_us, l.p99_us] {
                        let _ = write!(h, "<td class=\"num\">{}</td>", escape(&fmt_us(v as f64)));
                    }
                }
                None => h.push_str("<td>–</td><td>–</td><td>–</td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    let row = |h: &mut String, label: &str, f: &dyn Fn(&super::StressResult) -> String| {
        let _ = write!(h, "<tr><th>{}</th>", escape(label));
        for s in &doc.shims {
            let v = s.stress.as_ref().map(f).unwrap_or_else(|| "–".into());
            let _ = write!(h, "<td class=\"num\" colspan=\"3\">{}</td>", escape(&v));
        }
        h.push_str("</tr>\n");
    };
    row(h, "tasks/s", &|s| format!("{:.1}", s.tasks_per_sec));
    row(h, "completed / failed", &|s| {
        format!("{} / {}", s.completed, s.failed)
    });
    for moment in ["idle", "peak", "end"] {
        row(h, &format!("RSS, fds at {moment}"), &|s| match s
            .resources
            .get(moment)
            .copied()
            .flatten()
        {
            Some(r) => format!("{} KiB, {} fds", r.rss_kib, r.fds),
            None => "–".into(),
        });
    }
    row(h, "leaks", &|s| s.leaks.len().to_string());
    h.push_str("</table>\n");
    for s in &doc.shims {
        if let Some(st) = &s.stress {
            for e in &st.errors {
                let _ = writeln!(
                    h,
                    "<p class=\"note\">{}: {}</p>",
                    escape(&s.name),
                    escape(e)
                );
            }
        }
    }
}

/// The p50 and p99 latency plots per operation and the throughput plot.
fn plots(h: &mut String, doc: &CompareDoc, ops: &[String]) {
    h.push_str("<h2>Plots</h2>\n");
    let per_op = |pick: fn(&super::Latency) -> u64| -> Vec<(String, Vec<Option<f64>>)> {
        doc.shims
            .iter()
            .map(|s| {
                let vals = ops
                    .iter()
                    .map(|op| {
                        s.stress
                            .as_ref()
                            .and_then(|st| st.latency.get(op))
                            .map(|l| pick(l) as f64)
                    })
                    .collect();
                (s.name.clone(), vals)
            })
            .collect()
    };
    for (title, pick) in [
        (
            "p50 latency per operation (log scale)",
            (|l: &super::Latency| l.p50_us) as fn(&super::Latency) -> u64,
        ),
        ("p99 latency per operation (log scale)", |l| l.p99_us),
    ] {
        let series = per_op(pick);
        h.push_str(&bar_chart(&Chart {
            title,
            categories: ops,
            series: &series,
            fmt: &fmt_us,
            scale: Scale::Log,
        }));
    }
    let tps: Vec<(String, Vec<Option<f64>>)> = doc
        .shims
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                vec![s.stress.as_ref().map(|st| st.tasks_per_sec)],
            )
        })
        .collect();
    h.push_str(&bar_chart(&Chart {
        title: "throughput (completed lifecycles per second)",
        categories: &["tasks/s".to_string()],
        series: &tps,
        fmt: &|v| format!("{v:.0}"),
        scale: Scale::Linear,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{
        CompareRun, Invocation, Latency, ScenarioOutcome, ShimResult, StressResult, SuiteResult,
    };
    use crate::provenance::Provenance;

    fn shim(name: &str, outcome: &str, reason: Option<&str>, p50: u64) -> ShimResult {
        ShimResult {
            name: name.into(),
            path: format!("/x/{name}"),
            version: None,
            env: vec![],
            profile: None,
            suite: SuiteResult {
                passed: 1,
                failed: 0,
                skipped: 0,
                xfailed: 0,
                duration_ms: 1,
                scenarios: vec![ScenarioOutcome {
                    id: "lifecycle/<b>x</b>".into(),
                    group: "lifecycle".into(),
                    level: "must".into(),
                    outcome: outcome.into(),
                    reason: reason.map(String::from),
                    duration_ms: 3,
                }],
            },
            stress: Some(StressResult {
                tasks: 1,
                parallel: 1,
                mode: "one-shim".into(),
                completed: 1,
                failed: 0,
                errors: vec![],
                duration_ms: 1,
                tasks_per_sec: 10.0,
                latency: [(
                    "create".to_string(),
                    Latency {
                        count: 1,
                        p50_us: p50,
                        p90_us: p50,
                        p99_us: p50,
                        max_us: p50,
                    },
                )]
                .into_iter()
                .collect(),
                resources: Default::default(),
                leaks: vec![],
            }),
            stress_error: None,
        }
    }

    #[test]
    fn scenario_and_shim_text_is_escaped_and_differences_marked() {
        let doc = CompareDoc {
            schema_version: 1,
            provenance: Provenance {
                harness_version: "0".into(),
                subject: Invocation {
                    command: vec!["harness".into(), "<script>".into()],
                },
                containerd_version: "2.0".into(),
                kernel: String::new(),
                cpu: String::new(),
                cpus: 2,
                mem_total_kib: 0,
                host: String::new(),
                started_unix: 0,
                run: CompareRun {
                    duration_ms: 0,
                    scenarios: 1,
                    jobs: 1,
                    rootfs: "busybox".into(),
                    stress: None,
                },
            },
            shims: vec![
                shim("a\"shim", "passed", None, 120),
                shim("b", "failed", Some("expected 143, got <0> & \"x\""), 4500),
            ],
        };
        let page = render(&doc);
        assert!(!page.contains("<script>") && !page.contains("<b>x</b>"));
        assert!(page.contains("lifecycle/&lt;b&gt;x&lt;/b&gt;"));
        assert!(page.contains("title=\"expected 143, got &lt;0&gt; &amp; &quot;x&quot;\""));
        assert!(page.contains("a&quot;shim"));
        assert_eq!(page.matches("<tr class=\"differs\">").count(), 1);
        assert!(page.contains("4.5 ms") && page.contains("120 µs"));
        assert_eq!(fmt_us(1000.0), "1 ms");
        assert_eq!(fmt_us(1_080_000.0), "1.08 s");
        assert_eq!(fmt_us(10_000_000.0), "10 s");
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
