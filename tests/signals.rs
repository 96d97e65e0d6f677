//! Signals at each phase of a run: SIGTERM (`docker stop`, systemd, Kubernetes), SIGHUP and
//! SIGINT stop it gracefully with 128 + the signal's number, and the JSON holds what was
//! measured; a signal during `--drain` or `--close-wait` still ends the run within 2 s; a
//! second signal stops it at once.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `sockstorm run URL ARGS -q --json OUT`, started in the background.
fn spawn_run(url: &str, args: &[&str], out: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sockstorm"))
        .arg("run")
        .arg(url)
        .args(args)
        .args(["-q", "--json", out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends `sig` (TERM, HUP, INT) to the child.
fn kill(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// Waits for the child to exit (at most 10 s); its status, and its stderr.
fn wait(child: &mut Child) -> (ExitStatus, String) {
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("did not stop within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (status, err)
}

/// Sent messages are all accounted for: answered or unanswered.
fn assert_accounted(v: &Value) {
    assert_eq!(
        counter(v, "msgs_sent"),
        counter(v, "msgs_received") + counter(v, "msgs_unanswered"),
        "{}",
        v["counters"]
    );
}

/// Upgrades every connection, then reads whatever comes and never answers: echoes stay
/// outstanding (the drain waits them out) and a close is never answered (the close wait runs
/// out).
fn mute_server() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let Some(key) = req
                    .lines()
                    .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                else {
                    return;
                };
                let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
                let _ = write!(
                    s,
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[test]
fn sigterm_sighup_and_sigint_stop_the_run_gracefully_with_their_exit_codes() {
    let _g = lock();
    let gw = gateway(None);
    for (sig, code) in [("TERM", 143), ("HUP", 129), ("INT", 130)] {
        let out = json_path(&format!("signal-{sig}"));
        let mut child = spawn_run(
            &url(gw.local_addr()),
            &[
                "-c",
                "100",
                "--connect-rate",
                "2000",
                "-d",
                "60s",
                "--message",
                "x",
                "--message-rate",
                "20",
            ],
            &out,
        );
        std::thread::sleep(Duration::from_millis(1500));
        let t = Instant::now();
        kill(&child, sig);
        let (status, err) = wait(&mut child);
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "SIG{sig}: stopped in {took:?}"
        );
        assert_eq!(status.code(), Some(code), "SIG{sig}: {err}");
        assert!(err.contains(&format!("stopped by SIG{sig}")), "{err}");
        let v = read_json(&out);
        assert_eq!(v["interrupted"], true, "SIG{sig}");
        assert_eq!(v["stopped_by"], format!("SIG{sig}"), "SIG{sig}");
        let summary = String::from_utf8(child.stdout.take().map_or_else(Vec::new, |mut o| {
            let mut b = Vec::new();
            let _ = o.read_to_end(&mut b);
            b
        }))
        .unwrap();
        assert!(
            summary.contains(&format!("(interrupted by SIG{sig}: partial results)")),
            "{summary}"
        );
        assert_eq!(counter(&v, "established"), 100, "SIG{sig}");
        assert!(counter(&v, "msgs_sent") > 100 * 10, "SIG{sig}");
        assert_accounted(&v);
    }
    gw.shutdown();
}

#[test]
fn a_signal_during_a_long_drain_ends_the_run_within_two_seconds() {
    let _g = lock();
    let addr = mute_server();
    let out = json_path("signal-drain");
    let mut child = spawn_run(
        &url(addr),
        &[
            "-c",
            "20",
            "-d",
            "1s",
            "--drain",
            "60s",
            "--close-wait",
            "60s",
            "--message",
            "x",
            "--message-rate",
            "10",
            "--no-reconnect",
        ],
        &out,
    );
    // The run ends at 1 s; its drain would last a minute.
    std::thread::sleep(Duration::from_millis(2000));
    assert!(child.try_wait().unwrap().is_none(), "still draining");
    let t = Instant::now();
    kill(&child, "TERM");
    let (status, err) = wait(&mut child);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "stopped in {took:?}");
    assert_eq!(status.code(), Some(143), "{err}");
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), 20);
    assert_eq!(counter(&v, "msgs_received"), 0);
    assert!(counter(&v, "msgs_unanswered") >= 20, "{}", v["counters"]);
    assert_accounted(&v);
}

#[test]
fn a_signal_during_a_long_close_wait_ends_the_run_within_two_seconds() {
    let _g = lock();
    let addr = mute_server();
    let out = json_path("signal-close-wait");
    let mut child = spawn_run(
        &url(addr),
        &[
            "-c",
            "20",
            "-d",
            "1s",
            "--drain",
            "0s",
            "--close-wait",
            "60s",
            "--message",
            "x",
            "--message-rate",
            "10",
            "--no-reconnect",
        ],
        &out,
    );
    // The run ends at 1 s; every close then waits a minute for a reply that never comes.
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still in the close wait"
    );
    let t = Instant::now();
    kill(&child, "HUP");
    let (status, err) = wait(&mut child);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "stopped in {took:?}");
    assert_eq!(status.code(), Some(129), "{err}");
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), 20);
    assert_eq!(counter(&v, "closes_incomplete"), 20, "{}", v["counters"]);
    assert_accounted(&v);
}

#[test]
fn a_second_signal_stops_at_once_and_the_results_are_still_written() {
    let _g = lock();
    let addr = mute_server();
    let out = json_path("signal-twice");
    let mut child = spawn_run(
        &url(addr),
        &[
            "-c",
            "20",
            "-d",
            "1s",
            "--drain",
            "60s",
            "--close-wait",
            "60s",
            "--message",
            "x",
            "--message-rate",
            "10",
            "--no-reconnect",
        ],
        &out,
    );
    std::thread::sleep(Duration::from_millis(1500));
    kill(&child, "TERM");
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    kill(&child, "INT");
    let (status, err) = wait(&mut child);
    let took = t.elapsed();
    assert!(took < Duration::from_millis(800), "stopped in {took:?}");
    // The first signal sets the exit code.
    assert_eq!(status.code(), Some(143), "{err}");
    let v = read_json(&out);
    assert_eq!(v["interrupted"], true);
    assert_eq!(counter(&v, "established"), 20);
    assert_accounted(&v);
}
