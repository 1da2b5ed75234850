//! The fleet's two threads: the pusher charges this store's usage to Redis in store order,
//! exactly once (Redis keeps the cursor, the script skips what it already has), ends settled
//! reservations in the same step, and reports the fleet's totals; the listener hands every
//! published change to the ledger within milliseconds. Both reconnect on their own; while
//! Redis is away nothing is lost (the store keeps it) and the ledger is told.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::*;
use crate::metrics::Metrics;
use crate::store::Store;

/// How often the pusher runs without being nudged: fleet totals refresh, the store stays
/// counted alive, and a Redis that came back is noticed.
pub const PUSH_EVERY: Duration = Duration::from_millis(1000);

/// The least time between two pushes: commits that come faster share one (a busy proxy's
/// calls would otherwise each cost a round trip and a publish to every sidecar).
pub const PUSH_GAP: Duration = Duration::from_millis(5);

/// What wakes the pusher, and the reservations it is to end.
#[derive(Default)]
pub struct Link {
    state: Mutex<LinkState>,
    wake: Condvar,
}

#[derive(Default)]
struct LinkState {
    nudged: bool,
    releases: Vec<Release>,
    stop: bool,
}

/// A reservation to end, in one window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Release {
    pub k: String,
    pub n: String,
    pub w: i64,
    pub id: String,
}

impl Link {
    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// New usage was committed: push soon.
    pub fn nudge(&self) {
        self.lock().nudged = true;
        self.wake.notify_one();
    }

    /// Ends reservations with the next push (after the usage that settled them, which the
    /// ledger committed before this is called).
    pub fn release(&self, releases: Vec<Release>) {
        let mut state = self.lock();
        state.releases.extend(releases);
        state.nudged = true;
        self.wake.notify_one();
    }

    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }

    fn stopped(&self) -> bool {
        self.lock().stop
    }

    /// Waits for a nudge or `timeout`; the releases to send, or `None` to stop.
    fn wait(&self, timeout: Duration) -> Option<Vec<Release>> {
        let state = self.lock();
        let (mut state, _) = self
            .wake
            .wait_timeout_while(state, timeout, |s| !s.nudged && !s.stop)
            .unwrap_or_else(PoisonError::into_inner);
        if state.stop {
            return None;
        }
        state.nudged = false;
        Some(std::mem::take(&mut state.releases))
    }

    /// What was released since the last wait, without waiting.
    fn take_releases(&self) -> Vec<Release> {
        let mut state = self.lock();
        state.nudged = false;
        std::mem::take(&mut state.releases)
    }

    /// Releases that could not be sent go back in front.
    fn requeue(&self, mut releases: Vec<Release>) {
        let mut state = self.lock();
        releases.append(&mut state.releases);
        state.releases = releases;
    }
}

#[derive(Serialize)]
struct PushItem<'a> {
    s: i64,
    k: String,
    n: &'a str,
    w: i64,
    a: f64,
    x: i64,
}

#[derive(Serialize)]
struct Watch<'a> {
    k: String,
    n: &'a str,
    w: i64,
}

#[derive(Serialize)]
struct PushArgs<'a> {
    store: &'a str,
    channel: String,
    alive_ms: i64,
    last: i64,
    items: Vec<PushItem<'a>>,
    releases: &'a [Release],
    watch: Vec<Watch<'a>>,
}

#[derive(Deserialize)]
struct PushAnswer {
    cursor: i64,
    instances: u32,
    totals: HashMap<String, WireTotal>,
}

/// The charges of `rows` to the fleet budgets, each tagged with its event's seq. Pure.
fn items<'a>(
    budgets: &'a [FleetBudget],
    keys: &Keys,
    rows: &[crate::store::FleetUsage],
) -> Vec<PushItem<'a>> {
    let mut items = Vec::new();
    for row in rows {
        for budget in budgets {
            let amount = budget.amount(row.agent.as_deref(), row.usd, row.tokens);
            if amount > 0.0 && amount.is_finite() {
                let (start, expires) = budget.window_at(row.charged_ms);
                items.push(PushItem {
                    s: row.seq,
                    k: keys.window(&budget.name, start),
                    n: &budget.name,
                    w: start,
                    a: amount,
                    x: expires,
                });
            }
        }
    }
    items
}

pub struct Pusher {
    plan: FleetPlan,
    client: redis::Client,
    store_path: PathBuf,
    link: Arc<Link>,
    sink: Arc<UpdateSink>,
    health: Arc<crate::health::Health>,
    metrics: Arc<Metrics>,
}

/// What the pusher keeps between pushes.
struct Session {
    conn: redis::Connection,
    store: String,
    cursor: i64,
}

impl Pusher {
    pub fn new(
        plan: FleetPlan,
        client: redis::Client,
        store_path: &Path,
        link: Arc<Link>,
        sink: Arc<UpdateSink>,
        health: Arc<crate::health::Health>,
        metrics: Arc<Metrics>,
    ) -> Pusher {
        Pusher {
            plan,
            client,
            store_path: store_path.to_path_buf(),
            link,
            sink,
            health,
            metrics,
        }
    }

