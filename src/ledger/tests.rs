//! The ledger's parts driven directly, one batch at a time, with the clock as an argument: no
//! threads, no sleeps. A real SQLite file in a temporary folder is the store.

use std::sync::mpsc::{Receiver, channel};

use super::*;
use crate::health::{Refusal, RefusalReason, Route};
use crate::metrics::{EventLabels, ModelLabels, RefusedLabels};

/// 2026-11-23T10:00:00Z.
const NOW: i64 = 1_795_428_000_000;

struct Fixture {
    ledger: Ledger,
    kills: Receiver<EnforcerInput>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    config: Config,
    _dir: tempfile::TempDir,
}

fn config_in(dir: &std::path::Path, toml: &str) -> Config {
    let mut config = Config::from_toml("test.toml", toml).expect("valid test config");
    config.store.path = dir.join("ledger.db");
    config
}

fn open_with(config: Config, dir: tempfile::TempDir, now: i64) -> Fixture {
    let metrics = Arc::new(Metrics::new("haios", 1000, 5000));
    let health = Arc::new(Health::default());
    let (ledger, _) =
        Ledger::open(&config, metrics.clone(), health.clone(), now).expect("ledger opens");
    let (sender, kills) = channel();
    Fixture {
        ledger: ledger
            .with_actions(Some(sender), None, None)
            .expect("no threads to start"),
        kills,
        metrics,
        health,
        config,
        _dir: dir,
    }
}

fn fixture(toml: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config_in(dir.path(), toml);
    open_with(config, dir, NOW)
}

const TARGET: &str = "[[target]]\nname = \"agent\"\npid = 4242\n\n";

fn usage(id: &str, tokens: u64, ts_ms: i64) -> Event {
    let ts = jiff::Timestamp::from_millisecond(ts_ms)
        .expect("time")
        .to_string();
    crate::ingest::event::validate(
        &serde_json::json!({"type": "llm_usage", "event_id": id, "ts": ts, "agent": "coder",
                            "model": "gpt-5", "input_tokens": tokens, "output_tokens": 0}),
        ts_ms,
    )
    .expect("valid event")
}

impl Fixture {
    /// Sends events in one batch; the answer the request gets.
    fn post(&mut self, events: Vec<Event>, now: i64) -> EventsAnswer {
        let (reply, mut answer) = oneshot::channel();
        self.ledger.process(
            vec![LedgerInput::Events {
                source: "http",
                events,
                reply,
            }],
            now,
        );
        answer
            .try_recv()
            .expect("answered within the batch")
            .expect("stored")
    }

    fn reading(&mut self, processes: u64, now: i64) {
        self.ledger.process(
            vec![LedgerInput::Reading(TargetReading {
                target: "agent".into(),
                up: processes > 0,
                cpu_seconds: 0.0,
                read_bytes: 0,
                written_bytes: 0,
                rss_bytes: 0,
                peak_rss_bytes: 0,
                processes,
                selector: "pid 4242".into(),
                baseline: None,
                silent_after_ms: None,
            })],
            now,
        );
    }

    fn report(&mut self, now: i64) {
        self.ledger.process(
            vec![LedgerInput::Enforced(KillReport {
                target: "agent".into(),
                reason: "test".into(),
                signal: "SIGTERM".into(),
                signalled: 1,
                killed: 0,
                refused: Vec::new(),
                dry_run: self.config.enforcement.dry_run,
            })],
            now,
        );
    }

    /// Kill orders sent so far, by target.
    fn orders(&self) -> Vec<String> {
        self.kills
            .try_iter()
            .filter_map(|input| match input {
                EnforcerInput::Kill(order) => Some(order.target),
                EnforcerInput::Targets(_) => None,
            })
            .collect()
    }

    fn events(&self, result: &str) -> u64 {
        self.metrics
            .events_total
            .get_or_create(&EventLabels {
                source: "http".into(),
                r#type: "llm_usage".into(),
                result: result.into(),
            })
            .get()
    }
}

