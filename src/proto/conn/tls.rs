//! The TLS phase of a wss:// connection: rustls (sans-IO too) between the socket's ciphertext
//! and the plaintext the WebSocket side reads and writes; handshake accounting (full or
//! resumed, retries, tickets, negotiated parameters); and the end of a `--mode handshake` cycle.

use super::{Conn, Ctx, Failure, Hist, Micros, Mode, Outcome, Phase, Recorder};
use crate::proto::tls::{Negotiated, TlsClient, TlsFailure};
use rustls::ClientConnection;
use std::io::BufRead;

/// The rustls side of a wss:// connection.
#[derive(Debug)]
pub(super) struct TlsConn {
    pub(super) conn: ClientConnection,
    /// The ClientHello offered a stored session.
    pub(super) attempted: bool,
    /// The handshake has completed.
    pub(super) done: bool,
    /// A close_notify is owed.
    pub(super) close_notify: bool,
    /// The cycle is over once the queued records (our Finished) are handed to the socket.
    pub(super) done_after_write: bool,
    /// The server asked for a client certificate and we had none: a refusal that follows is
    /// named for it ([`TlsFailure::after_cert_request`]).
    pub(super) cert_requested: bool,
}

impl Conn {
    /// Starts the TLS side of a new connection (its ClientHello is then due), or fails it.
    pub(super) fn start_tls<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        let Some(client) = ctx.tls else { return };
        match client.start(ctx.rng) {
            Ok(s) => {
                ctx.stats.counters().tls_resume_attempted += u64::from(s.attempted);
                self.tls = Some(Box::new(TlsConn {
                    conn: s.conn,
                    attempted: s.attempted,
                    done: false,
                    close_notify: false,
                    done_after_write: false,
                    cert_requested: false,
                }));
            }
            Err(e) => self.fail(ctx, now, Failure::Tls(TlsFailure::of(&e))),
        }
    }

    /// Ciphertext in: rustls decrypts; the plaintext goes through [`Conn::recv_plain`]. The TLS
    /// state is out of `self` meanwhile (it is put back unless the connection ended).
    pub(super) fn recv_tls<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        mut t: Box<TlsConn>,
        mut data: &[u8],
    ) {
        let mut peer_closed = false;
        let mut got = 0;
        let stored = |ctx: &Ctx<'_, R>| ctx.tls.map_or(0, TlsClient::tickets_stored);
        while !data.is_empty() && self.phase != Phase::Done && !peer_closed {
            match t.conn.read_tls(&mut data) {
                // After the server's close_notify rustls takes nothing more: bytes behind it
                // are ignored (looping on them would spin).
                Ok(0) => break,
                Ok(_) => {}
                // Only when rustls' buffer is full, which draining below after every read
                // rules out; treat it as the server's fault rather than spin.
                Err(_) => return self.fail(ctx, now, Failure::Tls(TlsFailure::Protocol)),
            }
            // The shard is one thread: tickets stored during this call are this connection's.
            // Likewise the CertificateRequests answered without a certificate.
            let before = stored(ctx);
            let asked = ctx.tls.map_or(0, TlsClient::cert_requests);
            let state = t.conn.process_new_packets();
            got += stored(ctx) - before;
            t.cert_requested |= ctx.tls.map_or(0, TlsClient::cert_requests) != asked;
            let state = match state {
                Ok(s) => s,
                Err(e) => {
                    ctx.stats.counters().tls_tickets_received += got;
                    let mut f = TlsFailure::of(&e);
                    if t.cert_requested {
                        f = f.after_cert_request();
                    }
                    return self.tls_failed(ctx, now, f);
                }
            };
            peer_closed |= state.peer_has_closed();
            if !t.done && !t.conn.is_handshaking() {
                t.done = true;
                self.tls_established(ctx, now, &t);
            }
            while self.phase != Phase::Done {
                let n = match t.conn.reader().into_first_chunk() {
                    Ok(chunk) if !chunk.is_empty() => {
                        self.recv_plain(ctx, now, chunk);
                        chunk.len()
                    }
                    _ => break,
                };
                t.conn.reader().consume(n);
            }
        }
        ctx.stats.counters().tls_tickets_received += got;
        let cycle_done = self.phase == Phase::TlsHandshake
            && t.done
            && (got > 0 || !self.awaits_ticket(ctx, &t));
        if self.phase != Phase::Done {
            self.tls = Some(t);
        }
        if cycle_done {
            self.complete(ctx, now);
        }
        if peer_closed {
            // close_notify: the server's orderly end of the stream, an EOF for our purposes.
            self.handle_eof(ctx, now);
        }
    }

    /// Whether a handshake-only cycle should wait for a TLS 1.3 ticket before it closes: the
    /// server sends tickets after our Finished, and a client that leaves at once never gets
    /// any, so it could never resume.
    fn awaits_ticket<R: Recorder>(&self, ctx: &Ctx<'_, R>, t: &TlsConn) -> bool {
        ctx.tls.is_some_and(TlsClient::awaits_tickets)
            && t.conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
    }

    fn tls_established<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros, t: &TlsConn) {
        let n = Negotiated::of(&t.conn);
        let took = now.saturating_sub(self.t_phase);
        let c = ctx.stats.counters();
        if n.resumed {
            c.tls_handshakes_resumed += 1;
            ctx.stats.record(Hist::TlsResumed, took);
        } else {
            c.tls_handshakes_full += 1;
            c.tls_hello_retries += u64::from(n.retried);
            ctx.stats.record(Hist::TlsFull, took);
        }
        if t.attempted && !n.resumed {
            ctx.stats.counters().tls_resume_refused += 1;
        }
        ctx.stats.tls_negotiated(&n);
        if let Mode::Handshake { upgrade: false, .. } = ctx.cfg.mode {
            // Stay in TlsHandshake until a ticket arrives (see `awaits_ticket`), but not for
            // long: some servers send none.
            self.deadline = now
                .saturating_add((4 * took).max(20_000))
                .min(self.deadline.max(now));
        } else {
            // The upgrade request went out with our Finished (rustls queued it).
            self.phase = Phase::Upgrading;
            self.t_phase = now;
        }
    }

    fn tls_failed<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros, f: TlsFailure) {
        let f = Failure::Tls(f);
        if self.phase == Phase::Closing {
            ctx.stats.fail(f);
            return self.finish(ctx, now);
        }
        self.fail(ctx, now, f);
    }

    /// A handshake cycle is done: count it and close the way the run asked.
    pub(super) fn complete<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        ctx.stats.counters().handshake_cycles += 1;
        self.outcome = Some(Outcome::Completed);
        let rst = matches!(ctx.cfg.mode, Mode::Handshake { rst: true, .. });
        match (self.phase, rst) {
            (Phase::Open, true) => {
                ctx.stats.counters().closed_rst += 1;
                self.finish(ctx, now);
            }
            (Phase::Open, false) => {
                // The usual close handshake; its result is counted as for any session.
                self.outcome = None;
                self.begin_close(ctx, now, 1000);
            }
            (_, true) => match self.tls.as_mut() {
                // Our last flight (TLS 1.3 Finished, TLS 1.2 resumption Finished) must reach
                // the server before the RST, or it never completes the handshake we count.
                Some(t) if t.conn.wants_write() => {
                    t.done_after_write = true;
                    self.phase = Phase::Closing;
                    self.deadline = now.saturating_add(ctx.cfg.close_wait);
                }
                _ => self.finish(ctx, now),
            },
            (_, false) => {
                if let Some(t) = self.tls.as_mut() {
                    t.close_notify = true;
                }
                self.phase = Phase::Closing;
                self.deadline = now.saturating_add(ctx.cfg.close_wait);
            }
        }
    }
}
