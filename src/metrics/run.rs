//! What a finished (or interrupted) run measured, as the engine hands it to the result
//! writers: merged statistics overall and per scenario, per-second samples, process figures.

use crate::metrics::fanout::FanoutSummary;
use crate::metrics::health::Generator;
use crate::metrics::{new_histogram, ShardStats};
use crate::proto::conn::Failure;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::Duration;

/// A once-a-second re-anchoring of a shard's wall time that moves it by more than this, µs,
/// is a step of the system clock ([`RunResult::clock_steps`]).
///
/// 10 ms: NTP slews a clock by at most 500 ppm, 0.5 ms per second between two re-anchorings,
/// and reading the wall and monotonic clocks together is precise to a few µs, so anything
/// larger was a step (NTP's step, `date -s`, a VM resumed). Smaller moves are followed
/// silently.
pub const CLOCK_STEP_US: u64 = 10_000;

/// Per-second sample of the run, for the JSON timeline.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Sample {
    /// Seconds from the run's start to this sample, rounded to 0.1 s.
    pub t_s: f64,
    /// The Unix second this sample covers (its interval ends on the next Unix-second
    /// boundary; the first covers the rest of the second the run started in, the last what
    /// the shards' final reports brought after the last whole second), so samples of runs on
    /// different hosts add up by `unix_s`, and a run's samples add up to its counters.
    pub unix_s: u64,
    /// Sessions open at the sample, from the shards' latest gauges (in a scenario's own timeline,
    /// that scenario's only).
    pub open: u64,
    /// Sessions opened in the second.
    pub established: u64,
    /// Echoes matched in the second.
    pub msgs_received: u64,
    /// Data messages received in the second that answered none of ours: pushes, acks,
    /// fan-out deliveries (`msgs_pushed`).
    pub msgs_pushed: u64,
    /// One-way latency of the second (`--latency-from`, fan-out deliveries): its 99th
    /// percentile, µs; absent when the second measured none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p99_us: Option<u64>,
    /// Each latency the second measured, by histogram name: its p50 and p99 in that second,
    /// µs (a merge keeps the largest host's of each: an upper bound).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub latency_us: BTreeMap<String, [u64; 2]>,
    /// Failures in the second.
    pub failures: u64,
    /// Replacement connections opened in the second.
    pub reconnects: u64,
    /// TLS handshakes in the second, full and resumed.
    pub tls_full: u64,
    /// TLS handshakes in the second that resumed a stored session; `tls_full` counts the others.
    pub tls_resumed: u64,
    /// Failures in the second by cause.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub failures_by_cause: BTreeMap<String, u64>,
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
    /// One result per scenario, in the order of the run's scenarios (one for a plain command line).
    pub scenarios: Vec<ScenarioResult>,
    /// `--start-at`: the instant and the actual start's offset from it (None: started at once).
    pub start_at: Option<StartAt>,
    /// Wall time from start to the last shard finishing.
    pub elapsed: Duration,
    /// The wall clock at the start (the shards' common epoch), Unix µs.
    pub started_unix_us: u64,
    /// A signal (SIGINT, SIGTERM, SIGHUP) stopped the run early (once: graceful stop; twice:
    /// abort); the result holds what was measured until then.
    pub interrupted: bool,
    /// The name of the signal that stopped the run (`SIGINT`, `SIGTERM`, `SIGHUP`: the first
    /// one), None when no signal did.
    pub stopped_by: Option<&'static str>,
    /// Process CPU time used during the run (user, system).
    pub cpu: (Duration, Duration),
    /// Resident set size of the process in bytes just before the shards were released (0 when
    /// `/proc/self/statm` cannot be read).
    pub rss_before: u64,
    /// Resident set size in bytes at the sample with the most sessions open (`rss_before` if none
    /// ever opened).
    pub rss_at_peak_open: u64,
    /// Most sessions open at once over the per-second samples, all scenarios together.
    pub peak_open: u64,
    /// Largest connect-schedule lag of any shard, µs.
    pub schedule_lag_max_us: u64,
    /// Time from the start until every shard had opened its target count (None: never).
    pub ramp: Option<Duration>,
    /// RLIMIT_NOFILE (soft, hard) after raising.
    pub nofile: (u64, u64),
    /// Connections the run could hold at once: io_uring, (soft RLIMIT_NOFILE − 64) × shards
    /// (each ring has its own descriptor table); epoll, the process's fd table less what the
    /// process itself uses.
    pub capacity: u64,
    /// The I/O backend that ran, and why it was chosen.
    pub backend: BackendInfo,
    /// The run's per-second samples, all scenarios together, in time order.
    pub timeline: Vec<Sample>,
    /// Storms: the longest time until a shard was back at its connection count (None: some
    /// storm was never recovered from).
    pub storm_recovery: Option<Duration>,
    /// Stages: connections the shards were behind the ramp at worst (summed over shards).
    pub ramp_deficit_max: u64,
    /// Per-connection auth, per scenario that used it.
    pub auth: Vec<(String, AuthStats)>,
    /// Fan-out accounting (runs with publishers or subscribers).
    pub fanout: Option<FanoutSummary>,
    /// `--abort-on-fail`: the threshold that failed during the run, and when (s).
    pub threshold_abort: Option<(String, f64)>,
    /// `--max-identical-failures`: the run was stopped because attempts only ever failed
    /// with one persistent TLS cause.
    pub failure_stop: Option<FailureStop>,
    /// Steps of the system clock seen during the run: once-a-second re-anchorings of the wall
    /// time that moved it by more than [`CLOCK_STEP_US`] (one-way latency follows them).
    pub clock_steps: u64,
    /// The generator's own health: each shard's CPU, timer lateness and backlog, judged.
    pub generator: Generator,
    /// The capacity search this run was (`sockstorm find-max`), with its steps and verdict.
    pub find_max: Option<crate::metrics::find_max::FindMax>,
}

