//! Ingestion: from request bodies to validated events. Pure functions; the HTTP handler calls
//! them and hands the result to the ledger.

pub mod event;
mod fields;

use serde_json::Value;

pub use event::{Event, EventBody, LlmUsage, Outcome};

/// A body that cannot be read as events at all. Each maps to one HTTP status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("body is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("body is not valid JSON at line {line}, column {column}: {message}")]
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("body holds no events; send a JSON object, a JSON array of objects, or NDJSON")]
    Empty,
    #[error("content type '{0}' is not accepted; use application/json or application/x-ndjson")]
    UnsupportedMediaType(String),
}

/// A JSON value parsed strictly: a key twice in one object is an error, not "last wins"
/// (a body that says two things about one field means neither).
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(serde::de::Error::custom(format!(
                    "field '{shown}' appears twice in one object"
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Parses JSON text, refusing duplicate keys.
fn parse_strict(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Strict>(text).map(|Strict(value)| value)
}

/// One item of a body: the JSON value, or why its NDJSON line could not be parsed.
pub type Item = Result<Value, String>;

/// Whether a content type announces NDJSON.
fn is_ndjson(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/jsonlines"
    )
}

/// Splits a body into event values: one JSON object, a JSON array, or NDJSON (one object a
/// line). In NDJSON a bad line is that item's error; in JSON a syntax error rejects the body.
pub fn split_body(body: &[u8], content_type: Option<&str>) -> Result<Vec<Item>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| BodyError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let ndjson = match content_type {
        None => false,
        Some(ct) if is_ndjson(ct) => true,
        Some(ct) => {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            // curl -d sends application/x-www-form-urlencoded unless told otherwise; a body
            // that is JSON is taken as JSON whatever such a generic type says.
            let generic = [
                "application/json",
                "text/plain",
                "application/x-www-form-urlencoded",
                "",
            ];
            if !generic.contains(&essence.as_str()) {
                return Err(BodyError::UnsupportedMediaType(
                    ct.chars().take(80).collect(),
                ));
            }
            false
        }
    };
    let items: Vec<Item> = if ndjson {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(number, line)| {
                parse_strict(line).map_err(|e| {
                    format!(
                        "line {} is not valid JSON at column {}: {e}",
                        number + 1,
                        e.column()
                    )
                })
            })
            .collect()
    } else {
        let value: Value = parse_strict(text).map_err(|e| BodyError::Malformed {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        match value {
            Value::Array(values) => values.into_iter().map(Ok).collect(),
            other => vec![Ok(other)],
        }
    };
    if items.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_array_and_ndjson_bodies_split() {
        assert_eq!(split_body(br#"{"type":"x"}"#, None).map(|v| v.len()), Ok(1));
        assert_eq!(
            split_body(br#"[{"a":1},{"a":2}]"#, Some("application/json")).map(|v| v.len()),
            Ok(2)
        );
        let items = split_body(
            b"{\"a\":1}\n\nnot json\n{\"a\":3}\n",
            Some("application/x-ndjson"),
        )
        .expect("splits");
        assert_eq!(items.len(), 3);
        assert!(
            items[1]
                .as_ref()
                .is_err_and(|e| e.starts_with("line 3 is not valid JSON"))
        );
    }

    #[test]
    fn a_key_given_twice_is_refused_not_last_wins() {
        let error = split_body(
            br#"{"type":"llm_usage","cost_usd":0.01,"cost_usd":9999}"#,
            Some("application/json"),
        )
        .expect_err("duplicate key");
        assert!(
            error.to_string().contains("field 'cost_usd' appears twice"),
            "{error}"
        );
        let items = split_body(
            b"{\"a\":1,\"a\":2}\n{\"a\":3}\n",
            Some("application/x-ndjson"),
        )
        .expect("splits");
        assert!(
            items[0]
                .as_ref()
                .is_err_and(|e| e.contains("appears twice"))
        );
        assert!(items[1].is_ok());
    }

    #[test]
    fn unreadable_bodies_are_refused_whole() {
        assert_eq!(
            split_body(b"\xff\xfe", None),
            Err(BodyError::NotUtf8 { offset: 0 })
        );
        assert!(matches!(
            split_body(b"{\"a\": NaN}", None),
            Err(BodyError::Malformed { line: 1, .. })
        ));
        assert_eq!(split_body(b"[]", None), Err(BodyError::Empty));
        assert!(matches!(
            split_body(b"{}", Some("text/csv")),
            Err(BodyError::UnsupportedMediaType(_))
        ));
    }
}
