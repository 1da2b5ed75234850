//! Chart primitives for the status page: inline SVG drawn on the server, no script, nothing
//! fetched. Each figure scales to its container (a `viewBox` and `width="100%"`), names its
//! axes in text, and carries a `<title>` on every mark with the exact figure, which a browser
//! shows on hover and a screen reader reads. Series are told apart by lightness as well as
//! hue, and stacks keep the legend's order, so the figures read in greyscale too.

use std::fmt::Write;

use super::escape;

/// Drawing area, in `viewBox` units.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 26.0;
/// Most x-axis labels drawn; the others are skipped evenly.
const X_LABELS: usize = 8;

/// Fills for stacked series, dark to light (distinct in greyscale); the last is "other".
pub const PALETTE: [&str; 7] = [
    "#1f3b73", "#2f6f9f", "#3a9d8f", "#7cbf5a", "#d6c64a", "#f0a860", "#c8c8c8",
];

/// How a figure's values read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    Usd,
    Tokens,
    Cores,
    Bytes,
    Seconds,
}

impl Unit {
    /// A value as a person reads it: `$1.23`, `12.3k`, `0.50 cores`, `123.4 MiB`.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Usd if value != 0.0 && value.abs() < 0.01 => format!("${value:.4}"),
            Unit::Usd => format!("${value:.2}"),
            Unit::Tokens => compact(value),
            Unit::Cores => format!("{value:.2} cores"),
            Unit::Bytes => format!("{:.1} MiB", value / 1_048_576.0),
            Unit::Seconds => format!("{} s", compact(value)),
        }
    }

    /// A value in full, for hover titles: every token, USD to four decimals.
    pub fn exact(self, value: f64) -> String {
        match self {
            Unit::Usd => format!("${value:.4}"),
            Unit::Tokens => format!("{value:.0} tokens"),
            Unit::Seconds => format!("{value:.3} s"),
            Unit::Cores => format!("{value:.3} cores"),
            Unit::Bytes => format!("{:.1} MiB ({value:.0} bytes)", value / 1_048_576.0),
        }
    }

    /// A tick label: shorter than [`Unit::format`].
    fn tick(self, value: f64) -> String {
        match self {
            Unit::Usd if value < 1.0 && value != 0.0 => format!("${value:.2}"),
            Unit::Usd => format!("${}", compact(value)),
            Unit::Tokens => compact(value),
            Unit::Cores => format!("{value:.2}"),
            Unit::Bytes => format!("{:.0} MiB", value / 1_048_576.0),
            Unit::Seconds => compact(value),
        }
    }
}

/// `1234` → `1.2k`, `2500000` → `2.5M`; small values keep up to two decimals.
fn compact(value: f64) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 1e9 {
        (value / 1e9, "G")
    } else if magnitude >= 1e6 {
        (value / 1e6, "M")
    } else if magnitude >= 1e4 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = if scaled.fract() == 0.0 || scaled.abs() >= 100.0 {
        format!("{scaled:.0}")
    } else {
        format!("{scaled:.1}")
    };
    format!("{text}{suffix}")
}

/// The top of the y axis and its tick step: a 1, 2 or 5 step giving four or five ticks.
pub fn scale(max: f64) -> (f64, f64) {
    if !max.is_finite() || max <= 0.0 {
        return (1.0, 0.25);
    }
    let rough = max / 4.0;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * power);
    ((max / step).ceil() * step, step)
}

/// Where values land: data space to `viewBox` space.
struct Plot {
    x0: f64,
    x1: f64,
    y_max: f64,
}

impl Plot {
    fn x(&self, value: f64) -> f64 {
        let span = (self.x1 - self.x0).max(f64::MIN_POSITIVE);
        LEFT + (value - self.x0) / span * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, value: f64) -> f64 {
        TOP + (1.0 - (value / self.y_max).clamp(0.0, 1.05)) * (HEIGHT - TOP - BOTTOM)
    }

