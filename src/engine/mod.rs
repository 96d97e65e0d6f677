//! Orchestration: plans each shard's share (`layout`), starts one pinned shard per CPU
//! behind a common start instant (`start`), merges their once-a-second intervals for an
//! [`Observer`] and into the totals while passing on signals (`collect`), and assembles the
//! merged result (`finish`).

pub mod auth;
pub mod find_max;
pub mod shard;
pub mod stages;
pub mod steer;
pub mod timer;

use crate::io::backend::{BackendKind, IoConfig, SocketSetup, Waker};
use crate::io::probe::{self, Selected};
use crate::io::sock::{self, SockOptions};
use crate::metrics::fanout::FanoutSummary;
use crate::metrics::health::{self, ShardTally};
use crate::metrics::run::{
    BackendInfo, FailureStop, Observer, RunResult, Sample, ScenarioResult, ScenarioTick, StartAt,
    Tick,
};
use crate::metrics::{Hist, ShardStats};
use crate::plan::{Backend, Prepared, Run, RunPlan};
use shard::{Gauges, GroupPlan, ShardEvent, ShardPlan, StartGate, StopFlags};
use std::borrow::Cow;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};
use steer::Steering;

/// Descriptor-table slots per shard kept free for connections still closing while their
/// replacements open (reconnects, churn).
const TABLE_SLACK: u64 = 64;

/// Errors that stop a run before or while it starts.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The connections do not fit the backend's descriptor limits. io_uring: each shard's
    /// share must fit its ring's table (soft RLIMIT_NOFILE less 64 kept free), so capacity grows
    /// with shards. epoll: every socket is an fd of the process, so all shards together hold
    /// about RLIMIT_NOFILE. Fix: lower `-c`, add CPUs with `--cpus` (io_uring), or raise the
    /// hard limit.
    #[error(
        "{wanted} connections do not fit: {how}, {allowed} in all (hard limit {hard}): lower -c{cpus}, \
         or raise the hard limit (ulimit -Hn, tuning/limits.d, LimitNOFILE=){other}; see \
         `sockstorm doctor -c {wanted}`"
    )]
    TooManyConnections {
        /// Connections of all scenarios together.
        wanted: u64,
        /// Connections the run can hold with this backend.
        allowed: u64,
        /// How the backend counts: "each of the 2 io_uring shard(s) holds at most
        /// RLIMIT_NOFILE connections" or "with epoll every connection is one of the process's
        /// RLIMIT_NOFILE fds".
        how: String,
        /// ", add CPUs with --cpus" where more shards would help (io_uring).
        cpus: &'static str,
        /// What the other backend would hold, when that helps.
        other: String,
        /// The hard RLIMIT_NOFILE: the most the soft limit could be raised to without privileges.
        hard: u64,
    },
    /// The backend asked for cannot run here (`--backend uring` where io_uring is blocked), or
    /// io_uring lacks locked memory. Fix: what the message says (`--backend epoll`, raise the
    /// memlock limit).
    #[error("{0}")]
    Backend(String),
    /// `--start-at`'s instant passed while the shards were being set up. Fix: a later
    /// instant, or `--start-late-ok` to start at once.
    #[error(
        "--start-at: the instant passed {late_ms} ms before the shards were ready: give a \
         later one, or add --start-late-ok to start at once"
    )]
    StartLate {
        /// How late the shards were ready, ms.
        late_ms: i64,
    },
    /// A shard could not start (io_uring unavailable, thread spawn failed...).
    #[error("shard {shard}: {reason}")]
    Shard {
        /// Index of the shard that failed (0-based, in `--cpus` order); 0 also when the auth thread
        /// could not start.
        shard: usize,
        /// What failed, e.g. `cannot spawn thread: ...` or the shard's io_uring setup error.
        reason: String,
    },
}

/// How a user asked the run to end early: a first signal (SIGINT, SIGTERM, SIGHUP) or
/// [`RunControl::interrupt`] stops it gracefully, a second at once. Every method is a few atomic
/// operations, so a signal handler may call them.
#[derive(Debug, Default)]
pub struct RunControl {
    /// 0 = run, 1 = interrupted (graceful), 2 = aborted (second signal).
    state: AtomicU8,
    /// The number of the first signal that interrupted the run (0: none, or [`Self::interrupt`]).
    signal: AtomicI32,
}

impl RunControl {
    /// A control in the running state.
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(0),
            signal: AtomicI32::new(0),
        }
    }

    /// First call: graceful stop; second: abort.
    pub fn interrupt(&self) {
        let _ = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| Some((s + 1).min(2)));
    }

    /// [`Self::interrupt`] by signal number `signal` (the first one is kept: it sets the
    /// exit code, 128 + its number).
    pub fn interrupt_by(&self, signal: i32) {
        let _ = self
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.interrupt();
    }

    /// 0 running, 1 interrupted, 2 aborted.
    pub fn level(&self) -> u8 {
        self.state.load(Ordering::SeqCst)
    }

    /// The number of the first signal that interrupted the run, if a signal did.
    pub fn signal(&self) -> Option<i32> {
        Some(self.signal.load(Ordering::SeqCst)).filter(|&n| n != 0)
    }
}

