//! Built-in target gateway (tungstenite + mio): echo, pub/sub channels, fan-out publisher,
//! app-level ping and resume replies, a demo auth endpoint, fault injection.
//!
//! The gateway is what `sockstorm serve` and `sockstorm demo` point the load generator at, and
//! what the integration tests run against. Model:
//!
//! - `threads` event loops, each with its own listener on the same address (`SO_REUSEPORT`, so
//!   the kernel spreads new connections across threads) and its own `mio::Poll`; a thread never
//!   touches another thread's connections.
//! - Per connection: tungstenite's server handshake on a non-blocking socket (resumed after
//!   `WouldBlock`), then a `WebSocket` kept in a slab keyed by the mio `Token`.
//! - Echo: text and binary messages come back unchanged; pings are answered; a client's close is
//!   answered and then the server drops the TCP connection.
//! - Commands (module `command`; JSON text naming itself in `"action"` or `"type"`) get a reply
//!   instead of an echo: `subscribe` → `{"type":"subscribed","channel":…}` and the connection
//!   joins that channel (a string channel; without one it is only acknowledged),
//!   `unsubscribe` → `{"type":"unsubscribed","channel":…}`, `ping` → `{"type":"pong","ts":…}`
//!   (`ts` copied if present), `resume_session` → `{"type":"resumed","lastSequence":…}`.
//! - Ack routes (module `ack`): a message whose `"action"`/`"type"` is a route's action is
//!   answered `{"type":REPLY_TYPE,"FIELD":…}` with the sent value at FIELD (a dotted path)
//!   copied, e.g. `apply_operation` → `{"type":"operation_applied","opId":…}`.
//! - Market-data streams (module `feed`, `stream_rate > 0`): `{"op":"subscribe","streams":[…]}`
//!   is acked `{"op":"subscribed","streams":[…]}`, then each stream gets sequenced quotes
//!   (`seq` 1, 2, 3, … per connection and stream), every `stream_gap_every`-th seq skipped.
//! - Channels (module `channel`): a `publish` with a `"channel"` is relayed verbatim (the same
//!   text frame payload) to every member of that channel on every thread, in order per
//!   publisher; the publisher gets nothing unless it is a member. Each thread owns its members;
//!   publishes cross threads through an `mpsc` queue plus the target thread's `mio::Waker`,
//!   all queues together capped at `max_relay_bytes` (beyond, a relay is dropped and counted
//!   in `relay_dropped`).
//! - Auth endpoint for examples: a plain `GET`/`POST /v1/auth/token` (no upgrade) is answered
//!   `200` with `{"token":"sockstorm-demo-token","expires_in":3600}`, then closed; the gateway
//!   reads each request head itself to route it and then replays it to tungstenite.
//! - Fan-out (`publish_rate > 0`): every thread sends `{"type":"event","seq":K,"ts_us":T}` to all
//!   its open connections at `start + K / rate`, `K` from 1, the same `K` on every thread. `start`
//!   is the moment the first WebSocket opens; `T` is the intended send time in Unix
//!   microseconds, so a late broadcast shows up as latency rather than hiding it.
//! - Fault injection: refused upgrades (`reject`), every Nth channel delivery dropped
//!   (`drop_every`), every connection closed by the server after a while (`close_after`).
//! - Misbehaving clients, answered the way real servers do: server pings (`keepalive`) with a
//!   close 1011 "keepalive ping timeout" for a client that does not answer (Python
//!   `websockets`' behaviour) and a reset for one that cannot even take the close; and a
//!   slow-consumer rule (`slow_consumer_timeout`) that resets a client which stopped reading.
//! - permessage-deflate (`compression` set, module `deflate`): agreed to when a client offers
//!   it; a layer between the socket and tungstenite inflates the client's compressed messages
//!   and compresses every message sent, so the fan-out benchmarks show what compression costs
//!   a gateway.
//! - TLS (`tls` set): rustls over the same non-blocking sockets (module `tls`); the TLS
//!   handshake completes before tungstenite sees a byte, and a client that closes after it
//!   (handshake-only load) costs no WebSocket state at all.
//! - Limits, so that no client grows the gateway without bound: output queued per connection
//!   (`max_queued_bytes`, and 1,024 deliveries; beyond, deliveries are dropped as overflow),
//!   the message size (`max_message_size`) and the unfinished messages of all connections
//!   together (`max_unfinished_bytes`, module `budget`; beyond either, close 1009), channel
//!   requests collected per read (a publisher cannot pile up publishes), and the time to
//!   complete the upgrade (`handshake_timeout`). A port another listener holds is refused
//!   unless `reuse_port` asks to share it.
//! - Totals are per-thread `Relaxed` atomics summed by [`Gateway::stats`].
//!
//! Memory per open connection is about `read_buffer` (tungstenite allocates it eagerly) plus
//! ~1 KiB of state and kernel socket buffers; 19,000 connections at the 4 KiB default need
//! about 100 MB in user space.

