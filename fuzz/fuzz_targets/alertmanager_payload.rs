//! Any bytes as an Alertmanager webhook payload: decisions or a message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = costmeter::alerts::decide(data, &["agent".to_string(), "worker".to_string()]);
});
