//! `sockstorm find-max`: what the capacity search is asked to find, checked before anything
//! runs. The search raises one quantity in steps (open connections, handshakes per second or
//! messages per second) until a step breaks a service-level objective, then bisects.

use super::threshold::Threshold;
use super::PlanError;
use std::time::Duration;

/// What the search raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// Open sessions held at once (ramped up without teardown, down by closing the newest).
    Connections,
    /// Handshakes per second, open loop (handshake mode at a connect rate).
    Handshakes,
    /// Messages sent per second over a fixed set of sessions (echo, or fan-out publishes).
    Messages,
}

impl SearchMode {
    /// The mode by its name on the command line (`connections`, `handshakes`, `messages`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "connections" => Ok(Self::Connections),
            "handshakes" => Ok(Self::Handshakes),
            "messages" => Ok(Self::Messages),
            _ => Err(format!(
                "`{s}` is not a search mode: use connections, handshakes or messages"
            )),
        }
    }

    /// Its name, as typed.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Handshakes => "handshakes",
            Self::Messages => "messages",
        }
    }

    /// The unit of the searched value, as printed and in the JSON.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Handshakes => "handshakes/s",
            Self::Messages => "messages/s",
        }
    }

    /// The first step when `--start` is not given.
    pub fn default_start(self) -> f64 {
        match self {
            Self::Connections => 1000.0,
            Self::Handshakes => 200.0,
            Self::Messages => 1000.0,
        }
    }

    /// The largest value tried when `--max` is not given.
    pub fn default_max(self) -> f64 {
        match self {
            Self::Connections => 1_000_000.0,
            Self::Handshakes => 100_000.0,
            Self::Messages => 10_000_000.0,
        }
    }

    /// The objectives a step must meet when no `--slo` is given (`tls`: the target is wss://;
    /// `resume`: some handshakes are resumed; `fanout`: a fan-out scenario).
    pub fn default_slos(self, tls: bool, resume: bool, fanout: bool) -> Vec<&'static str> {
        match self {
            Self::Connections => vec![
                "ws_connecting: p(99)<500ms",
                "connect_errors: rate<0.001",
                "session_drops: rate<0.001",
            ],
            Self::Handshakes => {
                let mut v = vec!["connect_errors: rate<0.001"];
                if tls {
                    v.push("tls_handshake_full: p(99)<50ms");
                    if resume {
                        v.push("tls_handshake_resumed: p(99)<50ms");
                    }
                } else {
                    v.push("ws_connecting: p(99)<50ms");
                }
                v
            }
            Self::Messages if fanout => {
                vec!["ws_msg_latency: p(99)<100ms", "session_drops: rate<0.001"]
            }
            Self::Messages => vec![
                "ws_msg_rtt: p(99)<100ms",
                "msg_loss: rate<0.001",
                "session_drops: rate<0.001",
            ],
        }
    }

    /// Metrics a step of this mode measures: an objective on anything else could never
    /// fail (or never pass). Counters are measured in every mode.
    fn measures(self, metric: &str) -> bool {
        const CONNECT: [&str; 7] = [
            "tcp_connect",
            "ws_upgrade",
            "ws_connecting",
            "tls_handshake_full",
            "tls_handshake_resumed",
            "connect_errors",
            "tls_resumed",
        ];
        const SESSION: [&str; 11] = [
            "session_drops",
            "ws_ping",
            "ws_heartbeat",
            "ws_msg_rtt",
            "ws_msg_latency",
            "ws_subscribe_ack",
            "msg_loss",
            "ws_reply",
            "reply_loss",
            "checks",
            "stream_lost",
        ];
        let latency_or_ratio = CONNECT.contains(&metric) || SESSION.contains(&metric);
        match self {
            Self::Handshakes => CONNECT.contains(&metric) || !latency_or_ratio,
            Self::Connections | Self::Messages => true,
        }
    }

    fn metric_list(self) -> &'static str {
        match self {
            Self::Handshakes => "tcp_connect, ws_upgrade, ws_connecting, tls_handshake_full, tls_handshake_resumed, connect_errors, tls_resumed, or a counter",
            _ => "any latency, ratio or counter of a run",
        }
    }
}

/// A validated capacity search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpec {
    /// What the search raises.
    pub mode: SearchMode,
    /// Every step must meet all of these (evaluated on the step's own measurements).
    pub slos: Vec<Threshold>,
    /// Whether `slos` are the mode's defaults (no `--slo` given).
    pub default_slos: bool,
    /// The first value tried.
    pub start: f64,
    /// The largest value tried.
    pub max: f64,
    /// Each step up multiplies the value by this until a step fails.
    pub factor: f64,
    /// Bisection stops when the bad value is within this fraction above the good one.
    pub precision: f64,
    /// How long each step holds its value once reached.
    pub step_hold: Duration,
}

/// The search's settings as given (flags or the scenario file's `[find_max]` table), before
/// they are checked.
#[derive(Debug, Clone, Default)]
pub struct SearchWords {
    /// `--slo` expressions.
    pub slo: Vec<String>,
    /// `--start`.
    pub start: Option<f64>,
    /// `--max`.
    pub max: Option<f64>,
    /// `--factor`.
    pub factor: Option<f64>,
    /// A fraction (0.05) or a percentage (`5%`).
    pub precision: Option<String>,
    /// `--step-hold`.
    pub step_hold: Option<Duration>,
}

