//! Whole runs split across processes: `--segment I/N` (and `auto` from a Kubernetes
//! Indexed Job's environment), `--start-at` shared by all segments, against one gateway.

mod common;

use common::{counter, json_path, lock, read_json, sockstorm};
use sockstorm::server::{Gateway, ServeConfig};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Connections of the whole run: 7, 7 and 6 over three segments.
const C: u64 = 20;

#[test]
fn three_segments_make_the_whole_run_and_start_together() {
    let _g = lock();
    let gw = Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        record_requests: 4 * C as usize,
        ..ServeConfig::default()
    })
    .unwrap();
    // One user per line: the segments together use each exactly once.
    let users = json_path("segment-users").with_extension("txt");
    let names: Vec<String> = (0..C).map(|i| format!("user{i:02}")).collect();
    std::fs::write(&users, names.join("\n") + "\n").unwrap();
    let url = format!(
        "ws://{}/ws?id={{{{conn_id}}}}&u={{{{line {}}}}}",
        gw.local_addr(),
        users.display()
    );
    // One instant for all three, computed once: 2 s from now (process start included).
    let at = SystemTime::now() + Duration::from_secs(2);
    let at_us = at.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
    let at_text = rfc3339(at);
    let c = C.to_string();
    let mut children = Vec::new();
    let mut outs = Vec::new();
    for k in 0..3u64 {
        let out = json_path(&format!("segment-{k}"));
        let sources = format!("127.0.{}.1-127.0.{}.8", k + 1, k + 1);
        let seg = format!("{k}/3");
        let mut args = vec![
            "run",
            &url,
            "-c",
            &c,
            "--connect-rate",
            "1000",
            "-d",
            "2s",
            "--drain",
            "200ms",
            "--no-reconnect",
            "--source-ip",
            &sources,
            "--start-at",
            &at_text,
            "-q",
            "--json",
            out.to_str().unwrap(),
        ];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockstorm"));
        cmd.env_remove("JOB_COMPLETION_INDEX")
            .env_remove("SLURM_PROCID")
            .env_remove("SLURM_NTASKS");
        // The last segment finds its index as a pod of an Indexed Job would.
        if k == 2 {
            cmd.env("JOB_COMPLETION_INDEX", "2");
            args.extend(["--segment", "auto", "--segments", "3"]);
        } else {
            args.extend(["--segment", &seg]);
        }
        children.push(
            cmd.args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        outs.push(out);
    }
    let mut docs = Vec::new();
    for (k, (child, out)) in children.into_iter().zip(&outs).enumerate() {
        let o = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(o.status.code(), Some(0), "segment {k}: {text}");
        assert!(
            text.contains(&format!("segment {k}/3 (0-based, from ")),
            "segment {k}: {text}"
        );
        assert!(text.contains("µs from it"), "segment {k}: {text}");
        docs.push(read_json(out));
    }
    let stats = gw.stats();
    let requests = gw.requests();
    gw.shutdown();

    // Shares 7, 7, 6; together exactly -c and the gateway's accepted count.
    let established: Vec<u64> = docs.iter().map(|v| counter(v, "established")).collect();
    assert_eq!(established, vec![7, 7, 6]);
    assert_eq!(established.iter().sum::<u64>(), C);
    assert_eq!(stats.accepted, C);
    for (k, v) in docs.iter().enumerate() {
        // The plan is the whole run's; the segment's share beside it.
        assert_eq!(v["settings"]["connections"], C);
        assert_eq!(v["segment"]["connections"], [7, 7, 6][k]);
        assert_eq!(v["segment"]["index"], k as u64);
        assert_eq!(v["segment"]["count"], 3);
        let source = if k == 2 {
            "JOB_COMPLETION_INDEX"
        } else {
            "flag"
        };
        assert_eq!(v["segment"]["source"], source);
        assert_eq!(v["start_at"]["unix_us"], at_us);
    }

    // Connection numbers: segment k's are k, k+3, k+6, ...; all of them exactly 0..C.
    let query = |r: &sockstorm::server::SeenRequest, key: &str| -> String {
        r.target
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {}", r.target))
            .to_owned()
    };
    let mut ids: Vec<u64> = requests
        .iter()
        .map(|r| query(r, "id=").parse().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..C).collect::<Vec<_>>());
    // `{{line FILE}}` follows the number: no two connections, in any segment, share a user.
    let mut seen: Vec<String> = requests.iter().map(|r| query(r, "u=")).collect();
    seen.sort_unstable();
    assert_eq!(seen, names);

    // A common start: each segment's offset from the instant (asserted < 50 ms for noise).
    let offsets: Vec<i64> = docs
        .iter()
        .map(|v| v["start_at"]["offset_us"].as_i64().unwrap())
        .collect();
    eprintln!("start offsets from --start-at, µs: {offsets:?}");
    for off in &offsets {
        assert!((0..50_000).contains(off), "offsets {offsets:?}");
    }
}

