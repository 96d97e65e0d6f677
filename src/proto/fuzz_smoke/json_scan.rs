//! `json_scan`: the JSON field scanners that read received messages without buffering them:
//! [`FieldScan`] (`--latency-from json:FIELD`, and the fan-out fields `pub`, `seq`, `ts`),
//! [`JsonPath`] and [`Cond`] (rules, `json:PATH OP VALUE`) and [`ExpectPattern`] (`--expect`).

use crate::proto::conn::fanout_fields;
use crate::proto::inspect::{ExpectPattern, FieldScan, LatencyField, TimeUnit};
use crate::proto::select::{Cond, JsonPath};
use serde_json::Value;

/// The keys the input picks from: the fan-out fields, common ones, and one with a dot.
const KEYS: [&str; 8] = ["pub", "seq", "ts", "id", "a", "message", "b", "x.y"];

const UNITS: [TimeUnit; 4] = [
    TimeUnit::Seconds,
    TimeUnit::Millis,
    TimeUnit::Micros,
    TimeUnit::Nanos,
];

/// Scans `msg` for `field` in reads of `chunk` bytes.
fn scan(field: &LatencyField, msg: &[u8], chunk: usize) -> FieldScan {
    let mut s = FieldScan::default();
    for c in msg.chunks(chunk.max(1)) {
        s.feed(field, c);
    }
    s
}

/// Every reading of a scan: its value and its time in each unit.
fn readings(s: &FieldScan) -> [Option<u64>; 5] {
    [
        s.value(),
        s.micros(UNITS[0]),
        s.micros(UNITS[1]),
        s.micros(UNITS[2]),
        s.micros(UNITS[3]),
    ]
}

/// How often `needle` occurs in `hay`.
fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// The scanner against serde_json on the valid JSON `text` whose parse is `v`: where the key
/// appears once in the text (so it can only be the top-level key, and no nested or escaped
/// copy comes first), a non-negative number reads as its integer part; where the quoted key
/// does not appear at all, nothing is found.
fn agrees_with_serde(key: &str, text: &[u8], v: &Value) {
    let field = LatencyField::new(key, TimeUnit::Micros);
    let got = scan(&field, text, text.len()).value();
    let quoted = format!("\"{key}\"");
    match count(text, quoted.as_bytes()) {
        0 => assert_eq!(
            got,
            None,
            "{key} found in {:?}",
            String::from_utf8_lossy(text)
        ),
        1 => {
            let show = String::from_utf8_lossy(text);
            match v.get(key) {
                Some(Value::Number(n)) => {
                    if let Some(u) = n.as_u64() {
                        // 19 significant digits are kept: exact below 10^19.
                        let want = if u < 10_000_000_000_000_000_000 {
                            u
                        } else {
                            u / 10 * 10
                        };
                        assert_eq!(got, Some(want), "{key} in {show}");
                    } else if let Some(f) = n.as_f64().filter(|f| !f.is_sign_negative()) {
                        let got = got.unwrap_or_else(|| panic!("{key} not read in {show}"));
                        // f64 rounds the text; the scanner reads it exactly (19 digits),
                        // saturating at u64::MAX.
                        let want = f.trunc().min(u64::MAX as f64);
                        let diff = (got as f64 - want).abs();
                        assert!(
                            diff <= (want * 1e-15).max(1.0),
                            "{key}: {got} vs {f} in {show}"
                        );
                    } else {
                        assert_eq!(got, None, "{key}: negative read in {show}");
                    }
                }
                Some(_) => assert_eq!(got, None, "{key}: not a number, read in {show}"),
                // The one occurrence is not the top-level key (an escaped quote in another key).
                None => {}
            }
        }
        _ => {}
    }
}

/// Equal values, floats to within rounding: serde_json reads a float's text to the nearest
/// `f64` only with its `float_roundtrip` feature, so its own output may read back one unit off.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            (x - y).abs() <= x.abs().max(y.abs()) * 1e-15
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
        }
        _ => a == b,
    }
}

