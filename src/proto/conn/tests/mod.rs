//! The connection state machine on a fake clock, against a scripted server.

use super::*;
use crate::metrics::ShardStats;
use crate::proto::inspect::ExpectPattern;
use crate::proto::template::Template;
use crate::proto::ws::frame::Violation;
use crate::proto::ws::handshake::{RequestTemplate, UpgradeFailure};
use std::sync::Arc;

mod app;
mod close;
mod deflate;
mod rules;

const MS: Micros = 1000;

fn cfg() -> ConnConfig {
    ConnConfig {
        template: RequestTemplate::new("127.0.0.1:9", "/ws", &[], &[]),
        connect_timeout: 1000 * MS,
        on_open: vec![Message {
            opcode: OpCode::Text,
            payload: b"{\"type\":\"subscribe\"}".to_vec().into(),
            template: None,
        }],
        message: Some(Message {
            opcode: OpCode::Text,
            payload: b"hello".to_vec().into(),
            template: None,
        }),
        message_interval: 100 * MS,
        close_wait: 500 * MS,
        timer_resolution: 1,
        ..Default::default()
    }
}

struct Harness {
    cfg: ConnConfig,
    stats: ShardStats,
    rng: Rng,
    /// The shard's TLS client (wss://) and wall clock at its epoch, as a shard lends them.
    tls: Option<TlsClient>,
    epoch_unix_us: u64,
}

impl Harness {
    fn new(cfg: ConnConfig) -> Self {
        Self {
            cfg,
            stats: ShardStats::new(),
            rng: Rng::new(7),
            tls: None,
            epoch_unix_us: 0,
        }
    }
    fn ctx(&mut self) -> Ctx<'_, ShardStats> {
        Ctx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            rng: &mut self.rng,
            tls: self.tls.as_ref(),
            epoch_unix_us: self.epoch_unix_us,
            token: None,
        }
    }
    fn tx(&mut self, c: &mut Conn, now: Micros) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ctx = self.ctx();
        if c.poll_transmit(&mut ctx, now, &mut out) > 0 {
            // The socket takes it all at once.
            c.handle_sent(now);
        }
        out
    }
    /// A connection that is open at `now`, with its on-open message already taken.
    fn open(&mut self, now: Micros) -> Conn {
        let mut c = Conn::new(&mut self.ctx(), now);
        c.handle_connected(&mut self.ctx(), now + MS);
        let req = self.tx(&mut c, now + MS);
        let resp = response_for(&req);
        c.handle_recv(&mut self.ctx(), now + 2 * MS, &resp);
        assert_eq!(c.phase(), Phase::Open);
        let first = client_frames(&self.tx(&mut c, now + 2 * MS));
        assert_eq!(
            first,
            vec![(OpCode::Text, b"{\"type\":\"subscribe\"}".to_vec())]
        );
        c
    }
}

/// The 101 a correct server sends for `request`.
fn response_for(request: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(request).unwrap();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        tungstenite::handshake::derive_accept_key(key.as_bytes())
    )
    .into_bytes()
}

fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut v = vec![b0, payload.len() as u8];
    v.extend_from_slice(payload);
    v
}

/// Decodes masked client frames (opcode, unmasked payload).
fn client_frames(mut wire: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        let mut cur = std::io::Cursor::new(wire);
        let (h, len) = tungstenite::protocol::frame::FrameHeader::parse(&mut cur)
            .unwrap()
            .unwrap();
        let hl = cur.position() as usize;
        let mask = h.mask.expect("client frames are masked");
        let mut p = wire[hl..hl + len as usize].to_vec();
        crate::proto::ws::frame::apply_mask(&mut p, mask, 0);
        let op = match u8::from(h.opcode) {
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            o => panic!("opcode {o}"),
        };
        out.push((op, p));
        wire = &wire[hl + len as usize..];
    }
    out
}

#[test]
fn full_session_with_echo_matching_and_graceful_close() {
    let mut h = Harness::new(cfg());
    let mut c = h.open(0);
    assert_eq!(h.stats.counters.established, 1);
    assert_eq!(h.stats.hist(Hist::TcpConnect).len(), 1);
    assert_eq!(
        h.stats.hist(Hist::WsConnecting).max(),
        h.stats.hist(Hist::WsConnecting).highest_equivalent(2 * MS)
    );
    // Run 1 s: every message due is sent and echoed 3 ms later.
    let mut now = 2 * MS;
    let mut echoes = 0;
    while now < 1000 * MS {
        let t = c.poll_timeout(&h.cfg).unwrap();
        now = t;
        c.handle_timer(&mut h.ctx(), now);
        let frames = client_frames(&h.tx(&mut c, now));
        for (op, p) in frames {
            assert_eq!((op, &p[..]), (OpCode::Text, &b"hello"[..]));
            c.handle_recv(&mut h.ctx(), now + 3 * MS, &server_frame(0x81, &p));
            echoes += 1;
        }
    }
    assert!(echoes >= 9, "{echoes}");
    assert_eq!(h.stats.counters.msgs_sent, echoes);
    assert_eq!(h.stats.counters.msgs_received, echoes);
    let rtt = h.stats.hist(Hist::WsMsgRtt);
    assert_eq!(
        (rtt.len(), rtt.min(), rtt.max()),
        (echoes, 3000, rtt.highest_equivalent(3000))
    );
    // A pushed message is not an echo.
    c.handle_recv(
        &mut h.ctx(),
        now,
        &server_frame(0x81, b"{\"type\":\"event\"}"),
    );
    assert_eq!(h.stats.counters.msgs_pushed, 1);
    // Stop with nothing outstanding: close 1000 right away, then the server's close and FIN.
    c.stop(&mut h.ctx(), now, now + 2000 * MS);
    assert_eq!(
        client_frames(&h.tx(&mut c, now)),
        vec![(OpCode::Close, vec![0x03, 0xE8])]
    );
    assert_eq!(c.phase(), Phase::Closing);
    c.handle_recv(&mut h.ctx(), now + MS, &server_frame(0x88, &[0x03, 0xE8]));
    c.handle_eof(&mut h.ctx(), now + 2 * MS);
    assert!(c.is_done());
    assert_eq!(c.outcome(), Some(Outcome::Stopped));
    assert_eq!(h.stats.counters.closed_clean, 1);
    assert_eq!(h.stats.close_codes.get(&1000), Some(&1));
    assert_eq!(h.stats.failure_total(), 0);
}

