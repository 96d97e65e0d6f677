//! Every scenario file in examples/ runs, shortened, against one in-process gateway that
//! answers the way the articles' servers do (ack routes, sequenced quotes with gaps, pushed
//! events, server pings with a keepalive close, the slow-consumer rule). Each run must exit
//! 0, every scenario must open connections, and none may fail, except what an example
//! provokes on purpose ([`expected`]), which must then show exactly. The gateway's counts must
//! match the client's: its acks against the replies and acked messages, its visible stream
//! gaps against the gaps found, its upgrade requests against the per-connection URLs. The
//! directory is listed, so a new example is covered by adding it.

mod common;
use common::*;
use serde_json::Value;
use sockstorm::server::{Gateway, GatewayStats, ServeConfig};
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A run longer than this is stuck (the longest example, with stages, takes about 9 s).
const RUN_LIMIT: Duration = Duration::from_secs(40);

/// How the test gateway pings: every 250 ms, 500 ms to answer. keepalive-abuse.toml's
/// misbehaving clients start 1 s in, so the server's closes land well within a 3 s run.
const PING: (Duration, Duration) = (Duration::from_millis(250), Duration::from_millis(500));

/// The test gateway skips every 10th quote of each stream: gaps to count.
const GAP_EVERY: u64 = 10;

/// How the server ends every session of a scenario that misbehaves on purpose.
#[derive(Debug, Clone, Copy)]
enum Provoked {
    /// It stopped answering pings: closed with 1011 "keepalive ping timeout".
    KeepaliveClose,
    /// It stopped reading: the server's close went unanswered, so it was reset (1006,
    /// failure `reset`).
    Reset,
}

/// A count computed from the gateway's counts of a run.
type FromGateway = fn(&GatewayDelta) -> u64;

/// What a run of one example must show beyond the common checks.
struct Expected {
    /// Exit code: 0, 3 when it provokes failed sessions, 99 when a threshold must catch what
    /// the gateway injects.
    exit: i32,
    /// The thresholds that must fail against this gateway (all others pass).
    failing: &'static [&'static str],
    /// Scenarios whose every session the server ends on purpose, and how.
    provoked: &'static [(&'static str, Provoked)],
    /// The ack-route replies the gateway must have sent, computed from the client's results.
    acks: fn(&Value) -> u64,
    /// A check that must have passed exactly this many times (from the gateway's counts),
    /// and failed none.
    checked: Option<(&'static str, FromGateway)>,
}

/// What an example is expected to show; the default: a clean run, no ack routes used.
fn expected(stem: &str) -> Expected {
    let clean = Expected {
        exit: 0,
        failing: &[],
        provoked: &[],
        acks: |_| 0,
        checked: None,
    };
    match stem {
        // One message_ack per chat message, each matched to its own message by id.
        "chat" => Expected {
            acks: |v| counter(v, "replies_received"),
            ..clean
        },
        // One ack per rating, each passing k6's 'ack received'.
        "rating-stream" => Expected {
            acks: |v| counter(v, "replies_received"),
            checked: Some(("ack received", |g| g.acks)),
            ..clean
        },
        // One operation_applied per edit and one document_joined per join, replacements'
        // joins included. Counted from what was sent: an edit in flight when a storm closes
        // its session gracefully is still answered by the gateway, but unanswered for us.
        "collab-resume" => Expected {
            acks: |v| counter(v, "requests_sent") + counter(v, "on_open_sent"),
            ..clean
        },
        // The gateway skips quotes: the file's gap thresholds must catch it, and only those.
        "market-data" => Expected {
            exit: 99,
            failing: &["stream_gaps: count==0", "stream_lost: count==0"],
            checked: Some(("price positive", |g| g.stream_msgs)),
            ..clean
        },
        // The file's point: silent clients closed with 1011, stalled ones reset.
        "keepalive-abuse" => Expected {
            exit: 3,
            provoked: &[
                ("silent", Provoked::KeepaliveClose),
                ("stalled", Provoked::Reset),
            ],
            ..clean
        },
        _ => clean,
    }
}

