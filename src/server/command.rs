//! Application-level commands a client sends the gateway as JSON text messages: channel
//! subscribe/unsubscribe/publish, the app heartbeat (`ping`), session resume, ack routes
//! (module `ack`) and market-data stream subscriptions (`"op"`, module `feed`).
//!
//! A command names itself in `"action"` or `"type"` (`"action"` wins when both name one); a
//! stream subscription names itself in `"op"` (`subscribe`/`unsubscribe`, read only when
//! neither `"action"` nor `"type"` names a command). The parser is sans-IO and cheap for plain
//! echo traffic: JSON is parsed only when the text starts with `{` and one of its quoted
//! strings is a command word or route action (one `memchr` pass over the quotes), and then in
//! one pass that skips every field it does not need (a publish's payload is validated, not
//! built). A route's field is then read by a second pass that builds only that value.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::ack::{AckReply, Routes};

/// The command words of the gateway itself (route actions may not reuse them).
pub(super) const COMMAND_WORDS: [&str; 5] = [
    "subscribe",
    "unsubscribe",
    "publish",
    "ping",
    "resume_session",
];

/// A command the gateway acts on instead of echoing the message.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Command<'r> {
    /// Join `channel` (a string joins; any other value, or none, is only acknowledged).
    Subscribe(Option<Value>),
    /// Leave `channel` (as for `Subscribe`).
    Unsubscribe(Option<Value>),
    /// Relay the message verbatim to the members of this channel; no reply.
    Publish(Box<str>),
    /// App-level heartbeat, with the `ts` to copy into the pong.
    Ping(Option<Value>),
    /// Session resume, with the `lastSequence` to copy into the reply.
    Resume(Option<Value>),
    /// An ack route, with the message's value at the route's field path.
    Ack(&'r AckReply, Option<Value>),
    /// `{"op":"subscribe"}`: start the `"streams"` (copied into the reply).
    StreamSubscribe(Option<Value>),
    /// `{"op":"unsubscribe"}`: stop the `"streams"` (all of them without the field).
    StreamUnsubscribe(Option<Value>),
}