#[test]
fn latency_counts_from_intended_send_time_when_the_loop_stalls() {
    let mut h = Harness::new(cfg());
    let mut c = h.open(0);
    let first = c.poll_timeout(&h.cfg).unwrap();
    // The loop wakes 450 ms late: five messages were due; each carries its own intended time.
    let late = first + 450 * MS;
    c.handle_timer(&mut h.ctx(), late);
    let frames = client_frames(&h.tx(&mut c, late));
    assert_eq!(frames.len(), 5);
    let mut echo = Vec::new();
    for (_, p) in &frames {
        echo.extend(server_frame(0x81, p));
    }
    c.handle_recv(&mut h.ctx(), late, &echo);
    let rtt = h.stats.hist(Hist::WsMsgRtt);
    assert_eq!(rtt.len(), 5);
    assert_eq!(rtt.max(), rtt.highest_equivalent(450 * MS));
    assert_eq!(rtt.min(), rtt.lowest_equivalent(50 * MS));
}

#[test]
fn drain_counts_unanswered_so_sent_equals_received_plus_unanswered() {
    let mut h = Harness::new(cfg());
    let mut c = h.open(0);
    let t = c.poll_timeout(&h.cfg).unwrap();
    c.handle_timer(&mut h.ctx(), t + 250 * MS);
    let frames = client_frames(&h.tx(&mut c, t + 250 * MS));
    assert_eq!(frames.len(), 3);
    // One echo comes back, then we stop; the drain deadline passes with two outstanding.
    c.handle_recv(&mut h.ctx(), t + 251 * MS, &server_frame(0x81, b"hello"));
    let now = t + 260 * MS;
    c.stop(&mut h.ctx(), now, now + 100 * MS);
    assert_eq!(c.phase(), Phase::Open, "waits for replies in flight");
    assert!(
        h.tx(&mut c, now).is_empty(),
        "no new messages while draining"
    );
    assert_eq!(c.poll_timeout(&h.cfg), Some(now + 100 * MS));
    c.handle_timer(&mut h.ctx(), now + 100 * MS);
    assert_eq!(c.phase(), Phase::Closing);
    let s = &h.stats.counters;
    assert_eq!((s.msgs_sent, s.msgs_received, s.msgs_unanswered), (3, 1, 2));
    // No close reply: the close wait expires and the connection is done.
    let _ = h.tx(&mut c, now + 100 * MS);
    c.handle_timer(&mut h.ctx(), now + 600 * MS);
    assert!(c.is_done());
    assert_eq!(h.stats.counters.closes_incomplete, 1);
}

#[test]
fn hurry_cuts_a_long_drain_and_a_long_close_wait() {
    let mut h = Harness::new(ConnConfig {
        close_wait: 10_000 * MS,
        ..cfg()
    });
    let mut c = h.open(0);
    let t = c.poll_timeout(&h.cfg).unwrap();
    c.handle_timer(&mut h.ctx(), t);
    assert_eq!(client_frames(&h.tx(&mut c, t)).len(), 1);
    // A 60 s drain with a reply outstanding; a signal 1 s into it allows 500 ms more.
    c.stop(&mut h.ctx(), t, t + 60_000 * MS);
    assert_eq!(c.poll_timeout(&h.cfg), Some(t + 60_000 * MS));
    let now = t + 1_000 * MS;
    c.hurry(&mut h.ctx(), now, now + 500 * MS);
    assert_eq!(c.poll_timeout(&h.cfg), Some(now + 500 * MS));
    // A later, longer cap does not lengthen it.
    c.hurry(&mut h.ctx(), now, now + 900 * MS);
    assert_eq!(c.poll_timeout(&h.cfg), Some(now + 500 * MS));
    c.handle_timer(&mut h.ctx(), now + 500 * MS);
    assert_eq!(c.phase(), Phase::Closing);
    assert_eq!(c.poll_timeout(&h.cfg), Some(now + 10_500 * MS));
    // In the 10 s close wait, a shortened close wait from now.
    let now = now + 600 * MS;
    h.cfg.close_wait = 300 * MS;
    c.hurry(&mut h.ctx(), now, now + 500 * MS);
    assert_eq!(c.poll_timeout(&h.cfg), Some(now + 300 * MS));
    c.handle_timer(&mut h.ctx(), now + 300 * MS);
    assert!(c.is_done());
    assert_eq!(h.stats.counters.msgs_unanswered, 1);
    assert_eq!(h.stats.counters.closes_incomplete, 1);
}

#[test]
fn drain_ends_early_when_the_last_echo_arrives() {
    let mut h = Harness::new(cfg());
    let mut c = h.open(0);
    let t = c.poll_timeout(&h.cfg).unwrap();
    c.handle_timer(&mut h.ctx(), t);
    assert_eq!(client_frames(&h.tx(&mut c, t)).len(), 1);
    c.stop(&mut h.ctx(), t, t + 2000 * MS);
    c.handle_recv(&mut h.ctx(), t + MS, &server_frame(0x81, b"hello"));
    assert_eq!(c.phase(), Phase::Closing);
    assert_eq!(
        client_frames(&h.tx(&mut c, t + MS)),
        vec![(OpCode::Close, vec![0x03, 0xE8])]
    );
    assert_eq!(h.stats.counters.msgs_unanswered, 0);
}

#[test]
fn upgrade_response_split_at_every_byte_with_frame_behind_it() {
    let mut h = Harness::new(cfg());
    let mut probe = Conn::new(&mut h.ctx(), 0);
    probe.handle_connected(&mut h.ctx(), 0);
    let req = h.tx(&mut probe, 0);
    let key = std::str::from_utf8(&req)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap()
        .to_owned();
    for split in 1..150 {
        // Same PRNG state for each run → same key.
        h.rng = Rng::new(7);
        let mut c = Conn::new(&mut h.ctx(), 0);
        c.handle_connected(&mut h.ctx(), 0);
        let req = h.tx(&mut c, 0);
        assert!(std::str::from_utf8(&req).unwrap().contains(&key));
        let mut wire = response_for(&req);
        wire.extend(server_frame(0x89, b"pi"));
        let split = split.min(wire.len() - 1);
        c.handle_recv(&mut h.ctx(), MS, &wire[..split]);
        c.handle_recv(&mut h.ctx(), MS, &wire[split..]);
        assert_eq!(c.phase(), Phase::Open, "split {split}");
        let frames = client_frames(&h.tx(&mut c, MS));
        assert!(
            frames.contains(&(OpCode::Pong, b"pi".to_vec())),
            "split {split}: {frames:?}"
        );
    }
}

