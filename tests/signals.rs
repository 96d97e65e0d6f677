//! Signals at each phase of a run: SIGTERM (`docker stop`, systemd, Kubernetes), SIGHUP and
//! SIGINT stop it gracefully with 128 + the signal's number, and the JSON holds what was
//! measured; a signal during `--drain` or `--close-wait` still ends the run within 2 s; a
//! second signal stops it at once.

mod common;

use common::child::{Exit, Run};
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// `sockstorm run URL ARGS -q --json OUT`, started in the background.
fn spawn_run(url: &str, args: &[&str], out: &std::path::Path) -> Run {
    let mut all = vec!["run", url];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-q", "--json", out.to_str().unwrap()]);
    Run::start(out.file_stem().unwrap().to_str().unwrap(), &all)
}

/// Sends `sig` (TERM, HUP, INT) and waits for the exit: the child and the time from the
/// signal to the exit seen. A run still going 12 s after its start (a signal at 1.5 or 2 s,
/// then 10 s) is killed and fails the test.
fn stop(run: Run, sig: &str) -> (Exit, Duration) {
    let t = Instant::now();
    run.signal(sig);
    let exit = run.finish(Duration::from_secs(12));
    (exit, t.elapsed())
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
        let run = spawn_run(
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
        let (exit, took) = stop(run, sig);
        let err = &exit.stderr;
        assert!(
            took < Duration::from_secs(2),
            "SIG{sig}: stopped in {took:?}"
        );
        assert_eq!(exit.code(), Some(code), "SIG{sig}: {err}");
        assert!(err.contains(&format!("stopped by SIG{sig}")), "{err}");
        let v = read_json(&out);
        assert_eq!(v["interrupted"], true, "SIG{sig}");
        assert_eq!(v["stopped_by"], format!("SIG{sig}"), "SIG{sig}");
        let summary = &exit.stdout;
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
    let mut run = spawn_run(
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
    assert!(run.sample(), "still draining");
    let (exit, took) = stop(run, "TERM");
    assert!(took < Duration::from_secs(2), "stopped in {took:?}");
    assert_eq!(exit.code(), Some(143), "{}", exit.stderr);
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
    let mut run = spawn_run(
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
    assert!(run.sample(), "still in the close wait");
    let (exit, took) = stop(run, "HUP");
    assert!(took < Duration::from_secs(2), "stopped in {took:?}");
    assert_eq!(exit.code(), Some(129), "{}", exit.stderr);
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
    let run = spawn_run(
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
    run.signal("TERM");
    std::thread::sleep(Duration::from_millis(50));
    let (exit, took) = stop(run, "INT");
    assert!(took < Duration::from_millis(800), "stopped in {took:?}");
    // The first signal sets the exit code.
    assert_eq!(exit.code(), Some(143), "{}", exit.stderr);
    let v = read_json(&out);
    assert_eq!(v["interrupted"], true);
    assert_eq!(counter(&v, "established"), 20);
    assert_accounted(&v);
}
