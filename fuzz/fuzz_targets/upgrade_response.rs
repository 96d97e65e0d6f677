//! `check_response` on arbitrary bytes: never panics; an accepted head is accepted alone and with
//! frames behind it, and one byte less is incomplete. Input: `[template, response…]`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sockstorm::proto::fuzz_smoke::upgrade_response(data));
