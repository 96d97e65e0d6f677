//! The flags' checks, each error naming the flag and the fix.

use crate::cli::args::RunArgs;
use crate::plan::{prepare, PlanError, Run, RunPlan};

fn plan(args: &[&str]) -> Result<RunPlan, PlanError> {
    RunArgs::from_words(args.iter().copied()).unwrap().plan()
}

/// Errors of the plan and of `prepare` (DNS, source addresses) alike.
fn prepared(args: &[&str]) -> Result<crate::plan::Prepared, PlanError> {
    prepare(Run::single(plan(args)?)?)
}

#[test]
fn flags_validate_with_the_fix_in_the_message() {
    let p = prepared(&[
        "ws://127.0.0.1:9/",
        "-c",
        "10000",
        "--message",
        "hi",
        "--message-rate",
        "2",
    ])
    .unwrap();
    assert_eq!(
        p.source_ips.len(),
        5,
        "loopback spreads 10k connections over 5 sources"
    );
    assert_eq!(p.main().message_rate, 2.0);
    let msg = |args: &[&str]| prepared(args).unwrap_err().to_string();
    assert!(msg(&["ws://127.0.0.1:9/", "-c", "0"]).contains("--connections"));
    assert!(msg(&["ws://127.0.0.1:9/", "--connect-rate", "0"]).contains("--connect-rate"));
    assert!(
        msg(&["ws://127.0.0.1:9/", "--message", "x", "--message-rate", "0"])
            .contains("--message-rate")
    );
    assert!(msg(&["ws://127.0.0.1:9/", "-H", "Host: a"]).contains("cannot be overridden"));
    assert!(msg(&["ws://127.0.0.1:9/", "--message", "@/nonexistent/file"]).contains("cannot read"));
    assert!(msg(&["ws://127.0.0.1:9/", "--cpus", "999"]).contains("not available"));
    assert!(msg(&["ws://127.0.0.1:9/", "--source-ip", "::1"]).contains("address family"));
    assert!(msg(&["ws://no-such-host.invalid/"]).contains("cannot resolve"));
    assert!(msg(&["ws://127.0.0.1:9/", "--insecure"]).contains("only applies to wss://"));
    assert!(msg(&["ws://127.0.0.1:9/", "--mode", "handshake"]).contains("--upgrade"));
    assert!(msg(&["ws://127.0.0.1:9/", "--upgrade"]).contains("--mode handshake"));
}
