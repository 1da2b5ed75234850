//! The ledger: the one owner of running totals and of the store.
//!
//! Every source sends what it saw here over one bounded channel. The ledger runs on its own OS
//! thread (SQLite calls block), takes whatever is queued as one batch, writes it in one
//! transaction (group commit), and only then moves the metrics and answers the senders. So a
//! 2xx always means "on disk", and there is one place to read when a number looks wrong.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::CounterWithExemplar;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::budget::{
    BudgetStatus, Budgets, Charge, OnExceed, Resource, Scope, State, TransitionKind, charge_time,
    holds,
};
use crate::config::Config;
use crate::enforce::{EnforcerInput, KillOrder, KillReport};
use crate::health::Health;
use crate::ingest::event::check_age;
use crate::ingest::{Event, EventBody};
use crate::metrics::{BudgetLabels, SoftKillLabels};
use crate::metrics::{
    Metrics, SpendLabels, TaskLabels, TaskTypeLabels, TokenKind, TokenLabels, TraceLabels,
    UsdCounter,
};
use crate::notify::Webhook;
use crate::pricing::{Confidence, PriceSource, PriceTable, PricingError};
use crate::sampler::{StoredBaselines, TargetReading};
use crate::store::{PricedEvent, ResourceRow, Store, StoreError, Totals};
use crate::telemetry::{SpanRecord, Telemetry, derived_span_id, derived_trace_id, hex_bytes};
use opentelemetry::KeyValue;
use std::collections::VecDeque;

/// How many inputs may wait before senders are slowed down.
pub const LEDGER_QUEUE: usize = 8192;
/// Most inputs folded into one transaction.
const MAX_BATCH: usize = 4096;
/// Budget transitions kept to become span events.
const MAX_RECENT_TRANSITIONS: usize = 256;
/// How often the ledger wakes without input, so windows move and the view stays fresh.
pub const TICK: Duration = Duration::from_secs(1);
/// How often old rows are folded into daily rollups.
const COMPACTION_EVERY: Duration = Duration::from_secs(3600);

/// What sources send to the ledger.
#[derive(Debug)]
pub enum LedgerInput {
    /// Validated events from one request (the ones it rejected were counted by the API).
    Events {
        source: &'static str,
        events: Vec<Event>,
        reply: oneshot::Sender<Result<EventsAnswer, LedgerUnavailable>>,
    },
    /// One OTLP export request, mapped; cumulative streams become deltas here.
    Otlp {
        mapped: crate::otlp::Mapped,
        reply: oneshot::Sender<Result<OtlpAnswer, LedgerUnavailable>>,
    },
    Reading(TargetReading),
    /// A target was removed from the config: its gauges go.
    TargetRemoved(String),
    /// Time passed: windows move, rolling totals age, and the view is published again.
    Tick,
    /// An alert from outside (Alertmanager) about a local target: `Some` (firing) stops it
    /// and holds it stopped, `None` (resolved) ends the hold the alert `key` set.
    AlertHold {
        key: String,
        order: Option<KillOrder>,
    },
    /// A request refused unread for its size: counted, logged, shown by `doctor`; for OTLP,
    /// its signal's family claims lapse so the same usage through another signal counts.
    Refused {
        refusal: crate::health::Refusal,
        signal: Option<crate::otlp::Signal>,
    },
    /// What enforcement did, to count and record.
    Enforced(KillReport),
    /// The proxy asks to make a call: its worst case is held against the hard budgets that
    /// cover its agent, or it is refused. Answered at once, before the batch's commit.
    Reserve {
        ask: CallAsk,
        reply: oneshot::Sender<Result<Admission, BudgetRefusal>>,
    },
    /// What Redis says of the fleet's budgets (pushed, published or answered to a reservation).
    Fleet(crate::fleet::FleetUpdate),
    /// A proxied call ended: its usage (none when it died) is stored and charged, and only then
    /// is its reservation released.
    Settle {
        reservation: Option<u64>,
        events: Vec<Event>,
        reply: oneshot::Sender<Result<EventsAnswer, LedgerUnavailable>>,
    },
}

/// A call the proxy wants to make, at its worst.
#[derive(Debug, Clone, PartialEq)]
pub struct CallAsk {
    pub agent: String,
    /// The model asked for, to price the worst case; unknown models are priced at 0 (only
    /// tokens budgets then hold them).
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub stream: bool,
}