    /// Starts the pusher and the listener threads.
    pub fn spawn(self) -> std::io::Result<()> {
        let listener = Listener {
            client: self.client.clone(),
            channel: self.plan.keys.channel(),
            store: self.plan.store.clone(),
            sink: self.sink.clone(),
            link: self.link.clone(),
        };
        std::thread::Builder::new()
            .name("costmeter-fleet-listen".into())
            .spawn(move || listener.run())?;
        std::thread::Builder::new()
            .name("costmeter-fleet-push".into())
            .spawn(move || self.run())?;
        Ok(())
    }

    fn run(self) {
        let url = crate::config::redact(&self.plan.redis.url);
        let reader = match Store::open_reader(&self.store_path) {
            Ok(reader) => reader,
            Err(error) => {
                warn!(%error, "fleet: cannot read the store; fleet budgets stay local");
                self.health.set_fleet(Err(error.to_string()));
                return;
            }
        };
        let mut session: Option<Session> = None;
        let mut was_up: Option<bool> = None;
        let script = scripts::push();
        let mut pending = Vec::new();
        // The cursor Redis last confirmed: what is after it waits, even while Redis is away.
        let mut confirmed = 0;
        let mut last_push: Option<Instant> = None;
        loop {
            match self.link.wait(PUSH_EVERY) {
                Some(releases) => pending.extend(releases),
                None => return,
            }
            if let Some(gap) = last_push.and_then(|at| PUSH_GAP.checked_sub(at.elapsed())) {
                std::thread::sleep(gap);
                pending.extend(self.link.take_releases());
            }
            last_push = Some(Instant::now());
            let started = Instant::now();
            match self.push(&reader, &mut session, &script, &pending) {
                Ok((pushed, backlog)) => {
                    pending.clear();
                    confirmed = session.as_ref().map_or(confirmed, |s| s.cursor);
                    if was_up != Some(true) {
                        info!(redis = %url, "fleet: Redis answers; fleet budgets shared");
                    }
                    was_up = Some(true);
                    self.health.set_fleet(Ok(format!(
                        "Redis {url} answered the last push ({pushed} events, {:.1} ms)",
                        started.elapsed().as_secs_f64() * 1000.0
                    )));
                    self.gauges(true, backlog);
                }
                Err(error) => {
                    session = None;
                    self.link.requeue(std::mem::take(&mut pending));
                    if was_up != Some(false) {
                        warn!(%error, "fleet: Redis does not answer; usage is kept here and pushed when it does");
                    }
                    // Each round: the ledger's inbox may have been full for the first.
                    (self.sink)(FleetUpdate {
                        reachable: Some(false),
                        ..FleetUpdate::default()
                    });
                    was_up = Some(false);
                    self.health.set_fleet(Err(error.to_string()));
                    let backlog = reader.usage_count_after(confirmed).unwrap_or(0);
                    self.gauges(false, backlog);
                }
            }
        }
    }

    fn gauges(&self, up: bool, backlog: u64) {
        self.metrics
            .fleet_up
            .get_or_create(&Vec::new())
            .set(i64::from(up));
        self.metrics
            .fleet_backlog_events
            .get_or_create(&Vec::new())
            .set(i64::try_from(backlog).unwrap_or(i64::MAX));
    }

    fn connect(&self, reader: &Store) -> Result<Session, FleetError> {
        let failed = |source| FleetError::Redis {
            url: crate::config::redact(&self.plan.redis.url),
            source,
        };
        let mut conn = self
            .client
            .get_connection_with_timeout(REDIS_TIMEOUT)
            .map_err(failed)?;
        conn.set_read_timeout(Some(REDIS_TIMEOUT)).map_err(failed)?;
        conn.set_write_timeout(Some(REDIS_TIMEOUT))
            .map_err(failed)?;
        let store = reader.store_id()?;
        let cursor: Option<i64> = redis::cmd("GET")
            .arg(self.plan.keys.cursor(&store))
            .query(&mut conn)
            .map_err(failed)?;
        Ok(Session {
            conn,
            store,
            cursor: cursor.unwrap_or(0),
        })
    }

