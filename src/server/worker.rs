//! One event-loop thread of the gateway: its own `SO_REUSEPORT` listener, a `mio::Poll`, a slab
//! of connections keyed by `Token`, the channel membership of those connections, and the timers
//! (fan-out publish ticks, market-data stream ticks, `close_after` closes, handshake timeouts).
//!
//! The loop sleeps in `poll` until a socket is ready, the [`mio::Waker`] fires (another worker
//! relayed a publish, or shutdown), or a timer is due; an idle echo gateway does not wake up at
//! all. One turn: drive the ready connections (carrying out their channel requests right after
//! each), deliver the publishes other workers relayed, send due fan-out and stream ticks, close
//! due connections, then flush every connection that got deliveries, once each.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use tungstenite::{Message, Utf8Bytes};

use super::caps::Bucket;
use super::channel::{ChannelOp, Channels, Relayed};
use super::conn::{Conn, Delivery, DriveCtx, KeepaliveStep, OpenConn};
use super::feed::Feeds;
use super::{PublishClock, ServeConfig, Shared};

/// The listener's token.
pub(super) const LISTENER: Token = Token(0);
/// The waker's token (relayed publishes, shutdown).
pub(super) const WAKER: Token = Token(1);
/// Connection `slot` has token `FIRST_CONN + slot`.
const FIRST_CONN: usize = 2;
/// Connections accepted per turn before the loop serves the others.
const ACCEPT_BATCH: usize = 256;
/// Pause before accepting again after `accept` failed (usually EMFILE: out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Ticks sent back to back when the loop fell behind the publish schedule; older ones are
/// skipped (clients see the gap as loss).
const MAX_CATCH_UP: u32 = 64;
/// Relayed publishes delivered per turn before the loop serves its sockets again.
const RELAY_BATCH: usize = 4096;

/// Whether the listener needs attention without a new readiness event.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AcceptState {
    /// Drained to `WouldBlock`; the next connection raises an event.
    Idle,
    /// Stopped after a full batch; continue on the next turn.
    More,
    /// `accept` failed; retry at this instant.
    Backoff(Instant),
}

/// The fan-out publisher of one worker.
struct Publisher {
    /// Broadcasts per second (> 0).
    rate: f64,
    /// The next tick to send; meaningful while the worker has open connections.
    next_k: u64,
}

/// One event-loop thread.
pub(super) struct Worker {
    /// The epoll instance.
    poll: Poll,
    /// This thread's `SO_REUSEPORT` listener.
    listener: TcpListener,
    /// Connections by slot; `None` = free.
    slots: Vec<Option<Conn>>,
    /// Generation of each slot, bumped when a connection takes it: tells a handshake deadline
    /// of the connection it was set for from a later one in the same slot.
    generations: Vec<u32>,
    /// Close connections not upgraded this long after they were accepted.
    handshake_timeout: Duration,
    /// Handshake deadlines (deadline, slot, generation), oldest first (deadlines only grow);
    /// entries of connections that upgraded or closed in time are skipped when due.
    handshake_queue: VecDeque<(Instant, usize, u32)>,
    /// Free slots, reused last-in first-out.
    free: Vec<usize>,
    /// Counters and per-connection settings.
    ctx: DriveCtx,
    /// Stop flag, publish clock, inboxes and the delivery count shared by all threads.
    shared: Arc<Shared>,
    /// This worker's index in `shared.inboxes`.
    index: usize,
    /// Publishes relayed to this worker by the others.
    inbox: mpsc::Receiver<Relayed>,
    /// The inbox was not drained to empty last turn.
    inbox_more: bool,
    /// Fan-out state; `None` in echo-only mode.
    publisher: Option<Publisher>,
    /// Market-data streams of this thread's connections; `None` when `stream_rate` is 0.
    feeds: Option<Feeds>,
    /// Fault injection: every Nth channel delivery (gateway-wide) is dropped; 0 = off.
    drop_every: u64,
    /// Close each connection this long after it opened, with this code; `None` = never.
    close_after: Option<(Duration, u16)>,
    /// Connections to close for `close_after`, oldest first (deadlines only grow).
    close_queue: VecDeque<(Instant, usize)>,
    /// Channel membership of this thread's connections.
    channels: Channels,
    /// Channel requests of the connection being driven (kept for its allocation).
    ops: Vec<ChannelOp>,
    /// Slots with buffered deliveries, flushed at the end of the turn.
    unflushed: Vec<usize>,
    /// Open connections whose socket failed while the loop was iterating; dropped after it.
    failed: Vec<usize>,
    /// Server pings: interval and timeout; `None` = no pings.
    keepalive: Option<(Duration, Duration)>,
    /// When the next keepalive sweep is due (while connections are open).
    next_sweep: Option<Instant>,
    /// Slow consumers: reset a client whose deliveries have overflowed for this long;
    /// `None` = only drop the deliveries.
    slow_consumer: Option<Duration>,
    /// Open connections to reset, and why (true: keepalive gave up; false: slow consumer);
    /// reset after the loop.
    aborting: Vec<(usize, bool)>,
    /// Open WebSocket connections of this thread.
    open: usize,
    /// Whether to accept again without a readiness event: after a full batch (next turn) or a
    /// failed `accept` (after the backoff); it also bounds how long `poll` may sleep.
    accept: AcceptState,
    /// `--max-accept-rate`: this thread's share; `None` = accept as fast as they come.
    accept_rate: Option<Bucket>,
    /// `--max-msg-rate`: connections that stopped reading for the rate, driven again in
    /// order when it allows (each once: its `throttled` flag is set while it is here).
    throttled: VecDeque<usize>,
}

