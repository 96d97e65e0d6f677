//! The shard's wall clock: Unix time of a monotonic instant, re-anchored once a second.
//!
//! Connections stamp and compare wall times as `anchor + now`, where `now` is the shard's
//! monotonic clock (µs since the run's epoch) and the anchor is the Unix time of that epoch
//! ([`crate::proto::conn::Ctx::epoch_unix_us`]). An anchor read once at the start goes stale
//! when the system clock is adjusted (an NTP step, `date -s`, a VM resumed): every server
//! timestamp then looks early or late by the step, for the rest of the run. So the shard reads
//! the wall and monotonic clocks together at each per-second tick and re-anchors;
//! [`WallAnchor`] decides what the new anchor is and whether the clock stepped. It reads no
//! clock itself (its inputs are the readings), so tests drive it with made-up ones.

use crate::metrics::run::CLOCK_STEP_US as STEP_THRESHOLD_US;
use crate::proto::conn::Micros;

/// The Unix time of the shard's epoch, kept current with the system clock.
#[derive(Debug, Clone, Copy)]
pub struct WallAnchor {
    /// Unix µs at monotonic 0 (the run's epoch), as of the last reading.
    anchor_unix_us: u64,
    /// Re-anchorings that moved the anchor by more than [`STEP_THRESHOLD_US`].
    steps: u64,
}

impl WallAnchor {
    /// Anchored at `anchor_unix_us`, the Unix time of the epoch (one for all shards).
    pub const fn new(anchor_unix_us: u64) -> Self {
        Self {
            anchor_unix_us,
            steps: 0,
        }
    }

    /// Unix µs at monotonic 0: a connection's wall time at `now` is this plus `now`.
    pub const fn anchor_unix_us(&self) -> u64 {
        self.anchor_unix_us
    }

    /// Clock steps seen so far.
    pub const fn steps(&self) -> u64 {
        self.steps
    }

    /// The wall clock read `unix_us` at monotonic `mono_us`: re-anchors, counting a step when
    /// the wall time differs from the extrapolated one (old anchor + `mono_us`) by more than
    /// [`STEP_THRESHOLD_US`]. Returns the signed step in µs when there was one.
    pub fn handle_reading(&mut self, unix_us: u64, mono_us: Micros) -> Option<i64> {
        let anchor = unix_us.saturating_sub(mono_us);
        let moved = anchor as i64 - self.anchor_unix_us as i64;
        self.anchor_unix_us = anchor;
        (moved.unsigned_abs() > STEP_THRESHOLD_US).then(|| {
            self.steps += 1;
            moved
        })
    }
}

/// Reads the wall clock and the monotonic clock (µs since `epoch`) together: of three tries,
/// the one whose two monotonic reads around the wall read are closest, with the wall time
/// taken at their midpoint.
pub fn read_clocks(epoch: std::time::Instant) -> (u64, Micros) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..3 {
        let a = epoch.elapsed().as_micros() as u64;
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        let b = epoch.elapsed().as_micros() as u64;
        if b - a < best.0 {
            best = (b - a, unix, a + (b - a) / 2);
        }
        if b - a <= 2 {
            break;
        }
    }
    (best.1, best.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;
    const EPOCH: u64 = 1_712_345_678 * S;

    #[test]
    fn follows_slew_and_counts_steps() {
        let mut w = WallAnchor::new(EPOCH);
        // One second later, the wall clock agrees: nothing moves.
        assert_eq!(w.handle_reading(EPOCH + S, S), None);
        assert_eq!(w.anchor_unix_us(), EPOCH);
        // NTP slewing (500 ppm): followed, not a step.
        assert_eq!(w.handle_reading(EPOCH + 2 * S + 500, 2 * S), None);
        assert_eq!(w.anchor_unix_us(), EPOCH + 500);
        // Exactly at the threshold: still not a step.
        assert_eq!(
            w.handle_reading(EPOCH + 3 * S + 500 + STEP_THRESHOLD_US, 3 * S),
            None
        );
        assert_eq!(w.steps(), 0);
        // The clock is stepped back 5 s: the anchor moves with it, one step.
        let anchor = w.anchor_unix_us();
        assert_eq!(
            w.handle_reading(anchor + 4 * S - 5 * S, 4 * S),
            Some(-5_000_000)
        );
        assert_eq!(w.anchor_unix_us(), anchor - 5 * S);
        assert_eq!(w.steps(), 1);
        // And forward 20 ms: another.
        let anchor = w.anchor_unix_us();
        assert_eq!(
            w.handle_reading(anchor + 5 * S + 20_000, 5 * S),
            Some(20_000)
        );
        assert_eq!(w.steps(), 2);
        // Wall time of a later monotonic instant uses the new anchor.
        assert_eq!(w.anchor_unix_us() + 5 * S, anchor + 5 * S + 20_000);
    }

    #[test]
    fn reading_the_clocks_agrees_with_the_start_anchor() {
        let epoch = std::time::Instant::now();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let mut w = WallAnchor::new(unix);
        let (u, m) = read_clocks(epoch);
        // No step between two readings a moment apart (unless the test machine's clock was
        // stepped in between, which this cannot rule out).
        assert_eq!(w.handle_reading(u, m), None);
        assert!(w.anchor_unix_us().abs_diff(unix) < STEP_THRESHOLD_US);
    }
}
