//! Budgets: running totals per window, held against limits. Pure — every function takes the
//! time as an argument and does no IO — so windows, states and transitions are tested with an
//! injected clock. The ledger feeds charges in and carries the verdicts out.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

/// What a budget limits. Base units: USD, tokens, CPU seconds, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Usd,
    Tokens,
    CpuSeconds,
    MemBytes,
    DiskBytes,
}

impl Resource {
    pub const ALL: [Resource; 5] = [
        Resource::Usd,
        Resource::Tokens,
        Resource::CpuSeconds,
        Resource::MemBytes,
        Resource::DiskBytes,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Resource::Usd => "usd",
            Resource::Tokens => "tokens",
            Resource::CpuSeconds => "cpu_seconds",
            Resource::MemBytes => "mem_bytes",
            Resource::DiskBytes => "disk_bytes",
        }
    }

    pub fn parse(text: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.label() == text)
    }

    /// LLM usage is scoped by agent; process resources by target.
    pub fn is_usage(self) -> bool {
        matches!(self, Resource::Usd | Resource::Tokens)
    }
}

/// The period a budget's total covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Lifetime,
    /// The last so long, continuously.
    Rolling(Duration),
    /// Calendar periods in UTC; weeks start on Monday.
    Day,
    Week,
    Month,
}

impl Window {
    pub fn parse(text: &str) -> Result<Window, String> {
        match text {
            "lifetime" => Ok(Window::Lifetime),
            "day" => Ok(Window::Day),
            "week" => Ok(Window::Week),
            "month" => Ok(Window::Month),
            other => match humantime::parse_duration(other) {
                Ok(d) if d >= Duration::from_secs(60) => Ok(Window::Rolling(d)),
                Ok(_) => Err(format!(
                    "rolling window '{other}' is shorter than the minimum of 1m"
                )),
                Err(_) => Err(format!(
                    "'{other}' is not a window: use lifetime, day, week, month (UTC calendar) or a rolling duration such as \"24h\" or \"7d\""
                )),
            },
        }
    }

    pub fn describe(self) -> String {
        match self {
            Window::Lifetime => "lifetime".into(),
            Window::Rolling(d) => humantime::format_duration(d).to_string(),
            Window::Day => "day".into(),
            Window::Week => "week".into(),
            Window::Month => "month".into(),
        }
    }

    /// The calendar period containing `now_ms`: (start, end) in ms. `None` for lifetime and
    /// rolling windows.
    pub fn calendar_bounds(self, now_ms: i64) -> Option<(i64, i64)> {
        let zoned = Timestamp::from_millisecond(now_ms)
            .ok()?
            .to_zoned(TimeZone::UTC);
        let day = zoned.start_of_day().ok()?;
        let (start, end) = match self {
            Window::Day => {
                let end = day.checked_add(1.day()).ok()?;
                (day, end)
            }
            Window::Week => {
                let back = i64::from(day.weekday().to_monday_zero_offset());
                let start = day.checked_sub(back.days()).ok()?;
                let end = start.checked_add(7.days()).ok()?;
                (start, end)
            }
            Window::Month => {
                let start = day.first_of_month().ok()?;
                let end = start.checked_add(1.month()).ok()?;
                (start, end)
            }
            Window::Lifetime | Window::Rolling(_) => return None,
        };
        Some((
            start.timestamp().as_millisecond(),
            end.timestamp().as_millisecond(),
        ))
    }
}

/// Whose usage a budget counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Agent(String),
    Target(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExceed {
    SoftKill,
    Alert,
}

/// A configured budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetSpec {
    pub name: String,
    pub resource: Resource,
    pub limit: f64,
    pub window: Window,
    pub scope: Scope,
    pub warn_at: f64,
    pub on_exceed: OnExceed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Ok = 0,
    Warning = 1,
    Exceeded = 2,
}

impl State {
    pub fn parse(text: &str) -> Option<State> {
        match text {
            "ok" => Some(State::Ok),
            "warning" => Some(State::Warning),
            "exceeded" => Some(State::Exceeded),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Warning => "warning",
            State::Exceeded => "exceeded",
        }
    }
}

