//! One shard: a pinned thread owning an I/O backend (an io_uring ring or an epoll instance,
//! behind [`Backend`]), a slab of connections, a timer wheel, its share of the connect
//! schedule and its own [`ShardStats`]. Nothing here is shared with
//! other shards; the engine only receives interval snapshots and can wake the shard to stop.
//!
//! This file holds what the engine sees (the plan, the events, the stop flags, the start gate)
//! and the loop: read the clock once per turn, stop when due, expire timers, open what the
//! schedule says, flush output, wait for the backend, hand completions on. The rest, one concern
//! per file: `slot` (the slab), `group` (a scenario's share and its connections' context),
//! `schedule` (openings, stages, replacements), `storm` (reconnect storms), `completion`
//! (feeding connections what the backend and the timers report) and `lifecycle` (acting on a
//! connection's events after each call: open counts, teardown, re-arming).

use crate::engine::stages::Ramp;
use crate::engine::steer::Knob;
use crate::engine::timer::{TimerEntry, TimerWheel};
use crate::io::backend::{Backend, BackendKind, Completion, IoConfig, Waker};
use crate::io::epoll::Poller;
use crate::io::sock;
use crate::io::uring::Ring;
use crate::metrics::health::ShardHealth;
use crate::metrics::ShardStats;
use crate::plan::reconnect::{Policy, Storm};
use crate::proto::conn::{Conn, ConnConfig, Ctx, Failure, Micros, Phase};
use crate::proto::rng::Rng;
use crate::proto::tls::{TlsClient, TlsFailure, TlsSettings};
use std::cmp::Reverse;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

mod completion;
mod group;
mod lifecycle;
mod schedule;
mod slot;
mod storm;
pub mod wall;

use self::group::Group;
use self::slot::Slot;
use self::wall::WallAnchor;

const SECOND: Micros = 1_000_000;

/// Where Unix seconds begin, µs after an epoch at `epoch_unix_us`.
pub(crate) fn tick_phase(epoch_unix_us: u64) -> Micros {
    (SECOND - epoch_unix_us % SECOND) % SECOND
}

/// The first Unix-second boundary after `now` (µs from the epoch), given the epoch's
/// [`tick_phase`]. The first interval is the rest of the epoch's Unix second.
pub(crate) fn tick_after(now: Micros, phase: Micros) -> Micros {
    if now < phase {
        return phase;
    }
    ((now - phase) / SECOND + 1) * SECOND + phase
}
/// After the stop, how long requests still in flight once every connection has ended are
/// waited for.
const LEFTOVER_GRACE_US: Micros = 200_000;
/// An interrupted stop (a signal, at any moment) ends within 2 s: the drain it allows, µs...
const HURRIED_DRAIN_US: Micros = 500_000;
/// ...the close handshake it waits for, µs...
const HURRIED_CLOSE_WAIT_US: Micros = 300_000;
/// ...and how long past its hard deadline it waits for the backend before leaving, µs.
const HURRIED_EXIT_US: Micros = 500_000;

