//! Arbitrary bytes through `FrameDecoder`: whole, split at one point and in small chunks must
//! never panic and must agree step for step. Input: `[split_lo, split_hi, chunk, bytes…]`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sockstorm::proto::fuzz_smoke::frame_decoder(data));
