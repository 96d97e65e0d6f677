//! The JSON results document (`--json`): settings, machine, counters, failures, histograms
//! (as percentiles), TLS, fan-out, storms, per-scenario sections and the per-second timeline.

use super::{handshake_rates, thresholds, tls_params};
use crate::metrics::fanout::{FanoutSummary, NOT_EXACT};
use crate::metrics::health::Generator;
use crate::metrics::run::{RunResult, ScenarioResult, CLOCK_STEP_US};
use crate::metrics::{Hist, ShardStats};
use crate::plan::threshold::Lost;
use crate::plan::{Prepared, RunPlan};
use crate::proto::conn::{Counters, Mode};
use crate::proto::tls::{cipher_name, group_name, version_name, Resume};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Version of the JSON layout; bumped on incompatible changes. 2: every histogram carries
/// `hdr` (the whole histogram), timeline samples their `unix_s`, and the document its `plan`
/// identity, `host`, `run_id` and `verdict`.
pub const SCHEMA_VERSION: u32 = 2;

/// Seconds of a µs setting.
fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// A histogram's summary and its whole encoding ([`super::hdr::to_json`]).
fn hist_json(h: &Histogram<u64>) -> Value {
    super::hdr::to_json(h)
}

/// Reads a one-line /proc or /sys file.
fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The TLS part of the JSON document: what was offered, what was negotiated, resumption.
fn tls_json(plan: &RunPlan, s: &ShardStats) -> Value {
    let Some(t) = &plan.tls else {
        return Value::Null;
    };
    let c = &s.counters;
    let handshakes = c.tls_handshakes_full + c.tls_handshakes_resumed;
    let [versions, ciphers, groups] = tls_params(s);
    let obj = |v: Vec<(String, u64)>| -> Map<String, Value> {
        v.into_iter().map(|(k, n)| (k, n.into())).collect()
    };
    json!({
        "server_name": format!("{:?}", t.server_name).trim_start_matches("DnsName(").trim_start_matches("IpAddress(").trim_end_matches(')').trim_matches('"'),
        "verify_certificates": !t.insecure,
        "verify_cache": !t.insecure && t.verify_cache,
        "roots": "webpki-roots (Mozilla) + --cacert",
        "versions_offered": t.versions.iter().map(|v| version_name(u16::from(v.version))).collect::<Vec<_>>(),
        "ciphers_offered": t.suites.iter().map(|x| cipher_name(u16::from(x.suite()))).collect::<Vec<_>>(),
        "kx_offered": t.kx.iter().map(|g| group_name(u16::from(g.name()))).collect::<Vec<_>>(),
        "alpn_offered": t.alpn.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>(),
        "client_certificate": t.identity.is_some(),
        "keylog_file": t.keylog,
        "resume": match t.resume { Resume::Off => json!("off"), Resume::On => json!("on"), Resume::Fraction(f) => json!(f) },
        "tickets_requested": t.tickets,
        "handshakes": handshakes,
        "full": c.tls_handshakes_full,
        "resumed": c.tls_handshakes_resumed,
        "resume_attempted": c.tls_resume_attempted,
        "resume_refused": c.tls_resume_refused,
        "resumed_share": (handshakes > 0).then(|| c.tls_handshakes_resumed as f64 / handshakes as f64),
        "negotiated": {"versions": obj(versions), "ciphers": obj(ciphers), "groups": obj(groups)},
    })
}

