//! The result of a capacity search (`sockstorm find-max`): the largest value that met every
//! objective, each step with its evidence, and where the limit is (the gateway's or the
//! client's) and why, in words. Built by the engine's search, written by `results`.

use std::collections::BTreeMap;

/// Whose limit the search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The target broke an objective or failed connections: its capacity.
    Gateway,
    /// The load generator ran out (CPU, ports, descriptors): not the target's capacity.
    Client,
    /// Every step up to `--max` passed: the capacity is above it.
    Ceiling,
    /// The search did not finish (a signal, the run's end): the steps so far.
    Unfinished,
}

impl Limit {
    /// `gateway`, `client`, `ceiling` or `unfinished`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Client => "client",
            Self::Ceiling => "ceiling",
            Self::Unfinished => "unfinished",
        }
    }
}

/// One objective on one step.
#[derive(Debug, Clone, PartialEq)]
pub struct SloFigure {
    /// The expression as given.
    pub expr: String,
    /// The measured value in the objective's unit (µs, fraction, count), if measured.
    pub actual: Option<f64>,
    /// The measured value as printed (`12.3ms`, `0.150%`).
    pub shown: String,
    /// Whether the measured value meets it (nothing measured counts as met).
    pub pass: bool,
}

/// One step of the search: a value held, and what it showed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    /// The value asked for (connections, or per second).
    pub value: f64,
    /// Seconds from the run's start to the step's start.
    pub started_s: f64,
    /// How long the step lasted (its ramp and its hold), s.
    pub duration_s: f64,
    /// Seconds after its verdict whose counts were added to it (the step down or drain that
    /// followed, or the run's stop): every count of the run is in some step (the first also
    /// holds what was counted before it began, while a messages search's sessions opened).
    pub after_s: f64,
    /// What was reached: the open sessions at the end (connections), or the rate measured
    /// over the hold (handshakes or messages per second).
    pub reached: f64,
    /// Whether every objective held and the value was reached.
    pub pass: bool,
    /// Why it failed, in a few words (the first reason).
    pub why: Option<String>,
    /// Each objective on the step's own measurements.
    pub slos: Vec<SloFigure>,
    /// Failures during the step by cause (`http_503`, `connect_timeout`, ...).
    pub failures: BTreeMap<String, u64>,
    /// Connection attempts during the step.
    pub attempts: u64,
    /// Sessions opened during the step.
    pub established: u64,
    /// Open sessions lost during the step.
    pub sessions_dropped: u64,
    /// Sessions closed by the search stepping down.
    pub sessions_retired: u64,
    /// Messages sent during the step (echoed ones; publishers' are `published`).
    pub msgs_sent: u64,
    /// Fan-out publishes sent during the step.
    pub published: u64,
    /// Messages received during the step.
    pub msgs_received: u64,
    /// Messages sent and never answered, counted as their sessions closed.
    pub msgs_unanswered: u64,
    /// Handshake cycles completed during the step.
    pub handshake_cycles: u64,
    /// The load generator over the step: `valid`, `strained` or `generator-bound`, from the
    /// busiest shard's mean busy share.
    pub generator: &'static str,
    /// The busiest shard's mean busy share over the step, % (None: not measured).
    pub generator_busy_pct: Option<f64>,
}

/// A finished (or interrupted) search.
#[derive(Debug, Clone, PartialEq)]
pub struct FindMax {
    /// `connections`, `handshakes` or `messages`.
    pub mode: &'static str,
    /// `connections`, `handshakes/s` or `messages/s`.
    pub unit: &'static str,
    /// The largest value that met every objective (None: not even the smallest step did).
    pub max: Option<f64>,
    /// The smallest value that failed (None: none failed).
    pub knee: Option<f64>,
    /// Whose limit the knee is.
    pub limit: Limit,
    /// Why the search stopped where it did, in words, with the fix when the client is the limit.
    pub cause: String,
    /// The first objective the knee step broke, if one did.
    pub first_failing_slo: Option<String>,
    /// The objectives, as given (or the mode's defaults).
    pub slos: Vec<String>,
    /// The first value tried.
    pub start: f64,
    /// The largest value the search could try (`--max`).
    pub ceiling: f64,
    /// Each step up multiplied the value by this.
    pub factor: f64,
    /// Bisection stopped within this fraction.
    pub precision: f64,
    /// How long each step held its value, s.
    pub step_hold_s: f64,
    /// How long the search took, s.
    pub search_s: f64,
    /// Every step, in the order they ran.
    pub steps: Vec<Step>,
}

/// 27500 → "27,500" (rounded to a whole number, thousands grouped).
pub fn group(v: f64) -> String {
    let whole = v.round() as u64;
    let s = whole.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
