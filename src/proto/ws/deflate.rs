//! permessage-deflate (RFC 7692): the offer a client makes, the server's answer checked
//! against it, and the per-message codec. Sans-IO like the rest of `proto`: bytes in, bytes
//! out; the inflater streams (a message is never held whole) and stops at a bound.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The four bytes a sync flush ends with, which a sender strips and a receiver appends
/// (RFC 7692 §7.2.1, §7.2.2).
pub const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What the client offers (`--compression deflate[:PARAMS]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offer {
    /// Ask to reset our compressor per message: no window kept between our messages.
    pub client_no_context_takeover: bool,
    /// Ask the server to reset its compressor per message (we then drop our inflater
    /// between messages: the low-memory choice).
    pub server_no_context_takeover: bool,
    /// The largest window our compressor uses (8..=15); `None`: 15, but the server may lower it.
    pub client_max_window_bits: Option<u8>,
    /// The largest window we ask the server's compressor to use (8..=15).
    pub server_max_window_bits: Option<u8>,
}

/// What was agreed (the server's answer to the client's offer), the same on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The client's compressor starts every message afresh (the server's inflater may too).
    pub client_no_context_takeover: bool,
    /// The server's compressor starts every message afresh (the client's inflater may too:
    /// the low-memory choice).
    pub server_no_context_takeover: bool,
    /// The client compressor's window, bits.
    pub client_max_window_bits: u8,
    /// The server compressor's window, bits (an inflater takes any up to 15).
    pub server_max_window_bits: u8,
}

impl Offer {
    /// `deflate` or `deflate:client_no_context_takeover,server_no_context_takeover,
    /// client_max_window_bits=N,server_max_window_bits=N`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, params) = s.split_once(':').unwrap_or((s, ""));
        if name.trim() != "deflate" {
            return Err(format!(
                "`{s}`: the compression is `deflate` (permessage-deflate), e.g. deflate or deflate:client_no_context_takeover,server_no_context_takeover"
            ));
        }
        let mut o = Self::default();
        for p in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = p
                .split_once('=')
                .map_or((p, None), |(k, v)| (k.trim(), Some(v.trim())));
            let bits = |v: Option<&str>| -> Result<u8, String> {
                v.and_then(|v| v.parse::<u8>().ok())
                    .filter(|b| (8..=15).contains(b))
                    .ok_or_else(|| format!("`{p}`: window bits are 8 to 15, e.g. {k}=10"))
            };
            match (k, v) {
                ("client_no_context_takeover", None) => o.client_no_context_takeover = true,
                ("server_no_context_takeover", None) => o.server_no_context_takeover = true,
                ("client_max_window_bits", v) => o.client_max_window_bits = Some(bits(v)?),
                ("server_max_window_bits", v) => o.server_max_window_bits = Some(bits(v)?),
                _ => {
                    return Err(format!(
                        "`{p}` is not a permessage-deflate parameter: use client_no_context_takeover, server_no_context_takeover, client_max_window_bits=N or server_max_window_bits=N"
                    ))
                }
            }
        }
        Ok(o)
    }

    /// The `Sec-WebSocket-Extensions` value of the offer.
    pub fn header_value(&self) -> String {
        let mut v = String::from("permessage-deflate");
        if self.client_no_context_takeover {
            v.push_str("; client_no_context_takeover");
        }
        if self.server_no_context_takeover {
            v.push_str("; server_no_context_takeover");
        }
        match self.client_max_window_bits {
            Some(b) => v.push_str(&format!("; client_max_window_bits={b}")),
            // Bare: we can use whatever window the server asks for.
            None => v.push_str("; client_max_window_bits"),
        }
        if let Some(b) = self.server_max_window_bits {
            v.push_str(&format!("; server_max_window_bits={b}"));
        }
        v
    }

    /// Checks the server's `Sec-WebSocket-Extensions` answer (RFC 7692 §7.1): one
    /// `permessage-deflate` with parameters we offered or may be given, each once, with valid
    /// values. `Err` names what is wrong.
    pub fn accept(&self, value: &[u8]) -> Result<Negotiated, String> {
        let text = std::str::from_utf8(value).map_err(|_| "not ASCII".to_owned())?;
        let mut exts = text.split(',').map(str::trim).filter(|e| !e.is_empty());
        let ext = exts.next().ok_or("empty")?;
        if exts.next().is_some() {
            return Err(format!("more than one extension accepted: `{text}`"));
        }
        let mut parts = ext.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        if !name.eq_ignore_ascii_case("permessage-deflate") {
            return Err(format!("`{name}` was not offered"));
        }
        let mut n = Negotiated {
            client_no_context_takeover: self.client_no_context_takeover,
            server_no_context_takeover: false,
            client_max_window_bits: self.client_max_window_bits.unwrap_or(15),
            server_max_window_bits: 15,
        };
        let mut seen: Vec<String> = Vec::new();
        for p in parts.filter(|p| !p.is_empty()) {
            let (k, v) = p.split_once('=').map_or((p, None), |(k, v)| {
                (k.trim(), Some(v.trim().trim_matches('"')))
            });
            let k = k.to_ascii_lowercase();
            if seen.contains(&k) {
                return Err(format!("`{k}` given twice"));
            }
            seen.push(k.clone());
            let bits = |v: Option<&str>, most: Option<u8>| -> Result<u8, String> {
                let b = v
                    .and_then(|v| v.parse::<u8>().ok())
                    .filter(|b| (8..=15).contains(b))
                    .ok_or_else(|| format!("`{p}`: not a window size of 8 to 15 bits"))?;
                match most {
                    Some(m) if b > m => Err(format!("`{p}`: above the {m} bits offered")),
                    _ => Ok(b),
                }
            };
            match (k.as_str(), v) {
                ("server_no_context_takeover", None) => n.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => n.client_no_context_takeover = true,
                ("server_max_window_bits", v) => {
                    n.server_max_window_bits = bits(v, self.server_max_window_bits)?
                }
                ("client_max_window_bits", v) => {
                    n.client_max_window_bits = bits(v, self.client_max_window_bits)?
                }
                _ => return Err(format!("`{p}` is not a parameter we offered")),
            }
        }
        // A server accepts these two only by answering with them (RFC 7692 §7.1.1.1,
        // §7.1.2.1); one that cannot declines the whole offer instead.
        if self.server_no_context_takeover && !n.server_no_context_takeover {
            return Err("server_no_context_takeover was offered but not answered".into());
        }
        if self.server_max_window_bits.is_some()
            && !seen.iter().any(|k| k == "server_max_window_bits")
        {
            return Err("server_max_window_bits was offered but not answered".into());
        }
        Ok(n)
    }
}