impl Worker {
    /// Creates worker `index` around a poll that already has `listener` (token [`LISTENER`])
    /// and its waker (token [`WAKER`], in `shared.inboxes[index]`) registered.
    pub(super) fn new(
        poll: Poll,
        listener: TcpListener,
        ctx: DriveCtx,
        shared: Arc<Shared>,
        (index, inbox): (usize, mpsc::Receiver<Relayed>),
        cfg: &ServeConfig,
    ) -> Self {
        let publisher = (cfg.publish_rate > 0.0).then_some(Publisher {
            rate: cfg.publish_rate,
            next_k: 1,
        });
        Self {
            poll,
            listener,
            slots: Vec::new(),
            generations: Vec::new(),
            handshake_timeout: cfg.handshake_timeout,
            handshake_queue: VecDeque::new(),
            free: Vec::new(),
            ctx,
            shared,
            index,
            inbox,
            inbox_more: false,
            publisher,
            feeds: Feeds::new(cfg.stream_rate, cfg.stream_gap_every),
            drop_every: cfg.drop_every,
            close_after: cfg.close_after,
            close_queue: VecDeque::new(),
            channels: Channels::default(),
            ops: Vec::new(),
            unflushed: Vec::new(),
            failed: Vec::new(),
            keepalive: cfg.keepalive,
            next_sweep: None,
            slow_consumer: cfg.slow_consumer_timeout,
            aborting: Vec::new(),
            open: 0,
            accept: AcceptState::Idle,
            accept_rate: (cfg.max_accept_rate > 0.0)
                .then(|| Bucket::new(cfg.max_accept_rate / cfg.threads as f64)),
            throttled: VecDeque::new(),
        }
    }