/// Splits `n` into `parts` near-equal shares (the first ones get the remainder).
pub fn split(n: u64, parts: usize) -> Vec<u64> {
    let p = parts.max(1) as u64;
    (0..p).map(|i| n / p + u64::from(i < n % p)).collect()
}

/// Scenario `plan`'s share of shard `i` of `shards`.
fn group_plan(
    plan: &RunPlan,
    i: usize,
    shards: usize,
    tokens: Option<mpsc::Receiver<String>>,
    knob: Option<(Arc<steer::Knob>, steer::Steered)>,
) -> GroupPlan {
    let count = split(plan.connections, shards)[i];
    // A segment may hold none of a small scenario's connections: then no rate, no arrivals.
    let share = if count == 0 {
        0.0
    } else {
        count as f64 / plan.connections as f64
    };
    let rate = (plan.connect_rate * share).max(1e-9);
    let start_us = plan.start.as_micros() as f64;
    // A delayed scenario with stages holds 0 connections until its start.
    let mut stages = plan.stages.clone();
    if !stages.is_empty() && !plan.start.is_zero() {
        stages.insert(
            0,
            crate::plan::stages::Stage {
                duration: plan.start,
                target: 0,
            },
        );
    }
    let mut ramp = stages::Ramp::new(
        &stages,
        &stages
            .iter()
            .map(|st| split(st.target, shards)[i])
            .collect::<Vec<_>>(),
    );
    if let Some((k, steer::Steered::Connections)) = &knob {
        // Steered from the first turn: nothing opens before the search sets a target.
        ramp.hold(k.read().target.unwrap_or(0));
    }
    GroupPlan {
        connections: count,
        open_interval_us: 1e6 / rate,
        open_offset_us: if count == 0 {
            start_us
        } else {
            start_us + i as f64 * 1e6 / plan.connect_rate
        },
        conn: plan.conn.clone(),
        reconnect: plan.reconnect,
        policy: plan.policy,
        storm: plan.storm,
        // Open model: this shard's share of the arrivals over the scenario's time.
        arrivals: (plan.conn.session_lifetime > 0).then(|| {
            let secs = plan.duration.saturating_sub(plan.start).as_secs_f64();
            if count == 0 {
                0
            } else {
                (rate * secs).ceil() as u64
            }
        }),
        ramp,
        tokens,
        knob: knob.map(|(k, _)| k),
    }
}

/// Per-scenario accumulation in the engine loop.
#[derive(Default)]
struct Tally {
    total: ShardStats,
    second: ShardStats,
    peak_open: u64,
    /// Its own samples (runs of several scenarios).
    timeline: Vec<Sample>,
}

/// Runs every scenario of `run` to completion; `observer` sees each merged second.
pub fn run(
    run: &Prepared,
    ctl: &RunControl,
    observer: &mut dyn Observer,
) -> Result<RunResult, EngineError> {
    run_steered(run, ctl, observer, None)
}

/// [`run`], with its load changed while it goes by `steering` (the capacity search, whose
/// observer sets the values); the run ends when the steering is finished (or its duration
/// is over, or a signal stops it).
pub fn run_steered(
    run: &Prepared,
    ctl: &RunControl,
    observer: &mut dyn Observer,
    steering: Option<&Arc<Steering>>,
) -> Result<RunResult, EngineError> {
    let layout = layout(run)?;
    let started = start(run, &layout, ctl, steering)?;
    let collected = collect(run, &layout, &started, ctl, observer, steering);
    let mut result = finish(run, &layout, started, collected)?;
    if result.interrupted {
        result.stopped_by = ctl
            .signal()
            .and_then(crate::io::signal::Signal::from_number)
            .map(crate::io::signal::Signal::name);
    }
    Ok(result)
}

/// How the run maps onto shards: the backend, the limit, each shard's connections and the
/// sockets each may hold.
struct Layout {
    shards: usize,
    nofile: (u64, u64),
    capacity: u64,
    shard_counts: Vec<u64>,
    backend: Selected,
    /// Slots per shard ([`IoConfig::files`]).
    files: Vec<u32>,
    /// What the other backend would hold here.
    other_capacity: (BackendKind, u64),
}

