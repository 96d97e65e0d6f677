//! `--metrics-listen`: the live endpoint scraped over raw TCP during whole runs of the real
//! binary. Its counters only grow, and once `sockstorm_run_finished` is 1 they equal the JSON
//! document's (sessions, messages, closes by code, failures by cause), each histogram's
//! `_count` equals the JSON histogram's count, and its buckets are exactly the JSON HDR
//! histogram's counts under the rule of `results::live::buckets`.

mod common;

use common::{counter, json_path, lock, read_json, url};
use serde_json::Value;
use sockstorm::results::live::buckets::{bucket_of, BOUNDS_US};
use sockstorm::server::{Gateway, Reject, ServeConfig};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One sample line: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus text format (what a scrape without an OpenMetrics Accept gets).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().expect(line),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect(line);
                let labels = body
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect(line);
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        out.push((name.to_owned(), labels, value));
    }
    out
}

/// `GET /metrics` over a plain TCP stream; the body (None: not served, e.g. the process is gone).
fn scrape(addr: &str, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.to_owned(), body.to_owned()))
}

/// The value of `name` with exactly `labels`, `segment` aside (0 when absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.keys().filter(|k| *k != "segment").count() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map_or(0.0, |s| s.2)
}

/// Runs `sockstorm run ARGS --metrics-listen 127.0.0.1:0 --json …`, scraping every 100 ms
/// until the final figures are in; returns the scrapes (the last one final) and the JSON.
fn scraped_run(name: &str, args: &[&str]) -> (Vec<Vec<Sample>>, Value) {
    let json = json_path(name);
    let _ = std::fs::remove_file(&json);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockstorm"))
        .args(["run"])
        .args(args)
        .args([
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-linger",
            "30s",
            "-q",
        ])
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("no `metrics on` line on stderr");
        if let Some(rest) = line.strip_prefix("sockstorm: metrics on http://") {
            break rest.trim_end_matches("/metrics").to_owned();
        }
    };
    // Anything but /metrics is 404.
    let (head, _) = scrape(&addr, "/").expect("no answer on /");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let start = Instant::now();
    let mut scrapes = Vec::new();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run did not finish"
        );
        let Some((head, body)) = scrape(&addr, "/metrics") else {
            panic!("the endpoint went away before serving the final figures");
        };
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        let samples = parse(&body);
        let done = value(&samples, "sockstorm_run_finished", &[]) == 1.0;
        scrapes.push(samples);
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The final scrape ends the linger: the process exits.
    let status = child.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert!(status.code().is_some(), "killed: {stderr}");
    assert!(
        scrapes.len() >= 3,
        "too few scrapes during the run: {}",
        scrapes.len()
    );
    (scrapes, read_json(&json))
}

/// Every counter series only grows from scrape to scrape.
fn assert_monotonic(scrapes: &[Vec<Sample>]) {
    let mut last: BTreeMap<String, f64> = BTreeMap::new();
    for s in scrapes {
        for (name, labels, v) in s {
            if name.ends_with("_total") || name.ends_with("_count") || name.ends_with("_bucket") {
                let key = format!("{name}{labels:?}");
                let prev = last.insert(key.clone(), *v).unwrap_or(0.0);
                assert!(*v >= prev, "{key} went from {prev} to {v}");
            }
        }
    }
}

/// The final scrape says what the JSON says of scenario `scenario`.
fn assert_final_equals_json(samples: &[Sample], doc: &Value, scenario: &str) {
    let sc = [("scenario", scenario)];
    let n = |name: &str| value(samples, name, &sc) as u64;
    for (metric, json) in [
        ("sockstorm_ws_connect_attempts_total", "attempts"),
        ("sockstorm_ws_sessions_total", "established"),
        ("sockstorm_ws_reconnects_total", "reconnects"),
        ("sockstorm_ws_msgs_sent_total", "msgs_sent"),
        ("sockstorm_ws_msgs_received_total", "msgs_received"),
        ("sockstorm_data_sent_bytes_total", "bytes_sent"),
        ("sockstorm_data_received_bytes_total", "bytes_received"),
    ] {
        assert_eq!(
            n(metric),
            counter(doc, json),
            "{metric} vs the JSON's {json}"
        );
    }
    let failures = doc["failures"].as_object().unwrap();
    for (cause, count) in failures {
        let got = value(
            samples,
            "sockstorm_ws_failures_total",
            &[("scenario", scenario), ("cause", cause)],
        );
        assert_eq!(got as u64, count.as_u64().unwrap(), "failures {cause}");
    }
    let scraped_failures: f64 = samples
        .iter()
        .filter(|s| s.0 == "sockstorm_ws_failures_total")
        .map(|s| s.2)
        .sum();
    let json_failures: u64 = failures.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(
        scraped_failures as u64, json_failures,
        "failures of causes the JSON lacks"
    );
    for (code, count) in doc["close_codes"].as_object().unwrap() {
        let got = value(
            samples,
            "sockstorm_ws_closes_total",
            &[("scenario", scenario), ("code", code)],
        );
        assert_eq!(got as u64, count.as_u64().unwrap(), "close code {code}");
    }
    for (hist, h) in doc["histograms"].as_object().unwrap() {
        let metric = format!("sockstorm_{hist}_seconds");
        let count = value(samples, &format!("{metric}_count"), &sc) as u64;
        assert_eq!(count, h["count"].as_u64().unwrap(), "{metric}_count");
        // The buckets hold exactly the HDR histogram's counts, by the documented rule.
        let hdr = sockstorm::results::hdr::decode(h["hdr"].as_str().unwrap()).unwrap();
        let mut want = [0u64; BOUNDS_US.len() + 1];
        for v in hdr.iter_recorded() {
            want[bucket_of(v.value_iterated_to())] += v.count_at_value();
        }
        let mut cumulative = 0;
        for (i, n) in want.iter().enumerate() {
            cumulative += n;
            let le = BOUNDS_US
                .get(i)
                .map_or("+Inf".to_owned(), |&b| format!("{}", b as f64 / 1e6));
            let got = value(
                samples,
                &format!("{metric}_bucket"),
                &[("scenario", scenario), ("le", &le)],
            );
            assert_eq!(got as u64, cumulative, "{metric}_bucket le={le}");
        }
    }
}

