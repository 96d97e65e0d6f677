//! Scenario files: `sockstorm run FILE.toml`. Every key is a `sockstorm run` flag by its long
//! name (`message_rate` for `--message-rate`), plus a few tables that read better in a file
//! (`stages`, `storm`, `auth`, `tls`, `headers`) and the scenario-only keys `name`, `weight`
//! and `start`. Top-level keys are defaults for every `[[scenario]]`; flags on the command
//! line override both. Each value goes through the same parser as its flag, and each
//! validation error of the plan is traced back to the key it came from, so every mistake is
//! reported as `FILE:LINE:COLUMN: what is wrong and the fix`.
//!
//! [`read`] works in steps: the file's keys become flag words ([`keys`], [`items`],
//! [`stages`]) in blocks ([`blocks`]); the command line is parsed on its own; the run's
//! target is settled ([`target`]); each scenario's words become its `RunArgs` and the run's
//! totals are split over the scenarios ([`merge`]); each `RunArgs` becomes a plan, its
//! errors placed at their keys ([`plans`], [`locate`]); and the thresholds are gathered
//! ([`thresholds`]).

mod blocks;
pub(super) mod find_max;
mod items;
mod keys;
mod locate;
mod merge;
mod plans;
mod reader;
mod stages;
mod target;
mod thresholds;

use super::args::RunWords as Flags;
use crate::plan::{prepare, PlanError, Prepared, Run};
use blocks::{Block, ScenarioFile};
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use keys::clap_reason;
use reader::Reader;
use std::path::Path;
use target::Target;

/// Reads the scenario file at `path` with the command line's `cli` words over it, and
/// prepares the run; a target that does not resolve is reported at the file's `url`.
pub(super) fn load(path: &Path, cli: &[String]) -> Result<Prepared, PlanError> {
    load_shaped(path, cli, |_| Ok(()))
}

/// [`load`], with the run reshaped by `shape` before it is prepared (`find-max` sets its
/// connection room, rates and length).
pub(super) fn load_shaped(
    path: &Path,
    cli: &[String],
    shape: impl FnOnce(&mut Run) -> Result<(), PlanError>,
) -> Result<Prepared, PlanError> {
    let (mut run, url_at) = read(path, cli)?;
    run.file = Some(path.to_owned());
    shape(&mut run)?;
    prepare(run).map_err(|e| locate::unresolved_target(&url_at, e))
}

/// Loads `path` and merges `cli` (the `run` words after the file) over it; also says where
/// the file's `url` is (`FILE:LINE:COLUMN`), for errors about the target found later.
fn read(path: &Path, cli: &[String]) -> Result<(Run, String), PlanError> {
    let text = crate::plan::files::read_text_limited(path, crate::plan::files::SCENARIO_FILE_MAX)
        .map_err(|reason| PlanError::File {
        flag: "scenario file",
        path: path.to_owned(),
        reason,
    })?;
    read_text(path, &text, cli)
}

/// [`read`] once the file's contents are in `text` (`path` places errors and is where
/// relative paths in values start): never panics, whatever the text; every mistake is a
/// [`PlanError`].
pub(super) fn read_text(
    path: &Path,
    text: &str,
    cli: &[String],
) -> Result<(Run, String), PlanError> {
    let r = Reader::new(path, text);
    let file = r.file()?;
    let cmd = CommandLine::parse(&file.top, cli)?;
    let target = Target::resolve(&r, &file.top, &cmd)?;
    let input = Input {
        r: &r,
        file: &file,
        cmd: &cmd,
    };
    let mut args = input.scenario_args(&target, cli)?;
    input.split_totals(&mut args)?;
    let scenarios = input.plans(&args)?;
    let thresholds = input.thresholds()?;
    let abort_on_fail = input.abort_on_fail(&thresholds)?;
    let url_at = r.at(file.top.url_item().map_or(0, |i| i.span.start));
    let run = Run::new(scenarios, thresholds, abort_on_fail);
    run.check_segment()?;
    Ok((run, url_at))
}

/// What the steps after reading the file share: the reader (which places spans), the file's
/// blocks, and the command line.
struct Input<'a> {
    r: &'a Reader<'a>,
    file: &'a ScenarioFile,
    cmd: &'a CommandLine,
}

/// The words after the file, parsed on their own: which flags the command line itself sets
/// (they override the file, and their totals are split over every scenario), and its
/// thresholds.
struct CommandLine {
    matches: ArgMatches,
    flags: Flags,
    /// Each argument's long name with its clap id (`request` is the id `requests`).
    ids: Vec<(String, String)>,
}

