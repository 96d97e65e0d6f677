//! permessage-deflate end to end against the built-in gateway's `serve --compression`: echoes
//! of every connection matched with and without context takeover, fan-out through a
//! compressing gateway counted exactly, and an offer the gateway declines.
//! (Foreign clients against the gateway: scripts/interop/deflate_client.py and
//! scripts/interop/node/deflate_client.js in scripts/test.sh.)

mod common;
use common::*;
use sockstorm::proto::ws::deflate::Offer;
use sockstorm::server::{Gateway, ServeConfig};

fn compressing_gateway(offer: &str, threads: usize) -> Gateway {
    Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads,
        compression: Some(Offer::parse(offer).unwrap()),
        ..ServeConfig::default()
    })
    .unwrap()
}

/// 1 KiB of JSON that compresses well, as a price feed's messages do.
fn payload() -> String {
    let row = r#"{"symbol":"AAPL","bid":187.25,"ask":187.27,"venue":"XNAS"},"#;
    let mut p = String::from("[");
    while p.len() + row.len() < 1020 {
        p.push_str(row);
    }
    p.push_str("{}]");
    p
}

#[test]
fn every_echo_through_a_compressing_gateway_is_matched_with_and_without_context_takeover() {
    let _l = lock();
    for (serve, offer) in [
        ("deflate", "deflate"),
        (
            "deflate:server_no_context_takeover",
            "deflate:client_no_context_takeover",
        ),
    ] {
        let gw = compressing_gateway(serve, 2);
        let v = run_json(
            "compression-echo",
            &[
                "run",
                &url(gw.local_addr()),
                "-c",
                "300",
                "--connect-rate",
                "3000",
                "-d",
                "3s",
                "--message",
                &payload(),
                "--message-rate",
                "4",
                "--compression",
                offer,
                "--no-reconnect",
            ],
        );
        let s = gw.stats();
        gw.shutdown();
        assert_eq!(counter(&v, "established"), 300, "{serve}");
        assert_eq!(s.compressed_sessions, 300, "{serve}");
        let sent = counter(&v, "msgs_sent");
        assert!(sent >= 300 * 8, "{sent}");
        // Every message went compressed, came back compressed, and was matched.
        assert_eq!(counter(&v, "msgs_received"), sent, "{serve}");
        assert_eq!(counter(&v, "msgs_unanswered"), 0);
        assert_eq!(counter(&v, "deflate_msgs_received"), sent);
        assert_eq!((s.msgs_in, s.msgs_out), (sent, sent), "{serve}");
        assert_eq!(
            counter(&v, "deflate_payload_received"),
            sent * payload().len() as u64
        );
        // The same bytes go each way, so the gateway compressed them as well as we did (or
        // better: with context takeover, repeats cost a few bytes).
        let (wire_in, wire_out) = (
            counter(&v, "deflate_wire_received"),
            counter(&v, "deflate_wire_sent"),
        );
        assert!(
            wire_in * 5 < counter(&v, "deflate_payload_received"),
            "{wire_in}"
        );
        assert!(
            wire_out * 5 < counter(&v, "deflate_payload_sent"),
            "{wire_out}"
        );
        assert!(
            v["failures"].as_object().unwrap().is_empty(),
            "{}",
            v["failures"]
        );
    }
}

#[test]
fn fan_out_through_a_compressing_gateway_is_counted_exactly() {
    let _l = lock();
    let gw = compressing_gateway("deflate", 2);
    let file = json_path("compression-fanout").with_extension("toml");
    std::fs::write(
        &file,
        format!(
            r#"
url = "ws://{}/ws"
duration = "6s"
connect_rate = 4000
compression = "deflate"
[[scenario]]
name = "subscribers"
role = "subscriber"
channel = "prices"
connections = 500
[[scenario]]
name = "publishers"
role = "publisher"
channel = "prices"
connections = 4
start = "1s"
message_rate = 25
message_count = 75
"#,
            gw.local_addr()
        ),
    )
    .unwrap();
    let v = run_json("compression-fanout", &["run", file.to_str().unwrap()]);
    let s = gw.stats();
    gw.shutdown();
    let f = &v["fanout"];
    assert_eq!(f["published"], 300);
    assert_eq!(f["owed"], 150_000);
    assert_eq!(f["delivered_owed"], 150_000);
    assert_eq!(
        (f["lost"].as_u64(), f["duplicates"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!((s.channel_publishes, s.channel_deliveries), (300, 150_000));
    assert_eq!(s.compressed_sessions, 504);
    // Every delivery came compressed.
    let subs = &v["scenarios"][0]["counters"];
    assert_eq!(subs["deflate_msgs_received"], subs["msgs_pushed"]);
}

#[test]
fn a_gateway_without_compression_declines_and_the_run_goes_plain() {
    let _l = lock();
    let gw = gateway(None);
    let v = run_json(
        "compression-declined",
        &[
            "run",
            &url(gw.local_addr()),
            "-c",
            "50",
            "-d",
            "2s",
            "--message",
            &payload(),
            "--message-rate",
            "5",
            "--compression",
            "deflate",
            "--no-reconnect",
        ],
    );
    let sent = counter(&v, "msgs_sent");
    assert_eq!(counter(&v, "msgs_received"), sent);
    assert_eq!(counter(&v, "deflate_msgs_received"), 0);
    assert_eq!(counter(&v, "deflate_wire_sent"), 0);
    assert_eq!(gw.stats().compressed_sessions, 0);
}
