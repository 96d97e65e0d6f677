//! Why a step failed, in words: the failure causes that appeared (client-side ones first: a
//! client out of ports, descriptors or CPU is not the gateway's limit), else the objective
//! it broke and what that usually means.

use crate::metrics::find_max::{group, Limit};
use crate::metrics::health::Verdict;
use crate::metrics::ShardStats;
use crate::plan::find_max::SearchMode;
use crate::proto::conn::Failure;
use crate::proto::ws::handshake::UpgradeFailure;

/// A failing step as the explanation needs it.
pub(super) struct Failed<'a> {
    pub(super) mode: SearchMode,
    pub(super) value: f64,
    pub(super) stats: &'a ShardStats,
    pub(super) generator: Verdict,
    pub(super) busy_pct: Option<f64>,
    /// The first objective broken, with its measured value as printed.
    pub(super) slo: Option<(&'a str, String)>,
    /// What was reached when it fell short (open sessions, or the rate), if it did.
    pub(super) short: Option<f64>,
    /// The first source address and the target, for the ports message.
    pub(super) route: &'a str,
}

/// Whose limit the step shows, and why, in words.
pub(super) fn explain(f: &Failed<'_>) -> (Limit, String) {
    let at = format!("{} {}", group(f.value), f.mode.unit());
    let count = |want: &dyn Fn(&Failure) -> bool| -> u64 {
        f.stats
            .failures
            .iter()
            .filter(|(k, _)| want(k))
            .map(|(_, n)| n)
            .sum()
    };
    if count(&|k| *k == Failure::NoSourcePort) > 0 {
        return (
            Limit::Client,
            format!("no local port for {}: the client ran out of ephemeral ports at {at}; add source addresses (--source-ip 127.0.0.2-127.0.0.50) or widen net.ipv4.ip_local_port_range — this is the client's limit, not the gateway's", f.route),
        );
    }
    if count(&|k| *k == Failure::TooManyFiles) > 0 {
        return (
            Limit::Client,
            format!("the client ran out of file descriptors at {at} (RLIMIT_NOFILE): raise the limit (sockstorm doctor), or split the load over hosts with --segment — this is the client's limit, not the gateway's"),
        );
    }
    if f.generator == Verdict::GeneratorBound {
        let busy = f
            .busy_pct
            .map_or(String::new(), |b| format!(" (busiest shard {b:.0}% busy)"));
        return (
            Limit::Client,
            format!("the load generator was saturated at {at}{busy}: the knee is the client's, not the gateway's; give it more CPUs (--cpus) or more hosts (--segment i/n)"),
        );
    }
    // The most frequent failure decides the words.
    let top = f
        .stats
        .failures
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(k, n)| (*k, *n));
    if let Some((k, n)) = top {
        let words = match k {
            Failure::Upgrade(UpgradeFailure::Status(s)) => {
                format!("HTTP {s} from {at} ({n} upgrades refused): the gateway refuses upgrades")
            }
            Failure::ConnectTimeout => format!(
                "connect timeouts began at {at} ({n}): SYN/accept backlog or the gateway's accept loop"
            ),
            Failure::UpgradeTimeout => format!(
                "upgrade timeouts at {at} ({n}): the gateway accepts TCP but answers upgrades too slowly"
            ),
            Failure::Refused => format!(
                "connections refused at {at} ({n}): the gateway's listen backlog overflowed or it stopped listening"
            ),
            Failure::Reset | Failure::EofWithoutClose | Failure::TcpTimeout => format!(
                "resets of established sessions at {at} ({n} {k}): the gateway or a middlebox drops connections"
            ),
            Failure::HeartbeatTimeout => format!(
                "sessions stopped answering pings at {at} ({n}): the gateway is too busy to answer"
            ),
            Failure::Tls(t) => format!(
                "TLS failures at {at} ({n} tls_{}): {}", t.name(), t.describe()
            ),
            other => format!("{other} at {at} ({n}): {}", other.describe()),
        };
        return (Limit::Gateway, words);
    }
    if let Some((expr, shown)) = &f.slo {
        let metric = expr.split([':', '{']).next().unwrap_or("").trim();
        let meaning = match metric {
            "ws_msg_rtt" | "ws_msg_latency" | "ws_reply" => {
                "messages wait in the gateway: it answers slower than they are sent"
            }
            "tls_handshake_full" | "tls_handshake_resumed" => {
                "handshakes wait at the gateway: its accept backlog or TLS CPU"
            }
            "ws_connecting" | "tcp_connect" | "ws_upgrade" => {
                "connects wait in the gateway's accept backlog or upgrade handling"
            }
            _ => "the gateway no longer meets the objective",
        };
        return (
            Limit::Gateway,
            format!("`{expr}` broke at {at} (measured {shown}): {meaning}"),
        );
    }
    if let Some(reached) = f.short {
        let what = match f.mode {
            SearchMode::Connections => format!(
                "only {} of {} sessions opened: the gateway holds back upgrades (or --connect-rate is too low for the step)",
                group(reached),
                group(f.value)
            ),
            _ => format!(
                "only {}/s of {}/s were reached: the gateway answers too slowly for the load to keep its pace",
                group(reached),
                group(f.value)
            ),
        };
        return (Limit::Gateway, what);
    }
    (Limit::Gateway, format!("failed at {at}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(stats: &ShardStats, generator: Verdict) -> (Limit, String) {
        explain(&Failed {
            mode: SearchMode::Connections,
            value: 3375.0,
            stats,
            generator,
            busy_pct: Some(99.0),
            slo: Some(("connect_errors: rate<0.001", "10%".into())),
            short: None,
            route: "127.0.0.1 → 127.0.0.1:9000",
        })
    }

    #[test]
    fn names_the_cause_and_whose_limit() {
        let mut s = ShardStats::new();
        s.failures
            .insert(Failure::Upgrade(UpgradeFailure::Status(503)), 375);
        let (l, w) = failed(&s, Verdict::Valid);
        assert_eq!(l, Limit::Gateway);
        assert_eq!(
            w,
            "HTTP 503 from 3,375 connections (375 upgrades refused): the gateway refuses upgrades"
        );
        // A saturated client is blamed before what the gateway answered.
        assert_eq!(failed(&s, Verdict::GeneratorBound).0, Limit::Client);
        s.failures.insert(Failure::NoSourcePort, 1);
        let (l, w) = failed(&s, Verdict::Valid);
        assert_eq!(l, Limit::Client);
        assert!(
            w.starts_with("no local port for 127.0.0.1 → 127.0.0.1:9000"),
            "{w}"
        );
        let (_, w) = failed(&ShardStats::new(), Verdict::Valid);
        assert!(
            w.contains("`connect_errors: rate<0.001` broke at 3,375 connections"),
            "{w}"
        );
        assert_eq!(group(1234567.0), "1,234,567");
    }
}
