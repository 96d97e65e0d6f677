//! Per-shard statistics and their merge.
//!
//! Each shard owns one [`ShardStats`]: plain HDR histograms and counters, never shared or
//! locked. Once a second the shard hands a copy of what it gathered to the engine and resets;
//! the engine adds the intervals up (`Histogram::add`). Every histogram has the same bounds
//! (1 µs .. 60 s, 3 significant figures), so merges cannot fail, across shards, runs and nodes.

pub mod fanout;
pub mod run;

use crate::proto::conn::Failure;
use crate::proto::tls::Negotiated;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// Highest trackable latency: 60 s in µs. Larger values saturate to it.
pub const HIST_MAX_US: u64 = 60_000_000;
/// Significant figures kept by every histogram.
pub const HIST_SIGFIG: u8 = 3;

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

/// The latency histograms, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hist {
    /// TCP connect: connect submitted → connected.
    TcpConnect,
    /// WebSocket upgrade: request sent → valid 101 parsed.
    WsUpgrade,
    /// Whole connection setup: connect submitted → WebSocket open.
    WsConnecting,
    /// Echo round trip, from the message's intended send time.
    WsMsgRtt,
    /// Ping → pong round trip.
    WsPing,
    /// Full TLS handshake: TCP connected → handshake complete.
    TlsFull,
    /// Resumed TLS handshake: TCP connected → handshake complete.
    TlsResumed,
    /// Session open (on-open message due) → the expected reply (`--expect`) received.
    WsSubscribeAck,
    /// One-way: a message's server timestamp (`--latency-from`), or a fan-out message's
    /// send time, → its arrival.
    WsMsgLatency,
    /// Application-level heartbeat (`--heartbeat-message`) → its reply.
    WsHeartbeat,
}

impl Hist {
    /// All histograms in report order.
    pub const ALL: [Self; 10] = [
        Self::TcpConnect,
        Self::TlsFull,
        Self::TlsResumed,
        Self::WsUpgrade,
        Self::WsConnecting,
        Self::WsSubscribeAck,
        Self::WsMsgRtt,
        Self::WsMsgLatency,
        Self::WsPing,
        Self::WsHeartbeat,
    ];

    /// Metric name (k6 names where k6 has the same thing).
    pub fn name(self) -> &'static str {
        match self {
            Self::TcpConnect => "tcp_connect",
            Self::WsUpgrade => "ws_upgrade",
            Self::WsConnecting => "ws_connecting",
            Self::WsMsgRtt => "ws_msg_rtt",
            Self::WsPing => "ws_ping",
            Self::TlsFull => "tls_handshake_full",
            Self::TlsResumed => "tls_handshake_resumed",
            Self::WsSubscribeAck => "ws_subscribe_ack",
            Self::WsMsgLatency => "ws_msg_latency",
            Self::WsHeartbeat => "ws_heartbeat",
        }
    }
}

/// Builds an empty histogram with the crate-wide bounds.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid (1 ≤ low, high ≥ 2·low, sigfig ≤ 5).
    Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG)
        .unwrap_or_else(|_| unreachable!("valid constant bounds"))
}

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident ),* $(,)?) => {
        /// Monotonic event counters of one shard (or of a merge).
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Counters {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl Counters {
            /// `(name, value)` pairs in declaration order, for reports.
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name), )*]
            }

            /// Adds `other` into `self`.
            pub fn add(&mut self, other: &Self) {
                $( self.$name += other.$name; )*
            }
        }
    };
}

