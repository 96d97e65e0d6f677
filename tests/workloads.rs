//! Workloads written the way the seed articles write them, against the built-in gateway's
//! ack routes and market-data streams, with exact counts on both sides: every request matched
//! to its reply with several kinds interleaved, checks counted on known content, and stream
//! gaps equal to what the gateway was told to drop.

mod common;

use common::{assert_ok, counter, json_path, lock, read_json, sockstorm};
use sockstorm::server::{Gateway, ServeConfig};

fn gateway(stream_rate: f64, stream_gap_every: u64) -> Gateway {
    Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        stream_rate,
        stream_gap_every,
        ..ServeConfig::default()
    })
    .unwrap()
}

/// Runs the scenario file `text` (written as `name.toml`) and reads its JSON results.
fn run(name: &str, text: &str) -> serde_json::Value {
    let file = json_path(name).with_extension("toml");
    std::fs::write(&file, text).unwrap();
    let out = json_path(name);
    let o = sockstorm(&[
        "run",
        file.to_str().unwrap(),
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    read_json(&out)
}

#[test]
fn interleaved_requests_are_each_matched_to_their_own_reply() {
    let _g = lock();
    let gw = gateway(0.0, 0);
    let v = run(
        "collab",
        &format!(
            r#"
url = "ws://{addr}/ws/collaboration?session={{{{conn_id}}}}"
connections = 20
connect_rate = 1000
duration = "3s"
on_open = '{{"action":"join_document","documentId":"doc_5012"}}'
expect = "json:type=document_joined"
checks = [
  {{ name = "op applied", on = "json:type=operation_applied", expect = "json:opId" }},
  {{ name = "rated", on = "json:type=ack", expect = "json:itemId>=1" }},
  {{ name = "rated high", on = "json:type=ack", expect = "json:itemId>100" }},
]
thresholds = [
  "ws_reply{{msg:apply_operation}}: p(99)<1s",
  "reply_loss: rate==0",
  "checks{{name:op applied}}: rate==1",
  "checks{{name:rated high}}: rate==0",
]

[[scenario]]
name = "editors"
thresholds = ["ws_reply{{msg:publish}}: p(99)<1s"]

[[scenario.message]]
name = "apply_operation"
text = '{{"action":"apply_operation","documentId":"doc_5012","opId":"{{{{conn_id}}}}-{{{{seq}}}}","operation":{{"type":"insert_text","text":"hello "}}}}'
rate = 5
reply = {{ match = "json:opId" }}

[[scenario.message]]
name = "publish"
text = '{{"action":"send_message","channel":"room:42","message":{{"id":"m{{{{conn_id}}}}-{{{{seq}}}}","text":"hi"}}}}'
rate = 3
reply = {{ match = "json:message.id", path = "json:id", on = "json:type=message_ack" }}

[[scenario.message]]
name = "rate"
text = '{{"action":"rate","itemId":{{{{rand_int 1 100}}}},"stars":5}}'
rate = 2
reply = "json:type=ack"
"#,
            addr = gw.local_addr()
        ),
    );
    let mut answered = 0;
    for name in ["apply_operation", "publish", "rate"] {
        let r = &v["requests"][name];
        let sent = r["sent"].as_u64().unwrap();
        assert!(sent > 20, "{name}: {r}");
        assert_eq!(r["answered"].as_u64(), Some(sent), "{name}: {r}");
        assert_eq!(r["unanswered"], 0, "{name}");
        assert_eq!(r["reply_latency"]["count"].as_u64(), Some(sent), "{name}");
        answered += sent;
    }
    assert_eq!(counter(&v, "requests_sent"), answered);
    assert_eq!(counter(&v, "replies_received"), answered);
    // The joins' acks are the only other messages received.
    assert_eq!(counter(&v, "expects_met"), 20);
    assert_eq!(counter(&v, "msgs_pushed"), 20);
    let stats = gw.stats();
    assert_eq!(
        stats.acks,
        answered + 20,
        "one ack per request, and the joins"
    );
    // Checks: exactly the acks they apply to, pass or fail as their content says.
    let ops = v["requests"]["apply_operation"]["answered"]
        .as_u64()
        .unwrap();
    let rates = v["requests"]["rate"]["answered"].as_u64().unwrap();
    let chk = |n: &str, k: &str| v["checks"][n][k].as_u64().unwrap();
    assert_eq!(
        (chk("op applied", "passed"), chk("op applied", "failed")),
        (ops, 0)
    );
    assert_eq!((chk("rated", "passed"), chk("rated", "failed")), (rates, 0));
    assert_eq!(
        (chk("rated high", "passed"), chk("rated high", "failed")),
        (0, rates)
    );
    let verdicts: Vec<bool> = v["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["pass"].as_bool().unwrap())
        .collect();
    assert_eq!(verdicts, [true; 5], "{}", v["thresholds"]);
    // A scenario's own threshold keeps its tag and gains the scenario's.
    assert_eq!(
        v["thresholds"][4]["expr"],
        "ws_reply{msg:publish,scenario:editors}: p(99)<1s"
    );
    gw.shutdown();
}

#[test]
fn stream_gaps_equal_what_the_gateway_dropped() {
    let _g = lock();
    let gw = gateway(50.0, 10);
    let v = run(
        "quotes",
        &format!(
            r#"
url = "ws://{addr}/ws/quotes?clientId=terminal-{{{{conn_id}}}}&format=json"
connections = 30
connect_rate = 1000
duration = "3s"
on_open = '{{"op":"subscribe","streams":["quotes.NASDAQ:AAPL","quotes.NYSE:IBM","quotes.NASDAQ:NVDA"],"snapshot":true}}'
expect = "json:op=subscribed"
stream = {{ seq = "json:seq", key = "json:stream" }}
checks = [{{ name = "price positive", on = "json:type=quote", expect = "json:price>0" }}]
thresholds = ["stream_gaps: count>0", "checks: rate==1"]
"#,
            addr = gw.local_addr()
        ),
    );
    let stats = gw.stats();
    assert!(stats.stream_msgs > 30 * 3 * 50, "{stats:?}");
    assert_eq!(stats.channel_overflow, 0);
    assert_eq!(
        counter(&v, "stream_msgs"),
        stats.stream_msgs,
        "every quote seen"
    );
    // Every 10th seq was skipped; each skip followed by a later quote is one gap of one.
    assert_eq!(counter(&v, "stream_gaps"), stats.stream_gaps_visible);
    assert_eq!(counter(&v, "stream_skipped"), stats.stream_gaps_visible);
    assert_eq!(
        v["streams"]["lost"].as_u64(),
        Some(stats.stream_gaps_visible)
    );
    assert_eq!(counter(&v, "stream_duplicates"), 0);
    assert_eq!(counter(&v, "stream_late"), 0);
    assert_eq!(
        v["checks"]["price positive"]["passed"].as_u64(),
        Some(stats.stream_msgs)
    );
    assert_eq!(v["checks"]["price positive"]["failed"], 0);
    gw.shutdown();
}