impl SearchSpec {
    /// Checks `words` for `mode`; `tls`, `resume` and `fanout` pick the default objectives.
    pub fn new(
        mode: SearchMode,
        words: &SearchWords,
        tls: bool,
        resume: bool,
        fanout: bool,
    ) -> Result<Self, PlanError> {
        let invalid = |flag, reason: String| PlanError::Invalid { flag, reason };
        let default_slos = words.slo.is_empty();
        let exprs: Vec<String> = if default_slos {
            mode.default_slos(tls, resume, fanout)
                .into_iter()
                .map(str::to_owned)
                .collect()
        } else {
            words.slo.clone()
        };
        let mut slos = Vec::with_capacity(exprs.len());
        for e in &exprs {
            let t = Threshold::parse(e)
                .map_err(|e| invalid("--slo", format!("`{}`: {}", e.expr, e.reason)))?;
            let metric = t.metric_name();
            if !mode.measures(metric) {
                return Err(invalid(
                    "--slo",
                    format!(
                        "`{e}`: a {} search does not measure `{metric}`; use {}",
                        mode.name(),
                        mode.metric_list()
                    ),
                ));
            }
            slos.push(t);
        }
        let start = words.start.unwrap_or(mode.default_start());
        let max = words.max.unwrap_or(mode.default_max().max(start));
        let positive = |flag, v: f64| {
            if v.is_finite() && v >= 1.0 {
                Ok(v)
            } else {
                Err(invalid(
                    flag,
                    format!("{v} is not a {} of at least 1", mode.unit()),
                ))
            }
        };
        let start = positive("--start", start)?;
        let max = positive("--max", max)?;
        if start > max {
            return Err(invalid(
                "--start",
                format!("{start} is above --max {max}: the search starts at or below its ceiling; lower --start or raise --max"),
            ));
        }
        let factor = words.factor.unwrap_or(1.5);
        if !(factor.is_finite() && factor > 1.0 && factor <= 10.0) {
            return Err(invalid(
                "--factor",
                format!("{factor}: each step up multiplies the value by more than 1 and at most 10 (default 1.5)"),
            ));
        }
        let precision = match &words.precision {
            None => 0.05,
            Some(p) => parse_fraction(p).map_err(|r| invalid("--precision", r))?,
        };
        let step_hold = words.step_hold.unwrap_or(Duration::from_secs(10));
        if step_hold < Duration::from_secs(1) {
            return Err(invalid(
                "--step-hold",
                format!(
                    "{step_hold:?}: hold each step at least 1s (default 10s) so drops can show"
                ),
            ));
        }
        Ok(Self {
            mode,
            slos,
            default_slos,
            start,
            max,
            factor,
            precision,
            step_hold,
        })
    }
}

/// `5%` or `0.05` → 0.05; must be above 0 and below 1.
fn parse_fraction(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("`{s}` is not a fraction: write 5% or 0.05"))?;
    if !(v.is_finite() && v > 0.0 && v < 1.0) {
        return Err(format!(
            "`{s}`: the precision is above 0 and below 100% (default 5%): the search stops when the failing value is within it of the passing one"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words() -> SearchWords {
        SearchWords::default()
    }

    #[test]
    fn defaults_and_errors() {
        let s = SearchSpec::new(SearchMode::Connections, &words(), false, false, false).unwrap();
        assert_eq!((s.start, s.factor, s.precision), (1000.0, 1.5, 0.05));
        assert_eq!(s.step_hold, Duration::from_secs(10));
        assert_eq!(s.slos.len(), 3);
        let h = SearchSpec::new(SearchMode::Handshakes, &words(), true, true, false).unwrap();
        let names: Vec<&str> = h.slos.iter().map(|t| t.metric_name()).collect();
        assert_eq!(
            names,
            [
                "connect_errors",
                "tls_handshake_full",
                "tls_handshake_resumed"
            ]
        );
        let bad = |mode, w: SearchWords| {
            SearchSpec::new(mode, &w, false, false, false)
                .unwrap_err()
                .to_string()
        };
        let e = bad(
            SearchMode::Handshakes,
            SearchWords {
                slo: vec!["ws_msg_rtt: p(99)<100ms".into()],
                ..words()
            },
        );
        assert!(e.contains("does not measure `ws_msg_rtt`"), "{e}");
        let e = bad(
            SearchMode::Connections,
            SearchWords {
                start: Some(5000.0),
                max: Some(100.0),
                ..words()
            },
        );
        assert!(e.contains("--start: 5000 is above --max 100"), "{e}");
        for p in ["0", "-1%", "0%", "100%", "x"] {
            let e = bad(
                SearchMode::Messages,
                SearchWords {
                    precision: Some(p.into()),
                    ..words()
                },
            );
            assert!(e.starts_with("--precision"), "{p}: {e}");
        }
        assert_eq!(parse_fraction("2.5%").unwrap(), 0.025);
    }
}
