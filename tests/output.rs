//! Where results go: `--json -` is stdout; a FIFO, or a symlink to one, is written through
//! and stays what it was; a symlinked file keeps its link; an unusable path is refused before
//! the run (exit 2, naming it); a write that fails at the end still leaves the summary. And
//! the exit codes and messages of `serve`'s bad flags and unwritable `--ca-out`.
//!
//! No test here points at a real device file: FIFOs and symlinks live in a temp directory.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// A fresh directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sockstorm-output-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A short run against the in-process gateway, with `--json json`.
fn short_run(addr: std::net::SocketAddr, json: &str, duration: &str) -> Output {
    sockstorm(&[
        "run",
        &url(addr),
        "-c",
        "5",
        "-d",
        duration,
        "--message",
        "x",
        "--message-rate",
        "5",
        "-q",
        "--json",
        json,
    ])
}

fn mkfifo(p: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", p.display());
}

fn is_fifo(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).unwrap().file_type().is_fifo()
}

/// Reads a FIFO to its end on another thread.
fn read_fifo(p: &Path) -> std::thread::JoinHandle<Vec<u8>> {
    let p = p.to_owned();
    std::thread::spawn(move || std::fs::read(p).unwrap())
}

#[test]
fn json_dash_goes_to_stdout_and_the_summary_to_stderr() {
    let _g = lock();
    let gw = gateway(None);
    let o = short_run(gw.local_addr(), "-", "1s");
    assert_ok(&o);
    let v: Value = serde_json::from_slice(&o.stdout).expect("stdout is the JSON alone");
    assert_eq!(counter(&v, "established"), 5);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("counters"), "the summary is on stderr: {err}");
    assert!(!Path::new("-").exists(), "no file named -");
    gw.shutdown();
}

#[test]
fn a_fifo_and_a_symlink_to_it_are_written_through_never_replaced() {
    let _g = lock();
    let gw = gateway(None);
    let d = temp_dir("fifo");
    let fifo = d.join("results.fifo");
    mkfifo(&fifo);
    let link = d.join("link.json");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    for path in [&fifo, &link] {
        let reader = read_fifo(&fifo);
        let o = short_run(gw.local_addr(), path.to_str().unwrap(), "1s");
        assert_ok(&o);
        let v: Value = serde_json::from_slice(&reader.join().unwrap()).unwrap();
        assert_eq!(counter(&v, "established"), 5);
        assert!(is_fifo(&fifo), "still a FIFO");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        // The summary still went to stdout.
        assert!(String::from_utf8_lossy(&o.stdout).contains("counters"));
    }
    let names: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
    assert_eq!(names.len(), 2, "no temporary file left");
    gw.shutdown();
}

#[test]
fn a_symlink_to_a_file_keeps_its_link_and_the_file_is_replaced() {
    let _g = lock();
    let gw = gateway(None);
    let d = temp_dir("link");
    let file = d.join("real.json");
    std::fs::write(&file, "old").unwrap();
    let link = d.join("link.json");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let o = short_run(gw.local_addr(), link.to_str().unwrap(), "1s");
    assert_ok(&o);
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(counter(&read_json(&file), "established"), 5);
    let names: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
    assert_eq!(names.len(), 2, "no temporary file left");
    gw.shutdown();
}

#[test]
fn an_unusable_json_path_is_refused_before_the_run() {
    let _g = lock();
    let gw = gateway(None);
    let d = temp_dir("refused");
    let missing = d.join("missing").join("r.json");
    let file = d.join("file");
    std::fs::write(&file, "x").unwrap();
    let under_file = file.join("r.json");
    let cases = [
        (missing.clone(), "does not exist"),
        (d.clone(), "is a directory"),
        (under_file.clone(), "is not a directory"),
    ];
    for (path, why) in cases {
        let t = Instant::now();
        let o = short_run(gw.local_addr(), path.to_str().unwrap(), "30s");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{}: {err}", path.display());
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "refused before the run"
        );
        assert!(err.contains(&format!("`{}`", path.display())), "{err}");
        assert_eq!(err.matches(why).count(), 1, "the cause once: {err}");
        assert!(o.stdout.is_empty());
    }
    gw.shutdown();
}

#[test]
fn a_json_write_that_fails_at_the_end_still_prints_the_summary() {
    let _g = lock();
    let gw = gateway(None);
    let d = temp_dir("gone");
    let sub = d.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let path = sub.join("r.json");
    // The directory is there before the run and gone after it.
    let remover = {
        let sub = sub.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            std::fs::remove_dir_all(sub).unwrap();
        })
    };
    let o = short_run(gw.local_addr(), path.to_str().unwrap(), "2s");
    remover.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("counters"),
        "the summary is printed"
    );
    assert!(
        err.contains(&format!(
            "cannot write the JSON results to `{}`",
            path.display()
        )),
        "{err}"
    );
    assert_eq!(
        err.matches("No such file").count(),
        1,
        "the cause once: {err}"
    );
    gw.shutdown();
}

#[test]
fn serve_bad_flags_exit_2_and_an_unwritable_ca_out_says_what_it_is() {
    for (args, what) in [
        (&["--threads", "0"][..], "--threads"),
        (&["--read-buffer", "0"][..], "--read-buffer"),
        (&["--duration", "0s"][..], "--duration"),
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let o = sockstorm(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(what), "{err}");
    }
    let d = temp_dir("ca-out");
    let ca = d.join("missing").join("ca.pem");
    let o = sockstorm(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls",
        "--duration",
        "5s",
        "--ca-out",
        ca.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("CA certificate"), "{err}");
    assert!(err.contains(&format!("`{}`", ca.display())), "{err}");
    assert!(!err.contains("results"), "{err}");
    assert_eq!(
        err.matches("No such file").count(),
        1,
        "the cause once: {err}"
    );
}
