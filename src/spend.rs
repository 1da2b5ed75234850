//! Spend by hour, agent and model over the last eight days, kept as events commit (the ledger
//! adds each new usage event; a store scan fills it once at start). `/v1/status` and the page
//! read their 24-hour and 7-day figures from it — whole hours, by the events' timestamps —
//! instead of scanning raw events, so neither grows slower as the store fills.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use crate::budget::BudgetStatus;
use crate::report::{Report, SpendLine, iso};
use crate::store::HourlySpend;

const HOUR_MS: i64 = 3_600_000;
/// How far back the rollup keeps hours.
pub const KEPT_MS: i64 = 8 * 24 * HOUR_MS;

/// Token kinds kept per hour, in this order: input neither read from nor written to a cache,
/// cache reads, cache writes, output (the `type` label values of the token counter).
pub const KINDS: [&str; 4] = ["input", "cache_read", "cache_write", "output"];

/// One agent and model's usage within one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Input plus output tokens: what token budgets and reports count.
    pub tokens: u64,
    /// Tokens by [`KINDS`].
    pub kinds: [u64; 4],
    pub usd: f64,
}

/// (agent, model) → usage within one hour.
pub type Pairs = HashMap<(String, String), Usage>;

#[derive(Debug, Default, Clone)]
pub struct SpendByHour {
    /// Hour start (ms) → its pairs.
    hours: BTreeMap<i64, Pairs>,
    /// Hour start (ms) → confidence → (usage events, USD): how the USD was obtained.
    confidence: BTreeMap<i64, BTreeMap<String, (u64, f64)>>,
}

/// The rollup shared by the ledger (writer) and the API (readers).
pub type SharedSpend = Arc<RwLock<SpendByHour>>;

fn hour_of(ts_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(HOUR_MS)
}

impl SpendByHour {
    /// Adds one event's (or one stored hour's) usage, if it falls within the kept hours
    /// before `now_ms`.
    pub fn add(&mut self, usage: &HourlySpend, now_ms: i64) {
        if usage.hour_ms < now_ms - KEPT_MS {
            return;
        }
        let slot = self
            .hours
            .entry(hour_of(usage.hour_ms))
            .or_default()
            .entry((usage.agent.clone(), usage.model.clone()))
            .or_default();
        slot.tokens += usage.tokens;
        for (kept, added) in slot.kinds.iter_mut().zip(usage.kinds) {
            *kept += added;
        }
        slot.usd += usage.usd;
        let by = self
            .confidence
            .entry(hour_of(usage.hour_ms))
            .or_default()
            .entry(usage.confidence.clone())
            .or_default();
        by.0 += usage.events;
        by.1 += usage.usd;
    }

    /// Usage events and USD by confidence over the whole hours from `from_ms` (rounded down
    /// to its hour) to `to_ms`, added to `into`.
    pub fn confidence(&self, from_ms: i64, to_ms: i64, into: &mut BTreeMap<String, (u64, f64)>) {
        for (_, by) in self.confidence.range(hour_of(from_ms)..=to_ms) {
            for (confidence, (events, usd)) in by {
                let slot = into.entry(confidence.clone()).or_default();
                slot.0 += events;
                slot.1 += usd;
            }
        }
    }

    /// The kept hours from `from_ms` (rounded down to its hour) to `to_ms`, oldest first.
    pub fn hours(&self, from_ms: i64, to_ms: i64) -> impl Iterator<Item = (i64, &Pairs)> {
        self.hours
            .range(hour_of(from_ms)..=to_ms)
            .map(|(hour, pairs)| (*hour, pairs))
    }

    /// Drops hours older than the kept span.
    pub fn prune(&mut self, now_ms: i64) {
        let horizon = hour_of(now_ms - KEPT_MS);
        self.hours = self.hours.split_off(&horizon);
        self.confidence = self.confidence.split_off(&horizon);
    }

    /// The (day, agent, model) lines of the whole hours from `from_ms` (rounded down to its
    /// hour) to `to_ms`.
    pub fn lines(&self, from_ms: i64, to_ms: i64) -> Vec<SpendLine> {
        let mut lines: HashMap<(String, &str, &str), (u64, f64)> = HashMap::new();
        for (hour, pairs) in self.hours(from_ms, to_ms) {
            let day = iso(hour).get(..10).unwrap_or_default().to_string();
            for ((agent, model), usage) in pairs {
                let line = lines
                    .entry((day.clone(), agent.as_str(), model.as_str()))
                    .or_default();
                line.0 += usage.tokens;
                line.1 += usage.usd;
            }
        }
        lines
            .into_iter()
            .map(|((day, agent, model), (tokens, usd))| SpendLine {
                day,
                agent: agent.to_string(),
                model: model.to_string(),
                tokens,
                usd,
            })
            .collect()
    }

