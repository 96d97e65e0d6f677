//! permessage-deflate on arbitrary bytes: the server's answer, compressed messages inflated
//! within their bound, and payloads round-tripped with and without context takeover. Input:
//! `[mode, split, bytes…]`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sockstorm::proto::fuzz_smoke::deflate(data));