#[test]
fn a_new_event_is_stored_and_its_resend_is_a_duplicate() {
    let mut f = fixture("");
    assert_eq!(f.post(vec![usage("e1", 10, NOW)], NOW).fresh, vec![true]);
    assert_eq!(f.post(vec![usage("e1", 10, NOW)], NOW).fresh, vec![false]);
    assert_eq!((f.events("accepted"), f.events("duplicate")), (1, 1));
}

#[test]
fn an_event_older_than_retention_is_refused_by_its_index() {
    let mut f = fixture("");
    let old = NOW - 40 * 86_400_000;
    let answer = f.post(vec![usage("ok", 1, NOW), usage("old", 1, old)], NOW);
    assert_eq!(answer.fresh, vec![true]);
    assert_eq!(answer.refused.len(), 1);
    assert_eq!(answer.refused[0].0, 1);
    assert!(answer.refused[0].1.contains("retention"), "{answer:?}");
    assert_eq!(f.events("rejected"), 1);
}

#[test]
fn crossing_a_hard_budget_orders_a_kill_of_each_enforceable_target() {
    let mut f = fixture(&format!(
        "{TARGET}[[target]]\nname = \"builder\"\npid = 4343\n\n[budgets]\ntokens = 100\n"
    ));
    f.post(vec![usage("e1", 150, NOW)], NOW);
    let mut orders = f.orders();
    orders.sort();
    assert_eq!(orders, vec!["agent".to_string(), "builder".to_string()]);
}

#[test]
fn a_held_target_seen_alive_again_is_stopped_again_one_kill_at_a_time() {
    let mut f = fixture(&format!("{TARGET}[budgets]\ntokens = 100\n"));
    f.post(vec![usage("e1", 150, NOW)], NOW);
    assert_eq!(f.orders(), vec!["agent".to_string()]);
    // Alive while the first kill is under way: no second order.
    f.reading(3, NOW + 100);
    assert!(f.orders().is_empty());
    f.report(NOW + 200);
    // Gone after the kill: nothing to do.
    f.reading(0, NOW + 300);
    assert!(f.orders().is_empty());
    // A new session appears: the hold stops it too.
    f.reading(2, NOW + 400);
    assert_eq!(f.orders(), vec!["agent".to_string()]);
}

#[test]
fn usage_arriving_while_exceeded_is_stored_and_announced_once() {
    let mut f = fixture(&format!("{TARGET}[budgets]\ntokens = 100\n"));
    f.post(vec![usage("e1", 150, NOW)], NOW);
    f.report(NOW + 10);
    assert_eq!(
        f.post(vec![usage("e2", 5, NOW + 20)], NOW + 20).fresh,
        vec![true]
    );
    let exceeded = f
        .metrics
        .budget_exceeded_total
        .get_or_create(&crate::metrics::BudgetLabels {
            budget: "lifetime-tokens".into(),
            resource: "tokens".into(),
            fleet: None,
        })
        .get();
    assert_eq!(exceeded, 1, "a state, announced once");
}

#[test]
fn soft_budgets_never_hold() {
    let mut f = fixture(&format!(
        "{TARGET}[[budget]]\nname = \"soft\"\nresource = \"tokens\"\nlimit = 100\non_exceed = \"alert\"\n"
    ));
    f.post(vec![usage("e1", 150, NOW)], NOW);
    f.reading(2, NOW + 100);
    assert!(f.orders().is_empty());
    assert!(f.ledger.holding("agent", NOW + 100).is_empty());
}

#[test]
fn a_dry_run_tells_once_per_hold() {
    let mut f = fixture(&format!(
        "{TARGET}[budgets]\ntokens = 100\n\n[enforcement]\ndry_run = true\n"
    ));
    f.post(vec![usage("e1", 150, NOW)], NOW);
    assert_eq!(f.orders().len(), 1, "the crossing");
    f.report(NOW + 10);
    f.reading(2, NOW + 20);
    assert!(
        f.orders().is_empty(),
        "the reading after a report may predate the kill"
    );
    f.reading(2, NOW + 25);
    assert_eq!(f.orders().len(), 1, "the hold, said once");
    f.report(NOW + 30);
    f.reading(2, NOW + 40);
    f.reading(2, NOW + 50);
    assert!(f.orders().is_empty(), "not at every sample");
}