impl CommandLine {
    /// Parses `cli`, with the file's url (or a stand-in) as the url it requires.
    fn parse(top: &Block, cli: &[String]) -> Result<Self, PlanError> {
        let mut words = vec![top.url().unwrap_or_else(|| "ws://127.0.0.1/".into())];
        words.extend(cli.iter().cloned());
        let command = Flags::command();
        let ids = command
            .get_arguments()
            .filter_map(|a| Some((a.get_long()?.to_owned(), a.get_id().to_string())))
            .collect();
        let matches = command
            .try_get_matches_from(&words)
            .map_err(|e| PlanError::Invalid {
                flag: "command line",
                reason: clap_reason(&e),
            })?;
        let flags = Flags::from_arg_matches(&matches).map_err(|e| PlanError::Invalid {
            flag: "command line",
            reason: clap_reason(&e),
        })?;
        Ok(Self {
            matches,
            flags,
            ids,
        })
    }

    /// Whether the command line itself gives the flag `name` (not a default): its clap id, or
    /// its long name with `_` for `-` (a plan error names the flag by its long name, which is
    /// not always the id: `--request` is `requests`). An unknown name is not given.
    fn sets(&self, name: &str) -> bool {
        let long = name.replace('_', "-");
        self.ids
            .iter()
            .find(|(l, id)| *l == long || id == name)
            .is_some_and(|(_, id)| {
                self.matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `scenario` fuzz target: a plan error names `--request`, whose clap id is
    /// `requests`; asking clap for the id `request` panicked in debug builds and, in release,
    /// said "not given" for a value that was, so its error was placed at a file key.
    #[test]
    fn a_flag_is_found_by_its_long_name_or_its_id() {
        let words: Vec<String> = ["--request", "a=b", "-d", "5s"].map(String::from).into();
        let cmd = CommandLine::parse(&Block::unnamed(0..0), &words).unwrap();
        for name in ["request", "requests", "duration", "d"] {
            assert_eq!(cmd.sets(name), name != "d", "{name}");
        }
        for name in ["message_rate", "no-such-flag", ""] {
            assert!(!cmd.sets(name), "{name}");
        }
    }

    /// `--segment I/N` over a file of weighted scenarios and a staged one: for N = 1..7 the
    /// segments' connections, stage targets and connect rates add up to the unsplit run's.
    #[test]
    fn segments_of_a_file_add_up_to_the_whole() {
        let text = r#"
url = "ws://127.0.0.1:9/ws"
connections = 7
connect_rate = 700

[[scenario]]
name = "chat"
weight = 2

[[scenario]]
name = "feed"
weight = 1

[[scenario]]
name = "ramp"
stages = [{ duration = "1s", target = 5 }, { duration = "1s", target = 6 }, { duration = "1s", target = 0 }]
"#;
        let path = Path::new("segments.toml");
        let read = |cli: &[&str]| {
            let words: Vec<String> = cli.iter().map(|w| (*w).to_owned()).collect();
            read_text(path, text, &words).map(|(run, _)| run)
        };
        let whole = read(&[]).unwrap();
        let conns: Vec<u64> = whole.scenarios.iter().map(|p| p.connections).collect();
        assert_eq!(conns, vec![5, 2, 6]);
        for n in 1..=7u64 {
            let mut sum = vec![0u64; 3];
            let mut targets = vec![0u64; 3];
            let mut rate = vec![0f64; 3];
            for k in 0..n {
                let seg = format!("{k}/{n}");
                let run = match read(&["--segment", &seg]) {
                    Ok(run) => run,
                    // Only a segment with none of the run's connections is refused.
                    Err(e) => {
                        assert!(e.to_string().contains("holds none"), "{seg}: {e}");
                        assert!(k >= 6, "{seg}: {e}");
                        continue;
                    }
                };
                for (j, p) in run.scenarios.iter().enumerate() {
                    assert_eq!(p.segment.map(|s| (s.index, s.count)), Some((k, n)));
                    sum[j] += p.connections;
                    rate[j] += p.connect_rate;
                }
                for (t, st) in targets.iter_mut().zip(&run.scenarios[2].stages) {
                    *t += st.target;
                }
            }
            assert_eq!(sum, conns, "N = {n}");
            assert_eq!(targets, vec![5, 6, 0], "N = {n}");
            for (j, p) in whole.scenarios.iter().enumerate() {
                assert!((rate[j] - p.connect_rate).abs() < 1e-6, "N = {n}: {rate:?}");
            }
        }
        // The file's own key, run-wide.
        let run = read_text(path, &format!("segment = \"1/3\"\n{text}"), &[])
            .unwrap()
            .0;
        let conns: Vec<u64> = run.scenarios.iter().map(|p| p.connections).collect();
        assert_eq!(conns, vec![2, 1, 2]);
        assert!(read(&["--segment", "3/3"]).is_err());
    }
}
