//! WebSocket protocol pieces (RFC 6455), sans-IO: the upgrade handshake and framing.

pub mod frame;
pub mod handshake;