/// Connections the run can hold with `kind`: io_uring, (soft limit − 64) per shard, each ring
/// has its own table; epoll, the process's fd table less what the process keeps for itself.
fn capacity_of(kind: BackendKind, soft: u64, shards: usize) -> u64 {
    match kind {
        BackendKind::Uring => soft.saturating_sub(TABLE_SLACK) * shards as u64,
        BackendKind::Epoll => sock::epoll_capacity(soft, shards as u64),
    }
}

/// The backend `backend` asks for where it can run, and the descriptor limit (raised to the
/// hard limit where allowed).
fn backend_and_limit(backend: Backend) -> Result<(Selected, (u64, u64)), EngineError> {
    let want = match backend {
        Backend::Auto => None,
        Backend::Uring => Some(BackendKind::Uring),
        Backend::Epoll => Some(BackendKind::Epoll),
    };
    let selected = probe::select(want).map_err(|e| EngineError::Backend(e.0))?;
    let nofile = sock::raise_nofile_limit()
        .or_else(|_| sock::nofile_limit())
        .unwrap_or((1024, 1024));
    Ok((selected, nofile))
}

/// The connections this client can hold for `run` (its backend, shards and descriptor
/// limit): the ceiling of a connections search.
pub fn capacity(backend: Backend, shards: usize) -> Result<u64, EngineError> {
    let (selected, nofile) = backend_and_limit(backend)?;
    Ok(capacity_of(selected.kind, nofile.0, shards.max(1)))
}

/// Chooses the backend and plans each shard's share, checking it fits the descriptor limits.
fn layout(run: &Prepared) -> Result<Layout, EngineError> {
    let (backend, nofile) = backend_and_limit(run.main().backend)?;
    let shards = run.main().cpus.len().max(1);
    let shard_counts: Vec<u64> = (0..shards)
        .map(|i| {
            run.scenarios
                .iter()
                .map(|p| split(p.connections, shards)[i])
                .sum()
        })
        .collect();
    let kind = backend.kind;
    let capacity = capacity_of(kind, nofile.0, shards);
    let other = match kind {
        BackendKind::Uring => BackendKind::Epoll,
        BackendKind::Epoll => BackendKind::Uring,
    };
    let other_capacity = (other, capacity_of(other, nofile.0, shards));
    let fits = match kind {
        // Sockets live in each shard's direct-descriptor table, not in the process's fd
        // table; the kernel caps each table at RLIMIT_NOFILE, so capacity grows with shards.
        BackendKind::Uring => shard_counts
            .iter()
            .all(|&n| n <= nofile.0.saturating_sub(TABLE_SLACK)),
        BackendKind::Epoll => shard_counts.iter().sum::<u64>() <= capacity,
    };
    if !fits {
        let (how, cpus) = match kind {
            BackendKind::Uring => (
                format!("each of the {shards} io_uring shard(s) holds at most RLIMIT_NOFILE connections"),
                ", add CPUs with --cpus",
            ),
            BackendKind::Epoll => (
                "with epoll every connection is one of the process's RLIMIT_NOFILE fds, across all shards"
                    .to_owned(),
                "",
            ),
        };
        let other = if other_capacity.1 > capacity && other == BackendKind::Uring {
            format!(
                "; io_uring would hold {} here ({})",
                other_capacity.1, backend.reason
            )
        } else {
            String::new()
        };
        return Err(EngineError::TooManyConnections {
            wanted: run.connections(),
            allowed: capacity,
            how,
            cpus,
            other,
            hard: nofile.1,
        });
    }
    let files = match kind {
        // Room for every connection twice over: a socket being closed keeps its slot until
        // the close completes, and a storm's burst of closes should not hold up the
        // replacements opened meanwhile (when the table is full, openings wait for a slot).
        // An unused slot costs 8 bytes of kernel memory.
        BackendKind::Uring => shard_counts
            .iter()
            .map(|&n| (2 * n + TABLE_SLACK).min(nofile.0).max(1) as u32)
            .collect(),
        // A close frees its fd at once; the fds left over are shared out for replacements
        // opened while a storm's closes are reaped.
        BackendKind::Epoll => {
            let spare = (capacity - shard_counts.iter().sum::<u64>()) / shards as u64;
            shard_counts
                .iter()
                .map(|&n| (n + spare.min(n + TABLE_SLACK)).max(1) as u32)
                .collect()
        }
    };
    Ok(Layout {
        shards,
        nofile,
        capacity,
        shard_counts,
        backend,
        files,
        other_capacity,
    })
}

/// The running shards, past the common start instant.
struct Started {
    handles: Vec<std::thread::JoinHandle<()>>,
    rx: mpsc::Receiver<ShardEvent>,
    wakers: Vec<Waker>,
    flags: Arc<StopFlags>,
    auth_workers: Vec<(String, auth::AuthWorker)>,
    start: Instant,
    /// The wall clock at `start`, Unix µs.
    epoch_unix_us: u64,
    /// `--start-at`: the instant and how far after it the shards were released.
    start_at: Option<StartAt>,
    rss_before: u64,
    cpu0: (Duration, Duration),
}

