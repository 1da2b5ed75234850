//! The page's figures from what costmeter already keeps: the hourly spend rollup (spend by
//! agent, tokens by kind, usage budgets' burn-down), the budgets' statuses, and the last
//! hour of resource samples (each target's CPU and memory, resource budgets' burn-down).
//! Pure: the clock is an argument. Every figure is bounded: at most [`AGENTS`] series, 24 or
//! 7 columns, [`MINUTES`] points per target line, hourly points along a budget's window.

use std::collections::HashMap;
use std::fmt::Write;

use super::escape;
use super::svg::{self, Unit};
use crate::budget::{BudgetStatus, Resource, Window};
use crate::spend::{KINDS, SpendByHour};
use crate::store::ResourcePoint;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Agents drawn by name in a spend figure; the rest are summed as "other".
pub const AGENTS: usize = 6;
/// Points on a target's line: one per minute of the last hour.
pub const MINUTES: usize = 60;
/// Targets and budgets drawn; the tables list the rest.
pub const FIGURES: usize = 8;

fn hour_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR_MS)
}

/// Spend by agent in `columns` periods of `period_ms` ending with the one holding `now_ms`,
/// stacked; `None` when nothing was spent and no tokens were used.
pub fn spend_by_agent(
    spend: &SpendByHour,
    now_ms: i64,
    period_ms: i64,
    columns: usize,
    id: &str,
    label: &str,
) -> Option<String> {
    let last = now_ms - now_ms.rem_euclid(period_ms);
    let first = last - (columns as i64 - 1) * period_ms;
    let mut by_agent: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut tokens = 0;
    for (hour, pairs) in spend.hours(first, now_ms) {
        let column = ((hour - first) / period_ms) as usize;
        if column >= columns {
            continue;
        }
        for ((agent, _), usage) in pairs {
            by_agent
                .entry(agent.as_str())
                .or_insert_with(|| vec![0.0; columns])[column] += usage.usd;
            tokens += usage.tokens;
        }
    }
    if by_agent.is_empty() || tokens == 0 && by_agent.values().flatten().all(|v| *v == 0.0) {
        return None;
    }
    let mut ranked: Vec<(&str, Vec<f64>)> = by_agent.into_iter().collect();
    ranked.sort_by(|a, b| {
        let (ta, tb): (f64, f64) = (a.1.iter().sum(), b.1.iter().sum());
        tb.total_cmp(&ta).then_with(|| a.0.cmp(b.0))
    });
    let mut series: Vec<(String, Vec<f64>)> = Vec::new();
    for (rank, (agent, values)) in ranked.into_iter().enumerate() {
        if rank < AGENTS {
            let name = if agent.is_empty() {
                "(no agent)"
            } else {
                agent
            };
            series.push((name.to_string(), values));
        } else if let Some((_, other)) = series.get_mut(AGENTS) {
            for (sum, value) in other.iter_mut().zip(values) {
                *sum += value;
            }
        } else {
            series.push(("other".to_string(), values));
        }
    }
    let labels: Vec<String> = (0..columns)
        .map(|c| svg::clock(first + c as i64 * period_ms))
        .collect();
    Some(svg::stacked_columns(&svg::Stack {
        id,
        label,
        columns: &labels,
        series: &series,
        unit: Unit::Usd,
    }))
}

/// Tokens by kind over the last 24 hours and 7 days; `None` when there were none.
pub fn tokens_by_kind(spend: &SpendByHour, now_ms: i64) -> Option<String> {
    let mut totals = [[0u64; 4]; 2];
    for (hour, pairs) in spend.hours(now_ms - 7 * DAY_MS, now_ms) {
        for usage in pairs.values() {
            for (k, n) in usage.kinds.iter().enumerate() {
                totals[1][k] += n;
                if hour >= hour_of(now_ms - DAY_MS) {
                    totals[0][k] += n;
                }
            }
        }
    }
    if totals[1].iter().all(|n| *n == 0) {
        return None;
    }
    let rows: Vec<(&str, Vec<f64>)> = KINDS
        .iter()
        .enumerate()
        .map(|(k, kind)| (*kind, vec![totals[0][k] as f64, totals[1][k] as f64]))
        .collect();
    Some(svg::bars(&svg::Bars {
        id: "tokens-by-kind",
        label: "Tokens by kind, last 24 hours and 7 days",
        groups: &["last 24 h", "last 7 d"],
        rows: &rows,
        unit: Unit::Tokens,
    }))
}

