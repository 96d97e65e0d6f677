//! The merged run's summary, in the form of a single run's (latency table, counters,
//! failures, close codes, thresholds) from the merged document, then one row per run.

use super::{num, real, Merged};
use crate::results::hdr;
use serde_json::Value;
use std::fmt::Write as _;

/// The human summary of a merge.
pub fn summary(m: &Merged) -> String {
    let mut o = String::new();
    let d = &m.doc;
    let rows = d["merged"]["documents"].as_array().map_or(0, Vec::len);
    let _ = writeln!(
        o,
        "\nsockstorm merge {}  {rows} run(s) of {} connections  {:.1}s  plan {}",
        d["settings"]["url"].as_str().unwrap_or_default(),
        num(&d["settings"]["connections"]),
        real(&d["elapsed_s"]),
        d["plan"]["identity"].as_str().unwrap_or_default(),
    );
    latencies(&mut o, d);
    counts(&mut o, "counters", &d["counters"]);
    counts(&mut o, "failures", &d["failures"]);
    counts(&mut o, "close codes", &d["close_codes"]);
    match &m.fanout {
        Some((f, c)) => crate::results::summary::fanout_lines(&mut o, f, c),
        None => {
            if let Some(why) = d["fanout"]["not_computed"].as_str() {
                let _ = writeln!(o, "\nfan-out loss: not computed: {why}");
            }
        }
    }
    verdicts(&mut o, m);
    documents(&mut o, d);
    for dup in &m.duplicates {
        let _ = writeln!(o, "duplicate: {dup}");
    }
    o
}

/// The latency table: every histogram with samples, percentiles recomputed from the merged
/// histogram (TLS ones only over wss://), rows as a single run's.
fn latencies(o: &mut String, d: &Value) {
    let _ = writeln!(
        o,
        "\n{:<16}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "latency", "count", "p50", "p90", "p95", "p99", "p99.9", "max"
    );
    let tls = d["tls"].is_object();
    let hists = d["histograms"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| tls || !k.starts_with("tls_"))
        .map(|(k, v)| (k.clone(), v));
    let replies = d["requests"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (format!("ws_reply{{msg:{k}}}"), &v["reply_latency"]));
    for (name, h) in hists.chain(replies) {
        if let Some(h) = h["hdr"].as_str().and_then(|t| hdr::decode(t).ok()) {
            crate::results::summary::latency_row(o, &name, &h);
        }
    }
}

/// A section of non-zero counts, `name value` per line.
fn counts(o: &mut String, title: &str, v: &Value) {
    let rows: Vec<(&String, u64)> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, n)| (k, num(n)))
        .filter(|(_, n)| *n > 0)
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n{title}:");
    for (k, n) in rows {
        let _ = writeln!(o, "  {k:<28}{n:>12}");
    }
}

/// The thresholds as evaluated on the merged data.
fn verdicts(o: &mut String, m: &Merged) {
    if m.outcomes.is_empty() {
        return;
    }
    let failed = m.outcomes.iter().filter(|t| !t.pass).count();
    let _ = writeln!(
        o,
        "\nthresholds (on the merged data): {}",
        if failed == 0 {
            "all passed".to_owned()
        } else {
            format!("{failed} of {} FAILED", m.outcomes.len())
        }
    );
    for t in &m.outcomes {
        let _ = writeln!(o, "  {t}");
    }
}

/// One row per run: its document, segment, host, start skew, connections, client CPU and
/// verdict; then the largest skew and any missing segments.
fn documents(o: &mut String, d: &Value) {
    let _ = writeln!(
        o,
        "\n{:<24} {:>7}  {:<20}{:>11}{:>12}{:>12}{:>10}{:>9}  verdict",
        "document", "segment", "host", "skew ms", "connections", "established", "failures", "cpu s"
    );
    for r in d["merged"]["documents"].as_array().into_iter().flatten() {
        let segment = match (r["segment"].as_u64(), r["segments"].as_u64()) {
            (Some(i), Some(n)) => format!("{i}/{n}"),
            _ => "-".to_owned(),
        };
        let skew = r["start_skew_us"]
            .as_i64()
            .map_or("-".to_owned(), |us| format!("{:.3}", us as f64 / 1000.0));
        let _ = writeln!(
            o,
            "{:<24} {:>7}  {:<20}{:>11}{:>12}{:>12}{:>10}{:>9.2}  {}",
            r["file"].as_str().unwrap_or_default(),
            segment,
            r["host"].as_str().unwrap_or_default(),
            skew,
            num(&r["connections"]),
            num(&r["established"]),
            num(&r["failures"]),
            real(&r["client_cpu_s"]),
            r["verdict"].as_str().unwrap_or_default(),
        );
    }
    if let Some(us) = d["merged"]["start_skew_us"].as_i64() {
        let how = if d["merged"]["documents"]
            .as_array()
            .is_some_and(|a| a.iter().all(|r| r["start_offset_us"].is_i64()))
        {
            "from each run's offset to --start-at"
        } else {
            "from the hosts' clocks"
        };
        let _ = writeln!(
            o,
            "start skew: {:.3} ms between the first and the last run to start ({how})",
            us as f64 / 1000.0
        );
    }
    if let Some(gaps) = d["merged"]["missing_segments"].as_array() {
        let list: Vec<String> = gaps.iter().map(Value::to_string).collect();
        let _ = writeln!(
            o,
            "PARTIAL: segments {} of {} are missing: the figures above cover the segments given",
            list.join(", "),
            num(&d["segment"]["count"])
        );
    }
}
