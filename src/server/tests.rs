//! Whole-gateway tests over loopback with tungstenite's blocking client.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, TicketRequest,
    Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::version::{TLS12, TLS13};
use rustls::{
    ClientConfig, ClientConnection, HandshakeKind, NamedGroup, StreamOwned,
    SupportedProtocolVersion,
};
use tungstenite::error::ProtocolError;
use tungstenite::handshake::HandshakeError;
use tungstenite::{Error as WsError, Message, WebSocket};

use super::*;
use crate::certs::{self, TestCa};

type Client = WebSocket<TcpStream>;

/// Echo gateway settings on an ephemeral loopback port.
fn loopback() -> ServeConfig {
    ServeConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ..ServeConfig::default()
    }
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn connect(addr: SocketAddr) -> Client {
    let (ws, resp) = tungstenite::client::client(format!("ws://{addr}/ws"), tcp(addr)).unwrap();
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

/// Polls the stats until `done` holds (exact assertions follow), at most 10 s.
fn wait_for(gw: &Gateway, done: impl Fn(&GatewayStats) -> bool) -> GatewayStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = gw.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn echo<S: Read + Write>(ws: &mut WebSocket<S>, msg: Message) -> Message {
    ws.send(msg).unwrap();
    ws.read().unwrap()
}

#[test]
fn echoes_text_and_binary_exactly() {
    let gw = Gateway::start(loopback()).unwrap();
    let mut ws = connect(gw.local_addr());
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let msgs = [
        Message::text("hello"),
        Message::text(""),
        Message::text("héllo ✓ {\"type\":\"event\"}"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::binary(big),
    ];
    for msg in msgs {
        assert_eq!(echo(&mut ws, msg.clone()), msg);
    }
    let stats = wait_for(&gw, |s| s.open == 1);
    assert_eq!(
        stats,
        GatewayStats {
            accepted: 1,
            open: 1,
            msgs_in: 5,
            msgs_out: 5,
            handshakes_rejected: 0,
            ..GatewayStats::default()
        }
    );
    gw.shutdown();
}

#[test]
fn answers_ping_with_same_payload() {
    let gw = Gateway::start(loopback()).unwrap();
    let mut ws = connect(gw.local_addr());
    assert_eq!(
        echo(&mut ws, Message::Ping(b"abc".to_vec().into())),
        Message::Pong(b"abc".to_vec().into())
    );
    assert_eq!(
        echo(&mut ws, Message::Ping(Vec::new().into())),
        Message::Pong(Vec::new().into())
    );
    // Pongs are neither echoed nor counted; the next data message is the next thing back.
    ws.send(Message::Pong(b"unsolicited".to_vec().into()))
        .unwrap();
    assert_eq!(
        echo(&mut ws, Message::text("after")),
        Message::text("after")
    );
    let stats = gw.stats();
    assert_eq!((stats.msgs_in, stats.msgs_out), (1, 1));
}

#[test]
fn subscribe_gets_ack_instead_of_echo() {
    let gw = Gateway::start(loopback()).unwrap();
    let mut ws = connect(gw.local_addr());
    assert_eq!(
        echo(
            &mut ws,
            Message::text(r#"{"type":"subscribe","channel":"prices"}"#)
        ),
        Message::text(r#"{"type":"subscribed","channel":"prices"}"#)
    );
    assert_eq!(
        echo(&mut ws, Message::text(r#"{"type":"subscribe"}"#)),
        Message::text(r#"{"type":"subscribed"}"#)
    );
    // Unsubscribing is acknowledged the same way.
    assert_eq!(
        echo(
            &mut ws,
            Message::text(r#"{"type":"unsubscribe","channel":"prices"}"#)
        ),
        Message::text(r#"{"type":"unsubscribed","channel":"prices"}"#)
    );
    // Mentions "subscribe" but is not a subscribe request: echoed.
    let other = Message::text(r#"{"type":"resubscribe","channel":"prices"}"#);
    assert_eq!(echo(&mut ws, other.clone()), other);
    // A binary subscribe is just bytes: echoed.
    let bin = Message::binary(br#"{"type":"subscribe"}"#.to_vec());
    assert_eq!(echo(&mut ws, bin.clone()), bin);
    let stats = gw.stats();
    assert_eq!((stats.msgs_in, stats.msgs_out), (5, 5));
}

#[test]
fn completes_close_handshake_then_drops_connection() {
    let gw = Gateway::start(loopback()).unwrap();
    let mut ws = connect(gw.local_addr());
    assert_eq!(wait_for(&gw, |s| s.open == 1).open, 1);
    ws.close(None).unwrap();
    assert!(matches!(ws.read(), Ok(Message::Close(None))));
    // The server closed the TCP connection after its close frame.
    assert!(matches!(ws.read(), Err(WsError::ConnectionClosed)));
    assert_eq!(wait_for(&gw, |s| s.open == 0).open, 0);
}

#[test]
fn slow_request_resumes_handshake() {
    let gw = Gateway::start(loopback()).unwrap();
    let mut stream = tcp(gw.local_addr());
    let request = "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
                   Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (head, tail) = request.split_at(40);
    stream.write_all(head.as_bytes()).unwrap();
    thread::sleep(Duration::from_millis(30));
    stream.write_all(tail.as_bytes()).unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1);
        response.push(byte[0]);
    }
    let response = String::from_utf8(response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{response}"
    );
    assert!(
        response.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{response}"
    );
    assert_eq!(wait_for(&gw, |s| s.open == 1).open, 1);
}

#[test]
fn fan_out_sends_increasing_seq_from_one_to_every_client() {
    let cfg = ServeConfig {
        publish_rate: 50.0,
        threads: 2,
        ..loopback()
    };
    let gw = Gateway::start(cfg).unwrap();
    let addr = gw.local_addr();
    // The publish clock starts with the first open connection: connect all three at once.
    let barrier = Arc::new(Barrier::new(3));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let stream = tcp(addr);
                barrier.wait();
                let (ws, _) = tungstenite::client::client(format!("ws://{addr}/"), stream).unwrap();
                ws
            })
        })
        .collect();
    let mut clients: Vec<Client> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for ws in &mut clients {
        let mut seqs = Vec::new();
        let mut stamps = Vec::new();
        while seqs.len() < 10 {
            let Message::Text(text) = ws.read().unwrap() else {
                panic!("expected a text event");
            };
            let event: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(event["type"], "event", "{text}");
            seqs.push(event["seq"].as_u64().unwrap());
            stamps.push(event["ts_us"].as_u64().unwrap());
        }
        assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
        // Intended send times: exactly 1/50 s apart.
        assert!(
            stamps.windows(2).all(|w| w[1] - w[0] == 20_000),
            "{stamps:?}"
        );
    }
    // Echo keeps working in fan-out mode.
    let ws = &mut clients[0];
    ws.send(Message::text("still echoing")).unwrap();
    let mut last_seq = 10;
    loop {
        let Message::Text(text) = ws.read().unwrap() else {
            panic!("expected text");
        };
        if text.as_str() == "still echoing" {
            break;
        }
        let event: serde_json::Value = serde_json::from_str(&text).unwrap();
        let seq = event["seq"].as_u64().unwrap();
        assert_eq!(seq, last_seq + 1);
        last_seq = seq;
    }
    assert_eq!(gw.stats().msgs_in, 1);
}

#[test]
fn reject_status_answers_with_that_status() {
    let cfg = ServeConfig {
        reject: Some(Reject::Status(503)),
        ..loopback()
    };
    let gw = Gateway::start(cfg).unwrap();
    let addr = gw.local_addr();
    match tungstenite::client::client(format!("ws://{addr}/"), tcp(addr)) {
        Err(HandshakeError::Failure(WsError::Http(resp))) => {
            assert_eq!(resp.status().as_u16(), 503);
            assert_eq!(resp.headers()["content-length"], "0");
        }
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        gw.stats(),
        GatewayStats {
            accepted: 1,
            open: 0,
            msgs_in: 0,
            msgs_out: 0,
            handshakes_rejected: 1,
            ..GatewayStats::default()
        }
    );
}

#[test]
fn reject_close_closes_without_answer() {
    let cfg = ServeConfig {
        reject: Some(Reject::Close),
        ..loopback()
    };
    let gw = Gateway::start(cfg).unwrap();
    let addr = gw.local_addr();
    match tungstenite::client::client(format!("ws://{addr}/"), tcp(addr)) {
        Err(HandshakeError::Failure(WsError::Protocol(ProtocolError::HandshakeIncomplete))) => {}
        other => panic!(
            "expected the connection closed, got {:?}",
            other.map(|_| ())
        ),
    }
    assert_eq!(
        gw.stats(),
        GatewayStats {
            accepted: 1,
            open: 0,
            msgs_in: 0,
            msgs_out: 0,
            handshakes_rejected: 1,
            ..GatewayStats::default()
        }
    );
}

#[test]
fn two_hundred_concurrent_clients_echo_and_are_counted() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 25;
    const MSGS: usize = 10;
    let gw = Gateway::start(ServeConfig {
        threads: 2,
        ..loopback()
    })
    .unwrap();
    let addr = gw.local_addr();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut clients: Vec<Client> = (0..PER_THREAD).map(|_| connect(addr)).collect();
                // All 200 are open before anyone sends.
                barrier.wait();
                for (c, ws) in clients.iter_mut().enumerate() {
                    for m in 0..MSGS {
                        ws.write(Message::text(format!("t{t} c{c} m{m}"))).unwrap();
                    }
                    ws.flush().unwrap();
                }
                for (c, ws) in clients.iter_mut().enumerate() {
                    for m in 0..MSGS {
                        assert_eq!(ws.read().unwrap(), Message::text(format!("t{t} c{c} m{m}")));
                    }
                }
                clients
            })
        })
        .collect();
    let clients: Vec<Client> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(clients.len(), 200);
    let stats = wait_for(&gw, |s| s.open == 200);
    assert_eq!(
        stats,
        GatewayStats {
            accepted: 200,
            open: 200,
            msgs_in: 2000,
            msgs_out: 2000,
            handshakes_rejected: 0,
            ..GatewayStats::default()
        }
    );
    // SO_REUSEPORT spread the connections over both threads.
    assert!(gw.stats.iter().all(|t| t.accepted.load(Relaxed) > 0));
    drop(clients);
    assert_eq!(wait_for(&gw, |s| s.open == 0).open, 0);
}