/// A state change worth announcing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransitionKind {
    /// Crossed `warn_at`.
    #[serde(rename = "budget_warning")]
    Warning,
    /// Crossed the limit.
    #[serde(rename = "BUDGET_EXCEEDED")]
    Exceeded,
    /// Back to ok: a new window began, or a rolling window or memory fell below `warn_at`.
    #[serde(rename = "budget_reset")]
    Reset,
}

impl TransitionKind {
    pub fn event_name(self) -> &'static str {
        match self {
            TransitionKind::Warning => "budget_warning",
            TransitionKind::Exceeded => "BUDGET_EXCEEDED",
            TransitionKind::Reset => "budget_reset",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub budget: usize,
    pub kind: TransitionKind,
    pub used: f64,
    pub limit: f64,
}

/// One usage amount to charge, with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    pub resource: Resource,
    pub amount: f64,
    pub ts_ms: i64,
    pub agent: Option<&'a str>,
    pub target: Option<&'a str>,
}

/// A budget's state now, for the API and metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BudgetStatus {
    pub name: String,
    pub resource: Resource,
    pub limit: f64,
    pub used: f64,
    pub remaining: f64,
    pub ratio: f64,
    pub state: State,
    pub window: String,
    pub window_start: Option<String>,
    pub window_end: Option<String>,
    #[serde(skip)]
    pub window_start_ms: Option<i64>,
    #[serde(skip)]
    pub window_end_ms: Option<i64>,
    pub agent: Option<String>,
    pub target: Option<String>,
    pub warn_at: f64,
    pub on_exceed: OnExceed,
    /// Seconds until the limit at the burn rate of the last five minutes; absent when not
    /// spending, already over, or when it would fall after the window ends.
    pub projected_exhaustion_seconds: Option<f64>,
}

impl BudgetStatus {
    /// A USD budget of $10 scoped to `agent` with `used` spent, for tests elsewhere.
    #[cfg(test)]
    pub(crate) fn sample(name: &str, agent: Option<&str>, used: f64) -> BudgetStatus {
        let ratio = used / 10.0;
        BudgetStatus {
            name: name.into(),
            resource: Resource::Usd,
            limit: 10.0,
            used,
            remaining: (10.0 - used).max(0.0),
            ratio,
            state: match ratio {
                r if r >= 1.0 => State::Exceeded,
                r if r >= 0.9 => State::Warning,
                _ => State::Ok,
            },
            window: "lifetime".into(),
            window_start: None,
            window_end: None,
            window_start_ms: None,
            window_end_ms: None,
            agent: agent.map(str::to_string),
            target: None,
            warn_at: 0.9,
            on_exceed: OnExceed::Alert,
            projected_exhaustion_seconds: None,
        }
    }

    /// At or past the limit now. For memory that is the current RSS, so a memory budget stops
    /// holding once its target is gone; every other resource holds until its window resets.
    pub fn is_exceeded(&self) -> bool {
        self.ratio >= 1.0
    }

    /// The budget in one line for a person: what was used of what, and when that changes.
    pub fn describe_excess(&self) -> String {
        let amount = |value: f64| match self.resource {
            Resource::Usd => format!("${value:.2}"),
            Resource::Tokens => format!("{value:.0} tokens"),
            Resource::CpuSeconds => format!("{value:.1} CPU seconds"),
            Resource::MemBytes | Resource::DiskBytes => {
                bytesize::ByteSize::b(value.max(0.0) as u64).to_string()
            }
        };
        let resets = match (&self.window_end, self.window.as_str()) {
            (Some(end), _) => format!("the {} window resets at {end}", self.window),
            (None, "lifetime") => "a lifetime budget does not reset: raise its limit".to_string(),
            (None, window) => format!("rolling {window}: it frees up as usage ages out"),
        };
        format!(
            "budget '{}' is exceeded: {} used of {}; {resets}",
            self.name,
            amount(self.used),
            amount(self.limit)
        )
    }
}

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

/// How far back the burn rate looks.
const BURN_RATE_SPAN_MS: i64 = 5 * 60 * 1000;
/// Buckets a rolling window is cut into.
const ROLLING_BUCKETS: i64 = 1000;

