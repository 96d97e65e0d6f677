//! The gateway's fuzz bodies (`fuzz/` targets `gateway_command`: its command parser, checked
//! against serde_json; `gateway_deflate`: its permessage-deflate layer on a client's bytes),
//! and their smoke tests on stable. See `proto::fuzz_smoke` for how the bodies are shared with
//! the fuzz crate.
#![allow(
    unreachable_pub,
    reason = "the bodies are `pub` for the fuzz crate (feature `fuzzing`)"
)]

use super::ack::{AckRoute, Routes};
use super::command::{parse, stream_names, Command, COMMAND_WORDS};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;

/// Whether the top-level JSON object in `text` repeats a key (serde_json's `Value` keeps the
/// last; the parser's field struct refuses a repeated field).
fn repeats_a_key(text: &str) -> bool {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut seen = BTreeSet::new();
            let mut repeated = false;
            while let Some((k, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                repeated |= !seen.insert(k);
            }
            Ok(repeated)
        }
    }
    serde_json::Deserializer::from_str(text)
        .deserialize_map(Keys)
        .unwrap_or(true)
}

/// The reference: what a command object means, read from serde_json's `Value`. `None` for a
/// message to echo.
fn reference(o: &Map<String, Value>, text: &str, routes: &Routes) -> Option<&'static str> {
    let word = |k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .filter(|w| COMMAND_WORDS.contains(w) || routes.get(w).is_some())
    };
    let verb = word("action").or_else(|| word("type"));
    let kind = match verb {
        Some("subscribe") => "subscribe",
        Some("unsubscribe") => "unsubscribe",
        Some("publish") => match o.get("channel") {
            Some(Value::String(_)) => "publish",
            _ => return None,
        },
        Some("ping") => "ping",
        Some("resume_session") => "resume",
        Some(_) => "ack",
        None => match o.get("op").and_then(Value::as_str) {
            Some("subscribe") => "stream_subscribe",
            Some("unsubscribe") => "stream_unsubscribe",
            _ => return None,
        },
    };
    // The parser looks only at messages in which some string is a command word or route
    // action written without escapes (then the command may be spelled with them).
    text.split('"')
        .any(|p| COMMAND_WORDS.contains(&p) || routes.get(p).is_some())
        .then_some(kind)
}