/// An admitted call: its reservation, the output it may produce, and the budget that limited
/// that output when it is less than asked (a stream admitted on what fits).
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub reservation: u64,
    pub output_tokens: u64,
    pub limited_by: Option<String>,
    /// Fleet budgets to reserve in Redis too: (name, worst case). Empty while Redis is down
    /// (the local share was held instead) or when no fleet budget covers the call.
    pub fleet: Vec<(String, f64)>,
}

/// A refused call: the budget without room, as it stands, and what the call would have needed.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRefusal {
    pub budget: Box<BudgetStatus>,
    pub needed: f64,
    pub free: f64,
    /// A fleet budget judged without Redis: the policy that judged it.
    pub fleet_down: Option<crate::config::OnFleetUnavailable>,
}

/// What became of one request's events: for each stored one, whether it was new (else a
/// duplicate), in order; and the events refused here, by their index in the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsAnswer {
    pub fresh: Vec<bool>,
    pub refused: Vec<(usize, String)>,
}

/// What became of one OTLP request's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpAnswer {
    pub accepted: usize,
    /// Usage already counted: resent, or reported by another signal of the same agent.
    pub duplicates: usize,
    /// Each refused item, with why.
    pub rejected: Vec<String>,
}

/// Sending side of the ledger, cloned into every source.
pub type LedgerSender = mpsc::Sender<LedgerInput>;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("cannot start a ledger thread: {0}")]
    Thread(#[source] std::io::Error),
}

pub use crate::wire::{PricingStatus, UnknownModel};

/// Models without a price tallied by name; more are tallied under `__other__`.
const MAX_UNKNOWN_MODELS: usize = 10_000;
/// Models without a price logged one by one.
const MAX_LOGGED_UNKNOWN: usize = 100;
/// Models without a price `/v1/pricing/status` lists, most events first.
const LISTED_UNKNOWN: usize = 100;

/// Most (agent, model) pairs whose series handles are cached.
const MAX_CACHED_SERIES: usize = 10_000;

/// Handles to one agent and model's series: the hot path then neither builds label sets nor
/// hashes them into the families again.
#[derive(Clone)]
struct UsageSeries {
    /// input, cache_read, cache_write, output.
    tokens: [CounterWithExemplar<TraceLabels>; 4],
    usd: UsdCounter,
}

