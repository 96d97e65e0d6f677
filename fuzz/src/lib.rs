//! The bodies of sockstorm's fuzz targets. They live in `src/proto/fuzz_smoke.rs`, where the
//! crate's stable smoke tests run them over seeded inputs; this crate compiles that file
//! unchanged, so a target and its smoke test can never drift apart.
//!
//! The file names its imports `crate::proto::…` and `crate::metrics::…`; the re-exports below
//! make those paths resolve to `sockstorm`'s modules here.

pub use sockstorm::{metrics, proto};

#[path = "../../src/proto/fuzz_smoke.rs"]
mod bodies;

pub use bodies::{
    conn_recv, frame_decoder, frame_differential, upgrade_response, ConnFuzzer, SAMPLE_KEY,
};