/// The plan of the whole-run merge test: echo sessions and a fan-out channel whose one
/// publisher falls in segment 0 (the remainder of 1 over 3), its 13 subscribers in all three
/// (5, 4, 4); thresholds that hold only for the whole run, and one that fails for any.
fn split_plan(addr: std::net::SocketAddr) -> std::path::PathBuf {
    let file = json_path("segments-whole").with_extension("toml");
    std::fs::write(
        &file,
        format!(
            r#"url = "ws://{addr}/ws?c={{{{conn_id}}}}"
duration = "3s"
drain = "500ms"
connect_rate = 500
no_reconnect = true
thresholds = [
  "established: count>=31",
  "fanout_delivered_owed: count>=520",
  "fanout_lost: count<1",
  "ws_msg_rtt: p(99)<1us",
]

[[scenario]]
name = "echo"
connections = 17
message = "hello {{{{conn_id}}}} {{{{seq}}}}"
message_rate = 5
message_count = 10

[[scenario]]
name = "subscribers"
role = "subscriber"
channel = "prices"
connections = 13

[[scenario]]
name = "publisher"
role = "publisher"
channel = "prices"
connections = 1
start = "500ms"
message_rate = 40
message_count = 40
"#
        ),
    )
    .unwrap();
    file
}

/// Runs `args` as a child, its output captured.
fn spawn(args: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_sockstorm"))
        .args(args)
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("SLURM_PROCID")
        .env_remove("SLURM_NTASKS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Exit code and stdout + stderr of a child.
fn finish(c: std::process::Child) -> (Option<i32>, String) {
    let o = c.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

/// Three segments from their own source addresses, one `--start-at`, one gateway; merged,
/// they equal the gateway's counts and the unsplit run's: established, messages, deliveries
/// owed and received across segments (the publisher is in one, subscribers in all), 0 lost,
/// histogram counts the sums, and the thresholds pass and fail as the unsplit run's do,
/// though no segment alone passes them.
#[test]
fn merged_segments_equal_the_gateway_and_the_unsplit_run() {
    let _g = lock();
    let gw = common::gateway(None);
    let plan = split_plan(gw.local_addr());
    let plan = plan.to_str().unwrap().to_owned();
    let mut children = Vec::new();
    let mut outs = Vec::new();
    for k in 0..3u64 {
        let out = json_path(&format!("segments-whole-{k}"));
        let args: Vec<String> = [
            "run",
            &plan,
            "--segment",
            &format!("{k}/3"),
            "--source-ip",
            &format!("127.0.{}.1-127.0.{}.4", k + 1, k + 1),
            "--start-at",
            "+2s",
            "-q",
            "--json",
            out.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec();
        children.push(spawn(&args));
        outs.push(out);
    }
    let mut docs = Vec::new();
    for (k, (child, out)) in children.into_iter().zip(&outs).enumerate() {
        let (code, text) = finish(child);
        // No segment alone has 31 established or 520 owed deliveries: its thresholds fail.
        assert_eq!(code, Some(99), "segment {k}: {text}");
        docs.push(read_json(out));
    }
    let stats = gw.stats();
    gw.shutdown();
    let merged = json_path("segments-whole-merged");
    let mut args = vec!["merge".to_owned()];
    args.extend(outs.iter().map(|p| p.to_str().unwrap().to_owned()));
    args.extend(["-o".to_owned(), merged.to_str().unwrap().to_owned()]);
    let (code, summary) = finish(spawn(&args));
    assert_eq!(code, Some(99), "{summary}");
    let m = read_json(&merged);

    // Established, echoes and deliveries: the gateway's own counts.
    assert_eq!(
        docs.iter()
            .map(|d| counter(d, "established"))
            .collect::<Vec<_>>(),
        [12, 10, 9]
    );
    assert_eq!(counter(&m, "established"), 31);
    assert_eq!(stats.accepted, 31);
    assert_eq!(counter(&m, "msgs_sent"), 170);
    assert_eq!(counter(&m, "msgs_received"), 170);
    assert_eq!(
        stats.msgs_in,
        170 + 40 + 13,
        "echoes, publishes and subscribes"
    );
    assert_eq!(
        (stats.channel_publishes, stats.channel_deliveries),
        (40, 520)
    );
    let f = &m["fanout"];
    assert_eq!(f["published"], 40);
    assert_eq!(f["subscriber_sessions"], 13);
    assert_eq!(f["owed"], 520);
    assert_eq!(f["delivered_owed"], 520);
    assert_eq!(f["lost"], 0);
    assert_eq!(f["foreign"], 0);
    assert_eq!(f["broadcast_completion"]["messages_incomplete"], 0);
    assert_eq!(f["broadcast_completion"]["messages_timed"], 40);
    // Alone, segments 1 and 2 owe nothing: their publisher is segment 0's.
    for d in &docs[1..] {
        assert_eq!(d["fanout"]["owed"], 0);
        assert_eq!(d["fanout"]["foreign"], d["fanout"]["delivered_total"]);
    }
    // Histograms: the merged counts are the sums.
    for (name, h) in m["histograms"].as_object().unwrap() {
        let sum: u64 = docs
            .iter()
            .map(|d| d["histograms"][name]["count"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(h["count"], sum, "{name}");
    }
    assert_eq!(m["histograms"]["ws_msg_rtt"]["count"], 170);
    assert_eq!(m["histograms"]["ws_msg_latency"]["count"], 520);
    // One start: the skew between the three under 20 ms, shown in the summary.
    let skew = m["merged"]["start_skew_us"].as_i64().unwrap();
    assert!((0..20_000).contains(&skew), "{skew}");
    assert!(summary.contains("start skew: "), "{summary}");
    assert!(
        summary.contains("owed 520 deliveries, received 520 (100.0000%), lost 0"),
        "{summary}"
    );

    // The unsplit run of the same plan passes and fails the same thresholds.
    let gw = common::gateway(None);
    let whole_plan = split_plan(gw.local_addr());
    let whole = json_path("segments-whole-unsplit");
    let (code, text) = finish(spawn(
        &[
            "run",
            whole_plan.to_str().unwrap(),
            "--source-ip",
            "127.0.4.1-127.0.4.4",
            "-q",
            "--json",
            whole.to_str().unwrap(),
        ]
        .map(str::to_owned),
    ));
    gw.shutdown();
    assert_eq!(code, Some(99), "{text}");
    let w = read_json(&whole);
    let verdicts = |v: &serde_json::Value| -> Vec<(String, bool)> {
        v["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["expr"].as_str().unwrap().to_owned(), t["pass"] == true))
            .collect()
    };
    assert_eq!(verdicts(&m), verdicts(&w));
    assert_eq!(
        verdicts(&m).iter().map(|(_, p)| *p).collect::<Vec<_>>(),
        [true, true, true, false]
    );
    for d in &docs {
        assert_eq!(
            d["thresholds"][0]["pass"], false,
            "a segment alone has < 31"
        );
    }
    assert_eq!(counter(&w, "fanout_owed"), counter(&m, "fanout_owed"));
    assert_eq!(counter(&w, "msgs_received"), counter(&m, "msgs_received"));
}

/// `at` as RFC 3339 in UTC, to the µs.
fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    )
}

#[test]
fn a_past_start_or_an_unknown_segment_is_refused() {
    let past = sockstorm(&[
        "run",
        "ws://127.0.0.1:9/ws",
        "--start-at",
        "2020-01-01T00:00:00Z",
    ]);
    let err = String::from_utf8_lossy(&past.stderr);
    assert_eq!(past.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--start-at") && err.contains("--start-late-ok"),
        "{err}"
    );

    let auto = Command::new(env!("CARGO_BIN_EXE_sockstorm"))
        .args(["run", "ws://127.0.0.1:9/ws", "--segment", "auto"])
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("SLURM_PROCID")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&auto.stderr);
    assert_eq!(auto.status.code(), Some(2), "{err}");
    assert!(err.contains("neither JOB_COMPLETION_INDEX"), "{err}");

    let bad = sockstorm(&["run", "ws://127.0.0.1:9/ws", "--segment", "3/3"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("numbered from 0"), "{err}");
}

/// A segment may hold none of a small scenario's connections: it runs the rest.
#[test]
fn a_scenario_with_no_connections_in_a_segment_runs_empty() {
    let _g = lock();
    let gw = common::gateway(None);
    let file = json_path("segment-empty-scenario").with_extension("toml");
    std::fs::write(
        &file,
        format!(
            "url = \"ws://{}/ws\"\nduration = \"1s\"\ndrain = \"200ms\"\nconnections = 4\n\n\
             [[scenario]]\nname = \"a\"\n\n[[scenario]]\nname = \"b\"\nconnections = 1\n",
            gw.local_addr()
        ),
    )
    .unwrap();
    let out = json_path("segment-empty-scenario");
    let o = sockstorm(&[
        "run",
        file.to_str().unwrap(),
        "--segment",
        "1/2",
        "--no-reconnect",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{text}");
    let v = read_json(&out);
    let stats = gw.stats();
    gw.shutdown();
    assert_eq!(counter(&v, "established"), 2);
    assert_eq!(stats.accepted, 2);
    assert_eq!(v["scenarios"][0]["connections"], 4);
    assert_eq!(v["scenarios"][0]["segment_connections"], 2);
    assert_eq!(v["scenarios"][1]["connections"], 1);
    assert_eq!(v["scenarios"][1]["segment_connections"], 0);
    assert_eq!(v["scenarios"][1]["counters"]["attempts"], 0);
}

/// A signal while waiting for `--start-at` ends the wait: the run starts, stops at once and
/// exits as interrupted, long before the instant.
#[test]
fn a_signal_while_waiting_for_the_start_ends_the_run() {
    let _g = lock();
    let gw = common::gateway(None);
    let out = json_path("segment-start-signal");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockstorm"))
        .args([
            "run",
            &common::url(gw.local_addr()),
            "-c",
            "4",
            "-d",
            "5s",
            "--start-at",
            "+60s",
            "-q",
            "--json",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let t0 = std::time::Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = t0 + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("still waiting for --start-at 10 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    gw.shutdown();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let v = read_json(&out);
    assert_eq!(v["interrupted"], true);
    assert!(v["start_at"]["offset_us"].as_i64().unwrap() < -50_000_000);
}
