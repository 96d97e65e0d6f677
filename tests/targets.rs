//! Several targets: connections spread over three gateways round-robin (±1 each) or by weight
//! (exact per cycle), each target's counts and failures in its own entry, a refusing node
//! (HTTP 503) standing out in its target's counters only; `targets = [...]` in a scenario
//! file; bad target lists refused with the fix.

mod common;

use common::{counter, gateway, json_path, lock, read_json, sockstorm, url, write_file};
use serde_json::Value;
use sockstorm::server::Reject;

fn targets(v: &Value) -> Vec<&Value> {
    v["targets"].as_array().expect("targets").iter().collect()
}

#[test]
fn connections_spread_over_targets_and_a_refusing_one_stands_out() {
    let _g = lock();
    let gws = [
        gateway(None),
        gateway(None),
        gateway(Some(Reject::Status(503))),
    ];
    let urls: Vec<String> = gws.iter().map(|g| url(g.local_addr())).collect();
    let out = json_path("targets-rr");
    let o = sockstorm(&[
        "run",
        &urls[0],
        &urls[1],
        "--target",
        &urls[2],
        "-c",
        "301",
        "--connect-rate",
        "2000",
        "-d",
        "2s",
        "--no-reconnect",
        "--message",
        "t {{seq}}",
        "--message-rate",
        "2",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    let stats: Vec<_> = gws.iter().map(|g| g.stats()).collect();
    for g in gws {
        g.shutdown();
    }
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = read_json(&out);
    let t = targets(&v);
    assert_eq!(t.len(), 3);
    // Round-robin over 301 connections: 101, 100, 100.
    let attempts: Vec<u64> = t.iter().map(|t| t["attempts"].as_u64().unwrap()).collect();
    assert_eq!(attempts, [101, 100, 100]);
    assert_eq!(attempts.iter().sum::<u64>(), counter(&v, "attempts"));
    // Each healthy node opened every connection sent to it, as it counted them itself.
    for (k, t) in t.iter().enumerate().take(2) {
        assert_eq!(t["established"].as_u64(), Some(attempts[k]));
        assert_eq!(stats[k].accepted, attempts[k]);
        assert_eq!(t["failures"], serde_json::json!({}));
        assert_eq!(
            t["histograms"]["ws_connecting"]["count"].as_u64(),
            Some(attempts[k])
        );
        assert_eq!(
            t["histograms"]["tcp_connect"]["count"].as_u64(),
            Some(attempts[k])
        );
    }
    // The refusing one: every attempt a 503, in its own entry only.
    assert_eq!(t[2]["established"].as_u64(), Some(0));
    assert_eq!(t[2]["connect_failed"].as_u64(), Some(100));
    assert_eq!(t[2]["failures"], serde_json::json!({"http_503": 100}));
    assert_eq!(stats[2].handshakes_rejected, 100);
    assert_eq!(v["failures"], serde_json::json!({"http_503": 100}));
    assert_eq!(counter(&v, "established"), 201);
    // Echoes went through the healthy nodes, every one answered.
    let sent = counter(&v, "msgs_sent");
    assert!(sent > 0);
    assert_eq!(counter(&v, "msgs_received"), sent);
    assert_eq!(stats[0].msgs_in + stats[1].msgs_in, sent);
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(summary.contains("http_503×100"), "{summary}");
}

#[test]
fn weights_and_scenario_file_targets() {
    let _g = lock();
    let gws = [gateway(None), gateway(None), gateway(None)];
    let urls: Vec<String> = gws.iter().map(|g| url(g.local_addr())).collect();
    let file = write_file(
        "targets.toml",
        &format!(
            "url = \"{}\"\ntargets = [\"{}\", \"{}\"]\ntarget_weights = \"3,1,1\"\nconnections = 500\nconnect_rate = 2000\nduration = \"2s\"\nreconnect = false\n",
            urls[0], urls[1], urls[2]
        ),
    );
    let out = json_path("targets-weighted");
    let o = sockstorm(&[
        "run",
        file.to_str().unwrap(),
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    let stats: Vec<_> = gws.iter().map(|g| g.stats()).collect();
    for g in gws {
        g.shutdown();
    }
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = read_json(&out);
    let opened: Vec<u64> = targets(&v)
        .iter()
        .map(|t| t["established"].as_u64().unwrap())
        .collect();
    assert_eq!(opened, [300, 100, 100]);
    assert_eq!(
        stats.iter().map(|s| s.accepted).collect::<Vec<_>>(),
        [300, 100, 100]
    );
    let weights: Vec<u64> = targets(&v)
        .iter()
        .map(|t| t["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [3, 1, 1]);
}

#[test]
fn bad_target_lists_are_refused_with_the_fix() {
    for (args, says) in [
        (
            &["run", "ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/other"][..],
            "same service",
        ),
        (
            &["run", "ws://127.0.0.1:1/ws", "wss://127.0.0.1:2/ws"][..],
            "same service",
        ),
        (
            &[
                "run",
                "ws://127.0.0.1:1/ws",
                "ws://127.0.0.1:2/ws",
                "--target-weights",
                "1",
            ][..],
            "1 weights for 2 targets",
        ),
        (
            &["run", "ws://127.0.0.1:1/ws", "--target-weights", "0"][..],
            "from 1 to 1000",
        ),
        (
            &["run", "ws://127.0.0.1:1/ws", "ws://[::1]:2/ws"][..],
            "same address family",
        ),
    ] {
        let o = sockstorm(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// Two segments of one run over two targets, merged: the merged document's per-target counts
/// are the sum of the segments' and what each gateway counted.
#[test]
fn segments_over_several_targets_merge_per_target() {
    let _g = lock();
    let gws = [gateway(None), gateway(None)];
    let urls: Vec<String> = gws.iter().map(|g| url(g.local_addr())).collect();
    let outs = [json_path("targets-seg0"), json_path("targets-seg1")];
    for (k, out) in outs.iter().enumerate() {
        let seg = format!("{k}/2");
        let o = sockstorm(&[
            "run",
            &urls[0],
            &urls[1],
            "-c",
            "200",
            "--connect-rate",
            "2000",
            "-d",
            "2s",
            "--no-reconnect",
            "--segment",
            &seg,
            "-q",
            "--json",
            out.to_str().unwrap(),
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let stats: Vec<_> = gws.iter().map(|g| g.stats()).collect();
    for g in gws {
        g.shutdown();
    }
    let merged = json_path("targets-merged");
    let o = sockstorm(&[
        "merge",
        outs[0].to_str().unwrap(),
        outs[1].to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m = read_json(&merged);
    let t = targets(&m);
    let opened: Vec<u64> = t
        .iter()
        .map(|t| t["established"].as_u64().unwrap())
        .collect();
    assert_eq!(opened, [stats[0].accepted, stats[1].accepted]);
    assert_eq!(opened.iter().sum::<u64>(), 200);
    assert_eq!(counter(&m, "established"), 200);
    for (k, t) in t.iter().enumerate() {
        assert_eq!(
            t["histograms"]["ws_connecting"]["count"].as_u64(),
            Some(opened[k])
        );
    }
}
