//! `/metrics` encodings: OpenMetrics straight from `prometheus-client`, and the Prometheus text
//! format 0.0.4 derived from it.
//!
//! `prometheus-client` speaks only OpenMetrics: a counter family is named without `_total` in its
//! `# TYPE` line, and it writes `# UNIT`, exemplars and `# EOF`, all of which the 0.0.4 parser and
//! `promtool check metrics` reject. Upstream tracks this as client_rust #51; until it lands, the
//! 0.0.4 answer is the OpenMetrics text rewritten line by line.

use std::collections::HashSet;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which encoding a scraper gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    PrometheusText,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it (as Prometheus does when it wants
    /// exemplars), the 0.0.4 text otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::PrometheusText,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::PrometheusText => PROMETHEUS_TEXT,
            Format::OpenMetrics => OPENMETRICS_TEXT,
        }
    }
}

/// Encodes the registry in the requested format.
pub fn render(registry: &Registry, format: Format) -> String {
    let mut openmetrics = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = encode(&mut openmetrics, registry);
    match format {
        Format::OpenMetrics => openmetrics,
        Format::PrometheusText => openmetrics_to_prometheus_text(&openmetrics),
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: counter families get their `_total`
/// name, `# UNIT`, `# EOF`, exemplars and `_created` samples go, `unknown` becomes `untyped`.
pub fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str("# HELP ");
            push_family_name(&mut out, name, &counters);
            out.push(' ');
            // OpenMetrics escapes quotes in help text; 0.0.4 does not.
            out.push_str(&help.replace("\\\"", "\""));
            out.push('\n');
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            out.push_str("# TYPE ");
            push_family_name(&mut out, name, &counters);
            out.push(' ');
            out.push_str(match kind {
                "counter" | "gauge" | "histogram" | "summary" => kind,
                _ => "untyped",
            });
            out.push('\n');
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = strip_exemplar(line);
        let name_end = sample.find(['{', ' ']).unwrap_or(sample.len());
        if let Some(family) = sample[..name_end].strip_suffix("_created")
            && counters.contains(family)
        {
            continue;
        }
        // An unlabelled series kept in a family (so it can be absent) encodes as `name{}`.
        match sample
            .get(name_end..)
            .and_then(|rest| rest.strip_prefix("{}"))
        {
            Some(rest) => {
                out.push_str(&sample[..name_end]);
                out.push_str(rest);
            }
            None => out.push_str(sample),
        }
        out.push('\n');
    }
    out
}

fn push_family_name(out: &mut String, name: &str, counters: &HashSet<&str>) {
    out.push_str(name);
    if counters.contains(name) {
        out.push_str("_total");
    }
}

/// The sample without its ` # {…} value` exemplar. Label values may contain `#`, so the
/// exemplar is looked for only after the label set's closing brace.
fn strip_exemplar(line: &str) -> &str {
    // Most lines carry no exemplar: a substring search (fast, byte-wise) says so before any
    // character-by-character walk.
    if !line.contains(" # ") {
        return line;
    }
    let mut in_quotes = false;
    let mut escaped = false;
    let mut labels_end = line.find(' ').unwrap_or(line.len());
    if let Some(open) = line.find('{').filter(|&open| open < labels_end) {
        labels_end = line.len();
        for (offset, c) in line[open..].char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '}' if !in_quotes => {
                    labels_end = open + offset + 1;
                    break;
                }
                _ => {}
            }
        }
    }
    match line[labels_end..].find(" # ") {
        Some(at) => &line[..labels_end + at],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = "# HELP haios_tokens Tokens \\\"quoted\\\".\n\
# TYPE haios_tokens counter\n\
haios_tokens_total{agent=\"a # b\",kind=\"input\"} 7 # {trace_id=\"abc\"} 7.0 1700000000.0\n\
haios_tokens_created{agent=\"a\"} 1700000000.0\n\
# HELP haios_cpu_seconds CPU.\n\
# TYPE haios_cpu_seconds counter\n\
# UNIT haios_cpu_seconds seconds\n\
haios_cpu_seconds_total{target=\"x\"} 1.5\n\
# HELP haios_up Up.\n\
# TYPE haios_up gauge\n\
haios_up 1\n\
# HELP haios_odd Odd.\n\
# TYPE haios_odd unknown\n\
haios_odd 3\n\
# HELP haios_stamp Stamp.\n\
# TYPE haios_stamp gauge\n\
haios_stamp{} 17.5\n\
# EOF\n";

    #[test]
    fn counters_get_total_names_and_openmetrics_only_lines_go() {
        let text = openmetrics_to_prometheus_text(OPENMETRICS);
        assert_eq!(
            text,
            "# HELP haios_tokens_total Tokens \"quoted\".\n\
# TYPE haios_tokens_total counter\n\
haios_tokens_total{agent=\"a # b\",kind=\"input\"} 7\n\
# HELP haios_cpu_seconds_total CPU.\n\
# TYPE haios_cpu_seconds_total counter\n\
haios_cpu_seconds_total{target=\"x\"} 1.5\n\
# HELP haios_up Up.\n\
# TYPE haios_up gauge\n\
haios_up 1\n\
# HELP haios_odd Odd.\n\
# TYPE haios_odd untyped\n\
haios_odd 3\n\
# HELP haios_stamp Stamp.\n\
# TYPE haios_stamp gauge\n\
haios_stamp 17.5\n"
        );
    }

    #[test]
    fn accept_header_chooses_the_format() {
        assert_eq!(Format::negotiate(None), Format::PrometheusText);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("text/plain")),
            Format::PrometheusText
        );
    }
}
