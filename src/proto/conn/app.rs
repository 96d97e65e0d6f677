//! The application protocol of a session (`--protocol`): its handshake after the upgrade
//! ([`Phase::Joining`]), its heartbeats and acknowledgements, and the envelope of every
//! message both ways. The scenario's messages are wrapped on the way out (an emit, a SEND, a
//! `subscribe` operation) and received messages are unwrapped before the scans see them, so
//! echo matching, `expect`, `latency_from`, checks and fan-out accounting work on payloads
//! exactly as they do over raw WebSocket.

use super::config::App;
use super::{Conn, Ctx, Failure, Hist, Micros, Phase, Recorder, OUT_APP};
use crate::proto::app::{graphql, json, socketio, stomp};
use crate::proto::ws::frame::{OpCode, Violation};
use std::cell::RefCell;
use std::collections::VecDeque;

use super::failure::AppFailure;

thread_local! {
    /// Where a message is wrapped in its envelope before framing; reused.
    static WRAPPED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Acknowledgements awaited per connection, at most; older ones count as unanswered.
pub const MAX_ACKS: usize = 1024;

// Pending application output.
const A_INIT: u8 = 1;
const A_PONG: u8 = 2;
const A_BEAT: u8 = 4;
const A_SUBSCRIBE: u8 = 8;
const A_BYE: u8 = 16;

/// What a message sent through the envelope is, for its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Send {
    /// The `k`th on-open message.
    OnOpen(usize),
    /// A rate-driven message due at `intended` (µs): acknowledged with `--ack`; over GraphQL
    /// an operation whose id is that instant, answered by its first result.
    Rate(Micros),
    /// Anything else (resume, named requests): sent, not tracked.
    Other,
    /// Sent as is, not wrapped (the GraphQL heartbeat is the protocol's own `ping`).
    Raw,
}

/// A session's application-protocol state.
#[derive(Debug, Default)]
pub(super) struct AppState {
    /// The handshake has completed (the session is open).
    ready: bool,
    /// The message being received (its envelope), at most `max_message_size` bytes.
    buf: Vec<u8>,
    /// A payload taken from `buf` is being handed to the scans.
    pub(super) unwrapping: bool,
    out: u8,
    /// Heartbeats and pings owed an answer.
    pongs: u32,
    /// We beat every `beat_every` µs (STOMP), next at `next_beat`.
    beat_every: Micros,
    next_beat: Micros,
    /// The server is dead when nothing arrived for `dead_after` µs since `last_rx` (0: never).
    pub(super) last_rx: Micros,
    dead_after: Micros,
    /// Acknowledgements awaited: id and the message's intended send time, oldest first.
    acks: VecDeque<(u64, Micros)>,
    next_ack: u64,
    /// Acks asked for since the counters were brought up to date, and those given up on
    /// (beyond [`MAX_ACKS`] awaited).
    acks_requested: u64,
    acks_dropped: u64,
    /// Operations sent that are neither on-open nor rate-driven (GraphQL ids `o1`, `o2`, ...).
    next_op: u64,
    /// STOMP: the last message ended with a frame's NUL (an end-of-line alone next is its
    /// trailer, not a heart-beat).
    after_frame: bool,
    /// STOMP subscriptions whose receipt has not come yet, and when they were sent.
    subs_waiting: usize,
    subs_sent_at: Micros,
}

impl AppState {
    /// State for a session that has just upgraded at `now`.
    pub(super) fn upgraded(app: &App, now: Micros) -> Self {
        let mut s = Self {
            last_rx: now,
            ..Self::default()
        };
        // Socket.IO's namespace CONNECT waits for the Engine.IO open packet.
        if !matches!(app, App::SocketIo { .. }) {
            s.out |= A_INIT;
        }
        s
    }

    /// Whether it has output to send.
    pub(super) fn wants(&self) -> bool {
        self.out != 0
    }

    /// Whether acknowledgements are awaited.
    pub(super) fn awaiting(&self) -> bool {
        !self.acks.is_empty()
    }
}

