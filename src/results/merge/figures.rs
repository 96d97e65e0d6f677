//! The figures of a document that are not plain counts: TLS, storms, stages, fan-out, the
//! process, the clock, handshake mode and per-connection auth, each combined as README's
//! "Merging results" table says (sums, max, recomputed ratios, or "not computed" and why).

use super::measures::{add_hists, sum_counts};
use super::{num, real, Part};
use crate::metrics::run::Sample;
use crate::results::hdr;
use serde_json::{json, Value};

/// Why fan-out loss and broadcast completion are not computed across documents.
pub(super) const FANOUT_NOT_COMPUTED: &str = "owed deliveries and broadcast completion need every host's publish log and subscriber windows, which the documents do not carry: each host's own figures are in `documents`";

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

/// Fan-out: every count summed. Owed deliveries, loss, the delivery ratio and broadcast
/// completion are exact within one document only: with one document holding fan-out they
/// are its own, with more they are null and `not_computed` says why.
pub(super) fn fanout(parts: &[Part<'_>]) -> Value {
    let with: Vec<&Value> = parts
        .iter()
        .map(|p| &p.v["fanout"])
        .filter(|f| f.is_object())
        .collect();
    match with.as_slice() {
        [] => Value::Null,
        [one] => (*one).clone(),
        many => {
            let mut out = many[0].clone();
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
                out[k] = many.iter().map(|f| num(&f[k])).sum::<u64>().into();
            }
            for k in ["owed", "lost", "delivery_ratio", "broadcast_completion"] {
                out[k] = Value::Null;
            }
            out["not_computed"] = FANOUT_NOT_COMPUTED.into();
            out
        }
    }
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
pub(super) fn auth(parts: &[Part<'_>]) -> Result<Value, super::ResultsError> {
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
