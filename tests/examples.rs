//! Every scenario file in examples/ runs, shortened, against the in-process gateway: exit 0,
//! every scenario opened connections, none failed. The directory is listed, so a new example
//! is covered by adding it.

mod common;
use common::*;
use serde_json::Value;
use sockstorm::server::{Gateway, ServeConfig};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A run longer than this is stuck (the longest example, with stages, takes about 9 s).
const RUN_LIMIT: Duration = Duration::from_secs(40);

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

/// What is wrong with one example's run, if anything.
fn check_example(file: &Path, gw: &Gateway) -> Result<(), String> {
    let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
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
    let (code, stdout, stderr) = run_limited(&args);
    if code != Some(0) {
        return Err(format!(
            "exit {code:?} (`sockstorm {}`)\nstderr:\n{stderr}\nstdout:\n{stdout}",
            args.join(" ")
        ));
    }
    let v: Value = read_json(&out);
    let scenarios = v["scenarios"]
        .as_array()
        .filter(|s| !s.is_empty())
        .ok_or("no `scenarios` in the JSON")?;
    let mut problems = Vec::new();
    for s in scenarios {
        let name = s["name"].as_str().unwrap_or("?");
        let established = s["counters"]["established"].as_u64().unwrap_or(0);
        if established == 0 {
            problems.push(format!("scenario `{name}`: no connection established"));
        }
        let failures = &s["failures"];
        if !failures.as_object().is_some_and(|f| f.is_empty()) {
            problems.push(format!("scenario `{name}`: failures {failures}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\nstdout:\n{stdout}", problems.join("\n")))
    }
}

#[test]
fn every_example_runs_cleanly_against_the_gateway() {
    let _l = lock();
    // Pushed, timestamped events: the examples time them (`latency_from`) and set thresholds
    // on that latency, which fail without data.
    let gw = Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        publish_rate: 5.0,
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
/// `ws_msgs_received` is what a run does: the file's path and query are kept, and the k6
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
    for s in v["scenarios"].as_array().unwrap() {
        assert_eq!(
            s["url"].as_str(),
            Some(format!("ws://{addr}/ws?feed=orders").as_str())
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