/// What one shard does: the shared settings and one [`GroupPlan`] per scenario.
#[derive(Debug)]
pub struct ShardPlan {
    /// This shard's position among the run's shards (0-based); it tags every [`ShardEvent`] the
    /// shard sends.
    pub index: usize,
    /// Shards in the run (connection numbers interleave across them).
    pub shards: usize,
    /// `--segment` (index, count), `(0, 1)` for a whole run: the shard's k-th connection is
    /// numbered `ids.0 + ids.1 · (index + shards · k)`, unique across segments.
    pub ids: (u64, u64),
    /// The CPU the shard's thread pins itself to: its entry of `--cpus` (default: every CPU the
    /// process may use); `None`: not pinned.
    pub cpu: Option<usize>,
    /// The targets' addresses, resolved once by `plan::prepare` (one for most runs).
    pub targets: Vec<SocketAddr>,
    /// Which target each connection goes to, by its number in the run modulo this list's
    /// length: the targets' weights interleaved ([`target_order`]).
    pub target_order: Arc<[u16]>,
    /// Run length from the start, µs; the stop begins then.
    pub duration_us: Micros,
    /// How long replies in flight are awaited after the stop, µs.
    pub drain_us: Micros,
    /// TLS settings (wss://); the shard builds its own client from them, shared by all groups.
    pub tls: Option<Arc<TlsSettings>>,
    /// Source addresses to rotate (empty: let the kernel choose).
    pub sources: Vec<IpAddr>,
    /// The backend the shard runs on (chosen once for the run, `--backend`).
    pub backend: BackendKind,
    /// The backend's sizes and socket setup; `files` is the most sockets the shard holds at
    /// once (io_uring: twice its connections plus 64 spare slots, capped at the soft
    /// RLIMIT_NOFILE; epoll: its share of the process's fd table).
    pub io: IoConfig,
    /// The scenarios' shares on this shard, in scenario order.
    pub groups: Vec<GroupPlan>,
    /// Attempts on this shard in a row failing with the same persistent TLS cause
    /// ([`TlsFailure::is_persistent`]) while no connection of the run has succeeded, after
    /// which the shard stops and asks the engine to stop the run (`--max-identical-failures`,
    /// default 100; 0: never).
    pub max_identical_failures: u64,
}

/// The order connections take the targets in: smooth weighted round-robin (as nginx's), one
/// cycle of `Σ weights` entries in which target `i` appears `weights[i]` times, spread out.
pub fn target_order(weights: &[u32]) -> Arc<[u16]> {
    let total: i64 = weights.iter().map(|&w| i64::from(w.max(1))).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total.max(1) as usize);
    for _ in 0..total.max(1) {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w.max(1));
        }
        let best = (0..current.len())
            .max_by_key(|&i| (current[i], -(i as i64)))
            .unwrap_or(0);
        current[best] -= total;
        out.push(best as u16);
    }
    out.into()
}

/// One scenario's share of a shard: its connections, schedule and behaviour.
#[derive(Debug)]
pub struct GroupPlan {
    /// Connections this group holds open on this shard.
    pub connections: u64,
    /// µs between this group's openings on this shard: 10⁶ / its share of `--connect-rate` (0 when
    /// the rate is unlimited).
    pub open_interval_us: f64,
    /// µs after the start before the first opening (interleaves shards, delays a scenario).
    pub open_offset_us: f64,
    /// How each connection of the group behaves: the scenario's [`ConnConfig`] (`RunPlan::conn`),
    /// unchanged.
    pub conn: ConnConfig,
    /// Replace failed or server-closed connections to hold the count.
    pub reconnect: bool,
    /// When replacements open (`--reconnect-policy`; default `rate`: queued at the connect rate).
    pub policy: Policy,
    /// The reconnect storm to cause (`--storm-at`); `None`: no storm.
    pub storm: Option<Storm>,
    /// Stages: this group's open-connection target over time (inactive: hold `connections`).
    pub ramp: Ramp,
    /// Open model: sessions to start at the connect rate (each lives its lifetime, none is
    /// replaced); `connections` is then only the room for those alive at once.
    pub arrivals: Option<u64>,
    /// Per-connection auth: tokens for this shard's openings (each opening waits for one).
    pub tokens: Option<Receiver<String>>,
    /// Steered from outside while the run goes (`find-max`): read on every turn.
    pub knob: Option<Arc<Knob>>,
}

/// Point-in-time gauges of one group on a shard.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Connections of the group on this shard in the `Open` phase (upgraded, not ended) when the
    /// interval was sent.
    pub open: u64,
    /// Connections of the group on this shard holding a slot, in any phase from connecting to
    /// closing.
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
    /// Wall-clock steps the shard has seen so far (the same in each of its groups' gauges;
    /// every shard sees the same steps of the one system clock).
    pub clock_steps: u64,
}

