//! One shard: a pinned thread owning an io_uring ring, a slab of connections, a timer wheel,
//! its share of the connect schedule and its own [`ShardStats`]. Nothing here is shared with
//! other shards; the engine only receives interval snapshots and can wake the shard to stop.

use crate::engine::reconnect::{Policy, Storm};
use crate::engine::stages::Ramp;
use crate::engine::timer::{TimerEntry, TimerWheel};
use crate::io::uring::{pack, unpack, Completion, Op, Ring, RingConfig, Waker};
use crate::metrics::ShardStats;
use crate::proto::conn::{Conn, ConnConfig, Ctx, Failure, Micros, Mode, Outcome, Phase};
use crate::proto::rng::Rng;
use crate::proto::tls::TlsSettings;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

const SECOND: Micros = 1_000_000;
/// Initial capacity of pooled send buffers (an upgrade request or a few small frames).
const SEND_BUF_CAPACITY: usize = 256;
/// How far ahead of schedule a connection may be opened to batch openings.
const OPEN_SLACK_US: f64 = 1000.0;
/// After the stop, how long requests still in flight once every connection has ended are
/// waited for.
const LEFTOVER_GRACE_US: Micros = 200_000;

/// What one shard does: its share of connections and rate, and the shared behaviour.
#[derive(Debug, Clone)]
pub struct ShardPlan {
    /// Shard index (0-based).
    pub index: usize,
    /// Shards in the run (connection numbers interleave across them).
    pub shards: usize,
    /// CPU to pin to, if any.
    pub cpu: Option<usize>,
    /// Resolved target address.
    pub target: SocketAddr,
    /// Connections this shard holds open.
    pub connections: u64,
    /// µs between connection openings on this shard.
    pub open_interval_us: f64,
    /// µs after the start before this shard's first opening (interleaves shards).
    pub open_offset_us: f64,
    /// Run length from the start, µs; the stop begins then.
    pub duration_us: Micros,
    /// How long replies in flight are awaited after the stop, µs.
    pub drain_us: Micros,
    /// Connection behaviour.
    pub conn: ConnConfig,
    /// TLS settings (wss://); the shard builds its own client from them.
    pub tls: Option<Arc<TlsSettings>>,
    /// Source addresses to rotate (empty: let the kernel choose).
    pub sources: Vec<IpAddr>,
    /// Replace failed or server-closed connections to hold the count.
    pub reconnect: bool,
    /// When replacements are opened.
    pub policy: Policy,
    /// A reconnect storm, if any.
    pub storm: Option<Storm>,
    /// Stages: this shard's open-connection target over time (inactive: hold `connections`).
    pub ramp: Ramp,
    /// Open model: sessions to start at the connect rate (each lives its lifetime, none is
    /// replaced); `connections` is then only the room for those alive at once.
    pub arrivals: Option<u64>,
    /// Ring sizing.
    pub ring: RingConfig,
}

/// Point-in-time gauges of a shard.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Open WebSocket sessions.
    pub open: u64,
    /// Connections in any phase.
    pub live: u64,
    /// Largest delay of a connection opening behind its schedule, µs.
    pub schedule_lag_max_us: u64,
    /// When the shard first had as many sessions opened as its target, µs (0: not yet).
    pub ramp_done_us: u64,
    /// Storms: the longest time until the shard's open sessions were back at its target, µs.
    pub storm_worst_us: u64,
    /// A storm from which the shard had not recovered (at the end, or when the next came).
    pub storm_unrecovered: bool,
    /// Stages: the most connections the shard was behind its ramp (connect rate too low?).
    pub ramp_deficit_max: u64,
}

/// Messages from a shard to the engine.
#[derive(Debug)]
pub enum ShardEvent {
    /// The ring is up; the waker stops the shard early.
    Ready(usize, Waker),
    /// The shard could not start.
    Failed(usize, String),
    /// Once a second: what was gathered since the last interval.
    Interval(usize, Box<ShardStats>, Gauges),
    /// Final interval; the shard has closed everything and exits.
    Done(usize, Box<ShardStats>, Gauges),
}

/// Stop requests from the engine (checked on every wake-up).
#[derive(Debug, Default)]
pub struct StopFlags {
    /// Stop gracefully now (Ctrl-C): short drain, close handshakes.
    pub interrupt: AtomicBool,
    /// Stop immediately: close every socket without waiting.
    pub abort: AtomicBool,
}