#[test]
fn back_dated_usage_is_charged_at_receipt() {
    let mut f = fixture(
        "[[budget]]\nname = \"daily\"\nresource = \"tokens\"\nlimit = 100\nwindow = \"day\"\non_exceed = \"alert\"\n",
    );
    f.post(vec![usage("e1", 150, NOW - 20 * 86_400_000)], NOW);
    let status = &f.ledger.budgets.status(NOW)[0];
    assert_eq!(status.used, 150.0);
    assert!(status.is_exceeded());
}

/// A ledger over a 100-token lifetime budget that took 150 tokens at NOW, closed and opened
/// again on the same store a second later.
fn reopened_over_budget() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config_in(dir.path(), "[budgets]\ntokens = 100\n");
    let mut f = open_with(config.clone(), dir, NOW);
    f.post(vec![usage("e1", 150, NOW)], NOW);
    let Fixture { ledger, _dir, .. } = f;
    drop(ledger);
    open_with(config, _dir, NOW + 1000)
}

#[test]
fn an_exceeded_state_survives_reopening_and_holds_the_exec_target() {
    let reopened = reopened_over_budget();
    let holding = reopened.ledger.holding("agent", NOW + 1000);
    assert_eq!(holding.len(), 1);
    assert_eq!(holding[0].name, "lifetime-tokens");
    assert_eq!(holding[0].used, 150.0);
}

#[test]
fn a_refused_body_is_counted_and_becomes_a_problem() {
    let mut f = fixture("");
    f.ledger.process(
        vec![LedgerInput::Refused {
            refusal: Refusal {
                route: Route::otlp_logs,
                reason: RefusalReason::body_too_large,
                bytes: Some(2_000_000),
                limit: 1_048_576,
                setting: "otlp.max_body_bytes",
            },
            signal: Some(crate::otlp::Signal::Logs),
        }],
        NOW,
    );
    let counted = f
        .metrics
        .requests_refused_total
        .get_or_create(&RefusedLabels {
            route: Route::otlp_logs,
            reason: RefusalReason::body_too_large,
        })
        .get();
    assert_eq!(counted, 1);
    let problems = f.health.problems(NOW + 1, false);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].fix.contains("otlp.max_body_bytes"));
}

#[test]
fn an_unpriced_model_is_tallied_counted_and_marked_for_usd_budgets() {
    let mut f = fixture("");
    let event = crate::ingest::event::validate(
        &serde_json::json!({"type": "llm_usage", "agent": "coder", "model": "no-such-model",
                            "input_tokens": 100, "output_tokens": 10}),
        NOW,
    )
    .expect("valid");
    f.post(vec![event], NOW);
    let status = f.ledger.pricing_status();
    assert_eq!(status.unknown_models.len(), 1);
    assert_eq!(status.unknown_models[0].tokens, 110);
    let counted = f
        .metrics
        .unknown_model_events_total
        .get_or_create(&ModelLabels {
            model: "no-such-model".into(),
        })
        .get();
    assert_eq!(counted, 1);
    assert!(
        f.health
            .problems(NOW, true)
            .iter()
            .any(|p| p.name == "unpriced usage")
    );
}

#[test]
fn an_enforcement_that_found_nothing_frees_the_target_without_a_record() {
    let mut f = fixture(&format!("{TARGET}[budgets]\ntokens = 100\n"));
    f.post(vec![usage("e1", 150, NOW)], NOW);
    assert_eq!(f.orders().len(), 1);
    f.ledger.process(
        vec![LedgerInput::Enforced(KillReport {
            target: "agent".into(),
            reason: "test".into(),
            signal: "SIGTERM".into(),
            signalled: 0,
            killed: 0,
            refused: Vec::new(),
            dry_run: false,
        })],
        NOW + 10,
    );
    let recorded: i64 = f
        .ledger
        .store
        .conn()
        .query_row("SELECT count(*) FROM enforcement_actions", [], |r| r.get(0))
        .expect("count");
    assert_eq!(recorded, 0);
    f.reading(1, NOW + 20);
    assert!(
        f.orders().is_empty(),
        "the reading after a report may predate the kill"
    );
    f.reading(1, NOW + 25);
    assert_eq!(f.orders().len(), 1, "the target is free for the next order");
}

