//! rustls errors, alerts and errnos built from the input, mapped to failure causes: each maps to
//! the cause its variant means, keys are snake_case and unique per cause, explanations one line.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sockstorm::proto::fuzz_smoke::tls_failure(data));
