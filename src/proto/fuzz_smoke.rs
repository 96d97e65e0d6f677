//! The bodies of the `fuzz/` targets, and smoke tests that run each body over 200,000 seeded
//! inputs on stable, so every `cargo test` exercises the parsers the way the fuzzer does.
//!
//! One source for both: the fuzz crate builds `sockstorm` with the feature `fuzzing`, which
//! makes this module public, and each target calls its body here. The `#[test]`s below run the
//! bodies on stable; `cargo fuzz` builds them without `cfg(test)`.
//!
//! A body panics only when it finds a bug: a panic inside `sockstorm`, or a broken invariant
//! checked here. Inputs are plain bytes, so a crash file from `cargo fuzz` replays here by
//! passing its contents to the same function in a `#[test]`.
//!
//! The bodies of the protocol's other parsers are in the child modules: templates
//! ([`template`]), the JSON scanners behind `--expect`, `--latency-from`, rules and fan-out
//! ([`json_scan`]) and the TLS failure mapping ([`tls_failure`]). The layers above keep theirs
//! in their own `fuzz_smoke` modules (`plan`, `server`, `cli`), which may import only what
//! their layer may.
#![allow(
    unreachable_pub,
    reason = "the bodies are `pub` for the fuzz crate (feature `fuzzing`)"
)]

mod json_scan;
mod template;
mod tls_failure;

pub use json_scan::json_scan;
pub use template::template;
pub use tls_failure::tls_failure;

use crate::metrics::{Counters, ShardStats};
use crate::proto::conn::{Conn, ConnConfig, Ctx, Failure, Message, Micros, Phase};
use crate::proto::rng::Rng;
use crate::proto::ws::frame::{apply_mask, Decoded, FrameDecoder, FrameHeader, OpCode, Violation};
use crate::proto::ws::handshake::{check_response, RequestTemplate, MAX_RESPONSE};
use std::cell::RefCell;
use std::collections::VecDeque;

// ---------------------------------------------------------------------------------------------
// frame_decoder
// ---------------------------------------------------------------------------------------------

/// One step of a decode, with payload chunks of a frame merged (chunking is not observable).
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Header(FrameHeader),
    Payload(Vec<u8>),
    End,
    Violation(Violation),
}

/// Decodes `chunks` in order through one `FrameDecoder`, checking the decoder's own contract
/// on the way, and returns what it saw.
fn decode_trace<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Step> {
    let mut dec = FrameDecoder::new();
    let mut steps = Vec::new();
    // Payload bytes still owed by the current frame, per its header.
    let mut owed: Option<u64> = None;
    for chunk in chunks {
        let mut input = chunk;
        loop {
            let before = input.len();
            let ev = match dec.decode(&mut input) {
                Ok(Some(ev)) => ev,
                Ok(None) => {
                    assert!(input.is_empty(), "None with {} bytes left", input.len());
                    break;
                }
                Err(v) => {
                    steps.push(Step::Violation(v));
                    return steps;
                }
            };
            match ev {
                Decoded::Header(h) => {
                    assert!(owed.is_none(), "header inside a frame");
                    if h.opcode.is_control() {
                        assert!(h.fin && h.len <= 125, "bad control header {h:?}");
                    }
                    assert_eq!(h.len >> 63, 0, "length with the top bit set");
                    owed = Some(h.len);
                    steps.push(Step::Header(h));
                }
                Decoded::Payload(p) => {
                    let rem = owed.expect("payload outside a frame");
                    assert!(!p.is_empty(), "empty payload chunk");
                    assert!(p.len() as u64 <= rem, "payload beyond the frame length");
                    assert_eq!(
                        before - input.len(),
                        p.len(),
                        "payload is the consumed bytes"
                    );
                    owed = Some(rem - p.len() as u64);
                    match steps.last_mut() {
                        Some(Step::Payload(acc)) => acc.extend_from_slice(p),
                        _ => steps.push(Step::Payload(p.to_vec())),
                    }
                }
                Decoded::End => {
                    assert_eq!(owed, Some(0), "end before the payload is complete");
                    assert_eq!(before, input.len(), "End consumes nothing");
                    owed = None;
                    steps.push(Step::End);
                }
            }
        }
    }
    steps
}

/// Fuzz target `frame_decoder`: arbitrary bytes through `FrameDecoder`, whole, split at one
/// arbitrary point, and in small chunks. Never panics, and the three agree step for step.
///
/// Input: `[split_lo, split_hi, chunk, bytes…]`.
pub fn frame_decoder(data: &[u8]) {
    let [lo, hi, chunk, ref wire @ ..] = *data else {
        return;
    };
    let split = usize::from(u16::from_le_bytes([lo, hi])) % (wire.len() + 1);
    let chunk = usize::from(chunk % 16) + 1;
    let whole = decode_trace([wire]);
    let (a, b) = wire.split_at(split);
    assert_eq!(decode_trace([a, b]), whole, "split at {split}");
    assert_eq!(decode_trace(wire.chunks(chunk)), whole, "chunks of {chunk}");
}

// ---------------------------------------------------------------------------------------------
// upgrade_response
// ---------------------------------------------------------------------------------------------

/// The RFC 6455 §1.3 sample key; its accept is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
pub const SAMPLE_KEY: &[u8; 24] = b"dGhlIHNhbXBsZSBub25jZQ==";

fn templates() -> [RequestTemplate; 3] {
    [
        RequestTemplate::new("example.com", "/ws", &[], &[]),
        RequestTemplate::new("example.com", "/ws", &[], &[]).with_deflate(
            crate::proto::ws::deflate::Offer::parse("deflate:server_max_window_bits=12")
                .unwrap_or_default(),
        ),
        RequestTemplate::new(
            "example.com",
            "/ws",
            &[],
            &["chat".into(), "superchat".into()],
        ),
    ]
}

