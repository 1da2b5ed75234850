//! What the OTLP receiver must remember between requests, owned by the ledger and kept in the
//! store with the events it produced: the last value of every cumulative stream (so a resend or
//! a restart counts nothing twice), which signal family meters each agent instance, and usage
//! held back for a moment in case a richer signal of the same calls is on its way.
//!
//! The rule that makes one count per call, whatever an agent exports:
//! - one family of signals meters an agent instance (its owner) at a time;
//! - a richer family takes the owner over at once: per-call records (spans, log events) over
//!   counters with a cache split, those over the `gen_ai.client.token.usage` histogram, which
//!   has none. Usage the new family reports up to the newest the old one counted is a duplicate
//!   (it was counted already); from there on the richer family counts;
//! - a family as rich or poorer takes over only after the claimant was silent (no usage) for
//!   [`CLAIM_LAPSE_MS`]; a point that adds nothing claims nothing;
//! - histogram usage of an owner nobody meters yet is held for [`HOLD_MS`] (stored, so an
//!   acknowledged export is never lost): a richer family arriving meanwhile takes the owner and
//!   the held usage is dropped as a duplicate, else it is counted when the hold ends. Short
//!   scripts flush their metrics before their spans; this is what keeps their cache split.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::ingest::{Event, EventBody, LlmUsage};

use super::mapping::{self, Family, Mapped, Part, UsageLabels};

/// How long a family keeps an agent instance after its last usage before another family as
/// rich may take over (an agent whose log export was switched off is then metered by its
/// metrics).
pub const CLAIM_LAPSE_MS: i64 = 10 * 60 * 1000;

/// How long usage of the poorest family waits for a richer twin before it is counted.
pub const HOLD_MS: i64 = 10_000;

/// Most usage held at once: past it (a flood of new instances or parentless spans) usage is
/// counted at once as it is, never dropped and never waiting.
pub const MAX_HELD: usize = 10_000;

/// `last_ms` of a claim given up: any family may take the owner at once.
const LAPSED: i64 = i64::MIN / 2;

/// The last point seen of one cumulative stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamState {
    pub start_ns: u64,
    pub time_ns: u64,
    pub value: f64,
    /// When it was last seen, for pruning.
    pub seen_ms: i64,
}

/// Which family meters an agent instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Claim {
    pub family: Family,
    /// When it last delivered usage.
    pub last_ms: i64,
    /// Time (ms) of the newest usage it counted: a richer family taking over counts after it.
    pub covered_ms: i64,
    /// Time (ms) of the newest usage the family it took over from had counted: its own usage up
    /// to then is the same calls again.
    pub inherited_ms: i64,
    /// Until when its usage is held rather than counted (the claim is provisional).
    pub held_until_ms: Option<i64>,
}

/// Usage held back: the event as it will be counted, and whose it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub owner: String,
    pub until_ms: i64,
    pub event_id: Option<String>,
    pub ts_ms: i64,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub usage: LlmUsage,
    /// The parent span whose model this usage waits for; `None` for usage waiting for a
    /// richer twin.
    #[serde(default)]
    pub awaiting: Option<String>,
}

impl Held {
    fn new(owner: &str, until_ms: i64, event: &Event) -> Option<Held> {
        let EventBody::LlmUsage(usage) = &event.body else {
            return None;
        };
        Some(Held {
            owner: owner.to_string(),
            until_ms,
            event_id: event.event_id.clone(),
            ts_ms: event.ts_ms,
            trace_id: event.trace_id.clone(),
            span_id: event.span_id.clone(),
            usage: usage.clone(),
            awaiting: None,
        })
    }

    /// The key it is stored under.
    pub fn key(&self) -> String {
        self.event_id
            .clone()
            .unwrap_or_else(|| format!("{}@{}", self.owner, self.ts_ms))
    }

    fn event(&self) -> Event {
        Event {
            event_id: self.event_id.clone(),
            ts_ms: self.ts_ms,
            trace_id: self.trace_id.clone(),
            span_id: self.span_id.clone(),
            body: EventBody::LlmUsage(self.usage.clone()),
        }
    }
}