#[test]
fn ping_interval_measures_pong_rtt() {
    let mut c0 = cfg();
    c0.ping_interval = 500 * MS;
    c0.message = None;
    let mut h = Harness::new(c0);
    let mut c = h.open(0);
    let t = c.poll_timeout(&h.cfg).unwrap();
    assert_eq!(t, 502 * MS);
    c.handle_timer(&mut h.ctx(), t);
    let frames = client_frames(&h.tx(&mut c, t));
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, OpCode::Ping);
    c.handle_recv(&mut h.ctx(), t + 7 * MS, &server_frame(0x8A, &frames[0].1));
    let p = h.stats.hist(Hist::WsPing);
    assert_eq!((p.len(), p.max()), (1, p.highest_equivalent(7000)));
    assert_eq!(h.stats.counters.pongs_received, 1);
}

#[test]
fn pings_whose_timer_could_not_fire_are_counted_skipped() {
    // The driver arms no timer while a send is in flight, so a ping timer can fire intervals
    // late: every slot it missed is skipped and counted, and the grid is kept.
    let mut c0 = cfg();
    c0.ping_interval = 100 * MS;
    c0.message = None;
    let mut h = Harness::new(c0);
    let mut c = h.open(0);
    let t1 = c.poll_timeout(&h.cfg).unwrap();
    c.handle_timer(&mut h.ctx(), t1);
    let mut out = Vec::new();
    c.poll_transmit(&mut h.ctx(), t1, &mut out);
    assert_eq!(h.stats.counters.pings_sent, 1);
    // 350 ms late: the slots at t1 + 100, 200 and 300 ms were due and never sent.
    c.handle_timer(&mut h.ctx(), t1 + 350 * MS);
    assert_eq!(h.stats.counters.pings_skipped, 3);
    assert_eq!(c.poll_timeout(&h.cfg), Some(t1 + 400 * MS));
    // The run stops at t1 + 650 ms, the timer not having fired since: the slots at 400, 500
    // and 600 ms were never sent either.
    c.stop(&mut h.ctx(), t1 + 650 * MS, t1 + 650 * MS);
    assert_eq!(h.stats.counters.pings_skipped, 6);
    assert_eq!(h.stats.counters.pings_sent, 1);
}

#[test]
fn a_backlogged_socket_skips_messages_late_by_more_than_an_interval_and_counts_them() {
    let mut c0 = cfg();
    c0.ping_interval = 250 * MS;
    let mut h = Harness::new(c0);
    let mut c = h.open(0);
    // Output without the write completing: the driver keeps it in flight.
    let stuck = |h: &mut Harness, c: &mut Conn, now| {
        let mut out = Vec::new();
        c.poll_transmit(&mut h.ctx(), now, &mut out);
        client_frames(&out)
    };
    let t1 = c.poll_timeout(&h.cfg).unwrap();
    c.handle_timer(&mut h.ctx(), t1);
    assert_eq!(stuck(&mut h, &mut c, t1).len(), 1);
    // The socket takes nothing for 1 s: timers fire, nothing can be written.
    let mut now = t1;
    for _ in 0..100 {
        now += 10 * MS;
        c.handle_timer(&mut h.ctx(), now);
    }
    // Pings due meanwhile: the first waits to be written, the next three are skipped.
    assert_eq!(h.stats.counters.pings_skipped, 3);
    c.handle_sent(now);
    // Ten messages fell due (t1 + 100 .. t1 + 1000 ms): the eight late by more than one
    // interval are unsent; the last two go out late, with the waiting ping.
    let frames = stuck(&mut h, &mut c, now);
    let kinds: Vec<OpCode> = frames.iter().map(|f| f.0).collect();
    assert_eq!(kinds, [OpCode::Ping, OpCode::Text, OpCode::Text]);
    let k = &h.stats.counters;
    assert_eq!((k.msgs_sent, k.msgs_unsent, k.pings_sent), (3, 8, 1));
    // The late ones carry their intended times: 100 ms and 0 ms late.
    for _ in 0..3 {
        c.handle_recv(&mut h.ctx(), now, &server_frame(0x81, b"hello"));
    }
    let rtt = h.stats.hist(Hist::WsMsgRtt);
    assert_eq!(rtt.max(), rtt.highest_equivalent(1000 * MS));
    // The schedule kept its grid: the next message is due one interval on.
    assert_eq!(c.next_msg_at, t1 + 1100 * MS);
    // Stuck again, and the run stops 450 ms later: the four due meanwhile were never sent.
    let t2 = t1 + 1100 * MS;
    c.handle_timer(&mut h.ctx(), t2);
    assert!(!stuck(&mut h, &mut c, t2).is_empty());
    c.handle_timer(&mut h.ctx(), t2 + 450 * MS);
    c.stop(&mut h.ctx(), t2 + 450 * MS, t2 + 2000 * MS);
    let k = &h.stats.counters;
    assert_eq!((k.msgs_sent, k.msgs_unsent), (4, 12));
    // Sent = received + unanswered still holds; unsent ones were never sent.
    c.abort(&mut h.ctx(), t2 + 500 * MS);
    let k = &h.stats.counters;
    assert_eq!(k.msgs_sent, k.msgs_received + k.msgs_unanswered);
    assert_eq!(k.msgs_unsent, 12, "counted once");
}

#[test]
fn server_close_is_echoed_and_counted() {
    let mut h = Harness::new(cfg());
    let mut c = h.open(0);
    let mut payload = 1001u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"going away");
    c.handle_recv(&mut h.ctx(), 5 * MS, &server_frame(0x88, &payload));
    assert_eq!(c.phase(), Phase::Closing);
    assert_eq!(
        client_frames(&h.tx(&mut c, 5 * MS)),
        vec![(OpCode::Close, vec![0x03, 0xE9])]
    );
    c.handle_eof(&mut h.ctx(), 6 * MS);
    assert_eq!(c.outcome(), Some(Outcome::ServerClosed(1001)));
    assert_eq!(h.stats.counters.closed_by_server, 1);
    assert_eq!(h.stats.close_codes.get(&1001), Some(&1));
}

