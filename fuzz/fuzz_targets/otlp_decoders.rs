//! Any bytes as an OTLP/HTTP body, for each signal, encoding and compression; what decodes is
//! mapped to usage and its metric points run through the cumulative-stream state.
#![no_main]

use costmeter::otlp::decode::{self, Encoding};
use costmeter::otlp::{Defaults, OtlpState, mapping};
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let encoding = if selector & 1 == 0 {
        Encoding::Protobuf
    } else {
        Encoding::Json
    };
    let gzip = selector & 2 != 0;
    let body = match decode::decompress(
        bytes::Bytes::copy_from_slice(body),
        gzip.then_some("gzip"),
        1 << 20,
    ) {
        Ok(body) => body,
        Err(_) => return,
    };
    let defaults = Defaults {
        agent: "fuzz".into(),
    };
    let now = 1_790_000_000_000;
    let mapped = match (selector >> 2) % 3 {
        0 => decode::decode::<ExportTraceServiceRequest>(&body, encoding)
            .map(|r| mapping::spans(&r, &defaults, now)),
        1 => decode::decode::<ExportMetricsServiceRequest>(&body, encoding)
            .map(|r| mapping::metrics(&r, &defaults)),
        _ => decode::decode::<ExportLogsServiceRequest>(&body, encoding)
            .map(|r| mapping::logs(&r, &defaults, now)),
    };
    if let Ok(mapped) = mapped {
        let mut state = OtlpState::default();
        let resolved = state.resolve(mapped, now);
        state.rollback(resolved.undo);
    }
});
