//! permessage-deflate in the gateway (`serve --compression`, RFC 7692), as a layer between the
//! socket and tungstenite, which knows no extension.
//!
//! - Reads: the client's frames are decoded as they arrive. A compressed message (RSV1 on its
//!   first frame) is unmasked and inflated in bounded steps, and handed to tungstenite as plain
//!   fragments (masked with a zero key, as a client's must be) ending in an empty final one.
//!   Control frames and uncompressed messages pass through unchanged.
//! - Writes: tungstenite's data frames are compressed into one RSV1 frame per message (sync
//!   flush, trailer stripped); its control frames pass through.
//!
//! Memory stays bounded whatever a client sends: one socket read of raw input
//! ([`RAW_CHUNK`]), inflated output staged for tungstenite only up to [`STAGED`] (+ one step),
//! so a small message that inflates hugely is never held whole here (tungstenite's own
//! `max_message_size` and the gateway's budget of unfinished messages count what it holds).
//! Output: tungstenite's bytes are taken [`TX_CHUNK`] at a time and reported written only once
//! their compressed output is on the socket, so tungstenite's write buffer and
//! `max_queued_bytes` keep doing the backpressure; the layer holds at most one chunk's output
//! and the message being compressed (kept plain until its end without server context
//! takeover). The zlib states are made on first use: a connection that never
//! sends (or never receives) a message does not pay for them, and with
//! `server_no_context_takeover` messages are compressed by one compressor per gateway thread
//! (each message whole, after a reset), so a connection holds at most an inflater.

use std::fmt;
use std::io::{self, Read, Write};

use flate2::{Compress, Decompress};

use crate::proto::ws::deflate::{self, InflateError, Negotiated, TRAILER};
use crate::proto::ws::frame::{
    apply_mask, encode_header, Decoded, FrameDecoder, FrameHeader, OpCode, Violation,
};

/// Bytes read from the socket at a time.
const RAW_CHUNK: usize = 4096;

/// Inflated bytes staged for tungstenite before inflating stops until it has read them.
const STAGED: usize = 4096;

/// Bytes of tungstenite's output taken per write.
const TX_CHUNK: usize = 64 * 1024;

/// Buffers above this capacity are freed once empty (one large message does not pin memory).
const KEEP_CAPACITY: usize = 64 * 1024;

/// The masking key of the frames handed to tungstenite (XOR with zero: the bytes as they are).
const ZERO_MASK: Option<[u8; 4]> = Some([0; 4]);

/// Why a compressed session failed, carried to the connection in an `io::Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeflateError {
    /// The client broke the framing rules.
    Violation(Violation),
    /// A compressed message that does not inflate.
    Corrupt,
    /// A compressed message inflating beyond `max_message_size`.
    TooBig,
}

impl fmt::Display for DeflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Violation(v) => write!(f, "client protocol violation: {v}"),
            Self::Corrupt => f.write_str("compressed message does not inflate"),
            Self::TooBig => f.write_str("compressed message inflates beyond max_message_size"),
        }
    }
}

impl std::error::Error for DeflateError {}

impl From<DeflateError> for io::Error {
    fn from(e: DeflateError) -> Self {
        Self::new(io::ErrorKind::InvalidData, e)
    }
}

/// The compression failure an I/O error carries, if it is one.
pub(super) fn failure(e: &io::Error) -> Option<DeflateError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<DeflateError>())
        .copied()
}

/// A frame of the client's being read.
#[derive(Debug, Clone, Copy)]
struct RxFrame {
    /// Part of a compressed message (else passed through).
    compressed: bool,
    /// Ends its message.
    fin: bool,
    /// Its masking key.
    mask: [u8; 4],
    /// Payload bytes seen so far (the mask's phase).
    seen: usize,
}

/// A compressed message of the client's being inflated.
#[derive(Debug, Clone, Copy)]
struct RxMsg {
    /// Text or binary.
    opcode: OpCode,
    /// A fragment was handed on already (the next is a continuation).
    started: bool,
    /// Bytes the message may still inflate by.
    left: u64,
    /// The last frame ended: the trailer bytes not yet fed (then the final fragment).
    trailer: Option<usize>,
    /// The sender ended the deflate stream (a final block): nothing more to inflate.
    ended: bool,
}