/// Where a budget's window starts and ends for its figure, and whether a projection to the
/// end means anything (calendar windows only: a rolling window has no end to reach).
fn span_of(budget: &BudgetStatus, now_ms: i64) -> (i64, i64, bool) {
    match (budget.window_start_ms, budget.window_end_ms) {
        (Some(start), Some(end)) => (start, end, true),
        _ => match Window::parse(&budget.window) {
            Ok(Window::Rolling(d)) => (now_ms - d.as_millis() as i64, now_ms, false),
            _ => (now_ms - crate::spend::KEPT_MS + HOUR_MS, now_ms, false),
        },
    }
}

/// Amount the budget counts from one hour's usage or one resource sample.
fn usage_amount(budget: &BudgetStatus, usage: &crate::spend::Usage) -> f64 {
    match budget.resource {
        Resource::Usd => usage.usd,
        Resource::Tokens => usage.tokens as f64,
        _ => 0.0,
    }
}

/// The running total along the window, hour by hour (usage budgets, from the rollup) or
/// minute by minute over the last hour (CPU and disk budgets, from the samples). What the
/// kept data does not reach (before the rollup's eight days, before the last hour of samples)
/// is the budget's `used` less what it does reach, drawn flat from the window's start; the
/// line always ends at `used`.
fn running_total(
    budget: &BudgetStatus,
    spend: &SpendByHour,
    samples: &[ResourcePoint],
    start: i64,
    now_ms: i64,
) -> Vec<(i64, f64)> {
    let mut steps: Vec<(i64, f64)> = Vec::new();
    match budget.resource {
        Resource::Usd | Resource::Tokens if budget.target.is_none() => {
            for (hour, pairs) in spend.hours(start, now_ms) {
                let amount: f64 = pairs
                    .iter()
                    .filter(|((agent, _), _)| budget.agent.as_ref().is_none_or(|a| a == agent))
                    .map(|(_, usage)| usage_amount(budget, usage))
                    .sum();
                steps.push(((hour + HOUR_MS).min(now_ms), amount));
            }
        }
        Resource::CpuSeconds | Resource::DiskBytes => {
            let mut minutes: std::collections::BTreeMap<i64, f64> = Default::default();
            for point in samples.iter().filter(|p| p.ts_ms >= start) {
                if budget.target.as_ref().is_some_and(|t| *t != point.target) {
                    continue;
                }
                let amount = if budget.resource == Resource::CpuSeconds {
                    point.cpu_seconds
                } else {
                    point.disk_bytes
                };
                *minutes
                    .entry(point.ts_ms - point.ts_ms.rem_euclid(MINUTE_MS))
                    .or_default() += amount;
            }
            steps.extend(
                minutes
                    .into_iter()
                    .map(|(minute, amount)| ((minute + MINUTE_MS).min(now_ms), amount)),
            );
        }
        _ => {}
    }
    let reached: f64 = steps.iter().map(|s| s.1).sum();
    let mut total = (budget.used - reached).max(0.0);
    let mut points = vec![(start, total)];
    if let Some(first) = steps.first().map(|s| s.0) {
        // Flat until the kept data begins.
        let begins = first
            - if budget.resource.is_usage() {
                HOUR_MS
            } else {
                MINUTE_MS
            };
        if begins > start {
            points.push((begins, total));
        }
    }
    for (ts, amount) in steps {
        total += amount;
        points.push((ts.max(start), total));
    }
    points.push((now_ms, budget.used));
    points
}

