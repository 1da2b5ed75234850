//! Reading a provider's own usage out of its answers: whole JSON bodies, each JSON document of
//! a stream (SSE `data:` payloads, or the elements of Gemini's streamed JSON array). Pure.
//!
//! Every document is folded into one [`CallUsage`]; a field seen again overwrites the earlier
//! value, because every provider's later counts are cumulative (Anthropic's `message_delta`,
//! Gemini's chunks) or final (OpenAI's last chunk, `response.completed`).

use serde_json::Value;

use super::Provider;

/// What one call used, per the token rule: `input_tokens` counts all input, cache reads and
/// writes included; `reasoning_tokens` are part of `output_tokens`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallUsage {
    pub response_id: Option<String>,
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// Whether any usage block was read.
    pub seen: bool,
}

/// The provider's counts as they come, folded document by document.
#[derive(Debug, Default, Clone)]
pub struct Meter {
    provider: Option<Provider>,
    response_id: Option<String>,
    model: Option<String>,
    /// Anthropic: uncached input; OpenAI and Gemini: all input.
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
    reasoning: Option<u64>,
    /// Gemini's tool-use prompt, billed as input.
    tool_prompt: Option<u64>,
    /// Gemini's candidates (output without thoughts).
    candidates: Option<u64>,
    /// Bytes of generated text (and tool arguments) streamed so far, for a running estimate.
    pub streamed_bytes: u64,
    /// Anthropic: the content block open now, to close it when a stream is cut.
    pub open_block: Option<u64>,
}

fn text_len(value: Option<&Value>) -> u64 {
    value
        .and_then(Value::as_str)
        .map_or(0, |s| u64::try_from(s.len()).unwrap_or(u64::MAX))
}

fn count(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(Value::as_u64)
}

fn text(value: &Value, key: &str) -> Option<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn set(slot: &mut Option<u64>, value: Option<u64>) {
    if value.is_some() {
        *slot = value;
    }
}

impl Meter {
    pub fn new(provider: Provider) -> Meter {
        Meter {
            provider: Some(provider),
            ..Meter::default()
        }
    }

    /// Folds one JSON document (a whole body, or one event's payload).
    pub fn absorb(&mut self, document: &Value) {
        match self.provider {
            Some(Provider::Anthropic) => self.anthropic(document),
            Some(Provider::OpenAi) => self.openai(document),
            Some(Provider::Gemini) => {
                if let Value::Array(items) = document {
                    items.iter().for_each(|item| self.gemini(item));
                } else {
                    self.gemini(document);
                }
            }
            None => {}
        }
    }

    /// Folds a JSON text; text that is not JSON (`[DONE]`, keep-alives) is skipped.
    pub fn absorb_text(&mut self, text: &[u8]) {
        if let Ok(document) = serde_json::from_slice::<Value>(text) {
            self.absorb(&document);
        }
    }

    fn identity(&mut self, holder: &Value) {
        if self.response_id.is_none() {
            self.response_id = text(holder, "id");
        }
        if let Some(model) = text(holder, "model") {
            self.model = Some(model);
        }
    }

    /// Messages: a whole message, or the `message_start` / `message_delta` events.
    fn anthropic(&mut self, document: &Value) {
        let kind = document.get("type").and_then(Value::as_str);
        match kind {
            Some("content_block_start") => {
                self.open_block = document.get("index").and_then(Value::as_u64);
            }
            Some("content_block_stop") => self.open_block = None,
            Some("content_block_delta") => {
                let delta = document.get("delta");
                let d = |key: &str| text_len(delta.and_then(|d| d.get(key)));
                self.streamed_bytes += d("text") + d("thinking") + d("partial_json");
            }
            _ => {}
        }
        let holder = match kind {
            Some("message_start") => document.get("message").unwrap_or(&Value::Null),
            _ => document,
        };
        if holder.get("type").and_then(Value::as_str) == Some("message") {
            self.identity(holder);
        }
        let Some(usage) = holder.get("usage").filter(|u| u.is_object()) else {
            return;
        };
        set(&mut self.input, count(usage, "input_tokens"));
        set(&mut self.output, count(usage, "output_tokens"));
        set(
            &mut self.cache_read,
            count(usage, "cache_read_input_tokens"),
        );
        set(
            &mut self.cache_write,
            count(usage, "cache_creation_input_tokens"),
        );
    }

