//! `sockstorm find-max connections|handshakes|messages URL|FILE`: the capacity search. The
//! run's flags are `run`'s; the search's own (`--slo`, `--start`, `--max`, `--factor`,
//! `--precision`, `--step-hold`) come from the command line or the scenario file's
//! `[find_max]` table (the command line wins). The run is shaped for the mode (its connection
//! room, connect or message rate, and a length that bounds the search), then searched by the
//! engine ([`crate::engine::find_max`]); the results are written like a run's, with the
//! verdict and its steps.

use super::args::RunArgs;
use super::{run, scenario, CliError};
use crate::engine;
use crate::plan::find_max::{SearchMode, SearchSpec, SearchWords};
use crate::plan::{parse, prepare, PlanError, Run};
use crate::proto::conn::Mode;
use crate::proto::tls::Resume;
use clap::Args;
use std::path::Path;
use std::time::Duration;

/// Flags of `sockstorm find-max`.
#[derive(Debug, Args)]
pub struct FindMaxArgs {
    /// What to raise: `connections` (sessions held at once), `handshakes` (per second, open
    /// loop) or `messages` (per second over -c sessions). With a scenario file whose
    /// `[find_max]` table names the mode, it may be left out.
    #[arg(id = "search_mode", value_name = "MODE")]
    pub mode: String,
    /// The search's own settings.
    #[command(flatten)]
    pub search: SearchArgs,
    /// The run's flags, as `sockstorm run` takes them.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The search's own flags.
#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    /// Objective every step must meet, in threshold syntax (repeatable), e.g.
    /// 'ws_connecting: p(99)<500ms', 'connect_errors: rate<0.001', 'ws_msg_rtt: p(99)<100ms',
    /// 'tls_handshake_full: p(99)<50ms'. Default: the mode's (see README).
    #[arg(long = "slo", value_name = "EXPR")]
    pub slo: Vec<String>,
    /// First value tried (connections 1000, handshakes 200/s, messages 1000/s).
    #[arg(long, value_name = "N")]
    pub start: Option<f64>,
    /// Largest value tried (connections: what this client can hold).
    #[arg(long, value_name = "N")]
    pub max: Option<f64>,
    /// Each step up multiplies the value by this until a step fails (default 1.5).
    #[arg(long, value_name = "F")]
    pub factor: Option<f64>,
    /// Bisection stops when the failing value is within this of the passing one (default 5%).
    #[arg(long, value_name = "P")]
    pub precision: Option<String>,
    /// How long each step holds its value once reached (default 10s).
    #[arg(long, value_parser = parse::duration, value_name = "DURATION")]
    pub step_hold: Option<Duration>,
}

impl SearchArgs {
    fn words(&self) -> SearchWords {
        SearchWords {
            slo: self.slo.clone(),
            start: self.start,
            max: self.max,
            factor: self.factor,
            precision: self.precision.clone(),
            step_hold: self.step_hold,
        }
    }
}

/// The search flags (and whether each takes a value), stripped from the words the run is
/// built from.
const SEARCH_FLAGS: [&str; 6] = [
    "--slo",
    "--start",
    "--max",
    "--factor",
    "--precision",
    "--step-hold",
];

/// `sockstorm find-max`: `words` are the command line's after `find-max`.
pub(super) fn find_max_cmd(args: &FindMaxArgs, words: &[String]) -> Result<u8, CliError> {
    // The mode and the search flags are this command's; the rest builds the run.
    let mut rest = Vec::with_capacity(words.len());
    let mut skip = false;
    let mut mode_seen = false;
    for w in words {
        if std::mem::take(&mut skip) {
            continue;
        }
        if SEARCH_FLAGS.contains(&w.as_str()) {
            skip = true;
            continue;
        }
        if SEARCH_FLAGS.iter().any(|f| w.starts_with(&format!("{f}="))) {
            continue;
        }
        if !mode_seen && *w == args.mode {
            mode_seen = true;
            continue;
        }
        rest.push(w.clone());
    }
    search(
        &args.mode,
        &args.search.words(),
        rest,
        args.run.html.as_deref(),
    )
}