/// One connection's permessage-deflate state.
pub(super) struct Deflate {
    /// What the upgrade agreed.
    agreed: Negotiated,
    /// Largest inflated message, bytes.
    max_message: u64,
    /// The client's frames.
    rx_dec: FrameDecoder,
    /// Raw bytes read from the socket and how far they are decoded.
    rx_in: Vec<u8>,
    rx_pos: usize,
    /// Unmasked compressed bytes of `rx_in` not yet inflated.
    pending: (usize, usize),
    /// Bytes staged for tungstenite and how many it has read.
    rx_out: Vec<u8>,
    rx_read: usize,
    rx_frame: Option<RxFrame>,
    rx_msg: Option<RxMsg>,
    inflater: Option<Box<Decompress>>,
    /// tungstenite's frames.
    tx_dec: FrameDecoder,
    /// The frame being taken: (control, fin).
    tx_frame: Option<(bool, bool)>,
    /// The data message being compressed (its opcode) and its compressed bytes so far.
    tx_op: Option<OpCode>,
    tx_msg: Vec<u8>,
    /// Frames ready for the socket and how much of them is written.
    tx_out: Vec<u8>,
    tx_written: usize,
    /// Bytes of tungstenite's buffer already transcoded whose output is not all on the socket
    /// yet: reported written only once it is (see [`Self::write`]).
    ahead: usize,
    compressor: Option<Box<Compress>>,
}

impl Deflate {
    /// A session as agreed, with `early` bytes the client sent right after its request (read
    /// with it) as the first input.
    pub(super) fn new(agreed: Negotiated, max_message: usize, early: Vec<u8>) -> Self {
        let mut rx_dec = FrameDecoder::server();
        rx_dec.allow_rsv1();
        Self {
            agreed,
            max_message: max_message as u64,
            rx_dec,
            rx_in: early,
            rx_pos: 0,
            pending: (0, 0),
            rx_out: Vec::new(),
            rx_read: 0,
            rx_frame: None,
            rx_msg: None,
            inflater: None,
            tx_dec: FrameDecoder::new(),
            tx_frame: None,
            tx_op: None,
            tx_msg: Vec::new(),
            tx_out: Vec::new(),
            tx_written: 0,
            ahead: 0,
            compressor: None,
        }
    }