/// Input: `[routes, text…]`: the low bit of `routes` adds a configured ack route parsed from
/// the text's first line (`ACTION=REPLY_TYPE:FIELD`); the rest is the message. Must hold: no
/// panic; a command is only found in a JSON object (syntax; see below); on a valid object without repeated
/// keys the parser finds the command serde_json's reading finds (kind and copied value: the
/// channel, `ts`, `lastSequence`, `streams`, or the route's field); every reply is a JSON
/// object with the type the command answers with; stream names are the strings of `streams`.
pub fn gateway_command(data: &[u8]) {
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let mut extra = Vec::new();
    let mut msg: &str = &text;
    if sel & 1 != 0 {
        if let Some((line, rest)) = text.split_once('\n') {
            if let Ok(route) = line.parse::<AckRoute>() {
                assert!(route.check().is_ok());
                extra.push(route);
            }
            msg = rest;
        }
    }
    let routes = Routes::new(&extra);
    let got = parse(msg, &routes);
    let value = serde_json::from_str::<Value>(msg.trim_start());
    let msg = msg.trim_start();
    if got.is_some() {
        // Syntax only: the parser skips unused fields as serde's `IgnoredAny`, which takes a
        // number beyond f64's range (`5e999`) that a `Value` refuses. Like the parser, skip
        // leading Unicode white space (a vertical tab is not JSON's).
        assert!(
            msg.trim_start().starts_with('{')
                && serde_json::from_str::<IgnoredAny>(msg.trim_start()).is_ok(),
            "a command in a message that is not a JSON object: {msg:?}"
        );
    }
    if let Some(c) = &got {
        match c.reply() {
            None => assert!(matches!(c, Command::Publish(_))),
            Some(reply) => {
                let r: Value = serde_json::from_str(&reply)
                    .unwrap_or_else(|e| panic!("reply {reply:?} to {msg:?}: {e}"));
                let head = r
                    .get("type")
                    .or_else(|| r.get("op"))
                    .and_then(Value::as_str);
                assert!(head.is_some_and(|h| !h.is_empty()), "{reply}");
            }
        }
    }
    let Ok(Value::Object(o)) = value else {
        return;
    };
    if repeats_a_key(msg.trim_start()) {
        return;
    }
    let want = reference(&o, msg, &routes);
    // A null field is no field, as serde reads an `Option`.
    let field = |k: &str| o.get(k).filter(|v| !v.is_null()).cloned();
    match (&got, want) {
        (None, None) => {}
        (Some(Command::Subscribe(ch)), Some("subscribe"))
        | (Some(Command::Unsubscribe(ch)), Some("unsubscribe")) => {
            assert_eq!(ch, &field("channel"))
        }
        (Some(Command::Publish(name)), Some("publish")) => {
            assert_eq!(field("channel"), Some(Value::String(name.to_string())))
        }
        (Some(Command::Ping(ts)), Some("ping")) => assert_eq!(ts, &field("ts")),
        (Some(Command::Resume(seq)), Some("resume")) => assert_eq!(seq, &field("lastSequence")),
        (Some(Command::Ack(route, v)), Some("ack")) => {
            let whole = Value::Object(o.clone());
            let at = route.path.iter().try_fold(&whole, |v, k| v.get(&**k));
            assert_eq!(v.as_ref(), at, "{msg}");
        }
        (Some(Command::StreamSubscribe(s)), Some("stream_subscribe"))
        | (Some(Command::StreamUnsubscribe(s)), Some("stream_unsubscribe")) => {
            assert_eq!(s, &field("streams"));
            let names: Vec<String> = stream_names(s).iter().map(|n| n.to_string()).collect();
            let want: Vec<String> = match s {
                Some(Value::String(n)) => vec![n.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            };
            assert_eq!(names, want);
        }
        (got, want) => panic!("{msg:?}: parsed {got:?}, serde_json reads {want:?}"),
    }
}

/// The gateway's permessage-deflate layer (`serve --compression`) on arbitrary client bytes:
/// `[mode, read size, bytes…]`; mode bit 0: client_no_context_takeover agreed; bits 1-2: how
/// much tungstenite takes per read. Never panics; what it hands tungstenite is always
/// well-formed masked frames without RSV1, never more than one inflate step is staged, and it
/// ends (at the input's end, or with a failure it names).
pub fn gateway_deflate(data: &[u8]) {
    use super::deflate::{failure, Deflate};
    use crate::proto::ws::deflate::{answer, Offer};
    use crate::proto::ws::frame::{Decoded, FrameDecoder};
    use std::io::{self, Read};
    const BOUND: usize = 64 << 10;
    let [mode, read_size, bytes @ ..] = data else {
        return;
    };
    let offer: &[u8] = if mode & 1 == 1 {
        b"permessage-deflate; client_no_context_takeover"
    } else {
        b"permessage-deflate"
    };
    let Some((agreed, _)) = answer(&Offer::default(), [offer]) else {
        unreachable!("a plain offer is accepted")
    };
    struct Chunks<'a>(&'a [u8], usize);
    impl Read for Chunks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.1.min(self.0.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut raw = Chunks(bytes, usize::from(*read_size).max(1));
    let mut z = Deflate::new(agreed, BOUND, Vec::new());
    let mut buf = vec![0u8; [1, 7, 64, 4096][usize::from(mode >> 1 & 3)]];
    let mut handed = Vec::new();
    loop {
        match z.read(&mut raw, &mut buf) {
            Ok(0) => break,
            Ok(n) => handed.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                assert!(failure(&e).is_some(), "{e}");
                break;
            }
        }
        assert!(z.staged() <= 4096 + 4096 + 14, "{}", z.staged());
    }
    // What tungstenite got decodes as a client's frames, none of them compressed (a
    // violation in the input ends the output before it).
    let mut dec = FrameDecoder::server();
    let mut input = &handed[..];
    while let Some(e) = dec
        .decode(&mut input)
        .unwrap_or_else(|v| panic!("handed on a bad frame: {v}"))
    {
        if let Decoded::Header(h) = e {
            assert!(!h.rsv1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fuzz_smoke::{smoke_runs, Gen};

    /// A command message, right or subtly wrong, sometimes after a configured route.
    pub(super) fn message(g: &mut Gen) -> Vec<u8> {
        let mut v = vec![g.byte()];
        if v[0] & 1 != 0 {
            let route = g.pick(&[
                "place_order=order_ack:order.id",
                "rate=rated:item",
                "ping=pong:ts",
                "a\"b=x:y",
                "x=y:",
                "  spaced = reply : a.b.c ",
            ]);
            v.extend_from_slice(route.as_bytes());
            v.push(b'\n');
        }
        let key = |g: &mut Gen| {
            g.pick(&[
                "action",
                "type",
                "op",
                "channel",
                "ts",
                "lastSequence",
                "streams",
                "order",
                "opId",
                "message",
                "x",
            ])
        };
        let word = |g: &mut Gen| {
            g.pick(&[
                "\"subscribe\"",
                "\"unsubscribe\"",
                "\"publish\"",
                "\"ping\"",
                "\"resume_session\"",
                "\"apply_operation\"",
                "\"send_message\"",
                "\"place_order\"",
                "\"pi\\u006eg\"",
                "\"other\"",
                "1",
                "null",
                "[\"a\",1,\"b\"]",
                "{\"id\":7}",
                "\"ch\"",
                "true",
            ])
        };
        let mut s = String::from(g.pick(&["{", " {", "[", "{"]));
        for i in 0..g.below(5) {
            if i > 0 {
                s.push(',');
            }
            let k = key(g);
            let w = word(g);
            s.push_str(&format!("\"{k}\":{w}"));
        }
        s.push_str(g.pick(&["}", "}", "}", "", "} x"]));
        v.extend_from_slice(s.as_bytes());
        v
    }

    /// A client's frames for the gateway's deflate layer: compressed messages (whole or in
    /// fragments), plain ones and control frames, each masked with its own key.
    fn client_frames(g: &mut Gen) -> Vec<u8> {
        use crate::proto::ws::deflate::{compressor, deflate_message, Offer};
        use crate::proto::ws::frame::{encode_frame_rsv1, OpCode};
        let mode = g.byte();
        let mut v = vec![mode, g.pick(&[1, 2, 3, 5, 64, 255])];
        let client_reset = mode & 1 == 1;
        let Ok(n) = Offer::default().accept(b"permessage-deflate") else {
            unreachable!("the plain answer is valid")
        };
        let mut c = compressor(&n);
        for _ in 0..1 + g.below(4) {
            let mask = [g.byte(), g.byte(), g.byte(), g.byte()];
            let payload: Vec<u8> = match g.below(3) {
                0 => br#"{"type":"echo","payload":"sockstorm sockstorm"}"#.to_vec(),
                1 => vec![g.byte(); g.below(3000)],
                _ => g.random(300),
            };
            match g.below(4) {
                0 => encode_frame_rsv1(&mut v, OpCode::Text, true, false, &payload, mask),
                1 => encode_frame_rsv1(&mut v, OpCode::Ping, true, false, b"k", mask),
                _ => {
                    let mut z = Vec::new();
                    deflate_message(&mut c, &payload, client_reset, &mut z);
                    if g.chance(2) && z.len() > 1 {
                        let (a, b) = z.split_at(g.below(z.len()));
                        encode_frame_rsv1(&mut v, OpCode::Binary, false, true, a, mask);
                        encode_frame_rsv1(&mut v, OpCode::Continuation, true, false, b, mask);
                    } else {
                        encode_frame_rsv1(&mut v, OpCode::Binary, true, true, &z, mask);
                    }
                }
            }
        }
        v
    }

    #[test]
    fn gateway_deflate_smoke() {
        smoke_runs(53, 20_000, client_frames, gateway_deflate);
    }

    #[test]
    fn gateway_command_smoke() {
        smoke_runs(51, 100_000, message, gateway_command);
    }

    /// The generator reaches every kind of command.
    #[test]
    fn gateway_command_generator_reaches_deep_paths() {
        let mut g = Gen::new(52);
        let routes = Routes::new(&[AckRoute::new("place_order", "order_ack", "order.id")]);
        let mut kinds = BTreeSet::new();
        for _ in 0..20_000 {
            let m = message(&mut g);
            let text = String::from_utf8_lossy(&m[1..]).into_owned();
            let msg = text.split_once('\n').map_or(&text[..], |(_, r)| r);
            if let Some(c) = parse(msg, &routes) {
                kinds.insert(format!("{c:?}").split('(').next().unwrap_or("").to_owned());
            }
        }
        assert_eq!(kinds.len(), 8, "{kinds:?}");
    }
}