/// Messages from a shard to the engine.
#[derive(Debug)]
pub enum ShardEvent {
    /// The backend is up; the waker stops the shard early.
    Ready(usize, Waker),
    /// The shard could not start (TLS client or backend setup) or its backend failed during the run:
    /// its index and the reason.
    Failed(usize, String),
    /// `max_identical_failures` attempts in a row failed with this cause and no connection of
    /// the run ever succeeded: the shard is stopping, and the run should.
    SameFailures(usize, Failure, u64),
    /// Once a second: what each group gathered since the last interval, and the shard's own
    /// health over it.
    Interval(usize, Vec<ShardStats>, Vec<Gauges>, ShardHealth),
    /// Final interval; the shard has closed everything and exits.
    Done(usize, Vec<ShardStats>, Vec<Gauges>, ShardHealth),
}

/// Stop requests from the engine (checked on every wake-up).
#[derive(Debug, Default)]
pub struct StopFlags {
    /// Stop gracefully now (a signal, `--abort-on-fail`): short drain, close handshakes; read at
    /// any phase, so a stop already under way is hurried too.
    pub interrupt: AtomicBool,
    /// Stop immediately: close every socket without waiting.
    pub abort: AtomicBool,
    /// Set by the first shard where a connection succeeded (a session opened, a handshake
    /// cycle completed): from then on no shard stops the run for identical failures.
    pub succeeded: AtomicBool,
}

/// Start synchronisation: all shards begin at the same instant.
#[derive(Debug)]
pub struct StartGate {
    /// `shards + 1` parties: every shard once its backend is up (or it failed), and the engine, which
    /// sets `epoch` first.
    pub barrier: Barrier,
    /// The common epoch, set by the engine before it passes the barrier.
    pub epoch: OnceLock<Instant>,
    /// The wall clock at the epoch, Unix µs: one for all shards, so times stamped on one
    /// shard (a publisher's) compare with another's (a subscriber's). Each shard then
    /// re-anchors once a second ([`wall`]), so a clock adjustment is followed.
    pub epoch_unix_us: OnceLock<u64>,
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
    match plan.backend {
        BackendKind::Uring => start::<Ring>(plan, tls, flags, &gate, tx),
        BackendKind::Epoll => start::<Poller>(plan, tls, flags, &gate, tx),
    }
}