mod ack;
mod budget;
mod caps;
mod channel;
mod command;
mod conn;
mod deflate;
mod feed;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_smoke;
mod stream;
mod tls;
mod worker;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Interest, Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::WebSocketConfig;

pub use ack::AckRoute;
use ack::Routes;
use budget::Budget;
use channel::{Inbox, RelayBudget};
use conn::{DriveCtx, Refusal};
pub use tls::{server_tls_config, ServerTlsOptions};
use worker::{Worker, LISTENER, WAKER};

/// Smallest accepted [`ServeConfig::read_buffer`].
pub const MIN_READ_BUFFER: usize = 256;

/// Settings of the built-in gateway.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on. Default `127.0.0.1:8080` (loopback only); port 0 picks a free port
    /// (see [`Gateway::local_addr`]).
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
    /// Serve `wss://` with these settings (see [`server_tls_config`]). Default `None` = plain
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
    /// upgrade requests, for [`Gateway::requests`]. Default 0 = none kept. Costs the requests'
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

/// Totals since the gateway started, summed over its threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// TCP connections accepted.
    pub accepted: u64,
    /// WebSocket connections open now (upgraded, not yet closed).
    pub open: u64,
    /// Text and binary messages received (control frames not counted).
    pub msgs_in: u64,
    /// Text and binary messages sent: echoes, command replies, channel deliveries and fan-out
    /// events.
    pub msgs_out: u64,
    /// Upgrade requests refused: by fault injection, or malformed / not a WebSocket upgrade.
    pub handshakes_rejected: u64,
    /// Upgrades that agreed permessage-deflate (`compression` set and offered by the client).
    pub compressed_sessions: u64,
    /// TLS handshakes completed without resumption (with or without HelloRetryRequest).
    pub tls_handshakes_full: u64,
    /// TLS handshakes that resumed a session (TLS 1.3 ticket, TLS 1.2 ticket or session ID).
    pub tls_handshakes_resumed: u64,
    /// TLS connections that ended before their handshake completed: a TLS error (refused or
    /// missing client certificate, not TLS at all) or the client closing mid-handshake.
    pub tls_failures: u64,
    /// Channel publish messages received.
    pub channel_publishes: u64,
    /// Channel deliveries (one published message to one subscriber) queued to a subscriber.
    pub channel_deliveries: u64,
    /// Channel deliveries not sent because of `drop_every`.
    pub channel_dropped: u64,
    /// Deliveries (channel messages, fan-out events, stream quotes) dropped because the client
    /// already had 1024 of them, or `max_queued_bytes` of output, queued behind a full socket.
    /// Subscribers that are closing are not members any more: nothing is counted for them.
    pub channel_overflow: u64,
    /// Connections the server closed because of `close_after`.
    pub server_closes: u64,
    /// Requests answered by the auth endpoint.
    pub auth_requests: u64,
    /// Upgraded connections dropped because the client broke the WebSocket protocol (reserved
    /// bits, unknown opcode, unmasked or oversized frame, bad UTF-8): bytes that were not a
    /// frame, such as a second upgrade request written onto an upgraded socket.
    pub protocol_errors: u64,
    /// Connections whose keepalive ping went unanswered for the timeout: closed with 1011
    /// "keepalive ping timeout".
    pub keepalive_timeouts: u64,
    /// Connections reset because their keepalive close could not be written or was not
    /// answered in time (a client that stopped reading).
    pub keepalive_aborts: u64,
    /// Connections reset by the slow-consumer rule (`slow_consumer_timeout`).
    pub slow_consumer_aborts: u64,
    /// Ack-route replies sent (`{"type":REPLY_TYPE,…}`, also counted in `msgs_out`).
    pub acks: u64,
    /// Stream quotes queued to clients (also counted in `msgs_out`).
    pub stream_msgs: u64,
    /// Stream seqs skipped by `stream_gap_every` (never sent).
    pub stream_skipped: u64,
    /// Stream seqs not sent (skipped, or lost to a full client as `channel_overflow`) that were
    /// followed by a later quote on the same stream: the missing seqs a client can detect.
    /// Without overflow and with `stream_gap_every` >= 2, also the number of gaps.
    pub stream_gaps_visible: u64,
    /// Stream subscriptions acknowledged but not streamed: beyond 64 streams on a connection,
    /// or a name longer than 256 bytes.
    pub stream_subs_refused: u64,
    /// Connections closed because they had not completed the upgrade (TLS handshake included)
    /// within `handshake_timeout` of being accepted.
    pub handshake_timeouts: u64,
    /// Connections closed with 1009 "message too big": a message or frame over
    /// `max_message_size`, or an unfinished message that took the gateway's total beyond
    /// `max_unfinished_bytes`.
    pub too_big_closes: u64,
    /// Publishes not relayed to another worker thread because the queues between threads
    /// held `max_relay_bytes` (one publish to one thread; that thread's members miss it).
    pub relay_dropped: u64,
}

