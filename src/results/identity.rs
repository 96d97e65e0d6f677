//! The identity of a run's plan: the plan's key fields, normalized (keys sorted, host-specific
//! settings left out), and a stable 64-bit FNV-1a hash of them. Runs of the same plan on
//! different hosts — and, once segments exist, different segments of one plan — share it;
//! `sockstorm merge` refuses documents whose identities differ and names the first key that
//! does.
//!
//! Left out as host-specific: the resolved target address, the source addresses, the machine,
//! and anything measured. A later `segment` would be left out the same way.

use serde_json::{Map, Value};

/// Settings that are the host's, not the plan's.
const HOST_SETTINGS: [&str; 3] = ["target", "source_ips", "source_ips_auto"];

/// The plan's key fields, from a result document's parts: `settings` (less
/// `HOST_SETTINGS`), each scenario's plan fields, stages, threshold expressions, the storm
/// and the offered TLS configuration.
pub fn plan_keys(doc: &Value) -> Value {
    let mut settings = doc["settings"].as_object().cloned().unwrap_or_default();
    for k in HOST_SETTINGS {
        settings.remove(k);
    }
    let pick = |v: &Value, keys: &[&str]| -> Value {
        let obj: Map<String, Value> = keys
            .iter()
            .filter_map(|k| v.get(*k).map(|x| ((*k).to_owned(), x.clone())))
            .collect();
        if obj.is_empty() && !v.is_object() {
            Value::Null
        } else {
            obj.into()
        }
    };
    let scenarios: Vec<Value> = doc["scenarios"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let mut p = pick(s, &SCENARIO_KEYS);
                    p["storm"] = pick(&s["storm"], &STORM_KEYS);
                    p
                })
                .collect()
        })
        .unwrap_or_default();
    let thresholds: Vec<Value> = doc["thresholds"]
        .as_array()
        .map(|a| a.iter().map(|t| t["expr"].clone()).collect())
        .unwrap_or_default();
    let stages = doc["stages"].get("stages").cloned().unwrap_or(Value::Null);
    serde_json::json!({
        "settings": settings,
        "scenarios": scenarios,
        "stages": stages,
        "thresholds": thresholds,
        "storm": pick(&doc["storm"], &STORM_KEYS),
        "tls": pick(&doc["tls"], &TLS_KEYS),
    })
}

/// A scenario's plan fields (the rest of its section is measured).
const SCENARIO_KEYS: [&str; 7] = [
    "name",
    "url",
    "connections",
    "start_s",
    "header_names",
    "send_on_open_bytes",
    "reconnect",
];
/// A storm's plan fields.
const STORM_KEYS: [&str; 5] = ["at_s", "fraction", "every_s", "close", "policy"];
/// The offered TLS configuration.
const TLS_KEYS: [&str; 10] = [
    "server_name",
    "verify_certificates",
    "verify_cache",
    "versions_offered",
    "ciphers_offered",
    "kx_offered",
    "alpn_offered",
    "client_certificate",
    "resume",
    "tickets_requested",
];

/// `v` as compact JSON with every object's keys sorted: the same text for the same data,
/// whatever order the keys were built or read in.
pub fn canonical(v: &Value) -> String {
    // serde_json keeps insertion order with `preserve_order` and sorts without it: sorting
    // here makes the text the same either way.
    let mut text = String::new();
    write_sorted(v, &mut text);
    text
}

fn write_sorted(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                write_sorted(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(x, out);
            }
            out.push(']');
        }
        x => out.push_str(&x.to_string()),
    }
}

/// 64-bit FNV-1a of `bytes` (stable across versions and platforms, unlike `std`'s hasher).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The identity of plan keys `keys`: `fnv1a64:` and 16 hex digits.
pub fn identity(keys: &Value) -> String {
    format!("fnv1a64:{:016x}", fnv1a64(canonical(keys).as_bytes()))
}

/// The first key path where `a` and `b` differ (`settings.connections`,
/// `scenarios[1].url`), with both values; `None` when they are equal.
pub fn first_difference(a: &Value, b: &Value) -> Option<(String, Value, Value)> {
    fn walk(path: &str, a: &Value, b: &Value) -> Option<(String, Value, Value)> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                keys.into_iter().find_map(|k| {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let null = Value::Null;
                    walk(&p, x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null))
                })
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (a, b))| walk(&format!("{path}[{i}]"), a, b)),
            _ if a == b => None,
            _ => Some((path.to_owned(), a.clone(), b.clone())),
        }
    }
    walk("", a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(connections: u64, source: &str) -> Value {
        json!({
            "settings": {"url": "ws://h/", "connections": connections, "source_ips": [source], "target": source},
            "scenarios": [{"name": "main", "url": "ws://h/", "connections": connections, "counters": {"attempts": 5}}],
            "thresholds": [{"expr": "ws_connecting: p(95)<200ms", "actual": 3.0, "pass": true}],
            "storm": null, "tls": null, "stages": null,
        })
    }

    #[test]
    fn same_plan_on_other_hosts_has_one_identity() {
        let (a, b) = (
            plan_keys(&doc(10, "127.0.1.1")),
            plan_keys(&doc(10, "127.0.2.1")),
        );
        assert_eq!(identity(&a), identity(&b));
        assert_eq!(first_difference(&a, &b), None);
    }

    #[test]
    fn a_different_plan_names_the_key() {
        let (a, b) = (plan_keys(&doc(10, "x")), plan_keys(&doc(12, "x")));
        assert_ne!(identity(&a), identity(&b));
        let (key, x, y) = first_difference(&a, &b).unwrap();
        assert_eq!(key, "scenarios[0].connections");
        assert_eq!((x, y), (json!(10), json!(12)));
    }

    #[test]
    fn canonical_text_ignores_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[1,{"d":0,"c":1}]}}"#).unwrap();
        assert_eq!(
            canonical(&a),
            r#"{"a":{"x":[1,{"c":1,"d":0}],"y":2},"b":1}"#
        );
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
