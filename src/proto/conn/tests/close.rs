//! Close frames from the server, counted once.

use super::*;

#[test]
fn a_second_close_frame_is_not_counted_again() {
    let mut h = Harness::new(cfg());
    let mut c = h.open(0);
    let close = server_frame(0x88, &[0x03, 0xF3]); // 1011
    c.handle_recv(&mut h.ctx(), 5 * MS, &close);
    c.handle_recv(&mut h.ctx(), 6 * MS, &close);
    assert_eq!(h.stats.close_codes.get(&1011), Some(&1));
    assert_eq!(h.stats.counters.closed_by_server, 1);
    assert_eq!(h.stats.failure_total(), 0);
}