counters! {
    /// Connection attempts started (TCP connect submitted).
    attempts,
    /// WebSocket sessions opened (valid 101 received).
    established,
    /// Attempts that never reached an open WebSocket.
    connect_failed,
    /// Open sessions lost to an error (reset, EOF without close frame, protocol violation).
    sessions_dropped,
    /// Open sessions the server ended with a close frame before we stopped.
    closed_by_server,
    /// Sessions we closed with a completed close handshake.
    closed_clean,
    /// Sessions we closed whose close handshake did not complete (no close reply before EOF,
    /// an error or `--close-wait`).
    closes_incomplete,
    /// Attempts still connecting or upgrading when the run stopped (not failures).
    abandoned,
    /// Reconnect attempts made to hold the target connection count.
    reconnects,
    /// Rate-driven messages sent that an echo answers (publishers' are `fanout_published`).
    msgs_sent,
    /// Echo replies received and matched to a sent message.
    msgs_received,
    /// Sent messages still unanswered when the connection closed.
    msgs_unanswered,
    /// Data messages that were not an echo of ours (server pushes, acks).
    msgs_pushed,
    /// Data messages that arrived after we had started closing.
    msgs_late,
    /// `--send-on-open` messages sent.
    on_open_sent,
    /// Pings sent.
    pings_sent,
    /// Pongs received for our pings.
    pongs_received,
    /// Pongs sent in answer to server pings.
    pongs_sent,
    /// Bytes written to sockets (handshakes and frames).
    bytes_sent,
    /// Bytes read from sockets.
    bytes_received,
    /// Full TLS handshakes completed.
    tls_handshakes_full,
    /// TLS handshakes the server resumed (as rustls reports it).
    tls_handshakes_resumed,
    /// TLS handshakes that took a stored session for their ClientHello (rustls still drops
    /// one that has expired, which then shows as refused).
    tls_resume_attempted,
    /// Offered sessions the server did not accept (a full handshake followed).
    tls_resume_refused,
    /// Full handshakes the server made retry with another key share (HelloRetryRequest).
    tls_hello_retries,
    /// TLS 1.3 session tickets received.
    tls_tickets_received,
    /// Handshake cycles that closed without a TLS 1.3 ticket after waiting for one.
    tls_ticket_waits_expired,
    /// `--mode handshake` cycles completed.
    handshake_cycles,
    /// Sessions ended with RST on purpose (`--mode handshake --upgrade --close rst`).
    closed_rst,
    /// Open sessions a reconnect storm dropped (RST, or closed with a close handshake).
    storm_dropped,
    /// Sessions ended at the end of their `--session-lifetime` (open model).
    sessions_retired,
    /// Expected replies (`--expect`) received in time.
    expects_met,
    /// Messages whose server timestamp was ahead of our clock (no latency recorded).
    latency_clock_skew,
    /// `--on-reconnect` (resume) messages sent by replacement connections.
    resumes_sent,
    /// Application-level heartbeats sent.
    heartbeats_sent,
    /// Application-level heartbeats answered in time.
    heartbeats_answered,
    /// Fan-out: messages publishers sent (not in `msgs_sent`: no echo answers them).
    fanout_published,
    /// Fan-out: messages subscribers received (duplicates not counted).
    fanout_delivered,
    /// Fan-out: deliveries of messages published while the subscriber was subscribed.
    fanout_delivered_owed,
    /// Fan-out: deliveries owed (each message × the sessions subscribed when it was sent),
    /// computed when the run ends.
    fanout_owed,
    /// Fan-out: owed deliveries never received (owed − delivered_owed), at the end.
    fanout_lost,
    /// Fan-out: messages received twice or more (extra copies).
    fanout_duplicates,
    /// Fan-out: messages that arrived after a later one of the same publisher.
    fanout_reordered,
}

/// Everything one shard measured in one interval (or a merge of many).
#[derive(Debug, Clone)]
pub struct ShardStats {
    /// Latency histograms indexed like [`Hist::ALL`].
    pub hists: [Histogram<u64>; 10],
    /// Event counters.
    pub counters: Counters,
    /// Failures by cause (connect and session).
    pub failures: BTreeMap<Failure, u64>,
    /// Close codes received from the server (1005 = close frame without code,
    /// 1006 = connection lost without a close frame).
    pub close_codes: BTreeMap<u16, u64>,
    /// Completed TLS handshakes by negotiated version, cipher suite and group.
    pub tls_params: BTreeMap<TlsParam, u64>,
    /// Fan-out publish log, subscriber sessions and per-message delivery times.
    pub fanout: fanout::FanoutStats,
}

/// One negotiated TLS parameter (IANA numbers), for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsParam {
    /// Protocol version.
    Version(u16),
    /// Cipher suite.
    Cipher(u16),
    /// Key-exchange group (0: resumed without one).
    Group(u16),
}