/// Per-connection auth: one thread per scenario that asks for it, a token channel per shard.
fn auth_workers(run: &Run, shards: usize) -> Result<(AuthWorkers, Vec<ShardTokens>), EngineError> {
    let mut workers = Vec::new();
    let mut token_rx = Vec::new();
    for p in &run.scenarios {
        match &p.auth_pool {
            Some(pool) => {
                let (tx, rx) = auth::channels(shards);
                let ids = p.segment.map_or((0, 1), |s| (s.index, s.count));
                let w = auth::spawn(&p.name, pool.clone(), tx, ids).map_err(|e| {
                    EngineError::Shard {
                        shard: 0,
                        reason: format!("cannot start the auth thread: {e}"),
                    }
                })?;
                workers.push((p.name.clone(), w));
                token_rx.push(rx.into_iter().map(Some).collect());
            }
            None => token_rx.push((0..shards).map(|_| None).collect()),
        }
    }
    Ok((workers, token_rx))
}

/// The auth threads of a run, by scenario name.
type AuthWorkers = Vec<(String, auth::AuthWorker)>;

/// One scenario's token channels, one per shard (None: the scenario fetches no tokens, or
/// the shard's channel was handed over).
type ShardTokens = Vec<Option<mpsc::Receiver<String>>>;

/// Spawns one pinned shard per CPU, waits for every ring, and releases them together.
fn start(
    run: &Prepared,
    layout: &Layout,
    ctl: &RunControl,
    steering: Option<&Arc<Steering>>,
) -> Result<Started, EngineError> {
    let main = run.main();
    let shards = layout.shards;
    let (auth_workers, mut token_rx) = auth_workers(run, shards)?;
    let flags = Arc::new(StopFlags::default());
    let gate = Arc::new(StartGate {
        barrier: Barrier::new(shards + 1),
        epoch: OnceLock::new(),
        epoch_unix_us: OnceLock::new(),
    });
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    let weights: Vec<u32> = run.targets.iter().map(|t| t.weight).collect();
    let target_order = shard::target_order(&weights);
    for (i, _) in layout.shard_counts.iter().enumerate() {
        // Rotate each shard's start in the source list so shards do not pile onto one address.
        let mut sources = run.source_ips.clone();
        if !sources.is_empty() {
            let r = (i * sources.len() / shards) % sources.len();
            sources.rotate_left(r);
        }
        let sp = ShardPlan {
            index: i,
            shards,
            ids: main.segment.map_or((0, 1), |s| (s.index, s.count)),
            cpu: main.cpus.get(i).copied(),
            targets: run.targets.iter().map(|t| t.addr).collect(),
            target_order: target_order.clone(),
            duration_us: run.duration().as_micros() as u64,
            drain_us: main.drain.as_micros() as u64,
            tls: main.tls.clone(),
            max_identical_failures: main.max_identical_failures,
            sources,
            groups: run
                .scenarios
                .iter()
                .zip(token_rx.iter_mut())
                .enumerate()
                .map(|(gi, (p, rx))| {
                    let knob = steering.map(|s| (s.knob(i, gi), s.steered()));
                    group_plan(p, i, shards, rx[i].take(), knob)
                })
                .collect(),
            backend: layout.backend.kind,
            io: IoConfig {
                files: layout.files[i],
                sock: SockOptions {
                    linger_zero: main.linger_zero,
                },
                setup: if main.socket_syscalls {
                    SocketSetup::Syscalls
                } else {
                    SocketSetup::Auto
                },
                ..IoConfig::default()
            },
        };
        let (f, g, t) = (flags.clone(), gate.clone(), tx.clone());
        let h = std::thread::Builder::new()
            .name(format!("shard-{i}"))
            .spawn(move || shard::run(sp, f, g, t))
            .map_err(|e| EngineError::Shard {
                shard: i,
                reason: format!("cannot spawn thread: {e}"),
            })?;
        handles.push(h);
    }
    drop(tx);
    // Wait for every shard's ring before anyone starts.
    let mut wakers = Vec::new();
    let mut setup_error = None;
    for _ in 0..shards {
        match rx.recv() {
            Ok(ShardEvent::Ready(_, w)) => wakers.push(w),
            Ok(ShardEvent::Failed(i, reason)) => {
                setup_error = Some(EngineError::Shard { shard: i, reason })
            }
            _ => {}
        }
    }
    let rss_before = sock::rss_bytes().unwrap_or(0);
    let cpu0 = sock::cpu_time();
    // `--start-at`: every shard is set up and waits at the barrier; sleep until the instant
    // (a signal meanwhile ends the wait: the shards start and stop at once, as interrupted).
    let mut waited_for = None;
    if let (Some(at), None) = (main.start_at, &setup_error) {
        let late = wait_until(at, ctl);
        if late > LATE_TOLERANCE_US && !main.start_late_ok {
            setup_error = Some(EngineError::StartLate {
                late_ms: late / 1000,
            });
        }
        waited_for = Some(at);
    }
    let start = Instant::now();
    // The wall clock read together with the monotonic one: an anchor taken from a wall
    // reading and a later `elapsed()` is early by whatever ran (or preempted us) between
    // them, and every one-way latency of the first second would read that much too low.
    let (unix_us, mono_us) = shard::wall::read_clocks(start);
    let epoch_unix_us = unix_us.saturating_sub(mono_us);
    // The offset of the run's time 0 (the shards' common epoch) from the instant.
    let start_at = waited_for.map(|at| StartAt {
        unix_us: at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64,
        offset_us: crate::plan::segment::offset_us(
            at,
            std::time::UNIX_EPOCH + Duration::from_micros(epoch_unix_us),
        ),
    });
    let _ = gate.epoch.set(start);
    let _ = gate.epoch_unix_us.set(epoch_unix_us);
    if setup_error.is_some() {
        flags.abort.store(true, Ordering::SeqCst);
    }
    gate.barrier.wait();
    if let Some(e) = setup_error {
        for h in handles {
            let _ = h.join();
        }
        return Err(e);
    }
    Ok(Started {
        handles,
        rx,
        wakers,
        flags,
        auth_workers,
        start,
        epoch_unix_us,
        start_at,
        rss_before,
        cpu0,
    })
}