impl Command<'_> {
    /// The text sent back to the client; `None` for a publish (the publisher gets no reply).
    pub(super) fn reply(&self) -> Option<String> {
        // `Value`'s Display is compact JSON, so copied values keep their meaning exactly.
        Some(match self {
            Self::Subscribe(channel) => with_field(r#"{"type":"subscribed""#, "channel", channel),
            Self::Unsubscribe(channel) => {
                with_field(r#"{"type":"unsubscribed""#, "channel", channel)
            }
            Self::Ping(ts) => with_field(r#"{"type":"pong""#, "ts", ts),
            Self::Resume(seq) => with_field(r#"{"type":"resumed""#, "lastSequence", seq),
            Self::Ack(route, value) => route.reply(value.as_ref()),
            Self::StreamSubscribe(s) => with_field(r#"{"op":"subscribed""#, "streams", s),
            Self::StreamUnsubscribe(s) => with_field(r#"{"op":"unsubscribed""#, "streams", s),
            Self::Publish(_) => return None,
        })
    }
}

/// `head` (an unterminated JSON object), plus `"name":value` if there is a value, closed.
fn with_field(head: &str, name: &str, value: &Option<Value>) -> String {
    match value {
        Some(v) => format!(r#"{head},"{name}":{v}}}"#),
        None => format!("{head}}}"),
    }
}

/// Whether one of the quoted strings in `text` is a command word or a route action. Every
/// unescaped JSON string `"w"` is a piece of `text.split('"')`, whatever the parity of the
/// quotes before it, so no command is missed; a word spelled with escapes is not a command.
fn mentions_command(text: &str, routes: &Routes) -> bool {
    text.split('"')
        .any(|piece| COMMAND_WORDS.contains(&piece) || routes.get(piece).is_some())
}

/// The command in a text message, `None` for anything that is to be echoed.
pub(super) fn parse<'r>(text: &str, routes: &'r Routes) -> Option<Command<'r>> {
    let text = text.trim_start();
    if !text.starts_with('{') || !mentions_command(text, routes) {
        return None;
    }
    let fields: Fields<'_> = serde_json::from_str(text).ok()?;
    let verb = match fields.action.verb(routes) {
        Verb::Other => fields.kind.verb(routes),
        named => named,
    };
    Some(match verb {
        Verb::Subscribe => Command::Subscribe(fields.channel),
        Verb::Unsubscribe => Command::Unsubscribe(fields.channel),
        Verb::Publish => match fields.channel {
            Some(Value::String(name)) => Command::Publish(name.into_boxed_str()),
            // Nowhere to relay it: echoed like any other message.
            _ => return None,
        },
        Verb::Ping => Command::Ping(fields.ts),
        Verb::Resume => Command::Resume(fields.last_sequence),
        Verb::Route(route) => {
            let value = serde_json::Deserializer::from_str(text)
                .deserialize_any(PathSeed(&route.path))
                .ok()
                .flatten();
            Command::Ack(route, value)
        }
        Verb::Other => match fields.op.verb(routes) {
            Verb::Subscribe => Command::StreamSubscribe(fields.streams),
            Verb::Unsubscribe => Command::StreamUnsubscribe(fields.streams),
            _ => return None,
        },
    })
}

/// The stream names in a subscription's `"streams"`: the strings of an array, or a single
/// string; other values name none.
pub(super) fn stream_names(streams: &Option<Value>) -> Vec<Box<str>> {
    match streams {
        Some(Value::String(s)) => vec![s.as_str().into()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(Box::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// The fields of a command message; every other field is skipped without being built.
#[derive(Deserialize)]
struct Fields<'a> {
    /// `"action"`: the command, if it names one.
    #[serde(default, borrow)]
    action: Name<'a>,
    /// `"type"`: the command when `"action"` names none.
    #[serde(default, rename = "type", borrow)]
    kind: Name<'a>,
    /// `"op"`: a stream subscription when neither `"action"` nor `"type"` names a command.
    #[serde(default, borrow)]
    op: Name<'a>,
    /// `"channel"` of subscribe, unsubscribe and publish.
    channel: Option<Value>,
    /// `"ts"` of a ping.
    ts: Option<Value>,
    /// `"lastSequence"` of a resume.
    #[serde(rename = "lastSequence")]
    last_sequence: Option<Value>,
    /// `"streams"` of a stream subscription.
    streams: Option<Value>,
}

/// What a command word names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb<'r> {
    /// `"subscribe"`.
    Subscribe,
    /// `"unsubscribe"`.
    Unsubscribe,
    /// `"publish"`.
    Publish,
    /// `"ping"`.
    Ping,
    /// `"resume_session"`.
    Resume,
    /// An ack route's action.
    Route(&'r AckReply),
    /// Absent, another string, or not a string.
    Other,
}

/// A JSON value read only for the string it may be: borrowed from the text unless it has
/// escapes; any other value is accepted and skipped (no allocation).
#[derive(Debug, Default)]
enum Name<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// Absent, or not a string.
    #[default]
    Other,
}

impl Name<'_> {
    /// The command this names.
    fn verb<'r>(&self, routes: &'r Routes) -> Verb<'r> {
        let Self::Str(s) = self else {
            return Verb::Other;
        };
        match &**s {
            "subscribe" => Verb::Subscribe,
            "unsubscribe" => Verb::Unsubscribe,
            "publish" => Verb::Publish,
            "ping" => Verb::Ping,
            "resume_session" => Verb::Resume,
            word => routes.get(word).map_or(Verb::Other, Verb::Route),
        }
    }

    /// Whether this is the string `s`.
    fn is(&self, s: &str) -> bool {
        matches!(self, Self::Str(name) if name == s)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NameVisitor)
    }
}

/// Maps any JSON value to a [`Name`].
struct NameVisitor;

impl<'de> Visitor<'de> for NameVisitor {
    type Value = Name<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Name<'de>, E> {
        Ok(Name::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Name<'de>, E> {
        Ok(Name::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Name<'de>, E> {
        Ok(Name::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Name<'de>, E> {
        Ok(Name::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Name<'de>, E> {
        Ok(Name::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Name<'de>, E> {
        Ok(Name::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Name<'de>, E> {
        Ok(Name::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Name<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Name::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Name<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Name::Other)
    }
}

/// Reads the value at a field path (one segment per object level) and skips everything else
/// without building it; `None` if the path is not there.
struct PathSeed<'p>(&'p [Box<str>]);

impl<'de> DeserializeSeed<'de> for PathSeed<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        if self.0.is_empty() {
            Value::deserialize(d).map(Some)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for PathSeed<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return Ok(None);
        };
        let mut found = None;
        while let Some(key) = map.next_key::<Name<'de>>()? {
            if key.is(first) {
                // A repeated key: the last one counts, as in `serde_json::Value`.
                found = map.next_value_seed(PathSeed(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Value>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<Value>, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<Value>, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<Value>, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<Value>, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<Value>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<Value>, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::ack::AckRoute;
    use super::*;

    fn routes() -> Routes {
        Routes::new(&[])
    }

    fn reply(text: &str) -> Option<String> {
        parse(text, &routes())?.reply()
    }

    #[test]
    fn subscribe_ack_copies_channel() {
        assert_eq!(
            reply(r#"{"type":"subscribe","channel":"prices"}"#).as_deref(),
            Some(r#"{"type":"subscribed","channel":"prices"}"#)
        );
        assert_eq!(
            reply(r#" {"channel":{"a":[1,2]},"type":"subscribe"}"#).as_deref(),
            Some(r#"{"type":"subscribed","channel":{"a":[1,2]}}"#)
        );
        assert_eq!(
            reply(r#"{"type":"subscribe"}"#).as_deref(),
            Some(r#"{"type":"subscribed"}"#)
        );
        assert_eq!(
            reply(r#"{"action":"subscribe","channel":"a\"b"}"#).as_deref(),
            Some(r#"{"type":"subscribed","channel":"a\"b"}"#)
        );
        assert_eq!(
            reply(r#"{"action":"unsubscribe","channel":"prices"}"#).as_deref(),
            Some(r#"{"type":"unsubscribed","channel":"prices"}"#)
        );
        assert_eq!(
            reply(r#"{"type":"unsubscribe"}"#).as_deref(),
            Some(r#"{"type":"unsubscribed"}"#)
        );
    }

    #[test]
    fn subscribe_ack_ignores_everything_else() {
        assert_eq!(reply("subscribe"), None);
        assert_eq!(reply(r#"{"type":"subscribed"}"#), None);
        assert_eq!(reply(r#"{"type":"other","subscribe":1}"#), None);
        assert_eq!(reply(r#"{"type":"subscribe""#), None);
        assert_eq!(reply(r#"{"type":["subscribe"]}"#), None);
        assert_eq!(reply(&"[".repeat(10_000)), None);
        assert_eq!(reply(&format!("{{subscribe{}", "{".repeat(10_000))), None);
        assert_eq!(reply(r#"{"type":{"subscribe":[1,{"a":null}]}}"#), None);
    }

    #[test]
    fn publish_names_its_channel_and_gets_no_reply() {
        let text = r#"{"action":"publish","type":"trade","channel":"btc","data":{"px":[1,2.5]}}"#;
        assert_eq!(parse(text, &routes()), Some(Command::Publish("btc".into())));
        assert_eq!(reply(text), None);
        assert_eq!(
            parse(r#"{"type":"publish","channel":"x","ts":1}"#, &routes()),
            Some(Command::Publish("x".into()))
        );
        // "action" names no command: "type" does.
        assert_eq!(
            parse(r#"{"action":7,"type":"publish","channel":"x"}"#, &routes()),
            Some(Command::Publish("x".into()))
        );
        // No string channel: nothing to relay to, so it is echoed.
        assert_eq!(parse(r#"{"action":"publish"}"#, &routes()), None);
        assert_eq!(
            parse(r#"{"action":"publish","channel":1}"#, &routes()),
            None
        );
    }

    #[test]
    fn ping_and_resume_copy_their_fields() {
        assert_eq!(
            reply(r#"{"type":"ping","ts":1712345678901}"#).as_deref(),
            Some(r#"{"type":"pong","ts":1712345678901}"#)
        );
        assert_eq!(
            reply(r#"{"action":"ping"}"#).as_deref(),
            Some(r#"{"type":"pong"}"#)
        );
        assert_eq!(
            reply(r#"{"action":"resume_session","sessionId":"s1","lastSequence":42}"#).as_deref(),
            Some(r#"{"type":"resumed","lastSequence":42}"#)
        );
        assert_eq!(
            reply(r#"{"type":"resume_session"}"#).as_deref(),
            Some(r#"{"type":"resumed"}"#)
        );
        // Mentions "ping" but is not one.
        assert_eq!(reply(r#"{"type":"shipping"}"#), None);
        assert_eq!(reply(r#"{"type":"pong","ts":1}"#), None);
    }

    #[test]
    fn echo_traffic_is_not_parsed() {
        for text in [
            r#"{"type":"echo","payload":"sockstorm demo message"}"#,
            "hello",
            "",
            "[\"subscribe\"]",
        ] {
            assert_eq!(parse(text, &routes()), None, "{text}");
        }
    }

    #[test]
    fn ack_routes_copy_the_field_exactly() {
        for (sent, answer) in [
            (
                r#"{"action":"apply_operation","documentId":"d1","opId":42}"#,
                r#"{"type":"operation_applied","opId":42}"#,
            ),
            (
                r#"{"action":"rate","itemId":123,"score":5}"#,
                r#"{"type":"ack","itemId":123}"#,
            ),
            (
                r#"{"type":"rate","itemId":"x\"y"}"#,
                r#"{"type":"ack","itemId":"x\"y"}"#,
            ),
            (
                r#"{"action":"send_message","message":{"text":"hi","id":"k3j","x":[{"id":1}]}}"#,
                r#"{"type":"message_ack","id":"k3j"}"#,
            ),
            (
                r#"{"action":"join_document","documentId":{"a":[1,2.5,null]},"presence":{}}"#,
                r#"{"type":"document_joined","documentId":{"a":[1,2.5,null]}}"#,
            ),
            // Without the field (or a path through a non-object), the reply has no field.
            (
                r#"{"action":"apply_operation","operation":{"opId":1}}"#,
                r#"{"type":"operation_applied"}"#,
            ),
            (
                r#"{"action":"send_message","message":"id"}"#,
                r#"{"type":"message_ack"}"#,
            ),
            (
                r#"{"action":"send_message","message":[{"id":1}]}"#,
                r#"{"type":"message_ack"}"#,
            ),
            // A repeated key: the last one counts.
            (
                r#"{"action":"rate","itemId":1,"itemId":2}"#,
                r#"{"type":"ack","itemId":2}"#,
            ),
            // "action" names the route even when "type" names a command.
            (
                r#"{"type":"ping","action":"rate","itemId":7}"#,
                r#"{"type":"ack","itemId":7}"#,
            ),
        ] {
            assert_eq!(reply(sent).as_deref(), Some(answer), "{sent}");
        }
        // Route-like words that are not routes are echoed.
        assert_eq!(reply(r#"{"action":"rates","itemId":1}"#), None);
        assert_eq!(reply(r#"{"type":"ack","itemId":1}"#), None);
        assert_eq!(reply(r#"{"note":"rate","itemId":1}"#), None);
        // Existing commands keep their replies.
        assert_eq!(
            reply(r#"{"action":"ping","ts":1,"opId":3}"#).as_deref(),
            Some(r#"{"type":"pong","ts":1}"#)
        );
    }

    #[test]
    fn configured_ack_routes_are_recognized() {
        let routes = Routes::new(&[
            AckRoute::new("place_order", "order_ack", "order.meta.id"),
            AckRoute::new("rate", "rated", "itemId"),
        ]);
        let reply = |text| parse(text, &routes).and_then(|c| c.reply());
        assert_eq!(
            reply(r#"{"action":"place_order","order":{"meta":{"id":[9]}}}"#).as_deref(),
            Some(r#"{"type":"order_ack","id":[9]}"#)
        );
        assert_eq!(
            reply(r#"{"action":"rate","itemId":1}"#).as_deref(),
            Some(r#"{"type":"rated","itemId":1}"#)
        );
        assert_eq!(
            reply(r#"{"action":"send_message","message":{"id":1}}"#).as_deref(),
            Some(r#"{"type":"message_ack","id":1}"#)
        );
    }

    #[test]
    fn op_subscribe_names_streams() {
        let text = r#"{"op":"subscribe","streams":["quotes.NASDAQ:AAPL","quotes.NYSE:IBM"]}"#;
        let table = routes();
        let cmd = parse(text, &table).unwrap();
        let Command::StreamSubscribe(streams) = &cmd else {
            panic!("{cmd:?}");
        };
        assert_eq!(
            stream_names(streams),
            [
                Box::from("quotes.NASDAQ:AAPL"),
                Box::from("quotes.NYSE:IBM")
            ]
        );
        assert_eq!(
            cmd.reply().as_deref(),
            Some(r#"{"op":"subscribed","streams":["quotes.NASDAQ:AAPL","quotes.NYSE:IBM"]}"#)
        );
        assert_eq!(
            reply(r#"{"op":"unsubscribe","streams":["a"]}"#).as_deref(),
            Some(r#"{"op":"unsubscribed","streams":["a"]}"#)
        );
        assert_eq!(
            parse(r#"{"op":"unsubscribe"}"#, &routes()),
            Some(Command::StreamUnsubscribe(None))
        );
        assert_eq!(stream_names(&Some("one".into())), [Box::from("one")]);
        assert!(stream_names(&Some(serde_json::json!([1, null]))).is_empty());
        // "type" and "action" come first: a channel subscribe stays one.
        assert_eq!(
            parse(
                r#"{"type":"subscribe","op":"subscribe","channel":"c"}"#,
                &routes()
            ),
            Some(Command::Subscribe(Some("c".into())))
        );
        assert_eq!(parse(r#"{"op":"publish","channel":"c"}"#, &routes()), None);
    }

    #[test]
    fn escaped_strings_are_read_but_not_searched() {
        // An escape in an earlier string does not hide the command.
        assert_eq!(
            reply(r#"{"note":"a\"b\\","type":"ping"}"#).as_deref(),
            Some(r#"{"type":"pong"}"#)
        );
        // A command word spelled with escapes is not looked for (nor was it before).
        assert_eq!(reply(r#"{"type":"p\u0069ng"}"#), None);
    }
}
