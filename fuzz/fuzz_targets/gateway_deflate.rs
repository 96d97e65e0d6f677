//! The built-in gateway's permessage-deflate layer (`serve --compression`) on arbitrary client
//! bytes: never panics, hands tungstenite only well-formed plain frames, stages at most one
//! inflate step. Input: `[mode, read size, bytes…]`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sockstorm::server::fuzz_smoke::gateway_deflate(data));
