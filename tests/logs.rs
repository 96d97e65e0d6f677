//! The live logs of a run against the gateway: the HdrHistogram interval log (`--hdr-log`)
//! and the per-second CSV (`--csv`) add up to the run's JSON exactly — every tag's interval
//! histograms to the JSON's histogram of that name, the CSV's rows to the timeline and its
//! count columns to the counters. Also from a scenario file (`hdr_log`, `csv`), with a failure
//! cause that first appears mid-run (an expected reply that never comes), and bad paths refused before the run (exit 2).

mod common;

use common::*;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A histogram from the base64 V2 + DEFLATE text of a log line or a JSON `hdr`.
fn decode(text: &str) -> Histogram<u64> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .unwrap()
}

/// The interval log at `path`: its header lines, and each tag's interval histograms added.
fn read_hdr_log(path: &Path) -> (Vec<String>, BTreeMap<String, Histogram<u64>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let headers = text
        .lines()
        .take_while(|l| !l.starts_with("Tag="))
        .map(str::to_owned)
        .collect();
    let mut tags: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    for e in IntervalLogIterator::new(text.as_bytes()) {
        if let LogEntry::Interval(i) = e.unwrap() {
            let h = decode(i.encoded_histogram());
            let tag = i.tag().expect("every line is tagged").as_str().to_owned();
            match tags.get_mut(&tag) {
                Some(sum) => sum.add(&h).unwrap(),
                None => {
                    tags.insert(tag, h);
                }
            }
        }
    }
    (headers, tags)
}

/// The CSV at `path`: header, rows (RFC 4180 line ends; the data cells are numbers).
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with("\r\n"), "CRLF line ends: {text:?}");
    let mut lines = text.split_terminator("\r\n");
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    for r in &rows {
        assert_eq!(r.len(), header.len(), "{header:?} vs {r:?}");
    }
    (header, rows)
}

/// The sum of column `name` over `rows`.
fn column_sum(header: &[String], rows: &[Vec<String>], name: &str) -> u64 {
    let i = header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    rows.iter().map(|r| r[i].parse::<u64>().unwrap()).sum()
}

/// Every histogram of the JSON `v` (`histograms`) with samples equals its tag's added
/// intervals exactly; a histogram without samples has no lines.
fn assert_log_matches(v: &Value, tags: &BTreeMap<String, Histogram<u64>>) {
    for (name, h) in v["histograms"].as_object().unwrap() {
        let json = decode(h["hdr"].as_str().unwrap());
        assert_eq!(json.len(), h["count"].as_u64().unwrap());
        match tags.get(name) {
            Some(log) => {
                assert_eq!(log.len(), json.len(), "{name}: log vs JSON count");
                assert_eq!(log, &json, "{name}: log vs JSON histogram");
            }
            None => assert_eq!(json.len(), 0, "{name} has samples but no log lines"),
        }
    }
}