/// A compressor for the client's messages with the agreed window.
pub fn compressor(n: &Negotiated) -> Compress {
    compressor_bits(n.client_max_window_bits)
}

/// A compressor with a window of `bits` (8..=15).
pub fn compressor_bits(bits: u8) -> Compress {
    // zlib makes an 8-bit raw window 9 bits; a peer held to 8 gets stored blocks instead.
    let (level, bits) = if bits < 9 {
        (Compression::none(), 9)
    } else {
        (Compression::fast(), bits)
    };
    Compress::new_with_window_bits(level, false, bits)
}

/// The server's answer (`serve --compression`) to the client's `Sec-WebSocket-Extensions`
/// header values (RFC 7692 §5, §7.1): the first `permessage-deflate` offer it can accept,
/// with what was agreed and the answer's header value; `None` declines (no offer, or every
/// offer has a parameter that is unknown, repeated or out of range). `ours` says what the
/// server asks for on top of the offer: `server_no_context_takeover` and
/// `server_max_window_bits` always, `client_no_context_takeover` always, and
/// `client_max_window_bits` when the client said it can take it.
pub fn answer<'a>(
    ours: &Offer,
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Option<(Negotiated, String)> {
    values
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .find_map(|offer| answer_one(ours, offer))
}

/// [`answer`] to one offer.
fn answer_one(ours: &Offer, offer: &str) -> Option<(Negotiated, String)> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let (mut server_nct, mut client_nct) = (false, false);
    // The window the client lets our compressor have at most; whether (and how far) it lets
    // us cap its own.
    let mut server_bits: Option<u8> = None;
    let mut client_bits: Option<Option<u8>> = None;
    for p in parts.filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').map_or((p, None), |(k, v)| {
            (k.trim(), Some(v.trim().trim_matches('"')))
        });
        let k = k.to_ascii_lowercase();
        if seen.contains(&k) {
            return None;
        }
        let bits = v
            .and_then(|v| v.parse::<u8>().ok())
            .filter(|b| (8..=15).contains(b));
        match (k.as_str(), v) {
            ("server_no_context_takeover", None) => server_nct = true,
            ("client_no_context_takeover", None) => client_nct = true,
            ("server_max_window_bits", Some(_)) => server_bits = Some(bits?),
            ("client_max_window_bits", None) => client_bits = Some(None),
            ("client_max_window_bits", Some(_)) => client_bits = Some(Some(bits?)),
            _ => return None,
        }
        seen.push(k);
    }
    let our_bits = match (server_bits, ours.server_max_window_bits) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let their_cap = client_bits.and_then(|offered| {
        ours.client_max_window_bits
            .map(|m| offered.map_or(m, |o| o.min(m)))
    });
    let n = Negotiated {
        client_no_context_takeover: client_nct || ours.client_no_context_takeover,
        server_no_context_takeover: server_nct || ours.server_no_context_takeover,
        client_max_window_bits: their_cap.or(client_bits.flatten()).unwrap_or(15),
        server_max_window_bits: our_bits.unwrap_or(15),
    };
    let mut v = String::from("permessage-deflate");
    if n.server_no_context_takeover {
        v.push_str("; server_no_context_takeover");
    }
    // Answered whenever it holds: in an offer it is only a hint (RFC 7692 §7.1.1.2), which
    // binds the client (and lets the server's inflater start afresh) once answered.
    if n.client_no_context_takeover {
        v.push_str("; client_no_context_takeover");
    }
    if let Some(b) = our_bits {
        v.push_str(&format!("; server_max_window_bits={b}"));
    }
    if let Some(b) = their_cap {
        v.push_str(&format!("; client_max_window_bits={b}"));
    }
    Some((n, v))
}

