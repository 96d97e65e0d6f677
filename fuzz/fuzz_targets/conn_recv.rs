//! An open `Conn` driven by a scripted server (echoes, crafted frames, raw bytes in arbitrary
//! chunks, timers, stop, EOF, errors): never panics, writes well-formed frames, finishes on timers
//! once stopped, and keeps `msgs_sent == msgs_received + msgs_unanswered`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sockstorm::proto::fuzz_smoke::conn_recv(data));
