//! Command-line interface: clap definitions, subcommand dispatch, and the words → plan
//! step: `run` flags ([`args`]) and scenario files (`scenario`) are built into a validated
//! plan (`build`), prepared, and handed to the engine; the results go to `results`.
//!
//! Exit codes: 0 the run completed without failures; 1 a setup error (bad target, limits,
//! io_uring unavailable); 2 bad usage (flags); 3 the run completed but connections failed,
//! sessions dropped, attempts were cut short by its end, messages were left unsent or it
//! established nothing (or `doctor` says N does not fit); 128 + the signal's number when
//! SIGINT (130), SIGTERM (143) or SIGHUP (129) stopped the run (the summary and JSON still
//! hold everything measured).

pub mod args;
mod build;
pub mod conn;
mod demo;
mod doctor;
pub mod find_max;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_smoke;
mod merge;
mod output;
mod report;
pub mod rules;
mod run;
mod scenario;
mod serve;
pub mod tls_args;

use crate::certs::CertError;
use crate::engine::{self, RunControl};
use crate::io::signal::{self, Signal};
use crate::plan::{self, prepare, Run};
use args::RunArgs;
use clap::{Parser, Subcommand};
use demo::DemoArgs;
use doctor::DoctorArgs;
use merge::MergeArgs;
use report::ReportArgs;
use serve::ServeArgs;
use std::path::{Path, PathBuf};

/// Exit code 0: the run completed with no failed connection, dropped session, failed auth request
/// or failed threshold; also `serve` when it stops (a signal or `--duration`), and `doctor` when the
/// connections fit or no count was given.
pub const EXIT_OK: u8 = 0;
/// Exit code 1: a setup error stopped the command before or while it ran (unresolvable target,
/// descriptor limits, io_uring unavailable); also when the JSON results could not be written at
/// the end (the summary is printed all the same); see [`CliError::exit_code`].
pub const EXIT_ERROR: u8 = 1;
/// Exit code 2: invalid flags or values, an output path that cannot be written (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code 3: the run completed but connections failed, sessions dropped, auth requests failed,
/// attempts were cut short by its end (`abandoned_stalled`), a send backlog left messages unsent
/// (`msgs_unsent`, `requests_unsent`) or it established nothing
/// (`results::shortfalls`); from `doctor`, the requested connections do not fit.
pub const EXIT_FAILURES: u8 = 3;
/// Exit code 130 (128 + SIGINT): Ctrl-C stopped the run; the summary and JSON still hold everything
/// measured. SIGTERM gives 143 and SIGHUP 129 (128 + the signal's number), the same way.
pub const EXIT_INTERRUPTED: u8 = 130;
/// The run completed but a `--threshold` failed (k6's code for the same).
pub const EXIT_THRESHOLDS: u8 = 99;
/// Exit code 98: `--fail-on-saturation` and the generator was the bottleneck
/// (`generator-bound`): its latencies measure the client.
pub const EXIT_SATURATED: u8 = 98;

/// sockstorm: open and drive as many WebSocket connections as this host allows.
#[derive(Debug, Parser)]
#[command(name = "sockstorm", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Storm a WebSocket endpoint: open, hold and drive connections, then report.
    Run(Box<RunArgs>),
    /// Run the built-in target gateway (echo, channels, fan-out, auth endpoint) on loopback.
    Serve(Box<ServeArgs>),
    /// Start the built-in gateway in-process and storm it: a first look in ~30 s.
    Demo(DemoArgs),
    /// Check this host's limits and tuning for N connections.
    Doctor(DoctorArgs),
    /// Merge result documents (`run --json`) of one plan from several hosts into one, exactly:
    /// histograms added, counts summed, thresholds evaluated again.
    Merge(MergeArgs),
    /// Write one self-contained HTML page (charts and tables, opens offline) of result
    /// documents; several are compared, the first as the baseline.
    Report(ReportArgs),
    /// Find the limit: raise connections, handshakes/s or messages/s in steps until an
    /// objective breaks, bisect, and say whose limit it is and why.
    FindMax(Box<find_max::FindMaxArgs>),
}