#[derive(Debug, Clone, Default)]
struct Tally {
    /// Lifetime and calendar windows: the total of the current window.
    used: f64,
    /// Calendar windows: the current period.
    bounds: Option<(i64, i64)>,
    /// Rolling windows: (bucket start, amount), oldest first.
    buckets: VecDeque<(i64, f64)>,
    /// Memory: the latest RSS per target.
    memory: HashMap<String, f64>,
    /// Recent charges for the burn rate.
    recent: VecDeque<(i64, f64)>,
    state: Option<State>,
}

/// Adds `amount` to the bucket starting at `start`, keeping buckets ordered oldest first.
fn add_to_bucket(buckets: &mut VecDeque<(i64, f64)>, start: i64, amount: f64) {
    match buckets.iter_mut().rev().find(|(at, _)| *at == start) {
        Some(slot) => slot.1 += amount,
        None => {
            let at = buckets.partition_point(|(at, _)| *at < start);
            buckets.insert(at, (start, amount));
        }
    }
}

/// All budgets and their running totals.
#[derive(Debug, Clone)]
pub struct Budgets {
    specs: Vec<BudgetSpec>,
    tallies: Vec<Tally>,
}

fn fmt_ms(ms: i64) -> Option<String> {
    Timestamp::from_millisecond(ms).ok().map(|t| t.to_string())
}

impl Budgets {
    pub fn new(specs: Vec<BudgetSpec>, now_ms: i64) -> Budgets {
        let tallies = specs
            .iter()
            .map(|spec| Tally {
                bounds: spec.window.calendar_bounds(now_ms),
                ..Tally::default()
            })
            .collect();
        Budgets { specs, tallies }
    }

    pub fn specs(&self) -> &[BudgetSpec] {
        &self.specs
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Restores a state recorded before a restart, if it belongs to the current window, so a
    /// transition that already fired does not fire again.
    pub fn restore_state(&mut self, name: &str, window_start_ms: i64, state: State) {
        for (spec, tally) in self.specs.iter().zip(&mut self.tallies) {
            let start = tally.bounds.map_or(0, |b| b.0);
            if spec.name == name && start == window_start_ms {
                tally.state = Some(state);
            }
        }
    }

    /// Adds usage to every budget it falls under. States change only in [`Budgets::evaluate`].
    pub fn charge(&mut self, charge: &Charge<'_>, now_ms: i64) {
        if !(charge.amount.is_finite() && charge.amount > 0.0) {
            return;
        }
        let ts = charge.ts_ms.min(now_ms);
        for (spec, tally) in self.specs.iter().zip(&mut self.tallies) {
            if spec.resource != charge.resource || spec.resource == Resource::MemBytes {
                continue;
            }
            let in_scope = match &spec.scope {
                Scope::All => true,
                Scope::Agent(agent) => charge.agent == Some(agent.as_str()),
                Scope::Target(target) => charge.target == Some(target.as_str()),
            };
            if !in_scope {
                continue;
            }
            match spec.window {
                Window::Lifetime => tally.used += charge.amount,
                Window::Day | Window::Week | Window::Month => {
                    if tally
                        .bounds
                        .is_some_and(|(start, end)| ts >= start && ts < end)
                    {
                        tally.used += charge.amount;
                    }
                }
                Window::Rolling(length) => {
                    let length_ms = i64::try_from(length.as_millis()).unwrap_or(i64::MAX);
                    if ts < now_ms - length_ms {
                        continue;
                    }
                    let width = (length_ms / ROLLING_BUCKETS).max(1000);
                    add_to_bucket(&mut tally.buckets, ts - ts.rem_euclid(width), charge.amount);
                }
            }
            // Per second, so the burn-rate history holds at most 300 entries whatever the
            // event rate (one entry per charge grew to tens of MiB under load).
            if ts >= now_ms - BURN_RATE_SPAN_MS {
                add_to_bucket(&mut tally.recent, ts - ts.rem_euclid(1000), charge.amount);
            }
        }
    }

    /// Records a target's current RSS for memory budgets.
    pub fn set_memory(&mut self, target: &str, rss_bytes: f64) {
        for (spec, tally) in self.specs.iter().zip(&mut self.tallies) {
            let in_scope = match &spec.scope {
                Scope::Target(t) => t == target,
                _ => true,
            };
            if spec.resource == Resource::MemBytes && in_scope {
                tally.memory.insert(target.to_string(), rss_bytes);
            }
        }
    }

    fn used(spec: &BudgetSpec, tally: &Tally) -> f64 {
        match (spec.resource, spec.window) {
            (Resource::MemBytes, _) => tally.memory.values().fold(0.0, |sum, v| sum + v),
            (_, Window::Rolling(_)) => tally.buckets.iter().fold(0.0, |sum, (_, v)| sum + v),
            _ => tally.used,
        }
    }

    /// Moves windows to `now_ms` and returns the transitions, each once.
    pub fn evaluate(&mut self, now_ms: i64) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for (index, (spec, tally)) in self.specs.iter().zip(&mut self.tallies).enumerate() {
            // Calendar rollover: a fresh window owes nothing.
            if let Some((_, end)) = tally.bounds
                && now_ms >= end
            {
                tally.bounds = spec.window.calendar_bounds(now_ms);
                tally.used = 0.0;
            }
            if let Window::Rolling(length) = spec.window {
                let horizon = now_ms - i64::try_from(length.as_millis()).unwrap_or(i64::MAX);
                let width = (i64::try_from(length.as_millis()).unwrap_or(i64::MAX)
                    / ROLLING_BUCKETS)
                    .max(1000);
                while tally
                    .buckets
                    .front()
                    .is_some_and(|(start, _)| start + width <= horizon)
                {
                    tally.buckets.pop_front();
                }
            }
            while tally
                .recent
                .front()
                .is_some_and(|(ts, _)| *ts < now_ms - BURN_RATE_SPAN_MS)
            {
                tally.recent.pop_front();
            }
            let used = Self::used(spec, tally);
            let ratio = used / spec.limit;
            let now_state = if ratio >= 1.0 {
                State::Exceeded
            } else if ratio >= spec.warn_at {
                State::Warning
            } else {
                State::Ok
            };
            let before = tally.state.unwrap_or(State::Ok);
            let mut announce = |kind| {
                transitions.push(Transition {
                    budget: index,
                    kind,
                    used,
                    limit: spec.limit,
                })
            };
            if now_state > before {
                if before < State::Warning {
                    announce(TransitionKind::Warning);
                }
                if now_state == State::Exceeded {
                    announce(TransitionKind::Exceeded);
                }
            } else if now_state == State::Ok && before > State::Ok {
                announce(TransitionKind::Reset);
            }
            tally.state = Some(now_state);
        }
        transitions
    }

