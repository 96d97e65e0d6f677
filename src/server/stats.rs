//! The gateway's totals: per-thread counters ([`ThreadStats`], written only by their thread),
//! their sum ([`GatewayStats`]) and the once-a-second line `serve` prints.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Totals since the gateway started, summed over its threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// TCP connections accepted.
    pub accepted: u64,
    /// WebSocket connections open now (upgraded, not yet closed).
    pub open: u64,
    /// Text and binary messages received (control frames not counted).
    pub msgs_in: u64,
    /// Text and binary messages sent: echoes, command replies, channel deliveries and fan-out
    /// events.
    pub msgs_out: u64,
    /// Upgrade requests refused: by fault injection, or malformed / not a WebSocket upgrade.
    pub handshakes_rejected: u64,
    /// Upgrades that agreed permessage-deflate (`compression` set and offered by the client).
    pub compressed_sessions: u64,
    /// TLS handshakes completed without resumption (with or without HelloRetryRequest).
    pub tls_handshakes_full: u64,
    /// TLS handshakes that resumed a session (TLS 1.3 ticket, TLS 1.2 ticket or session ID).
    pub tls_handshakes_resumed: u64,
    /// TLS connections that ended before their handshake completed: a TLS error (refused or
    /// missing client certificate, not TLS at all) or the client closing mid-handshake.
    pub tls_failures: u64,
    /// Channel publish messages received.
    pub channel_publishes: u64,
    /// Channel deliveries (one published message to one subscriber) queued to a subscriber.
    pub channel_deliveries: u64,
    /// Channel deliveries not sent because of `drop_every`.
    pub channel_dropped: u64,
    /// Deliveries (channel messages, fan-out events, stream quotes) dropped because the client
    /// already had 1024 of them, or `max_queued_bytes` of output, queued behind a full socket.
    /// Subscribers that are closing are not members any more: nothing is counted for them.
    pub channel_overflow: u64,
    /// Connections the server closed because of `close_after`.
    pub server_closes: u64,
    /// Requests answered by the auth endpoint.
    pub auth_requests: u64,
    /// Upgraded connections dropped because the client broke the WebSocket protocol (reserved
    /// bits, unknown opcode, unmasked or oversized frame, bad UTF-8): bytes that were not a
    /// frame, such as a second upgrade request written onto an upgraded socket.
    pub protocol_errors: u64,
    /// Connections whose keepalive ping went unanswered for the timeout: closed with 1011
    /// "keepalive ping timeout".
    pub keepalive_timeouts: u64,
    /// Connections reset because their keepalive close could not be written or was not
    /// answered in time (a client that stopped reading).
    pub keepalive_aborts: u64,
    /// Connections reset by the slow-consumer rule (`slow_consumer_timeout`).
    pub slow_consumer_aborts: u64,
    /// Ack-route replies sent (`{"type":REPLY_TYPE,…}`, also counted in `msgs_out`).
    pub acks: u64,
    /// Stream quotes queued to clients (also counted in `msgs_out`).
    pub stream_msgs: u64,
    /// Stream seqs skipped by `stream_gap_every` (never sent).
    pub stream_skipped: u64,
    /// Stream seqs not sent (skipped, or lost to a full client as `channel_overflow`) that were
    /// followed by a later quote on the same stream: the missing seqs a client can detect.
    /// Without overflow and with `stream_gap_every` >= 2, also the number of gaps.
    pub stream_gaps_visible: u64,
    /// Stream subscriptions acknowledged but not streamed: beyond 64 streams on a connection,
    /// or a name longer than 256 bytes.
    pub stream_subs_refused: u64,
    /// Connections closed because they had not completed the upgrade (TLS handshake included)
    /// within `handshake_timeout` of being accepted.
    pub handshake_timeouts: u64,
    /// Connections closed with 1009 "message too big": a message or frame over
    /// `max_message_size`, or an unfinished message that took the gateway's total beyond
    /// `max_unfinished_bytes`.
    pub too_big_closes: u64,
    /// Publishes not relayed to another worker thread because the queues between threads
    /// held `max_relay_bytes` (one publish to one thread; that thread's members miss it).
    pub relay_dropped: u64,
}

