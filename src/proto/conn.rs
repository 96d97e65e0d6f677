//! The per-connection state machine, sans-IO.
//!
//! `Connecting → [TlsHandshake →] Upgrading → Open → Closing → Done`. With TLS, bytes in and out
//! pass through rustls (sans-IO as well): the backend only ever sees ciphertext. The backend drives a [`Conn`] in this order on every event:
//!
//! 1. feed what happened: [`Conn::handle_connected`], [`Conn::handle_recv`],
//!    [`Conn::handle_eof`], [`Conn::handle_error`], [`Conn::handle_timer`] or [`Conn::stop`];
//! 2. when no send is in flight, call [`Conn::poll_transmit`] to collect bytes to write;
//! 3. re-arm its timer with [`Conn::poll_timeout`];
//! 4. once [`Conn::is_done`], close the socket and drop the connection.
//!
//! Time is injected (`now`, µs since the shard's epoch); nothing here reads a clock or makes a
//! syscall. Metrics go straight into the shard's [`ShardStats`] through [`Ctx`].

use crate::metrics::{Hist, ShardStats};
use crate::proto::inspect::{ExpectPattern, FieldScan, LatencyField, TimeUnit, EXPECT_PREFIX};
use crate::proto::rng::Rng;
use crate::proto::template::{Fnv, Template, Vars};
use crate::proto::tls::{Negotiated, TlsClient, TlsFailure};
use crate::proto::ws::frame::{
    close_code_valid, encode_close, encode_frame, Decoded, FrameDecoder, FrameHeader, OpCode,
    Utf8Validator, Violation,
};
use crate::proto::ws::handshake::{self, RequestTemplate, UpgradeFailure};
use rustls::ClientConnection;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, Write};
use std::sync::Arc;

/// Microseconds since the shard's epoch.
pub type Micros = u64;

/// Why a connection attempt or session failed; each cause has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    /// TCP connection refused (RST to our SYN).
    Refused,
    /// No connection within `--connect-timeout` (or the kernel gave up on the SYN).
    ConnectTimeout,
    /// No 101 response within `--connect-timeout` of the connect start.
    UpgradeTimeout,
    /// Connection reset by the peer.
    Reset,
    /// An established connection timed out (the peer stopped acknowledging data).
    TcpTimeout,
    /// Network or host unreachable.
    Unreachable,
    /// No local port or source address available (EADDRNOTAVAIL / EADDRINUSE).
    NoSourcePort,
    /// Out of file descriptors (EMFILE / ENFILE).
    TooManyFiles,
    /// The server closed the TCP connection before completing the upgrade.
    ClosedDuringHandshake,
    /// The upgrade response was not an acceptable 101.
    Upgrade(UpgradeFailure),
    /// The server violated RFC 6455.
    Protocol(Violation),
    /// The server closed the TCP connection of an open session without a close frame.
    EofWithoutClose,
    /// No pong within `--pong-timeout` of a ping: the session was closed.
    HeartbeatTimeout,
    /// The expected reply (`--expect`) did not arrive within `--expect-timeout`.
    ExpectTimeout,
    /// The TLS handshake or record layer failed.
    Tls(TlsFailure),
    /// Another OS error, by errno.
    Os(i32),
}

impl Failure {
    /// Maps a connect/recv/send errno to a cause.
    pub fn from_errno(errno: i32) -> Self {
        match errno {
            libc::ECONNREFUSED => Self::Refused,
            libc::ETIMEDOUT => Self::ConnectTimeout,
            libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => Self::Reset,
            libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN | libc::EHOSTDOWN => {
                Self::Unreachable
            }
            libc::EADDRNOTAVAIL | libc::EADDRINUSE => Self::NoSourcePort,
            libc::EMFILE | libc::ENFILE => Self::TooManyFiles,
            e => Self::Os(e),
        }
    }

    /// Stable snake_case key used in reports and JSON.
    pub fn name(&self) -> String {
        match self {
            Self::Refused => "refused".into(),
            Self::ConnectTimeout => "connect_timeout".into(),
            Self::UpgradeTimeout => "upgrade_timeout".into(),
            Self::Reset => "reset".into(),
            Self::TcpTimeout => "tcp_timeout".into(),
            Self::Unreachable => "unreachable".into(),
            Self::NoSourcePort => "no_source_port".into(),
            Self::TooManyFiles => "too_many_open_files".into(),
            Self::ClosedDuringHandshake => "closed_during_handshake".into(),
            Self::Upgrade(u) => u.to_string(),
            Self::Protocol(v) => format!("protocol_{v}"),
            Self::EofWithoutClose => "eof_without_close_frame".into(),
            Self::HeartbeatTimeout => "heartbeat_timeout".into(),
            Self::ExpectTimeout => "expect_timeout".into(),
            Self::Tls(t) => format!("tls_{}", t.name()),
            Self::Os(e) => format!("os_error_{e}"),
        }
    }

    /// One line: what happened and what to check.
    pub fn describe(&self) -> String {
        match self {
            Self::Refused => "connection refused: nothing listens on the target address/port".into(),
            Self::ConnectTimeout => "TCP connect timed out: target overloaded, SYN backlog full or filtered".into(),
            Self::UpgradeTimeout => "no HTTP 101 before --connect-timeout: the server accepted TCP but did not upgrade".into(),
            Self::Reset => "connection reset by peer".into(),
            Self::TcpTimeout => "established connection timed out: the peer stopped acknowledging data".into(),
            Self::Unreachable => "network or host unreachable: check the target address and routes".into(),
            Self::NoSourcePort => {
                "no free local port: add source addresses (--source-ip 127.0.0.2-127.0.0.20) or widen ip_local_port_range".into()
            }
            Self::TooManyFiles => "out of file descriptors: raise the NOFILE hard limit (see `sockstorm doctor`)".into(),
            Self::ClosedDuringHandshake => "server closed the connection before answering the upgrade".into(),
            Self::Upgrade(UpgradeFailure::Status(s)) => format!("server answered HTTP {s} instead of 101 Switching Protocols"),
            Self::Upgrade(UpgradeFailure::MissingUpgrade) => "101 response without `Upgrade: websocket`".into(),
            Self::Upgrade(UpgradeFailure::MissingConnection) => "101 response without `Connection: Upgrade`".into(),
            Self::Upgrade(UpgradeFailure::BadAccept) => "Sec-WebSocket-Accept does not match our Sec-WebSocket-Key".into(),
            Self::Upgrade(UpgradeFailure::BadSubprotocol) => "server selected a subprotocol we did not offer".into(),
            Self::Upgrade(UpgradeFailure::Malformed) => "upgrade response is not valid HTTP/1.1 (is this a WebSocket endpoint?)".into(),
            Self::Protocol(v) => format!("server violated RFC 6455: {v}"),
            Self::EofWithoutClose => "server dropped an open session without a close frame (1006)".into(),
            Self::HeartbeatTimeout => "no pong within --pong-timeout of a ping: session closed as dead".into(),
            Self::ExpectTimeout => "the expected reply (--expect) did not arrive within --expect-timeout; the session stays open".into(),
            Self::Tls(t) => t.describe(),
            Self::Os(e) => format!("{}", std::io::Error::from_raw_os_error(*e)),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A message payload with its frame type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Text or Binary.
    pub opcode: OpCode,
    /// Payload bytes (empty when `template` renders each one).
    pub payload: Box<[u8]>,
    /// Rendered anew for every send (`{{seq}}`, `{{now_ms}}`, ...), if the text has any.
    pub template: Option<Arc<Template>>,
}

impl Message {
    /// A message whose payload is always the same.
    pub fn fixed(opcode: OpCode, payload: Box<[u8]>) -> Self {
        Self {
            opcode,
            payload,
            template: None,
        }
    }
}

thread_local! {
    /// Where templated payloads are rendered before framing; reused, so sends do not allocate.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Open a WebSocket session and hold it until the run stops.
    Session,
    /// Connect, complete the TLS handshake (and the upgrade if `upgrade`), then close at once
    /// (with RST if `rst`, else close_notify / close frame); the backend starts the next one.
    Handshake {
        /// Also upgrade to WebSocket before closing.
        upgrade: bool,
        /// Close with RST instead of a graceful close.
        rst: bool,
    },
}

/// Fan-out role of a scenario's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fanout {
    /// Sends its rate-driven message (carrying `pub`, `seq` and `ts`) to a channel and
    /// expects no echo; every message sent is logged for the subscribers' loss accounting.
    Publisher,
    /// Receives the publishers' messages: one-way latency, loss, duplicates, reordering.
    Subscriber,
}

/// The fields subscribers read from each delivery: publisher id, sequence, send time (µs).
pub fn fanout_fields() -> [LatencyField; 3] {
    [
        LatencyField::new("pub", TimeUnit::Micros),
        LatencyField::new("seq", TimeUnit::Micros),
        LatencyField::new("ts", TimeUnit::Micros),
    ]
}

/// An application-level heartbeat: a message at an interval, answered by a matching reply.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Between heartbeats, µs.
    pub interval: Micros,
    /// What is sent.
    pub message: Message,
    /// The reply that answers it.
    pub expect: ExpectPattern,
    /// An unanswered heartbeat ends the session as `heartbeat_timeout` after this long, µs.
    pub timeout: Micros,
}

