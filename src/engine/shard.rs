//! One shard: a pinned thread owning an io_uring ring, a slab of connections, a timer wheel,
//! its share of the connect schedule and its own [`ShardStats`]. Nothing here is shared with
//! other shards; the engine only receives interval snapshots and can wake the shard to stop.

use crate::engine::reconnect::{Policy, Storm};
use crate::engine::stages::Ramp;
use crate::engine::timer::{TimerEntry, TimerWheel};
use crate::io::uring::{pack, unpack, Completion, Op, Ring, RingConfig, Waker};
use crate::metrics::ShardStats;
use crate::proto::conn::{
    Conn, ConnConfig, Ctx, Ending, Event, Failure, Micros, Mode, Outcome, Phase,
};
use crate::proto::rng::Rng;
use crate::proto::tls::{TlsClient, TlsSettings};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
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

/// What one shard does: the shared settings and one [`GroupPlan`] per scenario.
#[derive(Debug)]
pub struct ShardPlan {
    /// Shard index (0-based).
    pub index: usize,
    /// Shards in the run (connection numbers interleave across them).
    pub shards: usize,
    /// CPU to pin to, if any.
    pub cpu: Option<usize>,
    /// Resolved target address.
    pub target: SocketAddr,
    /// Run length from the start, µs; the stop begins then.
    pub duration_us: Micros,
    /// How long replies in flight are awaited after the stop, µs.
    pub drain_us: Micros,
    /// TLS settings (wss://); the shard builds its own client from them, shared by all groups.
    pub tls: Option<Arc<TlsSettings>>,
    /// Source addresses to rotate (empty: let the kernel choose).
    pub sources: Vec<IpAddr>,
    /// Ring sizing.
    pub ring: RingConfig,
    /// The scenarios' shares on this shard, in scenario order.
    pub groups: Vec<GroupPlan>,
}

/// One scenario's share of a shard: its connections, schedule and behaviour.
#[derive(Debug)]
pub struct GroupPlan {
    /// Connections this group holds open on this shard.
    pub connections: u64,
    /// µs between connection openings.
    pub open_interval_us: f64,
    /// µs after the start before the first opening (interleaves shards, delays a scenario).
    pub open_offset_us: f64,
    /// Connection behaviour.
    pub conn: ConnConfig,
    /// Replace failed or server-closed connections to hold the count.
    pub reconnect: bool,
    /// When replacements are opened.
    pub policy: Policy,
    /// A reconnect storm, if any.
    pub storm: Option<Storm>,
    /// Stages: this group's open-connection target over time (inactive: hold `connections`).
    pub ramp: Ramp,
    /// Open model: sessions to start at the connect rate (each lives its lifetime, none is
    /// replaced); `connections` is then only the room for those alive at once.
    pub arrivals: Option<u64>,
    /// Per-connection auth: tokens for this shard's openings (each opening waits for one).
    pub tokens: Option<Receiver<String>>,
}

/// Point-in-time gauges of one group on a shard.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Open WebSocket sessions.
    pub open: u64,
    /// Connections in any phase.
    pub live: u64,
    /// Largest delay of a connection opening behind its schedule, µs.
    pub schedule_lag_max_us: u64,
    /// When the group first had as many sessions opened as its target, µs (0: not yet).
    pub ramp_done_us: u64,
    /// Storms: the longest time until the open sessions were back at the target, µs.
    pub storm_worst_us: u64,
    /// A storm not recovered from (at the end, or when the next came).
    pub storm_unrecovered: bool,
    /// Stages: the most connections the group was behind its ramp (connect rate too low?).
    pub ramp_deficit_max: u64,
}

/// Messages from a shard to the engine.
#[derive(Debug)]
pub enum ShardEvent {
    /// The ring is up; the waker stops the shard early.
    Ready(usize, Waker),
    /// The shard could not start.
    Failed(usize, String),
    /// Once a second: what each group gathered since the last interval.
    Interval(usize, Vec<ShardStats>, Vec<Gauges>),
    /// Final interval; the shard has closed everything and exits.
    Done(usize, Vec<ShardStats>, Vec<Gauges>),
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
    /// The wall clock at the epoch, Unix µs: one for all shards, so times stamped on one
    /// shard (a publisher's) compare exactly with another's (a subscriber's).
    pub epoch_unix_us: OnceLock<u64>,
}

