//! The JSON shapes of the HTTP API and the webhook, one `serde` struct per shape. The server
//! (`api`) serializes them, the client verbs and `doctor` deserialize them, the page renders
//! them: a field renamed on one side is a compile error on the others, not a silent "-".
//!
//! Shapes owned by a domain module stay there and are shared the same way: budget states
//! ([`crate::budget::BudgetStatus`]), the cost report ([`crate::report::Report`]) and runs
//! ([`crate::runs::RunPage`], [`crate::runs::RunDetail`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::budget::{BudgetStatus, OnExceed, Resource, State, TransitionKind};
use crate::pricing::RejectedRow;

/// Every 4xx and 5xx answer (but the events' and the admission check's own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// One refused item of a request, by its index in the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    pub index: usize,
    pub error: String,
}

/// `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsAnswer {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<Rejected>,
}

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}

/// `GET /v1/budgets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetList {
    pub budgets: Vec<BudgetStatus>,
}

/// One budget in the admission check's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remaining {
    pub budget: String,
    pub resource: Resource,
    pub remaining: f64,
    pub limit: f64,
    pub used: f64,
    pub state: State,
}

/// `GET /v1/budgets/check`: 200 when allowed, 429 naming the exceeded budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetCheck {
    pub allowed: bool,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceeded: Vec<String>,
    /// False on a refusal: asking again changes nothing until `resets_at`.
    #[serde(default)]
    pub retryable: bool,
    /// When the first exceeded budget's window resets; null for lifetime budgets (and when
    /// allowed).
    #[serde(default)]
    pub resets_at: Option<String>,
    pub budgets: Vec<Remaining>,
}

/// An alert that became a kill order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertAction {
    pub alert: String,
    pub target: String,
    /// `soft_kill` (firing: stopped, and held stopped until the alert resolves) or `release`
    /// (resolved: the hold ends).
    pub action: String,
    pub fingerprint: Option<String>,
}

/// An alert that did not, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertIgnored {
    pub alert: String,
    pub target: Option<String>,
    pub reason: String,
}

/// `POST /v1/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertsAnswer {
    pub actions: Vec<AlertAction>,
    pub ignored: Vec<AlertIgnored>,
}

/// `POST /v1/reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reloaded {
    pub reloaded: bool,
    pub detail: String,
}

/// Something that needs a person, with the fix (`/v1/status` `problems`, red in `doctor`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub name: String,
    pub detail: String,
    pub fix: String,
}

/// Spend over one window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    pub usd: f64,
    pub tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpendWindows {
    pub last_24h: Spend,
    pub last_7d: Spend,
}

/// A budget at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetBrief {
    pub name: String,
    pub resource: Resource,
    pub used: f64,
    pub limit: f64,
    pub ratio: f64,
    pub state: State,
    /// The agent a budget is scoped to, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl From<&BudgetStatus> for BudgetBrief {
    fn from(status: &BudgetStatus) -> BudgetBrief {
        BudgetBrief {
            name: status.name.clone(),
            resource: status.resource,
            used: status.used,
            limit: status.limit,
            ratio: status.ratio,
            state: status.state,
            agent: status.agent.clone(),
        }
    }
}

/// The weekly report file's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportHealth {
    pub configured: bool,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
}

/// A name with a count: an unpriced model and its events, a label and its folded values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub name: String,
    pub count: u64,
}

/// What `doctor` warns about, said by the daemon itself (not parsed back out of `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attention {
    /// Configured targets no process was found for at the last sample.
    pub targets_down: Vec<String>,
    /// Targets busy while no usage arrived for their `silent_after` (telemetry lost).
    #[serde(default)]
    pub silent_targets: Vec<String>,
    /// Models usage was reported for without a price (so counted at $0), by events.
    pub unpriced_models: Vec<Tally>,
    /// Labels whose values past `[metrics] max_label_values` were folded into `__other__`.
    pub folded_labels: Vec<Tally>,
    /// Agents that reported usage since the store began.
    pub agents_seen: Vec<String>,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub now: String,
    pub started: String,
    pub uptime_seconds: f64,
    pub ready: bool,
    pub checks: Vec<Check>,
    pub problems: Vec<Problem>,
    pub spend: SpendWindows,
    pub budgets: Vec<BudgetBrief>,
    pub targets: Vec<String>,
    pub report: ReportHealth,
    pub attention: Attention,
    pub hints: Vec<String>,
    /// The proxy's upstream names, when `[proxy]` is on (empty when off).
    #[serde(default)]
    pub proxy: Vec<String>,
}

/// An unpriced model in `GET /v1/pricing/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownModel {
    pub model: String,
    pub events: u64,
    pub tokens: u64,
}

/// `GET /v1/pricing/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PricingStatus {
    pub baseline_version: String,
    pub baseline_taken: String,
    pub manifest: Option<String>,
    /// Priced models by where the price came from (baseline, manifest, config).
    pub models: BTreeMap<String, usize>,
    pub rejected_rows: Vec<RejectedRow>,
    /// The most frequent unpriced models, at most a hundred.
    pub unknown_models: Vec<UnknownModel>,
    /// How many more models are unpriced than listed.
    pub unknown_models_omitted: usize,
}

/// The webhook's body: one budget transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetNotice {
    /// `budget_warning`, `BUDGET_EXCEEDED` or `budget_reset`.
    pub event: TransitionKind,
    pub budget: String,
    pub resource: Resource,
    pub used: f64,
    pub limit: f64,
    pub ratio: f64,
    pub window: String,
    pub window_start: Option<String>,
    pub window_end: Option<String>,
    pub on_exceed: OnExceed,
    pub at: String,
}

/// `costmeter doctor --format json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub healthy: bool,
    pub findings: Vec<Finding>,
}

/// How a finding of `doctor` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Green,
    Yellow,
    Red,
}

/// One finding of `costmeter doctor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub name: String,
    pub status: Verdict,
    pub detail: String,
    /// What to do, in one line; empty when green.
    pub fix: String,
}
