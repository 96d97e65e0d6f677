//! The per-connection state machine, sans-IO.
//!
//! `Connecting → [TlsHandshake →] Upgrading → Open → Closing → Done`. With TLS, bytes in and out
//! pass through rustls (sans-IO as well): the backend only ever sees ciphertext.
//!
//! Time is injected (`now`, µs since the shard's epoch); nothing here reads a clock or makes a
//! syscall. Measurements go into the shard's [`Recorder`], which the driver hands over in
//! [`Ctx`] with everything else only a shard knows (its TLS client, epoch, PRNG); what the
//! driver must act on comes back as [`Event`]s.
//!
//! The pieces, one concern per file: [`config`] (what every connection does), [`failure`]
//! (why one failed), [`record`] (what it measures, and the interface it records through),
//! [`event`] (what it tells its driver), and the state machine's parts: `recv` (upgrade
//! response and frames in), `transmit` (bytes out), `tls` (the TLS phase and handshake
//! cycles) and `fanout` (subscribers' deliveries).

mod app;
pub mod config;
mod deflate;
mod ending;
pub mod event;
pub mod failure;
mod fanout;
pub mod record;
mod recv;
pub mod rules;
mod tls;
mod transmit;

pub use app::MAX_ACKS;
pub use config::{App, ConnConfig, Fanout, Heartbeat, Message, Mode};
pub use event::{Ending, Event};
pub use failure::{AppFailure, Failure};
pub use fanout::{fanout_fields, TRACKED_PUBLISHERS};
pub use record::{Counters, Hist, Recorder};
pub use rules::{Check, ReplyRule, Request, StreamRule};

use self::fanout::Tracks;
use self::tls::TlsConn;
use crate::proto::inspect::FieldScan;
use crate::proto::rng::Rng;
use crate::proto::template::Fnv;
use crate::proto::tls::{TlsClient, TlsFailure};
use crate::proto::ws::frame::{FrameDecoder, FrameHeader, OpCode, Utf8Validator};
use crate::proto::ws::handshake;
use std::collections::VecDeque;

/// Microseconds since the shard's epoch.
pub type Micros = u64;

/// An attempt abandoned at the end of the run after waiting this long (or half its connect
/// timeout, if shorter) was cut short, not caught in end-of-run churn: `abandoned_stalled`.
pub const STALLED_AFTER: Micros = 1_000_000;

/// What a handler needs besides the connection: the run's config and what only the shard
/// knows at run time (its recorder, PRNG, TLS client and epoch), lent for one call.
#[derive(Debug)]
pub struct Ctx<'a, R> {
    /// The config of the connection's scenario (`RunPlan::conn`), shared by all its connections on
    /// the shard.
    pub cfg: &'a ConnConfig,
    /// Where the shard's measurements go (`metrics::ShardStats` in a run).
    pub stats: &'a mut R,
    /// The shard's PRNG: frame masks, `Sec-WebSocket-Key` nonces, the first send's offset and
    /// template randomness (not cryptographic).
    pub rng: &'a mut Rng,
    /// The shard's TLS client (wss://), shared by its connections; `None` for ws://.
    pub tls: Option<&'a TlsClient>,
    /// Wall clock at the shard's epoch, Unix µs: makes `now` comparable with server time
    /// (and, being one for all shards, one shard's stamps with another's).
    pub epoch_unix_us: u64,
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
    /// Upgraded; the application protocol's handshake (`--protocol`) is under way.
    Joining,
    /// Upgraded (the 101 checked) and, with `--protocol`, joined: messages, pings and heartbeats flow until a close begins.
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
    /// Failed, before the session opened (counted in `connect_failed`) or after (a dropped
    /// session), with the cause.
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
    tracks: Tracks,
    /// The `--last-seq-field` (`seq`) of the message being received (for `{{last_seq}}`).
    seq_scan: FieldScan,
    /// Heartbeat: when the next is due, and when the unanswered one was sent (0: none).
    hb_next: Micros,
    hb_sent: Micros,
    /// Named requests, checks and streams (`ConnConfig::inspects`): their state, and the
    /// message being received (its first `rules::INSPECT_MAX` bytes).
    rules: rules::RuleState,
    msg: Vec<u8>,
    /// Requests due in this transmit (reused).
    due: Vec<(u16, Micros)>,
}

impl Extras {
    /// After a message was inspected: a buffer grown for a large one is not kept.
    fn release_msg(&mut self) {
        if self.msg.capacity() > 4096 {
            self.msg = Vec::new();
        }
    }
}

