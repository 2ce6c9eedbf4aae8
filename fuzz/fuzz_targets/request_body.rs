//! Any request body for every task: no panic; exactly arrays of strings reach the argv unchanged.
//! The check lives in `fuzz/checks.rs`, shared with `tests/fuzz_regressions.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::request_body(data));
