//! What the OTLP receiver must remember between requests, owned by the ledger and kept in the
//! store with the events it produced: the last value of every cumulative stream (so a resend or
//! a restart counts nothing twice) and which signal family meters each agent instance.

use std::collections::{BTreeMap, HashMap};

use crate::ingest::Event;

use super::mapping::{self, Family, Mapped, Part, UsageLabels};

/// How long a family keeps an agent instance after its last delivery before another family
/// may take over (an agent whose log export was switched off is then metered by its metrics).
pub const CLAIM_LAPSE_MS: i64 = 10 * 60 * 1000;

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
    pub last_ms: i64,
}

/// A row to write in the same transaction as the events.
#[derive(Debug, Clone, PartialEq)]
pub enum StateRow {
    Stream(String, StreamState),
    Claim(String, Claim),
}

/// How to put the state back if the store refused the batch.
#[derive(Debug, Default)]
pub struct Undo {
    streams: Vec<(String, Option<StreamState>)>,
    claims: Vec<(String, Option<Claim>)>,
}

/// What one request amounts to.
#[derive(Debug, Default)]
pub struct Resolved {
    pub events: Vec<Event>,
    /// Usage already counted: a resent cumulative point, or a family not metering its owner.
    pub duplicates: usize,
    pub rejected: Vec<String>,
    pub rows: Vec<StateRow>,
    pub undo: Undo,
}

#[derive(Debug, Default)]
pub struct OtlpState {
    streams: HashMap<String, StreamState>,
    claims: HashMap<String, Claim>,
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
    pub fn new(streams: HashMap<String, StreamState>, claims: HashMap<String, Claim>) -> Self {
        OtlpState { streams, claims }
    }

    /// Whether `family` meters `owner` now; claims the owner when nobody does, or when the
    /// claiming family has been silent for [`CLAIM_LAPSE_MS`].
    fn admit(&mut self, owner: &str, family: Family, now_ms: i64, out: &mut Resolved) -> bool {
        let current = self.claims.get(owner).copied();
        let admitted = match current {
            None => true,
            Some(claim) => claim.family == family || now_ms - claim.last_ms > CLAIM_LAPSE_MS,
        };
        if admitted && current.is_none_or(|c| c.family != family || c.last_ms < now_ms) {
            let claim = Claim {
                family,
                last_ms: now_ms,
            };
            out.undo.claims.push((owner.to_string(), current));
            self.claims.insert(owner.to_string(), claim);
            out.rows.push(StateRow::Claim(owner.to_string(), claim));
        }
        admitted
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
    pub fn resolve(&mut self, mapped: Mapped, now_ms: i64) -> Resolved {
        let mut out = Resolved {
            rejected: mapped.rejected,
            ..Resolved::default()
        };
        for record in mapped.records {
            if self.admit(&record.owner, record.family, now_ms, &mut out) {
                out.events.push(record.event);
            } else {
                out.duplicates += 1;
            }
        }
        let mut groups: BTreeMap<GroupKey, ([f64; 6], String)> = BTreeMap::new();
        for point in mapped.points {
            // Streams advance even for a family that does not meter its owner, so a takeover
            // later counts only what is new.
            let Some(delta) = self.delta(&point, now_ms, &mut out) else {
                out.duplicates += 1;
                continue;
            };
            if !self.admit(&point.owner, point.family, now_ms, &mut out) {
                out.duplicates += 1;
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
        for (key, (totals, identity)) in groups {
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
                Ok(event) => out.events.push(event),
                Err(problem) => out.rejected.push(problem),
            }
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
    }

    /// A batch of `signal` was refused unread (too large): every claim its families hold
    /// lapses, so the same usage arriving through another signal is counted rather than taken
    /// for a duplicate of what was lost. Returns the rows to store.
    pub fn release(&mut self, signal: super::Signal) -> Vec<StateRow> {
        let mut rows = Vec::new();
        for (owner, claim) in &mut self.claims {
            if claim.family.signal() == signal && claim.last_ms != LAPSED {
                claim.last_ms = LAPSED;
                rows.push(StateRow::Claim(owner.clone(), *claim));
            }
        }
        rows
    }

    /// Forgets streams and claims unseen since `cutoff_ms`, as the store does.
    pub fn prune(&mut self, cutoff_ms: i64) {
        self.streams.retain(|_, s| s.seen_ms >= cutoff_ms);
        self.claims.retain(|_, c| c.last_ms >= cutoff_ms);
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
            family: Family::GenAiMetric,
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

    #[test]
    fn one_family_meters_an_owner_until_it_lapses() {
        let mut state = OtlpState::default();
        let span = |id: &str| {
            Record {
            owner: "svc||".into(),
            family: Family::Spans,
            event: crate::ingest::event::validate(
                &serde_json::json!({"type":"llm_usage","agent":"a","model":"m","input_tokens":4,"output_tokens":1,"event_id":id}),
                0,
            )
            .expect("valid"),
        }
        };
        let spans = state.resolve(
            Mapped {
                records: vec![span("1")],
                ..Mapped::default()
            },
            1_000,
        );
        assert_eq!(spans.events.len(), 1);
        let histogram = state.resolve(mapped(vec![point("s", 1, 10, 4.0, true)]), 2_000);
        assert_eq!((histogram.events.len(), histogram.duplicates), (0, 1));
        let later = 1_000 + CLAIM_LAPSE_MS + 1;
        let takeover = state.resolve(mapped(vec![point("s", 1, 20, 9.0, true)]), later);
        assert_eq!(
            input_of(&takeover),
            vec![5],
            "only what is new since the last point"
        );
        let spans_again = state.resolve(
            Mapped {
                records: vec![span("2")],
                ..Mapped::default()
            },
            later + 1,
        );
        assert_eq!(spans_again.duplicates, 1);
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
