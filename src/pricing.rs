//! The price table and the one rule that turns token counts into USD.
//!
//! Prices come from three places, later ones winning: the baseline compiled in from
//! `config/pricing.toml`, an optional LiteLLM-format manifest file, and `[pricing.models]`
//! overrides in the config. Nothing is fetched. A manifest row with a wrong type or an absurd
//! price is rejected alone and listed; the rest load.
//!
//! The rule (README, "Token accounting"): `input_tokens` counts all input, cached included, so
//! cost = uncached input × input + cache reads × cache-read price + cache writes × cache-write
//! price + output × output. A missing cache price falls back to the input price and is flagged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ingest::LlmUsage;

/// The baseline table, compiled in.
pub const BASELINE_TOML: &str = include_str!("../config/pricing.toml");
/// A per-million price above this is taken for a typo (a per-token price entered per million, …).
pub const MAX_USD_PER_MILLION: f64 = 1000.0;

/// USD per million tokens for one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
    pub source: PriceSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    Baseline,
    Manifest,
    Config,
}

impl PriceSource {
    pub fn label(self) -> &'static str {
        match self {
            PriceSource::Baseline => "baseline",
            PriceSource::Manifest => "manifest",
            PriceSource::Config => "config",
        }
    }
}

/// How much to trust a cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// The event carried `cost_usd`.
    Exact,
    /// Priced from the table.
    Priced,
    /// Priced, but a cache price was missing and the input price stood in.
    CachePriceFallback,
    /// No price for the model: cost 0.
    UnknownModel,
    /// The tokens or the cost are an estimate: a stream cut before the provider's count, a
    /// client library's own reckoning.
    Estimated,
}