// Pending output flags.
const OUT_REQUEST: u8 = 1;
const OUT_ON_OPEN: u8 = 2;
const OUT_PONG: u8 = 4;
const OUT_CLOSE: u8 = 8;
const OUT_PING: u8 = 16;
const OUT_RESUME: u8 = 32;
const OUT_HEARTBEAT: u8 = 64;
const OUT_APP: u8 = 128;

/// One WebSocket client connection.
///
/// A driver (a shard over its I/O backend, or a test on a fake clock) owns the socket and the
/// clock, and drives each connection in this order:
///
/// 1. [`Conn::new`] when it submits the TCP connect (then [`Conn::set_id`], and
///    [`Conn::resume_from`] for a replacement that resumes a lost session);
/// 2. feed what happened: [`Conn::handle_connected`], [`Conn::handle_recv`],
///    [`Conn::handle_eof`], [`Conn::handle_error`], [`Conn::handle_timer`], or what the driver
///    decided: [`Conn::stop`], [`Conn::abort`], [`Conn::storm_drop`];
/// 3. [`Conn::poll_event`] until it returns `None`: [`Event::SessionOpened`], and last
///    [`Event::Ended`], after which the driver closes the socket and drops the connection;
/// 4. when no send is in flight and [`Conn::wants_transmit`], [`Conn::poll_transmit`] to
///    collect the bytes to write (then poll events again: a TLS cycle may end with its last
///    write), and [`Conn::handle_sent`] once they are all written (what fell due meanwhile
///    waited for a backlogged socket: see [`Conn::handle_sent`]);
/// 5. re-arm its timer with [`Conn::poll_timeout`].
///
/// Every handler takes `now` and a [`Ctx`]; measurements go straight into the context's
/// [`Recorder`]. Nothing here blocks, reads a clock or allocates in the steady state.
#[derive(Debug)]
pub struct Conn {
    phase: Phase,
    pending: u8,
    stopping: bool,
    got_close: bool,
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
    /// The bytes of the last [`Conn::poll_transmit`] are still being written (the driver has
    /// not yet called [`Conn::handle_sent`]), and when the last write completed: what was due
    /// in between waited for a backlogged socket.
    writing: bool,
    written_at: Micros,
    next_ping_at: Micros,
    ping_sent_at: Micros,
    key: [u8; 24],
    /// Partial upgrade response; empty (unallocated) outside a split response.
    resp: Vec<u8>,
    dec: FrameDecoder,
    /// permessage-deflate, once agreed in the upgrade.
    deflate: Option<Box<deflate::Deflate>>,
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
    /// `--stop-reading-after` has passed: bytes are no longer read (the driver stops
    /// receiving; any that still arrive are ignored).
    reads_stopped: bool,
    /// Whether it opened, whether a storm took it, and the events not yet polled, in one
    /// byte (`event::{OPENED, STORM_DROPPED, EV_*}`).
    marks: u8,
    /// State of the optional features (latency scan, expected reply, lifetime), boxed so
    /// that connections without them stay small.
    extras: Option<Box<Extras>>,
    /// TLS state (wss://), boxed: most of a TLS connection's memory, dropped when it ends.
    tls: Option<Box<TlsConn>>,
    /// The application protocol's state (`--protocol`), from the upgrade on.
    app: Option<Box<app::AppState>>,
}

impl Conn {
    /// A connection whose TCP connect the backend submits at `now`. The upgrade request is
    /// ready at once, so a backend may link its send to the connect.
    pub fn new<R: Recorder>(ctx: &mut Ctx<'_, R>, now: Micros) -> Self {
        ctx.stats.counters().attempts += 1;
        let upgrade = !matches!(ctx.cfg.mode, Mode::Handshake { upgrade: false, .. });
        let mut c = Self {
            phase: Phase::Connecting,
            pending: if upgrade { OUT_REQUEST } else { 0 },
            stopping: false,
            got_close: false,
            outcome: None,
            close_code: 1000,
            t_start: now,
            t_phase: now,
            deadline: now.saturating_add(ctx.cfg.connect_timeout),
            next_msg_at: 0,
            writing: false,
            written_at: 0,
            next_ping_at: 0,
            ping_sent_at: 0,
            key: handshake::make_key(ctx.rng.bytes16()),
            resp: Vec::new(),
            dec: FrameDecoder::new(),
            deflate: None,
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
            reads_stopped: false,
            marks: 0,
            extras: None,
            tls: None,
            app: None,
        };
        c.start_tls(ctx, now);
        c
    }

