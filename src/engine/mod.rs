//! Orchestration: plans each shard's share (`layout`), starts one pinned shard per CPU
//! behind a common start instant (`start`), merges their once-a-second intervals for an
//! [`Observer`] and into the totals while passing on signals (`collect`), and assembles the
//! merged result (`finish`).

pub mod auth;
mod collect;
pub mod find_max;
mod finish;
mod layout;
pub mod shard;
pub mod stages;
mod start;
pub mod steer;
pub mod timer;

use crate::metrics::run::{Observer, RunResult, Sample};
use crate::metrics::ShardStats;
use crate::plan::{Prepared, RunPlan};
use collect::collect;
use finish::finish;
pub use layout::capacity;
use layout::layout;
use shard::GroupPlan;
use start::start;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
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
