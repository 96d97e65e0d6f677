//! When connections open: the connect schedule (batched a little ahead of time), stages (the
//! ramp up and down), replacements of lost connections by the reconnect policy, and opening
//! one connection into a free slot.

use super::slot::{recycle, Slot, SEND_BUF_CAPACITY};
use super::Shard;
use crate::io::backend::{pack, Backend, Op};
use crate::proto::conn::{Conn, Failure, Micros, Mode};
use std::cmp::Reverse;

/// How far ahead of schedule a connection may be opened to batch openings.
const OPEN_SLACK_US: f64 = 1000.0;

impl<B: Backend> Shard<B> {
    pub(super) fn open_due(&mut self, gi: usize, now: Micros) {
        let nowf = now as f64;
        // Openings due within the next OPEN_SLACK_US go out in this batch: one wake-up and one
        // submission per millisecond instead of one per connection; the rate per second is
        // unchanged.
        // Bounded per turn: an opening that fails at once (EMFILE) is replaced at once in
        // handshake mode, and completions must still be reaped meanwhile.
        let mut budget = self.groups[gi].plan.connections.max(64);
        loop {
            let g = &mut self.groups[gi];
            let due = g.pending_opens > 0 && g.next_open_at <= nowf + OPEN_SLACK_US && budget > 0;
            // A token is only taken for an opening that is due and has a slot.
            if !(due && self.slot_available() && self.groups[gi].token_ready()) {
                break;
            }
            let g = &mut self.groups[gi];
            budget -= 1;
            let lag = (nowf - g.next_open_at).max(0.0) as u64;
            g.lag_max = g.lag_max.max(lag);
            g.pending_opens -= 1;
            g.next_open_at += g.plan.open_interval_us;
            // Initial openings come first; anything beyond them replaces a lost connection.
            let replacement = g.initial_left == 0;
            if !replacement {
                g.initial_left -= 1;
            } else if g.plan.conn.mode == Mode::Session {
                g.stats.counters.reconnects += 1;
            }
            self.open_one(gi, now, (0, 0), replacement);
        }
        while budget > 0 {
            let g = &mut self.groups[gi];
            match g.reopen.peek() {
                Some(Reverse((at, _, _))) if *at as f64 <= nowf + OPEN_SLACK_US => {}
                _ => break,
            }
            if !(self.slot_available() && self.groups[gi].token_ready()) {
                break;
            }
            let g = &mut self.groups[gi];
            let Some(Reverse((_, attempt, delay))) = g.reopen.pop() else {
                break;
            };
            budget -= 1;
            g.stats.counters.reconnects += 1;
            self.open_one(gi, now, (attempt, delay), true);
        }
    }

    /// Stages: opens (at up to the connect rate) or retires (newest first, with a close
    /// handshake) connections so that the group's live count follows the ramp.
    pub(super) fn follow_ramp(&mut self, gi: usize, now: Micros) {
        let g = &mut self.groups[gi];
        // Entries of connections that have ended are skipped when retiring; drop them now and
        // then so a long run with refills does not grow the list.
        if g.opened.len() > 2 * g.live as usize + 1024 {
            let slots = &self.slots;
            g.opened.retain(|&(j, gen)| {
                slots[j as usize].gen == gen && slots[j as usize].conn.is_some()
            });
        }
        let want = g.plan.ramp.target(now);
        let have = g.live - g.retiring;
        if have < want {
            let nowf = now as f64;
            let mut short = want - have;
            let mut budget = g.plan.connections.max(64);
            while short > 0
                && budget > 0
                && self.groups[gi].next_open_at <= nowf + OPEN_SLACK_US
                && self.slot_available()
                && self.groups[gi].token_ready()
            {
                let g = &mut self.groups[gi];
                g.next_open_at += g.plan.open_interval_us;
                short -= 1;
                budget -= 1;
                // A refill takes the place of a lost session if there is one to resume.
                self.open_one(gi, now, (0, 0), true);
            }
            let g = &mut self.groups[gi];
            g.ramp_deficit_max = g.ramp_deficit_max.max(short);
            return;
        }
        // No credit for the idle time: a later ramp starts at the connect rate, not in a burst.
        g.next_open_at = g.next_open_at.max(now as f64);
        let mut extra = have - want;
        while extra > 0 {
            let Some((i, gen)) = self.groups[gi].opened.pop() else {
                break;
            };
            let Shard {
                groups, slots, rng, ..
            } = self;
            let slot = &mut slots[i as usize];
            if slot.gen != gen || slot.retired {
                continue;
            }
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            let g = &mut groups[gi];
            slot.retired = true;
            g.retiring += 1;
            extra -= 1;
            let drain_until = now.saturating_add(self.plan.drain_us);
            conn.stop(&mut g.ctx(rng), now, drain_until);
            self.after(i, now);
        }
    }

