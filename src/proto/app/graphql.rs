//! GraphQL over WebSocket, the `graphql-transport-ws` subprotocol of the graphql-ws library:
//! JSON messages with a `type`. The client sends `connection_init` (with an optional
//! `payload`) and waits for `connection_ack`; then `subscribe` with an `id` and a `payload`
//! (`{"query": …, "variables": …}`) starts an operation, answered by `next` messages (the
//! `payload` is an execution result, `{"data": …}`), then `complete`, or by `error` (an
//! array of GraphQL errors). Either side may send `ping`, answered by `pong`.

use super::json;
use std::io::Write;

/// The subprotocol offered in the upgrade.
pub const SUBPROTOCOL: &str = "graphql-transport-ws";

/// A message the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server<'a> {
    /// The connection is acknowledged.
    Ack,
    /// A ping, to answer with a pong.
    Ping,
    /// A pong, answering our ping.
    Pong,
    /// A result of operation `id`.
    Next {
        /// The operation's id as written (without quotes).
        id: &'a [u8],
        /// The execution result.
        payload: &'a [u8],
    },
    /// Operation `id` failed (its GraphQL errors in `payload`).
    Error {
        /// The operation's id.
        id: &'a [u8],
        /// The errors array.
        payload: &'a [u8],
    },
    /// Operation `id` is complete.
    Complete {
        /// The operation's id.
        id: &'a [u8],
    },
}

/// The message is not a graphql-transport-ws server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Parses one received text message.
pub fn parse(m: &[u8]) -> Result<Server<'_>, Malformed> {
    fn with_id(id: Option<&[u8]>) -> Result<&[u8], Malformed> {
        id.filter(|i| !i.is_empty()).ok_or(Malformed)
    }
    let (mut kind, mut id, mut payload) = (None, None, None);
    let mut f = json::fields(m);
    for (k, v) in f.by_ref() {
        match k {
            b"type" if kind.is_none() => kind = Some(json::plain_str(v).ok_or(Malformed)?),
            b"id" if id.is_none() => id = Some(json::plain_str(v).ok_or(Malformed)?),
            b"payload" if payload.is_none() => payload = Some(v),
            _ => {}
        }
    }
    if f.malformed() {
        return Err(Malformed);
    }
    Ok(match kind.ok_or(Malformed)? {
        b"connection_ack" => Server::Ack,
        b"ping" => Server::Ping,
        b"pong" => Server::Pong,
        b"next" => Server::Next {
            id: with_id(id)?,
            payload: payload.ok_or(Malformed)?,
        },
        b"error" => Server::Error {
            id: with_id(id)?,
            payload: payload.ok_or(Malformed)?,
        },
        b"complete" => Server::Complete { id: with_id(id)? },
        _ => return Err(Malformed),
    })
}

/// Appends `connection_init`, with `payload` (a JSON object) if given.
pub fn init(out: &mut Vec<u8>, payload: Option<&str>) {
    out.extend_from_slice(br#"{"type":"connection_init""#);
    if let Some(p) = payload {
        out.extend_from_slice(br#","payload":"#);
        out.extend_from_slice(p.as_bytes());
    }
    out.push(b'}');
}

/// Appends a `subscribe` of operation `{prefix}{n}` (its id): `op` is the payload object as
/// given (starting with `{`), or a GraphQL document, sent as `{"query": op}`.
pub fn subscribe(out: &mut Vec<u8>, prefix: &str, n: u64, op: &[u8]) {
    let _ = write!(out, r#"{{"id":"{prefix}{n}","type":"subscribe","payload":"#);
    if op.first() == Some(&b'{') {
        out.extend_from_slice(op);
    } else {
        out.extend_from_slice(br#"{"query":"#);
        json::push_string(out, op);
        out.push(b'}');
    }
    out.push(b'}');
}

/// Appends `complete` for operation `id` (we stop it).
pub fn complete(out: &mut Vec<u8>, id: &str) {
    let _ = write!(out, r#"{{"id":"{id}","type":"complete"}}"#);
}

/// Appends `pong` (answering a server ping).
pub fn pong(out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"type":"pong"}"#);
}

/// Appends `ping`.
pub fn ping(out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"type":"ping"}"#);
}

/// An operation as a scenario gives it: a payload object `{"query": …}`, or a document.
pub fn operation(text: &[u8]) -> Result<(), String> {
    if text.first() == Some(&b'{') {
        let q = json::field(text, b"query");
        if !json::is_value(text) || q.is_none() {
            return Err("a payload object needs a \"query\" field (or give the document itself: subscription { … })".into());
        }
    } else if text.iter().all(u8::is_ascii_whitespace) {
        return Err("an operation needs a document (e.g. subscription { ticks { n ts } })".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages() {
        assert_eq!(parse(br#"{"type":"connection_ack"}"#), Ok(Server::Ack));
        assert_eq!(
            parse(br#"{"type":"ping","payload":{"x":1}}"#),
            Ok(Server::Ping)
        );
        assert_eq!(parse(br#"{ "type" : "pong" }"#), Ok(Server::Pong));
        assert_eq!(
            parse(br#"{"id":"s0","type":"next","payload":{"data":{"counter":{"n":1,"ts":1733500000000}}}}"#),
            Ok(Server::Next {
                id: b"s0",
                payload: br#"{"data":{"counter":{"n":1,"ts":1733500000000}}}"#
            })
        );
        assert_eq!(
            parse(
                br#"{"type":"error","id":"7","payload":[{"message":"Cannot query field \"x\""}]}"#
            ),
            Ok(Server::Error {
                id: b"7",
                payload: br#"[{"message":"Cannot query field \"x\""}]"#
            })
        );
        assert_eq!(
            parse(br#"{"id":"s0","type":"complete"}"#),
            Ok(Server::Complete { id: b"s0" })
        );
        for bad in [
            &br#"{"type":"next","payload":{}}"#[..],
            br#"{"id":"1","type":"next"}"#,
            br#"{"type":"subscribe"}"#,
            br#"{"type":5}"#,
            br#"{"type":"complete","id":""}"#,
            b"[]",
            br#"{"type":"ping""#,
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
    fn every_prefix() {
        let m = br#"{"id":"s0","type":"next","payload":{"data":{"s":"}\"{"}}}"#;
        for i in 0..m.len() {
            assert_eq!(parse(&m[..i]), Err(Malformed));
        }
        assert!(parse(m).is_ok());
    }

    #[test]
    fn client_messages() {
        let mut o = Vec::new();
        init(&mut o, Some(r#"{"token":"t"}"#));
        assert_eq!(o, br#"{"type":"connection_init","payload":{"token":"t"}}"#);
        o.clear();
        subscribe(&mut o, "s", 0, b"subscription { counter(to: 3) { n } }");
        assert_eq!(o, br#"{"id":"s0","type":"subscribe","payload":{"query":"subscription { counter(to: 3) { n } }"}}"#);
        o.clear();
        subscribe(
            &mut o,
            "",
            1,
            br#"{"query":"query { echo(text: \"a\") }","variables":{}}"#,
        );
        assert_eq!(o, br#"{"id":"1","type":"subscribe","payload":{"query":"query { echo(text: \"a\") }","variables":{}}}"#);
        assert!(operation(b"{\"variables\":{}}").is_err());
        assert!(operation(b"  ").is_err());
        assert!(operation(b"subscription { a }").is_ok());
    }
}
