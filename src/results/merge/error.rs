//! What can stop a merge: every error names the document (its file, or `-#k` for the k-th
//! document read from stdin) and the problem; the CLI exits 2 with it.

use std::path::PathBuf;

/// Why `sockstorm merge` refused its inputs.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// A result file could not be read (missing, unreadable). Fix: give the path of a JSON
    /// file `sockstorm run --json` wrote.
    #[error("cannot read `{file}`: {source}")]
    Read {
        /// The path as given.
        file: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// An input is not a sockstorm result document (not JSON, truncated, or JSON without
    /// `schema_version`). Fix: pass the files `--json` wrote, whole.
    #[error("`{file}`: not a sockstorm result document: {reason}")]
    NotADocument {
        /// The document's name.
        file: String,
        /// What was found instead.
        reason: String,
    },
    /// A document of another layout version (version 1 has no histograms to add). Fix: run
    /// every host with the same sockstorm release, one that writes this version.
    #[error(
        "`{file}`: schema_version {found}, this sockstorm merges schema_version {expected} only"
    )]
    Schema {
        /// The document's name.
        file: String,
        /// Its `schema_version`.
        found: String,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// Two documents are results of different plans: their `plan.keys` differ at `key`.
    /// Fix: merge only runs of one plan (same flags or scenario file on every host).
    #[error("`{file}` is a run of another plan than `{first}`: {key} is {theirs} there and {ours} in `{first}`")]
    PlanMismatch {
        /// The document that differs.
        file: String,
        /// The first document, whose plan the others must have.
        first: String,
        /// The first differing key path, e.g. `settings.connections`.
        key: String,
        /// Its value in `file`.
        theirs: String,
        /// Its value in `first`.
        ours: String,
    },
    /// The same run was given twice (equal `run_id`). Fix: give each host's document once,
    /// or pass `--partial` to merge each run once and go on.
    #[error("`{file}` is the same run as `{other}` (run_id {run_id}); give each once, or pass --partial")]
    Duplicate {
        /// The second occurrence.
        file: String,
        /// The first occurrence.
        other: String,
        /// The run's id.
        run_id: String,
    },
    /// A histogram's `hdr` cannot be decoded (edited or truncated document). Fix: use the
    /// file as `--json` wrote it.
    #[error("`{file}`: histogram {name}: {reason}")]
    Histogram {
        /// The document's name.
        file: String,
        /// Where the histogram is, e.g. `histograms.ws_connecting`.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing to merge. Fix: name result files, or `-` to read them from stdin.
    #[error("no result documents to merge{0}")]
    Empty(String),
}