/// A start at a common wall-clock instant (`--start-at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartAt {
    /// The instant asked for, µs since the Unix epoch.
    pub unix_us: u64,
    /// When the shards were released, µs after the instant (negative: before it).
    pub offset_us: i64,
}

/// The I/O backend of a run and why it was chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendInfo {
    /// `uring` or `epoll`.
    pub name: &'static str,
    /// Why, in one line: "io_uring is available", "io_uring blocked by a seccomp filter
    /// (EPERM), as in Docker ≥ 25 and containerd 2 defaults", "chosen with --backend epoll".
    pub reason: String,
    /// What the other backend would hold on this host, when it differs: (name, connections).
    pub other_capacity: Option<(&'static str, u64)>,
}

/// Why a run was stopped early by `--max-identical-failures`.
#[derive(Debug, Clone, Copy)]
pub struct FailureStop {
    /// The cause every one of those attempts failed with (a certificate, verification or TLS
    /// configuration cause: each attempt would fail the same way).
    pub cause: Failure,
    /// Attempts in a row on one shard that failed with it (the limit), none succeeding anywhere.
    pub attempts: u64,
    /// When the engine stopped the run, seconds from the start.
    pub at_s: f64,
}

impl RunResult {
    /// RSS growth per open connection at the peak (the per-connection memory cost).
    pub fn rss_per_open_connection(&self) -> Option<u64> {
        self.rss_at_peak_open
            .saturating_sub(self.rss_before)
            .checked_div(self.peak_open)
    }
}

/// What the auth requests of one scenario did.
#[derive(Debug, Clone)]
pub struct AuthStats {
    /// Auth requests sent, counted before each is made (so one unanswered at the end counts too).
    pub requests: u64,
    /// Requests answered with a token; each token goes to one connection's upgrade request.
    pub tokens: u64,
    /// Requests without a token, by cause (`auth_http_401`, `auth_timeout`, ...).
    pub failures: BTreeMap<String, u64>,
    /// What the first failure said (the message names the status or error, never a token).
    pub first_error: Option<String>,
    /// Request → answer of the requests that gave a token, µs.
    pub latency: Histogram<u64>,
    /// A request was waiting for its answer when the run ended.
    pub in_flight: bool,
}

impl Default for AuthStats {
    fn default() -> Self {
        Self {
            requests: 0,
            tokens: 0,
            failures: BTreeMap::new(),
            first_error: None,
            latency: new_histogram(),
            in_flight: false,
        }
    }
}

/// What the engine shows once a second, while the run goes on.
#[derive(Debug, Clone, Copy)]
pub struct Tick<'a> {
    /// Seconds since the start.
    pub t: f64,
    /// Sessions open now (all scenarios).
    pub open: u64,
    /// The connection count of all scenarios together (held, in flight, or room for the open
    /// model), the same at every tick.
    pub target: u64,
    /// What the last second measured.
    pub second: &'a ShardStats,
    /// Everything before the last second.
    pub total: &'a ShardStats,
    /// Each shard's busy share of the last second (on a CPU or waiting for one), % (None:
    /// too short to tell).
    pub shard_busy_pct: &'a [Option<f64>],
    /// The same second per scenario, in the order of the run's scenarios (one entry for a
    /// plain command line).
    pub scenarios: &'a [ScenarioTick<'a>],
}

/// One scenario's part of a [`Tick`].
#[derive(Debug, Clone, Copy)]
pub struct ScenarioTick<'a> {
    /// The scenario's sessions open now.
    pub open: u64,
    /// What the scenario measured in the last second.
    pub second: &'a ShardStats,
}

/// Watches a run while it goes on (the progress line, and later live exporters). Called on
/// the engine's collecting thread, never on a shard: it cannot slow the connections down.
pub trait Observer {
    /// The shards were released: the run's common epoch, µs since the Unix epoch (the
    /// result's `started_unix_us`). Called once, before the first tick.
    fn started(&mut self, _epoch_unix_us: u64) {}
    /// One second has been merged (the last tick, after the shards' final reports, may cover
    /// less than a second).
    fn tick(&mut self, tick: &Tick<'_>);
    /// The run is over (before the result is returned).
    fn finish(&mut self) {}
}

/// Two observers watching one run: each is told everything, the first first.
impl<A: Observer, B: Observer> Observer for (A, B) {
    fn started(&mut self, epoch_unix_us: u64) {
        self.0.started(epoch_unix_us);
        self.1.started(epoch_unix_us);
    }
    fn tick(&mut self, tick: &Tick<'_>) {
        self.0.tick(tick);
        self.1.tick(tick);
    }
    fn finish(&mut self) {
        self.0.finish();
        self.1.finish();
    }
}

/// An observer the flags may leave out (`None` watches nothing).
impl<O: Observer> Observer for Option<O> {
    fn tick(&mut self, tick: &Tick<'_>) {
        if let Some(o) = self {
            o.tick(tick);
        }
    }
    fn started(&mut self, epoch_unix_us: u64) {
        if let Some(o) = self {
            o.started(epoch_unix_us);
        }
    }
    fn finish(&mut self) {
        if let Some(o) = self {
            o.finish();
        }
    }
}

/// An observer that shows nothing (tests, embedding).
#[derive(Debug, Default)]
pub struct Silent;

impl Observer for Silent {
    fn tick(&mut self, _: &Tick<'_>) {}
}