#[test]
fn the_interval_log_and_the_csv_add_up_to_the_json() {
    let _g = lock();
    let gw = gateway(None);
    let out = json_path("logs");
    let hlog = out.with_extension("hlog");
    let csv = out.with_extension("csv");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "-c",
        "40",
        "--connect-rate",
        "30",
        "-d",
        "3s",
        "--message",
        "x",
        "--message-rate",
        "4",
        "--ping-interval",
        "1s",
        "--request",
        "quote=quote {{seq}}",
        "--request-rate",
        "quote=2",
        "--request-reply",
        "quote=echo",
        "-q",
        "--json",
        out.to_str().unwrap(),
        "--hdr-log",
        hlog.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), 40);

    let (headers, tags) = read_hdr_log(&hlog);
    let started = v["host"]["started_unix_us"].as_u64().unwrap() as f64 / 1e6;
    assert!(
        headers[0].starts_with("#[Logged with sockstorm"),
        "{headers:?}"
    );
    assert_eq!(headers[1], "#[Histogram log format version 1.3]");
    assert_eq!(
        headers[2],
        format!("#[StartTime: {started:.3} (seconds since epoch)]")
    );
    assert_eq!(
        headers[3],
        format!("#[BaseTime: {started:.3} (seconds since epoch)]")
    );
    assert_eq!(headers[4], "#[MaxValueDivisor: 1000.000]");
    assert_eq!(
        headers[5],
        r#""StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram""#
    );
    for t in [
        "tcp_connect",
        "ws_upgrade",
        "ws_connecting",
        "ws_msg_rtt",
        "ws_ping",
    ] {
        assert!(tags.contains_key(t), "no {t} lines: {:?}", tags.keys());
    }
    assert_log_matches(&v, &tags);
    // A named request's replies: tagged as thresholds name them.
    let replies = decode(
        v["requests"]["quote"]["reply_latency"]["hdr"]
            .as_str()
            .unwrap(),
    );
    assert!(!replies.is_empty());
    assert_eq!(tags["ws_reply{msg:quote}"], replies);

    let (header, rows) = read_csv(&csv);
    assert_eq!(
        header[..9],
        [
            "t_s",
            "unix_s",
            "open",
            "target",
            "established",
            "failures",
            "msgs_sent",
            "msgs_received",
            "msgs_pushed"
        ]
    );
    assert!(header.contains(&"ws_connecting_p99_us".to_owned()));
    let timeline = v["timeline"].as_array().unwrap();
    assert_eq!(rows.len(), timeline.len());
    for (r, s) in rows.iter().zip(timeline) {
        assert_eq!(r[1], s["unix_s"].to_string());
        assert_eq!(r[2], s["open"].to_string());
        assert_eq!(r[3], "40");
        assert_eq!(r[4], s["established"].to_string());
    }
    assert_eq!(column_sum(&header, &rows, "established"), 40);
    for c in ["msgs_sent", "msgs_received", "msgs_pushed"] {
        assert_eq!(column_sum(&header, &rows, c), counter(&v, c), "{c}");
    }
    assert_eq!(column_sum(&header, &rows, "failures"), 0);
    // Empty cells where a second had no samples: TLS never ran.
    let tls = header
        .iter()
        .position(|h| h == "tls_handshake_full_p50_us")
        .unwrap();
    assert!(rows.iter().all(|r| r[tls].is_empty()));
    gw.shutdown();
}

#[test]
fn a_scenario_file_writes_them_and_a_cause_seen_late_gets_its_column() {
    let _g = lock();
    let gw = gateway(None);
    let out = json_path("logs-file");
    let hlog = out.with_extension("hlog");
    let csv = out.with_extension("csv");
    let file = out.with_extension("toml");
    std::fs::write(
        &file,
        format!(
            r#"
url = "ws://{addr}/ws"
duration = "3s"
connections = 30
connect_rate = 60
hdr_log = "{hlog}"
csv = "{csv}"

[[scenario]]
name = "echo"
weight = 2
message = "hi"
message_rate = 2

[[scenario]]
name = "unanswered"
expect = "json:type=never"
expect_timeout = "1s"
"#,
            addr = gw.local_addr(),
            hlog = hlog.display(),
            csv = csv.display(),
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
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let v = read_json(&out);
    // Each of the second scenario's sessions waited 1 s for a reply that never came.
    let missed = v["failures"]["expect_timeout"].as_u64().unwrap();
    assert_eq!(missed, 10);

    let (_, tags) = read_hdr_log(&hlog);
    assert_log_matches(&v, &tags);

    let (header, rows) = read_csv(&csv);
    assert_eq!(header[6], "failures_expect_timeout", "{header:?}");
    assert_eq!(rows.len(), v["timeline"].as_array().unwrap().len());
    // Rows from before the first refusal got a 0 in the new column.
    assert_eq!(rows[0][6], "0", "{rows:?}");
    assert_eq!(
        column_sum(&header, &rows, "failures_expect_timeout"),
        missed
    );
    assert_eq!(column_sum(&header, &rows, "failures"), missed);
    assert_eq!(
        column_sum(&header, &rows, "established"),
        counter(&v, "established")
    );
    assert_eq!(
        column_sum(&header, &rows, "msgs_received"),
        counter(&v, "msgs_received")
    );
    gw.shutdown();
}

#[test]
fn unusable_log_paths_are_refused_before_the_run() {
    let _g = lock();
    let gw = gateway(None);
    let dir = json_path("logs-paths").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing/run.hlog");
    for (flag, path, why) in [
        ("--hdr-log", missing.to_str().unwrap(), "does not exist"),
        ("--csv", dir.to_str().unwrap(), "is a directory"),
        ("--csv", "-", "give a file path"),
    ] {
        let o = sockstorm(&[
            "run",
            &url(gw.local_addr()),
            "-c",
            "1",
            "-d",
            "1s",
            "-q",
            flag,
            path,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag} {path}: {err}");
        assert!(
            err.contains(flag) && err.contains(path) && err.contains(why),
            "{err}"
        );
    }
    assert_eq!(gw.stats().accepted, 0, "no run started");
    gw.shutdown();
}