/// Start synchronisation: all shards begin at the same instant.
#[derive(Debug)]
pub struct StartGate {
    /// Shards + the engine.
    pub barrier: Barrier,
    /// The common epoch, set by the engine before it passes the barrier.
    pub epoch: OnceLock<Instant>,
}

#[derive(Debug)]
struct Slot {
    /// In use by a connection (or by its requests still in flight).
    allocated: bool,
    gen: u32,
    /// The direct descriptor `slot index` holds (or is being created for) this connection.
    has_socket: bool,
    conn: Option<Conn>,
    /// Requests in flight that will produce a final completion.
    ops: u16,
    connecting: bool,
    recv_armed: bool,
    sending: bool,
    close_submitted: bool,
    in_dirty: bool,
    timer_at: Micros,
    /// Consecutive failed attempts of the connection this slot replaces, and the last delay.
    retry: (u32, Micros),
    /// Close with RST (a storm's abrupt drop).
    rst: bool,
    /// Being closed because the stages ramp down.
    retired: bool,
    /// No longer counted as open (a storm's graceful drop, closing).
    uncounted: bool,
}

impl Slot {
    fn new() -> Self {
        Self {
            allocated: false,
            gen: 0,
            has_socket: false,
            conn: None,
            ops: 0,
            connecting: false,
            recv_armed: false,
            sending: false,
            close_submitted: false,
            in_dirty: false,
            timer_at: 0,
            retry: (0, 0),
            rst: false,
            retired: false,
            uncounted: false,
        }
    }
}

/// What a connection's handlers need from the shard, kept together so the shard can lend it
/// out while it also borrows a slot.
struct ConnEnv {
    cfg: ConnConfig,
    stats: ShardStats,
    rng: Rng,
}

impl ConnEnv {
    fn ctx(&mut self) -> Ctx<'_> {
        Ctx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            rng: &mut self.rng,
        }
    }
}

/// Hands `buf` to the ring as the slot's one send in flight.
fn start_send(
    ring: &mut Ring,
    slot: &mut Slot,
    i: u32,
    buf: Vec<u8>,
    inflight: &mut u64,
    pool: &mut Vec<Vec<u8>>,
) {
    match ring.send(i, buf, pack(i, slot.gen, Op::Send)) {
        Ok(()) => {
            slot.sending = true;
            slot.ops += 1;
            *inflight += 1;
        }
        // Only if the slot already had a send in flight, which `slot.sending` rules out.
        Err(buf) => pool.push(buf),
    }
}

/// Arms the slot's multishot receive (after the connect, or when the kernel ended it).
fn arm_recv(ring: &mut Ring, slot: &mut Slot, i: u32, inflight: &mut u64) {
    slot.recv_armed = true;
    slot.ops += 1;
    *inflight += 1;
    ring.recv_multishot(i, pack(i, slot.gen, Op::Recv));
}

/// Runs a shard to completion on the current thread.
pub fn run(plan: ShardPlan, flags: Arc<StopFlags>, gate: Arc<StartGate>, tx: Sender<ShardEvent>) {
    let index = plan.index;
    if let Some(cpu) = plan.cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    }
    let mut plan = plan;
    if let Some(settings) = &plan.tls {
        match settings.client() {
            Ok(c) => plan.conn.tls = Some(Arc::new(c)),
            Err(e) => {
                let _ = tx.send(ShardEvent::Failed(index, format!("TLS setup failed: {e}")));
                gate.barrier.wait();
                return;
            }
        }
    }
    let ring = Ring::new(plan.ring, plan.target, &plan.sources).and_then(|r| Ok((r.waker()?, r)));
    let (waker, ring) = match ring {
        Ok(x) => x,
        Err(e) => {
            let _ = tx.send(ShardEvent::Failed(
                index,
                format!("io_uring setup failed: {e} (check `sockstorm doctor`; Linux ≥ 6.1 with io_uring enabled is required)"),
            ));
            gate.barrier.wait();
            return;
        }
    };
    if tx.send(ShardEvent::Ready(index, waker)).is_err() {
        return;
    }
    gate.barrier.wait();
    let Some(&epoch) = gate.epoch.get() else {
        return;
    };
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    plan.conn.epoch_unix_us = unix_now.saturating_sub(epoch.elapsed()).as_micros() as u64;
    let mut shard = Shard::new(plan, ring, epoch, flags, tx);
    shard.run();
}

