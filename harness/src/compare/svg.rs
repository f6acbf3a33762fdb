//! Inline SVG bar charts for the comparison page: grouped horizontal bars (one group per
//! category, one bar per series), on a linear or a log₁₀ scale, with every value written next
//! to its bar. All text goes through [`escape`].

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Series colours (colour-blind-safe palette), cycled.
pub(crate) const PALETTE: &[&str] = &[
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000",
];

/// The x axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    /// From zero.
    Linear,
    /// Powers of ten, for values that span orders of magnitude (µs next to ms).
    Log,
}

/// One chart's data: `values[series][category]`, `None` where a series has no value.
pub(crate) struct Chart<'a> {
    /// Shown above the chart.
    pub title: &'a str,
    /// Category labels (y axis).
    pub categories: &'a [String],
    /// Series names (legend) and values.
    pub series: &'a [(String, Vec<Option<f64>>)],
    /// Formats a value for labels and ticks.
    pub fmt: &'a dyn Fn(f64) -> String,
    /// The x axis.
    pub scale: Scale,
}

const WIDTH: f64 = 960.0;
const LABEL_W: f64 = 150.0;
const VALUE_W: f64 = 110.0;
const BAR_H: f64 = 14.0;
const GROUP_GAP: f64 = 10.0;
const TOP: f64 = 30.0;

/// Renders the chart as an `<svg>` element (no `xmlns` needed inline in HTML5).
pub(crate) fn bar_chart(c: &Chart<'_>) -> String {
    let values: Vec<f64> = c
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .collect();
    let n_series = c.series.len().max(1) as f64;
    let legend_h = 18.0 * ((c.series.len() as f64) / 3.0).ceil().max(1.0);
    let plot_top = TOP + legend_h;
    let group_h = n_series * BAR_H + GROUP_GAP;
    let height = plot_top + group_h * c.categories.len() as f64 + 24.0;
    let plot_w = WIDTH - LABEL_W - VALUE_W;
    let mut s = format!(
        "<svg class=\"chart\" role=\"img\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" \
         height=\"{height}\" aria-label=\"{}\">\n",
        escape(c.title)
    );
    s.push_str(&format!(
        "<text x=\"0\" y=\"16\" class=\"ctitle\">{}</text>\n",
        escape(c.title)
    ));
    legend(&mut s, c.series);
    if values.is_empty() {
        s.push_str(&format!(
            "<text x=\"{LABEL_W}\" y=\"{}\">no data</text></svg>\n",
            plot_top + 14.0
        ));
        return s;
    }
    let (pos, ticks) = axis(c.scale, &values, plot_w);
    let bottom = height - 20.0;
    for t in &ticks {
        let x = LABEL_W + pos(*t);
        s.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{plot_top}\" x2=\"{x:.1}\" y2=\"{bottom}\" class=\"grid\"/>\
             <text x=\"{x:.1}\" y=\"{}\" class=\"tick\">{}</text>\n",
            bottom + 14.0,
            escape(&(c.fmt)(*t))
        ));
    }
    for (ci, cat) in c.categories.iter().enumerate() {
        let gy = plot_top + ci as f64 * group_h;
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{:.1}\" class=\"cat\">{}</text>\n",
            LABEL_W - 6.0,
            gy + n_series * BAR_H / 2.0 + 4.0,
            escape(cat)
        ));
        for (si, (name, vals)) in c.series.iter().enumerate() {
            let y = gy + si as f64 * BAR_H;
            match vals.get(ci).copied().flatten() {
                Some(v) => {
                    let w = pos(v).max(1.0);
                    let label = (c.fmt)(v);
                    s.push_str(&format!(
                        "<rect x=\"{LABEL_W}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{}\" \
                         fill=\"{}\"><title>{}: {} = {}</title></rect>\
                         <text x=\"{:.1}\" y=\"{:.1}\" class=\"val\">{}</text>\n",
                        BAR_H - 2.0,
                        PALETTE[si % PALETTE.len()],
                        escape(name),
                        escape(cat),
                        escape(&label),
                        LABEL_W + w + 4.0,
                        y + BAR_H - 4.0,
                        escape(&label)
                    ));
                }
                None => s.push_str(&format!(
                    "<text x=\"{}\" y=\"{:.1}\" class=\"val\">–</text>\n",
                    LABEL_W + 4.0,
                    y + BAR_H - 4.0
                )),
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The legend: one coloured square and name per series, three to a row.
fn legend(s: &mut String, series: &[(String, Vec<Option<f64>>)]) {
    for (i, (name, _)) in series.iter().enumerate() {
        let x = (i % 3) as f64 * (WIDTH / 3.0);
        let y = TOP + (i / 3) as f64 * 18.0;
        s.push_str(&format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" class=\"legend\">{}</text>\n",
            y - 10.0,
            PALETTE[i % PALETTE.len()],
            x + 16.0,
            y,
            escape(name)
        ));
    }
}

/// The x axis: value → x offset in the plot (`plot_w` wide), and the grid's tick values.
fn axis(scale: Scale, values: &[f64], plot_w: f64) -> (Box<dyn Fn(f64) -> f64>, Vec<f64>) {
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    match scale {
        Scale::Log => {
            let min_pos = values
                .iter()
                .copied()
                .filter(|v| *v > 0.0)
                .fold(f64::INFINITY, f64::min);
            let lo = if min_pos.is_finite() {
                min_pos.log10().floor()
            } else {
                0.0
            };
            let hi = max.max(1.0).log10().ceil().max(lo + 1.0);
            let span = hi - lo;
            let ticks = (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect();
            (
                Box::new(move |v: f64| {
                    if v <= 0.0 {
                        0.0
                    } else {
                        ((v.log10() - lo) / span).clamp(0.0, 1.0) * plot_w
                    }
                }),
                ticks,
            )
        }
        Scale::Linear => {
            let top = nice_ceiling(max);
            let ticks = (0..=4).map(|i| top * f64::from(i) / 4.0).collect();
            (
                Box::new(move |v: f64| (v / top).clamp(0.0, 1.0) * plot_w),
                ticks,
            )
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(500.0), 500.0);
    }

    #[test]
    fn bars_are_escaped_and_scaled() {
        let cats = vec!["create".to_string(), "<op>".to_string()];
        let series = vec![
            ("a&b".to_string(), vec![Some(100.0), Some(10_000.0)]),
            ("c".to_string(), vec![None, Some(1000.0)]),
        ];
        let svg = bar_chart(&Chart {
            title: "p50 \"µs\"",
            categories: &cats,
            series: &series,
            fmt: &|v| format!("{v}"),
            scale: Scale::Log,
        });
        assert!(
            svg.contains("a&amp;b") && svg.contains("&lt;op&gt;"),
            "{svg}"
        );
        assert!(svg.contains("p50 &quot;µs&quot;"), "{svg}");
        assert!(!svg.contains("<op>"));
        // Log axis from 10^2 to 10^4: 10^3 sits at the middle of the plot width.
        let plot_w = WIDTH - LABEL_W - VALUE_W;
        assert!(
            svg.contains(&format!("width=\"{:.1}\"", plot_w / 2.0)),
            "{svg}"
        );
        assert_eq!(svg.matches("<rect x=\"150\"").count(), 3);
    }
}
