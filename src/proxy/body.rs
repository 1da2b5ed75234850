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
}

pub(super) struct Metered {
    inner: Incoming,
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
            inner,
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

    /// Records the call, once.
    fn finish(&mut self, ending: Ending) {
        let Some(call) = self.call.take() else {
            return;
        };
        let usage = self.meter.usage();
        let outcome = match ending {
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
        // Whatever the provider reported it billed is recorded, even for a call cut short.
        if !usage.seen {
            return;
        }
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
            .maybe("request_id", call.request_id.clone().map(Raw::Text));
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let event = match draft.llm_usage(now_ms) {
            Ok(event) => event,
            Err(problem) => {
                warn!(upstream = %call.upstream.name, %problem, "proxy: the provider's usage could not be recorded");
                return;
            }
        };
        let ledger = call.shared.ledger.clone();
        let upstream = call.upstream.name;
        // Recorded off the caller's path: the answer is already on its way.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = ledger.events("proxy", vec![event]).await {
                    warn!(%upstream, %error, "proxy: the call's usage could not be stored");
                }
            });
        }
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
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        this.take(chunk);
                        // A body of known length may not be polled again after its last
                        // byte: it ends here.
                        if this.inner.is_end_stream() {
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
            Mode::Whole { .. } => self.inner.size_hint(),
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
