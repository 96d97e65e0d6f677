//! A hashed timer wheel with 1 ms ticks for per-connection deadlines.
//!
//! Entries are never removed: a connection re-arms by inserting a new entry, and an entry that
//! fires is checked against the connection's current deadline by the caller (lazy
//! cancellation), which keeps re-arming O(1). A bitmap of non-empty buckets makes "when is the
//! next timer due?" cheap, so an idle shard can sleep exactly until then.

use crate::proto::conn::Micros;

const TICK_US: u64 = 1000;
const BUCKETS: usize = 8192;
const WORDS: usize = BUCKETS / 64;

/// One armed deadline: the slot, its generation, and the exact time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerEntry {
    /// Slab slot of the connection.
    pub slot: u32,
    /// The slot's generation when armed: an entry whose generation no longer matches the slot's
    /// belongs to an earlier connection and is ignored.
    pub gen: u32,
    /// Deadline, µs since the shard epoch.
    pub at: Micros,
}

/// The wheel; `BUCKETS` ms per revolution, later deadlines wait for their lap.
#[derive(Debug)]
pub struct TimerWheel {
    buckets: Vec<Vec<TimerEntry>>,
    bits: [u64; WORDS],
    /// Next tick to process.
    tick: u64,
    len: usize,
}

impl Default for TimerWheel {
    fn default() -> Self {
        Self::new()
    }
}

impl TimerWheel {
    /// An empty wheel starting at time 0.
    pub fn new() -> Self {
        Self {
            buckets: vec![Vec::new(); BUCKETS],
            bits: [0; WORDS],
            tick: 0,
            len: 0,
        }
    }

    /// Number of armed entries (including stale ones not yet fired).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is armed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Arms an entry. Deadlines in the past fire at the next `expire`.
    pub fn insert(&mut self, e: TimerEntry) {
        let t = (e.at / TICK_US).max(self.tick);
        let b = (t % BUCKETS as u64) as usize;
        self.buckets[b].push(e);
        self.bits[b / 64] |= 1 << (b % 64);
        self.len += 1;
    }

    /// Moves every entry due at or before `now` into `out`.
    pub fn expire(&mut self, now: Micros, out: &mut Vec<TimerEntry>) {
        let now_tick = now / TICK_US;
        // Beyond one revolution every bucket is visited anyway; cap the walk.
        let last = now_tick.min(self.tick + BUCKETS as u64 - 1);
        while self.tick <= last {
            let b = (self.tick % BUCKETS as u64) as usize;
            if self.bits[b / 64] & (1 << (b % 64)) != 0 {
                let mut bucket = std::mem::take(&mut self.buckets[b]);
                let before = out.len();
                bucket.retain(|e| {
                    if e.at <= now {
                        out.push(*e);
                        false
                    } else {
                        true
                    }
                });
                self.len -= out.len() - before;
                self.buckets[b] = bucket;
                if self.buckets[b].is_empty() {
                    self.bits[b / 64] &= !(1 << (b % 64));
                }
            }
            if self.tick == now_tick {
                // The current tick may still gain entries due later within this ms.
                break;
            }
            self.tick += 1;
        }
        if now_tick > self.tick {
            self.tick = now_tick;
        }
    }

    /// When the shard must wake next for this wheel, if any entry is armed: the exact earliest
    /// deadline when it lies in the current tick, else the start of the next non-empty bucket
    /// (a lower bound; an entry of a later lap costs one early wake-up per lap). Call after
    /// [`TimerWheel::expire`] so nothing due is left behind.
    pub fn next_due(&self) -> Option<Micros> {
        if self.len == 0 {
            return None;
        }
        let cur = (self.tick % BUCKETS as u64) as usize;
        let tick_end = (self.tick + 1) * TICK_US;
        if let Some(at) = self.buckets[cur]
            .iter()
            .map(|e| e.at)
            .filter(|&at| at < tick_end)
            .min()
        {
            return Some(at);
        }
        // Scan the bitmap from the bucket after the current one, wrapping around to it.
        let start = (cur + 1) % BUCKETS;
        for step in 0..=WORDS {
            let w = (start / 64 + step) % WORDS;
            let mut word = self.bits[w];
            if step == 0 {
                word &= !0u64 << (start % 64);
            } else if step == WORDS {
                word &= !(!0u64 << (start % 64));
            }
            if word != 0 {
                let b = w * 64 + word.trailing_zeros() as usize;
                let dist = (b + BUCKETS - cur) % BUCKETS;
                let dist = if dist == 0 { BUCKETS } else { dist };
                return Some((self.tick + dist as u64) * TICK_US);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(slot: u32, at: Micros) -> TimerEntry {
        TimerEntry { slot, gen: 0, at }
    }

    #[test]
    fn fires_in_order_of_ticks_and_only_when_due() {
        let mut w = TimerWheel::new();
        w.insert(e(1, 5_500));
        w.insert(e(2, 1_200));
        w.insert(e(3, 20_000_000)); // several laps away
        assert_eq!(w.next_due(), Some(1_000));
        let mut out = Vec::new();
        w.expire(1_100, &mut out);
        assert!(out.is_empty(), "1.2 ms is not due at 1.1 ms");
        assert_eq!(
            w.next_due(),
            Some(1_200),
            "exact deadline within the current tick"
        );
        w.expire(1_200, &mut out);
        assert_eq!(out, vec![e(2, 1_200)]);
        out.clear();
        assert_eq!(w.next_due(), Some(5_000));
        w.expire(10_000, &mut out);
        assert_eq!(out, vec![e(1, 5_500)]);
        out.clear();
        assert_eq!(w.len(), 1);
        let mut t = 10_000;
        while out.is_empty() {
            t = w.next_due().unwrap().max(t + 1000);
            w.expire(t, &mut out);
        }
        assert_eq!(out, vec![e(3, 20_000_000)]);
        assert!(t >= 20_000_000);
        assert!(w.is_empty());
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn past_deadlines_fire_next() {
        let mut w = TimerWheel::new();
        let mut out = Vec::new();
        w.expire(50_000, &mut out);
        w.insert(e(9, 10));
        assert_eq!(w.next_due(), Some(10), "overdue: wake at once");
        w.expire(50_000, &mut out);
        assert_eq!(out, vec![e(9, 10)]);
    }

    #[test]
    fn many_entries_are_all_accounted_for() {
        let mut w = TimerWheel::new();
        for i in 0..10_000u32 {
            w.insert(e(i, u64::from(i) * 1_337));
        }
        let mut out = Vec::new();
        let mut now = 0;
        while !w.is_empty() {
            now = w.next_due().unwrap().max(now) + 999;
            w.expire(now, &mut out);
        }
        assert_eq!(out.len(), 10_000);
        assert!(out.windows(2).all(|p| p[0].at <= p[1].at));
    }
}