/// What every connection of a run does; shared (one per shard), never per connection.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Session or handshake cycles.
    pub mode: Mode,
    /// TLS client of the shard (wss://), or `None` for ws://.
    pub tls: Option<Arc<TlsClient>>,
    /// The pre-rendered upgrade request.
    pub template: RequestTemplate,
    /// Budget for TCP connect + upgrade, µs.
    pub connect_timeout: Micros,
    /// Sent once right after the upgrade, in order (e.g. subscribe messages).
    pub on_open: Vec<Message>,
    /// Sent every `message_interval` and matched against echoes.
    pub message: Option<Message>,
    /// Rate-driven messages per connection before it stops sending (0: no limit).
    pub message_count: u64,
    /// Sent after `on_open` on a connection that replaces a lost one (resume a session).
    pub on_reconnect: Option<Message>,
    /// Fan-out role, if any.
    pub fanout: Option<Fanout>,
    /// Fan-out channel (run-wide number of the channel's name): messages are owed to the
    /// subscribers of their own channel only.
    pub channel: u32,
    /// Application-level heartbeat, if any.
    pub heartbeat: Option<Heartbeat>,
    /// Interval between rate-driven messages, µs; 0 = none.
    pub message_interval: Micros,
    /// Interval between pings, µs; 0 = none.
    pub ping_interval: Micros,
    /// A ping unanswered this long ends the session as `heartbeat_timeout`, µs; 0 = never.
    pub pong_timeout: Micros,
    /// One-way latency from a timestamp field of received messages.
    pub latency_from: Option<LatencyField>,
    /// Reply expected after the on-open message, and how long to wait for it (µs).
    pub expect: Option<(ExpectPattern, Micros)>,
    /// Wall clock at the shard's epoch, Unix µs: makes `now` comparable with server time.
    pub epoch_unix_us: u64,
    /// Open model: a session ends (gracefully) this long after it opened, µs; 0 = never.
    pub session_lifetime: Micros,
    /// How long to wait for the server's close frame and FIN after ours, µs.
    pub close_wait: Micros,
    /// Validate UTF-8 of received text messages (default on).
    pub validate_utf8: bool,
    /// Grid for scheduled sends, µs (≥ 1). Intended send times are rounded up to it, so all
    /// connections' sends due in one grid step go out in one wake-up, and, being stamped with
    /// the grid time, the batching adds no latency that the measurement would not see.
    pub timer_resolution: Micros,
}

impl ConnConfig {
    /// `t` rounded up to the send grid.
    pub fn on_grid(&self, t: Micros) -> Micros {
        let r = self.timer_resolution.max(1);
        t.div_ceil(r) * r
    }
}

/// What a handler needs besides the connection: config, the shard's stats and PRNG.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The shard's connection config.
    pub cfg: &'a ConnConfig,
    /// The shard's statistics.
    pub stats: &'a mut ShardStats,
    /// The shard's PRNG.
    pub rng: &'a mut Rng,
    /// This connection's own auth token, while its upgrade request is rendered.
    pub token: Option<&'a str>,
}

/// Phase of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// TLS handshake in progress (or, in handshake mode, waiting briefly for a TLS 1.3 ticket).
    TlsHandshake,
    /// Upgrade request sent or pending, waiting for 101.
    Upgrading,
    /// WebSocket open.
    Open,
    /// Close frame sent or received; waiting for the close handshake and FIN.
    Closing,
    /// Finished; the socket can be closed.
    Done,
}

/// How a finished connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Closed by us after `stop` (clean or timed out).
    Stopped,
    /// The server ended the session with a close frame.
    ServerClosed(u16),
    /// Failed before or after opening.
    Failed(Failure),
    /// A handshake cycle (`Mode::Handshake`) completed.
    Completed,
    /// Dropped on purpose by a reconnect storm, without a close handshake.
    Dropped,
}

/// Per-connection state of `--latency-from`, `--expect` and `--session-lifetime`.
#[derive(Debug, Default)]
struct Extras {
    /// Server timestamp of the message being received.
    scan: FieldScan,
    /// Open model: when this session retires (0: never).
    retire_at: Micros,
    /// Deadline of the expected reply (0: none pending), and when the wait began.
    expect_until: Micros,
    expect_since: Micros,
    /// Start of the message being received, while a reply is expected.
    expect_buf: Vec<u8>,
    /// Templated messages: hashes of those awaiting their echo (parallel to `fifo`), and the
    /// hash of the message being received.
    hashes: VecDeque<u64>,
    rx: Fnv,
    /// Fan-out subscriber: scans of `pub`, `seq`, `ts`; when the subscription took effect
    /// (Unix µs, 0: not yet); what was received from each publisher.
    fan: [FieldScan; 3],
    subscribed_at: u64,
    /// When the session stopped being subscribed (its close began), Unix µs; 0: still is.
    session_end: u64,
    tracks: Vec<Track>,
    /// The `seq` of the message being received (for `{{last_seq}}`).
    seq_scan: FieldScan,
    /// Heartbeat: when the next is due, and when the unanswered one was sent (0: none).
    hb_next: Micros,
    hb_sent: Micros,
}

/// What a subscriber received from one publisher: the highest sequence, and which of the 64
/// below it arrived (bit i: `last - i`), to tell duplicates from late arrivals.
#[derive(Debug, Clone, Copy)]
struct Track {
    publisher: u64,
    last: u64,
    seen: u64,
}

/// How a delivery relates to what came before from its publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Next or later in sequence.
    InOrder,
    /// Earlier than one already received, and new.
    Reordered,
    /// Received before.
    Duplicate,
}

impl Track {
    fn note(&mut self, seq: u64) -> Arrival {
        if seq > self.last {
            let shift = seq - self.last;
            self.seen = if shift >= 64 {
                1
            } else {
                (self.seen << shift) | 1
            };
            self.last = seq;
            return Arrival::InOrder;
        }
        let back = self.last - seq;
        if back < 64 {
            if self.seen & (1 << back) != 0 {
                return Arrival::Duplicate;
            }
            self.seen |= 1 << back;
        }
        Arrival::Reordered
    }
}