/// Shards ready this much after `--start-at`'s instant still start (the plan was checked
/// before; this allows for a slow setup), µs.
const LATE_TOLERANCE_US: i64 = 100_000;

/// Longest single sleep while waiting for `--start-at`: how soon a signal or a wall-clock
/// step is noticed, µs.
const START_WAIT_SLICE_US: i64 = 100_000;

/// Sleeps until the wall-clock instant `at`, or until `ctl` is interrupted (no busy wait:
/// sleeps of at most [`START_WAIT_SLICE_US`], re-aimed at the wall clock each time); returns
/// how late it already was when called, µs (≤ 0: not late).
fn wait_until(at: std::time::SystemTime, ctl: &RunControl) -> i64 {
    let late = wall_offset(at);
    loop {
        let left = -wall_offset(at);
        if left <= 0 || ctl.level() > 0 {
            return late;
        }
        std::thread::sleep(Duration::from_micros(left.min(START_WAIT_SLICE_US) as u64));
    }
}

/// µs from `at` to now on the wall clock (negative: before `at`).
fn wall_offset(at: std::time::SystemTime) -> i64 {
    crate::plan::segment::offset_us(at, std::time::SystemTime::now())
}

impl Started {
    /// Asks every shard to stop (`abort`: at once) and wakes them to see it.
    fn stop(&self, abort: bool) {
        self.flags.interrupt.store(true, Ordering::SeqCst);
        if abort {
            self.flags.abort.store(true, Ordering::SeqCst);
        }
        for w in &self.wakers {
            w.wake();
        }
    }
}

/// What the collecting loop gathered.
struct Collected {
    tallies: Vec<Tally>,
    gauges: Vec<Vec<Gauges>>,
    timeline: Vec<Sample>,
    peak_open: u64,
    rss_at_peak: u64,
    interrupted: bool,
    threshold_abort: Option<(String, f64)>,
    failure_stop: Option<FailureStop>,
    shard_error: Option<EngineError>,
    /// Each shard's health over the run, and its CPU share in the last second.
    health: Vec<ShardTally>,
    cpu_now: Vec<Option<f64>>,
}

