//! RFC 6455 framing for the client side: an allocation-free encoder that masks into a
//! caller-owned buffer, and a streaming decoder that yields headers and payload slices as they
//! arrive, however the bytes are split across reads.

use std::fmt;

/// WebSocket opcode (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: the next fragment of a message begun by a Text or Binary frame without FIN.
    Continuation,
    /// 0x1: a message of UTF-8 text (validated on receipt unless `--no-utf8-check`).
    Text,
    /// 0x2: a message of arbitrary bytes (what `--binary` sends).
    Binary,
    /// 0x8: starts or answers the close handshake; the payload is empty or a 2-byte code and a
    /// UTF-8 reason.
    Close,
    /// 0x9: asks for a Pong with the same payload (what `--ping-interval` sends).
    Ping,
    /// 0xA: answers a Ping, echoing its payload.
    Pong,
}

impl OpCode {
    /// The 4-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    fn from_bits(b: u8) -> Option<Self> {
        Some(match b {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A protocol violation by the peer; each kind feeds its own failure counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Violation {
    /// The server masked a frame (servers must not, §5.1).
    MaskedFrame,
    /// A client sent a frame without a mask (clients must mask, §5.1; the gateway's side).
    UnmaskedFrame,
    /// RSV1-3 set although no extension was negotiated.
    ReservedBits,
    /// Opcode 3-7 or B-F.
    UnknownOpcode,
    /// Control frame payload longer than 125 bytes.
    ControlTooLong,
    /// Control frame with FIN clear.
    ControlFragmented,
    /// 64-bit payload length with the most significant bit set.
    BadLength,
    /// Continuation frame without a message in progress.
    UnexpectedContinuation,
    /// New text/binary frame while a fragmented message is still in progress.
    ExpectedContinuation,
    /// Close frame with a 1-byte payload.
    BadCloseFrame,
    /// Close code that may not be sent on the wire (§7.4).
    InvalidCloseCode,
    /// Text message or close reason that is not valid UTF-8.
    InvalidUtf8,
    /// Data after the server's close frame.
    DataAfterClose,
    /// A compressed message (permessage-deflate) that does not inflate.
    BadDeflate,
    /// A compressed message inflating beyond `--max-message-size`.
    MessageTooBig,
}

impl Violation {
    /// Short snake_case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::MaskedFrame => "masked_server_frame",
            Self::UnmaskedFrame => "unmasked_client_frame",
            Self::ReservedBits => "reserved_bits",
            Self::UnknownOpcode => "unknown_opcode",
            Self::ControlTooLong => "control_frame_too_long",
            Self::ControlFragmented => "control_frame_fragmented",
            Self::BadLength => "bad_length",
            Self::UnexpectedContinuation => "unexpected_continuation",
            Self::ExpectedContinuation => "expected_continuation",
            Self::BadCloseFrame => "bad_close_frame",
            Self::InvalidCloseCode => "invalid_close_code",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::DataAfterClose => "data_after_close",
            Self::BadDeflate => "bad_deflate_data",
            Self::MessageTooBig => "message_too_big",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this frame ends its message (always set on control frames).
    pub fin: bool,
    /// What the frame carries; `Continuation` for a fragmented message's later frames.
    pub opcode: OpCode,
    /// Payload length in bytes.
    pub len: u64,
    /// RSV1: the message is compressed (permessage-deflate; first frame only).
    pub rsv1: bool,
}

/// Encodes one client frame (always masked) and appends it to `out`.
///
/// `out` is the caller's buffer: when it already has the capacity, nothing is allocated.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, fin: bool, payload: &[u8], mask: [u8; 4]) {
    encode_frame_rsv1(out, opcode, fin, false, payload, mask);
}

/// [`encode_frame`] with RSV1 set when `rsv1` (a permessage-deflate message's first frame).
pub fn encode_frame_rsv1(
    out: &mut Vec<u8>,
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    payload: &[u8],
    mask: [u8; 4],
) {
    encode_header(out, opcode, fin, rsv1, payload.len() as u64, Some(mask));
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// Appends a frame header: FIN, RSV1, the opcode, the length in its shortest form and, for a
/// client's frame, the masking key (`None`: a server's unmasked frame). The payload follows.
pub fn encode_header(
    out: &mut Vec<u8>,
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    len: u64,
    mask: Option<[u8; 4]>,
) {
    let b0 = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode.bits();
    let m = if mask.is_some() { 0x80 } else { 0 };
    out.push(b0);
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

/// Encodes a close frame with `code` and an optional reason.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &[u8], mask: [u8; 4]) {
    let mut body = [0u8; 125];
    let reason = &reason[..reason.len().min(123)];
    body[..2].copy_from_slice(&code.to_be_bytes());
    body[2..2 + reason.len()].copy_from_slice(reason);
    encode_frame(out, OpCode::Close, true, &body[..2 + reason.len()], mask);
}

/// XORs `buf` with the mask, starting at mask position `offset % 4`.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = [0u8; 8];
    for (i, b) in m.iter_mut().enumerate() {
        *b = mask[(offset + i) % 4];
    }
    let word = u64::from_ne_bytes(m);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i];
    }
}