/// `find` against serde_json on canonical JSON (no duplicate keys, no escapes in the path's
/// keys): the value at the path, as written, parses to serde's value there.
fn path_agrees_with_serde(path: &JsonPath, keys: &[&str], canonical: &[u8], v: &Value) {
    let want = keys.iter().try_fold(v, |v, k| v.get(*k));
    let got = path.find(canonical);
    let show = String::from_utf8_lossy(canonical);
    match (got, want) {
        (None, None) => {}
        (Some(g), Some(w)) => {
            let parsed: Value = if let Value::String(_) = w {
                let mut q = Vec::with_capacity(g.len() + 2);
                q.push(b'"');
                q.extend_from_slice(g);
                q.push(b'"');
                serde_json::from_slice(&q)
            } else {
                serde_json::from_slice(g)
            }
            .unwrap_or_else(|e| panic!("{}: found {g:?} in {show}: {e}", path.as_str()));
            assert!(
                same(&parsed, w),
                "{}: {parsed} vs {w} in {show}",
                path.as_str()
            );
        }
        (g, w) => panic!("{}: found {g:?}, serde {w:?} in {show}", path.as_str()),
    }
}

/// Input: `[sel, path, cond, msg…]`. `sel` picks the key, the unit and the read size; `path`
/// picks a path of 1-3 keys; `cond` a rule and an expectation. Must hold: no panic; a scan
/// reads the same whole and in any read size, and again after `reset`; its readings in
/// coarser units are never smaller; the fan-out fields read as their own scans; on valid JSON
/// the scanner and `JsonPath::find` agree with serde_json (see the helpers); `find` returns a
/// part of the message; `Cond::Has` holds exactly when `find` finds; `text:` rules and
/// expectations hold exactly when the bytes occur.
pub fn json_scan(data: &[u8]) {
    let [sel, path_sel, cond_sel, msg @ ..] = data else {
        return;
    };
    let key = KEYS[usize::from(sel & 7)];
    let unit = UNITS[usize::from((sel >> 3) & 3)];
    let chunk = usize::from(sel >> 5) + 1;
    let field = LatencyField::new(key, unit);

    // Streaming: the read size is not observable.
    let whole = scan(&field, msg, msg.len());
    let split = scan(&field, msg, chunk);
    assert_eq!(
        readings(&whole),
        readings(&split),
        "{key} in reads of {chunk}"
    );
    let mut again = split;
    again.reset();
    again.feed(&field, msg);
    assert_eq!(readings(&again), readings(&whole), "after reset");
    let [_, s, ms, us, ns] = readings(&whole);
    assert!(
        s >= ms && ms >= us && us >= ns,
        "{s:?} {ms:?} {us:?} {ns:?}"
    );
    assert_eq!(whole.value(), us);
    for (f, name) in fanout_fields().iter().zip(["pub", "seq", "ts"]) {
        let own = LatencyField::new(name, TimeUnit::Micros);
        assert_eq!(
            readings(&scan(f, msg, chunk)),
            readings(&scan(&own, msg, msg.len()))
        );
    }

    // JsonPath: 1-3 keys.
    let keys: Vec<&str> = (0..1 + usize::from(path_sel % 3))
        .map(|i| KEYS[usize::from((path_sel >> (2 + 2 * i)) & 7) % 7])
        .collect();
    let path_text = format!("json:{}", keys.join("."));
    let path = JsonPath::parse(&path_text).expect("a path of plain keys");
    if let Some(found) = path.find(msg) {
        let range = msg.as_ptr_range();
        assert!(range.start <= found.as_ptr() && found.as_ptr_range().end <= range.end);
    }
    assert_eq!(Cond::Has(path.clone()).holds(msg), path.find(msg).is_some());

    // Rules and expectations: parse never panics, `text:` is a plain search.
    let needle = &msg[..msg.len().min(usize::from(cond_sel & 3))];
    let ops = ["=", "==", "!=", ">", ">=", "<", "<=", ""];
    let value = String::from_utf8_lossy(&msg[..msg.len().min(usize::from(cond_sel >> 5))]);
    let rule = format!(
        "{path_text}{}{value}",
        ops[usize::from((cond_sel >> 2) & 7)]
    );
    if let Ok(c) = Cond::parse(&rule) {
        let _ = c.holds(msg);
    }
    let needle_text = String::from_utf8_lossy(needle);
    let contains = |n: &[u8]| msg.windows(n.len()).any(|w| w == n);
    if let Ok(c) = Cond::parse(&format!("text:{needle_text}")) {
        assert_eq!(c.holds(msg), contains(needle_text.as_bytes()));
    }
    if let Ok(e) = ExpectPattern::parse(&format!("text:{needle_text}")) {
        assert_eq!(e.matches(msg), contains(needle_text.as_bytes()));
    }
    if let Ok(e) = ExpectPattern::parse(&format!("json:{key}={value}")) {
        let _ = e.matches(msg);
    }

    // Agreement with serde_json where the scanners promise it.
    if let Ok(v) = serde_json::from_slice::<Value>(msg) {
        agrees_with_serde(key, msg, &v);
        let canonical = serde_json::to_vec(&v).expect("a Value serializes");
        agrees_with_serde(key, &canonical, &v);
        path_agrees_with_serde(&path, &keys, &canonical, &v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fuzz_smoke::{smoke_runs, Gen};

    /// A JSON value of depth ≤ `depth`, with the scanners' keys, every kind of number and
    /// strings that hold quoted keys.
    pub(super) fn value(g: &mut Gen, depth: usize, out: &mut String) {
        let ws = |g: &mut Gen| g.pick(&["", "", " ", "\n\t "]);
        match g.below(if depth == 0 { 6 } else { 8 }) {
            0 => out.push_str(g.pick(&[
                "0",
                "7",
                "1712345678",
                "18446744073709551615",
                "18446744073709551616",
                "-3",
                "99999999999999999999999",
            ])),
            1 => out.push_str(g.pick(&[
                "1712345678.123456",
                "0.5",
                "1.7e9",
                "1E+2",
                "2.5e-3",
                "1e400",
                "0.000",
                "-0.0",
                "12.99999999999999999999",
            ])),
            2 => out.push_str(g.pick(&["true", "false", "null"])),
            3 => out.push_str(g.pick(&[
                "\"ts\"",
                "\"x\"",
                "\"a\\\"ts\"",
                "\"\\\"pub\\\": 5\"",
                "\"é\"",
                "\"\"",
            ])),
            4 | 5 => {
                let k = g.pick(&KEYS);
                out.push_str(&format!("\"{k}\""));
            }
            6 => {
                out.push('[');
                for i in 0..g.below(3) {
                    if i > 0 {
                        out.push(',');
                    }
                    value(g, depth - 1, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..g.below(5) {
                    if i > 0 {
                        out.push(',');
                    }
                    let k = if g.chance(8) {
                        "a\\\"ts"
                    } else {
                        g.pick(&KEYS)
                    };
                    out.push_str(&format!("{}\"{k}\"{}:{}", ws(g), ws(g), ws(g)));
                    value(g, depth - 1, out);
                }
                out.push('}');
            }
        }
    }

    pub(super) fn message(g: &mut Gen) -> Vec<u8> {
        let mut v = vec![g.byte(), g.byte(), g.byte()];
        let mut s = String::new();
        if g.chance(3) {
            s.push_str(&format!(
                r#"{{"action":"publish","channel":"c","pub":{},"seq":{},"ts":{}}}"#,
                g.below(1 << 20),
                g.below(1000),
                g.0.next_u64() >> g.below(64)
            ));
        } else {
            value(g, 3, &mut s);
            if !s.starts_with('{') {
                s = format!("{{\"ts\":{s}}}");
            }
        }
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn json_scan_smoke() {
        smoke_runs(21, 100_000, message, json_scan);
    }

    /// The generator reaches agreement checks on numbers, floats and nested paths.
    #[test]
    fn json_scan_generator_reaches_deep_paths() {
        let mut g = Gen::new(22);
        let (mut numbers, mut floats, mut nested) = (0, 0, 0);
        for _ in 0..5000 {
            let d = message(&mut g);
            let Ok(v) = serde_json::from_slice::<Value>(&d[3..]) else {
                continue;
            };
            match v.get(KEYS[usize::from(d[0] & 7)]) {
                Some(Value::Number(n)) if n.is_u64() => numbers += 1,
                Some(Value::Number(_)) => floats += 1,
                _ => {}
            }
            let mut inner = v.as_object().into_iter().flat_map(|o| o.values());
            nested += usize::from(inner.any(|x| x.as_object().is_some_and(|o| !o.is_empty())));
        }
        assert!(
            numbers > 100 && floats > 50 && nested > 10,
            "{numbers} {floats} {nested}"
        );
    }
}