/// A reconnect storm's outcome: when, how many dropped, recovery, peak reconnect rate, and the
/// TLS resumed share of the handshakes from the storm's second to the recovery's.
fn storm_json(plan: &RunPlan, sr: &ScenarioResult, r: &RunResult) -> Value {
    let Some(st) = plan.storm else {
        return Value::Null;
    };
    let at = st.at as f64 / 1e6;
    let dropped = sr.stats.counters.storm_dropped;
    // Repeated storms: the whole run after the first.
    let until = match sr.storm_recovery {
        Some(d) if st.every == 0 => at + d.as_secs_f64() + 1.0,
        _ => f64::MAX,
    };
    // The scenario's own samples when the run has several.
    let timeline = if sr.timeline.is_empty() {
        &r.timeline
    } else {
        &sr.timeline
    };
    let window = timeline.iter().filter(|x| x.t_s > at && x.t_s <= until);
    let (mut peak, mut full, mut resumed, mut failures) = (0, 0, 0, 0);
    let mut by_cause = Map::new();
    for x in window {
        peak = peak.max(x.reconnects);
        full += x.tls_full;
        resumed += x.tls_resumed;
        failures += x.failures;
        for (k, n) in &x.failures_by_cause {
            let e = by_cause.entry(k.clone()).or_insert(Value::from(0u64));
            *e = Value::from(e.as_u64().unwrap_or(0) + n);
        }
    }
    json!({
        "at_s": at,
        "fraction": st.fraction,
        "every_s": (st.every > 0).then(|| st.every as f64 / 1e6),
        "close": if st.rst { "rst" } else { "graceful" },
        "policy": plan.policy.to_string(),
        "dropped": dropped,
        // The longest recovery when storms repeat.
        "recovered_after_s": sr.storm_recovery.map(|d| d.as_secs_f64()),
        "peak_reconnects_per_s": peak,
        "mean_reconnects_per_s": sr.storm_recovery.filter(|d| !d.is_zero()).map(|d| (dropped as f64 / d.as_secs_f64()).round()),
        "failures_during_recovery": failures,
        "failures_during_recovery_by_cause": by_cause,
        "failures_by_cause": failures_json(&sr.stats),
        "tls_during_recovery": {"full": full, "resumed": resumed},
    })
}

/// Fan-out results: owed and delivered, loss, duplicates, reordering, broadcast completion.
fn fanout_json(r: &RunResult) -> Value {
    r.fanout
        .as_ref()
        .map_or(Value::Null, |f| fanout_value(f, &r.stats.counters))
}

/// The `fanout` section from a settled log's summary and the run's counters (a single run's,
/// or a merge's).
pub(crate) fn fanout_value(f: &FanoutSummary, c: &Counters) -> Value {
    let spread = |x: &Option<[u64; 3]>| {
        x.map(|[p50, p99, max]| json!({"p50_us": p50, "p99_us": p99, "max_us": max}))
    };
    json!({
        "published": f.published,
        "subscriber_sessions": f.sessions,
        "owed": f.exact.then_some(f.expected),
        "delivered_owed": c.fanout_delivered_owed,
        "delivered_total": c.fanout_delivered,
        "foreign": c.fanout_foreign,
        "untracked": c.fanout_untracked,
        "lost": f.exact.then_some(c.fanout_lost),
        "duplicates": c.fanout_duplicates,
        "reordered": c.fanout_reordered,
        "delivery_ratio": (f.exact && f.expected > 0).then(|| c.fanout_delivered_owed as f64 / f.expected as f64),
        // Per message, the time until 50/99/100 % of the subscribers owed it had it, as a
        // distribution over messages (bucketed: within 12.5 %).
        "broadcast_completion": {
            "to_50pct": spread(&f.completion[0]),
            "to_99pct": spread(&f.completion[1]),
            "to_100pct": spread(&f.completion[2]),
            "messages_incomplete": f.incomplete,
            "messages_timed": f.timed,
            "messages_untimed": f.untimed,
        },
        "not_computed": (!f.exact).then_some(NOT_EXACT),
    })
}

/// The verdict on the generator itself, its reasons, and each shard's CPU, timer lateness and
/// completion backlog.
pub(crate) fn generator_json(g: &Generator) -> Value {
    json!({
        "verdict": g.verdict.name(),
        "reasons": g.reasons,
        // The latency the timers' lateness was compared with.
        "compared_with": g.reported.map(|(name, p99)| json!({"histogram": name, "p99_us": p99})),
        "shards": g.shards.iter().enumerate().map(|(k, s)| json!({
            "shard": k,
            "cpu_s": s.cpu_us as f64 / 1e6,
            "cpu_mean_pct": (s.mean_cpu_pct() * 10.0).round() / 10.0,
            "cpu_wait_mean_pct": (s.mean_wait_pct() * 10.0).round() / 10.0,
            // The busiest second: on a CPU or runnable and waiting for one.
            "busy_max_pct": (s.max_busy_pct * 10.0).round() / 10.0,
            "seconds_saturated": s.saturated_s,
            "seconds_strained": s.strained_s,
            "timer_lag": super::hdr::to_json(&s.lag),
            "backlog": s.backlog,
        })).collect::<Vec<_>>(),
    })
}

