//! Results: the human summary on stdout and the JSON document (`--json`), built from the same
//! merged numbers. Header values and message payloads never appear (they may carry tokens):
//! only header names and payload sizes do.

use crate::engine::RunResult;
use crate::engine::ScenarioResult;
use crate::metrics::{Hist, ShardStats, TlsParam};
use crate::plan::{Run, RunPlan};
use crate::proto::conn::Mode;
use crate::proto::tls::{cipher_name, group_name, version_name, Resume};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;

/// Version of the JSON layout; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Formats microseconds with a readable unit.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

fn hist_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0, "min_us": 0, "mean_us": 0.0, "p50_us": 0, "p90_us": 0, "p95_us": 0,
                      "p99_us": 0, "p999_us": 0, "max_us": 0});
    }
    json!({
        "count": h.len(),
        "min_us": h.min(),
        "mean_us": (h.mean() * 10.0).round() / 10.0,
        "p50_us": h.value_at_quantile(0.50),
        "p90_us": h.value_at_quantile(0.90),
        "p95_us": h.value_at_quantile(0.95),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

/// Reads a one-line /proc or /sys file.
fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Negotiated TLS parameters by kind: (versions, ciphers, groups), names → counts.
fn tls_params(s: &ShardStats) -> [Vec<(String, u64)>; 3] {
    let mut out: [Vec<(String, u64)>; 3] = Default::default();
    for (p, n) in &s.tls_params {
        match *p {
            TlsParam::Version(v) => out[0].push((version_name(v), *n)),
            TlsParam::Cipher(c) => out[1].push((cipher_name(c), *n)),
            TlsParam::Group(g) => out[2].push((group_name(g), *n)),
        }
    }
    out
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
    let Some(f) = &r.fanout else {
        return Value::Null;
    };
    let c = &r.stats.counters;
    let spread = |x: &Option<[u64; 3]>| {
        x.map(|[p50, p99, max]| json!({"p50_us": p50, "p99_us": p99, "max_us": max}))
    };
    json!({
        "published": f.published,
        "subscriber_sessions": f.sessions,
        "owed": f.exact.then_some(f.expected),
        "delivered_owed": c.fanout_delivered_owed,
        "delivered_total": c.fanout_delivered,
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

/// The run's thresholds evaluated on its merged results (overall or per scenario).
pub fn thresholds(run: &Run, r: &RunResult) -> Vec<crate::metrics::threshold::Outcome> {
    let secs = run.duration().as_secs_f64().min(r.elapsed.as_secs_f64());
    let per: Vec<&ShardStats> = r.scenarios.iter().map(|s| &s.stats).collect();
    run.thresholds
        .iter()
        .map(|t| t.eval(run.stats_for(t, &r.stats, &per), secs))
        .collect()
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

/// The per-scenario section of the JSON document.
fn scenario_json(plan: &RunPlan, sr: &ScenarioResult, r: &RunResult) -> Value {
    let s = &sr.stats;
    let (counters, close_codes, histograms) = measures_json(s);
    json!({
        "name": plan.name,
        "url": plan.url_text,
        "connections": plan.connections,
        "start_s": plan.start.as_secs_f64(),
        "header_names": plan.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        "send_on_open_bytes": plan.on_open.iter().map(|m| m.payload.len()).collect::<Vec<_>>(),
        "reconnect": plan.reconnect,
        "peak_open": sr.peak_open,
        "counters": counters,
        "failures": failures_json(s),
        "close_codes": close_codes,
        "histograms": histograms,
        "storm": storm_json(plan, sr, r),
        "ramp_s": sr.ramp.map(|d| d.as_secs_f64()),
        "ramp_deficit_max": sr.ramp_deficit_max,
        "schedule_lag_max_us": sr.schedule_lag_max_us,
    })
}

/// Handshake-mode rates: per second of run time and per second of client CPU.
fn handshake_rates(plan: &RunPlan, r: &RunResult) -> Option<(f64, f64, f64)> {
    if plan.mode == Mode::Session {
        return None;
    }
    let n = r.stats.counters.handshake_cycles as f64;
    let secs = plan.duration.as_secs_f64().min(r.elapsed.as_secs_f64());
    let cpu = (r.cpu.0 + r.cpu.1).as_secs_f64();
    if n == 0.0 || secs == 0.0 || cpu == 0.0 {
        return Some((0.0, 0.0, 0.0));
    }
    Some((n / secs, n / cpu, cpu * 1e6 / n))
}

/// The JSON results document.
pub fn to_json(run: &Run, r: &RunResult) -> Value {
    let plan = run.main();
    let s = &r.stats;
    let (counters, close_codes, histograms) = measures_json(s);
    let failures = failures_json(s);
    let failure_text: Map<String, Value> = s
        .failures
        .keys()
        .map(|k| (k.name(), k.describe().into()))
        .collect();
    let header_names: Vec<&str> = plan.headers.iter().map(|(n, _)| n.as_str()).collect();
    json!({
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "sockstorm", "version": env!("CARGO_PKG_VERSION")},
        "interrupted": r.interrupted,
        "elapsed_s": (r.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "settings": {
            "url": plan.url_text,
            "target": plan.target.to_string(),
            "mode": if plan.mode == Mode::Session { "session" } else { "handshake" },
            "connections": run.connections(),
            "connect_rate": plan.connect_rate.is_finite().then_some(plan.connect_rate),
            "session_lifetime_s": plan.session_lifetime.map(|d| d.as_secs_f64()),
            "duration_s": run.duration().as_secs_f64(),
            "connect_timeout_s": plan.connect_timeout.as_secs_f64(),
            "drain_s": plan.drain.as_secs_f64(),
            "close_wait_s": plan.close_wait.as_secs_f64(),
            "header_names": header_names,
            "auth_pre_step": plan.auth && plan.auth_pool.is_none(),
            "auth_per_connection": plan.auth_pool.is_some(),
            "subprotocols": plan.subprotocols,
            "send_on_open_bytes": plan.on_open.iter().map(|m| m.payload.len()).collect::<Vec<_>>(),
            "message_bytes": plan.message.as_ref().map(|m| m.payload.len()),
            "message_rate": plan.message_rate,
            "ping_interval_s": plan.ping_interval.map(|d| d.as_secs_f64()),
            "reconnect": plan.reconnect,
            "source_ips": plan.source_ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
            "source_ips_auto": plan.source_ips_auto,
            "linger_zero": plan.linger_zero,
            "validate_utf8": plan.validate_utf8,
            "timer_resolution_us": plan.timer_resolution.as_micros() as u64,
            "backend": "io_uring",
            "socket_setup": format!("{:?}", plan.socket_setup).to_lowercase(),
        },
        "machine": {
            "kernel": read_trim("/proc/sys/kernel/osrelease"),
            "cpus_used": plan.cpus,
            "cpus_online": read_trim("/sys/devices/system/cpu/online"),
            "nofile_soft": r.nofile.0,
            "nofile_hard": r.nofile.1,
            "connection_capacity": r.capacity,
            "ip_local_port_range": read_trim("/proc/sys/net/ipv4/ip_local_port_range").map(|s| s.split_whitespace().collect::<Vec<_>>().join("-")),
        },
        "counters": counters,
        "failures": failures,
        "failure_descriptions": failure_text,
        "close_codes": close_codes,
        "histograms": histograms,
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
            "stages": plan.stages.iter().map(|st| json!({"duration_s": st.duration.as_secs_f64(), "target": st.target})).collect::<Vec<_>>(),
            "ramp_deficit_max": r.ramp_deficit_max,
        })),
        "handshake_mode": handshake_rates(plan, r).map(|(per_s, per_cpu_s, cpu_us)| json!({
            "cycles": s.counters.handshake_cycles,
            "per_s": per_s.round(),
            "per_client_cpu_s": per_cpu_s.round(),
            "client_cpu_us_per_handshake": (cpu_us * 10.0).round() / 10.0,
            "concurrency": plan.connections,
            "upgrade": matches!(plan.mode, Mode::Handshake { upgrade: true, .. }),
            "close": if plan.linger_zero { "rst" } else { "fin" },
        })),
        "aborted_by_threshold": r.threshold_abort.as_ref().map(|(e, t)| json!({"expr": e, "at_s": t})),
        "thresholds": thresholds(run, r).iter().map(|t| json!({
            "expr": t.expr, "actual": t.actual, "pass": t.pass,
        })).collect::<Vec<_>>(),
        "schedule_lag_max_us": r.schedule_lag_max_us,
        "ramp_s": r.ramp.map(|d| d.as_secs_f64()),
        "established_per_s": r.ramp.filter(|d| !d.is_zero()).map(|d| (run.connections() as f64 / d.as_secs_f64()).round()),
        "timeline": r.timeline,
    })
}

/// The human summary printed on stdout.
pub fn summary(run: &Run, r: &RunResult) -> String {
    let plan = run.main();
    let s: &ShardStats = &r.stats;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nsockstorm run {}  {} connections over {} shard(s)  {:.1}s{}",
        plan.url_text,
        run.connections(),
        plan.cpus.len(),
        r.elapsed.as_secs_f64(),
        if r.interrupted {
            "  (interrupted: partial results)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "\n{:<16}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "latency", "count", "p50", "p90", "p95", "p99", "p99.9", "max"
    );
    for h in Hist::ALL {
        if matches!(h, Hist::TlsFull | Hist::TlsResumed) && plan.tls.is_none() {
            continue;
        }
        let hist = s.hist(h);
        if hist.is_empty() {
            let _ = writeln!(o, "{:<16}{:>10}", h.name(), 0);
            continue;
        }
        let q = |x| fmt_us(hist.value_at_quantile(x));
        let _ = writeln!(
            o,
            "{:<16}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            h.name(),
            hist.len(),
            q(0.5),
            q(0.9),
            q(0.95),
            q(0.99),
            q(0.999),
            fmt_us(hist.max())
        );
    }
    let _ = writeln!(o, "\ncounters");
    for (k, v) in s.counters.pairs() {
        // TLS and handshake-mode counters only where they can be non-zero.
        let tls_only = k.starts_with("tls_") && plan.tls.is_none();
        let cycles_only =
            matches!(k, "handshake_cycles" | "closed_rst") && plan.mode == Mode::Session;
        // Counters of features the run does not use stay out of the way (they are in the JSON).
        let none = |f: fn(&RunPlan) -> bool| !run.scenarios.iter().any(f);
        let unused = match k {
            "storm_dropped" => none(|p| p.storm.is_some()),
            "sessions_retired" => none(|p| p.session_lifetime.is_some()),
            "expects_met" => none(|p| p.expect.is_some()),
            "latency_clock_skew" => none(|p| p.latency_from.is_some()),
            "resumes_sent" => none(|p| p.on_reconnect.is_some()),
            "heartbeats_sent" | "heartbeats_answered" => none(|p| p.heartbeat.is_some()),
            k if k.starts_with("fanout_") => none(|p| p.fanout.is_some()),
            _ => false,
        };
        if !(tls_only || cycles_only || unused) {
            let _ = writeln!(o, "  {k:<24}{v:>12}");
        }
    }
    if let Some(t) = &plan.tls {
        let c = &s.counters;
        let n = c.tls_handshakes_full + c.tls_handshakes_resumed;
        let pct = |a: u64| {
            if n == 0 {
                0.0
            } else {
                a as f64 * 100.0 / n as f64
            }
        };
        let _ = writeln!(
            o,
            "\ntls: {n} handshakes: {} full, {} resumed ({:.1}%); resumption offered {} times, refused {}{}",
            c.tls_handshakes_full,
            c.tls_handshakes_resumed,
            pct(c.tls_handshakes_resumed),
            c.tls_resume_attempted,
            c.tls_resume_refused,
            if t.insecure { "\n  certificate verification OFF (--insecure)" } else { "" }
        );
        for (label, v) in ["versions", "ciphers", "groups"].iter().zip(tls_params(s)) {
            if !v.is_empty() {
                let items: Vec<String> = v.iter().map(|(k, n)| format!("{k}×{n}")).collect();
                let _ = writeln!(o, "  {label:<9}{}", items.join("  "));
            }
        }
    }
    if s.counters.tls_ticket_waits_expired > 0 {
        let _ = writeln!(
            o,
            "  {} handshake cycles waited in vain for a TLS 1.3 ticket: the server sends none? (each shard stops waiting after a few; --resume off avoids it)",
            s.counters.tls_ticket_waits_expired
        );
    }
    if let Some((per_s, per_cpu, cpu_us)) = handshake_rates(plan, r) {
        let _ = writeln!(
            o,
            "\nhandshakes: {} cycles, {per_s:.0}/s, {per_cpu:.0} per client-CPU-second, {cpu_us:.1}µs client CPU each",
            s.counters.handshake_cycles
        );
    }
    if s.failures.is_empty() {
        let _ = writeln!(o, "\nfailures: none");
    } else {
        let _ = writeln!(o, "\nfailures");
        for (k, v) in &s.failures {
            let _ = writeln!(o, "  {:<32}{v:>10}  {}", k.name(), k.describe());
        }
    }
    if !s.close_codes.is_empty() {
        let codes: Vec<String> = s
            .close_codes
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        let _ = writeln!(o, "\nclose codes received: {}", codes.join("  "));
    }
    for (p, sr) in run.scenarios.iter().zip(&r.scenarios) {
        let Some(st) = p.storm else { continue };
        let _ = writeln!(
            o,
            "\nstorm{} at {:.1}s{}: {} sessions dropped ({}), {}",
            if run.is_multi() {
                format!(" [{}]", p.name)
            } else {
                String::new()
            },
            st.at as f64 / 1e6,
            if st.every > 0 {
                format!(" and every {:.1}s", st.every as f64 / 1e6)
            } else {
                String::new()
            },
            sr.stats.counters.storm_dropped,
            if st.rst { "RST" } else { "close handshake" },
            match sr.storm_recovery {
                Some(d) => format!(
                    "back at {} open after {:.3}s at worst",
                    p.connections,
                    d.as_secs_f64()
                ),
                None => format!("NOT back at {} open before the run ended", p.connections),
            }
        );
    }
    if let Some(f) = &r.fanout {
        let c = &s.counters;
        let _ = writeln!(
            o,
            "\nfan-out: {} published, {} subscriber sessions; owed {} deliveries, received {} ({:.4}%), lost {}, duplicates {}, reordered {}",
            f.published,
            f.sessions,
            f.expected,
            c.fanout_delivered_owed,
            if f.expected > 0 { c.fanout_delivered_owed as f64 * 100.0 / f.expected as f64 } else { 0.0 },
            c.fanout_lost,
            c.fanout_duplicates,
            c.fanout_reordered,
        );
        for (label, x) in ["50%", "99%", "100%"].iter().zip(&f.completion) {
            if let Some([p50, p99, max]) = x {
                let _ = writeln!(
                    o,
                    "  broadcast to {label:<5} of subscribers: p50 {}  p99 {}  max {}  (over messages)",
                    fmt_us(*p50),
                    fmt_us(*p99),
                    fmt_us(*max)
                );
            }
        }
        if !f.exact {
            let _ = writeln!(
                o,
                "  owed and lost not computed: more messages were published than the log holds (1,000,000)"
            );
        }
        if f.incomplete > 0 {
            let _ = writeln!(
                o,
                "  {} messages never reached every subscriber owed them",
                f.incomplete
            );
        }
    }
    for (name, a) in &r.auth {
        let lat = &a.latency;
        let _ = writeln!(
            o,
            "\nauth per connection{}: {} requests, {} tokens, p50 {} p99 {}{}",
            if run.is_multi() {
                format!(" [{name}]")
            } else {
                String::new()
            },
            a.requests,
            a.tokens,
            fmt_us(lat.value_at_quantile(0.5)),
            fmt_us(lat.value_at_quantile(0.99)),
            if a.failures.is_empty() {
                String::new()
            } else {
                let f: Vec<String> = a.failures.iter().map(|(k, v)| format!("{k}×{v}")).collect();
                format!(
                    "; failed: {} (first: {})",
                    f.join("  "),
                    a.first_error.as_deref().unwrap_or("")
                )
            }
        );
    }
    if run.is_multi() {
        scenario_table(&mut o, run, r);
    }
    let outcomes = thresholds(run, r);
    if !outcomes.is_empty() {
        let failed = outcomes.iter().filter(|t| !t.pass).count();
        let _ = writeln!(
            o,
            "\nthresholds: {}",
            if failed == 0 {
                "all passed".to_owned()
            } else {
                format!("{failed} of {} FAILED", outcomes.len())
            }
        );
        for t in &outcomes {
            let _ = writeln!(o, "  {t}");
        }
        if let Some((e, t)) = &r.threshold_abort {
            let _ = writeln!(
                o,
                "  run stopped early at {t:.1}s: `{e}` failed (--abort-on-fail)"
            );
        }
    }
    let per_conn = r
        .rss_per_open_connection()
        .map_or_else(String::new, |b| format!(" ({b} B per open connection)"));
    let _ = writeln!(
        o,
        "\nprocess: cpu {:.2}s user + {:.2}s sys; RSS {:.1} MiB before, {:.1} MiB at {} open{}",
        r.cpu.0.as_secs_f64(),
        r.cpu.1.as_secs_f64(),
        r.rss_before as f64 / 1048576.0,
        r.rss_at_peak_open as f64 / 1048576.0,
        r.peak_open,
        per_conn
    );
    let _ = writeln!(
        o,
        "limits: RLIMIT_NOFILE {} (hard {}) allows {} connections{}",
        r.nofile.0,
        r.nofile.1,
        r.capacity,
        if plan.source_ips_auto && !plan.source_ips.is_empty() {
            format!(
                "; spread over {} loopback source addresses",
                plan.source_ips.len()
            )
        } else {
            String::new()
        }
    );
    if r.ramp_deficit_max > 0 {
        let _ = writeln!(
            o,
            "warning: the connection count fell behind the stages by up to {} (raise --connect-rate, or the client is saturated)",
            r.ramp_deficit_max
        );
    }
    if r.schedule_lag_max_us > 100_000 {
        let _ = writeln!(
            o,
            "warning: connect schedule fell behind by up to {} ({})",
            fmt_us(r.schedule_lag_max_us),
            if r.auth.is_empty() {
                "client saturated?"
            } else {
                "openings wait for --auth-per-connection tokens: raise --auth-rate, or the client is saturated"
            }
        );
    }
    o
}

/// One line per scenario: its connections, sessions, messages, failures and p99 latencies.
fn scenario_table(o: &mut String, run: &Run, r: &RunResult) {
    let p99 = |s: &ShardStats, h: Hist| {
        let h = s.hist(h);
        if h.is_empty() {
            "-".to_owned()
        } else {
            fmt_us(h.value_at_quantile(0.99))
        }
    };
    let _ = writeln!(
        o,
        "\n{:<16}{:>8}{:>8}{:>10}{:>10}{:>10}{:>9}{:>12}{:>10}{:>12}",
        "scenario",
        "conns",
        "peak",
        "opened",
        "sent",
        "recv all",
        "failed",
        "p99 connect",
        "p99 rtt",
        "p99 latency"
    );
    for (p, sr) in run.scenarios.iter().zip(&r.scenarios) {
        let s = &sr.stats;
        let c = &s.counters;
        let _ = writeln!(
            o,
            "{:<16}{:>8}{:>8}{:>10}{:>10}{:>10}{:>9}{:>12}{:>10}{:>12}",
            p.name,
            p.connections,
            sr.peak_open,
            c.established,
            c.msgs_sent + c.fanout_published,
            c.msgs_received + c.msgs_pushed,
            s.failure_total(),
            p99(s, Hist::WsConnecting),
            p99(s, Hist::WsMsgRtt),
            p99(s, Hist::WsMsgLatency),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(fmt_us(850), "850µs");
        assert_eq!(fmt_us(1_250), "1.25ms");
        assert_eq!(fmt_us(2_500_000), "2.50s");
    }
}
