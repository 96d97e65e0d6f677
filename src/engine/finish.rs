//! The end of a run: the shards joined, their final statistics merged per scenario and
//! overall into the [`RunResult`](crate::metrics::run::RunResult).

use super::collect::Collected;
use super::layout::Layout;
use super::shard::Gauges;
use super::start::Started;
use super::{split, EngineError, Tally};
use crate::io::sock;
use crate::metrics::fanout::FanoutSummary;
use crate::metrics::health;
use crate::metrics::run::{BackendInfo, RunResult, Sample, ScenarioResult};
use crate::metrics::{Hist, ShardStats};
use crate::plan::{Prepared, RunPlan};
use std::borrow::Cow;
use std::time::Duration;

/// Joins the shards and assembles the result: per scenario, then overall.
pub(super) fn finish(
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
pub(super) fn reported_latency(total: &ShardStats) -> Option<(&'static str, u64)> {
    [Hist::WsMsgRtt, Hist::WsMsgLatency, Hist::WsConnecting]
        .into_iter()
        .map(|h| (h, total.hist(h)))
        .find(|(_, x)| !x.is_empty())
        .map(|(h, x)| (h.name(), x.value_at_quantile(0.99)))
}

/// Scenario `k`'s result from its tally and every shard's gauges of it.
pub(super) fn scenario_result(
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
pub(super) fn overall<'a>(
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
pub(super) fn sample(
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
pub(super) fn absorb(
    tallies: &mut [Tally],
    gauges: &mut Vec<Gauges>,
    stats: Vec<ShardStats>,
    g: Vec<Gauges>,
) {
    for (t, s) in tallies.iter_mut().zip(&stats) {
        t.second.add(s);
    }
    *gauges = g;
}

/// Fan-out: what every subscriber was owed, now that the publish log is complete.
pub(super) fn settle_fanout(
    total: &mut ShardStats,
    scenarios: &mut [ScenarioResult],
) -> Option<FanoutSummary> {
    let mut each: Vec<_> = scenarios
        .iter_mut()
        .map(|s| (&s.stats.fanout, &mut s.stats.counters))
        .collect();
    crate::metrics::fanout::settle(&total.fanout, &mut total.counters, &mut each)
}

pub(super) fn tallies_view(t: &[Tally]) -> Vec<&ShardStats> {
    t.iter().map(|t| &t.total).collect()
}
