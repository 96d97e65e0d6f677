//! Merging what every section of a document measures (the whole run's and each scenario's):
//! counts summed key by key, histograms added exactly (decoded, `add`, re-encoded, their
//! percentiles recomputed), named requests and checks by name.

use super::error::ResultsError;
use super::{num, Part};
use crate::metrics::{named::add_hist, new_histogram};
use crate::results::hdr;
use hdrhistogram::Histogram;
use serde_json::{Map, Value};

/// Objects of counts (`counters`, `failures`, `close_codes`, ...) summed key by key; keys in
/// the order first seen.
pub(super) fn sum_counts<'a>(objs: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut out = Map::new();
    for (k, v) in objs.into_iter().filter_map(Value::as_object).flatten() {
        let e = out.entry(k.clone()).or_insert(Value::from(0u64));
        *e = Value::from(num(e) + num(v));
    }
    out.into()
}

/// The histogram `at` (a path for errors, e.g. `histograms.ws_connecting`) of every part,
/// added; parts without it add nothing.
pub(super) fn add_hists(
    parts: &[Part<'_>],
    at: &str,
    get: impl Fn(&Value) -> Option<&Value>,
) -> Result<Histogram<u64>, ResultsError> {
    let mut sum = new_histogram();
    for p in parts {
        let Some(text) = get(p.v).and_then(|h| h.get("hdr")).and_then(Value::as_str) else {
            continue;
        };
        let h = hdr::decode(text).map_err(|reason| ResultsError::Histogram {
            file: p.file.to_owned(),
            name: at.to_owned(),
            reason,
        })?;
        add_hist(&mut sum, &h);
    }
    Ok(sum)
}

/// A `histograms` object: every name any part has, added.
fn histograms(parts: &[Part<'_>]) -> Result<Value, ResultsError> {
    let mut out = Map::new();
    for name in keys(parts, |v| &v["histograms"]) {
        let h = add_hists(parts, &format!("histograms.{name}"), |v| {
            v["histograms"].get(&name)
        })?;
        out.insert(name, hdr::to_json(&h));
    }
    Ok(out.into())
}

/// Keys of the object `get` finds in each part, in the order first seen.
pub(super) fn keys(parts: &[Part<'_>], get: impl Fn(&Value) -> &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in parts {
        for k in get(p.v).as_object().into_iter().flat_map(Map::keys) {
            if !out.contains(k) {
                out.push(k.clone());
            }
        }
    }
    out
}

/// Named requests: sends, answers and losses summed, reply latency added.
fn requests(parts: &[Part<'_>]) -> Result<Value, ResultsError> {
    let mut out = Map::new();
    for name in keys(parts, |v| &v["requests"]) {
        let mut r = sum_counts(parts.iter().map(|p| &p.v["requests"][&name]));
        let h = add_hists(parts, &format!("requests.{name}.reply_latency"), |v| {
            v["requests"].get(&name).map(|r| &r["reply_latency"])
        })?;
        r["reply_latency"] = hdr::to_json(&h);
        out.insert(name, r);
    }
    Ok(out.into())
}

/// Checks: passes and failures summed, the pass rate recomputed.
fn checks(parts: &[Part<'_>]) -> Value {
    let mut out = Map::new();
    for name in keys(parts, |v| &v["checks"]) {
        let (passed, failed) = parts.iter().fold((0, 0), |(p, f), x| {
            let c = &x.v["checks"][&name];
            (p + num(&c["passed"]), f + num(&c["failed"]))
        });
        let total = passed + failed;
        let rate = (total > 0).then(|| passed as f64 / total as f64);
        out.insert(
            name,
            serde_json::json!({"passed": passed, "failed": failed, "rate": rate}),
        );
    }
    out.into()
}

/// Stream sequence totals summed (null when no part has streams).
fn streams(parts: &[Part<'_>]) -> Value {
    let some: Vec<&Value> = parts
        .iter()
        .map(|p| &p.v["streams"])
        .filter(|s| s.is_object())
        .collect();
    if some.is_empty() {
        Value::Null
    } else {
        sum_counts(some)
    }
}

/// Per target, in the plan's target order (one plan, so one order): counts and failures
/// summed, histograms added; `null` when no part ran over several targets.
fn targets(parts: &[Part<'_>]) -> Result<Value, ResultsError> {
    let n = parts
        .iter()
        .filter_map(|p| p.v["targets"].as_array().map(Vec::len))
        .max();
    let Some(n) = n else {
        return Ok(Value::Null);
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let sub: Vec<Part<'_>> = parts
            .iter()
            .filter_map(|p| p.v["targets"].get(i).map(|v| Part { file: p.file, v }))
            .collect();
        let first = sub[0].v;
        let sum = |k: &str| sub.iter().map(|p| num(&p.v[k])).sum::<u64>();
        out.push(serde_json::json!({
            "url": first["url"],
            "address": first["address"],
            "weight": first["weight"],
            "attempts": sum("attempts"),
            "established": sum("established"),
            "connect_failed": sum("connect_failed"),
            "sessions_dropped": sum("sessions_dropped"),
            "failures": sum_counts(sub.iter().map(|p| &p.v["failures"])),
            "histograms": histograms(&sub)?,
        }));
    }
    Ok(out.into())
}

/// Everything a section measured, merged: `counters`, `failures`, `close_codes`,
/// `histograms`, `requests`, `checks`, `streams`, and where the parts have them
/// `app_errors` and `targets`; written into `out`.
pub(super) fn measures(parts: &[Part<'_>], out: &mut Value) -> Result<(), ResultsError> {
    for k in ["counters", "failures", "close_codes"] {
        out[k] = sum_counts(parts.iter().map(|p| &p.v[k]));
    }
    if parts.iter().any(|p| p.v.get("app_errors").is_some()) {
        out["app_errors"] = sum_counts(parts.iter().map(|p| &p.v["app_errors"]));
    }
    if parts.iter().any(|p| p.v.get("targets").is_some()) {
        out["targets"] = targets(parts)?;
    }
    out["histograms"] = histograms(parts)?;
    out["requests"] = requests(parts)?;
    out["checks"] = checks(parts);
    out["streams"] = streams(parts);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hist_of(samples: &[u64]) -> Histogram<u64> {
        let mut h = new_histogram();
        for s in samples {
            h.saturating_record(*s);
        }
        h
    }

    #[test]
    fn targets_and_server_errors_merge_by_position_and_text() {
        let t = |attempts: u64, samples: &[u64], failures: Value| {
            json!({"url": "ws://a/ws", "address": "10.0.0.1:80", "weight": 2,
                   "attempts": attempts, "established": attempts, "connect_failed": 0,
                   "sessions_dropped": 0, "failures": failures,
                   "histograms": {"tcp_connect": hdr::to_json(&hist_of(samples)),
                                  "ws_connecting": hdr::to_json(&hist_of(samples))}})
        };
        let docs = [
            json!({"targets": [t(3, &[10, 20, 30], json!({})), t(1, &[5], json!({"http_503": 2}))],
                   "app_errors": {"boom": 1}}),
            json!({"targets": [t(2, &[40, 50], json!({})), t(4, &[6, 7, 8, 9], json!({"http_503": 1}))],
                   "app_errors": {"boom": 2, "other": 1}}),
        ];
        let parts: Vec<Part<'_>> = docs.iter().map(|v| Part { file: "x", v }).collect();
        let mut out = json!({});
        measures(&parts, &mut out).unwrap();
        assert_eq!(out["app_errors"], json!({"boom": 3, "other": 1}));
        let m = out["targets"].as_array().unwrap();
        assert_eq!(
            (m[0]["attempts"].as_u64(), m[1]["attempts"].as_u64()),
            (Some(5), Some(5))
        );
        assert_eq!(m[1]["failures"], json!({"http_503": 3}));
        assert_eq!(m[0]["weight"], 2);
        assert_eq!(
            m[0]["histograms"]["tcp_connect"],
            hdr::to_json(&hist_of(&[10, 20, 30, 40, 50]))
        );
        // Documents without them merge as before: no such keys.
        let plain = [json!({"counters": {"attempts": 1}})];
        let parts: Vec<Part<'_>> = plain.iter().map(|v| Part { file: "x", v }).collect();
        let mut out = json!({});
        measures(&parts, &mut out).unwrap();
        assert!(out.get("targets").is_none() && out.get("app_errors").is_none());
    }

    #[test]
    fn added_histograms_equal_the_histogram_of_all_samples() {
        let a: Vec<u64> = (1..=5000).map(|i| i * 37 % 90_001 + 1).collect();
        let b: Vec<u64> = (1..=3000).map(|i| i * i % 2_000_003 + 5).collect();
        let c = [59_999_999, 1, 1, 1];
        let docs: Vec<Value> = [&a[..], &b[..], &c[..]]
            .iter()
            .map(|s| json!({"histograms": {"ws_msg_rtt": hdr::to_json(&hist_of(s))}}))
            .collect();
        let parts: Vec<Part<'_>> = docs.iter().map(|v| Part { file: "x", v }).collect();
        let mut out = json!({});
        measures(&parts, &mut out).unwrap();
        let all: Vec<u64> = a.iter().chain(&b).chain(&c).copied().collect();
        let whole = hist_of(&all);
        let merged = hdr::decode(out["histograms"]["ws_msg_rtt"]["hdr"].as_str().unwrap()).unwrap();
        assert_eq!(merged, whole);
        assert_eq!(out["histograms"]["ws_msg_rtt"]["count"], 8004);
        assert_eq!(out["histograms"]["ws_msg_rtt"], hdr::to_json(&whole));
    }

    #[test]
    fn counts_sum_key_by_key() {
        let docs = [
            json!({"counters": {"attempts": 3, "established": 2}, "failures": {"refused": 1}, "close_codes": {"1000": 2}}),
            json!({"counters": {"attempts": 4, "established": 4}, "failures": {"timeout": 2}, "close_codes": {"1000": 1, "1006": 1}}),
        ];
        let parts: Vec<Part<'_>> = docs.iter().map(|v| Part { file: "x", v }).collect();
        let mut out = json!({});
        measures(&parts, &mut out).unwrap();
        assert_eq!(out["counters"], json!({"attempts": 7, "established": 6}));
        assert_eq!(out["failures"], json!({"refused": 1, "timeout": 2}));
        assert_eq!(out["close_codes"], json!({"1000": 3, "1006": 1}));
    }

    #[test]
    fn a_broken_histogram_names_its_file_and_place() {
        let docs = [json!({"histograms": {"tcp_connect": {"count": 1, "hdr": "%%"}}})];
        let parts = [Part {
            file: "b.json",
            v: &docs[0],
        }];
        let e = measures(&parts, &mut json!({})).unwrap_err().to_string();
        assert!(
            e.starts_with("`b.json`: histogram histograms.tcp_connect: not base64"),
            "{e}"
        );
    }
}
