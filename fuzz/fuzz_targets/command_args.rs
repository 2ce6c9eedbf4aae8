//! Any configured words and POSTed strings: the argv (or the sh script's words) ends with exactly the POSTed strings.
//! The check lives in `fuzz/checks.rs`, shared with `tests/fuzz_regressions.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::command_args(data));
