//! The endpoint's metrics: one prometheus-client [`Registry`] and the families in it, updated
//! from each merged second. Names follow k6's where k6 has the same thing, prefixed
//! `sockstorm_`; every series has a `scenario` label, plus `segment` (`1/3`) with
//! `--segment`.

use super::buckets::FixedHistogram;
use crate::metrics::health::{SATURATED_PCT, STRAINED_PCT};
use crate::metrics::run::Tick;
use crate::metrics::{Hist, ShardStats};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::borrow::Cow;

/// The labels every series has.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScenarioLabel {
    scenario: String,
}

/// A failure's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    scenario: String,
    cause: String,
}

/// A close code's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    scenario: String,
    code: String,
}

/// A TLS handshake's labels (`kind`: `full` or `resumed`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    scenario: String,
    kind: &'static str,
}

/// A shard's label (the generator's own health).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

/// The live generator verdict's label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: &'static str,
}

type Counters = Family<ScenarioLabel, Counter>;

/// Reads one counter of a second's statistics.
type Read = fn(&ShardStats) -> u64;

/// What a counter family counts: its name, help, and the counter it reads.
struct CounterDef {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    read: Read,
}

/// The per-scenario counters, in the order the endpoint shows them (`_total` is appended).
fn counter_defs() -> [CounterDef; 11] {
    let def = |name, help, read| CounterDef {
        name,
        help,
        unit: None,
        read,
    };
    [
        def(
            "ws_connect_attempts",
            "Connection attempts started (TCP connect submitted)",
            |s| s.counters.attempts,
        ),
        def(
            "ws_sessions",
            "WebSocket sessions opened (valid 101 received), as k6's ws_sessions",
            |s| s.counters.established,
        ),
        def(
            "ws_reconnects",
            "Reconnect attempts made to hold the target connection count",
            |s| s.counters.reconnects,
        ),
        def(
            "ws_msgs_sent",
            "Rate-driven messages sent that an echo answers",
            |s| s.counters.msgs_sent,
        ),
        def(
            "ws_msgs_received",
            "Echo replies received and matched to a sent message",
            |s| s.counters.msgs_received,
        ),
        def(
            "ws_msgs_pushed",
            "Data messages received that answered none of ours (pushes, acks, fan-out deliveries)",
            |s| s.counters.msgs_pushed,
        ),
        def("ws_pings_sent", "WebSocket pings sent", |s| {
            s.counters.pings_sent
        }),
        CounterDef {
            unit: Some(Unit::Bytes),
            ..def(
                "data_sent",
                "Bytes written to sockets (handshakes and frames), as k6's data_sent",
                |s| s.counters.bytes_sent,
            )
        },
        CounterDef {
            unit: Some(Unit::Bytes),
            ..def(
                "data_received",
                "Bytes read from sockets, as k6's data_received",
                |s| s.counters.bytes_received,
            )
        },
        def(
            "fanout_published",
            "Fan-out messages publishers sent",
            |s| s.counters.fanout_published,
        ),
        def(
            "fanout_delivered",
            "Fan-out messages subscribers received (duplicates not counted)",
            |s| s.counters.fanout_delivered,
        ),
    ]
}

/// The registry and handles to its families.
pub(super) struct Metrics {
    /// What the endpoint encodes.
    pub(super) registry: Registry,
    scenarios: Vec<String>,
    counters: Vec<(Read, Counters)>,
    failures: Family<CauseLabels, Counter>,
    closes: Family<CodeLabels, Counter>,
    tls: Family<KindLabels, Counter>,
    open: Family<ScenarioLabel, Gauge>,
    finished: Gauge,
    hists: Vec<(Hist, Family<ScenarioLabel, FixedHistogram>)>,
    /// Each shard's busy share of the last second (on a CPU or waiting for one), 0..1.
    busy: Family<ShardLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Seconds each shard was busy ≥ 95 %.
    saturated: Family<ShardLabel, Counter>,
    /// The generator verdict so far from the busy shares: 1 on the current one.
    verdict: Family<VerdictLabel, Gauge>,
}

