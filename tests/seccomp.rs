//! A real kernel denial of io_uring: a seccomp filter, installed in the child between fork and
//! exec, makes `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with EPERM (what
//! Docker's and containerd's default profiles do) or ENOSYS (Podman's). Under each,
//! `--backend auto` completes a 1,000-connection echo run on epoll with every message matched
//! and names the reason; `--backend uring` exits 2 with that same reason. No environment
//! variable pretends anything: the kernel refuses the calls.

mod common;

use common::*;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

/// A filter that fails the three io_uring syscalls with `errno` and allows everything else.
fn deny_io_uring(errno: u32) -> BpfProgram {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ]
    .into_iter()
    .map(|n| (n, Vec::new()))
    .collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH).expect("a seccomp-supported arch");
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .expect("filter compiles")
}

/// Runs the binary with `args` under `filter`.
fn run_denied(filter: &BpfProgram, args: &[&str]) -> Output {
    let prog = filter.clone();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockstorm"));
    cmd.args(args).env_remove("SOCKSTORM_BACKEND");
    // SAFETY: between fork and exec the closure only installs the prebuilt filter (prctl and
    // seccomp syscalls on memory allocated before the fork); it allocates only on error.
    unsafe {
        cmd.pre_exec(move || {
            seccompiler::apply_filter(&prog).map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
    cmd.output().unwrap()
}

fn denied_run_falls_back(errno: u32, name: &str, reason: &str) {
    let _g = lock();
    let filter = deny_io_uring(errno);
    let gw = gateway(None);
    let out = json_path(&format!("seccomp-{name}"));
    let target = url(gw.local_addr());
    let o = run_denied(
        &filter,
        &[
            "run",
            &target,
            "-c",
            "1000",
            "--connect-rate",
            "2000",
            "-d",
            "3s",
            "--message",
            "under seccomp",
            "--message-rate",
            "2",
            "--no-reconnect",
            "-q",
            "--json",
            out.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("backend: epoll ({reason}")),
        "the summary names the backend and why:\n{stdout}"
    );
    let v = read_json(&out);
    assert_eq!(v["backend"]["name"], "epoll", "{}", v["backend"]);
    assert!(
        v["backend"]["reason"].as_str().unwrap().starts_with(reason),
        "{}",
        v["backend"]
    );
    assert_eq!(counter(&v, "established"), 1000);
    assert_eq!(counter(&v, "attempts"), 1000);
    let sent = counter(&v, "msgs_sent");
    assert!(sent >= 4000, "2/s for 3 s on 1,000 connections: {sent}");
    assert_eq!(counter(&v, "msgs_received"), sent, "every message matched");
    assert_eq!(counter(&v, "msgs_unanswered"), 0);
    assert_eq!(v["failures"].as_object().map_or(0, |m| m.len()), 0);
    assert_eq!(gw.stats().accepted, 1000);

    // --backend uring under the same filter: exit 2 with the same reason.
    let o = run_denied(
        &filter,
        &["run", &target, "-c", "1", "-d", "1s", "--backend", "uring"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("--backend uring: {reason}")),
        "stderr:\n{stderr}"
    );
}

#[test]
fn docker_like_eperm_runs_on_epoll_and_says_why() {
    denied_run_falls_back(
        libc::EPERM as u32,
        "eperm",
        "io_uring blocked by a seccomp filter (EPERM), as in Docker ≥ 25 and containerd 2 defaults",
    );
}

#[test]
fn podman_like_enosys_runs_on_epoll_and_says_why() {
    denied_run_falls_back(
        libc::ENOSYS as u32,
        "enosys",
        "io_uring blocked by a seccomp filter (ENOSYS), as in Podman's default profile",
    );
}
