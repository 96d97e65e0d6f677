//! The verdict on the generator itself: a light run is `valid`; a client whose one shard
//! cannot keep its rate is `generator-bound` (exit 98 with `--fail-on-saturation`); a slow
//! target with an idle client is not blamed on the client.

mod common;

use common::{json_path, lock, read_json, sockstorm, url};
use sockstorm::server::{Gateway, ServeConfig};
use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::Duration;

/// A CPU hog pinned to CPU 0, killed when dropped.
struct Hog(Child);

impl Hog {
    fn on_cpu0() -> Self {
        Self(
            Command::new("taskset")
                .args(["-c", "0", "sh", "-c", "while :; do :; done"])
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn generator(v: &serde_json::Value) -> (&str, Vec<String>) {
    let g = &v["generator"];
    let reasons = g["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    (g["verdict"].as_str().unwrap(), reasons)
}

#[test]
fn a_light_run_is_valid() {
    let _g = lock();
    let gw = common::gateway(None);
    let out = json_path("generator-light");
    let o = sockstorm(&[
        "run",
        &url(gw.local_addr()),
        "-c",
        "100",
        "-d",
        "3s",
        "--message",
        "hi",
        "--message-rate",
        "5",
        "--fail-on-saturation",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    gw.shutdown();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    let v = read_json(&out);
    let (verdict, reasons) = generator(&v);
    assert_eq!(verdict, "valid", "{reasons:?}");
    assert!(text.contains("generator: valid"), "{text}");
    let shards = v["generator"]["shards"].as_array().unwrap();
    assert_eq!(
        shards.len(),
        v["machine"]["cpus_used"].as_array().unwrap().len()
    );
    // Timer lateness was measured: every message send is a timer.
    assert!(
        shards
            .iter()
            .map(|s| s["timer_lag"]["count"].as_u64().unwrap())
            .sum::<u64>()
            > 0
    );
    assert_eq!(v["generator"]["compared_with"]["histogram"], "ws_msg_rtt");
}

/// One shard on CPU 0, which a busy loop shares, asked for 400,000 echoes a second: the
/// shard is busy (on its CPU or waiting for it) all the time, its timers run late, and the
/// verdict says so; the gateway runs on CPU 1.
#[test]
fn a_saturated_shard_binds_the_generator_and_fails_on_request() {
    let _g = lock();
    let gw = Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cpus: vec![1],
        ..ServeConfig::default()
    })
    .unwrap();
    let out = json_path("generator-bound");
    let o = {
        let _hog = Hog::on_cpu0();
        std::thread::sleep(Duration::from_millis(200));
        sockstorm(&[
            "run",
            &url(gw.local_addr()),
            "-c",
            "1000",
            "--cpus",
            "0",
            "-d",
            "4s",
            "--message",
            "hi",
            "--message-rate",
            "400",
            "--fail-on-saturation",
            "--json",
            out.to_str().unwrap(),
        ])
    };
    gw.shutdown();
    let text = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(98), "{text}{err}");
    let v = read_json(&out);
    let (verdict, reasons) = generator(&v);
    assert_eq!(verdict, "generator-bound", "{reasons:?}");
    assert!(
        reasons[0].starts_with("shard 0 was busy ≥ 95 % for "),
        "{reasons:?}"
    );
    assert!(
        reasons[0].contains("another process shares that CPU"),
        "{reasons:?}"
    );
    assert!(
        text.contains("generator: GENERATOR-BOUND: these latencies measure the client"),
        "{text}"
    );
    // The progress line warned as it happened.
    assert!(
        err.contains("WARNING") && err.contains("the client is saturated"),
        "{err}"
    );
    let shard = &v["generator"]["shards"][0];
    assert!(shard["seconds_saturated"].as_u64().unwrap() >= 1, "{shard}");
    assert!(shard["busy_max_pct"].as_f64().unwrap() >= 95.0, "{shard}");
}

/// A target that accepts connections and never answers the upgrade: every attempt fails
/// slowly while the client idles. The failures are the target's; the generator is valid.
#[test]
fn a_slow_target_is_not_blamed_on_an_idle_client() {
    let _g = lock();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        let end = std::time::Instant::now() + Duration::from_secs(8);
        while std::time::Instant::now() < end {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        held.len()
    });
    let out = json_path("generator-slow-target");
    let o = sockstorm(&[
        "run",
        &format!("ws://{addr}/ws"),
        "-c",
        "50",
        "-d",
        "3s",
        "--connect-timeout",
        "1s",
        "--fail-on-saturation",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    let held = holder.join().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    // Failures, not saturation: exit 3.
    assert_eq!(o.status.code(), Some(3), "{text}");
    assert!(held >= 50, "{held}");
    let v = read_json(&out);
    assert_eq!(v["counters"]["established"], 0);
    assert!(
        v["failures"]["upgrade_timeout"].as_u64().unwrap() >= 50,
        "{}",
        v["failures"]
    );
    let (verdict, reasons) = generator(&v);
    assert_eq!(verdict, "valid", "{reasons:?}");
}