    /// One round: every usage event after the cursor, in batches, then the totals. Returns
    /// how many events were pushed and how many still wait.
    fn push(
        &self,
        reader: &Store,
        session: &mut Option<Session>,
        script: &redis::Script,
        releases: &[Release],
    ) -> Result<(usize, u64), FleetError> {
        // Compaction may give the store a new id; a new store starts its own cursor.
        if session
            .as_ref()
            .is_some_and(|s| reader.store_id().ok().as_deref() != Some(s.store.as_str()))
        {
            *session = None;
        }
        let mut live = match session.take() {
            Some(live) => live,
            None => self.connect(reader)?,
        };
        let failed = |source| FleetError::Redis {
            url: crate::config::redact(&self.plan.redis.url),
            source,
        };
        let now = super::now_ms();
        let watch: Vec<Watch<'_>> = self
            .plan
            .budgets
            .iter()
            .map(|b| {
                let (start, _) = b.window_at(now);
                Watch {
                    k: self.plan.keys.window(&b.name, start),
                    n: &b.name,
                    w: start,
                }
            })
            .collect();
        let mut pushed = 0;
        let mut releases = releases;
        loop {
            let rows = reader.usage_after(live.cursor, PUSH_BATCH)?;
            let last = rows.last().map_or(live.cursor, |r| r.seq);
            let args = PushArgs {
                store: &live.store,
                channel: self.plan.keys.channel(),
                alive_ms: ALIVE_MS,
                last,
                items: items(&self.plan.budgets, &self.plan.keys, &rows),
                releases,
                watch: watch
                    .iter()
                    .map(|w| Watch {
                        k: w.k.clone(),
                        n: w.n,
                        w: w.w,
                    })
                    .collect(),
            };
            let payload =
                serde_json::to_string(&args).map_err(|e| FleetError::Answer(e.to_string()))?;
            let answer: String = script
                .key(self.plan.keys.cursor(&live.store))
                .key(self.plan.keys.alive())
                .arg(payload)
                .invoke(&mut live.conn)
                .map_err(failed)?;
            let answer: PushAnswer = serde_json::from_str(&answer)
                .map_err(|e| FleetError::Answer(format!("{e}: {answer}")))?;
            live.cursor = answer.cursor;
            pushed += rows.len();
            releases = &[];
            (self.sink)(FleetUpdate {
                reachable: Some(true),
                instances: Some(answer.instances),
                totals: FleetUpdate::from_totals(answer.totals.values(), &live.store),
            });
            if rows.len() < PUSH_BATCH {
                break;
            }
        }
        let backlog = reader.usage_count_after(live.cursor)?;
        *session = Some(live);
        Ok((pushed, backlog))
    }
}

/// Hands every published change of the fleet's totals to the ledger.
struct Listener {
    client: redis::Client,
    channel: String,
    /// This sidecar's store: a message carries the part of the store that pushed it.
    store: String,
    sink: Arc<UpdateSink>,
    link: Arc<Link>,
}

impl Listener {
    fn run(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.link.stopped() {
                return;
            }
            match self.listen() {
                Ok(()) => return,
                Err(_) => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    fn listen(&self) -> redis::RedisResult<()> {
        let mut conn = self.client.get_connection_with_timeout(REDIS_TIMEOUT)?;
        let mut pubsub = conn.as_pubsub();
        pubsub.subscribe(&self.channel)?;
        pubsub.set_read_timeout(Some(Duration::from_secs(1)))?;
        loop {
            if self.link.stopped() {
                return Ok(());
            }
            let message = match pubsub.get_message() {
                Ok(message) => message,
                Err(error) if error.is_timeout() => continue,
                Err(error) => return Err(error),
            };
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            if let Ok(totals) = serde_json::from_str::<HashMap<String, WireTotal>>(&payload) {
                (self.sink)(FleetUpdate {
                    reachable: None,
                    instances: None,
                    totals: FleetUpdate::from_totals(totals.values(), &self.store),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{BudgetSpec, OnExceed, Scope, Window};
    use crate::store::FleetUsage;

    #[test]
    fn each_event_charges_each_fleet_budget_it_falls_under_in_its_window() {
        let specs = [
            BudgetSpec {
                name: "team".into(),
                resource: Resource::Usd,
                limit: 5.0,
                window: Window::Day,
                scope: Scope::All,
                warn_at: 0.9,
                on_exceed: OnExceed::SoftKill,
                fleet: true,
            },
            BudgetSpec {
                name: "coder".into(),
                resource: Resource::Tokens,
                limit: 5.0,
                window: Window::Lifetime,
                scope: Scope::Agent("coder".into()),
                warn_at: 0.9,
                on_exceed: OnExceed::SoftKill,
                fleet: true,
            },
        ];
        let budgets = FleetBudget::of(&specs);
        let keys = Keys {
            namespace: "ns".into(),
        };
        let day = 86_400_000;
        let rows = [
            FleetUsage {
                seq: 7,
                charged_ms: 3 * day + 5,
                agent: Some("coder".into()),
                usd: 0.5,
                tokens: 100.0,
            },
            FleetUsage {
                seq: 9,
                charged_ms: 4 * day + 5,
                agent: Some("reviewer".into()),
                usd: 0.25,
                tokens: 40.0,
            },
        ];
        let items = items(&budgets, &keys, &rows);
        let seen: Vec<(i64, &str, f64)> = items.iter().map(|i| (i.s, i.k.as_str(), i.a)).collect();
        let k3 = format!("ns:b:team:{}", 3 * day);
        let k4 = format!("ns:b:team:{}", 4 * day);
        assert_eq!(
            seen,
            vec![
                (7, k3.as_str(), 0.5),
                (7, "ns:b:coder:0", 100.0),
                (9, k4.as_str(), 0.25)
            ]
        );
    }
}