/// A row to write in the same transaction as the events.
#[derive(Debug, Clone, PartialEq)]
pub enum StateRow {
    Stream(String, StreamState),
    Claim(String, Claim),
    Hold(Box<Held>),
    /// Held usage counted or dropped: its key.
    Unhold(String),
    /// The provider's ids of a call counted already under another family (ms of the call):
    /// remembered like a counted call's, so the same call from any source later is one too.
    Seen(Vec<String>, i64),
}

/// How to put the state back if the store refused the batch.
#[derive(Debug, Default)]
pub struct Undo {
    streams: Vec<(String, Option<StreamState>)>,
    claims: Vec<(String, Option<Claim>)>,
    held: Vec<(String, Option<Held>)>,
}

/// What one request amounts to.
#[derive(Debug, Default)]
pub struct Resolved {
    pub events: Vec<Event>,
    /// Usage already counted: a resent cumulative point, a family not metering its owner,
    /// held usage a richer family superseded.
    pub duplicates: usize,
    /// Usage held for a moment (stored, counted when the hold ends unless superseded).
    pub held: usize,
    pub rejected: Vec<String>,
    pub rows: Vec<StateRow>,
    pub undo: Undo,
}

#[derive(Debug, Default)]
pub struct OtlpState {
    streams: HashMap<String, StreamState>,
    claims: HashMap<String, Claim>,
    held: BTreeMap<String, Held>,
}

/// What becomes of one usage of a family for an owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Count,
    Hold(i64),
    Duplicate,
}

/// How much of a call's usage a family reports: per-call records with their split, counters
/// with a split, the histogram without.
fn richness(family: Family) -> u8 {
    match family {
        Family::GenAiMetric => 1,
        Family::ClaudeCodeMetrics
        | Family::GeminiCliMetrics
        | Family::GenAiCounters
        | Family::CodexMetrics
        | Family::CursorMetrics => 2,
        Family::Spans
        | Family::ClaudeCodeLogs
        | Family::GeminiCliLogs
        | Family::CodexLogs
        | Family::CursorLogs => 3,
    }
}

/// Whether a family's usage waits for a richer twin when nobody meters its owner yet.
fn holds(family: Family) -> bool {
    richness(family) == 1
}

/// One usage event's worth of metric deltas: same owner, family, labels and timestamp.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    owner: String,
    family: Family,
    labels: UsageLabels,
    time_ns: u64,
}

fn part_index(part: Part) -> usize {
    match part {
        Part::Input => 0,
        Part::CacheRead => 1,
        Part::CacheWrite => 2,
        Part::Output => 3,
        Part::Reasoning => 4,
        Part::Usd => 5,
    }
}

impl OtlpState {
    pub fn new(
        streams: HashMap<String, StreamState>,
        claims: HashMap<String, Claim>,
        held: Vec<Held>,
    ) -> Self {
        OtlpState {
            streams,
            claims,
            held: held.into_iter().map(|h| (h.key(), h)).collect(),
        }
    }

    fn set_claim(&mut self, owner: &str, claim: Claim, out: &mut Resolved) {
        let previous = self.claims.insert(owner.to_string(), claim);
        if previous != Some(claim) {
            out.undo.claims.push((owner.to_string(), previous));
            out.rows.push(StateRow::Claim(owner.to_string(), claim));
        }
    }

