//! The gateway's settings ([`ServeConfig`]), their defaults and the checks a setting must pass
//! before the gateway starts.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tungstenite::protocol::frame::coding::CloseCode;

use super::{AckRoute, ServerError};

/// Smallest accepted [`ServeConfig::read_buffer`].
pub const MIN_READ_BUFFER: usize = 256;

/// Settings of the built-in gateway.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on. Default `127.0.0.1:8080` (loopback only); port 0 picks a free port
    /// (see [`Gateway::local_addr`](super::Gateway::local_addr)).
    pub listen: SocketAddr,
    /// Event-loop threads, each with its own listener and connections. Default 1.
    pub threads: usize,
    /// CPUs to pin to: thread `i` runs on `cpus[i % cpus.len()]`. Default empty = no pinning.
    pub cpus: Vec<usize>,
    /// Fan-out: broadcasts per second to every open connection. Default 0 = off (echo only).
    pub publish_rate: f64,
    /// Fault injection: refuse every upgrade this way. Default `None` = accept upgrades.
    pub reject: Option<Reject>,
    /// tungstenite read buffer per open connection, in bytes, allocated eagerly: the main
    /// per-connection memory cost. Default 4096 (tungstenite's own default is 128 KiB);
    /// at least [`MIN_READ_BUFFER`].
    pub read_buffer: usize,
    /// Listen backlog of each listener (the kernel caps it at `net.core.somaxconn`).
    /// Default 4096.
    pub backlog: i32,
    /// Print one stats line per second to stderr. Default `false`.
    pub report: bool,
    /// Serve `wss://` with these settings (see [`server_tls_config`](super::server_tls_config)). Default `None` = plain
    /// `ws://`. Each TLS connection adds rustls' state, about 1-2 KiB beyond the read buffer,
    /// plus ~18 KiB of TLS record buffers while data is in flight.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Fault injection: every Nth channel delivery (one published message to one subscriber),
    /// counted gateway-wide, is not sent (counted in `channel_dropped`). Default 0 = off.
    /// Costs one shared atomic increment per delivery while on.
    pub drop_every: u64,
    /// Fault injection: the server closes each WebSocket connection this long after its
    /// upgrade, with this close code (a close frame, then the usual close handshake). Default
    /// `None` = never. The code must be one a server may send (1000-1003, 1007-1013,
    /// 3000-4999). Costs 24 bytes per connection opened within the last `close_after`.
    pub close_after: Option<(Duration, u16)>,
    /// Server pings: a WebSocket ping to every open connection every `.0`; one unanswered
    /// for `.1` closes the connection with 1011 "keepalive ping timeout" (what Python
    /// `websockets` sends), and a close still unanswered `.1` later, or one that cannot be
    /// written because the client stopped reading, becomes a reset (the client sees 1006).
    /// Default `None` = no pings. Costs one pass over the connections every quarter of the
    /// shorter of the two (at least 1 ms, at most 100 ms), and 48 bytes per connection.
    pub keepalive: Option<(Duration, Duration)>,
    /// Slow consumers: a client whose deliveries have overflowed (its queue behind a full
    /// socket is at 1024 messages or `max_queued_bytes`: it stopped reading) for this long is reset (RST: the
    /// client sees 1006; a close frame could not reach it anyway). Default `None` = its
    /// deliveries are dropped and counted in `channel_overflow`, the connection stays.
    pub slow_consumer_timeout: Option<Duration>,
    /// Test and debugging aid: keep the request target and headers of the first this many
    /// upgrade requests, for [`Gateway::requests`](super::Gateway::requests). Default 0 = none kept. Costs the requests'
    /// size, at most this many of them.
    pub record_requests: usize,
    /// Ack routes added to the built-in ones ([`AckRoute::builtin`]), replacing a built-in
    /// route with the same action. Default empty. The table is shared by all threads.
    pub acks: Vec<AckRoute>,
    /// Market-data streams: quotes per second per subscribed stream of each connection.
    /// Default 0 = off (stream subscriptions are only acknowledged). Costs about 2 × the name
    /// + 64 bytes per subscribed stream, at most 64 streams per connection.
    pub stream_rate: f64,
    /// Every Nth seq of each (connection, stream) is skipped, not sent: a gap the client can
    /// see. Default 0 = none.
    pub stream_gap_every: u64,
    /// Output queued per connection, in bytes, beyond which deliveries (channel messages,
    /// fan-out events, stream quotes) are dropped and counted in `channel_overflow`: a client
    /// that stopped reading costs at most this (plus one write buffer of `read_buffer` bytes
    /// and the allocator's rounding). Default [`DEFAULT_MAX_QUEUED_BYTES`] (4 MiB); at least
    /// `max_message_size`, so an echo always fits.
    pub max_queued_bytes: usize,
    /// Largest message (and frame) a client may send, in bytes; a larger one closes the
    /// connection with 1009 "message too big" (counted in `too_big_closes`). Default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`] (1 MiB); at least 1. Each connection buffers at most this
    /// much of an unfinished message.
    pub max_message_size: usize,
    /// Bytes of unfinished messages (read, but not yet a whole message) all connections together
    /// may hold; the connection whose read takes the total beyond it is closed with 1009
    /// "message too big" (counted in `too_big_closes`). Default [`DEFAULT_MAX_UNFINISHED_BYTES`]
    /// (64 MiB); at least `max_message_size`. One shared atomic update per read that changes a
    /// connection's unfinished bytes (none for whole small messages).
    pub max_unfinished_bytes: usize,
    /// Connections that have not completed the WebSocket upgrade (and the TLS handshake, or
    /// an auth answer) this long after they were accepted are closed and counted in
    /// `handshake_timeouts`, so idle TCP connections cannot use up the descriptors. Default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s); at least 1 ms. Costs 24 bytes per connection
    /// accepted within the last timeout.
    pub handshake_timeout: Duration,
    /// Bytes of publishes queued between worker threads, all inboxes together (each relay
    /// of a publish to another thread counts its message's length plus 64 bytes); a publish
    /// that would go beyond is not relayed to that thread and is counted in `relay_dropped`
    /// (its members there miss it). Default [`DEFAULT_MAX_RELAY_BYTES`] (64 MiB); at least
    /// `max_message_size`. Only matters with `threads` > 1, when a thread falls behind the
    /// others' publishes. One shared atomic update per relay and per delivery of one.
    pub max_relay_bytes: usize,
    /// Let this gateway share its port with another process's listener (`SO_REUSEPORT`, the
    /// kernel then splits new connections between them). Default `false`: a port another
    /// socket already listens on is a [`ServerError::PortShared`] error, even if that socket
    /// set `SO_REUSEPORT` (a second `sockstorm serve` does).
    pub reuse_port: bool,
    /// Capacity cap: upgrades beyond this many open WebSockets, gateway-wide, are answered
    /// 503 (counted as rejected). Default 0 = no cap.
    pub max_connections: u64,
    /// Capacity cap: accept at most this many connections a second (split over the
    /// threads); beyond it the listener is left alone, its backlog fills and connects time
    /// out. Default 0 = no cap.
    pub max_accept_rate: f64,
    /// Capacity cap: read at most this many messages a second (split over the threads);
    /// beyond it connections are read later, so echoes wait and their latency grows.
    /// Default 0 = no cap.
    pub max_msg_rate: f64,
    /// permessage-deflate (RFC 7692): agreed to with every client that offers it, asking on
    /// top for what is set here (`server_no_context_takeover` and `server_max_window_bits`:
    /// the gateway's compressor; `client_no_context_takeover`, and `client_max_window_bits`
    /// when the client allows it: the client's). Default `None` = never (offers are declined).
    /// Each compressed connection costs its zlib states once it sends or receives a message:
    /// see README's "Compression" section for the measured figures.
    pub compression: Option<crate::proto::ws::deflate::Offer>,
}

