//! The search's observer: steps, their phases and their verdicts, one merged second at a time.
//!
//! A step begins when its value is set. In `connections` mode it first ramps (until the open
//! sessions reach the value, or its ramp time at the connect rate and 5 s more have passed),
//! then holds for `--step-hold`; rate modes hold at once. A step is judged on everything
//! measured since it began: a failing step ends as soon as it fails (once held a second), a
//! passing one when its hold is over. After a failing `messages` step the rate drops to half
//! the last passing one until the gateway's backlog has drained, so the next step is not
//! judged on the last one's queue.

use super::bisect::Bisect;
use super::cause::{explain, Failed};
use super::{COOL_MAX, RAMP_SLACK};
use crate::engine::steer::Steering;
use crate::metrics::find_max::{FindMax, Limit, SloFigure, Step};
use crate::metrics::health::{Verdict, SATURATED_PCT, STRAINED_PCT};
use crate::metrics::run::Tick;
use crate::metrics::ShardStats;
use crate::plan::find_max::{SearchMode, SearchSpec};
use std::sync::Arc;

/// A step's rate counts as reached at this share of its value.
const REACHED_SHARE: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Connections: opening (or closing) towards the value, until this time (s). A step down
    /// is not judged while it closes: what fails then are the last step's attempts.
    Ramp {
        until: f64,
        down: bool,
    },
    /// Holding the value until this time (s); since `from`.
    Hold {
        from: f64,
        until: f64,
    },
    /// Rates: draining the last step's backlog before `next` begins (at most until this time).
    Cool {
        next: f64,
        until: f64,
    },
    Done,
}

/// The step under way.
struct Current {
    value: f64,
    started: f64,
    stats: ShardStats,
    /// Per shard: summed busy % and seconds measured.
    busy: Vec<(f64, u32)>,
    /// Sessions open at the last second.
    open: u64,
    /// Seconds held, and what the hold measured (rates are judged on it).
    held_s: f64,
    held: ShardStats,
}

pub(super) struct Controller<'a, 'b> {
    spec: &'a SearchSpec,
    steering: Arc<Steering>,
    bisect: Bisect,
    phase: Phase,
    cur: Current,
    steps: Vec<Step>,
    connect_rate: f64,
    route: String,
    /// The knee step's explanation (the smallest failing value's).
    knee: Option<(f64, Limit, String, Option<String>)>,
    last_t: f64,
    /// What was measured before the first step began (messages: while sessions opened).
    warm: ShardStats,
    /// Told of each step as it is judged (its number from 1, and the step).
    on_step: &'b mut dyn FnMut(usize, &Step),
}

impl<'a, 'b> Controller<'a, 'b> {
    pub(super) fn new(
        spec: &'a SearchSpec,
        steering: Arc<Steering>,
        connect_rate: f64,
        route: String,
        on_step: &'b mut dyn FnMut(usize, &Step),
    ) -> Self {
        let mut c = Self {
            spec,
            steering,
            bisect: Bisect::new(spec.max, spec.factor, spec.precision),
            phase: Phase::Done,
            cur: Current::new(spec.start, 0.0),
            steps: Vec::new(),
            connect_rate,
            route,
            knee: None,
            last_t: 0.0,
            warm: ShardStats::new(),
            on_step,
        };
        c.phase = match spec.mode {
            // The first messages step begins once every session is open and a whole second
            // met the objectives: opening (and subscribing) is not judged as load.
            SearchMode::Messages => Phase::Cool {
                next: spec.start,
                until: RAMP_SLACK.as_secs_f64() * 6.0,
            },
            _ => c.first_phase(spec.start, 0.0, 0),
        };
        c
    }

    fn first_phase(&self, value: f64, now: f64, open: u64) -> Phase {
        match self.spec.mode {
            SearchMode::Connections => {
                let delta = (value - open as f64).abs();
                let ramp = if self.connect_rate.is_finite() {
                    delta / self.connect_rate.max(1.0)
                } else {
                    0.0
                };
                Phase::Ramp {
                    until: now + ramp + RAMP_SLACK.as_secs_f64(),
                    down: value < open as f64,
                }
            }
            _ => Phase::Hold {
                from: now,
                until: now + self.spec.step_hold.as_secs_f64(),
            },
        }
    }

    /// Begins a step at `value` now.
    fn begin(&mut self, value: f64, now: f64, open: u64) {
        self.steering.set(value);
        self.cur = Current::new(value, now);
        self.cur.open = open;
        self.phase = self.first_phase(value, now, open);
    }