/// Whether a scenario file sets the auth pre-step (`auth = {...}`, `auth.url = ...`,
/// `auth_url = ...` or an `[auth]` table): those get `--auth-url` pointed at the gateway.
/// Keys, not the word: comments may mention "auth" without the file using it.
fn uses_auth(text: &str) -> bool {
    text.lines().map(str::trim_start).any(|l| {
        l.starts_with("[auth]")
            || l.strip_prefix("auth").is_some_and(|rest| {
                matches!(rest.chars().next(), Some(' ' | '\t' | '=' | '.' | '_'))
            })
    })
}

/// Whether the file's `url` takes per-connection values (`url = "…{{conn_id}}…"`).
fn templated_url(text: &str) -> bool {
    text.lines()
        .map(str::trim_start)
        .any(|l| l.starts_with("url = ") && l.contains("{{"))
}

/// Runs `sockstorm` with `args`, killing it after `RUN_LIMIT`: (exit code, stdout, stderr).
fn run_limited(args: &[String]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockstorm"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).ok();
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).ok();
        s
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if t0.elapsed() > RUN_LIMIT {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, out_t.join().unwrap(), err_t.join().unwrap())
}

/// The gateway's stats once every connection of the run has closed on its side (at most 2 s
/// after the client exited), so that its counters are final.
fn settled_stats(gw: &Gateway) -> GatewayStats {
    let t0 = Instant::now();
    loop {
        let s = gw.stats();
        if s.open == 0 || t0.elapsed() > Duration::from_secs(2) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The gateway's counts for one run: `after` − `before`, for the counters compared here.
#[derive(Debug, PartialEq, Eq)]
struct GatewayDelta {
    acks: u64,
    stream_msgs: u64,
    stream_gaps_visible: u64,
    keepalive_timeouts: u64,
    keepalive_aborts: u64,
    slow_consumer_aborts: u64,
}

impl GatewayDelta {
    fn between(before: &GatewayStats, after: &GatewayStats) -> Self {
        Self {
            acks: after.acks - before.acks,
            stream_msgs: after.stream_msgs - before.stream_msgs,
            stream_gaps_visible: after.stream_gaps_visible - before.stream_gaps_visible,
            keepalive_timeouts: after.keepalive_timeouts - before.keepalive_timeouts,
            keepalive_aborts: after.keepalive_aborts - before.keepalive_aborts,
            slow_consumer_aborts: after.slow_consumer_aborts - before.slow_consumer_aborts,
        }
    }
}

fn count(s: &Value, name: &str) -> u64 {
    s["counters"][name].as_u64().unwrap_or(0)
}

/// What is wrong with one example's run, if anything.
fn check_example(file: &Path, gw: &Gateway) -> Result<(), String> {
    let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
    let want = expected(&stem);
    let text = std::fs::read_to_string(file).unwrap();
    let out = json_path(&format!("example-{stem}"));
    std::fs::remove_file(&out).ok();
    let addr = gw.local_addr();
    let mut args: Vec<String> = [
        "run",
        file.to_str().unwrap(),
        "--url",
        &format!("ws://{addr}"),
        "-d",
        "3s",
        "-c",
        "200",
        "--connect-rate",
        "2000",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if uses_auth(&text) {
        args.push("--auth-url".into());
        args.push(format!("http://{addr}/v1/auth/token"));
    }
    let before = settled_stats(gw);
    let seen_before = gw.requests().len();
    let (code, stdout, stderr) = run_limited(&args);
    if code != Some(want.exit) {
        return Err(format!(
            "exit {code:?}, expected {} (`sockstorm {}`)\nstderr:\n{stderr}\nstdout:\n{stdout}",
            want.exit,
            args.join(" ")
        ));
    }
    let gwd = GatewayDelta::between(&before, &settled_stats(gw));
    let v: Value = read_json(&out);
    let scenarios = v["scenarios"]
        .as_array()
        .filter(|s| !s.is_empty())
        .ok_or("no `scenarios` in the JSON")?;
    let mut problems = Vec::new();
    let mut problem = |p: String| problems.push(p);

    // Every scenario opened connections; none failed unless it was provoked to, and then
    // every session ended exactly as provoked.
    let (mut closes_1011, mut resets) = (0, 0);
    for s in scenarios {
        let name = s["name"].as_str().unwrap_or("?");
        let established = count(s, "established");
        if established == 0 {
            problem(format!("scenario `{name}`: no connection established"));
        }
        let provoked = want.provoked.iter().find(|(n, _)| *n == name).map(|p| p.1);
        let (codes, failures, by_server, dropped) = match provoked {
            None => (
                serde_json::json!({"1000": count(s, "closed_clean")}),
                serde_json::json!({}),
                0,
                0,
            ),
            Some(Provoked::KeepaliveClose) => {
                closes_1011 += established;
                (
                    serde_json::json!({"1011": established}),
                    serde_json::json!({}),
                    established,
                    0,
                )
            }
            Some(Provoked::Reset) => {
                resets += established;
                (
                    serde_json::json!({"1006": established}),
                    serde_json::json!({"reset": established}),
                    0,
                    established,
                )
            }
        };
        if s["failures"] != failures {
            problem(format!(
                "scenario `{name}`: failures {}, expected {failures}",
                s["failures"]
            ));
        }
        if !want.provoked.is_empty() {
            // Exact close codes where closes are the point of the example.
            if s["close_codes"] != codes {
                problem(format!(
                    "scenario `{name}`: close codes {}, expected {codes}",
                    s["close_codes"]
                ));
            }
            let got = (count(s, "closed_by_server"), count(s, "sessions_dropped"));
            if got != (by_server, dropped) {
                problem(format!(
                    "scenario `{name}`: (closed_by_server, sessions_dropped) {got:?}, expected {:?}",
                    (by_server, dropped)
                ));
            }
        }
    }
    // The gateway closed with 1011 every client that stopped answering, and reset every
    // one that stopped reading (after its unread 1011 close); nothing else.
    if !want.provoked.is_empty() {
        let got = (
            gwd.keepalive_timeouts,
            gwd.keepalive_aborts,
            gwd.slow_consumer_aborts,
        );
        if got != (closes_1011 + resets, resets, 0) {
            problem(format!(
                "gateway (keepalive_timeouts, keepalive_aborts, slow_consumer_aborts) {got:?}, \
                 expected {:?}",
                (closes_1011 + resets, resets, 0)
            ));
        }
    } else if (gwd.keepalive_timeouts, gwd.keepalive_aborts) != (0, 0) {
        problem(format!("the gateway closed well-behaved clients: {gwd:?}"));
    }

    // Thresholds: all pass but the ones meant to fail.
    let failed: Vec<&str> = v["thresholds"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter(|t| t["pass"] == false)
                .filter_map(|t| t["expr"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if failed != want.failing {
        problem(format!(
            "failed thresholds {failed:?}, expected {:?}",
            want.failing
        ));
    }

    // Every request answered or unanswered, none lost track of.
    if let Some(reqs) = v["requests"].as_object() {
        for (name, r) in reqs {
            let n = |k: &str| r[k].as_u64().unwrap_or(0);
            if n("answered") + n("unanswered") != n("sent") || n("sent") == 0 {
                problem(format!("request `{name}`: {r}"));
            }
        }
    }
    // The gateway's acks: exactly one per request and acked message of the run.
    let acks = (want.acks)(&v);
    if gwd.acks != acks {
        problem(format!("gateway acks {}, expected {acks}", gwd.acks));
    }
    // Stream gaps: what the client found is what the gateway left visible.
    let got = (
        counter(&v, "stream_msgs"),
        counter(&v, "stream_gaps"),
        counter(&v, "stream_skipped"),
    );
    let gw_streams = (
        gwd.stream_msgs,
        gwd.stream_gaps_visible,
        gwd.stream_gaps_visible,
    );
    if got != gw_streams {
        problem(format!(
            "client (stream_msgs, stream_gaps, stream_skipped) {got:?}, gateway (stream_msgs, \
             gaps visible, gaps visible) {gw_streams:?}"
        ));
    }
    if let Some((name, passed)) = want.checked {
        let c = &v["checks"][name];
        let want = (passed(&gwd), 0);
        if (c["passed"].as_u64(), c["failed"].as_u64()) != (Some(want.0), Some(want.1)) {
            problem(format!(
                "check `{name}`: {c}, expected (passed, failed) {want:?}"
            ));
        }
    }
    // Per-connection URLs: the gateway saw one distinct rendered target per attempt.
    if templated_url(&text) {
        let seen = gw.requests();
        let targets: HashSet<&str> = seen[seen_before..]
            .iter()
            .map(|r| r.target.as_str())
            .collect();
        let attempts = counter(&v, "attempts") as usize;
        if seen.len() - seen_before != attempts || targets.len() != attempts {
            problem(format!(
                "{attempts} attempts, the gateway saw {} upgrade requests with {} distinct targets",
                seen.len() - seen_before,
                targets.len()
            ));
        }
        if let Some(t) = targets
            .iter()
            .find(|t| t.contains("{{") || t.contains("***"))
        {
            problem(format!("target not rendered: {t}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\ngateway: {gwd:?}\nstdout:\n{stdout}",
            problems.join("\n")
        ))
    }
}

#[test]
fn every_example_runs_cleanly_against_the_gateway() {
    let _l = lock();
    let gw = Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        // Pushed, timestamped events: the examples time them (`latency_from`) and set
        // thresholds on that latency, which fail without data.
        publish_rate: 5.0,
        // Quotes for market-data.toml, every 10th skipped.
        stream_rate: 20.0,
        stream_gap_every: GAP_EVERY,
        // Server pings and the slow-consumer rule for keepalive-abuse.toml; well-behaved
        // clients answer the pings and read everything.
        keepalive: Some(PING),
        slow_consumer_timeout: Some(Duration::from_secs(1)),
        // Every upgrade request of every example, for the per-connection URLs.
        record_requests: 50_000,
        ..ServeConfig::default()
    })
    .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples/*.toml in {}", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter_map(|f| {
            check_example(f, &gw)
                .err()
                .map(|e| format!("== {}: {e}", f.display()))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} examples failed:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n\n")
    );
    gw.shutdown();
}

#[test]
fn auth_detection_reads_keys_not_words() {
    assert!(uses_auth("auth = { url = \"http://x\" }"));
    assert!(uses_auth("  auth.url = \"http://x\""));
    assert!(uses_auth("auth_url = \"http://x\""));
    assert!(uses_auth("[auth]\nurl = \"http://x\""));
    assert!(!uses_auth(
        "# the login request -> `auth`\nurl = \"ws://x\""
    ));
    assert!(!uses_auth("author = 1"));
}

/// What examples/orders-feed.toml's comments say about `--url` without a path and about
/// `ws_msgs_received` is what a run does: the file's path and query are kept (shown
/// redacted), and the k6
/// threshold counts the pushed feed (no echoes in this workload), the same for both
/// scenarios sharing one auth request.
#[test]
fn orders_feed_comments_say_what_a_run_does() {
    let _l = lock();
    let gw = Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        publish_rate: 20.0,
        ..ServeConfig::default()
    })
    .unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders-feed.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("(--url ws://HOST:PORT) it keeps the file's path and query"));
    assert!(text.contains("`ws_msgs_received` counts every\n#"));
    assert!(text.contains("\"ws_msgs_received: rate>0\","));
    let out = json_path("example-orders-feed-comments");
    let addr = gw.local_addr();
    let args: Vec<String> = [
        "run",
        file.to_str().unwrap(),
        "--url",
        &format!("ws://{addr}"),
        "--auth-url",
        &format!("http://{addr}/v1/auth/token"),
        "-d",
        "2s",
        "-c",
        "50",
        "--connect-rate",
        "1000",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, stdout, stderr) = run_limited(&args);
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
    let v = read_json(&out);
    // The file's path and query are kept; reports show query values as `***` (they may be
    // credentials).
    for s in v["scenarios"].as_array().unwrap() {
        assert_eq!(
            s["url"].as_str(),
            Some(format!("ws://{addr}/ws?feed=***").as_str())
        );
    }
    assert_eq!(
        counter(&v, "msgs_received"),
        0,
        "no echoes in this workload"
    );
    assert!(counter(&v, "msgs_pushed") > 0);
    let t = v["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["expr"] == "ws_msgs_received: rate>0")
        .unwrap();
    assert_eq!(t["pass"], true, "{t}");
    assert_eq!(gw.stats().auth_requests, 1, "one auth request for the run");
    gw.shutdown();
}
