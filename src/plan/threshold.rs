//! Pass/fail criteria on the merged results, k6-style: `METRIC: AGGREGATE OP VALUE`, e.g.
//! `ws_connecting: p(95)<200ms`, `connect_errors: rate<0.1%`, `msgs_received: count>0`.
//! Parsed before the run (every error names the problem and the fix), evaluated once at the
//! end on the merged histograms and counters.

use crate::metrics::{Counters, Hist, ShardStats};
use std::fmt;

/// A threshold expression that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--threshold `{expr}`: {reason}")]
pub struct ThresholdError {
    /// The expression as given.
    pub expr: String,
    /// What is wrong and how to write it.
    pub reason: String,
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    /// Reply latency of the named requests (`ws_reply`; one request with `{msg:NAME}`).
    Reply,
    /// Named requests never answered, as a fraction of those sent (`reply_loss`).
    ReplyLoss,
    /// Messages that passed the checks, as a fraction of those checked (`checks`; one check
    /// with `{name:NAME}`).
    Checks,
    /// Stream messages lost: jumped over by a gap and never received late (`stream_lost`).
    StreamLost,
    /// A latency histogram (µs).
    Hist(Hist),
    /// An event counter.
    Counter(usize),
    /// The sum of several counters (k6's totals over all kinds of messages).
    Sum(&'static [&'static str]),
    /// A ratio of two counters (numerator, denominator), as a fraction.
    Rate(RateMetric),
}

/// Ratios users put thresholds on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateMetric {
    /// Attempts that never opened a session.
    ConnectErrors,
    /// Open sessions lost to errors.
    SessionDrops,
    /// Sent messages never answered.
    MsgLoss,
    /// TLS handshakes resumed.
    TlsResumed,
}

impl RateMetric {
    const ALL: [(&'static str, Self); 4] = [
        ("connect_errors", Self::ConnectErrors),
        ("session_drops", Self::SessionDrops),
        ("msg_loss", Self::MsgLoss),
        ("tls_resumed", Self::TlsResumed),
    ];

    fn of(self, c: &Counters) -> Option<f64> {
        let (n, d) = match self {
            Self::ConnectErrors => (c.connect_failed, c.attempts.saturating_sub(c.abandoned)),
            Self::SessionDrops => (c.sessions_dropped, c.established),
            Self::MsgLoss => (c.msgs_unanswered, c.msgs_sent),
            Self::TlsResumed => (
                c.tls_handshakes_resumed,
                c.tls_handshakes_full + c.tls_handshakes_resumed,
            ),
        };
        (d > 0).then(|| n as f64 / d as f64)
    }
}

/// How a metric is reduced to one number.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Agg {
    /// Percentile (0..=100) of a histogram.
    P(f64),
    Avg,
    Min,
    Max,
    /// Samples in a histogram, or a counter's value.
    Count,
    /// A rate metric's fraction, or a counter per second of run time.
    Rate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Self::Lt => a < b,
            Self::Le => a <= b,
            Self::Gt => a > b,
            Self::Ge => a >= b,
            Self::Eq => a == b,
            Self::Ne => a != b,
        }
    }
}

/// One parsed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The expression as given.
    pub expr: String,
    /// Evaluated on this scenario's results only (`metric{scenario:NAME}`), else overall.
    pub scenario: Option<String>,
    /// The named request (`{msg:NAME}`) or check (`{name:NAME}`) it is about, else all.
    pub part: Option<String>,
    metric: Metric,
    agg: Agg,
    op: Op,
    /// In the metric's unit: µs for histograms, a fraction for rates, a count otherwise.
    value: f64,
}

/// A threshold evaluated on a run's results.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The threshold's expression as given, printed beside its verdict.
    pub expr: String,
    /// The measured value in the threshold's unit, `None` when nothing was measured.
    pub actual: Option<f64>,
    /// Measured, and the condition holds.
    pub pass: bool,
    /// Why the verdict cannot be trusted, if it cannot: the histogram it was evaluated on lost
    /// more than [`UNRELIABLE_SHARE`] of its samples (see [`Lost`]). The verdict stands as
    /// measured; this says it was measured on what was left.
    pub unreliable: Option<String>,
    /// How `actual` reads.
    unit: Unit,
}

