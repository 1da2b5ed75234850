//! The proxy's side of fleet budgets: a call's worst case reserved in Redis against every
//! fleet budget covering it, in one atomic check-and-reserve, beside the ledger's local one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex as AsyncMutex;

use super::pusher::{Link, Release};
use super::*;

/// Why Redis did not admit a call.
#[derive(Debug, thiserror::Error)]
pub enum FleetRefusal {
    /// A fleet budget has no room: its name, and the fleet's totals as the script saw them.
    #[error("fleet budget '{budget}' has no room: {used} used and {reserved} reserved of {limit}")]
    NoRoom {
        budget: String,
        used: f64,
        reserved: f64,
        limit: f64,
        needed: f64,
    },
    /// Redis did not answer in time.
    #[error("{0}")]
    Unreachable(String),
}

#[derive(Serialize)]
struct Item<'a> {
    k: String,
    n: &'a str,
    w: i64,
    a: f64,
    l: f64,
    x: i64,
}

#[derive(Serialize)]
struct Args<'a> {
    store: &'a str,
    id: &'a str,
    ttl_ms: i64,
    items: Vec<Item<'a>>,
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    index: i64,
    totals: HashMap<String, WireTotal>,
}

/// Reserves fleet budgets for the proxy; cheap to clone.
#[derive(Clone)]
pub struct Admitter {
    plan: Arc<FleetPlan>,
    client: redis::Client,
    conn: Arc<AsyncMutex<Option<redis::aio::MultiplexedConnection>>>,
    script: Arc<redis::Script>,
    link: Arc<Link>,
    /// Open reservations: local id → where they are held in Redis.
    open: Arc<Mutex<HashMap<u64, Vec<Release>>>>,
    sink: Arc<UpdateSink>,
}

impl Admitter {
    pub fn new(
        plan: FleetPlan,
        client: redis::Client,
        link: Arc<Link>,
        sink: Arc<UpdateSink>,
    ) -> Admitter {
        Admitter {
            plan: Arc::new(plan),
            client,
            conn: Arc::new(AsyncMutex::new(None)),
            script: Arc::new(scripts::reserve()),
            link,
            open: Arc::default(),
            sink,
        }
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, redis::RedisError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Holds `amounts` (budget name → worst case) for the local reservation `reservation`, or
    /// says which fleet budget has no room.
    pub async fn reserve(
        &self,
        reservation: u64,
        amounts: &[(String, f64)],
    ) -> Result<(), FleetRefusal> {
        let now = now_ms();
        let id = format!("{}:{reservation}", self.plan.run);
        let items: Vec<Item<'_>> = amounts
            .iter()
            .filter_map(|(name, amount)| {
                let budget = self.plan.budgets.iter().find(|b| &b.name == name)?;
                let (start, expires) = budget.window_at(now);
                Some(Item {
                    k: self.plan.keys.window(&budget.name, start),
                    n: &budget.name,
                    w: start,
                    a: *amount,
                    l: budget.limit,
                    x: expires,
                })
            })
            .collect();
        if items.is_empty() {
            return Ok(());
        }
        let payload = serde_json::to_string(&Args {
            store: &self.plan.store,
            id: &id,
            ttl_ms: RESERVATION_TTL_MS,
            items: items
                .iter()
                .map(|i| Item {
                    k: i.k.clone(),
                    n: i.n,
                    w: i.w,
                    a: i.a,
                    l: i.l,
                    x: i.x,
                })
                .collect(),
        })
        .map_err(|e| FleetRefusal::Unreachable(e.to_string()))?;
        let unreachable = |e: redis::RedisError| {
            FleetRefusal::Unreachable(format!(
                "fleet Redis {}: {e}",
                crate::config::redact(&self.plan.redis.url)
            ))
        };
        let mut conn = self.connection().await.map_err(unreachable)?;
        let answer: Result<String, _> = self.script.arg(payload).invoke_async(&mut conn).await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                *self.conn.lock().await = None;
                return Err(unreachable(error));
            }
        };
        let answer: Answer = serde_json::from_str(&answer)
            .map_err(|e| FleetRefusal::Unreachable(format!("{e}: {answer}")))?;
        (self.sink)(FleetUpdate {
            reachable: Some(true),
            instances: None,
            totals: FleetUpdate::from_totals(answer.totals.values(), &self.plan.store),
        });
        if !answer.ok {
            let index = usize::try_from(answer.index).unwrap_or(0);
            let item = &items[index.min(items.len() - 1)];
            let total = answer.totals.get(&item.k);
            return Err(FleetRefusal::NoRoom {
                budget: item.n.to_string(),
                used: total.map_or(0.0, |t| t.used),
                reserved: total.map_or(0.0, |t| t.reserved),
                limit: item.l,
                needed: item.a,
            });
        }
        let releases = items
            .iter()
            .map(|i| Release {
                k: i.k.clone(),
                n: i.n.to_string(),
                w: i.w,
                id: id.clone(),
            })
            .collect();
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(reservation, releases);
        Ok(())
    }

    /// The call ended and its usage (if any) is committed: its fleet reservation ends with
    /// the push that charges that usage.
    pub fn release(&self, reservation: u64) {
        let releases = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&reservation);
        if let Some(releases) = releases {
            self.link.release(releases);
        }
    }
}