/// The rustls side of a wss:// connection.
#[derive(Debug)]
struct TlsConn {
    conn: ClientConnection,
    /// The ClientHello offered a stored session.
    attempted: bool,
    /// The handshake has completed.
    done: bool,
    /// A close_notify is owed.
    close_notify: bool,
    /// The cycle is over once the queued records (our Finished) are handed to the socket.
    done_after_write: bool,
}

// Pending output flags.
const OUT_REQUEST: u8 = 1;
const OUT_ON_OPEN: u8 = 2;
const OUT_PONG: u8 = 4;
const OUT_CLOSE: u8 = 8;
const OUT_PING: u8 = 16;
const OUT_RESUME: u8 = 32;
const OUT_HEARTBEAT: u8 = 64;

/// One WebSocket client connection.
#[derive(Debug)]
pub struct Conn {
    phase: Phase,
    pending: u8,
    stopping: bool,
    got_close: bool,
    established: bool,
    /// Taken by a reconnect storm.
    storm_dropped: bool,
    outcome: Option<Outcome>,
    /// Close code we send (1000, or the violation's code, or the echoed server code).
    close_code: u16,
    /// When the connect was submitted.
    t_start: Micros,
    /// When the upgrade request was sent (Upgrading) / the session opened (Open).
    t_phase: Micros,
    /// Phase deadline: setup timeout, drain end, or close wait; 0 = none.
    deadline: Micros,
    next_msg_at: Micros,
    next_ping_at: Micros,
    ping_sent_at: Micros,
    key: [u8; 24],
    /// Partial upgrade response; empty (unallocated) outside a split response.
    resp: Vec<u8>,
    dec: FrameDecoder,
    /// Header of the frame being received.
    frame: Option<FrameHeader>,
    /// Opcode of the data message in progress (fragmented messages span frames).
    msg_op: Option<OpCode>,
    utf8: Utf8Validator,
    /// Whether the message so far equals our message payload, and how much of it matched.
    matching: bool,
    match_off: usize,
    /// Control frame payload being assembled (≤ 125 bytes; allocated only on first control frame).
    ctrl: Vec<u8>,
    /// Payload for the pong we owe.
    pong: Vec<u8>,
    /// Intended send times of messages awaiting their echo, oldest first.
    fifo: VecDeque<Micros>,
    /// Run-wide connection number (`{{conn_id}}`), and the templated-message counter.
    id: u64,
    tseq: u64,
    /// Rate-driven messages sent.
    sent: u64,
    /// Highest `seq` received (or inherited from the session this one resumes), and whether
    /// this connection replaces a lost one (sends `on_reconnect`).
    last_seq: u64,
    resuming: bool,
    /// State of the optional features (latency scan, expected reply, lifetime), boxed so
    /// that connections without them stay small.
    extras: Option<Box<Extras>>,
    /// TLS state (wss://), boxed: most of a TLS connection's memory, dropped when it ends.
    tls: Option<Box<TlsConn>>,
}