    /// Chat Completions (whole, or the stream's last chunk), Responses (whole, or the
    /// `response.completed` / `response.incomplete` / `response.failed` events), embeddings.
    fn openai(&mut self, document: &Value) {
        // Chat chunks: each choice's delta; Responses: the `….delta` events.
        if let Some(choices) = document.get("choices").and_then(Value::as_array) {
            for choice in choices {
                let delta = choice.get("delta");
                self.streamed_bytes += text_len(delta.and_then(|d| d.get("content")))
                    + text_len(delta.and_then(|d| d.get("reasoning_content")));
                for call in delta
                    .and_then(|d| d.get("tool_calls"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.streamed_bytes +=
                        text_len(call.get("function").and_then(|f| f.get("arguments")));
                }
            }
        }
        if document
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with(".delta"))
        {
            self.streamed_bytes += text_len(document.get("delta"));
        }
        let holder = document
            .get("response")
            .filter(|r| r.is_object())
            .unwrap_or(document);
        self.identity(holder);
        let Some(usage) = holder.get("usage").filter(|u| u.is_object()) else {
            return;
        };
        // Chat Completions names them prompt/completion; Responses input/output.
        set(
            &mut self.input,
            count(usage, "prompt_tokens").or(count(usage, "input_tokens")),
        );
        set(
            &mut self.output,
            count(usage, "completion_tokens").or(count(usage, "output_tokens")),
        );
        let input_details = usage
            .get("prompt_tokens_details")
            .or(usage.get("input_tokens_details"));
        if let Some(details) = input_details {
            set(&mut self.cache_read, count(details, "cached_tokens"));
        }
        let output_details = usage
            .get("completion_tokens_details")
            .or(usage.get("output_tokens_details"));
        if let Some(details) = output_details {
            set(&mut self.reasoning, count(details, "reasoning_tokens"));
        }
        // Embeddings report only prompt and total.
        if self.output.is_none() && self.input.is_some() {
            self.output = Some(0);
        }
    }

