//! Output: the upgrade request, the messages due (stamped with their intended send time),
//! pings, pongs and the close frame, framed into the caller's buffer and, on wss://, encrypted
//! by rustls on the way out.

use super::app::Send;
use super::{
    Conn, ConnConfig, Ctx, Fanout, Message, Micros, Phase, Recorder, OUT_APP, OUT_CLOSE,
    OUT_HEARTBEAT, OUT_ON_OPEN, OUT_PING, OUT_PONG, OUT_REQUEST, OUT_RESUME,
};
use crate::proto::rng::Rng;
use crate::proto::template::{Fnv, Vars};
use crate::proto::ws::frame::{encode_close, encode_frame, OpCode};
use std::cell::RefCell;
use std::io::Write;

thread_local! {
    /// Where templated payloads are rendered before framing; reused, so sends do not allocate.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Conn {
    /// Appends due output to `out` (caller-owned, reused across calls). Returns the number of
    /// bytes appended. Call only when no earlier output is still being written.
    pub fn poll_transmit<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        out: &mut Vec<u8>,
    ) -> usize {
        let start = out.len();
        if self.pending & OUT_REQUEST != 0 {
            // Its own values (`{{conn_id}}`, `{{line FILE}}`, ...) render straight into `out`.
            let mut vars = Vars {
                conn_id: self.id,
                seq: 0,
                last_seq: self.last_seq,
                now_unix_us: ctx.epoch_unix_us.saturating_add(now),
                rng: ctx.rng,
            };
            ctx.cfg
                .template
                .render(&self.key, ctx.token, &mut vars, out);
        }
        if self.pending & OUT_PONG != 0 && !self.got_close {
            encode_frame(out, OpCode::Pong, true, &self.pong, ctx.rng.mask());
            ctx.stats.counters().pongs_sent += 1;
        }
        if self.pending & OUT_APP != 0 {
            self.transmit_app(ctx, now, out);
        }
        if self.phase == Phase::Open {
            let cfg = ctx.cfg;
            if self.pending & OUT_ON_OPEN != 0 {
                let now_unix = ctx.epoch_unix_us.saturating_add(now);
                for (k, m) in cfg.on_open.iter().enumerate() {
                    self.encode_message(cfg, Send::OnOpen(k), m, now_unix, ctx.rng, out);
                    ctx.stats.counters().on_open_sent += 1;
                }
            }
            if self.pending & OUT_RESUME != 0 {
                if let Some(m) = &cfg.on_reconnect {
                    let now_unix = ctx.epoch_unix_us.saturating_add(now);
                    self.encode_message(cfg, Send::Other, m, now_unix, ctx.rng, out);
                    ctx.stats.counters().resumes_sent += 1;
                }
            }
            if self.pending & OUT_HEARTBEAT != 0 {
                if let (Some(hb), Some(x)) = (&cfg.heartbeat, self.extras.as_mut()) {
                    x.hb_sent = now;
                    let now_unix = ctx.epoch_unix_us.saturating_add(now);
                    self.encode_message(cfg, Send::Raw, &hb.message, now_unix, ctx.rng, out);
                    ctx.stats.counters().heartbeats_sent += 1;
                }
            }
            if self.pending & OUT_PING != 0 {
                encode_frame(out, OpCode::Ping, true, &now.to_be_bytes(), ctx.rng.mask());
                self.ping_sent_at = now;
                ctx.stats.counters().pings_sent += 1;
            }
            self.transmit_messages(ctx, now, out);
            if !ctx.cfg.requests.is_empty() && !self.stopping {
                self.transmit_requests(ctx, now, out);
            }
        }
        self.count_deflated(ctx);
        self.count_app(ctx);
        if self.pending & OUT_CLOSE != 0 {
            encode_close(out, self.close_code, b"", ctx.rng.mask());
        }
        self.pending = 0;
        if let Some(t) = self.tls.as_mut() {
            if out.len() > start {
                // No buffer limit is set, so rustls takes all of it.
                let _ = t.conn.writer().write_all(&out[start..]);
                out.truncate(start);
            }
            if t.close_notify {
                t.close_notify = false;
                t.conn.send_close_notify();
            }
            while t.conn.wants_write() {
                if t.conn.write_tls(out).is_err() {
                    break;
                }
            }
            if t.done_after_write {
                // The backend closes the socket after this send completes.
                self.finish(ctx, now);
            }
        }
        let n = out.len() - start;
        ctx.stats.counters().bytes_sent += n as u64;
        if n > 0 {
            self.writing = true;
        }
        n
    }

    /// Writes every message whose intended time has come, stamping each with that time (not
    /// the write time) so a stalled loop shows up as latency instead of hiding it. Messages
    /// that fell due while the last write was in progress and are late by more than one
    /// interval (or timer step) were held up by the socket: counted as `msgs_unsent`, not
    /// sent (see [`Conn::handle_sent`]).
    fn transmit_messages<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        out: &mut Vec<u8>,
    ) {
        let (Some(m), iv) = (&ctx.cfg.message, ctx.cfg.message_interval) else {
            return;
        };
        if iv == 0 || self.stopping {
            return;
        }
        let publisher = ctx.cfg.fanout == Some(Fanout::Publisher);
        let slack = iv.max(ctx.cfg.timer_resolution);
        loop {
            let intended = ctx.cfg.on_grid(self.next_msg_at);
            if intended > now || self.sends_done(ctx.cfg) {
                break;
            }
            if intended < self.written_at && now - intended > slack {
                // Its turn passed while the socket would not take more: the send backlog.
                self.sent += 1;
                self.next_msg_at = self.next_msg_at.saturating_add(iv);
                ctx.stats.counters().msgs_unsent += 1;
                continue;
            }
            let now_unix = ctx.epoch_unix_us.saturating_add(now);
            let hash =
                self.encode_message(ctx.cfg, Send::Rate(intended), m, now_unix, ctx.rng, out);
            self.sent += 1;
            self.next_msg_at = self.next_msg_at.saturating_add(iv);
            if publisher {
                // No echo comes back (so not in msgs_sent, which echoes answer); the log is
                // what subscribers are held to.
                ctx.stats
                    .published(ctx.cfg.channel, self.id, self.tseq, now_unix);
                ctx.stats.counters().fanout_published += 1;
                continue;
            }
            if let (Some(h), Some(x)) = (hash, self.extras.as_mut()) {
                x.hashes.push_back(h);
            }
            ctx.stats.counters().msgs_sent += 1;
            self.fifo.push_back(intended);
        }
    }

    /// Writes every named request that is due, stamped with its intended time, and notes
    /// what its reply will be recognized by. Requests held up by the socket beyond their
    /// interval (or timer step) are counted as `requests_unsent` instead, as messages are.
    fn transmit_requests<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        out: &mut Vec<u8>,
    ) {
        let Some(mut x) = self.extras.take() else {
            return;
        };
        let mut due = std::mem::take(&mut x.due);
        x.rules.take_due(ctx.cfg, now, &mut due);
        let now_unix = ctx.epoch_unix_us.saturating_add(now);
        for &(req, intended) in &due {
            let r = &ctx.cfg.requests[usize::from(req)];
            if intended < self.written_at
                && now - intended > r.interval.max(ctx.cfg.timer_resolution)
            {
                // Its turn passed while the socket would not take more: the send backlog,
                // as for rate-driven messages (never sent, so never unanswered either).
                ctx.stats.request_unsent(req, 1);
                continue;
            }
            let m = &r.message;
            let mask = ctx.rng.mask();
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                s.clear();
                match &m.template {
                    Some(t) => {
                        self.tseq += 1;
                        let mut vars = Vars {
                            conn_id: self.id,
                            seq: self.tseq,
                            last_seq: self.last_seq,
                            now_unix_us: now_unix,
                            rng: ctx.rng,
                        };
                        t.render(&mut vars, &mut s);
                    }
                    None => s.extend_from_slice(&m.payload),
                }
                self.frame_out(ctx.cfg, Send::Other, m.opcode, &s, mask, out);
                x.rules.sent(ctx, req, &s, intended);
            });
        }
        due.clear();
        x.due = due;
        self.extras = Some(x);
    }

    /// Frames `m` into `out`, rendering it first if it is templated; returns the rendered
    /// payload's hash then.
    fn encode_message(
        &mut self,
        cfg: &ConnConfig,
        kind: Send,
        m: &Message,
        now_unix_us: u64,
        rng: &mut Rng,
        out: &mut Vec<u8>,
    ) -> Option<u64> {
        let mask = rng.mask();
        let Some(t) = &m.template else {
            self.frame_out(cfg, kind, m.opcode, &m.payload, mask, out);
            return None;
        };
        self.tseq += 1;
        let mut vars = Vars {
            conn_id: self.id,
            seq: self.tseq,
            last_seq: self.last_seq,
            now_unix_us,
            rng,
        };
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            s.clear();
            t.render(&mut vars, &mut s);
            self.frame_out(cfg, kind, m.opcode, &s, mask, out);
            Some(Fnv::of(&s))
        })
    }

    /// Whether output is pending (a send should be started).
    pub fn wants_transmit(&self, cfg: &ConnConfig, now: Micros) -> bool {
        self.pending != 0
            || self
                .tls
                .as_ref()
                .is_some_and(|t| t.close_notify || t.conn.wants_write())
            || (self.phase == Phase::Open
                && !self.stopping
                && !cfg.requests.is_empty()
                && self
                    .extras
                    .as_ref()
                    .is_some_and(|x| x.rules.wants_send(cfg, now)))
            || (self.phase == Phase::Open
                && !self.stopping
                && cfg.message.is_some()
                && cfg.message_interval > 0
                && !self.sends_done(cfg)
                && cfg.on_grid(self.next_msg_at) <= now)
    }
}