impl Conn {
    /// A connection whose TCP connect the backend submits at `now`. The upgrade request is
    /// ready at once, so a backend may link its send to the connect.
    pub fn new(ctx: &mut Ctx<'_>, now: Micros) -> Self {
        ctx.stats.counters.attempts += 1;
        let upgrade = !matches!(ctx.cfg.mode, Mode::Handshake { upgrade: false, .. });
        let mut c = Self {
            phase: Phase::Connecting,
            pending: if upgrade { OUT_REQUEST } else { 0 },
            stopping: false,
            got_close: false,
            established: false,
            storm_dropped: false,
            outcome: None,
            close_code: 1000,
            t_start: now,
            t_phase: now,
            deadline: now.saturating_add(ctx.cfg.connect_timeout),
            next_msg_at: 0,
            next_ping_at: 0,
            ping_sent_at: 0,
            key: handshake::make_key(ctx.rng.bytes16()),
            resp: Vec::new(),
            dec: FrameDecoder::new(),
            frame: None,
            msg_op: None,
            utf8: Utf8Validator::default(),
            matching: false,
            match_off: 0,
            ctrl: Vec::new(),
            pong: Vec::new(),
            fifo: VecDeque::new(),
            id: 0,
            tseq: 0,
            sent: 0,
            last_seq: 0,
            resuming: false,
            extras: None,
            tls: None,
        };
        if let Some(client) = &ctx.cfg.tls {
            match client.start(ctx.rng) {
                Ok(s) => {
                    ctx.stats.counters.tls_resume_attempted += u64::from(s.attempted);
                    c.tls = Some(Box::new(TlsConn {
                        conn: s.conn,
                        attempted: s.attempted,
                        done: false,
                        close_notify: false,
                        done_after_write: false,
                    }));
                }
                Err(e) => c.fail(ctx, now, Failure::Tls(TlsFailure::of(&e))),
            }
        }
        c
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the connection is finished and its socket can be closed.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// How it ended, once done.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// TCP connected: the upgrade request goes out now (if not already linked to the connect).
    pub fn handle_connected(&mut self, ctx: &mut Ctx<'_>, now: Micros) {
        if self.phase != Phase::Connecting {
            return;
        }
        ctx.stats
            .record(Hist::TcpConnect, now.saturating_sub(self.t_start));
        self.phase = if self.tls.is_some() {
            Phase::TlsHandshake
        } else {
            Phase::Upgrading
        };
        self.t_phase = now;
    }

    /// The socket failed with an OS error (connect, send or recv).
    pub fn handle_error(&mut self, ctx: &mut Ctx<'_>, now: Micros, failure: Failure) {
        // ETIMEDOUT on an established connection is a retransmission timeout, not a connect one.
        let failure = match (failure, self.phase) {
            (Failure::ConnectTimeout, Phase::TlsHandshake | Phase::Upgrading | Phase::Open) => {
                Failure::TcpTimeout
            }
            (f, _) => f,
        };
        match self.phase {
            Phase::Done => {}
            // The close handshake is already underway; an error now only ends it early.
            Phase::Closing => self.finish(ctx, now),
            // A handshake cycle waiting for its ticket: the handshake itself completed.
            Phase::TlsHandshake if self.tls.as_ref().is_some_and(|t| t.done) => {
                self.complete(ctx, now);
                self.finish(ctx, now);
            }
            _ => self.fail(ctx, now, failure),
        }
    }

    /// The peer closed its side (recv returned 0).
    pub fn handle_eof(&mut self, ctx: &mut Ctx<'_>, now: Micros) {
        match self.phase {
            Phase::TlsHandshake if self.tls.as_ref().is_some_and(|t| t.done) => {
                // Closed while we waited for a ticket: the handshake itself completed.
                self.complete(ctx, now);
                self.finish(ctx, now);
            }
            Phase::TlsHandshake => self.fail(ctx, now, Failure::Tls(TlsFailure::Closed)),
            Phase::Connecting | Phase::Upgrading => {
                self.fail(ctx, now, Failure::ClosedDuringHandshake)
            }
            Phase::Open => {
                ctx.stats.close_code(1006);
                self.fail(ctx, now, Failure::EofWithoutClose);
            }
            Phase::Closing => self.finish(ctx, now),
            Phase::Done => {}
        }
    }

    /// Bytes arrived from the socket.
    pub fn handle_recv(&mut self, ctx: &mut Ctx<'_>, now: Micros, data: &[u8]) {
        ctx.stats.counters.bytes_received += data.len() as u64;
        match self.tls.take() {
            None => self.recv_plain(ctx, now, data),
            Some(t) => self.recv_tls(ctx, now, t, data),
        }
    }

    /// Ciphertext in: rustls decrypts; the plaintext goes through [`Conn::recv_plain`]. The TLS
    /// state is out of `self` meanwhile (it is put back unless the connection ended).
    fn recv_tls(&mut self, ctx: &mut Ctx<'_>, now: Micros, mut t: Box<TlsConn>, mut data: &[u8]) {
        let mut peer_closed = false;
        let mut got = 0;
        let stored = |ctx: &Ctx<'_>| ctx.cfg.tls.as_ref().map_or(0, |c| c.tickets_stored());
        while !data.is_empty() && self.phase != Phase::Done && !peer_closed {
            match t.conn.read_tls(&mut data) {
                // After the server's close_notify rustls takes nothing more: bytes behind it
                // are ignored (looping on them would spin).
                Ok(0) => break,
                Ok(_) => {}
                // Only when rustls' buffer is full, which draining below after every read
                // rules out; treat it as the server's fault rather than spin.
                Err(_) => return self.fail(ctx, now, Failure::Tls(TlsFailure::Protocol)),
            }
            // The shard is one thread: tickets stored during this call are this connection's.
            let before = stored(ctx);
            let state = t.conn.process_new_packets();
            got += stored(ctx) - before;
            let state = match state {
                Ok(s) => s,
                Err(e) => {
                    ctx.stats.counters.tls_tickets_received += got;
                    return self.tls_failed(ctx, now, &e);
                }
            };
            peer_closed |= state.peer_has_closed();
            if !t.done && !t.conn.is_handshaking() {
                t.done = true;
                self.tls_established(ctx, now, &t);
            }
            while self.phase != Phase::Done {
                let n = match t.conn.reader().into_first_chunk() {
                    Ok(chunk) if !chunk.is_empty() => {
                        self.recv_plain(ctx, now, chunk);
                        chunk.len()
                    }
                    _ => break,
                };
                t.conn.reader().consume(n);
            }
        }
        ctx.stats.counters.tls_tickets_received += got;
        let cycle_done = self.phase == Phase::TlsHandshake
            && t.done
            && (got > 0 || !self.awaits_ticket(ctx, &t));
        if self.phase != Phase::Done {
            self.tls = Some(t);
        }
        if cycle_done {
            self.complete(ctx, now);
        }
        if peer_closed {
            // close_notify: the server's orderly end of the stream, an EOF for our purposes.
            self.handle_eof(ctx, now);
        }
    }

    /// Whether a handshake-only cycle should wait for a TLS 1.3 ticket before it closes: the
    /// server sends tickets after our Finished, and a client that leaves at once never gets
    /// any, so it could never resume.
    fn awaits_ticket(&self, ctx: &Ctx<'_>, t: &TlsConn) -> bool {
        ctx.cfg.tls.as_ref().is_some_and(|c| c.awaits_tickets())
            && t.conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
    }

    fn tls_established(&mut self, ctx: &mut Ctx<'_>, now: Micros, t: &TlsConn) {
        let n = Negotiated::of(&t.conn);
        let took = now.saturating_sub(self.t_phase);
        let c = &mut ctx.stats.counters;
        if n.resumed {
            c.tls_handshakes_resumed += 1;
            ctx.stats.record(Hist::TlsResumed, took);
        } else {
            c.tls_handshakes_full += 1;
            c.tls_hello_retries += u64::from(n.retried);
            ctx.stats.record(Hist::TlsFull, took);
        }
        if t.attempted && !n.resumed {
            ctx.stats.counters.tls_resume_refused += 1;
        }
        ctx.stats.tls_negotiated(n);
        if let Mode::Handshake { upgrade: false, .. } = ctx.cfg.mode {
            // Stay in TlsHandshake until a ticket arrives (see `awaits_ticket`), but not for
            // long: some servers send none.
            self.deadline = now
                .saturating_add((4 * took).max(20_000))
                .min(self.deadline.max(now));
        } else {
            // The upgrade request went out with our Finished (rustls queued it).
            self.phase = Phase::Upgrading;
            self.t_phase = now;
        }
    }

    fn tls_failed(&mut self, ctx: &mut Ctx<'_>, now: Micros, e: &rustls::Error) {
        let f = Failure::Tls(TlsFailure::of(e));
        if self.phase == Phase::Closing {
            ctx.stats.fail(f);
            return self.finish(ctx, now);
        }
        self.fail(ctx, now, f);
    }

    /// A handshake cycle is done: count it and close the way the run asked.
    fn complete(&mut self, ctx: &mut Ctx<'_>, now: Micros) {
        ctx.stats.counters.handshake_cycles += 1;
        self.outcome = Some(Outcome::Completed);
        let rst = matches!(ctx.cfg.mode, Mode::Handshake { rst: true, .. });
        match (self.phase, rst) {
            (Phase::Open, true) => {
                ctx.stats.counters.closed_rst += 1;
                self.finish(ctx, now);
            }
            (Phase::Open, false) => {
                // The usual close handshake; its result is counted as for any session.
                self.outcome = None;
                self.begin_close(ctx, now, 1000);
            }
            (_, true) => match self.tls.as_mut() {
                // Our last flight (TLS 1.3 Finished, TLS 1.2 resumption Finished) must reach
                // the server before the RST, or it never completes the handshake we count.
                Some(t) if t.conn.wants_write() => {
                    t.done_after_write = true;
                    self.phase = Phase::Closing;
                    self.deadline = now.saturating_add(ctx.cfg.close_wait);
                }
                _ => self.finish(ctx, now),
            },
            (_, false) => {
                if let Some(t) = self.tls.as_mut() {
                    t.close_notify = true;
                }
                self.phase = Phase::Closing;
                self.deadline = now.saturating_add(ctx.cfg.close_wait);
            }
        }
    }

    /// Plaintext bytes: the upgrade response, then WebSocket frames.
    fn recv_plain(&mut self, ctx: &mut Ctx<'_>, now: Micros, mut data: &[u8]) {
        if self.phase == Phase::Upgrading {
            let used = match self.recv_upgrade(ctx, now, data) {
                Some(n) => n,
                None => return,
            };
            data = &data[used..];
        }
        if !matches!(self.phase, Phase::Open | Phase::Closing) {
            return;
        }
        loop {
            let ev = match self.dec.decode(&mut data) {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(v) => return self.violation(ctx, now, v),
            };
            let step = match ev {
                Decoded::Header(h) => self.on_header(ctx, h),
                Decoded::Payload(p) => self.on_payload(ctx, p),
                Decoded::End => self.on_frame_end(ctx, now),
            };
            if let Err(v) = step {
                return self.violation(ctx, now, v);
            }
            if self.phase == Phase::Done {
                return;
            }
        }
    }

    /// Returns how many bytes of `data` the upgrade response used, or `None` if all of it
    /// was consumed (or the connection failed).
    fn recv_upgrade(&mut self, ctx: &mut Ctx<'_>, now: Micros, data: &[u8]) -> Option<usize> {
        // Parse straight from the read buffer when the response arrives whole (the usual case);
        // copy only when it is split across reads.
        let (buf, prior): (&[u8], usize) = if self.resp.is_empty() {
            (data, 0)
        } else {
            let prior = self.resp.len();
            self.resp.extend_from_slice(data);
            (&self.resp, prior)
        };
        match handshake::check_response(buf, &self.key, &ctx.cfg.template) {
            Ok(None) => {
                if self.resp.is_empty() {
                    self.resp.extend_from_slice(data);
                }
                None
            }
            Err(f) => {
                self.fail(ctx, now, Failure::Upgrade(f));
                None
            }
            Ok(Some(head)) => {
                self.resp = Vec::new();
                self.open(ctx, now);
                Some(head - prior)
            }
        }
    }

    fn open(&mut self, ctx: &mut Ctx<'_>, now: Micros) {
        self.established = true;
        let c = &mut ctx.stats.counters;
        c.established += 1;
        ctx.stats
            .record(Hist::WsUpgrade, now.saturating_sub(self.t_phase));
        ctx.stats
            .record(Hist::WsConnecting, now.saturating_sub(self.t_start));
        self.phase = Phase::Open;
        self.t_phase = now;
        self.deadline = 0;
        if !ctx.cfg.on_open.is_empty() {
            self.pending |= OUT_ON_OPEN;
        }
        if self.resuming && ctx.cfg.on_reconnect.is_some() {
            self.pending |= OUT_RESUME;
        }
        let c = ctx.cfg;
        let templated = c.message.as_ref().is_some_and(|m| m.template.is_some());
        if c.session_lifetime > 0
            || c.expect.is_some()
            || c.latency_from.is_some()
            || templated
            || c.fanout.is_some()
            || c.heartbeat.is_some()
            || c.on_reconnect.is_some()
        {
            let mut x = Box::<Extras>::default();
            if c.session_lifetime > 0 {
                x.retire_at = now.saturating_add(c.session_lifetime);
            }
            if let Some((_, timeout)) = &c.expect {
                x.expect_since = now;
                x.expect_until = now.saturating_add(*timeout).max(1);
            } else if c.fanout == Some(Fanout::Subscriber) {
                // Without an ack to wait for, the subscription counts from the open.
                x.subscribed_at = c.epoch_unix_us.saturating_add(now);
            }
            if let Some(hb) = &c.heartbeat {
                x.hb_next = now.saturating_add(hb.interval);
            }
            self.extras = Some(x);
        }
        // Random phase within the first interval spreads sends evenly even when many
        // connections open at once (after a reconnect burst, say).
        if ctx.cfg.message.is_some() && ctx.cfg.message_interval > 0 {
            self.next_msg_at = now.saturating_add(ctx.rng.below(ctx.cfg.message_interval));
        }
        if ctx.cfg.ping_interval > 0 {
            self.next_ping_at = now.saturating_add(ctx.cfg.ping_interval);
        }
        if let Mode::Handshake { .. } = ctx.cfg.mode {
            self.complete(ctx, now);
        }
    }

    fn on_header(&mut self, ctx: &mut Ctx<'_>, h: FrameHeader) -> Result<(), Violation> {
        self.frame = Some(h);
        if h.opcode.is_control() {
            self.ctrl.clear();
            return Ok(());
        }
        if self.got_close {
            return Err(Violation::DataAfterClose);
        }
        match (h.opcode, self.msg_op) {
            (OpCode::Continuation, None) => return Err(Violation::UnexpectedContinuation),
            (OpCode::Continuation, Some(_)) => {}
            (_, Some(_)) => return Err(Violation::ExpectedContinuation),
            (op, None) => {
                self.msg_op = Some(op);
                if let Some(x) = &mut self.extras {
                    x.scan.reset();
                    x.expect_buf.clear();
                    x.rx = Fnv::default();
                    x.fan = Default::default();
                    x.seq_scan.reset();
                }
                self.matching = !self.fifo.is_empty()
                    && ctx.cfg.message.as_ref().is_some_and(|m| m.opcode == op);
                self.match_off = 0;
            }
        }
        Ok(())
    }

    fn on_payload(&mut self, ctx: &mut Ctx<'_>, p: &[u8]) -> Result<(), Violation> {
        let Some(h) = self.frame else { return Ok(()) };
        if h.opcode.is_control() {
            self.ctrl.extend_from_slice(p);
            return Ok(());
        }
        if self.msg_op == Some(OpCode::Text) && ctx.cfg.validate_utf8 {
            self.utf8.feed(p)?;
        }
        if let Some(x) = &mut self.extras {
            if let Some(f) = &ctx.cfg.latency_from {
                x.scan.feed(f, p);
            }
            if x.expect_until != 0 || x.hb_sent != 0 {
                let room = EXPECT_PREFIX.saturating_sub(x.expect_buf.len());
                x.expect_buf.extend_from_slice(&p[..p.len().min(room)]);
            }
            if ctx.cfg.fanout == Some(Fanout::Subscriber) {
                let fields = fields();
                for (scan, f) in x.fan.iter_mut().zip(fields) {
                    scan.feed(f, p);
                }
            } else if ctx.cfg.on_reconnect.is_some() {
                x.seq_scan.feed(&fields()[1], p);
            }
        }
        // Compare with our payload as it streams in: no reassembly buffer is ever needed.
        let templated = ctx
            .cfg
            .message
            .as_ref()
            .is_some_and(|m| m.template.is_some());
        if self.matching && templated {
            if let Some(x) = &mut self.extras {
                x.rx.feed(p);
            }
        } else if self.matching {
            let expected = ctx.cfg.message.as_ref().map_or(&[][..], |m| &m.payload[..]);
            let end = self.match_off + p.len();
            self.matching = expected.get(self.match_off..end) == Some(p);
            self.match_off = end;
        }
        Ok(())
    }

    fn on_frame_end(&mut self, ctx: &mut Ctx<'_>, now: Micros) -> Result<(), Violation> {
        let Some(h) = self.frame.take() else {
            return Ok(());
        };
        match h.opcode {
            OpCode::Ping => {
                if self.phase == Phase::Open {
                    self.pong.clear();
                    self.pong.extend_from_slice(&self.ctrl);
                    self.pending |= OUT_PONG;
                }
            }
            OpCode::Pong => {
                // Only the pong carrying our ping's payload answers it; servers also send
                // unsolicited heartbeat pongs.
                if self.ping_sent_at != 0 && self.ctrl == self.ping_sent_at.to_be_bytes() {
                    ctx.stats
                        .record(Hist::WsPing, now.saturating_sub(self.ping_sent_at));
                    ctx.stats.counters.pongs_received += 1;
                    self.ping_sent_at = 0;
                }
            }
            OpCode::Close => return self.on_close_frame(ctx, now),
            _ => {
                if h.fin {
                    self.on_message_end(ctx, now)?;
                }
            }
        }
        Ok(())
    }

    fn on_message_end(&mut self, ctx: &mut Ctx<'_>, now: Micros) -> Result<(), Violation> {
        let op = self.msg_op.take();
        if op == Some(OpCode::Text) && ctx.cfg.validate_utf8 {
            self.utf8.finish()?;
        }
        if self.phase != Phase::Open {
            ctx.stats.counters.msgs_late += 1;
            // A delivery sent while we were still subscribed counts even if it arrives
            // during our close.
            if let Some(x) = &mut self.extras {
                fan_out(ctx, x, now, &mut self.last_seq);
            }
            return Ok(());
        }
        self.inspect(ctx, now);
        let c = &mut ctx.stats.counters;
        let full = match (&ctx.cfg.message, &mut self.extras) {
            // Templated: the echo is ours if it hashes like the oldest message awaiting one.
            (Some(m), Some(x)) if m.template.is_some() => {
                let ours = x.hashes.front() == Some(&x.rx.0);
                if ours {
                    x.hashes.pop_front();
                }
                ours
            }
            (m, _) => m
                .as_ref()
                .is_some_and(|m| m.payload.len() == self.match_off),
        };
        if self.matching && full {
            if let Some(intended) = self.fifo.pop_front() {
                c.msgs_received += 1;
                ctx.stats
                    .record(Hist::WsMsgRtt, now.saturating_sub(intended));
                if self.stopping && self.fifo.is_empty() {
                    self.begin_close(ctx, now, 1000);
                }
                return Ok(());
            }
        }
        c.msgs_pushed += 1;
        Ok(())
    }

    /// One-way latency and the expected reply, on a complete data message.
    fn inspect(&mut self, ctx: &mut Ctx<'_>, now: Micros) {
        let Some(x) = &mut self.extras else { return };
        if let (Some(f), Some(v)) = (&ctx.cfg.latency_from, x.scan.value()) {
            let sent = f.unit.to_us(v);
            let arrived = ctx.cfg.epoch_unix_us.saturating_add(now);
            // A server clock ahead of ours would give a negative latency: counted, not hidden.
            match arrived.checked_sub(sent) {
                Some(lat) => ctx.stats.record(Hist::WsMsgLatency, lat),
                None => ctx.stats.counters.latency_clock_skew += 1,
            }
        }
        if x.expect_until != 0 {
            if let Some((pattern, _)) = &ctx.cfg.expect {
                if pattern.matches(&x.expect_buf) {
                    ctx.stats
                        .record(Hist::WsSubscribeAck, now.saturating_sub(x.expect_since));
                    ctx.stats.counters.expects_met += 1;
                    x.expect_until = 0;
                    if ctx.cfg.fanout == Some(Fanout::Subscriber) {
                        x.subscribed_at = ctx.cfg.epoch_unix_us.saturating_add(now);
                    }
                }
            }
        }
        if x.hb_sent != 0 {
            if let Some(hb) = &ctx.cfg.heartbeat {
                if hb.expect.matches(&x.expect_buf) {
                    ctx.stats
                        .record(Hist::WsHeartbeat, now.saturating_sub(x.hb_sent));
                    ctx.stats.counters.heartbeats_answered += 1;
                    x.hb_sent = 0;
                }
            }
        }
        if x.expect_until == 0 && x.hb_sent == 0 && !x.expect_buf.is_empty() {
            x.expect_buf = Vec::new();
        }
        if let Some(seq) = x.seq_scan.value() {
            self.last_seq = self.last_seq.max(seq);
        }
        fan_out(ctx, x, now, &mut self.last_seq);
    }

    fn on_close_frame(&mut self, ctx: &mut Ctx<'_>, now: Micros) -> Result<(), Violation> {
        let code = match self.ctrl.len() {
            0 => 1005,
            1 => return Err(Violation::BadCloseFrame),
            _ => {
                let code = u16::from_be_bytes([self.ctrl[0], self.ctrl[1]]);
                if !close_code_valid(code) {
                    return Err(Violation::InvalidCloseCode);
                }
                if std::str::from_utf8(&self.ctrl[2..]).is_err() {
                    return Err(Violation::InvalidUtf8);
                }
                code
            }
        };
        ctx.stats.close_code(code);
        self.got_close = true;
        match self.phase {
            Phase::Open => {
                ctx.stats.counters.closed_by_server += 1;
                self.outcome = Some(Outcome::ServerClosed(code));
                // Echo the code back (1005 may not be sent, answer 1000 then).
                let reply = if code == 1005 { 1000 } else { code };
                self.begin_close(ctx, now, reply);
            }
            Phase::Closing => {
                if self.outcome.is_none() {
                    ctx.stats.counters.closed_clean += 1;
                    self.outcome = Some(Outcome::Stopped);
                }
                // Wait for the server's FIN so TIME_WAIT lands on its side (RFC 6455 §7.1.1).
                self.deadline = now.saturating_add(ctx.cfg.close_wait);
            }
            _ => {}
        }
        Ok(())
    }

    /// A deadline passed (or may have): send due messages and pings, enforce timeouts.
    pub fn handle_timer(&mut self, ctx: &mut Ctx<'_>, now: Micros) {
        if self.deadline != 0 && now >= self.deadline {
            match self.phase {
                Phase::Connecting => return self.fail(ctx, now, Failure::ConnectTimeout),
                Phase::TlsHandshake if self.tls.as_ref().is_some_and(|t| t.done) => {
                    ctx.stats.counters.tls_ticket_waits_expired += 1;
                    if let Some(c) = &ctx.cfg.tls {
                        c.wait_expired();
                    }
                    return self.complete(ctx, now);
                }
                Phase::TlsHandshake => {
                    return self.fail(ctx, now, Failure::Tls(TlsFailure::Timeout))
                }
                Phase::Upgrading => return self.fail(ctx, now, Failure::UpgradeTimeout),
                // Drain time is over: whatever is unanswered stays so.
                Phase::Open => return self.begin_close(ctx, now, 1000),
                Phase::Closing => return self.finish(ctx, now),
                Phase::Done => return,
            }
        }
        if self.phase == Phase::Open
            && self.ping_sent_at != 0
            && ctx.cfg.pong_timeout > 0
            && now >= self.ping_sent_at.saturating_add(ctx.cfg.pong_timeout)
        {
            return self.fail(ctx, now, Failure::HeartbeatTimeout);
        }
        if let Some(x) = &mut self.extras {
            if self.phase == Phase::Open && x.retire_at != 0 && now >= x.retire_at {
                // Its lifetime is over: replies in flight get --close-wait, then a close 1000.
                x.retire_at = 0;
                if self.stopping {
                    return;
                }
                ctx.stats.counters.sessions_retired += 1;
                let drain_until = now.saturating_add(ctx.cfg.close_wait);
                self.stop(ctx, now, drain_until);
                return;
            }
            if x.expect_until != 0 && now >= x.expect_until && self.phase == Phase::Open {
                ctx.stats.fail(Failure::ExpectTimeout);
                x.expect_until = 0;
                x.expect_buf = Vec::new();
            }
            if let (Some(hb), Phase::Open) = (&ctx.cfg.heartbeat, self.phase) {
                if x.hb_sent != 0 && now >= x.hb_sent.saturating_add(hb.timeout) {
                    return self.fail(ctx, now, Failure::HeartbeatTimeout);
                }
                if !self.stopping && x.hb_next != 0 && now >= ctx.cfg.on_grid(x.hb_next) {
                    // One heartbeat outstanding at a time, like pings.
                    if x.hb_sent == 0 {
                        self.pending |= OUT_HEARTBEAT;
                    }
                    x.hb_next = x.hb_next.saturating_add(hb.interval).max(now + 1);
                }
            }
        }
        if self.phase == Phase::Open
            && !self.stopping
            && self.next_ping_at != 0
            && now >= ctx.cfg.on_grid(self.next_ping_at)
        {
            // One ping outstanding at a time: a late pong must not be matched to a newer ping.
            if self.ping_sent_at == 0 {
                self.pending |= OUT_PING;
            }
            self.next_ping_at = self.next_ping_at.saturating_add(ctx.cfg.ping_interval);
            if self.next_ping_at <= now {
                self.next_ping_at = now.saturating_add(ctx.cfg.ping_interval);
            }
        }
    }

    /// Ends the session gracefully: no new messages; replies in flight are awaited until
    /// `drain_until`, then a close (1000) is sent. Connections not yet open are abandoned.
    pub fn stop(&mut self, ctx: &mut Ctx<'_>, now: Micros, drain_until: Micros) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        match self.phase {
            // A handshake cycle whose handshake is done (waiting for a ticket, or with our
            // Finished still to send) ends as a completed cycle, so the server counts it too.
            Phase::TlsHandshake if self.tls.as_ref().is_some_and(|t| t.done) => {
                self.complete(ctx, now)
            }
            Phase::Connecting | Phase::TlsHandshake | Phase::Upgrading => self.abandon(ctx, now),
            Phase::Open => {
                // Subscribers wait out the drain too: deliveries in flight still count.
                if self.fifo.is_empty() && ctx.cfg.fanout != Some(Fanout::Subscriber) {
                    self.begin_close(ctx, now, 1000);
                } else {
                    self.deadline = drain_until;
                }
            }
            Phase::Closing | Phase::Done => {}
        }
    }

