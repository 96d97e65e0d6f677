//! Reconnect storms: at the storm's times, a share of a group's open sessions is dropped (with
//! RST or a close handshake), and the time until the group is back at its target is measured.

use super::{Shard, Storm};
use crate::io::backend::Backend;
use crate::proto::conn::{Micros, Phase};

impl<B: Backend> Shard<B> {
    /// Drops the storm's share of this group's open sessions on this shard, chosen at random.
    pub(super) fn storm(&mut self, gi: usize, now: Micros, storm: Storm) {
        let g = &mut self.groups[gi];
        if g.storm_started.is_some() {
            // The previous storm is still being recovered from: it never was.
            g.storm_unrecovered = true;
        }
        g.storm_started = Some(now);
        let mut open: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| {
                let s = &self.slots[i as usize];
                s.group as usize == gi && s.conn.as_ref().is_some_and(|c| c.phase() == Phase::Open)
            })
            .collect();
        let k = ((open.len() as f64) * storm.fraction).round() as usize;
        // Partial Fisher-Yates: the first k are a uniform sample.
        for j in 0..k {
            let r = j + self.rng.below((open.len() - j) as u64) as usize;
            open.swap(j, r);
        }
        for &i in &open[..k] {
            let Shard {
                groups, slots, rng, ..
            } = self;
            let slot = &mut slots[i as usize];
            let g = &mut groups[gi];
            slot.rst = storm.rst;
            if let Some(conn) = slot.conn.as_mut() {
                conn.storm_drop(&mut g.ctx(rng), now, !storm.rst);
            }
            // Dropped now, even while its close handshake runs: recovery counts from here.
            slot.uncounted = true;
            g.open_now = g.open_now.saturating_sub(1);
            self.after(i, now);
        }
        if k == 0 {
            self.groups[gi].storm_started = None;
        }
    }
}