/// Merges the shards' intervals until every shard is done: one sample and one observer
/// tick per second, signals passed on, `--abort-on-fail` checked.
fn collect(
    run: &Prepared,
    layout: &Layout,
    st: &Started,
    ctl: &RunControl,
    observer: &mut dyn Observer,
    steering: Option<&Arc<Steering>>,
) -> Collected {
    let shards = layout.shards;
    let groups = run.scenarios.len();
    let mut c = Collected {
        tallies: (0..groups).map(|_| Tally::default()).collect(),
        gauges: vec![vec![Gauges::default(); groups]; shards],
        timeline: Vec::new(),
        peak_open: 0,
        rss_at_peak: st.rss_before,
        interrupted: false,
        threshold_abort: None,
        failure_stop: None,
        shard_error: None,
        health: vec![ShardTally::default(); shards],
        cpu_now: vec![None; shards],
    };
    let mut done = vec![false; shards];
    // Intervals received per shard: a second's sample waits until every shard sent its
    // interval for that second (they tick together; the order they arrive in is a race).
    let mut reported = vec![0u64; shards];
    // The shards report at Unix-second boundaries; so are the samples taken.
    let first = shard::tick_after(0, shard::tick_phase(st.epoch_unix_us));
    let mut next_print = st.start + Duration::from_micros(first);
    let mut signalled = 0u8;
    let mut exited: Option<Instant> = None;
    let mut steered_out = false;
    observer.started(st.epoch_unix_us);
    while done.iter().any(|d| !d) {
        let level = ctl.level();
        if level > signalled {
            signalled = level;
            st.stop(level >= 2);
        }
        match st.rx.recv_timeout(Duration::from_millis(50)) {
            Ok(ShardEvent::Interval(i, s, g, h)) => {
                absorb(&mut c.tallies, &mut c.gauges[i], s, g);
                c.health[i].absorb(&h);
                c.cpu_now[i] = h.busy_pct();
                reported[i] += 1;
            }
            Ok(ShardEvent::Done(i, s, g, h)) => {
                absorb(&mut c.tallies, &mut c.gauges[i], s, g);
                c.health[i].absorb(&h);
                done[i] = true;
            }
            Ok(ShardEvent::Failed(i, reason)) => {
                c.shard_error = Some(EngineError::Shard { shard: i, reason })
            }
            Ok(ShardEvent::SameFailures(_, cause, attempts)) => {
                // Every attempt fails the same way and none ever succeeded: more would only
                // repeat it. The shard that saw it is stopping; stop the others.
                if c.failure_stop.is_none() {
                    c.failure_stop = Some(FailureStop {
                        cause,
                        attempts,
                        at_s: st.start.elapsed().as_secs_f64(),
                    });
                    st.stop(false);
                }
            }
            Ok(ShardEvent::Ready(..)) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // A shard thread that ended without its final report (an internal error) must
                // not hang the run; a report sent just before exiting gets a second to arrive.
                for (i, h) in st.handles.iter().enumerate() {
                    if done[i] || !h.is_finished() {
                        continue;
                    }
                    let since = *exited.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(1) {
                        done[i] = true;
                        c.shard_error = Some(EngineError::Shard {
                            shard: i,
                            reason: "stopped without its final report (internal error)".into(),
                        });
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        let sampled = c.timeline.len() as u64;
        let all_in = (0..shards).all(|i| done[i] || reported[i] > sampled);
        // A shard that stops reporting must not freeze the progress line: 0.5 s grace.
        if (all_in && now >= next_print) || now >= next_print + Duration::from_millis(500) {
            next_print += Duration::from_secs(1);
            second(run, st, &mut c, observer);
            abort_on_fail(run, st, &mut c);
        }
        if let Some(s) = steering {
            if s.take_changed() {
                for w in &st.wakers {
                    w.wake();
                }
            }
            if s.is_done() && !steered_out {
                steered_out = true;
                st.stop(false);
            }
        }
    }
    // What the shards' final reports brought after the last whole second (the drain, the
    // closes) is one last, partial second: the timeline and the observers' live logs then add
    // up to the totals.
    if c.tallies.iter().any(|t| !t.second.is_empty()) {
        second(run, st, &mut c, observer);
    }
    for t in c.tallies.iter_mut() {
        t.total.add(&t.second);
    }
    c.interrupted = signalled > 0;
    observer.finish();
    c
}

/// One merged second: the sample and the observer's tick.
fn second(run: &Prepared, st: &Started, c: &mut Collected, observer: &mut dyn Observer) {
    let groups = c.tallies.len();
    let open_by = open_by_scenario(c);
    let open: u64 = open_by.iter().sum();
    if open > c.peak_open {
        c.peak_open = open;
        c.rss_at_peak = sock::rss_bytes().unwrap_or(0);
    }
    let t_s = (st.start.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    // The k-th sample covers the k-th Unix second from the one the run started in.
    let at = (t_s, st.epoch_unix_us / 1_000_000 + c.timeline.len() as u64);
    for (t, &o) in c.tallies.iter_mut().zip(&open_by) {
        t.peak_open = t.peak_open.max(o);
        if groups > 1 {
            t.timeline.push(sample(at, o, &t.second, Vec::new()));
        }
    }
    let second = overall(&c.tallies, false, |t| &t.second);
    let t = st.start.elapsed().as_secs_f64();
    c.timeline.push(sample(
        at,
        open,
        &second,
        if groups > 1 {
            open_by.clone()
        } else {
            Vec::new()
        },
    ));
    let scenarios = scenario_ticks(&c.tallies, &open_by);
    observer.tick(&Tick {
        t,
        open,
        target: run.connections(),
        second: &second,
        total: &overall(&c.tallies, false, |t| &t.total),
        shard_busy_pct: &c.cpu_now,
        scenarios: &scenarios,
    });
    drop(scenarios);
    drop(second);
    for t in c.tallies.iter_mut() {
        t.total.add(&t.second);
        // Freed, not kept: with many scenarios, most are idle in a given second.
        t.second.release();
    }
}

/// `--abort-on-fail`: the thresholds checked on the totals so far, once their delay is over.
fn abort_on_fail(run: &Prepared, st: &Started, c: &mut Collected) {
    let t = st.start.elapsed().as_secs_f64();
    if c.threshold_abort.is_none() && run.abort_on_fail.is_some_and(|d| t >= d.as_secs_f64()) {
        // Only thresholds with data so far can fail early; the rest wait for the end.
        let total = overall(&c.tallies, false, |t| &t.total);
        let failed = run
            .thresholds
            .iter()
            .map(|th| th.eval(run.stats_for(th, &total, &tallies_view(&c.tallies)), t))
            .find(|o| o.actual.is_some() && !o.pass);
        if let Some(o) = failed {
            c.threshold_abort = Some((o.expr, t));
            st.stop(false);
        }
    }
}

/// Sessions open now per scenario, from every shard's latest gauges.
fn open_by_scenario(c: &Collected) -> Vec<u64> {
    (0..c.tallies.len())
        .map(|k| c.gauges.iter().map(|g| g[k].open).sum())
        .collect()
}

/// Each scenario's part of a tick: its open sessions and its last second.
fn scenario_ticks<'a>(tallies: &'a [Tally], open_by: &[u64]) -> Vec<ScenarioTick<'a>> {
    tallies
        .iter()
        .zip(open_by)
        .map(|(t, &open)| ScenarioTick {
            open,
            second: &t.second,
        })
        .collect()
}

/// Joins the shards and assembles the result: per scenario, then overall.
fn finish(
    run: &Prepared,
    layout: &Layout,
    st: Started,
    c: Collected,
) -> Result<RunResult, EngineError> {
    let mut total = overall(&c.tallies, true, |t| &t.total).into_owned();
    for h in st.handles {
        let _ = h.join();
    }
    if let Some(e) = c.shard_error {
        return Err(e);
    }
    let cpu1 = sock::cpu_time();
    let gauges = &c.gauges;
    let mut scenarios: Vec<ScenarioResult> = c
        .tallies
        .into_iter()
        .enumerate()
        .map(|(k, t)| scenario_result(&run.scenarios[k], k, t, gauges, layout.shards))
        .collect();
    let fanout = settle_fanout(&mut total, &mut scenarios);
    let generator = health::judge(c.health, reported_latency(&total));
    let auth = st
        .auth_workers
        .into_iter()
        .map(|(name, w)| (name, w.finish()))
        .collect();
    Ok(RunResult {
        auth,
        fanout,
        stats: total,
        start_at: st.start_at,
        elapsed: st.start.elapsed(),
        started_unix_us: st.epoch_unix_us,
        interrupted: c.interrupted,
        stopped_by: None,
        cpu: (
            cpu1.0.saturating_sub(st.cpu0.0),
            cpu1.1.saturating_sub(st.cpu0.1),
        ),
        rss_before: st.rss_before,
        rss_at_peak_open: c.rss_at_peak,
        peak_open: c.peak_open,
        schedule_lag_max_us: scenarios
            .iter()
            .map(|s| s.schedule_lag_max_us)
            .max()
            .unwrap_or(0),
        ramp: scenarios
            .iter()
            .map(|s| s.ramp)
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max()),
        nofile: layout.nofile,
        capacity: layout.capacity,
        backend: BackendInfo {
            name: layout.backend.kind.name(),
            reason: layout.backend.reason.clone(),
            other_capacity: (layout.other_capacity.1 != layout.capacity)
                .then(|| (layout.other_capacity.0.name(), layout.other_capacity.1)),
        },
        timeline: c.timeline,
        ramp_deficit_max: scenarios.iter().map(|s| s.ramp_deficit_max).sum(),
        threshold_abort: c.threshold_abort,
        failure_stop: c.failure_stop,
        clock_steps: gauges
            .iter()
            .flatten()
            .map(|g| g.clock_steps)
            .max()
            .unwrap_or(0),
        storm_recovery: if run.scenarios.iter().any(|p| p.storm.is_some()) {
            scenarios
                .iter()
                .zip(&run.scenarios)
                .filter(|(_, p)| p.storm.is_some())
                .map(|(s, _)| s.storm_recovery)
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.into_iter().max())
        } else {
            None
        },
        scenarios,
        generator,
        find_max: None,
    })
}

