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
mod config;
mod conn;
mod deflate;
mod feed;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_smoke;
mod request;
mod stats;
mod stream;
mod tls;
mod worker;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Release;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Interest, Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use tungstenite::protocol::WebSocketConfig;

pub use ack::AckRoute;
use ack::Routes;
use budget::Budget;
use channel::{Inbox, RelayBudget};
use conn::{DriveCtx, Refusal};
pub use tls::{server_tls_config, ServerTlsOptions};
use worker::{Worker, LISTENER, WAKER};

use config::validate;
pub use config::{
    close_code_allowed, Reject, ServeConfig, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_RELAY_BYTES, DEFAULT_MAX_UNFINISHED_BYTES,
    MIN_READ_BUFFER,
};
pub use stats::{fault_totals, GatewayStats};
use stats::{report_loop, sum_stats, Reporter, ThreadStats};

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
            Reject::Status(s) => Refusal::Answer(request::reject_response(s).into()),
            Reject::Close => Refusal::Close,
        });

        let auth_answer: Arc<[u8]> = request::auth_response().into();
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