    /// A replacement for a lost connection: by the policy's delay, or through the connect
    /// schedule.
    pub(super) fn replace(&mut self, gi: usize, now: Micros, retry: (u32, Micros)) {
        let g = &mut self.groups[gi];
        match g.plan.policy.delay(retry.0, retry.1, &mut self.rng) {
            Some(d) => g.reopen.push(Reverse((now.saturating_add(d), retry.0, d))),
            None => {
                if g.pending_opens == 0 {
                    g.next_open_at = g.next_open_at.max(now as f64);
                }
                g.pending_opens += 1;
            }
        }
    }

    /// Opens one connection of group `gi`; a `replacement` resumes a lost session's
    /// sequence if one is waiting (`on_reconnect`).
    pub(super) fn open_one(
        &mut self,
        gi: usize,
        now: Micros,
        retry: (u32, Micros),
        replacement: bool,
    ) {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::new());
                (self.slots.len() - 1) as u32
            }
        };
        // Each shard goes round the targets' order (weights interleaved) from its own place
        // in it, so every shard uses every target whatever the shard count; sources rotate per
        // target, each pair having its own ports.
        let seq = self.plan.index as u64 + self.conns_made;
        let order = &self.plan.target_order;
        let target = order[(seq % order.len() as u64) as usize] as usize;
        let several = self.plan.targets.len() > 1;
        let source = (!self.plan.sources.is_empty()).then(|| {
            let next = &mut self.source_idx[target];
            let k = *next % self.plan.sources.len();
            *next += 1;
            k
        });
        let Shard {
            groups,
            rng,
            slots,
            io,
            inflight,
            live,
            pool,
            plan,
            conns_made,
            ..
        } = self;
        let g = &mut groups[gi];
        let slot = &mut slots[i as usize];
        slot.allocated = true;
        slot.group = gi as u16;
        slot.retry = retry;
        slot.target = target as u16;
        slot.opened_at = now;
        if several {
            g.stats.target(target).attempts += 1;
        }
        if g.plan.ramp.is_active() {
            g.opened.push((i, slot.gen));
        }
        let mut ctx = g.ctx(rng);
        let mut conn = Conn::new(&mut ctx, now);
        let local = plan.index as u64 + plan.shards as u64 * *conns_made;
        conn.set_id(plan.ids.0 + plan.ids.1 * local);
        if replacement && g.cfg.on_reconnect.is_some() {
            if let Some(seq) = g.resume_seqs.pop() {
                conn.resume_from(seq);
            }
        }
        *conns_made += 1;
        *live += 1;
        g.live += 1;
        if conn.is_done() {
            // TLS could not even start; counted as a failure already.
            slot.conn = Some(conn);
            return self.after(i, now);
        }
        let mut buf = pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SEND_BUF_CAPACITY));
        // Its own token goes into its upgrade request, rendered now; it is kept nowhere.
        let token = g.next_token.take();
        let mut ctx = g.ctx(rng);
        ctx.token = token.as_deref();
        conn.poll_transmit(&mut ctx, now, &mut buf);
        ctx.token = None;
        let ud = [Op::Setup, Op::Connect, Op::Send].map(|op| pack(i, slot.gen, op));
        match io.open(i, target, source, buf, ud) {
            Ok(()) => {
                slot.has_socket = true;
                slot.connecting = true;
                slot.sending = true;
                slot.ops += 2;
                *inflight += 2;
            }
            // Beyond the descriptor table (EMFILE), or the socket could not be made.
            Err((buf, errno)) => {
                recycle(pool, buf);
                conn.handle_error(&mut ctx, now, Failure::from_errno(errno));
            }
        }
        slot.conn = Some(conn);
        self.after(i, now);
    }
}
