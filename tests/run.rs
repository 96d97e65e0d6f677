//! Whole runs over loopback: the real binary against the built-in gateway (started in this
//! test process through the library), with exact accounting of every connection and message.

mod common;

use common::*;
use serde_json::Value;
use sockstorm::server::{Gateway, Reject, ServeConfig};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn five_thousand_echo_connections_all_accounted_for() {
    let _g = lock();
    let gw = gateway(None);
    let out = json_path("echo5000");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "-c",
        "5000",
        "--connect-rate",
        "5000",
        "-d",
        "5s",
        "--send-on-open",
        r#"{"type":"subscribe","channel":"t"}"#,
        "--message",
        "hello sockstorm",
        "--message-rate",
        "2",
        "--ping-interval",
        "1s",
        "--no-reconnect",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = read_json(&out);
    assert_eq!(v["schema_version"], 2);
    assert_eq!(counter(&v, "attempts"), 5000);
    assert_eq!(counter(&v, "established"), 5000);
    assert_eq!(counter(&v, "connect_failed"), 0);
    assert_eq!(counter(&v, "sessions_dropped"), 0);
    assert_eq!(
        v["failures"].as_object().unwrap().len(),
        0,
        "{}",
        v["failures"]
    );
    let sent = counter(&v, "msgs_sent");
    // Each connection sends ~2/s for ~4 s of its 5 s life (ramp takes 1 s).
    assert!(sent >= 5000 * 6, "sent {sent}");
    assert_eq!(
        counter(&v, "msgs_received"),
        sent,
        "every message echoed and matched"
    );
    assert_eq!(counter(&v, "msgs_unanswered"), 0);
    assert_eq!(counter(&v, "on_open_sent"), 5000);
    assert_eq!(
        counter(&v, "msgs_pushed"),
        5000,
        "one subscribe ack per connection"
    );
    assert_eq!(counter(&v, "closed_clean"), 5000);
    assert_eq!(v["close_codes"]["1000"], 5000);
    assert_eq!(v["histograms"]["ws_connecting"]["count"], 5000);
    assert_eq!(v["histograms"]["tcp_connect"]["count"], 5000);
    assert_eq!(v["histograms"]["ws_msg_rtt"]["count"].as_u64(), Some(sent));
    assert_eq!(
        v["histograms"]["ws_ping"]["count"].as_u64(),
        Some(counter(&v, "pongs_received"))
    );
    assert!(counter(&v, "pings_sent") >= 5000 * 3);
    assert_eq!(counter(&v, "pongs_received"), counter(&v, "pings_sent"));
    // The gateway saw exactly what we sent.
    let s = gw.stats();
    assert_eq!(s.accepted, 5000);
    assert_eq!(s.msgs_in, sent + 5000);
    assert_eq!(s.msgs_out, sent + 5000);
    assert!(stdout.contains("ws_msg_rtt"), "{stdout}");
    assert!(stdout.contains("failures: none"));
    // Loopback spreading: 5000 connections use 3 source addresses.
    assert_eq!(v["settings"]["source_ips"].as_array().unwrap().len(), 3);
    gw.shutdown();
}

#[test]
fn port_without_listener_counts_every_attempt_as_refused() {
    let _g = lock();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = json_path("refused");
    let o = sockstorm(&[
        "run",
        &format!("ws://127.0.0.1:{port}/"),
        "-c",
        "300",
        "--connect-rate",
        "3000",
        "-d",
        "1s",
        "--no-reconnect",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "completed with failures");
    let v = read_json(&out);
    assert_eq!(counter(&v, "attempts"), 300);
    assert_eq!(counter(&v, "connect_failed"), 300);
    assert_eq!(counter(&v, "established"), 0);
    assert_eq!(v["failures"]["refused"], 300);
    assert_eq!(v["failures"].as_object().unwrap().len(), 1);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("connection refused: nothing listens"),
        "{stdout}"
    );
}

