//! `sockstorm run` (and the run half of `demo`): start the engine on a prepared plan with
//! the live progress line and the live logs (`--hdr-log`, `--csv`), then write the JSON and
//! print the summary.

use super::output::{self, JsonOut};
use super::report;
use super::{
    control, CliError, EXIT_ERROR, EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, EXIT_SATURATED,
    EXIT_THRESHOLDS,
};
use crate::engine::{self, RunControl};
use crate::metrics::find_max::{FindMax, Limit};
use crate::metrics::health::Verdict;
use crate::metrics::run::RunResult;
use crate::plan::find_max::SearchSpec;
use crate::plan::Prepared;
use crate::proto::conn::Mode;
use crate::results::live::{self, Live};
use crate::results::merge::Input;
use crate::results::{self, CsvTimeline, HdrLog, Observers, Progress};
use std::io::Write;
use std::path::Path;

/// Runs a prepared run with the progress line, then writes the results; returns the exit code.
pub(super) fn storm(run: &Prepared) -> Result<u8, CliError> {
    storm_to(run, None)
}

/// [`storm`], and the HTML report to `html` (`run --html`) after the JSON.
pub(super) fn storm_to(run: &Prepared, html: Option<&Path>) -> Result<u8, CliError> {
    storm_inner(run, html, None)
}

/// `find-max`: the run steered by the capacity search `spec`, written like a run with its
/// verdict and steps.
pub(super) fn storm_search(
    run: &Prepared,
    html: Option<&Path>,
    spec: &SearchSpec,
) -> Result<u8, CliError> {
    storm_inner(run, html, Some(spec))
}

