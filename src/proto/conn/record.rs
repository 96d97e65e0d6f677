//! What a connection measures, and the interface it records through. A connection counts
//! events in [`Counters`], times phases and messages into the [`Hist`] histograms, and reports
//! failures, close codes, negotiated TLS parameters and fan-out traffic, all through a
//! [`Recorder`] the driver hands it in [`super::Ctx`]. The protocol core defines this interface
//! and the metrics layer implements it (`metrics::ShardStats`), so the dependency runs one way.
//!
//! Every call is on the hot path: implementations must not allocate in the steady state, and
//! the connection's methods are generic over the recorder, so each call compiles to a direct,
//! inlinable one.

use super::Failure;
use crate::proto::tls::Negotiated;

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
    /// The application protocol's handshake (`--protocol`): 101 → namespace connected,
    /// CONNECTED, connection_ack.
    AppConnect,
    /// A message → its acknowledgement (`--ack`: a Socket.IO ack, a STOMP receipt).
    AppAck,
}

impl Hist {
    /// All histograms in report order.
    pub const ALL: [Self; 12] = [
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
        Self::AppConnect,
        Self::AppAck,
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
            Self::AppConnect => "app_connect",
            Self::AppAck => "app_ack",
        }
    }
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

            /// The counter named `name`, to set (a result document read back); `None` for
            /// a name this version does not count.
            pub fn by_name_mut(&mut self, name: &str) -> Option<&mut u64> {
                match name {
                    $( stringify!($name) => Some(&mut self.$name), )*
                    _ => None,
                }
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
    /// Attempts still connecting or upgrading when the run stopped.
    abandoned,
    /// Abandoned attempts the server had accepted over TCP (their TLS handshake or upgrade was
    /// still unanswered).
    abandoned_accepted,
    /// Abandoned attempts cut short: they had waited half their `--connect-timeout` (at most
    /// 1 s) or longer, so the end of the run, not churn, ended them (exit 3).
    abandoned_stalled,
    /// Reconnect attempts made to hold the target connection count.
    reconnects,
    /// Rate-driven messages sent that an echo answers (publishers' are `fanout_published`).
    msgs_sent,
    /// Echo replies received and matched to a sent message.
    msgs_received,
    /// Sent messages still unanswered when the connection closed.
    msgs_unanswered,
    /// Rate-driven messages planned but not sent because of the send backlog: due while the
    /// socket was still writing earlier bytes, and late by more than one interval by the time
    /// it took more (or still owed when sending ended). Their slots count towards
    /// `--message-count`; the schedule keeps its grid.
    msgs_unsent,
    /// Data messages that were not an echo of ours (server pushes, acks).
    msgs_pushed,
    /// Data messages that arrived after we had started closing.
    msgs_late,
    /// `--send-on-open` messages sent.
    on_open_sent,
    /// WebSocket pings sent (`--ping-interval`); their pongs time `ws_ping`.
    pings_sent,
    /// Pings due while the previous one was still unwritten (send backlog) or unanswered:
    /// not sent, the schedule kept.
    pings_skipped,
    /// Pongs received for our pings.
    pongs_received,
    /// Pongs sent in answer to server pings.
    pongs_sent,
    /// Server pings left unanswered on purpose (`--no-pong`, `--no-pong-after`).
    pings_unanswered,
    /// Sessions that stopped reading their socket on purpose (`--stop-reading-after`).
    reads_stopped,
    /// Bytes written to sockets (handshakes and frames).
    bytes_sent,
    /// Bytes read from sockets.
    bytes_received,
    /// permessage-deflate: compressed messages received.
    deflate_msgs_received,
    /// permessage-deflate: compressed payload bytes received (frame payloads, as on the wire).
    deflate_wire_received,
    /// permessage-deflate: what those inflated to (the messages' own bytes).
    deflate_payload_received,
    /// permessage-deflate: payload bytes of the messages we compressed and sent.
    deflate_payload_sent,
    /// permessage-deflate: what they compressed to (frame payloads on the wire).
    deflate_wire_sent,
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
    /// Heartbeats due while the previous one was still unwritten (send backlog) or
    /// unanswered: not sent, the schedule kept (as `pings_skipped`).
    heartbeats_skipped,
    /// Fan-out: messages publishers sent (not in `msgs_sent`: no echo answers them).
    fanout_published,
    /// Fan-out: messages subscribers received (duplicates not counted).
    fanout_delivered,
    /// Fan-out: deliveries of messages the run's publishers sent while the subscriber was
    /// subscribed (settled at the end: until then, by any publisher).
    fanout_delivered_owed,
    /// Fan-out: deliveries in the subscribed window whose `pub` is none of the run's
    /// publishers (another client's, or made up): not owed, not in `fanout_delivered_owed`;
    /// computed when the run ends.
    fanout_foreign,
    /// Fan-out: deliveries of publishers beyond the 4,096 tracked per subscriber connection:
    /// not checked, timed or counted as delivered.
    fanout_untracked,
    /// Fan-out: deliveries owed (each message × the sessions subscribed when it was sent),
    /// computed when the run ends.
    fanout_owed,
    /// Fan-out: owed deliveries never received (owed − delivered_owed), at the end.
    fanout_lost,
    /// Fan-out: messages received twice or more (extra copies).
    fanout_duplicates,
    /// Fan-out: messages that arrived after a later one of the same publisher.
    fanout_reordered,
    /// Named requests sent (`[[scenario.message]]`), whatever their reply rule.
    requests_sent,
    /// Replies received and matched to a named request.
    replies_received,
    /// Named requests whose reply never came (timed out, or still awaited at the close).
    replies_unanswered,
    /// Named requests planned but not sent because of the send backlog, as `msgs_unsent`:
    /// due while the socket was still writing earlier bytes and late by more than their
    /// interval when it took more (or still owed when sending ended). Never sent, so neither
    /// answered nor unanswered; their slots count towards the request's count.
    requests_unsent,
    /// Messages that passed a check.
    checks_passed,
    /// Messages that failed a check.
    checks_failed,
    /// Stream messages with a sequence number (`stream.seq`).
    stream_msgs,
    /// Gaps in a stream's sequence: a message came after a missing one.
    stream_gaps,
    /// Sequence numbers jumped over by the gaps.
    stream_skipped,
    /// Stream messages that arrived after a later one of the same stream.
    stream_late,
    /// Late stream messages that had been jumped over (lost = skipped - filled).
    stream_filled,
    /// Stream messages received twice or more (extra copies).
    stream_duplicates,
    /// Stream messages of keys beyond the ones tracked per connection (not checked).
    stream_keys_untracked,
    /// `--protocol`: the server's heartbeats and pings received (Engine.IO pings, STOMP
    /// heart-beats, GraphQL pings).
    app_heartbeats_received,
    /// `--protocol`: heartbeats and pongs we sent (Engine.IO pongs, STOMP heart-beats,
    /// GraphQL pongs).
    app_heartbeats_sent,
    /// `--ack`: acknowledgements asked for (Socket.IO ack ids, STOMP receipts).
    app_acks_requested,
    /// `--ack`: acknowledgements received (their time is `app_ack`).
    app_acks_received,
    /// `--ack`: acknowledgements never received (still awaited at the close, or beyond the
    /// 1,024 awaited per connection).
    app_acks_unanswered,
    /// `--protocol`: received messages the protocol layer had no use for (Engine.IO noop,
    /// other namespaces, binary attachments, unknown acks).
    app_ignored,
    /// GraphQL `next` messages received.
    graphql_next,
    /// GraphQL `error` messages received.
    graphql_errors,
    /// GraphQL `complete` messages received.
    graphql_complete,
}

