//! Orchestration: plans each shard's share, starts one pinned shard per CPU behind a common
//! start instant, merges their once-a-second intervals into the live progress line and the
//! totals, handles Ctrl-C, and returns the merged result.

pub mod auth;
pub mod reconnect;
pub mod shard;
pub mod stages;
pub mod timer;

use crate::io::sock::{self, SockOptions};
use crate::io::uring::{RingConfig, SocketSetup};
use crate::metrics::fanout::FanoutSummary;
use crate::metrics::{Hist, ShardStats};
use crate::plan::{Run, RunPlan, SocketSetupArg};
use crate::proto::conn::ConnConfig;
use crate::proto::ws::handshake::RequestTemplate;
use shard::{Gauges, GroupPlan, ShardEvent, ShardPlan, StartGate, StopFlags};
use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

/// Descriptor-table slots per shard kept free for connections still closing while their
/// replacements open (reconnects, churn).
const TABLE_SLACK: u64 = 64;

/// Errors that stop a run before or while it starts.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// More connections than file descriptors.
    #[error(
        "{wanted} connections do not fit: each of the {shards} shard(s) holds at most RLIMIT_NOFILE \
         connections, {allowed} in all (hard limit {hard}): lower -c, add CPUs with --cpus, or raise the \
         hard limit (ulimit -Hn, tuning/limits.d, LimitNOFILE=); see `sockstorm doctor -c {wanted}`"
    )]
    TooManyConnections {
        /// Requested connections.
        wanted: u64,
        /// Connections the limit allows.
        allowed: u64,
        /// Shards of the run.
        shards: usize,
        /// The hard limit.
        hard: u64,
    },
    /// A shard could not start (io_uring unavailable, thread spawn failed...).
    #[error("shard {shard}: {reason}")]
    Shard {
        /// Shard index.
        shard: usize,
        /// What failed.
        reason: String,
    },
}

/// How a user asked the run to end early.
#[derive(Debug, Default)]
pub struct RunControl {
    /// 0 = run, 1 = interrupted (graceful), 2 = aborted (second Ctrl-C).
    state: AtomicU8,
}

impl RunControl {
    /// A control in the running state.
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(0),
        }
    }

    /// First call: graceful stop; second: abort.
    pub fn interrupt(&self) {
        let _ = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| Some((s + 1).min(2)));
    }

    /// 0 running, 1 interrupted, 2 aborted.
    pub fn level(&self) -> u8 {
        self.state.load(Ordering::SeqCst)
    }
}

/// Per-second sample of the run, for the JSON timeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// Seconds since start.
    pub t_s: f64,
    /// Open sessions.
    pub open: u64,
    /// Sessions opened in the second.
    pub established: u64,
    /// Echoes matched in the second.
    pub msgs_received: u64,
    /// Failures in the second.
    pub failures: u64,
    /// Replacement connections opened in the second.
    pub reconnects: u64,
    /// TLS handshakes in the second, full and resumed.
    pub tls_full: u64,
    /// See `tls_full`.
    pub tls_resumed: u64,
    /// Failures in the second by cause.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub failures_by_cause: std::collections::BTreeMap<String, u64>,
    /// Open sessions per scenario (runs with more than one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub open_by_scenario: Vec<u64>,
}

/// What one scenario of a run measured.
#[derive(Debug)]
pub struct ScenarioResult {
    /// Merged statistics of the scenario on all shards.
    pub stats: ShardStats,
    /// Most of its sessions open at once (sampled each second).
    pub peak_open: u64,
    /// Largest connect-schedule lag of any shard, µs.
    pub schedule_lag_max_us: u64,
    /// Time from the start until every shard had opened its share (None: never).
    pub ramp: Option<Duration>,
    /// Storms: the longest recovery (None: some storm was never recovered from).
    pub storm_recovery: Option<Duration>,
    /// Stages: connections behind the ramp at worst (summed over shards).
    pub ramp_deficit_max: u64,
    /// Its own per-second samples (empty when it is the run's only scenario).
    pub timeline: Vec<Sample>,
}

