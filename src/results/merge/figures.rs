//! The figures of a document that are not plain counts: TLS, storms, stages, fan-out, the
//! process, the clock, handshake mode and per-connection auth, each combined as README's
//! "Merging results" table says (sums, max, recomputed ratios, or "not computed" and why).

use super::error::ResultsError;
use super::measures::{add_hists, sum_counts};
use super::{num, real, Part};
use crate::metrics::fanout::{settle, FanoutStats, FanoutSummary};
use crate::metrics::run::Sample;
use crate::proto::conn::Counters;
use crate::results::hdr;
use crate::results::json::fanout_value;
use serde_json::{json, Value};

/// TLS: the offered configuration is the plan's (the first document's); handshakes, resumption
/// and negotiated parameters are summed, the resumed share recomputed.
pub(super) fn tls(parts: &[Part<'_>]) -> Value {
    let mut out = parts[0].v["tls"].clone();
    if !out.is_object() {
        return Value::Null;
    }
    for k in [
        "handshakes",
        "full",
        "resumed",
        "resume_attempted",
        "resume_refused",
    ] {
        out[k] = parts
            .iter()
            .map(|p| num(&p.v["tls"][k]))
            .sum::<u64>()
            .into();
    }
    for k in ["versions", "ciphers", "groups"] {
        out["negotiated"][k] = sum_counts(parts.iter().map(|p| &p.v["tls"]["negotiated"][k]));
    }
    let (h, r) = (num(&out["handshakes"]), num(&out["resumed"]));
    out["resumed_share"] = (h > 0).then(|| r as f64 / h as f64).into();
    out
}

/// A storm section (the run's or a scenario's): the plan's settings from the first document;
/// drops, failures and handshakes during recovery summed; the recovery the longest (null if
/// any host never recovered); the peak reconnect rate from the merged timeline over the
/// recovery window, the mean rate recomputed.
pub(super) fn storm(storms: &[&Value], timeline: &[Sample]) -> Value {
    let Some(first) = storms.iter().find(|s| s.is_object()) else {
        return Value::Null;
    };
    let mut out = (*first).clone();
    let sum = |k: &str| storms.iter().map(|s| num(&s[k])).sum::<u64>();
    let dropped = sum("dropped");
    out["dropped"] = dropped.into();
    out["failures_during_recovery"] = sum("failures_during_recovery").into();
    for k in ["failures_during_recovery_by_cause", "failures_by_cause"] {
        out[k] = sum_counts(storms.iter().map(|s| &s[k]));
    }
    for k in ["full", "resumed"] {
        out["tls_during_recovery"][k] = storms
            .iter()
            .map(|s| num(&s["tls_during_recovery"][k]))
            .sum::<u64>()
            .into();
    }
    let recovered: Option<Vec<f64>> = storms
        .iter()
        .map(|s| s["recovered_after_s"].as_f64())
        .collect();
    let longest = recovered.and_then(|v| v.into_iter().reduce(f64::max));
    out["recovered_after_s"] = longest.into();
    let at = real(&out["at_s"]);
    let until = match longest {
        Some(d) if out["every_s"].is_null() => at + d + 1.0,
        _ => f64::MAX,
    };
    let peak = timeline
        .iter()
        .filter(|x| x.t_s > at && x.t_s <= until)
        .map(|x| x.reconnects)
        .max();
    out["peak_reconnects_per_s"] = peak.unwrap_or(0).into();
    out["mean_reconnects_per_s"] = longest
        .filter(|d| *d > 0.0)
        .map(|d| (dropped as f64 / d).round())
        .into();
    out
}

/// Fan-out settled across hosts: every scenario's `fanout_log` from every document added
/// (within the caps one run keeps), then owed, lost and broadcast completion computed from
/// the whole log as for one run, so that publishers on one host and subscribers on another
/// are accounted exactly. The merged counters and each scenario's take the settled figures,
/// and each scenario its merged log (so a merge merges again). A document with fan-out
/// counts but no log (an older sockstorm's) leaves owed, loss and completion not computed,
/// naming it. The settled summary and the run's counters are returned for the summary.
pub(super) fn fanout(
    parts: &[Part<'_>],
    doc: &mut Value,
) -> Result<Option<(FanoutSummary, Counters)>, ResultsError> {
    if parts.iter().all(|p| !p.v["fanout"].is_object()) {
        doc["fanout"] = Value::Null;
        return Ok(None);
    }
    let n = doc["scenarios"].as_array().map_or(0, Vec::len);
    let mut logs = vec![FanoutStats::default(); n];
    for p in parts {
        for (k, log) in logs.iter_mut().enumerate() {
            let sc = &p.v["scenarios"][k];
            match sc["fanout_log"].as_str() {
                Some(text) => {
                    let one =
                        FanoutStats::from_text(text).map_err(|reason| ResultsError::FanoutLog {
                            file: p.file.to_owned(),
                            scenario: sc["name"].as_str().unwrap_or_default().to_owned(),
                            reason,
                        })?;
                    log.add(&one);
                }
                None if FANOUT_COUNTS.iter().any(|c| num(&sc["counters"][c]) > 0) => {
                    doc["fanout"] = unsettled(parts, p.file);
                    return Ok(None);
                }
                None => {}
            }
        }
    }
    let mut total = FanoutStats::default();
    for log in &logs {
        total.add(log);
    }
    let mut run = counters(&doc["counters"]);
    let mut each: Vec<Counters> = (0..n)
        .map(|k| counters(&doc["scenarios"][k]["counters"]))
        .collect();
    let summary = {
        let mut pairs: Vec<(&FanoutStats, &mut Counters)> = logs.iter().zip(&mut each).collect();
        settle(&total, &mut run, &mut pairs)
    };
    put_settled(&mut doc["counters"], &run);
    for (k, (c, log)) in each.iter().zip(&logs).enumerate() {
        let sc = &mut doc["scenarios"][k];
        put_settled(&mut sc["counters"], c);
        sc["fanout_log"] = (!log.is_empty()).then(|| log.to_text()).into();
    }
    doc["fanout"] = summary
        .as_ref()
        .map_or(Value::Null, |f| fanout_value(f, &run));
    Ok(summary.map(|f| (f, run)))
}

/// Counters whose presence in a section means it fanned out.
const FANOUT_COUNTS: [&str; 3] = ["fanout_published", "fanout_delivered", "fanout_untracked"];
/// The counters a settlement writes (0 until then, as in a run before its end).
const SETTLED: [&str; 4] = [
    "fanout_delivered_owed",
    "fanout_foreign",
    "fanout_owed",
    "fanout_lost",
];

/// A section's counters as [`Counters`], the settled ones zeroed.
fn counters(v: &Value) -> Counters {
    let mut c = Counters::default();
    for (k, n) in v.as_object().into_iter().flatten() {
        if let Some(x) = c.by_name_mut(k) {
            *x = num(n);
        }
    }
    for k in SETTLED {
        if let Some(x) = c.by_name_mut(k) {
            *x = 0;
        }
    }
    c
}

/// Writes the settled counters of `c` into a section's `counters`.
fn put_settled(v: &mut Value, c: &Counters) {
    for (k, n) in c.pairs() {
        if SETTLED.contains(&k) {
            v[k] = n.into();
        }
    }
}

/// Fan-out of documents without logs: every count summed, owed, loss and completion null and
/// `not_computed` naming the document without a log.
fn unsettled(parts: &[Part<'_>], file: &str) -> Value {
    let with: Vec<&Value> = parts
        .iter()
        .map(|p| &p.v["fanout"])
        .filter(|f| f.is_object())
        .collect();
    let mut out = with[0].clone();
    for k in [
        "published",
        "subscriber_sessions",
        "delivered_owed",
        "delivered_total",
        "foreign",
        "untracked",
        "duplicates",
        "reordered",
    ] {
        out[k] = with.iter().map(|f| num(&f[k])).sum::<u64>().into();
    }
    for k in ["owed", "lost", "delivery_ratio", "broadcast_completion"] {
        out[k] = Value::Null;
    }
    out["not_computed"] = format!(
        "`{file}` carries no fan-out log (an older sockstorm wrote it), and owed deliveries need \
         every host's publish log and subscriber windows: each host's own figures are in its document"
    )
    .into();
    out
}

/// Process figures: CPU and RSS summed over hosts; the peak of open sessions from the merged
/// timeline (the most open at once in any Unix second, all hosts together); RSS per open
/// connection recomputed from the summed growth and each host's own peak.
pub(super) fn process(parts: &[Part<'_>], timeline: &[Sample]) -> Value {
    let sum = |k: &str| parts.iter().map(|p| real(&p.v["process"][k])).sum::<f64>();
    let isum = |k: &str| parts.iter().map(|p| num(&p.v["process"][k])).sum::<u64>();
    let growth: u64 = parts
        .iter()
        .map(|p| {
            num(&p.v["process"]["rss_at_peak_open_bytes"])
                .saturating_sub(num(&p.v["process"]["rss_before_bytes"]))
        })
        .sum();
    let peaks = isum("peak_open");
    json!({
        "cpu_user_s": sum("cpu_user_s"),
        "cpu_sys_s": sum("cpu_sys_s"),
        "rss_before_bytes": isum("rss_before_bytes"),
        "rss_at_peak_open_bytes": isum("rss_at_peak_open_bytes"),
        "peak_open": timeline.iter().map(|s| s.open).max().unwrap_or(peaks),
        "rss_per_open_connection_bytes": growth.checked_div(peaks),
    })
}

/// The generator verdict: the worst of the hosts' (`generator-bound` over `strained` over
/// `valid`), each host's reasons prefixed with its document, every shard of every host listed
/// with its document.
pub(super) fn generator(parts: &[Part<'_>]) -> Value {
    let rank = |v: &Value| match v.as_str() {
        Some("generator-bound") => 2,
        Some("strained") => 1,
        _ => 0,
    };
    let worst = parts
        .iter()
        .map(|p| &p.v["generator"]["verdict"])
        .max_by_key(|v| rank(v))
        .cloned()
        .unwrap_or_default();
    let mut reasons = Vec::new();
    let mut shards = Vec::new();
    for p in parts {
        let g = &p.v["generator"];
        for r in g["reasons"].as_array().into_iter().flatten() {
            reasons.push(Value::from(format!(
                "{}: {}",
                p.file,
                r.as_str().unwrap_or_default()
            )));
        }
        for s in g["shards"].as_array().into_iter().flatten() {
            let mut s = s.clone();
            s["document"] = p.file.into();
            shards.push(s);
        }
    }
    json!({"verdict": worst, "reasons": reasons, "shards": shards})
}

/// The clock: steps and latency samples summed, the share lost to skew recomputed.
pub(super) fn clock(parts: &[Part<'_>]) -> Value {
    let mut out = parts[0].v["clock"].clone();
    for k in ["clock_steps", "latency_samples", "latency_clock_skew"] {
        out[k] = parts
            .iter()
            .map(|p| num(&p.v["clock"][k]))
            .sum::<u64>()
            .into();
    }
    let (kept, lost) = (
        num(&out["latency_samples"]),
        num(&out["latency_clock_skew"]),
    );
    let share = (kept + lost > 0).then(|| lost as f64 / (kept + lost) as f64);
    out["latency_excluded_share"] = share.into();
    out["warning"] = share
        .filter(|s| *s > crate::plan::threshold::UNRELIABLE_SHARE)
        .map(|s| format!("{:.1} % of the one-way latencies were lost to clock skew on some host: see each document's clock", s * 100.0))
        .into();
    out
}

/// Stages: the plan's from the first document; the deficit behind the ramp summed (each host's
/// worst, so an upper bound of the run's worst).
pub(super) fn stages(parts: &[Part<'_>]) -> Value {
    let mut out = parts[0].v["stages"].clone();
    if out.is_object() {
        out["ramp_deficit_max"] = parts
            .iter()
            .map(|p| num(&p.v["stages"]["ramp_deficit_max"]))
            .sum::<u64>()
            .into();
    }
    out
}

/// Handshake mode: cycles summed; the rate per second of run time (the longest host's, up to
/// the planned duration) and per second of client CPU (all hosts) recomputed.
pub(super) fn handshake(parts: &[Part<'_>], secs: f64, cpu_s: f64) -> Value {
    let mut out = parts[0].v["handshake_mode"].clone();
    if !out.is_object() {
        return Value::Null;
    }
    let n = parts
        .iter()
        .map(|p| num(&p.v["handshake_mode"]["cycles"]))
        .sum::<u64>();
    let per = |d: f64| if d > 0.0 { (n as f64 / d).round() } else { 0.0 };
    out["cycles"] = n.into();
    out["per_s"] = per(secs).into();
    out["per_client_cpu_s"] = per(cpu_s).into();
    out["client_cpu_us_per_handshake"] = if n > 0 {
        (cpu_s * 1e7 / n as f64).round() / 10.0
    } else {
        0.0
    }
    .into();
    out
}

/// Per-connection auth, per scenario: requests, tokens and failures summed, latency added, the
/// first error the first document's that has one.
pub(super) fn auth(parts: &[Part<'_>]) -> Result<Value, ResultsError> {
    let mut scenarios: Vec<String> = Vec::new();
    for p in parts {
        for a in p.v["auth_per_connection"].as_array().into_iter().flatten() {
            let n = a["scenario"].as_str().unwrap_or_default().to_owned();
            if !scenarios.contains(&n) {
                scenarios.push(n);
            }
        }
    }
    if scenarios.is_empty() {
        return Ok(Value::Null);
    }
    let mut out = Vec::new();
    for name in scenarios {
        let of = |v: &Value| -> Option<Value> {
            v["auth_per_connection"]
                .as_array()?
                .iter()
                .find(|a| a["scenario"] == name.as_str())
                .cloned()
        };
        let each: Vec<Value> = parts.iter().filter_map(|p| of(p.v)).collect();
        let h = add_hists(parts, &format!("auth_per_connection.{name}.latency"), |v| {
            v["auth_per_connection"]
                .as_array()?
                .iter()
                .find(|a| a["scenario"] == name.as_str())
                .map(|a| &a["latency"])
        })?;
        out.push(json!({
            "scenario": name,
            "requests": each.iter().map(|a| num(&a["requests"])).sum::<u64>(),
            "tokens": each.iter().map(|a| num(&a["tokens"])).sum::<u64>(),
            "failures": sum_counts(each.iter().map(|a| &a["failures"])),
            "first_error": each.iter().map(|a| &a["first_error"]).find(|e| !e.is_null()).cloned(),
            "latency": hdr::to_json(&h),
        }));
    }
    Ok(out.into())
}