/// Whether a close code received from a peer is allowed on the wire (RFC 6455 §7.4, IANA
/// registry: 1012-1014 are registered and sent by real servers).
pub fn close_code_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// One step of decoded input.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete header; its payload follows as `Payload` chunks and then `End`.
    Header(FrameHeader),
    /// A chunk of the current frame's payload (server frames are unmasked).
    Payload(&'a [u8]),
    /// The current frame's payload is complete.
    End,
}

/// Streaming frame decoder: keeps at most a partial 14-byte header between reads.
#[derive(Debug, Default, Clone)]
pub struct FrameDecoder {
    hdr: [u8; 14],
    hdr_len: u8,
    /// Payload bytes still expected for the current frame; `None` while reading a header.
    remaining: Option<u64>,
    /// RSV1 may be set on a data message's first frame (permessage-deflate negotiated).
    rsv1_ok: bool,
    /// The server's side: frames come masked ([`Self::server`]).
    masked: bool,
    /// The current frame's masking key (all zero for unmasked frames).
    mask: [u8; 4],
}

impl FrameDecoder {
    /// A decoder waiting for the first header.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder of a client's frames, on the server's side: every frame must be masked, and
    /// [`Self::mask`] gives its key (payload chunks come out still masked).
    pub fn server() -> Self {
        Self {
            masked: true,
            ..Self::default()
        }
    }

    /// The masking key of the frame whose header was decoded last (zero if unmasked).
    pub fn mask(&self) -> [u8; 4] {
        self.mask
    }

    /// From now on RSV1 marks compressed messages (permessage-deflate was negotiated).
    pub fn allow_rsv1(&mut self) {
        self.rsv1_ok = true;
    }

    /// Consumes bytes from `input` and returns the next event, or `Ok(None)` when `input` is
    /// exhausted. Call repeatedly until it returns `None`.
    pub fn decode<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Decoded<'a>>, Violation> {
        if let Some(rem) = self.remaining {
            if rem == 0 {
                self.remaining = None;
                return Ok(Some(Decoded::End));
            }
            if input.is_empty() {
                return Ok(None);
            }
            let n = (rem.min(input.len() as u64)) as usize;
            let (chunk, rest) = input.split_at(n);
            *input = rest;
            self.remaining = Some(rem - n as u64);
            return Ok(Some(Decoded::Payload(chunk)));
        }
        // Fast path: the whole header is in this read (the usual case), parse it in place.
        if self.hdr_len == 0 && input.len() >= 2 {
            let need = header_len(&input[..2]);
            if input.len() >= need {
                let h = parse_header(&input[..need], self.rsv1_ok, self.masked)?;
                self.mask = mask_key(&input[..need]);
                *input = &input[need..];
                self.remaining = Some(h.len);
                return Ok(Some(Decoded::Header(h)));
            }
        }
        // Header split across reads: collect bytes until the needed length is present.
        loop {
            let have = usize::from(self.hdr_len);
            let need = header_len(&self.hdr[..have]);
            if have >= need {
                let h = parse_header(&self.hdr[..need], self.rsv1_ok, self.masked)?;
                self.mask = mask_key(&self.hdr[..need]);
                self.hdr_len = 0;
                self.remaining = Some(h.len);
                return Ok(Some(Decoded::Header(h)));
            }
            let Some((&b, rest)) = input.split_first() else {
                return Ok(None);
            };
            *input = rest;
            self.hdr[have] = b;
            self.hdr_len += 1;
            // Fail fast on the first two bytes so a violation never waits for more input.
            if have == 1 {
                check_first_bytes(self.hdr[0], self.hdr[1], self.rsv1_ok, self.masked)?;
            }
        }
    }
}