/// One burn-down figure per budget (but memory, a level drawn on its target's memory figure),
/// at most [`FIGURES`].
pub fn burn_downs(
    budgets: &[BudgetStatus],
    spend: &SpendByHour,
    samples: &[ResourcePoint],
    now_ms: i64,
) -> String {
    let mut out = String::new();
    for (index, budget) in budgets
        .iter()
        .filter(|b| b.resource != Resource::MemBytes)
        .take(FIGURES)
        .enumerate()
    {
        let (start, end, projects) = span_of(budget, now_ms);
        let used = running_total(budget, spend, samples, start, now_ms);
        let elapsed = (now_ms - start).max(1) as f64;
        let projected = (projects && end > now_ms)
            .then(|| budget.used + budget.used / elapsed * (end - now_ms) as f64);
        let unit = match budget.resource {
            Resource::Usd => Unit::Usd,
            Resource::Tokens => Unit::Tokens,
            Resource::CpuSeconds => Unit::Seconds,
            _ => Unit::Bytes,
        };
        let label = format!(
            "Budget {}: {} of {} used, window {}",
            budget.name,
            unit.format(budget.used),
            unit.format(budget.limit),
            budget.window
        );
        let _ = write!(
            out,
            "<figure class=\"burn\" data-budget=\"{}\"><figcaption>{} <span class=\"muted\">{} · {}</span></figcaption>",
            escape(&budget.name),
            escape(&budget.name),
            escape(&budget.window),
            budget.state.label()
        );
        out.push_str(&svg::burn_down(&svg::BurnDown {
            id: &format!("burn-{index}"),
            label: &label,
            start_ms: start,
            end_ms: end,
            now_ms,
            used: &used,
            limit: budget.limit,
            warn_at: budget.warn_at,
            projected,
            unit,
        }));
        out.push_str("</figure>");
    }
    out
}