    pub(super) fn on_tick(&mut self, tick: &Tick<'_>) {
        let now = tick.t;
        // The second this tick covers (the first one of a run may be shorter).
        let dt = (now - self.last_t).clamp(0.0, 2.0);
        self.last_t = now;
        match self.phase {
            Phase::Done => self.credit_last(tick.second, dt),
            Phase::Cool { next, until } => {
                self.credit_last(tick.second, dt);
                // Drained once a whole second meets every objective again.
                let calm = self
                    .spec
                    .slos
                    .iter()
                    .map(|t| t.eval(tick.second, dt.max(0.1)))
                    .all(|o| o.pass || o.actual.is_none());
                // Messages: and every session open (they send the load).
                let all_open = self.spec.mode != SearchMode::Messages || tick.open >= tick.target;
                if (calm && all_open && dt > 0.5) || now >= until {
                    self.begin(next, now, tick.open);
                }
            }
            Phase::Ramp { until, down } => {
                if down {
                    self.cur.started = now;
                    self.credit_last(tick.second, dt);
                } else {
                    self.absorb(tick, false, dt);
                    // Failing already (connects refused, drops, a latency broken): no need to
                    // wait out the ramp.
                    if now - self.cur.started >= 0.95 {
                        let step = self.judge(now, now);
                        if !step.pass && step.why.is_some() && !self.short_only(&step) {
                            return self.end_step(step, now, tick.open);
                        }
                    }
                }
                let target = self.cur.value.round() as u64;
                let reached = tick.open == target;
                if reached || now >= until {
                    self.phase = Phase::Hold {
                        from: now,
                        until: now + self.spec.step_hold.as_secs_f64(),
                    };
                }
            }
            Phase::Hold { from, until } => {
                self.absorb(tick, true, dt);
                let step = self.judge(now, from);
                let over = now >= until - 0.05;
                if !step.pass && now - from >= 0.95 || over {
                    self.end_step(step, now, tick.open);
                }
            }
        }
    }

    /// Counts a second that no step is judged on (a step down closing, a drain, the run's
    /// stop) into the last step: what happens then are its leftovers, and every count of the
    /// run is in some step.
    fn credit_last(&mut self, second: &ShardStats, dt: f64) {
        match self.steps.last_mut() {
            Some(s) => {
                s.after_s = round1(s.after_s + dt);
                credit(s, second);
            }
            // Before the first step (sessions opening): kept for the first step's counts.
            None => self.warm.add(second),
        }
    }

    fn absorb(&mut self, tick: &Tick<'_>, hold: bool, dt: f64) {
        self.cur.stats.add(tick.second);
        if hold {
            self.cur.held.add(tick.second);
            self.cur.held_s += dt;
        }
        self.cur.open = tick.open;
        if self.cur.busy.len() < tick.shard_busy_pct.len() {
            self.cur.busy.resize(tick.shard_busy_pct.len(), (0.0, 0));
        }
        for (acc, b) in self.cur.busy.iter_mut().zip(tick.shard_busy_pct) {
            if let Some(b) = b {
                acc.0 += b;
                acc.1 += 1;
            }
        }
    }