#[test]
fn each_violation_fails_the_session_with_its_kind() {
    let mut bad_utf8 = vec![0x81, 2, 0xC3, 0x28];
    bad_utf8.truncate(4);
    let cases: Vec<(Vec<u8>, Violation)> = vec![
        (vec![0x81, 0x81, 1, 2, 3, 4, 0], Violation::MaskedFrame),
        (vec![0x80, 0], Violation::UnexpectedContinuation),
        (
            [server_frame(0x01, b"a"), server_frame(0x81, b"b")].concat(),
            Violation::ExpectedContinuation,
        ),
        (server_frame(0x88, &[3]), Violation::BadCloseFrame),
        (
            server_frame(0x88, &1005u16.to_be_bytes()),
            Violation::InvalidCloseCode,
        ),
        (bad_utf8, Violation::InvalidUtf8),
        (
            [server_frame(0x01, &[0xE2, 0x82]), server_frame(0x80, b"")].concat(),
            Violation::InvalidUtf8,
        ),
    ];
    for (wire, v) in cases {
        let mut h = Harness::new(cfg());
        let mut c = h.open(0);
        c.handle_recv(&mut h.ctx(), 5 * MS, &wire);
        assert!(c.is_done(), "{v:?}");
        assert_eq!(c.outcome(), Some(Outcome::Failed(Failure::Protocol(v))));
        assert_eq!(h.stats.failures.get(&Failure::Protocol(v)), Some(&1));
        assert_eq!(h.stats.counters.sessions_dropped, 1);
    }
}

#[test]
fn setup_failures_are_counted_by_cause() {
    // 503 instead of 101.
    let mut h = Harness::new(cfg());
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_connected(&mut h.ctx(), MS);
    let _ = h.tx(&mut c, MS);
    c.handle_recv(
        &mut h.ctx(),
        2 * MS,
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        c.outcome(),
        Some(Outcome::Failed(Failure::Upgrade(UpgradeFailure::Status(
            503
        ))))
    );
    // Server closes during the handshake.
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_connected(&mut h.ctx(), MS);
    c.handle_recv(&mut h.ctx(), 2 * MS, b"HTTP/1.1 101 Swi");
    c.handle_eof(&mut h.ctx(), 3 * MS);
    assert_eq!(
        c.outcome(),
        Some(Outcome::Failed(Failure::ClosedDuringHandshake))
    );
    // Connect and upgrade timeouts share the --connect-timeout budget.
    let mut c = Conn::new(&mut h.ctx(), 0);
    assert_eq!(c.poll_timeout(&h.cfg), Some(1000 * MS));
    c.handle_timer(&mut h.ctx(), 1000 * MS);
    assert_eq!(c.outcome(), Some(Outcome::Failed(Failure::ConnectTimeout)));
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_connected(&mut h.ctx(), 400 * MS);
    c.handle_timer(&mut h.ctx(), 1000 * MS);
    assert_eq!(c.outcome(), Some(Outcome::Failed(Failure::UpgradeTimeout)));
    // Refused, from the backend's errno.
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_error(&mut h.ctx(), MS, Failure::from_errno(libc::ECONNREFUSED));
    assert_eq!(c.outcome(), Some(Outcome::Failed(Failure::Refused)));
    let s = &h.stats.counters;
    assert_eq!((s.attempts, s.connect_failed, s.established), (5, 5, 0));
    assert_eq!(h.stats.failure_total(), 5);
}

#[test]
fn binary_reply_does_not_match_text_message() {
    let mut h = Harness::new(cfg());
    let mut c = h.open(0);
    let t = c.poll_timeout(&h.cfg).unwrap();
    c.handle_timer(&mut h.ctx(), t);
    let _ = h.tx(&mut c, t);
    c.handle_recv(&mut h.ctx(), t + MS, &server_frame(0x82, b"hello"));
    c.handle_recv(&mut h.ctx(), t + MS, &server_frame(0x81, b"hellp"));
    c.handle_recv(&mut h.ctx(), t + MS, &server_frame(0x81, b"hello!"));
    assert_eq!(h.stats.counters.msgs_pushed, 3);
    // Fragmented echo still matches.
    c.handle_recv(
        &mut h.ctx(),
        t + MS,
        &[server_frame(0x01, b"hel"), server_frame(0x80, b"lo")].concat(),
    );
    assert_eq!(h.stats.counters.msgs_received, 1);
}

#[test]
fn sends_are_scheduled_on_the_timer_grid_and_stamped_with_it() {
    let mut c0 = cfg();
    c0.timer_resolution = MS;
    c0.message_interval = 333_333;
    let mut h = Harness::new(c0);
    let mut c = h.open(0);
    let mut stamps = Vec::new();
    for _ in 0..6 {
        let t = c.poll_timeout(&h.cfg).unwrap();
        assert_eq!(t % MS, 0, "wake-ups fall on the 1 ms grid");
        c.handle_timer(&mut h.ctx(), t);
        assert_eq!(client_frames(&h.tx(&mut c, t)).len(), 1);
        c.handle_recv(&mut h.ctx(), t + 250, &server_frame(0x81, b"hello"));
        stamps.push(t);
    }
    // 3 messages per second on average although each step is a whole number of ms.
    let span = stamps[5] - stamps[2];
    assert!((999 * MS..=1001 * MS).contains(&span), "{span}");
    // RTT is measured from the grid time the message was due: exactly the 250 µs echo delay.
    let rtt = h.stats.hist(Hist::WsMsgRtt);
    assert_eq!((rtt.len(), rtt.min(), rtt.max()), (6, 250, 250));
}

#[test]
fn every_opened_session_ends_in_exactly_one_end_counter() {
    // Our close goes out, then the server drops TCP without replying.
    let mut h = Harness::new(cfg());
    let mut c = h.open(0);
    c.stop(&mut h.ctx(), 10 * MS, 10 * MS);
    assert_eq!(
        client_frames(&h.tx(&mut c, 10 * MS)),
        vec![(OpCode::Close, vec![0x03, 0xE8])]
    );
    c.handle_eof(&mut h.ctx(), 11 * MS);
    assert_eq!(c.outcome(), Some(Outcome::Stopped));
    assert!(
        h.tx(&mut c, 11 * MS).is_empty(),
        "nothing is written once done"
    );
    // The server closes, then sends data after its close frame: counted as its violation.
    let mut c2 = h.open(20 * MS);
    let wire = [
        server_frame(0x88, &[0x03, 0xE8]),
        server_frame(0x81, b"late"),
    ]
    .concat();
    c2.handle_recv(&mut h.ctx(), 30 * MS, &wire);
    assert!(c2.is_done());
    assert!(h.tx(&mut c2, 30 * MS).is_empty());
    let s = &h.stats.counters;
    assert_eq!(
        (s.established, s.closes_incomplete, s.closed_by_server),
        (2, 1, 1)
    );
    assert_eq!(
        s.closed_clean + s.closes_incomplete + s.closed_by_server + s.sessions_dropped,
        s.established
    );
    assert_eq!(
        h.stats
            .failures
            .get(&Failure::Protocol(Violation::DataAfterClose)),
        Some(&1)
    );
}