fn storm_inner(
    run: &Prepared,
    html: Option<&Path>,
    search: Option<&SearchSpec>,
) -> Result<u8, CliError> {
    let plan = run.main();
    // A path the results cannot go to is found now, not after the run.
    let json = plan.json.as_deref().map(output::check_json).transpose()?;
    let html = html
        .map(|path| {
            let out = report::check_html("--html", path)?;
            if out.is_stdout() {
                return Err(CliError::OutputPath {
                    flag: "--html",
                    path: path.to_owned(),
                    reason: "is stdout, which the summary (or --json -) takes: give a file path \
                             (or make the page later: sockstorm report RESULT.json -o -)"
                        .into(),
                });
            }
            Ok((out, path))
        })
        .transpose()?;
    let open = |flag, path: &Option<std::path::PathBuf>| {
        path.as_deref()
            .map(|p| output::open_log(flag, p).map(|f| (p.to_owned(), f)))
            .transpose()
    };
    let mut hdr_log = open("--hdr-log", &plan.hdr_log)?.map(|(p, f)| (p, HdrLog::new(f)));
    let mut csv = open("--csv", &plan.csv)?.map(|(p, f)| (p, CsvTimeline::new(f)));
    let live = plan.metrics_listen.map(|a| live(run, a)).transpose()?;
    let ctl = control();
    if let (false, Some(spec)) = (plan.quiet, search) {
        eprintln!("{}", results::find_max::banner(run, spec));
    } else if !plan.quiet {
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
    let mut observers = Observers::new();
    observers.push(&mut progress);
    if let Some((_, log)) = &mut hdr_log {
        observers.push(log);
    }
    if let Some((_, log)) = &mut csv {
        observers.push(log);
    }
    let mut live_observer = live.as_ref().map(Live::observer);
    if let Some(o) = &mut live_observer {
        observers.push(o);
    }
    let result = match search {
        Some(spec) => {
            let quiet = plan.quiet;
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let mut on_step = |n: usize, step: &crate::metrics::find_max::Step| {
                if !quiet {
                    let clear = if tty { "\r\x1b[2K" } else { "" };
                    eprintln!(
                        "{clear}{}",
                        results::find_max::step_line(n, step, spec.mode.unit())
                    );
                }
            };
            engine::find_max::search(run, spec, ctl, &mut observers, &mut on_step)?
        }
        None => engine::run(run, ctl, &mut observers)?,
    };
    drop(observers);
    let html = html.as_ref().map(|(out, path)| (out, *path));
    let mut code = finish(run, &result, json.as_ref(), html, ctl);
    // A live log that could not be written to the end costs the exit code, as the JSON does.
    let failed = [
        hdr_log
            .as_ref()
            .and_then(|(p, l)| Some(("--hdr-log", p, l.error()?))),
        csv.as_ref()
            .and_then(|(p, l)| Some(("--csv", p, l.error()?))),
    ];
    for (flag, path, e) in failed.into_iter().flatten() {
        eprintln!(
            "sockstorm: error: {flag} `{}`: writing stopped during the run: {e}",
            path.display()
        );
        code = EXIT_ERROR;
    }
    if let Some(live) = &live {
        let signalled = ctl.level();
        live.linger(plan.metrics_linger, &|| ctl.level() > signalled);
    }
    Ok(code)
}

/// Starts the `--metrics-listen` endpoint before the run, and says where it is.
fn live(run: &Prepared, addr: std::net::SocketAddr) -> Result<Live, CliError> {
    if let Some(warning) = live::exposure_warning(addr) {
        eprintln!("{warning}");
    }
    let live = Live::start(run, addr)?;
    eprintln!("sockstorm: metrics on http://{}/metrics", live.addr());
    Ok(live)
}

/// Writes the JSON, the HTML report and the summary; the exit code says how the run went. A
/// JSON or report that cannot be written does not cost the summary: it is printed, then where
/// the file could not go (exit 1).
fn finish(
    run: &Prepared,
    result: &RunResult,
    json: Option<&JsonOut>,
    html: Option<(&JsonOut, &Path)>,
    ctl: &RunControl,
) -> u8 {
    // JSON first: if stdout is a closed pipe, the results file must still be written.
    let signalled = ctl.level();
    // A FIFO nobody reads is waited for until the next signal.
    let give_up = || ctl.level() > signalled;
    let doc = (json.is_some() || html.is_some()).then(|| results::to_json(run, result));
    let written = json
        .zip(doc.as_ref())
        .map(|(out, doc)| output::write_json(out, doc, &give_up));
    let html_written = html.zip(doc).map(|((out, path), doc)| {
        // The report names the run by its JSON file, when it has one.
        let name = match json {
            Some(JsonOut::Replace { path, .. } | JsonOut::Through(path)) => {
                path.display().to_string()
            }
            _ => format!("run {}", doc["run_id"].as_str().unwrap_or("")),
        };
        report::write_html(out, path, &[Input { name, doc }], &give_up)
    });
    let summary = results::summary(run, result);
    if json.is_some_and(JsonOut::is_stdout) {
        // The JSON owns stdout.
        eprint!("{summary}");
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(summary.as_bytes());
        let _ = out.flush();
    }
    if let Some(stop) = &result.failure_stop {
        eprintln!("sockstorm: {}", results::failure_stop_text(run, stop));
    }
    let signal = ctl.signal().filter(|_| result.interrupted);
    if let Some(signal) = signal.and_then(crate::io::signal::Signal::from_number) {
        eprintln!(
            "sockstorm: stopped by {}: the results hold everything measured until then",
            signal.name()
        );
    }
    if let Some(Err(e)) = &html_written {
        eprintln!("sockstorm: error: {}", e.message());
    }
    if let Some(Err(e)) = written {
        eprintln!(
            "sockstorm: error: {} (the summary above is all that is left of the results)",
            e.message()
        );
        return EXIT_ERROR;
    }
    if let Some(Err(_)) = html_written {
        return EXIT_ERROR;
    }
    let c = &result.stats.counters;
    if let Some(fm) = &result.find_max {
        return search_exit(fm, result, run, signal);
    }
    if result.threshold_abort.is_some() {
        EXIT_THRESHOLDS
    } else if result.interrupted {
        // 128 + the signal's number, as a shell reports a process the signal ended.
        signal
            .and_then(|n| u8::try_from(128 + n).ok())
            .unwrap_or(EXIT_INTERRUPTED)
    } else if result.failure_stop.is_some() {
        EXIT_FAILURES
    } else if run.main().fail_on_saturation && result.generator.verdict == Verdict::GeneratorBound {
        EXIT_SATURATED
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
    }
}

/// A search's exit code: 0 when it found the gateway's limit (or passed up to `--max`), 98
/// when the limit it found is the client's, 3 when not even its smallest step passed, 99 when
/// `--threshold`s on the whole run failed, 128 + the signal when one stopped it.
fn search_exit(fm: &FindMax, result: &RunResult, run: &Prepared, signal: Option<i32>) -> u8 {
    if fm.limit == Limit::Unfinished {
        return signal
            .and_then(|n| u8::try_from(128 + n).ok())
            .unwrap_or(if result.interrupted {
                EXIT_INTERRUPTED
            } else {
                EXIT_FAILURES
            });
    }
    if results::thresholds(run, result).iter().any(|t| !t.pass) {
        EXIT_THRESHOLDS
    } else if fm.limit == Limit::Client {
        EXIT_SATURATED
    } else if fm.max.is_none() {
        EXIT_FAILURES
    } else {
        EXIT_OK
    }
}