    /// The step so far, judged.
    fn judge(&self, now: f64, hold_from: f64) -> Step {
        let cur = &self.cur;
        let secs = (now - cur.started).max(1e-3);
        let c = &cur.stats.counters;
        let slos: Vec<SloFigure> = self
            .spec
            .slos
            .iter()
            .map(|t| {
                let o = t.eval(&cur.stats, secs);
                SloFigure {
                    shown: o.shown(),
                    expr: o.expr,
                    actual: o.actual,
                    // Nothing measured is no evidence against the step.
                    pass: o.pass || o.actual.is_none(),
                }
            })
            .collect();
        let held = cur.held_s.max(0.1);
        let h = &cur.held.counters;
        let reached = match self.spec.mode {
            SearchMode::Connections => cur.open as f64,
            SearchMode::Handshakes => h.attempts as f64 / held,
            SearchMode::Messages => (h.msgs_sent + h.fanout_published) as f64 / held,
        };
        let short = match self.spec.mode {
            SearchMode::Connections => reached < cur.value.round(),
            _ => reached < cur.value * REACHED_SHARE,
        };
        let busy = cur
            .busy
            .iter()
            .filter(|b| b.1 > 0)
            .map(|b| b.0 / f64::from(b.1))
            .fold(None, |m: Option<f64>, b| Some(m.map_or(b, |m| m.max(b))));
        let generator = match busy {
            Some(b) if b >= SATURATED_PCT => Verdict::GeneratorBound,
            Some(b) if b >= STRAINED_PCT => Verdict::Strained,
            _ => Verdict::Valid,
        };
        let first_bad = slos.iter().find(|s| !s.pass);
        let connect_failed = c.connect_failed > 0 && self.spec.mode != SearchMode::Messages;
        let why = if let Some(s) = first_bad {
            Some(format!("{} (measured {})", s.expr, s.shown))
        } else if short {
            Some(match self.spec.mode {
                SearchMode::Connections => format!("{} of {} open", reached, cur.value),
                _ => format!("{reached:.0}/s of {}/s reached", cur.value),
            })
        } else if connect_failed && self.spec.default_slos {
            Some(format!("{} connects failed", c.connect_failed))
        } else {
            None
        };
        let _ = hold_from;
        Step {
            value: cur.value,
            started_s: round1(cur.started),
            duration_s: round1(secs),
            after_s: 0.0,
            reached: (reached * 10.0).round() / 10.0,
            pass: why.is_none(),
            why,
            slos,
            failures: cur
                .stats
                .failures
                .iter()
                .map(|(k, n)| (k.name(), *n))
                .collect(),
            attempts: c.attempts,
            established: c.established,
            sessions_dropped: c.sessions_dropped,
            sessions_retired: c.sessions_retired,
            msgs_sent: c.msgs_sent,
            published: c.fanout_published,
            msgs_received: c.msgs_received,
            msgs_unanswered: c.msgs_unanswered,
            handshake_cycles: c.handshake_cycles,
            generator: generator.name(),
            generator_busy_pct: busy.map(round1),
        }
    }

    /// Whether the step fails only for falling short of its value (which a ramp still under
    /// way does).
    fn short_only(&self, step: &Step) -> bool {
        step.slos.iter().all(|s| s.pass) && step.failures.is_empty() && step.sessions_dropped == 0
    }

    fn end_step(&mut self, step: Step, now: f64, open: u64) {
        let value = step.value;
        let pass = step.pass;
        if !pass && self.bisect.bad.is_none_or(|b| value <= b) {
            let generator = match step.generator {
                "generator-bound" => Verdict::GeneratorBound,
                "strained" => Verdict::Strained,
                _ => Verdict::Valid,
            };
            let slo = step
                .slos
                .iter()
                .find(|s| !s.pass)
                .map(|s| (s.expr.as_str(), s.shown.clone()));
            let short = match self.spec.mode {
                SearchMode::Connections => (step.reached < value).then_some(step.reached),
                _ => (step.reached < value * REACHED_SHARE).then_some(step.reached),
            };
            let (limit, words) = explain(&Failed {
                mode: self.spec.mode,
                value,
                stats: &self.cur.stats,
                generator,
                busy_pct: step.generator_busy_pct,
                slo,
                short,
                route: &self.route,
            });
            let first_slo = step.slos.iter().find(|s| !s.pass).map(|s| s.expr.clone());
            self.knee = Some((value, limit, words, first_slo));
        }
        let mut step = step;
        if self.steps.is_empty() {
            credit(&mut step, &self.warm);
        }
        (self.on_step)(self.steps.len() + 1, &step);
        self.steps.push(step);
        let next = if self.steps.len() >= super::MAX_STEPS {
            None
        } else {
            self.bisect.next(value, pass)
        };
        match next {
            None => {
                self.phase = Phase::Done;
                self.steering.finish();
            }
            Some(v) if !pass && self.spec.mode != SearchMode::Connections => {
                // Let the gateway drain what the failing step queued, at half the last
                // passing rate (or of the next one).
                let calm = (self.bisect.good.unwrap_or(v).min(v) / 2.0).max(1.0);
                self.steering.set(calm);
                self.phase = Phase::Cool {
                    next: v,
                    until: now + COOL_MAX.as_secs_f64(),
                };
            }
            Some(v) => self.begin(v, now, open),
        }
    }