/// A masked binary frame as a client sends it (payload < 64 KiB).
fn masked_binary_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let len = u16::try_from(payload.len()).unwrap();
    let mut frame = vec![0x82, 0x80 | 126];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[test]
fn client_that_does_not_read_gets_every_echo_later() {
    const COUNT: usize = 400;
    const SIZE: usize = 60_000;
    let gw = Gateway::start(loopback()).unwrap();
    let mut ws = connect(gw.local_addr());
    let mut writer = ws.get_ref().try_clone().unwrap();
    // 24 MB towards a client that is not reading: the server must stop reading (its output is
    // full) without blocking, then catch up.
    let sender = thread::spawn(move || {
        for i in 0..COUNT {
            writer
                .write_all(&masked_binary_frame(&vec![i as u8; SIZE]))
                .unwrap();
        }
    });
    thread::sleep(Duration::from_millis(300));
    // Meanwhile, other clients are served.
    let mut other = connect(gw.local_addr());
    assert_eq!(
        echo(&mut other, Message::text("not stalled")),
        Message::text("not stalled")
    );
    for i in 0..COUNT {
        assert_eq!(ws.read().unwrap(), Message::binary(vec![i as u8; SIZE]));
    }
    sender.join().unwrap();
    let stats = gw.stats();
    assert_eq!(
        (stats.msgs_in, stats.msgs_out),
        (COUNT as u64 + 1, COUNT as u64 + 1)
    );
}

#[test]
fn bad_clients_only_lose_their_own_connection() {
    let gw = Gateway::start(loopback()).unwrap();
    let addr = gw.local_addr();
    let mut good = connect(addr);

    // Not a WebSocket upgrade: refused and closed.
    let mut plain = tcp(addr);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(plain.read(&mut [0u8; 64]).unwrap(), 0);
    // Not HTTP at all.
    let mut junk = tcp(addr);
    junk.write_all(&[0u8, 1, 2, 3, 0xff, b'\r', b'\n', b'\r', b'\n'])
        .unwrap();
    assert_eq!(junk.read(&mut [0u8; 64]).unwrap(), 0);
    // Upgraded, then an unmasked frame (forbidden from clients): that connection is closed.
    let mut rude = connect(addr);
    rude.get_mut().write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert!(rude.read().is_err());
    // Upgraded, then reset mid-frame.
    let mut gone = connect(addr);
    gone.get_mut().write_all(&[0x82, 0xfe, 0xff]).unwrap();
    drop(gone);

    assert_eq!(
        echo(&mut good, Message::text("fine")),
        Message::text("fine")
    );
    let stats = wait_for(&gw, |s| s.open == 1);
    assert_eq!(
        stats,
        GatewayStats {
            accepted: 5,
            open: 1,
            msgs_in: 1,
            msgs_out: 1,
            handshakes_rejected: 2,
            // The unmasked frame; the reset mid-frame is a client going away, not a violation.
            protocol_errors: 1,
            ..GatewayStats::default()
        }
    );
}

#[test]
fn shutdown_is_prompt_and_closes_everything() {
    let cfg = ServeConfig {
        threads: 2,
        publish_rate: 10.0,
        report: true,
        ..loopback()
    };
    let gw = Gateway::start(cfg).unwrap();
    let addr = gw.local_addr();
    let mut ws = connect(addr);
    assert!(matches!(ws.read(), Ok(Message::Text(_))));
    let t0 = Instant::now();
    gw.shutdown();
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(100), "shutdown took {took:?}");
    // The connection was dropped and the listeners are gone.
    loop {
        match ws.read() {
            Ok(Message::Text(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                panic!("the connection was left open")
            }
            Err(_) => break,
        }
    }
    assert_eq!(
        TcpStream::connect(addr).unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused
    );
}

