//! OTLP/HTTP bodies: content type and encoding checks, gzip, protobuf or JSON decoding, and the
//! answers the specification asks for (same encoding as the request).

use std::io::Read;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

/// How a body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// A body that cannot be read as an OTLP request. Each maps to one HTTP status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "content type '{0}' is not OTLP; send application/x-protobuf or application/json (OTLP/HTTP)"
    )]
    UnsupportedMediaType(String),
    #[error("content encoding '{0}' is not accepted; send gzip or no Content-Encoding")]
    UnsupportedEncoding(String),
    #[error("the body could not be read: {0}")]
    Unreadable(String),
    #[error("body is not valid gzip: {0}")]
    Gzip(String),
    #[error(
        "body exceeds {limit} bytes once decompressed (otlp.max_body_bytes): raise it, or export smaller batches"
    )]
    TooLarge { limit: usize },
    #[error(
        "the request holds {items} items (spans, data points or log records); at most 100000 are taken in one export: send smaller batches"
    )]
    TooManyItems { items: u64 },
    #[error("body is not a valid OTLP protobuf {message}: {detail}")]
    Protobuf {
        message: &'static str,
        detail: String,
    },
    #[error("body is not a valid OTLP JSON {message}: {detail}")]
    Json {
        message: &'static str,
        detail: String,
    },
}

/// Picks the encoding from a `Content-Type` header.
pub fn encoding_of(content_type: Option<&str>) -> Result<Encoding, DecodeError> {
    let essence = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(DecodeError::UnsupportedMediaType(
            content_type.unwrap_or("").chars().take(80).collect(),
        )),
    }
}

/// Undoes `Content-Encoding: gzip`, never inflating past `limit` bytes (a small gzip body can
/// expand a thousandfold).
pub fn decompress(
    body: Bytes,
    content_encoding: Option<&str>,
    limit: usize,
) -> Result<Bytes, DecodeError> {
    match content_encoding
        .map(|e| e.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => Ok(body),
        Some("gzip") | Some("x-gzip") => {
            let mut inflated = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
            let read = flate2::read::MultiGzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| DecodeError::Gzip(e.to_string()))?;
            if read > limit {
                return Err(DecodeError::TooLarge { limit });
            }
            Ok(Bytes::from(inflated))
        }
        Some(other) => Err(DecodeError::UnsupportedEncoding(
            other.chars().take(40).collect(),
        )),
    }
}

/// The three OTLP export requests, decoded alike.
pub trait ExportRequest: Message + Default + serde::de::DeserializeOwned {
    const NAME: &'static str;
}

impl ExportRequest for ExportTraceServiceRequest {
    const NAME: &'static str = "ExportTraceServiceRequest";
}
impl ExportRequest for ExportMetricsServiceRequest {
    const NAME: &'static str = "ExportMetricsServiceRequest";
}
impl ExportRequest for ExportLogsServiceRequest {
    const NAME: &'static str = "ExportLogsServiceRequest";
}

/// Most items (spans, data points, log records) one request may hold. Decoding costs memory
/// per item far beyond the bytes on the wire (an empty span is 2 bytes there and some 200 in
/// memory), so a protobuf body is counted on the wire before it is decoded.
pub const MAX_ITEMS: u64 = 100_000;

/// The field numbers from an export request down to its items, per signal (from the OTLP
/// protos): resource_* = 1, scope_* = 2, then spans / log_records = 2, or for metrics the
/// data oneof (gauge 5, sum 7, histogram 9, exponential_histogram 10, summary 11) and its
/// data_points = 1.
fn item_path(signal: Signal) -> &'static [&'static [u32]] {
    match signal {
        Signal::Traces | Signal::Logs => &[&[1], &[2], &[2]],
        Signal::Metrics => &[&[1], &[2], &[2], &[5, 7, 9, 10, 11], &[1]],
    }
}

/// Counts the messages at the end of `path` in a protobuf buffer without decoding them.
fn count_at(mut buf: &[u8], path: &[&[u32]]) -> Result<u64, prost::DecodeError> {
    use prost::bytes::Buf;
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    let Some((wanted, rest)) = path.split_first() else {
        return Ok(0);
    };
    let mut count = 0;
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf)?;
        if wire_type == WireType::LengthDelimited && wanted.contains(&tag) {
            let len = usize::try_from(decode_varint(&mut buf)?).unwrap_or(usize::MAX);
            if len > buf.len() {
                // Truncated: the decoder refuses the body with its own message.
                return Ok(count);
            }
            let (inner, after) = buf.split_at(len);
            count += if rest.is_empty() {
                1
            } else {
                count_at(inner, rest)?
            };
            buf = after;
        } else {
            skip_field(wire_type, tag, &mut buf, DecodeContext::default())?;
        }
    }
    Ok(count)
}

/// Refuses a protobuf body holding more than [`MAX_ITEMS`] items, before decoding it.
pub fn check_items(body: &[u8], encoding: Encoding, signal: Signal) -> Result<(), DecodeError> {
    if encoding != Encoding::Protobuf {
        return Ok(());
    }
    match count_at(body, item_path(signal)) {
        Ok(items) if items > MAX_ITEMS => Err(DecodeError::TooManyItems { items }),
        // A malformed body is refused by the decoder, with its message.
        _ => Ok(()),
    }
}