/// The wall clock: its steps during the run, and the one-way latencies lost to clock skew
/// (with a warning above 1 %).
fn clock_json(r: &RunResult) -> Value {
    let lost = Lost::of(&r.stats, Hist::WsMsgLatency);
    json!({
        "clock_steps": r.clock_steps,
        "step_threshold_us": CLOCK_STEP_US,
        "latency_samples": lost.kept,
        "latency_clock_skew": lost.lost,
        "latency_excluded_share": (lost.kept + lost.lost > 0).then(|| lost.share()),
        "warning": lost.too_many().then(|| lost.describe()),
    })
}

/// Per-connection auth: requests, tokens, failures by cause, request latency.
fn auth_json(r: &RunResult) -> Value {
    if r.auth.is_empty() {
        return Value::Null;
    }
    Value::Array(
        r.auth
            .iter()
            .map(|(name, a)| {
                json!({
                    "scenario": name,
                    "requests": a.requests,
                    "tokens": a.tokens,
                    "failures": a.failures,
                    "first_error": a.first_error,
                    "latency": hist_json(&a.latency),
                })
            })
            .collect(),
    )
}

/// Failures by cause.
fn failures_json(s: &ShardStats) -> Value {
    Value::Object(
        s.failures
            .iter()
            .map(|(k, v)| (k.name(), (*v).into()))
            .collect(),
    )
}

/// Counters, close codes and histograms of `s` as JSON objects.
fn measures_json(s: &ShardStats) -> (Value, Value, Value) {
    let counters: Map<String, Value> = s
        .counters
        .pairs()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    let close_codes: Map<String, Value> = s
        .close_codes
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect();
    let histograms: Map<String, Value> = Hist::ALL
        .iter()
        .map(|h| (h.name().to_owned(), hist_json(s.hist(*h))))
        .collect();
    (counters.into(), close_codes.into(), histograms.into())
}

/// Named requests (replies), checks and stream sequence totals of `s`.
fn named_json(s: &ShardStats) -> (Value, Value, Value) {
    let requests: Map<String, Value> = s
        .named
        .requests
        .iter()
        .map(|r| {
            let v = json!({
                "sent": r.sent,
                "answered": r.answered,
                "unanswered": r.unanswered,
                "unsent": r.unsent,
                "reply_latency": hist_json(&r.latency),
            });
            (r.name.to_string(), v)
        })
        .collect();
    let checks: Map<String, Value> = s
        .named
        .checks
        .iter()
        .map(|c| {
            let total = c.passed + c.failed;
            let v = json!({
                "passed": c.passed,
                "failed": c.failed,
                "rate": (total > 0).then(|| c.passed as f64 / total as f64),
            });
            (c.name.to_string(), v)
        })
        .collect();
    let c = &s.counters;
    let streams = json!({
        "messages": c.stream_msgs,
        "gaps": c.stream_gaps,
        "lost": c.stream_skipped.saturating_sub(c.stream_filled),
        "skipped": c.stream_skipped,
        "late": c.stream_late,
        "duplicates": c.stream_duplicates,
        "keys_untracked": c.stream_keys_untracked,
    });
    (requests.into(), checks.into(), streams)
}

/// The per-scenario section of the JSON document.
fn scenario_json(plan: &RunPlan, sr: &ScenarioResult, r: &RunResult) -> Value {
    let s = &sr.stats;
    let (counters, close_codes, histograms) = measures_json(s);
    let (requests, checks, streams) = named_json(s);
    json!({
        "name": plan.name,
        "requests": requests,
        "checks": checks,
        "streams": plan.conn.stream.is_some().then_some(streams),
        "url": plan.url_text,
        "connections": plan.whole_connections(),
        // With --segment: this segment's share of the scenario's connections.
        "segment_connections": plan.segment.map(|_| plan.connections),
        "start_s": plan.start.as_secs_f64(),
        "header_names": plan.conn.template.header_names(),
        "send_on_open_bytes": plan.conn.on_open.iter().map(|m| m.payload.len()).collect::<Vec<_>>(),
        "reconnect": plan.reconnect,
        "peak_open": sr.peak_open,
        "counters": counters,
        "failures": failures_json(s),
        "close_codes": close_codes,
        "histograms": histograms,
        // The scenario's fan-out log (publishes, subscriber sessions, deliveries), so that a
        // merge settles owed and lost across hosts: binary, raw DEFLATE, base64.
        "fanout_log": (!s.fanout.is_empty()).then(|| s.fanout.to_text()),
        "storm": storm_json(plan, sr, r),
        "ramp_s": sr.ramp.map(|d| d.as_secs_f64()),
        "ramp_deficit_max": sr.ramp_deficit_max,
        "schedule_lag_max_us": sr.schedule_lag_max_us,
    })
}

