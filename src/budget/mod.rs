//! Budgets: running totals per window, held against limits. Pure — every function takes the
//! time as an argument and does no IO — so windows, states and transitions are tested with an
//! injected clock. The ledger feeds charges in and carries the verdicts out.

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
    /// Totals and reservations shared in Redis by every sidecar with a budget of this name.
    pub fleet: bool,
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

/// Whether a budget holds `agent`'s calls at admission: hard (`soft_kill`), on usd or tokens,
/// and scoped to everyone or to that agent (a target-scoped budget counts processes, not
/// calls). The one rule for the ledger's reservations and the proxy's "need I ask?".
pub fn holds_calls(
    on_exceed: OnExceed,
    resource: Resource,
    scoped_agent: Option<&str>,
    target_scoped: bool,
    agent: &str,
) -> bool {
    on_exceed == OnExceed::SoftKill
        && matches!(resource, Resource::Usd | Resource::Tokens)
        && !target_scoped
        && scoped_agent.is_none_or(|a| a == agent)
}

/// A budget's state now, for the API and metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BudgetStatus {
    pub name: String,
    pub resource: Resource,
    pub limit: f64,
    pub used: f64,
    /// What calls through the proxy hold against the limit while they run (hard usage
    /// budgets only).
    #[serde(default)]
    pub reserved: f64,
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
    /// A fleet budget: `used` and `reserved` are the whole fleet's, from Redis.
    #[serde(default)]
    pub fleet: bool,
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
            reserved: 0.0,
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
            fleet: false,
        }
    }

    /// Whether this budget holds `agent`'s calls at admission ([`holds_calls`]).
    pub fn holds_calls_of(&self, agent: &str) -> bool {
        holds_calls(
            self.on_exceed,
            self.resource,
            self.agent.as_deref(),
            self.target.is_some(),
            agent,
        )
    }

    /// At or past the limit now. For memory that is the current RSS, so a memory budget stops
    /// holding once its target is gone; every other resource holds until its window resets.
    pub fn is_exceeded(&self) -> bool {
        self.ratio >= 1.0
    }

    /// An amount of this budget's resource, for a person.
    pub fn amount(&self, value: f64) -> String {
        match self.resource {
            Resource::Usd => format!("${value:.4}"),
            Resource::Tokens => format!("{value:.0} tokens"),
            Resource::CpuSeconds => format!("{value:.1} CPU seconds"),
            Resource::MemBytes | Resource::DiskBytes => {
                bytesize::ByteSize::b(value.max(0.0) as u64).to_string()
            }
        }
    }

    /// When the budget frees up, for a person.
    pub fn resets(&self) -> String {
        match (&self.window_end, self.window.as_str()) {
            (Some(end), _) => format!("the {} window resets at {end}", self.window),
            (None, "lifetime") => "a lifetime budget does not reset: raise its limit".to_string(),
            (None, window) => format!("rolling {window}: it frees up as usage ages out"),
        }
    }

    /// The budget in one line for a person: what was used of what, and when that changes.
    pub fn describe_excess(&self) -> String {
        let short = |value: f64| match self.resource {
            Resource::Usd => format!("${value:.2}"),
            _ => self.amount(value),
        };
        format!(
            "budget '{}' is exceeded: {} used of {}; {}",
            self.name,
            short(self.used),
            short(self.limit),
            self.resets()
        )
    }
}

mod engine;
mod holds;
pub mod reserve;
#[cfg(test)]
mod tests;

pub use engine::{Budgets, FleetReach, FleetTotal};
pub use holds::{Hold, TS_TOLERANCE_MS, charge_time, holds};
pub use reserve::{Admitted, Ask, NoRoom, Reservations};
