//! Feeding the connections: completions from the ring (connect, receive, send, setup), timers
//! that fired, and the sends of connections with output due.

use super::slot::{arm_recv, recycle, start_send, SEND_BUF_CAPACITY};
use super::Shard;
use crate::io::backend::{unpack, Backend, Completion, Op};
use crate::metrics::targets::TargetStats;
use crate::proto::conn::{Failure, Micros};

impl<B: Backend> Shard<B> {
    /// One completion from the ring: stale ones (of a slot reused since) are dropped, the
    /// others go to their connection, which is then re-armed or torn down.
    pub(super) fn on_completion(&mut self, mut c: Completion, now: Micros) {
        let (i, gen, op) = unpack(c.user_data());
        let Some(op) = op else { return };
        if op == Op::Wake {
            self.io.arm_wake();
            return;
        }
        if op == Op::Cancel {
            return;
        }
        let stale = self
            .slots
            .get(i as usize)
            .is_none_or(|s| !s.allocated || s.gen != gen || s.ops == 0);
        if stale {
            if let Some(b) = c.take_buffer() {
                self.io.recycle(b);
            }
            return;
        }
        let res = c.result();
        match op {
            Op::Connect => self.on_connect(i, res, now),
            Op::Recv => self.on_recv(i, &mut c, res, now),
            Op::Send => self.on_send(i, &mut c, res, now),
            Op::Close => self.op_done(i),
            Op::Setup => self.on_setup(i, res, now),
            Op::Hangup => self.on_hangup(i, res, now),
            Op::Wake | Op::Cancel => {}
        }
        if self.slots[i as usize].conn.is_some() {
            self.after(i, now);
        }
        self.maybe_free(i);
    }

    /// The TCP connect of slot `i` completed with `res`.
    fn on_connect(&mut self, i: u32, res: i32, now: Micros) {
        self.op_done(i);
        let several = self.plan.targets.len() > 1;
        let Shard {
            groups,
            rng,
            slots,
            io,
            inflight,
            ..
        } = self;
        let slot = &mut slots[i as usize];
        slot.connecting = false;
        if several && res == 0 {
            let t = groups[slot.group as usize]
                .stats
                .target(slot.target as usize);
            TargetStats::record(&mut t.tcp_connect, now.saturating_sub(slot.opened_at));
        }
        if let Some(conn) = slot.conn.as_mut() {
            let mut ctx = groups[slot.group as usize].ctx(rng);
            if res == 0 {
                conn.handle_connected(&mut ctx, now);
                arm_recv(io, slot, i, inflight);
            } else if res != -libc::ECANCELED {
                conn.handle_error(&mut ctx, now, Failure::from_errno(-res));
            }
        }
    }

    /// The multishot receive of slot `i` delivered `res` bytes (in `c`'s buffer), EOF or an
    /// error, and may have ended.
    fn on_recv(&mut self, i: u32, c: &mut Completion, res: i32, now: Micros) {
        if !c.more() {
            self.op_done(i);
            self.slots[i as usize].recv_armed = false;
        }
        let Shard {
            groups,
            rng,
            slots,
            io,
            inflight,
            ..
        } = self;
        let slot = &mut slots[i as usize];
        let g = &mut groups[slot.group as usize];
        let alive = slot.conn.as_ref().is_some_and(|c| !c.is_done());
        if let Some(b) = c.take_buffer() {
            if let (true, Some(conn)) = (res > 0, slot.conn.as_mut()) {
                let data = io.buffer(&b);
                conn.handle_recv(&mut g.ctx(rng), now, data);
            }
            io.recycle(b);
        }
        if let Some(conn) = slot.conn.as_mut() {
            let mut ctx = g.ctx(rng);
            if res == 0 {
                conn.handle_eof(&mut ctx, now);
            } else if res < 0 && res != -libc::ECANCELED && res != -libc::ENOBUFS {
                conn.handle_error(&mut ctx, now, Failure::from_errno(-res));
            }
            // Buffers ran out (ENOBUFS) or the kernel ended the multishot: re-arm, unless
            // the connection stopped reading.
            if alive && !conn.is_done() && !slot.recv_armed && res != 0 && !slot.watching {
                arm_recv(io, slot, i, inflight);
            }
        }
    }