    /// Ends the connection at once, without a close handshake (second Ctrl-C, hard deadline).
    pub fn abort(&mut self, ctx: &mut Ctx<'_>, now: Micros) {
        self.stopping = true;
        match self.phase {
            Phase::Connecting | Phase::TlsHandshake | Phase::Upgrading => self.abandon(ctx, now),
            Phase::Open => {
                // Counted like a close whose handshake did not complete.
                self.phase = Phase::Closing;
                self.finish(ctx, now);
            }
            Phase::Closing => self.finish(ctx, now),
            Phase::Done => {}
        }
    }

    /// Never opened, and the run is over: not a failure of the target.
    fn abandon(&mut self, ctx: &mut Ctx<'_>, now: Micros) {
        ctx.stats.counters.abandoned += 1;
        self.outcome = Some(Outcome::Stopped);
        self.finish(ctx, now);
    }

    /// Whether this connection ever reached Open.
    pub fn was_established(&self) -> bool {
        self.established
    }

    /// A reconnect storm takes this open session: abruptly (`Outcome::Dropped`, the backend
    /// closes the socket with RST) or with a close handshake; either way it is replaced.
    pub fn storm_drop(&mut self, ctx: &mut Ctx<'_>, now: Micros, graceful: bool) {
        if self.phase != Phase::Open {
            return;
        }
        ctx.stats.counters.storm_dropped += 1;
        self.storm_dropped = true;
        if graceful {
            self.begin_close(ctx, now, 1000);
        } else {
            self.account_unanswered(ctx);
            self.outcome = Some(Outcome::Dropped);
            self.finish(ctx, now);
        }
    }

