//! How a connection ends: a graceful stop (drain, then close 1000) and its hurried and
//! aborted forms, storm drops, protocol violations, failures, and the accounting every ending
//! does (unsent and unanswered messages, the session's outcome for [`super::Event::Ended`]).

use super::event::{EV_ENDED, STORM_DROPPED};
use super::{
    Conn, Ctx, Failure, Fanout, Micros, Outcome, Phase, Recorder, OUT_CLOSE, STALLED_AFTER,
};
use crate::proto::ws::frame::Violation;
use std::collections::VecDeque;

impl Conn {
    /// Ends the session gracefully: no new messages; replies in flight are awaited until
    /// `drain_until`, then a close (1000) is sent. Connections not yet open are abandoned.
    pub fn stop<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros, drain_until: Micros) {
        if self.stopping {
            return;
        }
        self.end_sending(ctx, now);
        self.stopping = true;
        match self.phase {
            // A handshake cycle whose handshake is done (waiting for a ticket, or with our
            // Finished still to send) ends as a completed cycle, so the server counts it too.
            Phase::TlsHandshake if self.tls.as_ref().is_some_and(|t| t.done) => {
                self.complete(ctx, now)
            }
            Phase::Connecting | Phase::TlsHandshake | Phase::Upgrading | Phase::Joining => {
                self.abandon(ctx, now)
            }
            Phase::Open => {
                // Subscribers wait out the drain too: deliveries in flight still count.
                let awaiting =
                    self.extras.as_ref().is_some_and(|x| x.rules.awaiting()) || self.app_awaiting();
                if self.fifo.is_empty() && !awaiting && ctx.cfg.fanout != Some(Fanout::Subscriber) {
                    self.begin_close(ctx, now, 1000);
                } else {
                    self.deadline = drain_until;
                }
            }
            Phase::Closing | Phase::Done => {}
        }
    }

    /// Hurries a stop under way (a signal during the drain or the close wait): the drain ends by
    /// `drain_until` at the latest, and a close handshake waits at most `ctx.cfg.close_wait`
    /// (the caller's, shortened) from `now`. A connection not yet stopping is [`Self::stop`]ped.
    pub fn hurry<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros, drain_until: Micros) {
        if !self.stopping {
            return self.stop(ctx, now, drain_until);
        }
        let cap = match self.phase {
            Phase::Open => drain_until,
            Phase::Closing => now.saturating_add(ctx.cfg.close_wait),
            _ => return,
        };
        if self.deadline == 0 || self.deadline > cap {
            self.deadline = cap;
        }
    }

    /// Ends the connection at once, without a close handshake (second signal, hard deadline).
    pub fn abort<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        self.end_sending(ctx, now);
        self.stopping = true;
        match self.phase {
            Phase::Connecting | Phase::TlsHandshake | Phase::Upgrading | Phase::Joining => {
                self.abandon(ctx, now)
            }
            Phase::Open => {
                // Counted like a close whose handshake did not complete.
                self.phase = Phase::Closing;
                self.finish(ctx, now);
            }
            Phase::Closing => self.finish(ctx, now),
            Phase::Done => {}
        }
    }

    /// Never opened, and the run is over: not counted as a failure, but an attempt that had
    /// waited long ([`STALLED_AFTER`]) was cut short by the end of the run, and says so.
    pub(super) fn abandon<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        let c = ctx.stats.counters();
        c.abandoned += 1;
        if matches!(
            self.phase,
            Phase::TlsHandshake | Phase::Upgrading | Phase::Joining
        ) {
            c.abandoned_accepted += 1;
        }
        let stalled_after = (ctx.cfg.connect_timeout / 2).min(STALLED_AFTER);
        if now.saturating_sub(self.t_start) >= stalled_after {
            c.abandoned_stalled += 1;
        }
        self.outcome = Some(Outcome::Stopped);
        self.finish(ctx, now);
    }

    /// A reconnect storm takes this open session: abruptly (`Outcome::Dropped`, the backend
    /// closes the socket with RST) or with a close handshake; either way it is replaced.
    pub fn storm_drop<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros, graceful: bool) {
        if self.phase != Phase::Open {
            return;
        }
        ctx.stats.counters().storm_dropped += 1;
        self.marks |= STORM_DROPPED;
        if graceful {
            self.begin_close(ctx, now, 1000);
        } else {
            self.account_unanswered(ctx);
            self.outcome = Some(Outcome::Dropped);
            self.finish(ctx, now);
        }
    }

    pub(super) fn violation<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        v: Violation,
    ) {
        if self.phase == Phase::Closing {
            // The session is already ending; the violation is still the server's fault.
            ctx.stats.fail(Failure::Protocol(v));
            return self.finish(ctx, now);
        }
        // Fail the connection (RFC 6455 §7.1.7): the socket is closed without a close frame.
        self.fail(ctx, now, Failure::Protocol(v));
    }

    pub(super) fn begin_close<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        code: u16,
    ) {
        if self.phase != Phase::Open {
            return;
        }
        self.end_sending(ctx, now);
        self.account_unanswered(ctx);
        // A reply still expected when we close is not the server's failure.
        if let Some(x) = &mut self.extras {
            x.expect_until = 0;
            // Closing ends the subscription: later messages are not owed to this session.
            if x.subscribed_at != 0 && x.session_end == 0 {
                x.session_end = ctx.epoch_unix_us.saturating_add(now).max(1);
            }
        }
        self.close_code = code;
        self.app_bye();
        self.pending |= OUT_CLOSE;
        self.phase = Phase::Closing;
        self.deadline = now.saturating_add(ctx.cfg.close_wait);
    }

    pub(super) fn fail<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        failure: Failure,
    ) {
        ctx.stats.fail(failure);
        if self.phase == Phase::Open {
            ctx.stats.counters().sessions_dropped += 1;
        } else {
            ctx.stats.counters().connect_failed += 1;
        }
        self.outcome = Some(Outcome::Failed(failure));
        self.finish(ctx, now);
    }

    /// The connection is over: account for what is left, release its buffers and report
    /// [`Event::Ended`](super::Event::Ended). Idempotent: a second call does nothing.
    pub(super) fn finish<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        if self.phase == Phase::Done {
            return;
        }
        self.end_sending(ctx, now);
        if self.phase == Phase::Closing && self.outcome.is_none() {
            // We closed, but no close reply came before EOF, an error or --close-wait.
            ctx.stats.counters().closes_incomplete += 1;
            self.outcome = Some(Outcome::Stopped);
        }
        self.account_unanswered(ctx);
        self.app_account(ctx);
        if let Some(x) = &self.extras {
            if x.subscribed_at != 0 {
                let end = match x.session_end {
                    0 => ctx.epoch_unix_us.saturating_add(now),
                    e => e,
                };
                ctx.stats.subscribed(ctx.cfg.channel, x.subscribed_at, end);
            }
        }
        self.phase = Phase::Done;
        self.marks |= EV_ENDED;
        self.pending = 0;
        self.deadline = 0;
        self.resp = Vec::new();
        self.ctrl = Vec::new();
        self.pong = Vec::new();
        self.fifo = VecDeque::new();
        self.extras = None;
        self.tls = None;
        self.app = None;
    }

    /// Sending ends (the first of stop, close or failure; later calls do nothing): the
    /// rate-driven messages and named requests due by now that waited for a backlogged socket
    /// (due while a write was in progress) were never sent; they are counted as `msgs_unsent`
    /// and `requests_unsent`.
    pub(super) fn end_sending<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        if self.phase != Phase::Open || self.stopping {
            return;
        }
        // Pings due by now that a send backlog kept the timer from sending.
        self.skip_due_pings(ctx, now);
        // Due while a write was in progress: up to now if one still is.
        let until = if self.writing {
            now.saturating_add(1)
        } else {
            self.written_at.min(now.saturating_add(1))
        };
        if let Some(x) = self.extras.as_mut() {
            let mut due = std::mem::take(&mut x.due);
            x.rules.take_due(ctx.cfg, until.saturating_sub(1), &mut due);
            for &(req, _) in &due {
                ctx.stats.request_unsent(req, 1);
            }
            due.clear();
            x.due = due;
        }
        let (Some(_), iv) = (&ctx.cfg.message, ctx.cfg.message_interval) else {
            return;
        };
        if iv == 0 {
            return;
        }
        let mut unsent = 0;
        while !self.sends_done(ctx.cfg) {
            let intended = ctx.cfg.on_grid(self.next_msg_at);
            if intended >= until {
                break;
            }
            self.sent += 1;
            self.next_msg_at = self.next_msg_at.saturating_add(iv);
            unsent += 1;
        }
        ctx.stats.counters().msgs_unsent += unsent;
    }

    /// Every sent message ends as received or unanswered, so sent = received + unanswered.
    pub(super) fn account_unanswered<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>) {
        ctx.stats.counters().msgs_unanswered += self.fifo.len() as u64;
        self.fifo.clear();
        if let Some(x) = &mut self.extras {
            x.hashes.clear();
            x.rules.account(ctx);
        }
    }
}
