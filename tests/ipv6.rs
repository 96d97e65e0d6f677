//! IPv6 end to end: the built-in gateway listening on [::1], a run to ws://[::1]:PORT with a
//! v6 source address, every connection and every echo accounted for on both sides; a v4
//! source address for a v6 target is refused with the fix.

mod common;

use common::{counter, json_path, lock, read_json, sockstorm};
use sockstorm::server::{Gateway, ServeConfig};

#[test]
fn a_whole_run_over_ipv6_loopback() {
    let _g = lock();
    let gw = Gateway::start(ServeConfig {
        listen: "[::1]:0".parse().unwrap(),
        ..ServeConfig::default()
    })
    .unwrap();
    let url = format!("ws://[::1]:{}/ws", gw.local_addr().port());
    let out = json_path("ipv6");
    let o = sockstorm(&[
        "run",
        &url,
        "-c",
        "200",
        "--connect-rate",
        "1000",
        "-d",
        "3s",
        "--message",
        "v6 {{seq}}",
        "--message-rate",
        "2",
        "--source-ip",
        "::1",
        "-q",
        "--json",
        out.to_str().unwrap(),
    ]);
    let stats = gw.stats();
    gw.shutdown();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = read_json(&out);
    assert_eq!(counter(&v, "established"), 200);
    assert_eq!(stats.accepted, 200);
    let sent = counter(&v, "msgs_sent");
    assert!(sent > 0);
    assert_eq!(counter(&v, "msgs_received"), sent);
    assert_eq!((stats.msgs_in, stats.msgs_out), (sent, sent));
    assert_eq!(v["settings"]["source_ips"], serde_json::json!(["::1"]));
    let o = sockstorm(&["run", &url, "-c", "1", "--source-ip", "127.0.0.1", "-q"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not the same address family"));
}

/// IPv6 source addresses from a CIDR block: in a network namespace of its own, whose loopback
/// takes fd00::/120 as local (AnyIP: a local route, and `ip_nonlocal_bind` for IPv6's bind)
/// and has 500 ephemeral ports, 1,200 connections to the
/// gateway on [::1] need at least three source addresses: every one opens and every echo is
/// matched, rotating over `--source-ip fd00::/120`; a single v6 source runs out of ports.
#[test]
fn ipv6_sources_from_a_cidr_block_rotate_past_the_port_range() {
    let _g = lock();
    let netns = std::process::Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !netns {
        eprintln!("skipped: no network namespaces here (unshare -n)");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_sockstorm");
    let (wide, narrow) = (json_path("ipv6-cidr"), json_path("ipv6-one"));
    let script = format!(
        r#"set -e
ip link set lo up
ip -6 route add local fd00::/120 dev lo
sysctl -qw net.ipv6.ip_nonlocal_bind=1
sysctl -qw net.ipv4.ip_local_port_range="40000 40499"
"{bin}" serve --listen [::1]:18090 -q >/dev/null 2>&1 &
gw=$!
sleep 0.5
set +e
"{bin}" run ws://[::1]:18090/ws -c 1200 --connect-rate 2000 -d 2s --message v6 --message-rate 1 --no-reconnect --source-ip fd00::/120 -q --json "{wide}"
a=$?
"{bin}" run ws://[::1]:18090/ws -c 600 --connect-rate 2000 -d 1s --no-reconnect --source-ip fd00::7 -q --json "{narrow}"
b=$?
kill $gw
echo "codes $a $b""#,
        wide = wide.display(),
        narrow = narrow.display()
    );
    let o = std::process::Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("codes 0 3"),
        "{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = read_json(&wide);
    assert_eq!(counter(&v, "established"), 1200);
    let sent = counter(&v, "msgs_sent");
    assert!(sent > 0);
    assert_eq!(counter(&v, "msgs_received"), sent);
    assert_eq!(
        v["settings"]["source_ips"].as_array().map(Vec::len),
        Some(255)
    );
    // One source address: 500 ports, the rest have none.
    let v = read_json(&narrow);
    assert_eq!(counter(&v, "established"), 500);
    assert_eq!(v["failures"]["no_source_port"].as_u64(), Some(100));
}
