//! The human summary printed on stdout: latency table, counters, TLS, failures, storms,
//! fan-out, auth, scenarios, thresholds, process figures and warnings, one section each.

use super::{
    abandoned_text, failure_stop_text, handshake_rates, p99, shortfalls, thresholds, tls_params,
};
use crate::metrics::fanout::{FanoutSummary, NOT_EXACT};
use crate::metrics::health::Verdict;
use crate::metrics::run::RunResult;
use crate::metrics::run::CLOCK_STEP_US;
use crate::metrics::{fmt_us, Hist, ShardStats};
use crate::plan::threshold::Lost;
use crate::plan::{Prepared, Run, RunPlan};
use crate::proto::conn::{Counters, Mode};
use std::fmt::Write as _;

/// The human summary printed on stdout.
pub fn summary(run: &Prepared, r: &RunResult) -> String {
    let mut o = String::new();
    for section in [
        header,
        latencies,
        counters,
        requests,
        tls,
        compression,
        protocol,
        targets,
        failures,
        storms,
        fanout,
        auth,
        scenarios,
        verdicts,
        process,
        generator,
    ] {
        section(&mut o, run, r);
    }
    if let Some(fm) = &r.find_max {
        o.push_str(&super::find_max::text(fm));
    }
    o
}

/// The first line: target, connections, shards, elapsed time.
fn header(o: &mut String, run: &Prepared, r: &RunResult) {
    let plan = run.main();
    let _ = writeln!(
        o,
        "\nsockstorm run {}  {} connections over {} shard(s)  {:.1}s{}",
        plan.url_text,
        run.connections(),
        plan.cpus.len(),
        r.elapsed.as_secs_f64(),
        match (r.interrupted, r.stopped_by) {
            (true, Some(signal)) => format!("  (interrupted by {signal}: partial results)"),
            (true, None) => "  (interrupted: partial results)".into(),
            _ if r.failure_stop.is_some() => {
                "  (stopped early: every attempt failed the same way)".into()
            }
            _ => String::new(),
        }
    );
    if let Some(g) = plan.segment {
        let _ = writeln!(
            o,
            "segment {}/{} (0-based, from {}): this process's share of the run",
            g.index,
            g.count,
            g.source.name()
        );
    }
    if let Some(t) = r.start_at {
        let _ = writeln!(
            o,
            "start at {:.6} (Unix s): started {:+} µs from it",
            t.unix_us as f64 / 1e6,
            t.offset_us
        );
    }
}

/// One row per latency histogram (TLS ones only over wss://).
fn latencies(o: &mut String, run: &Prepared, r: &RunResult) {
    let plan = run.main();
    let s: &ShardStats = &r.stats;
    let _ = writeln!(
        o,
        "\n{:<16}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "latency", "count", "p50", "p90", "p95", "p99", "p99.9", "max"
    );
    for h in Hist::ALL {
        if matches!(h, Hist::TlsFull | Hist::TlsResumed) && plan.tls.is_none() {
            continue;
        }
        latency_row(o, h.name(), s.hist(h));
    }
    for r in &s.named.requests {
        latency_row(o, &format!("ws_reply{{msg:{}}}", r.name), &r.latency);
    }
}

/// One row of the latency table (also the merged summary's).
pub(super) fn latency_row(o: &mut String, name: &str, hist: &hdrhistogram::Histogram<u64>) {
    if hist.is_empty() {
        let _ = writeln!(o, "{name:<16}{:>10}", 0);
        return;
    }
    let q = |x| fmt_us(hist.value_at_quantile(x));
    let _ = writeln!(
        o,
        "{:<16}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        name,
        hist.len(),
        q(0.5),
        q(0.9),
        q(0.95),
        q(0.99),
        q(0.999),
        fmt_us(hist.max())
    );
}