/// An inflater for the server's messages (its window is at most 15 bits).
pub fn inflater() -> Decompress {
    Decompress::new(false)
}

/// Compresses one message's `payload` onto `out` (sync flush, the trailer stripped). With
/// `reset`, the compressor starts afresh (no context takeover).
pub fn deflate_message(c: &mut Compress, payload: &[u8], reset: bool, out: &mut Vec<u8>) {
    if reset {
        c.reset();
    }
    let start = out.len();
    deflate_part(c, payload, false, out);
    end_message(c, out, start);
}

/// Ends the message whose compressed bytes begin at `start` of `out`: a sync flush, its
/// trailer stripped (RFC 7692 §7.2.1). A message that comes out empty is sent as one 0x00
/// byte (§7.2.3.6): zlib emits nothing for a flush right after a flush (an empty message
/// with context takeover), and an empty payload would leave the receiver's inflater inside
/// the trailer's stored block, taking the next message's bytes for its length.
pub fn end_message(c: &mut Compress, out: &mut Vec<u8>, start: usize) {
    deflate_part(c, &[], true, out);
    if out.len() >= start + 4 && out[out.len() - 4..] == TRAILER {
        out.truncate(out.len() - 4);
    }
    if out.len() == start {
        out.push(0);
    }
}

/// Compresses part of a message onto `out`; `last` ends it with a sync flush, whose trailer
/// the caller strips from the message's end (see [`deflate_message`]).
pub fn deflate_part(c: &mut Compress, mut input: &[u8], last: bool, out: &mut Vec<u8>) {
    let flush = if last {
        FlushCompress::Sync
    } else {
        FlushCompress::None
    };
    loop {
        out.reserve(input.len() / 2 + 64);
        let before = c.total_in();
        // Only a stream error could fail here, and ours is always valid; stop rather than spin.
        if c.compress_vec(input, out, flush).is_err() {
            break;
        }
        input = &input[(c.total_in() - before) as usize..];
        // Done when all input is in and the flush left room in the buffer.
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
}

/// One bounded step of inflating: takes what it can of `input` and makes at most `out.len()`
/// bytes. Returns the input used, the output made, and whether the stream ended with a final
/// block (the inflater must then be reset before the next message). A step that uses none of
/// a non-empty input and makes nothing means the data is corrupt.
pub fn inflate_step(
    d: &mut Decompress,
    input: &[u8],
    out: &mut [u8],
) -> Result<(usize, usize, bool), InflateError> {
    let (in0, out0) = (d.total_in(), d.total_out());
    let status = d
        .decompress(input, out, FlushDecompress::Sync)
        .map_err(|_| InflateError::Corrupt)?;
    let used = (d.total_in() - in0) as usize;
    let made = (d.total_out() - out0) as usize;
    if used == 0 && made == 0 && !input.is_empty() && status != Status::StreamEnd {
        return Err(InflateError::Corrupt);
    }
    Ok((used, made, status == Status::StreamEnd))
}

/// Why an inflated message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The data does not inflate.
    Corrupt,
    /// The message inflates beyond the bound.
    TooBig,
}

