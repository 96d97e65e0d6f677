//! Ack routes: request/reply with an id, as real gateways answer. A JSON text message whose
//! `"action"` (or `"type"`) names a route is answered `{"type":REPLY_TYPE,"NAME":VALUE}`, where
//! VALUE is the message's value at the route's field path, copied exactly, and NAME is the
//! path's last segment (`message.id` → `"id"`). A message without that field is answered
//! `{"type":REPLY_TYPE}`.
//!
//! The built-in routes come from the seed articles (LoadForge's Locust scenarios, the k6
//! "rate → ack" example); [`ServeConfig::acks`](super::ServeConfig::acks) adds routes or
//! overrides built-in ones by action. The table is built once at start and shared read-only
//! by every worker.

use std::fmt;
use std::str::FromStr;

use super::command::COMMAND_WORDS;
use super::ServerError;

/// The built-in routes: `(action, reply type, field path)`.
const BUILTIN: [(&str, &str, &str); 4] = [
    ("apply_operation", "operation_applied", "opId"),
    ("rate", "ack", "itemId"),
    ("send_message", "message_ack", "message.id"),
    ("join_document", "document_joined", "documentId"),
];

/// One ack route, as configured: `ACTION=REPLY_TYPE:FIELD` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRoute {
    /// The `"action"` / `"type"` value that selects the route, e.g. `apply_operation`. Not a
    /// command the gateway already has (subscribe, unsubscribe, publish, ping, resume_session),
    /// and without quotes, backslashes or control characters.
    pub action: String,
    /// The reply's `"type"`, e.g. `operation_applied`.
    pub reply_type: String,
    /// The field copied into the reply, a dotted path into nested objects (`message.id`); the
    /// reply names it by its last segment.
    pub field: String,
}

impl AckRoute {
    /// A route from its three parts.
    #[must_use]
    pub fn new(action: &str, reply_type: &str, field: &str) -> Self {
        Self {
            action: action.to_owned(),
            reply_type: reply_type.to_owned(),
            field: field.to_owned(),
        }
    }

    /// The built-in routes, in the order they are documented.
    #[must_use]
    pub fn builtin() -> Vec<Self> {
        BUILTIN
            .iter()
            .map(|&(action, reply, field)| Self::new(action, reply, field))
            .collect()
    }

    /// Why this route cannot be served, if it cannot.
    pub(super) fn check(&self) -> Result<(), ServerError> {
        let invalid = |reason| {
            Err(ServerError::InvalidAckRoute {
                route: self.to_string(),
                reason,
            })
        };
        if self.action.is_empty() {
            return invalid("the action is empty");
        }
        if COMMAND_WORDS.contains(&self.action.as_str()) {
            return invalid("the action is a command the gateway already answers");
        }
        if self
            .action
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return invalid("the action contains a quote, backslash or control character");
        }
        if self.reply_type.is_empty() {
            return invalid("the reply type is empty");
        }
        if self.field.split('.').any(str::is_empty) {
            return invalid("the field path is empty or has an empty segment");
        }
        Ok(())
    }
}

impl fmt::Display for AckRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}:{}", self.action, self.reply_type, self.field)
    }
}

impl FromStr for AckRoute {
    type Err = ServerError;

    /// `ACTION=REPLY_TYPE:FIELD`, e.g. `publish_order=order_ack:order.id`.
    fn from_str(s: &str) -> Result<Self, ServerError> {
        let Some((action, rest)) = s.split_once('=') else {
            return Err(ServerError::InvalidAckRoute {
                route: s.to_owned(),
                reason: "not ACTION=REPLY_TYPE:FIELD (e.g. apply_operation=operation_applied:opId)",
            });
        };
        let Some((reply_type, field)) = rest.rsplit_once(':') else {
            return Err(ServerError::InvalidAckRoute {
                route: s.to_owned(),
                reason: "no `:FIELD` after the reply type (e.g. rate=ack:itemId)",
            });
        };
        let route = Self::new(action.trim(), reply_type.trim(), field.trim());
        route.check()?;
        Ok(route)
    }
}