#[test]
fn idle_gateway_shuts_down_promptly() {
    let gw = Gateway::start(loopback()).unwrap();
    thread::sleep(Duration::from_millis(20));
    let t0 = Instant::now();
    gw.shutdown();
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn invalid_settings_are_refused() {
    let err = |cfg: ServeConfig| Gateway::start(cfg).unwrap_err();
    assert!(matches!(
        err(ServeConfig {
            threads: 0,
            ..loopback()
        }),
        ServerError::NoThreads
    ));
    assert!(matches!(
        err(ServeConfig { publish_rate: -1.0, ..loopback() }),
        ServerError::InvalidPublishRate(r) if r == -1.0
    ));
    assert!(matches!(
        err(ServeConfig {
            publish_rate: f64::NAN,
            ..loopback()
        }),
        ServerError::InvalidPublishRate(_)
    ));
    assert!(matches!(
        err(ServeConfig {
            reject: Some(Reject::Status(101)),
            ..loopback()
        }),
        ServerError::InvalidRejectStatus(101)
    ));
    assert!(matches!(
        err(ServeConfig {
            read_buffer: 0,
            ..loopback()
        }),
        ServerError::InvalidReadBuffer(0)
    ));
    assert!(matches!(
        err(ServeConfig {
            backlog: 0,
            ..loopback()
        }),
        ServerError::InvalidBacklog(0)
    ));
    for code in [0, 999, 1005, 1006, 1015, 2000, 5000] {
        assert!(matches!(
            err(ServeConfig {
                close_after: Some((Duration::from_secs(1), code)),
                ..loopback()
            }),
            ServerError::InvalidCloseCode(c) if c == code
        ));
    }
    assert!(matches!(
        err(ServeConfig {
            cpus: vec![usize::MAX],
            ..loopback()
        }),
        ServerError::InvalidCpu {
            cpu: usize::MAX,
            ..
        }
    ));
}

#[test]
fn port_held_by_another_listener_is_a_bind_error() {
    let holder = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = holder.local_addr().unwrap();
    match Gateway::start(ServeConfig {
        listen: addr,
        ..loopback()
    }) {
        Err(ServerError::Bind { addr: a, source }) => {
            assert_eq!(a, addr);
            assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
}

#[test]
fn defaults_are_documented_values() {
    let cfg = ServeConfig::default();
    assert_eq!(cfg.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!((cfg.threads, cfg.read_buffer, cfg.backlog), (1, 4096, 4096));
    assert!(cfg.cpus.is_empty() && cfg.reject.is_none() && !cfg.report);
    assert_eq!(cfg.publish_rate, 0.0);
    assert_eq!((cfg.drop_every, cfg.close_after), (0, None));
    assert!(cfg.acks.is_empty());
    assert_eq!((cfg.stream_rate, cfg.stream_gap_every), (0.0, 0));
    assert_eq!(
        (
            cfg.max_queued_bytes,
            cfg.max_message_size,
            cfg.max_unfinished_bytes
        ),
        (4 << 20, 1 << 20, 64 << 20)
    );
    assert_eq!(cfg.handshake_timeout, Duration::from_secs(10));
    assert!(!cfg.reuse_port);
}

#[test]
fn pinned_threads_serve() {
    let cpu = core_affinity::get_core_ids().unwrap()[0].id;
    let gw = Gateway::start(ServeConfig {
        threads: 2,
        cpus: vec![cpu],
        ..loopback()
    })
    .unwrap();
    let mut ws = connect(gw.local_addr());
    assert_eq!(
        echo(&mut ws, Message::text("pinned")),
        Message::text("pinned")
    );
}

/// Resident memory of this process in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
#[ignore = "opens 2 x 9,000 sockets in one process (needs `ulimit -n` >= 20000); run with --ignored"]
fn nine_thousand_connections_fit() {
    const N: usize = 9_000;
    let gw = Gateway::start(ServeConfig {
        threads: 2,
        ..loopback()
    })
    .unwrap();
    let addr = gw.local_addr();
    let before = rss_kib();
    let t0 = Instant::now();
    // Small client buffers too, so the measurement is dominated by the server's share.
    let small = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let mut clients: Vec<Client> = (0..N)
        .map(|_| {
            let url = format!("ws://{addr}/");
            tungstenite::client::client_with_config(url, tcp(addr), Some(small))
                .unwrap()
                .0
        })
        .collect();
    let connect_time = t0.elapsed();
    for ws in &mut clients {
        ws.send(Message::text("x")).unwrap();
    }
    for ws in &mut clients {
        assert_eq!(ws.read().unwrap(), Message::text("x"));
    }
    let stats = wait_for(&gw, |s| s.open == N as u64);
    assert_eq!(
        (stats.open, stats.msgs_in, stats.msgs_out),
        (N as u64, N as u64, N as u64)
    );
    let per_conn = (rss_kib() - before) * 1024 / N as u64;
    eprintln!("{N} connections in {connect_time:?}; {per_conn} bytes RSS per client+server pair");
}

// ---- channels, app commands, close_after, auth endpoint ----

/// The next message, which must be text.
fn next_text<S: Read + Write>(ws: &mut WebSocket<S>) -> String {
    match ws.read().unwrap() {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Connects until a connection lands on worker `thread` (SO_REUSEPORT picks the listener by a
/// hash of the client's port); the others stay open in `spares`.
fn connect_on(gw: &Gateway, thread: usize, spares: &mut Vec<Client>) -> Client {
    for _ in 0..200 {
        let before: Vec<u64> = gw.stats.iter().map(|t| t.accepted.load(Relaxed)).collect();
        let ws = connect(gw.local_addr());
        // `accepted` counts before the 101 is written; this only waits out visibility.
        let total = before.iter().sum::<u64>() + 1;
        let at = wait_for(gw, |s| s.accepted == total).accepted;
        assert_eq!(at, total);
        let landed = gw
            .stats
            .iter()
            .zip(&before)
            .position(|(t, &b)| t.accepted.load(Relaxed) > b)
            .unwrap();
        if landed == thread {
            return ws;
        }
        spares.push(ws);
    }
    panic!("200 connections and none on thread {thread}");
}

fn subscribe<S: Read + Write>(ws: &mut WebSocket<S>, channel: &str) {
    let req = format!(r#"{{"action":"subscribe","channel":"{channel}"}}"#);
    let ack = format!(r#"{{"type":"subscribed","channel":"{channel}"}}"#);
    assert_eq!(echo(ws, Message::text(req)), Message::text(ack));
}

fn publish_msg(channel: &str, seq: usize) -> Message {
    let pad = "✓x".repeat(seq * 37);
    Message::text(format!(
        r#"{{"action":"publish","channel":"{channel}","seq":{seq},"data":{{"pad":"{pad}"}}}}"#
    ))
}

#[test]
fn channel_publish_reaches_every_member_on_both_threads_in_order() {
    const K: usize = 50;
    let gw = Gateway::start(ServeConfig {
        threads: 2,
        ..loopback()
    })
    .unwrap();
    // Publisher and one subscriber on thread 0 (local delivery), one subscriber on thread 1
    // (relayed through thread 1's inbox).
    let mut spares = Vec::new();
    let mut publisher = connect_on(&gw, 0, &mut spares);
    let mut local = connect_on(&gw, 0, &mut spares);
    let mut remote = connect_on(&gw, 1, &mut spares);
    let mut gone = connect_on(&gw, 1, &mut spares);
    let mut elsewhere = connect(gw.local_addr());
    let opened = 5 + spares.len() as u64;
    for ws in [&mut local, &mut remote, &mut gone] {
        subscribe(ws, "news");
    }
    subscribe(&mut elsewhere, "sports");
    // A closed connection leaves its channels: nothing is delivered or counted for it.
    gone.close(None).unwrap();
    assert!(matches!(gone.read(), Ok(Message::Close(None))));
    assert_eq!(wait_for(&gw, |s| s.open == opened - 1).open, opened - 1);

    let msgs: Vec<Message> = (0..K).map(|i| publish_msg("news", i)).collect();
    for m in &msgs {
        publisher.write(m.clone()).unwrap();
    }
    publisher.flush().unwrap();
    // Byte-identical and in order on both threads.
    for ws in [&mut local, &mut remote] {
        for m in &msgs {
            assert_eq!(&ws.read().unwrap(), m);
        }
    }
    // The publisher got nothing: the next message it reads is the echo of its next one.
    assert_eq!(
        echo(&mut publisher, Message::text("done")),
        Message::text("done")
    );
    assert_eq!(
        echo(&mut elsewhere, Message::text("other channel")),
        Message::text("other channel")
    );

    // After unsubscribing, the remote member gets nothing more.
    assert_eq!(
        echo(
            &mut remote,
            Message::text(r#"{"type":"unsubscribe","channel":"news"}"#)
        ),
        Message::text(r#"{"type":"unsubscribed","channel":"news"}"#)
    );
    let last = publish_msg("news", K);
    publisher.send(last.clone()).unwrap();
    assert_eq!(local.read().unwrap(), last);
    // Relayed to thread 1 and found no member there (counted deliveries are exact).
    wait_for(&gw, |s| s.channel_publishes == K as u64 + 1);
    assert_eq!(
        echo(&mut remote, Message::text("probe")),
        Message::text("probe")
    );

    let k = K as u64;
    // In: 4 subscribes, K + 1 publishes, "done", "other channel", the unsubscribe, "probe".
    // Out: 4 acks, 2K + 1 deliveries, the 3 echoes, the unsubscribe ack.
    // Counters on the gateway's threads may trail the replies the clients already read (a
    // close being processed, a write counted after it completed): wait for all of them.
    let expected = GatewayStats {
        accepted: opened,
        open: opened - 1,
        msgs_in: k + 9,
        msgs_out: 2 * k + 9,
        channel_publishes: k + 1,
        channel_deliveries: 2 * k + 1,
        ..GatewayStats::default()
    };
    let stats = wait_for(&gw, |s| *s == expected);
    assert_eq!(stats, expected);
    // Both threads delivered: the local path and the relay were exercised.
    assert!(gw
        .stats
        .iter()
        .all(|t| t.channel_deliveries.load(Relaxed) >= k));
}

#[test]
fn publisher_that_is_a_member_gets_its_own_message() {
    let gw = Gateway::start(loopback()).unwrap();
    let mut ws = connect(gw.local_addr());
    subscribe(&mut ws, "self");
    let msg = publish_msg("self", 3);
    assert_eq!(echo(&mut ws, msg.clone()), msg);
    // A publish without a channel has nowhere to go: it is echoed.
    let stray = Message::text(r#"{"action":"publish","data":1}"#);
    assert_eq!(echo(&mut ws, stray.clone()), stray);
    let stats = gw.stats();
    assert_eq!((stats.channel_publishes, stats.channel_deliveries), (1, 1));
}

#[test]
fn drop_every_drops_exactly_every_nth_delivery_gateway_wide() {
    const SUBS: usize = 3;
    const PUBLISHES: usize = 20;
    let gw = Gateway::start(ServeConfig {
        threads: 2,
        drop_every: 10,
        ..loopback()
    })
    .unwrap();
    let mut subs: Vec<Client> = (0..SUBS).map(|_| connect(gw.local_addr())).collect();
    for ws in &mut subs {
        subscribe(ws, "lossy");
    }
    let mut publisher = connect(gw.local_addr());
    for i in 0..PUBLISHES {
        publisher.write(publish_msg("lossy", i)).unwrap();
    }
    publisher.flush().unwrap();
    let stats = wait_for(&gw, |s| s.channel_deliveries + s.channel_dropped == 60);
    assert_eq!(
        (
            stats.channel_publishes,
            stats.channel_deliveries,
            stats.channel_dropped,
            stats.channel_overflow
        ),
        (20, 54, 6, 0)
    );
    // Every delivery counted was queued before the probe's echo: read up to the echo.
    let mut received = 0;
    for ws in &mut subs {
        ws.send(Message::text("probe")).unwrap();
        let mut last_seq = None;
        loop {
            let text = next_text(ws);
            if text == "probe" {
                break;
            }
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            // Order kept, gaps only where deliveries were dropped.
            assert!(last_seq.is_none_or(|l| seq > l), "{last_seq:?} then {seq}");
            last_seq = Some(seq);
            received += 1;
        }
    }
    assert_eq!(received, 54);
}

#[test]
fn app_ping_gets_pong_and_resume_gets_resumed() {
    let gw = Gateway::start(loopback()).unwrap();
    let mut ws = connect(gw.local_addr());
    assert_eq!(
        echo(
            &mut ws,
            Message::text(r#"{"type":"ping","ts":1712345678901}"#)
        ),
        Message::text(r#"{"type":"pong","ts":1712345678901}"#)
    );
    assert_eq!(
        echo(&mut ws, Message::text(r#"{"action":"ping"}"#)),
        Message::text(r#"{"type":"pong"}"#)
    );
    assert_eq!(
        echo(
            &mut ws,
            Message::text(r#"{"action":"resume_session","sessionId":"abc","lastSequence":41}"#)
        ),
        Message::text(r#"{"type":"resumed","lastSequence":41}"#)
    );
    assert_eq!(
        echo(&mut ws, Message::text(r#"{"type":"resume_session"}"#)),
        Message::text(r#"{"type":"resumed"}"#)
    );
    // Anything else is still echoed.
    let pong = Message::text(r#"{"type":"pong","ts":1}"#);
    assert_eq!(echo(&mut ws, pong.clone()), pong);
    let stats = gw.stats();
    assert_eq!((stats.msgs_in, stats.msgs_out), (5, 5));
}

#[test]
fn close_after_closes_each_connection_with_the_code() {
    let after = Duration::from_millis(200);
    let gw = Gateway::start(ServeConfig {
        threads: 2,
        close_after: Some((after, 1012)),
        ..loopback()
    })
    .unwrap();
    let t0 = Instant::now();
    let mut clients: Vec<Client> = (0..4).map(|_| connect(gw.local_addr())).collect();
    for ws in &mut clients {
        assert_eq!(echo(ws, Message::text("before")), Message::text("before"));
    }
    for ws in &mut clients {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1012),
            other => panic!("expected close 1012, got {other:?}"),
        }
        // tungstenite answered the close; the server then ends the connection.
        assert!(matches!(ws.read(), Err(WsError::ConnectionClosed)));
    }
    assert!(t0.elapsed() >= after, "closed after {:?}", t0.elapsed());
    assert_eq!(
        wait_for(&gw, |s| s.open == 0),
        GatewayStats {
            accepted: 4,
            open: 0,
            msgs_in: 4,
            msgs_out: 4,
            server_closes: 4,
            ..GatewayStats::default()
        }
    );
}

/// Writes `request` (in two parts, so the server must wait for the rest) and reads the answer
/// to the end.
fn http_exchange<S: Read + Write>(mut stream: S, request: &str) -> Vec<u8> {
    let (head, tail) = request.split_at(request.len() / 2);
    stream.write_all(head.as_bytes()).unwrap();
    stream.flush().unwrap();
    thread::sleep(Duration::from_millis(20));
    stream.write_all(tail.as_bytes()).unwrap();
    stream.flush().unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    answer
}

const AUTH_GET: &str = "GET /v1/auth/token HTTP/1.1\r\nHost: localhost\r\n\r\n";
const AUTH_POST: &str = "POST /v1/auth/token?client=1 HTTP/1.1\r\nHost: localhost\r\n\
                         Content-Type: application/json\r\nContent-Length: 17\r\n\r\n\
                         {\"user\":\"storm\"}\n";

fn auth_spec(url: String, body: Option<&str>) -> crate::plan::auth::AuthSpec {
    crate::plan::auth::AuthSpec {
        url,
        body: body.map(str::to_owned),
        headers: Vec::new(),
        field: "token".to_owned(),
        cacerts: Vec::new(),
        insecure: false,
    }
}

#[test]
fn auth_endpoint_answers_with_the_demo_token() {
    // Auth is not an upgrade: it is answered even while upgrades are refused.
    for reject in [None, Some(Reject::Status(503))] {
        let gw = Gateway::start(ServeConfig {
            reject,
            ..loopback()
        })
        .unwrap();
        let addr = gw.local_addr();
        for request in [AUTH_GET, AUTH_POST] {
            assert_eq!(
                http_exchange(tcp(addr), request),
                &*request::auth_response(),
                "{request}"
            );
        }
        // The crate's own auth pre-step (ureq) reads the token.
        let url = format!("http://{addr}/v1/auth/token");
        for body in [None, Some(r#"{"user":"storm"}"#)] {
            let token = auth_spec(url.clone(), body).fetch().unwrap();
            assert_eq!(token, "sockstorm-demo-token");
        }
        let stats = wait_for(&gw, |s| s.auth_requests == 4);
        assert_eq!(
            (
                stats.accepted,
                stats.auth_requests,
                stats.handshakes_rejected
            ),
            (4, 4, 0)
        );
        if reject.is_none() {
            // WebSockets on the same port are unaffected.
            let mut ws = connect(addr);
            assert_eq!(echo(&mut ws, Message::text("ws")), Message::text("ws"));
        }
    }
}

#[test]
#[ignore = "2,000 subscribers x 1,000 messages (about 10 s of CPU); run with --ignored"]
fn channel_loss_at_scale_is_exactly_what_drop_every_dropped() {
    const SUBS: usize = 2_000;
    const PUBLISHERS: usize = 5;
    const EACH: usize = 200;
    let gw = Gateway::start(ServeConfig {
        threads: 2,
        drop_every: 7,
        ..loopback()
    })
    .unwrap();
    let addr = gw.local_addr();
    let mut subs: Vec<Client> = (0..SUBS).map(|_| connect(addr)).collect();
    for ws in &mut subs {
        ws.write(Message::text(r#"{"type":"subscribe","channel":"all"}"#))
            .unwrap();
        ws.flush().unwrap();
    }
    for ws in &mut subs {
        assert_eq!(next_text(ws), r#"{"type":"subscribed","channel":"all"}"#);
    }
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            thread::spawn(move || {
                let mut ws = connect(addr);
                for i in 0..EACH {
                    let text = format!(r#"{{"action":"publish","channel":"all","p":{p},"i":{i}}}"#);
                    ws.write(Message::text(text)).unwrap();
                }
                ws.flush().unwrap();
                ws
            })
        })
        .collect();
    let publishers: Vec<Client> = publishers.into_iter().map(|h| h.join().unwrap()).collect();
    let total = (SUBS * PUBLISHERS * EACH) as u64;
    let stats = wait_for(&gw, |s| s.channel_deliveries + s.channel_dropped == total);
    assert_eq!(stats.channel_deliveries + stats.channel_dropped, total);
    // All deliveries are queued: each subscriber's probe echo comes after its last one.
    for ws in &mut subs {
        ws.send(Message::text("end")).unwrap();
    }
    let mut received = 0u64;
    for ws in &mut subs {
        let mut last = [None::<u64>; PUBLISHERS];
        loop {
            let text = next_text(ws);
            if text == "end" {
                break;
            }
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let (p, i) = (v["p"].as_u64().unwrap() as usize, v["i"].as_u64().unwrap());
            assert!(
                last[p].is_none_or(|l| i > l),
                "publisher {p}: {:?} then {i}",
                last[p]
            );
            last[p] = Some(i);
            received += 1;
        }
    }
    let stats = gw.stats();
    assert_eq!(stats.channel_publishes, (PUBLISHERS * EACH) as u64);
    assert_eq!(stats.channel_overflow, 0);
    assert_eq!(stats.channel_dropped, total / 7);
    assert_eq!(total - received, stats.channel_dropped);
    drop(publishers);
}

// ---- wss:// ----

type TlsClient = WebSocket<StreamOwned<ClientConnection, TcpStream>>;

/// `base` served over TLS with a fresh test CA; `tune` adjusts the TLS options.
fn tls_gateway(
    base: ServeConfig,
    tune: impl FnOnce(&mut ServerTlsOptions, &TestCa),
) -> (Gateway, TestCa) {
    let ca = certs::generate_test_ca().unwrap();
    let mut opts = ServerTlsOptions::new(ca.chain.clone(), ca.key.clone_key());
    tune(&mut opts, &ca);
    let cfg = ServeConfig {
        tls: Some(server_tls_config(&opts).unwrap()),
        ..base
    };
    (Gateway::start(cfg).unwrap(), ca)
}

fn ca_certs(ca: &TestCa) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(ca.ca_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client trusting `ca`, speaking only `version`, without a client certificate; its
/// resumption state is its own in-memory cache.
fn tls_client_config(ca: &TestCa, version: &'static SupportedProtocolVersion) -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(certs::root_store("--cacert", &ca_certs(ca)).unwrap())
        .with_no_client_auth()
}

fn tls_stream(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::clone(config), name).unwrap();
    StreamOwned::new(conn, tcp(addr))
}

/// TLS handshake and WebSocket upgrade; the error is what the upgrade failed with.
fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<TlsClient, WsError> {
    let url = format!("wss://localhost:{}/ws", addr.port());
    match tungstenite::client::client(url, tls_stream(addr, config)) {
        Ok((ws, resp)) => {
            assert_eq!(resp.status().as_u16(), 101);
            Ok(ws)
        }
        Err(HandshakeError::Failure(e)) => Err(e),
        Err(HandshakeError::Interrupted(_)) => panic!("blocking client interrupted"),
    }
}

/// Runs the TLS handshake alone on a blocking client stream.
fn tls_handshake_only(s: &mut StreamOwned<ClientConnection, TcpStream>) {
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
}

fn tls_echo_and_close(version: &'static SupportedProtocolVersion) {
    let (gw, ca) = tls_gateway(loopback(), |_, _| {});
    let config = Arc::new(tls_client_config(&ca, version));
    let mut ws = tls_connect(gw.local_addr(), &config).unwrap();
    assert_eq!(ws.get_ref().conn.protocol_version(), Some(version.version));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let msgs = [
        Message::text("hello over TLS"),
        Message::text(r#"{"type":"subscribe","channel":"x"}"#),
        Message::binary(big),
    ];
    assert_eq!(echo(&mut ws, msgs[0].clone()), msgs[0]);
    assert_eq!(
        echo(&mut ws, msgs[1].clone()),
        Message::text(r#"{"type":"subscribed","channel":"x"}"#)
    );
    assert_eq!(echo(&mut ws, msgs[2].clone()), msgs[2]);
    assert_eq!(
        wait_for(&gw, |s| s.open == 1),
        GatewayStats {
            accepted: 1,
            open: 1,
            msgs_in: 3,
            msgs_out: 3,
            tls_handshakes_full: 1,
            ..GatewayStats::default()
        }
    );
    ws.close(None).unwrap();
    assert!(matches!(ws.read(), Ok(Message::Close(None))));
    // The gateway ended TLS with close_notify: a clean close, not a truncation error.
    assert!(matches!(ws.read(), Err(WsError::ConnectionClosed)));
    assert_eq!(wait_for(&gw, |s| s.open == 0).open, 0);
}

#[test]
fn wss_echo_and_close_over_tls13() {
    tls_echo_and_close(&TLS13);
}

#[test]
fn wss_echo_and_close_over_tls12() {
    tls_echo_and_close(&TLS12);
}

fn second_connection_resumes(version: &'static SupportedProtocolVersion) {
    let (gw, ca) = tls_gateway(loopback(), |_, _| {});
    let config = Arc::new(tls_client_config(&ca, version));
    let mut first = tls_connect(gw.local_addr(), &config).unwrap();
    // TLS 1.3 tickets come right after the handshake: read by the time the echo is.
    assert_eq!(echo(&mut first, Message::text("1")), Message::text("1"));
    assert_eq!(
        first.get_ref().conn.handshake_kind(),
        Some(HandshakeKind::Full)
    );
    let mut second = tls_connect(gw.local_addr(), &config).unwrap();
    assert_eq!(
        second.get_ref().conn.handshake_kind(),
        Some(HandshakeKind::Resumed)
    );
    assert_eq!(echo(&mut second, Message::text("2")), Message::text("2"));
    assert_eq!(
        wait_for(&gw, |s| s.open == 2),
        GatewayStats {
            accepted: 2,
            open: 2,
            msgs_in: 2,
            msgs_out: 2,
            tls_handshakes_full: 1,
            tls_handshakes_resumed: 1,
            ..GatewayStats::default()
        }
    );
}

#[test]
fn tls13_second_connection_resumes() {
    second_connection_resumes(&TLS13);
}

#[test]
fn tls12_second_connection_resumes() {
    second_connection_resumes(&TLS12);
}

/// The default in-memory store, counting the TLS 1.3 tickets it is given.
#[derive(Debug)]
struct CountingStore {
    inner: ClientSessionMemoryCache,
    tls13_tickets: AtomicUsize,
}

impl ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(name, group);
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(name, value);
    }
    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name);
    }
    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.tls13_tickets.fetch_add(1, Relaxed);
        self.inner.insert_tls13_ticket(name, value);
    }
    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

/// Tickets a fresh client receives from one full handshake, asking for `request`.
fn tickets_received(gw: &Gateway, ca: &TestCa, request: Option<TicketRequest>) -> usize {
    let store = Arc::new(CountingStore {
        inner: ClientSessionMemoryCache::new(16),
        tls13_tickets: AtomicUsize::new(0),
    });
    let mut config = tls_client_config(ca, &TLS13);
    config.resumption = Resumption::store(Arc::clone(&store) as Arc<dyn ClientSessionStore>);
    config.send_ticket_request = request;
    let mut ws = tls_connect(gw.local_addr(), &Arc::new(config)).unwrap();
    assert_eq!(echo(&mut ws, Message::text("t")), Message::text("t"));
    store.tls13_tickets.load(Relaxed)
}

#[test]
fn tls13_ticket_request_is_honoured_up_to_the_maximum() {
    let (gw, ca) = tls_gateway(loopback(), |_, _| {});
    assert_eq!(tickets_received(&gw, &ca, None), 2);
    let ask = |n| {
        Some(TicketRequest {
            new_session_count: n,
            resumption_count: n,
        })
    };
    assert_eq!(tickets_received(&gw, &ca, ask(8)), 8);
    assert_eq!(tickets_received(&gw, &ca, ask(20)), 8);
    assert_eq!(tickets_received(&gw, &ca, ask(1)), 1);

    let (gw, ca) = tls_gateway(loopback(), |opts, _| opts.tickets_per_handshake = 5);
    assert_eq!(tickets_received(&gw, &ca, None), 5);

    // No tickets means none, even when asked.
    let (gw, ca) = tls_gateway(loopback(), |opts, _| opts.tickets_per_handshake = 0);
    assert_eq!(tickets_received(&gw, &ca, ask(8)), 0);
}

#[test]
fn mutual_tls_accepts_issued_client_cert_and_refuses_none() {
    let (gw, ca) = tls_gateway(loopback(), |opts, ca| opts.client_ca = Some(ca_certs(ca)));
    let (cert_pem, key_pem) = certs::generate_client_identity(&ca).unwrap();
    let chain: Vec<_> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let with_cert = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13])
        .unwrap()
        .with_root_certificates(certs::root_store("--cacert", &ca_certs(&ca)).unwrap())
        .with_client_auth_cert(chain, key)
        .unwrap();
    let mut ws = tls_connect(gw.local_addr(), &Arc::new(with_cert)).unwrap();
    assert_eq!(echo(&mut ws, Message::text("mtls")), Message::text("mtls"));

    let without = Arc::new(tls_client_config(&ca, &TLS13));
    let err = tls_connect(gw.local_addr(), &without).unwrap_err();
    // TLS 1.3 clients finish before the server checks them: the refusal arrives as an alert.
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    assert_eq!(
        wait_for(&gw, |s| s.tls_failures == 1),
        GatewayStats {
            accepted: 2,
            open: 1,
            msgs_in: 1,
            msgs_out: 1,
            tls_handshakes_full: 1,
            tls_failures: 1,
            ..GatewayStats::default()
        }
    );
}

#[test]
fn plain_http_to_tls_port_is_dropped_and_counted() {
    let (gw, ca) = tls_gateway(loopback(), |_, _| {});
    let mut raw = tcp(gw.local_addr());
    raw.write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    // At most a TLS alert (record type 21), then the connection ends; the read timeout
    // turns a hang into a failure.
    match raw.read_to_end(&mut reply) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(reply.is_empty() || reply[0] == 21, "{reply:?}");
    assert_eq!(wait_for(&gw, |s| s.tls_failures == 1).tls_failures, 1);

    let config = Arc::new(tls_client_config(&ca, &TLS13));
    let mut ws = tls_connect(gw.local_addr(), &config).unwrap();
    assert_eq!(echo(&mut ws, Message::text("next")), Message::text("next"));
    assert_eq!(
        wait_for(&gw, |s| s.open == 1),
        GatewayStats {
            accepted: 2,
            open: 1,
            msgs_in: 1,
            msgs_out: 1,
            tls_handshakes_full: 1,
            tls_failures: 1,
            ..GatewayStats::default()
        }
    );
}

#[test]
fn handshake_only_clients_are_counted_and_dropped() {
    let (gw, ca) = tls_gateway(loopback(), |_, _| {});
    let addr = gw.local_addr();
    // TLS 1.2 stores the session during the handshake, so the second client resumes even
    // though the first never reads after it.
    let config = Arc::new(tls_client_config(&ca, &TLS12));

    // Full handshake, then close_notify and FIN.
    let mut first = tls_stream(addr, &config);
    tls_handshake_only(&mut first);
    first.conn.send_close_notify();
    first.conn.complete_io(&mut first.sock).unwrap();
    drop(first);

    // Resumed handshake, then RST.
    let mut second = tls_stream(addr, &config);
    tls_handshake_only(&mut second);
    assert_eq!(second.conn.handshake_kind(), Some(HandshakeKind::Resumed));
    assert_eq!(
        wait_for(&gw, |s| s.tls_handshakes_resumed == 1).tls_handshakes_resumed,
        1
    );
    socket2::SockRef::from(&second.sock)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(second);

    // Connect and close before saying anything.
    drop(tcp(addr));

    // Half a ClientHello, then RST.
    let mut hello = Vec::new();
    let name = ServerName::try_from("localhost").unwrap();
    ClientConnection::new(Arc::clone(&config), name)
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
    let mut raw = tcp(addr);
    raw.write_all(&hello[..hello.len() / 2]).unwrap();
    socket2::SockRef::from(&raw)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(raw);

    assert_eq!(
        wait_for(&gw, |s| s.accepted == 4 && s.tls_failures == 2),
        GatewayStats {
            accepted: 4,
            tls_handshakes_full: 1,
            tls_handshakes_resumed: 1,
            tls_failures: 2,
            ..GatewayStats::default()
        }
    );
}

#[test]
fn reject_status_is_answered_over_tls() {
    let base = ServeConfig {
        reject: Some(Reject::Status(503)),
        ..loopback()
    };
    let (gw, ca) = tls_gateway(base, |_, _| {});
    let config = Arc::new(tls_client_config(&ca, &TLS13));
    match tls_connect(gw.local_addr(), &config) {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        wait_for(&gw, |s| s.handshakes_rejected == 1),
        GatewayStats {
            accepted: 1,
            handshakes_rejected: 1,
            tls_handshakes_full: 1,
            ..GatewayStats::default()
        }
    );
}

#[test]
fn auth_endpoint_answers_over_tls() {
    let (gw, ca) = tls_gateway(loopback(), |_, _| {});
    let config = Arc::new(tls_client_config(&ca, &TLS13));
    let answer = http_exchange(tls_stream(gw.local_addr(), &config), AUTH_POST);
    assert_eq!(answer, &*request::auth_response());
    let mut spec = auth_spec(
        format!("https://localhost:{}/v1/auth/token", gw.local_addr().port()),
        None,
    );
    spec.cacerts = ca_certs(&ca);
    assert_eq!(spec.fetch().unwrap(), "sockstorm-demo-token");
    // The same listener still upgrades.
    let mut ws = tls_connect(gw.local_addr(), &config).unwrap();
    assert_eq!(echo(&mut ws, Message::text("wss")), Message::text("wss"));
    let stats = wait_for(&gw, |s| s.open == 1);
    assert_eq!(
        (
            stats.accepted,
            stats.auth_requests,
            stats.handshakes_rejected
        ),
        (3, 2, 0)
    );
}

// ---- ack routes and market-data streams ----

#[test]
fn ack_routes_answer_with_the_sent_id() {
    let gw = Gateway::start(loopback()).unwrap();
    let mut ws = connect(gw.local_addr());
    for (sent, answer) in [
        (
            r#"{"action":"apply_operation","documentId":"doc-1","opId":42,"operation":{"type":"insert_text"}}"#,
            r#"{"type":"operation_applied","opId":42}"#,
        ),
        (
            r#"{"action":"send_message","message":{"id":"k3j9x0","text":"hi","sentAt":1}}"#,
            r#"{"type":"message_ack","id":"k3j9x0"}"#,
        ),
        (
            r#"{"action":"rate","itemId":123,"score":5}"#,
            r#"{"type":"ack","itemId":123}"#,
        ),
        (
            r#"{"action":"join_document","documentId":"doc-1","presence":{"cursorColor":"blue"}}"#,
            r#"{"type":"document_joined","documentId":"doc-1"}"#,
        ),
        // No field: the reply has none.
        (
            r#"{"type":"apply_operation"}"#,
            r#"{"type":"operation_applied"}"#,
        ),
    ] {
        assert_eq!(echo(&mut ws, Message::text(sent)), Message::text(answer));
    }
    // Existing commands and echo traffic are unchanged.
    assert_eq!(
        echo(&mut ws, Message::text(r#"{"type":"ping","ts":5}"#)),
        Message::text(r#"{"type":"pong","ts":5}"#)
    );
    let plain = r#"{"type":"echo","opId":1}"#;
    assert_eq!(echo(&mut ws, Message::text(plain)), Message::text(plain));
    // Streams are off by default: a stream subscription is only acknowledged.
    assert_eq!(
        echo(
            &mut ws,
            Message::text(r#"{"op":"subscribe","streams":["a"]}"#)
        ),
        Message::text(r#"{"op":"subscribed","streams":["a"]}"#)
    );
    thread::sleep(Duration::from_millis(50));
    assert_eq!(echo(&mut ws, Message::text("x")), Message::text("x"));
    let stats = gw.stats();
    assert_eq!((stats.acks, stats.msgs_in, stats.msgs_out), (5, 9, 9));
    assert_eq!((stats.stream_msgs, stats.stream_subs_refused), (0, 0));
}

#[test]
fn configured_ack_routes_add_and_override() {
    let gw = Gateway::start(ServeConfig {
        acks: vec![
            "place_order=order_accepted:order.meta.id".parse().unwrap(),
            AckRoute::new("rate", "rated", "itemId"),
        ],
        ..loopback()
    })
    .unwrap();
    let mut ws = connect(gw.local_addr());
    assert_eq!(
        echo(
            &mut ws,
            Message::text(r#"{"action":"place_order","order":{"meta":{"id":[1,"a"]},"qty":2}}"#)
        ),
        Message::text(r#"{"type":"order_accepted","id":[1,"a"]}"#)
    );
    assert_eq!(
        echo(&mut ws, Message::text(r#"{"action":"rate","itemId":9}"#)),
        Message::text(r#"{"type":"rated","itemId":9}"#)
    );
    // The other built-in routes stay.
    assert_eq!(
        echo(
            &mut ws,
            Message::text(r#"{"action":"apply_operation","opId":1}"#)
        ),
        Message::text(r#"{"type":"operation_applied","opId":1}"#)
    );
    assert_eq!(gw.stats().acks, 3);

    for bad in [
        AckRoute::new("ping", "x", "y"),
        AckRoute::new("a", "", "y"),
        AckRoute::new("a", "b", "c..d"),
    ] {
        let cfg = ServeConfig {
            acks: vec![bad],
            ..loopback()
        };
        assert!(matches!(
            Gateway::start(cfg),
            Err(ServerError::InvalidAckRoute { .. })
        ));
    }
    for rate in [-1.0, f64::INFINITY] {
        let cfg = ServeConfig {
            stream_rate: rate,
            ..loopback()
        };
        assert!(matches!(
            Gateway::start(cfg),
            Err(ServerError::InvalidStreamRate(_))
        ));
    }
}

/// What a client saw of its streams.
#[derive(Debug, Default)]
struct SeenStreams {
    /// Stream → seqs received, in order.
    seqs: std::collections::BTreeMap<String, Vec<u64>>,
    /// Missing seqs before a received one (`seq - previous - 1`), over all streams.
    missing: u64,
    /// Quotes received.
    quotes: u64,
}

impl SeenStreams {
    /// Records the next message, checking a quote's shape; false for `{"op":"unsubscribed"}`.
    fn record<S: Read + Write>(&mut self, ws: &mut WebSocket<S>) -> bool {
        let text = next_text(ws);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if v["op"] == "unsubscribed" {
            return false;
        }
        assert_eq!(v["type"], "quote", "{text}");
        assert!(v["price"].as_f64().unwrap() > 0.0, "{text}");
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            v["ts"].as_u64().unwrap().abs_diff(now_ms) < 60_000,
            "{text}"
        );
        let seq = v["seq"].as_u64().unwrap();
        let seqs = self
            .seqs
            .entry(v["stream"].as_str().unwrap().to_owned())
            .or_default();
        let prev = seqs.last().copied().unwrap_or(0);
        assert!(seq > prev, "{text} after seq {prev}");
        self.missing += seq - prev - 1;
        self.quotes += 1;
        seqs.push(seq);
        true
    }

    /// Unsubscribes from everything and records what comes until the acknowledgement.
    fn finish<S: Read + Write>(&mut self, ws: &mut WebSocket<S>) {
        ws.send(Message::text(r#"{"op":"unsubscribe"}"#)).unwrap();
        while self.record(ws) {}
    }
}

#[test]
fn stream_quotes_skip_exactly_every_kth_seq() {
    let gw = Gateway::start(ServeConfig {
        stream_rate: 100.0,
        stream_gap_every: 10,
        ..loopback()
    })
    .unwrap();
    let mut ws = connect(gw.local_addr());
    let streams = ["quotes.NASDAQ:AAPL", "quotes.NYSE:IBM"];
    let sub = r#"{"op":"subscribe","streams":["quotes.NASDAQ:AAPL","quotes.NYSE:IBM"]}"#;
    assert_eq!(
        echo(&mut ws, Message::text(sub)),
        Message::text(r#"{"op":"subscribed","streams":["quotes.NASDAQ:AAPL","quotes.NYSE:IBM"]}"#)
    );
    let mut seen = SeenStreams::default();
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert!(seen.record(&mut ws));
    }
    seen.finish(&mut ws);

    assert_eq!(seen.seqs.len(), 2, "{seen:?}");
    for name in streams {
        let seqs = &seen.seqs[name];
        let last = *seqs.last().unwrap();
        assert!(last >= 50, "{name}: only {last} seqs in 1 s at 100/s");
        let expected: Vec<u64> = (1..=last).filter(|s| s % 10 != 0).collect();
        assert_eq!(seqs, &expected, "{name}");
    }
    let stats = gw.stats();
    assert_eq!(stats.stream_gaps_visible, seen.missing);
    assert_eq!(stats.stream_msgs, seen.quotes);
    // A skipped last seq (at most one per stream) is counted but not visible.
    assert!(
        (seen.missing..=seen.missing + 2).contains(&stats.stream_skipped),
        "{stats:?}"
    );
    assert_eq!((stats.channel_overflow, stats.stream_subs_refused), (0, 0));
    // Unsubscribed: nothing more comes.
    thread::sleep(Duration::from_millis(50));
    assert_eq!(echo(&mut ws, Message::text("x")), Message::text("x"));
    assert_eq!(gw.stats().stream_msgs, seen.quotes);
}

#[test]
fn stream_to_a_client_that_stops_reading_overflows_and_the_gaps_are_counted() {
    let gw = Gateway::start(ServeConfig {
        stream_rate: 200.0,
        ..loopback()
    })
    .unwrap();
    // A small receive window, so the gateway's output backs up quickly.
    let addr = gw.local_addr();
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let tcp: TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut ws, _) = tungstenite::client::client(format!("ws://{addr}/ws"), tcp).unwrap();
    // 64 streams are streamed; the 65th is acknowledged and counted.
    let names: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    let sub = serde_json::json!({"op": "subscribe", "streams": names}).to_string();
    let ack = serde_json::json!({"op": "subscribed", "streams": names}).to_string();
    assert_eq!(echo(&mut ws, Message::text(sub)), Message::text(ack));
    // Counted when the worker carries the subscription out, right after writing the ack.
    assert_eq!(
        wait_for(&gw, |s| s.stream_subs_refused > 0).stream_subs_refused,
        1
    );

    // Not reading: beyond 1,024 queued, quotes are dropped, not buffered.
    let stats = wait_for(&gw, |s| s.channel_overflow > 2_000);
    assert!(stats.channel_overflow > 2_000, "{stats:?}");
    // Read again for a while, so that every stream sends after its losses.
    let mut seen = SeenStreams::default();
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        assert!(seen.record(&mut ws));
    }
    seen.finish(&mut ws);
    assert_eq!(seen.seqs.len(), 64);
    let stats = gw.stats();
    assert_eq!(stats.stream_msgs, seen.quotes);
    assert_eq!(stats.stream_gaps_visible, seen.missing);
    assert!(
        seen.missing > 0 && seen.missing <= stats.channel_overflow,
        "{stats:?}"
    );
    assert_eq!(stats.stream_skipped, 0);
}

// ---- limits: queued output, message sizes, handshake timeout, shared ports ----

/// A publish of `size` bytes of payload to `channel`.
fn big_publish(channel: &str, size: usize) -> Message {
    let data = "x".repeat(size);
    Message::text(format!(
        r#"{{"action":"publish","channel":"{channel}","data":"{data}"}}"#
    ))
}

#[test]
fn deliveries_to_clients_that_stopped_reading_are_capped_by_bytes() {
    const SUBSCRIBERS: usize = 2;
    const PUBLISHES: usize = 1000;
    const SIZE: usize = 60_000;
    let gw = Gateway::start(ServeConfig {
        max_queued_bytes: 256 << 10,
        max_message_size: 64 << 10,
        ..loopback()
    })
    .unwrap();
    let addr = gw.local_addr();
    // They subscribe, then never read: 60 MB each is on its way, far beyond what the kernel's
    // socket buffers take, and well under the 1,024-message cap.
    let mut subs: Vec<Client> = (0..SUBSCRIBERS).map(|_| connect(addr)).collect();
    for ws in &mut subs {
        subscribe(ws, "big");
    }
    let mut publisher = connect(addr);
    for _ in 0..PUBLISHES {
        publisher.send(big_publish("big", SIZE)).unwrap();
    }
    let total = (SUBSCRIBERS * PUBLISHES) as u64;
    let s = wait_for(&gw, |s| s.channel_deliveries + s.channel_overflow == total);
    assert_eq!(s.channel_publishes, PUBLISHES as u64);
    assert_eq!(s.channel_deliveries + s.channel_overflow, total, "{s:?}");
    // What was queued is what the kernel took plus at most ~256 KiB per subscriber: far less
    // than 60 MB each.
    assert!(s.channel_overflow > total / 2, "{s:?}");
    // The subscribers stay and get what was queued, in order, once they read.
    assert_eq!(s.open, SUBSCRIBERS as u64 + 1);
    assert_eq!(
        echo(&mut publisher, Message::text("still here")),
        Message::text("still here")
    );
    let first = subs[0].read().unwrap();
    assert!(first.len() > SIZE, "{}", first.len());
}

/// The close frame the client gets next (pongs and data before it are skipped).
fn next_close<S: Read + Write>(ws: &mut WebSocket<S>) -> Option<tungstenite::protocol::CloseFrame> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame,
            Ok(_) => {}
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}

#[test]
fn message_over_the_size_limit_is_closed_with_1009() {
    let gw = Gateway::start(ServeConfig {
        max_message_size: 1000,
        max_queued_bytes: 1000,
        max_unfinished_bytes: 1000,
        ..loopback()
    })
    .unwrap();
    let mut ok = connect(gw.local_addr());
    let fits = Message::text("a".repeat(1000));
    assert_eq!(echo(&mut ok, fits.clone()), fits);
    let mut big = connect(gw.local_addr());
    big.send(Message::text("a".repeat(1001))).unwrap();
    let close = next_close(&mut big).unwrap();
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1009, "message too big")
    );
    let s = wait_for(&gw, |s| s.open == 1);
    assert_eq!((s.too_big_closes, s.protocol_errors, s.open), (1, 0, 1));
    // The other connection did not notice.
    assert_eq!(echo(&mut ok, fits.clone()), fits);
}

/// Sends the first, non-final frame of a text message, then a ping, and waits for the pong:
/// the gateway has read the fragment then.
fn send_fragment_and_sync(ws: &mut Client, data: Vec<u8>) -> Result<(), Option<u16>> {
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::Frame;
    let frame = Frame::message(data, OpCode::Data(Data::Text), false);
    ws.send(Message::Frame(frame)).unwrap();
    ws.send(Message::Ping("sync".into())).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Pong(p) if &p[..] == b"sync" => return Ok(()),
            Message::Close(c) => return Err(c.map(|c| u16::from(c.code))),
            _ => {}
        }
    }
}

#[test]
fn unfinished_messages_beyond_the_gateway_budget_close_the_connection_that_overspends() {
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::Frame;
    let gw = Gateway::start(ServeConfig {
        threads: 2,
        max_message_size: 64 << 10,
        max_unfinished_bytes: 100 << 10,
        ..loopback()
    })
    .unwrap();
    let addr = gw.local_addr();
    // 60 KB unfinished on one connection (the budget is gateway-wide: either thread).
    let mut a = connect(addr);
    send_fragment_and_sync(&mut a, vec![b'a'; 60_000]).unwrap();
    // Another 60 KB would make 120 KB > 100 KiB: that connection is closed with 1009 (after
    // the pong, written while the gateway was still reading).
    let mut b = connect(addr);
    let close = match send_fragment_and_sync(&mut b, vec![b'b'; 60_000]) {
        Ok(()) => next_close(&mut b).map(|c| u16::from(c.code)),
        Err(code) => code,
    };
    assert_eq!(close, Some(1009));
    let s = wait_for(&gw, |s| s.open == 1);
    assert_eq!((s.too_big_closes, s.open), (1, 1), "{s:?}");
    // The first one finishes its message and gets it back whole.
    let rest = Frame::message(&b"end"[..], OpCode::Data(Data::Continue), true);
    a.send(Message::Frame(rest)).unwrap();
    let mut whole = "a".repeat(60_000);
    whole.push_str("end");
    assert_eq!(a.read().unwrap(), Message::text(whole));
    // Its 60 KB are back in the budget: two more 45 KB fragments fit.
    let mut c = connect(addr);
    let mut d = connect(addr);
    send_fragment_and_sync(&mut c, vec![b'c'; 45_000]).unwrap();
    send_fragment_and_sync(&mut d, vec![b'd'; 45_000]).unwrap();
    assert_eq!(gw.stats().too_big_closes, 1);
}

#[test]
fn connections_that_do_not_upgrade_in_time_are_closed_and_counted() {
    let gw = Gateway::start(ServeConfig {
        handshake_timeout: Duration::from_millis(300),
        ..loopback()
    })
    .unwrap();
    let addr = gw.local_addr();
    let t0 = Instant::now();
    let mut idle: Vec<TcpStream> = (0..3).map(|_| tcp(addr)).collect();
    // Half a request head is no better than none.
    let mut partial = tcp(addr);
    partial
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    idle.push(partial);
    let mut ws = connect(addr);
    for sock in &mut idle {
        let mut buf = [0u8; 64];
        // EOF (or a reset) once the timeout closes it; the 10 s read timeout would fail.
        match sock.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let s = wait_for(&gw, |s| s.handshake_timeouts == 4);
    assert_eq!((s.handshake_timeouts, s.accepted, s.open), (4, 5, 1));
    assert!(fault_totals(&s).contains("handshake timeouts 4"));
    // The upgraded connection is not subject to it.
    thread::sleep(Duration::from_millis(400));
    assert_eq!(echo(&mut ws, Message::text("on")), Message::text("on"));
    assert_eq!(gw.stats().handshake_timeouts, 4);
}

#[test]
fn tls_connections_that_do_not_finish_the_handshake_in_time_are_closed() {
    let (gw, _ca) = tls_gateway(
        ServeConfig {
            handshake_timeout: Duration::from_millis(200),
            ..loopback()
        },
        |_, _| {},
    );
    let mut raw = tcp(gw.local_addr());
    let mut buf = Vec::new();
    match raw.read_to_end(&mut buf) {
        Ok(_) => assert!(buf.is_empty(), "{buf:?}"),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
    let s = wait_for(&gw, |s| s.handshake_timeouts == 1);
    assert_eq!((s.handshake_timeouts, s.tls_failures), (1, 0));
}

#[test]
fn a_second_gateway_on_the_same_port_is_refused_unless_it_asks_to_share() {
    let first = Gateway::start(ServeConfig {
        threads: 2,
        ..loopback()
    })
    .unwrap();
    let addr = first.local_addr();
    match Gateway::start(ServeConfig {
        listen: addr,
        ..loopback()
    }) {
        Err(e @ ServerError::PortShared { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&addr.to_string()) && msg.contains("--reuse-port"),
                "{msg}"
            );
        }
        other => panic!("expected PortShared, got {other:?}"),
    }
    let shared = Gateway::start(ServeConfig {
        listen: addr,
        reuse_port: true,
        ..loopback()
    })
    .unwrap();
    assert_eq!(shared.local_addr(), addr);
    drop(shared);
    // The first one still serves.
    let mut ws = connect(addr);
    assert_eq!(echo(&mut ws, Message::text("one")), Message::text("one"));
    drop(ws);
    first.shutdown();
    // Once it is gone, the port is free again.
    let again = Gateway::start(ServeConfig {
        listen: addr,
        ..loopback()
    })
    .unwrap();
    assert_eq!(again.local_addr(), addr);
}

#[test]
fn limits_that_cannot_hold_one_message_are_refused() {
    let err = |cfg: ServeConfig| Gateway::start(cfg).unwrap_err();
    assert!(matches!(
        err(ServeConfig {
            max_message_size: 0,
            ..loopback()
        }),
        ServerError::InvalidMaxMessageSize
    ));
    assert!(matches!(
        err(ServeConfig {
            max_queued_bytes: DEFAULT_MAX_MESSAGE_SIZE - 1,
            ..loopback()
        }),
        ServerError::LimitBelowMessageSize {
            flag: "--max-queued-bytes",
            ..
        }
    ));
    assert!(matches!(
        err(ServeConfig {
            max_unfinished_bytes: 10,
            max_message_size: 11,
            max_queued_bytes: 11,
            ..loopback()
        }),
        ServerError::LimitBelowMessageSize {
            flag: "--max-unfinished-bytes",
            value: 10,
            max_message_size: 11,
        }
    ));
    assert!(matches!(
        err(ServeConfig {
            handshake_timeout: Duration::ZERO,
            ..loopback()
        }),
        ServerError::InvalidHandshakeTimeout
    ));
}

/// A client offering permessage-deflate (tungstenite's client cannot inflate, so only the
/// 101's answer and what the gateway does with compressed input are looked at).
fn connect_offering_deflate(addr: SocketAddr) -> (Client, Option<String>) {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .unwrap(),
    );
    let (ws, resp) = tungstenite::client::client(req, tcp(addr)).unwrap();
    let answer = resp
        .headers()
        .get("Sec-WebSocket-Extensions")
        .map(|v| v.to_str().unwrap().to_owned());
    (ws, answer)
}

/// A compressed (RSV1) message frame.
fn compressed_frame(payload: Vec<u8>) -> Message {
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::Frame;
    let mut f = Frame::message(payload, OpCode::Data(Data::Binary), true);
    f.header_mut().rsv1 = true;
    Message::Frame(f)
}

#[test]
fn compression_is_agreed_only_when_on_and_a_bomb_or_bad_data_ends_only_its_connection() {
    use crate::proto::ws::deflate::{compressor, deflate_message, Offer};
    // Off: the offer is declined and the session is plain.
    let gw = Gateway::start(loopback()).unwrap();
    let (mut ws, answer) = connect_offering_deflate(gw.local_addr());
    assert_eq!(answer, None);
    let m = Message::text("plain");
    assert_eq!(echo(&mut ws, m.clone()), m);
    assert_eq!(gw.stats().compressed_sessions, 0);

    let gw = Gateway::start(ServeConfig {
        compression: Some(Offer::default()),
        ..loopback()
    })
    .unwrap();
    let addr = gw.local_addr();
    // A client that does not offer it gets a plain session.
    let mut plain = connect(addr);
    assert_eq!(echo(&mut plain, m.clone()), m);
    // 64 MiB of zeros in well under 1 MiB: closed with 1009 at the 1 MiB message limit.
    let (mut bomb, answer) = connect_offering_deflate(addr);
    assert_eq!(answer.as_deref(), Some("permessage-deflate"));
    let n = Offer::default().accept(b"permessage-deflate").unwrap();
    let mut z = Vec::new();
    deflate_message(&mut compressor(&n), &vec![0; 64 << 20], false, &mut z);
    assert!(z.len() < 1 << 20, "{}", z.len());
    bomb.send(compressed_frame(z)).unwrap();
    let close = next_close(&mut bomb).unwrap();
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1009, "message too big")
    );
    // Data that does not inflate: the connection is dropped as a protocol error.
    let (mut bad, _) = connect_offering_deflate(addr);
    bad.send(compressed_frame(vec![0xff; 16])).unwrap();
    assert!(bad.read().is_err());
    let s = wait_for(&gw, |s| s.open == 1 && s.protocol_errors == 1);
    assert_eq!(
        (
            s.compressed_sessions,
            s.too_big_closes,
            s.protocol_errors,
            s.open
        ),
        (2, 1, 1, 1),
        "{s:?}"
    );
    // The plain client did not notice.
    assert_eq!(echo(&mut plain, m.clone()), m);
}