/// Each target's CPU (cores, per minute) and memory (largest RSS in each minute) over the last
/// hour, with memory budgets' limits; at most [`FIGURES`] targets.
pub fn targets(
    targets: &[String],
    samples: &[ResourcePoint],
    budgets: &[BudgetStatus],
    now_ms: i64,
) -> Option<String> {
    let from = now_ms - HOUR_MS;
    let mut out = String::new();
    for (index, target) in targets.iter().take(FIGURES).enumerate() {
        // Per minute: CPU seconds over the seconds the samples span (cores, so a minute
        // only partly sampled reads true), and the largest RSS.
        let mut cpu: std::collections::BTreeMap<i64, (f64, f64)> = Default::default();
        let mut rss: std::collections::BTreeMap<i64, f64> = Default::default();
        let mut previous: Option<i64> = None;
        for point in samples
            .iter()
            .filter(|p| p.target == *target && p.ts_ms >= from)
        {
            let minute = point.ts_ms - point.ts_ms.rem_euclid(MINUTE_MS);
            if let Some(before) = previous.filter(|b| point.ts_ms > *b) {
                let slot = cpu.entry(minute).or_default();
                slot.0 += point.cpu_seconds;
                slot.1 += (point.ts_ms - before) as f64 / 1000.0;
            }
            previous = Some(point.ts_ms);
            let peak = rss.entry(minute).or_default();
            *peak = peak.max(point.rss_bytes);
        }
        if rss.is_empty() {
            continue;
        }
        let limit = budgets
            .iter()
            .filter(|b| {
                b.resource == Resource::MemBytes && b.target.as_ref().is_none_or(|t| t == target)
            })
            .map(|b| b.limit)
            .reduce(f64::min);
        let _ = write!(
            out,
            "<figure class=\"target\" data-target=\"{}\"><figcaption>{}</figcaption><div class=\"pair\">",
            escape(target),
            escape(target)
        );
        let cpu: Vec<(i64, f64)> = cpu
            .into_iter()
            .map(|(minute, (seconds, span))| (minute, seconds / span))
            .take(MINUTES + 1)
            .collect();
        let rss: Vec<(i64, f64)> = rss.into_iter().take(MINUTES + 1).collect();
        for (kind, caption, label, points, limit, unit) in [
            (
                "cpu",
                "CPU, cores (per minute)",
                "CPU over the last hour, cores",
                &cpu,
                None,
                Unit::Cores,
            ),
            (
                "mem",
                "memory, largest RSS (per minute)",
                "memory over the last hour",
                &rss,
                limit,
                Unit::Bytes,
            ),
        ] {
            let _ = write!(out, "<div><span class=\"muted\">{caption}</span>");
            out.push_str(&svg::line(&svg::Line {
                id: &format!("{kind}-{index}"),
                label: &format!("{target}: {label}"),
                from_ms: from,
                to_ms: now_ms,
                points,
                limit,
                unit,
            }));
            out.push_str("</div>");
        }
        out.push_str("</div></figure>");
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HourlySpend;

    const NOW: i64 = 1_795_428_000_000 + 30 * MINUTE_MS;

    fn usage(hours_ago: i64, agent: &str, usd: f64) -> HourlySpend {
        HourlySpend {
            hour_ms: NOW - hours_ago * HOUR_MS,
            agent: agent.into(),
            model: "m".into(),
            tokens: 100,
            kinds: [60, 20, 0, 20],
            usd,
            events: 1,
            confidence: "priced".into(),
        }
    }

    fn rollup(entries: &[HourlySpend]) -> SpendByHour {
        let mut spend = SpendByHour::default();
        for entry in entries {
            spend.add(entry, NOW);
        }
        spend
    }

    #[test]
    fn spend_stacks_the_costliest_agents_and_sums_the_rest() {
        let mut entries: Vec<HourlySpend> = (0..9)
            .map(|i| usage(i, &format!("agent-{i}"), 1.0 + i as f64))
            .collect();
        entries.push(usage(30, "old", 50.0));
        let spend = rollup(&entries);
        let svg = spend_by_agent(&spend, NOW, HOUR_MS, 24, "day", "Spend").expect("a figure");
        assert_eq!(svg.matches("<g class=\"column\">").count(), 24);
        assert!(!svg.contains("data-series=\"old\""), "outside 24 h");
        // agent-8 ($9) is the costliest; agents 0..2 ($1+$2+$3) are summed as other.
        assert!(svg.contains("data-series=\"agent-8\""));
        assert!(!svg.contains("data-series=\"agent-2\""));
        assert!(svg.contains("other · "));
        let week = spend_by_agent(&spend, NOW, DAY_MS, 7, "week", "Spend").expect("a figure");
        assert!(week.contains("data-series=\"old\""));
        assert!(spend_by_agent(&rollup(&[]), NOW, HOUR_MS, 24, "d", "S").is_none());
    }

    #[test]
    fn tokens_are_split_by_kind() {
        let spend = rollup(&[usage(1, "a", 1.0), usage(48, "a", 1.0)]);
        let svg = tokens_by_kind(&spend, NOW).expect("a figure");
        assert!(
            svg.contains("<title>input · last 24 h: 60 tokens</title>"),
            "{svg}"
        );
        assert!(svg.contains("<title>input · last 7 d: 120 tokens</title>"));
        assert!(svg.contains("<title>cache_write · last 7 d: 0 tokens</title>"));
    }

    #[test]
    fn a_burn_down_ends_at_the_budgets_figure_and_projects_its_average_rate() {
        let spend = rollup(&[
            usage(2, "coder", 1.0),
            usage(1, "coder", 2.0),
            usage(1, "other", 5.0),
        ]);
        let mut budget = BudgetStatus::sample("b", Some("coder"), 3.5);
        budget.window = "day".into();
        let start = NOW - 10 * HOUR_MS - 30 * MINUTE_MS;
        budget.window_start_ms = Some(start);
        budget.window_end_ms = Some(start + DAY_MS);
        let points = running_total(&budget, &spend, &[], start, NOW);
        // $0.50 of used is older than the rollup reaches: the line starts there.
        assert_eq!(points.first(), Some(&(start, 0.5)));
        assert_eq!(points.last(), Some(&(NOW, 3.5)));
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
        let html = burn_downs(&[budget], &spend, &[], NOW);
        // $3.50 over 10.5 h → $4.50 more in the 13.5 h left.
        assert!(
            html.contains("projected $8.00 at the window's end"),
            "{html}"
        );
        assert!(
            html.contains(">Nov 23 00:00</text>"),
            "the window's start is labelled"
        );
    }

    #[test]
    fn targets_draw_cpu_in_cores_and_memory_against_its_limit() {
        let samples: Vec<ResourcePoint> = (0..120)
            .map(|i| ResourcePoint {
                ts_ms: NOW - HOUR_MS + i * 30_000,
                target: "agent".into(),
                cpu_seconds: 15.0,
                disk_bytes: 0.0,
                rss_bytes: (100 + i) as f64 * 1_048_576.0,
            })
            .collect();
        let mut mem = BudgetStatus::sample("mem", None, 0.0);
        mem.resource = Resource::MemBytes;
        mem.limit = 512.0 * 1_048_576.0;
        let html =
            targets(&["agent".into(), "idle".into()], &samples, &[mem], NOW).expect("a figure");
        assert_eq!(
            html.matches("<figure class=\"target\"").count(),
            1,
            "no samples, no figure"
        );
        assert!(
            html.contains(": 0.500 cores</title>"),
            "15 s of CPU every 30 s: {html}"
        );
        assert!(html.contains("limit 512.0 MiB"));
        assert!(html.contains("peak 219.0 MiB"));
    }
}
