//! Choosing the backend: the flag, the scenario-file key and SOCKSTORM_BACKEND all pick it, the
//! run says which ran and why, a bad value is a usage error, and the capacity check counts
//! what the chosen backend can hold (epoll: one fd table for the whole process).

mod common;

use common::*;
use serde_json::Value;
use std::process::{Command, Output};

/// Runs the binary with `args`, SOCKSTORM_BACKEND set to `env` (or removed).
fn run_with(env: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockstorm"));
    cmd.args(args);
    match env {
        Some(v) => cmd.env("SOCKSTORM_BACKEND", v),
        None => cmd.env_remove("SOCKSTORM_BACKEND"),
    };
    cmd.output().unwrap()
}

fn backend(path: &std::path::Path) -> Value {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(counter(&v, "established"), 20, "{}", v["counters"]);
    assert_eq!(v["failures"].as_object().map_or(0, |m| m.len()), 0);
    v["backend"].clone()
}

#[test]
fn flag_file_key_and_environment_choose_the_backend_and_the_run_says_why() {
    let _g = lock();
    let gw = gateway(None);
    let target = url(gw.local_addr());
    let out = json_path("backend-choice");
    let o = out.to_str().unwrap();
    let common = ["-c", "20", "-d", "1s", "--message", "x", "-q", "--json", o];

    // The flag.
    let r = run_with(
        None,
        &[&["run", &target, "--backend", "epoll"][..], &common].concat(),
    );
    assert_ok(&r);
    let b = backend(&out);
    assert_eq!(b["name"], "epoll");
    assert_eq!(b["reason"], "chosen with --backend epoll");
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("backend: epoll (chosen with --backend epoll)")
    );

    // The environment, and the flag over it.
    let r = run_with(Some("epoll"), &[&["run", &target][..], &common].concat());
    assert_ok(&r);
    assert_eq!(backend(&out)["name"], "epoll");
    let r = run_with(
        Some("epoll"),
        &[&["run", &target, "--backend", "auto"][..], &common].concat(),
    );
    assert_ok(&r);
    let auto = backend(&out);
    // auto: io_uring on this kernel, or epoll with the kernel's reason.
    if auto["name"] == "uring" {
        assert_eq!(auto["reason"], "io_uring is available");
    } else {
        assert!(
            auto["reason"].as_str().unwrap().contains("io_uring"),
            "{auto}"
        );
    }

    // The scenario-file key (run-wide), and a misspelt value.
    let file = json_path("backend-file").with_extension("toml");
    std::fs::write(&file, format!("url = \"{target}\"\nbackend = \"epoll\"\n")).unwrap();
    let r = run_with(
        None,
        &[&["run", file.to_str().unwrap()][..], &common].concat(),
    );
    assert_ok(&r);
    assert_eq!(backend(&out)["name"], "epoll");
    let r = run_with(None, &["run", &target, "--backend", "kqueue"]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("kqueue") && err.contains("epoll"), "{err}");
}

#[test]
fn epoll_capacity_is_one_fd_table_and_the_error_says_what_io_uring_would_hold() {
    let (soft, hard) = sockstorm::io::sock::raise_nofile_limit().unwrap();
    assert_eq!(soft, hard);
    // One more than the process's table holds under epoll (it keeps 64 + 3 per shard).
    let capacity = hard - 64 - 3;
    let too_many = (capacity + 1).to_string();
    let r = run_with(
        None,
        &[
            "run",
            "ws://127.0.0.1:9/",
            "-c",
            &too_many,
            "--cpus",
            "0",
            "--backend",
            "epoll",
        ],
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains("with epoll every connection is one of the process's RLIMIT_NOFILE fds"),
        "{err}"
    );
    assert!(err.contains(&format!("{capacity} in all")), "{err}");
    if sockstorm::io::probe::probe_uring().is_ok() {
        assert!(
            err.contains(&format!("io_uring would hold {} here", hard - 64)),
            "{err}"
        );
    }
    assert!(
        !err.contains("--cpus"),
        "more shards do not help epoll: {err}"
    );
}
