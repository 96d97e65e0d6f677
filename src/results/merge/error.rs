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
    /// An input is a capacity search (`find-max`): its steps and verdict are one host's, not a
    /// share of a plan. Fix: search from one host; merge runs split with `--segment`.
    #[error("`{file}` is a find-max search: its steps and verdict are one host's search, not a share of a plan, so it cannot be merged; read it on its own (sockstorm report {file}), and merge runs split over hosts with `sockstorm run --segment`")]
    Search {
        /// The document's name.
        file: String,
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
    /// A scenario's fan-out log cannot be decoded (edited or truncated document). Fix: use
    /// the file as `--json` wrote it.
    #[error("`{file}`: scenario `{scenario}`: fan-out log: {reason}")]
    FanoutLog {
        /// The document's name.
        file: String,
        /// The scenario whose `fanout_log` it is.
        scenario: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two documents hold the same segment of a split run (different runs: a segment was run
    /// twice). Fix: give each segment's document once, or pass `--partial` to merge the first.
    #[error("`{file}` holds segment {index}/{count}, as `{other}` does; give each segment once, or pass --partial")]
    DuplicateSegment {
        /// The second document of the segment.
        file: String,
        /// The first.
        other: String,
        /// The segment's index (0-based).
        index: u64,
        /// The segment count.
        count: u64,
    },
    /// Segments of a split run are missing. Fix: add their documents, or pass `--partial` to
    /// merge what there is (the merged figures then cover only the segments given).
    #[error("segments {missing} of {count} are missing: add their documents, or pass --partial to merge the segments given")]
    MissingSegments {
        /// The missing indices (0-based), listed.
        missing: String,
        /// The segment count.
        count: u64,
    },
    /// Documents of one plan split into different numbers of segments. Fix: merge the
    /// segments of one split (the same --segment I/N count, or --segments, on every host).
    #[error("`{file}` is a segment of {count}, `{other}` a segment of {other_count}: merge the segments of one split")]
    SegmentCount {
        /// The document that differs.
        file: String,
        /// Its segment count.
        count: u64,
        /// A document with the other count.
        other: String,
        /// Its count.
        other_count: u64,
    },
    /// A whole (unsplit) run beside segments of a split one: the whole run already holds every
    /// segment's connections. Fix: merge either the segments or whole runs.
    #[error("`{whole}` is a whole run and `{split}` one of {count} segments: merge the segments of one split, or whole runs")]
    SegmentMix {
        /// The unsplit run's document.
        whole: String,
        /// A segment's document.
        split: String,
        /// That segment count.
        count: u64,
    },
    /// Nothing to merge. Fix: name result files, or `-` to read them from stdin.
    #[error("no result documents to merge{0}")]
    Empty(String),
}
