//! Reconnect bursts larger than anything the shard keeps in reserve: every connection must be
//! accounted for, on both sides, and no bytes of one connection may reach another's socket.

mod common;

use common::{assert_ok, counter, gateway, json_path, lock, read_json, sockstorm, url};

/// Regression: with an immediate (or fast) reconnect policy, more than 64 RST drops on one
/// shard used to (1) open replacements into descriptor slots beyond the ring's table while the
/// dropped sockets were still closing, failing them as `too_many_open_files` and retrying at
/// once, hundreds of thousands of times; and (2) return those failed openings' upgrade
/// requests to the send-buffer pool unemptied, so the next send on another connection wrote
/// a stale upgrade request onto an upgraded socket (the gateway saw reserved bits set, the
/// client a wrong accept key).
#[test]
fn rst_storms_with_fast_reconnects_account_for_every_connection() {
    let _g = lock();
    let gw = gateway(None);
    let out = json_path("storm-burst");
    for policy in ["immediate", "exponential:5ms:100ms"] {
        let before = gw.stats();
        // One shard, 2,000 sessions, half of them dropped with RST at 1 s, 2 s and 3 s:
        // 1,000 drops per storm, 3,000 in all.
        let o = sockstorm(&[
            "run",
            &url(gw.local_addr()),
            "-c",
            "2000",
            "--connect-rate",
            "10000",
            "-d",
            "3800ms",
            "--cpus",
            "0",
            "--storm-at",
            "1s",
            "--storm-every",
            "1s",
            "--storm-fraction",
            "0.5",
            "--storm-close",
            "rst",
            "--reconnect-policy",
            policy,
            "--message",
            r#"{"type":"echo"}"#,
            "--message-rate",
            "2",
            "-q",
            "--json",
            out.to_str().unwrap(),
        ]);
        assert_ok(&o);
        let v = read_json(&out);
        assert_eq!(
            v["failures"],
            serde_json::json!({}),
            "{policy}: no failure at all"
        );
        assert_eq!(counter(&v, "storm_dropped"), 3000, "{policy}");
        assert_eq!(counter(&v, "reconnects"), 3000, "{policy}: one per drop");
        assert_eq!(counter(&v, "attempts"), 5000, "{policy}");
        assert_eq!(counter(&v, "established"), 5000, "{policy}");
        assert_eq!(counter(&v, "closed_clean"), 2000, "{policy}");
        // Every echo came back to the connection that sent it (a stale request on a socket
        // would have broken its session), except the few in flight on a session at the
        // instant the storm dropped it.
        let unanswered = counter(&v, "msgs_unanswered");
        assert!(unanswered <= 10, "{policy}: {unanswered} unanswered");
        assert_eq!(
            counter(&v, "msgs_sent"),
            counter(&v, "msgs_received") + unanswered,
            "{policy}"
        );
        let after = gw.stats();
        assert_eq!(
            after.accepted - before.accepted,
            5000,
            "{policy}: the gateway accepted exactly what the client established"
        );
        assert_eq!(
            after.protocol_errors, 0,
            "{policy}: no bytes on a wrong socket"
        );
        assert_eq!(after.handshakes_rejected, 0, "{policy}");
    }
    gw.shutdown();
}
