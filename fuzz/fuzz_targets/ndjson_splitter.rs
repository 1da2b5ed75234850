//! Any bytes as a `POST /v1/events` body under each content type, then every item validated.
#![no_main]

use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some("application/x-ndjson"),
    Some("text/csv"),
];

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(*selector) % CONTENT_TYPES.len()];
    if let Ok(items) = costmeter::ingest::split_body(body, content_type) {
        for value in items.iter().flatten() {
            let _ = costmeter::ingest::event::validate(value, 1_790_000_000_000);
        }
    }
});
