//! Whole-gateway tests over loopback with tungstenite's blocking client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::error::ProtocolError;
use tungstenite::handshake::HandshakeError;
use tungstenite::{Error as WsError, Message, WebSocket};

use super::*;

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

fn echo(ws: &mut Client, msg: Message) -> Message {
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
            handshakes_rejected: 0
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
    // Mentions "subscribe" but is not a subscribe request: echoed.
    let other = Message::text(r#"{"type":"unsubscribe","channel":"prices"}"#);
    assert_eq!(echo(&mut ws, other.clone()), other);
    // A binary subscribe is just bytes: echoed.
    let bin = Message::binary(br#"{"type":"subscribe"}"#.to_vec());
    assert_eq!(echo(&mut ws, bin.clone()), bin);
    let stats = gw.stats();
    assert_eq!((stats.msgs_in, stats.msgs_out), (4, 4));
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
            handshakes_rejected: 1
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
            handshakes_rejected: 1
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
            handshakes_rejected: 0
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
            handshakes_rejected: 2
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
