//! Admission: may an agent spend now? Pure: it reads budget states and says which apply and
//! which hold, so `GET /v1/budgets/check` and the proxy's admission decide the same way.

use crate::budget::{BudgetStatus, State};
use crate::wire::{BudgetCheck, Remaining};

/// Whether a budget constrains `agent`'s spending: unscoped budgets constrain everyone; a
/// budget scoped to an agent constrains that agent, and an agent that does not say who it is.
pub fn applies(status: &BudgetStatus, agent: Option<&str>) -> bool {
    match (agent, status.agent.as_deref()) {
        (_, None) | (None, Some(_)) => true,
        (Some(agent), Some(scoped)) => agent == scoped,
    }
}

/// The answer to "may `agent` spend?": not allowed while any budget that applies is exceeded.
pub fn check(agent: Option<&str>, statuses: &[BudgetStatus]) -> BudgetCheck {
    let relevant: Vec<&BudgetStatus> = statuses.iter().filter(|s| applies(s, agent)).collect();
    let exceeded: Vec<&BudgetStatus> = relevant
        .iter()
        .copied()
        .filter(|s| s.state == State::Exceeded)
        .collect();
    let budgets = relevant
        .iter()
        .map(|s| Remaining {
            budget: s.name.clone(),
            resource: s.resource,
            remaining: s.remaining,
            limit: s.limit,
            used: s.used,
            state: s.state,
        })
        .collect();
    BudgetCheck {
        allowed: exceeded.is_empty(),
        agent: agent.map(str::to_string),
        error: exceeded.first().map(|first| {
            format!(
                "budget '{}' exceeded: {} of {} {} used",
                first.name,
                first.used,
                first.limit,
                first.resource.label()
            )
        }),
        exceeded: exceeded.iter().map(|s| s.name.clone()).collect(),
        retryable: exceeded.is_empty(),
        resets_at: exceeded.iter().filter_map(|s| s.window_end.clone()).min(),
        budgets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, agent: Option<&str>, used: f64) -> BudgetStatus {
        BudgetStatus::sample(name, agent, used)
    }

    #[test]
    fn an_exceeded_budget_of_another_agent_does_not_refuse() {
        let statuses = [
            status("theirs", Some("reviewer"), 12.0),
            status("all", None, 3.0),
        ];
        let answer = check(Some("coder"), &statuses);
        assert!(answer.allowed);
        assert_eq!(
            answer.budgets.len(),
            1,
            "only the budgets that apply are listed"
        );
        assert_eq!(answer.budgets[0].budget, "all");
        let theirs = check(Some("reviewer"), &statuses);
        assert!(!theirs.allowed);
        assert_eq!(theirs.exceeded, vec!["theirs".to_string()]);
        assert!(
            theirs
                .error
                .is_some_and(|e| e.contains("'theirs' exceeded: 12 of 10 usd"))
        );
    }

    #[test]
    fn an_agent_that_does_not_say_who_it_is_is_held_by_every_budget() {
        let statuses = [status("theirs", Some("reviewer"), 12.0)];
        assert!(!check(None, &statuses).allowed);
    }
}

/// What a Claude Code hook should do before a tool call or prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum HookVerdict {
    Allow,
    /// Allowed; a budget that applies is past its `warn_at`.
    Warn(String),
    /// A hard budget that applies is exceeded: block, with the reason.
    Block(String),
}

/// The hook's decision from the budgets' states. Only hard (`soft_kill`) budgets block: an
/// alert-only budget warns, as everywhere. Pure.
pub fn hook_verdict(agent: &str, statuses: &[BudgetStatus]) -> HookVerdict {
    use crate::budget::OnExceed;
    let relevant: Vec<&BudgetStatus> = statuses
        .iter()
        .filter(|s| s.target.is_none() && applies(s, Some(agent)))
        .collect();
    if let Some(blocking) = relevant
        .iter()
        .filter(|s| s.on_exceed == OnExceed::SoftKill && s.is_exceeded())
        .max_by(|a, b| a.ratio.total_cmp(&b.ratio))
    {
        return HookVerdict::Block(format!(
            "costmeter: {}. The agent is stopped here instead of being killed later.",
            blocking.describe_excess()
        ));
    }
    match relevant
        .iter()
        .filter(|s| s.ratio >= s.warn_at)
        .max_by(|a, b| a.ratio.total_cmp(&b.ratio))
    {
        Some(warning) => HookVerdict::Warn(format!(
            "costmeter: budget '{}' is at {:.0}% ({} used of {}); {}",
            warning.name,
            warning.ratio * 100.0,
            warning.amount(warning.used),
            warning.amount(warning.limit),
            match warning.on_exceed {
                OnExceed::SoftKill => "at 100% this agent is stopped",
                OnExceed::Alert => "at 100% an alert fires",
            }
        )),
        None => HookVerdict::Allow,
    }
}

#[cfg(test)]
mod hook_tests {
    use super::*;
    use crate::budget::OnExceed;

    #[test]
    fn only_an_exceeded_hard_budget_of_this_agent_blocks() {
        let mut hard = BudgetStatus::sample("coder-usd", Some("coder"), 10.5);
        hard.on_exceed = OnExceed::SoftKill;
        let soft = BudgetStatus::sample("all-usd", None, 12.0);
        match hook_verdict("coder", &[soft.clone(), hard.clone()]) {
            HookVerdict::Block(reason) => assert!(
                reason.contains("budget 'coder-usd' is exceeded: $10.50 used of $10.00")
                    && reason.contains("lifetime budget does not reset"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        // Another agent: coder's budget does not apply; the soft one over its limit warns.
        match hook_verdict("reviewer", &[soft, hard]) {
            HookVerdict::Warn(line) => assert!(
                line.contains("'all-usd' is at 120%") && line.contains("an alert fires"),
                "{line}"
            ),
            other => panic!("{other:?}"),
        }
        let calm = BudgetStatus::sample("coder-usd", Some("coder"), 1.0);
        assert_eq!(hook_verdict("coder", &[calm]), HookVerdict::Allow);
    }
}
