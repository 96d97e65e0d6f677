//! I/O backends and socket plumbing: the only place that talks to the kernel.
//!
//! `backend` is the contract a shard drives its connections through (open, send, receive,
//! close, wake, wait; completions back); `uring` implements it over io_uring and `epoll` over
//! epoll (mio) where io_uring is blocked; `probe` finds which one can run here and why;
//! `sock` creates and tunes sockets and adjusts process limits; `signal` routes termination
//! signals to the run's stop. All `unsafe` code of the crate lives in this module, each block
//! with a `// SAFETY:` line.
#![allow(unsafe_code)] // reason: FFI to the kernel (io_uring, setsockopt, rlimit, sigaction) lives here only

pub mod backend;
pub mod epoll;
pub mod probe;
pub mod signal;
pub mod sock;
pub mod uring;
