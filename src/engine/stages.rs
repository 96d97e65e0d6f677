//! One shard's share of k6-style stages (`--stages`, see [`crate::plan::stages`]): the
//! connection count it should hold at each instant, as linear segments in its own time.

use crate::plan::stages::Stage;
use crate::proto::conn::Micros;

/// One shard's share of the stages, as linear segments in its own time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ramp {
    /// (start µs, end µs, connections at start, connections at end).
    segments: Vec<(Micros, Micros, u64, u64)>,
    /// Steered (`find-max connections`): the target set from outside, held until changed.
    held: Option<u64>,
}

impl Ramp {
    /// The ramp for per-stage `targets` (this shard's share of each stage's target).
    pub fn new(stages: &[Stage], targets: &[u64]) -> Self {
        let mut segments = Vec::with_capacity(stages.len());
        let (mut t, mut from) = (0, 0);
        for (s, &to) in stages.iter().zip(targets) {
            let end = t + s.duration.as_micros() as Micros;
            segments.push((t, end, from, to));
            (t, from) = (end, to);
        }
        Self {
            segments,
            held: None,
        }
    }

    /// Holds `target` from now on, whatever the stages said (the capacity search steers it).
    pub fn hold(&mut self, target: u64) {
        self.held = Some(target);
    }

    /// Whether `--stages` were given; without them the group holds its fixed connection count.
    pub fn is_active(&self) -> bool {
        !self.segments.is_empty() || self.held.is_some()
    }

    /// This shard's connection target at `now` (µs since the epoch): interpolated linearly within
    /// its stage and rounded; after the last stage, that stage's target.
    pub fn target(&self, now: Micros) -> u64 {
        if let Some(t) = self.held {
            return t;
        }
        for &(start, end, from, to) in &self.segments {
            if now < end {
                let f = (now.saturating_sub(start)) as f64 / (end - start) as f64;
                return (from as f64 + (to as f64 - from as f64) * f).round() as u64;
            }
        }
        self.segments.last().map_or(0, |s| s.3)
    }

    /// Whether the target is changing at `now` (a ramp, not a plateau).
    pub fn ramping(&self, now: Micros) -> bool {
        if self.held.is_some() {
            return false;
        }
        self.segments
            .iter()
            .find(|s| now < s.1)
            .is_some_and(|s| s.2 != s.3)
    }

    /// End of the segment holding `now` (when a plateau may start ramping), if any.
    pub fn next_change(&self, now: Micros) -> Option<Micros> {
        if self.held.is_some() {
            return None;
        }
        self.segments.iter().find(|s| now < s.1).map(|s| s.1)
    }

    /// The stages' summed length, µs (0 without stages).
    pub fn total(&self) -> Micros {
        self.segments.last().map_or(0, |s| s.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::stages::parse;

    #[test]
    fn ramps_up_holds_and_down() {
        let stages = parse("2s:1000, 3s:1000, 1s:0").unwrap();
        let r = Ramp::new(&stages, &[1000, 1000, 0]);
        const S: Micros = 1_000_000;
        assert_eq!(r.target(0), 0);
        assert_eq!(r.target(S / 2), 250);
        assert_eq!(r.target(2 * S), 1000);
        assert_eq!(r.target(4 * S), 1000);
        assert_eq!(r.target(5 * S + S / 4), 750);
        assert_eq!(r.target(9 * S), 0);
        assert!(r.ramping(S) && !r.ramping(3 * S) && r.ramping(5 * S + 1));
        assert_eq!(r.next_change(3 * S), Some(5 * S));
        assert_eq!(r.total(), 6 * S);
        assert!(parse("30s").unwrap_err().contains("DURATION:TARGET"));
        assert!(parse("0s:5").unwrap_err().contains("longer than 0"));
        assert!(parse("5s:many")
            .unwrap_err()
            .contains("not a connection count"));
    }
}
