//! Charts as inline SVG, for the HTML report: line charts (linear or
//! logarithmic axes, and the HDR percentile axis) and horizontal bar charts.
//!
//! Every chart is an `<svg class="chart">` whose `data-points` counts the
//! data points it draws; every series is a `<polyline class="series">` (or,
//! for a single point, a marker) whose `data-values` lists its points in the
//! data's own units (`x,y x,y …`), and every bar a `<rect class="bar">` with
//! `data-label` and `data-value`. So what a chart shows can be checked
//! against the report's numbers without reading pixels.

use std::fmt::Write as _;

/// Width and height of a chart's view box.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 280.0;
/// The view box of a chart meant to span the page.
pub const WIDE: (f64, f64) = (1000.0, 400.0);
/// Plot area margins: left (y tick labels), right, top (legend), bottom (x ticks and label).
const LEFT: f64 = 68.0;
const RIGHT: f64 = 36.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 46.0;

/// Series colours, in order.
pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// From 0 (or the smallest value, if negative) to a round number above the largest.
    Linear,
    /// Powers of ten around the values; values ≤ 0 are left out.
    Log,
    /// Percentiles on the HDR axis: `log10(1 / (1 - p / 100))`, so 90, 99,
    /// 99.9 … are evenly spaced.
    Percentile,
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: String,
    pub dashed: bool,
    /// A dot at every point (always drawn for a single point).
    pub markers: bool,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, color: &str, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            color: color.to_owned(),
            dashed: false,
            markers: false,
            points,
        }
    }

    pub fn dashed(mut self) -> Self {
        self.dashed = true;
        self
    }

    pub fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }
}

/// A reference line across the plot.
#[derive(Debug, Clone)]
pub struct Rule {
    pub value: f64,
    pub label: String,
    pub color: String,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub id: String,
    /// Short description for screen readers (`<title>`).
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    pub series: Vec<Series>,
    /// Horizontal lines at a y value (a limit).
    pub y_rules: Vec<Rule>,
    /// Vertical lines at an x value (a knee).
    pub x_rules: Vec<Rule>,
    /// The view box: (width, height).
    pub size: (f64, f64),
}

/// An axis: the data range after the scale's transform, and its ticks.
struct Axis {
    scale: Scale,
    lo: f64,
    hi: f64,
    /// (transformed position, label)
    ticks: Vec<(f64, String)>,
}

impl Axis {
    fn new(scale: Scale, values: impl Iterator<Item = f64>) -> Axis {
        let values: Vec<f64> = values
            .filter(|v| v.is_finite())
            .filter(|v| scale != Scale::Log || *v > 0.0)
            .map(|v| transform(scale, v))
            .collect();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        match scale {
            Scale::Linear => {
                let lo = if min.is_finite() { min.min(0.0) } else { 0.0 };
                let hi = if max.is_finite() && max > lo {
                    max
                } else {
                    lo + 1.0
                };
                let step = nice_step((hi - lo) / 5.0);
                let lo = (lo / step).floor() * step;
                let hi = (hi / step).ceil() * step;
                let decimals = decimals_for(step);
                let n = ((hi - lo) / step).round() as i64;
                let ticks = (0..=n)
                    .map(|i| {
                        let v = lo + i as f64 * step;
                        (v, fmt_number(v, decimals))
                    })
                    .collect();
                Axis {
                    scale,
                    lo,
                    hi,
                    ticks,
                }
            }
            Scale::Log => {
                let (lo, hi) = if min.is_finite() {
                    (min.floor(), max.ceil().max(min.floor() + 1.0))
                } else {
                    (0.0, 1.0)
                };
                let decades = (hi - lo) as i64;
                let mut ticks = Vec::new();
                for d in 0..=decades {
                    let e = lo + d as f64;
                    ticks.push((e, fmt_power(e, 1.0)));
                    // With few decades, 2× and 5× too.
                    if decades <= 3 && d < decades {
                        for m in [2.0_f64, 5.0] {
                            ticks.push((e + m.log10(), fmt_power(e, m)));
                        }
                    }
                }
                Axis {
                    scale,
                    lo,
                    hi,
                    ticks,
                }
            }
            Scale::Percentile => {
                let hi = if max.is_finite() {
                    max.ceil().max(2.0)
                } else {
                    2.0
                };
                let ticks = (0..=hi as i64)
                    .map(|k| (k as f64, percentile_label(k)))
                    .collect();
                Axis {
                    scale,
                    lo: 0.0,
                    hi,
                    ticks,
                }
            }
        }
    }