    /// Opens a figure over time from `from_ms` to `to_ms` whose y axis holds `top` (with room
    /// above it), and draws that axis.
    fn over_time(
        out: &mut String,
        (id, label): (&str, &str),
        (from_ms, to_ms): (i64, i64),
        top: f64,
        unit: Unit,
    ) -> Plot {
        let (y_max, step) = scale(top * 1.08);
        let plot = Plot {
            x0: from_ms as f64,
            x1: to_ms.max(from_ms + 1) as f64,
            y_max,
        };
        open(out, id, label);
        y_axis(out, &plot, step, unit);
        plot
    }

    /// A horizontal line across the plot at `value`, labelled `text` at its right end.
    fn rule(&self, out: &mut String, class: &str, value: f64, text: &str) {
        let y = self.y(value);
        let _ = write!(
            out,
            "<line class=\"{class}\" x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\"><title>{text}</title></line><text class=\"{class}-label\" x=\"{x2}\" y=\"{ty:.1}\" text-anchor=\"end\">{text}</text>",
            x2 = WIDTH - RIGHT,
            ty = y - 3.0,
            text = escape(text),
        );
    }

    /// An SVG path through (time, value) points.
    fn path(&self, points: &[(i64, f64)]) -> String {
        let mut path = String::new();
        for (i, (ts, value)) in points.iter().enumerate() {
            let _ = write!(
                path,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                self.x(*ts as f64),
                self.y(*value)
            );
        }
        path
    }
}

fn open(out: &mut String, id: &str, label: &str) {
    let _ = write!(
        out,
        "<svg id=\"{id}\" class=\"figure\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" role=\"img\" aria-label=\"{label}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{label}</title>",
        id = escape(id),
        label = escape(label)
    );
}

/// The y axis: grid lines and tick labels up to `y_max`.
fn y_axis(out: &mut String, plot: &Plot, step: f64, unit: Unit) {
    let mut tick = 0.0;
    while tick <= plot.y_max + step / 2.0 {
        let y = plot.y(tick);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"axis y\" x=\"{x:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>",
            x2 = WIDTH - RIGHT,
            x = LEFT - 6.0,
            ty = y + 4.0,
            label = escape(&unit.tick(tick)),
        );
        tick += step;
    }
}

fn x_label(out: &mut String, x: f64, text: &str, anchor: &str) {
    let _ = write!(
        out,
        "<text class=\"axis x\" x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">{text}</text>",
        y = HEIGHT - 8.0,
        text = escape(text)
    );
}

/// Stacked columns: one per period, one segment per series (bottom first).
pub struct Stack<'a> {
    pub id: &'a str,
    pub label: &'a str,
    /// Column labels (periods), oldest first.
    pub columns: &'a [String],
    /// (series name, value per column), bottom of the stack first.
    pub series: &'a [(String, Vec<f64>)],
    pub unit: Unit,
}