/// The JSON results document that `--json` writes: settings, counters, histograms, failures,
/// timeline and per-scenario sections, tagged with [`SCHEMA_VERSION`].
pub fn to_json(run: &Prepared, r: &RunResult) -> Value {
    let mut doc = document(run, r);
    let keys = super::identity::plan_keys(&doc);
    let host = read_trim("/proc/sys/kernel/hostname").unwrap_or_default();
    let id = format!("{host}/{}/{}", r.started_unix_us, std::process::id());
    doc["run_id"] = format!("{:016x}", super::identity::fnv1a64(id.as_bytes())).into();
    doc["host"] = json!({"name": host, "started_unix_us": r.started_unix_us});
    doc["plan"] = json!({"identity": super::identity::identity(&keys), "keys": keys});
    doc["verdict"] = super::verdict(&doc).into();
    doc
}

/// Per target (runs over several targets; `null` otherwise): its counts, failures by cause and
/// connect histograms, so a slow or refusing node stands out.
fn targets_json(run: &Prepared, s: &ShardStats) -> Value {
    if run.targets.len() < 2 {
        return Value::Null;
    }
    let empty = crate::metrics::targets::TargetStats::default();
    run.targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let m = s.targets.get(i).unwrap_or(&empty);
            let hist = |h: &Option<Box<Histogram<u64>>>| {
                hist_json(h.as_deref().unwrap_or_else(|| crate::metrics::empty_histogram()))
            };
            json!({
                "url": t.label,
                "address": t.addr.to_string(),
                "weight": t.weight,
                "attempts": m.attempts,
                "established": m.established,
                "connect_failed": m.connect_failed,
                "sessions_dropped": m.sessions_dropped,
                "failures": m.failures.iter().map(|(k, v)| (k.name(), json!(v))).collect::<Map<String, Value>>(),
                "histograms": {"tcp_connect": hist(&m.tcp_connect), "ws_connecting": hist(&m.ws_connecting)},
            })
        })
        .collect::<Vec<_>>()
        .into()
}

