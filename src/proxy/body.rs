//! The answer's body on its way to the caller: forwarded as it arrives (server-sent events one
//! whole event at a time, bytes unchanged), read on the way by the provider's [`Meter`], and
//! recorded once when it ends — at its end, when it breaks, or when the caller goes away
//! (dropping the body drops the upstream request with it).

use std::collections::VecDeque;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use flate2::write::{GzDecoder, ZlibDecoder};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tracing::warn;

use super::meter::Meter;
use super::sse::Splitter;
use super::{CallRequest, Provider, Shared};
use crate::ingest::event::{Draft, Raw};
use crate::metrics::{CallOutcome, ProxyLabels};

/// The most of a whole (non-stream) answer read for its usage; a larger answer is forwarded
/// but not metered (and counted `unmetered`).
const MAX_TAPPED_BYTES: usize = 64 * 1024 * 1024;

pub(super) struct UpstreamRef {
    pub name: String,
    pub provider: Provider,
}

/// What the call's record needs besides the usage.
pub(super) struct Call {
    pub shared: Arc<Shared>,
    pub upstream: UpstreamRef,
    pub agent: String,
    pub request: CallRequest,
    pub request_id: Option<String>,
    pub status: axum::http::StatusCode,
    /// The call's reservation, settled when it ends.
    pub reservation: Option<u64>,
    /// The input the reservation assumed, recorded when a cut stream never got the provider's.
    pub input_estimate: u64,
    /// Where a stream is cut, when a budget (or the default output limit) bounds it.
    pub cut: Option<CutRule>,
    /// Which OpenAI API answers (the closing event of a cut stream differs).
    pub api: Api,
}

/// A stream's output bound: past `output_tokens` it is cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutRule {
    pub output_tokens: u64,
    /// What set the bound, for the caller: a budget's name.
    pub why: String,
}

/// The API a call speaks, where one provider has several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    AnthropicMessages,
    OpenAiChat,
    OpenAiResponses,
    Gemini,
    /// Anything else (embeddings, models, …): forwarded and metered, never cut.
    Other,
}

/// The answer's bytes decoded for reading (the caller gets them as they came).
enum Decode {
    Identity,
    Gzip(GzDecoder<Vec<u8>>),
    Deflate(ZlibDecoder<Vec<u8>>),
    /// An encoding the proxy cannot read (it narrowed Accept-Encoding; the upstream ignored it).
    Unreadable,
}

impl Decode {
    fn of(encoding: Option<&str>) -> Decode {
        match encoding.map(str::trim) {
            None | Some("" | "identity") => Decode::Identity,
            Some("gzip" | "x-gzip") => Decode::Gzip(GzDecoder::new(Vec::new())),
            Some("deflate") => Decode::Deflate(ZlibDecoder::new(Vec::new())),
            Some(_) => Decode::Unreadable,
        }
    }

    /// The plain bytes of `chunk`, or `None` when they cannot be read.
    fn plain(&mut self, chunk: &Bytes) -> Option<Vec<u8>> {
        let decoded = match self {
            Decode::Identity => return Some(chunk.to_vec()),
            Decode::Unreadable => return None,
            Decode::Gzip(d) => d.write_all(chunk).map(|_| std::mem::take(d.get_mut())),
            Decode::Deflate(d) => d.write_all(chunk).map(|_| std::mem::take(d.get_mut())),
        };
        match decoded {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                *self = Decode::Unreadable;
                None
            }
        }
    }
}

enum Mode {
    /// A whole JSON answer (or Gemini's streamed JSON array): read when it ends.
    Whole { read: Vec<u8>, overflow: bool },
    /// Server-sent events. Passed on event by event when they come as sent; when the
    /// upstream compressed them, the chunks pass as they came and a decoded copy is read.
    Events {
        splitter: Splitter,
        /// Leave out the usage chunk the proxy asked for on the caller's behalf.
        strip_usage: bool,
    },
}

/// How the body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Complete,
    /// The upstream's body failed, or the caller went away first.
    Cut,
    /// The proxy closed the stream at its output bound.
    Limited,
}

pub(super) struct Metered {
    /// The upstream's body; dropped (which closes the upstream request) when a stream is cut.
    inner: Option<Incoming>,
    decode: Decode,
    mode: Mode,
    meter: Meter,
    /// Bytes ready to pass on.
    queue: VecDeque<Bytes>,
    done: bool,
    /// Taken when the call is recorded: exactly once.
    call: Option<Call>,
}

