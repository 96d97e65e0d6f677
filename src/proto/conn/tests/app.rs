//! Application protocols on the connection (`--protocol`): the handshake after the upgrade,
//! heartbeats answered and checked, acknowledgements timed, messages wrapped on the way out
//! and unwrapped (split at every byte) before echo matching and the scans.

use super::*;
use crate::proto::app::stomp;

/// A server text frame of any length.
fn text(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x81];
    if payload.len() < 126 {
        v.push(payload.len() as u8);
    } else {
        v.push(126);
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn app_cfg(app: App) -> ConnConfig {
    let mut c = cfg();
    c.on_open.clear();
    c.message = Some(Message::fixed(
        OpCode::Text,
        br#"["echo",{"n":1}]"#.to_vec().into(),
    ));
    c.app = app;
    c
}

/// Upgraded at 2 ms: the connection is joining; returns what it sent first.
fn upgraded(h: &mut Harness) -> (Conn, Vec<(OpCode, Vec<u8>)>) {
    let mut c = Conn::new(&mut h.ctx(), 0);
    c.handle_connected(&mut h.ctx(), MS);
    let req = h.tx(&mut c, MS);
    c.handle_recv(&mut h.ctx(), 2 * MS, &response_for(&req));
    assert_eq!(c.phase(), Phase::Joining);
    let first = client_frames(&h.tx(&mut c, 2 * MS));
    (c, first)
}

fn texts(frames: &[(OpCode, Vec<u8>)]) -> Vec<String> {
    frames
        .iter()
        .map(|(op, p)| {
            assert_eq!(*op, OpCode::Text);
            String::from_utf8(p.clone()).unwrap()
        })
        .collect()
}

/// Feeds `wire` one byte at a time.
fn recv_split(h: &mut Harness, c: &mut Conn, now: Micros, wire: &[u8]) {
    for b in wire.chunks(1) {
        c.handle_recv(&mut h.ctx(), now, b);
    }
}

fn stomp_cfg() -> ConnConfig {
    let mut c = app_cfg(App::Stomp {
        client: stomp::Client {
            host: "/".into(),
            login: Some(("guest".into(), "guest".into())),
            heart_beat: (1000, 1000),
        },
        destination: Some("/topic/t".into()),
        subscribe: vec!["/topic/t".into()],
        receipts: true,
    });
    c.message = Some(Message::fixed(OpCode::Text, br#"{"n":1}"#.to_vec().into()));
    c
}

#[test]
fn stomp_connects_subscribes_sends_with_receipts_and_matches_messages() {
    let mut h = Harness::new(stomp_cfg());
    let (mut c, first) = upgraded(&mut h);
    assert_eq!(
        texts(&first),
        ["CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:1000,1000\n\n\0"]
    );
    // Nothing is sent before CONNECTED: the scenario has not begun.
    assert!(c.poll_timeout(&h.cfg).unwrap() >= 1000 * MS);
    recv_split(
        &mut h,
        &mut c,
        5 * MS,
        &text(b"CONNECTED\nversion:1.2\nheart-beat:500,2000\n\n\0"),
    );
    assert_eq!(c.phase(), Phase::Open);
    assert_eq!(h.stats.hist(Hist::AppConnect).len(), 1);
    assert_eq!(h.stats.counters.established, 1);
    let subs = texts(&client_frames(&h.tx(&mut c, 5 * MS)));
    assert_eq!(
        subs,
        ["SUBSCRIBE\nid:0\ndestination:/topic/t\nack:auto\nreceipt:sub-0\n\n\0"]
    );
    recv_split(
        &mut h,
        &mut c,
        6 * MS,
        &text(b"RECEIPT\nreceipt-id:sub-0\n\n\0"),
    );
    assert_eq!(h.stats.counters.expects_met, 1);
    // The first SEND, with its receipt.
    let (now, sent) = loop {
        let now = c.poll_timeout(&h.cfg).unwrap();
        c.handle_timer(&mut h.ctx(), now);
        let f = client_frames(&h.tx(&mut c, now));
        if !f.is_empty() {
            break (now, texts(&f));
        }
    };
    assert_eq!(
        sent,
        ["SEND\ndestination:/topic/t\ncontent-type:application/json\nreceipt:1\ncontent-length:7\n\n{\"n\":1}\0"]
    );
    // The broker delivers it back with its receipt and a heart-beat in one message.
    let back = b"MESSAGE\nsubscription:0\ndestination:/topic/t\nmessage-id:1\ncontent-length:7\n\n{\"n\":1}\0\nRECEIPT\nreceipt-id:1\n\n\0";
    recv_split(&mut h, &mut c, now + 3 * MS, &text(back));
    let k = &h.stats.counters;
    assert_eq!((k.msgs_sent, k.msgs_received, k.msgs_pushed), (1, 1, 0));
    assert_eq!((k.app_acks_requested, k.app_acks_received), (1, 1));
    assert_eq!(
        k.app_heartbeats_received, 0,
        "the EOL after a frame's NUL ends the frame"
    );
    assert_eq!(h.stats.hist(Hist::AppAck).len(), 1);
    // The end-of-line that follows a frame as a message of its own is its trailer; the next
    // is a beat.
    c.handle_recv(&mut h.ctx(), now + 4 * MS, &text(b"\n"));
    assert_eq!(h.stats.counters.app_heartbeats_received, 0);
    c.handle_recv(&mut h.ctx(), now + 4 * MS, &text(b"\n"));
    assert_eq!(h.stats.counters.app_heartbeats_received, 1);
    // A frame, then its trailing end-of-line as a message of its own (web-stomp), then a beat.
    c.handle_recv(
        &mut h.ctx(),
        now + 5 * MS,
        &text(b"RECEIPT\nreceipt-id:77\n\n\0"),
    );
    c.handle_recv(&mut h.ctx(), now + 5 * MS, &text(b"\n"));
    assert_eq!(h.stats.counters.app_heartbeats_received, 1);
    c.handle_recv(&mut h.ctx(), now + 6 * MS, &text(b"\n"));
    assert_eq!(h.stats.counters.app_heartbeats_received, 2);
    // We beat every max(1000, 2000) ms; the broker is dead after 2 × max(500, 1000) ms of
    // silence.
    let mut beats = 0;
    while c.phase() == Phase::Open {
        let t = c.poll_timeout(&h.cfg).unwrap();
        c.handle_timer(&mut h.ctx(), t);
        for (_, p) in client_frames(&h.tx(&mut c, t)) {
            if p == b"\n" {
                beats += 1;
            }
        }
        assert!(t < 10_000 * MS);
    }
    assert_eq!(h.stats.failures.get(&Failure::HeartbeatTimeout), Some(&1));
    // Connected at 5 ms: our beat at 2,005 ms; the broker's last byte came at ~110 ms, so it
    // is declared dead at ~2,110 ms, after one beat of ours.
    assert_eq!(beats, 1);
    assert_eq!(h.stats.counters.sessions_dropped, 1);
}

#[test]
fn stomp_error_refuses_at_connect_and_fails_a_session() {
    let mut h = Harness::new(stomp_cfg());
    let (mut c, _) = upgraded(&mut h);
    c.handle_recv(
        &mut h.ctx(),
        3 * MS,
        &text(b"ERROR\nmessage:Access refused for user 'guest'\n\n\0"),
    );
    assert!(c.is_done());
    assert_eq!(
        h.stats.failures.get(&Failure::App(AppFailure::Refused)),
        Some(&1)
    );
    assert_eq!(h.stats.counters.connect_failed, 1);

    let (mut c, _) = upgraded(&mut h);
    c.handle_recv(&mut h.ctx(), 3 * MS, &text(b"CONNECTED\nversion:1.2\n\n\0"));
    c.handle_recv(
        &mut h.ctx(),
        4 * MS,
        &text(b"ERROR\nmessage:not_found\n\nno exchange\0"),
    );
    assert_eq!(
        h.stats.failures.get(&Failure::App(AppFailure::Error)),
        Some(&1)
    );
    assert_eq!(h.stats.counters.sessions_dropped, 1);
    // Counted by their text.
    let texts: Vec<(&str, u64)> = h
        .stats
        .app_errors
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        texts,
        [("Access refused for user 'guest'", 1), ("not_found", 1)]
    );
    // Garbage instead of STOMP.
    let (mut c, _) = upgraded(&mut h);
    c.handle_recv(&mut h.ctx(), 3 * MS, &text(b"HELLO\n\n\0"));
    assert_eq!(
        h.stats.failures.get(&Failure::App(AppFailure::Malformed)),
        Some(&1)
    );
}

fn sio_cfg() -> ConnConfig {
    app_cfg(App::SocketIo {
        namespace: "/chat".into(),
        auth: None,
        ack: true,
    })
}

#[test]
fn socketio_joins_its_namespace_answers_pings_and_matches_emits_and_acks() {
    let mut h = Harness::new(sio_cfg());
    let (mut c, first) = upgraded(&mut h);
    assert!(
        first.is_empty(),
        "the namespace CONNECT waits for the open packet"
    );
    let open = br#"0{"sid":"x","upgrades":[],"pingInterval":5000,"pingTimeout":2000,"maxPayload":1000000}"#;
    recv_split(&mut h, &mut c, 3 * MS, &text(open));
    assert_eq!(texts(&client_frames(&h.tx(&mut c, 3 * MS))), ["40/chat,"]);
    recv_split(&mut h, &mut c, 4 * MS, &text(br#"40/chat,{"sid":"y"}"#));
    assert_eq!(c.phase(), Phase::Open);
    // A server ping is answered.
    c.handle_recv(&mut h.ctx(), 5 * MS, &text(b"2"));
    assert_eq!(texts(&client_frames(&h.tx(&mut c, 5 * MS))), ["3"]);
    let now = loop {
        let t = c.poll_timeout(&h.cfg).unwrap();
        c.handle_timer(&mut h.ctx(), t);
        let f = client_frames(&h.tx(&mut c, t));
        if !f.is_empty() {
            assert_eq!(texts(&f), [r#"42/chat,1["echo",{"n":1}]"#]);
            break t;
        }
    };
    // Another namespace's event is not ours; the echo and the ack are.
    recv_split(
        &mut h,
        &mut c,
        now + MS,
        &text(br#"42/other,["echo",{"n":1}]"#),
    );
    recv_split(
        &mut h,
        &mut c,
        now + 2 * MS,
        &text(br#"42/chat,["echo",{"n":1}]"#),
    );
    recv_split(
        &mut h,
        &mut c,
        now + 3 * MS,
        &text(br#"43/chat,1[{"ok":true}]"#),
    );
    let k = &h.stats.counters;
    assert_eq!((k.msgs_sent, k.msgs_received, k.msgs_pushed), (1, 1, 0));
    assert_eq!((k.app_acks_received, k.app_ignored), (1, 1));
    assert_eq!((k.app_heartbeats_received, k.app_heartbeats_sent), (1, 1));
    // Our close says goodbye to the namespace first.
    c.stop(&mut h.ctx(), now + 4 * MS, now + 4 * MS);
    let bye = client_frames(&h.tx(&mut c, now + 4 * MS));
    assert_eq!(bye[0], (OpCode::Text, b"41/chat,".to_vec()));
    assert_eq!(bye[1].0, OpCode::Close);
}

#[test]
fn socketio_server_silence_disconnect_and_refusal_are_failures_by_cause() {
    let open = text(
        br#"0{"sid":"x","upgrades":[],"pingInterval":1000,"pingTimeout":500,"maxPayload":1000000}"#,
    );
    let mut h = Harness::new(sio_cfg());
    let (mut c, _) = upgraded(&mut h);
    c.handle_recv(&mut h.ctx(), 3 * MS, &open);
    c.handle_recv(&mut h.ctx(), 4 * MS, &text(b"40/chat,{}"));
    // No ping for interval + timeout: the server is gone.
    let t = c.poll_timeout(&h.cfg).unwrap();
    assert!(t <= 4 * MS + 1500 * MS, "{t}");
    let mut now = t;
    while !c.is_done() {
        c.handle_timer(&mut h.ctx(), now);
        let _ = h.tx(&mut c, now);
        now = c.poll_timeout(&h.cfg).unwrap_or(now + MS);
        assert!(now < 3000 * MS);
    }
    assert_eq!(h.stats.failures.get(&Failure::HeartbeatTimeout), Some(&1));

    let (mut c, _) = upgraded(&mut h);
    c.handle_recv(&mut h.ctx(), 3 * MS, &open);
    c.handle_recv(&mut h.ctx(), 4 * MS, &text(b"40/chat,{}"));
    c.handle_recv(&mut h.ctx(), 5 * MS, &text(b"41/chat,"));
    assert_eq!(
        h.stats
            .failures
            .get(&Failure::App(AppFailure::Disconnected)),
        Some(&1)
    );

    let (mut c, _) = upgraded(&mut h);
    c.handle_recv(&mut h.ctx(), 3 * MS, &open);
    c.handle_recv(
        &mut h.ctx(),
        4 * MS,
        &text(br#"44/chat,{"message":"Not authorized"}"#),
    );
    assert_eq!(
        h.stats.failures.get(&Failure::App(AppFailure::Refused)),
        Some(&1)
    );
    assert_eq!(h.stats.counters.connect_failed, 1);
    assert_eq!(h.stats.counters.sessions_dropped, 2);
    // python-socketio's refusal is a bare string.
    let (mut c, _) = upgraded(&mut h);
    c.handle_recv(&mut h.ctx(), 3 * MS, &open);
    c.handle_recv(
        &mut h.ctx(),
        4 * MS,
        &text(br#"44/chat,"Unable to connect""#),
    );
    let texts: Vec<&str> = h.stats.app_errors.keys().map(String::as_str).collect();
    assert_eq!(texts, ["Not authorized", "Unable to connect"]);
}

#[test]
fn graphql_subscribes_on_open_answers_operations_by_id_and_pings() {
    let mut cfg = app_cfg(App::GraphqlWs {
        init: Some(r#"{"token":"t"}"#.into()),
    });
    cfg.on_open = vec![Message::fixed(
        OpCode::Text,
        b"subscription { ticks { n ts } }".to_vec().into(),
    )];
    cfg.message = Some(Message::fixed(
        OpCode::Text,
        br#"query { echo(text: "a") }"#.to_vec().into(),
    ));
    cfg.latency_from = Some(crate::proto::inspect::LatencyField::new(
        "ts",
        crate::proto::inspect::TimeUnit::Micros,
    ));
    let mut h = Harness::new(cfg);
    h.epoch_unix_us = 1_000_000;
    let (mut c, first) = upgraded(&mut h);
    assert_eq!(
        texts(&first),
        [r#"{"type":"connection_init","payload":{"token":"t"}}"#]
    );
    recv_split(
        &mut h,
        &mut c,
        3 * MS,
        &text(br#"{"type":"connection_ack"}"#),
    );
    assert_eq!(c.phase(), Phase::Open);
    assert_eq!(
        texts(&client_frames(&h.tx(&mut c, 3 * MS))),
        [r#"{"id":"s0","type":"subscribe","payload":{"query":"subscription { ticks { n ts } }"}}"#]
    );
    // The subscription's results go to the scans: one-way latency from `ts`.
    recv_split(
        &mut h,
        &mut c,
        4 * MS,
        &text(br#"{"id":"s0","type":"next","payload":{"data":{"ticks":{"n":1,"ts":1003000}}}}"#),
    );
    assert_eq!(h.stats.hist(Hist::WsMsgLatency).len(), 1);
    assert_eq!(h.stats.counters.msgs_pushed, 1);
    c.handle_recv(&mut h.ctx(), 4 * MS, &text(br#"{"type":"ping"}"#));
    assert_eq!(
        texts(&client_frames(&h.tx(&mut c, 4 * MS))),
        [r#"{"type":"pong"}"#]
    );
    // A rate-driven operation carries its intended time as id; its first result answers it.
    let (now, id) = loop {
        let t = c.poll_timeout(&h.cfg).unwrap();
        c.handle_timer(&mut h.ctx(), t);
        let f = client_frames(&h.tx(&mut c, t));
        if let Some((_, p)) = f.first() {
            let s = String::from_utf8(p.clone()).unwrap();
            let id = s.split('"').nth(3).unwrap().to_string();
            assert_eq!(
                s,
                format!(
                    r#"{{"id":"{id}","type":"subscribe","payload":{{"query":"query {{ echo(text: \"a\") }}"}}}}"#
                )
            );
            break (t, id);
        }
    };
    let next = format!(r#"{{"id":"{id}","type":"next","payload":{{"data":{{"echo":"a"}}}}}}"#);
    recv_split(&mut h, &mut c, now + 2 * MS, &text(next.as_bytes()));
    recv_split(
        &mut h,
        &mut c,
        now + 2 * MS,
        &text(format!(r#"{{"id":"{id}","type":"complete"}}"#).as_bytes()),
    );
    let k = &h.stats.counters;
    assert_eq!((k.msgs_sent, k.msgs_received, k.msgs_pushed), (1, 1, 1));
    assert_eq!((k.graphql_next, k.graphql_complete), (2, 1));
    assert_eq!(h.stats.hist(Hist::WsMsgRtt).max(), 2 * MS);
    recv_split(
        &mut h,
        &mut c,
        now + 3 * MS,
        &text(br#"{"id":"s0","type":"error","payload":[{"message":"boom"}]}"#),
    );
    assert_eq!(h.stats.counters.graphql_errors, 1);
    assert_eq!(h.stats.app_errors.get("boom"), Some(&1));
    assert_eq!(
        h.stats
            .failures
            .get(&Failure::App(AppFailure::OperationError)),
        Some(&1)
    );
    assert_eq!(c.phase(), Phase::Open);
}

#[test]
fn a_handshake_never_answered_times_out_as_its_own_cause() {
    let mut h = Harness::new(app_cfg(App::GraphqlWs { init: None }));
    let (mut c, _) = upgraded(&mut h);
    let t = c.poll_timeout(&h.cfg).unwrap();
    assert_eq!(t, 1000 * MS);
    c.handle_timer(&mut h.ctx(), t);
    assert_eq!(
        h.stats.failures.get(&Failure::App(AppFailure::Timeout)),
        Some(&1)
    );
    assert_eq!(h.stats.counters.connect_failed, 1);
    // Stopped while joining: abandoned, the server had accepted it.
    let (mut c, _) = upgraded(&mut h);
    c.stop(&mut h.ctx(), 3 * MS, 3 * MS);
    assert_eq!(
        (
            h.stats.counters.abandoned,
            h.stats.counters.abandoned_accepted
        ),
        (1, 1)
    );
}

#[test]
fn an_envelope_over_the_message_size_bound_fails_the_session() {
    let mut cfg = stomp_cfg();
    cfg.max_message_size = 64;
    let mut h = Harness::new(cfg);
    let (mut c, _) = upgraded(&mut h);
    c.handle_recv(&mut h.ctx(), 3 * MS, &text(b"CONNECTED\nversion:1.2\n\n\0"));
    let mut big = b"MESSAGE\ncontent-length:100\n\n".to_vec();
    big.extend_from_slice(&[b'x'; 100]);
    big.push(0);
    c.handle_recv(&mut h.ctx(), 4 * MS, &text(&big));
    assert!(c.is_done());
    assert_eq!(
        h.stats
            .failures
            .get(&Failure::Protocol(Violation::MessageTooBig)),
        Some(&1)
    );
}

#[test]
fn nothing_follows_our_close_and_late_failures_keep_the_ending() {
    let open = text(br#"0{"sid":"x","upgrades":[],"pingInterval":5000,"pingTimeout":5000,"maxPayload":1000000}"#);
    let mut h = Harness::new(sio_cfg());
    let (mut c, _) = upgraded(&mut h);
    c.handle_recv(&mut h.ctx(), 3 * MS, &open);
    let _ = h.tx(&mut c, 3 * MS);
    c.handle_recv(&mut h.ctx(), 4 * MS, &text(b"40/chat,{}"));
    c.stop(&mut h.ctx(), 5 * MS, 5 * MS);
    let out = client_frames(&h.tx(&mut c, 5 * MS));
    assert_eq!(out.last().map(|f| f.0), Some(OpCode::Close));
    // A ping after our close frame: no pong may follow it.
    c.handle_recv(&mut h.ctx(), 6 * MS, &text(b"2"));
    assert!(client_frames(&h.tx(&mut c, 6 * MS)).is_empty());
    // The server's namespace disconnect while we close: counted by cause, and the session
    // still ends as one we closed, never as a connect failure.
    c.handle_recv(&mut h.ctx(), 7 * MS, &text(b"41/chat,"));
    assert!(c.is_done());
    let k = &h.stats.counters;
    assert_eq!(
        (k.established, k.connect_failed, k.sessions_dropped),
        (1, 0, 0)
    );
    assert_eq!(k.closes_incomplete, 1);
    assert_eq!(
        h.stats
            .failures
            .get(&Failure::App(AppFailure::Disconnected)),
        Some(&1)
    );
}

#[test]
fn a_stop_waits_for_the_acknowledgements_owed() {
    let mut h = Harness::new(stomp_cfg());
    let (mut c, _) = upgraded(&mut h);
    c.handle_recv(&mut h.ctx(), 3 * MS, &text(b"CONNECTED\nversion:1.2\n\n\0"));
    let _ = h.tx(&mut c, 3 * MS);
    let now = loop {
        let t = c.poll_timeout(&h.cfg).unwrap();
        c.handle_timer(&mut h.ctx(), t);
        if !client_frames(&h.tx(&mut c, t)).is_empty() {
            break t;
        }
    };
    // The message comes back before its receipt: the stop still waits for the receipt.
    c.stop(&mut h.ctx(), now + MS, now + 500 * MS);
    let back = b"MESSAGE\nsubscription:0\ncontent-length:7\n\n{\"n\":1}\0";
    c.handle_recv(&mut h.ctx(), now + 2 * MS, &text(back));
    assert_eq!(c.phase(), Phase::Open);
    assert!(client_frames(&h.tx(&mut c, now + 2 * MS)).is_empty());
    c.handle_recv(
        &mut h.ctx(),
        now + 3 * MS,
        &text(b"RECEIPT\nreceipt-id:1\n\n\0"),
    );
    let bye = texts(&client_frames(&h.tx(&mut c, now + 3 * MS))[..1]);
    assert_eq!(bye, ["DISCONNECT\nreceipt:bye\n\n\0"]);
    assert_eq!(h.stats.counters.app_acks_unanswered, 0);
}