#[derive(Debug)]
struct Slot {
    /// In use by a connection (or by its requests still in flight).
    allocated: bool,
    gen: u32,
    /// The group (scenario) of the connection.
    group: u16,
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
            group: 0,
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

/// One scenario on this shard: its plan, config, statistics and schedule state.
struct Group {
    plan: GroupPlan,
    cfg: ConnConfig,
    stats: ShardStats,
    pending_opens: u64,
    initial_left: u64,
    next_open_at: f64,
    /// Connections of the group in any phase.
    live: u64,
    lag_max: u64,
    /// Sessions opened so far, and when that count first reached the target (µs).
    ramp: (u64, Micros),
    /// Replacements waiting for their policy's delay: (when, failed attempts, last delay).
    reopen: BinaryHeap<Reverse<(Micros, u32, Micros)>>,
    /// Sessions open now.
    open_now: u64,
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
    /// Highest `seq` of lost sessions, for their replacements' `on_reconnect` message.
    resume_seqs: Vec<u64>,
    /// Per-connection auth: where tokens come from, and the one for the next opening.
    tokens: Option<Receiver<String>>,
    next_token: Option<String>,
    /// The shard's TLS client (shared by its groups) and wall clock at the epoch, Unix µs:
    /// runtime values its connections get through their context.
    tls: Option<Arc<TlsClient>>,
    epoch_unix_us: u64,
}

impl Group {
    fn new(mut plan: GroupPlan, tls: Option<Arc<TlsClient>>, epoch_unix_us: u64) -> Self {
        // With stages the ramp decides what to open, not a fixed count.
        let n = if plan.ramp.is_active() {
            0
        } else {
            plan.arrivals.unwrap_or(plan.connections)
        };
        Self {
            cfg: plan.conn.clone(),
            stats: ShardStats::new(),
            pending_opens: n,
            initial_left: n,
            next_open_at: plan.open_offset_us,
            live: 0,
            lag_max: 0,
            ramp: (0, 0),
            reopen: BinaryHeap::new(),
            open_now: 0,
            storm_next: plan.storm.map(|s| s.at),
            storm_started: None,
            storm_worst: 0,
            storm_unrecovered: false,
            retiring: 0,
            opened: Vec::new(),
            ramp_deficit_max: 0,
            resume_seqs: Vec::new(),
            tokens: plan.tokens.take(),
            next_token: None,
            tls,
            epoch_unix_us,
            plan,
        }
    }

    /// Whether the next opening can go: it needs no token, or one has arrived.
    fn token_ready(&mut self) -> bool {
        let Some(rx) = &self.tokens else { return true };
        if self.next_token.is_none() {
            self.next_token = rx.try_recv().ok();
        }
        self.next_token.is_some()
    }

    /// Waiting for a token: openings that are due cannot go yet.
    fn starved(&self) -> bool {
        self.tokens.is_some() && self.next_token.is_none()
    }

    fn ctx<'a>(&'a mut self, rng: &'a mut Rng) -> Ctx<'a, ShardStats> {
        Ctx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            rng,
            tls: self.tls.as_deref(),
            epoch_unix_us: self.epoch_unix_us,
            token: None,
        }
    }