struct Shard {
    plan: ShardPlan,
    env: ConnEnv,
    ring: Ring,
    slots: Vec<Slot>,
    free: Vec<u32>,
    wheel: TimerWheel,
    epoch: Instant,
    flags: Arc<StopFlags>,
    tx: Sender<ShardEvent>,
    pending_opens: u64,
    initial_left: u64,
    next_open_at: f64,
    source_idx: usize,
    stopping: bool,
    /// Every connection was cut short (second Ctrl-C, hard deadline or a ring error).
    aborted: bool,
    hard_deadline: Micros,
    next_tick: Micros,
    live: u64,
    inflight: u64,
    lag_max: u64,
    /// Sessions opened so far, and when that count first reached the target (µs).
    ramp: (u64, Micros),
    dirty: Vec<u32>,
    cq: Vec<Completion>,
    fired: Vec<TimerEntry>,
    pool: Vec<Vec<u8>>,
    /// When the last connection ended after the stop.
    all_done_at: Option<Micros>,
    /// Replacements waiting for their policy's delay: (when, failed attempts, last delay).
    reopen: BinaryHeap<Reverse<(Micros, u32, Micros)>>,
    /// Sessions open now.
    open_now: u64,
    /// The storm has happened (µs), and when the open count was back at the target.
    /// Storms: when the next one comes, when the one in progress began, the longest
    /// recovery, and whether one never recovered.
    storm_next: Option<Micros>,
    storm_started: Option<Micros>,
    storm_worst: Micros,
    storm_unrecovered: bool,
    /// Stages: connections being retired, the opening order (slot, generation) to retire the
    /// newest first, and the largest shortfall behind the ramp.
    retiring: u64,
    opened: Vec<(u32, u32)>,
    ramp_deficit_max: u64,
    /// Connections made so far (numbers them run-wide: index + shards × this).
    conns_made: u64,
}

impl Shard {
    fn new(
        plan: ShardPlan,
        ring: Ring,
        epoch: Instant,
        flags: Arc<StopFlags>,
        tx: Sender<ShardEvent>,
    ) -> Self {
        // With stages the ramp decides what to open, not a fixed count.
        let storm_next = plan.storm.map(|s| s.at);
        let n = if plan.ramp.is_active() {
            0
        } else {
            plan.arrivals.unwrap_or(plan.connections)
        };
        Self {
            env: ConnEnv {
                cfg: plan.conn.clone(),
                stats: ShardStats::new(),
                rng: Rng::from_entropy(plan.index as u64 + 1),
            },
            next_open_at: plan.open_offset_us,
            pending_opens: n,
            source_idx: plan.index,
            slots: Vec::with_capacity(n as usize),
            plan,
            ring,
            free: Vec::new(),
            wheel: TimerWheel::new(),
            epoch,
            flags,
            tx,
            initial_left: n,
            stopping: false,
            aborted: false,
            hard_deadline: u64::MAX,
            next_tick: SECOND,
            live: 0,
            inflight: 0,
            lag_max: 0,
            ramp: (0, 0),
            dirty: Vec::new(),
            cq: Vec::with_capacity(1024),
            fired: Vec::new(),
            pool: Vec::new(),
            all_done_at: None,
            reopen: BinaryHeap::new(),
            open_now: 0,
            storm_next,
            storm_started: None,
            storm_worst: 0,
            storm_unrecovered: false,
            retiring: 0,
            opened: Vec::new(),
            ramp_deficit_max: 0,
            conns_made: 0,
        }
    }

    fn now(&self) -> Micros {
        self.epoch.elapsed().as_micros() as Micros
    }