/// Draws a [`Stack`] with its legend beneath.
pub fn stacked_columns(stack: &Stack<'_>) -> String {
    let count = stack.columns.len().max(1);
    let totals: Vec<f64> = (0..count)
        .map(|c| {
            stack
                .series
                .iter()
                .map(|(_, v)| v.get(c).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    let (y_max, step) = scale(totals.iter().copied().fold(0.0, f64::max));
    let plot = Plot {
        x0: 0.0,
        x1: count as f64,
        y_max,
    };
    let mut out = String::new();
    open(&mut out, stack.id, stack.label);
    y_axis(&mut out, &plot, step, stack.unit);
    let width = (plot.x(1.0) - plot.x(0.0)) * 0.8;
    let every = count.div_ceil(X_LABELS);
    for (c, column) in stack.columns.iter().enumerate() {
        let x = plot.x(c as f64) + width * 0.125;
        let mut base = 0.0;
        let _ = write!(out, "<g class=\"column\">");
        for (s, (name, values)) in stack.series.iter().enumerate() {
            let value = values.get(c).copied().unwrap_or(0.0);
            if value <= 0.0 {
                continue;
            }
            let (top, bottom) = (plot.y(base + value), plot.y(base));
            let _ = write!(
                out,
                "<rect class=\"segment\" data-series=\"{name}\" x=\"{x:.1}\" y=\"{top:.1}\" width=\"{width:.1}\" height=\"{h:.1}\" fill=\"{fill}\"><title>{name} · {column}: {value}</title></rect>",
                name = escape(name),
                h = (bottom - top).max(0.5),
                fill = PALETTE[s.min(PALETTE.len() - 1)],
                column = escape(column),
                value = escape(&stack.unit.exact(value)),
            );
            base += value;
        }
        let _ = write!(out, "</g>");
        if c % every == 0 {
            x_label(&mut out, x + width / 2.0, column, "middle");
        }
    }
    out.push_str("</svg>");
    legend(&mut out, stack.series.iter().map(|(name, _)| name.as_str()));
    out
}

/// Series names with their swatches, in stack order.
fn legend<'a>(out: &mut String, names: impl Iterator<Item = &'a str>) {
    out.push_str("<p class=\"legend\">");
    for (s, name) in names.enumerate() {
        let _ = write!(
            out,
            "<span><i style=\"background:{}\"></i>{}</span> ",
            PALETTE[s.min(PALETTE.len() - 1)],
            escape(name)
        );
    }
    out.push_str("</p>");
}

/// A budget's window: what was used along it, the limit and warning lines, and where the
/// window's average rate leads by its end.
pub struct BurnDown<'a> {
    pub id: &'a str,
    pub label: &'a str,
    pub start_ms: i64,
    pub end_ms: i64,
    pub now_ms: i64,
    /// (time, running total), oldest first; the last is now's.
    pub used: &'a [(i64, f64)],
    pub limit: f64,
    pub warn_at: f64,
    /// The running total the window's average rate reaches at its end, when it has one.
    pub projected: Option<f64>,
    pub unit: Unit,
}

/// Draws a [`BurnDown`].
pub fn burn_down(figure: &BurnDown<'_>) -> String {
    let last = figure.used.last().map_or(0.0, |p| p.1);
    let top = [figure.limit, last, figure.projected.unwrap_or(0.0)]
        .into_iter()
        .fold(0.0, f64::max);
    let mut out = String::new();
    let plot = Plot::over_time(
        &mut out,
        (figure.id, figure.label),
        (figure.start_ms, figure.end_ms),
        top,
        figure.unit,
    );
    plot.rule(
        &mut out,
        "warn",
        figure.limit * figure.warn_at,
        &format!("warn {:.0} %", figure.warn_at * 100.0),
    );
    plot.rule(
        &mut out,
        "limit",
        figure.limit,
        &format!("limit {}", figure.unit.format(figure.limit)),
    );
    let path = plot.path(figure.used);
    let now_x = plot.x(figure.now_ms as f64);
    let _ = write!(
        out,
        "<path class=\"used\" d=\"{path}\"><title>used {used} of {limit}</title></path><circle class=\"now\" cx=\"{now_x:.1}\" cy=\"{y:.1}\" r=\"3\"><title>now: {used}</title></circle>",
        used = escape(&figure.unit.format(last)),
        limit = escape(&figure.unit.format(figure.limit)),
        y = plot.y(last),
    );
    if let Some(projected) = figure.projected {
        let _ = write!(
            out,
            "<path class=\"projection\" d=\"M{now_x:.1},{y0:.1} L{x1:.1},{y1:.1}\"><title>projected {value} at the window's end, at its average rate so far</title></path>",
            y0 = plot.y(last),
            x1 = plot.x(figure.end_ms as f64),
            y1 = plot.y(projected),
            value = escape(&figure.unit.format(projected)),
        );
    }
    x_label(&mut out, LEFT, &stamp(figure.start_ms), "start");
    x_label(&mut out, WIDTH - RIGHT, &stamp(figure.end_ms), "end");
    out.push_str("</svg>");
    out
}

/// One value over time, with an optional limit line.
pub struct Line<'a> {
    pub id: &'a str,
    pub label: &'a str,
    pub from_ms: i64,
    pub to_ms: i64,
    pub points: &'a [(i64, f64)],
    pub limit: Option<f64>,
    pub unit: Unit,
}