#[test]
fn reconnect_holds_the_target_and_counts_each_retry() {
    let _g = lock();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = json_path("reconnect");
    let o = sockstorm(&[
        "run",
        &format!("ws://127.0.0.1:{port}/"),
        "-c",
        "50",
        "--connect-rate",
        "200",
        "-d",
        "2s",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let v = read_json(&out);
    let attempts = counter(&v, "attempts");
    // 200/s for 2 s, every failure retried at the connect rate.
    assert!((380..=401).contains(&attempts), "{attempts}");
    assert_eq!(counter(&v, "reconnects"), attempts - 50);
    assert_eq!(v["failures"]["refused"].as_u64(), Some(attempts));
}

#[test]
fn gateway_answering_503_is_counted_by_status() {
    let _g = lock();
    let gw = gateway(Some(Reject::Status(503)));
    let out = json_path("503");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "-c",
        "200",
        "--connect-rate",
        "2000",
        "-d",
        "1s",
        "--no-reconnect",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let v = read_json(&out);
    assert_eq!(v["failures"]["http_503"], 200);
    assert_eq!(counter(&v, "established"), 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("server answered HTTP 503 instead of 101"));
    gw.shutdown();
}

#[test]
fn server_closing_during_handshake_is_counted() {
    let _g = lock();
    let gw = gateway(Some(Reject::Close));
    let out = json_path("close");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "-c",
        "150",
        "--connect-rate",
        "3000",
        "-d",
        "1s",
        "--no-reconnect",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let v = read_json(&out);
    assert_eq!(v["failures"]["closed_during_handshake"], 150);
    assert_eq!(counter(&v, "attempts"), 150);
    gw.shutdown();
}

#[test]
fn ctrl_c_stops_within_two_seconds_and_keeps_the_results() {
    let _g = lock();
    let gw = gateway(None);
    let out = json_path("sigint");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockstorm"))
        .args([
            "run",
            &url(gw.local_addr()),
            "-c",
            "500",
            "--connect-rate",
            "5000",
            "-d",
            "60s",
            "--message",
            "x",
            "--message-rate",
            "20",
            "-q",
            "--json",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    // SAFETY (test): signalling our own child process.
    let rc = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t.elapsed();
    assert!(took < Duration::from_millis(2000), "stopped in {took:?}");
    assert_eq!(status.code(), Some(130));
    let v = read_json(&out);
    assert_eq!(v["interrupted"], true);
    assert_eq!(counter(&v, "established"), 500);
    let sent = counter(&v, "msgs_sent");
    assert!(sent > 500 * 10);
    assert_eq!(
        sent,
        counter(&v, "msgs_received") + counter(&v, "msgs_unanswered")
    );
    gw.shutdown();
}

#[test]
fn bad_input_gets_a_clear_error_and_exit_code() {
    let cases: [(&[&str], i32, &str); 7] = [
        (
            &["run", "ws://127.0.0.1:1/", "--connect-rate", "0"],
            2,
            "--connect-rate",
        ),
        (
            &["run", "ws://127.0.0.1:1/", "--drain", "1e13"],
            2,
            "30-day maximum",
        ),
        (
            &["run", "ws://127.0.0.1:1/", "--connect-rate", "fast"],
            2,
            "invalid value 'fast'",
        ),
        (
            &["run", "ws://127.0.0.1:1/", "-d", "10x"],
            2,
            "invalid duration",
        ),
        (&["run", "http://127.0.0.1:1/"], 2, "unsupported scheme"),
        (
            &["run", "ws://127.0.0.1:1/", "-c", "50000"],
            1,
            "RLIMIT_NOFILE",
        ),
        (
            &[
                "run",
                "ws://127.0.0.1:1/",
                "--source-ip",
                "127.0.0.9-127.0.0.1",
            ],
            2,
            "runs backwards",
        ),
    ];
    for (args, code, needle) in cases {
        let o = sockstorm(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn demo_runs_end_to_end_with_the_in_process_gateway() {
    let _g = lock();
    let out = json_path("demo");
    let o = sockstorm(&[
        "demo",
        "-c",
        "400",
        "-d",
        "3s",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), 400);
    // Echo sessions: every message matched, every subscribe acked and timed.
    let echo = &v["scenarios"][0];
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["counters"]["established"], 358);
    assert_eq!(
        echo["counters"]["msgs_received"],
        echo["counters"]["msgs_sent"]
    );
    assert_eq!(echo["counters"]["msgs_pushed"], 358, "subscribe acks");
    assert_eq!(
        counter(&v, "expects_met"),
        398,
        "each ack expected and timed"
    );
    // Fan-out: 40 subscribers, 2 publishers; everything owed was delivered.
    assert_eq!(v["scenarios"][1]["counters"]["established"], 40);
    assert_eq!(v["scenarios"][2]["counters"]["established"], 2);
    let f = &v["fanout"];
    assert_eq!(f["subscriber_sessions"], 40);
    let published = f["published"].as_u64().unwrap();
    assert!(published >= 4, "{f}");
    assert_eq!(f["owed"].as_u64(), Some(published * 40));
    assert_eq!(f["lost"], 0);
}

#[test]
fn doctor_reports_limits_and_verdict() {
    let o = sockstorm(&["doctor", "-c", "1000"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("RLIMIT_NOFILE"), "{text}");
    assert!(text.contains("ip_local_port_range"), "{text}");
    let o = sockstorm(&["doctor", "-c", "5000000", "--target", "127.0.0.1:80"]);
    assert_eq!(o.status.code(), Some(3), "5M connections do not fit here");
}

#[test]
fn fan_out_pushes_acks_latency_and_pings() {
    let _g = lock();
    let gw = Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        publish_rate: 20.0,
        ..ServeConfig::default()
    })
    .unwrap();
    let out = json_path("fanout");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "-c",
        "200",
        "--connect-rate",
        "2000",
        "-d",
        "3s",
        "--ping-interval",
        "500ms",
        "--send-on-open",
        r#"{"type":"subscribe","channel":"prices"}"#,
        "--expect",
        "json:type=subscribed",
        "--latency-from",
        "json:ts_us",
        "--latency-unit",
        "us",
        "--no-reconnect",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let v = read_json(&out);
    // Every subscription acknowledged and timed; every event's one-way latency recorded.
    assert_eq!(counter(&v, "expects_met"), 200);
    assert_eq!(v["histograms"]["ws_subscribe_ack"]["count"], 200);
    let events = counter(&v, "msgs_pushed") - 200;
    assert_eq!(
        v["histograms"]["ws_msg_latency"]["count"].as_u64(),
        Some(events)
    );
    assert_eq!(counter(&v, "latency_clock_skew"), 0);
    // The wall clock was re-anchored each second without a step; nothing was excluded.
    assert_eq!(v["clock"]["clock_steps"], 0, "{}", v["clock"]);
    assert_eq!(v["clock"]["latency_clock_skew"], 0);
    assert_eq!(v["clock"]["latency_samples"].as_u64(), Some(events));
    assert!(v["clock"]["warning"].is_null());
    // The timeline shows the pushed events and their latency each second, not `0/0`.
    let timeline = v["timeline"].as_array().unwrap();
    let pushed_per_s: u64 = timeline
        .iter()
        .map(|x| x["msgs_pushed"].as_u64().unwrap())
        .sum();
    assert!(pushed_per_s > 0 && pushed_per_s <= counter(&v, "msgs_pushed"));
    assert!(
        timeline
            .iter()
            .any(|x| x["latency_p99_us"].as_u64().is_some()),
        "{timeline:?}"
    );
    assert!(
        v["histograms"]["ws_msg_latency"]["p50_us"]
            .as_u64()
            .unwrap()
            < 100_000
    );
    let pushed = counter(&v, "msgs_pushed");
    let s = gw.stats();
    // Every event the gateway published reached us and was counted (events that crossed our
    // close frame count as late), none taken for an echo.
    assert_eq!(pushed + counter(&v, "msgs_late"), s.msgs_out);
    assert!(pushed >= 200 + 200 * 20 * 2, "{pushed}");
    assert_eq!(counter(&v, "msgs_sent"), 0);
    assert_eq!(counter(&v, "msgs_received"), 0);
    assert_eq!(counter(&v, "pongs_received"), counter(&v, "pings_sent"));
    gw.shutdown();
}

/// A server nobody should write: answers each connection with junk (random bytes, a bare
/// HTTP 200, a valid 101 followed by garbage frames, or nothing) and hangs up.
fn junk_server(connections: usize) -> (SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for k in 0..connections {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut req = [0u8; 2048];
            let n = s.read(&mut req).unwrap_or(0);
            let text = String::from_utf8_lossy(&req[..n]).to_string();
            let key = text
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap_or("")
                .to_owned();
            let mut junk = Vec::new();
            for _ in 0..64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                junk.extend_from_slice(&seed.to_le_bytes());
            }
            let reply: Vec<u8> = match k % 4 {
                0 => junk,
                1 => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi".to_vec(),
                2 => {
                    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
                    let mut r = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").into_bytes();
                    r.extend_from_slice(&junk);
                    r
                }
                _ => Vec::new(),
            };
            let _ = s.write_all(&reply);
        }
    });
    (addr, h)
}

#[test]
fn junk_from_the_server_is_counted_never_a_panic() {
    let _g = lock();
    let (addr, server) = junk_server(200);
    let out = json_path("junk");
    let o = sockstorm(&[
        "run",
        &format!("ws://{addr}/"),
        "-c",
        "200",
        "--connect-rate",
        "2000",
        "-d",
        "2s",
        "--no-reconnect",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    server.join().unwrap();
    let v = read_json(&out);
    assert_eq!(counter(&v, "attempts"), 200);
    let failures: u64 = v["failures"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    // Every connection failed one way or another, each counted once.
    assert_eq!(failures, 200, "{}", v["failures"]);
    assert_eq!(
        counter(&v, "connect_failed") + counter(&v, "sessions_dropped"),
        200
    );
    assert_eq!(v["failures"]["http_200"], 50);
    assert_eq!(v["failures"]["closed_during_handshake"], 50);
}

#[test]
fn rst_close_headers_and_secrets_stay_out_of_reports() {
    let _g = lock();
    let gw = gateway(None);
    let out = json_path("rst");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "-c",
        "300",
        "--connect-rate",
        "3000",
        "-d",
        "1500ms",
        "--linger-zero",
        "-H",
        "Authorization: Bearer s3cret-t0ken",
        "--subprotocol",
        "chat",
        "--source-ip",
        "127.0.0.7-127.0.0.8",
        "--socket-setup",
        "syscalls",
        "--message",
        "m",
        "--message-rate",
        "4",
        "--no-reconnect",
        "--json",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    for s in [&text, &stdout.to_string(), &stderr.to_string()] {
        assert!(!s.contains("s3cret"), "a header value leaked: {s}");
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["settings"]["header_names"][0], "Authorization");
    assert_eq!(v["settings"]["source_ips"].as_array().unwrap().len(), 2);
    assert_eq!(v["settings"]["linger_zero"], true);
    assert_eq!(v["settings"]["socket_setup"], "syscalls");
    assert_eq!(counter(&v, "established"), 300);
    assert_eq!(counter(&v, "msgs_received"), counter(&v, "msgs_sent"));
    assert_eq!(gw.stats().accepted, 300);
    gw.shutdown();
}

#[test]
fn thresholds_pass_fail_and_exit_99() {
    let _g = lock();
    let gw = gateway(None);
    let out = json_path("thresholds");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run".to_owned(),
            url(gw.local_addr()),
            "-c".into(),
            "200".into(),
            "--message".into(),
            "hi".into(),
            "--no-reconnect".into(),
            "-q".into(),
            "--json".into(),
            out.to_str().unwrap().into(),
            "--threshold".into(),
            "ws_connecting: p(95)<5s".into(),
            "--threshold".into(),
            "connect_errors: rate<0.1%".into(),
            "--threshold".into(),
            "ws_msgs_received: count>0".into(),
        ];
        if !extra.contains(&"-d") {
            args.extend(["-d".to_owned(), "2s".to_owned()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        sockstorm(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let o = run(&[]);
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("thresholds: all passed"));
    let v = read_json(&out);
    let t = v["thresholds"].as_array().unwrap();
    assert_eq!(t.len(), 3);
    assert!(t.iter().all(|t| t["pass"] == true));
    assert_eq!(
        t[2]["actual"].as_f64(),
        Some(counter(&v, "msgs_received") as f64)
    );
    // One impossible criterion: the run completes, the report says which, exit code 99.
    let o = run(&["--threshold", "ws_connecting: p(99)<1us"]);
    assert_eq!(o.status.code(), Some(99));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("thresholds: 1 of 4 FAILED"), "{stdout}");
    assert!(
        stdout.contains("FAIL  ws_connecting: p(99)<1us"),
        "{stdout}"
    );
    assert_eq!(read_json(&out)["thresholds"][3]["pass"], false);
    // With --abort-on-fail the run stops at the first failing check instead of running on.
    let t0 = Instant::now();
    let o = run(&[
        "-d",
        "20s",
        "--threshold",
        "ws_connecting: p(99)<1us",
        "--threshold",
        "ws_msg_rtt: p(50)<1s",
        "--abort-on-fail",
        "1s",
    ]);
    assert_eq!(o.status.code(), Some(99));
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    let v = read_json(&out);
    assert_eq!(
        v["aborted_by_threshold"]["expr"],
        "ws_connecting: p(99)<1us"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("run stopped early at"));
    assert_eq!(
        counter(&v, "established"),
        200,
        "results up to the stop are kept"
    );
    // A bad expression stops before any connection, naming the fix.
    let o = run(&["--threshold", "ws_conecting: p(95)<1s"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown metric `ws_conecting`"));
    gw.shutdown();
}

/// Upgrades every connection, then reads and never answers anything (no pongs).
fn silent_server(n: usize) -> (SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..n {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut buf = [0u8; 4096];
            let len = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..len]).to_string();
            let Some(key) = req
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            else {
                continue;
            };
            let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
            let _ = write!(
                s,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            held.push(s);
        }
        // Drain until every client has gone.
        for mut s in held {
            let mut buf = [0u8; 4096];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    (addr, h)
}

#[test]
fn unanswered_pings_end_sessions_as_heartbeat_timeout() {
    let _g = lock();
    let (addr, h) = silent_server(20);
    let out = json_path("heartbeat");
    let o = sockstorm(&[
        "run",
        &url(addr),
        "-c",
        "20",
        "-d",
        "2s",
        "--ping-interval",
        "300ms",
        "--pong-timeout",
        "200ms",
        "--no-reconnect",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    h.join().unwrap();
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), 20);
    assert_eq!(
        counter(&v, "pings_sent"),
        20,
        "one ping each, then the timeout"
    );
    assert_eq!(counter(&v, "sessions_dropped"), 20);
    assert_eq!(v["failures"]["heartbeat_timeout"], 20);
}

#[test]
fn reconnect_storm_drops_the_share_and_recovers() {
    let _g = lock();
    let gw = gateway(None);
    let out = json_path("storm");
    for (close, policy) in [("rst", "rate"), ("graceful", "exponential:20ms:500ms")] {
        let o = sockstorm(&[
            "run",
            &url(gw.local_addr()),
            "-c",
            "1000",
            "--connect-rate",
            "5000",
            "-d",
            "3s",
            "--storm-at",
            "1500ms",
            "--storm-fraction",
            "0.3",
            "--storm-close",
            close,
            "--reconnect-policy",
            policy,
            "-q",
            "--json",
            out.to_str().unwrap(),
        ]);
        assert_ok(&o);
        let v = read_json(&out);
        // Exactly 30 % of the open sessions of each shard, all replaced, none failed.
        assert_eq!(counter(&v, "storm_dropped"), 300, "{close}");
        assert_eq!(counter(&v, "reconnects"), 300);
        assert_eq!(counter(&v, "established"), 1300);
        let ended_by_storm = if close == "rst" { 300 } else { 0 };
        assert_eq!(counter(&v, "closed_clean") + ended_by_storm, 1300);
        let st = &v["storm"];
        assert!(st["failures_during_recovery_by_cause"].is_object(), "{st}");
        assert_eq!(st["dropped"], 300);
        assert_eq!(st["close"], close);
        assert_eq!(
            st["policy"].as_str().unwrap().split(':').next(),
            policy.split(':').next()
        );
        let rec = st["recovered_after_s"].as_f64().expect("recovered");
        assert!(rec > 0.0 && rec < 1.5, "{rec}");
    }
    gw.shutdown();
}

/// An auth endpoint: answers each request with `status` and `body`, and hands back what it
/// was sent.
fn auth_server(status: u16, body: &'static str) -> (SocketAddr, std::thread::JoinHandle<String>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        // Headers, then the body by Content-Length.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req).to_string();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if rest.len() >= len {
                    break;
                }
            }
        }
        let _ = write!(
            s,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        String::from_utf8_lossy(&req).to_string()
    });
    (addr, h)
}

#[test]
fn auth_pre_step_token_reaches_messages_and_never_the_reports() {
    let _g = lock();
    let gw = gateway(None);
    let (auth, h) = auth_server(200, r#"{"data":{"access_token":"s3cr3t-token-42"}}"#);
    let out = json_path("auth");
    let auth_url = format!("http://{auth}/v1/auth/token");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "-c",
        "50",
        "-d",
        "1s",
        "--auth-url",
        &auth_url,
        "--auth-body",
        r#"{"user":"load","password":"pw"}"#,
        "--auth-token-field",
        "data.access_token",
        "-H",
        "Authorization: Bearer {{token}}",
        "--send-on-open",
        r#"{"type":"hello","token":"{{token}}"}"#,
        "--expect",
        "text:s3cr3t-token-42",
        "--no-reconnect",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let req = h.join().unwrap();
    assert!(req.starts_with("POST /v1/auth/token HTTP/1.1\r\n"), "{req}");
    assert!(req.ends_with(r#"{"user":"load","password":"pw"}"#), "{req}");
    let v = read_json(&out);
    // The gateway echoed the on-open message: the token was in it.
    assert_eq!(counter(&v, "expects_met"), 50);
    assert_eq!(v["settings"]["auth_pre_step"], true);
    let report = std::fs::read_to_string(&out).unwrap();
    assert!(!report.contains("s3cr3t"), "token in the JSON");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("s3cr3t"));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("s3cr3t"));
    // A refused pre-step stops the run before any connection, saying why.
    let (auth, h) = auth_server(401, r#"{"error":"bad credentials"}"#);
    let auth_url = format!("http://{auth}/v1/auth/token");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "--auth-url",
        &auth_url,
        "-H",
        "Authorization: Bearer {{token}}",
        "-q",
    ]);
    h.join().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("auth pre-step: GET {auth_url} answered HTTP 401")),
        "{err}"
    );
    // {{token}} without a pre-step is a mistake.
    let o = sockstorm(&["run", &url(gw.local_addr()), "-H", "X-T: {{token}}", "-q"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("add --auth-url"));
    gw.shutdown();
}

#[test]
fn stages_ramp_up_hold_and_down_every_second() {
    let _g = lock();
    let gw = gateway(None);
    let out = json_path("stages");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "--stages",
        "2s:600,1s:600,2s:0",
        "--connect-rate",
        "5000",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let v = read_json(&out);
    // Each open connection is one of the 600, opened once and closed cleanly on the way down.
    assert_eq!(counter(&v, "established"), 600);
    assert_eq!(counter(&v, "closed_clean"), 600);
    assert_eq!(v["settings"]["connections"], 600);
    assert_eq!(v["stages"]["ramp_deficit_max"], 0);
    // The open count sampled each second follows the ramp (300/s up and down) to within the
    // sample's timing: 0.2 s worth of the ramp rate.
    let expected = |t: f64| -> f64 {
        if t <= 2.0 {
            300.0 * t
        } else if t <= 3.0 {
            600.0
        } else {
            (600.0 - 300.0 * (t - 3.0)).max(0.0)
        }
    };
    let timeline = v["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 4, "{timeline:?}");
    for s in timeline {
        let (t, open) = (s["t_s"].as_f64().unwrap(), s["open"].as_f64().unwrap());
        if t <= 5.0 {
            assert!(
                (open - expected(t)).abs() <= 60.0,
                "t={t}: {open} open, ramp says {}",
                expected(t)
            );
        }
    }
    gw.shutdown();
}

#[test]
fn open_model_arrivals_with_a_lifetime_churn_at_the_rate() {
    let _g = lock();
    let gw = gateway(None);
    let out = json_path("arrivals");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "--arrival-rate",
        "300",
        "--session-lifetime",
        "500ms",
        "-d",
        "3s",
        "--message",
        "hi",
        "--message-rate",
        "5",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let v = read_json(&out);
    // 300/s for 3 s, split over the shards; each lives 0.5 s; none replaced.
    let attempts = counter(&v, "attempts");
    assert!((898..=902).contains(&attempts), "{attempts}");
    assert_eq!(counter(&v, "established"), attempts);
    assert_eq!(counter(&v, "closed_clean"), attempts);
    assert_eq!(counter(&v, "reconnects"), 0);
    // Those that reached their lifetime before the stop retired on their own.
    let retired = counter(&v, "sessions_retired");
    assert!((700..=800).contains(&retired), "{retired}");
    assert_eq!(counter(&v, "msgs_sent"), counter(&v, "msgs_received"));
    // About rate × lifetime alive at once, once there (samples fall on Unix-second
    // boundaries: the first may come a few ms after the start).
    let steady = v["timeline"].as_array().unwrap().iter();
    for s in steady.filter(|s| s["t_s"].as_f64().unwrap() >= 0.9).take(2) {
        let open = s["open"].as_u64().unwrap();
        assert!((120..=180).contains(&open), "{open} open");
    }
    gw.shutdown();
}

#[test]
fn templated_messages_are_rendered_per_send_and_every_echo_matched() {
    let _g = lock();
    let gw = gateway(None);
    let users = json_path("users").with_extension("txt");
    std::fs::write(&users, "alice\nbob\n\ncarol\n").unwrap();
    let out = json_path("templates");
    let msg = format!(
        r#"{{"u":"{{{{line {}}}}}","id":{{{{conn_id}}}},"seq":{{{{seq}}}},"t":{{{{now_ms}}}},"d":{{{{rand_int 1 6}}}},"c":"{{{{rand_choice a b}}}}"}}"#,
        users.display()
    );
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "-c",
        "300",
        "-d",
        "2s",
        "--message",
        &msg,
        "--message-rate",
        "10",
        "--no-reconnect",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let v = read_json(&out);
    let sent = counter(&v, "msgs_sent");
    assert!(sent >= 300 * 10, "{sent}");
    assert_eq!(counter(&v, "msgs_received"), sent);
    assert_eq!(counter(&v, "msgs_pushed"), 0);
    // A bad expression is refused before the run, listing what is known.
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "--message",
        "{{sequence}}",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown template expression `{{sequence}}`")
    );
    gw.shutdown();
}

#[test]
fn repeated_storms_each_take_their_share() {
    let _g = lock();
    let gw = gateway(None);
    let out = json_path("storm-every");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "-c",
        "500",
        "--connect-rate",
        "5000",
        "-d",
        "3500ms",
        "--storm-at",
        "1s",
        "--storm-every",
        "1s",
        "--storm-fraction",
        "0.2",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let v = read_json(&out);
    // Storms at 1, 2 and 3 s, each 20 % of the 500 open.
    assert_eq!(counter(&v, "storm_dropped"), 300);
    assert_eq!(counter(&v, "reconnects"), 300);
    assert_eq!(counter(&v, "established"), 800);
    assert_eq!(v["storm"]["every_s"], 1.0);
    assert!(v["storm"]["recovered_after_s"].as_f64().unwrap() < 0.9);
    gw.shutdown();
}

#[test]
fn per_connection_auth_gives_each_connection_its_own_token() {
    use std::io::{BufRead, BufReader, Read, Write};
    let _g = lock();
    // Auth: every request gets the next token, tok-0, tok-1, ...
    let auth = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let auth_addr = auth.local_addr().unwrap();
    std::thread::spawn(move || {
        for (n, s) in auth.incoming().enumerate().take(200) {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length: ") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let answer = format!(r#"{{"token":"tok-{n}"}}"#);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    // Target: records each upgrade request's tokens, then closes.
    let ws = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ws_addr = ws.local_addr().unwrap();
    let seen = std::thread::spawn(move || {
        let mut seen = Vec::new();
        ws.set_nonblocking(false).unwrap();
        for s in ws.incoming().take(20) {
            let Ok(s) = s else { continue };
            let mut r = BufReader::new(s);
            let (mut path, mut header) = (String::new(), String::new());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if line.starts_with("GET ") {
                    path = line.clone();
                }
                if let Some(v) = line.strip_prefix("Authorization: Bearer ") {
                    header = v.trim().to_owned();
                }
            }
            seen.push((path, header));
        }
        seen
    });
    let out = json_path("auth-per-connection");
    let o = sockstorm(&[
        "run",
        &format!("ws://{ws_addr}/ws?t={{{{token}}}}"),
        "-c",
        "20",
        "-d",
        "2s",
        "--no-reconnect",
        "--auth-url",
        &format!("http://{auth_addr}/v1/auth/token"),
        "--auth-body",
        r#"{"user":"load-{{conn_id}}"}"#,
        "--auth-per-connection",
        "--auth-rate",
        "50",
        "-H",
        "Authorization: Bearer {{token}}",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let seen = seen.join().unwrap();
    assert_eq!(seen.len(), 20);
    let mut tokens: Vec<&str> = seen.iter().map(|(_, h)| h.as_str()).collect();
    for (path, header) in &seen {
        assert!(header.starts_with("tok-"), "{header}");
        assert!(
            path.contains(&format!("?t={header} ")),
            "{path} vs {header}"
        );
    }
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 20, "every connection has its own token");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!text.contains("tok-"), "no token in the report");
    let v = read_json(&out);
    let a = &v["auth_per_connection"][0];
    // One request per connection, a token at most ahead per shard.
    let tokens = a["tokens"].as_u64().unwrap();
    assert!((20..=23).contains(&tokens), "{a}");
    assert_eq!(a["requests"].as_u64(), Some(tokens));
    assert_eq!(a["failures"], serde_json::json!({}));
    // 20 tokens at 50/s: the openings waited for them, and that shows as schedule lag.
    assert!(v["schedule_lag_max_us"].as_u64().unwrap() > 200_000, "{v}");
    // A token with nowhere to go is refused before any request.
    let o = sockstorm(&[
        "run",
        &format!("ws://{ws_addr}/ws"),
        "--auth-url",
        &format!("http://{auth_addr}/v1/auth/token"),
        "--auth-per-connection",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no {{token}} in -H values or the URL"));
}

#[test]
fn per_connection_url_and_header_values_reach_the_gateway_and_never_the_reports() {
    let _g = lock();
    const N: usize = 30;
    let gw = Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        record_requests: 2 * N,
        ..ServeConfig::default()
    })
    .unwrap();
    let sessions = write_file("url-sessions", "sess-a\nsess-b\n\nsess-c\n");
    let tokens = write_file("url-tokens", "s3cret-1\ns3cret-2\n");
    let out = json_path("per-connection-url");
    let o = sockstorm(&[
        "run",
        &format!(
            "ws://{}/ws/quotes?clientId={{{{conn_id}}}}&session={{{{line {}}}}}",
            gw.local_addr(),
            sessions.display()
        ),
        "-H",
        &format!("Authorization: Bearer {{{{line {}}}}}", tokens.display()),
        "-H",
        "X-Client: c{{conn_id}}",
        "-c",
        &N.to_string(),
        "-d",
        "1s",
        "--cpus",
        "0",
        "--no-reconnect",
        "--json",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    let seen = gw.requests();
    assert_eq!(seen.len(), N, "{seen:?}");
    let mut ids = Vec::new();
    for r in &seen {
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{name} missing: {r:?}"))
        };
        let query = r.target.strip_prefix("/ws/quotes?clientId=").unwrap();
        let (id, session) = query.split_once("&session=").unwrap();
        let id: usize = id.parse().unwrap();
        // One shard: the run-wide numbers are 0..N-1; lines go round-robin by them.
        assert_eq!(session, ["sess-a", "sess-b", "sess-c"][id % 3], "{r:?}");
        assert_eq!(
            header("Authorization"),
            ["Bearer s3cret-1", "Bearer s3cret-2"][id % 2]
        );
        assert_eq!(header("X-Client"), format!("c{id}"));
        ids.push(id);
    }
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..N).collect::<Vec<_>>(),
        "each connection its own id"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    for s in [&text, &stdout.to_string(), &stderr.to_string()] {
        assert!(
            !s.contains("s3cret") && !s.contains("sess-"),
            "a value leaked: {s}"
        );
    }
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), N as u64);
    let shown = v["settings"]["url"].as_str().unwrap_or_default();
    assert!(
        shown.ends_with("/ws/quotes?clientId=***&session=***"),
        "{v}"
    );
    gw.shutdown();
}
