//! The JSON scanners behind `--latency-from`, fan-out (`pub`, `seq`, `ts`), rules and `--expect`:
//! read size is not observable, and on valid JSON they agree with serde_json.
//! Input: `[sel, path, cond, message…]`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sockstorm::proto::fuzz_smoke::json_scan(data));