/// Counters of one event-loop thread; written only by it, read by `stats()` and the reporter.
#[derive(Debug, Default)]
#[repr(align(64))] // one cache line per thread: no false sharing between event loops
pub(super) struct ThreadStats {
    /// TCP connections accepted.
    pub(super) accepted: AtomicU64,
    /// WebSocket connections open.
    pub(super) open: AtomicU64,
    /// Data messages received.
    pub(super) msgs_in: AtomicU64,
    /// Data messages sent.
    pub(super) msgs_out: AtomicU64,
    /// Upgrades that agreed permessage-deflate.
    pub(crate) compressed_sessions: AtomicU64,
    /// Upgrades refused.
    pub(super) handshakes_rejected: AtomicU64,
    /// Full TLS handshakes.
    pub(super) tls_handshakes_full: AtomicU64,
    /// Resumed TLS handshakes.
    pub(super) tls_handshakes_resumed: AtomicU64,
    /// TLS connections lost before the handshake completed.
    pub(super) tls_failures: AtomicU64,
    /// Channel publishes received.
    pub(super) channel_publishes: AtomicU64,
    /// Channel deliveries queued.
    pub(super) channel_deliveries: AtomicU64,
    /// Channel deliveries dropped by `drop_every`.
    pub(super) channel_dropped: AtomicU64,
    /// Deliveries dropped for a full client.
    pub(super) channel_overflow: AtomicU64,
    /// `close_after` closes.
    pub(super) server_closes: AtomicU64,
    /// Auth endpoint answers.
    pub(super) auth_requests: AtomicU64,
    /// Client WebSocket protocol violations.
    pub(super) protocol_errors: AtomicU64,
    /// Keepalive closes (1011).
    pub(super) keepalive_timeouts: AtomicU64,
    /// Keepalive resets.
    pub(super) keepalive_aborts: AtomicU64,
    /// Slow-consumer resets.
    pub(super) slow_consumer_aborts: AtomicU64,
    /// Ack-route replies.
    pub(super) acks: AtomicU64,
    /// Stream quotes queued.
    pub(super) stream_msgs: AtomicU64,
    /// Stream seqs skipped.
    pub(super) stream_skipped: AtomicU64,
    /// Missing stream seqs followed by a queued quote.
    pub(super) stream_gaps_visible: AtomicU64,
    /// Stream subscriptions not streamed.
    pub(super) stream_subs_refused: AtomicU64,
    /// Connections closed by the handshake timeout.
    pub(super) handshake_timeouts: AtomicU64,
    /// Connections closed with 1009 "message too big".
    pub(super) too_big_closes: AtomicU64,
    /// Publishes not relayed to a thread: the relay queues were full.
    pub(crate) relay_dropped: AtomicU64,
}

/// The once-a-second stats printer.
#[derive(Debug)]
pub(super) struct Reporter {
    /// Dropping it stops the reporter at once.
    pub(super) stop: mpsc::Sender<()>,
    /// The reporter thread.
    pub(super) thread: JoinHandle<()>,
}

/// Sums the per-thread counters.
pub(super) fn sum_stats(stats: &[Arc<ThreadStats>]) -> GatewayStats {
    stats
        .iter()
        .fold(GatewayStats::default(), |acc, t| GatewayStats {
            accepted: acc.accepted + t.accepted.load(Relaxed),
            open: acc.open + t.open.load(Relaxed),
            msgs_in: acc.msgs_in + t.msgs_in.load(Relaxed),
            msgs_out: acc.msgs_out + t.msgs_out.load(Relaxed),
            handshakes_rejected: acc.handshakes_rejected + t.handshakes_rejected.load(Relaxed),
            compressed_sessions: acc.compressed_sessions + t.compressed_sessions.load(Relaxed),
            tls_handshakes_full: acc.tls_handshakes_full + t.tls_handshakes_full.load(Relaxed),
            tls_handshakes_resumed: acc.tls_handshakes_resumed
                + t.tls_handshakes_resumed.load(Relaxed),
            tls_failures: acc.tls_failures + t.tls_failures.load(Relaxed),
            channel_publishes: acc.channel_publishes + t.channel_publishes.load(Relaxed),
            channel_deliveries: acc.channel_deliveries + t.channel_deliveries.load(Relaxed),
            channel_dropped: acc.channel_dropped + t.channel_dropped.load(Relaxed),
            channel_overflow: acc.channel_overflow + t.channel_overflow.load(Relaxed),
            server_closes: acc.server_closes + t.server_closes.load(Relaxed),
            auth_requests: acc.auth_requests + t.auth_requests.load(Relaxed),
            protocol_errors: acc.protocol_errors + t.protocol_errors.load(Relaxed),
            keepalive_timeouts: acc.keepalive_timeouts + t.keepalive_timeouts.load(Relaxed),
            keepalive_aborts: acc.keepalive_aborts + t.keepalive_aborts.load(Relaxed),
            slow_consumer_aborts: acc.slow_consumer_aborts + t.slow_consumer_aborts.load(Relaxed),
            acks: acc.acks + t.acks.load(Relaxed),
            stream_msgs: acc.stream_msgs + t.stream_msgs.load(Relaxed),
            stream_skipped: acc.stream_skipped + t.stream_skipped.load(Relaxed),
            stream_gaps_visible: acc.stream_gaps_visible + t.stream_gaps_visible.load(Relaxed),
            stream_subs_refused: acc.stream_subs_refused + t.stream_subs_refused.load(Relaxed),
            handshake_timeouts: acc.handshake_timeouts + t.handshake_timeouts.load(Relaxed),
            too_big_closes: acc.too_big_closes + t.too_big_closes.load(Relaxed),
            relay_dropped: acc.relay_dropped + t.relay_dropped.load(Relaxed),
        })
}

