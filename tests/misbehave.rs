//! Clients that misbehave on purpose (`--no-pong`, `--stop-reading-after`) against a gateway
//! that answers them the way real servers do: a keepalive close 1011 for unanswered pings, a
//! reset for a client that stopped reading. Every server close is counted, by code, exactly;
//! the well-behaved clients of the same run are not touched.

mod common;

use common::*;
use serde_json::Value;
use sockstorm::server::{Gateway, ServeConfig};
use std::time::Duration;

/// The scenario named `name` of a result document.
fn scenario<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no scenario {name}: {v}"))
}

fn count(s: &Value, name: &str) -> u64 {
    s["counters"][name].as_u64().unwrap_or(0)
}

#[test]
fn clients_that_stop_answering_pings_get_1011_and_the_others_keep_going() {
    let _g = lock();
    const N: u64 = 8;
    let gw = Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        keepalive: Some((Duration::from_millis(200), Duration::from_millis(300))),
        ..ServeConfig::default()
    })
    .unwrap();
    let out = json_path("no-pong");
    let file = json_path("no-pong-scenario").with_extension("toml");
    std::fs::write(
        &file,
        format!(
            r#"
url = "ws://{addr}/ws"
duration = "2s"
reconnect = false

[[scenario]]
name = "rude"
connections = {N}
no_pong = true

[[scenario]]
name = "late"
connections = {N}
misbehave = {{ no_pong_after = "300ms" }}

[[scenario]]
name = "polite"
connections = {N}
"#,
            addr = gw.local_addr()
        ),
    )
    .unwrap();
    let o = sockstorm(&[
        "run",
        file.to_str().unwrap(),
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let v = read_json(&out);
    for name in ["rude", "late"] {
        let s = scenario(&v, name);
        assert_eq!(count(s, "established"), N, "{name}: {s}");
        assert_eq!(count(s, "closed_by_server"), N, "{name}: {s}");
        assert_eq!(s["close_codes"]["1011"].as_u64(), Some(N), "{name}: {s}");
        assert!(count(s, "pings_unanswered") >= N, "{name}: {s}");
    }
    // The late ones answered the pings of their first 300 ms.
    assert_eq!(count(scenario(&v, "rude"), "pongs_sent"), 0);
    assert!(count(scenario(&v, "late"), "pongs_sent") >= N);
    let polite = scenario(&v, "polite");
    assert_eq!(count(polite, "closed_by_server"), 0, "{polite}");
    // Only the server's replies to our own closes at the end.
    assert_eq!(
        polite["close_codes"],
        serde_json::json!({"1000": N}),
        "{polite}"
    );
    assert_eq!(count(polite, "closed_clean"), N, "{polite}");
    // Pings every 200 ms for 2 s, each answered.
    assert!(count(polite, "pongs_sent") >= 6 * N, "{polite}");
    let stats = gw.stats();
    assert_eq!(
        (stats.keepalive_timeouts, stats.keepalive_aborts),
        (2 * N, 0),
        "{stats:?}"
    );
    gw.shutdown();
}

#[test]
fn clients_that_stop_reading_are_reset_and_counted_and_the_others_keep_reading() {
    let _g = lock();
    const M: u64 = 4;
    let gw = Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        publish_rate: 20_000.0,
        slow_consumer_timeout: Some(Duration::from_millis(100)),
        ..ServeConfig::default()
    })
    .unwrap();
    let out = json_path("stop-reading");
    let file = json_path("stop-reading-scenario").with_extension("toml");
    std::fs::write(
        &file,
        format!(
            r#"
url = "ws://{addr}/ws"
duration = "4s"
reconnect = false

[[scenario]]
name = "stuck"
connections = {M}
misbehave = {{ stop_reading_after = "200ms" }}

[[scenario]]
name = "reader"
connections = 2
"#,
            addr = gw.local_addr()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let o = sockstorm(&[
        "run",
        file.to_str().unwrap(),
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    // Bounded: the run, its drain and close wait, and no more.
    assert!(started.elapsed() < Duration::from_secs(12));
    let v = read_json(&out);
    let stuck = scenario(&v, "stuck");
    assert_eq!(count(stuck, "established"), M, "{stuck}");
    assert_eq!(count(stuck, "reads_stopped"), M, "{stuck}");
    // The gateway reset each of them: a reset, close code 1006, a session dropped.
    assert_eq!(count(stuck, "sessions_dropped"), M, "{stuck}");
    assert_eq!(stuck["close_codes"]["1006"].as_u64(), Some(M), "{stuck}");
    let reader = scenario(&v, "reader");
    assert_eq!(count(reader, "sessions_dropped"), 0, "{reader}");
    assert_eq!(count(reader, "closed_clean"), 2, "{reader}");
    assert!(count(reader, "msgs_pushed") > 10_000, "{reader}");
    assert_eq!(
        reader["close_codes"],
        serde_json::json!({"1000": 2}),
        "{reader}"
    );
    assert_eq!(gw.stats().slow_consumer_aborts, M, "{:?}", gw.stats());
    // The failures: M resets, nothing else, so the run fails with the connection errors' exit.
    assert_eq!(
        v["failures"]["reset"].as_u64(),
        Some(M),
        "{}",
        v["failures"]
    );
    let _ = o;
    gw.shutdown();
}