/// Everything a finished (or interrupted) run measured.
#[derive(Debug)]
pub struct RunResult {
    /// Merged statistics of all shards and scenarios.
    pub stats: ShardStats,
    /// Per scenario, in plan order.
    pub scenarios: Vec<ScenarioResult>,
    /// Wall time from start to the last shard finishing.
    pub elapsed: Duration,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
    /// Process CPU time used during the run (user, system).
    pub cpu: (Duration, Duration),
    /// RSS before connections were opened.
    pub rss_before: u64,
    /// RSS when the most sessions were open.
    pub rss_at_peak_open: u64,
    /// Most sessions open at once.
    pub peak_open: u64,
    /// Largest connect-schedule lag of any shard, µs.
    pub schedule_lag_max_us: u64,
    /// Time from the start until every shard had opened its target count (None: never).
    pub ramp: Option<Duration>,
    /// RLIMIT_NOFILE (soft, hard) after raising.
    pub nofile: (u64, u64),
    /// Connections the limits allow.
    pub capacity: u64,
    /// One sample per second.
    pub timeline: Vec<Sample>,
    /// Storms: the longest time until a shard was back at its connection count (None: some
    /// storm was never recovered from).
    pub storm_recovery: Option<Duration>,
    /// Stages: connections the shards were behind the ramp at worst (summed over shards).
    pub ramp_deficit_max: u64,
    /// Per-connection auth, per scenario that used it.
    pub auth: Vec<(String, auth::AuthStats)>,
    /// Fan-out accounting (runs with publishers or subscribers).
    pub fanout: Option<FanoutSummary>,
    /// `--abort-on-fail`: the threshold that failed during the run, and when (s).
    pub threshold_abort: Option<(String, f64)>,
}

impl RunResult {
    /// RSS growth per open connection at the peak (the per-connection memory cost).
    pub fn rss_per_open_connection(&self) -> Option<u64> {
        self.rss_at_peak_open
            .saturating_sub(self.rss_before)
            .checked_div(self.peak_open)
    }
}

/// Splits `n` into `parts` near-equal shares (the first ones get the remainder).
pub fn split(n: u64, parts: usize) -> Vec<u64> {
    let p = parts.max(1) as u64;
    (0..p).map(|i| n / p + u64::from(i < n % p)).collect()
}

/// The connection behaviour of one scenario (each shard adds its TLS client and epoch).
fn conn_config(plan: &RunPlan, channel: u32) -> ConnConfig {
    ConnConfig {
        mode: plan.mode,
        template: RequestTemplate::new(
            &plan.url.host_header(),
            &plan.url.path,
            &plan.headers,
            &plan.subprotocols,
        ),
        connect_timeout: plan.connect_timeout.as_micros() as u64,
        on_open: plan.on_open.clone(),
        message: plan.message.clone(),
        message_count: plan.message_count,
        on_reconnect: plan.on_reconnect.clone(),
        fanout: plan.fanout.clone(),
        channel,
        heartbeat: plan.heartbeat.clone(),
        message_interval: if plan.message_rate > 0.0 {
            (1e6 / plan.message_rate).max(1.0) as u64
        } else {
            0
        },
        ping_interval: plan.ping_interval.map_or(0, |d| d.as_micros() as u64),
        pong_timeout: plan.pong_timeout.map_or(0, |d| d.as_micros() as u64),
        latency_from: plan.latency_from.clone(),
        expect: plan
            .expect
            .clone()
            .map(|p| (p, plan.expect_timeout.as_micros() as u64)),
        session_lifetime: plan.session_lifetime.map_or(0, |d| d.as_micros() as u64),
        close_wait: plan.close_wait.as_micros() as u64,
        validate_utf8: plan.validate_utf8,
        timer_resolution: (plan.timer_resolution.as_micros() as u64).max(1),
    }
}

/// Scenario `plan`'s share of shard `i` of `shards`.
fn group_plan(
    plan: &RunPlan,
    conn: &ConnConfig,
    i: usize,
    shards: usize,
    tokens: Option<mpsc::Receiver<String>>,
) -> GroupPlan {
    let count = split(plan.connections, shards)[i];
    let share = count as f64 / plan.connections as f64;
    let rate = (plan.connect_rate * share).max(1e-9);
    let start_us = plan.start.as_micros() as f64;
    // A delayed scenario with stages holds 0 connections until its start.
    let mut stages = plan.stages.clone();
    if !stages.is_empty() && !plan.start.is_zero() {
        stages.insert(
            0,
            stages::Stage {
                duration: plan.start,
                target: 0,
            },
        );
    }
    GroupPlan {
        connections: count,
        open_interval_us: 1e6 / rate,
        open_offset_us: start_us + i as f64 * 1e6 / plan.connect_rate,
        conn: conn.clone(),
        reconnect: plan.reconnect,
        policy: plan.policy,
        storm: plan.storm,
        // Open model: this shard's share of the arrivals over the scenario's time.
        arrivals: plan.session_lifetime.map(|_| {
            let secs = plan.duration.saturating_sub(plan.start).as_secs_f64();
            (rate * secs).ceil() as u64
        }),
        ramp: stages::Ramp::new(
            &stages,
            &stages
                .iter()
                .map(|st| split(st.target, shards)[i])
                .collect::<Vec<_>>(),
        ),
        tokens,
    }
}

