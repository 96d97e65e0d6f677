//! Socket.IO v4 over Engine.IO v4, WebSocket transport only (`EIO=4&transport=websocket`).
//!
//! Engine.IO frames each WebSocket text message with a one-character packet type: `0` open
//! (a JSON object with `sid`, `pingInterval`, `pingTimeout`), `1` close, `2` ping (the server
//! pings; the client answers `3`), `4` message, `6` noop. A message carries a Socket.IO packet:
//! a type digit (`0` connect, `1` disconnect, `2` event, `3` ack, `4` connect error, `5`/`6`
//! binary event/ack), then the namespace (`/chat,`, absent for `/`), then an ack id (digits),
//! then the JSON data: `42/chat,17["echo",{"n":1}]`.

use super::json;
use std::io::Write;

/// An Engine.IO packet as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine<'a> {
    /// The handshake: the server pings every `ping_interval_ms` and gives up on a client
    /// that has not answered after `ping_timeout_ms` more.
    Open {
        /// `pingInterval`, ms.
        ping_interval_ms: u64,
        /// `pingTimeout`, ms.
        ping_timeout_ms: u64,
    },
    /// The server closes the Engine.IO session.
    Close,
    /// A server ping, to answer with `3` (its data echoed).
    Ping(&'a [u8]),
    /// A pong (to a ping we never send; ignored).
    Pong,
    /// A Socket.IO packet.
    Message(Packet<'a>),
    /// Nothing (`6`), or an upgrade (`5`) that a WebSocket-only client never asks for.
    Noop,
}

/// Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The namespace is connected (`data`: `{"sid":…}`).
    Connect,
    /// The server disconnected us from the namespace.
    Disconnect,
    /// An event: `data` is the arguments array, the event name first.
    Event,
    /// An acknowledgement of our packet `id`: `data` is the ack's arguments.
    Ack,
    /// The namespace refused us: `data` is `{"message":…}`.
    ConnectError,
    /// An event or ack with binary attachments (sent as further binary messages).
    Binary,
}

/// A Socket.IO packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Its type.
    pub kind: Kind,
    /// The namespace, `/` when absent.
    pub namespace: &'a [u8],
    /// The ack id, if it has one.
    pub id: Option<u64>,
    /// The JSON data (possibly empty).
    pub data: &'a [u8],
}

/// The message is not an Engine.IO/Socket.IO v4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Parses one received text message.
pub fn parse(m: &[u8]) -> Result<Engine<'_>, Malformed> {
    let (&t, rest) = m.split_first().ok_or(Malformed)?;
    Ok(match t {
        b'0' => {
            let get = |name: &[u8]| json::field(rest, name).and_then(json::uint);
            match (get(b"pingInterval"), get(b"pingTimeout")) {
                (Some(i), Some(t)) => Engine::Open {
                    ping_interval_ms: i,
                    ping_timeout_ms: t,
                },
                _ => return Err(Malformed),
            }
        }
        b'1' => Engine::Close,
        b'2' => Engine::Ping(rest),
        b'3' => Engine::Pong,
        b'4' => Engine::Message(packet(rest)?),
        b'5' | b'6' => Engine::Noop,
        _ => return Err(Malformed),
    })
}

fn packet(p: &[u8]) -> Result<Packet<'_>, Malformed> {
    let (&t, mut rest) = p.split_first().ok_or(Malformed)?;
    let kind = match t {
        b'0' => Kind::Connect,
        b'1' => Kind::Disconnect,
        b'2' => Kind::Event,
        b'3' => Kind::Ack,
        b'4' => Kind::ConnectError,
        b'5' | b'6' => Kind::Binary,
        _ => return Err(Malformed),
    };
    if kind == Kind::Binary {
        // `<n>-` attachments count.
        let dash = rest.iter().position(|&c| c == b'-').ok_or(Malformed)?;
        if dash == 0 || !rest[..dash].iter().all(u8::is_ascii_digit) {
            return Err(Malformed);
        }
        rest = &rest[dash + 1..];
    }
    let mut namespace: &[u8] = b"/";
    if rest.first() == Some(&b'/') {
        let end = rest.iter().position(|&c| c == b',').unwrap_or(rest.len());
        namespace = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let id = match digits {
        0 => None,
        n => Some(json::uint(&rest[..n]).ok_or(Malformed)?),
    };
    let data = &rest[digits..];
    if !data.is_empty() && !json::is_value(data) {
        return Err(Malformed);
    }
    if kind == Kind::Event && json::first_element(data).is_none() {
        return Err(Malformed);
    }
    Ok(Packet {
        kind,
        namespace,
        id,
        data,
    })
}

/// Appends `40` + namespace + the optional auth object: the namespace CONNECT.
pub fn connect(out: &mut Vec<u8>, namespace: &str, auth: Option<&str>) {
    out.extend_from_slice(b"40");
    ns(out, namespace);
    if let Some(a) = auth {
        out.extend_from_slice(a.as_bytes());
    }
}

/// Appends `41` + namespace: we leave the namespace.
pub fn disconnect(out: &mut Vec<u8>, namespace: &str) {
    out.extend_from_slice(b"41");
    ns(out, namespace);
}

