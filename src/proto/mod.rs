//! The sans-IO protocol core: no syscalls, no clock reads, no unsafe. Bytes and time go in,
//! bytes, deadlines and metrics come out; both backends and the tests drive it the same way.

pub mod app;
pub mod conn;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_smoke;
pub mod inspect;
pub mod rng;
pub mod select;
pub mod template;
pub mod tls;
pub mod ws;
