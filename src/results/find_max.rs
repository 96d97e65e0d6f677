//! A capacity search's result: the banner before it, the step table and verdict after the
//! summary, and the `find_max` section of the JSON (which the HTML report draws).

use crate::metrics::find_max::{FindMax, Limit, Step};
use crate::plan::find_max::SearchSpec;
use crate::plan::Prepared;
use serde_json::{json, Value};
use std::fmt::Write;

/// What the search will do, printed before it starts.
pub fn banner(run: &Prepared, spec: &SearchSpec) -> String {
    let slos: Vec<&str> = spec.slos.iter().map(|t| t.expr.as_str()).collect();
    format!(
        "sockstorm: find-max {} on {} ({}) over {} shard(s): from {} ×{} up to {} {}, each step held {:?}, bisect to {}%; objectives: {}",
        spec.mode.name(),
        run.main().url_text,
        run.target,
        run.main().cpus.len(),
        num(spec.start),
        spec.factor,
        num(spec.max),
        spec.mode.unit(),
        spec.step_hold,
        spec.precision * 100.0,
        slos.join(", ")
    )
}

/// One step as it is judged, for the live output: `step 4: 3,375 connections FAIL in 7.0 s
/// (connect_errors: rate<0.001 (measured 96.420%))`.
pub fn step_line(n: usize, s: &Step, unit: &str) -> String {
    let verdict = if s.pass { "pass" } else { "FAIL" };
    let why = s
        .why
        .as_deref()
        .map_or(String::new(), |w| format!(" ({w})"));
    format!(
        "sockstorm: step {n}: {} {unit} {verdict} in {:.1} s, reached {}, generator {}{why}",
        num(s.value),
        s.duration_s,
        num(s.reached),
        s.generator
    )
}

/// The step table and the verdict, for the end of the summary.
pub fn text(fm: &FindMax) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nfind-max {}: {} step(s) in {:.1}s",
        fm.mode,
        fm.steps.len(),
        fm.search_s
    );
    let _ = writeln!(
        o,
        "  {:>4} {:>12} {:>7} {:>12}  {:<4}  {:<16} {:<28} why",
        "step", "value", "secs", "reached", "ok", "generator", "failures"
    );
    for (i, s) in fm.steps.iter().enumerate() {
        let failures: Vec<String> = s.failures.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let generator = match s.generator_busy_pct {
            Some(b) => format!("{} {b:.0}%", s.generator),
            None => s.generator.to_owned(),
        };
        let _ = writeln!(
            o,
            "  {:>4} {:>12} {:>7.1} {:>12}  {:<4}  {:<16} {:<28} {}",
            i + 1,
            num(s.value),
            s.duration_s,
            num(s.reached),
            if s.pass { "pass" } else { "FAIL" },
            generator,
            if failures.is_empty() {
                "-".to_owned()
            } else {
                failures.join(", ")
            },
            s.why.as_deref().unwrap_or("")
        );
    }
    let slos = fm.slos.join(", ");
    let line = match (fm.limit, fm.max) {
        (Limit::Unfinished, Some(m)) => format!(
            "UNFINISHED: {} {} passed so far; {}",
            num(m),
            fm.unit,
            fm.cause
        ),
        (Limit::Unfinished, None) => format!("UNFINISHED: {}", fm.cause),
        (Limit::Ceiling, Some(m)) => {
            format!("at least {} {} ({slos}): {}", num(m), fm.unit, fm.cause)
        }
        (_, None) => format!("no step passed ({slos}): {}", fm.cause),
        (Limit::Client, Some(m)) => format!(
            "the CLIENT's limit is {} {} ({slos}) — not the gateway's capacity; beyond it: {}",
            num(m),
            fm.unit,
            fm.cause
        ),
        (Limit::Gateway, Some(m)) => format!(
            "this gateway holds {} {} ({slos}); beyond {}, what fails: {}",
            num(m),
            fm.unit,
            num(m),
            fm.cause
        ),
    };
    let _ = writeln!(o, "  verdict: {line}");
    o
}

/// The `find_max` section of the JSON.
pub fn json(fm: &FindMax) -> Value {
    json!({
        "mode": fm.mode,
        "unit": fm.unit,
        "max": fm.max,
        "knee": fm.knee,
        "limit": fm.limit.name(),
        "cause": fm.cause,
        "first_failing_slo": fm.first_failing_slo,
        "slos": fm.slos,
        "settings": {
            "start": fm.start,
            "max": fm.ceiling,
            "factor": fm.factor,
            "precision": fm.precision,
            "step_hold_s": fm.step_hold_s,
        },
        "search_s": fm.search_s,
        "steps": fm.steps.iter().map(step_json).collect::<Vec<_>>(),
    })
}

fn step_json(s: &Step) -> Value {
    json!({
        "value": s.value,
        "started_s": s.started_s,
        "duration_s": s.duration_s,
        "after_s": s.after_s,
        "reached": s.reached,
        "pass": s.pass,
        "why": s.why,
        "slos": s.slos.iter().map(|f| json!({
            "expr": f.expr, "actual": f.actual, "shown": f.shown, "pass": f.pass,
        })).collect::<Vec<_>>(),
        "failures": s.failures,
        "attempts": s.attempts,
        "established": s.established,
        "sessions_dropped": s.sessions_dropped,
        "sessions_retired": s.sessions_retired,
        "msgs_sent": s.msgs_sent,
        "published": s.published,
        "msgs_received": s.msgs_received,
        "msgs_unanswered": s.msgs_unanswered,
        "handshake_cycles": s.handshake_cycles,
        "generator": {"verdict": s.generator, "busy_pct": s.generator_busy_pct},
    })
}

/// 27500 → "27,500".
fn num(v: f64) -> String {
    crate::metrics::find_max::group(v)
}
