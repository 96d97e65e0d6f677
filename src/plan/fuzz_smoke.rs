//! The plan layer's fuzz bodies (`fuzz/` target `threshold`), and their smoke tests on stable.
//! See `proto::fuzz_smoke` for how the bodies are shared with the fuzz crate.
#![allow(
    unreachable_pub,
    reason = "the bodies are `pub` for the fuzz crate (feature `fuzzing`)"
)]

use crate::metrics::{Hist, ShardStats};
use crate::plan::threshold::Threshold;

/// Metrics of every kind: histograms, counters, sums, ratios, replies, checks, streams.
const METRICS: [&str; 12] = [
    "ws_connecting",
    "ws_msg_rtt",
    "tcp_connect",
    "msgs_received",
    "ws_sessions",
    "ws_msgs_sent",
    "connect_errors",
    "msg_loss",
    "ws_reply",
    "reply_loss",
    "checks",
    "stream_lost",
];

const AGGS: [&str; 9] = [
    "p(95)", "p(0)", "p(100)", "avg", "min", "max", "med", "count", "rate",
];

const VALUES: [&str; 9] = [
    "200ms", "1s", "0", "0.1%", "50%", "1000", "2.5", "1us", "3m",
];

/// Each comparison with its negation.
const OPS: [(&str, &str); 6] = [
    ("<", ">="),
    (">=", "<"),
    (">", "<="),
    ("<=", ">"),
    ("==", "!="),
    ("!=", "=="),
];

/// Input: `[stats…(8), secs, shape, expr…]`. The stats bytes fill histograms and counters,
/// `secs` is the run's length, `shape` also builds a well-formed expression from its parts.
/// Must hold: no panic; an error keeps the expression and names `--threshold`; a parsed
/// threshold keeps the trimmed expression and parses again to itself, also with blanks added
/// around the comparison; its evaluation keeps the expression, passes only on a measured,
/// finite value, and the negated comparison passes exactly when it does not.
pub fn threshold(data: &[u8]) {
    let [stats @ .., secs, shape] = data.get(..10).unwrap_or(&[]) else {
        return;
    };
    let stats: [u8; 8] = stats.try_into().expect("8 bytes");
    let expr = String::from_utf8_lossy(&data[10..]);
    let s = stats_of(stats);
    let secs = [0.0, 0.5, 1.0, 60.0, 1e-300][usize::from(*secs % 5)];

    match Threshold::parse(&expr) {
        Ok(t) => check_parsed(&t, &expr, &s, secs),
        Err(e) => {
            assert_eq!(e.expr, expr);
            assert!(e.to_string().starts_with("--threshold `") && !e.reason.is_empty());
        }
    }

    // A well-formed expression and its negation.
    let metric = METRICS[usize::from(*shape) % METRICS.len()];
    let agg = AGGS[usize::from(shape / 12) % AGGS.len()];
    let value = VALUES[usize::from(stats[0]) % VALUES.len()];
    let (op, neg) = OPS[usize::from(stats[1]) % OPS.len()];
    let tag = ["", "{scenario:a}", "{msg:publish}", "{name:ok}"][usize::from(stats[2] & 3)];
    let text = format!("{metric}{tag}: {agg} {op} {value}");
    let Ok(t) = Threshold::parse(&text) else {
        return;
    };
    check_parsed(&t, &text, &s, secs);
    let spaced = format!("  {metric}{tag} :{agg}{op}  {value}  ");
    let mut again = Threshold::parse(&spaced).unwrap_or_else(|e| panic!("{text}, spaced: {e}"));
    again.expr = t.expr.clone();
    assert_eq!(again, t, "{spaced}");
    let negated = Threshold::parse(&format!("{metric}{tag}: {agg} {neg} {value}"))
        .unwrap_or_else(|e| panic!("{text}, negated: {e}"));
    let (a, b) = (t.eval(&s, secs), negated.eval(&s, secs));
    assert_eq!(a.actual.map(f64::to_bits), b.actual.map(f64::to_bits));
    if a.actual.is_some() {
        assert_ne!(a.pass, b.pass, "{text} and its negation: {a:?} {b:?}");
    }
}