    /// Position of `v` between 0 (`lo`) and 1 (`hi`); `None` if it cannot be drawn.
    fn fraction(&self, v: f64) -> Option<f64> {
        if !v.is_finite() || (self.scale == Scale::Log && v <= 0.0) {
            return None;
        }
        Some((transform(self.scale, v) - self.lo) / (self.hi - self.lo))
    }
}

fn transform(scale: Scale, v: f64) -> f64 {
    match scale {
        Scale::Linear => v,
        Scale::Log => v.log10(),
        Scale::Percentile => {
            let rest = (100.0 - v).max(1e-9);
            (100.0 / rest).log10()
        }
    }
}

/// `0%`, `90%`, `99%`, `99.9%` … for `k` nines.
fn percentile_label(k: i64) -> String {
    match k {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        2 => "99%".to_owned(),
        _ => format!("99.{}%", "9".repeat(k as usize - 2)),
    }
}

/// `m × 10^e` as a plain number (`0.2`, `50`, `1,000`).
fn fmt_power(e: f64, m: f64) -> String {
    let v = m * 10f64.powf(e);
    let decimals = if e < 0.0 { (-e) as usize } else { 0 };
    fmt_number(v, decimals)
}

/// A round step near `raw`: 1, 2, 2.5 or 5 times a power of ten.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 2.5 {
        2.5
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Decimals that show every multiple of `step` exactly.
fn decimals_for(step: f64) -> usize {
    let mut decimals = 0;
    let mut s = step;
    while decimals < 9 && (s - s.round()).abs() > 1e-9 * step.max(1.0) {
        s *= 10.0;
        decimals += 1;
    }
    decimals
}

/// `v` with `decimals` decimals and thousands separators.
pub fn fmt_number(v: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
    let mut out = String::new();
    if v < 0.0 && s.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.push('-');
    }
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// Escapes text for HTML and SVG content and attribute values.
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

/// A number written as the JSON report writes it, so the two compare as text.
pub fn json_number(v: f64) -> String {
    serde_json::to_string(&v).expect("a number serializes")
}

/// `x,y x,y …` in the data's own units, each number as the JSON report
/// writes it.
fn data_values(points: &[(f64, f64)]) -> String {
    let mut out = String::new();
    for (i, (x, y)) in points.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{},{}", json_number(*x), json_number(*y));
    }
    out
}

impl LineChart {
    pub fn new(id: &str, title: &str, x_label: &str, y_label: &str) -> Self {
        Self {
            id: id.to_owned(),
            title: title.to_owned(),
            x_label: x_label.to_owned(),
            y_label: y_label.to_owned(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            series: Vec::new(),
            y_rules: Vec::new(),
            x_rules: Vec::new(),
            size: (WIDTH, HEIGHT),
        }
    }

    /// Data points over all series.
    pub fn points(&self) -> usize {
        self.series.iter().map(|s| s.points.len()).sum()
    }

    /// The chart as an `<svg>` element.
    pub fn render(&self) -> String {
        let plot = self.plot();
        let (width, height) = self.size;
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg class="chart" id="{id}" data-kind="line" data-points="{points}" data-series="{series}" viewBox="0 0 {width} {height}" role="img" aria-labelledby="{id}-title" xmlns="http://www.w3.org/2000/svg"><title id="{id}-title">{title}</title>"#,
            id = escape(&self.id),
            points = self.points(),
            series = self.series.len(),
            title = escape(&self.title),
        );
        write_grid(&mut out, &plot);
        self.write_frame(&mut out, &plot);
        self.write_rules(&mut out, &plot);
        self.write_series(&mut out, &plot);
        self.write_legend(&mut out);
        out.push_str("</svg>");
        out
    }

