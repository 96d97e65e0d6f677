//! The load generator's own health, so that a saturated client is not taken for a slow target.
//! Each shard measures, per interval: the CPU its thread used and the time it was runnable
//! but waiting for a CPU (together: how busy it was, even on a CPU another process shares;
//! from the kernel's schedstat, else CPU alone), how late its event loop woke
//! for its timers (beyond the backend's timer granularity), and completion backlog (io_uring
//! completion-queue overflows, or epoll waits that filled the whole event buffer). At the end
//! [`judge`] says whether the run is `valid`, `strained` (and what, where) or
//! `generator-bound`: a shard was busy ≥ 95 % of some second, or its timers were late by
//! more than the latency the run reports, so its latencies say more about the client than
//! about the target.

use super::named::add_hist;
use super::{fmt_us, new_histogram};
use hdrhistogram::Histogram;

/// Busy share of one second (on a CPU, or runnable and waiting for one) at or above which a
/// shard is saturated.
pub const SATURATED_PCT: f64 = 95.0;
/// Busy share of one second at or above which a shard is strained.
pub const STRAINED_PCT: f64 = 70.0;
/// Timer lateness (p99) up to which the event loop is healthy, µs: a shared host deschedules a
/// thread for a few ms now and then, which is noise, not saturation.
pub const LAG_OK_US: u64 = 5_000;
/// An interval shorter than this (the last, cut short) gives no CPU share: too noisy.
const MIN_INTERVAL_US: u64 = 500_000;

/// What one shard measured of itself over one interval.
#[derive(Debug, Clone)]
pub struct ShardHealth {
    /// Thread CPU (user + system) used in the interval, µs.
    pub cpu_us: u64,
    /// Time the thread was runnable but waiting for a CPU, µs (0 where not known).
    pub wait_us: u64,
    /// The interval's length, µs.
    pub wall_us: u64,
    /// Event-loop lag: for each wake-up that a timer asked for, how much later than due the
    /// loop ran, beyond the backend's timer granularity, µs.
    pub lag: Histogram<u64>,
    /// Completion backlog events in the interval (io_uring CQ overflows; epoll waits that
    /// returned a full event buffer).
    pub backlog: u64,
}

impl ShardHealth {
    /// An empty interval.
    pub fn new() -> Self {
        Self {
            cpu_us: 0,
            wait_us: 0,
            wall_us: 0,
            lag: new_histogram(),
            backlog: 0,
        }
    }

    /// The interval's busy share: on a CPU or waiting for one, % of the interval (`None` for
    /// an interval too short to tell).
    pub fn busy_pct(&self) -> Option<f64> {
        (self.wall_us >= MIN_INTERVAL_US)
            .then(|| (self.cpu_us + self.wait_us) as f64 * 100.0 / self.wall_us as f64)
    }
}

impl Default for ShardHealth {
    fn default() -> Self {
        Self::new()
    }
}

/// One shard's health over the whole run.
#[derive(Debug, Clone)]
pub struct ShardTally {
    /// Thread CPU over the run, µs.
    pub cpu_us: u64,
    /// Time runnable but waiting for a CPU over the run, µs.
    pub wait_us: u64,
    /// Wall time covered, µs.
    pub wall_us: u64,
    /// The busiest second's busy share (on a CPU or waiting for one), %.
    pub max_busy_pct: f64,
    /// Seconds at or above [`SATURATED_PCT`].
    pub saturated_s: u64,
    /// Seconds at or above [`STRAINED_PCT`].
    pub strained_s: u64,
    /// The first second (from the start) at or above [`SATURATED_PCT`].
    pub first_saturated_s: Option<u64>,
    /// Event-loop lag over the run.
    pub lag: Histogram<u64>,
    /// Completion backlog events over the run.
    pub backlog: u64,
    /// Intervals absorbed.
    seconds: u64,
}