    /// The send of slot `i` wrote `res` bytes of `c`'s buffer (or failed): the rest goes out
    /// first, the buffer returns to the pool.
    fn on_send(&mut self, i: u32, c: &mut Completion, res: i32, now: Micros) {
        self.op_done(i);
        let Shard {
            groups,
            rng,
            slots,
            io,
            pool,
            inflight,
            ..
        } = self;
        let slot = &mut slots[i as usize];
        slot.sending = false;
        let mut buf = c.take_sent().unwrap_or_default();
        let alive = slot.conn.as_ref().is_some_and(|c| !c.is_done());
        if res >= 0 && (res as usize) < buf.len() && alive {
            // Short write: send the rest before anything else.
            buf.drain(..res as usize);
            start_send(io, slot, i, buf, inflight, pool);
        } else {
            recycle(pool, buf);
            match (res, slot.conn.as_mut()) {
                // All written: what fell due meanwhile waited for this socket.
                (0.., Some(conn)) => conn.handle_sent(now),
                (r, Some(conn)) if r != -libc::ECANCELED => {
                    let mut ctx = groups[slot.group as usize].ctx(rng);
                    conn.handle_error(&mut ctx, now, Failure::from_errno(-r));
                }
                _ => {}
            }
        }
    }

    /// The socket of slot `i`, no longer read, was reset (`POLLERR`) or hung up.
    fn on_hangup(&mut self, i: u32, res: i32, now: Micros) {
        self.op_done(i);
        let Shard {
            groups, slots, rng, ..
        } = self;
        let slot = &mut slots[i as usize];
        let Some(conn) = slot.conn.as_mut() else {
            return;
        };
        let mut ctx = groups[slot.group as usize].ctx(rng);
        if res > 0 && res & i32::from(libc::POLLERR) != 0 {
            // The error itself cannot be read without reading; a peer's reset is what a
            // socket whose reads stopped sees (the peer's FIN waits behind its unread data).
            conn.handle_error(&mut ctx, now, Failure::Reset);
        } else if res > 0 {
            conn.handle_eof(&mut ctx, now);
        } else if res != -libc::ECANCELED {
            conn.handle_error(&mut ctx, now, Failure::from_errno(-res));
        }
    }

    /// Socket, option or bind of slot `i` failed; connect and send follow with -ECANCELED.
    fn on_setup(&mut self, i: u32, res: i32, now: Micros) {
        let Shard {
            groups, slots, rng, ..
        } = self;
        let slot = &mut slots[i as usize];
        if let (true, Some(conn)) = (res < 0 && res != -libc::ECANCELED, slot.conn.as_mut()) {
            conn.handle_error(
                &mut groups[slot.group as usize].ctx(rng),
                now,
                Failure::from_errno(-res),
            );
        }
    }

    pub(super) fn expire_timers(&mut self, now: Micros) {
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        self.wheel.expire(now, &mut fired);
        for e in &fired {
            let Shard {
                groups, slots, rng, ..
            } = self;
            let Some(slot) = slots.get_mut(e.slot as usize) else {
                continue;
            };
            if slot.gen != e.gen || slot.timer_at != e.at {
                continue; // re-armed or reused since: a stale entry
            }
            slot.timer_at = 0;
            // How late the loop came to a live deadline, beyond what the backend's timed wait
            // allows by design.
            let late = now
                .saturating_sub(e.at)
                .saturating_sub(self.io.timer_granularity_us());
            self.health.lag.saturating_record(late);
            if let Some(conn) = slot.conn.as_mut() {
                conn.handle_timer(&mut groups[slot.group as usize].ctx(rng), now);
                self.after(e.slot, now);
            }
        }
        self.fired = fired;
    }

    pub(super) fn flush(&mut self, now: Micros) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let Shard {
                groups,
                rng,
                slots,
                io,
                pool,
                inflight,
                ..
            } = self;
            let slot = &mut slots[i as usize];
            slot.in_dirty = false;
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            if slot.sending || conn.is_done() || slot.connecting {
                continue;
            }
            let mut buf = pool
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(SEND_BUF_CAPACITY));
            conn.poll_transmit(&mut groups[slot.group as usize].ctx(rng), now, &mut buf);
            if buf.is_empty() {
                recycle(pool, buf);
            } else {
                start_send(io, slot, i, buf, inflight, pool);
            }
            // poll_transmit can schedule further timers (pings): re-arm.
            self.after(i, now);
        }
        dirty.clear();
        // `after` may have queued more (a closing conn); keep them for the next turn.
        dirty.append(&mut self.dirty);
        self.dirty = dirty;
    }
}
