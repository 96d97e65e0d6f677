//! `sockstorm merge` over real runs: three `sockstorm run` processes of one plan, each with
//! its own source addresses, against one in-process gateway; their documents merged.

mod common;

use common::*;
use serde_json::Value;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The plan every host runs: 40 connections, 5 echoes a second each, for 3 s.
fn run_args<'a>(url: &'a str, sources: &'a str, json: &'a str, threshold: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        url,
        "-c",
        "40",
        "--connect-rate",
        "400",
        "-d",
        "3s",
        "--message",
        "hello",
        "--message-rate",
        "5",
        "--no-reconnect",
        "--source-ip",
        sources,
        "-q",
        "--json",
        json,
        "--threshold",
        threshold,
    ]
}

/// Runs the three hosts one after another (one gateway, distinct source addresses) with
/// `threshold`, returns their documents' paths.
fn three_runs(url: &str, name: &str, threshold: &str) -> Vec<PathBuf> {
    let sources = [
        "127.0.1.1-127.0.1.8",
        "127.0.2.1-127.0.2.8",
        "127.0.3.1-127.0.3.8",
    ];
    sources
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let p = json_path(&format!("{name}-{k}"));
            let o = sockstorm(&run_args(url, s, p.to_str().unwrap(), threshold));
            assert_eq!(
                o.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&o.stderr)
            );
            p
        })
        .collect()
}

fn merge(args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["merge"];
    all.extend_from_slice(args);
    let o = sockstorm(&all);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn hist_count(v: &Value, name: &str) -> u64 {
    v["histograms"][name]["count"].as_u64().unwrap()
}

#[test]
fn three_hosts_merge_to_the_gateways_counts() {
    let _l = lock();
    let gw = gateway(None);
    let u = url(gw.local_addr());
    let files = three_runs(&u, "merge-pass", "ws_msg_rtt: p(99)<2s");
    let docs: Vec<Value> = files.iter().map(read_json).collect();
    let out = json_path("merge-pass-all");
    let paths: Vec<&str> = files.iter().map(|p| p.to_str().unwrap()).collect();
    let mut args = paths.clone();
    args.extend(["-o", out.to_str().unwrap()]);
    let (code, stdout, stderr) = merge(&args);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("thresholds (on the merged data): all passed"),
        "{stdout}"
    );
    let m = read_json(&out);
    let sum = |f: &dyn Fn(&Value) -> u64| docs.iter().map(f).sum::<u64>();
    for c in [
        "attempts",
        "established",
        "msgs_sent",
        "msgs_received",
        "closed_clean",
        "bytes_sent",
    ] {
        assert_eq!(counter(&m, c), sum(&|d| counter(d, c)), "{c}");
    }
    for h in ["tcp_connect", "ws_connecting", "ws_upgrade", "ws_msg_rtt"] {
        assert_eq!(hist_count(&m, h), sum(&|d| hist_count(d, h)), "{h}");
    }
    assert_eq!(hist_count(&m, "ws_msg_rtt"), counter(&m, "msgs_received"));
    // The gateway's own counts: every connection accepted and every message, exactly.
    let g = gw.stats();
    assert_eq!(counter(&m, "established"), 120);
    assert_eq!(g.accepted, counter(&m, "attempts"));
    assert_eq!(g.msgs_in, counter(&m, "msgs_sent"));
    assert_eq!(g.msgs_out, counter(&m, "msgs_received"));
    assert_eq!(m["merged"]["documents"].as_array().unwrap().len(), 3);
    assert_eq!(m["schema_version"], 2);
    assert_eq!(m["plan"]["identity"], docs[0]["plan"]["identity"]);
    // Timelines add per Unix second.
    let tl_sum = |d: &Value| {
        d["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["msgs_received"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(tl_sum(&m), sum(&tl_sum));

    // The same documents on stdin, concatenated with log lines between them.
    let mut text = String::from("pod log line\n");
    for p in &files {
        text.push_str(&std::fs::read_to_string(p).unwrap());
        text.push_str("summary line\n");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockstorm"))
        .args(["merge", "-", "-o", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let piped: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(piped["counters"], m["counters"]);
    assert_eq!(piped["histograms"], m["histograms"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("3 documents, 4 other lines skipped"));

    // The same run twice: refused, or merged once with --partial.
    let (code, _, err) = merge(&[paths[0], paths[1], paths[0]]);
    assert_eq!(code, Some(2));
    assert!(err.contains("is the same run as"), "{err}");
    let (code, out, _) = merge(&["--partial", paths[0], paths[1], paths[0]]);
    assert_eq!(code, Some(0));
    assert!(out.contains("duplicate:"), "{out}");
}

#[test]
fn a_threshold_that_fails_on_the_merged_data_exits_99() {
    let _l = lock();
    let gw = gateway(None);
    let u = url(gw.local_addr());
    // Each host alone passes (40 sessions); the whole run has 120.
    let files = three_runs(&u, "merge-fail", "established: count<100");
    let paths: Vec<&str> = files.iter().map(|p| p.to_str().unwrap()).collect();
    let (code, out, _) = merge(&paths);
    assert_eq!(code, Some(99), "{out}");
    assert!(out.contains("1 of 1 FAILED"), "{out}");
}

#[test]
fn another_plan_is_refused_with_the_key_named() {
    let _l = lock();
    let gw = gateway(None);
    let u = url(gw.local_addr());
    let a = json_path("merge-plan-a");
    let b = json_path("merge-plan-b");
    let o = sockstorm(&run_args(
        &u,
        "127.0.1.1-127.0.1.8",
        a.to_str().unwrap(),
        "established: count>0",
    ));
    assert_eq!(o.status.code(), Some(0));
    let mut other = run_args(
        &u,
        "127.0.2.1-127.0.2.8",
        b.to_str().unwrap(),
        "established: count>0",
    );
    other[3] = "30";
    let o = sockstorm(&other);
    assert_eq!(o.status.code(), Some(0));
    let (code, _, err) = merge(&[a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("is a run of another plan than")
            && err.contains("connections is 30 there and 40 in"),
        "{err}"
    );
    let bad = json_path("merge-plan-bad");
    std::fs::write(&bad, "not json").unwrap();
    let (code, _, err) = merge(&[a.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not a sockstorm result document"), "{err}");
}