    /// Keys of `owner`'s usage held for a richer twin (not spans waiting for a parent).
    fn held_for_twin(&self, owner: &str) -> Vec<String> {
        self.held
            .iter()
            .filter(|(_, h)| h.owner == owner && h.awaiting.is_none())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Drops every held usage of `owner`: a richer family reports the same calls.
    fn supersede(&mut self, owner: &str, out: &mut Resolved) {
        for key in self.held_for_twin(owner) {
            if self.unhold(&key, out).is_some() {
                out.duplicates += 1;
            }
        }
    }

    /// What becomes of usage of `family` for `owner`, dated `ts_ms`; moves the claim.
    fn admit(
        &mut self,
        owner: &str,
        family: Family,
        ts_ms: i64,
        now_ms: i64,
        out: &mut Resolved,
    ) -> Verdict {
        let current = self.claims.get(owner).copied();
        let fresh = |inherited_ms: i64, held_until_ms: Option<i64>| Claim {
            family,
            last_ms: now_ms,
            covered_ms: ts_ms,
            inherited_ms,
            held_until_ms,
        };
        let after = |inherited_ms: i64| {
            if ts_ms <= inherited_ms {
                Verdict::Duplicate
            } else {
                Verdict::Count
            }
        };
        let (claim, verdict) = match current {
            None if holds(family) && self.held.len() < MAX_HELD => {
                let until = now_ms + HOLD_MS;
                (fresh(i64::MIN, Some(until)), Verdict::Hold(until))
            }
            None => (fresh(i64::MIN, None), Verdict::Count),
            Some(c) if c.family == family => {
                let claim = Claim {
                    last_ms: now_ms.max(c.last_ms),
                    covered_ms: c.covered_ms.max(ts_ms),
                    ..c
                };
                let verdict = match c.held_until_ms {
                    Some(until) => Verdict::Hold(until),
                    None => after(c.inherited_ms),
                };
                (claim, verdict)
            }
            Some(c)
                if richness(family) > richness(c.family) || now_ms - c.last_ms > CLAIM_LAPSE_MS =>
            {
                if c.held_until_ms.is_some() {
                    // Nothing of the old family was counted: the new one counts it all.
                    self.supersede(owner, out);
                    (fresh(i64::MIN, None), Verdict::Count)
                } else {
                    // What the old family counted is the same calls again.
                    let inherited = c.covered_ms.max(c.inherited_ms);
                    (fresh(inherited, None), after(inherited))
                }
            }
            Some(_) => return Verdict::Duplicate,
        };
        self.set_claim(owner, claim, out);
        verdict
    }

    /// Counts `event`, holds it, or calls it a duplicate, as `admit` says; a counted span
    /// that waits for its parent's model is held for it instead.
    fn take(
        &mut self,
        owner: &str,
        family: Family,
        event: Event,
        awaiting: Option<String>,
        now_ms: i64,
        out: &mut Resolved,
    ) {
        // A span waiting for its model is admitted once it knows it: whose usage it is depends
        // on the model.
        let verdict = match awaiting {
            Some(_) if self.held.len() < MAX_HELD => Verdict::Hold(now_ms + HOLD_MS),
            _ => self.admit(owner, family, event.ts_ms, now_ms, out),
        };
        match verdict {
            Verdict::Count => out.events.push(event),
            Verdict::Duplicate => {
                out.duplicates += 1;
                if let EventBody::LlmUsage(u) = &event.body
                    && !u.call_ids.is_empty()
                {
                    out.rows
                        .push(StateRow::Seen(u.call_ids.clone(), event.ts_ms));
                }
            }
            Verdict::Hold(until) => match Held::new(owner, until, &event) {
                Some(mut held) => {
                    held.awaiting = awaiting;
                    self.hold(held, out);
                    out.held += 1;
                }
                None => out.events.push(event),
            },
        }
    }

    fn hold(&mut self, held: Held, out: &mut Resolved) {
        let key = held.key();
        out.rows.push(StateRow::Hold(Box::new(held.clone())));
        out.undo
            .held
            .push((key.clone(), self.held.insert(key, held)));
    }

    fn unhold(&mut self, key: &str, out: &mut Resolved) -> Option<Held> {
        let held = self.held.remove(key)?;
        out.rows.push(StateRow::Unhold(key.to_string()));
        out.undo.held.push((key.to_string(), Some(held.clone())));
        Some(held)
    }

    /// Spans that wait for these parents learn their model (and are counted), or learn the
    /// next parent up to wait for.
    fn inform(&mut self, hints: &[mapping::Hint], now_ms: i64, out: &mut Resolved) {
        if self.held.values().all(|h| h.awaiting.is_none()) {
            return;
        }
        let hints: HashMap<&str, &mapping::Hint> =
            hints.iter().map(|h| (h.span_id.as_str(), h)).collect();
        let waiting: Vec<(String, String)> = self
            .held
            .iter()
            .filter_map(|(k, h)| h.awaiting.clone().map(|a| (k.clone(), a)))
            .filter(|(_, a)| hints.contains_key(a.as_str()))
            .collect();
        for (key, parent) in waiting {
            let hint = hints[parent.as_str()];
            let Some(mut held) = self.unhold(&key, out) else {
                continue;
            };
            match (&hint.model, &hint.parent) {
                (Some(model), _) => {
                    held.usage.model = crate::ingest::event::model_label(model).into_owned();
                    let instance = held.owner.rsplit_once('|').map_or("", |(i, _)| i);
                    held.owner = format!("{instance}|{}", held.usage.model);
                    self.count_span(held, now_ms, out);
                }
                (None, Some(grandparent)) => {
                    held.awaiting = Some(grandparent.clone());
                    self.hold(held, out);
                }
                (None, None) => self.count_span(held, now_ms, out),
            }
        }
    }

    /// A span that waited for its parent, admitted now as its family's usage.
    fn count_span(&mut self, held: Held, now_ms: i64, out: &mut Resolved) {
        let event = held.event();
        match self.admit(&held.owner, Family::Spans, event.ts_ms, now_ms, out) {
            Verdict::Duplicate => out.duplicates += 1,
            _ => out.events.push(event),
        }
    }

    /// The new amount a point adds: `None` when it was seen already.
    fn delta(&mut self, point: &mapping::Point, now_ms: i64, out: &mut Resolved) -> Option<f64> {
        if !point.cumulative {
            return Some(point.value);
        }
        let previous = self.streams.get(&point.stream).copied();
        let delta = match previous {
            None => Some(point.value),
            Some(last) if point.start_ns > last.start_ns => Some(point.value),
            Some(last) if point.start_ns < last.start_ns || point.time_ns <= last.time_ns => None,
            // A counter that went down without a new start time was reset all the same.
            Some(last) if point.value < last.value => Some(point.value),
            Some(last) => Some(point.value - last.value),
        };
        if delta.is_some() {
            let state = StreamState {
                start_ns: point.start_ns,
                time_ns: point.time_ns,
                value: point.value,
                seen_ms: now_ms,
            };
            out.undo.streams.push((point.stream.clone(), previous));
            self.streams.insert(point.stream.clone(), state);
            out.rows.push(StateRow::Stream(point.stream.clone(), state));
        }
        delta
    }

    /// Turns one mapped request into events, advancing streams and claims. The caller writes
    /// `rows` with the events, or calls [`OtlpState::rollback`] if that fails.
    pub fn resolve(&mut self, mut mapped: Mapped, now_ms: i64) -> Resolved {
        let mut out = Resolved {
            rejected: std::mem::take(&mut mapped.rejected),
            ..Resolved::default()
        };
        // Records before points, and the richest points first: within one request the order
        // of signals does not decide who meters an owner.
        self.inform(&mapped.hints, now_ms, &mut out);
        for record in mapped.records {
            self.take(
                &record.owner,
                record.family,
                record.event,
                record.awaiting,
                now_ms,
                &mut out,
            );
        }
        mapped
            .points
            .sort_by_key(|p| std::cmp::Reverse(richness(p.family)));
        let mut groups: BTreeMap<GroupKey, ([f64; 6], String)> = BTreeMap::new();
        for point in mapped.points {
            // Streams advance even for a family that does not meter its owner, so a takeover
            // later counts only what is new.
            let Some(delta) = self.delta(&point, now_ms, &mut out) else {
                out.duplicates += 1;
                continue;
            };
            if delta == 0.0 {
                // Nothing new: no claim is taken or kept alive by it.
                continue;
            }
            let key = GroupKey {
                owner: point.owner,
                family: point.family,
                labels: point.labels,
                time_ns: point.time_ns,
            };
            let (totals, identity) = groups.entry(key).or_default();
            for part in point.parts {
                totals[part_index(*part)] += delta;
            }
            identity.push_str(&format!(
                "{}:{}:{};",
                point.stream, point.start_ns, point.time_ns
            ));
        }
        let mut by_richness: Vec<_> = groups.into_iter().collect();
        by_richness.sort_by_key(|(key, _)| std::cmp::Reverse(richness(key.family)));
        for (key, (totals, identity)) in by_richness {
            if totals.iter().all(|v| *v == 0.0) {
                continue;
            }
            match mapping::metric_event(
                key.family,
                &key.labels,
                key.time_ns,
                &totals,
                &identity,
                now_ms,
            ) {
                Ok(event) => self.take(&key.owner, key.family, event, None, now_ms, &mut out),
                Err(problem) => out.rejected.push(problem),
            }
        }
        out
    }

    /// Held usage whose hold has ended becomes events, and its claims firm.
    pub fn due(&mut self, now_ms: i64) -> Resolved {
        let mut out = Resolved::default();
        // Runs before every ledger batch: nothing to scan unless something is held.
        if self.held.is_empty() {
            return out;
        }
        // Spans whose parent never came are counted as they are (model unknown).
        let orphans: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.awaiting.is_some() && h.until_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for key in orphans {
            if let Some(held) = self.unhold(&key, &mut out) {
                self.count_span(held, now_ms, &mut out);
            }
        }
        let owners: Vec<(String, Claim)> = self
            .claims
            .iter()
            .filter(|(_, c)| c.held_until_ms.is_some_and(|until| until <= now_ms))
            .map(|(o, c)| (o.clone(), *c))
            .collect();
        for (owner, claim) in owners {
            for key in self.held_for_twin(&owner) {
                if let Some(held) = self.unhold(&key, &mut out) {
                    out.events.push(held.event());
                }
            }
            let firm = Claim {
                held_until_ms: None,
                ..claim
            };
            self.set_claim(&owner, firm, &mut out);
        }
        out
    }

    /// Puts streams and claims back as they were before `resolve`.
    pub fn rollback(&mut self, undo: Undo) {
        for (key, previous) in undo.streams.into_iter().rev() {
            match previous {
                Some(state) => self.streams.insert(key, state),
                None => self.streams.remove(&key),
            };
        }
        for (owner, previous) in undo.claims.into_iter().rev() {
            match previous {
                Some(claim) => self.claims.insert(owner, claim),
                None => self.claims.remove(&owner),
            };
        }
        for (key, previous) in undo.held.into_iter().rev() {
            match previous {
                Some(held) => self.held.insert(key, held),
                None => self.held.remove(&key),
            };
        }
    }

    /// A batch of `signal` was refused unread (too large): every claim its families hold
    /// lapses, so the same usage arriving through another signal is counted rather than taken
    /// for a duplicate of what was lost. Returns the rows to store.
    pub fn release(&mut self, signal: super::Signal) -> Vec<StateRow> {
        let mut rows = Vec::new();
        for (owner, claim) in &mut self.claims {
            if claim.family.signal() == signal && claim.last_ms != LAPSED {
                claim.last_ms = LAPSED;
                // What the lost batch held was never counted: the twin counts all of it.
                claim.covered_ms = i64::MIN;
                claim.inherited_ms = i64::MIN;
                rows.push(StateRow::Claim(owner.clone(), *claim));
            }
        }
        rows
    }

    /// Forgets streams and claims unseen since `cutoff_ms`, as the store does.
    pub fn prune(&mut self, cutoff_ms: i64) {
        self.streams.retain(|_, s| s.seen_ms >= cutoff_ms);
        self.claims
            .retain(|_, c| c.last_ms >= cutoff_ms || c.held_until_ms.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::EventBody;
    use crate::otlp::mapping::{Point, Record};

    fn point(stream: &str, start: u64, time: u64, value: f64, cumulative: bool) -> Point {
        Point {
            owner: "svc||".into(),
            family: Family::GenAiCounters,
            stream: stream.into(),
            start_ns: start,
            time_ns: time,
            cumulative,
            value,
            parts: &[Part::Input],
            labels: UsageLabels {
                agent: "a".into(),
                model: "gpt-4o".into(),
                provider: None,
            },
        }
    }

    #[test]
    fn a_refused_signal_gives_up_its_claims_so_the_twin_counts() {
        let mut state = OtlpState::default();
        let mut logs = point("logs-stream", 1, 10, 100.0, false);
        logs.family = Family::GeminiCliLogs;
        let metric = point("metric-stream", 1, 10, 100.0, false);
        let first = state.resolve(mapped_points(vec![logs.clone()]), 1_000);
        assert_eq!(input_of(&first), vec![100]);
        let twin = state.resolve(mapped_points(vec![metric.clone()]), 2_000);
        assert_eq!(twin.duplicates, 1, "the logs family meters the instance");
        // A logs batch was refused for its size: its usage never arrived.
        let rows = state.release(super::super::Signal::Logs);
        assert_eq!(rows.len(), 1);
        assert!(state.release(super::super::Signal::Traces).is_empty());
        let mut later = metric;
        later.time_ns = 20;
        let counted = state.resolve(mapped_points(vec![later]), 3_000);
        assert_eq!(input_of(&counted), vec![100], "the metrics twin is counted");
    }

    fn mapped_points(points: Vec<Point>) -> Mapped {
        Mapped {
            points,
            ..Mapped::default()
        }
    }

    fn input_of(resolved: &Resolved) -> Vec<u64> {
        resolved
            .events
            .iter()
            .map(|e| match &e.body {
                EventBody::LlmUsage(u) => u.input_tokens,
                _ => 0,
            })
            .collect()
    }

    fn mapped(points: Vec<Point>) -> Mapped {
        Mapped {
            points,
            ..Mapped::default()
        }
    }

    #[test]
    fn cumulative_points_become_deltas_and_resends_count_nothing() {
        let mut state = OtlpState::default();
        let first = state.resolve(mapped(vec![point("s", 1, 10, 100.0, true)]), 0);
        assert_eq!(input_of(&first), vec![100]);
        let resend = state.resolve(mapped(vec![point("s", 1, 10, 100.0, true)]), 0);
        assert_eq!((input_of(&resend), resend.duplicates), (vec![], 1));
        let next = state.resolve(mapped(vec![point("s", 1, 20, 130.0, true)]), 0);
        assert_eq!(input_of(&next), vec![30]);
        let unchanged = state.resolve(mapped(vec![point("s", 1, 30, 130.0, true)]), 0);
        assert!(unchanged.events.is_empty(), "no new usage, no event");
    }

    #[test]
    fn a_restarted_exporter_counts_from_its_new_start() {
        let mut state = OtlpState::default();
        state.resolve(mapped(vec![point("s", 1, 10, 100.0, true)]), 0);
        let restarted = state.resolve(mapped(vec![point("s", 50, 60, 7.0, true)]), 0);
        assert_eq!(input_of(&restarted), vec![7]);
        let reset_in_place = state.resolve(mapped(vec![point("s", 50, 70, 3.0, true)]), 0);
        assert_eq!(input_of(&reset_in_place), vec![3]);
        let stale = state.resolve(mapped(vec![point("s", 1, 80, 500.0, true)]), 0);
        assert_eq!((input_of(&stale), stale.duplicates), (vec![], 1));
    }

    #[test]
    fn delta_points_pass_through_with_a_stable_event_id() {
        let mut state = OtlpState::default();
        let a = state.resolve(mapped(vec![point("s", 1, 10, 5.0, false)]), 0);
        let b = state.resolve(mapped(vec![point("s", 1, 10, 5.0, false)]), 0);
        assert_eq!(input_of(&a), vec![5]);
        assert_eq!(
            a.events[0].event_id, b.events[0].event_id,
            "the store dedupes the resend"
        );
    }

    /// A span record of `owner` ending at `ts_ms`.
    fn span_at(id: &str, ts_ms: i64, input: u64) -> Record {
        let ts = jiff::Timestamp::from_millisecond(ts_ms)
            .expect("time")
            .to_string();
        Record {
            owner: "svc||".into(),
            family: Family::Spans,
            event: crate::ingest::event::validate(
                &serde_json::json!({"type":"llm_usage","agent":"a","model":"m","input_tokens":input,
                                    "output_tokens":1,"event_id":id,"ts":ts}),
                ts_ms,
            )
            .expect("valid"),
            awaiting: None,
        }
    }

    fn records(records: Vec<Record>) -> Mapped {
        Mapped {
            records,
            ..Mapped::default()
        }
    }

    /// A cumulative point of `family` at `ms`.
    fn point_at(family: Family, stream: &str, ms: i64, value: f64) -> Point {
        let ns = u64::try_from(ms).expect("positive") * 1_000_000;
        Point {
            family,
            ..point(stream, 1, ns, value, true)
        }
    }

    const T0: i64 = 1_790_000_000_000;

    #[test]
    fn a_poorer_family_waits_for_a_lapse_and_a_richer_one_takes_over_where_it_left_off() {
        let mut state = OtlpState::default();
        let spans = state.resolve(records(vec![span_at("1", T0, 4)]), T0);
        assert_eq!(input_of(&spans), vec![4]);
        let counter = Family::GenAiCounters;
        let ignored = state.resolve(
            mapped(vec![point_at(counter, "s", T0 + 1_000, 4.0)]),
            T0 + 1_000,
        );
        assert_eq!((ignored.events.len(), ignored.duplicates), (0, 1));
        // An unchanged cumulative point adds nothing and claims nothing, however late.
        let idle = T0 + CLAIM_LAPSE_MS + 5_000;
        let unchanged = state.resolve(mapped(vec![point_at(counter, "s", idle, 4.0)]), idle);
        assert!(
            unchanged.events.is_empty()
                && unchanged
                    .rows
                    .iter()
                    .all(|r| !matches!(r, StateRow::Claim(..)))
        );
        // Spans silent for the lapse: the counter takes over, counting what is new.
        let later = idle + 1_000;
        let takeover = state.resolve(mapped(vec![point_at(counter, "s", later, 9.0)]), later);
        assert_eq!(
            input_of(&takeover),
            vec![5],
            "only what is new since the last point"
        );
        // Spans again: richer, they take over at once; a span the counter already covered
        // is a duplicate, a newer one counts.
        let back = state.resolve(
            records(vec![
                span_at("2", later - 10, 5),
                span_at("3", later + 500, 7),
            ]),
            later + 600,
        );
        assert_eq!((input_of(&back), back.duplicates), (vec![7], 1));
        // A later export of the spans family still dated within what the counter covered (one
        // call, two records arriving apart) is the same calls again.
        let straggler = state.resolve(records(vec![span_at("4", later - 5, 3)]), later + 650);
        assert_eq!((input_of(&straggler), straggler.duplicates), (vec![], 1));
        let counter_again = state.resolve(
            mapped(vec![point_at(counter, "s", later + 700, 16.0)]),
            later + 700,
        );
        assert_eq!(
            (counter_again.events.len(), counter_again.duplicates),
            (0, 1)
        );
    }

    #[test]
    fn histogram_usage_is_held_and_dropped_when_spans_of_the_same_calls_arrive() {
        let mut state = OtlpState::default();
        let histogram = Family::GenAiMetric;
        // A short script flushes its metrics first.
        let held = state.resolve(mapped(vec![point_at(histogram, "h", T0, 100.0)]), T0);
        assert_eq!((held.events.len(), held.held), (0, 1));
        assert!(
            held.rows.iter().any(|r| matches!(r, StateRow::Hold(_))),
            "held usage is stored"
        );
        assert!(
            state.due(T0 + HOLD_MS - 1).events.is_empty(),
            "not before the hold ends"
        );
        let spans = state.resolve(
            records(vec![span_at("1", T0 - 5, 60), span_at("2", T0 - 2, 40)]),
            T0 + 50,
        );
        assert_eq!(
            (input_of(&spans), spans.duplicates),
            (vec![60, 40], 1),
            "the held histogram is superseded"
        );
        assert!(
            state.due(T0 + HOLD_MS + 1).events.is_empty(),
            "nothing left to count"
        );
        let more = state.resolve(
            mapped(vec![point_at(histogram, "h", T0 + 60_000, 150.0)]),
            T0 + 60_000,
        );
        assert_eq!((more.events.len(), more.duplicates), (0, 1));
    }

    #[test]
    fn held_histogram_usage_without_a_richer_twin_counts_when_the_hold_ends_and_survives_a_restart()
    {
        let mut state = OtlpState::default();
        let held = state.resolve(
            mapped(vec![point_at(Family::GenAiMetric, "h", T0, 100.0)]),
            T0,
        );
        // The store's view after the commit, as a restart reads it back.
        let mut claims = HashMap::new();
        let mut kept = Vec::new();
        for row in held.rows {
            match row {
                StateRow::Claim(owner, claim) => {
                    claims.insert(owner, claim);
                }
                StateRow::Hold(h) => kept.push(*h),
                _ => {}
            }
        }
        let mut restarted = OtlpState::new(HashMap::new(), claims, kept);
        let due = restarted.due(T0 + HOLD_MS);
        assert_eq!(input_of(&due), vec![100]);
        assert!(due.rows.iter().any(|r| matches!(r, StateRow::Unhold(_))));
        let next = restarted.resolve(
            mapped(vec![point_at(
                Family::GenAiMetric,
                "h2",
                T0 + HOLD_MS + 5,
                7.0,
            )]),
            T0 + HOLD_MS + 5,
        );
        assert_eq!(input_of(&next), vec![7], "a firm claim counts at once");
    }

    #[test]
    fn a_flood_of_new_instances_is_counted_at_once_past_the_held_cap() {
        let mut state = OtlpState::default();
        let points = (0..=MAX_HELD)
            .map(|n| Point {
                owner: format!("svc-{n}||"),
                ..point_at(Family::GenAiMetric, &format!("h{n}"), T0, 5.0)
            })
            .collect();
        let flood = state.resolve(mapped(points), T0);
        assert_eq!((flood.held, flood.events.len()), (MAX_HELD, 1));
        assert_eq!(input_of(&state.due(T0 + HOLD_MS)).len(), MAX_HELD);
    }

    #[test]
    fn within_one_request_the_richer_family_meters_whatever_the_order() {
        for order in [
            [Family::GenAiMetric, Family::GeminiCliMetrics],
            [Family::GeminiCliMetrics, Family::GenAiMetric],
        ] {
            let mut state = OtlpState::default();
            let points = order
                .iter()
                .map(|f| {
                    point_at(
                        *f,
                        f.label(),
                        T0,
                        if *f == Family::GenAiMetric {
                            100.0
                        } else {
                            90.0
                        },
                    )
                })
                .collect();
            let resolved = state.resolve(mapped(points), T0);
            assert_eq!(
                (input_of(&resolved), resolved.duplicates, resolved.held),
                (vec![90], 1, 0),
                "{order:?}"
            );
        }
    }

    #[test]
    fn a_span_waiting_for_its_parent_takes_the_parent_s_model_or_counts_as_it_is() {
        let mut state = OtlpState::default();
        let mut child = span_at("c", T0, 10);
        child.awaiting = Some("p1".into());
        let mut orphan = span_at("o", T0, 20);
        orphan.awaiting = Some("gone".into());
        let first = state.resolve(records(vec![child, orphan]), T0);
        assert_eq!((first.events.len(), first.held), (0, 2));
        let hint = |id: &str, parent: Option<&str>, model: Option<&str>| mapping::Hint {
            span_id: id.into(),
            parent: parent.map(String::from),
            model: model.map(String::from),
        };
        // The parent names no model: wait for its own parent.
        let middle = state.resolve(
            Mapped {
                hints: vec![hint("p1", Some("p0"), None)],
                ..Mapped::default()
            },
            T0 + 1,
        );
        assert!(middle.events.is_empty());
        let top = state.resolve(
            Mapped {
                hints: vec![hint("p0", None, Some("gpt-5.4"))],
                ..Mapped::default()
            },
            T0 + 2,
        );
        let models: Vec<String> = top
            .events
            .iter()
            .map(|e| match &e.body {
                EventBody::LlmUsage(u) => u.model.clone(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(models, vec!["gpt-5.4".to_string()]);
        let late = state.due(T0 + HOLD_MS);
        assert_eq!(
            input_of(&late),
            vec![20],
            "a parent that never came: counted as it is"
        );
    }

    #[test]
    fn rollback_restores_streams_and_claims() {
        let mut state = OtlpState::default();
        state.resolve(mapped(vec![point("s", 1, 10, 100.0, true)]), 0);
        let failed = state.resolve(mapped(vec![point("s", 1, 20, 150.0, true)]), 0);
        state.rollback(failed.undo);
        let retried = state.resolve(mapped(vec![point("s", 1, 20, 150.0, true)]), 0);
        assert_eq!(
            input_of(&retried),
            vec![50],
            "the retry counts what the failure did not"
        );
    }
}