/// Bytes needed for the header given what has arrived so far (2 until byte 1 is known).
fn header_len(h: &[u8]) -> usize {
    if h.len() < 2 {
        return 2;
    }
    let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
    match h[1] & 0x7F {
        126 => 4 + mask,
        127 => 10 + mask,
        _ => 2 + mask,
    }
}

/// The masking key at the end of a complete header (zero when the frame is unmasked).
fn mask_key(h: &[u8]) -> [u8; 4] {
    let mut key = [0u8; 4];
    if h[1] & 0x80 != 0 {
        key.copy_from_slice(&h[h.len() - 4..]);
    }
    key
}

fn check_first_bytes(b0: u8, b1: u8, rsv1_ok: bool, masked: bool) -> Result<(), Violation> {
    if b0 & 0x30 != 0 || (b0 & 0x40 != 0 && !rsv1_ok) {
        return Err(Violation::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(Violation::UnknownOpcode)?;
    // RSV1 only with permessage-deflate, and only on a data message's first frame.
    if b0 & 0x40 != 0 && !matches!(opcode, OpCode::Text | OpCode::Binary) {
        return Err(Violation::ReservedBits);
    }
    match (b1 & 0x80 != 0, masked) {
        (true, false) => return Err(Violation::MaskedFrame),
        (false, true) => return Err(Violation::UnmaskedFrame),
        _ => {}
    }
    if opcode.is_control() {
        if b0 & 0x80 == 0 {
            return Err(Violation::ControlFragmented);
        }
        if b1 & 0x7F > 125 {
            return Err(Violation::ControlTooLong);
        }
    }
    Ok(())
}

fn parse_header(h: &[u8], rsv1_ok: bool, masked: bool) -> Result<FrameHeader, Violation> {
    check_first_bytes(h[0], h[1], rsv1_ok, masked)?;
    let opcode = OpCode::from_bits(h[0] & 0x0F).ok_or(Violation::UnknownOpcode)?;
    let len = match h[1] & 0x7F {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[2..10]);
            let l = u64::from_be_bytes(b);
            if l >> 63 != 0 {
                return Err(Violation::BadLength);
            }
            l
        }
        l => u64::from(l),
    };
    Ok(FrameHeader {
        fin: h[0] & 0x80 != 0,
        opcode,
        len,
        rsv1: h[0] & 0x40 != 0,
    })
}