    /// The axes over every point and rule, and the plot area inside the margins.
    fn plot(&self) -> Plot {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(self.x_rules.iter().map(|r| r.value));
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(self.y_rules.iter().map(|r| r.value));
        let (width, height) = self.size;
        Plot {
            x_axis: Axis::new(self.x_scale, xs),
            y_axis: Axis::new(self.y_scale, ys),
            width: width - LEFT - RIGHT,
            height: height - TOP - BOTTOM,
        }
    }

    /// The frame around the plot and the axis labels.
    fn write_frame(&self, out: &mut String, plot: &Plot) {
        let (plot_w, plot_h) = (plot.width, plot.height);
        let _ = write!(
            out,
            r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>"#
        );
        let _ = write!(
            out,
            r#"<text class="axis-label" x="{x}" y="{y}" text-anchor="middle">{label}</text>"#,
            x = LEFT + plot_w / 2.0,
            y = self.size.1 - 8.0,
            label = escape(&self.x_label),
        );
        let _ = write!(
            out,
            r#"<text class="axis-label" transform="translate(14 {y}) rotate(-90)" text-anchor="middle">{label}</text>"#,
            y = TOP + plot_h / 2.0,
            label = escape(&self.y_label),
        );
    }

    /// The reference lines, each with its label: horizontal ones at the
    /// right end, vertical ones stacked downwards from the top.
    fn write_rules(&self, out: &mut String, plot: &Plot) {
        let (plot_w, plot_h) = (plot.width, plot.height);
        for rule in &self.y_rules {
            if let Some(y) = plot.y(rule.value) {
                let _ = write!(
                    out,
                    r#"<line class="rule" data-value="{value}" x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="{color}"/><text class="rule-label" x="{tx}" y="{ty:.1}" text-anchor="end" fill="{color}">{label}</text>"#,
                    value = json_number(rule.value),
                    x2 = LEFT + plot_w,
                    tx = LEFT + plot_w - 4.0,
                    ty = y - 4.0,
                    color = escape(&rule.color),
                    label = escape(&rule.label),
                );
            }
        }
        for (i, rule) in self.x_rules.iter().enumerate() {
            if let Some(x) = plot.x(rule.value) {
                // Labels stack downwards, and stay inside the plot.
                let width = 7.0 * rule.label.chars().count() as f64;
                let (tx, anchor) = if x + 4.0 + width > LEFT + plot_w {
                    (x - 4.0, "end")
                } else {
                    (x + 4.0, "start")
                };
                let _ = write!(
                    out,
                    r#"<line class="rule" data-value="{value}" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{y2}" stroke="{color}"/><text class="rule-label" x="{tx:.1}" y="{ty}" text-anchor="{anchor}" fill="{color}">{label}</text>"#,
                    value = json_number(rule.value),
                    y2 = TOP + plot_h,
                    ty = TOP + 14.0 + 14.0 * i as f64,
                    color = escape(&rule.color),
                    label = escape(&rule.label),
                );
            }
        }
    }

    /// Each series as a polyline carrying its data values, with markers
    /// when asked for (or when it has a single point).
    fn write_series(&self, out: &mut String, plot: &Plot) {
        for s in &self.series {
            let coords: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter_map(|&(x, y)| Some((plot.x(x)?, plot.y(y)?)))
                .collect();
            let mut path = String::new();
            for (i, (x, y)) in coords.iter().enumerate() {
                if i > 0 {
                    path.push(' ');
                }
                let _ = write!(path, "{x:.1},{y:.1}");
            }
            let _ = write!(
                out,
                r#"<g class="series-group"><polyline class="series" data-name="{name}" data-points="{n}" data-values="{values}" points="{path}" fill="none" stroke="{color}" stroke-width="1.8"{dash}><title>{name}</title></polyline>"#,
                name = escape(&s.name),
                n = s.points.len(),
                values = data_values(&s.points),
                color = escape(&s.color),
                dash = if s.dashed {
                    r#" stroke-dasharray="6 4""#
                } else {
                    ""
                },
            );
            if s.markers || coords.len() == 1 {
                for ((x, y), (dx, dy)) in coords.iter().zip(&s.points) {
                    let _ = write!(
                        out,
                        r#"<circle class="marker" cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"><title>{name}: {dx}, {dy}</title></circle>"#,
                        color = escape(&s.color),
                        name = escape(&s.name),
                    );
                }
            }
            out.push_str("</g>");
        }
    }