impl Metered {
    pub fn new(
        inner: Incoming,
        provider: Provider,
        sse: bool,
        strip_usage: bool,
        encoding: Option<&str>,
        call: Call,
    ) -> Metered {
        let mode = if sse {
            Mode::Events {
                splitter: Splitter::default(),
                strip_usage,
            }
        } else {
            Mode::Whole {
                read: Vec::new(),
                overflow: false,
            }
        };
        Metered {
            inner: Some(inner),
            decode: Decode::of(encoding),
            mode,
            meter: Meter::new(provider),
            queue: VecDeque::new(),
            done: false,
            call: Some(call),
        }
    }

    /// Takes one chunk from the upstream.
    fn take(&mut self, chunk: Bytes) {
        let identity = matches!(self.decode, Decode::Identity);
        let plain = self.decode.plain(&chunk);
        match &mut self.mode {
            Mode::Whole { read, overflow } => {
                self.queue.push_back(chunk);
                match plain {
                    Some(bytes) if !*overflow => {
                        if read.len() + bytes.len() > MAX_TAPPED_BYTES {
                            *overflow = true;
                            read.clear();
                        } else {
                            read.extend_from_slice(&bytes);
                        }
                    }
                    _ => {}
                }
            }
            Mode::Events {
                splitter,
                strip_usage,
            } => {
                if !identity {
                    self.queue.push_back(chunk);
                }
                let Some(bytes) = plain else { return };
                for event in splitter.push(&bytes) {
                    self.meter.absorb_text(&event.data);
                    let over = self
                        .call
                        .as_ref()
                        .and_then(|c| c.cut.as_ref())
                        .is_some_and(|rule| self.meter.running_output() > rule.output_tokens);
                    if over {
                        self.cut_stream();
                        return;
                    }
                    // The usage chunk (no choices, usage set) was asked for by the proxy, not
                    // by the caller: read, not passed on.
                    let asked_by_us = *strip_usage && is_bare_usage_chunk(&event.data);
                    if identity && !asked_by_us {
                        self.queue.push_back(event.raw);
                    }
                }
            }
        }
    }

    /// The stream ended: what is left is read and passed on.
    fn flush(&mut self) {
        match &mut self.mode {
            Mode::Whole { read, overflow } => {
                if let Decode::Gzip(d) = &mut self.decode
                    && d.try_finish().is_ok()
                {
                    read.extend_from_slice(&std::mem::take(d.get_mut()));
                }
                if let Decode::Deflate(d) = &mut self.decode
                    && d.try_finish().is_ok()
                {
                    read.extend_from_slice(&std::mem::take(d.get_mut()));
                }
                if !*overflow && !matches!(self.decode, Decode::Unreadable) {
                    self.meter.absorb_text(read);
                }
            }
            Mode::Events { splitter, .. } => {
                if let Some(rest) = splitter.finish() {
                    self.meter.absorb_text(&rest.data);
                    if matches!(self.decode, Decode::Identity) {
                        self.queue.push_back(rest.raw);
                    }
                }
            }
        }
    }