/// A route ready to answer: the reply's fixed parts pre-rendered.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AckReply {
    /// The action that selects it.
    action: Box<str>,
    /// `{"type":"REPLY_TYPE"` (JSON-escaped, unterminated).
    head: Box<str>,
    /// The field path, one segment per level.
    pub(super) path: Box<[Box<str>]>,
    /// The last path segment as a JSON string, quotes included: the reply's field name.
    name: Box<str>,
}

impl AckReply {
    /// The reply text, with `value` (the sent message's value at the path) if there is one.
    pub(super) fn reply(&self, value: Option<&serde_json::Value>) -> String {
        // `Value`'s Display is compact JSON, so the copied value keeps its meaning exactly.
        match value {
            Some(v) => format!("{},{}:{v}}}", self.head, self.name),
            None => format!("{}}}", self.head),
        }
    }
}

/// The route table of a gateway: built-in routes, then the configured ones (which replace a
/// built-in route with the same action).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Routes {
    /// Few entries: looked up by a linear scan after the length filter.
    routes: Vec<AckReply>,
    /// Bit `min(len, 63)` is set for each action's length: most strings in a message are
    /// rejected by one test.
    lens: u64,
}

impl Routes {
    /// The built-in routes plus `extra` (validated by [`AckRoute::check`] first).
    pub(super) fn new(extra: &[AckRoute]) -> Self {
        let mut routes: Vec<AckReply> = Vec::new();
        for route in AckRoute::builtin().iter().chain(extra) {
            let reply = compile(route);
            match routes.iter_mut().find(|r| r.action == reply.action) {
                Some(old) => *old = reply,
                None => routes.push(reply),
            }
        }
        let lens = routes.iter().fold(0, |m, r| m | len_bit(r.action.len()));
        Self { routes, lens }
    }

    /// The route whose action is `word`.
    pub(super) fn get(&self, word: &str) -> Option<&AckReply> {
        if self.lens & len_bit(word.len()) == 0 {
            return None;
        }
        self.routes.iter().find(|r| *r.action == *word)
    }
}

/// The length-filter bit of a string of `len` bytes.
fn len_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// The pre-rendered form of `route`.
fn compile(route: &AckRoute) -> AckReply {
    let path: Box<[Box<str>]> = route.field.split('.').map(Box::from).collect();
    let last = path.last().map_or("", |s| s);
    AckReply {
        action: route.action.as_str().into(),
        head: format!(r#"{{"type":{}"#, json_string(&route.reply_type)).into(),
        name: json_string(last).into(),
        path,
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_form_parses_and_bad_routes_are_refused() {
        assert_eq!(
            "place_order=order_ack:order.id"
                .parse::<AckRoute>()
                .unwrap(),
            AckRoute::new("place_order", "order_ack", "order.id")
        );
        // The reply type may contain ':' — the field is after the last one.
        assert_eq!(
            "a=ns:ack:id".parse::<AckRoute>().unwrap(),
            AckRoute::new("a", "ns:ack", "id")
        );
        for bad in [
            "noequals",
            "a=nocolon",
            "=ack:id",
            "a=:id",
            "a=ack:",
            "a=ack:x..y",
            "ping=pong:ts",
            "subscribe=x:y",
            "a\"b=ack:id",
        ] {
            assert!(bad.parse::<AckRoute>().is_err(), "{bad}");
        }
    }

    #[test]
    fn configured_routes_add_and_override() {
        let routes = Routes::new(&[
            AckRoute::new("rate", "rated", "item.id"),
            AckRoute::new("buy", "bought", "n"),
        ]);
        let rate = routes.get("rate").unwrap();
        assert_eq!(rate.reply(None), r#"{"type":"rated"}"#);
        assert_eq!(&*rate.path, [Box::from("item"), Box::from("id")]);
        assert_eq!(
            routes.get("buy").unwrap().reply(Some(&5.into())),
            r#"{"type":"bought","n":5}"#
        );
        assert!(routes.get("apply_operation").is_some());
        assert!(routes.get("rates").is_none() && routes.get("").is_none());
        // Reply types and names are escaped.
        let odd = Routes::new(&[AckRoute::new("x", "a\"b", "c\"d")]);
        assert_eq!(
            odd.get("x").unwrap().reply(Some(&true.into())),
            r#"{"type":"a\"b","c\"d":true}"#
        );
    }
}