/// The latency the run reports, which the generator's own timer lateness is compared with:
/// round trips, else one-way deliveries, else connecting; its name and p99, µs.
fn reported_latency(total: &ShardStats) -> Option<(&'static str, u64)> {
    [Hist::WsMsgRtt, Hist::WsMsgLatency, Hist::WsConnecting]
        .into_iter()
        .map(|h| (h, total.hist(h)))
        .find(|(_, x)| !x.is_empty())
        .map(|(h, x)| (h.name(), x.value_at_quantile(0.99)))
}

/// Scenario `k`'s result from its tally and every shard's gauges of it.
fn scenario_result(
    plan: &RunPlan,
    k: usize,
    t: Tally,
    gauges: &[Vec<Gauges>],
    shards: usize,
) -> ScenarioResult {
    let g = || gauges.iter().map(move |g| g[k]);
    let counts = split(plan.connections, shards);
    ScenarioResult {
        stats: t.total,
        peak_open: t.peak_open,
        schedule_lag_max_us: g().map(|g| g.schedule_lag_max_us).max().unwrap_or(0),
        ramp: g()
            .zip(&counts)
            .filter(|(_, &n)| n > 0)
            .map(|(g, _)| (g.ramp_done_us > 0).then_some(g.ramp_done_us))
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max())
            // From the scenario's own start.
            .map(|us| Duration::from_micros(us).saturating_sub(plan.start)),
        storm_recovery: plan.storm.and_then(|_| {
            (!g().any(|g| g.storm_unrecovered))
                .then(|| Duration::from_micros(g().map(|g| g.storm_worst_us).max().unwrap_or(0)))
        }),
        ramp_deficit_max: g().map(|g| g.ramp_deficit_max).sum(),
        timeline: t.timeline,
    }
}

