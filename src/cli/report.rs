//! `sockstorm report A.json [B.json …] -o report.html`: the self-contained HTML report of one
//! or more result documents (several are compared; see [`crate::report`]); `-` reads several
//! concatenated documents from stdin, `-o -` writes the page to stdout. `run --html FILE`
//! writes the same page for the run just made ([`check_html`] before it, [`write_html`] after).

use super::output::{self, JsonOut};
use super::{CliError, EXIT_OK};
use crate::results::merge::{self, Input, ResultsError};
use clap::Args;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Flags of `sockstorm report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Result documents (`run --json`, `merge -o`); with several, the first is the baseline and
    /// the others are drawn over it. `-` reads several, concatenated, from stdin.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Where the HTML page goes (`-`: stdout): one file, charts and data inline, that opens
    /// offline.
    #[arg(short = 'o', long = "output", value_name = "FILE.html")]
    pub output: PathBuf,
}

/// Reads the documents and writes their report; exit 0, or 2 naming the file that is not a
/// result document or the output path that cannot be written.
pub(super) fn report_cmd(a: &ReportArgs) -> Result<u8, CliError> {
    let out = check_html("-o", &a.output)?;
    let inputs = read_all(&a.inputs)?;
    let bytes = write_html(&out, &a.output, &inputs, &|| false)?;
    if !out.is_stdout() {
        eprintln!(
            "sockstorm report: {} ({} document{}, {} KiB)",
            a.output.display(),
            inputs.len(),
            if inputs.len() == 1 { "" } else { "s" },
            bytes.div_ceil(1024)
        );
    }
    Ok(EXIT_OK)
}

/// Checks an HTML output path before any work, as `--json`'s is (exit 2 naming `flag`).
pub(super) fn check_html(flag: &'static str, path: &Path) -> Result<JsonOut, CliError> {
    output::check_json(path).map_err(|e| match e {
        CliError::OutputPath { path, reason, .. } => CliError::OutputPath { flag, path, reason },
        e => e,
    })
}

/// Renders the report of `docs` and writes it to `out` (`path` as given, for the error);
/// returns its size in bytes.
pub(super) fn write_html(
    out: &JsonOut,
    path: &Path,
    docs: &[Input],
    give_up: &dyn Fn() -> bool,
) -> Result<usize, CliError> {
    let html = crate::report::render(docs);
    output::write_bytes(out, html.as_bytes(), give_up).map_err(|source| CliError::Html {
        path: path.to_owned(),
        source,
    })?;
    Ok(html.len())
}

/// Every document named (`-`: all of stdin's), in order.
fn read_all(names: &[String]) -> Result<Vec<Input>, CliError> {
    let mut docs = Vec::new();
    for name in names {
        let read = if name == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map(|_| s)
        } else {
            std::fs::read_to_string(name)
        };
        let text = read.map_err(|source| ResultsError::Read {
            file: name.into(),
            source,
        })?;
        let (found, skipped) = merge::documents(name, &text)?;
        if found.is_empty() {
            return Err(ResultsError::NotADocument {
                file: name.clone(),
                reason: format!("it holds none ({skipped} lines, none a JSON document)"),
            }
            .into());
        }
        docs.extend(found);
    }
    Ok(docs)
}