impl Default for ShardStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ShardStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self {
            hists: std::array::from_fn(|_| new_histogram()),
            counters: Counters::default(),
            failures: BTreeMap::new(),
            close_codes: BTreeMap::new(),
            tls_params: BTreeMap::new(),
            fanout: fanout::FanoutStats::default(),
        }
    }

    /// Counts what one completed handshake negotiated.
    pub fn tls_negotiated(&mut self, n: Negotiated) {
        for p in [
            TlsParam::Version(n.version),
            TlsParam::Cipher(n.cipher),
            TlsParam::Group(n.group),
        ] {
            *self.tls_params.entry(p).or_insert(0) += 1;
        }
    }

    /// Records a latency in µs (saturating at [`HIST_MAX_US`]).
    pub fn record(&mut self, h: Hist, us: u64) {
        self.hists[h as usize].saturating_record(us.clamp(1, HIST_MAX_US));
    }

    /// The histogram for `h`.
    pub fn hist(&self, h: Hist) -> &Histogram<u64> {
        &self.hists[h as usize]
    }

    /// Counts one failure.
    pub fn fail(&mut self, f: Failure) {
        *self.failures.entry(f).or_insert(0) += 1;
    }

    /// Counts one received close code.
    pub fn close_code(&mut self, code: u16) {
        *self.close_codes.entry(code).or_insert(0) += 1;
    }

    /// Total failures of all causes.
    pub fn failure_total(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Self) {
        self.add_measures(other);
        if !other.fanout.is_empty() {
            self.fanout.add(&other.fanout);
        }
    }

    /// Adds `other`'s histograms, counters and maps into `self`, but not its fan-out log
    /// (which only the end of the run needs, and which grows with the run).
    pub fn add_measures(&mut self, other: &Self) {
        for (a, b) in self.hists.iter_mut().zip(&other.hists) {
            // Same bounds everywhere, so `add` cannot fail; saturate defensively anyway.
            if a.add(b).is_err() {
                for v in b.iter_recorded() {
                    a.saturating_record_n(
                        v.value_iterated_to().min(HIST_MAX_US),
                        v.count_at_value(),
                    );
                }
            }
        }
        self.counters.add(&other.counters);
        for (k, v) in &other.failures {
            *self.failures.entry(*k).or_insert(0) += v;
        }
        for (k, v) in &other.close_codes {
            *self.close_codes.entry(*k).or_insert(0) += v;
        }
        for (k, v) in &other.tls_params {
            *self.tls_params.entry(*k).or_insert(0) += v;
        }
    }

    /// Moves the gathered interval out, leaving `self` empty but keeping its allocations.
    pub fn take_interval(&mut self) -> Self {
        let fanout = self.fanout.take();
        let mut out = self.clone();
        out.fanout = fanout;
        self.reset();
        out
    }

    /// Empties `self`, keeping its allocations.
    pub fn reset(&mut self) {
        self.fanout.take();
        for h in &mut self.hists {
            h.reset();
        }
        self.counters = Counters::default();
        self.failures.clear();
        self.close_codes.clear();
        self.tls_params.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything_exactly() {
        let mut a = ShardStats::new();
        let mut b = ShardStats::new();
        a.record(Hist::WsMsgRtt, 100);
        b.record(Hist::WsMsgRtt, 300);
        b.record(Hist::WsMsgRtt, u64::MAX);
        a.counters.msgs_sent = 2;
        b.counters.msgs_sent = 3;
        a.fail(Failure::Refused);
        b.fail(Failure::Refused);
        b.close_code(1000);
        a.add(&b);
        assert_eq!(a.hist(Hist::WsMsgRtt).len(), 3);
        assert_eq!(
            a.hist(Hist::WsMsgRtt).max(),
            a.hist(Hist::WsMsgRtt).highest_equivalent(HIST_MAX_US)
        );
        assert_eq!(a.counters.msgs_sent, 5);
        assert_eq!(a.failures[&Failure::Refused], 2);
        assert_eq!(a.close_codes[&1000], 1);
        let taken = a.take_interval();
        assert_eq!(taken.counters.msgs_sent, 5);
        assert_eq!(a.counters.msgs_sent, 0);
        assert_eq!(a.hist(Hist::WsMsgRtt).len(), 0);
    }
}