/// Above this share of its samples lost, a histogram's thresholds are marked unreliable and
/// the results warn: 1 %.
pub const UNRELIABLE_SHARE: f64 = 0.01;

/// The samples a histogram lost: measured, but left out of it and counted instead. Today only
/// one-way latencies are: a timestamp ahead of this machine's clock gives no latency and
/// counts in `latency_clock_skew`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// The histogram.
    pub hist: Hist,
    /// Samples it holds.
    pub kept: u64,
    /// Samples left out of it.
    pub lost: u64,
}

impl Lost {
    /// What histogram `hist` of `s` kept and lost.
    pub fn of(s: &ShardStats, hist: Hist) -> Self {
        let lost = match hist {
            Hist::WsMsgLatency => s.counters.latency_clock_skew,
            _ => 0,
        };
        Self {
            hist,
            kept: s.hist(hist).len(),
            lost,
        }
    }

    /// The share of the samples lost (0 when there were none).
    pub fn share(&self) -> f64 {
        let all = self.kept + self.lost;
        if all == 0 {
            0.0
        } else {
            self.lost as f64 / all as f64
        }
    }

    /// More than [`UNRELIABLE_SHARE`] lost: what the histogram says may not be what happened.
    pub fn too_many(&self) -> bool {
        self.share() > UNRELIABLE_SHARE
    }

    /// What was lost and why, e.g. `120 of 1000 ws_msg_latency samples (12.0%) excluded:
    /// server timestamps ahead of this machine's clock (latency_clock_skew)`.
    pub fn describe(&self) -> String {
        format!(
            "{} of {} {} samples ({:.1}%) excluded: server timestamps ahead of this machine's clock (latency_clock_skew; clocks not in sync, or stepped)",
            self.lost,
            self.kept + self.lost,
            self.hist.name(),
            self.share() * 100.0
        )
    }
}

/// The unit of a threshold's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Micros,
    Fraction,
    Number,
}