/// Fuzz target `upgrade_response`: `check_response` on arbitrary bytes. Never panics; an
/// accepted head is accepted again on its own and with frames behind it, and one byte less
/// of it is still incomplete.
///
/// Input: `[template, response…]` (template % 3: none offered, permessage-deflate offered,
/// subprotocols offered). With deflate offered, an accepted head's agreed parameters are
/// within the offer.
pub fn upgrade_response(data: &[u8]) {
    thread_local!(static TEMPLATES: [RequestTemplate; 3] = templates());
    let Some((&sel, resp)) = data.split_first() else {
        return;
    };
    TEMPLATES.with(|t| {
        let t = &t[usize::from(sel % 3)];
        let r = check_response(resp, SAMPLE_KEY, t);
        match r {
            Ok(Some(n)) => {
                if let Some(d) = crate::proto::ws::handshake::deflate_answer(&resp[..n], t) {
                    assert!(t.deflate().is_some());
                    assert!((8..=12).contains(&d.server_max_window_bits), "{d:?}");
                    assert!((8..=15).contains(&d.client_max_window_bits), "{d:?}");
                }
                assert!(n > 0 && n <= resp.len(), "head {n} of {}", resp.len());
                assert_eq!(check_response(&resp[..n], SAMPLE_KEY, t), r);
                assert_eq!(check_response(&resp[..n - 1], SAMPLE_KEY, t), Ok(None));
                let mut more = resp.to_vec();
                more.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
                assert_eq!(check_response(&more, SAMPLE_KEY, t), r);
            }
            Ok(None) => assert!(resp.len() < MAX_RESPONSE),
            Err(_) => {}
        }
    });
}

// ---------------------------------------------------------------------------------------------
// deflate
// ---------------------------------------------------------------------------------------------

