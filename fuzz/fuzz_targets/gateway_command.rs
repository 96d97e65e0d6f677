//! The built-in gateway's command parser on arbitrary text (and a configured ack route): finds
//! the command serde_json's reading finds, and every reply is a JSON object. Input: `[routes, text…]`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sockstorm::server::fuzz_smoke::gateway_command(data));
