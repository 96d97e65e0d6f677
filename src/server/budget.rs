//! The gateway-wide budget for unfinished messages ([`super::ServeConfig::max_unfinished_bytes`]).
//!
//! tungstenite keeps a message's frames until the message is whole, up to `max_message_size`
//! per connection; without a total, N connections could hold N times that. Each open
//! connection holds a [`Charge`]: the bytes it has read that are not yet part of a whole
//! message (see `OpenConn`). Changing a charge is one `Relaxed` atomic add or subtract on the
//! shared total; a connection whose charge stays 0 (whole small messages) never touches it.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The total of all charges and its limit, shared by every thread.
#[derive(Debug)]
pub(super) struct Budget {
    /// Sum of all connections' charges, in bytes.
    used: AtomicUsize,
    /// The most the sum may reach.
    limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes, nothing charged.
    pub(super) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes charged now, over all connections.
    #[cfg(test)]
    pub(super) fn used(&self) -> usize {
        self.used.load(Relaxed)
    }
}

/// One connection's share of the [`Budget`]; dropping it gives the bytes back.
#[derive(Debug)]
pub(super) struct Charge {
    /// The shared total.
    budget: Arc<Budget>,
    /// What this connection has charged.
    held: usize,
}

impl Charge {
    /// A connection's charge, 0 so far.
    pub(super) fn new(budget: &Arc<Budget>) -> Self {
        Self {
            budget: Arc::clone(budget),
            held: 0,
        }
    }

    /// Sets this connection's charge to `bytes`. False if it grew and the total is now beyond
    /// the limit: this connection's read is the one that overspent (it keeps its charge until
    /// it is dropped).
    pub(super) fn set(&mut self, bytes: usize) -> bool {
        let held = std::mem::replace(&mut self.held, bytes);
        if bytes > held {
            let grow = bytes - held;
            let used = self
                .budget
                .used
                .fetch_add(grow, Relaxed)
                .saturating_add(grow);
            return used <= self.budget.limit;
        }
        if bytes < held {
            self.budget.used.fetch_sub(held - bytes, Relaxed);
        }
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_and_the_one_that_overspends_is_told() {
        let budget = Budget::new(100);
        let mut a = Charge::new(&budget);
        let mut b = Charge::new(&budget);
        assert!(a.set(60));
        assert!(a.set(60), "unchanged: not the one overspending");
        assert!(!b.set(50), "60 + 50 > 100");
        assert_eq!(budget.used(), 110);
        assert!(a.set(10), "shrinking is always fine");
        assert_eq!(budget.used(), 60);
        drop(b);
        assert_eq!(budget.used(), 10);
        assert!(a.set(100));
        drop(a);
        assert_eq!(budget.used(), 0);
    }
}