    /// `generateContent` / `streamGenerateContent`: `usageMetadata` on each chunk.
    fn gemini(&mut self, document: &Value) {
        for candidate in document
            .get("candidates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for part in candidate
                .get("content")
                .and_then(|c| c.get("parts"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                self.streamed_bytes += text_len(part.get("text"));
            }
        }
        if self.response_id.is_none() {
            self.response_id = text(document, "responseId");
        }
        if let Some(model) = text(document, "modelVersion") {
            self.model = Some(model);
        }
        let Some(usage) = document.get("usageMetadata").filter(|u| u.is_object()) else {
            return;
        };
        set(&mut self.input, count(usage, "promptTokenCount"));
        set(
            &mut self.cache_read,
            count(usage, "cachedContentTokenCount"),
        );
        set(
            &mut self.tool_prompt,
            count(usage, "toolUsePromptTokenCount"),
        );
        set(&mut self.candidates, count(usage, "candidatesTokenCount"));
        set(&mut self.reasoning, count(usage, "thoughtsTokenCount"));
        if self.candidates.is_some() || self.reasoning.is_some() {
            self.output = Some(self.candidates.unwrap_or(0) + self.reasoning.unwrap_or(0));
        } else if self.input.is_some() {
            self.output.get_or_insert(0);
        }
    }

    /// Output so far: the provider's running count where it gives one (Gemini), else an
    /// estimate from the streamed text, whichever is higher.
    pub fn running_output(&self) -> u64 {
        self.output
            .unwrap_or(0)
            .max(super::estimate::output_of_text(self.streamed_bytes))
    }

    /// Whether the provider's input count was seen (Anthropic says it at a stream's start).
    pub fn input_seen(&self) -> bool {
        self.input.is_some()
    }

    /// The call's usage under the token rule.
    pub fn usage(&self) -> CallUsage {
        let seen = self.input.is_some() || self.output.is_some();
        let cache_read = self.cache_read.unwrap_or(0);
        let cache_write = self.cache_write.unwrap_or(0);
        let reported_input = self.input.unwrap_or(0);
        let input_tokens = match self.provider {
            // Anthropic's input_tokens exclude both cache counts.
            Some(Provider::Anthropic) => reported_input + cache_read + cache_write,
            Some(Provider::Gemini) => reported_input + self.tool_prompt.unwrap_or(0),
            _ => reported_input,
        };
        let output_tokens = self.output.unwrap_or(0);
        CallUsage {
            response_id: self.response_id.clone(),
            model: self.model.clone(),
            // Counts that contradict each other are clamped rather than lost: a cache count
            // above the input it is part of cannot be, and the input is what is billed.
            input_tokens: input_tokens.max(cache_read + cache_write),
            output_tokens: output_tokens.max(self.reasoning.unwrap_or(0)),
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            reasoning_tokens: self.reasoning.unwrap_or(0),
            seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fold(provider: Provider, documents: &[Value]) -> CallUsage {
        let mut meter = Meter::new(provider);
        documents.iter().for_each(|d| meter.absorb(d));
        meter.usage()
    }

    #[test]
    fn anthropic_whole_message_counts_cache_inside_input() {
        // The shape of https://docs.anthropic.com/en/api/messages (response).
        let usage = fold(
            Provider::Anthropic,
            &[json!({
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
                "model": "claude-sonnet-4-5-20250929", "content": [{"type": "text", "text": "Hi"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 12, "cache_creation_input_tokens": 100,
                          "cache_read_input_tokens": 2000, "output_tokens": 30}
            })],
        );
        assert_eq!(
            usage,
            CallUsage {
                response_id: Some("msg_01XFDUDYJgAACzvnptvVoYEL".into()),
                model: Some("claude-sonnet-4-5-20250929".into()),
                input_tokens: 2112,
                output_tokens: 30,
                cache_read_tokens: 2000,
                cache_write_tokens: 100,
                reasoning_tokens: 0,
                seen: true,
            }
        );
    }

    #[test]
    fn anthropic_stream_takes_the_last_cumulative_counts() {
        let usage = fold(
            Provider::Anthropic,
            &[
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
                    "model": "claude-opus-4-8", "usage": {"input_tokens": 25,
                    "cache_read_input_tokens": 10, "cache_creation_input_tokens": 0, "output_tokens": 1}}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}),
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}}),
                json!({"type": "message_stop"}),
            ],
        );
        assert_eq!(
            (
                usage.response_id.as_deref(),
                usage.model.as_deref(),
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens
            ),
            (Some("msg_1"), Some("claude-opus-4-8"), 35, 15, 10)
        );
    }

    #[test]
    fn openai_chat_and_responses_shapes() {
        let chat = fold(
            Provider::OpenAi,
            &[
                json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-5.2",
                "usage": {"prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
                "prompt_tokens_details": {"cached_tokens": 600},
                "completion_tokens_details": {"reasoning_tokens": 200}}}),
            ],
        );
        assert_eq!(
            (
                chat.input_tokens,
                chat.cache_read_tokens,
                chat.output_tokens,
                chat.reasoning_tokens
            ),
            (1000, 600, 300, 200)
        );
        // A stream: chunks with `usage: null`, then the usage chunk with no choices.
        let stream = fold(
            Provider::OpenAi,
            &[
                json!({"id": "chatcmpl-2", "model": "gpt-5.2", "choices": [{"delta": {"content": "a"}}], "usage": null}),
                json!({"id": "chatcmpl-2", "model": "gpt-5.2", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}),
            ],
        );
        assert_eq!(
            (
                stream.response_id.as_deref(),
                stream.input_tokens,
                stream.output_tokens
            ),
            (Some("chatcmpl-2"), 9, 4)
        );
        let responses = fold(
            Provider::OpenAi,
            &[
                json!({"type": "response.created", "response": {"id": "resp_1", "model": "gpt-5.2", "usage": null}}),
                json!({"type": "response.output_text.delta", "delta": "hi"}),
                json!({"type": "response.completed", "response": {"id": "resp_1", "model": "gpt-5.2-2026-01-01",
                    "usage": {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 20},
                    "output_tokens": 70, "output_tokens_details": {"reasoning_tokens": 64}}}}),
            ],
        );
        assert_eq!(
            (
                responses.response_id.as_deref(),
                responses.model.as_deref(),
                responses.input_tokens,
                responses.cache_read_tokens,
                responses.output_tokens,
                responses.reasoning_tokens
            ),
            (Some("resp_1"), Some("gpt-5.2-2026-01-01"), 50, 20, 70, 64)
        );
    }

    #[test]
    fn gemini_counts_thoughts_as_output_and_reads_streamed_arrays() {
        let chunk = |candidates: u64| {
            json!({"candidates": [], "modelVersion": "gemini-3.1-pro-preview", "responseId": "r-1",
                "usageMetadata": {"promptTokenCount": 40, "cachedContentTokenCount": 30,
                "candidatesTokenCount": candidates, "thoughtsTokenCount": 8, "totalTokenCount": 48 + candidates}})
        };
        let usage = fold(Provider::Gemini, &[Value::Array(vec![chunk(2), chunk(9)])]);
        assert_eq!(
            (
                usage.response_id.as_deref(),
                usage.model.as_deref(),
                usage.input_tokens,
                usage.cache_read_tokens,
                usage.output_tokens,
                usage.reasoning_tokens
            ),
            (Some("r-1"), Some("gemini-3.1-pro-preview"), 40, 30, 17, 8)
        );
    }

    #[test]
    fn an_error_body_has_no_usage() {
        let usage = fold(
            Provider::Anthropic,
            &[
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ],
        );
        assert!(!usage.seen);
        let mut meter = Meter::new(Provider::OpenAi);
        meter.absorb_text(b"[DONE]");
        assert!(!meter.usage().seen);
    }
}
