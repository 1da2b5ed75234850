//! Any bytes as an Alertmanager webhook payload: decisions or a message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sidecar = costmeter::alerts::Sidecar {
        targets: &["agent".to_string(), "worker".to_string()],
        instances: &["host-a:8000".to_string()],
    };
    let _ = costmeter::alerts::decide(data, &sidecar);
});
