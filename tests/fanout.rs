//! Fan-out through the gateway's channels (exact delivery and loss accounting), application
//! heartbeats, and sessions the server closes that come back and resume.

mod common;
use common::*;
use sockstorm::server::{Gateway, ServeConfig};
use std::path::PathBuf;
use std::time::Duration;

fn scenario_file(name: &str, text: &str) -> PathBuf {
    let p = json_path(name).with_extension("toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn gateway_with(tweak: impl FnOnce(&mut ServeConfig)) -> Gateway {
    let mut cfg = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 2,
        ..ServeConfig::default()
    };
    tweak(&mut cfg);
    Gateway::start(cfg).unwrap()
}

/// 5 publishers × 200 messages to 2,000 subscribers of one channel.
fn fan_out_run(
    name: &str,
    drop_every: u64,
) -> (serde_json::Value, sockstorm::server::GatewayStats) {
    let gw = gateway_with(|c| c.drop_every = drop_every);
    let out = json_path(name);
    let file = scenario_file(
        name,
        &format!(
            r#"
url = "ws://{}/ws"
duration = "11s"
connect_rate = 4000
[[scenario]]
name = "subscribers"
role = "subscriber"
channel = "prices"
connections = 2000
[[scenario]]
name = "publishers"
role = "publisher"
channel = "prices"
connections = 5
start = "1.5s"
message_rate = 25
message_count = 200
"#,
            gw.local_addr()
        ),
    );
    let o = sockstorm(&[
        "run",
        file.to_str().unwrap(),
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    let v = read_json(&out);
    let stats = gw.stats();
    gw.shutdown();
    if drop_every == 0 {
        assert_ok(&o);
    }
    (v, stats)
}

#[test]
fn every_delivery_of_every_message_is_counted_and_dropped_ones_are_lost() {
    let _l = lock();
    let (v, gw) = fan_out_run("fanout", 0);
    let f = &v["fanout"];
    assert_eq!(f["published"], 1000);
    assert_eq!(f["subscriber_sessions"], 2000);
    assert_eq!(f["owed"], 2_000_000);
    assert_eq!(f["delivered_owed"], 2_000_000);
    assert_eq!(f["delivered_total"], 2_000_000);
    assert_eq!(
        (
            f["lost"].as_u64(),
            f["duplicates"].as_u64(),
            f["reordered"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(f["delivery_ratio"], 1.0);
    let bc = &f["broadcast_completion"];
    assert_eq!(bc["messages_incomplete"], 0);
    assert_eq!(bc["messages_timed"], 1000);
    let (p50, full) = (&bc["to_50pct"]["max_us"], &bc["to_100pct"]["max_us"]);
    assert!(p50.as_u64().unwrap() <= full.as_u64().unwrap(), "{bc}");
    // Every delivery's latency was recorded, in the subscribers' scenario.
    let subs = &v["scenarios"][0];
    assert_eq!(subs["histograms"]["ws_msg_latency"]["count"], 2_000_000);
    assert_eq!(subs["counters"]["fanout_owed"], 2_000_000);
    assert_eq!(subs["counters"]["expects_met"], 2000);
    assert_eq!(v["scenarios"][1]["counters"]["fanout_published"], 1000);
    assert_eq!(v["scenarios"][1]["counters"]["msgs_unanswered"], 0);
    assert_eq!(
        (gw.channel_publishes, gw.channel_deliveries),
        (1000, 2_000_000)
    );

    // The gateway drops every 100th delivery: exactly those are lost.
    let (v, gw) = fan_out_run("fanout-drop", 100);
    let f = &v["fanout"];
    assert_eq!(gw.channel_dropped, 20_000);
    assert_eq!(gw.channel_overflow, 0);
    assert_eq!(f["owed"], 2_000_000);
    assert_eq!(f["lost"], 20_000);
    assert_eq!(f["delivered_owed"], 1_980_000);
    assert_eq!(f["duplicates"], 0);
    assert!(
        f["broadcast_completion"]["messages_incomplete"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn application_heartbeats_are_answered_and_timed() {
    let _l = lock();
    let gw = gateway(None);
    let out = json_path("heartbeat");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "-c",
        "50",
        "-d",
        "2200ms",
        "--heartbeat-interval",
        "500ms",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let v = read_json(&out);
    // Four heartbeats per connection at 0.5, 1.0, 1.5 and 2.0 s, each answered by a pong.
    assert_eq!(counter(&v, "heartbeats_sent"), 200);
    assert_eq!(counter(&v, "heartbeats_answered"), 200);
    assert_eq!(v["histograms"]["ws_heartbeat"]["count"], 200);
    // The pongs are not echoes of anything we wait for.
    assert_eq!(counter(&v, "msgs_pushed"), 200);
}

#[test]
fn unanswered_application_heartbeats_close_the_session() {
    let _l = lock();
    let gw = gateway(None);
    let out = json_path("heartbeat-timeout");
    // The gateway echoes `{"kind":"hb"}`, which is not the expected `pong`.
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "-c",
        "20",
        "-d",
        "3s",
        "--heartbeat-interval",
        "500ms",
        "--heartbeat-message",
        r#"{"kind":"hb"}"#,
        "--heartbeat-timeout",
        "1s",
        "--no-reconnect",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let v = read_json(&out);
    assert_eq!(v["failures"]["heartbeat_timeout"], 20);
    assert_eq!(counter(&v, "sessions_dropped"), 20);
    assert_eq!(counter(&v, "heartbeats_answered"), 0);
}

#[test]
fn server_closes_with_1012_reconnect_by_policy_and_resume() {
    let _l = lock();
    let gw = gateway_with(|c| {
        c.close_after = Some((Duration::from_millis(800), 1012));
        c.publish_rate = 20.0;
    });
    let out = json_path("resume");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "-c",
        "100",
        "-d",
        "2s",
        "--reconnect-policy",
        "exponential:50ms:200ms:full",
        "--on-reconnect",
        r#"{"action":"resume_session","lastSequence":{{last_seq}}}"#,
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    let v = read_json(&out);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Every session the server closed came back and sent its resume message.
    let closed = counter(&v, "closed_by_server");
    assert!(closed >= 100, "{closed}");
    assert_eq!(v["close_codes"]["1012"].as_u64(), Some(closed));
    let (established, reconnects) = (counter(&v, "established"), counter(&v, "reconnects"));
    assert_eq!(reconnects, closed);
    assert_eq!(established + counter(&v, "abandoned"), 100 + reconnects);
    assert_eq!(counter(&v, "resumes_sent"), established - 100);
    // The gateway answered each resume (its reply carries the last sequence we saw).
    assert!(counter(&v, "msgs_pushed") > closed);
}