impl Conn {
    /// The upgrade succeeded on a session that speaks an application protocol: its own
    /// handshake comes first.
    pub(super) fn join<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        let a = AppState::upgraded(&ctx.cfg.app, now);
        if a.wants() {
            self.pending |= OUT_APP;
        }
        self.app = Some(Box::new(a));
        self.phase = Phase::Joining;
        self.t_phase = now;
    }

    /// A received data message is over: its envelope is read and acted on; a payload goes on
    /// to the scans as a message of its own.
    pub(super) fn app_message<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
    ) -> Result<(), Violation> {
        let op = self.msg_op.take();
        let Some(mut a) = self.app.take() else {
            return Ok(());
        };
        let buf = std::mem::take(&mut a.buf);
        a.last_rx = now;
        self.app = Some(a);
        if op == Some(OpCode::Text) && ctx.cfg.validate_utf8 && std::str::from_utf8(&buf).is_err() {
            return Err(Violation::InvalidUtf8);
        }
        let r = if op == Some(OpCode::Text) {
            match &ctx.cfg.app {
                App::Raw => Ok(()),
                App::SocketIo { .. } => self.socketio_in(ctx, now, &buf),
                App::Stomp { .. } => self.stomp_in(ctx, now, &buf),
                App::GraphqlWs { .. } => self.graphql_in(ctx, now, &buf),
            }
        } else {
            // Binary messages (Socket.IO attachments) are not payloads we read.
            ctx.stats.counters().app_ignored += 1;
            Ok(())
        };
        if let Some(a) = self.app.as_mut() {
            let mut buf = buf;
            buf.clear();
            // A small buffer is kept for the next message; a large one is not held per idle
            // connection.
            if buf.capacity() <= 1024 && a.buf.capacity() == 0 {
                a.buf = buf;
            }
        }
        r
    }

    /// Hands `body` to the scans as one received data message.
    fn deliver<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        body: &[u8],
    ) -> Result<(), Violation> {
        if let Some(a) = self.app.as_mut() {
            a.unwrapping = true;
        }
        self.begin_message(ctx, OpCode::Text);
        if matches!(ctx.cfg.app, App::GraphqlWs { .. }) {
            // Operations are answered by id, never by an echo of their text.
            self.matching = false;
        }
        let r = self
            .on_data(ctx, body)
            .and_then(|()| self.on_message_end(ctx, now));
        if let Some(a) = self.app.as_mut() {
            a.unwrapping = false;
        }
        r
    }

    /// Collects a received message's bytes (its envelope) while it streams in; over
    /// `max_message_size` the session fails.
    pub(super) fn app_collect(&mut self, max: u64, p: &[u8]) -> Result<(), Violation> {
        if let Some(a) = self.app.as_mut() {
            if (a.buf.len() + p.len()) as u64 > max {
                return Err(Violation::MessageTooBig);
            }
            a.buf.extend_from_slice(p);
        }
        Ok(())
    }

    /// The protocol's handshake completed: the session opens now.
    fn app_ready<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        let Some(a) = self.app.as_mut() else { return };
        if a.ready || self.phase != Phase::Joining {
            return;
        }
        a.ready = true;
        ctx.stats
            .record(Hist::AppConnect, now.saturating_sub(self.t_phase));
        if a.beat_every > 0 {
            a.next_beat = now.saturating_add(a.beat_every);
        }
        if let App::Stomp { subscribe, .. } = &ctx.cfg.app {
            if !subscribe.is_empty() {
                a.out |= A_SUBSCRIBE;
                a.subs_waiting = subscribe.len();
                self.pending |= OUT_APP;
            }
        }
        self.open(ctx, now);
    }

    /// The server ended or refused the session at the protocol level.
    fn app_failed<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros, f: AppFailure) {
        if self.phase == Phase::Closing {
            // The session is already ending (as it began): the server's fault is counted,
            // the ending stays what it was.
            ctx.stats.fail(Failure::App(f));
            return self.finish(ctx, now);
        }
        if self.phase == Phase::Open {
            ctx.stats.close_code(1006);
        }
        self.fail(ctx, now, Failure::App(f));
    }

    fn malformed<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
    ) -> Result<(), Violation> {
        self.app_failed(ctx, now, AppFailure::Malformed);
        Ok(())
    }

    fn socketio_in<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        m: &[u8],
    ) -> Result<(), Violation> {
        let App::SocketIo { namespace, .. } = &ctx.cfg.app else {
            return Ok(());
        };
        let Ok(p) = socketio::parse(m) else {
            return self.malformed(ctx, now);
        };
        let Some(a) = self.app.as_mut() else {
            return Ok(());
        };
        match p {
            socketio::Engine::Open {
                ping_interval_ms,
                ping_timeout_ms,
            } => {
                // The server pings every interval; silence beyond interval + timeout means it
                // is gone (as a Socket.IO client decides).
                a.dead_after = ping_interval_ms
                    .saturating_add(ping_timeout_ms)
                    .saturating_mul(1000);
                a.out |= A_INIT;
                self.pending |= OUT_APP;
            }
            socketio::Engine::Ping(_) => {
                ctx.stats.counters().app_heartbeats_received += 1;
                a.pongs += 1;
                a.out |= A_PONG;
                self.pending |= OUT_APP;
            }
            socketio::Engine::Close => self.app_failed(ctx, now, AppFailure::Closed),
            socketio::Engine::Pong | socketio::Engine::Noop => {
                ctx.stats.counters().app_ignored += 1
            }
            socketio::Engine::Message(p) if p.namespace != namespace.as_bytes() => {
                ctx.stats.counters().app_ignored += 1;
            }
            socketio::Engine::Message(p) => match p.kind {
                socketio::Kind::Connect => self.app_ready(ctx, now),
                socketio::Kind::ConnectError => {
                    // `{"message": …}` (the JS server) or a bare string (python-socketio).
                    let text = json::field(p.data, b"message").unwrap_or(p.data);
                    ctx.stats.app_error(json::plain_str(text).unwrap_or(text));
                    self.app_failed(ctx, now, AppFailure::Refused)
                }
                socketio::Kind::Disconnect => self.app_failed(ctx, now, AppFailure::Disconnected),
                socketio::Kind::Event
                    if self.phase == Phase::Open || self.phase == Phase::Closing =>
                {
                    return self.deliver(ctx, now, p.data)
                }
                socketio::Kind::Ack => self.acked(ctx, now, p.id),
                socketio::Kind::Event | socketio::Kind::Binary => {
                    ctx.stats.counters().app_ignored += 1
                }
            },
        }
        Ok(())
    }

    fn stomp_in<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        m: &[u8],
    ) -> Result<(), Violation> {
        let App::Stomp { client, .. } = &ctx.cfg.app else {
            return Ok(());
        };
        let a = self.app.as_mut();
        if m.iter().all(|&c| c == b'\n' || c == b'\r') {
            // A message of end-of-lines only is a heart-beat, unless it is the end-of-line
            // that follows a frame's NUL, sent on its own (RabbitMQ's web-stomp does so).
            if let Some(a) = a.filter(|a| a.after_frame) {
                a.after_frame = false;
            } else {
                ctx.stats.counters().app_heartbeats_received += 1;
            }
            return Ok(());
        }
        if let Some(a) = a {
            a.after_frame = m.last() == Some(&0);
        }
        for item in stomp::frames(m) {
            if self.phase == Phase::Done {
                break;
            }
            let f = match item {
                Ok(stomp::Item::HeartBeat) => continue,
                Ok(stomp::Item::Frame(f)) => f,
                Err(_) => return self.malformed(ctx, now),
            };
            match f.command {
                stomp::Command::Connected => {
                    let theirs = f
                        .header(b"heart-beat")
                        .and_then(stomp::heart_beat)
                        .unwrap_or((0, 0));
                    let (send, expect) = stomp::negotiate(client.heart_beat, theirs);
                    if let Some(a) = self.app.as_mut() {
                        a.beat_every = send.saturating_mul(1000);
                        // Some slack, as the specification allows: twice the interval.
                        a.dead_after = expect.saturating_mul(2000);
                    }
                    self.app_ready(ctx, now);
                }
                stomp::Command::Message => self.deliver(ctx, now, f.body)?,
                stomp::Command::Receipt => {
                    let id = f.header(b"receipt-id").unwrap_or_default();
                    if id.starts_with(b"sub-") {
                        self.subscribed(ctx, now);
                    } else if id != b"bye" {
                        let id = std::str::from_utf8(id).ok().and_then(|s| s.parse().ok());
                        self.acked(ctx, now, id);
                    }
                }
                stomp::Command::Error => {
                    ctx.stats.app_error(f.header(b"message").unwrap_or(f.body));
                    let refused = self.phase == Phase::Joining;
                    let f = if refused {
                        AppFailure::Refused
                    } else {
                        AppFailure::Error
                    };
                    self.app_failed(ctx, now, f);
                }
            }
        }
        Ok(())
    }

    fn graphql_in<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        m: &[u8],
    ) -> Result<(), Violation> {
        let Ok(msg) = graphql::parse(m) else {
            return self.malformed(ctx, now);
        };
        match msg {
            graphql::Server::Ack => self.app_ready(ctx, now),
            graphql::Server::Ping => {
                ctx.stats.counters().app_heartbeats_received += 1;
                if let Some(a) = self.app.as_mut() {
                    a.pongs += 1;
                    a.out |= A_PONG;
                    self.pending |= OUT_APP;
                }
            }
            graphql::Server::Pong => {
                // Answers our heartbeat (`--heartbeat-interval` sends the protocol's ping).
                if let Some(x) = self.extras.as_mut().filter(|_| ctx.cfg.heartbeat.is_some()) {
                    if x.hb_sent != 0 {
                        ctx.stats
                            .record(Hist::WsHeartbeat, now.saturating_sub(x.hb_sent));
                        ctx.stats.counters().heartbeats_answered += 1;
                        x.hb_sent = 0;
                    }
                }
            }
            graphql::Server::Next { id, payload } => {
                ctx.stats.counters().graphql_next += 1;
                if !self.answered(ctx, now, id) {
                    return self.deliver(ctx, now, payload);
                }
            }
            graphql::Server::Error { id, payload } => {
                ctx.stats.counters().graphql_errors += 1;
                // The first GraphQL error's message.
                let text = json::first_element(payload)
                    .and_then(|e| json::field(e, b"message"))
                    .unwrap_or(payload);
                ctx.stats.app_error(json::plain_str(text).unwrap_or(text));
                ctx.stats.fail(Failure::App(AppFailure::OperationError));
                self.answered(ctx, now, id);
            }
            graphql::Server::Complete { .. } => ctx.stats.counters().graphql_complete += 1,
        }
        Ok(())
    }

    /// A GraphQL result or error for operation `id`: when it is a rate-driven operation
    /// still awaiting its answer, it is answered now (round trip from its intended send
    /// time, which is its id). Returns whether it was one of those.
    fn answered<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros, id: &[u8]) -> bool {
        let Some(t) = json::uint(id) else {
            return false;
        };
        let Some(i) = self.fifo.iter().position(|&f| f == t) else {
            // A later result of an operation already answered.
            return true;
        };
        self.fifo.remove(i);
        if let Some(x) = self.extras.as_mut() {
            // Templated operations keep their hashes in step with `fifo`.
            if i < x.hashes.len() {
                x.hashes.remove(i);
            }
        }
        ctx.stats.counters().msgs_received += 1;
        ctx.stats.record(Hist::WsMsgRtt, now.saturating_sub(t));
        if self.stopping && self.nothing_awaited(ctx.cfg) {
            self.begin_close(ctx, now, 1000);
        }
        true
    }

    /// A Socket.IO ack or a STOMP receipt for message `id`.
    fn acked<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros, id: Option<u64>) {
        let Some(a) = self.app.as_mut() else { return };
        let found = id.and_then(|id| a.acks.iter().position(|&(i, _)| i == id));
        match found.and_then(|i| a.acks.remove(i)) {
            Some((_, sent)) => {
                ctx.stats.counters().app_acks_received += 1;
                ctx.stats.record(Hist::AppAck, now.saturating_sub(sent));
                if self.stopping && self.nothing_awaited(ctx.cfg) {
                    // The drain waited for this last acknowledgement.
                    self.begin_close(ctx, now, 1000);
                }
            }
            None => ctx.stats.counters().app_ignored += 1,
        }
    }

    /// Whether acknowledgements are still awaited: a graceful stop waits for them (a STOMP
    /// broker drops the receipts still owed when DISCONNECT comes).
    pub(super) fn app_awaiting(&self) -> bool {
        self.app.as_ref().is_some_and(|a| a.awaiting())
    }

    /// Whether a stopping session has nothing left to wait for: no echo, no reply, no
    /// acknowledgement, and it is no fan-out subscriber (those wait out the drain).
    pub(super) fn nothing_awaited(&self, cfg: &super::ConnConfig) -> bool {
        self.fifo.is_empty()
            && !self.app_awaiting()
            && !self.extras.as_ref().is_some_and(|x| x.rules.awaiting())
            && cfg.fanout != Some(super::Fanout::Subscriber)
    }

    /// Brings the acknowledgement counters up to date with what was sent.
    pub(super) fn count_app<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>) {
        if let Some(a) = self.app.as_mut() {
            let c = ctx.stats.counters();
            c.app_acks_requested += std::mem::take(&mut a.acks_requested);
            c.app_acks_unanswered += std::mem::take(&mut a.acks_dropped);
        }
    }

    /// A STOMP subscription's receipt: once all have come, the session is subscribed.
    fn subscribed<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        let Some(a) = self.app.as_mut() else { return };
        if a.subs_waiting == 0 {
            return;
        }
        a.subs_waiting -= 1;
        if a.subs_waiting > 0 {
            return;
        }
        ctx.stats
            .record(Hist::WsSubscribeAck, now.saturating_sub(a.subs_sent_at));
        ctx.stats.counters().expects_met += 1;
        if let Some(x) = self.extras.as_mut() {
            if x.subscribed_at == 0 && ctx.cfg.fanout == Some(super::Fanout::Subscriber) {
                x.subscribed_at = ctx.epoch_unix_us.saturating_add(now);
            }
        }
    }

    /// Whether the session's subscription is confirmed by the protocol itself (STOMP
    /// receipts): fan-out subscribers then count from the receipt, not from the open.
    pub(super) fn subscribes_by_receipt(cfg: &super::ConnConfig) -> bool {
        matches!(&cfg.app, App::Stomp { subscribe, .. } if !subscribe.is_empty())
    }

    /// Frames `payload` (already rendered) as the protocol's message: an emit, a SEND, an
    /// operation; raw WebSocket without a protocol.
    pub(super) fn frame_out(
        &mut self,
        cfg: &super::ConnConfig,
        kind: Send,
        opcode: OpCode,
        payload: &[u8],
        mask: [u8; 4],
        out: &mut Vec<u8>,
    ) {
        let a = match self.app.as_mut() {
            Some(a) if kind != Send::Raw => a,
            _ => {
                return super::deflate::frame_data(
                    self.deflate.as_deref_mut(),
                    out,
                    opcode,
                    payload,
                    mask,
                )
            }
        };
        let ack = match kind {
            Send::Rate(t) if cfg.app.acks() => {
                a.next_ack += 1;
                if a.acks.len() >= MAX_ACKS {
                    a.acks.pop_front();
                    a.acks_dropped += 1;
                }
                a.acks.push_back((a.next_ack, t));
                a.acks_requested += 1;
                Some(a.next_ack)
            }
            _ => None,
        };
        let (prefix, n) = match kind {
            Send::OnOpen(k) => ("s", k as u64),
            Send::Rate(t) => ("", t),
            _ => {
                a.next_op += 1;
                ("o", a.next_op)
            }
        };
        WRAPPED.with(|w| {
            let mut w = w.borrow_mut();
            w.clear();
            match &cfg.app {
                App::Raw => w.extend_from_slice(payload),
                App::SocketIo { namespace, .. } => socketio::event(&mut w, namespace, ack, payload),
                App::Stomp { destination, .. } => {
                    stomp::send(&mut w, destination.as_deref().unwrap_or("/"), ack, payload)
                }
                App::GraphqlWs { .. } => graphql::subscribe(&mut w, prefix, n, payload),
            }
            super::deflate::frame_data(self.deflate.as_deref_mut(), out, OpCode::Text, &w, mask);
        });
    }
}