/// Sets up backend `B`, reports it ready, waits for the common start and runs the shard.
fn start<B: Backend>(
    plan: ShardPlan,
    tls: Option<Arc<TlsClient>>,
    flags: Arc<StopFlags>,
    gate: &StartGate,
    tx: Sender<ShardEvent>,
) {
    let index = plan.index;
    let io = B::new(plan.io, &plan.targets, &plan.sources).and_then(|b| Ok((b.waker()?, b)));
    let (waker, io) = match io {
        Ok(x) => x,
        Err(e) => {
            let _ = tx.send(ShardEvent::Failed(
                index,
                format!(
                    "{} setup failed: {e} (check `sockstorm doctor`)",
                    plan.backend.name()
                ),
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
    let mut shard = Shard::new(plan, io, (epoch, epoch_unix_us), tls, flags, tx);
    shard.run();
}

struct Shard<B> {
    plan: ShardPlan,
    groups: Vec<Group>,
    rng: Rng,
    io: B,
    slots: Vec<Slot>,
    free: Vec<u32>,
    wheel: TimerWheel,
    epoch: Instant,
    /// Unix time of the epoch, re-read at each per-second tick.
    wall: WallAnchor,
    flags: Arc<StopFlags>,
    tx: Sender<ShardEvent>,
    /// The next source address, per target (ports are per source and target).
    source_idx: Vec<usize>,
    stopping: bool,
    /// The stop was interrupted (a signal, `--abort-on-fail`, identical failures): drain and
    /// close waits are cut to end within 2 s, whether the stop began with it or before.
    hurried: bool,
    /// Every connection was cut short (second signal, hard deadline or a backend error).
    aborted: bool,
    hard_deadline: Micros,
    /// Close-handshake wait after the stop (the longest of the groups'), µs.
    close_wait: Micros,
    /// The next per-second report, µs from the epoch: on a Unix-second boundary, so that
    /// every host's timeline covers the same seconds ([`tick_after`]).
    next_tick: Micros,
    /// Where Unix seconds begin, µs after the epoch (0 ..= 999,999).
    tick_phase: Micros,
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
    /// A connection of the run has succeeded (this shard's or, through the flags, another's).
    succeeded: bool,
    /// The last persistent TLS failure and how many attempts in a row failed with it.
    same_failures: Option<(TlsFailure, u64)>,
    /// `max_identical_failures` was reached: the shard stops.
    gave_up: bool,
    /// This interval's health: timer lateness so far (CPU and backlog are read at its end).
    health: ShardHealth,
    /// Where this interval began: µs from the epoch, thread CPU µs, µs waiting for a CPU,
    /// backlog events.
    health_mark: (Micros, u64, u64, u64),
}

impl<B: Backend> Shard<B> {
    fn new(
        mut plan: ShardPlan,
        io: B,
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
            source_idx: vec![plan.index; plan.targets.len().max(1)],
            slots: Vec::with_capacity(n as usize),
            close_wait: groups.iter().map(|g| g.cfg.close_wait).max().unwrap_or(0),
            groups,
            plan,
            io,
            free: Vec::new(),
            wheel: TimerWheel::new(),
            epoch,
            wall: WallAnchor::new(epoch_unix_us),
            flags,
            tx,
            stopping: false,
            hurried: false,
            aborted: false,
            hard_deadline: u64::MAX,
            next_tick: tick_after(0, tick_phase(epoch_unix_us)),
            tick_phase: tick_phase(epoch_unix_us),
            live: 0,
            inflight: 0,
            dirty: Vec::new(),
            cq: Vec::with_capacity(1024),
            fired: Vec::new(),
            pool: Vec::new(),
            all_done_at: None,
            conns_made: 0,
            succeeded: false,
            same_failures: None,
            gave_up: false,
            health: ShardHealth::new(),
            health_mark: (0, 0, 0, 0),
        }
    }

    fn now(&self) -> Micros {
        self.epoch.elapsed().as_micros() as Micros
    }

    fn run(&mut self) {
        self.health_mark = self.health_now();
        loop {
            let now = self.now();
            let interrupted = self.flags.interrupt.load(Ordering::Relaxed) || self.gave_up;
            if !self.stopping {
                if interrupted || now >= self.plan.duration_us {
                    self.begin_stop(now, interrupted);
                }
            } else if interrupted && !self.hurried {
                // A signal during the drain or the close wait: it ends within 2 s too.
                self.hurry(now);
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
                    self.groups[gi].follow_knob();
                    if self.groups[gi].plan.ramp.is_active() {
                        self.follow_ramp(gi, now);
                    }
                    self.open_due(gi, now);
                }
            }
            if now >= self.next_tick {
                self.reanchor();
                self.send_interval(false);
                self.next_tick = tick_after(now, self.tick_phase);
            }
            self.flush(now);
            if self.stopping && self.live == 0 && self.inflight == 0 {
                break;
            }
            // A request the kernel never completes (a send to a peer that stopped reading)
            // must not hold the run hostage: dropping the backend cancels whatever is left.
            // Once every connection has ended, requests still in flight carry no results: a
            // short grace for their completions, then leave (seen: a connect and send of a
            // chain cut by the stop that never complete).
            if self.stopping && self.live == 0 {
                let since = *self.all_done_at.get_or_insert(now);
                if now >= since.saturating_add(LEFTOVER_GRACE_US) {
                    let _ = self.io.wait(Some(Duration::ZERO));
                    break;
                }
            }
            if self.stopping && now >= self.hard_deadline.saturating_add(self.exit_grace()) {
                // Hand the queued closes to the kernel before leaving, or their fds leak.
                let _ = self.io.wait(Some(Duration::ZERO));
                break;
            }
            let timeout = self
                .next_wake(now)
                .map(|t| Duration::from_micros(t.saturating_sub(self.now())));
            if let Err(e) = self.io.wait(timeout) {
                if !self.aborted {
                    let _ = self.tx.send(ShardEvent::Failed(
                        self.plan.index,
                        format!("{} wait failed: {e}", self.plan.backend.name()),
                    ));
                }
                self.abort_all(self.now());
            }
            self.io.reap(&mut self.cq);
            let now = self.now();
            let mut cq = std::mem::take(&mut self.cq);
            for c in cq.drain(..) {
                self.on_completion(c, now);
            }
            self.cq = cq;
        }
        self.send_interval(true);
    }

    /// Reads the wall clock against the monotonic one and hands every group's connections
    /// the new anchor (a step of the system clock is followed, and counted).
    fn reanchor(&mut self) {
        let (unix_us, mono_us) = wall::read_clocks(self.epoch);
        self.wall.handle_reading(unix_us, mono_us);
        for g in &mut self.groups {
            g.epoch_unix_us = self.wall.anchor_unix_us();
        }
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
            // Openings that wait for a slot are woken by the completion that frees one.
            let no_slot = !self.slot_available();
            for g in &self.groups {
                // Openings that wait for a token look again in 1 ms, not in a spin.
                let floor = if no_slot {
                    Micros::MAX
                } else if g.starved() {
                    now + 1_000
                } else {
                    0
                };
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
            t = t.min(self.hard_deadline.saturating_add(self.exit_grace()));
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
                clock_steps: self.wall.steps(),
            })
            .collect();
        let stats = self
            .groups
            .iter_mut()
            .map(|g| g.stats.take_interval())
            .collect();
        let health = self.take_health();
        let ev = if done {
            ShardEvent::Done(self.plan.index, stats, gauges, health)
        } else {
            ShardEvent::Interval(self.plan.index, stats, gauges, health)
        };
        let _ = self.tx.send(ev);
    }

    /// This interval's health, closed now: its timer lateness, and the thread CPU and
    /// completion backlog since the last.
    fn take_health(&mut self) -> ShardHealth {
        let mark = self.health_now();
        let (at0, cpu0, wait0, backlog0) = std::mem::replace(&mut self.health_mark, mark);
        let (at, cpu, wait, backlog) = mark;
        let mut h = std::mem::take(&mut self.health);
        h.wall_us = at.saturating_sub(at0);
        h.cpu_us = cpu.saturating_sub(cpu0);
        h.wait_us = wait.saturating_sub(wait0);
        h.backlog = backlog.saturating_sub(backlog0);
        h
    }

    /// Now: µs from the epoch, the thread's CPU µs and its µs waiting for a CPU (0 where the
    /// kernel keeps no schedstat), and backlog events so far.
    fn health_now(&mut self) -> (Micros, u64, u64, u64) {
        let (cpu, wait) = sock::thread_sched_us().unwrap_or_else(|| (sock::thread_cpu_us(), 0));
        (self.now(), cpu, wait, self.io.backlog())
    }

    fn begin_stop(&mut self, now: Micros, interrupted: bool) {
        self.stopping = true;
        for g in &mut self.groups {
            g.pending_opens = 0;
            g.reopen.clear();
        }
        let mut drain = self.plan.drain_us;
        if interrupted {
            // A signal must finish the run within 2 s: shorten the drain and the close handshake.
            drain = drain.min(HURRIED_DRAIN_US);
            self.shorten_close_wait();
        }
        self.hard_deadline = now
            .saturating_add(drain)
            .saturating_add(self.close_wait)
            .saturating_add(200_000);
        self.each_conn(now, |conn, ctx| conn.stop(ctx, now, now + drain));
    }

    /// An interruption while the stop is under way (in `--drain` or `--close-wait`): the
    /// drain ends within [`HURRIED_DRAIN_US`], close handshakes wait at most
    /// [`HURRIED_CLOSE_WAIT_US`], and the hard deadline moves in to match.
    fn hurry(&mut self, now: Micros) {
        self.shorten_close_wait();
        let drain_until = now.saturating_add(HURRIED_DRAIN_US);
        self.hard_deadline = self.hard_deadline.min(
            drain_until
                .saturating_add(self.close_wait)
                .saturating_add(200_000),
        );
        self.each_conn(now, |conn, ctx| conn.hurry(ctx, now, drain_until));
    }

    /// Caps every group's close wait at [`HURRIED_CLOSE_WAIT_US`] and marks the stop hurried.
    fn shorten_close_wait(&mut self) {
        self.hurried = true;
        self.close_wait = self.close_wait.min(HURRIED_CLOSE_WAIT_US);
        for g in &mut self.groups {
            g.cfg.close_wait = g.cfg.close_wait.min(HURRIED_CLOSE_WAIT_US);
        }
    }

    /// How long past the hard deadline the shard waits for the backend before it leaves.
    fn exit_grace(&self) -> Micros {
        if self.hurried {
            HURRIED_EXIT_US
        } else {
            SECOND
        }
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

    /// A connection succeeded: identical failures no longer stop the run.
    fn succeeded(&mut self) {
        if !self.succeeded {
            self.succeeded = true;
            self.same_failures = None;
            self.flags.succeeded.store(true, Ordering::Relaxed);
        }
    }

    /// A connection failed with `f`: counts persistent TLS failures in a row while nothing has
    /// succeeded, and stops the shard (and asks the engine to stop the run) at the limit.
    fn failed(&mut self, f: Failure) {
        let Failure::Tls(t) = f else { return };
        let limit = self.plan.max_identical_failures;
        if limit == 0 || self.succeeded || self.gave_up || self.stopping || !t.is_persistent() {
            return;
        }
        if self.flags.succeeded.load(Ordering::Relaxed) {
            self.succeeded = true;
            return;
        }
        let n = match self.same_failures {
            Some((last, n)) if last == t => n + 1,
            _ => 1,
        };
        self.same_failures = Some((t, n));
        if n >= limit {
            self.gave_up = true;
            let _ = self
                .tx
                .send(ShardEvent::SameFailures(self.plan.index, f, n));
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
}

#[cfg(test)]
mod tests {
    use super::{target_order, tick_after, tick_phase};

    #[test]
    fn target_order_gives_each_its_weight_interleaved() {
        assert_eq!(&target_order(&[1, 1, 1])[..], [0, 1, 2]);
        assert_eq!(&target_order(&[3, 1, 1])[..], [0, 1, 0, 2, 0]);
        assert_eq!(&target_order(&[5])[..], [0, 0, 0, 0, 0]);
        let o = target_order(&[2, 3]);
        assert_eq!(o.iter().filter(|&&t| t == 0).count(), 2);
        assert_eq!(o.len(), 5);
        // No target twice in a row while another has a turn owed.
        assert!(o.windows(2).all(|w| w[0] != w[1] || w[0] == 1), "{o:?}");
    }

    #[test]
    fn ticks_fall_on_unix_second_boundaries() {
        // Epoch at Unix 100.25 s: seconds begin 0.75 s after it.
        let phase = tick_phase(100_250_000);
        assert_eq!(phase, 750_000);
        assert_eq!(tick_after(0, phase), 750_000);
        assert_eq!(tick_after(750_000, phase), 1_750_000);
        assert_eq!(tick_after(1_749_999, phase), 1_750_000);
        assert_eq!(tick_after(5_100_000, phase), 5_750_000);
        // An epoch on a boundary: the first interval is a whole second.
        assert_eq!(tick_phase(7_000_000), 0);
        assert_eq!(tick_after(0, 0), 1_000_000);
        assert_eq!(tick_after(1_000_000, 0), 2_000_000);
    }
}