    /// Bytes staged for tungstenite (at most one inflate step past [`STAGED`]).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn staged(&self) -> usize {
        self.rx_out.len()
    }

    /// Reads for tungstenite: staged plain frames first, else more of the socket transcoded.
    pub(super) fn read(&mut self, raw: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.rx_read < self.rx_out.len() {
                let n = (&self.rx_out[self.rx_read..]).read(buf)?;
                self.rx_read += n;
                if self.rx_read == self.rx_out.len() {
                    self.rx_out.clear();
                    self.rx_read = 0;
                    shrink(&mut self.rx_out);
                }
                return Ok(n);
            }
            self.fill()?;
            if !self.rx_out.is_empty() {
                continue;
            }
            // Everything read is transcoded and nothing came of it yet: read more.
            self.rx_in.clear();
            self.rx_pos = 0;
            self.rx_in.resize(RAW_CHUNK, 0);
            match raw.read(&mut self.rx_in) {
                Ok(n) => self.rx_in.truncate(n),
                Err(e) => {
                    self.rx_in.clear();
                    return Err(e);
                }
            }
            if self.rx_in.is_empty() {
                return Ok(0);
            }
        }
    }

    /// Transcodes input until [`STAGED`] bytes are staged or the input is used up.
    fn fill(&mut self) -> Result<(), DeflateError> {
        let mut buf = [0u8; 4096];
        while self.rx_out.len() < STAGED {
            if self.pending.0 < self.pending.1 {
                let (a, b) = self.pending;
                let d = self
                    .inflater
                    .get_or_insert_with(|| Box::new(deflate::inflater()));
                let (used, made, ended) =
                    deflate::inflate_step(d, &self.rx_in[a..b], &mut buf).map_err(inflate_err)?;
                self.pending.0 += used;
                self.emit(&buf[..made])?;
                if ended {
                    // A final block: whatever follows in the message is not deflate data.
                    self.pending.0 = self.pending.1;
                    if let Some(m) = &mut self.rx_msg {
                        m.ended = true;
                    }
                }
                continue;
            }
            if let Some(m) = self.rx_msg.filter(|m| m.trailer.is_some()) {
                let fed = m.trailer.unwrap_or(0);
                if m.ended {
                    self.finish_message();
                    continue;
                }
                let d = self
                    .inflater
                    .get_or_insert_with(|| Box::new(deflate::inflater()));
                let (used, made, ended) =
                    deflate::inflate_step(d, &TRAILER[fed..], &mut buf).map_err(inflate_err)?;
                self.emit(&buf[..made])?;
                if let Some(m) = &mut self.rx_msg {
                    m.trailer = Some(fed + used);
                    m.ended |= ended;
                }
                if fed + used == TRAILER.len() && made < buf.len() {
                    self.finish_message();
                }
                continue;
            }
            // Called even with no input left: a frame whose payload ended with the input ends
            // now (`End`), not with the client's next bytes.
            let mut input = &self.rx_in[self.rx_pos..];
            let before = input.len();
            let event = match self.rx_dec.decode(&mut input) {
                Ok(Some(Decoded::Header(h))) => Some(Ok(h)),
                Ok(Some(Decoded::Payload(p))) => Some(Err(Some(p.len()))),
                Ok(Some(Decoded::End)) => Some(Err(None)),
                Ok(None) => None,
                Err(v) => return Err(DeflateError::Violation(v)),
            };
            let start = self.rx_pos;
            self.rx_pos += before - input.len();
            let mask = self.rx_dec.mask();
            match event {
                None => break,
                Some(Ok(h)) => self.on_header(h, mask)?,
                // A payload chunk is the start of what was left of the input.
                Some(Err(Some(len))) => self.on_payload(start, len),
                Some(Err(None)) => self.on_end(),
            }
        }
        Ok(())
    }

    fn on_header(&mut self, h: FrameHeader, mask: [u8; 4]) -> Result<(), DeflateError> {
        let compressed = if h.opcode.is_control() {
            false
        } else if h.opcode == OpCode::Continuation {
            self.rx_msg.is_some()
        } else if self.rx_msg.is_some() {
            return Err(DeflateError::Violation(Violation::ExpectedContinuation));
        } else {
            h.rsv1
        };
        if compressed && h.opcode != OpCode::Continuation {
            self.rx_msg = Some(RxMsg {
                opcode: h.opcode,
                started: false,
                left: self.max_message,
                trailer: None,
                ended: false,
            });
        }
        if !compressed {
            encode_header(&mut self.rx_out, h.opcode, h.fin, false, h.len, Some(mask));
        }
        self.rx_frame = Some(RxFrame {
            compressed,
            fin: h.fin,
            mask,
            seen: 0,
        });
        Ok(())
    }

    fn on_payload(&mut self, start: usize, len: usize) {
        let Some(f) = &mut self.rx_frame else { return };
        let chunk = &mut self.rx_in[start..start + len];
        if f.compressed {
            apply_mask(chunk, f.mask, f.seen);
            self.pending = (start, start + len);
        } else {
            // Still masked: tungstenite unmasks it.
            self.rx_out.extend_from_slice(chunk);
        }
        f.seen += len;
    }

    fn on_end(&mut self) {
        if let Some(f) = self.rx_frame.take() {
            if let (true, true, Some(m)) = (f.compressed, f.fin, &mut self.rx_msg) {
                m.trailer = Some(0);
            }
        }
    }

    /// Hands inflated bytes on as a fragment of the message.
    fn emit(&mut self, bytes: &[u8]) -> Result<(), DeflateError> {
        let Some(m) = &mut self.rx_msg else {
            return Ok(());
        };
        if bytes.is_empty() {
            return Ok(());
        }
        if bytes.len() as u64 > m.left {
            return Err(DeflateError::TooBig);
        }
        m.left -= bytes.len() as u64;
        let op = if m.started {
            OpCode::Continuation
        } else {
            m.opcode
        };
        m.started = true;
        encode_header(
            &mut self.rx_out,
            op,
            false,
            false,
            bytes.len() as u64,
            ZERO_MASK,
        );
        self.rx_out.extend_from_slice(bytes);
        Ok(())
    }

    /// Ends the message with an empty final fragment; the inflater is dropped if the client
    /// does not keep its context, and starts afresh if it ended its stream.
    fn finish_message(&mut self) {
        let Some(m) = self.rx_msg.take() else { return };
        let op = if m.started {
            OpCode::Continuation
        } else {
            m.opcode
        };
        encode_header(&mut self.rx_out, op, true, false, 0, ZERO_MASK);
        if self.agreed.client_no_context_takeover {
            // Nothing carries over to the next message: an idle connection holds no inflater.
            self.inflater = None;
        } else if m.ended {
            if let Some(d) = &mut self.inflater {
                d.reset(false);
            }
        }
    }

    /// Takes tungstenite's output, at most [`TX_CHUNK`] bytes at a time. Bytes are reported
    /// written only once their compressed output is on the socket: when it is not, they stay
    /// in tungstenite's buffer (`WouldBlock`, which keeps that buffer, and its limit, the one
    /// that fills) and are acknowledged, not transcoded again, by the next write, which starts
    /// with them. So tungstenite never believes its close reply sent while part of it (or of
    /// what came before it) is still here, and drops the connection only when it is out.
    pub(super) fn write(&mut self, raw: &mut impl Write, buf: &[u8]) -> io::Result<usize> {
        if self.ahead > 0 {
            self.drain(raw)?;
            let done = std::mem::take(&mut self.ahead);
            return Ok(done.min(buf.len()));
        }
        let take = &buf[..buf.len().min(TX_CHUNK)];
        self.compress(take)?;
        match self.drain(raw) {
            Ok(()) => Ok(take.len()),
            Err(e) => {
                self.ahead = take.len();
                Err(e)
            }
        }
    }

    /// Writes what is ready, then flushes the transport.
    pub(super) fn flush(&mut self, raw: &mut impl Write) -> io::Result<()> {
        self.drain(raw)?;
        raw.flush()
    }

    /// Writes the ready frames; `WouldBlock` if some are left.
    fn drain(&mut self, raw: &mut impl Write) -> io::Result<()> {
        while self.tx_written < self.tx_out.len() {
            match raw.write(&self.tx_out[self.tx_written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.tx_written += n,
                Err(e) => return Err(e),
            }
        }
        self.tx_out.clear();
        self.tx_written = 0;
        shrink(&mut self.tx_out);
        Ok(())
    }

    /// Transcodes tungstenite's frames in `bytes` onto the ready output.
    fn compress(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while let Some(event) = self
            .tx_dec
            .decode(&mut bytes)
            .map_err(DeflateError::Violation)?
        {
            match event {
                Decoded::Header(h) if h.opcode.is_control() => {
                    encode_header(&mut self.tx_out, h.opcode, true, false, h.len, None);
                    self.tx_frame = Some((true, true));
                }
                Decoded::Header(h) => {
                    if h.opcode != OpCode::Continuation {
                        self.tx_op = Some(h.opcode);
                        self.tx_msg.clear();
                        if self.agreed.server_no_context_takeover {
                            if let Some(c) = &mut self.compressor {
                                c.reset();
                            }
                        }
                    }
                    self.tx_frame = Some((false, h.fin));
                }
                Decoded::Payload(p) => match self.tx_frame {
                    Some((true, _)) => self.tx_out.extend_from_slice(p),
                    // Without context takeover the message is kept plain until its end and
                    // compressed at once by the thread's shared compressor.
                    _ if self.agreed.server_no_context_takeover => {
                        self.tx_msg.extend_from_slice(p);
                    }
                    _ => {
                        let bits = self.agreed.server_max_window_bits;
                        let c = self
                            .compressor
                            .get_or_insert_with(|| Box::new(deflate::compressor_bits(bits)));
                        deflate::deflate_part(c, p, false, &mut self.tx_msg);
                    }
                },
                Decoded::End => {
                    if let (Some((false, true)), Some(op)) = (self.tx_frame, self.tx_op) {
                        self.end_message(op);
                    }
                    self.tx_frame = None;
                }
            }
        }
        Ok(())
    }

    /// Ends the compressed message: one frame with RSV1 set.
    fn end_message(&mut self, op: OpCode) {
        let bits = self.agreed.server_max_window_bits;
        if self.agreed.server_no_context_takeover {
            SHARED.with_borrow_mut(|shared| {
                let (comps, out) = shared;
                let c = comps[usize::from(bits.clamp(8, 15) - 8)]
                    .get_or_insert_with(|| deflate::compressor_bits(bits));
                out.clear();
                deflate::deflate_message(c, &self.tx_msg, true, out);
                encode_header(&mut self.tx_out, op, true, true, out.len() as u64, None);
                self.tx_out.extend_from_slice(out);
                shrink_kept(out);
            });
        } else {
            let c = self
                .compressor
                .get_or_insert_with(|| Box::new(deflate::compressor_bits(bits)));
            deflate::end_message(c, &mut self.tx_msg, 0);
            let len = self.tx_msg.len() as u64;
            encode_header(&mut self.tx_out, op, true, true, len, None);
            self.tx_out.extend_from_slice(&self.tx_msg);
        }
        self.tx_msg.clear();
        shrink(&mut self.tx_msg);
        self.tx_op = None;
    }
}