impl Confidence {
    pub fn label(self) -> &'static str {
        match self {
            Confidence::Exact => "exact",
            Confidence::Priced => "priced",
            Confidence::CachePriceFallback => "cache_price_fallback",
            Confidence::UnknownModel => "unknown_model",
            Confidence::Estimated => "estimated",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub usd: f64,
    pub confidence: Confidence,
}

/// A price row that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedRow {
    pub source: PriceSource,
    pub model: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("the embedded price baseline is invalid: {0}")]
    Baseline(String),
    #[error("cannot read pricing manifest '{path}': {source}")]
    ManifestRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "pricing manifest '{path}' is not a JSON object of models (LiteLLM's model_prices_and_context_window.json format): {reason}"
    )]
    ManifestFormat { path: PathBuf, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineFile {
    version: String,
    taken: String,
    model: Vec<BaselineModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineModel {
    name: String,
    provider: String,
    input: f64,
    output: f64,
    cache_read: Option<f64>,
    cache_write: Option<f64>,
    #[serde(default)]
    aliases: Vec<String>,
}

/// A config override: `[pricing.models."name"]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOverride {
    pub input: f64,
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
}

/// The loaded table plus what `GET /v1/pricing/status` reports about it.
#[derive(Debug, Clone)]
pub struct PriceTable {
    models: HashMap<String, Price>,
    pub baseline_version: String,
    pub baseline_taken: String,
    pub manifest: Option<PathBuf>,
    pub models_by_source: HashMap<PriceSource, usize>,
    pub rejected: Vec<RejectedRow>,
}

impl PriceTable {
    /// Loads the baseline, then the manifest, then the overrides.
    pub fn load(
        manifest: Option<&Path>,
        overrides: &HashMap<String, PriceOverride>,
    ) -> Result<PriceTable, PricingError> {
        let baseline: BaselineFile =
            toml::from_str(BASELINE_TOML).map_err(|e| PricingError::Baseline(e.to_string()))?;
        let mut table = PriceTable {
            models: HashMap::new(),
            baseline_version: baseline.version,
            baseline_taken: baseline.taken,
            manifest: manifest.map(Path::to_path_buf),
            models_by_source: HashMap::new(),
            rejected: Vec::new(),
        };
        for model in baseline.model {
            let price = Price {
                input: model.input,
                output: model.output,
                cache_read: model.cache_read,
                cache_write: model.cache_write,
                source: PriceSource::Baseline,
            };
            if let Err(reason) = check_price(&price) {
                return Err(PricingError::Baseline(format!(
                    "{} ({}): {reason}",
                    model.name, model.provider
                )));
            }
            for alias in &model.aliases {
                table.models.insert(alias.clone(), price.clone());
            }
            table.models.insert(model.name, price);
            *table
                .models_by_source
                .entry(PriceSource::Baseline)
                .or_default() += 1;
        }
        if let Some(path) = manifest {
            let text =
                std::fs::read_to_string(path).map_err(|source| PricingError::ManifestRead {
                    path: path.to_path_buf(),
                    source,
                })?;
            table.load_manifest(path, &text)?;
        }
        for (name, o) in overrides {
            let price = Price {
                input: o.input,
                output: o.output,
                cache_read: o.cache_read,
                cache_write: o.cache_write,
                source: PriceSource::Config,
            };
            match check_price(&price) {
                Ok(()) => {
                    table.models.insert(name.clone(), price);
                    *table
                        .models_by_source
                        .entry(PriceSource::Config)
                        .or_default() += 1;
                }
                Err(reason) => table.rejected.push(RejectedRow {
                    source: PriceSource::Config,
                    model: name.clone(),
                    reason,
                }),
            }
        }
        Ok(table)
    }

    fn load_manifest(&mut self, path: &Path, text: &str) -> Result<(), PricingError> {
        let format_error = |reason: String| PricingError::ManifestFormat {
            path: path.to_path_buf(),
            reason,
        };
        let value: Value = serde_json::from_str(text).map_err(|e| format_error(e.to_string()))?;
        let Value::Object(rows) = value else {
            return Err(format_error("the top level is not an object".into()));
        };
        for (model, row) in rows {
            if model == "sample_spec" {
                continue;
            }
            match manifest_price(&row) {
                Ok(Some(price)) => {
                    self.models.insert(model, price);
                    *self
                        .models_by_source
                        .entry(PriceSource::Manifest)
                        .or_default() += 1;
                }
                // Rows without token prices (image, audio, embedding-only …) are not ours to price.
                Ok(None) => {}
                Err(reason) => self.rejected.push(RejectedRow {
                    source: PriceSource::Manifest,
                    model,
                    reason,
                }),
            }
        }
        Ok(())
    }

    /// Finds a model's price: the exact name, then the name as the providers' own catalogues
    /// spell it ([`canonical_model`]: without a context suffix, a `provider/` prefix, a Bedrock
    /// or Vertex form), then without a date suffix (`-20250929`, `-2025-08-07`) or `-latest`.
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        if let Some(price) = self.models.get(model) {
            return Some(price);
        }
        let mut name = canonical_model(model);
        if let Some(price) = self.models.get(&name) {
            return Some(price);
        }
        for suffix in ["-latest"] {
            if let Some(stripped) = name.strip_suffix(suffix) {
                name = stripped.to_string();
            }
        }
        if let Some(stripped) = strip_date_suffix(&name) {
            name = stripped.to_string();
        }
        self.models.get(&name)
    }

    /// Prices one usage event by the rule above.
    pub fn cost(&self, usage: &LlmUsage) -> Cost {
        let cost = self.cost_as_given(usage);
        match cost.confidence {
            Confidence::UnknownModel => cost,
            _ if usage.estimated => Cost {
                confidence: Confidence::Estimated,
                ..cost
            },
            _ => cost,
        }
    }

    fn cost_as_given(&self, usage: &LlmUsage) -> Cost {
        if let Some(usd) = usage.cost_usd {
            return Cost {
                usd,
                confidence: Confidence::Exact,
            };
        }
        let Some(price) = self.lookup(&usage.model) else {
            return Cost {
                usd: 0.0,
                confidence: Confidence::UnknownModel,
            };
        };
        let fallback = (usage.cache_read_tokens > 0 && price.cache_read.is_none())
            || (usage.cache_write_tokens > 0 && price.cache_write.is_none());
        let per_million = usage.uncached_input_tokens() as f64 * price.input
            + usage.cache_read_tokens as f64 * price.cache_read.unwrap_or(price.input)
            + usage.cache_write_tokens as f64 * price.cache_write.unwrap_or(price.input)
            + usage.output_tokens as f64 * price.output;
        Cost {
            usd: per_million / 1e6,
            confidence: if fallback {
                Confidence::CachePriceFallback
            } else {
                Confidence::Priced
            },
        }
    }

    /// Number of distinct model names (aliases included) the table prices.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// A model id as the providers' price lists name it, lower case:
/// - the context variant Claude Code appends (`claude-opus-4-8[1m]`) dropped ([`crate::ingest::event::model_label`]);
/// - a `provider/` or `models/` prefix dropped (`anthropic/claude-…`, `models/gemini-…`);
/// - Vertex AI's `@date` (`claude-sonnet-4-5@20250929`) made a `-date` suffix;
/// - Bedrock's `REGION.VENDOR.MODEL-vN:M` (`us.anthropic.claude-sonnet-4-5-20250929-v1:0`) made
///   `MODEL`.
pub fn canonical_model(model: &str) -> String {
    let label = crate::ingest::event::model_label(model);
    let mut name = label
        .rsplit('/')
        .next()
        .unwrap_or(&label)
        .to_ascii_lowercase();
    if let Some((base, date)) = name.split_once('@') {
        name = if date.is_empty() {
            base.to_string()
        } else {
            format!("{base}-{date}")
        };
    }
    for vendor in [
        "anthropic.",
        "meta.",
        "mistral.",
        "amazon.",
        "cohere.",
        "deepseek.",
        "openai.",
    ] {
        if let Some(at) = name.find(vendor) {
            // Only a Bedrock id: the vendor is the first or second dotted segment.
            let before = &name[..at];
            if before.is_empty()
                || (before.ends_with('.') && !before[..before.len() - 1].contains('.'))
            {
                name = name[at + vendor.len()..].to_string();
                // The Bedrock version suffix: -v1:0, -v2:0, -v1.
                if let Some(v) = name.rfind("-v")
                    && name[v + 2..]
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == ':')
                    && name.len() > v + 2
                {
                    name.truncate(v);
                }
                break;
            }
        }
    }
    name
}