/// The statistics of all scenarios together: borrowed when there is one (no copy of its
/// histograms, which are most of the engine's memory), merged otherwise (without the
/// fan-out log unless `full`: the per-second views do not need it).
fn overall<'a>(
    tallies: &'a [Tally],
    full: bool,
    pick: impl Fn(&Tally) -> &ShardStats,
) -> Cow<'a, ShardStats> {
    match tallies {
        [one] => Cow::Borrowed(pick(one)),
        _ => {
            let mut s = ShardStats::new();
            for t in tallies {
                if full {
                    s.add(pick(t));
                } else {
                    s.add_measures(pick(t));
                }
            }
            Cow::Owned(s)
        }
    }
}

/// One second's sample from what `s` gathered in it;
/// `(t_s, unix_s)`: seconds from the start, and the Unix second the sample covers.
fn sample(
    (t_s, unix_s): (f64, u64),
    open: u64,
    s: &ShardStats,
    open_by_scenario: Vec<u64>,
) -> Sample {
    Sample {
        t_s,
        unix_s,
        open,
        established: s.counters.established,
        msgs_received: s.counters.msgs_received,
        msgs_pushed: s.counters.msgs_pushed,
        latency_p99_us: {
            let h = s.hist(Hist::WsMsgLatency);
            (!h.is_empty()).then(|| h.value_at_quantile(0.99))
        },
        latency_us: Hist::ALL
            .into_iter()
            .map(|h| (h, s.hist(h)))
            .filter(|(_, x)| !x.is_empty())
            .map(|(h, x)| {
                let q = |p| x.value_at_quantile(p);
                (h.name().to_owned(), [q(0.5), q(0.99)])
            })
            .collect(),
        failures: s.failure_total(),
        reconnects: s.counters.reconnects,
        tls_full: s.counters.tls_handshakes_full,
        tls_resumed: s.counters.tls_handshakes_resumed,
        failures_by_cause: s.failures.iter().map(|(f, n)| (f.name(), *n)).collect(),
        open_by_scenario,
    }
}

/// Adds a shard's interval into the per-scenario tallies and keeps its gauges.
fn absorb(tallies: &mut [Tally], gauges: &mut Vec<Gauges>, stats: Vec<ShardStats>, g: Vec<Gauges>) {
    for (t, s) in tallies.iter_mut().zip(&stats) {
        t.second.add(s);
    }
    *gauges = g;
}

/// Fan-out: what every subscriber was owed, now that the publish log is complete.
fn settle_fanout(
    total: &mut ShardStats,
    scenarios: &mut [ScenarioResult],
) -> Option<FanoutSummary> {
    let mut each: Vec<_> = scenarios
        .iter_mut()
        .map(|s| (&s.stats.fanout, &mut s.stats.counters))
        .collect();
    crate::metrics::fanout::settle(&total.fanout, &mut total.counters, &mut each)
}

fn tallies_view(t: &[Tally]) -> Vec<&ShardStats> {
    t.iter().map(|t| &t.total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_exact() {
        assert_eq!(split(10, 3), vec![4, 3, 3]);
        assert_eq!(split(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(split(10_000, 1), vec![10_000]);
        assert_eq!(split(12_345, 7).iter().sum::<u64>(), 12_345);
    }
}