/// Named requests (sent, answered, unanswered), checks (pass rate) and stream sequence.
fn requests(o: &mut String, run: &Prepared, r: &RunResult) {
    let s: &ShardStats = &r.stats;
    if !s.named.requests.is_empty() {
        let _ = writeln!(
            o,
            "
{:<24}{:>12}{:>12}{:>12}{:>12}",
            "requests", "sent", "answered", "unanswered", "unsent"
        );
        for q in &s.named.requests {
            let _ = writeln!(
                o,
                "  {:<22}{:>12}{:>12}{:>12}{:>12}",
                q.name, q.sent, q.answered, q.unanswered, q.unsent
            );
        }
    }
    if !s.named.checks.is_empty() {
        let _ = writeln!(
            o,
            "
{:<24}{:>12}{:>12}{:>10}",
            "checks", "passed", "failed", "rate"
        );
        for c in &s.named.checks {
            let total = c.passed + c.failed;
            let rate = if total == 0 {
                "-".to_owned()
            } else {
                format!("{:.2}%", c.passed as f64 * 100.0 / total as f64)
            };
            let _ = writeln!(
                o,
                "  {:<22}{:>12}{:>12}{:>10}",
                c.name, c.passed, c.failed, rate
            );
        }
    }
    if run.scenarios.iter().any(|p| p.conn.stream.is_some()) {
        let c = &s.counters;
        let _ = writeln!(
            o,
            "
streams: {} messages, {} gaps ({} lost), {} duplicates, {} late",
            c.stream_msgs,
            c.stream_gaps,
            c.stream_skipped.saturating_sub(c.stream_filled),
            c.stream_duplicates,
            c.stream_late
        );
    }
}

/// Every counter that can be non-zero in this run (the JSON has them all).
fn counters(o: &mut String, run: &Prepared, r: &RunResult) {
    let plan = run.main();
    let s: &ShardStats = &r.stats;
    let _ = writeln!(o, "\ncounters");
    for (k, v) in s.counters.pairs() {
        // TLS and handshake-mode counters only where they can be non-zero.
        let tls_only = k.starts_with("tls_") && plan.tls.is_none();
        let cycles_only =
            matches!(k, "handshake_cycles" | "closed_rst") && plan.conn.mode == Mode::Session;
        // Counters of features the run does not use stay out of the way (they are in the JSON).
        let none = |f: fn(&RunPlan) -> bool| !run.scenarios.iter().any(f);
        let unused = match k {
            "storm_dropped" => none(|p| p.storm.is_some()),
            "sessions_retired" => none(|p| p.conn.session_lifetime > 0),
            "expects_met" => none(|p| p.conn.expect.is_some()),
            "latency_clock_skew" => none(|p| p.conn.latency_from.is_some()),
            "resumes_sent" => none(|p| p.conn.on_reconnect.is_some()),
            "heartbeats_sent" | "heartbeats_answered" | "heartbeats_skipped" => {
                none(|p| p.conn.heartbeat.is_some())
            }
            k if k.starts_with("fanout_") => none(|p| p.conn.fanout.is_some()),
            "requests_sent" | "replies_received" | "replies_unanswered" | "requests_unsent" => {
                none(|p| !p.conn.requests.is_empty())
            }
            "checks_passed" | "checks_failed" => none(|p| !p.conn.checks.is_empty()),
            k if k.starts_with("stream_") => none(|p| p.conn.stream.is_some()),
            _ => false,
        };
        // Details of a rare outcome: shown when it happened.
        let quiet = matches!(
            k,
            "abandoned_accepted"
                | "abandoned_stalled"
                | "fanout_foreign"
                | "fanout_untracked"
                | "msgs_unsent"
                | "requests_unsent"
                | "pings_skipped"
                | "heartbeats_skipped"
        ) && v == 0;
        if !(tls_only || cycles_only || unused || quiet) {
            let _ = writeln!(o, "  {k:<24}{v:>12}");
        }
    }
}

/// TLS handshakes full and resumed, negotiated parameters, handshake-mode rates.
/// permessage-deflate: what was offered, and the ratio on the wire each way.
fn compression(o: &mut String, run: &Prepared, r: &RunResult) {
    let Some(offer) = run.main().conn.template.deflate() else {
        return;
    };
    let c = &r.stats.counters;
    let ratio = |wire: u64, payload: u64| {
        if payload == 0 {
            "-".to_owned()
        } else {
            format!("{:.3}", wire as f64 / payload as f64)
        }
    };
    let _ = writeln!(
        o,
        "\ncompression: offered `{}`; sent {} payload bytes as {} (wire/payload {}); received {} compressed messages, {} bytes inflating to {} (wire/payload {})",
        offer.header_value(),
        c.deflate_payload_sent,
        c.deflate_wire_sent,
        ratio(c.deflate_wire_sent, c.deflate_payload_sent),
        c.deflate_msgs_received,
        c.deflate_wire_received,
        c.deflate_payload_received,
        ratio(c.deflate_wire_received, c.deflate_payload_received),
    );
}