fn inflate_err(e: InflateError) -> DeflateError {
    match e {
        InflateError::Corrupt => DeflateError::Corrupt,
        InflateError::TooBig => DeflateError::TooBig,
    }
}

thread_local! {
    /// Each gateway thread's compressors for messages without context takeover (one per
    /// window size, reset per message) and their output buffer: a connection that agreed
    /// `server_no_context_takeover` keeps no compressor of its own (about 300 KiB of zlib
    /// state), the low-memory choice. A message is compressed whole in one call, so
    /// connections never interleave inside it.
    static SHARED: std::cell::RefCell<([Option<Compress>; 8], Vec<u8>)> =
        std::cell::RefCell::new((Default::default(), Vec::new()));
}

/// Empties a buffer, freeing it if it grew beyond [`KEEP_CAPACITY`].
fn shrink_kept(v: &mut Vec<u8>) {
    v.clear();
    shrink(v);
}

/// Frees an emptied buffer that grew beyond [`KEEP_CAPACITY`].
fn shrink(v: &mut Vec<u8>) {
    if v.is_empty() && v.capacity() > KEEP_CAPACITY {
        *v = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ws::deflate::Offer;
    use crate::proto::ws::frame::encode_frame_rsv1;

    /// Reads `chunk` bytes at a time from `data`, then `WouldBlock`.
    struct Chunks<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Chunks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.chunk.min(self.data.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn agreed(offer: &str) -> Negotiated {
        deflate::answer(&Offer::default(), [offer.as_bytes()])
            .unwrap()
            .0
    }

    /// What a client sends: `msgs` as (opcode, payload, compressed), each compressed one split
    /// into two frames when `fragment`; a ping between messages.
    fn client_bytes(msgs: &[(OpCode, Vec<u8>, bool)], fragment: bool, n: &Negotiated) -> Vec<u8> {
        let mut c = deflate::compressor(n);
        let mut out = Vec::new();
        for (i, (op, payload, compressed)) in msgs.iter().enumerate() {
            let mask = [i as u8, 0x5a, 0xa5, 0x3c];
            if !compressed {
                encode_frame_rsv1(&mut out, *op, true, false, payload, mask);
            } else {
                let mut z = Vec::new();
                deflate::deflate_message(&mut c, payload, n.client_no_context_takeover, &mut z);
                if fragment && z.len() > 1 {
                    let (a, b) = z.split_at(z.len() / 2);
                    encode_frame_rsv1(&mut out, *op, false, true, a, mask);
                    encode_frame_rsv1(&mut out, OpCode::Ping, true, false, b"mid", mask);
                    encode_frame_rsv1(&mut out, OpCode::Continuation, true, false, b, mask);
                } else {
                    encode_frame_rsv1(&mut out, *op, true, true, &z, mask);
                }
            }
            encode_frame_rsv1(&mut out, OpCode::Ping, true, false, b"p", mask);
        }
        out
    }

    /// Decodes what tungstenite would be handed: whole messages (opcode, payload) and pings.
    fn plain_messages(bytes: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
        let mut dec = FrameDecoder::server();
        let mut input = bytes;
        let mut out = Vec::new();
        let mut msg: Option<(OpCode, Vec<u8>)> = None;
        // The current frame: its opcode, FIN, mask, payload so far.
        let mut frame = (OpCode::Ping, false, [0; 4], Vec::new());
        while let Some(e) = dec.decode(&mut input).unwrap() {
            match e {
                Decoded::Header(h) => {
                    assert!(!h.rsv1);
                    frame = (h.opcode, h.fin, dec.mask(), Vec::new());
                    if !h.opcode.is_control() && h.opcode != OpCode::Continuation {
                        assert!(msg.is_none(), "a new message inside one");
                        msg = Some((h.opcode, Vec::new()));
                    }
                }
                Decoded::Payload(p) => {
                    let mut p = p.to_vec();
                    apply_mask(&mut p, frame.2, frame.3.len());
                    frame.3.extend_from_slice(&p);
                }
                Decoded::End if frame.0.is_control() => {
                    out.push((frame.0, std::mem::take(&mut frame.3)));
                }
                Decoded::End => {
                    let m = msg.as_mut().expect("a continuation without a message");
                    m.1.extend_from_slice(&frame.3);
                    if frame.1 {
                        out.push(msg.take().unwrap());
                    }
                }
            }
        }
        assert!(input.is_empty());
        out
    }

    /// Everything the layer hands on, reading `chunk` raw bytes and `take` bytes at a time;
    /// the staged output never exceeds one step past [`STAGED`].
    fn read_all(z: &mut Deflate, raw: &[u8], chunk: usize, take: usize) -> Vec<u8> {
        let mut r = Chunks { data: raw, chunk };
        let mut out = Vec::new();
        let mut buf = vec![0u8; take];
        loop {
            match z.read(&mut r, &mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e} (reading {chunk} bytes, taking {take})"),
            }
            assert!(z.rx_out.len() <= STAGED + 4096 + 14, "{}", z.rx_out.len());
        }
        out
    }

    #[test]
    fn compressed_messages_are_handed_on_plain_whatever_the_reads() {
        let text = br#"{"type":"echo","payload":"sockstorm sockstorm sockstorm sockstorm"}"#;
        let big: Vec<u8> = (0..20_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let msgs = vec![
            (OpCode::Text, text.to_vec(), true),
            (OpCode::Text, b"plain, not compressed".to_vec(), false),
            (OpCode::Binary, big.clone(), true),
            (OpCode::Text, Vec::new(), true),
            (OpCode::Text, text.to_vec(), true),
        ];
        for offer in [
            "permessage-deflate",
            "permessage-deflate; client_no_context_takeover",
        ] {
            let n = agreed(offer);
            for fragment in [false, true] {
                let raw = client_bytes(&msgs, fragment, &n);
                let mut want = Vec::new();
                for (op, p, compressed) in &msgs {
                    want.push((*op, p.clone()));
                    if *compressed && fragment && p.len() > 1 {
                        // The ping sent between the fragments comes out where it was.
                        let last = want.pop().unwrap();
                        want.push((OpCode::Ping, b"mid".to_vec()));
                        want.push(last);
                    }
                    want.push((OpCode::Ping, b"p".to_vec()));
                }
                for chunk in [1, 2, 3, 7, 64, 4096] {
                    for take in [1, 5, 4096] {
                        let mut z = Deflate::new(n, 1 << 20, Vec::new());
                        let got = plain_messages(&read_all(&mut z, &raw, chunk, take));
                        assert_eq!(got.len(), want.len(), "{offer} {fragment} {chunk} {take}");
                        assert!(got == want, "{offer} fragment {fragment} chunk {chunk}");
                    }
                }
                // Bytes read with the request (before the 101) are the first input.
                let mut z = Deflate::new(n, 1 << 20, raw[..10].to_vec());
                let got = plain_messages(&read_all(&mut z, &raw[10..], 4096, 4096));
                assert!(got == want);
            }
        }
    }

    #[test]
    fn a_bomb_stops_at_the_bound_and_never_stages_more_than_a_step() {
        let n = agreed("permessage-deflate");
        let zeros = vec![0u8; 8 << 20];
        let raw = client_bytes(&[(OpCode::Binary, zeros, true)], false, &n);
        assert!(raw.len() < (8 << 20) / 50, "{}", raw.len());
        let mut z = Deflate::new(n, 1 << 20, Vec::new());
        let mut r = Chunks {
            data: &raw,
            chunk: 4096,
        };
        let mut buf = [0u8; 4096];
        let mut handed = 0;
        let err = loop {
            match z.read(&mut r, &mut buf) {
                Ok(n) => handed += n,
                Err(e) => break e,
            }
            assert!(z.rx_out.len() <= STAGED + 4096 + 14);
        };
        assert_eq!(failure(&err), Some(DeflateError::TooBig));
        assert!(handed <= (1 << 20) + 4096, "{handed}");
        // Data that does not inflate is a failure of its own.
        let mut bad = Vec::new();
        encode_frame_rsv1(
            &mut bad,
            OpCode::Text,
            true,
            true,
            &[0xff; 16],
            [1, 2, 3, 4],
        );
        let mut z = Deflate::new(n, 1 << 20, Vec::new());
        let mut r = Chunks {
            data: &bad,
            chunk: 4096,
        };
        let err = z.read(&mut r, &mut buf).unwrap_err();
        assert_eq!(failure(&err), Some(DeflateError::Corrupt));
        // An unmasked client frame breaks the rules.
        let mut z = Deflate::new(n, 1 << 20, Vec::new());
        let mut r = Chunks {
            data: &[0x81, 0x01, b'a'],
            chunk: 4096,
        };
        let err = z.read(&mut r, &mut buf).unwrap_err();
        assert_eq!(
            failure(&err),
            Some(DeflateError::Violation(Violation::UnmaskedFrame))
        );
    }

    /// Takes at most `room` bytes, then `WouldBlock`.
    struct Sink {
        out: Vec<u8>,
        room: usize,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A server frame as tungstenite writes it (unmasked).
    fn server_frame(out: &mut Vec<u8>, op: OpCode, fin: bool, payload: &[u8]) {
        encode_header(out, op, fin, false, payload.len() as u64, None);
        out.extend_from_slice(payload);
    }

    #[test]
    fn sent_messages_are_compressed_one_frame_each_and_control_frames_pass() {
        let text = br#"{"type":"event","seq":1,"payload":"sockstorm sockstorm sockstorm"}"#;
        for (offer, reset) in [
            ("permessage-deflate", false),
            ("permessage-deflate; server_no_context_takeover", true),
        ] {
            let n = agreed(offer);
            let mut plain = Vec::new();
            server_frame(&mut plain, OpCode::Text, true, text);
            server_frame(&mut plain, OpCode::Ping, true, b"k");
            server_frame(&mut plain, OpCode::Text, false, &text[..10]);
            server_frame(&mut plain, OpCode::Continuation, true, &text[10..]);
            server_frame(&mut plain, OpCode::Binary, true, b"");
            server_frame(&mut plain, OpCode::Close, true, &1000u16.to_be_bytes());
            // Taken a few bytes at a time, as tungstenite may hand them.
            let mut z = Deflate::new(n, 1 << 20, Vec::new());
            let mut sink = Sink {
                out: Vec::new(),
                room: usize::MAX,
            };
            for part in plain.chunks(7) {
                assert_eq!(z.write(&mut sink, part).unwrap(), part.len());
            }
            z.flush(&mut sink).unwrap();
            // The client's side: RSV1 data frames inflate back to the messages.
            let mut dec = FrameDecoder::new();
            dec.allow_rsv1();
            let mut d = deflate::inflater();
            let mut input = &sink.out[..];
            let mut got = Vec::new();
            let mut cur = (OpCode::Text, false, Vec::new());
            while let Some(e) = dec.decode(&mut input).unwrap() {
                match e {
                    Decoded::Header(h) => cur = (h.opcode, h.rsv1, Vec::new()),
                    Decoded::Payload(p) => cur.2.extend_from_slice(p),
                    Decoded::End if cur.1 => {
                        let mut m = Vec::new();
                        let mut left = 1 << 20;
                        deflate::inflate_part(&mut d, &cur.2, true, &mut left, &mut |p| {
                            m.extend_from_slice(p);
                            Ok::<(), ()>(())
                        })
                        .unwrap();
                        if reset {
                            d.reset(false);
                        }
                        got.push((cur.0, m));
                    }
                    Decoded::End => got.push((cur.0, cur.2.clone())),
                }
            }
            assert_eq!(
                got,
                vec![
                    (OpCode::Text, text.to_vec()),
                    (OpCode::Ping, b"k".to_vec()),
                    (OpCode::Text, text.to_vec()),
                    (OpCode::Binary, Vec::new()),
                    (OpCode::Close, 1000u16.to_be_bytes().to_vec()),
                ],
                "{offer}"
            );
        }
    }

    #[test]
    fn a_full_socket_holds_the_output_back() {
        // tungstenite's `write_out_buffer`: write until its buffer is empty or a write fails.
        fn write_out(z: &mut Deflate, sink: &mut Sink, buffer: &mut Vec<u8>) -> io::Result<()> {
            while !buffer.is_empty() {
                let n = z.write(sink, buffer)?;
                buffer.drain(..n);
            }
            Ok(())
        }
        let n = agreed("permessage-deflate");
        let mut z = Deflate::new(n, 1 << 20, Vec::new());
        let mut sink = Sink {
            out: Vec::new(),
            room: 3,
        };
        // A delivery, then the reply to the client's close (after which tungstenite drops
        // the connection as soon as its buffer is written out).
        let mut buffer = Vec::new();
        server_frame(&mut buffer, OpCode::Text, true, &[b'x'; 1000]);
        server_frame(&mut buffer, OpCode::Close, true, &1000u16.to_be_bytes());
        let whole = buffer.len();
        // The socket takes 3 bytes: nothing is reported written, tungstenite keeps it all.
        let e = write_out(&mut z, &mut sink, &mut buffer).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(buffer.len(), whole);
        assert_eq!(
            z.flush(&mut sink).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let e = write_out(&mut z, &mut sink, &mut buffer).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // Room again: the rest goes out once, not transcoded twice, and the buffer empties.
        sink.room = usize::MAX;
        write_out(&mut z, &mut sink, &mut buffer).unwrap();
        z.flush(&mut sink).unwrap();
        assert!(z.tx_out.is_empty());
        let mut dec = FrameDecoder::new();
        dec.allow_rsv1();
        let mut input = &sink.out[..];
        let mut frames = Vec::new();
        let mut body = Vec::new();
        while let Some(e) = dec.decode(&mut input).unwrap() {
            match e {
                Decoded::Header(h) => frames.push((h.opcode, h.rsv1)),
                Decoded::Payload(p) if frames.len() == 1 => body.extend_from_slice(p),
                _ => {}
            }
        }
        assert_eq!(frames, vec![(OpCode::Text, true), (OpCode::Close, false)]);
        let mut got = Vec::new();
        deflate::inflate_part(&mut deflate::inflater(), &body, true, &mut 4096, &mut |p| {
            got.extend_from_slice(p);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(got, vec![b'x'; 1000]);
    }
}