/// Default [`ServeConfig::max_queued_bytes`]: 4 MiB.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 4 << 20;
/// Default [`ServeConfig::max_message_size`]: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
/// Default [`ServeConfig::max_unfinished_bytes`]: 64 MiB.
pub const DEFAULT_MAX_UNFINISHED_BYTES: usize = 64 << 20;
/// Default [`ServeConfig::max_relay_bytes`]: 64 MiB.
pub const DEFAULT_MAX_RELAY_BYTES: usize = 64 << 20;
/// Default [`ServeConfig::handshake_timeout`]: 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            threads: 1,
            cpus: Vec::new(),
            publish_rate: 0.0,
            reject: None,
            read_buffer: 4096,
            backlog: 4096,
            report: false,
            tls: None,
            drop_every: 0,
            close_after: None,
            keepalive: None,
            slow_consumer_timeout: None,
            record_requests: 0,
            acks: Vec::new(),
            stream_rate: 0.0,
            stream_gap_every: 0,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_unfinished_bytes: DEFAULT_MAX_UNFINISHED_BYTES,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_relay_bytes: DEFAULT_MAX_RELAY_BYTES,
            reuse_port: false,
            max_connections: 0,
            max_accept_rate: 0.0,
            max_msg_rate: 0.0,
            compression: None,
        }
    }
}