/// Appends an EVENT with the arguments array `args` (`["name", …]`), asking for an ack when
/// `ack` is given.
pub fn event(out: &mut Vec<u8>, namespace: &str, ack: Option<u64>, args: &[u8]) {
    out.extend_from_slice(b"42");
    ns(out, namespace);
    if let Some(id) = ack {
        let _ = write!(out, "{id}");
    }
    out.extend_from_slice(args);
}

/// Appends the pong answering a ping with `data`.
pub fn pong(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'3');
    out.extend_from_slice(data);
}

/// A namespace other than `/` is written before the rest, followed by a comma (as
/// socket.io-parser writes it, whatever follows).
fn ns(out: &mut Vec<u8>, namespace: &str) {
    if namespace != "/" {
        out.extend_from_slice(namespace.as_bytes());
        out.push(b',');
    }
}

/// Whether `text` is an emit's arguments as Socket.IO writes them: a JSON array whose first
/// element is the event name (a string).
pub fn is_emit(text: &[u8]) -> bool {
    json::is_value(text) && json::first_element(text).is_some_and(|e| e.first() == Some(&b'"'))
}

/// The `/chat` of a namespace given as `chat` or `/chat`; `/` stays `/`. Namespaces are
/// path-like names: letters, digits and `-_./`.
pub fn namespace(s: &str) -> Result<String, String> {
    let n = if s.starts_with('/') {
        s.to_string()
    } else {
        format!("/{s}")
    };
    if n.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        Ok(n)
    } else {
        Err(format!(
            "`{s}` is not a namespace (e.g. /chat: letters, digits and - _ . /)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_packets() {
        let open = br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":5000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(
            parse(open),
            Ok(Engine::Open {
                ping_interval_ms: 5000,
                ping_timeout_ms: 20000
            })
        );
        assert_eq!(parse(b"2"), Ok(Engine::Ping(b"")));
        assert_eq!(parse(b"2probe"), Ok(Engine::Ping(b"probe")));
        assert_eq!(parse(b"1"), Ok(Engine::Close));
        assert_eq!(parse(b"6"), Ok(Engine::Noop));
        assert_eq!(parse(b""), Err(Malformed));
        assert_eq!(parse(b"0{}"), Err(Malformed));
        assert_eq!(parse(b"9"), Err(Malformed));
    }

    #[test]
    fn socketio_packets() {
        let p = |m: &'static [u8]| match parse(m) {
            Ok(Engine::Message(p)) => p,
            other => panic!("{other:?}"),
        };
        let c = p(br#"40/chat,{"sid":"x"}"#);
        assert_eq!(
            (c.kind, c.namespace, c.id, c.data),
            (Kind::Connect, &b"/chat"[..], None, &br#"{"sid":"x"}"#[..])
        );
        let e = p(br#"42["echo",{"n":1}]"#);
        assert_eq!(
            (e.kind, e.namespace, e.data),
            (Kind::Event, &b"/"[..], &br#"["echo",{"n":1}]"#[..])
        );
        let a = p(br#"43/chat,17[{"ok":true}]"#);
        assert_eq!(
            (a.kind, a.id, a.data),
            (Kind::Ack, Some(17), &br#"[{"ok":true}]"#[..])
        );
        assert_eq!(p(b"41/chat,").kind, Kind::Disconnect);
        assert_eq!(p(b"41").namespace, b"/");
        assert_eq!(
            p(br#"44/chat,{"message":"Not authorized"}"#).kind,
            Kind::ConnectError
        );
        let b = p(br#"451-/chat,["file",{"_placeholder":true,"num":0}]"#);
        assert_eq!((b.kind, b.namespace), (Kind::Binary, &b"/chat"[..]));
        for bad in [
            &b"4"[..],
            b"47",
            b"42[",
            b"42{}",
            b"42/chat,[1",
            b"45-[]",
            b"4299999999999999999999[\"a\"]",
        ] {
            assert_eq!(
                parse(bad),
                Err(Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn encoders() {
        let mut o = Vec::new();
        connect(&mut o, "/", None);
        assert_eq!(o, b"40");
        o.clear();
        connect(&mut o, "/chat", Some(r#"{"token":"t"}"#));
        assert_eq!(o, br#"40/chat,{"token":"t"}"#);
        o.clear();
        event(&mut o, "/chat", Some(12), br#"["echo",1]"#);
        assert_eq!(o, br#"42/chat,12["echo",1]"#);
        o.clear();
        event(&mut o, "/", None, br#"["echo",1]"#);
        assert_eq!(o, br#"42["echo",1]"#);
        o.clear();
        disconnect(&mut o, "/chat");
        assert_eq!(o, b"41/chat,");
        assert!(is_emit(br#"["chat message", {"a": 1}]"#));
        assert!(!is_emit(br#"{"a": 1}"#));
        assert!(!is_emit(b"[1,2]"));
        assert_eq!(namespace("chat").as_deref(), Ok("/chat"));
        assert!(namespace("a b").is_err());
    }

    /// Every split of a message gives the same packet once whole: the layer parses whole
    /// WebSocket messages (the frame codec reassembles them), so what matters is that no
    /// prefix of a valid packet panics, and the whole one parses.
    #[test]
    fn every_prefix() {
        let m = br#"43/chat,17[{"ok":true,"s":"a\"]"}]"#;
        for i in 0..=m.len() {
            let _ = parse(&m[..i]);
        }
        assert!(matches!(
            parse(m),
            Ok(Engine::Message(Packet { id: Some(17), .. }))
        ));
    }
}