/// The fault and extra-endpoint totals that are non-zero, as `  name N` pairs (empty if none).
#[must_use]
pub fn fault_totals(s: &GatewayStats) -> String {
    [
        ("dropped", s.channel_dropped),
        ("overflow", s.channel_overflow),
        ("server closes", s.server_closes),
        ("auth", s.auth_requests),
        ("protocol errors", s.protocol_errors),
        ("keepalive timeouts", s.keepalive_timeouts),
        ("keepalive aborts", s.keepalive_aborts),
        ("slow consumer aborts", s.slow_consumer_aborts),
        ("stream seqs skipped", s.stream_skipped),
        ("stream subscriptions refused", s.stream_subs_refused),
        ("handshake timeouts", s.handshake_timeouts),
        ("too big closes", s.too_big_closes),
        ("relay dropped", s.relay_dropped),
    ]
    .into_iter()
    .filter(|&(_, n)| n > 0)
    .map(|(name, n)| format!("  {name} {n}"))
    .collect()
}

/// Prints one line per second until `stop`'s sender is dropped; with TLS handshake rates if
/// `tls`.
pub(super) fn report_loop(stats: &[Arc<ThreadStats>], tls: bool, stop: &mpsc::Receiver<()>) {
    let mut last = sum_stats(stats);
    let mut last_at = Instant::now();
    let mut next = last_at + Duration::from_secs(1);
    loop {
        match stop.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let cur = sum_stats(stats);
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
        let per_s = |cur: u64, last: u64| (cur.saturating_sub(last) as f64 / secs).round() as u64;
        let tls_rates = if tls {
            format!(
                "  tls full/s {}  resumed/s {}  failed/s {}",
                per_s(cur.tls_handshakes_full, last.tls_handshakes_full),
                per_s(cur.tls_handshakes_resumed, last.tls_handshakes_resumed),
                per_s(cur.tls_failures, last.tls_failures),
            )
        } else {
            String::new()
        };
        let mut channels = String::new();
        if cur.channel_publishes > 0 {
            channels = format!(
                "  publishes/s {}  deliveries/s {}",
                per_s(cur.channel_publishes, last.channel_publishes),
                per_s(cur.channel_deliveries, last.channel_deliveries),
            );
        }
        if cur.acks > 0 {
            channels.push_str(&format!("  acks/s {}", per_s(cur.acks, last.acks)));
        }
        if cur.stream_msgs > 0 {
            channels.push_str(&format!(
                "  quotes/s {}",
                per_s(cur.stream_msgs, last.stream_msgs)
            ));
        }
        eprintln!(
            "serve: open {}  accepted/s {}  msgs in/s {}  out/s {}{tls_rates}{channels}{}",
            cur.open,
            per_s(cur.accepted, last.accepted),
            per_s(cur.msgs_in, last.msgs_in),
            per_s(cur.msgs_out, last.msgs_out),
            fault_totals(&cur),
        );
        (last, last_at) = (cur, now);
        next += Duration::from_secs(1);
        if next < now {
            next = now + Duration::from_secs(1);
        }
    }
}
