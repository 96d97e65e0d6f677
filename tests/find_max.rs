//! `sockstorm find-max` against gateways with a known limit (`serve --max-connections`,
//! `--max-accept-rate`, `--max-msg-rate`): the answer lies within the precision of the cap,
//! the cause is named, every step's counts add up to the gateway's, and a client out of
//! ports is named as the limit instead of the gateway.

mod common;

use common::{json_path, lock, read_json, sockstorm, tls_gateway, url};
use serde_json::Value;
use sockstorm::server::{Gateway, ServeConfig};
use std::process::Output;

fn capped(tweak: impl FnOnce(&mut ServeConfig)) -> Gateway {
    let mut cfg = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServeConfig::default()
    };
    tweak(&mut cfg);
    Gateway::start(cfg).unwrap()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The steps' counts of one kind, added.
fn step_sum(fm: &Value, key: &str) -> u64 {
    fm["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[key].as_u64().unwrap())
        .sum()
}

fn step_failures(fm: &Value, cause: &str) -> u64 {
    fm["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["failures"][cause].as_u64().unwrap_or(0))
        .sum()
}

fn within(max: f64, cap: f64, share: f64) -> bool {
    (max - cap).abs() <= cap * share
}

#[test]
fn connections_search_finds_the_cap_and_names_503() {
    let _g = lock();
    let gw = capped(|c| c.max_connections = 3000);
    let out = json_path("find-max-connections");
    let o = sockstorm(&[
        "find-max",
        "connections",
        &url(gw.local_addr()),
        "--step-hold",
        "1s",
        "--connect-rate",
        "4000",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    let stats = gw.stats();
    gw.shutdown();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = read_json(&out);
    let fm = &v["find_max"];
    let max = fm["max"].as_f64().unwrap();
    assert!(
        within(max, 3000.0, 0.05) && max <= 3000.0,
        "max {max}: {fm:#}"
    );
    assert_eq!(fm["limit"], "gateway");
    assert_eq!(fm["unit"], "connections");
    let cause = fm["cause"].as_str().unwrap();
    assert!(cause.starts_with("HTTP 503 from "), "{cause}");
    assert!(cause.contains("the gateway refuses upgrades"), "{cause}");
    // Exponential from 1000 by ×1.5: 1000, 1500, 2250 pass, 3375 fails, then bisection.
    let values: Vec<f64> = fm["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values[..4], [1000.0, 1500.0, 2250.0, 3375.0], "{values:?}");
    // Every step's counts together are the run's, and the gateway's.
    assert_eq!(
        step_sum(fm, "established"),
        common::counter(&v, "established")
    );
    // What the gateway accepted and did not refuse opened, unless the run's stop cut its
    // upgrade short (counted as abandoned).
    let unanswered = stats.accepted - stats.handshakes_rejected - step_sum(fm, "established");
    assert!(
        unanswered <= common::counter(&v, "abandoned"),
        "{unanswered} accepted, neither refused nor opened"
    );
    // Every 503 the client counted, the gateway sent; those it sent to attempts the search
    // had already given up (a step down retires the newest, connecting ones too) are
    // abandoned on the client.
    let refused = step_failures(fm, "http_503");
    assert_eq!(refused, v["failures"]["http_503"].as_u64().unwrap());
    assert!(
        refused <= stats.handshakes_rejected
            && stats.handshakes_rejected - refused <= common::counter(&v, "abandoned"),
        "client 503s {refused}, gateway {}",
        stats.handshakes_rejected
    );
    assert!(stats.handshakes_rejected > 0);
    for s in fm["steps"].as_array().unwrap() {
        let v = s["value"].as_f64().unwrap();
        // Up to the cap every session opened; beyond it the rest were refused with 503.
        assert_eq!(s["pass"], v <= 3000.0, "{s:#}");
        if v > 3000.0 {
            assert_eq!(s["reached"].as_f64().unwrap(), 3000.0, "{s:#}");
        }
    }
    // A search is one host's: merging it is refused with the reason.
    let merged = json_path("find-max-merged");
    let m = sockstorm(&[
        "merge",
        out.to_str().unwrap(),
        out.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(m.status.code(), Some(2), "{}", show(&m));
    assert!(String::from_utf8_lossy(&m.stderr).contains("is a find-max search"));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "verdict: this gateway holds {}",
            sockstorm::metrics::find_max::group(max)
        )),
        "{text}"
    );
}

#[test]
fn handshakes_search_finds_the_accept_rate() {
    let _g = lock();
    let ca = sockstorm::certs::generate_test_ca().unwrap();
    let (gw, ca_path) = tls_gateway(&ca, "find-max-handshakes", |_| {});
    gw.shutdown();
    // The same certificate with the accept rate capped.
    let opts = sockstorm::server::ServerTlsOptions::new(ca.chain.clone(), ca.key.clone_key());
    let gw = capped(|c| {
        c.tls = Some(sockstorm::server::server_tls_config(&opts).unwrap());
        c.max_accept_rate = 2000.0;
    });
    let out = json_path("find-max-handshakes");
    let target = format!("wss://localhost:{}/ws", gw.local_addr().port());
    let o = sockstorm(&[
        "find-max",
        "handshakes",
        &target,
        "--cacert",
        ca_path.to_str().unwrap(),
        "--start",
        "600",
        "--step-hold",
        "2s",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    gw.shutdown();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = read_json(&out);
    let fm = &v["find_max"];
    let max = fm["max"].as_f64().unwrap();
    assert!(within(max, 2000.0, 0.10), "max {max}: {fm:#}");
    assert_eq!(fm["unit"], "handshakes/s");
    let cause = fm["cause"].as_str().unwrap();
    assert!(
        cause.contains("tls_handshake") || cause.contains("connect timeouts"),
        "{cause}"
    );
    // Full and resumed handshakes are counted apart in every step's objectives.
    let slos: Vec<&str> = fm["slos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(slos.contains(&"tls_handshake_full: p(99)<50ms"), "{slos:?}");
    assert_eq!(
        step_sum(fm, "attempts"),
        common::counter(&v, "attempts"),
        "every attempt is in a step"
    );
}

#[test]
fn messages_search_from_a_scenario_file_finds_the_message_rate() {
    let _g = lock();
    let gw = capped(|c| c.max_msg_rate = 20000.0);
    let file = json_path("find-max-messages").with_extension("toml");
    std::fs::write(
        &file,
        format!(
            r#"url = "{}"
connections = 100
message = "hello {{{{seq}}}}"

[find_max]
mode = "messages"
slo = ["ws_msg_rtt: p(99)<100ms", "msg_loss: rate<0.001"]
start = 5000
step_hold = "2s"
"#,
            url(gw.local_addr())
        ),
    )
    .unwrap();
    let out = json_path("find-max-messages");
    let o = sockstorm(&[
        "find-max",
        file.to_str().unwrap(),
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    let stats = gw.stats();
    gw.shutdown();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = read_json(&out);
    let fm = &v["find_max"];
    assert_eq!(fm["mode"], "messages");
    assert_eq!(fm["settings"]["start"], 5000.0);
    let max = fm["max"].as_f64().unwrap();
    assert!(within(max, 20000.0, 0.10), "max {max}: {fm:#}");
    assert!(
        fm["cause"].as_str().unwrap().contains("ws_msg_rtt"),
        "{fm:#}"
    );
    // Every message is in a step, received or unanswered; the gateway echoed what it read.
    assert_eq!(step_sum(fm, "msgs_sent"), common::counter(&v, "msgs_sent"));
    assert_eq!(
        step_sum(fm, "msgs_sent"),
        step_sum(fm, "msgs_received") + step_sum(fm, "msgs_unanswered")
    );
    assert!(step_sum(fm, "msgs_received") <= stats.msgs_out);
    assert!(stats.msgs_in <= step_sum(fm, "msgs_sent"));
}

/// Fan-out: the publishers' rate is raised (the subscribers only read) until delivery latency
/// breaks; the gateway reads at most 200 messages a second.
#[test]
fn a_fan_out_search_raises_the_publish_rate() {
    let _g = lock();
    // One worker: the cap is the gateway's, whichever worker the publishers land on.
    let gw = capped(|c| {
        c.max_msg_rate = 200.0;
        c.threads = 1;
    });
    let file = json_path("find-max-fanout").with_extension("toml");
    std::fs::write(
        &file,
        format!(
            r#"url = "{}"
connect_rate = 500

[find_max]
mode = "messages"
start = 50
step_hold = "2s"

[[scenario]]
name = "readers"
connections = 50
channel = "room"
role = "subscriber"

[[scenario]]
name = "writers"
connections = 2
channel = "room"
role = "publisher"
message_rate = 1
"#,
            url(gw.local_addr())
        ),
    )
    .unwrap();
    let out = json_path("find-max-fanout");
    let o = sockstorm(&[
        "find-max",
        file.to_str().unwrap(),
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    let stats = gw.stats();
    gw.shutdown();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = read_json(&out);
    let fm = &v["find_max"];
    assert_eq!(fm["slos"][0], "ws_msg_latency: p(99)<100ms", "{fm:#}");
    let max = fm["max"].as_f64().unwrap();
    assert!(within(max, 200.0, 0.10), "max {max}: {fm:#}");
    assert!(
        fm["cause"].as_str().unwrap().contains("ws_msg_latency"),
        "{fm:#}"
    );
    // Only the publishers sent; every publish reached the gateway.
    assert_eq!(common::counter(&v, "msgs_sent"), 0);
    assert!(common::counter(&v, "fanout_published") > 0);
    assert_eq!(
        step_sum(fm, "published"),
        common::counter(&v, "fanout_published")
    );
    assert!(stats.msgs_in >= common::counter(&v, "fanout_published"));
}

/// A client with 500 local ports and one source address, on one CPU, in a network namespace
/// of its own (with its own gateway): the knee is the client's.
#[test]
fn a_client_out_of_ports_is_named_as_the_limit() {
    let _g = lock();
    if !std::process::Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("skipped: no network namespaces here (unshare -n)");
        return;
    }
    let out = json_path("find-max-client");
    let bin = env!("CARGO_BIN_EXE_sockstorm");
    let script = format!(
        r#"set -e
ip link set lo up
sysctl -qw net.ipv4.ip_local_port_range="40000 40499"
"{bin}" serve --listen 127.0.0.1:18080 >/dev/null 2>&1 &
gw=$!
sleep 0.5
set +e
"{bin}" find-max connections ws://127.0.0.1:18080/ws --source-ip 127.0.0.1 --cpus 0 --start 200 --max 5000 --step-hold 1s -q --json "{out}"
code=$?
kill $gw
exit $code"#,
        out = out.display()
    );
    let o = std::process::Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .unwrap();
    // 98: the limit found is the client's.
    assert_eq!(o.status.code(), Some(98), "{}", show(&o));
    let v = read_json(&out);
    let fm = &v["find_max"];
    assert_eq!(fm["limit"], "client", "{fm:#}");
    let cause = fm["cause"].as_str().unwrap();
    assert!(
        cause.starts_with("no local port for 127.0.0.1 → 127.0.0.1:18080"),
        "{cause}"
    );
    assert!(cause.contains("not the gateway's"), "{cause}");
    let max = fm["max"].as_f64().unwrap();
    assert!((400.0..=500.0).contains(&max), "{max}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("the CLIENT's limit is"));
}

#[test]
fn bad_search_settings_are_usage_errors() {
    let _g = lock();
    for (args, says) in [
        (
            vec![
                "handshakes",
                "wss://127.0.0.1:9/",
                "--slo",
                "ws_msg_rtt: p(99)<100ms",
            ],
            "a handshakes search does not measure `ws_msg_rtt`",
        ),
        (
            vec![
                "connections",
                "ws://127.0.0.1:9/",
                "--start",
                "5000",
                "--max",
                "100",
            ],
            "--start: 5000 is above --max 100",
        ),
        (
            vec![
                "messages",
                "ws://127.0.0.1:9/",
                "--message",
                "x",
                "--precision",
                "0",
            ],
            "--precision",
        ),
        (
            vec!["connections", "ws://127.0.0.1:9/", "--slo", "latency < 5"],
            "--slo",
        ),
        (vec!["bandwidth", "ws://127.0.0.1:9/"], "not a search mode"),
        (
            vec!["connections", "ws://127.0.0.1:9/", "--segment", "0/2"],
            "--segment: a capacity search runs from one host",
        ),
        (
            vec!["messages", "ws://127.0.0.1:9/"],
            "a messages search raises the message rate",
        ),
    ] {
        let mut words = vec!["find-max"];
        words.extend(args);
        let o = sockstorm(&words);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{words:?}: {err}");
        assert!(err.contains(says), "{words:?}: {err}");
    }
}
