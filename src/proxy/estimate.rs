//! A call's worst case, read from its request before it is sent. Pure.
//!
//! Input: the body's bytes over [`BYTES_PER_TOKEN`]. Tokenizers average about four characters
//! a token for English prose and three for code and JSON; CJK text is three UTF-8 bytes a
//! character and about a token a character. So three bytes a token stays at or above the real
//! count for text (images and files sent inline as base64 are counted far above theirs).
//! Output: the request's own limit, else [`DEFAULT_OUTPUT_TOKENS`].

use serde_json::Value;

use super::Provider;

pub const BYTES_PER_TOKEN: u64 = 3;
/// The output assumed for a call that sets no limit of its own.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worst {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Whether the output limit is the request's own (the provider enforces it) rather than
    /// the default.
    pub output_limited_by_request: bool,
}

/// The output limit a request sets, in the provider's own field.
fn output_limit(provider: Provider, body: &Value) -> Option<u64> {
    let number = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64);
    match provider {
        Provider::Anthropic => number(body, "max_tokens"),
        Provider::OpenAi => number(body, "max_completion_tokens")
            .or(number(body, "max_output_tokens"))
            .or(number(body, "max_tokens")),
        Provider::Gemini => body
            .get("generationConfig")
            .or(body.get("generation_config"))
            .and_then(|c| number(c, "maxOutputTokens").or(number(c, "max_output_tokens"))),
    }
}

/// The worst case of a request whose body is `bytes` long and reads as `json` (`Null` when it
/// is not JSON).
pub fn worst_case(provider: Provider, bytes: usize, json: &Value) -> Worst {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    let asked = output_limit(provider, json);
    Worst {
        input_tokens: bytes.div_ceil(BYTES_PER_TOKEN),
        output_tokens: asked.unwrap_or(DEFAULT_OUTPUT_TOKENS),
        output_limited_by_request: asked.is_some(),
    }
}

/// Output tokens estimated from streamed text as it arrives: [`BYTES_PER_TOKEN`] bytes a
/// token, above the real count, so a stream is cut before its budget is crossed rather than
/// after.
pub fn output_of_text(bytes: u64) -> u64 {
    bytes.div_ceil(BYTES_PER_TOKEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worst_case(provider: Provider, body: &[u8]) -> Worst {
        super::worst_case(
            provider,
            body.len(),
            &serde_json::from_slice(body).unwrap_or_default(),
        )
    }

    #[test]
    fn each_provider_s_output_limit_is_read() {
        let body = br#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"hello"}]}"#;
        let anthropic = worst_case(Provider::Anthropic, body);
        assert_eq!(anthropic.output_tokens, 1024);
        assert!(anthropic.output_limited_by_request);
        assert_eq!(body.len(), 94);
        assert_eq!(anthropic.input_tokens, 32, "94 bytes / 3, rounded up");
        assert_eq!(
            worst_case(
                Provider::OpenAi,
                br#"{"max_completion_tokens":50,"max_tokens":9}"#
            )
            .output_tokens,
            50
        );
        assert_eq!(
            worst_case(Provider::OpenAi, br#"{"max_output_tokens":70}"#).output_tokens,
            70
        );
        assert_eq!(
            worst_case(
                Provider::Gemini,
                br#"{"generationConfig":{"maxOutputTokens":300}}"#
            )
            .output_tokens,
            300
        );
        let unlimited = worst_case(Provider::OpenAi, br#"{"model":"gpt-5.2"}"#);
        assert_eq!(unlimited.output_tokens, DEFAULT_OUTPUT_TOKENS);
        assert!(!unlimited.output_limited_by_request);
    }
}
