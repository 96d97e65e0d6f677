//! The application protocols' parsers on arbitrary received messages: Socket.IO/Engine.IO
//! packets, STOMP frames, graphql-transport-ws messages and the JSON envelope scanner.
//! Input: `[which, split, bytes…]`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sockstorm::proto::fuzz_smoke::app_protocols(data));