/// Incremental UTF-8 validator for text split across frames and reads (keeps ≤ 3 bytes).
#[derive(Debug, Default, Clone, Copy)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// Feeds a chunk; `Err` on a sequence that can never become valid.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), Violation> {
        if self.pending_len > 0 {
            // Complete the pending sequence byte by byte.
            while !chunk.is_empty() {
                let n = usize::from(self.pending_len);
                self.pending[n] = chunk[0];
                self.pending_len += 1;
                chunk = &chunk[1..];
                match std::str::from_utf8(&self.pending[..=n]) {
                    Ok(_) => {
                        self.pending_len = 0;
                        break;
                    }
                    Err(e) if e.error_len().is_some() => return Err(Violation::InvalidUtf8),
                    Err(_) => {}
                }
            }
            if self.pending_len > 0 {
                return Ok(());
            }
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(Violation::InvalidUtf8),
            Err(e) => {
                let tail = &chunk[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends a message: `Err` if a sequence is incomplete.
    pub fn finish(&mut self) -> Result<(), Violation> {
        let incomplete = self.pending_len != 0;
        self.pending_len = 0;
        if incomplete {
            Err(Violation::InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Server-side (unmasked) frame, built independently of our encoder.
    fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![b0];
        let l = payload.len();
        if l < 126 {
            v.push(l as u8);
        } else if l <= 65535 {
            v.push(126);
            v.extend_from_slice(&(l as u16).to_be_bytes());
        } else {
            v.push(127);
            v.extend_from_slice(&(l as u64).to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    /// Decodes everything, feeding `step` bytes at a time; returns (headers, payload per frame).
    fn decode_all(bytes: &[u8], step: usize) -> Result<Vec<(FrameHeader, Vec<u8>)>, Violation> {
        let mut d = FrameDecoder::new();
        let mut out: Vec<(FrameHeader, Vec<u8>)> = Vec::new();
        for chunk in bytes.chunks(step.max(1)) {
            let mut input = chunk;
            while let Some(ev) = d.decode(&mut input)? {
                match ev {
                    Decoded::Header(h) => out.push((h, Vec::new())),
                    Decoded::Payload(p) => {
                        out.last_mut().expect("header first").1.extend_from_slice(p)
                    }
                    Decoded::End => {}
                }
            }
        }
        // A zero-length final frame reports End on the next call.
        let mut empty: &[u8] = &[];
        while let Some(ev) = d.decode(&mut empty)? {
            assert_eq!(ev, Decoded::End);
        }
        Ok(out)
    }

    #[test]
    fn every_length_class_roundtrips_at_every_split() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let wire = server_frame(0x82, &payload);
            let steps: &[usize] = if len > 1000 {
                &[1, 3, 4096, usize::MAX]
            } else {
                &[1, 2, 5, 13, usize::MAX]
            };
            for &step in steps {
                let frames = decode_all(&wire, step.min(wire.len())).unwrap();
                assert_eq!(frames.len(), 1, "len {len} step {step}");
                assert_eq!(
                    frames[0].0,
                    FrameHeader {
                        fin: true,
                        opcode: OpCode::Binary,
                        len: len as u64,
                        rsv1: false,
                    }
                );
                assert_eq!(frames[0].1, payload);
            }
        }
    }

    #[test]
    fn encoder_uses_minimal_length_and_masks() {
        for (len, hdr) in [
            (0usize, 6usize),
            (125, 6),
            (126, 8),
            (65535, 8),
            (65536, 14),
        ] {
            let payload = vec![0xABu8; len];
            let mut out = Vec::new();
            encode_frame(&mut out, OpCode::Text, true, &payload, [1, 2, 3, 4]);
            assert_eq!(out.len(), hdr + len);
            assert_eq!(out[0], 0x81);
            assert_eq!(out[1] & 0x80, 0x80);
            let mut body = out[hdr..].to_vec();
            apply_mask(&mut body, [1, 2, 3, 4], 0);
            assert_eq!(body, payload);
            // tungstenite agrees on the header.
            let mut cur = std::io::Cursor::new(&out[..]);
            let (h, l) = tungstenite::protocol::frame::FrameHeader::parse(&mut cur)
                .unwrap()
                .unwrap();
            assert_eq!(l, len as u64);
            assert_eq!(h.mask, Some([1, 2, 3, 4]));
        }
    }

    #[test]
    fn mask_offset_matches_bytewise() {
        let mut a: Vec<u8> = (0..37).collect();
        let b = a.clone();
        apply_mask(&mut a, [9, 8, 7, 6], 3);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(*x, y ^ [9, 8, 7, 6][(i + 3) % 4]);
        }
    }

    #[test]
    fn fragmented_message_and_interleaved_control() {
        let mut wire = server_frame(0x01, b"hel");
        wire.extend(server_frame(0x89, b"p"));
        wire.extend(server_frame(0x80, b"lo"));
        let frames = decode_all(&wire, 1).unwrap();
        let ops: Vec<_> = frames
            .iter()
            .map(|f| (f.0.opcode, f.0.fin, f.1.clone()))
            .collect();
        assert_eq!(
            ops,
            vec![
                (OpCode::Text, false, b"hel".to_vec()),
                (OpCode::Ping, true, b"p".to_vec()),
                (OpCode::Continuation, true, b"lo".to_vec()),
            ]
        );
    }

    #[test]
    fn each_header_violation() {
        let cases: [(Vec<u8>, Violation); 6] = [
            (vec![0x81, 0x80, 0, 0, 0, 0], Violation::MaskedFrame),
            (vec![0xC1, 0x00], Violation::ReservedBits),
            (vec![0x83, 0x00], Violation::UnknownOpcode),
            (server_frame(0x89, &[0; 126]), Violation::ControlTooLong),
            (vec![0x09, 0x00], Violation::ControlFragmented),
            (
                vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0],
                Violation::BadLength,
            ),
        ];
        for (wire, v) in cases {
            for step in [1, wire.len()] {
                assert_eq!(decode_all(&wire, step).unwrap_err(), v, "{wire:?}");
            }
        }
    }

    #[test]
    fn close_codes() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1008, 1011, 1012, 3000, 4999] {
            assert!(close_code_valid(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!close_code_valid(bad), "{bad}");
        }
        let mut out = Vec::new();
        encode_close(&mut out, 1000, b"bye", [0; 4]);
        assert_eq!(
            out,
            vec![0x88, 0x85, 0, 0, 0, 0, 0x03, 0xE8, b'b', b'y', b'e']
        );
    }

    #[test]
    fn utf8_validator_across_splits() {
        let text = "héllo wörld €𝄞".as_bytes();
        for split in 0..text.len() {
            let mut v = Utf8Validator::default();
            v.feed(&text[..split]).unwrap();
            v.feed(&text[split..]).unwrap();
            v.finish().unwrap();
        }
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[0xC3, 0x28]), Err(Violation::InvalidUtf8));
        let mut v = Utf8Validator::default();
        v.feed(&[0xE2, 0x82]).unwrap();
        assert_eq!(v.finish(), Err(Violation::InvalidUtf8));
        let mut v = Utf8Validator::default();
        v.feed(&[0xE2]).unwrap();
        assert_eq!(v.feed(&[0x28]), Err(Violation::InvalidUtf8));
    }

    /// Differential test: our header decoding vs tungstenite's `FrameHeader::parse` on
    /// generated valid server headers of every length class.
    #[test]
    fn differential_against_tungstenite() {
        let mut rng = crate::proto::rng::Rng::new(42);
        for _ in 0..5000 {
            let op = [0x0u8, 0x1, 0x2, 0x8, 0x9, 0xA][(rng.next_u64() % 6) as usize];
            let control = op >= 0x8;
            let fin = control || rng.next_u64() % 2 == 0;
            let len = match rng.next_u64() % 4 {
                _ if control => rng.next_u64() % 126,
                0 => rng.next_u64() % 126,
                1 => 126 + rng.next_u64() % (65536 - 126),
                2 => 65536 + rng.next_u64() % 1_000_000,
                _ => rng.next_u64() >> 1,
            };
            let mut wire = vec![(u8::from(fin) << 7) | op];
            if len < 126 {
                wire.push(len as u8);
            } else if len <= 65535 {
                wire.push(126);
                wire.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                wire.push(127);
                wire.extend_from_slice(&len.to_be_bytes());
            }
            let mut input = &wire[..];
            let ours = match FrameDecoder::new().decode(&mut input).unwrap() {
                Some(Decoded::Header(h)) => h,
                other => panic!("no header: {other:?}"),
            };
            let mut cur = std::io::Cursor::new(&wire[..]);
            let (theirs, tlen) = tungstenite::protocol::frame::FrameHeader::parse(&mut cur)
                .unwrap()
                .unwrap();
            assert_eq!(ours.len, tlen);
            assert_eq!(ours.fin, theirs.is_final);
            assert_eq!(ours.opcode.bits(), u8::from(theirs.opcode));
            assert!(theirs.mask.is_none());
            assert!(input.is_empty());
        }
    }
}