/// Draws a [`Line`].
pub fn line(figure: &Line<'_>) -> String {
    let top = figure
        .points
        .iter()
        .map(|p| p.1)
        .chain(figure.limit)
        .fold(0.0, f64::max);
    let mut out = String::new();
    let plot = Plot::over_time(
        &mut out,
        (figure.id, figure.label),
        (figure.from_ms, figure.to_ms),
        top,
        figure.unit,
    );
    if let Some(limit) = figure.limit {
        plot.rule(
            &mut out,
            "limit",
            limit,
            &format!("limit {}", figure.unit.format(limit)),
        );
    }
    let path = plot.path(figure.points);
    let peak = figure.points.iter().map(|p| p.1).fold(0.0, f64::max);
    let _ = write!(
        out,
        "<path class=\"series\" d=\"{path}\"><title>peak {peak}, last {last}</title></path>",
        peak = escape(&figure.unit.format(peak)),
        last = escape(
            &figure
                .unit
                .format(figure.points.last().map_or(0.0, |p| p.1))
        ),
    );
    for (ts, value) in figure.points {
        let _ = write!(
            out,
            "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.5\"><title>{}: {}</title></circle>",
            plot.x(*ts as f64),
            plot.y(*value),
            clock(*ts),
            escape(&figure.unit.exact(*value))
        );
    }
    x_label(&mut out, LEFT, &clock(figure.from_ms), "start");
    x_label(&mut out, WIDTH - RIGHT, &clock(figure.to_ms), "end");
    out.push_str("</svg>");
    out
}

/// Horizontal bars: (label, value) rows, several groups (e.g. 24 h and 7 d) per row.
pub struct Bars<'a> {
    pub id: &'a str,
    pub label: &'a str,
    /// Group names, in drawing order (one bar per group in each row).
    pub groups: &'a [&'a str],
    /// (row label, value per group).
    pub rows: &'a [(&'a str, Vec<f64>)],
    pub unit: Unit,
}

/// Draws [`Bars`] with its legend beneath; each bar's exact figure is written beside it.
pub fn bars(figure: &Bars<'_>) -> String {
    let max = figure
        .rows
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let bar = 11.0;
    let row_height = bar * figure.groups.len() as f64 + 8.0;
    let height = TOP + row_height * figure.rows.len() as f64;
    // Row labels end at `LEFT + 50`, bars start beyond, values are written after them.
    let inner = WIDTH - LEFT - 58.0 - 70.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg id=\"{id}\" class=\"figure\" viewBox=\"0 0 {WIDTH} {height:.0}\" width=\"100%\" role=\"img\" aria-label=\"{label}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{label}</title>",
        id = escape(figure.id),
        label = escape(figure.label)
    );
    for (r, (name, values)) in figure.rows.iter().enumerate() {
        let y = TOP + r as f64 * row_height;
        let _ = write!(
            out,
            "<text class=\"axis y\" x=\"{x:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">{name}</text>",
            x = LEFT + 50.0,
            ty = y + bar * figure.groups.len() as f64 / 2.0 + 4.0,
            name = escape(name)
        );
        for (g, group) in figure.groups.iter().enumerate() {
            let value = values.get(g).copied().unwrap_or(0.0);
            let by = y + g as f64 * bar;
            let w = (value / max * inner).max(if value > 0.0 { 1.0 } else { 0.0 });
            let text = figure.unit.format(value);
            let _ = write!(
                out,
                "<rect class=\"bar\" data-row=\"{name}\" data-group=\"{group}\" x=\"{x:.1}\" y=\"{by:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{fill}\"><title>{name} · {group}: {exact}</title></rect><text class=\"value\" x=\"{tx:.1}\" y=\"{ty:.1}\">{text}</text>",
                exact = escape(&figure.unit.exact(value)),
                name = escape(name),
                group = escape(group),
                x = LEFT + 58.0,
                h = bar - 2.0,
                fill = PALETTE[(g * 3).min(PALETTE.len() - 1)],
                tx = LEFT + 62.0 + w,
                ty = by + bar - 3.0,
                text = escape(&text),
            );
        }
    }
    out.push_str("</svg>");
    out.push_str("<p class=\"legend\">");
    for (g, group) in figure.groups.iter().enumerate() {
        let _ = write!(
            out,
            "<span><i style=\"background:{}\"></i>{}</span> ",
            PALETTE[(g * 3).min(PALETTE.len() - 1)],
            escape(group)
        );
    }
    out.push_str("</p>");
    out
}

