//! sockstorm: a thread-per-core io_uring WebSocket load generator.
//!
//! The layers (docs/ARCHITECTURE.md; `tests/architecture.rs` enforces them): `cli` turns words
//! (flags, scenario files) into a validated `plan`, which `plan::prepare` readies; `engine`
//! runs one pinned shard per CPU over an `io` backend, driving `proto`'s sans-IO connection
//! state machines; `metrics` gathers and merges; `results` writes the JSON, the summary and
//! the progress line; `report` makes the HTML page of result documents; `server` is the
//! built-in gateway, `certs` loads and generates TLS certificates for both sides, `doctor`
//! checks the host. Imports point one way, down.
#![deny(unsafe_code)]
#![warn(unreachable_pub, unused_qualifications, missing_docs)]

pub mod certs;
pub mod cli;
pub mod doctor;
pub mod engine;
pub mod io;
pub mod metrics;
pub mod plan;
pub mod proto;
pub mod report;
pub mod results;
pub mod server;
