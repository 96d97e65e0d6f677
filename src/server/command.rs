//! Application-level commands a client sends the gateway as JSON text messages: channel
//! subscribe/unsubscribe/publish, the app heartbeat (`ping`) and session resume.
//!
//! A command names itself in `"action"` or `"type"` (`"action"` wins when both name one). The
//! parser is sans-IO and cheap for plain echo traffic: JSON is parsed only when the text starts
//! with `{` and mentions a command word, and then in one pass that skips every field it does not
//! need (a publish's payload is validated, not built).

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// Words that must appear in a text before it is parsed as JSON ("subscribe" also covers
/// "unsubscribe").
const COMMAND_WORDS: [&str; 4] = ["subscribe", "publish", "ping", "resume_session"];

/// A command the gateway acts on instead of echoing the message.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Command {
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
}

impl Command {
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

/// The command in a text message, `None` for anything that is to be echoed.
pub(super) fn parse(text: &str) -> Option<Command> {
    let text = text.trim_start();
    if !text.starts_with('{') || !COMMAND_WORDS.iter().any(|w| text.contains(w)) {
        return None;
    }
    let fields: Fields = serde_json::from_str(text).ok()?;
    let verb = match fields.action {
        Verb::Other => fields.kind,
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
        Verb::Other => return None,
    })
}

/// The fields of a command message; every other field is skipped without being built.
#[derive(Deserialize)]
struct Fields {
    /// `"action"`: the command, if it names one.
    #[serde(default)]
    action: Verb,
    /// `"type"`: the command when `"action"` names none.
    #[serde(default, rename = "type")]
    kind: Verb,
    /// `"channel"` of subscribe, unsubscribe and publish.
    channel: Option<Value>,
    /// `"ts"` of a ping.
    ts: Option<Value>,
    /// `"lastSequence"` of a resume.
    #[serde(rename = "lastSequence")]
    last_sequence: Option<Value>,
}

/// What an `"action"` or `"type"` value names; any JSON value is accepted (no allocation).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Verb {
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
    /// Absent, another string, or not a string.
    #[default]
    Other,
}

impl<'de> Deserialize<'de> for Verb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(VerbVisitor)
    }
}

/// Maps any JSON value to a [`Verb`].
struct VerbVisitor;

impl<'de> Visitor<'de> for VerbVisitor {
    type Value = Verb;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Verb, E> {
        Ok(match s {
            "subscribe" => Verb::Subscribe,
            "unsubscribe" => Verb::Unsubscribe,
            "publish" => Verb::Publish,
            "ping" => Verb::Ping,
            "resume_session" => Verb::Resume,
            _ => Verb::Other,
        })
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Verb, E> {
        Ok(Verb::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Verb, E> {
        Ok(Verb::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Verb, E> {
        Ok(Verb::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Verb, E> {
        Ok(Verb::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Verb, E> {
        Ok(Verb::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Verb, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Verb::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Verb, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Verb::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str) -> Option<String> {
        parse(text)?.reply()
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
        assert_eq!(parse(text), Some(Command::Publish("btc".into())));
        assert_eq!(reply(text), None);
        assert_eq!(
            parse(r#"{"type":"publish","channel":"x","ts":1}"#),
            Some(Command::Publish("x".into()))
        );
        // "action" names no command: "type" does.
        assert_eq!(
            parse(r#"{"action":7,"type":"publish","channel":"x"}"#),
            Some(Command::Publish("x".into()))
        );
        // No string channel: nothing to relay to, so it is echoed.
        assert_eq!(parse(r#"{"action":"publish"}"#), None);
        assert_eq!(parse(r#"{"action":"publish","channel":1}"#), None);
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
            assert_eq!(parse(text), None, "{text}");
        }
    }
}