impl Metrics {
    /// The families for a run of `scenarios` (their names) with `targets` connections each,
    /// labelled `segment="I/N"` too when the run is one segment of several.
    pub(super) fn new(scenarios: Vec<String>, targets: &[u64], segment: Option<String>) -> Self {
        let labels = segment.map(|s| (Cow::Borrowed("segment"), Cow::Owned(s)));
        let mut registry = Registry::with_prefix_and_labels("sockstorm", labels.into_iter());
        let label = |k: usize| ScenarioLabel {
            scenario: scenarios[k].clone(),
        };
        let mut counters = Vec::new();
        for d in counter_defs() {
            let family = Counters::default();
            match d.unit {
                Some(unit) => registry.register_with_unit(d.name, d.help, unit, family.clone()),
                None => registry.register(d.name, d.help, family.clone()),
            }
            counters.push((d.read, family));
        }
        let failures = Family::<CauseLabels, Counter>::default();
        registry.register(
            "ws_failures",
            "Failed attempts and dropped sessions by cause (refused, connect_timeout, reset, tls_*, http_*, ...)",
            failures.clone(),
        );
        let closes = Family::<CodeLabels, Counter>::default();
        registry.register(
            "ws_closes",
            "Close codes received from the server (1005: close frame without a code)",
            closes.clone(),
        );
        let tls = Family::<KindLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes completed, by kind: full or resumed",
            tls.clone(),
        );
        let open = Family::<ScenarioLabel, Gauge>::default();
        registry.register(
            "open_connections",
            "WebSocket sessions open now",
            open.clone(),
        );
        let target = Family::<ScenarioLabel, Gauge>::default();
        registry.register(
            "target_connections",
            "The connection count the run holds (this segment's share with --segment)",
            target.clone(),
        );
        let finished = Gauge::default();
        registry.register(
            "run_finished",
            "1 once the run is over and every figure here is final (the JSON's totals), else 0",
            finished.clone(),
        );
        let busy = Family::<ShardLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "shard_busy_ratio",
            "Each shard's share of the last second on a CPU or runnable and waiting for one (1: saturated)",
            busy.clone(),
        );
        let saturated = Family::<ShardLabel, Counter>::default();
        registry.register(
            "shard_saturated_seconds",
            "Seconds a shard was busy 95 % or more: the client, not the target, set the pace",
            saturated.clone(),
        );
        let verdict = Family::<VerdictLabel, Gauge>::default();
        registry.register(
            "generator_verdict",
            "The generator verdict so far from the shards' busy shares (1 on the current one): valid, strained (a second at 70 % or more) or generator-bound (95 % or more); the final one, which also weighs timer lateness, is in the JSON",
            verdict.clone(),
        );
        verdict
            .get_or_create(&VerdictLabel { verdict: "valid" })
            .set(1);
        for v in ["strained", "generator-bound"] {
            drop(verdict.get_or_create(&VerdictLabel { verdict: v }));
        }
        let mut hists = Vec::new();
        for h in Hist::ALL {
            let family = Family::<ScenarioLabel, FixedHistogram>::default();
            registry.register_with_unit(h.name(), hist_help(h), Unit::Seconds, family.clone());
            hists.push((h, family));
        }
        // Every scenario's series exist from the start, at 0: rate() needs the first point.
        for (k, &n) in targets.iter().enumerate() {
            target
                .get_or_create(&label(k))
                .set(n.try_into().unwrap_or(i64::MAX));
            drop(open.get_or_create(&label(k)));
            for (_, f) in &counters {
                drop(f.get_or_create(&label(k)));
            }
            for (_, f) in &hists {
                drop(f.get_or_create(&label(k)));
            }
            // The usual close codes too, so the family is declared before the first close.
            for code in ["1000", "1006"] {
                drop(closes.get_or_create(&CodeLabels {
                    scenario: scenarios[k].clone(),
                    code: code.into(),
                }));
            }
            for kind in ["full", "resumed"] {
                drop(tls.get_or_create(&KindLabels {
                    scenario: scenarios[k].clone(),
                    kind,
                }));
            }
        }
        Self {
            registry,
            scenarios,
            counters,
            failures,
            closes,
            tls,
            open,
            finished,
            hists,
            busy,
            saturated,
            verdict,
        }
    }

    /// Adds what each scenario measured in `tick`'s second, and sets the gauges.
    pub(super) fn add(&self, tick: &Tick<'_>) {
        for (name, s) in self.scenarios.iter().zip(tick.scenarios) {
            let label = ScenarioLabel {
                scenario: name.clone(),
            };
            self.open
                .get_or_create(&label)
                .set(s.open.try_into().unwrap_or(i64::MAX));
            self.add_second(&label, s.second);
        }
        self.generator(tick.shard_busy_pct);
    }

    /// The shards' busy shares of the last second, and the verdict they make so far (it only
    /// gets worse).
    fn generator(&self, busy: &[Option<f64>]) {
        let mut worst = 0.0f64;
        for (k, pct) in busy.iter().enumerate() {
            let Some(pct) = *pct else { continue };
            let label = ShardLabel {
                shard: k.to_string(),
            };
            self.busy.get_or_create(&label).set(pct / 100.0);
            if pct >= SATURATED_PCT {
                self.saturated.get_or_create(&label).inc();
            }
            worst = worst.max(pct);
        }
        let now = if worst >= SATURATED_PCT {
            2
        } else if worst >= STRAINED_PCT {
            1
        } else {
            0
        };
        let names = ["valid", "strained", "generator-bound"];
        let was = names
            .iter()
            .rposition(|v| {
                self.verdict
                    .get_or_create(&VerdictLabel { verdict: v })
                    .get()
                    == 1
            })
            .unwrap_or(0);
        if now > was {
            for (i, v) in names.iter().enumerate() {
                self.verdict
                    .get_or_create(&VerdictLabel { verdict: v })
                    .set(i64::from(i == now));
            }
        }
    }

    /// Marks every figure final.
    pub(super) fn finish(&self) {
        self.finished.set(1);
    }

    fn add_second(&self, label: &ScenarioLabel, s: &ShardStats) {
        for (read, family) in &self.counters {
            let n = read(s);
            if n > 0 {
                family.get_or_create(label).inc_by(n);
            }
        }
        for (f, n) in &s.failures {
            self.failures
                .get_or_create(&CauseLabels {
                    scenario: label.scenario.clone(),
                    cause: f.name(),
                })
                .inc_by(*n);
        }
        for (code, n) in &s.close_codes {
            self.closes
                .get_or_create(&CodeLabels {
                    scenario: label.scenario.clone(),
                    code: code.to_string(),
                })
                .inc_by(*n);
        }
        for (kind, n) in [
            ("full", s.counters.tls_handshakes_full),
            ("resumed", s.counters.tls_handshakes_resumed),
        ] {
            if n > 0 {
                self.tls
                    .get_or_create(&KindLabels {
                        scenario: label.scenario.clone(),
                        kind,
                    })
                    .inc_by(n);
            }
        }
        for (h, family) in &self.hists {
            let hist = s.hist(*h);
            if !hist.is_empty() {
                family.get_or_create(label).add_hdr(hist);
            }
        }
    }
}