    /// The phase the connection is in now; [`Phase::Done`] once it has ended.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the connection is finished and its socket can be closed.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// How it ended, once done (a driver gets it from [`Event::Ended`]).
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// TCP connected: the upgrade request goes out now (if not already linked to the connect).
    pub fn handle_connected<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
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
    pub fn handle_error<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        failure: Failure,
    ) {
        // ETIMEDOUT on an established connection is a retransmission timeout, not a connect one.
        let failure = match (failure, self.phase) {
            (
                Failure::ConnectTimeout,
                Phase::TlsHandshake | Phase::Upgrading | Phase::Joining | Phase::Open,
            ) => Failure::TcpTimeout,
            (f, _) => f,
        };
        match self.phase {
            Phase::Done => {}
            // The close handshake is already underway; an error now only ends it early.
            Phase::Closing => self.finish(ctx, now),
            Phase::Open => {
                // Lost without a close frame, like an EOF: 1006 to whoever counts codes.
                ctx.stats.close_code(1006);
                self.fail(ctx, now, failure);
            }
            // A handshake cycle waiting for its ticket: the handshake itself completed.
            Phase::TlsHandshake if self.tls.as_ref().is_some_and(|t| t.done) => {
                self.complete(ctx, now);
                self.finish(ctx, now);
            }
            _ => self.fail(ctx, now, failure),
        }
    }

    /// The bytes of the last [`Conn::poll_transmit`] are all written (the socket took them).
    ///
    /// Rate-driven messages that fell due while they were being written and are late by more
    /// than one message interval (or timer step) when the next transmit comes are not sent:
    /// they count as `msgs_unsent` (the send backlog) and the schedule keeps its grid. Those
    /// late by less go out late, stamped with their intended time. When sending ends (stop,
    /// close, failure), the messages still owed to a backlogged socket count as unsent too.
    pub fn handle_sent(&mut self, now: Micros) {
        self.writing = false;
        self.written_at = now;
    }

    /// The peer closed its side (recv returned 0).
    pub fn handle_eof<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        match self.phase {
            Phase::TlsHandshake if self.tls.as_ref().is_some_and(|t| t.done) => {
                // Closed while we waited for a ticket: the handshake itself completed.
                self.complete(ctx, now);
                self.finish(ctx, now);
            }
            // The server asked for a client certificate, got none and hung up (with TLS 1.3
            // that can come after our side of the handshake completed, while upgrading).
            Phase::TlsHandshake | Phase::Upgrading
                if self.tls.as_ref().is_some_and(|t| t.cert_requested) =>
            {
                self.fail(ctx, now, Failure::Tls(TlsFailure::ClientCertRequired))
            }
            Phase::TlsHandshake => self.fail(ctx, now, Failure::Tls(TlsFailure::Closed)),
            Phase::Connecting | Phase::Upgrading | Phase::Joining => {
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

    /// Feeds bytes read from the socket (TLS records over wss://, decrypted here): the upgrade
    /// response, then frames. What they call for (a pong, a close reply) waits for
    /// [`Conn::poll_transmit`].
    pub fn handle_recv<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros, data: &[u8]) {
        if self.reads_stopped {
            // Already read by the kernel before the driver stopped receiving: not consumed.
            return;
        }
        ctx.stats.counters().bytes_received += data.len() as u64;
        match self.tls.take() {
            None => self.recv_plain(ctx, now, data),
            Some(t) => self.recv_tls(ctx, now, t, data),
        }
    }

    /// A deadline passed (or may have): send due messages and pings, enforce timeouts.
    pub fn handle_timer<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        if self.deadline != 0 && now >= self.deadline {
            match self.phase {
                Phase::Connecting => return self.fail(ctx, now, Failure::ConnectTimeout),
                Phase::TlsHandshake if self.tls.as_ref().is_some_and(|t| t.done) => {
                    ctx.stats.counters().tls_ticket_waits_expired += 1;
                    if let Some(c) = ctx.tls {
                        c.wait_expired();
                    }
                    return self.complete(ctx, now);
                }
                Phase::TlsHandshake => {
                    return self.fail(ctx, now, Failure::Tls(TlsFailure::Timeout))
                }
                Phase::Upgrading => return self.fail(ctx, now, Failure::UpgradeTimeout),
                Phase::Joining => return self.fail(ctx, now, Failure::App(AppFailure::Timeout)),
                // Drain time is over: whatever is unanswered stays so.
                Phase::Open => return self.begin_close(ctx, now, 1000),
                Phase::Closing => return self.finish(ctx, now),
                Phase::Done => return,
            }
        }
        if self.app.is_some() {
            self.app_timer(ctx, now);
            if self.phase == Phase::Done {
                return;
            }
        }
        if let (Phase::Open, false, Some(after)) =
            (self.phase, self.reads_stopped, ctx.cfg.stop_reading_after)
        {
            if now >= self.t_phase.saturating_add(after) {
                self.reads_stopped = true;
                ctx.stats.counters().reads_stopped += 1;
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
                ctx.stats.counters().sessions_retired += 1;
                let drain_until = now.saturating_add(ctx.cfg.close_wait);
                self.stop(ctx, now, drain_until);
                return;
            }
            if self.phase == Phase::Open && ctx.cfg.inspects() {
                x.rules.expire(ctx, now);
                let subscriber = ctx.cfg.fanout == Some(Fanout::Subscriber);
                let acks = self.app.as_ref().is_some_and(|a| a.awaiting());
                if self.stopping
                    && !x.rules.awaiting()
                    && self.fifo.is_empty()
                    && !subscriber
                    && !acks
                {
                    return self.begin_close(ctx, now, 1000);
                }
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
                    // One heartbeat outstanding at a time, like pings: one due while the last
                    // is unanswered or still unwritten is skipped, counted.
                    if x.hb_sent == 0 && self.pending & OUT_HEARTBEAT == 0 {
                        self.pending |= OUT_HEARTBEAT;
                    } else {
                        ctx.stats.counters().heartbeats_skipped += 1;
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
            // A ping due while the last is unanswered or still unwritten is skipped, counted.
            if self.ping_sent_at == 0 && self.pending & OUT_PING == 0 {
                self.pending |= OUT_PING;
            } else {
                ctx.stats.counters().pings_skipped += 1;
            }
            self.next_ping_at = self.next_ping_at.saturating_add(ctx.cfg.ping_interval);
            // Pings due while this timer could not fire (the driver arms none while a send is
            // in flight): skipped, counted, and the schedule keeps its grid.
            self.skip_due_pings(ctx, now);
        }
    }

    /// Counts the ping slots due by `now` that were never sent as `pings_skipped`, and moves
    /// the next one past `now` on the same grid.
    fn skip_due_pings<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        let iv = ctx.cfg.ping_interval;
        if iv == 0 || self.next_ping_at == 0 || ctx.cfg.on_grid(self.next_ping_at) > now {
            return;
        }
        let missed = (now - self.next_ping_at) / iv + 1;
        ctx.stats.counters().pings_skipped += missed;
        self.next_ping_at = self.next_ping_at.saturating_add(missed * iv);
    }

    /// Whether the driver should keep receiving: false once `--stop-reading-after` has
    /// passed. A driver then stops its receive and watches only for the socket's error or
    /// hang-up ([`Conn::handle_error`], [`Conn::handle_eof`]).
    pub fn is_reading(&self) -> bool {
        !self.reads_stopped
    }

    /// Sets the run-wide connection number (`{{conn_id}}`).
    pub fn set_id(&mut self, id: u64) {
        self.id = id;
    }

    /// This connection replaces a lost session whose highest `seq` was `last_seq`: it sends
    /// `on_reconnect` (with `{{last_seq}}`) after `on_open`. Call right after [`Conn::new`];
    /// should the connection fail before it opens, its [`Ending::resume`] hands the session on.
    pub fn resume_from(&mut self, last_seq: u64) {
        self.resuming = true;
        self.last_seq = last_seq;
    }

    /// The highest `seq` received so far (a driver gets it from [`Ending::resume`]).
    #[cfg(test)]
    pub(crate) fn last_seq(&self) -> u64 {
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
            if self.phase == Phase::Open && cfg.inspects() {
                if let Some(d) = x.rules.next_due(cfg, self.stopping) {
                    t = t.min(d);
                }
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
        if let (Phase::Open, false, Some(after)) =
            (self.phase, self.reads_stopped, cfg.stop_reading_after)
        {
            t = t.min(self.t_phase.saturating_add(after));
        }
        if let Some(a) = self.app_timeout() {
            t = t.min(a);
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
}

#[cfg(test)]
mod tests;
