//! Spans (plan, task, file_write), built on a thread of their own from what the store
//! recorded, for the exporter. The ledger sends the batch's ending events and budget
//! transitions here after it answered the batch: assembling a span reads the store (on a
//! reader connection, beside the writer), and no reply waits for that.

use super::*;

/// What the ledger tells the span thread, in order.
#[derive(Debug)]
pub(super) enum SpanInput {
    /// A budget transition at (ms, event name, budget, resource): a span event on the spans
    /// open at the time.
    Transition(i64, String, String, String),
    /// An event that may close a span (run_end, task_end) or be one (file_write).
    Ended(Box<Event>),
}

/// Inputs the span thread may have queued before more are dropped (and counted in the log).
const SPAN_QUEUE: usize = 8192;

/// The ledger's end of the span thread.
pub(super) struct SpanQueue {
    sender: std::sync::mpsc::SyncSender<SpanInput>,
    dropped: u64,
}

impl SpanQueue {
    /// Starts the span thread on a reader of the store at `path`.
    pub(super) fn spawn(
        path: &std::path::Path,
        telemetry: Telemetry,
    ) -> Result<SpanQueue, LedgerError> {
        let store = Store::open_reader(path)?;
        let (sender, inbox) = std::sync::mpsc::sync_channel(SPAN_QUEUE);
        let mut sink = SpanSink {
            store,
            telemetry,
            recent_transitions: VecDeque::new(),
        };
        std::thread::Builder::new()
            .name("costmeter-spans".into())
            .spawn(move || {
                // Ends when the ledger (the only sender) is gone; dropping the telemetry
                // handle then lets the exporter drain and stop.
                for input in inbox {
                    sink.take(input);
                }
            })
            .map_err(LedgerError::Thread)?;
        Ok(SpanQueue { sender, dropped: 0 })
    }

    /// Queues without waiting; a full queue drops the input and says so at the 1st, 2nd, 4th…
    pub(super) fn send(&mut self, input: SpanInput) {
        if self.sender.try_send(input).is_err() {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                warn!(
                    dropped = self.dropped,
                    "span queue full or closed; span input dropped"
                );
            }
        }
    }
}

/// Whether an event is one the span thread wants.
pub(super) fn makes_span(event: &Event) -> bool {
    matches!(
        event.body,
        EventBody::RunEnd { .. } | EventBody::TaskEnd { .. } | EventBody::FileWrite { .. }
    )
}

struct SpanSink {
    store: Store,
    telemetry: Telemetry,
    /// Recent budget transitions, to become span events on the spans open at the time.
    recent_transitions: VecDeque<(i64, String, String, String)>,
}

impl SpanSink {
    fn take(&mut self, input: SpanInput) {
        match input {
            SpanInput::Transition(at, name, budget, resource) => {
                self.recent_transitions
                    .push_back((at, name, budget, resource));
                if self.recent_transitions.len() > MAX_RECENT_TRANSITIONS {
                    self.recent_transitions.pop_front();
                }
            }
            SpanInput::Ended(event) => self.emit_span(&event),
        }
    }

    /// Builds and queues the span an ending event closes. Reads the run or task back from the
    /// store, which has recorded both halves before the ledger sent the event here.
    fn emit_span(&mut self, event: &Event) {
        let record = match &event.body {
            EventBody::RunEnd { run_id, .. } => self.plan_span(run_id, event),
            EventBody::TaskEnd { task_id, .. } => self.task_span(task_id, event),
            EventBody::FileWrite {
                task_id,
                bytes,
                path_hash,
            } => self.file_write_span(task_id.as_deref(), *bytes, path_hash.as_deref(), event),
            _ => None,
        };
        match record {
            Some(record) => self.telemetry.record(record),
            None if matches!(
                event.body,
                EventBody::RunEnd { .. } | EventBody::TaskEnd { .. }
            ) =>
            {
                warn!(
                    event = event.body.type_name(),
                    "no span built: its run or task could not be read back"
                );
            }
            None => {}
        }
    }

    fn transitions_between(&self, start: i64, end: i64) -> Vec<(String, i64, Vec<KeyValue>)> {
        self.recent_transitions
            .iter()
            .filter(|(at, ..)| *at >= start && *at <= end)
            .map(|(at, name, budget, resource)| {
                let attributes = vec![
                    KeyValue::new("budget", budget.clone()),
                    KeyValue::new("resource", resource.clone()),
                ];
                (name.clone(), *at, attributes)
            })
            .collect()
    }

    fn run_trace(&self, run_id: &str) -> [u8; 16] {
        self.store
            .run_trace_id(run_id)
            .ok()
            .flatten()
            .and_then(|t| hex_bytes::<16>(&t))
            .unwrap_or_else(|| derived_trace_id("run", run_id))
    }