#[test]
fn abort_and_abandon_are_accounted() {
    let mut h = Harness::new(cfg());
    let mut c = h.open(0);
    let t = c.poll_timeout(&h.cfg).unwrap();
    c.handle_timer(&mut h.ctx(), t);
    assert_eq!(client_frames(&h.tx(&mut c, t)).len(), 1);
    // Second Ctrl-C: an open session with an echo outstanding ends at once.
    c.abort(&mut h.ctx(), u64::MAX);
    assert!(c.is_done());
    let mut pending = Conn::new(&mut h.ctx(), 0);
    pending.stop(&mut h.ctx(), MS, 2 * MS);
    assert_eq!(pending.outcome(), Some(Outcome::Stopped));
    let s = &h.stats.counters;
    assert_eq!((s.msgs_sent, s.msgs_received, s.msgs_unanswered), (1, 0, 1));
    assert_eq!((s.closes_incomplete, s.abandoned, s.attempts), (1, 1, 2));
    assert_eq!(
        h.stats.failure_total(),
        0,
        "stopping is not the target's failure"
    );
}

#[test]
fn abandoned_attempts_say_how_far_they_got_and_whether_they_were_cut_short() {
    // connect timeout 1000 ms: cut short after waiting 500 ms.
    let mut h = Harness::new(cfg());
    // Still in TCP connect after 10 ms: end-of-run churn.
    let mut a = Conn::new(&mut h.ctx(), 0);
    a.stop(&mut h.ctx(), 10 * MS, 20 * MS);
    // Accepted, upgrade sent, no answer for 600 ms: cut short.
    let mut b = Conn::new(&mut h.ctx(), 0);
    b.handle_connected(&mut h.ctx(), MS);
    h.tx(&mut b, MS);
    b.stop(&mut h.ctx(), 600 * MS, 700 * MS);
    // A second Ctrl-C abandons the same way.
    let mut d = Conn::new(&mut h.ctx(), 0);
    d.abort(&mut h.ctx(), 900 * MS);
    let s = &h.stats.counters;
    assert_eq!(
        (s.abandoned, s.abandoned_accepted, s.abandoned_stalled),
        (3, 1, 2)
    );
    assert_eq!(h.stats.failure_total(), 0);
}

#[test]
fn only_the_pong_with_our_payload_answers_our_ping() {
    let mut c0 = cfg();
    c0.ping_interval = 100 * MS;
    c0.message = None;
    let mut h = Harness::new(c0);
    let mut c = h.open(0);
    let t = c.poll_timeout(&h.cfg).unwrap();
    c.handle_timer(&mut h.ctx(), t);
    let ping = client_frames(&h.tx(&mut c, t)).remove(0).1;
    c.handle_recv(&mut h.ctx(), t + MS, &server_frame(0x8A, b"heartbeat"));
    assert_eq!(
        h.stats.counters.pongs_received, 0,
        "unsolicited pong ignored"
    );
    c.handle_recv(&mut h.ctx(), t + 2 * MS, &server_frame(0x8A, &ping));
    assert_eq!(h.stats.counters.pongs_received, 1);
    assert_eq!(
        h.stats.hist(Hist::WsPing).max(),
        h.stats.hist(Hist::WsPing).highest_equivalent(2 * MS)
    );
}

#[test]
fn missing_pong_ends_the_session_as_heartbeat_timeout() {
    let mut h = Harness::new(ConnConfig {
        message: None,
        ping_interval: 1000 * MS,
        pong_timeout: 300 * MS,
        ..cfg()
    });
    let mut c = h.open(0);
    let t = c.poll_timeout(&h.cfg).unwrap();
    assert_eq!(t, 1002 * MS);
    c.handle_timer(&mut h.ctx(), t);
    assert_eq!(client_frames(&h.tx(&mut c, t))[0].0, OpCode::Ping);
    // The pong deadline is the next timer; nothing answers.
    assert_eq!(c.poll_timeout(&h.cfg), Some(1302 * MS));
    c.handle_timer(&mut h.ctx(), 1302 * MS);
    assert!(c.is_done());
    assert_eq!(
        c.outcome(),
        Some(Outcome::Failed(Failure::HeartbeatTimeout))
    );
    assert_eq!(h.stats.counters.sessions_dropped, 1);
    assert_eq!(h.stats.failures[&Failure::HeartbeatTimeout], 1);
}

