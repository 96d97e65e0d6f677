//! Per-target measures of a run over several targets (`run URL1 URL2 …`, `targets = […]`,
//! `--resolve all`): what each address was asked and answered, so a slow or refusing node
//! stands out. The shard records them from what it sees of each connection (the open, the
//! TCP connect, the session's start and its ending), next to the connection's own measures.

use super::{named, new_histogram, Failure, Histogram};
use std::collections::BTreeMap;

/// At most this many targets in one run.
pub const MAX_TARGETS: usize = 64;

/// What one target was asked and answered.
#[derive(Debug, Clone, Default)]
pub struct TargetStats {
    /// Connection attempts made to it.
    pub attempts: u64,
    /// Sessions that opened (upgraded, and joined with `--protocol`).
    pub established: u64,
    /// Attempts that never opened, by failure.
    pub connect_failed: u64,
    /// Open sessions lost to an error.
    pub sessions_dropped: u64,
    /// Failures by cause (connect and session).
    pub failures: BTreeMap<Failure, u64>,
    /// TCP connect times, µs (allocated on the first).
    pub tcp_connect: Option<Box<Histogram<u64>>>,
    /// Connect submitted → session open, µs (allocated on the first).
    pub ws_connecting: Option<Box<Histogram<u64>>>,
}

impl TargetStats {
    /// Records `us` into `h`, allocating it on first use.
    pub fn record(h: &mut Option<Box<Histogram<u64>>>, us: u64) {
        h.get_or_insert_with(|| Box::new(new_histogram()))
            .saturating_record(us.clamp(1, super::HIST_MAX_US));
    }

    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Self) {
        self.attempts += o.attempts;
        self.established += o.established;
        self.connect_failed += o.connect_failed;
        self.sessions_dropped += o.sessions_dropped;
        for (k, v) in &o.failures {
            *self.failures.entry(*k).or_insert(0) += v;
        }
        for (a, b) in [
            (&mut self.tcp_connect, &o.tcp_connect),
            (&mut self.ws_connecting, &o.ws_connecting),
        ] {
            if let Some(b) = b.as_deref().filter(|b| !b.is_empty()) {
                named::add_hist(a.get_or_insert_with(|| Box::new(new_histogram())), b);
            }
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.attempts == 0 && self.failures.is_empty()
    }
}

/// Adds `o` into `a`, target by target (growing `a` to `o`'s length).
pub fn add_all(a: &mut Vec<TargetStats>, o: &[TargetStats]) {
    if a.len() < o.len() {
        a.resize_with(o.len(), TargetStats::default);
    }
    for (x, y) in a.iter_mut().zip(o) {
        x.add(y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_add_by_index() {
        let mut a = vec![TargetStats::default()];
        let mut b = vec![TargetStats::default(), TargetStats::default()];
        b[1].attempts = 3;
        b[1].failures.insert(Failure::Refused, 2);
        TargetStats::record(&mut b[1].tcp_connect, 100);
        a[0].attempts = 1;
        add_all(&mut a, &b);
        add_all(&mut a, &b);
        assert_eq!((a[0].attempts, a[1].attempts), (1, 6));
        assert_eq!(a[1].failures[&Failure::Refused], 4);
        assert_eq!(a[1].tcp_connect.as_ref().unwrap().len(), 2);
    }
}