/// A date and time for an axis label, UTC: `Dec 01 14:00`.
pub fn stamp(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|ts| ts.strftime("%b %d %H:%M").to_string())
        .unwrap_or_default()
}

/// A time for an axis label, UTC: `14:00`, or `Dec 01` at midnight.
pub fn clock(ms: i64) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return String::new();
    };
    let time = ts.to_zoned(jiff::tz::TimeZone::UTC);
    if time.hour() == 0 && time.minute() == 0 {
        time.strftime("%b %d").to_string()
    } else {
        time.strftime("%H:%M").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_round_and_hold_the_maximum() {
        assert_eq!(scale(0.0), (1.0, 0.25));
        assert_eq!(scale(9.3), (10.0, 5.0));
        for max in [0.013, 0.9, 7.0, 93.0, 1234.0, 5e6] {
            let (top, step) = scale(max);
            assert!(top >= max, "{max}: top {top}");
            assert!(
                top / step <= 5.0 + 1e-9 && top / step >= 2.0 - 1e-9,
                "{max}: {top}/{step}"
            );
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!(
                [1.0, 2.0, 5.0].iter().any(|m| (m - mantissa).abs() < 1e-9),
                "{max}: step {step}"
            );
        }
    }

    #[test]
    fn values_read_as_people_write_them() {
        assert_eq!(Unit::Usd.format(1.234), "$1.23");
        assert_eq!(Unit::Usd.format(0.0012), "$0.0012");
        assert_eq!(Unit::Tokens.format(12_345.0), "12.3k");
        assert_eq!(Unit::Tokens.format(2_500_000.0), "2.5M");
        assert_eq!(Unit::Bytes.format(3.0 * 1_048_576.0), "3.0 MiB");
        assert_eq!(clock(1_795_392_000_000), "Nov 23");
        assert_eq!(clock(1_795_392_000_000 + 14 * 3_600_000), "14:00");
        assert_eq!(stamp(1_795_392_000_000 + 14 * 3_600_000), "Nov 23 14:00");
    }

    #[test]
    fn stacks_keep_the_legend_order_and_titles_carry_exact_figures() {
        let columns = ["10:00".to_string(), "11:00".to_string()];
        let series = [
            ("coder".to_string(), vec![1.0, 2.0]),
            ("<rev>".to_string(), vec![0.0, 0.5]),
        ];
        let svg = stacked_columns(&Stack {
            id: "spend",
            label: "Spend",
            columns: &columns,
            series: &series,
            unit: Unit::Usd,
        });
        assert_eq!(
            svg.matches("<rect class=\"segment\"").count(),
            3,
            "zeros draw nothing"
        );
        assert!(svg.contains("<title>&lt;rev&gt; · 11:00: $0.5000</title>"));
        assert!(
            svg.contains(">$3</text>"),
            "the axis holds the tallest column: {svg}"
        );
        let legend = svg.split("class=\"legend\"").nth(1).expect("a legend");
        assert!(legend.find("coder") < legend.find("&lt;rev&gt;"));
    }

    #[test]
    fn a_burn_down_draws_the_limit_and_where_the_rate_leads() {
        let used = [(0, 0.0), (3_600_000, 4.0)];
        let svg = burn_down(&BurnDown {
            id: "b",
            label: "b",
            start_ms: 0,
            end_ms: 7_200_000,
            now_ms: 3_600_000,
            used: &used,
            limit: 10.0,
            warn_at: 0.9,
            projected: Some(8.0),
            unit: Unit::Usd,
        });
        assert!(svg.contains("class=\"limit\"") && svg.contains("limit $10.00"));
        assert!(svg.contains("warn 90 %"));
        assert!(svg.contains("projected $8.00 at the window's end"));
        // The used line ends where the projection starts.
        let end = svg
            .split("class=\"used\" d=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a path");
        let last = end
            .rsplit(' ')
            .next()
            .expect("a point")
            .trim_start_matches('L');
        assert!(
            svg.contains(&format!("class=\"projection\" d=\"M{last}")),
            "{svg}"
        );
    }
}