/// Several targets: one line each, so a slow or refusing node stands out.
fn targets(o: &mut String, run: &Prepared, r: &RunResult) {
    if run.targets.len() < 2 {
        return;
    }
    let _ = writeln!(
        o,
        "\n{:<40}{:>7}{:>10}{:>9}{:>8}{:>8}{:>13}  failures",
        "target", "weight", "attempts", "opened", "failed", "dropped", "p99 connect"
    );
    let empty = crate::metrics::targets::TargetStats::default();
    for (i, t) in run.targets.iter().enumerate() {
        let m = r.stats.targets.get(i).unwrap_or(&empty);
        let p99 = m
            .ws_connecting
            .as_deref()
            .filter(|h| !h.is_empty())
            .map_or("-".to_owned(), |h| fmt_us(h.value_at_quantile(0.99)));
        let failures: Vec<String> = m.failures.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        let _ = writeln!(
            o,
            "{:<40}{:>7}{:>10}{:>9}{:>8}{:>8}{:>13}  {}",
            t.label,
            t.weight,
            m.attempts,
            m.established,
            m.connect_failed,
            m.sessions_dropped,
            p99,
            if failures.is_empty() {
                "none".to_owned()
            } else {
                failures.join(" ")
            }
        );
    }
}

/// `--protocol`: the protocol's handshakes, heartbeats, acknowledgements and operations.
fn protocol(o: &mut String, run: &Prepared, r: &RunResult) {
    use crate::proto::app::Protocol;
    let p = run.main().conn.app.protocol();
    if p == Protocol::Raw {
        return;
    }
    let s: &ShardStats = &r.stats;
    let c = &s.counters;
    let _ = write!(
        o,
        "\nprotocol {}: {} sessions joined (app_connect p99 {}); server heartbeats {} received, {} heartbeats/pongs sent",
        p.name(),
        s.hist(Hist::AppConnect).len(),
        p99(s, Hist::AppConnect),
        c.app_heartbeats_received,
        c.app_heartbeats_sent,
    );
    if c.app_acks_requested > 0 {
        let _ = write!(
            o,
            "; acks {} asked, {} received (app_ack p99 {}), {} unanswered",
            c.app_acks_requested,
            c.app_acks_received,
            p99(s, Hist::AppAck),
            c.app_acks_unanswered
        );
    }
    if p == Protocol::GraphqlWs {
        let _ = write!(
            o,
            "; next {}, error {}, complete {}",
            c.graphql_next, c.graphql_errors, c.graphql_complete
        );
    }
    if c.app_ignored > 0 {
        let _ = write!(o, "; {} messages ignored", c.app_ignored);
    }
    o.push('\n');
    for (text, n) in &s.app_errors {
        let _ = writeln!(o, "  server error ×{n}: {text}");
    }
}

fn tls(o: &mut String, run: &Prepared, r: &RunResult) {
    let plan = run.main();
    let s: &ShardStats = &r.stats;
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
}

/// Failures by cause with their descriptions, and the close codes received.
fn failures(o: &mut String, run: &Prepared, r: &RunResult) {
    let s: &ShardStats = &r.stats;
    let short = shortfalls(r);
    if s.failures.is_empty() && short.is_empty() {
        let _ = writeln!(o, "\nfailures: none");
    } else if s.failures.is_empty() {
        let _ = writeln!(o, "\nfailures: none counted, but the run did not succeed");
    } else {
        let _ = writeln!(o, "\nfailures");
        for (k, v) in &s.failures {
            let _ = writeln!(o, "  {:<32}{v:>10}  {}", k.name(), k.describe());
        }
    }
    for line in &short {
        let _ = writeln!(o, "  {line}");
    }
    let c = &s.counters;
    if c.msgs_unsent + c.requests_unsent == 0 && c.pings_skipped + c.heartbeats_skipped > 0 {
        let _ = writeln!(o, "  {}", super::backlog_text(c));
    }
    if c.abandoned > 0 && c.abandoned_stalled == 0 && c.established + c.handshake_cycles > 0 {
        let _ = writeln!(o, "  {}", abandoned_text(c, false));
    }
    if let Some(stop) = &r.failure_stop {
        let _ = writeln!(o, "  {}", failure_stop_text(run, stop));
    }
    if !s.close_codes.is_empty() {
        let codes: Vec<String> = s
            .close_codes
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        let _ = writeln!(o, "\nclose codes received: {}", codes.join("  "));
    }
}