impl Conn {
    /// Appends the protocol's own output: its handshake, answers to the server's pings,
    /// heart-beats, subscriptions, and its goodbye before our close frame.
    pub(super) fn transmit_app<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        out: &mut Vec<u8>,
    ) {
        let Some(mut a) = self.app.take() else { return };
        let mut flags = std::mem::take(&mut a.out);
        if self.phase == Phase::Closing && self.pending & super::OUT_CLOSE == 0 {
            // Our close frame is out: nothing may follow it (RFC 6455 §5.5.1).
            flags = 0;
            a.pongs = 0;
        }
        WRAPPED.with(|w| {
            let mut w = w.borrow_mut();
            let mut emit = |w: &mut Vec<u8>, this: &mut Self, rng: &mut crate::proto::rng::Rng| {
                super::deflate::frame_data(
                    this.deflate.as_deref_mut(),
                    out,
                    OpCode::Text,
                    w,
                    rng.mask(),
                );
                w.clear();
            };
            w.clear();
            if flags & A_INIT != 0 {
                match &ctx.cfg.app {
                    App::Raw => {}
                    App::SocketIo {
                        namespace, auth, ..
                    } => socketio::connect(&mut w, namespace, auth.as_deref()),
                    App::Stomp { client, .. } => stomp::connect(&mut w, client),
                    App::GraphqlWs { init } => graphql::init(&mut w, init.as_deref()),
                }
                emit(&mut w, self, ctx.rng);
            }
            if flags & A_PONG != 0 && !self.got_close {
                for _ in 0..std::mem::take(&mut a.pongs) {
                    match &ctx.cfg.app {
                        App::SocketIo { .. } => socketio::pong(&mut w, b""),
                        _ => graphql::pong(&mut w),
                    }
                    emit(&mut w, self, ctx.rng);
                    ctx.stats.counters().app_heartbeats_sent += 1;
                }
            }
            if flags & A_BEAT != 0 && self.phase == Phase::Open {
                w.push(b'\n');
                emit(&mut w, self, ctx.rng);
                ctx.stats.counters().app_heartbeats_sent += 1;
            }
            if flags & A_SUBSCRIBE != 0 && self.phase == Phase::Open {
                if let App::Stomp { subscribe, .. } = &ctx.cfg.app {
                    a.subs_sent_at = now;
                    for (i, d) in subscribe.iter().enumerate() {
                        let receipt = format!("sub-{i}");
                        stomp::subscribe(&mut w, i as u64, d, Some(&receipt));
                        emit(&mut w, self, ctx.rng);
                    }
                }
            }
            if flags & A_BYE != 0 {
                match &ctx.cfg.app {
                    App::SocketIo { namespace, .. } => socketio::disconnect(&mut w, namespace),
                    App::Stomp { .. } => stomp::disconnect(&mut w, "bye"),
                    _ => {}
                }
                if !w.is_empty() {
                    emit(&mut w, self, ctx.rng);
                }
            }
        });
        self.app = Some(a);
    }

    /// Our close is beginning: the protocol says goodbye first (Socket.IO leaves its
    /// namespace, STOMP disconnects).
    pub(super) fn app_bye(&mut self) {
        if self.got_close {
            // The server closed first: the session is over for it already.
            return;
        }
        if let Some(a) = self.app.as_mut().filter(|a| a.ready) {
            a.out |= A_BYE;
            self.pending |= OUT_APP;
        }
    }

    /// The protocol's timers: the server's silence, our heart-beats.
    pub(super) fn app_timer<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        let Some(a) = self.app.as_mut() else { return };
        if matches!(self.phase, Phase::Joining | Phase::Open)
            && a.dead_after > 0
            && now >= a.last_rx.saturating_add(a.dead_after)
        {
            return self.fail(ctx, now, Failure::HeartbeatTimeout);
        }
        if self.phase == Phase::Open && a.beat_every > 0 && a.next_beat != 0 && now >= a.next_beat {
            a.out |= A_BEAT;
            self.pending |= OUT_APP;
            a.next_beat = a.next_beat.saturating_add(a.beat_every).max(now + 1);
        }
    }

    /// The next instant [`Self::app_timer`] has work.
    pub(super) fn app_timeout(&self) -> Option<Micros> {
        let a = self.app.as_ref()?;
        let mut t = u64::MAX;
        if matches!(self.phase, Phase::Joining | Phase::Open) && a.dead_after > 0 {
            t = t.min(a.last_rx.saturating_add(a.dead_after));
        }
        if self.phase == Phase::Open && a.beat_every > 0 && a.next_beat != 0 {
            t = t.min(a.next_beat);
        }
        (t != u64::MAX).then_some(t)
    }

    /// The session is over: acknowledgements still awaited are unanswered.
    pub(super) fn app_account<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>) {
        self.count_app(ctx);
        if let Some(a) = self.app.as_mut() {
            ctx.stats.counters().app_acks_unanswered += a.acks.len() as u64;
            a.acks.clear();
        }
    }
}