    /// Runs until the shared stop flag is set (and the waker fired).
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        while !self.shared.stop.load(Acquire) {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // epoll_wait only fails on programming errors (EBADF, EINVAL, EFAULT).
                eprintln!("serve: event loop stopped: epoll_wait failed: {e}");
                return;
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(t) => self.drive(t.wrapping_sub(FIRST_CONN), now),
                }
            }
            match self.accept {
                AcceptState::More => self.accept_all(),
                AcceptState::Backoff(at) if at <= now => self.accept_all(),
                AcceptState::Idle | AcceptState::Backoff(_) => {}
            }
            self.drive_throttled(now);
            self.drain_inbox();
            self.publish_due(now);
            self.stream_due(now);
            self.close_due(now);
            self.handshake_due(now);
            self.keepalive_due(now);
            self.flush_unflushed();
        }
    }

    /// How long `poll` may sleep.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.inbox_more {
            return Some(Duration::ZERO);
        }
        let accept = match self.accept {
            AcceptState::Idle => None,
            AcceptState::More => Some(Duration::ZERO),
            AcceptState::Backoff(at) => Some(at.saturating_duration_since(now)),
        };
        let publish = match (&self.publisher, self.shared.clock.get()) {
            (Some(p), Some(clock)) if self.open > 0 => clock
                .deadline(p.next_k, p.rate)
                .map(|d| d.saturating_duration_since(now)),
            _ => None,
        };
        let close = self
            .close_queue
            .front()
            .map(|&(at, _)| at.saturating_duration_since(now));
        let sweep = self
            .next_sweep
            .filter(|_| self.open > 0)
            .map(|at| at.saturating_duration_since(now));
        let streams = self.feeds.as_ref().and_then(|f| f.timeout(now));
        let handshake = self
            .handshake_queue
            .front()
            .map(|&(at, ..)| at.saturating_duration_since(now));
        let throttled = match (&self.ctx.msg_rate, self.throttled.is_empty()) {
            (Some(b), false) => Some(b.borrow().next(now).saturating_duration_since(now)),
            _ => None,
        };
        [accept, publish, close, sweep, streams, handshake, throttled]
            .into_iter()
            .flatten()
            .min()
    }

    /// Accepts pending connections, at most [`ACCEPT_BATCH`] per call.
    fn accept_all(&mut self) {
        let now = Instant::now();
        let deadline = now + self.handshake_timeout;
        for _ in 0..ACCEPT_BATCH {
            if let Some(b) = &mut self.accept_rate {
                if !b.ready(now) {
                    // Left in the backlog until the rate allows.
                    self.accept = AcceptState::Backoff(b.next(now));
                    return;
                }
            }
            match self.listener.accept() {
                Ok((stream, _peer)) => {
                    if let Some(b) = &mut self.accept_rate {
                        b.take();
                    }
                    self.ctx.stats.accepted.fetch_add(1, Relaxed);
                    self.add(stream, deadline);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept = AcceptState::Idle;
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(_) => {
                    // EMFILE/ENFILE/ENOBUFS: the pending connection stays in the backlog.
                    self.accept = AcceptState::Backoff(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
        self.accept = AcceptState::More;
    }

    /// Registers a new connection and stores it in a free slot; it must upgrade by
    /// `deadline`.
    fn add(&mut self, mut stream: TcpStream, deadline: Instant) {
        // Echo round trips are latency measurements: do not let Nagle hold replies back.
        let _ = stream.set_nodelay(true);
        let slot = self.free.pop().unwrap_or(self.slots.len());
        // Both interests for the connection's whole life: edge-triggered WRITABLE only fires
        // after a write hit a full socket buffer, so it costs nothing until then.
        // TLS relies on this too: pending TLS records are flushed by the drive WRITABLE causes.
        let token = Token(slot + FIRST_CONN);
        let registered = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .is_ok();
        let conn = registered.then(|| Conn::new(stream, &self.ctx)).flatten();
        if conn.is_none() {
            if slot < self.slots.len() {
                self.free.push(slot);
            }
            return;
        }
        match self.slots.get_mut(slot) {
            Some(entry) => *entry = conn,
            None => self.slots.push(conn),
        }
        if self.generations.len() <= slot {
            self.generations.resize(slot + 1, 0);
        }
        if let Some(generation) = self.generations.get_mut(slot) {
            *generation = generation.wrapping_add(1);
            self.handshake_queue
                .push_back((deadline, slot, *generation));
        }
    }

    /// Closes the connections whose handshake deadline has come and that have not upgraded
    /// (TLS handshake, request, upgrade or an HTTP answer still going on).
    fn handshake_due(&mut self, now: Instant) {
        while let Some(&(at, slot, generation)) = self.handshake_queue.front() {
            if at > now {
                break;
            }
            self.handshake_queue.pop_front();
            if self.generations.get(slot) != Some(&generation) {
                continue;
            }
            let Some(entry) = self.slots.get_mut(slot) else {
                continue;
            };
            if entry.as_ref().is_none_or(Conn::is_open) {
                continue;
            }
            // Dropping it closes the socket.
            *entry = None;
            self.ctx.stats.handshake_timeouts.fetch_add(1, Relaxed);
            self.release(slot);
        }
    }

    /// Drives the connection in `slot` after a readiness event, then carries out its channel
    /// requests; again while it stopped reading early to let them be carried out.
    fn drive(&mut self, slot: usize, now: Instant) {
        while self.drive_once(slot, now) {}
    }

    /// One drive of the connection in `slot` and its channel requests; true if it stopped
    /// reading early (too many requests at once) and must be driven again.
    fn drive_once(&mut self, slot: usize, now: Instant) -> bool {
        let Some(entry) = self.slots.get_mut(slot) else {
            return false;
        };
        let Some(conn) = entry.take() else {
            return false;
        };
        let was_open = conn.is_open();
        let mut ops = std::mem::take(&mut self.ops);
        let mut next = conn.drive(&self.ctx, &mut ops);
        let now_open = next.as_ref().is_some_and(Conn::is_open);
        if let (Some(Conn::Open(conn)), false, Some((after, _))) =
            (&mut next, was_open, self.close_after)
        {
            if let Some(at) = now.checked_add(after) {
                conn.close_at = Some(at);
                self.close_queue.push_back((at, slot));
            }
        }
        let alive = next.is_some();
        if let Some(Conn::Open(conn)) = &mut next {
            if conn.throttled && !std::mem::replace(&mut conn.queued_throttled, true) {
                self.throttled.push_back(slot);
            }
        }
        *entry = next;
        if !alive {
            self.release(slot);
        }
        if now_open && !was_open {
            self.opened();
        } else if was_open && !now_open {
            self.closed(1);
        }
        self.carry_out(slot, alive, &mut ops, now);
        self.ops = ops;
        match self.slots.get_mut(slot) {
            Some(Some(Conn::Open(conn))) => std::mem::take(&mut conn.more),
            _ => false,
        }
    }

    /// Carries out the channel requests the connection in `slot` made, in order; joins and
    /// leaves (of channels and streams) only if it is still there (`alive`), publishes in any
    /// case.
    fn carry_out(&mut self, slot: usize, alive: bool, ops: &mut Vec<ChannelOp>, now: Instant) {
        for op in ops.drain(..) {
            match op {
                ChannelOp::Join(channel) if alive => {
                    self.channels.join(slot, channel);
                }
                ChannelOp::Leave(channel) if alive => {
                    self.channels.leave(slot, &channel);
                }
                ChannelOp::StreamSubscribe(names) if alive => {
                    if let Some(feeds) = &mut self.feeds {
                        feeds.subscribe(slot, names, now, &self.ctx.stats);
                    }
                }
                ChannelOp::StreamUnsubscribe(names) if alive => {
                    if let Some(feeds) = &mut self.feeds {
                        feeds.unsubscribe(slot, names.as_deref());
                    }
                }
                ChannelOp::Join(_)
                | ChannelOp::Leave(_)
                | ChannelOp::StreamSubscribe(_)
                | ChannelOp::StreamUnsubscribe(_) => {}
                ChannelOp::Publish { channel, text } => {
                    self.ctx.stats.channel_publishes.fetch_add(1, Relaxed);
                    // The other workers first, so they deliver while this one does.
                    for (i, inbox) in self.shared.inboxes.iter().enumerate() {
                        if i != self.index
                            && !inbox.send(Relayed {
                                channel: Arc::clone(&channel),
                                text: text.clone(),
                            })
                        {
                            self.ctx.stats.relay_dropped.fetch_add(1, Relaxed);
                        }
                    }
                    self.deliver(&channel, &text);
                }
            }
        }
        self.drop_failed();
    }

    /// Drives the connections `--max-msg-rate` held back, oldest first, while the rate
    /// allows; the rest wait for the next token.
    fn drive_throttled(&mut self, now: Instant) {
        while let Some(&slot) = self.throttled.front() {
            if let Some(b) = &self.ctx.msg_rate {
                if !b.borrow_mut().ready(now) {
                    return;
                }
            }
            self.throttled.pop_front();
            match self.slots.get_mut(slot) {
                Some(Some(Conn::Open(conn))) if conn.queued_throttled => {
                    conn.queued_throttled = false;
                    conn.throttled = false;
                }
                // Closed (and maybe the slot reused) since it was queued.
                _ => continue,
            }
            self.drive(slot, now);
        }
    }

    /// Delivers the publishes other workers relayed, at most [`RELAY_BATCH`] per turn.
    fn drain_inbox(&mut self) {
        if let Some(inbox) = self.shared.inboxes.get(self.index) {
            inbox.take_pending();
        }
        self.inbox_more = false;
        for _ in 0..RELAY_BATCH {
            let Ok(msg) = self.inbox.try_recv() else {
                self.drop_failed();
                return;
            };
            if let Some(inbox) = self.shared.inboxes.get(self.index) {
                inbox.received(&msg);
            }
            self.deliver(&msg.channel, &msg.text);
        }
        self.inbox_more = true;
        self.drop_failed();
    }

    /// Queues `text` for every member of `channel` on this thread (flushed at the end of the
    /// turn). Members that are closing are skipped and not counted; every other delivery is
    /// counted exactly once: queued, dropped by `drop_every`, or dropped as overflow.
    fn deliver(&mut self, channel: &str, text: &Utf8Bytes) {
        let stats = &self.ctx.stats;
        for &slot in self.channels.members(channel) {
            let Some(Some(Conn::Open(conn))) = self.slots.get_mut(slot) else {
                continue;
            };
            if !conn.accepts_deliveries() {
                continue;
            }
            if self.drop_every > 0 {
                let n = self.shared.deliveries.fetch_add(1, Relaxed).wrapping_add(1);
                if n % self.drop_every == 0 {
                    stats.channel_dropped.fetch_add(1, Relaxed);
                    continue;
                }
            }
            match conn.deliver(Message::Text(text.clone())) {
                Ok(Delivery::Queued) => {
                    stats.channel_deliveries.fetch_add(1, Relaxed);
                    stats.msgs_out.fetch_add(1, Relaxed);
                    mark_unflushed(conn, slot, &mut self.unflushed);
                }
                Ok(Delivery::Overflow) => {
                    stats.channel_overflow.fetch_add(1, Relaxed);
                    if slow(conn, self.slow_consumer) {
                        self.aborting.push((slot, false));
                    }
                }
                Err(_) => self.failed.push(slot),
            }
        }
    }

    /// Flushes every connection that got deliveries this turn.
    fn flush_unflushed(&mut self) {
        for slot in self.unflushed.drain(..) {
            let Some(Some(Conn::Open(conn))) = self.slots.get_mut(slot) else {
                continue;
            };
            // A stale entry (the slot was reused this turn) finds the flag clear.
            if !std::mem::take(&mut conn.unflushed) {
                continue;
            }
            if conn.flush().is_err() {
                self.failed.push(slot);
            }
        }
        self.drop_failed();
    }

    /// Sends the close frame to every connection whose `close_after` deadline has come.
    fn close_due(&mut self, now: Instant) {
        let Some((_, code)) = self.close_after else {
            return;
        };
        while let Some(&(at, slot)) = self.close_queue.front() {
            if at > now {
                break;
            }
            self.close_queue.pop_front();
            let Some(Some(Conn::Open(conn))) = self.slots.get_mut(slot) else {
                continue;
            };
            // The entry belongs to the connection that opened at `at - close_after`, not to a
            // later one in the same slot.
            if conn.close_at != Some(at) {
                continue;
            }
            conn.close_at = None;
            match conn.server_close(code, "") {
                Ok(true) => {
                    self.ctx.stats.server_closes.fetch_add(1, Relaxed);
                }
                Ok(false) => {}
                Err(_) => self.failed.push(slot),
            }
        }
        self.drop_failed();
    }

    /// Drops the open connections in `failed`, and resets those in `aborting`.
    fn drop_failed(&mut self) {
        while let Some((slot, keepalive)) = self.aborting.pop() {
            let Some(entry) = self.slots.get_mut(slot) else {
                continue;
            };
            // A second listing finds the slot emptied: counted once.
            let Some(Conn::Open(mut conn)) = entry.take() else {
                continue;
            };
            let counter = if keepalive {
                &self.ctx.stats.keepalive_aborts
            } else {
                &self.ctx.stats.slow_consumer_aborts
            };
            counter.fetch_add(1, Relaxed);
            conn.abort();
            drop(conn);
            self.release(slot);
            self.closed(1);
        }
        while let Some(slot) = self.failed.pop() {
            let Some(entry) = self.slots.get_mut(slot) else {
                continue;
            };
            // Listed at most once per failure; a second listing finds the slot emptied.
            let Some(Conn::Open(mut conn)) = entry.take() else {
                continue;
            };
            conn.close();
            self.release(slot);
            self.closed(1);
        }
    }

    /// Frees `slot` (its entry is already `None`): it leaves its channels and can be reused.
    fn release(&mut self, slot: usize) {
        self.channels.leave_all(slot);
        if let Some(feeds) = &mut self.feeds {
            feeds.remove(slot);
        }
        self.free.push(slot);
    }

    /// Bookkeeping for a connection that completed its upgrade.
    fn opened(&mut self) {
        self.open += 1;
        self.ctx.stats.open.fetch_add(1, Relaxed);
        if let Some(cap) = &self.ctx.cap {
            cap.opened();
        }
        if self.open == 1 {
            if let Some(p) = &mut self.publisher {
                // The first connection anywhere starts the shared clock, so its first event is
                // seq 1; later connections join at the current tick.
                let clock = self.shared.clock.get_or_init(PublishClock::now);
                let due = clock.ticks_elapsed(Instant::now(), p.rate);
                p.next_k = p.next_k.max(due.saturating_add(1));
            }
        }
    }

    /// Bookkeeping for `n` open connections that closed.
    fn closed(&mut self, n: usize) {
        self.open = self.open.saturating_sub(n);
        self.ctx.stats.open.fetch_sub(n as u64, Relaxed);
        if let Some(cap) = &self.ctx.cap {
            cap.closed(n as u64);
        }
    }

    /// Sends every publish tick that is due (up to [`MAX_CATCH_UP`]).
    fn publish_due(&mut self, now: Instant) {
        let Some(p) = &self.publisher else {
            return;
        };
        let Some(&clock) = self.shared.clock.get() else {
            return;
        };
        let (rate, mut k) = (p.rate, p.next_k);
        let mut sent = 0;
        while self.open > 0 && clock.deadline(k, rate).is_some_and(|d| d <= now) {
            if sent == MAX_CATCH_UP {
                k = k.max(clock.ticks_elapsed(now, rate).saturating_add(1));
                break;
            }
            self.broadcast(k, clock.ts_us(k, rate));
            k += 1;
            sent += 1;
        }
        if let Some(p) = &mut self.publisher {
            p.next_k = k;
        }
    }

    /// Sends the market-data quotes that are due (module `feed`).
    fn stream_due(&mut self, now: Instant) {
        let Some(feeds) = &mut self.feeds else {
            return;
        };
        let lists = (&mut self.unflushed, &mut self.failed);
        feeds.send_due(now, &mut self.slots, &self.ctx.stats, lists);
        self.drop_failed();
    }

    /// Queues event `seq` for every open connection of this thread (flushed at the end of the
    /// turn).
    fn broadcast(&mut self, seq: u64, ts_us: u64) {
        let event =
            Message::Text(format!(r#"{{"type":"event","seq":{seq},"ts_us":{ts_us}}}"#).into());
        let stats = &self.ctx.stats;
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(Conn::Open(conn)) = entry else {
                continue;
            };
            if !conn.accepts_deliveries() {
                continue;
            }
            match conn.deliver(event.clone()) {
                Ok(Delivery::Queued) => {
                    stats.msgs_out.fetch_add(1, Relaxed);
                    mark_unflushed(conn, slot, &mut self.unflushed);
                }
                Ok(Delivery::Overflow) => {
                    stats.channel_overflow.fetch_add(1, Relaxed);
                    if slow(conn, self.slow_consumer) {
                        self.aborting.push((slot, false));
                    }
                }
                Err(_) => self.failed.push(slot),
            }
        }
        self.drop_failed();
    }

    /// Pings every open connection whose ping is due, closes (1011) those whose ping went
    /// unanswered, and resets those that did not take their close in time. One pass over
    /// the connections every quarter of the shorter of interval and timeout (1-100 ms).
    fn keepalive_due(&mut self, now: Instant) {
        let Some((interval, timeout)) = self.keepalive else {
            return;
        };
        if self.open == 0 {
            self.next_sweep = None;
            return;
        }
        if self.next_sweep.is_some_and(|at| at > now) {
            return;
        }
        let step =
            (interval.min(timeout) / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
        self.next_sweep = Some(now + step);
        let stats = &self.ctx.stats;
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(Conn::Open(conn)) = entry else {
                continue;
            };
            match conn.keepalive(now, (interval, timeout)) {
                Ok(KeepaliveStep::Idle) => {}
                Ok(KeepaliveStep::Pinged) => mark_unflushed(conn, slot, &mut self.unflushed),
                Ok(KeepaliveStep::TimedOut) => {
                    stats.keepalive_timeouts.fetch_add(1, Relaxed);
                    mark_unflushed(conn, slot, &mut self.unflushed);
                }
                Ok(KeepaliveStep::Abort) => self.aborting.push((slot, true)),
                Err(_) => self.failed.push(slot),
            }
        }
        self.drop_failed();
    }
}

/// Whether the slow-consumer rule says to reset `conn`: its deliveries have overflowed for
/// `grace` or longer.
fn slow(conn: &OpenConn, grace: Option<Duration>) -> bool {
    match (grace, conn.full_since) {
        (Some(g), Some(since)) => since.elapsed() >= g,
        _ => false,
    }
}

/// Puts `slot` on the end-of-turn flush list once.
pub(super) fn mark_unflushed(conn: &mut OpenConn, slot: usize, list: &mut Vec<usize>) {
    if !conn.unflushed {
        conn.unflushed = true;
        list.push(slot);
    }
}