    fn run(&mut self) {
        loop {
            let now = self.now();
            if !self.stopping {
                let interrupted = self.flags.interrupt.load(Ordering::Relaxed);
                if interrupted || now >= self.plan.duration_us {
                    self.begin_stop(now, interrupted);
                }
            }
            if self.flags.abort.load(Ordering::Relaxed)
                || (self.stopping && now >= self.hard_deadline)
            {
                self.abort_all(now);
            }
            self.expire_timers(now);
            if let (Some(storm), Some(next)) = (self.plan.storm, self.storm_next) {
                if !self.stopping && now >= next {
                    self.storm_next = (storm.every > 0).then(|| next + storm.every);
                    self.storm(now, storm);
                }
            }
            if !self.stopping {
                if self.plan.ramp.is_active() {
                    self.follow_ramp(now);
                }
                self.open_due(now);
            }
            if now >= self.next_tick {
                self.send_interval(false);
                self.next_tick = (now / SECOND + 1) * SECOND;
            }
            self.flush(now);
            if self.stopping && self.live == 0 && self.inflight == 0 {
                break;
            }
            // A request the kernel never completes (a send to a peer that stopped reading)
            // must not hold the run hostage: dropping the ring cancels whatever is left.
            // Once every connection has ended, requests still in flight carry no results: a
            // short grace for their completions, then leave (seen: a connect and send of a
            // chain cut by the stop that never complete).
            if self.stopping && self.live == 0 {
                let since = *self.all_done_at.get_or_insert(now);
                if now >= since.saturating_add(LEFTOVER_GRACE_US) {
                    let _ = self.ring.submit_and_wait(Some(Duration::ZERO));
                    break;
                }
            }
            if self.stopping && now >= self.hard_deadline.saturating_add(SECOND) {
                // Hand the queued closes to the kernel before leaving, or their fds leak.
                let _ = self.ring.submit_and_wait(Some(Duration::ZERO));
                break;
            }
            let timeout = self
                .next_wake(now)
                .map(|t| Duration::from_micros(t.saturating_sub(self.now())));
            if let Err(e) = self.ring.submit_and_wait(timeout) {
                if !self.aborted {
                    let _ = self.tx.send(ShardEvent::Failed(
                        self.plan.index,
                        format!("io_uring wait failed: {e}"),
                    ));
                }
                self.abort_all(self.now());
            }
            self.ring.reap(&mut self.cq);
            let now = self.now();
            let mut cq = std::mem::take(&mut self.cq);
            for c in cq.drain(..) {
                self.on_completion(c, now);
            }
            self.cq = cq;
        }
        self.send_interval(true);
    }

    fn next_wake(&self, now: Micros) -> Option<Micros> {
        if !self.dirty.is_empty() {
            return Some(now);
        }
        let mut t = self.next_tick;
        if let Some(w) = self.wheel.next_due() {
            t = t.min(w);
        }
        if !self.stopping {
            t = t.min(self.plan.duration_us);
            if self.pending_opens > 0 {
                t = t.min(self.next_open_at as Micros);
            }
            if let Some(Reverse((at, _, _))) = self.reopen.peek() {
                t = t.min(*at);
            }
            if self.plan.ramp.is_active() {
                let want = self.plan.ramp.target(now);
                if self.plan.ramp.ramping(now) || want != self.live - self.retiring {
                    t = t.min(now + 1000);
                } else if let Some(c) = self.plan.ramp.next_change(now) {
                    t = t.min(c);
                }
            }
            if let Some(next) = self.storm_next {
                t = t.min(next);
            }
        } else if let Some(done) = self.all_done_at {
            t = t.min(done.saturating_add(LEFTOVER_GRACE_US));
        } else if now < self.hard_deadline {
            t = t.min(self.hard_deadline);
        } else {
            // Past the hard deadline only the final exit is left to wait for.
            t = t.min(self.hard_deadline.saturating_add(SECOND));
        }
        Some(t.max(now))
    }

    fn send_interval(&mut self, done: bool) {
        let open = self
            .slots
            .iter()
            .filter(|s| s.conn.as_ref().is_some_and(|c| c.phase() == Phase::Open))
            .count() as u64;
        let g = Gauges {
            open,
            live: self.live,
            schedule_lag_max_us: self.lag_max,
            ramp_done_us: self.ramp.1,
            storm_worst_us: self.storm_worst,
            storm_unrecovered: self.storm_unrecovered || self.storm_started.is_some(),
            ramp_deficit_max: self.ramp_deficit_max,
        };
        let stats = Box::new(self.env.stats.take_interval());
        let ev = if done {
            ShardEvent::Done(self.plan.index, stats, g)
        } else {
            ShardEvent::Interval(self.plan.index, stats, g)
        };
        let _ = self.tx.send(ev);
    }

    fn begin_stop(&mut self, now: Micros, interrupted: bool) {
        self.stopping = true;
        self.pending_opens = 0;
        self.reopen.clear();
        let mut drain = self.plan.drain_us;
        if interrupted {
            // Ctrl-C must finish within 2 s: shorten the drain and the close handshake.
            drain = drain.min(500_000);
            self.env.cfg.close_wait = self.env.cfg.close_wait.min(300_000);
        }
        self.hard_deadline = now
            .saturating_add(drain)
            .saturating_add(self.env.cfg.close_wait)
            .saturating_add(200_000);
        for i in 0..self.slots.len() {
            let Shard { env, slots, .. } = self;
            if let Some(conn) = slots[i].conn.as_mut() {
                let mut ctx = env.ctx();
                conn.stop(&mut ctx, now, now + drain);
                self.after(i as u32, now);
            }
        }
    }