    fn plan_span(&self, run_id: &str, event: &Event) -> Option<SpanRecord> {
        let run = self.store.run(run_id).ok().flatten()?.run;
        let start = parse_ms(run.started.as_deref()).unwrap_or(event.ts_ms);
        let mut attributes = vec![
            KeyValue::new("run.id", run.id.clone()),
            KeyValue::new("result", run.status.clone()),
        ];
        let optional = [
            ("agent", &run.agent),
            ("run.name", &run.name),
            ("failure_class", &run.failure_class),
            ("error_summary", &run.error_summary),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value.clone()));
            }
        }
        let usd = run.usage.iter().fold(0.0, |sum, u| sum + u.usd);
        let tokens: u64 = run.usage.iter().map(|u| u.tokens).sum();
        attributes.push(KeyValue::new("cost.usd", usd));
        attributes.push(KeyValue::new(
            "cost.tokens",
            i64::try_from(tokens).unwrap_or(i64::MAX),
        ));
        Some(SpanRecord {
            name: "plan",
            trace_id: run
                .trace_id
                .as_deref()
                .and_then(hex_bytes::<16>)
                .unwrap_or_else(|| derived_trace_id("run", run_id)),
            span_id: derived_span_id("run", run_id),
            parent: run.parent_span_id.as_deref().and_then(hex_bytes::<8>),
            parent_remote: run.parent_span_id.is_some(),
            start_ms: start,
            end_ms: event.ts_ms,
            events: self.transitions_between(start, event.ts_ms),
            failed: run.status != "success",
            attributes,
        })
    }

    fn task_span(&self, task_id: &str, event: &Event) -> Option<SpanRecord> {
        let task = self.store.task(task_id).ok().flatten()?;
        let start = parse_ms(task.started.as_deref()).unwrap_or(event.ts_ms);
        let trace_id = task
            .cost_record
            .trace_id
            .as_deref()
            .and_then(hex_bytes::<16>)
            .or_else(|| task.run_id.as_deref().map(|run| self.run_trace(run)))
            .unwrap_or_else(|| derived_trace_id("task", task_id));
        let own_parent = task.parent_span_id.as_deref().and_then(hex_bytes::<8>);
        let (parent, parent_remote) = match (own_parent, &task.run_id) {
            (Some(span), _) => (Some(span), true),
            (None, Some(run)) => (Some(derived_span_id("run", run)), false),
            (None, None) => (None, false),
        };
        let record = &task.cost_record;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut attributes = vec![
            KeyValue::new("task.id", task.id.clone()),
            KeyValue::new("task.type", task.task_type.clone().unwrap_or_default()),
            KeyValue::new("result", task.status.clone()),
            KeyValue::new("cost_record.cpu_seconds", record.cpu_seconds),
            KeyValue::new("cost_record.disk_bytes", count(record.disk_bytes)),
            KeyValue::new("cost_record.mem_peak_bytes", count(record.mem_peak_bytes)),
            KeyValue::new("cost_record.tokens", count(record.tokens)),
            KeyValue::new("cost_record.usd", record.usd),
        ];
        let optional = [
            ("agent", &task.agent),
            ("failure_class", &task.failure_class),
            ("error_summary", &task.error_summary),
            ("run.id", &task.run_id),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value.clone()));
            }
        }
        Some(SpanRecord {
            name: "task",
            trace_id,
            span_id: derived_span_id("task", task_id),
            parent,
            parent_remote,
            start_ms: start,
            end_ms: event.ts_ms,
            events: self.transitions_between(start, event.ts_ms),
            failed: task.status != "success",
            attributes,
        })
    }

    fn file_write_span(
        &self,
        task_id: Option<&str>,
        bytes: u64,
        path_hash: Option<&str>,
        event: &Event,
    ) -> Option<SpanRecord> {
        // Only the task's ids: a file write must not cost a cost-record computation.
        let task = task_id.and_then(|id| self.store.task_trace(id).ok().flatten());
        let task_trace = task
            .as_ref()
            .and_then(|(trace, _)| trace.as_deref().and_then(hex_bytes::<16>));
        let run_trace = task
            .as_ref()
            .and_then(|(_, run)| run.as_deref())
            .map(|run| self.run_trace(run));
        let seed = format!(
            "{}:{}:{}",
            task_id.unwrap_or(""),
            event.ts_ms,
            event.event_id.as_deref().unwrap_or("")
        );
        let trace_id = event
            .trace_id
            .as_deref()
            .and_then(hex_bytes::<16>)
            .or(task_trace)
            .or(run_trace)
            .unwrap_or_else(|| derived_trace_id("file_write", &seed));
        let mut attributes = vec![KeyValue::new(
            "file.bytes",
            i64::try_from(bytes).unwrap_or(i64::MAX),
        )];
        if let Some(hash) = path_hash {
            attributes.push(KeyValue::new("file.path_sha256", hash.to_string()));
        }
        if let Some(task_id) = task_id {
            attributes.push(KeyValue::new("task.id", task_id.to_string()));
        }
        Some(SpanRecord {
            name: "file_write",
            trace_id,
            span_id: event
                .span_id
                .as_deref()
                .and_then(hex_bytes::<8>)
                .unwrap_or_else(|| derived_span_id("file_write", &seed)),
            parent: task_id.map(|id| derived_span_id("task", id)),
            parent_remote: false,
            start_ms: event.ts_ms,
            end_ms: event.ts_ms,
            events: Vec::new(),
            failed: false,
            attributes,
        })
    }
}