    /// Whether a reconnect storm took this session.
    pub fn storm_dropped(&self) -> bool {
        self.storm_dropped
    }

    /// Appends due output to `out` (caller-owned, reused across calls). Returns the number of
    /// bytes appended. Call only when no earlier output is still being written.
    pub fn poll_transmit(&mut self, ctx: &mut Ctx<'_>, now: Micros, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        if self.pending & OUT_REQUEST != 0 {
            ctx.cfg.template.render(&self.key, ctx.token, out);
        }
        if self.pending & OUT_PONG != 0 && !self.got_close {
            encode_frame(out, OpCode::Pong, true, &self.pong, ctx.rng.mask());
            ctx.stats.counters.pongs_sent += 1;
        }
        if self.phase == Phase::Open {
            if self.pending & OUT_ON_OPEN != 0 {
                let now_unix = ctx.cfg.epoch_unix_us.saturating_add(now);
                for m in &ctx.cfg.on_open {
                    self.encode_message(m, now_unix, ctx.rng, out);
                    ctx.stats.counters.on_open_sent += 1;
                }
            }
            if self.pending & OUT_RESUME != 0 {
                if let Some(m) = &ctx.cfg.on_reconnect {
                    let now_unix = ctx.cfg.epoch_unix_us.saturating_add(now);
                    self.encode_message(m, now_unix, ctx.rng, out);
                    ctx.stats.counters.resumes_sent += 1;
                }
            }
            if self.pending & OUT_HEARTBEAT != 0 {
                if let (Some(hb), Some(x)) = (&ctx.cfg.heartbeat, self.extras.as_mut()) {
                    x.hb_sent = now;
                    let now_unix = ctx.cfg.epoch_unix_us.saturating_add(now);
                    self.encode_message(&hb.message, now_unix, ctx.rng, out);
                    ctx.stats.counters.heartbeats_sent += 1;
                }
            }
            if self.pending & OUT_PING != 0 {
                encode_frame(out, OpCode::Ping, true, &now.to_be_bytes(), ctx.rng.mask());
                self.ping_sent_at = now;
                ctx.stats.counters.pings_sent += 1;
            }
            self.transmit_messages(ctx, now, out);
        }
        if self.pending & OUT_CLOSE != 0 {
            encode_close(out, self.close_code, b"", ctx.rng.mask());
        }
        self.pending = 0;
        if let Some(t) = self.tls.as_mut() {
            if out.len() > start {
                // No buffer limit is set, so rustls takes all of it.
                let _ = t.conn.writer().write_all(&out[start..]);
                out.truncate(start);
            }
            if t.close_notify {
                t.close_notify = false;
                t.conn.send_close_notify();
            }
            while t.conn.wants_write() {
                if t.conn.write_tls(out).is_err() {
                    break;
                }
            }
            if t.done_after_write {
                // The backend closes the socket after this send completes.
                self.finish(ctx, now);
            }
        }
        let n = out.len() - start;
        ctx.stats.counters.bytes_sent += n as u64;
        n
    }

    /// Writes every message whose intended time has come, stamping each with that time (not
    /// the write time) so a stalled loop shows up as latency instead of hiding it.
    fn transmit_messages(&mut self, ctx: &mut Ctx<'_>, now: Micros, out: &mut Vec<u8>) {
        let (Some(m), iv) = (&ctx.cfg.message, ctx.cfg.message_interval) else {
            return;
        };
        if iv == 0 || self.stopping {
            return;
        }
        let publisher = ctx.cfg.fanout == Some(Fanout::Publisher);
        loop {
            let intended = ctx.cfg.on_grid(self.next_msg_at);
            if intended > now || self.sends_done(ctx.cfg) {
                break;
            }
            let now_unix = ctx.cfg.epoch_unix_us.saturating_add(now);
            let hash = self.encode_message(m, now_unix, ctx.rng, out);
            self.sent += 1;
            self.next_msg_at = self.next_msg_at.saturating_add(iv);
            if publisher {
                // No echo comes back (so not in msgs_sent, which echoes answer); the log is
                // what subscribers are held to.
                ctx.stats
                    .fanout
                    .publish(ctx.cfg.channel, self.id, self.tseq, now_unix);
                ctx.stats.counters.fanout_published += 1;
                continue;
            }
            if let (Some(h), Some(x)) = (hash, self.extras.as_mut()) {
                x.hashes.push_back(h);
            }
            ctx.stats.counters.msgs_sent += 1;
            self.fifo.push_back(intended);
        }
    }

    /// Frames `m` into `out`, rendering it first if it is templated; returns the rendered
    /// payload's hash then.
    fn encode_message(
        &mut self,
        m: &Message,
        now_unix_us: u64,
        rng: &mut Rng,
        out: &mut Vec<u8>,
    ) -> Option<u64> {
        let mask = rng.mask();
        let Some(t) = &m.template else {
            encode_frame(out, m.opcode, true, &m.payload, mask);
            return None;
        };
        self.tseq += 1;
        let mut vars = Vars {
            conn_id: self.id,
            seq: self.tseq,
            last_seq: self.last_seq,
            now_unix_us,
            rng,
        };
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            s.clear();
            t.render(&mut vars, &mut s);
            encode_frame(out, m.opcode, true, &s, mask);
            Some(Fnv::of(&s))
        })
    }

    /// Sets the run-wide connection number (`{{conn_id}}`).
    pub fn set_id(&mut self, id: u64) {
        self.id = id;
    }

    /// This connection replaces a lost session whose highest `seq` was `last_seq`: it sends
    /// `on_reconnect` (with `{{last_seq}}`) after `on_open`.
    pub fn resume_from(&mut self, last_seq: u64) {
        self.resuming = true;
        self.last_seq = last_seq;
    }

    /// Whether a replacement of this connection resumes a session: it had one, or it was
    /// itself resuming one (and failed before its own opened).
    pub fn has_session_to_resume(&self) -> bool {
        self.established || self.resuming
    }

    /// The highest `seq` received so far (for the session that replaces this one).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Whether the `--message-count` limit has been reached.
    fn sends_done(&self, cfg: &ConnConfig) -> bool {
        cfg.message_count > 0 && self.sent >= cfg.message_count
    }

    /// The next instant at which [`Conn::handle_timer`] has work, if any.
    pub fn poll_timeout(&self, cfg: &ConnConfig) -> Option<Micros> {
        let mut t = u64::MAX;
        if self.deadline != 0 {
            t = self.deadline;
        }
        if let Some(x) = &self.extras {
            if x.expect_until != 0 {
                t = t.min(x.expect_until);
            }
            if self.phase == Phase::Open && x.retire_at != 0 {
                t = t.min(x.retire_at);
            }
            if let (Some(hb), Phase::Open) = (&cfg.heartbeat, self.phase) {
                if x.hb_sent != 0 {
                    t = t.min(x.hb_sent.saturating_add(hb.timeout));
                }
                if !self.stopping && x.hb_next != 0 {
                    t = t.min(cfg.on_grid(x.hb_next));
                }
            }
        }
        if self.phase == Phase::Open && self.ping_sent_at != 0 && cfg.pong_timeout > 0 {
            t = t.min(self.ping_sent_at.saturating_add(cfg.pong_timeout));
        }
        if self.phase == Phase::Open && !self.stopping {
            if self.next_ping_at != 0 {
                t = t.min(cfg.on_grid(self.next_ping_at));
            }
            if cfg.message.is_some() && cfg.message_interval > 0 && !self.sends_done(cfg) {
                t = t.min(cfg.on_grid(self.next_msg_at));
            }
        }
        (t != u64::MAX).then_some(t)
    }

    /// Whether output is pending (a send should be started).
    pub fn wants_transmit(&self, cfg: &ConnConfig, now: Micros) -> bool {
        self.pending != 0
            || self
                .tls
                .as_ref()
                .is_some_and(|t| t.close_notify || t.conn.wants_write())
            || (self.phase == Phase::Open
                && !self.stopping
                && cfg.message.is_some()
                && cfg.message_interval > 0
                && !self.sends_done(cfg)
                && cfg.on_grid(self.next_msg_at) <= now)
    }

    fn violation(&mut self, ctx: &mut Ctx<'_>, now: Micros, v: Violation) {
        if self.phase == Phase::Closing {
            // The session is already ending; the violation is still the server's fault.
            ctx.stats.fail(Failure::Protocol(v));
            return self.finish(ctx, now);
        }
        // Fail the connection (RFC 6455 §7.1.7): the socket is closed without a close frame.
        self.fail(ctx, now, Failure::Protocol(v));
    }

    fn begin_close(&mut self, ctx: &mut Ctx<'_>, now: Micros, code: u16) {
        if self.phase != Phase::Open {
            return;
        }
        self.account_unanswered(ctx);
        // A reply still expected when we close is not the server's failure.
        if let Some(x) = &mut self.extras {
            x.expect_until = 0;
            // Closing ends the subscription: later messages are not owed to this session.
            if x.subscribed_at != 0 && x.session_end == 0 {
                x.session_end = ctx.cfg.epoch_unix_us.saturating_add(now).max(1);
            }
        }
        self.close_code = code;
        self.pending |= OUT_CLOSE;
        self.phase = Phase::Closing;
        self.deadline = now.saturating_add(ctx.cfg.close_wait);
    }

    fn fail(&mut self, ctx: &mut Ctx<'_>, now: Micros, failure: Failure) {
        ctx.stats.fail(failure);
        if self.phase == Phase::Open {
            ctx.stats.counters.sessions_dropped += 1;
        } else {
            ctx.stats.counters.connect_failed += 1;
        }
        self.outcome = Some(Outcome::Failed(failure));
        self.finish(ctx, now);
    }

    fn finish(&mut self, ctx: &mut Ctx<'_>, now: Micros) {
        if self.phase == Phase::Closing && self.outcome.is_none() {
            // We closed, but no close reply came before EOF, an error or --close-wait.
            ctx.stats.counters.closes_incomplete += 1;
            self.outcome = Some(Outcome::Stopped);
        }
        self.account_unanswered(ctx);
        if let Some(x) = &self.extras {
            if x.subscribed_at != 0 {
                let end = match x.session_end {
                    0 => ctx.cfg.epoch_unix_us.saturating_add(now),
                    e => e,
                };
                ctx.stats
                    .fanout
                    .session(ctx.cfg.channel, x.subscribed_at, end);
            }
        }
        self.phase = Phase::Done;
        self.pending = 0;
        self.deadline = 0;
        self.resp = Vec::new();
        self.ctrl = Vec::new();
        self.pong = Vec::new();
        self.fifo = VecDeque::new();
        self.extras = None;
        self.tls = None;
    }

    /// Every sent message ends as received or unanswered, so sent = received + unanswered.
    fn account_unanswered(&mut self, ctx: &mut Ctx<'_>) {
        ctx.stats.counters.msgs_unanswered += self.fifo.len() as u64;
        self.fifo.clear();
        if let Some(x) = &mut self.extras {
            x.hashes.clear();
        }
    }
}

