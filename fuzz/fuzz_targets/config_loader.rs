//! Any text as a config file: a config or a list of located problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = costmeter::config::Config::from_toml("fuzz.toml", text);
    }
});
