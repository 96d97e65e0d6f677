//! Threshold expressions parsed and evaluated on stats built from the input: re-parse to
//! themselves, pass only on a measured value, and the negated comparison passes exactly when not.
//! Input: `[stats…(8), secs, shape, expr…]`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sockstorm::plan::fuzz_smoke::threshold(data));