    /// A session opened: it counts towards the ramp, the open sessions and a storm's
    /// recovery.
    fn session_opened(&mut self, now: Micros) {
        self.ramp.0 += 1;
        if self.ramp.0 == self.plan.connections {
            self.ramp.1 = now;
        }
        self.open_now += 1;
        if let Some(started) = self.storm_started {
            if self.open_now >= self.plan.connections {
                self.storm_worst = self.storm_worst.max(now - started);
                self.storm_started = None;
            }
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
    let tls = match plan.tls.as_ref().map(|settings| settings.client()) {
        None => None,
        Some(Ok(c)) => Some(Arc::new(c)),
        Some(Err(e)) => {
            let _ = tx.send(ShardEvent::Failed(index, format!("TLS setup failed: {e}")));
            gate.barrier.wait();
            return;
        }
    };
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
    let epoch_unix_us = gate.epoch_unix_us.get().copied().unwrap_or(0);
    let mut shard = Shard::new(plan, ring, (epoch, epoch_unix_us), tls, flags, tx);
    shard.run();
}

struct Shard {
    plan: ShardPlan,
    groups: Vec<Group>,
    rng: Rng,
    ring: Ring,
    slots: Vec<Slot>,
    free: Vec<u32>,
    wheel: TimerWheel,
    epoch: Instant,
    flags: Arc<StopFlags>,
    tx: Sender<ShardEvent>,
    source_idx: usize,
    stopping: bool,
    /// Every connection was cut short (second Ctrl-C, hard deadline or a ring error).
    aborted: bool,
    hard_deadline: Micros,
    /// Close-handshake wait after the stop (the longest of the groups'), µs.
    close_wait: Micros,
    next_tick: Micros,
    live: u64,
    inflight: u64,
    dirty: Vec<u32>,
    cq: Vec<Completion>,
    fired: Vec<TimerEntry>,
    pool: Vec<Vec<u8>>,
    /// When the last connection ended after the stop.
    all_done_at: Option<Micros>,
    /// Connections made so far (numbers them run-wide: index + shards × this).
    conns_made: u64,
}

impl Shard {
    fn new(
        mut plan: ShardPlan,
        ring: Ring,
        (epoch, epoch_unix_us): (Instant, u64),
        tls: Option<Arc<TlsClient>>,
        flags: Arc<StopFlags>,
        tx: Sender<ShardEvent>,
    ) -> Self {
        let groups: Vec<Group> = std::mem::take(&mut plan.groups)
            .into_iter()
            .map(|g| Group::new(g, tls.clone(), epoch_unix_us))
            .collect();
        let n: u64 = groups.iter().map(|g| g.pending_opens).sum();
        Self {
            rng: Rng::from_entropy(plan.index as u64 + 1),
            source_idx: plan.index,
            slots: Vec::with_capacity(n as usize),
            close_wait: groups.iter().map(|g| g.cfg.close_wait).max().unwrap_or(0),
            groups,
            plan,
            ring,
            free: Vec::new(),
            wheel: TimerWheel::new(),
            epoch,
            flags,
            tx,
            stopping: false,
            aborted: false,
            hard_deadline: u64::MAX,
            next_tick: SECOND,
            live: 0,
            inflight: 0,
            dirty: Vec::new(),
            cq: Vec::with_capacity(1024),
            fired: Vec::new(),
            pool: Vec::new(),
            all_done_at: None,
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
            for gi in 0..self.groups.len() {
                let g = &mut self.groups[gi];
                if let (Some(storm), Some(next)) = (g.plan.storm, g.storm_next) {
                    if !self.stopping && now >= next {
                        g.storm_next = (storm.every > 0).then(|| next + storm.every);
                        self.storm(gi, now, storm);
                    }
                }
                if !self.stopping {
                    if self.groups[gi].plan.ramp.is_active() {
                        self.follow_ramp(gi, now);
                    }
                    self.open_due(gi, now);
                }
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
            for g in &self.groups {
                // Openings that wait for a token look again in 1 ms, not in a spin.
                let floor = if g.starved() { now + 1_000 } else { 0 };
                if g.pending_opens > 0 {
                    t = t.min((g.next_open_at as Micros).max(floor));
                }
                if let Some(Reverse((at, _, _))) = g.reopen.peek() {
                    t = t.min((*at).max(floor));
                }
                if g.plan.ramp.is_active() {
                    let want = g.plan.ramp.target(now);
                    if g.plan.ramp.ramping(now) || want != g.live - g.retiring {
                        t = t.min(now + 1000);
                    } else if let Some(c) = g.plan.ramp.next_change(now) {
                        t = t.min(c);
                    }
                }
                if let Some(next) = g.storm_next {
                    t = t.min(next);
                }
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
        let mut open = vec![0u64; self.groups.len()];
        for s in &self.slots {
            if s.conn.as_ref().is_some_and(|c| c.phase() == Phase::Open) {
                open[s.group as usize] += 1;
            }
        }
        let gauges = self
            .groups
            .iter()
            .zip(open)
            .map(|(g, open)| Gauges {
                open,
                live: g.live,
                schedule_lag_max_us: g.lag_max,
                ramp_done_us: g.ramp.1,
                storm_worst_us: g.storm_worst,
                storm_unrecovered: g.storm_unrecovered || g.storm_started.is_some(),
                ramp_deficit_max: g.ramp_deficit_max,
            })
            .collect();
        let stats = self
            .groups
            .iter_mut()
            .map(|g| g.stats.take_interval())
            .collect();
        let ev = if done {
            ShardEvent::Done(self.plan.index, stats, gauges)
        } else {
            ShardEvent::Interval(self.plan.index, stats, gauges)
        };
        let _ = self.tx.send(ev);
    }

    fn begin_stop(&mut self, now: Micros, interrupted: bool) {
        self.stopping = true;
        for g in &mut self.groups {
            g.pending_opens = 0;
            g.reopen.clear();
        }
        let mut drain = self.plan.drain_us;
        if interrupted {
            // Ctrl-C must finish within 2 s: shorten the drain and the close handshake.
            drain = drain.min(500_000);
            self.close_wait = self.close_wait.min(300_000);
            for g in &mut self.groups {
                g.cfg.close_wait = g.cfg.close_wait.min(300_000);
            }
        }
        self.hard_deadline = now
            .saturating_add(drain)
            .saturating_add(self.close_wait)
            .saturating_add(200_000);
        self.each_conn(now, |conn, ctx| conn.stop(ctx, now, now + drain));
    }

    /// Applies `f` to every live connection with its group's context, then re-arms it.
    fn each_conn(&mut self, now: Micros, f: impl Fn(&mut Conn, &mut Ctx<'_, ShardStats>)) {
        for i in 0..self.slots.len() {
            let Shard {
                groups, slots, rng, ..
            } = self;
            let slot = &mut slots[i];
            if let Some(conn) = slot.conn.as_mut() {
                f(conn, &mut groups[slot.group as usize].ctx(rng));
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
        for g in &mut self.groups {
            g.pending_opens = 0;
        }
        self.hard_deadline = self.hard_deadline.min(now);
        self.each_conn(now, |conn, ctx| conn.abort(ctx, now));
    }

    fn open_due(&mut self, gi: usize, now: Micros) {
        let nowf = now as f64;
        // Openings due within the next OPEN_SLACK_US go out in this batch: one wake-up and one
        // submission per millisecond instead of one per connection; the rate per second is
        // unchanged.
        // Bounded per turn: an opening that fails at once (EMFILE) is replaced at once in
        // handshake mode, and completions must still be reaped meanwhile.
        let mut budget = self.groups[gi].plan.connections.max(64);
        loop {
            let g = &mut self.groups[gi];
            let due = g.pending_opens > 0 && g.next_open_at <= nowf + OPEN_SLACK_US && budget > 0;
            // A token is only taken for an opening that is due.
            if !(due && g.token_ready()) {
                break;
            }
            budget -= 1;
            let lag = (nowf - g.next_open_at).max(0.0) as u64;
            g.lag_max = g.lag_max.max(lag);
            g.pending_opens -= 1;
            g.next_open_at += g.plan.open_interval_us;
            // Initial openings come first; anything beyond them replaces a lost connection.
            let replacement = g.initial_left == 0;
            if !replacement {
                g.initial_left -= 1;
            } else if g.plan.conn.mode == Mode::Session {
                g.stats.counters.reconnects += 1;
            }
            self.open_one(gi, now, (0, 0), replacement);
        }
        while budget > 0 {
            let g = &mut self.groups[gi];
            match g.reopen.peek() {
                Some(Reverse((at, _, _))) if *at as f64 <= nowf + OPEN_SLACK_US => {}
                _ => break,
            }
            if !g.token_ready() {
                break;
            }
            let Some(Reverse((_, attempt, delay))) = g.reopen.pop() else {
                break;
            };
            budget -= 1;
            g.stats.counters.reconnects += 1;
            self.open_one(gi, now, (attempt, delay), true);
        }
    }

    /// Stages: opens (at up to the connect rate) or retires (newest first, with a close
    /// handshake) connections so that the group's live count follows the ramp.
    fn follow_ramp(&mut self, gi: usize, now: Micros) {
        let g = &mut self.groups[gi];
        // Entries of connections that have ended are skipped when retiring; drop them now and
        // then so a long run with refills does not grow the list.
        if g.opened.len() > 2 * g.live as usize + 1024 {
            let slots = &self.slots;
            g.opened.retain(|&(j, gen)| {
                slots[j as usize].gen == gen && slots[j as usize].conn.is_some()
            });
        }
        let want = g.plan.ramp.target(now);
        let have = g.live - g.retiring;
        if have < want {
            let nowf = now as f64;
            let mut short = want - have;
            let mut budget = g.plan.connections.max(64);
            while short > 0
                && budget > 0
                && self.groups[gi].next_open_at <= nowf + OPEN_SLACK_US
                && self.groups[gi].token_ready()
            {
                let g = &mut self.groups[gi];
                g.next_open_at += g.plan.open_interval_us;
                short -= 1;
                budget -= 1;
                // A refill takes the place of a lost session if there is one to resume.
                self.open_one(gi, now, (0, 0), true);
            }
            let g = &mut self.groups[gi];
            g.ramp_deficit_max = g.ramp_deficit_max.max(short);
            return;
        }
        // No credit for the idle time: a later ramp starts at the connect rate, not in a burst.
        g.next_open_at = g.next_open_at.max(now as f64);
        let mut extra = have - want;
        while extra > 0 {
            let Some((i, gen)) = self.groups[gi].opened.pop() else {
                break;
            };
            let Shard {
                groups, slots, rng, ..
            } = self;
            let slot = &mut slots[i as usize];
            if slot.gen != gen || slot.retired {
                continue;
            }
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            let g = &mut groups[gi];
            slot.retired = true;
            g.retiring += 1;
            extra -= 1;
            let drain_until = now.saturating_add(self.plan.drain_us);
            conn.stop(&mut g.ctx(rng), now, drain_until);
            self.after(i, now);
        }
    }

    /// Drops the storm's share of this group's open sessions on this shard, chosen at random.
    fn storm(&mut self, gi: usize, now: Micros, storm: Storm) {
        let g = &mut self.groups[gi];
        if g.storm_started.is_some() {
            // The previous storm is still being recovered from: it never was.
            g.storm_unrecovered = true;
        }
        g.storm_started = Some(now);
        let mut open: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| {
                let s = &self.slots[i as usize];
                s.group as usize == gi && s.conn.as_ref().is_some_and(|c| c.phase() == Phase::Open)
            })
            .collect();
        let k = ((open.len() as f64) * storm.fraction).round() as usize;
        // Partial Fisher-Yates: the first k are a uniform sample.
        for j in 0..k {
            let r = j + self.rng.below((open.len() - j) as u64) as usize;
            open.swap(j, r);
        }
        for &i in &open[..k] {
            let Shard {
                groups, slots, rng, ..
            } = self;
            let slot = &mut slots[i as usize];
            let g = &mut groups[gi];
            slot.rst = storm.rst;
            if let Some(conn) = slot.conn.as_mut() {
                conn.storm_drop(&mut g.ctx(rng), now, !storm.rst);
            }
            // Dropped now, even while its close handshake runs: recovery counts from here.
            slot.uncounted = true;
            g.open_now = g.open_now.saturating_sub(1);
            self.after(i, now);
        }
        if k == 0 {
            self.groups[gi].storm_started = None;
        }
    }

    /// A replacement for a lost connection: by the policy's delay, or through the connect
    /// schedule.
    fn replace(&mut self, gi: usize, now: Micros, retry: (u32, Micros)) {
        let g = &mut self.groups[gi];
        match g.plan.policy.delay(retry.0, retry.1, &mut self.rng) {
            Some(d) => g.reopen.push(Reverse((now.saturating_add(d), retry.0, d))),
            None => {
                if g.pending_opens == 0 {
                    g.next_open_at = g.next_open_at.max(now as f64);
                }
                g.pending_opens += 1;
            }
        }
    }

    /// Opens one connection of group `gi`; a `replacement` resumes a lost session's
    /// sequence if one is waiting (`on_reconnect`).
    fn open_one(&mut self, gi: usize, now: Micros, retry: (u32, Micros), replacement: bool) {
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
            groups,
            rng,
            slots,
            ring,
            inflight,
            live,
            pool,
            plan,
            conns_made,
            ..
        } = self;
        let g = &mut groups[gi];
        let slot = &mut slots[i as usize];
        slot.allocated = true;
        slot.group = gi as u16;
        slot.retry = retry;
        if g.plan.ramp.is_active() {
            g.opened.push((i, slot.gen));
        }
        let mut ctx = g.ctx(rng);
        let mut conn = Conn::new(&mut ctx, now);
        conn.set_id(plan.index as u64 + plan.shards as u64 * *conns_made);
        if replacement && g.cfg.on_reconnect.is_some() {
            if let Some(seq) = g.resume_seqs.pop() {
                conn.resume_from(seq);
            }
        }
        *conns_made += 1;
        *live += 1;
        g.live += 1;
        if conn.is_done() {
            // TLS could not even start; counted as a failure already.
            slot.conn = Some(conn);
            return self.after(i, now);
        }
        let mut buf = pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SEND_BUF_CAPACITY));
        // Its own token goes into its upgrade request, rendered now; it is kept nowhere.
        let token = g.next_token.take();
        let mut ctx = g.ctx(rng);
        ctx.token = token.as_deref();
        conn.poll_transmit(&mut ctx, now, &mut buf);
        ctx.token = None;
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
            let Shard {
                groups, slots, rng, ..
            } = self;
            let Some(slot) = slots.get_mut(e.slot as usize) else {
                continue;
            };
            if slot.gen != e.gen || slot.timer_at != e.at {
                continue; // re-armed or reused since: a stale entry
            }
            slot.timer_at = 0;
            if let Some(conn) = slot.conn.as_mut() {
                conn.handle_timer(&mut groups[slot.group as usize].ctx(rng), now);
                self.after(e.slot, now);
            }
        }
        self.fired = fired;
    }

    /// After any input: act on the connection's events (tear it down once it ended), re-arm
    /// its timer, queue its output.
    fn after(&mut self, i: u32, now: Micros) {
        while let Some(ev) = self.slots[i as usize]
            .conn
            .as_mut()
            .and_then(Conn::poll_event)
        {
            match ev {
                Event::SessionOpened => {
                    let gi = self.slots[i as usize].group as usize;
                    self.groups[gi].session_opened(now);
                }
                Event::Ended(end) => return self.teardown(i, now, end),
            }
        }
        let slot = &mut self.slots[i as usize];
        let Some(conn) = slot.conn.as_ref() else {
            return;
        };
        let cfg = &self.groups[slot.group as usize].cfg;
        if let Some(t) = conn.poll_timeout(cfg) {
            // A send that is due now goes out through the dirty list, or, while a send is in
            // flight, when that send completes: arming a past timer for it would only spin.
            let due_by_send = t <= now && conn.wants_transmit(cfg, now);
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
        if !slot.sending && !slot.in_dirty && conn.wants_transmit(cfg, now) {
            slot.in_dirty = true;
            self.dirty.push(i);
        }
    }

    fn flush(&mut self, now: Micros) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let Shard {
                groups,
                rng,
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
            conn.poll_transmit(&mut groups[slot.group as usize].ctx(rng), now, &mut buf);
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

    /// A connection ended: account for it (a replacement, the resume sequence, the open
    /// count) and close its socket.
    fn teardown(&mut self, i: u32, now: Micros, end: Ending) {
        let slot = &mut self.slots[i as usize];
        if slot.conn.take().is_none() {
            return;
        }
        let gi = slot.group as usize;
        let (retired, retry) = (slot.retired, slot.retry);
        self.live -= 1;
        let g = &mut self.groups[gi];
        g.live -= 1;
        let cycles = g.plan.conn.mode != Mode::Session;
        if retired {
            g.retiring -= 1;
        }
        if g.plan.arrivals.is_some() {
            // Open model: arrivals do not depend on departures.
        } else if g.plan.ramp.is_active() {
            // Stages: whatever was lost, the ramp opens again; a lost session's refill
            // resumes it.
            let lost = matches!(end.outcome, Outcome::Failed(_) | Outcome::ServerClosed(_))
                || end.storm_dropped;
            if let (true, Some(seq)) =
                (lost && !retired && g.cfg.on_reconnect.is_some(), end.resume)
            {
                g.resume_seqs.push(seq);
            }
        } else if cycles && !self.stopping {
            // Handshake mode: every finished cycle, failed or not, makes room for the next.
            if g.pending_opens == 0 {
                g.next_open_at = g.next_open_at.max(now as f64);
            }
            g.pending_opens += 1;
        } else if !self.stopping {
            let lost = matches!(end.outcome, Outcome::Failed(_) | Outcome::ServerClosed(_));
            // A storm's sessions always come back: recovering from it is what is measured.
            if (g.plan.reconnect && lost) || end.storm_dropped {
                // Failed attempts back off further; a session that had opened starts over.
                let retry = if end.established {
                    (0, 0)
                } else {
                    (retry.0.saturating_add(1), retry.1)
                };
                if let (true, Some(seq)) = (g.cfg.on_reconnect.is_some(), end.resume) {
                    g.resume_seqs.push(seq);
                }
                self.replace(gi, now, retry);
            }
        }
        let slot = &mut self.slots[i as usize];
        if end.established && !slot.uncounted {
            let g = &mut self.groups[gi];
            g.open_now = g.open_now.saturating_sub(1);
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
            if slot.sending && end.outcome != Outcome::Completed {
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
        let gi = self.slots[i as usize].group as usize;
        match op {
            Op::Connect => {
                self.op_done(i);
                let Shard {
                    groups,
                    rng,
                    slots,
                    ring,
                    inflight,
                    ..
                } = self;
                let slot = &mut slots[i as usize];
                slot.connecting = false;
                if let Some(conn) = slot.conn.as_mut() {
                    let mut ctx = groups[gi].ctx(rng);
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
                    groups,
                    rng,
                    slots,
                    ring,
                    inflight,
                    ..
                } = self;
                let g = &mut groups[gi];
                let slot = &mut slots[i as usize];
                let alive = slot.conn.as_ref().is_some_and(|c| !c.is_done());
                if let Some(b) = c.take_buffer() {
                    if let (true, Some(conn)) = (res > 0, slot.conn.as_mut()) {
                        let data = ring.buffer(&b);
                        conn.handle_recv(&mut g.ctx(rng), now, data);
                    }
                    ring.recycle(b);
                }
                if let Some(conn) = slot.conn.as_mut() {
                    let mut ctx = g.ctx(rng);
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
                    groups,
                    rng,
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
                        conn.handle_error(&mut groups[gi].ctx(rng), now, Failure::from_errno(-res));
                    }
                }
            }
            Op::Close => self.op_done(i),
            Op::Setup => {
                // Socket, option or bind failed; connect and send follow with -ECANCELED.
                let Shard {
                    groups, slots, rng, ..
                } = self;
                if let (true, Some(conn)) = (
                    res < 0 && res != -libc::ECANCELED,
                    slots[i as usize].conn.as_mut(),
                ) {
                    conn.handle_error(&mut groups[gi].ctx(rng), now, Failure::from_errno(-res));
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
