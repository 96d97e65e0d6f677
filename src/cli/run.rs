//! `sockstorm run` (and the run half of `demo`): start the engine on a prepared plan with
//! the live progress line, then write the JSON and print the summary.

use super::{control, CliError, EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, EXIT_THRESHOLDS};
use crate::engine;
use crate::metrics::run::RunResult;
use crate::plan::Prepared;
use crate::proto::conn::Mode;
use crate::results::{self, Progress};
use std::io::Write;
use std::path::Path;

/// Runs a prepared run with the progress line, then writes the results; returns the exit code.
pub(super) fn storm(run: &Prepared) -> Result<u8, CliError> {
    let ctl = control();
    let plan = run.main();
    if !plan.quiet {
        let rate = if plan.connect_rate.is_finite() {
            format!("at {}/s", plan.connect_rate)
        } else {
            "as fast as they complete".to_owned()
        };
        let what = match plan.conn.mode {
            Mode::Session if run.is_multi() => {
                let names: Vec<&str> = run.scenarios.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "{} connections in {} scenarios ({})",
                    run.connections(),
                    names.len(),
                    names.join(", ")
                )
            }
            Mode::Session => format!("{} connections", plan.connections),
            Mode::Handshake { .. } => {
                format!("handshake cycles, {} in flight,", plan.connections)
            }
        };
        eprintln!(
            "sockstorm: {what} to {} ({}) {rate} over {} shard(s) for {:?}",
            plan.url_text,
            run.target,
            plan.cpus.len(),
            run.duration()
        );
    }
    let mut progress = Progress::new(plan.quiet, plan.conn.mode != Mode::Session);
    let result = engine::run(run, ctl, &mut progress)?;
    finish(run, &result)
}

/// Writes the JSON and the summary; the exit code says how the run went.
fn finish(run: &Prepared, result: &RunResult) -> Result<u8, CliError> {
    let plan = run.main();
    // JSON first: if stdout is a closed pipe, the results file must still be written.
    if let Some(path) = &plan.json {
        write_json(path, &results::to_json(run, result))?;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(results::summary(run, result).as_bytes());
    let _ = out.flush();
    if let Some(stop) = &result.failure_stop {
        eprintln!("sockstorm: {}", results::failure_stop_text(run, stop));
    }
    let c = &result.stats.counters;
    Ok(if result.threshold_abort.is_some() {
        EXIT_THRESHOLDS
    } else if result.interrupted {
        EXIT_INTERRUPTED
    } else if result.failure_stop.is_some() {
        EXIT_FAILURES
    } else if results::thresholds(run, result).iter().any(|t| !t.pass) {
        EXIT_THRESHOLDS
    } else if result.stats.failure_total() > 0
        || c.sessions_dropped > 0
        || result.auth.iter().any(|(_, a)| !a.failures.is_empty())
        || !results::shortfalls(result).is_empty()
    {
        EXIT_FAILURES
    } else {
        EXIT_OK
    })
}

/// Writes `v` to `path` through a temporary file renamed over it.
fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), CliError> {
    let err = |source| CliError::Output {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(v).map_err(|e| err(e.into()))?;
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