/// The help text of a latency histogram.
fn hist_help(h: Hist) -> &'static str {
    match h {
        Hist::TcpConnect => "TCP connect: connect submitted to connected",
        Hist::TlsFull => "Full TLS handshake: TCP connected to handshake complete",
        Hist::TlsResumed => "Resumed TLS handshake: TCP connected to handshake complete",
        Hist::WsUpgrade => "WebSocket upgrade: request sent to valid 101",
        Hist::WsConnecting => {
            "Whole connection setup: connect submitted to WebSocket open, as k6's ws_connecting"
        }
        Hist::WsSubscribeAck => "Session open to the expected reply (--expect)",
        Hist::WsMsgRtt => "Echo round trip from the message's intended send time",
        Hist::WsMsgLatency => "One-way latency: a message's timestamp to its arrival",
        Hist::WsPing => "Ping to pong round trip",
        Hist::WsHeartbeat => "Application-level heartbeat to its reply",
        Hist::AppConnect => {
            "The application protocol's handshake: 101 to namespace connected, STOMP CONNECTED or connection_ack"
        }
        Hist::AppAck => "A message to its acknowledgement (--ack: Socket.IO ack, STOMP receipt)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::run::ScenarioTick;

    fn text(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        out
    }

    #[test]
    fn the_generator_verdict_follows_the_busiest_shard_and_only_worsens() {
        let m = Metrics::new(vec!["default".into()], &[10], None);
        let (second, total) = (ShardStats::new(), ShardStats::new());
        let scenarios = [ScenarioTick {
            open: 10,
            second: &second,
        }];
        let tick = |busy: &[Option<f64>]| {
            m.add(&Tick {
                t: 1.0,
                open: 10,
                target: 10,
                second: &second,
                total: &total,
                shard_busy_pct: busy,
                scenarios: &scenarios,
            });
            text(&m)
        };
        let t = tick(&[Some(12.0), None]);
        assert!(
            t.contains("sockstorm_generator_verdict{verdict=\"valid\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("sockstorm_shard_busy_ratio{shard=\"0\"} 0.12"),
            "{t}"
        );
        let t = tick(&[Some(75.0), Some(10.0)]);
        assert!(
            t.contains("sockstorm_generator_verdict{verdict=\"strained\"} 1"),
            "{t}"
        );
        let t = tick(&[Some(40.0), Some(99.0)]);
        assert!(
            t.contains("sockstorm_generator_verdict{verdict=\"generator-bound\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("sockstorm_generator_verdict{verdict=\"valid\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("sockstorm_shard_saturated_seconds_total{shard=\"1\"} 1"),
            "{t}"
        );
        // A quiet second later does not make it valid again.
        let t = tick(&[Some(5.0), Some(5.0)]);
        assert!(
            t.contains("sockstorm_generator_verdict{verdict=\"generator-bound\"} 1"),
            "{t}"
        );
    }
}
