//! permessage-deflate on one connection: what was agreed, the inflater of the message in
//! progress (allocated on the first compressed message, dropped between messages when the
//! server resets its context), and our compressor (per connection with context takeover;
//! shared by the thread's connections without: each message starts afresh anyway).

use super::{Conn, Ctx, Recorder};
use crate::proto::ws::deflate::{self, InflateError, Negotiated};
use crate::proto::ws::frame::{encode_frame, encode_frame_rsv1, OpCode, Violation};
use flate2::{Compress, Decompress};
use std::cell::RefCell;

thread_local! {
    /// Compressed message bytes, reused.
    static DEFLATED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The compressor shared by this thread's connections without context takeover, with
    /// its window bits.
    static SHARED: RefCell<Option<(u8, Compress)>> = const { RefCell::new(None) };
}

/// One connection's permessage-deflate state.
pub(super) struct Deflate {
    pub(super) agreed: Negotiated,
    /// Our compressor, when we keep our context between messages.
    comp: Option<Compress>,
    inflate: Option<Decompress>,
    /// The message in progress is compressed (RSV1 on its first frame).
    pub(super) compressed: bool,
    /// Bytes the message in progress may still inflate to.
    pub(super) left: u64,
    /// Sent since the counters were last brought up to date: payload bytes before and after
    /// compression.
    sent_raw: u64,
    sent_wire: u64,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("agreed", &self.agreed)
            .finish_non_exhaustive()
    }
}

impl Deflate {
    pub(super) fn new(agreed: Negotiated) -> Self {
        Self {
            agreed,
            comp: None,
            inflate: None,
            compressed: false,
            left: 0,
            sent_raw: 0,
            sent_wire: 0,
        }
    }

    /// Compresses `payload` onto `out` with the agreed window and context rule.
    fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        if self.agreed.client_no_context_takeover {
            let bits = self.agreed.client_max_window_bits;
            SHARED.with(|s| {
                let mut s = s.borrow_mut();
                if s.as_ref().is_none_or(|(b, _)| *b != bits) {
                    *s = Some((bits, deflate::compressor(&self.agreed)));
                }
                if let Some((_, c)) = s.as_mut() {
                    deflate::deflate_message(c, payload, true, out);
                }
            });
        } else {
            let agreed = self.agreed;
            let c = self
                .comp
                .get_or_insert_with(|| deflate::compressor(&agreed));
            deflate::deflate_message(c, payload, false, out);
        }
        self.sent_raw += payload.len() as u64;
        self.sent_wire += out.len() as u64;
    }
}

/// Frames one data message: compressed with RSV1 when permessage-deflate was agreed.
pub(super) fn frame_data(
    z: Option<&mut Deflate>,
    out: &mut Vec<u8>,
    opcode: OpCode,
    payload: &[u8],
    mask: [u8; 4],
) {
    match z {
        None => encode_frame(out, opcode, true, payload, mask),
        Some(z) => DEFLATED.with(|d| {
            let mut d = d.borrow_mut();
            d.clear();
            z.compress(payload, &mut d);
            encode_frame_rsv1(out, opcode, true, true, &d, mask);
        }),
    }
}

impl Conn {
    /// Brings the compression counters up to date with what was sent.
    pub(super) fn count_deflated<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>) {
        if let Some(z) = self.deflate.as_mut() {
            if z.sent_raw > 0 {
                let c = ctx.stats.counters();
                c.deflate_payload_sent += std::mem::take(&mut z.sent_raw);
                c.deflate_wire_sent += std::mem::take(&mut z.sent_wire);
            }
        }
    }

    /// Inflates a compressed message's bytes `p` (`last`: its end) and hands what comes out
    /// to the payload handlers, as if it had arrived uncompressed.
    pub(super) fn inflate_payload<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        p: &[u8],
        last: bool,
    ) -> Result<(), Violation> {
        let Some(mut z) = self.deflate.take() else {
            return self.on_data(ctx, p);
        };
        let before = z.left;
        let d = z.inflate.get_or_insert_with(deflate::inflater);
        let r = deflate::inflate_part(d, p, last, &mut z.left, &mut |chunk: &[u8]| {
            self.on_data(ctx, chunk)
        });
        let c = ctx.stats.counters();
        c.deflate_wire_received += p.len() as u64;
        c.deflate_payload_received += before - z.left;
        let ended = match r {
            Ok(ended) => ended,
            Err(Ok(InflateError::Corrupt)) => {
                self.deflate = Some(z);
                return Err(Violation::BadDeflate);
            }
            Err(Ok(InflateError::TooBig)) => {
                self.deflate = Some(z);
                return Err(Violation::MessageTooBig);
            }
            Err(Err(v)) => {
                self.deflate = Some(z);
                return Err(v);
            }
        };
        if last {
            c.deflate_msgs_received += 1;
            // A final block ends the stream; a server without context takeover starts each
            // message afresh: either way the window is not needed any more.
            if ended || z.agreed.server_no_context_takeover {
                z.inflate = None;
            }
        }
        self.deflate = Some(z);
        Ok(())
    }
}
