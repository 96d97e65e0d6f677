//! Named requests with reply rules, checks and streams, on a fake clock.

use super::*;
use crate::proto::conn::rules::MAX_PENDING;
use crate::proto::select::{Cond, JsonPath};

fn text(s: &str) -> Message {
    Message::fixed(OpCode::Text, s.as_bytes().into())
}

fn templated(s: &str) -> Message {
    let t = Template::parse(s, &NoInputs).unwrap().unwrap();
    Message {
        opcode: OpCode::Text,
        payload: Box::new([]),
        template: Some(Arc::new(t)),
    }
}

fn request(name: &str, m: Message, interval: Micros, reply: ReplyRule) -> Request {
    Request {
        name: name.into(),
        message: m,
        interval,
        count: 0,
        reply,
        reply_on: None,
    }
}

fn base() -> ConnConfig {
    ConnConfig {
        message: None,
        message_interval: 0,
        ..cfg()
    }
}

/// A harness whose recorder knows `cfg`'s request and check names.
fn harness(cfg: ConnConfig) -> Harness {
    let mut h = Harness::new(cfg);
    h.stats = ShardStats::for_config(&h.cfg);
    h
}

/// A connection open at 2 ms (whatever it sent on opening is dropped).
fn open(h: &mut Harness) -> Conn {
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_connected(&mut h.ctx(), MS);
    let req = h.tx(&mut c, MS);
    c.handle_recv(&mut h.ctx(), 2 * MS, &response_for(&req));
    assert_eq!(c.phase(), Phase::Open);
    c
}

/// Runs `c` from `from` to `to` in 1 ms steps, returning every text frame sent with its time.
fn drive(h: &mut Harness, c: &mut Conn, from: Micros, to: Micros) -> Vec<(Micros, String)> {
    let mut sent = Vec::new();
    let mut t = from;
    while t <= to {
        c.handle_timer(&mut h.ctx(), t);
        for (op, p) in client_frames(&h.tx(c, t)) {
            if op == OpCode::Text {
                sent.push((t, String::from_utf8(p).unwrap()));
            }
        }
        t += MS;
    }
    sent
}

fn recv(h: &mut Harness, c: &mut Conn, now: Micros, msg: &str) {
    c.handle_recv(&mut h.ctx(), now, &server_frame(0x81, msg.as_bytes()));
}

