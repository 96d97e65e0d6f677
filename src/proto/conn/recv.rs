//! Plaintext in: the upgrade response, then WebSocket frames as they stream through the
//! decoder. Echoes are matched against our message as their payload arrives (no reassembly),
//! and the optional scans (one-way latency, the expected reply, heartbeat replies, fan-out
//! fields, the resume sequence) read the same bytes once.

use super::event::{EV_OPENED, OPENED};
use super::fanout::{fan_out, fields};
use super::rules::INSPECT_MAX;
use super::{Conn, Ctx, Extras, Failure, Fanout, Hist, Micros, Mode, Outcome, Phase, Recorder};
use super::{OUT_ON_OPEN, OUT_PONG, OUT_RESUME};
use crate::proto::inspect::EXPECT_PREFIX;
use crate::proto::template::Fnv;
use crate::proto::ws::frame::{close_code_valid, Decoded, FrameHeader, OpCode, Violation};
use crate::proto::ws::handshake;

impl Conn {
    /// Plaintext bytes: the upgrade response, then WebSocket frames.
    pub(super) fn recv_plain<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        mut data: &[u8],
    ) {
        if self.phase == Phase::Upgrading {
            let used = match self.recv_upgrade(ctx, now, data) {
                Some(n) => n,
                None => return,
            };
            data = &data[used..];
        }
        if !matches!(self.phase, Phase::Joining | Phase::Open | Phase::Closing) {
            return;
        }
        if let Some(a) = self.app.as_mut() {
            // Any bytes from the server show it alive (STOMP heart-beating counts them all).
            a.last_rx = now;
        }
        loop {
            let ev = match self.dec.decode(&mut data) {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(v) => return self.violation(ctx, now, v),
            };
            let step = match ev {
                Decoded::Header(h) => self.on_header(ctx, h),
                Decoded::Payload(p) => self.on_payload(ctx, p),
                Decoded::End => self.on_frame_end(ctx, now),
            };
            if let Err(v) = step {
                return self.violation(ctx, now, v);
            }
            if self.phase == Phase::Done {
                return;
            }
        }
    }

    /// Returns how many bytes of `data` the upgrade response used, or `None` if all of it
    /// was consumed (or the connection failed).
    fn recv_upgrade<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        data: &[u8],
    ) -> Option<usize> {
        // Parse straight from the read buffer when the response arrives whole (the usual case);
        // copy only when it is split across reads.
        let (buf, prior): (&[u8], usize) = if self.resp.is_empty() {
            (data, 0)
        } else {
            let prior = self.resp.len();
            self.resp.extend_from_slice(data);
            (&self.resp, prior)
        };
        match handshake::check_response(buf, &self.key, &ctx.cfg.template) {
            Ok(None) => {
                if self.resp.is_empty() {
                    self.resp.extend_from_slice(data);
                }
                None
            }
            Err(f) => {
                self.fail(ctx, now, Failure::Upgrade(f));
                None
            }
            Ok(Some(head)) => {
                if let Some(agreed) = handshake::deflate_answer(&buf[..head], &ctx.cfg.template) {
                    self.deflate = Some(Box::new(super::deflate::Deflate::new(agreed)));
                    self.dec.allow_rsv1();
                }
                self.resp = Vec::new();
                ctx.stats
                    .record(Hist::WsUpgrade, now.saturating_sub(self.t_phase));
                if ctx.cfg.app == crate::proto::conn::App::Raw {
                    self.open(ctx, now);
                } else {
                    self.join(ctx, now);
                }
                Some(head - prior)
            }
        }
    }

    /// The session opens: upgraded, and joined when it speaks an application protocol.
    pub(super) fn open<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        self.marks |= OPENED | EV_OPENED;
        ctx.stats.counters().established += 1;
        ctx.stats
            .record(Hist::WsConnecting, now.saturating_sub(self.t_start));
        self.phase = Phase::Open;
        self.t_phase = now;
        self.deadline = 0;
        if !ctx.cfg.on_open.is_empty() {
            self.pending |= OUT_ON_OPEN;
        }
        if self.resuming && ctx.cfg.on_reconnect.is_some() {
            self.pending |= OUT_RESUME;
        }
        let c = ctx.cfg;
        let templated = c.message.as_ref().is_some_and(|m| m.template.is_some());
        if c.session_lifetime > 0
            || c.expect.is_some()
            || c.latency_from.is_some()
            || templated
            || c.fanout.is_some()
            || c.heartbeat.is_some()
            || c.on_reconnect.is_some()
            || c.inspects()
        {
            let mut x = Box::<Extras>::default();
            if c.session_lifetime > 0 {
                x.retire_at = now.saturating_add(c.session_lifetime);
            }
            if let Some((_, timeout)) = &c.expect {
                x.expect_since = now;
                x.expect_until = now.saturating_add(*timeout).max(1);
            } else if c.fanout == Some(Fanout::Subscriber) && !Self::subscribes_by_receipt(c) {
                // Without an ack to wait for, the subscription counts from the open.
                x.subscribed_at = ctx.epoch_unix_us.saturating_add(now);
            }
            if let Some(hb) = &c.heartbeat {
                x.hb_next = now.saturating_add(hb.interval);
            }
            if c.inspects() {
                x.rules = super::rules::RuleState::open(ctx, now);
            }
            self.extras = Some(x);
        }
        // Random phase within the first interval spreads sends evenly even when many
        // connections open at once (after a reconnect burst, say).
        if ctx.cfg.message.is_some() && ctx.cfg.message_interval > 0 {
            self.next_msg_at = now.saturating_add(ctx.rng.below(ctx.cfg.message_interval));
        }
        if ctx.cfg.ping_interval > 0 {
            self.next_ping_at = now.saturating_add(ctx.cfg.ping_interval);
        }
        if let Mode::Handshake { .. } = ctx.cfg.mode {
            self.complete(ctx, now);
        }
    }

    fn on_header<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        h: FrameHeader,
    ) -> Result<(), Violation> {
        self.frame = Some(h);
        if h.opcode.is_control() {
            self.ctrl.clear();
            return Ok(());
        }
        if self.got_close {
            return Err(Violation::DataAfterClose);
        }
        match (h.opcode, self.msg_op) {
            (OpCode::Continuation, None) => return Err(Violation::UnexpectedContinuation),
            (OpCode::Continuation, Some(_)) => {}
            (_, Some(_)) => return Err(Violation::ExpectedContinuation),
            (op, None) => {
                if let Some(z) = &mut self.deflate {
                    z.compressed = h.rsv1;
                    z.left = ctx.cfg.max_message_size;
                }
                self.begin_message(ctx, op);
            }
        }
        Ok(())
    }

    /// A data message begins (or, with `--protocol`, a payload taken from one): the scans
    /// start afresh.
    pub(super) fn begin_message<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, op: OpCode) {
        self.msg_op = Some(op);
        if self.app.as_ref().is_some_and(|a| !a.unwrapping) {
            // The envelope is collected whole first; its payload begins a message of its own.
            return;
        }
        if let Some(x) = &mut self.extras {
            x.scan.reset();
            x.expect_buf.clear();
            x.rx = Fnv::default();
            x.fan = Default::default();
            x.seq_scan.reset();
            x.msg.clear();
        }
        self.matching =
            !self.fifo.is_empty() && ctx.cfg.message.as_ref().is_some_and(|m| m.opcode == op);
        self.match_off = 0;
    }

    fn on_payload<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, p: &[u8]) -> Result<(), Violation> {
        let Some(h) = self.frame else { return Ok(()) };
        if h.opcode.is_control() {
            self.ctrl.extend_from_slice(p);
            return Ok(());
        }
        if self.deflate.as_ref().is_some_and(|z| z.compressed) {
            return self.inflate_payload(ctx, p, false);
        }
        self.on_data(ctx, p)
    }

    /// A data message's payload bytes as the application sent them (inflated, if they came
    /// compressed): validated, scanned and matched as they stream.
    pub(super) fn on_data<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        p: &[u8],
    ) -> Result<(), Violation> {
        if self.app.as_ref().is_some_and(|a| !a.unwrapping) {
            return self.app_collect(ctx.cfg.max_message_size, p);
        }
        if self.msg_op == Some(OpCode::Text) && ctx.cfg.validate_utf8 {
            self.utf8.feed(p)?;
        }
        if let Some(x) = &mut self.extras {
            if let Some(f) = &ctx.cfg.latency_from {
                x.scan.feed(f, p);
            }
            if x.expect_until != 0 || x.hb_sent != 0 {
                let room = EXPECT_PREFIX.saturating_sub(x.expect_buf.len());
                x.expect_buf.extend_from_slice(&p[..p.len().min(room)]);
            }
            if ctx.cfg.inspects() {
                let room = INSPECT_MAX.saturating_sub(x.msg.len());
                x.msg.extend_from_slice(&p[..p.len().min(room)]);
            }
            if ctx.cfg.fanout == Some(Fanout::Subscriber) {
                let fields = fields();
                for (scan, f) in x.fan.iter_mut().zip(fields) {
                    scan.feed(f, p);
                }
            } else if ctx.cfg.on_reconnect.is_some() {
                x.seq_scan.feed(&ctx.cfg.last_seq_field, p);
            }
        }
        // Compare with our payload as it streams in: no reassembly buffer is ever needed.
        let templated = ctx
            .cfg
            .message
            .as_ref()
            .is_some_and(|m| m.template.is_some());
        if self.matching && templated {
            if let Some(x) = &mut self.extras {
                x.rx.feed(p);
            }
        } else if self.matching {
            let expected = ctx.cfg.message.as_ref().map_or(&[][..], |m| &m.payload[..]);
            let end = self.match_off + p.len();
            self.matching = expected.get(self.match_off..end) == Some(p);
            self.match_off = end;
        }
        Ok(())
    }

    fn on_frame_end<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
    ) -> Result<(), Violation> {
        let Some(h) = self.frame.take() else {
            return Ok(());
        };
        match h.opcode {
            OpCode::Ping => {
                let withheld = ctx
                    .cfg
                    .no_pong_after
                    .is_some_and(|after| now >= self.t_phase.saturating_add(after));
                let open = matches!(self.phase, Phase::Open | Phase::Joining);
                if open && withheld {
                    ctx.stats.counters().pings_unanswered += 1;
                } else if open {
                    self.pong.clear();
                    self.pong.extend_from_slice(&self.ctrl);
                    self.pending |= OUT_PONG;
                }
            }
            OpCode::Pong => {
                // Only the pong carrying our ping's payload answers it; servers also send
                // unsolicited heartbeat pongs.
                if self.ping_sent_at != 0 && self.ctrl == self.ping_sent_at.to_be_bytes() {
                    ctx.stats
                        .record(Hist::WsPing, now.saturating_sub(self.ping_sent_at));
                    ctx.stats.counters().pongs_received += 1;
                    self.ping_sent_at = 0;
                }
            }
            OpCode::Close => return self.on_close_frame(ctx, now),
            _ => {
                if h.fin {
                    if self.deflate.as_ref().is_some_and(|z| z.compressed) {
                        self.inflate_payload(ctx, &[], true)?;
                    }
                    self.on_message_end(ctx, now)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn on_message_end<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
    ) -> Result<(), Violation> {
        if self.app.as_ref().is_some_and(|a| !a.unwrapping) {
            return self.app_message(ctx, now);
        }
        let op = self.msg_op.take();
        if op == Some(OpCode::Text) && ctx.cfg.validate_utf8 {
            self.utf8.finish()?;
        }
        if self.phase != Phase::Open {
            ctx.stats.counters().msgs_late += 1;
            // A delivery sent while we were still subscribed counts even if it arrives
            // during our close.
            if let Some(x) = &mut self.extras {
                fan_out(ctx, x, now, &mut self.last_seq);
                if ctx.cfg.inspects() {
                    x.rules.on_message(ctx, now, &x.msg);
                    x.release_msg();
                }
            }
            return Ok(());
        }
        self.inspect(ctx, now);
        if let (Some(x), true) = (&mut self.extras, ctx.cfg.inspects()) {
            let answered = x.rules.on_message(ctx, now, &x.msg);
            x.release_msg();
            if answered {
                if self.stopping && self.nothing_awaited(ctx.cfg) {
                    self.begin_close(ctx, now, 1000);
                }
                return Ok(());
            }
        }
        let full = match (&ctx.cfg.message, &mut self.extras) {
            // Templated: the echo is ours if it hashes like the oldest message awaiting one.
            (Some(m), Some(x)) if m.template.is_some() => {
                let ours = x.hashes.front() == Some(&x.rx.0);
                if ours {
                    x.hashes.pop_front();
                }
                ours
            }
            (m, _) => m
                .as_ref()
                .is_some_and(|m| m.payload.len() == self.match_off),
        };
        if self.matching && full {
            if let Some(intended) = self.fifo.pop_front() {
                ctx.stats.counters().msgs_received += 1;
                ctx.stats
                    .record(Hist::WsMsgRtt, now.saturating_sub(intended));
                if self.stopping && self.nothing_awaited(ctx.cfg) {
                    self.begin_close(ctx, now, 1000);
                }
                return Ok(());
            }
        }
        ctx.stats.counters().msgs_pushed += 1;
        Ok(())
    }

    /// One-way latency and the expected reply, on a complete data message.
    fn inspect<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        let Some(x) = &mut self.extras else { return };
        if let Some(sent) = ctx
            .cfg
            .latency_from
            .as_ref()
            .and_then(|f| x.scan.micros(f.unit))
        {
            let arrived = ctx.epoch_unix_us.saturating_add(now);
            // A server clock ahead of ours would give a negative latency: counted, not hidden.
            match arrived.checked_sub(sent) {
                Some(lat) => ctx.stats.record(Hist::WsMsgLatency, lat),
                None => ctx.stats.counters().latency_clock_skew += 1,
            }
        }
        if x.expect_until != 0 {
            if let Some((pattern, _)) = &ctx.cfg.expect {
                if pattern.matches(&x.expect_buf) {
                    ctx.stats
                        .record(Hist::WsSubscribeAck, now.saturating_sub(x.expect_since));
                    ctx.stats.counters().expects_met += 1;
                    x.expect_until = 0;
                    if ctx.cfg.fanout == Some(Fanout::Subscriber) {
                        x.subscribed_at = ctx.epoch_unix_us.saturating_add(now);
                    }
                }
            }
        }
        if x.hb_sent != 0 {
            if let Some(hb) = &ctx.cfg.heartbeat {
                if hb.expect.matches(&x.expect_buf) {
                    ctx.stats
                        .record(Hist::WsHeartbeat, now.saturating_sub(x.hb_sent));
                    ctx.stats.counters().heartbeats_answered += 1;
                    x.hb_sent = 0;
                }
            }
        }
        if x.expect_until == 0 && x.hb_sent == 0 && !x.expect_buf.is_empty() {
            x.expect_buf = Vec::new();
        }
        if let Some(seq) = x.seq_scan.value() {
            self.last_seq = self.last_seq.max(seq);
        }
        fan_out(ctx, x, now, &mut self.last_seq);
    }

    fn on_close_frame<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
    ) -> Result<(), Violation> {
        if self.got_close {
            // A second close frame: the first one counted, this one changes nothing.
            return Ok(());
        }
        let code = match self.ctrl.len() {
            0 => 1005,
            1 => return Err(Violation::BadCloseFrame),
            _ => {
                let code = u16::from_be_bytes([self.ctrl[0], self.ctrl[1]]);
                if !close_code_valid(code) {
                    return Err(Violation::InvalidCloseCode);
                }
                if std::str::from_utf8(&self.ctrl[2..]).is_err() {
                    return Err(Violation::InvalidUtf8);
                }
                code
            }
        };
        ctx.stats.close_code(code);
        self.got_close = true;
        match self.phase {
            Phase::Open => {
                ctx.stats.counters().closed_by_server += 1;
                self.outcome = Some(Outcome::ServerClosed(code));
                // Echo the code back (1005 may not be sent, answer 1000 then).
                let reply = if code == 1005 { 1000 } else { code };
                self.begin_close(ctx, now, reply);
            }
            Phase::Joining => {
                self.fail(ctx, now, Failure::ClosedDuringHandshake);
            }
            Phase::Closing => {
                if self.outcome.is_none() {
                    ctx.stats.counters().closed_clean += 1;
                    self.outcome = Some(Outcome::Stopped);
                }
                // Wait for the server's FIN so TIME_WAIT lands on its side (RFC 6455 §7.1.1).
                self.deadline = now.saturating_add(ctx.cfg.close_wait);
            }
            _ => {}
        }
        Ok(())
    }
}