/// Where a connection's measurements go. One per shard (or per test), never shared.
///
/// `metrics::ShardStats` is the implementation a run uses; a test can count what it needs.
pub trait Recorder {
    /// The event counters, to add to.
    fn counters(&mut self) -> &mut Counters;
    /// Records a latency of `us` microseconds into `hist`.
    fn record(&mut self, hist: Hist, us: u64);
    /// Counts one failure of cause `failure`.
    fn fail(&mut self, failure: Failure);
    /// Counts one close code received from the server (1005: a close frame without a code,
    /// 1006: the session was lost without one).
    fn close_code(&mut self, code: u16);
    /// Counts what one completed TLS handshake negotiated.
    fn tls_negotiated(&mut self, negotiated: &Negotiated);
    /// Fan-out: a publisher sent message `seq` to `channel` at `sent_unix_us`.
    fn published(&mut self, channel: u32, publisher: u64, seq: u64, sent_unix_us: u64);
    /// Fan-out: a subscriber session of `channel` was subscribed from `from_unix_us` until
    /// `to_unix_us`.
    fn subscribed(&mut self, channel: u32, from_unix_us: u64, to_unix_us: u64);
    /// Fan-out: an owed delivery of `(publisher, seq)` arrived `latency_us` after it was sent.
    fn delivered(&mut self, publisher: u64, seq: u64, latency_us: u64);
    /// Named request `req` (its index in `ConnConfig::requests`) was sent.
    fn request_sent(&mut self, req: u16);
    /// Request `req` was answered `us` after its intended send time.
    fn request_answered(&mut self, req: u16, us: u64);
    /// `n` sends of request `req` will never be answered.
    fn request_unanswered(&mut self, req: u16, n: u64);
    /// `n` sends of request `req` were planned but not sent (the send backlog).
    fn request_unsent(&mut self, req: u16, n: u64);
    /// Check `check` (its index in `ConnConfig::checks`) passed or failed on one message.
    fn check(&mut self, check: u16, pass: bool);
    /// `--protocol`: the server's error text (a STOMP ERROR's message, a Socket.IO
    /// connect_error's, a GraphQL error's), counted by text. Ignored unless implemented.
    fn app_error(&mut self, _text: &[u8]) {}
}