pub struct Ledger {
    usage_series: HashMap<String, HashMap<String, UsageSeries>>,
    usage_series_len: usize,
    event_counters: HashMap<(&'static str, &'static str, &'static str), Counter>,
    store: Store,
    prices: PriceTable,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    unknown_models: HashMap<String, UnknownModel>,
    retention: Duration,
    last_compaction: Option<Instant>,
    budgets: Budgets,
    /// Names of the targets a budget without a target scope stops.
    enforceable_targets: Vec<String>,
    enforcer: Option<std::sync::mpsc::Sender<EnforcerInput>>,
    /// Targets with a kill order the enforcer has not reported on yet: one at a time each.
    kills_in_flight: HashSet<String>,
    /// Firing alerts' holds: alert key → the order to repeat while its target comes back.
    alert_holds: std::collections::BTreeMap<String, KillOrder>,
    /// Targets a reading showed alive since their last kill order: while an exceeded budget
    /// holds them, each such sighting is stopped again.
    seen_alive: HashSet<String>,
    /// Targets whose kill report just came in: their next reading may have been taken before
    /// the kill (the sampler and the enforcer send on the same inbox, in either order), so it
    /// is not a sighting. A relaunch is then seen one sample later.
    settling: HashSet<String>,
    /// `[enforcement] dry_run`, and the held targets a dry run already told about.
    dry_run: bool,
    dry_run_told: HashSet<String>,
    webhook: Option<Webhook>,
    /// The span thread, and this batch's inputs for it, sent after the replies.
    spans: Option<spans::SpanQueue>,
    span_batch: Vec<spans::SpanInput>,
    /// This batch's webhook payloads, sent after the replies.
    webhook_batch: Vec<crate::wire::BudgetNotice>,
    /// The `[status_file]` writer, and the runs whose file it has yet to be told about.
    status_files: Option<crate::status_files::StatusFiles>,
    stale_runs: std::collections::BTreeSet<String>,
    report: Option<crate::config::ReportConfig>,
    last_report: Option<Instant>,
    /// Spend by hour over the last eight days, shared with the API; and this batch's additions,
    /// put in under one lock after the commit.
    spend: crate::spend::SharedSpend,
    spend_batch: Vec<crate::store::HourlySpend>,
    /// Cumulative OTLP streams and which signal family meters each agent instance.
    otlp: crate::otlp::OtlpState,
    /// What reads are answered from, and whether the price table's health needs redoing.
    view: SharedView,
    pricing_changed: bool,
    /// Calls through the proxy and what they hold against the hard budgets.
    reservations: crate::budget::Reservations,
    /// Fleet budgets: the pusher to wake after a commit, what to do while Redis is away, and
    /// how many sidecars were alive when it last answered.
    fleet_link: Option<Arc<crate::fleet::pusher::Link>>,
    fleet_policy: crate::config::OnFleetUnavailable,
    fleet_instances: u32,
    /// `[fleet] name`, the label fleet budgets' series carry.
    fleet_name: Option<String>,
    /// Targets busy while no usage arrives.
    silence: crate::silence::Silence,
}

/// Targets a budget without its own target scope stops: every configured target but the
/// sidecar itself.
fn enforceable(config: &Config) -> Vec<String> {
    config
        .targets
        .iter()
        .filter(|t| !matches!(t.selector, crate::config::Selector::OwnProcess))
        .map(|t| t.name.clone())
        .collect()
}

fn parse_ms(iso: Option<&str>) -> Option<i64> {
    iso?.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

mod apply;
mod handle;
pub use handle::{LedgerHandle, LedgerUnavailable, SharedView, View};
mod effects;
mod judge;
mod restore;
mod spans;
#[cfg(test)]
mod tests;

impl Ledger {
    /// Runs the ledger on its own thread until every sender is gone.
    pub fn spawn(mut self) -> std::io::Result<(LedgerSender, std::thread::JoinHandle<()>)> {
        let (sender, mut inbox) = mpsc::channel::<LedgerInput>(LEDGER_QUEUE);
        // The ticker holds only a weak sender, so the ledger still ends with its last source.
        let ticker = sender.downgrade();
        std::thread::Builder::new()
            .name("costmeter-tick".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    let Some(sender) = ticker.upgrade() else {
                        return;
                    };
                    // A full inbox means batches are flowing: this tick is not needed.
                    let _ = sender.try_send(LedgerInput::Tick);
                }
            })?;
        let thread = std::thread::Builder::new()
            .name("costmeter-ledger".into())
            .spawn(move || {
                while let Some(first) = inbox.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match inbox.try_recv() {
                            Ok(input) => batch.push(input),
                            Err(_) => break,
                        }
                    }
                    self.process(batch, now_ms());
                }
            })?;
        Ok((sender, thread))
    }

    /// One batch, received at `received` (ms): the clock is an argument, so the ledger's
    /// behaviour is tested without threads or sleeps.
    fn process(&mut self, batch: Vec<LedgerInput>, received: i64) {
        let mut requests = Vec::new();
        let mut priced: Vec<PricedEvent> = Vec::new();
        let mut readings = Vec::new();
        let mut otlp_rows = Vec::new();
        let mut otlp_undo = Vec::new();
        let mut otlp_requests = Vec::new();
        let mut releases = Vec::new();
        // Usage held for a richer twin that did not come is counted now.
        let due = self.otlp.due(received);
        if !due.rows.is_empty() {
            for event in due.events {
                if let Err(problem) = self.admit(event, crate::otlp::SOURCE, received, &mut priced)
                {
                    warn!(%problem, "held OTLP usage could not be counted");
                }
            }
            otlp_rows.extend(due.rows);
            otlp_undo.push(due.undo);
        }
        for input in batch {
            match input {
                LedgerInput::Events {
                    source,
                    events,
                    reply,
                } => {
                    let (range, refused) = self.admit_all(events, source, received, &mut priced);
                    requests.push((range, refused, reply));
                }
                LedgerInput::Otlp { mapped, reply } => {
                    let resolved = self.otlp.resolve(mapped, received);
                    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
                    self.count_events(
                        crate::otlp::SOURCE,
                        "llm_usage",
                        "rejected",
                        count(resolved.rejected.len()),
                    );
                    self.count_events(
                        crate::otlp::SOURCE,
                        "llm_usage",
                        "duplicate",
                        count(resolved.duplicates),
                    );
                    let start = priced.len();
                    let mut resolved = resolved;
                    for event in std::mem::take(&mut resolved.events) {
                        if let Err(problem) =
                            self.admit(event, crate::otlp::SOURCE, received, &mut priced)
                        {
                            resolved.rejected.push(problem);
                        }
                    }
                    if let Some((problem, refused)) = self
                        .health
                        .record_otlp_rejections(&resolved.rejected, received)
                    {
                        warn!(refused, first = %problem, "OTLP items refused (exporters drop the partial-success answer that says so; at most one line per 10 s)");
                    }
                    otlp_rows.extend(resolved.rows);
                    otlp_undo.push(resolved.undo);
                    otlp_requests.push((
                        start..priced.len(),
                        resolved.duplicates,
                        resolved.rejected,
                        reply,
                    ));
                }
                LedgerInput::Reading(reading) => readings.push(reading),
                LedgerInput::TargetRemoved(name) => {
                    self.silence.forget(&name);
                    self.metrics.forget_target(&name);
                }
                LedgerInput::Tick => {}
                LedgerInput::AlertHold { key, order } => self.alert_hold(key, order),
                LedgerInput::Refused { refusal, signal } => {
                    otlp_rows.extend(self.refused(refusal, signal, received));
                }
                LedgerInput::Enforced(report) => {
                    // Sightings from before the report are of processes it just stopped.
                    self.kills_in_flight.remove(&report.target);
                    self.seen_alive.remove(&report.target);
                    self.settling.insert(report.target.clone());
                    self.record_enforcement(&report, received);
                }
                LedgerInput::Fleet(update) => self.fleet_update(update),
                LedgerInput::Reserve { ask, reply } => {
                    let _ = reply.send(self.reserve(&ask, received));
                }
                LedgerInput::Settle {
                    reservation,
                    events,
                    reply,
                } => {
                    let (range, refused) = self.admit_all(events, "proxy", received, &mut priced);
                    requests.push((range, refused, reply));
                    releases.extend(reservation);
                }
            }
        }
        let rows: Vec<ResourceRow> = readings
            .iter()
            .map(|r| ResourceRow {
                ts_ms: received,
                target: r.target.clone(),
                cpu_seconds: r.cpu_seconds,
                read_bytes: r.read_bytes,
                written_bytes: r.written_bytes,
                rss_bytes: r.rss_bytes,
                peak_rss_bytes: r.peak_rss_bytes,
                baseline: r
                    .baseline
                    .as_ref()
                    .and_then(|b| serde_json::to_string(b).ok())
                    .map(|json| (r.selector.clone(), json)),
            })
            .collect();

        let outcome: Result<Vec<bool>, LedgerUnavailable> = if priced.is_empty()
            && rows.is_empty()
            && otlp_rows.is_empty()
        {
            // Only rejections were reported: they are counted; say so.
            Ok(Vec::new())
        } else {
            match self.store.commit(&priced, &rows, &otlp_rows, received) {
                Ok(fresh) => {
                    self.health.set_store(Ok(()));
                    if let Some(link) = &self.fleet_link
                        && fresh.iter().any(|new| *new)
                    {
                        link.nudge();
                    }
                    if priced.iter().zip(&fresh).any(|(event, is_new)| {
                        *is_new && matches!(event.event.body, EventBody::LlmUsage(_))
                    }) {
                        self.silence.usage(received);
                    }
                    for (event, is_new) in priced.iter().zip(&fresh) {
                        if *is_new {
                            self.apply(event, received);
                        } else {
                            self.count_event(
                                event.source,
                                event.event.body.type_name(),
                                "duplicate",
                            );
                        }
                    }
                    Ok(fresh)
                }
                Err(failure) => {
                    error!(error = %failure, "store write failed; events answered 503, nothing counted");
                    self.health.set_store(Err(failure.to_string()));
                    for undo in otlp_undo.into_iter().rev() {
                        self.otlp.rollback(undo);
                    }
                    Err(LedgerUnavailable::Store(failure.to_string()))
                }
            }
        };
        // Resource gauges and counters move even when the store failed: the deltas are then
        // counted again from the stored baseline after a restart, never lost.
        for reading in &readings {
            let settled = !self.settling.remove(&reading.target);
            if settled && reading.up && reading.processes > 0 {
                self.seen_alive.insert(reading.target.clone());
            }
            self.metrics.record_target(reading);
            let silent = self.silence.reading(
                &reading.target,
                reading.cpu_seconds,
                reading.silent_after_ms,
                received,
            );
            self.metrics
                .target_silent_seconds
                .get_or_create(&crate::metrics::TargetLabels {
                    target: reading.target.clone(),
                })
                .set(silent);
            self.health.mark_sampled();
            self.charge_reading(reading, received);
        }
        // Settled calls' usage is charged now: their reservations can go.
        for reservation in releases {
            self.reservations.release(reservation);
        }
        // Budgets are judged before anyone is answered: a crossing event's 2xx leaves only
        // after the kill order did, and a read after the 2xx sees the event.
        let statuses = self.judge_budgets(received);
        self.publish(received, statuses);
        // The spend rollup takes the batch's usage under one short write lock, before the
        // answers: a report read after a 2xx includes its event.
        {
            let mut spend = self
                .spend
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for usage in self.spend_batch.drain(..) {
                spend.add(&usage, received);
            }
            spend.prune(received);
        }
        for (range, refused, reply) in requests {
            let _ = reply.send(
                outcome
                    .as_ref()
                    .map(|fresh| EventsAnswer {
                        fresh: fresh.get(range).map(<[bool]>::to_vec).unwrap_or_default(),
                        refused,
                    })
                    .map_err(Clone::clone),
            );
        }
        for (range, duplicates, rejected, reply) in otlp_requests {
            let answer = outcome.as_ref().map_err(Clone::clone).map(|fresh| {
                let fresh = fresh.get(range).unwrap_or_default();
                let accepted = fresh.iter().filter(|new| **new).count();
                OtlpAnswer {
                    accepted,
                    duplicates: duplicates + fresh.len() - accepted,
                    rejected,
                }
            });
            let _ = reply.send(answer);
        }
        // Effects after answers: spans, webhook notices, the status files of the runs this
        // batch changed.
        if let Some(queue) = &mut self.spans {
            for input in self.span_batch.drain(..) {
                queue.send(input);
            }
        } else {
            self.span_batch.clear();
        }
        if let Some(webhook) = &self.webhook {
            for notice in self.webhook_batch.drain(..) {
                webhook.notify(notice);
            }
        } else {
            self.webhook_batch.clear();
        }
        if let Some(writer) = &self.status_files {
            self.stale_runs.retain(|run| !writer.mark(run));
        }
        self.compact_if_due(received);
        self.report_if_due(received);
    }

    /// Prices one request's events for this batch's commit: where they sit in `priced`, and the
    /// ones refused, by their index in the request.
    fn admit_all(
        &mut self,
        events: Vec<Event>,
        source: &'static str,
        received: i64,
        priced: &mut Vec<PricedEvent>,
    ) -> (std::ops::Range<usize>, Vec<(usize, String)>) {
        let start = priced.len();
        let mut refused = Vec::new();
        for (index, event) in events.into_iter().enumerate() {
            if let Err(problem) = self.admit(event, source, received, priced) {
                refused.push((index, problem));
            }
        }
        (start..priced.len(), refused)
    }

    /// Prices an event for this batch's commit, or refuses it (counted) when it is older than
    /// retention.
    fn admit(
        &mut self,
        event: Event,
        source: &'static str,
        received: i64,
        priced: &mut Vec<PricedEvent>,
    ) -> Result<(), String> {
        if let Err(problem) = check_age(event.ts_ms, received, self.retention) {
            self.count_event(source, event.body.type_name(), "rejected");
            return Err(problem);
        }
        let cost = match &event.body {
            EventBody::LlmUsage(usage) => Some(self.prices.cost(usage)),
            _ => None,
        };
        priced.push(PricedEvent {
            event,
            source,
            cost,
        });
        Ok(())
    }

    /// The spend rollup, for reads beside the ledger.
    pub fn spend(&self) -> crate::spend::SharedSpend {
        self.spend.clone()
    }

    /// The published view, for reads beside the ledger.
    pub fn view(&self) -> SharedView {
        self.view.clone()
    }

    /// Swaps in a new view: the budget states judged at `now`, and the price table's health
    /// when it changed.
    /// Admits a call on its worst case, priced from the table, or refuses it.
    fn reserve(&mut self, ask: &CallAsk, now: i64) -> Result<Admission, BudgetRefusal> {
        let price = ask.model.as_deref().and_then(|m| self.prices.lookup(m));
        let per_token = |usd_per_million: f64| usd_per_million / 1e6;
        let budget_ask = crate::budget::Ask {
            agent: ask.agent.clone(),
            input_tokens: ask.input_tokens,
            output_tokens: ask.output_tokens,
            // Input at the dearer of the input and cache-write prices: a worst case.
            input_usd: price.map_or(0.0, |p| {
                per_token(p.input.max(p.cache_write.unwrap_or(p.input)))
            }),
            output_usd: price.map_or(0.0, |p| per_token(p.output)),
            stream: ask.stream,
        };
        match self.reservations.reserve(&self.budgets, &budget_ask, now) {
            Ok(admitted) => Ok(Admission {
                reservation: admitted.id,
                output_tokens: admitted.output_tokens,
                limited_by: admitted
                    .limited_by
                    .map(|i| self.budgets.specs()[i].name.clone()),
                fleet: match self.budgets.reach() {
                    crate::budget::FleetReach::Up => admitted
                        .held
                        .iter()
                        .filter(|(i, _)| self.budgets.specs()[*i].fleet)
                        .map(|(i, amount)| (self.budgets.specs()[*i].name.clone(), *amount))
                        .collect(),
                    _ => Vec::new(),
                },
            }),
            Err(no_room) => {
                let mut budget = self.budgets.status(now).swap_remove(no_room.budget);
                budget.reserved = self.reservations.held(no_room.budget);
                let fleet_down = (budget.fleet
                    && self.budgets.reach() != crate::budget::FleetReach::Up)
                    .then_some(self.fleet_policy);
                Err(BudgetRefusal {
                    budget: Box::new(budget),
                    needed: no_room.needed,
                    free: no_room.free,
                    fleet_down,
                })
            }
        }
    }

    /// Takes in what Redis said: the fleet's totals, and whether it answers (while it does
    /// not, admission to fleet budgets follows `[fleet] on_fleet_unavailable`).
    fn fleet_update(&mut self, update: crate::fleet::FleetUpdate) {
        use crate::budget::FleetReach;
        if let Some(instances) = update.instances {
            self.fleet_instances = instances.max(1);
        }
        match update.reachable {
            Some(true) => self.budgets.set_reach(FleetReach::Up),
            Some(false) => self.budgets.set_reach(match self.fleet_policy {
                crate::config::OnFleetUnavailable::Local => FleetReach::DownShare {
                    instances: self.fleet_instances,
                },
                crate::config::OnFleetUnavailable::Refuse => FleetReach::DownRefuse,
            }),
            None => {}
        }
        for (name, total) in update.totals {
            self.budgets.set_fleet(&name, total);
        }
    }

    /// Wires the fleet pusher (woken after each commit with new usage) and the outage policy.
    pub fn with_fleet(
        mut self,
        link: Arc<crate::fleet::pusher::Link>,
        policy: crate::config::OnFleetUnavailable,
        name: &str,
    ) -> Ledger {
        self.fleet_name = Some(name.to_string());
        self.fleet_link = Some(link);
        self.fleet_policy = policy;
        self
    }

    fn publish(&mut self, now: i64, mut budgets: Vec<BudgetStatus>) {
        for (index, status) in budgets.iter_mut().enumerate() {
            let local = self.reservations.held(index);
            status.reserved = self
                .budgets
                .fleet_reserved(index)
                .map_or(local, |fleet| fleet.max(local));
        }
        let pricing = if self.pricing_changed {
            self.pricing_changed = false;
            Arc::new(self.pricing_status())
        } else {
            self.view
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pricing
                .clone()
        };
        let view = Arc::new(View {
            at_ms: now,
            budgets,
            pricing,
        });
        *self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = view;
    }

    /// Wires the enforcer, the webhook and the span exporter once they run; spans are
    /// assembled on a thread of their own, reading the store beside the ledger.
    pub fn with_actions(
        mut self,
        enforcer: Option<std::sync::mpsc::Sender<EnforcerInput>>,
        webhook: Option<Webhook>,
        telemetry: Option<Telemetry>,
    ) -> Result<Ledger, LedgerError> {
        self.enforcer = enforcer;
        self.webhook = webhook;
        self.spans = match telemetry {
            Some(telemetry) => Some(spans::SpanQueue::spawn(self.store.path(), telemetry)?),
            None => None,
        };
        Ok(self)
    }
}
