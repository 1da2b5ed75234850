//! Any JSON value through the event validator: an event or a message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = costmeter::ingest::event::validate(&value, 1_790_000_000_000);
    }
});
