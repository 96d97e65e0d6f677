//! The run while it goes: each shard's once-a-second interval merged per scenario for the
//! [`Observer`](crate::metrics::run::Observer), signals passed on, `--abort-on-fail`.

use super::finish::{absorb, overall, sample, tallies_view};
use super::layout::Layout;
use super::shard::{self, Gauges, ShardEvent};
use super::start::Started;
use super::steer::Steering;
use super::{EngineError, RunControl, Tally};
use crate::io::sock;
use crate::metrics::health::ShardTally;
use crate::metrics::run::{FailureStop, Observer, Sample, ScenarioTick, Tick};
use crate::plan::Prepared;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// What the collecting loop gathered.
pub(super) struct Collected {
    pub(super) tallies: Vec<Tally>,
    pub(super) gauges: Vec<Vec<Gauges>>,
    pub(super) timeline: Vec<Sample>,
    pub(super) peak_open: u64,
    pub(super) rss_at_peak: u64,
    pub(super) interrupted: bool,
    pub(super) threshold_abort: Option<(String, f64)>,
    pub(super) failure_stop: Option<FailureStop>,
    pub(super) shard_error: Option<EngineError>,
    /// Each shard's health over the run, and its CPU share in the last second.
    pub(super) health: Vec<ShardTally>,
    pub(super) cpu_now: Vec<Option<f64>>,
}

/// Merges the shards' intervals until every shard is done: one sample and one observer
/// tick per second, signals passed on, `--abort-on-fail` checked.
pub(super) fn collect(
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
pub(super) fn second(run: &Prepared, st: &Started, c: &mut Collected, observer: &mut dyn Observer) {
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
pub(super) fn abort_on_fail(run: &Prepared, st: &Started, c: &mut Collected) {
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
pub(super) fn open_by_scenario(c: &Collected) -> Vec<u64> {
    (0..c.tallies.len())
        .map(|k| c.gauges.iter().map(|g| g[k].open).sum())
        .collect()
}

/// Each scenario's part of a tick: its open sessions and its last second.
pub(super) fn scenario_ticks<'a>(tallies: &'a [Tally], open_by: &[u64]) -> Vec<ScenarioTick<'a>> {
    tallies
        .iter()
        .zip(open_by)
        .map(|(t, &open)| ScenarioTick {
            open,
            second: &t.second,
        })
        .collect()
}