/// Inflates `input` (part of one message; `last`: its end, the trailer is added) in pieces
/// handed to `sink`, counting the output against `left` (the bytes the message may still
/// grow by). Returns whether the stream ended with a final block (the inflater must then be
/// reset before the next message).
pub fn inflate_part<E>(
    d: &mut Decompress,
    input: &[u8],
    last: bool,
    left: &mut u64,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
) -> Result<bool, Result<InflateError, E>> {
    let mut buf = [0u8; 4096];
    let mut parts: [&[u8]; 2] = [input, if last { &TRAILER } else { &[] }];
    for part in parts.iter_mut() {
        loop {
            let (in0, out0) = (d.total_in(), d.total_out());
            let status = d
                .decompress(part, &mut buf, FlushDecompress::Sync)
                .map_err(|_| Ok(InflateError::Corrupt))?;
            let used = (d.total_in() - in0) as usize;
            let made = (d.total_out() - out0) as usize;
            *part = &part[used..];
            if made > 0 {
                if made as u64 > *left {
                    return Err(Ok(InflateError::TooBig));
                }
                *left -= made as u64;
                sink(&buf[..made]).map_err(Err)?;
            }
            if status == Status::StreamEnd {
                return Ok(true);
            }
            // More output may wait only when the buffer was filled.
            if part.is_empty() && made < buf.len() {
                break;
            }
            if used == 0 && made == 0 {
                // Neither input taken nor output made: the input is corrupt.
                return Err(Ok(InflateError::Corrupt));
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_and_answers() {
        let o = Offer::parse("deflate").unwrap();
        assert_eq!(
            o.header_value(),
            "permessage-deflate; client_max_window_bits"
        );
        let n = o.accept(b"permessage-deflate").unwrap();
        assert_eq!(
            (n.client_max_window_bits, n.server_no_context_takeover),
            (15, false)
        );
        let n = o
            .accept(b"permessage-deflate; server_no_context_takeover; client_max_window_bits=10")
            .unwrap();
        assert!(n.server_no_context_takeover);
        assert_eq!(n.client_max_window_bits, 10);
        for bad in [
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate, permessage-deflate",
            "x-webkit-deflate-frame",
        ] {
            assert!(o.accept(bad.as_bytes()).is_err(), "{bad}");
        }
        let o =
            Offer::parse("deflate:client_no_context_takeover,server_max_window_bits=10").unwrap();
        assert_eq!(
            o.header_value(),
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=10"
        );
        assert!(o
            .accept(b"permessage-deflate; server_max_window_bits=12")
            .is_err());
        assert!(Offer::parse("gzip").is_err());
        assert!(Offer::parse("deflate:client_max_window_bits=16").is_err());
        assert!(Offer::parse("deflate:level=9").is_err());
    }

    /// Messages deflated with and without context takeover inflate back, in pieces split at
    /// every byte, and the bound holds.
    #[test]
    fn round_trips_split_anywhere_and_bounded() {
        let payload = br#"{"type":"echo","payload":"sockstorm sockstorm sockstorm sockstorm"}"#;
        for reset in [false, true] {
            let n = Offer::default().accept(b"permessage-deflate").unwrap();
            let mut c = compressor(&n);
            let mut msgs = Vec::new();
            for _ in 0..3 {
                let mut out = Vec::new();
                deflate_message(&mut c, payload, reset, &mut out);
                assert!(out.len() < payload.len());
                msgs.push(out);
            }
            // With context takeover the later messages refer back: smaller.
            assert_eq!(msgs[2].len() < msgs[0].len(), !reset);
            for split in 0..msgs[0].len() {
                let mut d = inflater();
                for m in &msgs {
                    let mut got = Vec::new();
                    let mut left = 1 << 20;
                    let (a, b) = m.split_at(split.min(m.len()));
                    let mut sink = |p: &[u8]| -> Result<(), ()> {
                        got.extend_from_slice(p);
                        Ok(())
                    };
                    inflate_part(&mut d, a, false, &mut left, &mut sink).unwrap();
                    inflate_part(&mut d, b, true, &mut left, &mut sink).unwrap();
                    assert_eq!(&got[..], &payload[..]);
                }
            }
            let mut d = inflater();
            let mut left = 10;
            let r = inflate_part(&mut d, &msgs[0], true, &mut left, &mut |_| Ok::<(), ()>(()));
            assert_eq!(r, Err(Ok(InflateError::TooBig)));
        }
        let mut d = inflater();
        let r = inflate_part(&mut d, &[0xff; 16], true, &mut 100, &mut |_| {
            Ok::<(), ()>(())
        });
        assert_eq!(r, Err(Ok(InflateError::Corrupt)));
    }

    /// An empty message is one 0x00 byte, also right after another message with context
    /// takeover (where zlib's flush emits nothing), and the next message still inflates.
    #[test]
    fn an_empty_message_is_one_zero_byte_and_keeps_the_stream_in_step() {
        let n = Offer::default().accept(b"permessage-deflate").unwrap();
        let mut c = compressor(&n);
        let mut d = inflater();
        for payload in [&b"first"[..], b"", b"", b"after the empty ones"] {
            let mut z = Vec::new();
            deflate_message(&mut c, payload, false, &mut z);
            if payload.is_empty() {
                assert_eq!(z, [0]);
            }
            let mut got = Vec::new();
            inflate_part(&mut d, &z, true, &mut 1024, &mut |p| {
                got.extend_from_slice(p);
                Ok::<(), ()>(())
            })
            .unwrap();
            assert_eq!(got, payload);
        }
    }

    /// The server's side: the first acceptable offer is answered, hints that bind only once
    /// answered are answered, and the server's own asks are added.
    #[test]
    fn the_server_answers_the_first_offer_it_can_accept() {
        let plain = Offer::default();
        let a = |ours: &Offer, offers: &[&str]| {
            answer(ours, offers.iter().map(|o| o.as_bytes())).map(|(n, v)| {
                (
                    v,
                    n.client_no_context_takeover,
                    n.server_no_context_takeover,
                    n.server_max_window_bits,
                )
            })
        };
        assert_eq!(
            a(&plain, &["permessage-deflate; client_max_window_bits"]),
            Some(("permessage-deflate".into(), false, false, 15))
        );
        // Python websockets' and Node ws' offers with no context takeover.
        assert_eq!(
            a(
                &plain,
                &["permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits"]
            ),
            Some((
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
                    .into(),
                true,
                true,
                15
            ))
        );
        // An offer with an unknown or bad parameter is skipped for the next one.
        assert_eq!(
            a(
                &plain,
                &[
                    "x-webkit-deflate-frame, permessage-deflate; foo",
                    "permessage-deflate; server_max_window_bits=7",
                    "permessage-deflate; server_max_window_bits=12",
                ]
            ),
            Some((
                "permessage-deflate; server_max_window_bits=12".into(),
                false,
                false,
                12
            ))
        );
        assert_eq!(
            a(
                &plain,
                &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"]
            ),
            None
        );
        assert_eq!(a(&plain, &[]), None);
        // The server's asks: its window is the smaller; the client's is capped only if the
        // client said it can take a cap.
        let ours = Offer::parse(
            "deflate:server_no_context_takeover,server_max_window_bits=10,client_max_window_bits=9",
        )
        .unwrap();
        assert_eq!(
            a(&ours, &["permessage-deflate; server_max_window_bits=12; client_max_window_bits"]),
            Some((
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9"
                    .into(),
                false,
                true,
                10
            ))
        );
        assert_eq!(
            a(&ours, &["permessage-deflate"]),
            Some((
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=10".into(),
                false,
                true,
                10
            ))
        );
        // What the server answers, the client side accepts.
        for offer in [
            Offer::default(),
            Offer::parse("deflate:client_no_context_takeover,server_no_context_takeover").unwrap(),
            Offer::parse("deflate:server_max_window_bits=11,client_max_window_bits=12").unwrap(),
        ] {
            let (n, v) = answer(&ours, [offer.header_value().as_bytes()]).unwrap();
            assert_eq!(offer.accept(v.as_bytes()), Ok(n), "{v}");
        }
    }
}