/// Errors a subcommand reports before exiting (see [`CliError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The flags or scenario file do not make a valid plan, or preparing it failed (DNS, source
    /// addresses, the auth pre-step).
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// The engine could not run: too many connections for the descriptor limits, or a shard (or
    /// the auth thread) failed to start or failed during the run.
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    /// The built-in gateway could not start.
    #[error("built-in gateway: {0}")]
    Server(#[from] crate::server::ServerError),
    /// A certificate or key flag names an unusable file, or test certificates failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// An output path is unusable, found before the run: a directory, in a directory that
    /// does not exist or takes no new file. Fix: give a writable file path (or `-` for stdout).
    #[error("{flag} `{path}`: {reason}")]
    OutputPath {
        /// The flag that named the path, e.g. `--json`.
        flag: &'static str,
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it, and the fix.
        reason: String,
    },
    /// `merge` (or `report`) refused its inputs: a file that cannot be read or is not a result document,
    /// another plan or layout version, a run given twice. Fix: as the message says.
    #[error(transparent)]
    Merge(#[from] crate::results::merge::ResultsError),
    /// The `--json` results could not be written after the run (the disk filled, the directory
    /// went away, a device refused them); the summary is still printed. Fix: free space or
    /// give another path.
    #[error("cannot write the JSON results to `{path}`: {source}")]
    Output {
        /// The `--json` path (`-`: stdout).
        path: PathBuf,
        /// Why writing the temporary file, renaming it or writing through failed.
        source: std::io::Error,
    },
    /// The `--metrics-listen` endpoint could not start (the address is in use, or not this
    /// host's). Fix: as the message says.
    #[error(transparent)]
    Live(#[from] crate::results::live::LiveError),
    /// The HTML report (`report -o`, `run --html`) could not be written (the disk filled, the
    /// directory went away); after a run, the summary and the JSON are still written. Fix:
    /// free space or give another path.
    #[error("cannot write the HTML report to `{path}`: {source}")]
    Html {
        /// The `-o` or `--html` path (`-`: stdout).
        path: PathBuf,
        /// Why writing the temporary file, renaming it or writing through failed.
        source: std::io::Error,
    },
    /// `serve --tls` (or `demo --tls`) could not write the generated test CA's certificate, which
    /// clients need for `--cacert`. Fix: give `serve --ca-out` a path in a writable directory.
    #[error("cannot write the generated CA certificate file `{path}`: {source}")]
    CaOut {
        /// Where the CA certificate was to go: `serve --ca-out`, or the default in the temp
        /// directory.
        path: PathBuf,
        /// Why writing it failed.
        source: std::io::Error,
    },
}

impl CliError {
    /// [`EXIT_USAGE`] for invalid flag values, [`EXIT_ERROR`] for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Plan(
                plan::PlanError::Invalid { .. }
                | plan::PlanError::Scenario { .. }
                | plan::PlanError::File { .. }
                | plan::PlanError::BadUrl { .. }
                | plan::PlanError::Cert(_),
            ) => EXIT_USAGE,
            Self::Cert(CertError::Generate(_) | CertError::Config(_)) => EXIT_ERROR,
            Self::Cert(_) => EXIT_USAGE,
            Self::OutputPath { .. } => EXIT_USAGE,
            Self::Merge(_) => EXIT_USAGE,
            Self::Live(crate::results::live::LiveError::Bind { .. }) => EXIT_USAGE,
            // `--backend uring` where io_uring cannot run, or a memlock limit to raise.
            Self::Engine(engine::EngineError::Backend(_)) => EXIT_USAGE,
            // `--start-at` passed while the shards were set up: a later instant is the fix.
            Self::Engine(engine::EngineError::StartLate { .. }) => EXIT_USAGE,
            _ => EXIT_ERROR,
        }
    }

    /// The error and its causes, each said once: a cause already in the text (most messages
    /// name theirs) is not appended again.
    pub fn message(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let said = c.to_string();
            if !text.contains(&said) {
                text.push_str(": ");
                text.push_str(&said);
            }
            cause = c.source();
        }
        text
    }
}

/// The process-wide run control SIGINT (Ctrl-C), SIGTERM and SIGHUP talk to: the first stops
/// the run gracefully, the second at once.
pub(crate) fn control() -> &'static RunControl {
    static CTL: RunControl = RunControl::new();
    static INSTALL: std::sync::Once = std::sync::Once::new();
    fn on_signal(s: Signal) {
        CTL.interrupt_by(s.number());
    }
    INSTALL.call_once(|| {
        // Without a handler a signal kills the process and loses the results; a failure to
        // install is reported but not fatal.
        if let Err(e) = signal::install(on_signal) {
            eprintln!(
                "warning: cannot handle SIGINT, SIGTERM and SIGHUP ({e}); a signal will lose the results"
            );
        }
    });
    &CTL
}

/// Runs the parsed command; returns the exit code.
pub fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Run(args) => {
            if is_scenario_file(&args.url) {
                let path = Path::new(&args.url);
                let run = scenario::load(path, &run_words(&args.url))?;
                return run::storm_to(&run, args.html.as_deref());
            }
            let run = prepare(Run::single(args.plan()?)?)?;
            run::storm_to(&run, args.html.as_deref())
        }
        Command::Serve(args) => serve::serve(&args),
        Command::Demo(args) => demo::demo(&args),
        Command::Doctor(args) => Ok(doctor::doctor_cmd(&args)),
        Command::Merge(args) => merge::merge_cmd(&args),
        Command::Report(args) => report::report_cmd(&args),
        Command::FindMax(args) => {
            let words: Vec<String> = std::env::args()
                .skip_while(|w| w != "find-max")
                .skip(1)
                .collect();
            find_max::find_max_cmd(&args, &words)
        }
    }
}

/// Whether the `run` target is a scenario file rather than a URL.
fn is_scenario_file(target: &str) -> bool {
    !target.contains("://") && (target.ends_with(".toml") || Path::new(target).is_file())
}

/// The words given after `run` on this process's command line, without the scenario file.
fn run_words(file: &str) -> Vec<String> {
    let mut words: Vec<String> = std::env::args()
        .skip_while(|w| w != "run")
        .skip(1)
        .collect();
    if let Some(i) = words.iter().position(|w| w == file) {
        words.remove(i);
    }
    words
}

/// Parses the command line; `find-max FILE.toml` takes its mode from the file's `[find_max]`
/// table when the command line names none.
pub fn parse() -> Cli {
    let mut words: Vec<String> = std::env::args().collect();
    if words.get(1).map(String::as_str) == Some("find-max") {
        if let Some(first) = words.get(2).cloned() {
            let named = plan::find_max::SearchMode::parse(&first).is_ok();
            if !named && is_scenario_file(&first) {
                if let Ok(Some((Some(mode), _))) = scenario::find_max::read(Path::new(&first)) {
                    words.insert(2, mode.name().to_owned());
                }
            }
        }
    }
    Cli::parse_from(words)
}
