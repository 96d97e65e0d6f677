//! Work a run planned but could not finish is an outcome, never silence: attempts the end of
//! the run cut short, a run that established nothing, messages a backlogged socket would not
//! take. Raw TCP servers that misbehave one way each, over loopback.

mod common;

use common::*;
use std::net::{SocketAddr, TcpListener, TcpStream};

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
    let o = sockstorm(&[
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
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{stdout}");
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
