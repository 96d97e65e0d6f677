//! Starting a run: the auth workers, one pinned thread per shard with its backend, the start
//! barrier and the `--start-at` instant.

use super::layout::Layout;
use super::shard::{self, ShardEvent, ShardPlan, StartGate, StopFlags};
use super::steer::Steering;
use super::{auth, group_plan, EngineError, RunControl};
use crate::io::backend::{IoConfig, SocketSetup, Waker};
use crate::io::sock::{self, SockOptions};
use crate::metrics::run::StartAt;
use crate::plan::{Prepared, Run};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

/// The running shards, past the common start instant.
pub(super) struct Started {
    pub(super) handles: Vec<std::thread::JoinHandle<()>>,
    pub(super) rx: mpsc::Receiver<ShardEvent>,
    pub(super) wakers: Vec<Waker>,
    pub(super) flags: Arc<StopFlags>,
    pub(super) auth_workers: Vec<(String, auth::AuthWorker)>,
    pub(super) start: Instant,
    /// The wall clock at `start`, Unix µs.
    pub(super) epoch_unix_us: u64,
    /// `--start-at`: the instant and how far after it the shards were released.
    pub(super) start_at: Option<StartAt>,
    pub(super) rss_before: u64,
    pub(super) cpu0: (Duration, Duration),
}

/// Per-connection auth: one thread per scenario that asks for it, a token channel per shard.
pub(super) fn auth_workers(
    run: &Run,
    shards: usize,
) -> Result<(AuthWorkers, Vec<ShardTokens>), EngineError> {
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
pub(super) type AuthWorkers = Vec<(String, auth::AuthWorker)>;

/// One scenario's token channels, one per shard (None: the scenario fetches no tokens, or
/// the shard's channel was handed over).
pub(super) type ShardTokens = Vec<Option<mpsc::Receiver<String>>>;

/// Spawns one pinned shard per CPU, waits for every ring, and releases them together.
pub(super) fn start(
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
pub(super) const LATE_TOLERANCE_US: i64 = 100_000;

/// Longest single sleep while waiting for `--start-at`: how soon a signal or a wall-clock
/// step is noticed, µs.
pub(super) const START_WAIT_SLICE_US: i64 = 100_000;

/// Sleeps until the wall-clock instant `at`, or until `ctl` is interrupted (no busy wait:
/// sleeps of at most [`START_WAIT_SLICE_US`], re-aimed at the wall clock each time); returns
/// how late it already was when called, µs (≤ 0: not late).
pub(super) fn wait_until(at: std::time::SystemTime, ctl: &RunControl) -> i64 {
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
pub(super) fn wall_offset(at: std::time::SystemTime) -> i64 {
    crate::plan::segment::offset_us(at, std::time::SystemTime::now())
}

impl Started {
    /// Asks every shard to stop (`abort`: at once) and wakes them to see it.
    pub(super) fn stop(&self, abort: bool) {
        self.flags.interrupt.store(true, Ordering::SeqCst);
        if abort {
            self.flags.abort.store(true, Ordering::SeqCst);
        }
        for w in &self.wakers {
            w.wake();
        }
    }
}