/// Each scenario's reconnect storm and its recovery.
fn storms(o: &mut String, run: &Prepared, r: &RunResult) {
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
}

/// Fan-out accounting: owed, received, lost, broadcast completion.
fn fanout(o: &mut String, _: &Prepared, r: &RunResult) {
    if let Some(f) = &r.fanout {
        fanout_lines(o, f, &r.stats.counters);
    }
}

/// The fan-out lines of a summary (a single run's, or a merge's) from the settled log's
/// summary and the run's counters.
pub(crate) fn fanout_lines(o: &mut String, f: &FanoutSummary, c: &Counters) {
    {
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
            let _ = writeln!(o, "  owed and lost not computed: {NOT_EXACT}");
        }
        if c.fanout_foreign > 0 {
            let _ = writeln!(
                o,
                "  {} deliveries in subscribed windows came from ids that published nothing in this run: not owed, not in received",
                c.fanout_foreign
            );
        }
        if c.fanout_untracked > 0 {
            let _ = writeln!(
                o,
                "  {} deliveries came from publishers beyond the {} tracked per subscriber connection: not counted as received",
                c.fanout_untracked,
                crate::proto::conn::TRACKED_PUBLISHERS
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
}

/// Per-connection auth requests of each scenario.
fn auth(o: &mut String, run: &Prepared, r: &RunResult) {
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
}

/// The per-scenario table, when the run has several.
fn scenarios(o: &mut String, run: &Prepared, r: &RunResult) {
    if run.is_multi() {
        scenario_table(o, run, r);
    }
}

/// Thresholds: each outcome, and an early stop by --abort-on-fail.
fn verdicts(o: &mut String, run: &Prepared, r: &RunResult) {
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
}

/// Process CPU and RSS, limits, and warnings about the schedule.
/// The verdict on the generator itself: valid, strained or generator-bound, and why; each
/// shard's CPU and timer lateness.
fn generator(o: &mut String, _: &Prepared, r: &RunResult) {
    let g = &r.generator;
    let shards: Vec<String> = g
        .shards
        .iter()
        .enumerate()
        .map(|(k, s)| {
            format!(
                "shard {k} cpu {:.0} % mean, busy {:.0} % peak, timers {} late p99",
                s.mean_cpu_pct(),
                s.max_busy_pct,
                fmt_us(s.lag_p99())
            )
        })
        .collect();
    let _ = writeln!(
        o,
        "generator: {}  ({})",
        match g.verdict {
            Verdict::GeneratorBound => "GENERATOR-BOUND: these latencies measure the client",
            v => v.name(),
        },
        shards.join("; ")
    );
    for reason in &g.reasons {
        let _ = writeln!(o, "  {reason}");
    }
}

fn process(o: &mut String, run: &Prepared, r: &RunResult) {
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
    let _ = writeln!(o, "backend: {} ({})", r.backend.name, r.backend.reason);
    let _ = writeln!(
        o,
        "limits: RLIMIT_NOFILE {} (hard {}) allows {} connections with {}{}{}",
        r.nofile.0,
        r.nofile.1,
        r.capacity,
        r.backend.name,
        r.backend
            .other_capacity
            .map_or_else(String::new, |(name, n)| format!(" ({name} would hold {n})")),
        if run.source_ips_auto && !run.source_ips.is_empty() {
            format!(
                "; spread over {} loopback source addresses",
                run.source_ips.len()
            )
        } else {
            String::new()
        }
    );
    let latency_from = run.scenarios.iter().any(|p| p.conn.latency_from.is_some());
    if latency_from || r.clock_steps > 0 {
        let _ = writeln!(
            o,
            "clock: {} step(s) of the system clock (over {}) during the run{}",
            r.clock_steps,
            fmt_us(CLOCK_STEP_US),
            if r.clock_steps > 0 {
                "; wall time was re-anchored each second, one-way latency followed"
            } else {
                ""
            }
        );
    }
    let lost = Lost::of(&r.stats, Hist::WsMsgLatency);
    if lost.too_many() {
        let _ = writeln!(
            o,
            "warning: {}; thresholds on {} are marked UNRELIABLE",
            lost.describe(),
            lost.hist.name()
        );
    }
    if r.ramp_deficit_max > 0 && r.find_max.is_none() {
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
}

/// One line per scenario: its connections, sessions, messages, failures and p99 latencies.
fn scenario_table(o: &mut String, run: &Run, r: &RunResult) {
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
