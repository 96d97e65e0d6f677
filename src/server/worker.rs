//! One event-loop thread of the gateway: its own `SO_REUSEPORT` listener, a `mio::Poll`, a slab
//! of connections keyed by `Token`, and (in fan-out mode) the publish timer.
//!
//! The loop sleeps in `poll` until a socket is ready, the [`mio::Waker`] fires (shutdown), or
//! the next publish tick is due; an idle echo gateway does not wake up at all.

use std::io;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use tungstenite::Message;

use super::conn::{Conn, DriveCtx};
use super::{PublishClock, Shared};

/// The listener's token.
pub(super) const LISTENER: Token = Token(0);
/// The shutdown waker's token.
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
    /// Free slots, reused last-in first-out.
    free: Vec<usize>,
    /// Counters and per-connection settings.
    ctx: DriveCtx,
    /// Stop flag and publish clock shared by all threads.
    shared: Arc<Shared>,
    /// Fan-out state; `None` in echo-only mode.
    publisher: Option<Publisher>,
    /// Open WebSocket connections of this thread.
    open: usize,
    /// Listener state.
    accept: AcceptState,
}

impl Worker {
    /// Creates a worker around a poll that already has `listener` (token [`LISTENER`]) and the
    /// shutdown waker (token [`WAKER`]) registered.
    pub(super) fn new(
        poll: Poll,
        listener: TcpListener,
        ctx: DriveCtx,
        shared: Arc<Shared>,
        publish_rate: f64,
    ) -> Self {
        let publisher = (publish_rate > 0.0).then_some(Publisher {
            rate: publish_rate,
            next_k: 1,
        });
        Self {
            poll,
            listener,
            slots: Vec::new(),
            free: Vec::new(),
            ctx,
            shared,
            publisher,
            open: 0,
            accept: AcceptState::Idle,
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
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(t) => self.drive(t.wrapping_sub(FIRST_CONN)),
                }
            }
            let now = Instant::now();
            match self.accept {
                AcceptState::More => self.accept_all(),
                AcceptState::Backoff(at) if at <= now => self.accept_all(),
                AcceptState::Idle | AcceptState::Backoff(_) => {}
            }
            self.publish_due(now);
        }
    }

    /// How long `poll` may sleep.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
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
        match (accept, publish) {
            (Some(a), Some(p)) => Some(a.min(p)),
            (a, p) => a.or(p),
        }
    }

    /// Accepts pending connections, at most [`ACCEPT_BATCH`] per call.
    fn accept_all(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, _peer)) => {
                    self.ctx.stats.accepted.fetch_add(1, Relaxed);
                    self.add(stream);
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

    /// Registers a new connection and stores it in a free slot.
    fn add(&mut self, mut stream: TcpStream) {
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
    }

    /// Drives the connection in `slot` after a readiness event.
    fn drive(&mut self, slot: usize) {
        let Some(entry) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(conn) = entry.take() else {
            return;
        };
        let was_open = conn.is_open();
        let next = conn.drive(&self.ctx);
        let now_open = next.as_ref().is_some_and(Conn::is_open);
        if next.is_none() {
            self.free.push(slot);
        }
        *entry = next;
        if now_open && !was_open {
            self.opened();
        } else if was_open && !now_open {
            self.closed(1);
        }
    }

    /// Bookkeeping for a connection that completed its upgrade.
    fn opened(&mut self) {
        self.open += 1;
        self.ctx.stats.open.fetch_add(1, Relaxed);
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

    /// Sends event `seq` to every open connection of this thread.
    fn broadcast(&mut self, seq: u64, ts_us: u64) {
        let event =
            Message::Text(format!(r#"{{"type":"event","seq":{seq},"ts_us":{ts_us}}}"#).into());
        let mut closed = 0;
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(Conn::Open(conn)) = entry else {
                continue;
            };
            if conn.publish(event.clone(), &self.ctx).is_err() {
                *entry = None;
                self.free.push(slot);
                closed += 1;
            }
        }
        if closed > 0 {
            self.closed(closed);
        }
    }
}