    fn abort_all(&mut self, now: Micros) {
        if self.aborted {
            return;
        }
        self.aborted = true;
        self.stopping = true;
        self.pending_opens = 0;
        self.hard_deadline = self.hard_deadline.min(now);
        for i in 0..self.slots.len() {
            let Shard { env, slots, .. } = self;
            if let Some(conn) = slots[i].conn.as_mut() {
                conn.abort(&mut env.ctx(), now);
                self.after(i as u32, now);
            }
        }
    }

    fn open_due(&mut self, now: Micros) {
        let nowf = now as f64;
        // Openings due within the next OPEN_SLACK_US go out in this batch: one wake-up and one
        // submission per millisecond instead of one per connection; the rate per second is
        // unchanged.
        // Bounded per turn: an opening that fails at once (EMFILE) is replaced at once in
        // handshake mode, and completions must still be reaped meanwhile.
        let mut budget = self.plan.connections.max(64);
        while self.pending_opens > 0 && self.next_open_at <= nowf + OPEN_SLACK_US && budget > 0 {
            budget -= 1;
            let lag = (nowf - self.next_open_at).max(0.0) as u64;
            self.lag_max = self.lag_max.max(lag);
            self.pending_opens -= 1;
            self.next_open_at += self.plan.open_interval_us;
            // Initial openings come first; anything beyond them replaces a lost connection.
            if self.initial_left > 0 {
                self.initial_left -= 1;
            } else if self.plan.conn.mode == Mode::Session {
                self.env.stats.counters.reconnects += 1;
            }
            self.open_one(now, (0, 0));
        }
        while budget > 0 {
            match self.reopen.peek() {
                Some(Reverse((at, _, _))) if *at as f64 <= nowf + OPEN_SLACK_US => {}
                _ => break,
            }
            let Some(Reverse((_, attempt, delay))) = self.reopen.pop() else {
                break;
            };
            budget -= 1;
            self.env.stats.counters.reconnects += 1;
            self.open_one(now, (attempt, delay));
        }
    }

    /// Stages: opens (at up to the connect rate) or retires (newest first, with a close
    /// handshake) connections so that the live count follows the ramp.
    fn follow_ramp(&mut self, now: Micros) {
        // Entries of connections that have ended are skipped when retiring; drop them now and
        // then so a long run with refills does not grow the list.
        if self.opened.len() > 2 * self.live as usize + 1024 {
            let slots = &self.slots;
            self.opened
                .retain(|&(j, g)| slots[j as usize].gen == g && slots[j as usize].conn.is_some());
        }
        let want = self.plan.ramp.target(now);
        let have = self.live - self.retiring;
        if have < want {
            let nowf = now as f64;
            let mut short = want - have;
            let mut budget = self.plan.connections.max(64);
            while short > 0 && budget > 0 && self.next_open_at <= nowf + OPEN_SLACK_US {
                self.next_open_at += self.plan.open_interval_us;
                short -= 1;
                budget -= 1;
                self.open_one(now, (0, 0));
            }
            self.ramp_deficit_max = self.ramp_deficit_max.max(short);
            return;
        }
        // No credit for the idle time: a later ramp starts at the connect rate, not in a burst.
        self.next_open_at = self.next_open_at.max(now as f64);
        let mut extra = have - want;
        while extra > 0 {
            let Some((i, gen)) = self.opened.pop() else {
                break;
            };
            let Shard { env, slots, .. } = self;
            let slot = &mut slots[i as usize];
            if slot.gen != gen || slot.retired {
                continue;
            }
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            slot.retired = true;
            self.retiring += 1;
            extra -= 1;
            conn.stop(&mut env.ctx(), now, now.saturating_add(self.plan.drain_us));
            self.after(i, now);
        }
    }

