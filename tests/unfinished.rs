//! Work a run planned but could not finish is an outcome, never silence: attempts the end of
//! the run cut short, a run that established nothing, messages a backlogged socket would not
//! take. Raw TCP servers that misbehave one way each, over loopback.

mod common;

use common::child::Run;
use common::*;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// The longest a run here may take (each plans 2 s at most) before it is killed as hung.
const LIMIT: Duration = Duration::from_secs(30);

/// A server that accepts TCP and never answers (nor reads); its sockets stay open until the
/// test process ends.
fn silent_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    addr
}

#[test]
fn a_silent_server_is_not_a_success() {
    // The run ends before the connect timeout would fail the attempts.
    let _g = lock();
    let addr = silent_server();
    let out = json_path("silent-server");
    let o = Run::start(
        "silent-server",
        &[
            "run",
            &url(addr),
            "-c",
            "4",
            "-d",
            "1s",
            "--connect-timeout",
            "1500ms",
            "--json",
            out.to_str().unwrap(),
        ],
    )
    .finish(LIMIT);
    let stdout = &o.stdout;
    assert_eq!(o.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains(
            "4 attempts still connecting when the run ended: the server accepted TCP but never answered within the run"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("no WebSocket session was established"),
        "{stdout}"
    );
    assert!(!stdout.contains("failures: none\n"), "{stdout}");
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), 0);
    assert_eq!(counter(&v, "abandoned"), 4);
    assert_eq!(counter(&v, "abandoned_accepted"), 4);
    assert_eq!(counter(&v, "abandoned_stalled"), 4);
}

/// A server that completes the WebSocket upgrade (a correct `Sec-WebSocket-Accept`), then
/// never reads again; its receive buffer is small, so the client's sends back up at once.
fn non_reading_server() -> SocketAddr {
    use std::io::{Read, Write};
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(16).unwrap();
    let l: TcpListener = sock.into();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for mut s in l.incoming().flatten() {
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req);
            let Some(key) = text.lines().find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-key"))
                    .map(|(_, v)| v.trim().to_owned())
            }) else {
                continue;
            };
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                tungstenite::handshake::derive_accept_key(key.as_bytes())
            );
            let _ = s.write_all(resp.as_bytes());
            held.push(s);
        }
    });
    addr
}

#[test]
fn messages_a_non_reading_server_never_took_are_counted_unsent() {
    let _g = lock();
    let addr = non_reading_server();
    let out = json_path("non-reading");
    let msg = write_file("non-reading-msg", &"x".repeat(32 * 1024));
    let msg_arg = format!("@{}", msg.display());
    let (conns, rate, secs) = (2u64, 200u64, 2u64);
    let o = Run::start(
        "non-reading",
        &[
            "run",
            &url(addr),
            "-c",
            &conns.to_string(),
            "-d",
            &format!("{secs}s"),
            "--message",
            &msg_arg,
            "--message-rate",
            &rate.to_string(),
            "--drain",
            "200ms",
            "--close-wait",
            "200ms",
            "--json",
            out.to_str().unwrap(),
        ],
    )
    .finish(LIMIT);
    let stdout = &o.stdout;
    assert_eq!(o.code(), Some(3), "{stdout}");
    assert!(stdout.contains("send backlog: "), "{stdout}");
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), conns);
    let (sent, unsent) = (counter(&v, "msgs_sent"), counter(&v, "msgs_unsent"));
    assert!(unsent > sent, "sent {sent}, unsent {unsent}");
    // Every planned message is accounted for: sent, or unsent (within a message or two per
    // connection at the run's edges).
    let planned = conns * rate * secs;
    assert!(
        sent + unsent >= planned * 9 / 10 && sent + unsent <= planned + 2 * conns,
        "planned {planned}, sent {sent}, unsent {unsent}"
    );
}

/// Named requests and heartbeats against a server that stops reading: the requests the
/// socket never took are `requests_unsent` (per request too), not sent and so not
/// unanswered; heartbeats due while one is outstanding are `heartbeats_skipped`.
#[test]
fn named_requests_a_non_reading_server_never_took_are_counted_unsent() {
    let _g = lock();
    let addr = non_reading_server();
    let out = json_path("non-reading-requests");
    let msg = write_file("non-reading-req", &"y".repeat(32 * 1024));
    let req = format!("big=@{}", msg.display());
    let (conns, rate, secs) = (2u64, 200u64, 2u64);
    let o = Run::start(
        "non-reading-requests",
        &[
            "run",
            &url(addr),
            "-c",
            &conns.to_string(),
            "-d",
            &format!("{secs}s"),
            "--request",
            &req,
            "--request-rate",
            &format!("big={rate}"),
            "--request-reply",
            "big=echo",
            "--heartbeat-interval",
            "100ms",
            "--heartbeat-timeout",
            "60s",
            "--drain",
            "200ms",
            "--close-wait",
            "200ms",
            "--json",
            out.to_str().unwrap(),
        ],
    )
    .finish(LIMIT);
    let stdout = &o.stdout;
    assert_eq!(o.code(), Some(3), "{stdout}");
    assert!(stdout.contains("named requests"), "{stdout}");
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), conns);
    let big = &v["requests"]["big"];
    let n = |k: &str| big[k].as_u64().unwrap();
    let (sent, unsent) = (n("sent"), n("unsent"));
    assert!(unsent > sent, "{big}");
    assert_eq!(counter(&v, "requests_unsent"), unsent);
    assert_eq!(counter(&v, "requests_sent"), sent);
    // Nothing is answered; every request sent is unanswered, none unsent is.
    assert_eq!((n("answered"), n("unanswered")), (0, sent), "{big}");
    let planned = conns * rate * secs;
    assert!(
        sent + unsent >= planned * 9 / 10 && sent + unsent <= planned + 2 * conns,
        "planned {planned}: {big}"
    );
    // One heartbeat each goes out and is never answered: those due after it are skipped
    // (counted when the connection's timer fires, which a stuck socket makes rarer than the
    // heartbeat interval).
    assert!(
        counter(&v, "heartbeats_sent") <= conns * 2,
        "{}",
        v["counters"]
    );
    assert!(
        counter(&v, "heartbeats_skipped") >= conns,
        "{}",
        v["counters"]
    );
}
