//! Helpers shared by the whole-run tests: the binary, the in-process gateway, JSON results.
#![allow(dead_code)] // each test crate uses its own subset

pub mod child;

use serde_json::Value;
use sockstorm::server::{Gateway, Reject, ServeConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;

/// Runs share two cores and the port space: one at a time.
pub static HEAVY: Mutex<()> = Mutex::new(());

pub fn lock() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn gateway(reject: Option<Reject>) -> Gateway {
    Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        reject,
        ..ServeConfig::default()
    })
    .unwrap()
}

pub fn json_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sockstorm-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.json"))
}

pub fn sockstorm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sockstorm"))
        .args(args)
        .output()
        .unwrap()
}

/// `sockstorm ARGS -q --json FILE` (FILE named after `name`): asserts it exits 0 and returns
/// its result document.
pub fn run_json(name: &str, args: &[&str]) -> Value {
    let out = json_path(name);
    let mut all = args.to_vec();
    all.extend(["-q", "--json", out.to_str().unwrap()]);
    assert_ok(&sockstorm(&all));
    read_json(&out)
}

/// Reads a JSON document; a run's results are checked to come from the backend that
/// `SOCKSTORM_BACKEND` asks for (scripts/test.sh runs the whole-run suites once per backend).
pub fn read_json(p: &PathBuf) -> Value {
    let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    if let (Ok(want), Some(got)) = (
        std::env::var("SOCKSTORM_BACKEND"),
        v.get("backend").and_then(|b| b.get("name")),
    ) {
        if want != "auto" {
            assert_eq!(
                got,
                want.as_str(),
                "the run used another backend: {}",
                v["backend"]
            );
        }
    }
    v
}

pub fn counter(v: &Value, name: &str) -> u64 {
    v["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {name} missing"))
}

pub fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// A gateway serving wss:// with a certificate from `ca`, and the CA's PEM file.
pub fn tls_gateway(
    ca: &sockstorm::certs::TestCa,
    name: &str,
    tweak: impl FnOnce(&mut sockstorm::server::ServerTlsOptions),
) -> (Gateway, PathBuf) {
    let mut opts = sockstorm::server::ServerTlsOptions::new(ca.chain.clone(), ca.key.clone_key());
    tweak(&mut opts);
    let ca_path = json_path(&format!("{name}-ca")).with_extension("pem");
    std::fs::write(&ca_path, &ca.ca_pem).unwrap();
    let gw = Gateway::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(sockstorm::server::server_tls_config(&opts).unwrap()),
        ..ServeConfig::default()
    })
    .unwrap();
    (gw, ca_path)
}

/// A file in the test directory with `contents`.
pub fn write_file(name: &str, contents: &str) -> PathBuf {
    let p = json_path(name).with_extension("pem");
    std::fs::write(&p, contents).unwrap();
    p
}

/// Asserts a run exited 0, showing its output otherwise.
pub fn assert_ok(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
