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
        assert_eq!(v["settings"]["connections"], [7, 7, 6][k]);
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
    assert_eq!(v["scenarios"][0]["connections"], 2);
    assert_eq!(v["scenarios"][1]["connections"], 0);
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
