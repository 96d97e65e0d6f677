//! Timelines merged per Unix second: every host's sample of one `unix_s` covers the same
//! second, so counts add up. Gauges (`open`) add too (each host's open sessions at that
//! second's end); a one-way latency p99 cannot be added, so the merge keeps the largest
//! (an upper bound of the second's p99 over all hosts).

use crate::metrics::run::Sample;
use serde_json::Value;
use std::collections::BTreeMap;

/// Samples of all `timelines` (the documents' `timeline` arrays) summed per `unix_s`, in
/// time order; `t_s` (seconds from that host's start) is the first document's for that second.
pub(super) fn merge<'a>(timelines: impl IntoIterator<Item = &'a Value>) -> Vec<Sample> {
    let mut by: BTreeMap<u64, Sample> = BTreeMap::new();
    for tl in timelines {
        let samples: Vec<Sample> = serde_json::from_value(tl.clone()).unwrap_or_default();
        for s in samples {
            match by.get_mut(&s.unix_s) {
                Some(m) => add(m, &s),
                None => {
                    by.insert(s.unix_s, s);
                }
            }
        }
    }
    by.into_values().collect()
}

/// `s` added into `m` (the same Unix second).
fn add(m: &mut Sample, s: &Sample) {
    m.open += s.open;
    m.established += s.established;
    m.msgs_received += s.msgs_received;
    m.msgs_pushed += s.msgs_pushed;
    m.latency_p99_us = m.latency_p99_us.max(s.latency_p99_us);
    for (k, [p50, p99]) in &s.latency_us {
        let e = m.latency_us.entry(k.clone()).or_insert([0, 0]);
        *e = [e[0].max(*p50), e[1].max(*p99)];
    }
    m.failures += s.failures;
    m.reconnects += s.reconnects;
    m.tls_full += s.tls_full;
    m.tls_resumed += s.tls_resumed;
    for (k, n) in &s.failures_by_cause {
        *m.failures_by_cause.entry(k.clone()).or_insert(0) += n;
    }
    if m.open_by_scenario.len() < s.open_by_scenario.len() {
        m.open_by_scenario.resize(s.open_by_scenario.len(), 0);
    }
    for (a, b) in m.open_by_scenario.iter_mut().zip(&s.open_by_scenario) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn samples_add_per_unix_second() {
        let a = json!([
            {"t_s": 1.0, "unix_s": 100, "open": 5, "established": 5, "msgs_received": 0, "msgs_pushed": 0, "failures": 1, "reconnects": 0, "tls_full": 0, "tls_resumed": 0, "failures_by_cause": {"refused": 1}},
            {"t_s": 2.0, "unix_s": 101, "open": 5, "established": 0, "msgs_received": 10, "msgs_pushed": 0, "failures": 0, "reconnects": 0, "tls_full": 0, "tls_resumed": 0, "latency_us": {"ws_connecting": [50, 60], "ws_msg_rtt": [5, 9]}},
        ]);
        let b = json!([
            {"t_s": 0.4, "unix_s": 101, "open": 3, "established": 3, "msgs_received": 2, "msgs_pushed": 1, "failures": 2, "reconnects": 0, "tls_full": 0, "tls_resumed": 0, "failures_by_cause": {"refused": 2}, "latency_p99_us": 70, "latency_us": {"ws_connecting": [40, 90]}},
            {"t_s": 1.4, "unix_s": 102, "open": 3, "established": 0, "msgs_received": 9, "msgs_pushed": 0, "failures": 0, "reconnects": 0, "tls_full": 0, "tls_resumed": 0},
        ]);
        let m = merge([&a, &b]);
        let secs: Vec<u64> = m.iter().map(|s| s.unix_s).collect();
        assert_eq!(secs, [100, 101, 102]);
        assert_eq!(
            (m[1].open, m[1].established, m[1].msgs_received),
            (8, 3, 12)
        );
        assert_eq!((m[1].failures, m[1].failures_by_cause["refused"]), (2, 2));
        assert_eq!(m[1].latency_p99_us, Some(70));
        // Per-second percentiles cannot be added: the largest host's of each.
        assert_eq!(m[1].latency_us["ws_connecting"], [50, 90]);
        assert_eq!(m[1].latency_us["ws_msg_rtt"], [5, 9]);
        assert_eq!(m[0].failures_by_cause["refused"], 1);
    }
}
