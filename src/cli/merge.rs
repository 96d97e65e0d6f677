//! `sockstorm merge A.json B.json … -o ALL.json`: result documents of one plan from several
//! hosts merged into one (see [`crate::results::merge`]); `-` reads several concatenated
//! documents from stdin, `-o -` writes to stdout (the summary then goes to stderr).

use super::output::{self, JsonOut};
use super::{CliError, EXIT_FAILURES, EXIT_OK, EXIT_THRESHOLDS};
use crate::results::merge::{self, Input, ResultsError};
use clap::Args;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;

/// Flags of `sockstorm merge`.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Result documents (`run --json`) of one plan; `-` reads several, concatenated, from
    /// stdin (e.g. `kubectl logs -l job-name=storm | sockstorm merge -`).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Where the merged document goes (`-`: stdout, the summary then goes to stderr).
    /// Without it, only the summary is printed.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Merge a run given twice once, and say so, instead of refusing.
    #[arg(long)]
    pub partial: bool,
}

/// Reads, merges, writes and summarizes; exit 99 when a threshold fails on the merged data,
/// 3 when the merged data holds failures (as a single run's exit code), else 0.
pub(super) fn merge_cmd(a: &MergeArgs) -> Result<u8, CliError> {
    let out = a
        .output
        .as_deref()
        .map(output::check_json)
        .transpose()
        .map_err(|e| match e {
            CliError::OutputPath { path, reason, .. } => CliError::OutputPath {
                flag: "-o",
                path,
                reason,
            },
            e => e,
        })?;
    let inputs = read_all(&a.inputs)?;
    let merged = merge::merge(&inputs, a.partial)?;
    if let Some(out) = &out {
        output::write_json(out, &merged.doc, &|| false)?;
    }
    let text = merge::summary(&merged);
    if out.as_ref().is_some_and(JsonOut::is_stdout) {
        eprint!("{text}");
    } else {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(text.as_bytes());
        let _ = o.flush();
    }
    Ok(match crate::results::verdict(&merged.doc) {
        "thresholds failed" => EXIT_THRESHOLDS,
        "ok" => EXIT_OK,
        _ => EXIT_FAILURES,
    })
}

/// Every document named (`-`: all of stdin's), in order.
fn read_all(names: &[String]) -> Result<Vec<Input>, CliError> {
    let mut docs = Vec::new();
    for name in names {
        let text = if name == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|source| ResultsError::Read {
                    file: name.into(),
                    source,
                })?;
            s
        } else {
            std::fs::read_to_string(name).map_err(|source| ResultsError::Read {
                file: name.into(),
                source,
            })?
        };
        let (found, skipped) = merge::documents(name, &text)?;
        if name == "-" {
            if found.is_empty() {
                return Err(ResultsError::Empty(format!(
                    " on stdin ({skipped} lines, none a JSON document)"
                ))
                .into());
            }
            if skipped > 0 {
                eprintln!(
                    "sockstorm merge: stdin: {} documents, {skipped} other lines skipped",
                    found.len()
                );
            }
        }
        docs.extend(found);
    }
    Ok(docs)
}
