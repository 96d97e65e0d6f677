//! I/O backends and socket plumbing: the only place that talks to the kernel.
//!
//! `uring` drives connections over io_uring; `sock` creates and tunes sockets and adjusts
//! process limits; `signal` routes termination signals to the run's stop. All `unsafe` code
//! of the crate lives in this module, each block with a `// SAFETY:` line.
#![allow(unsafe_code)] // reason: FFI to the kernel (io_uring, setsockopt, rlimit, sigaction) lives here only

pub mod signal;
pub mod sock;
pub mod uring;
