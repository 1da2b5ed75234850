//! Spend by hour, agent and model over the last eight days, kept as events commit (the ledger
//! adds each new usage event; a store scan fills it once at start). `/v1/status` and the page
//! read their 24-hour and 7-day figures from it — whole hours, by the events' timestamps —
//! instead of scanning raw events, so neither grows slower as the store fills.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use crate::budget::BudgetStatus;
use crate::report::{Report, SpendLine, iso};

const HOUR_MS: i64 = 3_600_000;
/// How far back the rollup keeps hours.
pub const KEPT_MS: i64 = 8 * 24 * HOUR_MS;

/// (agent, model) → (tokens, USD) within one hour.
type Pairs = HashMap<(String, String), (u64, f64)>;

#[derive(Debug, Default)]
pub struct SpendByHour {
    /// Hour start (ms) → its pairs.
    hours: BTreeMap<i64, Pairs>,
}

/// The rollup shared by the ledger (writer) and the API (readers).
pub type SharedSpend = Arc<RwLock<SpendByHour>>;

fn hour_of(ts_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(HOUR_MS)
}

impl SpendByHour {
    /// Adds one event's usage, if it falls within the kept hours before `now_ms`.
    pub fn add(
        &mut self,
        ts_ms: i64,
        agent: &str,
        model: &str,
        tokens: u64,
        usd: f64,
        now_ms: i64,
    ) {
        if ts_ms < now_ms - KEPT_MS {
            return;
        }
        let slot = self
            .hours
            .entry(hour_of(ts_ms))
            .or_default()
            .entry((agent.to_string(), model.to_string()))
            .or_default();
        slot.0 += tokens;
        slot.1 += usd;
    }

    /// Drops hours older than the kept span.
    pub fn prune(&mut self, now_ms: i64) {
        let horizon = hour_of(now_ms - KEPT_MS);
        self.hours = self.hours.split_off(&horizon);
    }

    /// The (day, agent, model) lines of the whole hours from `from_ms` (rounded down to its
    /// hour) to `to_ms`.
    pub fn lines(&self, from_ms: i64, to_ms: i64) -> Vec<SpendLine> {
        let mut lines: HashMap<(String, &str, &str), (u64, f64)> = HashMap::new();
        for (hour, pairs) in self.hours.range(hour_of(from_ms)..=to_ms) {
            let day = iso(*hour).get(..10).unwrap_or_default().to_string();
            for ((agent, model), (tokens, usd)) in pairs {
                let line = lines
                    .entry((day.clone(), agent.as_str(), model.as_str()))
                    .or_default();
                line.0 += tokens;
                line.1 += usd;
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_428_000_000;

    #[test]
    fn hours_add_up_into_windows_and_old_ones_go() {
        let mut spend = SpendByHour::default();
        spend.add(NOW - HOUR_MS, "a", "m", 100, 1.0, NOW);
        spend.add(NOW - 2 * 86_400_000, "a", "m", 10, 0.5, NOW);
        spend.add(NOW - 9 * 86_400_000, "a", "m", 999, 9.0, NOW);
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
