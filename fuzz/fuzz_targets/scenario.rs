//! A scenario file plus `run` words (after NUL bytes) read into a run: never panics, answers a
//! run or a `PlanError` (the same twice), places file errors inside the text, redacts queries.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sockstorm::cli::fuzz_smoke::scenario(data));