impl Outcome {
    /// The measured value in its unit (`12.3ms`, `0.150%`, `42`), or `no data`.
    pub fn shown(&self) -> String {
        match (self.actual, self.unit) {
            (None, _) => "no data".to_owned(),
            (Some(v), Unit::Micros) => crate::metrics::fmt_us(v.round() as u64),
            (Some(v), Unit::Fraction) => format!("{:.3}%", v * 100.0),
            (Some(v), Unit::Number) => format!("{v:.2}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actual = self.shown();
        write!(
            f,
            "{}  {:<48} actual {actual}",
            if self.pass { "pass" } else { "FAIL" },
            self.expr
        )?;
        match &self.unreliable {
            Some(why) => write!(f, "  UNRELIABLE: {why}"),
            None => Ok(()),
        }
    }
}

impl Threshold {
    /// Parses `METRIC: AGG OP VALUE`.
    pub fn parse(expr: &str) -> Result<Self, ThresholdError> {
        let err = |reason: String| ThresholdError {
            expr: expr.to_owned(),
            reason,
        };
        // A tag (`metric{scenario:NAME}`) has a colon of its own: split after it.
        let tag_end = match (expr.find('{'), expr.find('}')) {
            (Some(o), Some(c)) if o < c && expr[..o].find(':').is_none() => c,
            _ => 0,
        };
        let split = expr[tag_end..].find(':').map(|i| i + tag_end);
        let (name, cond) = split.map(|i| (&expr[..i], &expr[i + 1..])).ok_or_else(|| {
            err("expected `METRIC: AGGREGATE OP VALUE`, e.g. `ws_connecting: p(95)<200ms`".into())
        })?;
        let (name, tags) = match name.trim().split_once('{') {
            None => (name.trim(), ""),
            Some((n, tag)) => match tag.strip_suffix('}') {
                Some(t) => (n.trim(), t),
                None => {
                    return Err(err(format!(
                        "`{}`: the tag is not closed with }}",
                        name.trim()
                    )))
                }
            },
        };
        let metric = metric_named(name).ok_or_else(|| err(unknown_metric(name)))?;
        let (mut scenario, mut part) = (None, None);
        for tag in tags.split(',').filter(|t| !t.trim().is_empty()) {
            let (k, v) = tag
                .split_once(':')
                .map_or(("", ""), |(k, v)| (k.trim(), v.trim()));
            let fits = match k {
                "scenario" => true,
                "msg" => matches!(metric, Metric::Reply | Metric::ReplyLoss),
                "name" => metric == Metric::Checks,
                _ => false,
            };
            if v.is_empty() || !fits {
                return Err(err(format!(
                    "bad tag `{}` in `{name}`: tags are {{scenario:NAME}}, {{msg:NAME}} on ws_reply and reply_loss, {{name:NAME}} on checks, e.g. ws_reply{{msg:publish}}: p(99)<100ms",
                    tag.trim()
                )));
            }
            if k == "scenario" {
                scenario = Some(v.to_owned());
            } else {
                part = Some(v.to_owned());
            }
        }
        let cond: String = cond.chars().filter(|c| !c.is_whitespace()).collect();
        let at = cond
            .find(['<', '>', '=', '!'])
            .ok_or_else(|| err("missing comparison: use <, <=, >, >=, == or !=".into()))?;
        let (agg_text, rest) = cond.split_at(at);
        let (op, value_text) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find_map(|(s, op)| rest.strip_prefix(s).map(|v| (op, v)))
        .ok_or_else(|| err(format!("`{rest}` is not a comparison")))?;
        let agg = parse_agg(agg_text).ok_or_else(|| {
            err(format!(
                "unknown aggregate `{agg_text}`: use p(N), avg, min, max, med, count or rate"
            ))
        })?;
        match (metric, agg) {
            (Metric::Hist(_) | Metric::Reply, Agg::Rate) => {
                return Err(err(format!(
                    "`{name}` is a latency: use p(N), avg, min, max, med or count"
                )))
            }
            (
                Metric::Counter(_) | Metric::Sum(_) | Metric::StreamLost,
                Agg::P(_) | Agg::Avg | Agg::Min | Agg::Max,
            ) => {
                return Err(err(format!(
                    "`{name}` is a counter: use count or rate (per second)"
                )))
            }
            (Metric::Rate(_) | Metric::ReplyLoss | Metric::Checks, a) if a != Agg::Rate => {
                return Err(err(format!(
                    "`{name}` is a ratio: use rate, e.g. rate<0.1%"
                )))
            }
            _ => {}
        }
        // A histogram's `count` is a number of samples, not a time.
        let value = match (metric, agg) {
            (Metric::Hist(_) | Metric::Reply, Agg::Count) => value_text
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| err(format!("`{value_text}` is not a number of samples"))),
            _ => parse_value(metric, value_text).map_err(err),
        }?;
        Ok(Self {
            expr: expr.trim().to_owned(),
            scenario,
            part,
            metric,
            agg,
            op,
            value,
        })
    }

    /// The metric's name as written (`ws_connecting` in `ws_connecting{scenario:a}: p(99)<1s`).
    pub fn metric_name(&self) -> &str {
        self.expr.split([':', '{']).next().unwrap_or("").trim()
    }

    /// Evaluates on merged results of a run that lasted `secs` seconds.
    pub fn eval(&self, s: &ShardStats, secs: f64) -> Outcome {
        let all_replies;
        let reply_hist = match (self.metric, self.part.as_deref()) {
            (Metric::Reply, Some(n)) => s.named.request_named(n).map(|r| &r.latency),
            (Metric::Reply, None) => {
                all_replies = s.named.all_replies();
                Some(&all_replies)
            }
            _ => None,
        };
        let actual = match self.metric {
            Metric::Hist(_) | Metric::Reply => {
                let h = match (self.metric, reply_hist) {
                    (Metric::Hist(h), _) => s.hist(h),
                    (_, Some(h)) => h,
                    // A request of that name sent nothing here.
                    _ => crate::metrics::empty_histogram(),
                };
                let unknown = self.metric == Metric::Reply && reply_hist.is_none();
                match self.agg {
                    _ if unknown => None,
                    Agg::Count => Some(h.len() as f64),
                    _ if h.is_empty() => None,
                    Agg::P(p) => Some(h.value_at_quantile(p / 100.0) as f64),
                    Agg::Avg => Some(h.mean()),
                    Agg::Min => Some(h.min() as f64),
                    Agg::Max => Some(h.max() as f64),
                    Agg::Rate => None,
                }
            }
            Metric::Counter(_) | Metric::Sum(_) => {
                let pairs = s.counters.pairs();
                let v = match self.metric {
                    Metric::Counter(i) => pairs[i].1,
                    Metric::Sum(names) => pairs
                        .iter()
                        .filter(|(n, _)| names.contains(n))
                        .map(|(_, v)| v)
                        .sum(),
                    _ => 0,
                } as f64;
                match self.agg {
                    Agg::Rate => (secs > 0.0).then(|| v / secs),
                    _ => Some(v),
                }
            }
            Metric::Rate(r) => r.of(&s.counters),
            Metric::ReplyLoss => {
                let (n, d) = match &self.part {
                    Some(p) => s
                        .named
                        .request_named(p)
                        .map_or((0, 0), |r| (r.unanswered, r.sent)),
                    None => (s.counters.replies_unanswered, s.counters.requests_sent),
                };
                (d > 0).then(|| n as f64 / d as f64)
            }
            Metric::Checks => {
                let (n, d) = match &self.part {
                    Some(p) => s
                        .named
                        .check_named(p)
                        .map_or((0, 0), |c| (c.passed, c.passed + c.failed)),
                    None => (
                        s.counters.checks_passed,
                        s.counters.checks_passed + s.counters.checks_failed,
                    ),
                };
                (d > 0).then(|| n as f64 / d as f64)
            }
            Metric::StreamLost => {
                let c = &s.counters;
                let v = c.stream_skipped.saturating_sub(c.stream_filled) as f64;
                match self.agg {
                    Agg::Rate => (secs > 0.0).then(|| v / secs),
                    _ => Some(v),
                }
            }
        };
        let unit = match (self.metric, self.agg) {
            (Metric::Hist(_) | Metric::Reply, Agg::Count)
            | (Metric::Counter(_) | Metric::Sum(_) | Metric::StreamLost, _) => Unit::Number,
            (Metric::Hist(_) | Metric::Reply, _) => Unit::Micros,
            (Metric::Rate(_) | Metric::ReplyLoss | Metric::Checks, _) => Unit::Fraction,
        };
        let unreliable = match self.metric {
            Metric::Hist(h) => Some(Lost::of(s, h))
                .filter(Lost::too_many)
                .map(|l| l.describe()),
            _ => None,
        };
        Outcome {
            expr: self.expr.clone(),
            actual,
            pass: actual.is_some_and(|a| self.op.holds(a, self.value)),
            unreliable,
            unit,
        }
    }
}

/// k6's names for the same counters, accepted as aliases.
const ALIASES: [(&str, &str); 1] = [("ws_sessions", "established")];

/// k6's message totals: every data message, whatever it was for.
const SUMS: [(&str, &[&str]); 2] = [
    (
        "ws_msgs_received",
        &["msgs_received", "msgs_pushed", "msgs_late"],
    ),
    (
        "ws_msgs_sent",
        &[
            "msgs_sent",
            "on_open_sent",
            "resumes_sent",
            "heartbeats_sent",
        ],
    ),
];

fn metric_named(name: &str) -> Option<Metric> {
    match name {
        "ws_reply" => return Some(Metric::Reply),
        "reply_loss" => return Some(Metric::ReplyLoss),
        "checks" => return Some(Metric::Checks),
        "stream_lost" => return Some(Metric::StreamLost),
        _ => {}
    }
    if let Some(h) = Hist::ALL.iter().find(|h| h.name() == name) {
        return Some(Metric::Hist(*h));
    }
    if let Some((_, r)) = RateMetric::ALL.iter().find(|(n, _)| *n == name) {
        return Some(Metric::Rate(*r));
    }
    if let Some((_, names)) = SUMS.iter().find(|(n, _)| *n == name) {
        return Some(Metric::Sum(names));
    }
    let name = ALIASES
        .iter()
        .find(|(a, _)| *a == name)
        .map_or(name, |(_, n)| n);
    Counters::default()
        .pairs()
        .iter()
        .position(|(n, _)| *n == name)
        .map(Metric::Counter)
}

fn unknown_metric(name: &str) -> String {
    let hists: Vec<&str> = Hist::ALL.iter().map(|h| h.name()).collect();
    let rates: Vec<&str> = RateMetric::ALL.iter().map(|(n, _)| *n).collect();
    format!(
        "unknown metric `{name}`; latencies: {}, ws_reply{{msg:NAME}}; ratios: {}, reply_loss, checks{{name:NAME}}; or any counter of the summary (e.g. msgs_received, stream_gaps)",
        hists.join(", "),
        rates.join(", ")
    )
}

fn parse_agg(s: &str) -> Option<Agg> {
    match s {
        "avg" => Some(Agg::Avg),
        "min" => Some(Agg::Min),
        "max" => Some(Agg::Max),
        "med" => Some(Agg::P(50.0)),
        "count" => Some(Agg::Count),
        "rate" => Some(Agg::Rate),
        _ => {
            let p: f64 = s.strip_prefix("p(")?.strip_suffix(')')?.parse().ok()?;
            (0.0..=100.0).contains(&p).then_some(Agg::P(p))
        }
    }
}

/// The value in the metric's unit: durations to µs, percentages to fractions.
fn parse_value(metric: Metric, s: &str) -> Result<f64, String> {
    let num = |t: &str| {
        t.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("`{s}` is not a number"))
    };
    match metric {
        Metric::Hist(_) | Metric::Reply => {
            for (unit, scale) in [("ms", 1e3), ("us", 1.0), ("µs", 1.0), ("s", 1e6)] {
                if let Some(v) = s.strip_suffix(unit) {
                    return num(v).map(|v| v * scale);
                }
            }
            // A bare number is milliseconds, as in k6.
            num(s).map(|v| v * 1e3)
        }
        Metric::Rate(_) | Metric::ReplyLoss | Metric::Checks => match s.strip_suffix('%') {
            Some(v) => num(v).map(|v| v / 100.0),
            None => num(s),
        },
        Metric::Counter(_) | Metric::Sum(_) | Metric::StreamLost => num(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(expr: &str) -> String {
        Threshold::parse(expr).unwrap_err().to_string()
    }

    #[test]
    fn parses_and_evaluates_on_merged_results() {
        let mut s = ShardStats::new();
        for us in 1..=1000 {
            s.record(Hist::WsConnecting, us * 100);
        }
        s.counters.attempts = 1000;
        s.counters.connect_failed = 1;
        s.counters.msgs_received = 50;
        let secs = 10.0;
        let check = |e: &str| Threshold::parse(e).unwrap().eval(&s, secs);
        // p(95) of 100 µs .. 100 ms is 95 ms (within the histogram's 3 significant figures).
        assert!(check("ws_connecting: p(95)<96ms").pass);
        assert!(!check("ws_connecting: p(95) < 94ms").pass);
        assert!(check("ws_connecting: max<=0.1001s").pass);
        assert!(check("ws_connecting: med>49").pass, "bare number = ms");
        assert!(check("ws_connecting: med<51").pass);
        assert_eq!(check("connect_errors: rate<0.1%").actual, Some(0.001));
        assert!(!check("connect_errors: rate<0.1%").pass);
        assert!(check("connect_errors: rate<=0.1%").pass);
        assert!(check("ws_msgs_received: count>0").pass);
        assert_eq!(check("msgs_received: rate==5").actual, Some(5.0));
        let none = check("ws_msg_rtt: p(99)<100ms");
        assert_eq!((none.actual, none.pass), (None, false), "no data fails");
        assert!(check("ws_msg_rtt: count==0").pass);
        assert!(
            check("ws_connecting: count==1000").pass,
            "count is samples, not ms"
        );
        assert!(!check("ws_connecting: count<1").pass);
        assert!(check("connect_errors: rate<0.1%")
            .to_string()
            .ends_with("actual 0.100%"));
        assert!(check("msgs_received: count>0")
            .to_string()
            .ends_with("actual 50"));
        assert!(check("ws_connecting: p(50)<1s")
            .to_string()
            .starts_with("pass"));
        let tagged = Threshold::parse("ws_connecting{scenario:chat}: p(95)<96ms").unwrap();
        assert_eq!(tagged.scenario.as_deref(), Some("chat"));
        assert!(tagged.eval(&s, secs).pass);
        assert!(err("ws_connecting{tag:x}: p(95)<1").contains("{scenario:NAME}"));
    }

    #[test]
    fn a_histogram_that_lost_over_1pct_of_its_samples_makes_its_thresholds_unreliable() {
        let mut s = ShardStats::new();
        for us in 1..=1000 {
            s.record(Hist::WsMsgLatency, us);
        }
        let t = Threshold::parse("ws_msg_latency: p(99)<100ms").unwrap();
        let other = Threshold::parse("ws_msg_rtt: count==0").unwrap();
        // 10 of 1010 lost (0.99 %): still reliable.
        s.counters.latency_clock_skew = 10;
        assert_eq!(t.eval(&s, 1.0).unreliable, None);
        // 11 of 1011 (1.09 %): the verdict is kept, and marked.
        s.counters.latency_clock_skew = 11;
        let o = t.eval(&s, 1.0);
        assert!(o.pass);
        let why = o.unreliable.as_deref().unwrap();
        assert!(
            why.starts_with("11 of 1011 ws_msg_latency samples (1.1%) excluded"),
            "{why}"
        );
        assert!(o.to_string().contains("UNRELIABLE: 11 of 1011"), "{o}");
        // The run: 35 samples left of 20,000.
        let mut skewed = ShardStats::new();
        for us in 1..=35 {
            skewed.record(Hist::WsMsgLatency, us * 1000);
        }
        skewed.counters.latency_clock_skew = 19_965;
        assert!(t.eval(&skewed, 1.0).unreliable.is_some());
        assert!(Threshold::parse("ws_msg_latency: count>0")
            .unwrap()
            .eval(&skewed, 1.0)
            .unreliable
            .is_some());
        // Other histograms and counters lose nothing.
        assert_eq!(other.eval(&skewed, 1.0).unreliable, None);
        let skew = Threshold::parse("latency_clock_skew: count==0").unwrap();
        assert_eq!(skew.eval(&skewed, 1.0).unreliable, None);
    }

    #[test]
    fn bad_expressions_name_the_fix() {
        assert!(err("ws_connecting p(95)<1").contains("expected `METRIC: AGGREGATE OP VALUE`"));
        assert!(err("ws_conecting: p(95)<1").contains("unknown metric `ws_conecting`"));
        assert!(err("ws_connecting: p(95)").contains("missing comparison"));
        assert!(err("ws_connecting: p(101)<1").contains("unknown aggregate `p(101)`"));
        assert!(err("ws_connecting: rate<1").contains("is a latency"));
        assert!(err("msgs_sent: p(99)<1").contains("is a counter"));
        assert!(err("connect_errors: count<1").contains("is a ratio"));
        assert!(err("ws_connecting: p(95)<fast").contains("`fast` is not a number"));
        assert!(err("ws_connecting: p(95)=<1").contains("`=<1` is not a comparison"));
    }
}