/// Histograms and counters from eight bytes.
fn stats_of(b: [u8; 8]) -> ShardStats {
    let mut s = ShardStats::new();
    for (i, &x) in b.iter().enumerate() {
        if x & 1 != 0 {
            let h = Hist::ALL[(usize::from(x >> 1) + i) % Hist::ALL.len()];
            s.record(h, u64::from(x) << (i * 3));
        }
    }
    let c = &mut s.counters;
    c.attempts = u64::from(b[0]) + u64::from(b[1]);
    c.established = u64::from(b[1]);
    c.connect_failed = u64::from(b[0]);
    c.msgs_sent = u64::from(b[2]) * 3;
    c.msgs_received = u64::from(b[2]) * 3 - u64::from(b[3] % (b[2].max(1)));
    c.requests_sent = u64::from(b[4]);
    c.replies_unanswered = u64::from(b[4] / 3);
    c.checks_passed = u64::from(b[5]);
    c.checks_failed = u64::from(b[6]);
    c.stream_skipped = u64::from(b[7]);
    c.stream_filled = u64::from(b[7] / 2);
    s
}

/// What a parsed threshold and its evaluation must satisfy.
fn check_parsed(t: &Threshold, expr: &str, s: &ShardStats, secs: f64) {
    assert_eq!(t.expr, expr.trim());
    let again = Threshold::parse(&t.expr).expect("a threshold's own text parses");
    assert_eq!(&again, t);
    let o = t.eval(s, secs);
    assert_eq!(o.expr, t.expr);
    if o.pass {
        assert!(o.actual.is_some(), "{o:?}");
    }
    if let Some(a) = o.actual {
        assert!(a.is_finite(), "{expr}: {o:?}");
    }
    let shown = o.to_string();
    assert!(shown.starts_with(if o.pass { "pass" } else { "FAIL" }) && shown.contains(&t.expr));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fuzz_smoke::{smoke_runs, Gen};

    /// Metrics with the aggregates and values that fit them.
    const FITTING: [(&str, &[&str], &[&str]); 7] = [
        (
            "ws_connecting",
            &["p(95)", "p(99.9)", "avg", "min", "max", "med", "count"],
            &["200ms", "1s", "0", "1us", "5"],
        ),
        (
            "ws_msg_rtt",
            &["p(50)", "count", "max"],
            &["1ms", "0", "3m"],
        ),
        ("msgs_received", &["count", "rate"], &["0", "1000", "2.5"]),
        ("ws_msgs_sent", &["count", "rate"], &["0", "10"]),
        ("connect_errors", &["rate"], &["0.1%", "50%", "0", "1"]),
        ("checks", &["rate"], &["99%", "0"]),
        ("stream_lost", &["count", "rate"], &["0", "1"]),
    ];

    pub(super) fn input(g: &mut Gen) -> Vec<u8> {
        let mut v: Vec<u8> = (0..10).map(|_| g.byte()).collect();
        let (metric, aggs, values) = g.pick(&FITTING);
        let mut metric = metric.to_owned();
        let mut agg = g.pick(aggs);
        let mut value = g.pick(values);
        let mut tag = "";
        match g.below(12) {
            0 => metric = g.pick(&METRICS).to_owned(),
            1 => agg = g.pick(&["p(-1)", "p(101)", "p(", "p(NaN)", "p(inf)", "rate", "avg"]),
            2 => value = g.pick(&["NaN", "inf", "-1", "1e400", "5 ms", "%", "1.5h", ""]),
            3 => tag = g.pick(&["{scenario:a}", "{name: y }", "{", "{a}", "{scenario:}"]),
            4 => {
                metric = g
                    .pick(&["ws_reply{msg:x}", "reply_loss{msg:x}", "ws_reply"])
                    .to_owned()
            }
            _ => {}
        }
        let op = g.pick(&["<", "<=", ">", ">=", "==", "!=", "<", ">", "=", "!"]);
        let sep = g.pick(&[":", ": ", " : ", ":", ""]);
        v.extend_from_slice(format!("{metric}{tag}{sep}{agg}{op}{value}").as_bytes());
        v
    }

    #[test]
    fn threshold_smoke() {
        smoke_runs(41, 100_000, input, threshold);
    }

    /// The generator reaches passing and failing evaluations of parsed thresholds.
    #[test]
    fn threshold_generator_reaches_deep_paths() {
        let mut g = Gen::new(42);
        let (mut pass, mut fail, mut err) = (0, 0, 0);
        for _ in 0..5000 {
            let d = input(&mut g);
            match Threshold::parse(&String::from_utf8_lossy(&d[10..])) {
                Ok(t) => {
                    let o = t.eval(&stats_of(d[..8].try_into().unwrap()), 1.0);
                    if o.pass {
                        pass += 1;
                    } else {
                        fail += 1;
                    }
                }
                Err(_) => err += 1,
            }
        }
        assert!(pass > 100 && fail > 100 && err > 100, "{pass} {fail} {err}");
    }
}