    /// Every budget's state, as of the last [`Budgets::evaluate`].
    pub fn status(&self, now_ms: i64) -> Vec<BudgetStatus> {
        self.specs
            .iter()
            .zip(&self.tallies)
            .map(|(spec, tally)| {
                let used = Self::used(spec, tally);
                let remaining = (spec.limit - used).max(0.0);
                // Spend over the whole five minutes, like a Prometheus rate: one burst is not
                // taken for a sustained pace.
                let rate_per_s = tally.recent.iter().fold(0.0, |sum, (_, v)| sum + v)
                    / (BURN_RATE_SPAN_MS as f64 / 1000.0);
                let projected =
                    (spec.resource != Resource::MemBytes && rate_per_s > 0.0 && remaining > 0.0)
                        .then(|| remaining / rate_per_s)
                        .filter(|seconds| match tally.bounds {
                            Some((_, end)) => now_ms as f64 + seconds * 1000.0 < end as f64,
                            None => true,
                        });
                let (agent, target) = match &spec.scope {
                    Scope::All => (None, None),
                    Scope::Agent(a) => (Some(a.clone()), None),
                    Scope::Target(t) => (None, Some(t.clone())),
                };
                BudgetStatus {
                    name: spec.name.clone(),
                    resource: spec.resource,
                    limit: spec.limit,
                    used,
                    remaining,
                    ratio: used / spec.limit,
                    state: tally.state.unwrap_or(State::Ok),
                    window: spec.window.describe(),
                    window_start: tally.bounds.and_then(|b| fmt_ms(b.0)),
                    window_end: tally.bounds.and_then(|b| fmt_ms(b.1)),
                    window_start_ms: tally.bounds.map(|b| b.0),
                    window_end_ms: tally.bounds.map(|b| b.1),
                    agent,
                    target,
                    warn_at: spec.warn_at,
                    on_exceed: spec.on_exceed,
                    projected_exhaustion_seconds: projected,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    /// 2026-11-23T10:00:00Z, a Monday.
    const NOW: i64 = 1_795_428_000_000;

    fn spec(name: &str, resource: Resource, limit: f64, window: Window) -> BudgetSpec {
        BudgetSpec {
            name: name.into(),
            resource,
            limit,
            window,
            scope: Scope::All,
            warn_at: 0.9,
            on_exceed: OnExceed::SoftKill,
        }
    }

    fn usd(amount: f64, ts_ms: i64) -> Charge<'static> {
        Charge {
            resource: Resource::Usd,
            amount,
            ts_ms,
            agent: Some("coder"),
            target: None,
        }
    }

    fn kinds(transitions: &[Transition]) -> Vec<TransitionKind> {
        transitions.iter().map(|t| t.kind).collect()
    }

    #[test]
    fn a_back_dated_charge_lands_at_receipt() {
        let mut budgets = Budgets::new(vec![spec("daily", Resource::Usd, 10.0, Window::Day)], NOW);
        // $20,000 stamped 1970: charged now, so today's budget sees it.
        budgets.charge(&usd(20_000.0, charge_time(0, NOW)), NOW);
        assert_eq!(
            kinds(&budgets.evaluate(NOW)).last(),
            Some(&TransitionKind::Exceeded)
        );
        assert_eq!(
            charge_time(NOW - 60_000, NOW),
            NOW - 60_000,
            "a late report keeps its ts"
        );
        assert_eq!(charge_time(NOW + DAY, NOW), NOW, "the future is now");
    }

    #[test]
    fn exceeded_hard_budgets_hold_their_targets_and_soft_ones_do_not() {
        let mut cpu = spec("cpu", Resource::CpuSeconds, 1.0, Window::Lifetime);
        cpu.scope = Scope::Target("builder".into());
        let mut soft = spec("soft", Resource::Usd, 1.0, Window::Lifetime);
        soft.on_exceed = OnExceed::Alert;
        let hard = spec("hard", Resource::Usd, 5.0, Window::Lifetime);
        let mut budgets = Budgets::new(vec![cpu, soft, hard], NOW);
        let enforceable = vec!["agent".to_string(), "builder".to_string()];
        budgets.charge(&usd(2.0, NOW), NOW);
        budgets.evaluate(NOW);
        assert!(
            holds(&budgets.status(NOW), &enforceable).is_empty(),
            "only the soft budget is over"
        );
        budgets.charge(
            &Charge {
                resource: Resource::CpuSeconds,
                amount: 3.0,
                ts_ms: NOW,
                agent: None,
                target: Some("builder"),
            },
            NOW,
        );
        budgets.evaluate(NOW);
        let held = holds(&budgets.status(NOW), &enforceable);
        assert_eq!(
            held,
            vec![Hold {
                target: "builder".into(),
                budget: "cpu".into()
            }]
        );
        budgets.charge(&usd(4.0, NOW), NOW);
        // No transition is pending, yet the state holds: it is read, not announced.
        budgets.evaluate(NOW);
        assert!(budgets.evaluate(NOW).is_empty());
        let targets: Vec<String> = holds(&budgets.status(NOW), &enforceable)
            .into_iter()
            .map(|h| h.target)
            .collect();
        assert_eq!(targets, vec!["builder".to_string(), "agent".to_string()]);
    }

    #[test]
    fn a_hold_ends_with_its_window() {
        let mut budgets = Budgets::new(vec![spec("daily", Resource::Usd, 1.0, Window::Day)], NOW);
        let enforceable = vec!["agent".to_string()];
        budgets.charge(&usd(2.0, NOW), NOW);
        budgets.evaluate(NOW);
        assert_eq!(holds(&budgets.status(NOW), &enforceable).len(), 1);
        let tomorrow = NOW + DAY;
        budgets.evaluate(tomorrow);
        assert!(holds(&budgets.status(tomorrow), &enforceable).is_empty());
    }

    #[test]
    fn an_excess_is_described_with_its_amounts_and_reset() {
        let mut budgets = Budgets::new(
            vec![
                spec("tokens", Resource::Tokens, 100_000.0, Window::Lifetime),
                spec("daily", Resource::Usd, 1.0, Window::Day),
            ],
            NOW,
        );
        for (resource, amount) in [(Resource::Tokens, 343_628.0), (Resource::Usd, 1.5)] {
            budgets.charge(
                &Charge {
                    resource,
                    amount,
                    ts_ms: NOW,
                    agent: None,
                    target: None,
                },
                NOW,
            );
        }
        budgets.evaluate(NOW);
        let status = budgets.status(NOW);
        assert_eq!(
            status[0].describe_excess(),
            "budget 'tokens' is exceeded: 343628 tokens used of 100000 tokens; a lifetime budget does not reset: raise its limit"
        );
        assert_eq!(
            status[1].describe_excess(),
            "budget 'daily' is exceeded: $1.50 used of $1.00; the day window resets at 2026-11-24T00:00:00Z"
        );
    }

    #[test]
    fn each_transition_fires_once() {
        let mut budgets = Budgets::new(vec![spec("b", Resource::Usd, 10.0, Window::Lifetime)], NOW);
        budgets.charge(&usd(8.0, NOW), NOW);
        assert!(budgets.evaluate(NOW).is_empty());
        budgets.charge(&usd(1.0, NOW), NOW);
        assert_eq!(kinds(&budgets.evaluate(NOW)), vec![TransitionKind::Warning]);
        assert!(budgets.evaluate(NOW).is_empty(), "no repeat");
        budgets.charge(&usd(1.0, NOW), NOW);
        assert_eq!(
            kinds(&budgets.evaluate(NOW)),
            vec![TransitionKind::Exceeded]
        );
        budgets.charge(&usd(5.0, NOW), NOW);
        assert!(
            budgets.evaluate(NOW).is_empty(),
            "still exceeded, nothing new"
        );
    }

    #[test]
    fn a_jump_past_the_limit_announces_warning_then_exceeded() {
        let mut budgets = Budgets::new(vec![spec("b", Resource::Usd, 10.0, Window::Lifetime)], NOW);
        budgets.charge(&usd(50.0, NOW), NOW);
        assert_eq!(
            kinds(&budgets.evaluate(NOW)),
            vec![TransitionKind::Warning, TransitionKind::Exceeded]
        );
    }

    #[test]
    fn a_calendar_day_resets_at_midnight_utc() {
        let mut budgets = Budgets::new(vec![spec("daily", Resource::Usd, 10.0, Window::Day)], NOW);
        budgets.charge(&usd(12.0, NOW), NOW);
        assert_eq!(
            kinds(&budgets.evaluate(NOW)).last(),
            Some(&TransitionKind::Exceeded)
        );
        let status = &budgets.status(NOW)[0];
        assert_eq!(status.window_end.as_deref(), Some("2026-11-24T00:00:00Z"));
        let tomorrow = NOW + 14 * HOUR;
        assert_eq!(
            kinds(&budgets.evaluate(tomorrow)),
            vec![TransitionKind::Reset]
        );
        assert_eq!(budgets.status(tomorrow)[0].used, 0.0);
        // Usage dated yesterday does not charge today's window.
        budgets.charge(&usd(12.0, NOW), tomorrow);
        assert!(budgets.evaluate(tomorrow).is_empty());
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let (start, end) = Window::Week.calendar_bounds(NOW + 3 * DAY).expect("bounds");
        assert_eq!(fmt_ms(start).as_deref(), Some("2026-11-23T00:00:00Z"));
        assert_eq!(fmt_ms(end).as_deref(), Some("2026-11-30T00:00:00Z"));
        let (start, end) = Window::Month.calendar_bounds(NOW).expect("bounds");
        assert_eq!(fmt_ms(start).as_deref(), Some("2026-11-01T00:00:00Z"));
        assert_eq!(fmt_ms(end).as_deref(), Some("2026-12-01T00:00:00Z"));
    }

    #[test]
    fn a_rolling_window_forgets_old_usage() {
        let window = Window::Rolling(Duration::from_secs(3600));
        let mut budgets = Budgets::new(vec![spec("hourly", Resource::Usd, 10.0, window)], NOW);
        budgets.charge(&usd(6.0, NOW), NOW);
        budgets.charge(&usd(5.0, NOW + HOUR / 2), NOW + HOUR / 2);
        assert_eq!(
            kinds(&budgets.evaluate(NOW + HOUR / 2)).last(),
            Some(&TransitionKind::Exceeded)
        );
        // An hour after the first charge only the second one is left.
        let later = NOW + HOUR + 60_000;
        assert_eq!(kinds(&budgets.evaluate(later)), vec![TransitionKind::Reset]);
        assert_eq!(budgets.status(later)[0].used, 5.0);
        // Usage older than the window never counts.
        budgets.charge(&usd(100.0, NOW - 2 * HOUR), later);
        assert_eq!(budgets.status(later)[0].used, 5.0);
    }

    #[test]
    fn scopes_pick_their_agent_or_target() {
        let mut coder = spec("coder", Resource::Usd, 1.0, Window::Lifetime);
        coder.scope = Scope::Agent("coder".into());
        let mut other = spec("other", Resource::Usd, 1.0, Window::Lifetime);
        other.scope = Scope::Agent("reviewer".into());
        let mut cpu = spec("cpu", Resource::CpuSeconds, 1.0, Window::Lifetime);
        cpu.scope = Scope::Target("agent".into());
        let mut budgets = Budgets::new(vec![coder, other, cpu], NOW);
        budgets.charge(&usd(2.0, NOW), NOW);
        budgets.charge(
            &Charge {
                resource: Resource::CpuSeconds,
                amount: 2.0,
                ts_ms: NOW,
                agent: None,
                target: Some("elsewhere"),
            },
            NOW,
        );
        let fired: Vec<usize> = budgets.evaluate(NOW).iter().map(|t| t.budget).collect();
        assert_eq!(fired, vec![0, 0]);
    }

    #[test]
    fn memory_compares_the_current_rss_and_comes_back_down() {
        let mut budgets = Budgets::new(
            vec![spec("mem", Resource::MemBytes, 100.0, Window::Lifetime)],
            NOW,
        );
        budgets.set_memory("a", 60.0);
        budgets.set_memory("b", 50.0);
        assert_eq!(
            kinds(&budgets.evaluate(NOW)).last(),
            Some(&TransitionKind::Exceeded)
        );
        budgets.set_memory("a", 10.0);
        assert_eq!(kinds(&budgets.evaluate(NOW)), vec![TransitionKind::Reset]);
    }

    #[test]
    fn a_restored_state_does_not_fire_again() {
        let mut budgets = Budgets::new(vec![spec("b", Resource::Usd, 10.0, Window::Lifetime)], NOW);
        budgets.restore_state("b", 0, State::Exceeded);
        budgets.charge(&usd(20.0, NOW), NOW);
        assert!(budgets.evaluate(NOW).is_empty());
    }

    #[test]
    fn projection_appears_only_while_spending_below_the_limit() {
        let mut budgets = Budgets::new(vec![spec("b", Resource::Usd, 10.0, Window::Lifetime)], NOW);
        assert_eq!(budgets.status(NOW)[0].projected_exhaustion_seconds, None);
        budgets.charge(&usd(1.0, NOW - 60_000), NOW);
        budgets.evaluate(NOW);
        let projected = budgets.status(NOW)[0]
            .projected_exhaustion_seconds
            .expect("spending");
        // $1 in the last five minutes, $9 left: 45 minutes at that pace.
        assert!((projected - 2700.0).abs() < 1.0, "{projected}");
    }

    #[test]
    fn the_burn_rate_history_stays_small_whatever_the_event_rate() {
        let mut budgets = Budgets::new(vec![spec("b", Resource::Usd, 1e9, Window::Lifetime)], NOW);
        for i in 0..100_000 {
            budgets.charge(&usd(0.001, NOW - 120_000 + i % 3_000), NOW);
        }
        assert_eq!(budgets.tallies[0].recent.len(), 3, "one entry per second");
        budgets.evaluate(NOW);
        let projected = budgets.status(NOW)[0]
            .projected_exhaustion_seconds
            .expect("spending");
        // $100 in the last five minutes: a third of a dollar a second.
        assert!((projected - (1e9 - 100.0) * 3.0).abs() < 1e3, "{projected}");
    }
}