    /// A report of the whole hours from `from_ms` to `to_ms`: totals, and the costliest
    /// (day, agent, model) lines with the rest summed; no tasks or failures (those need the
    /// store: `GET /v1/report`).
    pub fn report(&self, from_ms: i64, to_ms: i64, budgets: Vec<BudgetStatus>) -> Report {
        Report::assemble(
            from_ms,
            to_ms,
            self.lines(from_ms, to_ms),
            Vec::new(),
            Vec::new(),
            budgets,
        )
    }
}

/// Whether the rollup holds every whole hour from `from_ms` on at `now_ms`.
pub fn covers(from_ms: i64, now_ms: i64) -> bool {
    from_ms >= now_ms - KEPT_MS + HOUR_MS
}

/// The first hour boundary at or after `ms`: where a window's whole hours begin.
pub fn next_hour(ms: i64) -> i64 {
    let start = hour_of(ms);
    if start == ms { ms } else { start + HOUR_MS }
}

/// Reads the shared rollup.
pub fn report(spend: &SharedSpend, from_ms: i64, to_ms: i64, budgets: Vec<BudgetStatus>) -> Report {
    spend
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .report(from_ms, to_ms, budgets)
}

/// The whole hours' lines from `from_ms` (an hour boundary) to `to_ms`.
pub fn lines(spend: &SharedSpend, from_ms: i64, to_ms: i64) -> Vec<SpendLine> {
    spend
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .lines(from_ms, to_ms)
}

/// [`SpendByHour::confidence`] of the shared rollup.
pub fn confidence(
    spend: &SharedSpend,
    from_ms: i64,
    to_ms: i64,
    into: &mut BTreeMap<String, (u64, f64)>,
) {
    spend
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .confidence(from_ms, to_ms, into);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_428_000_000;

    #[test]
    fn hours_add_up_into_windows_and_old_ones_go() {
        let mut spend = SpendByHour::default();
        let usage = |hour_ms, tokens, usd| HourlySpend {
            hour_ms,
            agent: "a".into(),
            model: "m".into(),
            tokens,
            kinds: [tokens, 0, 0, 0],
            usd,
            events: 1,
            confidence: "priced".into(),
        };
        spend.add(&usage(NOW - HOUR_MS, 100, 1.0), NOW);
        spend.add(&usage(NOW - 2 * 86_400_000, 10, 0.5), NOW);
        spend.add(&usage(NOW - 9 * 86_400_000, 999, 9.0), NOW);
        let kinds: u64 = spend
            .hours(NOW - 86_400_000, NOW)
            .flat_map(|(_, pairs)| pairs.values())
            .map(|u| u.kinds[0])
            .sum();
        assert_eq!(kinds, 100, "kinds are kept per hour");
        let day = spend.report(NOW - 86_400_000, NOW, Vec::new());
        assert_eq!((day.total_tokens, day.total_usd), (100, 1.0));
        let week = spend.report(NOW - 7 * 86_400_000, NOW, Vec::new());
        assert_eq!((week.total_tokens, week.total_usd), (110, 1.5));
        assert_eq!(week.spend.len(), 2, "one line per day");
        spend.prune(NOW + 7 * 86_400_000);
        assert_eq!(
            spend.report(0, NOW * 2, Vec::new()).total_tokens,
            100,
            "the day-old hour is still kept"
        );
        spend.prune(NOW + 8 * 86_400_000);
        assert_eq!(spend.report(0, NOW * 2, Vec::new()).total_tokens, 0);
    }

    #[test]
    fn a_window_starts_at_its_first_whole_hour() {
        assert_eq!(next_hour(NOW), NOW, "NOW is on the hour");
        assert_eq!(next_hour(NOW + 1), NOW + HOUR_MS);
        assert!(covers(NOW - 7 * 86_400_000, NOW));
        assert!(!covers(NOW - 8 * 86_400_000, NOW));
    }
}
