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
    overflow: Family<LabelLabels, Counter>,
}

impl CardinalityCap {
    pub fn new(max_values: usize, overflow: Family<LabelLabels, Counter>) -> Self {
        CardinalityCap {
            max_values,
            seen: Mutex::new(HashMap::new()),
            overflow,
        }
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
        self.overflow
            .get_or_create(&LabelLabels {
                label: label.to_string(),
            })
            .inc();
        OVERFLOW_VALUE.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_fold_into_other_and_are_counted() {
        let overflow = Family::<LabelLabels, Counter>::default();
        let cap = CardinalityCap::new(2, overflow.clone());
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
}