impl Default for ShardTally {
    fn default() -> Self {
        Self {
            cpu_us: 0,
            wait_us: 0,
            wall_us: 0,
            max_busy_pct: 0.0,
            saturated_s: 0,
            strained_s: 0,
            first_saturated_s: None,
            lag: new_histogram(),
            backlog: 0,
            seconds: 0,
        }
    }
}

impl ShardTally {
    /// Adds one interval.
    pub fn absorb(&mut self, h: &ShardHealth) {
        self.cpu_us += h.cpu_us;
        self.wait_us += h.wait_us;
        self.wall_us += h.wall_us;
        self.backlog += h.backlog;
        add_hist(&mut self.lag, &h.lag);
        if let Some(pct) = h.busy_pct() {
            self.max_busy_pct = self.max_busy_pct.max(pct);
            if pct >= SATURATED_PCT {
                self.saturated_s += 1;
                self.first_saturated_s.get_or_insert(self.seconds);
            }
            if pct >= STRAINED_PCT {
                self.strained_s += 1;
            }
        }
        self.seconds += 1;
    }

    /// Mean CPU share over the run, %.
    pub fn mean_cpu_pct(&self) -> f64 {
        self.share(self.cpu_us)
    }

    /// Mean share of the run spent waiting for a CPU, %.
    pub fn mean_wait_pct(&self) -> f64 {
        self.share(self.wait_us)
    }

    fn share(&self, us: u64) -> f64 {
        if self.wall_us == 0 {
            0.0
        } else {
            us as f64 * 100.0 / self.wall_us as f64
        }
    }

    /// Event-loop lag p99, µs (0 with no timed wake-up).
    pub fn lag_p99(&self) -> u64 {
        if self.lag.is_empty() {
            0
        } else {
            self.lag.value_at_quantile(0.99)
        }
    }
}

/// The verdict on the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing suggests the client shaped the results.
    Valid,
    /// The client was busy or late enough to watch, not enough to blame.
    Strained,
    /// A shard was saturated, or its timers were later than the latency reported: its latencies
    /// say more about the client than the target.
    GeneratorBound,
}

impl Verdict {
    /// `valid`, `strained` or `generator-bound`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Strained => "strained",
            Self::GeneratorBound => "generator-bound",
        }
    }
}

