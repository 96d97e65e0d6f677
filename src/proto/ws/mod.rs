//! WebSocket protocol pieces (RFC 6455), sans-IO: the upgrade handshake, framing and
//! permessage-deflate (RFC 7692).

pub mod deflate;
pub mod frame;
pub mod handshake;
