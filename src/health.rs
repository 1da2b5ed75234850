//! What the daemon's parts know about its health, for `/readyz`, `/v1/status` and `doctor`:
//! readiness checks, and the problems that are not readiness (usage that cannot be priced under
//! a USD budget, request bodies refused for their size). Set by the part that knows; read by
//! the API without asking the ledger.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;

pub use crate::metrics::{RefusalReason, Route};
use crate::report::iso;
use crate::telemetry::ExportHealth;

/// Readiness facts, set by the parts that know them.
#[derive(Debug, Default)]
pub struct Health {
    sampled: AtomicBool,
    /// The last store write's failure, if it failed.
    store_failure: Mutex<Option<String>>,
    /// The budget whose excess ordered a soft-kill, for `exec`'s exit status.
    kill_cause: Mutex<Option<String>>,
    /// The span exporter's health, in strict mode with an endpoint.
    export: Mutex<Option<Arc<ExportHealth>>>,
    /// The weekly report's last outcome: (configured, last success in ms, last error).
    report: Mutex<(bool, Option<i64>, Option<String>)>,
    /// Bodies refused for their size since start, and the last one with when.
    refused: Mutex<(u64, Option<(i64, Refusal)>)>,
    /// Usage priced at 0 for want of a price since start, and the last model with when.
    unpriced: Mutex<(u64, Option<(i64, String)>)>,
    /// Deliveries (the webhook) whose last attempt failed: when, and why (with the URL).
    failed_deliveries: Mutex<std::collections::BTreeMap<&'static str, (i64, String)>>,
    /// Fleet budgets: `None` without Redis configured, else the last push's outcome.
    fleet: Mutex<Option<Result<String, String>>>,
    /// OTLP items refused (their rule broken) since start.
    otlp_rejected: Mutex<Rejections>,
}

/// Refused OTLP items: how many, the last with when, and what the log has said of them.
#[derive(Debug, Default)]
struct Rejections {
    count: u64,
    last: Option<(i64, String)>,
    logged_ms: Option<i64>,
    since_logged: u64,
}

/// At most one log line about refused OTLP items this often (a broken exporter repeats).
pub const REJECTION_LOG_EVERY_MS: i64 = 10_000;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long a problem stays on `/v1/status` (and red in `doctor`) after it was last seen.
pub const PROBLEM_SHOWN_MS: i64 = 24 * 3_600_000;

/// A request body refused for its size: the sender drops it, so what it reported is lost
/// unless someone raises the setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub route: Route,
    pub reason: RefusalReason,
    /// The body's size when the sender said it (Content-Length, gRPC length prefix); else it
    /// is only known to be over `limit`.
    pub bytes: Option<u64>,
    pub limit: u64,
    /// The setting that raises the limit.
    pub setting: &'static str,
}

/// A condition `/v1/status` reports and `doctor` shows red: not a readiness failure (the
/// daemon works), but numbers that are wrong until someone acts.
pub use crate::wire::Problem;
use crate::wire::{Check, ReportHealth};

impl Health {
    pub fn mark_sampled(&self) {
        self.sampled.store(true, Ordering::Relaxed);
    }

    /// Records that reports are configured, and each writing's outcome.
    pub fn set_report(&self, outcome: Option<Result<i64, String>>) {
        let mut report = self
            .report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        report.0 = true;
        match outcome {
            Some(Ok(at)) => {
                report.1 = Some(at);
                report.2 = None;
            }
            Some(Err(error)) => report.2 = Some(error),
            None => {}
        }
    }

    /// The weekly report's health.
    pub fn report(&self) -> ReportHealth {
        let (configured, last_success, last_error) = lock(&self.report).clone();
        ReportHealth {
            configured,
            last_success: last_success.map(iso),
            last_error,
        }
    }

    pub fn watch_export(&self, export: Arc<ExportHealth>) {
        *self
            .export
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(export);
    }

    /// Why costmeter first stopped the command (`budget 'x' exceeded`, `alert 'A' firing`):
    /// `exec` then exits with 86 and says so.
    pub fn set_kill_cause(&self, cause: &str) {
        let mut slot = self
            .kill_cause
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert_with(|| cause.to_string());
    }

