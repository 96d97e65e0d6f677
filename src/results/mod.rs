//! The result document and its views: the human summary on stdout, the JSON document
//! (`--json`) and the live progress line, all built from the same merged numbers
//! ([`RunResult`]). Header values and message payloads never appear (they may carry tokens):
//! only header names and payload sizes do.

mod json;
mod progress;
mod summary;

pub use json::{to_json, SCHEMA_VERSION};
pub use progress::Progress;
pub use summary::summary;

use crate::metrics::run::{FailureStop, RunResult};
use crate::metrics::{fmt_us, Hist, ShardStats, TlsParam};
use crate::plan::threshold::Outcome;
use crate::plan::{Run, RunPlan};
use crate::proto::conn::Mode;
use crate::proto::tls::{cipher_name, group_name, version_name};

/// The run's thresholds evaluated on its merged results (overall or per scenario).
pub fn thresholds(run: &Run, r: &RunResult) -> Vec<Outcome> {
    let secs = run.duration().as_secs_f64().min(r.elapsed.as_secs_f64());
    let per: Vec<&ShardStats> = r.scenarios.iter().map(|s| &s.stats).collect();
    run.thresholds
        .iter()
        .map(|t| t.eval(run.stats_for(t, &r.stats, &per), secs))
        .collect()
}

/// What `--max-identical-failures` stopping the run means, with the cause's fix.
pub fn failure_stop_text(run: &Run, stop: &FailureStop) -> String {
    format!(
        "run stopped at {:.1}s: {} attempts in a row failed with {} and no connection ever succeeded (--max-identical-failures {}); every further attempt would fail the same way: {}",
        stop.at_s,
        stop.attempts,
        stop.cause.name(),
        run.main().max_identical_failures,
        stop.cause.describe()
    )
}

/// Negotiated TLS parameters by kind: (versions, ciphers, groups), names → counts.
fn tls_params(s: &ShardStats) -> [Vec<(String, u64)>; 3] {
    let mut out: [Vec<(String, u64)>; 3] = Default::default();
    for (p, n) in &s.tls_params {
        match *p {
            TlsParam::Version(v) => out[0].push((version_name(v), *n)),
            TlsParam::Cipher(c) => out[1].push((cipher_name(c), *n)),
            TlsParam::Group(g) => out[2].push((group_name(g), *n)),
        }
    }
    out
}

/// Handshake-mode rates: per second of run time and per second of client CPU.
fn handshake_rates(plan: &RunPlan, r: &RunResult) -> Option<(f64, f64, f64)> {
    if plan.conn.mode == Mode::Session {
        return None;
    }
    let n = r.stats.counters.handshake_cycles as f64;
    let secs = plan.duration.as_secs_f64().min(r.elapsed.as_secs_f64());
    let cpu = (r.cpu.0 + r.cpu.1).as_secs_f64();
    if n == 0.0 || secs == 0.0 || cpu == 0.0 {
        return Some((0.0, 0.0, 0.0));
    }
    Some((n / secs, n / cpu, cpu * 1e6 / n))
}

/// The 99th percentile of `s`'s histogram `h`, readable, or `-` when it holds nothing.
fn p99(s: &ShardStats, h: Hist) -> String {
    let h = s.hist(h);
    if h.is_empty() {
        "-".to_owned()
    } else {
        fmt_us(h.value_at_quantile(0.99))
    }
}
