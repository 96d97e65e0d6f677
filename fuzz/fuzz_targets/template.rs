//! Message templates (`{{conn_id}}`, `{{rand_int LO HI}}`, `{{line FILE}}`…) parsed and rendered:
//! accepted exactly when a reference reading accepts, rendered exactly as it renders.
//! Input: `[sel, text…]`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sockstorm::proto::fuzz_smoke::template(data));
