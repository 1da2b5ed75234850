//! The running totals: per budget a tally (lifetime, calendar window or rolling buckets),
//! charged, evaluated into transitions and read out as states, all at a given time.

use std::collections::{HashMap, VecDeque};

use jiff::Timestamp;

use super::*;
/// How far back the burn rate looks.
const BURN_RATE_SPAN_MS: i64 = 5 * 60 * 1000;
/// Buckets a rolling window is cut into.
const ROLLING_BUCKETS: i64 = 1000;

#[derive(Debug, Clone, Default)]
pub(super) struct Tally {
    /// Lifetime and calendar windows: the total of the current window.
    used: f64,
    /// Calendar windows: the current period.
    bounds: Option<(i64, i64)>,
    /// Rolling windows: (bucket start, amount), oldest first.
    buckets: VecDeque<(i64, f64)>,
    /// Memory: the latest RSS per target.
    memory: HashMap<String, f64>,
    /// Recent charges for the burn rate.
    pub(super) recent: VecDeque<(i64, f64)>,
    state: Option<State>,
    /// Fleet budgets: the fleet's totals as Redis last said.
    fleet: Option<FleetTotal>,
}

/// A fleet budget's window as Redis holds it: every sidecar's usage, what open calls hold, and
/// how much of the usage is this sidecar's (pushed so far).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FleetTotal {
    /// The window's start (0 for a lifetime budget).
    pub window_start_ms: i64,
    pub used: f64,
    pub reserved: f64,
    /// This sidecar's pushed usage in the window; `None` when the message did not say.
    pub mine: Option<f64>,
}

/// Admission to fleet budgets while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum FleetReach {
    #[default]
    Up,
    /// Down: each sidecar admits within its share of what the fleet had left (`instances`
    /// sidecars were alive when Redis was last seen).
    DownShare { instances: u32 },
    /// Down: calls a fleet budget covers are refused.
    DownRefuse,
}

/// Adds `amount` to the bucket starting at `start`, keeping buckets ordered oldest first.
pub(super) fn add_to_bucket(buckets: &mut VecDeque<(i64, f64)>, start: i64, amount: f64) {
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
    pub(super) tallies: Vec<Tally>,
    reach: FleetReach,
}

pub(super) fn fmt_ms(ms: i64) -> Option<String> {
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
        Budgets {
            specs,
            tallies,
            reach: FleetReach::Up,
        }
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
            _ => match Self::fleet_of(tally) {
                // The fleet's total, and what this sidecar charged that is not in it yet.
                Some(fleet) => fleet.used + Self::unpushed(tally, fleet),
                None => tally.used,
            },
        }
    }

    /// The fleet total of the current window, if Redis has told one.
    fn fleet_of(tally: &Tally) -> Option<&FleetTotal> {
        let start = tally.bounds.map_or(0, |b| b.0);
        tally.fleet.as_ref().filter(|f| f.window_start_ms == start)
    }

    /// This sidecar's usage in the window that Redis has not counted yet.
    fn unpushed(tally: &Tally, fleet: &FleetTotal) -> f64 {
        (tally.used - fleet.mine.unwrap_or(tally.used)).max(0.0)
    }

    /// What budget `index` has left before its limit (negative when over). A fleet budget
    /// with Redis down has this sidecar's share of it ([`FleetReach`]).
    pub fn room(&self, index: usize) -> f64 {
        let (Some(spec), Some(tally)) = (self.specs.get(index), self.tallies.get(index)) else {
            return 0.0;
        };
        let room = spec.limit - Self::used(spec, tally);
        if !spec.fleet {
            return room;
        }
        match self.reach {
            FleetReach::Up => room,
            FleetReach::DownRefuse => 0.0,
            FleetReach::DownShare { instances } => match Self::fleet_of(tally) {
                Some(fleet) => {
                    let share = (spec.limit - fleet.used - fleet.reserved).max(0.0)
                        / f64::from(instances.max(1));
                    share - Self::unpushed(tally, fleet)
                }
                // Never reached Redis in this window: the whole limit is shared by one.
                None => room,
            },
        }
    }

    /// Records what Redis says of fleet budget `name`'s window. Totals only grow within a
    /// window, so an older message arriving late does not move them back.
    pub fn set_fleet(&mut self, name: &str, total: FleetTotal) {
        for (spec, tally) in self.specs.iter().zip(&mut self.tallies) {
            if !spec.fleet || spec.name != name {
                continue;
            }
            let merged = match tally.fleet {
                Some(old) if old.window_start_ms == total.window_start_ms => FleetTotal {
                    used: old.used.max(total.used),
                    mine: match (old.mine, total.mine) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    },
                    ..total
                },
                // A late message about a window already over changes nothing.
                Some(old) if old.window_start_ms > total.window_start_ms => old,
                _ => total,
            };
            tally.fleet = Some(merged);
        }
    }

    /// Whether Redis is reachable, and what admission does when it is not.
    pub fn set_reach(&mut self, reach: FleetReach) {
        self.reach = reach;
    }

    pub fn reach(&self) -> FleetReach {
        self.reach
    }

    /// What open calls of the whole fleet hold against fleet budget `index`.
    pub fn fleet_reserved(&self, index: usize) -> Option<f64> {
        let tally = self.tallies.get(index)?;
        Self::fleet_of(tally).map(|f| f.reserved)
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
                    reserved: 0.0,
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
                    fleet: spec.fleet,
                }
            })
            .collect()
    }
}