#[test]
fn scraped_counters_grow_and_end_equal_to_the_json() {
    let _g = lock();
    // The gateway closes every session after 1.2 s with 4001: closes by code, reconnects.
    let gw = Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        close_after: Some((Duration::from_millis(1200), 4001)),
        ..ServeConfig::default()
    })
    .unwrap();
    let target = url(gw.local_addr());
    let (scrapes, doc) = scraped_run(
        "live-echo",
        &[
            &target,
            "-c",
            "40",
            "--connect-rate",
            "200",
            "--message",
            "live",
            "--message-rate",
            "10",
            "-d",
            "3s",
        ],
    );
    assert_monotonic(&scrapes);
    let last = scrapes.last().unwrap();
    assert!(counter(&doc, "msgs_received") > 0 && counter(&doc, "reconnects") > 0);
    assert!(
        doc["close_codes"]["4001"].as_u64().unwrap() > 0,
        "{}",
        doc["close_codes"]
    );
    assert_final_equals_json(last, &doc, "default");
    assert_eq!(
        value(
            last,
            "sockstorm_target_connections",
            &[("scenario", "default")]
        ),
        40.0
    );
    // A scrape in the middle of the run showed sessions open.
    assert!(scrapes.iter().any(|s| value(
        s,
        "sockstorm_open_connections",
        &[("scenario", "default")]
    ) > 0.0));
}

#[test]
fn failures_by_cause_and_the_segment_label() {
    let _g = lock();
    let gw = common::gateway(Some(Reject::Status(503)));
    let target = url(gw.local_addr());
    let (scrapes, doc) = scraped_run(
        "live-503",
        &[
            &target,
            "-c",
            "20",
            "--connect-rate",
            "100",
            "-d",
            "2s",
            "--segment",
            "1/2",
        ],
    );
    assert_monotonic(&scrapes);
    let last = scrapes.last().unwrap();
    assert!(
        doc["failures"].as_object().is_some_and(|f| !f.is_empty()),
        "{}",
        doc["failures"]
    );
    // With --segment every series carries segment="1/2" beside its own labels.
    for (name, labels, _) in last {
        assert_eq!(
            labels.get("segment").map(String::as_str),
            Some("1/2"),
            "{name}"
        );
    }
    assert_final_equals_json(last, &doc, "default");
}

#[test]
fn an_address_in_use_exits_2_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = common::sockstorm(&[
        "run",
        "ws://127.0.0.1:9/ws",
        "-c",
        "1",
        "-d",
        "1s",
        "--metrics-listen",
        &addr,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&addr) && err.contains("port 0"), "{err}");
}

#[test]
fn each_scenario_has_its_own_series_and_fan_out_counts() {
    let _g = lock();
    let gw = common::gateway(None);
    let file = json_path("live-fanout").with_extension("toml");
    std::fs::write(
        &file,
        format!(
            r#"
url = "ws://{}/ws"
duration = "3s"
connect_rate = 500
[[scenario]]
name = "subscribers"
role = "subscriber"
channel = "prices"
connections = 30
[[scenario]]
name = "publishers"
role = "publisher"
channel = "prices"
connections = 2
start = "0.5s"
message_rate = 10
message_count = 15
"#,
            gw.local_addr()
        ),
    )
    .unwrap();
    let (scrapes, doc) = scraped_run("live-fanout", &[file.to_str().unwrap()]);
    assert_monotonic(&scrapes);
    let last = scrapes.last().unwrap();
    for (k, name) in ["subscribers", "publishers"].into_iter().enumerate() {
        let sc = &doc["scenarios"][k];
        assert_eq!(sc["name"], name);
        assert_final_equals_json(last, sc, name);
        for (metric, json) in [
            ("sockstorm_fanout_published_total", "fanout_published"),
            ("sockstorm_fanout_delivered_total", "fanout_delivered"),
            ("sockstorm_ws_msgs_pushed_total", "msgs_pushed"),
        ] {
            let got = value(last, metric, &[("scenario", name)]) as u64;
            assert_eq!(got, counter(sc, json), "{metric} of {name}");
        }
    }
    assert_eq!(counter(&doc, "fanout_published"), 30);
    assert_eq!(counter(&doc, "fanout_delivered"), 30 * 30);
}
