//! Wall time on a fake clock: the shard re-anchors `Ctx::epoch_unix_us` once a second, and a
//! connection must take each call's anchor, never one it kept, so a clock step does not turn
//! every later server timestamp into clock skew.

use super::*;
use crate::proto::inspect::{LatencyField, TimeUnit};

const S: Micros = 1_000_000;
const EPOCH: u64 = 1_712_345_678 * S;

#[test]
fn one_way_latency_follows_a_moved_anchor() {
    let mut h = Harness {
        epoch_unix_us: EPOCH,
        ..Harness::new(ConnConfig {
            message: None,
            latency_from: Some(LatencyField::new("ts", TimeUnit::Micros)),
            ..cfg()
        })
    };
    let mut c = h.open(0);
    let at = |h: &mut Harness, c: &mut Conn, now: Micros, sent: u64| {
        let f = server_frame(0x81, format!(r#"{{"ts":{sent}}}"#).as_bytes());
        c.handle_recv(&mut h.ctx(), now, &f);
    };
    // Server and client agree: 3 ms one way.
    at(&mut h, &mut c, S, EPOCH + S - 3 * MS);
    // The system clock (the server's, on the same host or NTP-synced) steps forward 5 s at
    // 1.5 s. Until the next re-anchoring the client's stale anchor sees the stamp as from the
    // future.
    let stepped = EPOCH + 5 * S;
    at(&mut h, &mut c, S + S / 2 + MS, stepped + S + S / 2 - 2 * MS);
    assert_eq!(h.stats.counters.latency_clock_skew, 1);
    // The shard re-anchors at 2 s (the wall clock now reads `stepped + 2 s`): from then on
    // latencies are right again.
    h.epoch_unix_us = stepped;
    for i in 0..10 {
        let now = 2 * S + i * 100 * MS;
        at(&mut h, &mut c, now, stepped + now - 4 * MS);
    }
    let lat = h.stats.hist(Hist::WsMsgLatency);
    assert_eq!(lat.len(), 11);
    assert_eq!(lat.min(), 3 * MS);
    assert_eq!(lat.max(), lat.highest_equivalent(4 * MS));
    assert_eq!(h.stats.counters.latency_clock_skew, 1);
}