/// Per-scenario accumulation in the engine loop.
struct Tally {
    total: ShardStats,
    second: ShardStats,
    peak_open: u64,
    /// Its own samples (runs of several scenarios).
    timeline: Vec<Sample>,
}

/// Runs every scenario of `run` to completion.
pub fn run(run: &Run, ctl: &RunControl) -> Result<RunResult, EngineError> {
    let main = run.main();
    let nofile = sock::raise_nofile_limit()
        .or_else(|_| sock::nofile_limit())
        .unwrap_or((1024, 1024));
    // Sockets live in each shard's io_uring direct-descriptor table, not in the process's fd
    // table; the kernel caps each table at RLIMIT_NOFILE, so capacity grows with shards.
    let shards = main.cpus.len().max(1);
    let connections = run.connections();
    let per_shard = nofile.0.saturating_sub(TABLE_SLACK);
    let capacity = per_shard * shards as u64;
    let shard_counts: Vec<u64> = (0..shards)
        .map(|i| {
            run.scenarios
                .iter()
                .map(|p| split(p.connections, shards)[i])
                .sum()
        })
        .collect();
    if shard_counts.iter().any(|&n| n > per_shard) {
        return Err(EngineError::TooManyConnections {
            wanted: connections,
            allowed: capacity,
            shards,
            hard: nofile.1,
        });
    }
    // Fan-out channels by name: 1, 2, ... (0: none named).
    let mut channels: Vec<&str> = Vec::new();
    let configs: Vec<ConnConfig> = run
        .scenarios
        .iter()
        .map(|p| {
            let id = p.channel.as_deref().map_or(0, |c| {
                let i = channels.iter().position(|&n| n == c).unwrap_or_else(|| {
                    channels.push(c);
                    channels.len() - 1
                });
                i as u32 + 1
            });
            conn_config(p, id)
        })
        .collect();
    // Per-connection auth: one thread per scenario that asks for it, a channel per shard.
    let mut auth_workers = Vec::new();
    let mut token_rx: Vec<Vec<Option<mpsc::Receiver<String>>>> = Vec::new();
    for p in &run.scenarios {
        match &p.auth_pool {
            Some(pool) => {
                let (tx, rx) = auth::channels(shards);
                let w = auth::spawn(&p.name, pool.clone(), tx).map_err(|e| EngineError::Shard {
                    shard: 0,
                    reason: format!("cannot start the auth thread: {e}"),
                })?;
                auth_workers.push((p.name.clone(), w));
                token_rx.push(rx.into_iter().map(Some).collect());
            }
            None => token_rx.push((0..shards).map(|_| None).collect()),
        }
    }
    let groups = run.scenarios.len();
    let flags = Arc::new(StopFlags::default());
    let gate = Arc::new(StartGate {
        barrier: Barrier::new(shards + 1),
        epoch: OnceLock::new(),
        epoch_unix_us: OnceLock::new(),
    });
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for (i, &count) in shard_counts.iter().enumerate() {
        // Rotate each shard's start in the source list so shards do not pile onto one address.
        let mut sources = main.source_ips.clone();
        if !sources.is_empty() {
            let r = (i * sources.len() / shards) % sources.len();
            sources.rotate_left(r);
        }
        let sp = ShardPlan {
            index: i,
            shards,
            cpu: main.cpus.get(i).copied(),
            target: main.target,
            duration_us: run.duration().as_micros() as u64,
            drain_us: main.drain.as_micros() as u64,
            tls: main.tls.clone(),
            sources,
            groups: run
                .scenarios
                .iter()
                .zip(&configs)
                .zip(token_rx.iter_mut())
                .map(|((p, c), rx)| group_plan(p, c, i, shards, rx[i].take()))
                .collect(),
            ring: RingConfig {
                files: (count + TABLE_SLACK).min(nofile.0).max(1) as u32,
                sock: SockOptions {
                    linger_zero: main.linger_zero,
                },
                setup: match main.socket_setup {
                    SocketSetupArg::Auto => SocketSetup::Auto,
                    SocketSetupArg::Syscalls => SocketSetup::Syscalls,
                },
                ..RingConfig::default()
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
    let start = Instant::now();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let _ = gate.epoch.set(start);
    let _ = gate
        .epoch_unix_us
        .set(unix.saturating_sub(start.elapsed()).as_micros() as u64);
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

    let mut tallies: Vec<Tally> = (0..groups)
        .map(|_| Tally {
            total: ShardStats::new(),
            second: ShardStats::new(),
            peak_open: 0,
            timeline: Vec::new(),
        })
        .collect();
    let mut gauges = vec![vec![Gauges::default(); groups]; shards];
    let mut done = vec![false; shards];
    // Intervals received per shard: a second's sample waits until every shard sent its
    // interval for that second (they tick together; the order they arrive in is a race).
    let mut reported = vec![0u64; shards];
    let mut timeline = Vec::new();
    let (mut peak_open, mut rss_at_peak) = (0u64, rss_before);
    let mut next_print = start + Duration::from_secs(1);
    let mut signalled = 0u8;
    let mut threshold_abort: Option<(String, f64)> = None;
    let mut exited: Option<Instant> = None;
    let mut shard_error = None;
    let progress = Progress::new(main.quiet, main.mode != crate::proto::conn::Mode::Session);
    while done.iter().any(|d| !d) {
        let level = ctl.level();
        if level > signalled {
            signalled = level;
            if level >= 1 {
                flags.interrupt.store(true, Ordering::SeqCst);
            }
            if level >= 2 {
                flags.abort.store(true, Ordering::SeqCst);
            }
            for w in &wakers {
                w.wake();
            }
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(ShardEvent::Interval(i, s, g)) => {
                absorb(&mut tallies, &mut gauges[i], s, g);
                reported[i] += 1;
            }
            Ok(ShardEvent::Done(i, s, g)) => {
                absorb(&mut tallies, &mut gauges[i], s, g);
                done[i] = true;
            }
            Ok(ShardEvent::Failed(i, reason)) => {
                shard_error = Some(EngineError::Shard { shard: i, reason })
            }
            Ok(ShardEvent::Ready(..)) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // A shard thread that ended without its final report (an internal error) must
                // not hang the run; a report sent just before exiting gets a second to arrive.
                for (i, h) in handles.iter().enumerate() {
                    if done[i] || !h.is_finished() {
                        continue;
                    }
                    let since = *exited.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(1) {
                        done[i] = true;
                        shard_error = Some(EngineError::Shard {
                            shard: i,
                            reason: "stopped without its final report (internal error)".into(),
                        });
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        let sampled = timeline.len() as u64;
        let all_in = (0..shards).all(|i| done[i] || reported[i] > sampled);
        // A shard that stops reporting must not freeze the progress line: 0.5 s grace.
        if (all_in && now >= next_print) || now >= next_print + Duration::from_millis(500) {
            next_print += Duration::from_secs(1);
            let open_by: Vec<u64> = (0..groups)
                .map(|k| gauges.iter().map(|g| g[k].open).sum())
                .collect();
            let open: u64 = open_by.iter().sum();
            if open > peak_open {
                peak_open = open;
                rss_at_peak = sock::rss_bytes().unwrap_or(0);
            }
            let t_s = (start.elapsed().as_secs_f64() * 10.0).round() / 10.0;
            for (t, &o) in tallies.iter_mut().zip(&open_by) {
                t.peak_open = t.peak_open.max(o);
                if groups > 1 {
                    t.timeline.push(sample(t_s, o, &t.second, Vec::new()));
                }
            }
            let second = overall(&tallies, false, |t| &t.second);
            let t = start.elapsed().as_secs_f64();
            timeline.push(sample(
                t_s,
                open,
                &second,
                if groups > 1 { open_by } else { Vec::new() },
            ));
            progress.line(
                t,
                open,
                connections,
                &second,
                &overall(&tallies, false, |t| &t.total),
            );
            drop(second);
            for t in tallies.iter_mut() {
                t.total.add(&t.second);
                t.second.reset();
            }
            if threshold_abort.is_none() && run.abort_on_fail.is_some_and(|d| t >= d.as_secs_f64())
            {
                // Only thresholds with data so far can fail early; the rest wait for the end.
                let total = overall(&tallies, false, |t| &t.total);
                let failed = run
                    .thresholds
                    .iter()
                    .map(|th| th.eval(run.stats_for(th, &total, &tallies_view(&tallies)), t))
                    .find(|o| o.actual.is_some() && !o.pass);
                if let Some(o) = failed {
                    threshold_abort = Some((o.expr, t));
                    flags.interrupt.store(true, Ordering::SeqCst);
                    for w in &wakers {
                        w.wake();
                    }
                }
            }
        }
    }
    for t in tallies.iter_mut() {
        t.total.add(&t.second);
    }
    let mut total = overall(&tallies, true, |t| &t.total).into_owned();
    progress.finish();
    for h in handles {
        let _ = h.join();
    }
    if let Some(e) = shard_error {
        return Err(e);
    }
    let cpu1 = sock::cpu_time();
    let mut scenarios: Vec<ScenarioResult> = tallies
        .into_iter()
        .enumerate()
        .map(|(k, t)| {
            let plan = &run.scenarios[k];
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
                    (!g().any(|g| g.storm_unrecovered)).then(|| {
                        Duration::from_micros(g().map(|g| g.storm_worst_us).max().unwrap_or(0))
                    })
                }),
                ramp_deficit_max: g().map(|g| g.ramp_deficit_max).sum(),
                timeline: t.timeline,
            }
        })
        .collect();
    let fanout = settle_fanout(&mut total, &mut scenarios);
    let auth = auth_workers
        .into_iter()
        .map(|(name, w)| (name, w.finish()))
        .collect();
    Ok(RunResult {
        auth,
        fanout,
        stats: total,
        elapsed: start.elapsed(),
        interrupted: signalled > 0,
        cpu: (cpu1.0.saturating_sub(cpu0.0), cpu1.1.saturating_sub(cpu0.1)),
        rss_before,
        rss_at_peak_open: rss_at_peak,
        peak_open,
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
        nofile,
        capacity,
        timeline,
        ramp_deficit_max: scenarios.iter().map(|s| s.ramp_deficit_max).sum(),
        threshold_abort,
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
    })
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

/// One second's sample from what `s` gathered in it.
fn sample(t_s: f64, open: u64, s: &ShardStats, open_by_scenario: Vec<u64>) -> Sample {
    Sample {
        t_s,
        open,
        established: s.counters.established,
        msgs_received: s.counters.msgs_received,
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
    let summary = total.fanout.summarize()?;
    if !summary.exact {
        // More published than the log holds: what was owed is unknown, so is the loss.
        return Some(summary);
    }
    let c = &mut total.counters;
    c.fanout_owed = summary.expected;
    c.fanout_lost = summary.expected.saturating_sub(c.fanout_delivered_owed);
    for s in scenarios.iter_mut() {
        if s.stats.counters.fanout_delivered > 0 || !s.stats.fanout.is_empty() {
            let owed = total.fanout.owed_to(&s.stats.fanout);
            let c = &mut s.stats.counters;
            c.fanout_owed = owed;
            c.fanout_lost = owed.saturating_sub(c.fanout_delivered_owed);
        }
    }
    Some(summary)
}

fn tallies_view(t: &[Tally]) -> Vec<&ShardStats> {
    t.iter().map(|t| &t.total).collect()
}

/// The live progress line on stderr.
struct Progress {
    quiet: bool,
    tty: bool,
    /// Handshake mode: handshake rates instead of open sessions and messages.
    cycles: bool,
}

impl Progress {
    fn new(quiet: bool, cycles: bool) -> Self {
        Self {
            quiet,
            cycles,
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    fn line(&self, t: f64, open: u64, target: u64, second: &ShardStats, total: &ShardStats) {
        if self.quiet {
            return;
        }
        let p99 = |h: Hist| {
            let h = second.hist(h);
            if h.is_empty() {
                "-".to_owned()
            } else {
                crate::metrics::report::fmt_us(h.value_at_quantile(0.99))
            }
        };
        let c = &second.counters;
        let errors = total.failure_total() + second.failure_total();
        let line = if self.cycles {
            let tls = c.tls_handshakes_full + c.tls_handshakes_resumed;
            format!(
                "[{t:6.1}s] handshakes/s {}  resumed {}%  p99 full {}  resumed {}  errors {errors}",
                c.handshake_cycles,
                (c.tls_handshakes_resumed * 100)
                    .checked_div(tls)
                    .unwrap_or(0),
                p99(Hist::TlsFull),
                p99(Hist::TlsResumed),
            )
        } else {
            format!(
            "[{t:6.1}s] open {open}/{target}  conn/s {}  msgs/s {}/{}  p99 connect {}  rtt {}  ping {}  errors {}",
            c.established,
            c.msgs_sent,
            c.msgs_received,
            p99(Hist::WsConnecting),
            p99(Hist::WsMsgRtt),
            p99(Hist::WsPing),
            errors,
        )
        };
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.tty && !self.quiet {
            eprintln!();
        }
    }
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