/// The verdict and why, with each shard's figures.
#[derive(Debug, Clone)]
pub struct Generator {
    /// The verdict.
    pub verdict: Verdict,
    /// One line per finding (shard, what, how much), worst first; empty when valid.
    pub reasons: Vec<String>,
    /// Each shard's figures, by shard index.
    pub shards: Vec<ShardTally>,
    /// The latency the lag was compared with: its name and p99, µs.
    pub reported: Option<(&'static str, u64)>,
}

/// Judges the generator from each shard's tally and the latency the run reports (`reported`:
/// its name and p99 in µs, e.g. `ws_msg_rtt`; `None` when the run reports none).
pub fn judge(shards: Vec<ShardTally>, reported: Option<(&'static str, u64)>) -> Generator {
    let mut bound = Vec::new();
    let mut strained = Vec::new();
    for (k, s) in shards.iter().enumerate() {
        // Waiting for a CPU as much as using one: another process shares the shard's CPU.
        let starved = if s.wait_us > s.cpu_us / 2 && s.wait_us > 0 {
            format!(
                "; it waited for its CPU {:.0} % of the run: another process shares that CPU (pin the client with --cpus away from it)",
                s.mean_wait_pct()
            )
        } else {
            String::new()
        };
        if s.saturated_s > 0 {
            bound.push(format!(
                "shard {k} was busy ≥ {SATURATED_PCT:.0} % for {} s (from second {}, peak {:.0} %, CPU {:.0} % mean): \
                 the client could not keep up; lower the rate per shard or add CPUs (--cpus){starved}",
                s.saturated_s,
                s.first_saturated_s.unwrap_or(0),
                s.max_busy_pct,
                s.mean_cpu_pct()
            ));
        } else if s.strained_s > 0 {
            strained.push(format!(
                "shard {k} was busy ≥ {STRAINED_PCT:.0} % for {} s (peak {:.0} %){starved}",
                s.strained_s, s.max_busy_pct
            ));
        }
        let lag = s.lag_p99();
        if lag > LAG_OK_US {
            match reported {
                Some((name, p99)) if lag >= p99 => bound.push(format!(
                    "shard {k}'s timers fired {} late (p99), more than the {name} p99 it reports ({}): \
                     those latencies measure the client",
                    fmt_us(lag),
                    fmt_us(p99)
                )),
                _ => strained.push(format!(
                    "shard {k}'s timers fired {} late (p99)",
                    fmt_us(lag)
                )),
            }
        }
        if s.backlog > 0 {
            strained.push(format!(
                "shard {k} had {} completion backlog events (completions arriving faster than it reaped them)",
                s.backlog
            ));
        }
    }
    let verdict = if !bound.is_empty() {
        Verdict::GeneratorBound
    } else if !strained.is_empty() {
        Verdict::Strained
    } else {
        Verdict::Valid
    };
    bound.extend(strained);
    Generator {
        verdict,
        reasons: bound,
        shards,
        reported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(cpu_pct: u64, lags: &[u64]) -> ShardHealth {
        let mut h = ShardHealth::new();
        h.wall_us = 1_000_000;
        h.cpu_us = cpu_pct * 10_000;
        for &l in lags {
            h.lag.saturating_record(l);
        }
        h
    }

    fn tally(seconds: &[ShardHealth]) -> ShardTally {
        let mut t = ShardTally::default();
        for s in seconds {
            t.absorb(s);
        }
        t
    }

    #[test]
    fn a_light_shard_is_valid() {
        let t = tally(&[second(3, &[20, 40]), second(5, &[30])]);
        let g = judge(vec![t], Some(("ws_msg_rtt", 80)));
        assert_eq!(g.verdict, Verdict::Valid);
        assert!(g.reasons.is_empty());
        assert!((g.shards[0].mean_cpu_pct() - 4.0).abs() < 1e-9);
    }

    #[test]
    fn a_saturated_second_binds_the_generator() {
        let t = tally(&[second(40, &[]), second(97, &[]), second(99, &[])]);
        assert_eq!((t.saturated_s, t.first_saturated_s), (2, Some(1)));
        let g = judge(vec![ShardTally::default(), t], None);
        assert_eq!(g.verdict, Verdict::GeneratorBound);
        assert!(
            g.reasons[0].starts_with(
                "shard 1 was busy ≥ 95 % for 2 s (from second 1, peak 99 %, CPU 79 % mean)"
            ),
            "{:?}",
            g.reasons
        );
    }

    #[test]
    fn late_timers_bind_only_beyond_the_reported_latency() {
        let t = tally(&[second(10, &[5_000; 100])]);
        // Timers 5 ms late while round trips of 50 ms are reported: strained, not bound.
        let g = judge(vec![t.clone()], Some(("ws_msg_rtt", 50_000)));
        assert_eq!(g.verdict, Verdict::Strained);
        // Reported round trips of 2 ms: the client's lateness is larger, bound.
        let g = judge(vec![t], Some(("ws_msg_rtt", 2_000)));
        assert_eq!(g.verdict, Verdict::GeneratorBound);
        assert!(
            g.reasons[0].contains("more than the ws_msg_rtt p99 it reports (2.00ms)"),
            "{:?}",
            g.reasons
        );
    }

    #[test]
    fn a_short_last_interval_gives_no_cpu_share() {
        let mut h = second(100, &[]);
        h.wall_us = 100_000;
        h.cpu_us = 100_000;
        assert_eq!(h.busy_pct(), None);
        let g = judge(vec![tally(&[h])], None);
        assert_eq!(g.verdict, Verdict::Valid);
    }
}
