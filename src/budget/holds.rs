//! Exceeded is a state: which targets the exceeded soft-kill budgets hold, and when usage is
//! charged.

use super::*;

/// A target that an exceeded hard budget keeps stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub target: String,
    /// The first exceeded budget that holds it.
    pub budget: String,
}

/// Which targets the exceeded `soft_kill` budgets hold: a budget scoped to a target holds that
/// target; any other holds every one of `enforceable`. Exceeded is a state, not an event: while
/// a hold stands, the target's processes are stopped whenever they (re)appear.
pub fn holds(statuses: &[BudgetStatus], enforceable: &[String]) -> Vec<Hold> {
    let mut holds: Vec<Hold> = Vec::new();
    for status in statuses
        .iter()
        .filter(|s| s.on_exceed == OnExceed::SoftKill && s.is_exceeded())
    {
        let targets: Vec<&String> = match &status.target {
            Some(target) => vec![target],
            None => enforceable.iter().collect(),
        };
        for target in targets {
            if !holds.iter().any(|h| &h.target == target) {
                holds.push(Hold {
                    target: target.clone(),
                    budget: status.name.clone(),
                });
            }
        }
    }
    holds
}

/// How far before its receipt an event's `ts` may place its charge.
pub const TS_TOLERANCE_MS: i64 = 5 * 60 * 1000;

/// When usage counts against budgets: at its `ts` when that lies within
/// [`TS_TOLERANCE_MS`] before receipt, else at receipt. A back-dated `ts` cannot move spend
/// out of today's window (the `ts` itself is kept for reports), nor can a future one.
pub fn charge_time(ts_ms: i64, received_ms: i64) -> i64 {
    ts_ms.clamp(received_ms.saturating_sub(TS_TOLERANCE_MS), received_ms)
}
