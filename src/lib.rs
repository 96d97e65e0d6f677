//! sockstorm: a thread-per-core io_uring WebSocket load generator.
//!
//! Layout follows `DESIGN.md`: `plan` turns user input into a validated plan, `proto` holds the
//! sans-IO protocol core, `engine` runs one pinned shard per CPU over an `io` backend, `metrics`
//! collects and reports, `server` is the built-in gateway, `certs` loads and generates TLS
//! certificates for both sides, `doctor` checks the host.
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
pub mod results;
pub mod server;