#[test]
fn reads_see_the_view_published_with_the_batch_and_ticks_age_rolling_windows() {
    let mut f = fixture(
        "[[budget]]\nname = \"hourly\"\nresource = \"tokens\"\nlimit = 100\nwindow = \"1h\"\non_exceed = \"alert\"\n",
    );
    let view = f.ledger.view();
    let read = |view: &SharedView| view.read().expect("view").clone();
    f.post(vec![usage("e1", 60, NOW)], NOW);
    let now = read(&view);
    assert_eq!(now.at_ms, NOW);
    assert_eq!(now.budgets[0].used, 60.0, "published before the reply left");
    // No input for an hour but ticks: the usage ages out of the rolling window.
    f.ledger
        .process(vec![LedgerInput::Tick], NOW + 2 * 3_600_000);
    let later = read(&view);
    assert_eq!(later.at_ms, NOW + 2 * 3_600_000);
    assert_eq!(later.budgets[0].used, 0.0);
}

#[test]
fn the_price_table_health_is_redone_only_when_unpriced_usage_arrived() {
    let mut f = fixture("");
    let view = f.ledger.view();
    let pricing = |view: &SharedView| view.read().expect("view").pricing.clone();
    f.post(vec![usage("e1", 10, NOW)], NOW);
    let priced = pricing(&view);
    assert!(priced.unknown_models.is_empty());
    f.ledger.process(vec![LedgerInput::Tick], NOW + 1000);
    assert!(
        Arc::ptr_eq(&priced, &pricing(&view)),
        "nothing new: the same table health"
    );
    let mystery = crate::ingest::event::validate(
        &serde_json::json!({"type": "llm_usage", "event_id": "m1", "agent": "coder",
                            "model": "mystery-1", "input_tokens": 5, "output_tokens": 0}),
        NOW,
    )
    .expect("valid event");
    f.post(vec![mystery], NOW + 2000);
    let unpriced = pricing(&view);
    assert_eq!(unpriced.unknown_models.len(), 1);
    assert_eq!(unpriced.unknown_models[0].model, "mystery-1");
}

#[test]
fn the_view_holds_the_restored_state_before_any_input() {
    let reopened = reopened_over_budget();
    let view = reopened.ledger.view();
    let view = view.read().expect("view");
    assert_eq!(view.at_ms, NOW + 1000);
    assert_eq!(view.budgets.len(), 1);
    assert_eq!(view.budgets[0].used, 150.0);
}

#[test]
fn firing_alerts_hold_until_resolved_and_a_flood_of_them_stays_bounded() {
    let mut f = fixture(TARGET);
    let alert = |key: &str, firing: bool| LedgerInput::AlertHold {
        key: key.to_string(),
        order: firing.then(|| KillOrder {
            target: "agent".into(),
            reason: format!("alert '{key}' firing"),
        }),
    };
    f.ledger.process(vec![alert("a", true)], NOW);
    assert_eq!(f.orders(), vec!["agent".to_string()]);
    f.report(NOW + 10);
    f.reading(1, NOW + 20);
    f.reading(1, NOW + 30);
    assert_eq!(f.orders(), vec!["agent".to_string()], "held: stopped again");
    f.report(NOW + 40);
    f.ledger.process(vec![alert("a", false)], NOW + 50);
    f.reading(1, NOW + 60);
    f.reading(1, NOW + 70);
    assert!(f.orders().is_empty(), "resolved: no hold");
    let flood: Vec<LedgerInput> = (0..judge::MAX_ALERT_HOLDS + 50)
        .map(|i| alert(&format!("k{i}"), true))
        .collect();
    f.ledger.process(flood, NOW + 80);
    assert_eq!(f.ledger.alert_holds.len(), judge::MAX_ALERT_HOLDS);
}
