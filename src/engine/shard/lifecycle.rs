//! After every call into a connection: its events (a session opened; it ended, and is torn
//! down and replaced as its group's policy says), its timer and its output.

use super::slot::stop_reading;
use super::Shard;
use crate::engine::timer::TimerEntry;
use crate::io::backend::{pack, Backend, Op};
use crate::metrics::targets::TargetStats;
use crate::proto::conn::{Conn, Ending, Event, Micros, Mode, Outcome};

impl<B: Backend> Shard<B> {
    /// After any input: act on the connection's events (tear it down once it ended), re-arm
    /// its timer, queue its output.
    pub(super) fn after(&mut self, i: u32, now: Micros) {
        while let Some(ev) = self.slots[i as usize]
            .conn
            .as_mut()
            .and_then(Conn::poll_event)
        {
            match ev {
                Event::SessionOpened => {
                    let slot = &self.slots[i as usize];
                    let gi = slot.group as usize;
                    if self.plan.targets.len() > 1 {
                        let (target, since) = (slot.target as usize, slot.opened_at);
                        let t = self.groups[gi].stats.target(target);
                        t.established += 1;
                        TargetStats::record(&mut t.ws_connecting, now.saturating_sub(since));
                    }
                    self.groups[gi].session_opened(now);
                    self.succeeded();
                }
                Event::Ended(end) => return self.teardown(i, now, end),
            }
        }
        let slot = &mut self.slots[i as usize];
        let stopped = slot.conn.as_ref().is_some_and(|c| !c.is_reading());
        if stopped && !slot.watching && slot.has_socket && !slot.connecting {
            stop_reading(&mut self.io, slot, i, &mut self.inflight);
        }
        let Some(conn) = slot.conn.as_ref() else {
            return;
        };
        let cfg = &self.groups[slot.group as usize].cfg;
        if let Some(t) = conn.poll_timeout(cfg) {
            // A send that is due now goes out through the dirty list, or, while a send is in
            // flight, when that send completes: arming a past timer for it would only spin.
            let due_by_send = t <= now && conn.wants_transmit(cfg, now);
            let armed = slot.timer_at != 0 && slot.timer_at > now;
            if !due_by_send && (!armed || t < slot.timer_at) {
                slot.timer_at = t;
                self.wheel.insert(TimerEntry {
                    slot: i,
                    gen: slot.gen,
                    at: t,
                });
            }
        }
        if !slot.sending && !slot.in_dirty && conn.wants_transmit(cfg, now) {
            slot.in_dirty = true;
            self.dirty.push(i);
        }
    }

    /// A connection ended: account for it (a replacement, the resume sequence, the open
    /// count) and close its socket.
    pub(super) fn teardown(&mut self, i: u32, now: Micros, end: Ending) {
        let slot = &mut self.slots[i as usize];
        if slot.conn.take().is_none() {
            return;
        }
        let gi = slot.group as usize;
        let (retired, retry) = (slot.retired, slot.retry);
        if let (Outcome::Failed(f), true) = (end.outcome, self.plan.targets.len() > 1) {
            let t = self.groups[gi].stats.target(slot.target as usize);
            if end.established {
                t.sessions_dropped += 1;
            } else {
                t.connect_failed += 1;
            }
            *t.failures.entry(f).or_insert(0) += 1;
        }
        match end.outcome {
            Outcome::Completed => self.succeeded(),
            Outcome::Failed(f) => self.failed(f),
            _ => {}
        }
        self.live -= 1;
        let g = &mut self.groups[gi];
        g.live -= 1;
        let cycles = g.plan.conn.mode != Mode::Session;
        if retired {
            g.retiring -= 1;
        }
        if g.plan.arrivals.is_some() {
            // Open model: arrivals do not depend on departures.
        } else if g.plan.ramp.is_active() {
            // Stages: whatever was lost, the ramp opens again; a lost session's refill
            // resumes it.
            let lost = matches!(end.outcome, Outcome::Failed(_) | Outcome::ServerClosed(_))
                || end.storm_dropped;
            if let (true, Some(seq)) =
                (lost && !retired && g.cfg.on_reconnect.is_some(), end.resume)
            {
                g.resume_seqs.push(seq);
            }
        } else if cycles && !self.stopping {
            // Handshake mode: every finished cycle, failed or not, makes room for the next.
            if g.pending_opens == 0 {
                g.next_open_at = g.next_open_at.max(now as f64);
            }
            g.pending_opens += 1;
        } else if !self.stopping {
            let lost = matches!(end.outcome, Outcome::Failed(_) | Outcome::ServerClosed(_));
            // A storm's sessions always come back: recovering from it is what is measured.
            if (g.plan.reconnect && lost) || end.storm_dropped {
                // Failed attempts back off further; a session that had opened starts over.
                let retry = if end.established {
                    (0, 0)
                } else {
                    (retry.0.saturating_add(1), retry.1)
                };
                if let (true, Some(seq)) = (g.cfg.on_reconnect.is_some(), end.resume) {
                    g.resume_seqs.push(seq);
                }
                self.replace(gi, now, retry);
            }
        }
        let slot = &mut self.slots[i as usize];
        if end.established && !slot.uncounted {
            let g = &mut self.groups[gi];
            g.open_now = g.open_now.saturating_sub(1);
        }
        if slot.has_socket && !slot.close_submitted {
            if slot.recv_armed {
                self.io
                    .cancel(pack(i, slot.gen, Op::Recv), pack(i, slot.gen, Op::Cancel));
            }
            if slot.watching {
                // Cancelling a watch that already completed finds nothing: harmless.
                self.io
                    .cancel(pack(i, slot.gen, Op::Hangup), pack(i, slot.gen, Op::Cancel));
            }
            if slot.connecting {
                self.io.cancel(
                    pack(i, slot.gen, Op::Connect),
                    pack(i, slot.gen, Op::Cancel),
                );
            }
            // A completed cycle's last send (close_notify, close frame) is small and will
            // complete; the close then takes effect after it.
            if slot.sending && end.outcome != Outcome::Completed {
                self.io
                    .cancel(pack(i, slot.gen, Op::Send), pack(i, slot.gen, Op::Cancel));
            }
            if slot.rst {
                self.io.close_rst(
                    i,
                    pack(i, slot.gen, Op::Setup),
                    pack(i, slot.gen, Op::Close),
                );
            } else {
                self.io.close(i, pack(i, slot.gen, Op::Close));
            }
            slot.close_submitted = true;
            slot.ops += 1;
            self.inflight += 1;
        }
        self.maybe_free(i);
    }
}