/// The document less what [`to_json`] adds about its identity.
fn document(run: &Prepared, r: &RunResult) -> Value {
    let plan = run.main();
    let s = &r.stats;
    let (counters, close_codes, histograms) = measures_json(s);
    let failures = failures_json(s);
    let (requests, checks, streams) = named_json(s);
    let has_stream = run.scenarios.iter().any(|p| p.conn.stream.is_some());
    let failure_text: Map<String, Value> = s
        .failures
        .keys()
        .map(|k| (k.name(), k.describe().into()))
        .collect();
    json!({
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "sockstorm", "version": env!("CARGO_PKG_VERSION")},
        "interrupted": r.interrupted,
        "backend": {"name": r.backend.name, "reason": r.backend.reason},
        "stopped_by": r.stopped_by,
        // --segment and --start-at (the offset: µs from the instant to the actual start).
        // Settings, scenarios and stages name the whole run's plan; the segment's own share
        // of the connections is here (and per scenario, `segment_connections`).
        "segment": plan.segment.map(|g| json!({"index": g.index, "count": g.count, "source": g.source.name(), "connections": run.connections()})),
        "start_at": r.start_at.map(|t| json!({"unix_us": t.unix_us, "offset_us": t.offset_us})),
        "elapsed_s": (r.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "settings": {
            "url": plan.url_text,
            "target": run.target.to_string(),
            "mode": if plan.conn.mode == Mode::Session { "session" } else { "handshake" },
            "connections": run.whole_connections(),
            "connect_rate": Some(plan.whole_connect_rate()).filter(|r| r.is_finite()),
            "session_lifetime_s": (plan.conn.session_lifetime > 0).then(|| secs(plan.conn.session_lifetime)),
            "duration_s": run.duration().as_secs_f64(),
            "connect_timeout_s": secs(plan.conn.connect_timeout),
            "drain_s": plan.drain.as_secs_f64(),
            "close_wait_s": secs(plan.conn.close_wait),
            "header_names": plan.conn.template.header_names(),
            "auth_pre_step": plan.auth_pre_step.is_some(),
            "auth_per_connection": plan.auth_pool.is_some(),
            "subprotocols": plan.conn.template.subprotocols(),
            "protocol": plan.conn.app.protocol().name(),
            "send_on_open_bytes": plan.conn.on_open.iter().map(|m| m.payload.len()).collect::<Vec<_>>(),
            "message_bytes": plan.conn.message.as_ref().map(|m| m.payload.len()),
            "message_rate": plan.message_rate,
            "ping_interval_s": (plan.conn.ping_interval > 0).then(|| secs(plan.conn.ping_interval)),
            "reconnect": plan.reconnect,
            "source_ips": run.source_ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
            "source_ips_auto": run.source_ips_auto,
            "linger_zero": plan.linger_zero,
            "validate_utf8": plan.conn.validate_utf8,
            "timer_resolution_us": plan.conn.timer_resolution,
            "socket_setup": if plan.socket_syscalls { "syscalls" } else { "auto" },
        },
        "machine": {
            "kernel": read_trim("/proc/sys/kernel/osrelease"),
            "cpus_used": plan.cpus,
            "cpus_online": read_trim("/sys/devices/system/cpu/online"),
            "nofile_soft": r.nofile.0,
            "nofile_hard": r.nofile.1,
            "connection_capacity": r.capacity,
            "connection_capacity_other_backend": r.backend.other_capacity.map(|(name, n)| serde_json::json!({"backend": name, "connections": n})),
            "ip_local_port_range": read_trim("/proc/sys/net/ipv4/ip_local_port_range").map(|s| s.split_whitespace().collect::<Vec<_>>().join("-")),
        },
        "counters": counters,
        "failures": failures,
        "failure_descriptions": failure_text,
        "close_codes": close_codes,
        "app_errors": s.app_errors,
        "targets": targets_json(run, s),
        "histograms": histograms,
        "requests": requests,
        "checks": checks,
        "streams": has_stream.then_some(streams),
        "process": {
            "cpu_user_s": r.cpu.0.as_secs_f64(),
            "cpu_sys_s": r.cpu.1.as_secs_f64(),
            "rss_before_bytes": r.rss_before,
            "rss_at_peak_open_bytes": r.rss_at_peak_open,
            "peak_open": r.peak_open,
            "rss_per_open_connection_bytes": r.rss_per_open_connection(),
        },
        "tls": tls_json(plan, s),
        "fanout": fanout_json(r),
        "auth_per_connection": auth_json(r),
        "storm": if run.is_multi() { Value::Null } else { storm_json(plan, &r.scenarios[0], r) },
        "scenarios": r.scenarios.iter().zip(&run.scenarios).map(|(sr, p)| scenario_json(p, sr, r)).collect::<Vec<_>>(),
        "stages": (!plan.stages.is_empty()).then(|| json!({
            "stages": plan.stages.iter().enumerate().map(|(k, st)| json!({"duration_s": st.duration.as_secs_f64(), "target": plan.whole_stage_target(k)})).collect::<Vec<_>>(),
            "ramp_deficit_max": r.ramp_deficit_max,
        })),
        "handshake_mode": handshake_rates(plan, r).map(|(per_s, per_cpu_s, cpu_us)| json!({
            "cycles": s.counters.handshake_cycles,
            "per_s": per_s.round(),
            "per_client_cpu_s": per_cpu_s.round(),
            "client_cpu_us_per_handshake": (cpu_us * 10.0).round() / 10.0,
            "concurrency": plan.connections,
            "upgrade": matches!(plan.conn.mode, Mode::Handshake { upgrade: true, .. }),
            "close": if plan.linger_zero { "rst" } else { "fin" },
        })),
        "aborted_by_threshold": r.threshold_abort.as_ref().map(|(e, t)| json!({"expr": e, "at_s": t})),
        "stopped_by_identical_failures": r.failure_stop.map(|f| json!({
            "cause": f.cause.name(),
            "attempts": f.attempts,
            "at_s": (f.at_s * 1000.0).round() / 1000.0,
            "description": f.cause.describe(),
        })),
        "thresholds": thresholds(run, r).iter().map(|t| json!({
            "expr": t.expr, "actual": t.actual, "pass": t.pass,
            "unreliable": t.unreliable.is_some(), "unreliable_reason": t.unreliable,
        })).collect::<Vec<_>>(),
        "clock": clock_json(r),
        "generator": generator_json(&r.generator),
        "find_max": r.find_max.as_ref().map(super::find_max::json),
        "schedule_lag_max_us": r.schedule_lag_max_us,
        "ramp_s": r.ramp.map(|d| d.as_secs_f64()),
        "established_per_s": r.ramp.filter(|d| !d.is_zero()).map(|d| (run.connections() as f64 / d.as_secs_f64()).round()),
        "timeline": r.timeline,
    })
}
