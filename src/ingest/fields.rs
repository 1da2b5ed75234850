//! Where an event's fields come from: a JSON object (`POST /v1/events`) or a [`Draft`] the
//! OTLP mapping fills from attributes. Either way the values arrive as [`Raw`] and the same
//! rules (`event`) read them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::event::{Event, check_fields, json_kind};

/// One field's value as a source gave it, before any rule: JSON gives numbers and strings;
/// OTLP attributes give ints, doubles and (Claude Code) numeric strings.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Text(String),
    Int(i64),
    Float(f64),
    /// Anything else, by what it is ("a boolean", "an array"…), so the rule can say so.
    Other(&'static str),
}

impl Raw {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Raw::Text(_) => "a string",
            Raw::Int(_) | Raw::Float(_) => "a number",
            Raw::Other(kind) => kind,
        }
    }

    /// A number read from text as OTLP senders write it: an int, else a double, else text
    /// (which the rule then refuses by name).
    pub fn parse_number(text: &str) -> Raw {
        let text = text.trim();
        if let Ok(i) = text.parse::<i64>() {
            Raw::Int(i)
        } else if let Ok(f) = text.parse::<f64>() {
            Raw::Float(f)
        } else {
            Raw::Text(text.to_string())
        }
    }
}

/// Where an event's fields come from.
pub trait Fields {
    /// The field's value; `None` when absent (or JSON null).
    fn raw(&self, name: &str) -> Option<Raw>;
    /// Every field name given, to refuse the unknown ones.
    fn names(&self) -> Vec<&str>;
}

impl Fields for Map<String, Value> {
    fn raw(&self, name: &str) -> Option<Raw> {
        Some(match self.get(name)? {
            Value::Null => return None,
            Value::String(s) => Raw::Text(s.clone()),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Raw::Int(i),
                None => Raw::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            other => Raw::Other(json_kind(other)),
        })
    }

    fn names(&self) -> Vec<&str> {
        self.keys().map(String::as_str).collect()
    }
}

/// An event's fields set one by one, by a source that is not JSON (the OTLP mapping).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft(BTreeMap<&'static str, Raw>);

impl Draft {
    pub fn set(&mut self, name: &'static str, value: Raw) -> &mut Draft {
        self.0.insert(name, value);
        self
    }

    /// Sets the field when there is a value.
    pub fn maybe(&mut self, name: &'static str, value: Option<Raw>) -> &mut Draft {
        if let Some(value) = value {
            self.0.insert(name, value);
        }
        self
    }

    pub fn text(&mut self, name: &'static str, value: impl Into<String>) -> &mut Draft {
        self.set(name, Raw::Text(value.into()))
    }

    pub fn count(&mut self, name: &'static str, value: u64) -> &mut Draft {
        self.set(name, Raw::Int(i64::try_from(value).unwrap_or(i64::MAX)))
    }

    /// The `llm_usage` event these fields make, by the same rules as `POST /v1/events`.
    pub fn llm_usage(&self, now_ms: i64) -> Result<Event, String> {
        check_fields("llm_usage", self, now_ms)
    }
}

impl Fields for Draft {
    fn raw(&self, name: &str) -> Option<Raw> {
        self.0.get(name).cloned()
    }

    fn names(&self) -> Vec<&str> {
        self.0.keys().copied().collect()
    }
}
