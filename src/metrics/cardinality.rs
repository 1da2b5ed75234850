//! The label cardinality cap: each label keeps at most N distinct values, the rest fold into
//! `__other__` and are counted, so a flood of agent or model names cannot exhaust memory or
//! Prometheus.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::LabelLabels;

/// The value that stands for every label value past the cap.
pub const OVERFLOW_VALUE: &str = "__other__";

pub struct CardinalityCap {
    max_values: usize,
    seen: Mutex<HashMap<&'static str, HashSet<String>>>,
    /// The usage series' (agent, model) pairs, at most `max_pairs`.
    pairs: Mutex<HashSet<(String, String)>>,
    max_pairs: usize,
    overflow: Family<LabelLabels, Counter>,
    /// The overflow counts again, by label, for `/v1/status` to say without a scrape.
    folded: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

/// The `label` value of the overflow counter for a pair folded as a whole.
pub const PAIR_LABEL: &str = "agent+model";

impl CardinalityCap {
    pub fn new(
        max_values: usize,
        max_pairs: usize,
        overflow: Family<LabelLabels, Counter>,
    ) -> Self {
        CardinalityCap {
            max_values,
            seen: Mutex::new(HashMap::new()),
            pairs: Mutex::new(HashSet::new()),
            max_pairs,
            overflow,
            folded: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// The (agent, model) labels of a usage series: each label within its own cap, and the pair
    /// within the family's series cap; a pair past it becomes (`__other__`, `__other__`), one
    /// series however many names arrive, and is counted under `label="agent+model"`.
    pub fn admit_usage(&self, agent: &str, model: &str) -> (String, String) {
        let pair = (self.admit("agent", agent), self.admit("model", model));
        let mut pairs = self
            .pairs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pair.0 == OVERFLOW_VALUE && pair.1 == OVERFLOW_VALUE || pairs.contains(&pair) {
            return pair;
        }
        if pairs.len() < self.max_pairs {
            pairs.insert(pair.clone());
            return pair;
        }
        drop(pairs);
        self.fold(PAIR_LABEL);
        (OVERFLOW_VALUE.to_string(), OVERFLOW_VALUE.to_string())
    }

    /// The value to use for `label`: `value` itself while the label has room or already knows
    /// it, else `__other__` (and the overflow counter moves).
    pub fn admit(&self, label: &'static str, value: &str) -> String {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let values = seen.entry(label).or_default();
        if values.contains(value) {
            return value.to_string();
        }
        if values.len() < self.max_values {
            values.insert(value.to_string());
            return value.to_string();
        }
        drop(seen);
        self.fold(label);
        OVERFLOW_VALUE.to_string()
    }

    fn fold(&self, label: &'static str) {
        self.overflow
            .get_or_create(&LabelLabels {
                label: label.to_string(),
            })
            .inc();
        *self
            .folded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(label)
            .or_default() += 1;
    }

    /// Values folded into `__other__` so far, by label.
    pub fn folded(&self) -> Vec<(&'static str, u64)> {
        self.folded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(label, count)| (*label, *count))
            .collect()
    }

    /// The agents of the usage series, sorted (`__other__` among them once any folded).
    pub fn usage_agents(&self) -> Vec<String> {
        let pairs = self
            .pairs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let agents: std::collections::BTreeSet<&String> = pairs.iter().map(|(a, _)| a).collect();
        agents.into_iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_fold_into_other_and_are_counted() {
        let overflow = Family::<LabelLabels, Counter>::default();
        let cap = CardinalityCap::new(2, 100, overflow.clone());
        assert_eq!(cap.admit("agent", "a"), "a");
        assert_eq!(cap.admit("agent", "b"), "b");
        assert_eq!(cap.admit("agent", "c"), OVERFLOW_VALUE);
        assert_eq!(cap.admit("agent", "a"), "a", "known values keep their name");
        assert_eq!(cap.admit("model", "m"), "m", "each label has its own room");
        assert_eq!(cap.admit("agent", "d"), OVERFLOW_VALUE);
        let folded = overflow
            .get_or_create(&LabelLabels {
                label: "agent".into(),
            })
            .get();
        assert_eq!(folded, 2);
    }

    #[test]
    fn pairs_past_the_series_cap_fold_whole_whatever_each_label_allows() {
        let overflow = Family::<LabelLabels, Counter>::default();
        let cap = CardinalityCap::new(1000, 3, overflow.clone());
        let mut series = HashSet::new();
        for agent in 0..50 {
            for model in 0..20 {
                series.insert(cap.admit_usage(&format!("a{agent}"), &format!("m{model}")));
            }
        }
        assert_eq!(series.len(), 4, "three pairs and the overflow pair");
        assert!(series.contains(&(OVERFLOW_VALUE.to_string(), OVERFLOW_VALUE.to_string())));
        assert_eq!(
            cap.admit_usage("a0", "m0"),
            ("a0".to_string(), "m0".to_string())
        );
        let folded = overflow
            .get_or_create(&LabelLabels {
                label: PAIR_LABEL.to_string(),
            })
            .get();
        assert_eq!(folded, 997);
    }
}