/// Decodes one export request.
pub fn decode<R: ExportRequest>(body: &[u8], encoding: Encoding) -> Result<R, DecodeError> {
    match encoding {
        Encoding::Protobuf => R::decode(body).map_err(|e| DecodeError::Protobuf {
            message: R::NAME,
            detail: e.to_string(),
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| DecodeError::Json {
            message: R::NAME,
            detail: e.to_string(),
        }),
    }
}

/// Which signal a request carried; decides the shape of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    /// The name of the per-item count in a partial success.
    fn rejected_field(self) -> &'static str {
        match self {
            Signal::Traces => "rejectedSpans",
            Signal::Metrics => "rejectedDataPoints",
            Signal::Logs => "rejectedLogRecords",
        }
    }
}

/// The success answer: empty when all was taken, else a partial success naming how many items
/// were refused and why.
pub fn success_body(signal: Signal, encoding: Encoding, rejected: u64, message: &str) -> Vec<u8> {
    let partial = rejected > 0 || !message.is_empty();
    match encoding {
        Encoding::Json => {
            let body = if partial {
                serde_json::json!({
                    "partialSuccess": {
                        signal.rejected_field(): rejected.to_string(),
                        "errorMessage": message,
                    }
                })
            } else {
                serde_json::json!({})
            };
            body.to_string().into_bytes()
        }
        Encoding::Protobuf => {
            let error_message = message.to_string();
            match signal {
                Signal::Traces => ExportTraceServiceResponse {
                    partial_success: partial.then_some(ExportTracePartialSuccess {
                        rejected_spans: to_i64(rejected),
                        error_message,
                    }),
                }
                .encode_to_vec(),
                Signal::Metrics => ExportMetricsServiceResponse {
                    partial_success: partial.then_some(ExportMetricsPartialSuccess {
                        rejected_data_points: to_i64(rejected),
                        error_message,
                    }),
                }
                .encode_to_vec(),
                Signal::Logs => ExportLogsServiceResponse {
                    partial_success: partial.then_some(ExportLogsPartialSuccess {
                        rejected_log_records: to_i64(rejected),
                        error_message,
                    }),
                }
                .encode_to_vec(),
            }
        }
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `google.rpc.Status`, the body OTLP/HTTP gives a failed protobuf request.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The failure answer's body, in the request's encoding.
pub fn error_body(encoding: Encoding, grpc_code: i32, message: &str) -> Vec<u8> {
    match encoding {
        Encoding::Json => serde_json::json!({ "code": grpc_code, "message": message })
            .to_string()
            .into_bytes(),
        Encoding::Protobuf => RpcStatus {
            code: grpc_code,
            message: message.to_string(),
        }
        .encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn content_types_pick_the_encoding() {
        assert_eq!(
            encoding_of(Some("application/x-protobuf")),
            Ok(Encoding::Protobuf)
        );
        assert_eq!(
            encoding_of(Some("application/json; charset=utf-8")),
            Ok(Encoding::Json)
        );
        assert!(matches!(
            encoding_of(Some("text/plain")),
            Err(DecodeError::UnsupportedMediaType(_))
        ));
        assert!(encoding_of(None).is_err());
    }

    #[test]
    fn gzip_is_undone_within_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[b'a'; 10_000]).expect("write");
        let packed = Bytes::from(gz.finish().expect("finish"));
        assert_eq!(
            decompress(packed.clone(), Some("gzip"), 20_000).map(|b| b.len()),
            Ok(10_000)
        );
        assert_eq!(
            decompress(packed, Some("gzip"), 5_000),
            Err(DecodeError::TooLarge { limit: 5_000 })
        );
        assert!(matches!(
            decompress(Bytes::from_static(b"not gzip"), Some("gzip"), 100),
            Err(DecodeError::Gzip(_))
        ));
        assert!(matches!(
            decompress(Bytes::new(), Some("br"), 100),
            Err(DecodeError::UnsupportedEncoding(_))
        ));
    }

    #[test]
    fn malformed_bodies_name_the_message_and_the_fault() {
        let protobuf = decode::<ExportTraceServiceRequest>(&[0x0a, 0xff, 0x01], Encoding::Protobuf);
        assert!(
            matches!(
                &protobuf,
                Err(DecodeError::Protobuf {
                    message: "ExportTraceServiceRequest",
                    ..
                })
            ),
            "{protobuf:?}"
        );
        let json =
            decode::<ExportMetricsServiceRequest>(b"{\"resourceMetrics\": 5}", Encoding::Json);
        assert!(matches!(json, Err(DecodeError::Json { .. })), "{json:?}");
    }

    #[test]
    fn partial_success_counts_survive_a_round_trip() {
        let body = success_body(Signal::Metrics, Encoding::Protobuf, 3, "3 points refused");
        let decoded = ExportMetricsServiceResponse::decode(&body[..]).expect("decodes");
        let partial = decoded.partial_success.expect("partial");
        assert_eq!(partial.rejected_data_points, 3);
        let empty = success_body(Signal::Traces, Encoding::Protobuf, 0, "");
        assert!(empty.is_empty());
        let json = success_body(Signal::Logs, Encoding::Json, 2, "x");
        let value: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(value["partialSuccess"]["rejectedLogRecords"], "2");
    }
}

#[cfg(test)]
mod item_tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    #[test]
    fn items_are_counted_on_the_wire_and_a_flood_of_empty_spans_is_refused() {
        let request = |spans: usize| ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(); spans],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let small = request(3).encode_to_vec();
        assert_eq!(count_at(&small, item_path(Signal::Traces)).ok(), Some(3));
        assert!(check_items(&small, Encoding::Protobuf, Signal::Traces).is_ok());
        let flood = request(150_000).encode_to_vec();
        assert!(flood.len() < 1_000_000, "{} bytes on the wire", flood.len());
        assert_eq!(
            check_items(&flood, Encoding::Protobuf, Signal::Traces),
            Err(DecodeError::TooManyItems { items: 150_000 })
        );
    }
}
