//! `sockstorm find-max`: one run, steered while it goes. The search's observer sees every
//! merged second, holds each step's value (ramping connections up without teardown, or down
//! by closing the newest; or changing the connect or message rate), judges the step on its own
//! measurements against the objectives, and picks the next value (`bisect`) until the
//! largest passing and the smallest failing value are within the precision. The verdict says
//! whose limit the knee is and why (`cause`).

mod bisect;
mod cause;
mod controller;

pub use crate::metrics::find_max::group;

use super::steer::{Steered, Steering};
use super::{EngineError, RunControl};
use crate::metrics::find_max::Step;
use crate::metrics::run::{Observer, RunResult, Tick};
use crate::plan::find_max::{SearchMode, SearchSpec};
use crate::plan::Prepared;
use crate::proto::conn::Mode;
use controller::Controller;
use std::sync::Arc;
use std::time::Duration;

/// Steps a search may take: enough for ×1.5 from 1 to 10⁹ and a bisection to 0.1 %.
pub const MAX_STEPS: usize = 80;

/// Longest ramp a connections step waits for, beyond its planned time at the connect rate.
const RAMP_SLACK: Duration = Duration::from_secs(5);

/// The run length that bounds a search of `spec` at `connect_rate` (the search normally ends
/// well before: each step is at most its ramp and hold).
pub fn bound(spec: &SearchSpec, connect_rate: f64) -> Duration {
    let ramp = if spec.mode == SearchMode::Connections && connect_rate.is_finite() {
        Duration::from_secs_f64(spec.max / connect_rate.max(1.0)) + RAMP_SLACK
    } else {
        RAMP_SLACK
    };
    (spec.step_hold + ramp + COOL_MAX) * MAX_STEPS as u32
}

/// Longest cool-down after a failing messages step (the gateway drains its backlog).
pub const COOL_MAX: Duration = Duration::from_secs(10);

/// Runs the search of `spec` on `run` (planned by the caller for the mode: its connection
/// room, rates and length); `observer` sees each second too. The result carries `find_max`.
pub fn search(
    run: &Prepared,
    spec: &SearchSpec,
    ctl: &RunControl,
    observer: &mut dyn Observer,
    on_step: &mut dyn FnMut(usize, &Step),
) -> Result<RunResult, EngineError> {
    let what = match spec.mode {
        SearchMode::Connections => Steered::Connections,
        SearchMode::Handshakes => Steered::ConnectRate,
        SearchMode::Messages => Steered::MessageRate,
    };
    let shards = run.main().cpus.len().max(1);
    let connections: Vec<u64> = run.scenarios.iter().map(|p| p.connections).collect();
    let sends: Vec<bool> = run
        .scenarios
        .iter()
        .map(|p| match spec.mode {
            SearchMode::Messages => p.conn.message.is_some() && p.conn.message_interval > 0,
            SearchMode::Handshakes => matches!(p.conn.mode, Mode::Handshake { .. }),
            SearchMode::Connections => true,
        })
        .collect();
    let steering = Arc::new(Steering::new(what, shards, &connections, &sends));
    steering.set(spec.start);
    let main = run.main();
    let route = match run.source_ips.first() {
        Some(ip) => format!("{ip} → {}", run.target),
        None => format!("this host → {}", run.target),
    };
    let mut control = Controller::new(spec, steering.clone(), main.connect_rate, route, on_step);
    let mut both = (&mut control, Forward(observer));
    let mut result = super::run_steered(run, ctl, &mut both, Some(&steering))?;
    result.find_max = Some(control.result(result.elapsed.as_secs_f64()));
    Ok(result)
}

/// Passes every call on to a borrowed observer.
struct Forward<'a>(&'a mut dyn Observer);

impl Observer for Forward<'_> {
    fn started(&mut self, epoch_unix_us: u64) {
        self.0.started(epoch_unix_us);
    }
    fn tick(&mut self, tick: &Tick<'_>) {
        self.0.tick(tick);
    }
    fn finish(&mut self) {
        self.0.finish();
    }
}

impl Observer for &mut Controller<'_, '_> {
    fn tick(&mut self, tick: &Tick<'_>) {
        (**self).on_tick(tick);
    }
}