    /// Drops the storm's share of this shard's open sessions, chosen at random.
    fn storm(&mut self, now: Micros, storm: Storm) {
        if self.storm_started.is_some() {
            // The previous storm is still being recovered from: it never was.
            self.storm_unrecovered = true;
        }
        self.storm_started = Some(now);
        let mut open: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| {
                self.slots[i as usize]
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.phase() == Phase::Open)
            })
            .collect();
        let k = ((open.len() as f64) * storm.fraction).round() as usize;
        // Partial Fisher-Yates: the first k are a uniform sample.
        for j in 0..k {
            let r = j + self.env.rng.below((open.len() - j) as u64) as usize;
            open.swap(j, r);
        }
        for &i in &open[..k] {
            let Shard { env, slots, .. } = self;
            let slot = &mut slots[i as usize];
            slot.rst = storm.rst;
            if let Some(conn) = slot.conn.as_mut() {
                conn.storm_drop(&mut env.ctx(), now, !storm.rst);
            }
            // Dropped now, even while its close handshake runs: recovery counts from here.
            slot.uncounted = true;
            self.open_now = self.open_now.saturating_sub(1);
            self.after(i, now);
        }
        if k == 0 {
            self.storm_started = None;
        }
    }

    /// A replacement for a lost connection: by the policy's delay, or through the connect
    /// schedule.
    fn replace(&mut self, now: Micros, retry: (u32, Micros)) {
        match self.plan.policy.delay(retry.0, retry.1, &mut self.env.rng) {
            Some(d) => self
                .reopen
                .push(Reverse((now.saturating_add(d), retry.0, d))),
            None => {
                if self.pending_opens == 0 {
                    self.next_open_at = self.next_open_at.max(now as f64);
                }
                self.pending_opens += 1;
            }
        }
    }

    fn open_one(&mut self, now: Micros, retry: (u32, Micros)) {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::new());
                (self.slots.len() - 1) as u32
            }
        };
        let source = (!self.plan.sources.is_empty()).then(|| {
            let k = self.source_idx % self.plan.sources.len();
            self.source_idx += 1;
            k
        });
        let Shard {
            env,
            slots,
            ring,
            inflight,
            live,
            pool,
            plan,
            opened,
            conns_made,
            ..
        } = self;
        let slot = &mut slots[i as usize];
        slot.allocated = true;
        slot.retry = retry;
        if plan.ramp.is_active() {
            opened.push((i, slot.gen));
        }
        let mut ctx = env.ctx();
        let mut conn = Conn::new(&mut ctx, now);
        conn.set_id(plan.index as u64 + plan.shards as u64 * *conns_made);
        *conns_made += 1;
        *live += 1;
        if conn.is_done() {
            // TLS could not even start; counted as a failure already.
            slot.conn = Some(conn);
            return self.after(i, now);
        }
        let mut buf = pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SEND_BUF_CAPACITY));
        conn.poll_transmit(&mut ctx, now, &mut buf);
        let ud = [Op::Setup, Op::Connect, Op::Send].map(|op| pack(i, slot.gen, op));
        match ring.open(i, source, buf, ud) {
            Ok(()) => {
                slot.has_socket = true;
                slot.connecting = true;
                slot.sending = true;
                slot.ops += 2;
                *inflight += 2;
            }
            // Beyond the descriptor table (EMFILE), or the socket could not be made.
            Err((buf, errno)) => {
                pool.push(buf);
                conn.handle_error(&mut ctx, now, Failure::from_errno(errno));
            }
        }
        slot.conn = Some(conn);
        self.after(i, now);
    }

    fn expire_timers(&mut self, now: Micros) {
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        self.wheel.expire(now, &mut fired);
        for e in &fired {
            let Shard { env, slots, .. } = self;
            let Some(slot) = slots.get_mut(e.slot as usize) else {
                continue;
            };
            if slot.gen != e.gen || slot.timer_at != e.at {
                continue; // re-armed or reused since: a stale entry
            }
            slot.timer_at = 0;
            if let Some(conn) = slot.conn.as_mut() {
                conn.handle_timer(&mut env.ctx(), now);
                self.after(e.slot, now);
            }
        }
        self.fired = fired;
    }

    /// After any input: re-arm the timer, queue output, or tear down a finished connection.
    fn after(&mut self, i: u32, now: Micros) {
        let slot = &mut self.slots[i as usize];
        let Some(conn) = slot.conn.as_ref() else {
            return;
        };
        if conn.is_done() {
            return self.teardown(i, now);
        }
        if let Some(t) = conn.poll_timeout(&self.env.cfg) {
            // A send that is due now goes out through the dirty list, or, while a send is in
            // flight, when that send completes: arming a past timer for it would only spin.
            let due_by_send = t <= now && conn.wants_transmit(&self.env.cfg, now);
            let armed = slot.timer_at != 0 && slot.timer_at > now;
            if !due_by_send && (!armed || t < slot.timer_at) {
                slot.timer_at = t;
                self.wheel.insert(TimerEntry {
                    slot: i,
                    gen: slot.gen,
                    at: t,
                });
            }
        }
        if !slot.sending && !slot.in_dirty && conn.wants_transmit(&self.env.cfg, now) {
            slot.in_dirty = true;
            self.dirty.push(i);
        }
    }

    fn flush(&mut self, now: Micros) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let Shard {
                env,
                slots,
                ring,
                pool,
                inflight,
                ..
            } = self;
            let slot = &mut slots[i as usize];
            slot.in_dirty = false;
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            if slot.sending || conn.is_done() || slot.connecting {
                continue;
            }
            let mut buf = pool
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(SEND_BUF_CAPACITY));
            conn.poll_transmit(&mut env.ctx(), now, &mut buf);
            if buf.is_empty() {
                pool.push(buf);
            } else {
                start_send(ring, slot, i, buf, inflight, pool);
            }
            // poll_transmit can schedule further timers (pings): re-arm.
            self.after(i, now);
        }
        dirty.clear();
        // `after` may have queued more (a closing conn); keep them for the next turn.
        dirty.append(&mut self.dirty);
        self.dirty = dirty;
    }

    fn teardown(&mut self, i: u32, now: Micros) {
        let slot = &mut self.slots[i as usize];
        let Some(conn) = slot.conn.take() else { return };
        self.live -= 1;
        let cycles = self.plan.conn.mode != Mode::Session;
        if slot.retired {
            self.retiring -= 1;
        }
        if self.plan.ramp.is_active() || self.plan.arrivals.is_some() {
            // Stages: whatever was lost, the ramp opens again. Open model: arrivals do not
            // depend on departures.
        } else if cycles && !self.stopping {
            // Handshake mode: every finished cycle, failed or not, makes room for the next.
            if self.pending_opens == 0 {
                self.next_open_at = self.next_open_at.max(now as f64);
            }
            self.pending_opens += 1;
        } else if !self.stopping {
            let lost = matches!(
                conn.outcome(),
                Some(Outcome::Failed(_) | Outcome::ServerClosed(_))
            );
            // A storm's sessions always come back: recovering from it is what is measured.
            if (self.plan.reconnect && lost) || conn.storm_dropped() {
                // Failed attempts back off further; a session that had opened starts over.
                let retry = if conn.was_established() {
                    (0, 0)
                } else {
                    (slot.retry.0.saturating_add(1), slot.retry.1)
                };
                self.replace(now, retry);
            }
        }
        let slot = &mut self.slots[i as usize];
        if conn.was_established() && !slot.uncounted {
            self.open_now = self.open_now.saturating_sub(1);
        }
        if slot.has_socket && !slot.close_submitted {
            if slot.recv_armed {
                self.ring
                    .cancel(pack(i, slot.gen, Op::Recv), pack(i, slot.gen, Op::Cancel));
            }
            if slot.connecting {
                self.ring.cancel(
                    pack(i, slot.gen, Op::Connect),
                    pack(i, slot.gen, Op::Cancel),
                );
            }
            // A completed cycle's last send (close_notify, close frame) is small and will
            // complete; the close then takes effect after it.
            if slot.sending && conn.outcome() != Some(Outcome::Completed) {
                self.ring
                    .cancel(pack(i, slot.gen, Op::Send), pack(i, slot.gen, Op::Cancel));
            }
            if slot.rst {
                self.ring.close_rst(
                    i,
                    pack(i, slot.gen, Op::Setup),
                    pack(i, slot.gen, Op::Close),
                );
            } else {
                self.ring.close(i, pack(i, slot.gen, Op::Close));
            }
            slot.close_submitted = true;
            slot.ops += 1;
            self.inflight += 1;
        }
        self.maybe_free(i);
    }

    fn maybe_free(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        if slot.allocated && slot.conn.is_none() && slot.ops == 0 {
            let gen = slot.gen.wrapping_add(1) & 0xFF_FFFF;
            *slot = Slot::new();
            slot.gen = gen;
            self.free.push(i);
        }
    }

    fn op_done(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        slot.ops -= 1;
        self.inflight -= 1;
    }

    fn on_completion(&mut self, mut c: Completion, now: Micros) {
        let (i, gen, op) = unpack(c.user_data());
        let Some(op) = op else { return };
        if op == Op::Wake {
            self.ring.arm_wake();
            return;
        }
        if op == Op::Cancel {
            return;
        }
        let stale = self
            .slots
            .get(i as usize)
            .is_none_or(|s| !s.allocated || s.gen != gen || s.ops == 0);
        if stale {
            if let Some(b) = c.take_buffer() {
                self.ring.recycle(b);
            }
            return;
        }
        let res = c.result();
        match op {
            Op::Connect => {
                self.op_done(i);
                let Shard {
                    env,
                    slots,
                    ring,
                    inflight,
                    ..
                } = self;
                let slot = &mut slots[i as usize];
                slot.connecting = false;
                if let Some(conn) = slot.conn.as_mut() {
                    let mut ctx = env.ctx();
                    if res == 0 {
                        conn.handle_connected(&mut ctx, now);
                        arm_recv(ring, slot, i, inflight);
                    } else if res != -libc::ECANCELED {
                        conn.handle_error(&mut ctx, now, Failure::from_errno(-res));
                    }
                }
            }
            Op::Recv => {
                if !c.more() {
                    self.op_done(i);
                    self.slots[i as usize].recv_armed = false;
                }
                let Shard {
                    env,
                    slots,
                    ring,
                    inflight,
                    ramp,
                    plan,
                    open_now,
                    storm_started,
                    storm_worst,
                    ..
                } = self;
                let slot = &mut slots[i as usize];
                let alive = slot.conn.as_ref().is_some_and(|c| !c.is_done());
                if let Some(b) = c.take_buffer() {
                    if let (true, Some(conn)) = (res > 0, slot.conn.as_mut()) {
                        let data = ring.buffer(&b);
                        let before = conn.was_established();
                        conn.handle_recv(&mut env.ctx(), now, data);
                        if !before && conn.was_established() {
                            ramp.0 += 1;
                            if ramp.0 == plan.connections {
                                ramp.1 = now;
                            }
                            *open_now += 1;
                            if let Some(started) = *storm_started {
                                if *open_now >= plan.connections {
                                    *storm_worst = (*storm_worst).max(now - started);
                                    *storm_started = None;
                                }
                            }
                        }
                    }
                    ring.recycle(b);
                }
                if let Some(conn) = slot.conn.as_mut() {
                    let mut ctx = env.ctx();
                    if res == 0 {
                        conn.handle_eof(&mut ctx, now);
                    } else if res < 0 && res != -libc::ECANCELED && res != -libc::ENOBUFS {
                        conn.handle_error(&mut ctx, now, Failure::from_errno(-res));
                    }
                    // Buffers ran out (ENOBUFS) or the kernel ended the multishot: re-arm.
                    if alive && !conn.is_done() && !slot.recv_armed && res != 0 {
                        arm_recv(ring, slot, i, inflight);
                    }
                }
            }
            Op::Send => {
                self.op_done(i);
                let Shard {
                    env,
                    slots,
                    ring,
                    pool,
                    inflight,
                    ..
                } = self;
                let slot = &mut slots[i as usize];
                slot.sending = false;
                let mut buf = c.take_sent().unwrap_or_default();
                let alive = slot.conn.as_ref().is_some_and(|c| !c.is_done());
                if res >= 0 && (res as usize) < buf.len() && alive {
                    // Short write: send the rest before anything else.
                    buf.drain(..res as usize);
                    start_send(ring, slot, i, buf, inflight, pool);
                } else {
                    buf.clear();
                    if buf.capacity() <= 64 * 1024 {
                        pool.push(buf);
                    }
                    if let (true, Some(conn)) =
                        (res < 0 && res != -libc::ECANCELED, slot.conn.as_mut())
                    {
                        conn.handle_error(&mut env.ctx(), now, Failure::from_errno(-res));
                    }
                }
            }
            Op::Close => self.op_done(i),
            Op::Setup => {
                // Socket, option or bind failed; connect and send follow with -ECANCELED.
                let Shard { env, slots, .. } = self;
                if let (true, Some(conn)) = (
                    res < 0 && res != -libc::ECANCELED,
                    slots[i as usize].conn.as_mut(),
                ) {
                    conn.handle_error(&mut env.ctx(), now, Failure::from_errno(-res));
                }
            }
            Op::Wake | Op::Cancel => {}
        }
        if self.slots[i as usize].conn.is_some() {
            self.after(i, now);
        }
        self.maybe_free(i);
    }
}