/// An upgrade request as the gateway received it ([`ServeConfig::record_requests`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// The request target: path and query.
    pub target: String,
    /// The headers, names and values as sent.
    pub headers: Vec<(String, String)>,
}

/// The first [`ServeConfig::record_requests`] upgrade requests, gateway-wide.
#[derive(Debug)]
pub(crate) struct RequestLog {
    /// How many to keep.
    limit: usize,
    /// The requests kept, in arrival order (per thread).
    seen: std::sync::Mutex<Vec<SeenRequest>>,
}

impl RequestLog {
    /// Keeps `req` if there is room.
    fn record(&self, req: impl FnOnce() -> SeenRequest) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() < self.limit {
            seen.push(req());
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `threads` is 0. Fix: use at least one thread.
    #[error("serve: --threads must be at least 1")]
    NoThreads,
    /// `publish_rate` is negative, NaN or infinite. Fix: give a finite rate >= 0 (0 = echo only).
    #[error("serve: publish rate {0} is not a finite number >= 0")]
    InvalidPublishRate(f64),
    /// `stream_rate` is negative, NaN or infinite. Fix: give a finite rate >= 0 (0 = streams
    /// off).
    #[error("serve: stream rate {0} is not a finite number >= 0")]
    InvalidStreamRate(f64),
    /// An ack route (`--ack ACTION=REPLY_TYPE:FIELD`) cannot be served. Fix: as `reason` says,
    /// e.g. `--ack place_order=order_ack:order.id`.
    #[error("serve: ack route `{route}`: {reason}")]
    InvalidAckRoute {
        /// The route as given.
        route: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The `Reject::Status` code is outside 200..=599 (a 1xx would look like a protocol switch).
    /// Fix: use an error status such as 503.
    #[error("serve: reject status {0} is outside 200..=599")]
    InvalidRejectStatus(u16),
    /// A keepalive ping interval or timeout below 1 ms. Fix: give both at least 1ms (e.g.
    /// `--ping-interval 20s --ping-timeout 20s`, Python websockets' defaults).
    #[error("serve: --ping-interval and --ping-timeout must be at least 1ms")]
    InvalidKeepalive,
    /// `read_buffer` is below [`MIN_READ_BUFFER`]. Fix: use at least 256 bytes (4096 is a good
    /// default).
    #[error("serve: read buffer of {0} bytes is below the minimum of {MIN_READ_BUFFER}")]
    InvalidReadBuffer(usize),
    /// `max_message_size` is 0. Fix: give at least 1 byte (1 MiB is the default).
    #[error("serve: --max-message-size must be at least 1 byte")]
    InvalidMaxMessageSize,
    /// `max_queued_bytes` or `max_unfinished_bytes` is below `max_message_size`, so one
    /// allowed message would not fit. Fix: raise it, or lower `--max-message-size`.
    #[error("serve: {flag} of {value} bytes is below --max-message-size ({max_message_size} bytes): one message must fit")]
    LimitBelowMessageSize {
        /// The flag: `--max-queued-bytes` or `--max-unfinished-bytes`.
        flag: &'static str,
        /// Its value in bytes.
        value: usize,
        /// [`ServeConfig::max_message_size`].
        max_message_size: usize,
    },
    /// `handshake_timeout` is below 1 ms. Fix: give at least 1ms (10s is the default).
    #[error("serve: --handshake-timeout must be at least 1ms")]
    InvalidHandshakeTimeout,
    /// `backlog` is 0 or negative. Fix: use a positive backlog (the kernel caps it at
    /// `net.core.somaxconn`).
    #[error("serve: listen backlog {0} must be positive")]
    InvalidBacklog(i32),
    /// The `close_after` code is not one a server may send (1005, 1006, 1015 and unassigned
    /// codes are not). Fix: use 1001 (going away), 1012 (service restart), 1013 (try again
    /// later), 1000, or an application code 4000-4999.
    #[error("serve: close code {0} may not be sent by a server")]
    InvalidCloseCode(u16),
    /// A CPU in `cpus` is not one this process may run on. Fix: pick CPUs from `nproc` /
    /// the process's affinity mask (`taskset -p $$`).
    #[error("serve: cannot pin to CPU {cpu}: not among the {available} CPUs this process may use")]
    InvalidCpu {
        /// The CPU id in [`ServeConfig::cpus`] (`--cpus`) that this process may not run on.
        cpu: usize,
        /// How many CPUs the process may use.
        available: usize,
    },
    /// Creating or configuring the listening socket failed (socket, SO_REUSEADDR, SO_REUSEPORT,
    /// non-blocking). Fix: usually the open-files limit (`ulimit -n`); otherwise the kernel
    /// lacks SO_REUSEPORT (Linux >= 3.9 needed).
    #[error("serve: cannot create listening socket: {0}")]
    Socket(#[source] io::Error),
    /// Binding the listen address failed. Fix: "address in use" -> pick another `--listen` port
    /// or stop the process holding it; "permission denied" -> use a port >= 1024; "cannot assign
    /// requested address" -> listen on an address of this host.
    #[error("serve: cannot bind {addr}: {source}")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The bind(2) error: address in use, permission denied, or not an address of this host.
        #[source]
        source: io::Error,
    },
    /// Another socket already listens on the port (a second `sockstorm serve`, say), and
    /// `reuse_port` is off: starting anyway would let the kernel split new connections between
    /// the two. Fix: stop the other listener, pick another `--listen` port, or pass
    /// `--reuse-port` to share the port on purpose.
    #[error("serve: {addr} is already in use by another listener (pass --reuse-port to share it; the kernel then splits new connections between the two)")]
    PortShared {
        /// The address another socket listens on.
        addr: SocketAddr,
    },
    /// `listen` failed on the bound socket. Fix: another socket on this port without
    /// SO_REUSEPORT is listening: pick another `--listen` port.
    #[error("serve: cannot listen on {addr}: {source}")]
    Listen {
        /// The address the socket was bound to before listen(2) failed.
        addr: SocketAddr,
        /// The listen(2) error.
        #[source]
        source: io::Error,
    },
    /// Creating an event loop (epoll instance, eventfd waker, registration) failed. Fix: usually
    /// the open-files limit: raise `ulimit -n`.
    #[error("serve: cannot create event loop: {0}")]
    Poll(#[source] io::Error),
    /// Spawning a thread failed. Fix: use fewer `--threads` or raise the process/thread limit
    /// (`ulimit -u`).
    #[error("serve: cannot spawn thread: {0}")]
    Spawn(#[source] io::Error),
}

/// Counters of one event-loop thread; written only by it, read by `stats()` and the reporter.
#[derive(Debug, Default)]
#[repr(align(64))] // one cache line per thread: no false sharing between event loops
struct ThreadStats {
    /// TCP connections accepted.
    accepted: AtomicU64,
    /// WebSocket connections open.
    open: AtomicU64,
    /// Data messages received.
    msgs_in: AtomicU64,
    /// Data messages sent.
    msgs_out: AtomicU64,
    /// Upgrades that agreed permessage-deflate.
    pub(crate) compressed_sessions: AtomicU64,
    /// Upgrades refused.
    handshakes_rejected: AtomicU64,
    /// Full TLS handshakes.
    tls_handshakes_full: AtomicU64,
    /// Resumed TLS handshakes.
    tls_handshakes_resumed: AtomicU64,
    /// TLS connections lost before the handshake completed.
    tls_failures: AtomicU64,
    /// Channel publishes received.
    channel_publishes: AtomicU64,
    /// Channel deliveries queued.
    channel_deliveries: AtomicU64,
    /// Channel deliveries dropped by `drop_every`.
    channel_dropped: AtomicU64,
    /// Deliveries dropped for a full client.
    channel_overflow: AtomicU64,
    /// `close_after` closes.
    server_closes: AtomicU64,
    /// Auth endpoint answers.
    auth_requests: AtomicU64,
    /// Client WebSocket protocol violations.
    protocol_errors: AtomicU64,
    /// Keepalive closes (1011).
    keepalive_timeouts: AtomicU64,
    /// Keepalive resets.
    keepalive_aborts: AtomicU64,
    /// Slow-consumer resets.
    slow_consumer_aborts: AtomicU64,
    /// Ack-route replies.
    acks: AtomicU64,
    /// Stream quotes queued.
    stream_msgs: AtomicU64,
    /// Stream seqs skipped.
    stream_skipped: AtomicU64,
    /// Missing stream seqs followed by a queued quote.
    stream_gaps_visible: AtomicU64,
    /// Stream subscriptions not streamed.
    stream_subs_refused: AtomicU64,
    /// Connections closed by the handshake timeout.
    handshake_timeouts: AtomicU64,
    /// Connections closed with 1009 "message too big".
    too_big_closes: AtomicU64,
    /// Publishes not relayed to a thread: the relay queues were full.
    pub(crate) relay_dropped: AtomicU64,
}

/// The fan-out schedule's origin, shared by all threads.
#[derive(Debug, Clone, Copy)]
struct PublishClock {
    /// Tick `k` is due at `start + k / rate`.
    start: Instant,
    /// `start` as Unix time in microseconds.
    start_unix_us: u64,
}

impl PublishClock {
    /// A clock starting now.
    fn now() -> Self {
        let start = Instant::now();
        let start_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Self {
            start,
            start_unix_us,
        }
    }

    /// When tick `k` is due; `None` if that is beyond what `Instant` can represent.
    fn deadline(&self, k: u64, rate: f64) -> Option<Instant> {
        let offset = Duration::try_from_secs_f64(k as f64 / rate).ok()?;
        self.start.checked_add(offset)
    }

    /// The last tick due at `now` (0 before the first).
    fn ticks_elapsed(&self, now: Instant, rate: f64) -> u64 {
        // `as` saturates: huge values clamp to u64::MAX, NaN cannot occur (rate > 0).
        (now.saturating_duration_since(self.start).as_secs_f64() * rate).floor() as u64
    }

    /// The intended send time of tick `k`, Unix microseconds.
    fn ts_us(&self, k: u64, rate: f64) -> u64 {
        self.start_unix_us
            .saturating_add((k as f64 * 1e6 / rate).round() as u64)
    }
}

/// State shared by the gateway handle and its threads.
#[derive(Debug)]
struct Shared {
    /// Set by shutdown; threads exit after the waker fires.
    stop: AtomicBool,
    /// Fan-out origin, set when the first WebSocket opens.
    clock: OnceLock<PublishClock>,
    /// One per thread, by index: relayed publishes and the waker.
    inboxes: Box<[Inbox]>,
    /// Channel deliveries so far, gateway-wide; counted only while `drop_every` is on.
    deliveries: AtomicU64,
    /// The upgrade requests kept (`record_requests`).
    requests: Arc<RequestLog>,
}

/// The once-a-second stats printer.
#[derive(Debug)]
struct Reporter {
    /// Dropping it stops the reporter at once.
    stop: mpsc::Sender<()>,
    /// The reporter thread.
    thread: JoinHandle<()>,
}

/// A running gateway; [`Gateway::shutdown`] (or drop) stops and joins its threads.
pub struct Gateway {
    /// The bound address, port resolved.
    local_addr: SocketAddr,
    /// Stop flag, publish clock and the threads' inboxes (whose wakers interrupt `poll` at
    /// shutdown).
    shared: Arc<Shared>,
    /// One entry per thread.
    stats: Vec<Arc<ThreadStats>>,
    /// The event-loop threads.
    threads: Vec<JoinHandle<()>>,
    /// The stats printer, if `report` is on.
    reporter: Option<Reporter>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("local_addr", &self.local_addr)
            .field("threads", &self.threads.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Binds, spawns the event-loop threads and returns once every listener is listening.
    ///
    /// # Errors
    /// Invalid settings, a port that cannot be bound, or the process running out of
    /// descriptors or threads; each [`ServerError`] variant says how to fix it.
    pub fn start(cfg: ServeConfig) -> Result<Self, ServerError> {
        validate(&cfg)?;
        // More connections than the default 1024 descriptors; failure only lowers the ceiling.
        let _ = crate::io::sock::raise_nofile_limit();

        if !cfg.reuse_port && cfg.listen.port() != 0 {
            refuse_shared_port(cfg.listen)?;
        }
        let first = bind_listener(cfg.listen, cfg.backlog)?;
        let local_addr = first.local_addr().map_err(ServerError::Socket)?;
        let mut listeners = vec![first];
        for _ in 1..cfg.threads {
            listeners.push(bind_listener(local_addr, cfg.backlog)?);
        }

        let mut polls = Vec::with_capacity(cfg.threads);
        let mut inboxes = Vec::with_capacity(cfg.threads);
        let mut receivers = Vec::with_capacity(cfg.threads);
        let relay = Arc::new(RelayBudget::new(cfg.max_relay_bytes));
        for listener in &mut listeners {
            let poll = Poll::new().map_err(ServerError::Poll)?;
            let waker = Waker::new(poll.registry(), WAKER).map_err(ServerError::Poll)?;
            let (inbox, rx) = Inbox::new(waker, Arc::clone(&relay));
            inboxes.push(inbox);
            receivers.push(rx);
            poll.registry()
                .register(listener, LISTENER, Interest::READABLE)
                .map_err(ServerError::Poll)?;
            polls.push(poll);
        }

        let stats: Vec<Arc<ThreadStats>> = (0..cfg.threads).map(|_| Arc::default()).collect();
        let mut gateway = Self {
            local_addr,
            shared: Arc::new(Shared {
                stop: AtomicBool::new(false),
                clock: OnceLock::new(),
                inboxes: inboxes.into_boxed_slice(),
                deliveries: AtomicU64::new(0),
                requests: Arc::new(RequestLog {
                    limit: cfg.record_requests,
                    seen: std::sync::Mutex::new(Vec::new()),
                }),
            }),
            stats: stats.clone(),
            threads: Vec::with_capacity(cfg.threads),
            reporter: None,
        };
        // The write buffer limit leaves room for one write buffer's worth already there and
        // the frame header, so an echo of the largest message always fits (see `OpenConn`).
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(cfg.read_buffer)
            .write_buffer_size(cfg.read_buffer)
            .max_write_buffer_size(
                cfg.max_queued_bytes
                    .saturating_add(cfg.read_buffer)
                    .saturating_add(conn::MAX_FRAME_HEADER),
            )
            .max_message_size(Some(cfg.max_message_size))
            .max_frame_size(Some(cfg.max_message_size));
        let budget = Budget::new(cfg.max_unfinished_bytes);
        let reject = cfg.reject.map(|r| match r {
            Reject::Status(s) => Refusal::Answer(conn::reject_response(s).into()),
            Reject::Close => Refusal::Close,
        });

        let auth_answer: Arc<[u8]> = conn::auth_response().into();
        let routes = Arc::new(Routes::new(&cfg.acks));

        let cap =
            (cfg.max_connections > 0).then(|| Arc::new(caps::ConnCap::new(cfg.max_connections)));
        let threads = polls.into_iter().zip(listeners).zip(receivers).zip(&stats);
        for (i, (((poll, listener), inbox), thread_stats)) in threads.enumerate() {
            let ctx = DriveCtx {
                stats: Arc::clone(thread_stats),
                ws_config,
                reject: reject.clone(),
                tls: cfg.tls.clone(),
                auth_answer: Arc::clone(&auth_answer),
                requests: (cfg.record_requests > 0).then(|| Arc::clone(&gateway.shared.requests)),
                routes: Arc::clone(&routes),
                budget: Arc::clone(&budget),
                cap: cap.clone(),
                msg_rate: (cfg.max_msg_rate > 0.0).then(|| {
                    std::cell::RefCell::new(caps::Bucket::new(
                        cfg.max_msg_rate / cfg.threads as f64,
                    ))
                }),
                compression: cfg.compression,
            };
            let worker = Worker::new(
                poll,
                listener,
                ctx,
                Arc::clone(&gateway.shared),
                (i, inbox),
                &cfg,
            );
            let cpu = cfg.cpus.get(i % cfg.cpus.len().max(1)).copied();
            let thread = std::thread::Builder::new()
                .name(format!("serve-{i}"))
                .spawn(move || {
                    if let Some(id) = cpu {
                        // Validated against the affinity mask in `start`; a failure here only
                        // costs locality, so the loop runs unpinned rather than not at all.
                        let _ = core_affinity::set_for_current(core_affinity::CoreId { id });
                    }
                    worker.run();
                })
                .map_err(ServerError::Spawn)?; // `gateway` drops here: started threads stop
            gateway.threads.push(thread);
        }

        if cfg.report {
            let (tx, rx) = mpsc::channel();
            let tls = cfg.tls.is_some();
            let thread = std::thread::Builder::new()
                .name("serve-report".to_owned())
                .spawn(move || report_loop(&stats, tls, &rx))
                .map_err(ServerError::Spawn)?;
            gateway.reporter = Some(Reporter { stop: tx, thread });
        }
        Ok(gateway)
    }

    /// The address the gateway listens on, with the port resolved when 0 was asked for.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the totals, summed over threads (each counter read once, `Relaxed`).
    #[must_use]
    pub fn stats(&self) -> GatewayStats {
        sum_stats(&self.stats)
    }

    /// The upgrade requests kept so far ([`ServeConfig::record_requests`]), in arrival order
    /// per thread.
    #[must_use]
    pub fn requests(&self) -> Vec<SeenRequest> {
        let seen = self.shared.requests.seen.lock();
        seen.unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops all threads (they exit within one loop turn, well under 100 ms) and joins them.
    /// Open connections are dropped without a close handshake.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Signals every thread to stop and joins them; idempotent.
    fn stop(&mut self) {
        self.shared.stop.store(true, Release);
        for inbox in &self.shared.inboxes {
            // A failed wake leaves that loop asleep; nothing better to do than to try the rest.
            inbox.wake();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(Reporter { stop, thread }) = self.reporter.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Rejects settings the gateway cannot run with.
fn validate(cfg: &ServeConfig) -> Result<(), ServerError> {
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

/// [`ServerError::PortShared`] if another socket listens on `addr` (even with
/// `SO_REUSEPORT`): a probe socket without `SO_REUSEPORT` cannot bind then. A free port, or one
/// left in TIME_WAIT (`SO_REUSEADDR`), passes; the probe is closed before the real listeners
/// bind.
fn refuse_shared_port(addr: SocketAddr) -> Result<(), ServerError> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(ServerError::Socket)?;
    probe.set_reuse_address(true).map_err(ServerError::Socket)?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            // With SO_REUSEPORT, bind (never listen: no connection may land here) succeeds only
            // if the holder shares; otherwise it is a plain "address in use".
            let shared = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
                .and_then(|s| {
                    s.set_reuse_address(true)?;
                    s.set_reuse_port(true)?;
                    s.bind(&addr.into())
                });
            match shared {
                Ok(()) => Err(ServerError::PortShared { addr }),
                Err(source) => Err(ServerError::Bind { addr, source }),
            }
        }
        Err(source) => Err(ServerError::Bind { addr, source }),
    }
}

/// A non-blocking listener on `addr` with SO_REUSEADDR and SO_REUSEPORT.
fn bind_listener(addr: SocketAddr, backlog: i32) -> Result<mio::net::TcpListener, ServerError> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(ServerError::Socket)?;
    socket
        .set_reuse_address(true)
        .map_err(ServerError::Socket)?;
    socket.set_reuse_port(true).map_err(ServerError::Socket)?;
    socket.set_nonblocking(true).map_err(ServerError::Socket)?;
    socket
        .bind(&addr.into())
        .map_err(|source| ServerError::Bind { addr, source })?;
    socket
        .listen(backlog)
        .map_err(|source| ServerError::Listen { addr, source })?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Sums the per-thread counters.
fn sum_stats(stats: &[Arc<ThreadStats>]) -> GatewayStats {
    stats
        .iter()
        .fold(GatewayStats::default(), |acc, t| GatewayStats {
            accepted: acc.accepted + t.accepted.load(Relaxed),
            open: acc.open + t.open.load(Relaxed),
            msgs_in: acc.msgs_in + t.msgs_in.load(Relaxed),
            msgs_out: acc.msgs_out + t.msgs_out.load(Relaxed),
            handshakes_rejected: acc.handshakes_rejected + t.handshakes_rejected.load(Relaxed),
            compressed_sessions: acc.compressed_sessions + t.compressed_sessions.load(Relaxed),
            tls_handshakes_full: acc.tls_handshakes_full + t.tls_handshakes_full.load(Relaxed),
            tls_handshakes_resumed: acc.tls_handshakes_resumed
                + t.tls_handshakes_resumed.load(Relaxed),
            tls_failures: acc.tls_failures + t.tls_failures.load(Relaxed),
            channel_publishes: acc.channel_publishes + t.channel_publishes.load(Relaxed),
            channel_deliveries: acc.channel_deliveries + t.channel_deliveries.load(Relaxed),
            channel_dropped: acc.channel_dropped + t.channel_dropped.load(Relaxed),
            channel_overflow: acc.channel_overflow + t.channel_overflow.load(Relaxed),
            server_closes: acc.server_closes + t.server_closes.load(Relaxed),
            auth_requests: acc.auth_requests + t.auth_requests.load(Relaxed),
            protocol_errors: acc.protocol_errors + t.protocol_errors.load(Relaxed),
            keepalive_timeouts: acc.keepalive_timeouts + t.keepalive_timeouts.load(Relaxed),
            keepalive_aborts: acc.keepalive_aborts + t.keepalive_aborts.load(Relaxed),
            slow_consumer_aborts: acc.slow_consumer_aborts + t.slow_consumer_aborts.load(Relaxed),
            acks: acc.acks + t.acks.load(Relaxed),
            stream_msgs: acc.stream_msgs + t.stream_msgs.load(Relaxed),
            stream_skipped: acc.stream_skipped + t.stream_skipped.load(Relaxed),
            stream_gaps_visible: acc.stream_gaps_visible + t.stream_gaps_visible.load(Relaxed),
            stream_subs_refused: acc.stream_subs_refused + t.stream_subs_refused.load(Relaxed),
            handshake_timeouts: acc.handshake_timeouts + t.handshake_timeouts.load(Relaxed),
            too_big_closes: acc.too_big_closes + t.too_big_closes.load(Relaxed),
            relay_dropped: acc.relay_dropped + t.relay_dropped.load(Relaxed),
        })
}

/// The fault and extra-endpoint totals that are non-zero, as `  name N` pairs (empty if none).
#[must_use]
pub fn fault_totals(s: &GatewayStats) -> String {
    [
        ("dropped", s.channel_dropped),
        ("overflow", s.channel_overflow),
        ("server closes", s.server_closes),
        ("auth", s.auth_requests),
        ("protocol errors", s.protocol_errors),
        ("keepalive timeouts", s.keepalive_timeouts),
        ("keepalive aborts", s.keepalive_aborts),
        ("slow consumer aborts", s.slow_consumer_aborts),
        ("stream seqs skipped", s.stream_skipped),
        ("stream subscriptions refused", s.stream_subs_refused),
        ("handshake timeouts", s.handshake_timeouts),
        ("too big closes", s.too_big_closes),
        ("relay dropped", s.relay_dropped),
    ]
    .into_iter()
    .filter(|&(_, n)| n > 0)
    .map(|(name, n)| format!("  {name} {n}"))
    .collect()
}

/// Prints one line per second until `stop`'s sender is dropped; with TLS handshake rates if
/// `tls`.
fn report_loop(stats: &[Arc<ThreadStats>], tls: bool, stop: &mpsc::Receiver<()>) {
    let mut last = sum_stats(stats);
    let mut last_at = Instant::now();
    let mut next = last_at + Duration::from_secs(1);
    loop {
        match stop.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let cur = sum_stats(stats);
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
        let per_s = |cur: u64, last: u64| (cur.saturating_sub(last) as f64 / secs).round() as u64;
        let tls_rates = if tls {
            format!(
                "  tls full/s {}  resumed/s {}  failed/s {}",
                per_s(cur.tls_handshakes_full, last.tls_handshakes_full),
                per_s(cur.tls_handshakes_resumed, last.tls_handshakes_resumed),
                per_s(cur.tls_failures, last.tls_failures),
            )
        } else {
            String::new()
        };
        let mut channels = String::new();
        if cur.channel_publishes > 0 {
            channels = format!(
                "  publishes/s {}  deliveries/s {}",
                per_s(cur.channel_publishes, last.channel_publishes),
                per_s(cur.channel_deliveries, last.channel_deliveries),
            );
        }
        if cur.acks > 0 {
            channels.push_str(&format!("  acks/s {}", per_s(cur.acks, last.acks)));
        }
        if cur.stream_msgs > 0 {
            channels.push_str(&format!(
                "  quotes/s {}",
                per_s(cur.stream_msgs, last.stream_msgs)
            ));
        }
        eprintln!(
            "serve: open {}  accepted/s {}  msgs in/s {}  out/s {}{tls_rates}{channels}{}",
            cur.open,
            per_s(cur.accepted, last.accepted),
            per_s(cur.msgs_in, last.msgs_in),
            per_s(cur.msgs_out, last.msgs_out),
            fault_totals(&cur),
        );
        (last, last_at) = (cur, now);
        next += Duration::from_secs(1);
        if next < now {
            next = now + Duration::from_secs(1);
        }
    }
}