/// The fan-out fields, parsed once per thread.
fn fields() -> &'static [LatencyField; 3] {
    static FIELDS: std::sync::OnceLock<[LatencyField; 3]> = std::sync::OnceLock::new();
    FIELDS.get_or_init(fanout_fields)
}

/// A subscriber's complete message: a delivery if it carries `pub`, `seq` and `ts`.
fn fan_out(ctx: &mut Ctx<'_>, x: &mut Extras, now: Micros, last_seq: &mut u64) {
    if ctx.cfg.fanout != Some(Fanout::Subscriber) {
        return;
    }
    let [p, q, t] = [x.fan[0].value(), x.fan[1].value(), x.fan[2].value()];
    if let (Some(publisher), Some(seq), Some(ts)) = (p, q, t) {
        *last_seq = (*last_seq).max(seq);
        deliver(ctx, x, now, publisher, seq, ts);
    }
}

/// A subscriber received message `seq` of `publisher`, sent at `ts` (Unix µs).
fn deliver(ctx: &mut Ctx<'_>, x: &mut Extras, now: Micros, publisher: u64, seq: u64, ts: u64) {
    let i = match x.tracks.iter().position(|t| t.publisher == publisher) {
        Some(i) => i,
        None => {
            x.tracks.push(Track {
                publisher,
                last: 0,
                seen: 0,
            });
            x.tracks.len() - 1
        }
    };
    let c = &mut ctx.stats.counters;
    match x.tracks[i].note(seq) {
        Arrival::Duplicate => {
            c.fanout_duplicates += 1;
            return;
        }
        Arrival::Reordered => c.fanout_reordered += 1,
        Arrival::InOrder => {}
    }
    c.fanout_delivered += 1;
    let arrived = ctx.cfg.epoch_unix_us.saturating_add(now);
    let latency = arrived.saturating_sub(ts);
    ctx.stats.record(Hist::WsMsgLatency, latency);
    // Only what was published while subscribed is owed; earlier (and later) ones are a bonus.
    let subscribed = x.subscribed_at != 0 && ts >= x.subscribed_at;
    if subscribed && (x.session_end == 0 || ts < x.session_end) {
        ctx.stats.counters.fanout_delivered_owed += 1;
        ctx.stats.fanout.delivered(publisher, seq, latency);
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