/// How the gateway refuses upgrades when fault injection is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Read the request, answer with this HTTP status (200..=599, no body), then close.
    Status(u16),
    /// Read the request, then close the TCP connection without answering.
    Close,
}

/// Rejects settings the gateway cannot run with.
pub(super) fn validate(cfg: &ServeConfig) -> Result<(), ServerError> {
    if cfg.threads == 0 {
        return Err(ServerError::NoThreads);
    }
    if !cfg.publish_rate.is_finite() || cfg.publish_rate < 0.0 {
        return Err(ServerError::InvalidPublishRate(cfg.publish_rate));
    }
    if !cfg.stream_rate.is_finite() || cfg.stream_rate < 0.0 {
        return Err(ServerError::InvalidStreamRate(cfg.stream_rate));
    }
    for route in &cfg.acks {
        route.check()?;
    }
    if let Some(Reject::Status(s)) = cfg.reject {
        if !(200..=599).contains(&s) {
            return Err(ServerError::InvalidRejectStatus(s));
        }
    }
    if let Some((interval, timeout)) = cfg.keepalive {
        if interval < Duration::from_millis(1) || timeout < Duration::from_millis(1) {
            return Err(ServerError::InvalidKeepalive);
        }
    }
    if cfg.read_buffer < MIN_READ_BUFFER {
        return Err(ServerError::InvalidReadBuffer(cfg.read_buffer));
    }
    if cfg.backlog <= 0 {
        return Err(ServerError::InvalidBacklog(cfg.backlog));
    }
    if cfg.max_message_size == 0 {
        return Err(ServerError::InvalidMaxMessageSize);
    }
    for (flag, value) in [
        ("--max-queued-bytes", cfg.max_queued_bytes),
        ("--max-unfinished-bytes", cfg.max_unfinished_bytes),
        ("--max-relay-bytes", cfg.max_relay_bytes),
    ] {
        if value < cfg.max_message_size {
            return Err(ServerError::LimitBelowMessageSize {
                flag,
                value,
                max_message_size: cfg.max_message_size,
            });
        }
    }
    if cfg.handshake_timeout < Duration::from_millis(1) {
        return Err(ServerError::InvalidHandshakeTimeout);
    }
    if let Some((_, code)) = cfg.close_after {
        if !close_code_allowed(code) {
            return Err(ServerError::InvalidCloseCode(code));
        }
    }
    if !cfg.cpus.is_empty() {
        let allowed: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        if let Some(&cpu) = cfg.cpus.iter().find(|cpu| !allowed.contains(cpu)) {
            return Err(ServerError::InvalidCpu {
                cpu,
                available: allowed.len(),
            });
        }
    }
    Ok(())
}

/// Whether a server may send close code `code` (RFC 6455 section 7.4 and the IANA registry as
/// tungstenite knows it).
#[must_use]
pub fn close_code_allowed(code: u16) -> bool {
    CloseCode::from(code).is_allowed()
}
