//! Steering a run while it goes: the capacity search ([`super::find_max`]) changes one
//! quantity (each group's open-connection target, connect interval or message interval) from
//! the collecting thread, and the shards pick the new values up on their next turn. One
//! [`Knob`] per (shard, group), written by the steering side and read with relaxed loads by
//! its shard: nothing is locked and a shard never waits for it.

use super::split;
use crate::proto::conn::Micros;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// What is steered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steered {
    /// Sessions held open (the total, split over shards and groups by their connections).
    Connections,
    /// New connections (handshake cycles) per second.
    ConnectRate,
    /// Messages per second over every sending connection.
    MessageRate,
}

/// Not set: the group keeps its planned value.
const UNSET: u64 = u64::MAX;

/// One group's steered values on one shard.
#[derive(Debug)]
pub struct Knob {
    target: AtomicU64,
    /// f64 bits of the µs between openings.
    open_interval: AtomicU64,
    /// µs between one connection's messages.
    msg_interval: AtomicU64,
}

/// The values a shard applies to its group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    /// The open-connection target.
    pub target: Option<u64>,
    /// µs between openings.
    pub open_interval_us: Option<f64>,
    /// µs between one connection's messages.
    pub msg_interval_us: Option<Micros>,
}

impl Knob {
    fn new() -> Self {
        Self {
            target: AtomicU64::new(UNSET),
            open_interval: AtomicU64::new(UNSET),
            msg_interval: AtomicU64::new(UNSET),
        }
    }

    /// What the shard should apply now.
    pub fn read(&self) -> Setting {
        let get = |a: &AtomicU64| Some(a.load(Ordering::Relaxed)).filter(|&v| v != UNSET);
        Setting {
            target: get(&self.target),
            open_interval_us: get(&self.open_interval).map(f64::from_bits),
            msg_interval_us: get(&self.msg_interval),
        }
    }
}

/// The steering of one run: a knob per (shard, group), and the request to end it.
#[derive(Debug)]
pub struct Steering {
    what: Steered,
    /// `knobs[shard][group]`.
    knobs: Vec<Vec<Arc<Knob>>>,
    /// Each group's weight in the steered quantity: its connections (held, or sending), 0 for
    /// a group that takes no part (a fan-out subscriber when rates are steered).
    weights: Vec<u64>,
    /// Each group's connections split over the shards.
    shares: Vec<Vec<u64>>,
    changed: AtomicBool,
    done: AtomicBool,
    value: AtomicU64,
}

impl Steering {
    /// Steering of `what` for `shards` shards and groups with these connection counts;
    /// `sends[g]`: group g takes part (holds sessions, opens connections, or sends messages).
    pub fn new(what: Steered, shards: usize, connections: &[u64], sends: &[bool]) -> Self {
        let knobs = (0..shards)
            .map(|_| connections.iter().map(|_| Arc::new(Knob::new())).collect())
            .collect();
        let weights = connections
            .iter()
            .zip(sends)
            .map(|(&c, &s)| if s { c.max(1) } else { 0 })
            .collect();
        Self {
            what,
            knobs,
            weights,
            shares: connections.iter().map(|&c| split(c, shards)).collect(),
            changed: AtomicBool::new(false),
            done: AtomicBool::new(false),
            value: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// What this steering changes.
    pub fn steered(&self) -> Steered {
        self.what
    }

    /// Group `group`'s knob on shard `shard`.
    pub fn knob(&self, shard: usize, group: usize) -> Arc<Knob> {
        self.knobs[shard][group].clone()
    }

    /// The value last set.
    pub fn value(&self) -> f64 {
        f64::from_bits(self.value.load(Ordering::Relaxed))
    }

    /// Sets the steered quantity's total to `value`: split over groups by weight and over
    /// shards by their connections, exactly (targets add up to `value`).
    pub fn set(&self, value: f64) {
        self.value.store(value.to_bits(), Ordering::Relaxed);
        let weight: u64 = self.weights.iter().sum();
        if weight == 0 {
            return;
        }
        match self.what {
            Steered::Connections => {
                // Largest remainders: the groups' targets add up to the value.
                let total = value.round() as u64;
                let per_group = apportion(total, &self.weights);
                for (g, &n) in per_group.iter().enumerate() {
                    let shard_weights: Vec<u64> =
                        self.shares[g].iter().map(|&c| c.max(1)).collect();
                    for (s, t) in apportion(n, &shard_weights).into_iter().enumerate() {
                        self.knobs[s][g].target.store(t, Ordering::Relaxed);
                    }
                }
            }
            Steered::ConnectRate | Steered::MessageRate => {
                for (g, &w) in self.weights.iter().enumerate() {
                    if w == 0 {
                        continue;
                    }
                    let group_rate = value * w as f64 / weight as f64;
                    for (s, &c) in self.shares[g].iter().enumerate() {
                        let k = &self.knobs[s][g];
                        if self.what == Steered::ConnectRate {
                            let share = c as f64 / self.weights[g] as f64;
                            let rate = (group_rate * share).max(1e-9);
                            k.open_interval
                                .store((1e6 / rate).to_bits(), Ordering::Relaxed);
                        } else {
                            // Each sending connection: the group's rate over its connections.
                            let per_conn = group_rate / w as f64;
                            let iv = (1e6 / per_conn.max(1e-9)).round().max(1.0) as Micros;
                            k.msg_interval.store(iv, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        self.changed.store(true, Ordering::SeqCst);
    }

    /// Whether a value was set since the last call (the engine then wakes the shards).
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::SeqCst)
    }

    /// Ends the run (the search is over): the engine stops the shards gracefully.
    pub fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
    }

    /// Whether [`Self::finish`] was called.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

/// Splits `total` in proportion to `weights`, the parts adding up to it exactly.
fn apportion(total: u64, weights: &[u64]) -> Vec<u64> {
    let w: Vec<f64> = weights.iter().map(|&w| w as f64).collect();
    crate::plan::split_weighted(total, &w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_add_up_and_rates_split() {
        let s = Steering::new(Steered::Connections, 3, &[100, 50], &[true, true]);
        s.set(1001.0);
        let sum: u64 = (0..3)
            .flat_map(|sh| (0..2).map(move |g| (sh, g)))
            .map(|(sh, g)| s.knob(sh, g).read().target.unwrap())
            .sum();
        assert_eq!(sum, 1001);
        assert!(s.take_changed() && !s.take_changed());
        let r = Steering::new(Steered::MessageRate, 2, &[10, 10], &[true, false]);
        r.set(1000.0);
        // 1000/s over the 10 senders: 100/s each, every 10 ms; the subscribers are untouched.
        assert_eq!(r.knob(0, 0).read().msg_interval_us, Some(10_000));
        assert_eq!(r.knob(1, 1).read().msg_interval_us, None);
        let c = Steering::new(Steered::ConnectRate, 2, &[64], &[true]);
        c.set(2000.0);
        assert_eq!(c.knob(1, 0).read().open_interval_us, Some(1000.0));
        assert_eq!(apportion(10, &[1, 1, 1]), vec![4, 3, 3]);
    }
}