    /// The legend, along the top.
    fn write_legend(&self, out: &mut String) {
        let mut lx = LEFT;
        for s in &self.series {
            let _ = write!(
                out,
                r#"<g class="legend"><line x1="{lx}" x2="{x2}" y1="12" y2="12" stroke="{color}" stroke-width="2.5"{dash}/><text x="{tx}" y="16">{name}</text></g>"#,
                x2 = lx + 18.0,
                tx = lx + 23.0,
                color = escape(&s.color),
                dash = if s.dashed {
                    r#" stroke-dasharray="5 3""#
                } else {
                    ""
                },
                name = escape(&s.name),
            );
            lx += 36.0 + 7.5 * s.name.chars().count() as f64;
        }
    }
}

/// Where a line chart's data goes: its axes, and the plot area (its size;
/// it starts at `LEFT`, `TOP`).
struct Plot {
    x_axis: Axis,
    y_axis: Axis,
    width: f64,
    height: f64,
}

impl Plot {
    /// The horizontal position of `x`; `None` if it cannot be drawn.
    fn x(&self, v: f64) -> Option<f64> {
        self.x_axis.fraction(v).map(|f| LEFT + f * self.width)
    }

    /// The vertical position of `y`; `None` if it cannot be drawn.
    fn y(&self, v: f64) -> Option<f64> {
        self.y_axis
            .fraction(v)
            .map(|f| TOP + self.height - f * self.height)
    }
}

/// The grid lines at the ticks of both axes, with their labels.
fn write_grid(out: &mut String, plot: &Plot) {
    let (x_axis, y_axis) = (&plot.x_axis, &plot.y_axis);
    let (plot_w, plot_h) = (plot.width, plot.height);
    out.push_str(r#"<g class="grid">"#);
    for (pos, label) in &y_axis.ticks {
        let y = TOP + plot_h - (pos - y_axis.lo) / (y_axis.hi - y_axis.lo) * plot_h;
        let _ = write!(
            out,
            r#"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{tx}" y="{ty:.1}" text-anchor="end">{label}</text>"#,
            x2 = LEFT + plot_w,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            label = escape(label),
        );
    }
    for (pos, label) in &x_axis.ticks {
        let x = LEFT + (pos - x_axis.lo) / (x_axis.hi - x_axis.lo) * plot_w;
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{y2}"/><text class="tick" x="{x:.1}" y="{ty}" text-anchor="middle">{label}</text>"#,
            y2 = TOP + plot_h,
            ty = TOP + plot_h + 16.0,
            label = escape(label),
        );
    }
    out.push_str("</g>");
}

/// One bar of a bar chart.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: u64,
    pub color: String,
}

/// A horizontal bar chart (counts by category).
#[derive(Debug, Clone)]
pub struct BarChart {
    pub id: String,
    pub title: String,
    pub bars: Vec<Bar>,
}

impl BarChart {
    /// The chart as an `<svg>` element.
    pub fn render(&self) -> String {
        const ROW: f64 = 30.0;
        const LABEL: f64 = 180.0;
        const VALUE: f64 = 130.0;
        let height = ROW * self.bars.len().max(1) as f64 + 8.0;
        let max = self.bars.iter().map(|b| b.value).max().unwrap_or(0).max(1) as f64;
        let total: u64 = self.bars.iter().map(|b| b.value).sum();
        let width = WIDTH - LABEL - VALUE;
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg class="chart" id="{id}" data-kind="bar" data-points="{n}" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="{id}-title" xmlns="http://www.w3.org/2000/svg"><title id="{id}-title">{title}</title>"#,
            id = escape(&self.id),
            n = self.bars.len(),
            title = escape(&self.title),
        );
        for (i, bar) in self.bars.iter().enumerate() {
            let y = 4.0 + i as f64 * ROW;
            let w = (bar.value as f64 / max * width).max(1.0);
            let share = if total > 0 {
                bar.value as f64 * 100.0 / total as f64
            } else {
                0.0
            };
            let _ = write!(
                out,
                r#"<text class="bar-label" x="{lx}" y="{ty:.1}" text-anchor="end">{label}</text><rect class="bar" data-label="{label}" data-value="{value}" x="{LABEL}" y="{y:.1}" width="{w:.1}" height="{h}" fill="{color}"><title>{label}: {shown}</title></rect><text class="bar-value" x="{vx:.1}" y="{ty:.1}">{shown} ({share:.1}%)</text>"#,
                lx = LABEL - 8.0,
                ty = y + ROW / 2.0 + 1.0,
                label = escape(&bar.label),
                value = bar.value,
                h = ROW - 8.0,
                color = escape(&bar.color),
                shown = fmt_number(bar.value as f64, 0),
                vx = LABEL + w + 6.0,
            );
        }
        out.push_str("</svg>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_and_numbers() {
        assert_eq!(nice_step(0.37), 0.5);
        assert_eq!(nice_step(13.0), 20.0);
        assert_eq!(nice_step(2.2), 2.5);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(decimals_for(0.25), 2);
        assert_eq!(decimals_for(20.0), 0);
        assert_eq!(fmt_number(1234567.891, 1), "1,234,567.9");
        assert_eq!(fmt_number(0.5, 2), "0.50");
        assert_eq!(fmt_number(-1500.0, 0), "-1,500");
        assert_eq!(fmt_number(-0.0001, 2), "0.00");
    }