    pub fn kill_cause(&self) -> Option<String> {
        self.kill_cause
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set_store(&self, outcome: Result<(), String>) {
        let mut failure = self
            .store_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *failure = outcome.err();
    }

    pub fn record_refusal(&self, refusal: Refusal, now_ms: i64) {
        let mut refused = lock(&self.refused);
        refused.0 += 1;
        refused.1 = Some((now_ms, refusal));
    }

    /// OTLP items one request's answer refused, each a problem naming the item and the rule.
    /// Exporters drop the partial-success answer that says so; this keeps the last for
    /// `/v1/status` and returns what to log now: the first problem and how many were refused
    /// since the last line, at most once per [`REJECTION_LOG_EVERY_MS`].
    pub fn record_otlp_rejections(
        &self,
        problems: &[String],
        now_ms: i64,
    ) -> Option<(String, u64)> {
        let last = problems.last()?;
        let mut rejections = lock(&self.otlp_rejected);
        let n = u64::try_from(problems.len()).unwrap_or(u64::MAX);
        rejections.count = rejections.count.saturating_add(n);
        rejections.since_logged = rejections.since_logged.saturating_add(n);
        rejections.last = Some((now_ms, last.clone()));
        let due = rejections
            .logged_ms
            .is_none_or(|at| now_ms - at >= REJECTION_LOG_EVERY_MS);
        if !due {
            return None;
        }
        rejections.logged_ms = Some(now_ms);
        Some((
            problems[0].clone(),
            std::mem::take(&mut rejections.since_logged),
        ))
    }

    pub fn record_unpriced(&self, model: &str, now_ms: i64) {
        let mut unpriced = lock(&self.unpriced);
        unpriced.0 += 1;
        unpriced.1 = Some((now_ms, model.to_string()));
    }

    /// The outcome of one delivery on `channel`: a failure stays a problem until one succeeds.
    pub fn record_delivery(&self, channel: &'static str, outcome: Result<(), String>, now_ms: i64) {
        let mut failed = lock(&self.failed_deliveries);
        match outcome {
            Ok(()) => {
                failed.remove(channel);
            }
            Err(why) => {
                failed.insert(channel, (now_ms, why));
            }
        }
    }

    /// What is wrong with the numbers now. Pure in its inputs: the clock and whether any USD
    /// budget is configured are passed in.
    pub fn problems(&self, now_ms: i64, usd_budgets: bool) -> Vec<Problem> {
        let mut problems = Vec::new();
        let recent = |at: i64| now_ms - at <= PROBLEM_SHOWN_MS;
        let (count, last) = lock(&self.refused).clone();
        if let Some((at, refusal)) = last.filter(|(at, _)| recent(*at)) {
            let size = refusal.bytes.map_or_else(
                || format!("over {} bytes", refusal.limit),
                |b| format!("{b} bytes"),
            );
            problems.push(Problem {
                name: "refused bodies".into(),
                detail: format!(
                    "{count} request bod{} refused for size since start, the last at {} on {}: {size}, the limit is {} bytes ({}); senders drop refused batches, so their usage is missing",
                    if count == 1 { "y" } else { "ies" },
                    iso(at),
                    refusal.route.label(),
                    refusal.limit,
                    refusal.setting,
                ),
                fix: format!("raise {} and reload or restart costmeter", refusal.setting),
            });
        }
        for (channel, (at, why)) in lock(&self.failed_deliveries).iter() {
            problems.push(Problem {
                name: format!("{channel} delivery"),
                detail: format!("the last {channel} notice (at {}) was not delivered: {why}", iso(*at)),
                fix: "check the URL, and for https the CA: the system's roots plus [tls] ca_file are trusted".into(),
            });
        }
        let rejections = lock(&self.otlp_rejected);
        if let Some((at, problem)) = rejections.last.as_ref().filter(|(at, _)| recent(*at)) {
            problems.push(Problem {
                name: "rejected telemetry".into(),
                detail: format!(
                    "{} OTLP item{} refused since start, the last at {}: {problem}; exporters drop the answer that says so, so that usage is missing here",
                    rejections.count,
                    if rejections.count == 1 { "" } else { "s" },
                    iso(*at),
                ),
                fix: "the item and the rule it broke are named above (and in the log): fix what the exporter sends, or report it if the rule is wrong".into(),
            });
        }
        drop(rejections);
        let (count, last) = lock(&self.unpriced).clone();
        if usd_budgets && let Some((at, model)) = last.filter(|(at, _)| recent(*at)) {
            problems.push(Problem {
                name: "unpriced usage".into(),
                detail: format!(
                    "{count} usage event{} priced at 0 since start (last: model '{model}' at {}) while USD budgets are configured: they cannot see that spend",
                    if count == 1 { "" } else { "s" },
                    iso(at),
                ),
                fix: format!(
                    "add [pricing.models.\"{model}\"] or a [pricing] manifest that lists it (costmeter pricing status lists every unpriced model)"
                ),
            });
        }
        problems
    }

    /// The fleet pusher's last outcome: what it did, or why Redis did not answer.
    pub fn set_fleet(&self, outcome: Result<String, String>) {
        *lock(&self.fleet) = Some(outcome);
    }

    /// Each readiness check.
    pub fn checks(&self) -> Vec<Check> {
        let sampled = self.sampled.load(Ordering::Relaxed);
        let store = self
            .store_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let sampler_detail = if sampled {
            "first sample taken"
        } else {
            "waiting for the first sample"
        };
        let check = |name: &str, ok: bool, detail: String| Check {
            name: name.to_string(),
            ok,
            detail,
        };
        let mut checks = vec![
            check("config", true, "configuration loaded".to_string()),
            check("sampler", sampled, sampler_detail.to_string()),
            match store {
                None => check("store", true, "last write succeeded".to_string()),
                Some(failure) => check("store", false, failure),
            },
        ];
        let export = self
            .export
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(export) = export {
            checks.push(if export.working() {
                check("telemetry", true, "OTLP collector reachable".to_string())
            } else {
                check(
                    "telemetry",
                    false,
                    format!(
                        "OTLP collector unreachable or the last export failed (mode = \"strict\"); spans are dropped, ingestion goes on{}",
                        export.last_error().map(|e| format!(": {e}")).unwrap_or_default()
                    ),
                )
            });
        }
        if let Some(fleet) = lock(&self.fleet).clone() {
            checks.push(match fleet {
                Ok(detail) => check("fleet", true, detail),
                Err(why) => check(
                    "fleet",
                    false,
                    format!("fleet budgets degraded, usage kept here until Redis answers: {why}"),
                ),
            });
        }
        checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_428_000_000;

    fn refusal() -> Refusal {
        Refusal {
            route: Route::otlp_logs,
            reason: RefusalReason::body_too_large,
            bytes: Some(1_500_000),
            limit: 1_048_576,
            setting: "otlp.max_body_bytes",
        }
    }

    #[test]
    fn refused_otlp_items_are_logged_at_most_every_ten_seconds_and_shown_for_a_day() {
        let health = Health::default();
        let problems = |items: &[&str]| items.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(health.record_otlp_rejections(&[], NOW), None);
        assert_eq!(
            health.record_otlp_rejections(&problems(&["span a: rule 1", "span b: rule 2"]), NOW),
            Some(("span a: rule 1".to_string(), 2)),
            "the first is logged at once"
        );
        assert_eq!(
            health.record_otlp_rejections(&problems(&["span c: rule 3"]), NOW + 9_999),
            None
        );
        assert_eq!(
            health.record_otlp_rejections(&problems(&["span d: rule 4"]), NOW + 10_000),
            Some(("span d: rule 4".to_string(), 2)),
            "then one line per ten seconds, with what it held back"
        );
        let shown = health.problems(NOW + 10_001, false);
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].name, "rejected telemetry");
        assert!(
            shown[0].detail.starts_with("4 OTLP items refused")
                && shown[0].detail.contains("span d: rule 4"),
            "{}",
            shown[0].detail
        );
        assert!(
            health
                .problems(NOW + 10_000 + PROBLEM_SHOWN_MS + 1, false)
                .is_empty()
        );
    }

    #[test]
    fn a_refused_body_is_a_problem_for_a_day() {
        let health = Health::default();
        assert!(health.problems(NOW, true).is_empty());
        health.record_refusal(refusal(), NOW);
        health.record_refusal(refusal(), NOW);
        let problems = health.problems(NOW + 1000, false);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].name, "refused bodies");
        assert!(
            problems[0].detail.contains("2 request bodies")
                && problems[0].detail.contains("1500000 bytes"),
            "{:?}",
            problems[0]
        );
        assert_eq!(
            problems[0].fix,
            "raise otlp.max_body_bytes and reload or restart costmeter"
        );
        assert!(
            health
                .problems(NOW + PROBLEM_SHOWN_MS + 1, false)
                .is_empty()
        );
    }

    #[test]
    fn unpriced_usage_is_a_problem_only_under_a_usd_budget() {
        let health = Health::default();
        health.record_unpriced("claude-opus-4-8", NOW);
        assert!(health.problems(NOW, false).is_empty());
        let problems = health.problems(NOW, true);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .fix
                .contains("[pricing.models.\"claude-opus-4-8\"]")
        );
    }
}