    /// Closes the upstream request and ends the caller's stream cleanly in the provider's own
    /// format, as if the call had reached its own output limit, with a comment saying why.
    fn cut_stream(&mut self) {
        self.inner = None;
        self.done = true;
        let Some(call) = &self.call else { return };
        let why = call
            .cut
            .as_ref()
            .map_or("", |r| r.why.as_str())
            .replace(['\r', '\n'], " ");
        self.queue.push_back(Bytes::from(format!(
            ": costmeter: {why}: the stream was cut at its output bound\n\n"
        )));
        let id = self.meter.usage().response_id.unwrap_or_default();
        let model = self
            .meter
            .usage()
            .model
            .or(call.request.model.clone())
            .unwrap_or_default();
        let output = self.meter.running_output();
        let events: Vec<String> = match call.api {
            Api::AnthropicMessages => {
                let mut events = Vec::new();
                if let Some(index) = self.meter.open_block {
                    events.push(format!(
                        "event: content_block_stop\ndata: {}\n\n",
                        serde_json::json!({"type": "content_block_stop", "index": index})
                    ));
                }
                events.push(format!(
                    "event: message_delta\ndata: {}\n\n",
                    serde_json::json!({"type": "message_delta",
                        "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
                        "usage": {"output_tokens": output}})
                ));
                events.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
                events
            }
            Api::OpenAiChat => vec![
                format!(
                    "data: {}\n\n",
                    serde_json::json!({"id": id, "object": "chat.completion.chunk", "created": 0,
                        "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
                ),
                "data: [DONE]\n\n".into(),
            ],
            Api::OpenAiResponses => vec![format!(
                "event: response.incomplete\ndata: {}\n\n",
                serde_json::json!({"type": "response.incomplete", "sequence_number": 0,
                    "response": {"id": id, "object": "response", "created_at": 0,
                        "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
                        "model": model, "output": [], "parallel_tool_calls": true,
                        "tool_choice": "auto", "tools": [], "usage": null}})
            )],
            Api::Gemini => vec![format!(
                "data: {}\r\n\r\n",
                serde_json::json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]},
                    "finishReason": "MAX_TOKENS", "index": 0}], "modelVersion": model, "responseId": id})
            )],
            Api::Other => Vec::new(),
        };
        self.queue.extend(events.into_iter().map(Bytes::from));
        self.finish(Ending::Limited);
    }

    /// Records the call and settles its reservation, once.
    fn finish(&mut self, ending: Ending) {
        let Some(call) = self.call.take() else {
            return;
        };
        let mut usage = self.meter.usage();
        let outcome = match ending {
            Ending::Limited => CallOutcome::limited,
            Ending::Cut => CallOutcome::cut,
            Ending::Complete if !call.status.is_success() => CallOutcome::error,
            Ending::Complete if usage.seen => CallOutcome::ok,
            Ending::Complete => CallOutcome::unmetered,
        };
        call.shared
            .metrics
            .proxy_calls_total
            .get_or_create(&ProxyLabels {
                upstream: call.upstream.name.clone(),
                outcome,
            })
            .inc();
        if outcome == CallOutcome::unmetered && call.status.is_success() {
            warn!(upstream = %call.upstream.name, status = %call.status, "proxy: a successful answer carried no usage the proxy could read; the call is not metered");
        }
        // A stream that ended before the provider's final count: what it generated is billed,
        // so it is recorded from the running estimate (and the input the provider gave at the
        // start, else the request's estimate).
        let streamed = matches!(self.mode, Mode::Events { .. });
        let estimated = streamed && ending != Ending::Complete && self.meter.streamed_bytes > 0;
        if estimated {
            if !self.meter.input_seen() {
                usage.input_tokens = usage.input_tokens.max(call.input_estimate);
            }
            usage.output_tokens = usage.output_tokens.max(self.meter.running_output());
            usage.seen = true;
        }
        let event = if usage.seen {
            let model = usage
                .model
                .clone()
                .or(call.request.model.clone())
                .unwrap_or_else(|| "unknown".to_string());
            let mut draft = Draft::default();
            draft
                .text("agent", call.agent.clone())
                .text("model", model)
                .text("provider", call.upstream.provider.label())
                .count("input_tokens", usage.input_tokens)
                .count("output_tokens", usage.output_tokens)
                .count("cache_read_tokens", usage.cache_read_tokens)
                .count("cache_write_tokens", usage.cache_write_tokens)
                .count("reasoning_tokens", usage.reasoning_tokens)
                .maybe("response_id", usage.response_id.clone().map(Raw::Text))
                // Cut before the provider's final count: the figures are the running estimate.
                .maybe("accuracy", estimated.then(|| Raw::Text("estimated".into())))
                .maybe("request_id", call.request_id.clone().map(Raw::Text));
            match draft.llm_usage(jiff::Timestamp::now().as_millisecond()) {
                Ok(event) => Some(event),
                Err(problem) => {
                    warn!(upstream = %call.upstream.name, %problem, "proxy: the provider's usage could not be recorded");
                    None
                }
            }
        } else {
            None
        };
        super::settle(
            &call.shared,
            call.upstream.name,
            call.reservation,
            event.into_iter().collect(),
        );
    }
}

/// An OpenAI chunk that carries only usage: `"choices": []` and a usage object.
fn is_bare_usage_chunk(data: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(data).is_ok_and(|chunk| {
        chunk
            .get("choices")
            .and_then(|c| c.as_array())
            .is_some_and(|c| c.is_empty())
            && chunk.get("usage").is_some_and(|u| u.is_object())
    })
}

impl Body for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(bytes) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let Some(inner) = this.inner.as_mut() else {
                this.done = true;
                continue;
            };
            match ready!(Pin::new(inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        this.take(chunk);
                        // A body of known length may not be polled again after its last
                        // byte: it ends here.
                        if this.inner.as_ref().is_some_and(Body::is_end_stream) {
                            this.done = true;
                            this.flush();
                            this.finish(Ending::Complete);
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(error)) => {
                    this.done = true;
                    this.finish(Ending::Cut);
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    this.done = true;
                    this.flush();
                    this.finish(Ending::Complete);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.queue.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.mode {
            Mode::Whole { .. } => self.inner.as_ref().map(Body::size_hint).unwrap_or_default(),
            Mode::Events { .. } => SizeHint::default(),
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // The caller went away before the end: the upstream request is dropped with `inner`.
        // What arrived is still read: a provider bills what it generated.
        if self.call.is_some() {
            self.flush();
        }
        self.finish(Ending::Cut);
    }
}
