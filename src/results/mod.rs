//! The result document and its views: the human summary on stdout, the JSON document
//! (`--json`), the live progress line and the live logs (`--hdr-log` interval log, `--csv`
//! timeline), all built from the same merged numbers ([`RunResult`], and each second's
//! [`crate::metrics::run::Tick`]). Header values and message payloads never appear (they may carry tokens):
//! only header names and payload sizes do.

mod csv;
pub mod find_max;
pub mod hdr;
mod hdr_log;
pub mod identity;
mod json;
pub mod live;
pub mod merge;
mod observers;
mod progress;
mod summary;

pub use csv::CsvTimeline;
pub use hdr_log::{HdrLog, MAX_VALUE_DIVISOR};
pub use json::{to_json, SCHEMA_VERSION};
pub use observers::Observers;
pub use progress::Progress;
pub use summary::summary;

use crate::metrics::run::{FailureStop, RunResult};
use crate::metrics::{fmt_us, Hist, ShardStats, TlsParam};
use crate::plan::threshold::Outcome;
use crate::plan::{Run, RunPlan};
use crate::proto::conn::{Counters, Mode};
use crate::proto::tls::{cipher_name, group_name, version_name};

/// A result document's verdict, in the words of the exit code a run with these results
/// gives: `thresholds failed` (99), `interrupted`, `failures` (3: failed connections, dropped
/// sessions, failed auth requests, attempts cut short, unsent messages, nothing established)
/// or `ok` (0). Read from the document, so a merge says it of the merged data.
pub fn verdict(doc: &serde_json::Value) -> &'static str {
    let n = |k: &str| doc["counters"][k].as_u64().unwrap_or(0);
    let failures: u64 = doc["failures"].as_object().map_or(0, |f| {
        f.values().filter_map(serde_json::Value::as_u64).sum()
    });
    let auth_failed = doc["auth_per_connection"].as_array().is_some_and(|a| {
        a.iter()
            .any(|x| x["failures"].as_object().is_some_and(|f| !f.is_empty()))
    });
    let nothing = n("established") + n("handshake_cycles") == 0;
    let shortfall =
        nothing || n("msgs_unsent") > 0 || (n("abandoned") > 0 && n("abandoned_stalled") > 0);
    let thresholds_failed = doc["thresholds"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x["pass"] == false));
    if thresholds_failed || !doc["aborted_by_threshold"].is_null() {
        "thresholds failed"
    } else if doc["interrupted"] == true {
        "interrupted"
    } else if failures > 0 || n("sessions_dropped") > 0 || auth_failed || shortfall {
        "failures"
    } else {
        "ok"
    }
}

/// Outcomes that make a completed run not a success although no connection failed (exit 3),
/// one line each for the summary: attempts cut short by the end of the run, messages a
/// backlogged socket would not take, a run that established nothing.
pub fn shortfalls(r: &RunResult) -> Vec<String> {
    let c = &r.stats.counters;
    let mut out = Vec::new();
    let nothing = c.established + c.handshake_cycles == 0;
    if c.abandoned > 0 && (c.abandoned_stalled > 0 || nothing) {
        out.push(abandoned_text(c, nothing));
    }
    if c.msgs_unsent + c.requests_unsent > 0 {
        out.push(backlog_text(c));
    }
    if nothing {
        out.push(format!(
            "no WebSocket session was established and no handshake cycle completed ({} attempts): a run that established nothing is not a success",
            c.attempts
        ));
    }
    out
}

/// "send backlog: what was not sent, and why".
fn backlog_text(c: &Counters) -> String {
    format!(
        "send backlog: {} planned messages, {} named requests, {} pings and {} heartbeats not sent (msgs_unsent, requests_unsent, pings_skipped, heartbeats_skipped): the socket would not take them in time, the server reads slower than we send (or a pong or heartbeat reply was outstanding)",
        c.msgs_unsent, c.requests_unsent, c.pings_skipped, c.heartbeats_skipped
    )
}

/// "N attempts still connecting when the run ended: why"; `all_cut`: every one of them counts
/// as cut short (nothing was established).
fn abandoned_text(c: &Counters, all_cut: bool) -> String {
    let (n, accepted) = (c.abandoned, c.abandoned_accepted);
    let why = if accepted == n {
        "the server accepted TCP but never answered within the run".to_owned()
    } else if accepted == 0 {
        "the TCP connect was not answered within the run".to_owned()
    } else {
        format!(
            "{accepted} accepted by the server over TCP but never answered, {} with the TCP connect unanswered, within the run",
            n - accepted
        )
    };
    let cut = if all_cut || c.abandoned_stalled == n {
        String::new()
    } else if c.abandoned_stalled == 0 {
        " (each had waited less than half its --connect-timeout, at most 1 s: churn at the end, not a failure)"
            .to_owned()
    } else {
        format!(
            " ({} of them had waited half their --connect-timeout or 1 s and more)",
            c.abandoned_stalled
        )
    };
    format!("{n} attempts still connecting when the run ended{cut}: {why}")
}

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
