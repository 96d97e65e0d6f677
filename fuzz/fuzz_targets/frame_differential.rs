//! Differential: our header decoding against tungstenite's `FrameHeader::parse` on the same bytes
//! (FIN, opcode, length and header size agree wherever both accept).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sockstorm::proto::fuzz_smoke::frame_differential(data));