#[test]
fn expected_reply_is_timed_or_counted_as_missing() {
    let expect = ExpectPattern::parse("json:type=subscribed").unwrap();
    let mut h = Harness::new(ConnConfig {
        message: None,
        expect: Some((expect, 50 * MS)),
        ..cfg()
    });
    // Opened at 2 ms; an event first (not it), the ack 10 ms after opening.
    let mut c = h.open(0);
    c.handle_recv(
        &mut h.ctx(),
        5 * MS,
        &server_frame(0x81, br#"{"type":"event"}"#),
    );
    c.handle_recv(
        &mut h.ctx(),
        12 * MS,
        &server_frame(0x81, br#"{"type":"subscribed","channel":"a"}"#),
    );
    let ack = h.stats.hist(Hist::WsSubscribeAck);
    assert_eq!((ack.len(), ack.max()), (1, ack.highest_equivalent(10 * MS)));
    assert_eq!(h.stats.counters.expects_met, 1);
    assert_eq!(c.poll_timeout(&h.cfg), None, "nothing pending any more");
    // Another session never gets its ack: counted at the deadline, the session stays open.
    let mut c = h.open(100 * MS);
    assert_eq!(c.poll_timeout(&h.cfg), Some(152 * MS));
    c.handle_timer(&mut h.ctx(), 152 * MS);
    assert_eq!(c.phase(), Phase::Open);
    assert_eq!(h.stats.failures[&Failure::ExpectTimeout], 1);
    assert_eq!(h.stats.counters.expects_met, 1);
}

#[test]
fn one_way_latency_from_the_server_timestamp() {
    use crate::proto::inspect::{LatencyField, TimeUnit};
    let mut h = Harness {
        epoch_unix_us: 1_700_000_000_000_000,
        ..Harness::new(ConnConfig {
            message: None,
            latency_from: Some(LatencyField::new("server_ts", TimeUnit::Millis)),
            ..cfg()
        })
    };
    let mut c = h.open(0);
    // Sent (server clock) at epoch + 1 ms, received at epoch + 8 ms, split across two reads.
    let frame = server_frame(
        0x81,
        br#"{"type":"quote","server_ts":1700000000001,"px":1}"#,
    );
    c.handle_recv(&mut h.ctx(), 8 * MS, &frame[..20]);
    c.handle_recv(&mut h.ctx(), 8 * MS, &frame[20..]);
    let lat = h.stats.hist(Hist::WsMsgLatency);
    assert_eq!((lat.len(), lat.max()), (1, lat.highest_equivalent(7 * MS)));
    // A timestamp from the future is counted, not recorded as latency.
    let ahead = server_frame(0x81, br#"{"server_ts":1700000009000}"#);
    c.handle_recv(&mut h.ctx(), 9 * MS, &ahead);
    assert_eq!(h.stats.hist(Hist::WsMsgLatency).len(), 1);
    assert_eq!(h.stats.counters.latency_clock_skew, 1);
}

#[test]
fn templated_messages_render_per_send_and_echoes_match_by_hash() {
    let t = Template::parse("m{{conn_id}}-{{seq}}", &NoInputs)
        .unwrap()
        .unwrap();
    let mut h = Harness::new(ConnConfig {
        on_open: Vec::new(),
        message: Some(Message {
            opcode: OpCode::Text,
            payload: Box::new([]),
            template: Some(Arc::new(t)),
        }),
        ..cfg()
    });
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.set_id(7);
    c.handle_connected(&mut h.ctx(), MS);
    let req = h.tx(&mut c, MS);
    c.handle_recv(&mut h.ctx(), 2 * MS, &response_for(&req));
    assert_eq!(c.phase(), Phase::Open);
    // Two sends, each rendered anew.
    let t1 = c.poll_timeout(&h.cfg).unwrap();
    c.handle_timer(&mut h.ctx(), t1 + 100 * MS);
    let frames = client_frames(&h.tx(&mut c, t1 + 100 * MS));
    let payloads: Vec<&[u8]> = frames.iter().map(|(_, p)| p.as_slice()).collect();
    assert_eq!(payloads, [b"m7-1".as_slice(), b"m7-2".as_slice()]);
    // The right echo is matched; an echo of something else is not.
    c.handle_recv(&mut h.ctx(), t1 + 101 * MS, &server_frame(0x81, b"m7-1"));
    c.handle_recv(&mut h.ctx(), t1 + 101 * MS, &server_frame(0x81, b"m7-9"));
    assert_eq!(h.stats.counters.msgs_received, 1);
    assert_eq!(h.stats.counters.msgs_pushed, 1);
    c.handle_recv(&mut h.ctx(), t1 + 102 * MS, &server_frame(0x81, b"m7-2"));
    assert_eq!(h.stats.counters.msgs_received, 2);
}

struct NoInputs;
impl crate::proto::template::Resolve for NoInputs {
    fn env(&self, _: &str) -> Option<String> {
        None
    }
    fn lines(&self, _: &str) -> Result<Vec<String>, String> {
        Err("none".into())
    }
    fn token(&self) -> Option<&str> {
        None
    }
    fn scenario(&self) -> &str {
        "s"
    }
}

fn templated(text: &str) -> Message {
    let t = Template::parse(text, &NoInputs).unwrap().unwrap();
    Message {
        opcode: OpCode::Text,
        payload: Box::new([]),
        template: Some(Arc::new(t)),
    }
}

#[test]
fn subscriber_counts_deliveries_duplicates_and_late_arrivals_per_publisher() {
    let mut h = Harness::new(ConnConfig {
        message: None,
        fanout: Some(Fanout::Subscriber),
        ..cfg()
    });
    let mut c = h.open(0);
    let msg = |p: u64, seq: u64, ts: u64| {
        server_frame(
            0x81,
            format!(r#"{{"pub":{p},"seq":{seq},"ts":{ts}}}"#).as_bytes(),
        )
    };
    // Subscribed from the open (2 ms); publisher 1 sends 1, 2, 4, 3, 2; publisher 2 sends 1.
    for (p, seq) in [(1, 1), (1, 2), (1, 4), (1, 3), (1, 2), (2, 1)] {
        c.handle_recv(&mut h.ctx(), 10 * MS, &msg(p, seq, 5 * MS));
    }
    // One from before the subscription: delivered, but not owed.
    c.handle_recv(&mut h.ctx(), 10 * MS, &msg(2, 2, MS));
    let k = &h.stats.counters;
    assert_eq!(k.fanout_delivered, 6);
    assert_eq!(k.fanout_duplicates, 1);
    assert_eq!(k.fanout_reordered, 1);
    assert_eq!(k.fanout_delivered_owed, 5);
    let lat = h.stats.hist(Hist::WsMsgLatency);
    assert_eq!((lat.len(), lat.max()), (6, lat.highest_equivalent(9 * MS)));
    // The session's window is logged when it ends.
    // Subscribers drain, then close: the subscription ends when the close begins (20 ms).
    c.stop(&mut h.ctx(), 20 * MS, 20 * MS);
    c.handle_timer(&mut h.ctx(), 20 * MS);
    assert_eq!(c.phase(), Phase::Closing);
    // Arriving during the close: one sent before it (owed), one after (not owed).
    c.handle_recv(&mut h.ctx(), 20 * MS + 500, &msg(1, 5, 18 * MS));
    c.handle_recv(&mut h.ctx(), 20 * MS + 600, &msg(1, 6, 25 * MS));
    assert_eq!(h.stats.counters.fanout_delivered, 8);
    assert_eq!(h.stats.counters.fanout_delivered_owed, 6);
    c.abort(&mut h.ctx(), 21 * MS);
    let mut merged = crate::metrics::fanout::FanoutStats::default();
    merged.add(&h.stats.fanout);
    merged.publish(0, 1, 9, 15 * MS);
    merged.publish(0, 1, 10, 30 * MS);
    assert_eq!(
        merged.summarize().unwrap().expected,
        1,
        "owed: sent at 15 ms only"
    );
}

#[test]
fn subscriber_tracks_a_bounded_number_of_publishers_and_counts_the_rest() {
    let mut h = Harness::new(ConnConfig {
        message: None,
        fanout: Some(Fanout::Subscriber),
        ..cfg()
    });
    let mut c = h.open(0);
    // A hostile stream: every delivery from a publisher id never seen before.
    let n = TRACKED_PUBLISHERS as u64 + 5_000;
    let mut wire = Vec::new();
    for p in 0..n {
        wire.extend(server_frame(
            0x81,
            format!(r#"{{"pub":{},"seq":1,"ts":{}}}"#, 1_000_000 + p, 5 * MS).as_bytes(),
        ));
    }
    c.handle_recv(&mut h.ctx(), 10 * MS, &wire);
    // A tracked publisher is still told apart: its duplicate and its next message.
    for seq in [1, 2] {
        let m = format!(r#"{{"pub":1000000,"seq":{seq},"ts":{}}}"#, 6 * MS);
        c.handle_recv(&mut h.ctx(), 11 * MS, &server_frame(0x81, m.as_bytes()));
    }
    let tracks = &c.extras.as_ref().unwrap().tracks;
    assert_eq!(tracks.len(), TRACKED_PUBLISHERS);
    assert!(
        tracks.capacity() < 2 * TRACKED_PUBLISHERS,
        "{}",
        tracks.capacity()
    );
    let k = &h.stats.counters;
    assert_eq!(k.fanout_untracked, 5_000);
    assert_eq!(k.fanout_delivered, TRACKED_PUBLISHERS as u64 + 1);
    assert_eq!(k.fanout_duplicates, 1);
    assert_eq!(k.fanout_delivered_owed, TRACKED_PUBLISHERS as u64 + 1);
}

#[test]
fn publisher_logs_what_it_sends_and_waits_for_no_echo() {
    let mut h = Harness {
        epoch_unix_us: 1_000_000,
        ..Harness::new(ConnConfig {
            on_open: vec![Message::fixed(
                OpCode::Text,
                b"{\"type\":\"subscribe\"}".to_vec().into(),
            )],
            message: Some(templated(
                r#"{"pub":{{conn_id}},"seq":{{seq}},"ts":{{now_us}}}"#,
            )),
            message_count: 3,
            fanout: Some(Fanout::Publisher),
            ..cfg()
        })
    };
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.set_id(4);
    c.handle_connected(&mut h.ctx(), MS);
    let req = h.tx(&mut c, MS);
    c.handle_recv(&mut h.ctx(), 2 * MS, &response_for(&req));
    h.tx(&mut c, 2 * MS);
    let mut sent = Vec::new();
    for step in 1..=10 {
        let now = 2 * MS + step * 100 * MS;
        c.handle_timer(&mut h.ctx(), now);
        sent.extend(client_frames(&h.tx(&mut c, now)));
    }
    // Exactly --message-count messages, then no more timers for sending.
    assert_eq!(sent.len(), 3);
    assert_eq!(h.stats.counters.fanout_published, 3);
    assert!(c.poll_timeout(&h.cfg).is_none());
    let first = String::from_utf8(sent[0].1.clone()).unwrap();
    assert!(first.starts_with(r#"{"pub":4,"seq":1,"ts":1"#), "{first}");
    // Nothing awaits an echo: stopping closes at once, nothing unanswered.
    c.stop(&mut h.ctx(), 2_000 * MS, 3_000 * MS);
    assert_eq!(c.phase(), Phase::Closing);
    assert_eq!(h.stats.counters.msgs_unanswered, 0);
    let s = h.stats.fanout.summarize().unwrap();
    assert_eq!(s.published, 3);
}

#[test]
fn heartbeat_answered_is_timed_and_unanswered_closes() {
    let hb = Heartbeat {
        interval: 100 * MS,
        message: Message::fixed(OpCode::Text, br#"{"type":"ping"}"#.to_vec().into()),
        expect: ExpectPattern::parse("json:type=pong").unwrap(),
        timeout: 50 * MS,
    };
    let mut h = Harness::new(ConnConfig {
        message: None,
        heartbeat: Some(hb),
        ..cfg()
    });
    let mut c = h.open(0);
    assert_eq!(c.poll_timeout(&h.cfg), Some(102 * MS));
    c.handle_timer(&mut h.ctx(), 102 * MS);
    let out = client_frames(&h.tx(&mut c, 102 * MS));
    assert_eq!(out, vec![(OpCode::Text, br#"{"type":"ping"}"#.to_vec())]);
    c.handle_recv(
        &mut h.ctx(),
        110 * MS,
        &server_frame(0x81, br#"{"type":"pong"}"#),
    );
    assert_eq!(h.stats.counters.heartbeats_answered, 1);
    let rtt = h.stats.hist(Hist::WsHeartbeat);
    assert_eq!(rtt.max(), rtt.highest_equivalent(8 * MS));
    // The next one goes unanswered: 50 ms later the session is closed as dead.
    c.handle_timer(&mut h.ctx(), 202 * MS);
    h.tx(&mut c, 202 * MS);
    c.handle_recv(
        &mut h.ctx(),
        210 * MS,
        &server_frame(0x81, br#"{"type":"other"}"#),
    );
    assert_eq!(c.poll_timeout(&h.cfg), Some(252 * MS));
    c.handle_timer(&mut h.ctx(), 252 * MS);
    assert!(c.is_done());
    assert_eq!(h.stats.failures[&Failure::HeartbeatTimeout], 1);
}

#[test]
fn replacement_resumes_from_the_last_sequence_seen() {
    let mut h = Harness::new(ConnConfig {
        message: None,
        on_reconnect: Some(templated(
            r#"{"action":"resume_session","lastSequence":{{last_seq}}}"#,
        )),
        ..cfg()
    });
    // The first session sees seq 5, then 9, then 7.
    let mut first = h.open(0);
    for seq in [5, 9, 7] {
        let m = format!(r#"{{"type":"event","seq":{seq}}}"#);
        first.handle_recv(&mut h.ctx(), 10 * MS, &server_frame(0x81, m.as_bytes()));
    }
    assert_eq!(first.last_seq(), 9);
    // Its replacement sends on_open, then the resume message.
    let mut c = Conn::new(&mut h.ctx(), 20 * MS);
    c.resume_from(first.last_seq());
    c.handle_connected(&mut h.ctx(), 21 * MS);
    let req = h.tx(&mut c, 21 * MS);
    c.handle_recv(&mut h.ctx(), 22 * MS, &response_for(&req));
    let frames = client_frames(&h.tx(&mut c, 22 * MS));
    let texts: Vec<String> = frames
        .iter()
        .map(|(_, p)| String::from_utf8(p.clone()).unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            r#"{"type":"subscribe"}"#,
            r#"{"action":"resume_session","lastSequence":9}"#
        ]
    );
    assert_eq!(h.stats.counters.resumes_sent, 1);
}

#[test]
fn events_report_the_open_then_the_ending_once() {
    let mut h = Harness::new(cfg());
    let mut c = Conn::new(&mut h.ctx(), 0);
    assert_eq!(c.poll_event(), None);
    c.handle_connected(&mut h.ctx(), MS);
    let req = h.tx(&mut c, MS);
    c.handle_recv(&mut h.ctx(), 2 * MS, &response_for(&req));
    assert_eq!(c.poll_event(), Some(Event::SessionOpened));
    assert_eq!(c.poll_event(), None);
    // The server closes; the connection ends with its FIN, not before.
    c.handle_recv(
        &mut h.ctx(),
        3 * MS,
        &server_frame(0x88, &1001u16.to_be_bytes()),
    );
    assert_eq!(c.poll_event(), None);
    c.handle_eof(&mut h.ctx(), 4 * MS);
    let ended = Ending {
        outcome: Outcome::ServerClosed(1001),
        established: true,
        storm_dropped: false,
        resume: Some(0),
    };
    assert_eq!(c.poll_event(), Some(Event::Ended(ended)));
    c.handle_eof(&mut h.ctx(), 5 * MS);
    c.handle_timer(&mut h.ctx(), 6 * MS);
    assert_eq!(c.poll_event(), None, "an ending is reported once");
}

#[test]
fn an_ending_says_what_its_replacement_resumes() {
    let mut h = Harness::new(cfg());
    // Never opened: nothing to resume.
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_error(&mut h.ctx(), MS, Failure::Refused);
    let refused = Ending {
        outcome: Outcome::Failed(Failure::Refused),
        established: false,
        storm_dropped: false,
        resume: None,
    };
    assert_eq!(c.poll_event(), Some(Event::Ended(refused)));
    // A replacement that fails before it opens hands its session on.
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.resume_from(9);
    c.handle_timer(&mut h.ctx(), 1000 * MS);
    let timed_out = Ending {
        outcome: Outcome::Failed(Failure::ConnectTimeout),
        established: false,
        storm_dropped: false,
        resume: Some(9),
    };
    assert_eq!(c.poll_event(), Some(Event::Ended(timed_out)));
    // A session a storm drops: opened and dropped in one go, reported in that order.
    let mut c = h.open(0);
    c.storm_drop(&mut h.ctx(), 5 * MS, false);
    assert_eq!(c.poll_event(), Some(Event::SessionOpened));
    let dropped = Ending {
        outcome: Outcome::Dropped,
        established: true,
        storm_dropped: true,
        resume: Some(0),
    };
    assert_eq!(c.poll_event(), Some(Event::Ended(dropped)));
    assert_eq!(c.poll_event(), None);
}

mod clock;
mod last_seq;
mod tls;

#[test]
fn no_pong_after_leaves_later_server_pings_unanswered() {
    let mut h = Harness::new(ConnConfig {
        message: None,
        no_pong_after: Some(100 * MS),
        ..cfg()
    });
    // Open at 2 ms: a ping at 50 ms is answered, one at 150 ms is not.
    let mut c = h.open(0);
    c.handle_recv(&mut h.ctx(), 50 * MS, &server_frame(0x89, b"a"));
    assert_eq!(
        client_frames(&h.tx(&mut c, 50 * MS)),
        vec![(OpCode::Pong, b"a".to_vec())]
    );
    c.handle_recv(&mut h.ctx(), 150 * MS, &server_frame(0x89, b"b"));
    assert!(h.tx(&mut c, 150 * MS).is_empty());
    assert_eq!(
        (
            h.stats.counters.pongs_sent,
            h.stats.counters.pings_unanswered
        ),
        (1, 1)
    );
    // The server's keepalive close is counted by its code.
    let mut close = 1011u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"keepalive ping timeout");
    c.handle_recv(&mut h.ctx(), 500 * MS, &server_frame(0x88, &close));
    assert_eq!(c.outcome(), Some(Outcome::ServerClosed(1011)));
    assert_eq!(h.stats.close_codes.get(&1011), Some(&1));
}

#[test]
fn stop_reading_after_stops_consuming_and_a_reset_is_still_counted() {
    let mut h = Harness::new(ConnConfig {
        message: None,
        stop_reading_after: Some(200 * MS),
        ..cfg()
    });
    let mut c = h.open(0);
    assert!(c.is_reading());
    let t = c.poll_timeout(&h.cfg).unwrap();
    assert_eq!(t, 202 * MS);
    c.handle_timer(&mut h.ctx(), t);
    assert!(!c.is_reading());
    assert_eq!(h.stats.counters.reads_stopped, 1);
    assert_eq!(c.poll_timeout(&h.cfg), None, "nothing more to wait for");
    // Bytes the kernel read before the driver stopped receiving are not consumed.
    let before = h.stats.counters.bytes_received;
    c.handle_recv(&mut h.ctx(), t + MS, &server_frame(0x89, b"x"));
    assert!(h.tx(&mut c, t + MS).is_empty());
    assert_eq!(h.stats.counters.bytes_received, before);
    // The server resets it: a dropped session, reset, close code 1006.
    c.handle_error(&mut h.ctx(), t + 2 * MS, Failure::Reset);
    assert!(c.is_done());
    assert_eq!(h.stats.counters.sessions_dropped, 1);
    assert_eq!(h.stats.failures[&Failure::Reset], 1);
    assert_eq!(h.stats.close_codes.get(&1006), Some(&1));
}