    /// The search's verdict, after the run (`elapsed_s`: how long it took).
    pub(super) fn result(&self, elapsed_s: f64) -> FindMax {
        let spec = self.spec;
        let unit = spec.mode.unit();
        let max = self.bisect.good;
        let finished = self.phase == Phase::Done;
        let (limit, cause, first_failing_slo) = match (&self.knee, finished) {
            (_, false) => (
                Limit::Unfinished,
                format!(
                    "the search was stopped after {} step(s), {:.0} s in: the largest value that passed so far is shown",
                    self.steps.len(),
                    self.last_t
                ),
                None,
            ),
            (Some((_, limit, words, slo)), true) => (*limit, words.clone(), slo.clone()),
            (None, true) => (
                Limit::Ceiling,
                format!(
                    "every step passed up to --max {} {unit}: the capacity is above it; raise --max",
                    super::group(spec.max)
                ),
                None,
            ),
        };
        FindMax {
            mode: spec.mode.name(),
            unit,
            max,
            knee: self.bisect.bad,
            limit,
            cause,
            first_failing_slo,
            slos: spec.slos.iter().map(|t| t.expr.clone()).collect(),
            start: spec.start,
            ceiling: spec.max,
            factor: spec.factor,
            precision: spec.precision,
            step_hold_s: spec.step_hold.as_secs_f64(),
            search_s: round1(elapsed_s),
            steps: self.steps.clone(),
        }
    }
}

impl Current {
    fn new(value: f64, started: f64) -> Self {
        Self {
            value,
            started,
            stats: ShardStats::new(),
            busy: Vec::new(),
            open: 0,
            held_s: 0.0,
            held: ShardStats::new(),
        }
    }
}

/// Adds a second's counts (not judged) to a step's record.
fn credit(s: &mut Step, second: &ShardStats) {
    let c = &second.counters;
    s.attempts += c.attempts;
    s.established += c.established;
    s.sessions_dropped += c.sessions_dropped;
    s.sessions_retired += c.sessions_retired;
    s.msgs_sent += c.msgs_sent;
    s.published += c.fanout_published;
    s.msgs_received += c.msgs_received;
    s.msgs_unanswered += c.msgs_unanswered;
    s.handshake_cycles += c.handshake_cycles;
    for (k, n) in &second.failures {
        *s.failures.entry(k.name()).or_default() += n;
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::steer::Steered;
    use crate::plan::find_max::SearchWords;
    use crate::proto::conn::Failure;
    use crate::proto::ws::handshake::UpgradeFailure;
    use std::time::Duration;

    /// A fake gateway that holds at most `cap` sessions and answers 503 beyond, driven one
    /// second at a time: the search must end within its precision of the cap, naming 503.
    #[test]
    fn finds_a_connection_cap_on_a_fake_clock() {
        let cap = 3000u64;
        let words = SearchWords {
            step_hold: Some(Duration::from_secs(2)),
            max: Some(100_000.0),
            ..SearchWords::default()
        };
        let spec = SearchSpec::new(SearchMode::Connections, &words, false, false, false).unwrap();
        let steering = Arc::new(Steering::new(Steered::Connections, 1, &[100_000], &[true]));
        steering.set(spec.start);
        let told = std::cell::Cell::new(0);
        let mut on_step = |n: usize, _: &Step| told.set(n);
        let mut c = Controller::new(
            &spec,
            steering.clone(),
            2000.0,
            "here → there".into(),
            &mut on_step,
        );
        let (mut open, total) = (0u64, ShardStats::new());
        for t in 1..=600 {
            if steering.is_done() {
                break;
            }
            let target = steering.value().round() as u64;
            let mut second = ShardStats::new();
            // Up to 2,000 openings a second, every one beyond the cap refused.
            let want = target.saturating_sub(open).min(2000);
            let fits = want.min(cap.saturating_sub(open));
            second.counters.attempts = want;
            second.counters.established = fits;
            second.counters.connect_failed = want - fits;
            if want > fits {
                second
                    .failures
                    .insert(Failure::Upgrade(UpgradeFailure::Status(503)), want - fits);
            }
            open = (open + fits).min(target);
            c.on_tick(&Tick {
                t: f64::from(t),
                open,
                target: 100_000,
                second: &second,
                total: &total,
                shard_busy_pct: &[Some(10.0)],
                scenarios: &[],
            });
        }
        let r = c.result(600.0);
        assert!(steering.is_done(), "the search did not end: {:?}", r.steps);
        let max = r.max.unwrap();
        assert!((2857.0..=3000.0).contains(&max), "{max}: {:?}", r.steps);
        assert_eq!(r.limit, Limit::Gateway);
        assert!(r.cause.starts_with("HTTP 503 from "), "{}", r.cause);
        assert_eq!(
            r.steps.iter().map(|s| s.value).take(4).collect::<Vec<_>>(),
            [1000.0, 1500.0, 2250.0, 3375.0]
        );
        assert_eq!(r.steps.len(), told.get());
    }
}