/// Fuzz target `deflate`: permessage-deflate's parsers and codec on arbitrary bytes. Never
/// panics. Input `[mode, split, bytes…]`: mode % 3 = 0, the bytes as a server's
/// `Sec-WebSocket-Extensions` answer (agreed windows are 8..=15); 1, the bytes as a compressed
/// message inflated in two parts split at `split`, the output never beyond its bound; 2, the
/// bytes as a payload compressed (with and without context takeover) and inflated back whole.
pub fn deflate(data: &[u8]) {
    use crate::proto::ws::deflate::{self as z, Offer};
    let [mode, split, bytes @ ..] = data else {
        return;
    };
    match mode % 3 {
        0 => {
            for offer in [
                "deflate",
                "deflate:client_max_window_bits=10,server_max_window_bits=9",
            ] {
                let o = Offer::parse(offer).unwrap_or_default();
                if let Ok(n) = o.accept(bytes) {
                    assert!((8..=15).contains(&n.client_max_window_bits), "{n:?}");
                    assert!((8..=15).contains(&n.server_max_window_bits), "{n:?}");
                    if let Some(most) = o.client_max_window_bits {
                        assert!(n.client_max_window_bits <= most);
                    }
                }
                // The server's side of the same header: an answer only to a
                // permessage-deflate offer, with windows in range and the server's cap kept.
                if let Some((n, v)) = z::answer(&o, [bytes]) {
                    assert!(v.starts_with("permessage-deflate"), "{v}");
                    assert!((8..=15).contains(&n.client_max_window_bits), "{n:?}");
                    assert!((8..=15).contains(&n.server_max_window_bits), "{n:?}");
                    if let Some(most) = o.server_max_window_bits {
                        assert!(n.server_max_window_bits <= most, "{n:?}");
                    }
                }
            }
        }
        1 => {
            const BOUND: u64 = 1 << 16;
            let at = usize::from(*split).min(bytes.len());
            let mut d = z::inflater();
            let (mut left, mut out) = (BOUND, 0u64);
            let mut sink = |p: &[u8]| -> Result<(), ()> {
                out += p.len() as u64;
                Ok(())
            };
            if z::inflate_part(&mut d, &bytes[..at], false, &mut left, &mut sink).is_ok() {
                let _ = z::inflate_part(&mut d, &bytes[at..], true, &mut left, &mut sink);
            }
            assert!(out <= BOUND);
        }
        _ => {
            let agreed = Offer::default()
                .accept(b"permessage-deflate")
                .unwrap_or_else(|_| unreachable!("the plain answer is valid"));
            for reset in [false, true] {
                let mut c = z::compressor(&agreed);
                let mut d = z::inflater();
                for _ in 0..2 {
                    let mut wire = Vec::new();
                    z::deflate_message(&mut c, bytes, reset, &mut wire);
                    let mut back = Vec::new();
                    let mut left = bytes.len() as u64;
                    z::inflate_part(&mut d, &wire, true, &mut left, &mut |p: &[u8]| {
                        back.extend_from_slice(p);
                        Ok::<(), ()>(())
                    })
                    .unwrap_or_else(|e| panic!("{e:?}"));
                    assert_eq!(back, bytes);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// conn_recv
// ---------------------------------------------------------------------------------------------

const MS: Micros = 1000;
const CLOSE_WAIT: Micros = 50 * MS;

/// The echoed message: multi-byte UTF-8 so fragments split characters.
const TEXT: &str = "héllo wörld €𝄞";

/// A connection config from the selector byte's bits.
fn conn_config(sel: u8) -> ConnConfig {
    let payload: Box<[u8]> = match (sel >> 1) & 3 {
        0 => TEXT.as_bytes().into(),
        1 => TEXT.repeat(10).into_bytes().into(), // > 125: 16-bit length
        2 => Box::default(),
        _ => b"x".as_slice().into(),
    };
    ConnConfig {
        template: RequestTemplate::new("example.com", "/ws", &[], &[]),
        connect_timeout: 1000 * MS,
        on_open: (sel & 8 != 0)
            .then(|| Message {
                opcode: OpCode::Text,
                payload: b"{\"op\":\"subscribe\"}".as_slice().into(),
                template: None,
            })
            .into_iter()
            .collect(),
        message: Some(Message {
            opcode: if sel & 1 == 0 {
                OpCode::Text
            } else {
                OpCode::Binary
            },
            payload,
            template: None,
        }),
        message_interval: 10 * MS,
        ping_interval: if sel & 16 != 0 { 25 * MS } else { 0 },
        close_wait: CLOSE_WAIT,
        validate_utf8: sel & 32 == 0,
        timer_resolution: if sel & 64 == 0 { 1 } else { 4 * MS },
        // Content rules read every received message: hostile JSON goes through the walker.
        checks: (sel & 128 != 0)
            .then(|| crate::proto::conn::Check {
                name: "price".into(),
                on: crate::proto::select::Cond::parse("json:type=quote").ok(),
                expect: crate::proto::select::Cond::parse("json:data.price>=0")
                    .unwrap_or_else(|_| unreachable!("a valid condition")),
            })
            .into_iter()
            .collect(),
        stream: (sel & 128 != 0).then(|| crate::proto::conn::StreamRule {
            seq: crate::proto::select::JsonPath::parse("json:seq")
                .unwrap_or_else(|_| unreachable!("a valid path")),
            key: crate::proto::select::JsonPath::parse("json:k.s").ok(),
        }),
        ..Default::default()
    }
}

/// A frame the client wrote: FIN, opcode bits, unmasked payload.
type ClientFrame = (bool, u8, Vec<u8>);

/// Parses everything a `poll_transmit` wrote as client frames, checking they are well formed:
/// masked, RSV clear, known opcode, control frames short and final, nothing cut off.
fn client_frames(mut wire: &[u8]) -> Vec<ClientFrame> {
    let mut frames = Vec::new();
    while !wire.is_empty() {
        assert!(wire.len() >= 6, "short client frame {wire:?}");
        let (b0, b1) = (wire[0], wire[1]);
        assert_eq!(b0 & 0x70, 0, "RSV set");
        assert_ne!(b1 & 0x80, 0, "client frame not masked");
        let op = b0 & 0x0F;
        assert!(matches!(op, 0..=2 | 8..=10), "opcode {op}");
        let (len, at) = match b1 & 0x7F {
            126 => (usize::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&wire[2..10]);
                (usize::try_from(u64::from_be_bytes(b)).unwrap(), 10)
            }
            l => (usize::from(l), 2),
        };
        if op >= 8 {
            assert!(b0 & 0x80 != 0 && len <= 125, "bad control frame");
        }
        let mask = [wire[at], wire[at + 1], wire[at + 2], wire[at + 3]];
        let body = &wire[at + 4..];
        assert!(body.len() >= len, "client frame cut off");
        let mut payload = body[..len].to_vec();
        apply_mask(&mut payload, mask, 0);
        frames.push((b0 & 0x80 != 0, op, payload));
        wire = &body[len..];
    }
    frames
}

/// An unmasked server frame.
fn server_frame(out: &mut Vec<u8>, b0: u8, payload: &[u8]) {
    out.push(b0);
    let l = payload.len();
    if l < 126 {
        out.push(l as u8);
    } else if l <= 0xFFFF {
        out.push(126);
        out.extend_from_slice(&(l as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(l as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// The fuzz input as a stream of decisions; an exhausted input reads as zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// What the scripted server does with one operation byte (`op % 16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// 0-3: the clock advances `byte` ms and the timer fires.
    Timer,
    /// 4-8: the server answers the oldest client frame it owes (echo, pong or close),
    /// possibly fragmented and with a ping in between.
    Answer,
    /// 9-11: the server sends a frame from input bytes: `[b0, len, payload…]`.
    Frame,
    /// 12: raw bytes: `[len, bytes…]`.
    Raw,
    /// 13: the run ends: `stop` with a drain of `byte` ms.
    Stop,
    /// 14: the server closes the TCP connection.
    Eof,
    /// 15: the socket fails.
    Error,
}

impl Op {
    fn from_byte(b: u8) -> Self {
        match b % 16 {
            0..=3 => Self::Timer,
            4..=8 => Self::Answer,
            9..=11 => Self::Frame,
            12 => Self::Raw,
            13 => Self::Stop,
            14 => Self::Eof,
            _ => Self::Error,
        }
    }
}

/// Reusable state of the `conn_recv` target (statistics are large; the counters are reset for
/// every input, the histograms do not influence the connection).
pub struct ConnFuzzer {
    stats: ShardStats,
}

impl Default for ConnFuzzer {
    fn default() -> Self {
        Self::new()
    }
}

/// One scripted session: the connection, its context and what the server owes it.
struct Session<'a> {
    conn: Conn,
    ctx: Ctx<'a, ShardStats>,
    now: Micros,
    out: Vec<u8>,
    /// Client frames the server has not answered yet.
    owed: VecDeque<ClientFrame>,
    /// The client sent its close frame; it must send nothing after it.
    client_closed: bool,
    /// Data frames the server echoed: of our rate-driven message, and others (on-open).
    echoed: (u64, u64),
}

impl Session<'_> {
    /// What the shard driver does after every event: collect output (sends complete at once);
    /// a finished connection is closed, never polled.
    fn transmit(&mut self) {
        if self.conn.is_done() {
            return;
        }
        self.out.clear();
        let n = self
            .conn
            .poll_transmit(&mut self.ctx, self.now, &mut self.out);
        assert_eq!(n, self.out.len());
        if n == 0 {
            return;
        }
        self.conn.handle_sent(self.now);
        for f in client_frames(&self.out) {
            assert!(!self.client_closed, "frame after our close frame");
            self.client_closed = f.1 == 0x8;
            // Pongs need no answer; data, pings and our close do.
            if f.1 != 0xA {
                self.owed.push_back(f);
            }
        }
    }

    /// Bytes arrive from the server in chunks of `chunk` (0: all at once).
    fn recv(&mut self, wire: &[u8], chunk: u8) {
        let size = if chunk == 0 {
            wire.len().max(1)
        } else {
            usize::from(chunk)
        };
        for c in wire.chunks(size) {
            if self.conn.is_done() {
                return;
            }
            self.conn.handle_recv(&mut self.ctx, self.now, c);
            self.transmit();
        }
    }

    fn timer(&mut self, dt: Micros) {
        self.now += dt;
        self.conn.handle_timer(&mut self.ctx, self.now);
        self.transmit();
        // A driver re-arms the timer with this; a deadline at or before `now` would spin.
        if let Some(t) = self.conn.poll_timeout(self.ctx.cfg) {
            assert!(t > self.now, "timer at {t} not after now {}", self.now);
        }
    }

    /// The server's answer to the oldest client frame it owes.
    fn answer(&mut self, how: u8) -> Vec<u8> {
        let mut wire = Vec::new();
        let Some((_, op, payload)) = self.owed.pop_front() else {
            return wire;
        };
        if op < 8 {
            let ours = self.ctx.cfg.message.as_ref().map(|m| &m.payload[..]);
            if ours == Some(&payload[..]) {
                self.echoed.0 += 1;
            } else {
                self.echoed.1 += 1;
            }
        }
        match op {
            0x9 => server_frame(&mut wire, 0x8A, &payload),
            0x8 => server_frame(&mut wire, 0x88, &payload),
            _ if how & 1 != 0 && payload.len() >= 2 => {
                let at = usize::from(how >> 2) % (payload.len() - 1) + 1;
                server_frame(&mut wire, op, &payload[..at]);
                if how & 2 != 0 {
                    server_frame(&mut wire, 0x89, b"mid");
                }
                server_frame(&mut wire, 0x80, &payload[at..]);
            }
            _ => server_frame(&mut wire, 0x80 | op, &payload),
        }
        wire
    }
}

impl ConnFuzzer {
    /// Fresh state.
    pub fn new() -> Self {
        Self {
            stats: ShardStats::new(),
        }
    }

    /// Fuzz target `conn_recv`: an open connection, fed what the input scripts (echoes, raw
    /// bytes, crafted frames, in arbitrary chunks, with timers, stop, EOF and errors). Never
    /// panics; its output is always well-formed client frames with nothing after its close
    /// frame; no timer is due at or before the time it was handled; a stopped connection
    /// finishes on timers alone; and `msgs_sent == msgs_received + msgs_unanswered`.
    ///
    /// Input: `[config, handshake split, op, args…, op, args…]`.
    pub fn run(&mut self, data: &[u8]) {
        let mut input = Input(data);
        let sel = input.byte();
        let cfg = conn_config(sel);
        self.stats.counters = Counters::default();
        self.stats.failures.clear();
        self.stats.close_codes.clear();
        let mut rng = Rng::new(u64::from(sel) | ((data.len() as u64) << 8));
        let mut ctx = Ctx {
            cfg: &cfg,
            stats: &mut self.stats,
            rng: &mut rng,
            tls: None,
            epoch_unix_us: 0,
            token: None,
        };
        let conn = Conn::new(&mut ctx, 0);
        let mut s = Session {
            conn,
            ctx,
            now: MS,
            out: Vec::new(),
            owed: VecDeque::new(),
            client_closed: false,
            echoed: (0, 0),
        };
        s.conn.handle_connected(&mut s.ctx, s.now);
        s.out.clear();
        s.conn.poll_transmit(&mut s.ctx, s.now, &mut s.out);
        s.conn.handle_sent(s.now);
        let resp = response_for(&s.out);
        // The 101 in two reads, split anywhere (an empty first read included).
        let split = usize::from(input.byte()) % (resp.len() + 1);
        s.conn.handle_recv(&mut s.ctx, s.now, &resp[..split]);
        s.conn.handle_recv(&mut s.ctx, s.now, &resp[split..]);
        assert_eq!(s.conn.phase(), Phase::Open);
        s.transmit();

        // Whether the server only answered correctly and time passed: then every echo matches.
        let mut clean = true;
        while !input.0.is_empty() && !s.conn.is_done() {
            let op = Op::from_byte(input.byte());
            clean &= matches!(op, Op::Timer | Op::Answer);
            match op {
                Op::Timer => {
                    let dt = Micros::from(input.byte()) * MS;
                    s.timer(dt);
                }
                Op::Answer => {
                    let how = input.byte();
                    let chunk = input.byte();
                    let wire = s.answer(how);
                    s.recv(&wire, chunk % 32);
                }
                Op::Frame => {
                    let b0 = input.byte();
                    let len = match input.byte() {
                        l @ 0..=249 => usize::from(l % 130),
                        l => 126 + usize::from(l - 250) * 50,
                    };
                    let chunk = input.byte();
                    let mut wire = Vec::new();
                    server_frame(&mut wire, b0, input.bytes(len));
                    s.recv(&wire, chunk % 32);
                }
                Op::Raw => {
                    let len = usize::from(input.byte());
                    let chunk = input.byte();
                    let wire = input.bytes(len).to_vec();
                    s.recv(&wire, chunk % 32);
                }
                Op::Stop => {
                    let drain = Micros::from(input.byte()) * MS;
                    s.conn.stop(&mut s.ctx, s.now, s.now + drain);
                    s.transmit();
                }
                Op::Eof => {
                    s.conn.handle_eof(&mut s.ctx, s.now);
                    s.transmit();
                }
                Op::Error => {
                    s.conn.handle_error(&mut s.ctx, s.now, Failure::Reset);
                    s.transmit();
                }
            }
        }

        if clean {
            let c = &s.ctx.stats.counters;
            assert_eq!(s.conn.phase(), Phase::Open);
            assert_eq!(s.ctx.stats.failure_total(), 0);
            assert_eq!((c.msgs_received, c.msgs_pushed), s.echoed, "{c:?}");
        }

        // The run ends and the server goes silent: timers alone must finish the connection.
        if !s.conn.is_done() {
            s.conn.stop(&mut s.ctx, s.now, s.now + 100 * MS);
            s.transmit();
        }
        for _ in 0..8 {
            match s.conn.poll_timeout(s.ctx.cfg) {
                Some(t) if !s.conn.is_done() => {
                    let dt = t.saturating_sub(s.now);
                    s.timer(dt);
                }
                _ => break,
            }
        }
        assert!(s.conn.is_done(), "stuck in {:?} after stop", s.conn.phase());
        assert!(s.conn.poll_timeout(s.ctx.cfg).is_none(), "timer after done");
        let c = &s.ctx.stats.counters;
        assert_eq!(c.established, 1);
        assert_eq!(
            c.msgs_sent,
            c.msgs_received + c.msgs_unanswered,
            "sent = received + unanswered: {c:?}"
        );
    }
}

/// The 101 a correct server sends for the upgrade `request`.
fn response_for(request: &[u8]) -> Vec<u8> {
    const NEEDLE: &[u8] = b"Sec-WebSocket-Key: ";
    let at = request
        .windows(NEEDLE.len())
        .position(|w| w == NEEDLE)
        .expect("the request carries a key")
        + NEEDLE.len();
    let accept = tungstenite::handshake::derive_accept_key(&request[at..at + 24]);
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// Fuzz target `app_protocols`: `[which, split, bytes…]`, a received message to the
/// protocol parsers (`which % 4`: Socket.IO, STOMP, GraphQL, the JSON envelope scanner). No
/// panic; every span handed on lies within the message; a STOMP message cut at `split`
/// yields, before the cut, a prefix of the whole message's items; a GraphQL payload and a
/// Socket.IO packet's data are whole JSON values.
pub fn app_protocols(data: &[u8]) {
    use crate::proto::app::{graphql, json, socketio, stomp};
    let [which, split, m @ ..] = data else {
        return;
    };
    let within = |part: &[u8]| {
        let (a, b) = (m.as_ptr() as usize, part.as_ptr() as usize);
        assert!(part.is_empty() || (b >= a && b + part.len() <= a + m.len()));
    };
    match which % 4 {
        0 => {
            if let Ok(socketio::Engine::Message(p)) = socketio::parse(m) {
                if p.namespace != b"/" {
                    // (the default namespace is a constant when the packet names none)
                    within(p.namespace);
                }
                within(p.data);
                assert!(p.data.is_empty() || json::is_value(p.data));
                if p.kind == socketio::Kind::Event {
                    assert!(json::first_element(p.data).is_some());
                }
            }
        }
        1 => {
            let whole: Vec<_> = stomp::frames(m).collect();
            for item in whole.iter().flatten() {
                if let stomp::Item::Frame(f) = item {
                    within(f.body);
                    if let Some(v) = f.header(b"content-length") {
                        within(v);
                        if let Some(n) = std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.trim().parse::<usize>().ok())
                        {
                            assert_eq!(f.body.len(), n);
                        }
                    }
                }
            }
            // Items complete before a cut are the whole message's first items.
            let cut = usize::from(*split).min(m.len());
            let part: Vec<_> = stomp::frames(&m[..cut]).map_while(Result::ok).collect();
            for (a, b) in part.iter().zip(&whole) {
                match (a, b) {
                    (stomp::Item::HeartBeat, Ok(stomp::Item::HeartBeat)) => {}
                    (stomp::Item::Frame(x), Ok(stomp::Item::Frame(y))) => {
                        assert_eq!((x.command, x.body), (y.command, y.body));
                    }
                    (x, y) => panic!("{x:?} then {y:?}"),
                }
            }
        }
        2 => match graphql::parse(m) {
            Ok(graphql::Server::Next { id, payload } | graphql::Server::Error { id, payload }) => {
                within(id);
                within(payload);
                assert!(json::is_value(payload) && !id.is_empty());
            }
            Ok(graphql::Server::Complete { id }) => within(id),
            _ => {}
        },
        _ => {
            let mut f = json::fields(m);
            for (k, v) in f.by_ref() {
                within(k);
                within(v);
                assert!(json::is_value(v), "{:?}", String::from_utf8_lossy(v));
            }
            let _ = json::first_element(m);
        }
    }
}

/// Fuzz target `conn_recv` with per-thread reusable state.
pub fn conn_recv(data: &[u8]) {
    thread_local!(static FUZZER: RefCell<ConnFuzzer> = RefCell::new(ConnFuzzer::new()));
    FUZZER.with_borrow_mut(|f| f.run(data));
}

// ---------------------------------------------------------------------------------------------
// frame_differential
// ---------------------------------------------------------------------------------------------

/// Fuzz target `frame_differential`: our header decoding against tungstenite's
/// `FrameHeader::parse` on the same bytes. Where tungstenite finds an unmasked header with RSV
/// clear and a known opcode, ours agrees on FIN, opcode, length and header size, or rejects it
/// for a rule tungstenite leaves to a later layer (control frame fragmented, over 125 bytes or
/// with a 16/64-bit length, length with the top bit set); where tungstenite rejects or sees a masked or RSV frame, ours
/// rejects too; and a header ours accepts, tungstenite accepts alike.
pub fn frame_differential(data: &[u8]) {
    use tungstenite::protocol::frame::coding::{Control, Data, OpCode as TOp};
    let mut input = data;
    let ours = FrameDecoder::new().decode(&mut input);
    let used = data.len() - input.len();
    let mut cur = std::io::Cursor::new(data);
    let theirs = tungstenite::protocol::frame::FrameHeader::parse(&mut cur);
    match theirs {
        Ok(Some((h, len))) => {
            let op = match h.opcode {
                TOp::Data(Data::Continue) => OpCode::Continuation,
                TOp::Data(Data::Text) => OpCode::Text,
                TOp::Data(Data::Binary) => OpCode::Binary,
                TOp::Control(Control::Close) => OpCode::Close,
                TOp::Control(Control::Ping) => OpCode::Ping,
                TOp::Control(Control::Pong) => OpCode::Pong,
                other => panic!("tungstenite returned reserved opcode {other:?}"),
            };
            if h.mask.is_some() || h.rsv1 || h.rsv2 || h.rsv3 {
                assert!(ours.is_err(), "masked or RSV frame accepted: {ours:?}");
                return;
            }
            // Ours judges a control frame's length by its 7-bit field, so it also rejects a
            // short length in a non-minimal 16/64-bit encoding (RFC 6455 §5.2 forbids that
            // encoding; tungstenite does not check it).
            let long_form = data[1] & 0x7F >= 126;
            let expect = if op.is_control() && !h.is_final {
                Err(Violation::ControlFragmented)
            } else if op.is_control() && (len > 125 || long_form) {
                Err(Violation::ControlTooLong)
            } else if len >> 63 != 0 {
                Err(Violation::BadLength)
            } else {
                Ok(Some(Decoded::Header(FrameHeader {
                    fin: h.is_final,
                    opcode: op,
                    len,
                    rsv1: false,
                })))
            };
            assert_eq!(ours, expect, "{data:02x?}");
            if ours.is_ok() {
                assert_eq!(used as u64, cur.position(), "header size");
            }
        }
        Ok(None) => {
            // Too short for tungstenite: ours waits too, or already rejected the first bytes.
            match ours {
                Ok(None) => assert!(input.is_empty()),
                Err(_) => assert!(data.len() >= 2),
                Ok(Some(ev)) => panic!("ours decoded {ev:?} from a short header {data:02x?}"),
            }
        }
        Err(e) => assert!(ours.is_err(), "tungstenite: {e}; ours: {ours:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Smoke tests: the bodies over seeded inputs, random and mutated valid ones.
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
/// Seeded input generator for the smoke tests of every layer's fuzz bodies.
pub(crate) struct Gen(pub(crate) Rng);

#[cfg(test)]
impl Gen {
    /// A generator from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(Rng::new(seed))
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }

    pub(crate) fn byte(&mut self) -> u8 {
        self.0.next_u64() as u8
    }

    pub(crate) fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub(crate) fn random(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.byte()).collect()
    }

    pub(crate) fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }

    /// Byte values that sit on the decoders' boundaries.
    pub(crate) fn interesting(&mut self) -> u8 {
        self.pick(&[
            0x00, 0x01, 0x02, 0x08, 0x09, 0x0A, 0x0F, 0x70, 0x7D, 0x7E, 0x7F, 0x80, 0x81, 0x82,
            0x88, 0x89, 0x8A, 0xFF, b'\r', b'\n', b' ', b':', b',',
        ])
    }

    /// 1-4 edits: flip a bit, overwrite, insert, delete, truncate, duplicate a range.
    pub(crate) fn mutate(&mut self, v: &mut Vec<u8>) {
        for _ in 0..1 + self.below(4) {
            let n = v.len();
            match self.below(7) {
                0 if n > 0 => {
                    let i = self.below(n);
                    v[i] ^= 1 << self.below(8);
                }
                1 if n > 0 => {
                    let i = self.below(n);
                    v[i] = self.interesting();
                }
                2 => {
                    let i = self.below(n + 1);
                    let b = self.byte();
                    v.insert(i, b);
                }
                3 if n > 0 => {
                    v.remove(self.below(n));
                }
                4 => v.truncate(self.below(n + 1)),
                5 if n > 0 => {
                    let a = self.below(n);
                    let b = a + self.below(n - a).min(16);
                    let at = self.below(n + 1);
                    let dup = v[a..=b.min(n - 1)].to_vec();
                    v.splice(at..at, dup);
                }
                _ if n > 0 => {
                    let i = self.below(n);
                    v[i] = self.byte();
                }
                _ => {}
            }
        }
    }
}

/// Runs `body` over `runs` inputs from `make`, one in eight random bytes and a third of them
/// mutated further.
#[cfg(test)]
pub(crate) fn smoke_runs(
    seed: u64,
    runs: usize,
    mut make: impl FnMut(&mut Gen) -> Vec<u8>,
    mut body: impl FnMut(&[u8]),
) {
    let mut g = Gen::new(seed);
    for i in 0..runs {
        let mut input = if i % 8 == 0 {
            g.random(64)
        } else {
            make(&mut g)
        };
        if g.chance(3) {
            g.mutate(&mut input);
        }
        body(&input);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNS: usize = 200_000;

    impl Gen {
        /// 1-4 well-formed server frames of every opcode and length class; the last one's
        /// payload may be cut short (a 64-bit length announces more than follows).
        fn server_frames(&mut self) -> Vec<u8> {
            let mut v = Vec::new();
            for _ in 0..1 + self.below(4) {
                let op = self.pick(&[0x0u8, 0x1, 0x2, 0x8, 0x9, 0xA]);
                let fin = op >= 8 || self.chance(2);
                let b0 = (u8::from(fin) << 7) | op;
                match self.below(8) {
                    0 => {
                        v.extend_from_slice(&[b0, 127]);
                        let len = self.0.next_u64() >> self.below(64);
                        v.extend_from_slice(&len.to_be_bytes());
                        let tail = self.random(8);
                        v.extend_from_slice(&tail);
                        return v;
                    }
                    1 => {
                        let p = self.random(300);
                        server_frame(&mut v, b0, &p);
                    }
                    2 if op == 8 => {
                        let code = self.pick(&[1000u16, 1001, 1005, 1006, 1012, 999, 3000, 5000]);
                        let mut p = code.to_be_bytes().to_vec();
                        p.extend_from_slice(TEXT.as_bytes());
                        server_frame(&mut v, b0, &p);
                    }
                    _ => {
                        let p = self.random(12);
                        server_frame(&mut v, b0, &p);
                    }
                }
            }
            v
        }

        /// A server's upgrade response to [`SAMPLE_KEY`], right or subtly wrong.
        fn response(&mut self) -> Vec<u8> {
            let status = self.pick(&[
                "HTTP/1.1 101 Switching Protocols",
                "HTTP/1.1 101 Switching Protocols",
                "HTTP/1.1 101 OK",
                "HTTP/1.0 101 Switching Protocols",
                "HTTP/1.1 200 OK",
                "HTTP/1.1 503 Service Unavailable",
                "HTTP/1.1 101",
            ]);
            let mut headers = vec![
                self.pick(&["Upgrade: websocket", "upgrade: WebSocket", "Upgrade: h2c"]),
                self.pick(&[
                    "Connection: Upgrade",
                    "connection: keep-alive, upgrade",
                    "Connection: close",
                ]),
                self.pick(&[
                    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                    "sec-websocket-accept:   s3pPLMBiTxaQ9kYGzzhZRbK+xOo=  ",
                    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo",
                ]),
            ];
            for _ in 0..self.below(4) {
                headers.push(self.pick(&[
                    "Sec-WebSocket-Protocol: chat",
                    "Sec-WebSocket-Protocol: superchat",
                    "Sec-WebSocket-Protocol: mqtt",
                    "Sec-WebSocket-Protocol: ",
                    "Server: nginx/1.24.0",
                    "Date: Tue, 14 Apr 2026 09:12:44 GMT",
                    "Content-Length: 0",
                    "Sec-WebSocket-Extensions: permessage-deflate",
                ]));
            }
            for i in (1..headers.len()).rev() {
                let j = self.below(i + 1);
                headers.swap(i, j);
            }
            if self.chance(8) {
                headers.truncate(self.below(headers.len() + 1));
            }
            let eol = if self.chance(8) { "\n" } else { "\r\n" };
            let mut r = String::from(status);
            for h in headers {
                r.push_str(eol);
                r.push_str(h);
            }
            r.push_str(eol);
            r.push_str(eol);
            r.into_bytes()
        }

        /// Ops that mostly keep the session going: answers, timers, crafted frames.
        fn conn_script(&mut self) -> Vec<u8> {
            let mut v = vec![self.byte(), self.byte()];
            for _ in 0..self.below(40) {
                let op = match self.below(100) {
                    0..=44 => 4 + self.below(5) as u8,
                    45..=74 => self.below(4) as u8,
                    75..=89 => 9 + self.below(3) as u8,
                    90..=93 => 12,
                    94..=96 => 13,
                    97..=98 => 14,
                    _ => 15,
                };
                v.push(op);
                match op {
                    0..=3 => v.push(self.pick(&[1, 5, 10, 10, 20, 25, 60, 255])),
                    4..=8 => v.extend_from_slice(&[self.byte(), self.pick(&[0, 0, 1, 3, 7])]),
                    9..=11 => {
                        let b0 = self.pick(&[0x81, 0x82, 0x01, 0x80, 0x00, 0x88, 0x89, 0x8A])
                            ^ if self.chance(8) {
                                1 << self.below(8)
                            } else {
                                0
                            };
                        let len = if b0 & 0x0F == 8 && self.chance(2) {
                            let reason = self.below(4);
                            v.extend_from_slice(&[b0, 2 + reason as u8, 0]);
                            let code = self.pick(&[1000u16, 1001, 1005, 1012, 999, 4000]);
                            v.extend_from_slice(&code.to_be_bytes());
                            reason
                        } else {
                            let len = self.below(12);
                            v.extend_from_slice(&[b0, len as u8, self.pick(&[0, 1, 2])]);
                            len
                        };
                        for _ in 0..len {
                            let b = if self.chance(2) { b'a' } else { self.byte() };
                            v.push(b);
                        }
                    }
                    12 => {
                        let raw = self.server_frames();
                        let n = raw.len().min(255);
                        v.extend_from_slice(&[n as u8, self.byte()]);
                        v.extend_from_slice(&raw[..n]);
                    }
                    13 => v.push(self.pick(&[0, 5, 50])),
                    _ => {}
                }
            }
            v
        }

        /// 2-14 header bytes: mostly plausible (known opcode, unmasked), in every length class.
        fn header(&mut self) -> Vec<u8> {
            let mut b0 = self.pick(&[0x00, 0x01, 0x02, 0x80, 0x81, 0x82, 0x88, 0x89, 0x8A, 0x08]);
            if self.chance(6) {
                b0 ^= 1 << self.below(8);
            }
            let mut b1 = match self.below(4) {
                0 => 126,
                1 => 127,
                _ => self.below(126) as u8,
            };
            if self.chance(6) {
                b1 |= 0x80;
            }
            let mut v = vec![b0, b1];
            let extra = match b1 & 0x7F {
                126 => 2,
                127 => 8,
                _ => 0,
            } + if b1 & 0x80 != 0 { 4 } else { 0 };
            for _ in 0..extra {
                let b = if self.chance(2) { 0 } else { self.byte() };
                v.push(b);
            }
            if self.chance(4) {
                v.truncate(self.below(v.len() + 1));
            }
            let tail = self.random(4);
            v.extend_from_slice(&tail);
            v
        }
    }

    /// Runs `body` over `RUNS` inputs from `make`, a third of them mutated further.
    fn smoke(seed: u64, make: impl FnMut(&mut Gen) -> Vec<u8>, body: impl FnMut(&[u8])) {
        smoke_runs(seed, RUNS, make, body);
    }

    #[test]
    fn frame_decoder_smoke() {
        smoke(
            1,
            |g| {
                let mut v = vec![g.byte(), g.byte(), g.byte()];
                v.extend(g.server_frames());
                v
            },
            frame_decoder,
        );
    }

    #[test]
    fn deflate_smoke() {
        smoke(
            2,
            |g| {
                let mut v = vec![g.byte(), g.byte()];
                v.extend(g.response());
                v
            },
            deflate,
        );
    }

    #[test]
    fn upgrade_response_smoke() {
        smoke(
            2,
            |g| {
                let mut v = vec![g.byte()];
                v.extend(g.response());
                if g.chance(4) {
                    v.extend(g.server_frames());
                }
                v
            },
            upgrade_response,
        );
    }

    #[test]
    fn app_protocols_smoke() {
        let mut g = Gen::new(11);
        let seeds: [&[u8]; 6] = [
            br#"43/chat,17[{"ok":true}]"#,
            b"MESSAGE\nsubscription:0\ncontent-length:2\n\nhi\0\nRECEIPT\nreceipt-id:1\n\n\0",
            br#"{"id":"s0","type":"next","payload":{"data":{"n":1}}}"#,
            br#"0{"sid":"x","pingInterval":5000,"pingTimeout":5000}"#,
            b"ERROR\nmessage:bad\n\nx\0",
            br#"{"type":"connection_ack"}"#,
        ];
        for i in 0..4000u32 {
            let seed = seeds[i as usize % seeds.len()];
            let mut m = seed.to_vec();
            // Mutate: cut, flip or insert a byte.
            let at = usize::from(g.byte()) % (m.len() + 1);
            match g.byte() % 3 {
                0 => m.truncate(at),
                1 if at < m.len() => m[at] = g.byte(),
                _ => m.insert(at, g.byte()),
            }
            let mut data = vec![(i % 4) as u8, g.byte()];
            data.extend_from_slice(&m);
            app_protocols(&data);
        }
    }

    #[test]
    fn conn_recv_smoke() {
        smoke(3, Gen::conn_script, conn_recv);
    }

    #[test]
    fn frame_differential_smoke() {
        smoke(4, Gen::header, frame_differential);
    }

    /// The generators reach the deep paths: accepted upgrades, every violation, echoes that
    /// match, and each way a session ends.
    #[test]
    fn generators_reach_deep_paths() {
        let mut g = Gen::new(5);
        let t = &templates()[1];
        let accepted = (0..2000)
            .filter(|_| matches!(check_response(&g.response(), SAMPLE_KEY, t), Ok(Some(_))))
            .count();
        assert!(accepted > 100, "{accepted}");

        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let mut v = g.server_frames();
            if g.chance(2) {
                g.mutate(&mut v);
            }
            if let Some(Step::Violation(x)) = decode_trace([&v[..]]).last() {
                seen.insert(*x);
            }
        }
        // Frame-level violations only; the others are the connection's.
        for v in [
            Violation::MaskedFrame,
            Violation::ReservedBits,
            Violation::UnknownOpcode,
            Violation::ControlTooLong,
            Violation::ControlFragmented,
            Violation::BadLength,
        ] {
            assert!(seen.contains(&v), "{v} never decoded: {seen:?}");
        }

        let mut f = ConnFuzzer::new();
        let mut total = Counters::default();
        let mut failures = std::collections::BTreeSet::new();
        for _ in 0..5000 {
            f.run(&g.conn_script());
            total.add(&f.stats.counters);
            failures.extend(f.stats.failures.keys().copied());
        }
        assert!(total.msgs_received > 1000, "{total:?}");
        assert!(
            total.pongs_sent > 10 && total.pongs_received > 10,
            "{total:?}"
        );
        assert!(
            total.closed_by_server > 10 && total.closed_clean > 10,
            "{total:?}"
        );
        assert!(
            total.closes_incomplete > 10 && total.sessions_dropped > 10,
            "{total:?}"
        );
        for v in [
            Violation::UnexpectedContinuation,
            Violation::ExpectedContinuation,
            Violation::BadCloseFrame,
            Violation::InvalidCloseCode,
            Violation::InvalidUtf8,
        ] {
            assert!(
                failures.contains(&Failure::Protocol(v)),
                "{v} never reached: {failures:?}"
            );
        }
    }
}