fn strip_date_suffix(name: &str) -> Option<&str> {
    let bytes = name.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if bytes.len() > 9 && bytes[bytes.len() - 9] == b'-' && digits(&bytes[bytes.len() - 8..]) {
        return Some(&name[..name.len() - 9]);
    }
    if bytes.len() > 11 {
        let tail = &bytes[bytes.len() - 11..];
        if tail[0] == b'-'
            && digits(&tail[1..5])
            && tail[5] == b'-'
            && digits(&tail[6..8])
            && tail[8] == b'-'
            && digits(&tail[9..])
        {
            return Some(&name[..name.len() - 11]);
        }
    }
    None
}

fn check_price(price: &Price) -> Result<(), String> {
    let fields = [
        ("input", Some(price.input)),
        ("output", Some(price.output)),
        ("cache_read", price.cache_read),
        ("cache_write", price.cache_write),
    ];
    for (name, value) in fields {
        if let Some(v) = value
            && !(v.is_finite() && (0.0..=MAX_USD_PER_MILLION).contains(&v))
        {
            return Err(format!(
                "{name} price {v} USD per million tokens is outside 0 to {MAX_USD_PER_MILLION}"
            ));
        }
    }
    Ok(())
}

/// Reads one LiteLLM row (USD per token) into a per-million price. `Ok(None)` for rows that
/// carry no token prices at all.
fn manifest_price(row: &Value) -> Result<Option<Price>, String> {
    let Value::Object(fields) = row else {
        return Err("row is not a JSON object".into());
    };
    let per_token = |key: &str| -> Result<Option<f64>, String> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64().map(|v| v * 1e6)),
            Some(_) => Err(format!("{key} must be a number")),
        }
    };
    let input = per_token("input_cost_per_token")?;
    let output = per_token("output_cost_per_token")?;
    let cache_read = per_token("cache_read_input_token_cost")?;
    let cache_write = per_token("cache_creation_input_token_cost")?;
    let (input, output) = match (input, output) {
        (None, None) => return Ok(None),
        (Some(input), Some(output)) => (input, output),
        _ => return Err("has only one of input_cost_per_token and output_cost_per_token".into()),
    };
    let price = Price {
        input,
        output,
        cache_read,
        cache_write,
        source: PriceSource::Manifest,
    };
    check_price(&price).map_err(|reason| format!("{reason} (manifest prices are per token)"))?;
    Ok(Some(price))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(model: &str, input: u64, cache_read: u64, cache_write: u64, output: u64) -> LlmUsage {
        LlmUsage {
            agent: "a".into(),
            model: model.into(),
            provider: None,
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            reasoning_tokens: 0,
            cost_usd: None,
            estimated: false,
            task_id: None,
            run_id: None,
            call_ids: Vec::new(),
        }
    }

    fn baseline() -> PriceTable {
        PriceTable::load(None, &HashMap::new()).expect("baseline loads")
    }

    fn assert_usd(cost: Cost, expected: f64) {
        assert!(
            (cost.usd - expected).abs() < 1e-9,
            "{} != {expected}",
            cost.usd
        );
    }

    // Worked examples from the providers' price pages (USD per million tokens).

    #[test]
    fn golden_anthropic_sonnet_with_cache_reads_and_writes() {
        // 10,000 input of which 6,000 read from cache and 2,000 written to it; 1,000 output:
        // 2,000 × $3 + 6,000 × $0.30 + 2,000 × $3.75 + 1,000 × $15 = $0.0303.
        let cost = baseline().cost(&usage(
            "claude-sonnet-4-5-20250929",
            10_000,
            6_000,
            2_000,
            1_000,
        ));
        assert_usd(cost, 0.0303);
        assert_eq!(cost.confidence, Confidence::Priced);
    }

    #[test]
    fn golden_openai_gpt_4o_with_cached_input() {
        // 100,000 input, 50,000 of them cached; 10,000 output:
        // 50,000 × $2.50 + 50,000 × $1.25 + 10,000 × $10 = $0.2875.
        assert_usd(
            baseline().cost(&usage("gpt-4o", 100_000, 50_000, 0, 10_000)),
            0.2875,
        );
    }

    #[test]
    fn golden_google_gemini_pro_under_200k() {
        // 100,000 input, 20,000 cached; 5,000 output:
        // 80,000 × $1.25 + 20,000 × $0.125 + 5,000 × $10 = $0.1525.
        assert_usd(
            baseline().cost(&usage("gemini-2.5-pro", 100_000, 20_000, 0, 5_000)),
            0.1525,
        );
    }

    #[test]
    fn cached_tokens_are_never_charged_twice() {
        // The same 1M input tokens, all read from cache, must cost the cache price only.
        let table = baseline();
        let all_cached = table.cost(&usage("claude-sonnet-4-5", 1_000_000, 1_000_000, 0, 0));
        assert_usd(all_cached, 0.30);
    }

    #[test]
    fn missing_cache_price_falls_back_to_input_and_is_flagged() {
        let cost = baseline().cost(&usage("llama-3.3-70b-versatile", 1_000_000, 500_000, 0, 0));
        assert_usd(cost, 0.59);
        assert_eq!(cost.confidence, Confidence::CachePriceFallback);
    }

    #[test]
    fn given_cost_wins_and_unknown_models_cost_zero() {
        let table = baseline();
        let mut exact = usage("gpt-5", 1_000_000, 0, 0, 0);
        exact.cost_usd = Some(0.5);
        assert_eq!(
            table.cost(&exact),
            Cost {
                usd: 0.5,
                confidence: Confidence::Exact
            }
        );
        let unknown = table.cost(&usage("my-private-model", 10, 0, 0, 10));
        assert_eq!(
            unknown,
            Cost {
                usd: 0.0,
                confidence: Confidence::UnknownModel
            }
        );
    }

    #[test]
    fn lookup_strips_provider_prefixes_and_dates() {
        let table = baseline();
        assert!(table.lookup("openai/gpt-4.1-2025-04-14").is_some());
        assert!(
            table
                .lookup("anthropic/claude-haiku-4-5-20251001")
                .is_some()
        );
        assert!(table.lookup("claude-3-7-sonnet-latest").is_some());
        assert!(table.lookup("gpt-4.2").is_none());
    }

    #[test]
    fn manifest_rows_are_rejected_one_by_one() {
        let dir = std::env::temp_dir().join(format!("costmeter-pricing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("prices.json");
        std::fs::write(
            &path,
            r#"{
              "sample_spec": {"input_cost_per_token": "bogus"},
              "good-model": {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06, "cache_read_input_token_cost": 5e-07},
              "absurd-model": {"input_cost_per_token": 2.0, "output_cost_per_token": 8e-06},
              "typed-wrong": {"input_cost_per_token": "0.000002", "output_cost_per_token": 8e-06},
              "image-model": {"output_cost_per_image": 0.04}
            }"#,
        )
        .expect("write");
        let table = PriceTable::load(Some(&path), &HashMap::new()).expect("loads despite bad rows");
        assert_usd(table.cost(&usage("good-model", 1_000_000, 0, 0, 0)), 2.0);
        let rejected: Vec<&str> = table.rejected.iter().map(|r| r.model.as_str()).collect();
        assert_eq!(rejected.len(), 2, "{:?}", table.rejected);
        assert!(rejected.contains(&"absurd-model") && rejected.contains(&"typed-wrong"));
        assert_eq!(table.models_by_source.get(&PriceSource::Manifest), Some(&1));
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[cfg(test)]
mod coverage_tests {
    use super::*;

    #[test]
    fn model_ids_in_their_providers_forms_find_one_price() {
        for (id, canonical) in [
            ("claude-opus-4-8[1m]", "claude-opus-4-8"),
            ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
            ("models/gemini-3.1-pro-preview", "gemini-3.1-pro-preview"),
            ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5-20250929"),
            (
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                "claude-sonnet-4-5-20250929",
            ),
            (
                "anthropic.claude-haiku-4-5-20251001-v1:0",
                "claude-haiku-4-5-20251001",
            ),
            ("gpt-5.2", "gpt-5.2"),
        ] {
            assert_eq!(canonical_model(id), canonical, "{id}");
        }
    }

    /// The models the popular agents use by default (and the forms their telemetry names them
    /// in) are priced: an unpriced default silently makes USD wrong.
    #[test]
    fn every_agent_s_default_model_is_priced() {
        let table = PriceTable::load(None, &HashMap::new()).expect("baseline");
        for model in [
            // Claude Code: its default, with and without the context variant; Sonnet, Haiku.
            "claude-opus-4-8",
            "claude-opus-4-8[1m]",
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            // Codex.
            "gpt-5.5",
            "gpt-5.3-codex",
            // Gemini CLI's defaults.
            "gemini-3.1-pro-preview",
            "gemini-3.5-flash-lite",
            "gemini-3.8-flash",
            // Bedrock and Vertex forms of a Claude model.
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "claude-sonnet-4-5@20250929",
            // xAI, DeepSeek, Mistral.
            "grok-4.5",
            "deepseek-chat",
            "mistral-medium-3",
        ] {
            assert!(table.lookup(model).is_some(), "{model} has no price");
        }
    }
}
