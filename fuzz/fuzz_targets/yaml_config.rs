//! Any text loaded as the task config: no panic; accepted tasks keep POSTed strings verbatim.
//! The check lives in `fuzz/checks.rs`, shared with `tests/fuzz_regressions.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::yaml_config(data));
