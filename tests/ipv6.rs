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