#[test]
fn replies_are_matched_by_their_value_and_by_the_next_matching_message() {
    let mut cfg = base();
    cfg.requests = vec![
        request(
            "publish",
            templated(r#"{"action":"send_message","message":{"id":"m{{seq}}"}}"#),
            100 * MS,
            ReplyRule::parse("json:message.id", Some("json:id")).unwrap(),
        ),
        request(
            "rate",
            text(r#"{"action":"rate","itemId":7}"#),
            250 * MS,
            ReplyRule::parse("json:type=ack", None).unwrap(),
        ),
    ];
    let mut h = harness(cfg);
    let mut c = open(&mut h);
    let sent = drive(&mut h, &mut c, 2 * MS, 1001 * MS);
    let publishes: Vec<&(Micros, String)> = sent
        .iter()
        .filter(|(_, m)| m.contains("send_message"))
        .collect();
    let rates = sent.iter().filter(|(_, m)| m.contains("itemId")).count();
    assert_eq!(publishes.len(), 10, "{sent:?}");
    assert_eq!(rates, 4);
    // Answer the publishes in reverse order, 5 ms after the last send, with a push and a
    // rate ack interleaved; the third publish is never answered.
    let now = 1005 * MS;
    for (i, (_, m)) in publishes.iter().enumerate().rev() {
        if i == 2 {
            continue;
        }
        let id = &m[m.find("\"id\":\"").unwrap() + 6..];
        let id = &id[..id.find('"').unwrap()];
        recv(
            &mut h,
            &mut c,
            now,
            &format!(r#"{{"type":"message_ack","id":"{id}"}}"#),
        );
        recv(&mut h, &mut c, now, r#"{"type":"event","id":"nope"}"#);
    }
    recv(&mut h, &mut c, now, r#"{"type":"ack","itemId":7}"#);
    recv(&mut h, &mut c, now, r#"{"type":"ack","itemId":7}"#);
    let s = &h.stats;
    let p = s.named.request_named("publish").unwrap();
    assert_eq!((p.sent, p.answered, p.unanswered), (10, 9, 0));
    let r = s.named.request_named("rate").unwrap();
    assert_eq!((r.sent, r.answered, r.unanswered), (4, 2, 0));
    assert_eq!(s.counters.msgs_pushed, 9, "the pushes only");
    // Latency from the intended send time: the first publish waited the longest.
    // (It went out on the first 1 ms step at or after its intended time.)
    let first = publishes[0].0;
    let max = p.latency.max();
    assert!(
        max >= p.latency.lowest_equivalent(now - first)
            && max <= p.latency.highest_equivalent(now - first + MS),
        "{max} vs {}",
        now - first
    );
    // The session ends: what is still awaited is unanswered, once.
    c.abort(&mut h.ctx(), now + MS);
    let s = &h.stats;
    assert_eq!(s.named.request_named("publish").unwrap().unanswered, 1);
    assert_eq!(s.named.request_named("rate").unwrap().unanswered, 2);
    assert_eq!(
        s.counters.requests_sent,
        s.counters.replies_received + s.counters.replies_unanswered
    );
}

#[test]
fn replies_time_out_and_the_pending_set_is_bounded() {
    let mut cfg = base();
    cfg.requests = vec![request(
        "op",
        templated(r#"{"action":"apply_operation","opId":{{seq}}}"#),
        1, // every µs: far more than may wait
        ReplyRule::parse("json:opId", None).unwrap(),
    )];
    cfg.requests[0].count = (MAX_PENDING + 100) as u64;
    cfg.reply_timeout = 50 * MS;
    let mut h = harness(cfg);
    let mut c = open(&mut h);
    let _ = drive(&mut h, &mut c, 2 * MS, 5 * MS);
    let r = h.stats.named.request_named("op").unwrap();
    assert_eq!(r.sent, (MAX_PENDING + 100) as u64);
    assert_eq!(r.unanswered, 100, "the oldest beyond the bound");
    // The newest is answered; the rest time out.
    recv(
        &mut h,
        &mut c,
        6 * MS,
        &format!(
            r#"{{"type":"operation_applied","opId":{}}}"#,
            MAX_PENDING + 100
        ),
    );
    let t = c.poll_timeout(&h.cfg).unwrap();
    assert!(t <= 3 * MS + 50 * MS, "a reply deadline is armed: {t}");
    c.handle_timer(&mut h.ctx(), 60 * MS);
    let r = h.stats.named.request_named("op").unwrap();
    assert_eq!((r.answered, r.unanswered), (1, MAX_PENDING as u64 + 99));
}

#[test]
fn checks_count_each_message_they_apply_to() {
    let mut cfg = base();
    cfg.checks = vec![
        Check {
            name: "price positive".into(),
            on: Some(Cond::parse("json:type=quote").unwrap()),
            expect: Cond::parse("json:price>0").unwrap(),
        },
        Check {
            name: "has ack".into(),
            on: None,
            expect: Cond::parse("text:ack").unwrap(),
        },
    ];
    let mut h = harness(cfg);
    let mut c = open(&mut h);
    for m in [
        r#"{"type":"quote","price":1.5}"#,
        r#"{"type":"quote","price":0}"#,
        r#"{"type":"quote","price":-2}"#,
        r#"{"type":"snapshot","price":-2}"#,
        r#"{"type":"ack"}"#,
    ] {
        recv(&mut h, &mut c, 5 * MS, m);
    }
    let s = &h.stats;
    let p = s.named.check_named("price positive").unwrap();
    assert_eq!((p.passed, p.failed), (1, 2));
    let a = s.named.check_named("has ack").unwrap();
    assert_eq!((a.passed, a.failed), (1, 4));
    assert_eq!((s.counters.checks_passed, s.counters.checks_failed), (2, 6));
}

#[test]
fn streams_count_gaps_duplicates_and_late_messages_per_key() {
    let mut cfg = base();
    cfg.stream = Some(StreamRule {
        seq: JsonPath::parse("json:seq").unwrap(),
        key: Some(JsonPath::parse("json:stream").unwrap()),
    });
    let mut h = harness(cfg);
    let mut c = open(&mut h);
    let q = |k: &str, s: u64| format!(r#"{{"type":"quote","stream":"{k}","seq":{s},"price":1}}"#);
    // AAPL: 5 6 8 9 12 7 9 (gap of 1, gap of 2, 7 late, 9 duplicate);
    // IBM starts at 100 and runs 100 101 102: clean.
    for (k, s) in [
        ("AAPL", 5),
        ("IBM", 100),
        ("AAPL", 6),
        ("AAPL", 8),
        ("IBM", 101),
        ("AAPL", 9),
        ("AAPL", 12),
        ("AAPL", 7),
        ("IBM", 102),
        ("AAPL", 9),
        ("AAPL", 4),
    ] {
        recv(&mut h, &mut c, 5 * MS, &q(k, s));
    }
    recv(&mut h, &mut c, 5 * MS, r#"{"type":"status"}"#);
    let s = &h.stats.counters;
    assert_eq!(s.stream_msgs, 11);
    assert_eq!(s.stream_gaps, 2);
    assert_eq!(s.stream_skipped, 3, "7, 10 and 11");
    assert_eq!(s.stream_late, 2, "7 (jumped over) and 4 (before the start)");
    assert_eq!(s.stream_filled, 1, "7 was not lost after all");
    assert_eq!(s.stream_duplicates, 1);
}

#[test]
fn next_rules_of_several_requests_do_not_block_each_other() {
    let mut cfg = base();
    cfg.requests = vec![
        request(
            "rate",
            text(r#"{"action":"rate"}"#),
            100 * MS,
            ReplyRule::parse("json:type=ack", None).unwrap(),
        ),
        request(
            "poll",
            text(r#"{"action":"poll"}"#),
            100 * MS,
            ReplyRule::parse("text:polled", None).unwrap(),
        ),
    ];
    let mut h = harness(cfg);
    let mut c = open(&mut h);
    let sent = drive(&mut h, &mut c, 2 * MS, 301 * MS);
    let requests = sent.iter().filter(|(_, m)| m.contains("action")).count();
    assert_eq!(requests, 6, "{sent:?}");
    // The polls are answered first, then the rates: each reply finds its own request.
    for _ in 0..3 {
        recv(&mut h, &mut c, 310 * MS, r#"{"type":"polled"}"#);
    }
    recv(&mut h, &mut c, 320 * MS, r#"{"type":"ack"}"#);
    recv(&mut h, &mut c, 320 * MS, r#"{"type":"ack"}"#);
    let s = &h.stats;
    let (r, p) = (
        s.named.request_named("rate").unwrap(),
        s.named.request_named("poll").unwrap(),
    );
    assert_eq!((r.sent, r.answered), (3, 2));
    assert_eq!((p.sent, p.answered), (3, 3));
    assert_eq!(s.counters.msgs_pushed, 0);
    // The last rate times out after the reply timeout.
    let at = 400 * MS + h.cfg.reply_timeout;
    c.handle_timer(&mut h.ctx(), at);
    assert_eq!(h.stats.named.request_named("rate").unwrap().unanswered, 1);
}

#[test]
fn requests_held_up_by_a_backlogged_socket_are_unsent_not_unanswered() {
    let mut cfg = base();
    cfg.requests = vec![request("r", text("req"), 100 * MS, ReplyRule::Echo)];
    let mut h = harness(cfg);
    let mut c = open(&mut h);
    // The first request (due at 2 ms) goes out; the next one, and the socket never finishes
    // taking it.
    assert_eq!(client_frames(&h.tx(&mut c, 2 * MS)).len(), 1);
    let t1 = c.poll_timeout(&h.cfg).unwrap();
    c.handle_timer(&mut h.ctx(), t1);
    let mut out = Vec::new();
    c.poll_transmit(&mut h.ctx(), t1, &mut out);
    assert_eq!(client_frames(&out).len(), 1);
    let mut now = t1;
    for _ in 0..100 {
        now += 10 * MS;
        c.handle_timer(&mut h.ctx(), now);
    }
    c.handle_sent(now);
    // Ten fell due meanwhile: the eight late by more than an interval are unsent, the last
    // two go out late.
    let mut out = Vec::new();
    c.poll_transmit(&mut h.ctx(), now, &mut out);
    assert_eq!(client_frames(&out).len(), 2);
    let r = h.stats.named.request_named("r").unwrap();
    // (The two oldest sent ones have outlived the reply timeout: unanswered.)
    assert_eq!((r.sent, r.unsent, r.unanswered), (3, 8, 2));
    assert_eq!(h.stats.counters.requests_unsent, 8);
    // Stuck again; the run stops 450 ms later: the four due meanwhile were never sent.
    let t2 = now + 100 * MS;
    c.handle_timer(&mut h.ctx(), t2);
    let mut out = Vec::new();
    c.poll_transmit(&mut h.ctx(), t2, &mut out);
    assert_eq!(client_frames(&out).len(), 1);
    c.handle_timer(&mut h.ctx(), t2 + 450 * MS);
    c.stop(&mut h.ctx(), t2 + 450 * MS, t2 + 2000 * MS);
    c.abort(&mut h.ctx(), t2 + 500 * MS);
    let r = h.stats.named.request_named("r").unwrap();
    assert_eq!((r.sent, r.unsent), (4, 12));
    // Sent = answered + unanswered; the unsent ones are in neither.
    assert_eq!(r.sent, r.answered + r.unanswered);
    assert_eq!(h.stats.counters.requests_unsent, 12, "counted once");
}