    #[test]
    fn percentile_axis_labels_count_nines() {
        assert_eq!(percentile_label(0), "0%");
        assert_eq!(percentile_label(1), "90%");
        assert_eq!(percentile_label(2), "99%");
        assert_eq!(percentile_label(3), "99.9%");
        assert_eq!(percentile_label(6), "99.9999%");
        assert!((transform(Scale::Percentile, 99.9) - 3.0).abs() < 1e-9);
        assert_eq!(transform(Scale::Percentile, 0.0), 0.0);
    }

    #[test]
    fn linear_axes_start_at_zero_and_end_on_a_tick() {
        let a = Axis::new(Scale::Linear, [3.0, 47.0].into_iter());
        assert_eq!((a.lo, a.hi), (0.0, 50.0));
        assert_eq!(a.ticks.first().unwrap().1, "0");
        assert_eq!(a.ticks.last().unwrap().1, "50");
        let empty = Axis::new(Scale::Linear, std::iter::empty());
        assert!(empty.hi > empty.lo);
        let log = Axis::new(Scale::Log, [0.2, 0.0, 40.0].into_iter());
        assert_eq!((log.lo, log.hi), (-1.0, 2.0));
        assert!(log.ticks.iter().any(|t| t.1 == "0.5"));
        assert!(log.ticks.iter().any(|t| t.1 == "100"));
    }

    #[test]
    fn line_charts_expose_their_data() {
        let mut chart = LineChart::new("c<1>", "A & B", "x", "y");
        chart.series.push(Series::new(
            "p99",
            PALETTE[0],
            vec![(0.0, 1.5), (1.0, 2.25)],
        ));
        chart
            .series
            .push(Series::new("one", PALETTE[1], vec![(0.5, 1.0)]).dashed());
        chart.y_rules.push(Rule {
            value: 2.0,
            label: "limit".into(),
            color: PALETTE[1].into(),
        });
        let svg = chart.render();
        assert!(svg.starts_with(r#"<svg class="chart" id="c&lt;1&gt;" data-kind="line" data-points="3" data-series="2""#), "{svg}");
        assert!(svg.contains(r#"data-values="0.0,1.5 1.0,2.25""#), "{svg}");
        assert!(svg.contains("<title id=\"c&lt;1&gt;-title\">A &amp; B</title>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // A single point gets a marker, so it shows.
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(svg.contains(r#"class="rule" data-value="2.0""#));
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn bar_charts_expose_their_data() {
        let chart = BarChart {
            id: "b".into(),
            title: "codes".into(),
            bars: vec![
                Bar {
                    label: "200".into(),
                    value: 1500,
                    color: PALETTE[2].into(),
                },
                Bar {
                    label: "<script>".into(),
                    value: 500,
                    color: PALETTE[1].into(),
                },
            ],
        };
        let svg = chart.render();
        assert!(svg.contains(r#"data-kind="bar" data-points="2""#));
        assert!(svg.contains(r#"data-label="200" data-value="1500""#));
        assert!(svg.contains("1,500 (75.0%)"));
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"));
    }
}