/// Searches in `mode` with `words` (the target first, then `run` flags); `html` as
/// `run --html`.
pub(super) fn search(
    mode: &str,
    given: &SearchWords,
    words: Vec<String>,
    html: Option<&Path>,
) -> Result<u8, CliError> {
    let target = words.first().cloned().unwrap_or_default();
    let file = super::is_scenario_file(&target).then(|| Path::new(&target).to_owned());
    let table = match &file {
        Some(f) => scenario::find_max::read(f)?,
        None => None,
    };
    let (file_mode, file_words) = table.unwrap_or_default();
    let mode = match (SearchMode::parse(mode), file_mode) {
        (Ok(m), _) => m,
        (Err(_), Some(m)) if mode == target => m,
        (Err(e), _) => return Err(PlanError::invalid("MODE", e).into()),
    };
    let sw = merged(given, file_words);
    let mut flags: Vec<String> = words.iter().skip(1).cloned().collect();
    if mode == SearchMode::Handshakes {
        flags.extend(["--mode".into(), "handshake".into()]);
    }
    let mut spec = None;
    let mut shaper = |run: &mut Run| -> Result<(), PlanError> {
        let s = shape(run, mode, &sw)?;
        spec = Some(s);
        Ok(())
    };
    let run = match &file {
        Some(path) => scenario::load_shaped(path, &flags, &mut shaper)?,
        None => {
            let mut all = vec![target.clone()];
            all.extend(flags);
            let args = RunArgs::from_words(&all)
                .map_err(|e| PlanError::invalid("find-max", e.to_string()))?;
            let mut r = Run::single(args.plan()?)?;
            shaper(&mut r)?;
            prepare(r)?
        }
    };
    let spec = spec.expect("the run was shaped");
    run::storm_search(&run, html, &spec)
}

/// The command line's search settings over the file's.
fn merged(cli: &SearchWords, file: SearchWords) -> SearchWords {
    SearchWords {
        slo: if cli.slo.is_empty() {
            file.slo
        } else {
            cli.slo.clone()
        },
        start: cli.start.or(file.start),
        max: cli.max.or(file.max),
        factor: cli.factor.or(file.factor),
        precision: cli.precision.clone().or(file.precision),
        step_hold: cli.step_hold.or(file.step_hold),
    }
}

/// Checks the search against the run and shapes the run for it: connection room, rates and a
/// length that bounds the search.
fn shape(run: &mut Run, mode: SearchMode, words: &SearchWords) -> Result<SearchSpec, PlanError> {
    let main = &run.scenarios[0];
    let tls = main.tls.is_some();
    let resume = main.tls.as_ref().is_some_and(|t| t.resume != Resume::Off);
    let fanout = run.scenarios.iter().any(|p| p.conn.fanout.is_some());
    let mut words = words.clone();
    if mode == SearchMode::Connections && words.max.is_none() {
        // As many as this client can hold: beyond that the search would measure the client.
        let cap = engine::capacity(main.backend, main.cpus.len()).map_err(|e| {
            PlanError::invalid(
                "--max",
                format!("cannot tell what this client holds ({e}): give --max"),
            )
        })?;
        words.max = Some((mode.default_max().min(cap as f64)).max(words.start.unwrap_or(1.0)));
    }
    let spec = SearchSpec::new(mode, &words, tls, resume, fanout)?;
    if main.segment.is_some() {
        return Err(PlanError::invalid(
            "--segment",
            "a capacity search runs from one host: each step depends on what the last one measured, which other hosts cannot see; when one client is the limit, run the value it names with `sockstorm run --segment i/n` on several hosts and merge their results",
        ));
    }
    if run.scenarios.iter().any(|p| !p.stages.is_empty()) {
        return Err(PlanError::invalid(
            "--stages",
            "the search sets the load itself: leave out --stages (and `stages` in the file)",
        ));
    }
    let total: u64 = run.scenarios.iter().map(|p| p.connections.max(1)).sum();
    for p in &mut run.scenarios {
        match mode {
            SearchMode::Connections => {
                // Room for the ceiling, split over the scenarios as their counts are.
                let share = p.connections.max(1) as f64 / total as f64;
                p.connections = (spec.max * share).ceil() as u64;
                if !p.connect_rate.is_finite() {
                    p.connect_rate = 2000.0;
                }
            }
            SearchMode::Handshakes => {
                // Open loop: enough in flight for 250 ms of handshakes at the ceiling.
                p.connections = p
                    .connections
                    .max(((spec.max / 4.0).ceil() as u64).clamp(64, 5000));
                p.connect_rate = spec.start;
                if !matches!(p.conn.mode, Mode::Handshake { .. }) {
                    return Err(PlanError::invalid(
                        "--mode",
                        "a handshakes search runs handshake cycles: leave out --mode session",
                    ));
                }
            }
            SearchMode::Messages => {}
        }
    }
    if mode == SearchMode::Messages
        && !run
            .scenarios
            .iter()
            .any(|p| p.conn.message.is_some() && p.conn.message_interval > 0)
    {
        return Err(PlanError::invalid(
            "--message",
            "a messages search raises the message rate: give the message to send, e.g. --message '{\"ping\":{{seq}}}' (echoed back), or a scenario whose publishers send",
        ));
    }
    let bound = engine::find_max::bound(&spec, run.scenarios[0].connect_rate);
    for p in &mut run.scenarios {
        p.duration = bound + p.start;
    }
    Ok(spec)
}
