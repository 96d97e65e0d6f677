//! Looking into received messages without buffering them: a streaming scanner for a numeric
//! JSON field (server timestamps for one-way latency), and the matcher for an expected reply
//! (a subscription ack). Sans-IO, fed payload chunks as they arrive.

/// Unit of a server timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Milliseconds since the Unix epoch (JavaScript's `Date.now()`).
    Millis,
    /// Microseconds since the Unix epoch (`--latency-unit us`).
    Micros,
    /// Nanoseconds since the Unix epoch (`--latency-unit ns`), truncated to whole µs.
    Nanos,
}

impl TimeUnit {
    /// `v` in this unit as microseconds.
    pub fn to_us(self, v: u64) -> u64 {
        match self {
            Self::Millis => v.saturating_mul(1000),
            Self::Micros => v,
            Self::Nanos => v / 1000,
        }
    }
}

/// Where received messages carry their send time: `json:FIELD` in `unit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyField {
    /// The key with its quotes, as it appears in the JSON text (`"ts"`).
    key: Box<[u8]>,
    /// What the field's number counts (`--latency-unit`); converted to µs before the latency is
    /// taken.
    pub unit: TimeUnit,
}

impl LatencyField {
    /// The field named `name` (a JSON key) in `unit`.
    pub fn new(name: &str, unit: TimeUnit) -> Self {
        Self {
            key: format!("\"{name}\"").into_bytes().into(),
            unit,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ScanState {
    /// Matched this many bytes of the key.
    #[default]
    Key,
    /// After the key: whitespace, then `:`.
    Colon,
    /// After the colon: whitespace, then the first digit.
    Value,
    /// Inside the digits.
    Digits,
    /// The value is complete (or the field is absent or not a number).
    Done,
}

/// Streaming extraction of the first occurrence of a numeric field from one message.
#[derive(Debug, Clone, Copy, Default)]
pub struct FieldScan {
    state: ScanState,
    matched: u16,
    value: u64,
    found: bool,
}

impl FieldScan {
    /// Resets for a new message.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Feeds the next chunk of the message.
    pub fn feed(&mut self, field: &LatencyField, chunk: &[u8]) {
        let key = &field.key;
        for &b in chunk {
            match self.state {
                ScanState::Done => return,
                ScanState::Key => {
                    let m = usize::from(self.matched);
                    if key.get(m) == Some(&b) {
                        self.matched += 1;
                        if usize::from(self.matched) == key.len() {
                            self.state = ScanState::Colon;
                        }
                    } else {
                        // The key starts with `"`, which occurs nowhere else in it.
                        self.matched = u16::from(b == key[0]);
                    }
                }
                ScanState::Colon => match b {
                    b':' => self.state = ScanState::Value,
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    // A string value equal to our key: keep looking.
                    _ => {
                        self.matched = u16::from(b == key[0]);
                        self.state = ScanState::Key;
                    }
                },
                ScanState::Value => match b {
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    b'0'..=b'9' => {
                        self.value = u64::from(b - b'0');
                        self.found = true;
                        self.state = ScanState::Digits;
                    }
                    _ => self.state = ScanState::Done,
                },
                ScanState::Digits => match b {
                    b'0'..=b'9' => {
                        self.value = self
                            .value
                            .saturating_mul(10)
                            .saturating_add(u64::from(b - b'0'));
                    }
                    _ => self.state = ScanState::Done,
                },
            }
        }
    }

    /// The field's value, once the message has ended.
    pub fn value(&self) -> Option<u64> {
        self.found.then_some(self.value)
    }
}

/// What reply to expect after the on-open message.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpectPattern {
    /// A JSON object whose top-level `key` equals `value` (a string, or a number/bool as text).
    JsonEq {
        /// The top-level key to look up, as written after `json:` (no nesting: `a.b` is one key
        /// with a dot).
        key: String,
        /// The value it must have, as text: a string value must equal it, a number must parse to
        /// the same JSON number, a bool must read `true` or `false`.
        value: String,
    },
    /// A message containing these bytes.
    Contains(Box<[u8]>),
}

/// How much of a message is kept while an expectation waits: acks are small.
pub const EXPECT_PREFIX: usize = 4096;

impl ExpectPattern {
    /// Parses `json:KEY=VALUE` or `text:SUBSTRING`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("json:") {
            let (k, v) = rest.split_once('=').ok_or_else(|| {
                format!("`{s}`: expected json:KEY=VALUE, e.g. json:type=subscribed")
            })?;
            if k.is_empty() {
                return Err(format!("`{s}`: empty key"));
            }
            return Ok(Self::JsonEq {
                key: k.to_owned(),
                value: v.to_owned(),
            });
        }
        match s.strip_prefix("text:") {
            Some(t) if !t.is_empty() => Ok(Self::Contains(t.as_bytes().into())),
            _ => Err(format!("`{s}`: expected json:KEY=VALUE or text:SUBSTRING")),
        }
    }

    /// Whether `msg` (the first [`EXPECT_PREFIX`] bytes of a message) is the expected reply.
    pub fn matches(&self, msg: &[u8]) -> bool {
        match self {
            Self::Contains(needle) => msg.windows(needle.len()).any(|w| w == &needle[..]),
            Self::JsonEq { key, value } => {
                let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(msg) else {
                    return false;
                };
                match o.get(key) {
                    Some(serde_json::Value::String(s)) => s == value,
                    Some(serde_json::Value::Bool(b)) => value == if *b { "true" } else { "false" },
                    Some(serde_json::Value::Number(n)) => {
                        value.parse::<serde_json::Number>().is_ok_and(|v| v == *n)
                    }
                    _ => false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(field: &str, chunks: &[&[u8]]) -> Option<u64> {
        let f = LatencyField::new(field, TimeUnit::Micros);
        let mut s = FieldScan::default();
        for c in chunks {
            s.feed(&f, c);
        }
        s.value()
    }

    #[test]
    fn finds_the_field_across_any_split() {
        let msg = br#"{"type":"event","seq":7,"ts_us" : 1700000000123456,"x":1}"#;
        for i in 0..msg.len() {
            assert_eq!(
                scan("ts_us", &[&msg[..i], &msg[i..]]),
                Some(1_700_000_000_123_456),
                "split {i}"
            );
        }
        assert_eq!(scan("seq", &[msg]), Some(7));
        assert_eq!(
            scan("ts", &[msg]),
            None,
            "a prefix of another key is not the key"
        );
        assert_eq!(scan("ts_us", &[br#"{"a":"ts_us","ts_us":5}"#]), Some(5));
        assert_eq!(scan("ts_us", &[br#"{"ts_us":"late"}"#]), None);
        assert_eq!(
            scan("ts", &[br#"{"ts":12.75}"#]),
            Some(12),
            "fraction dropped"
        );
        assert_eq!(scan("ts", &[br#"{"tts":1,"ts":2}"#]), Some(2));
        assert_eq!(TimeUnit::Millis.to_us(3), 3000);
        assert_eq!(TimeUnit::Nanos.to_us(3999), 3);
    }

    #[test]
    fn expectations() {
        let p = ExpectPattern::parse("json:type=subscribed").unwrap();
        assert!(p.matches(br#"{"type":"subscribed","channel":"a"}"#));
        assert!(!p.matches(br#"{"type":"event"}"#));
        assert!(!p.matches(b"not json"));
        let n = ExpectPattern::parse("json:ok=true").unwrap();
        assert!(n.matches(br#"{"ok":true}"#));
        let code = ExpectPattern::parse("json:code=200").unwrap();
        assert!(code.matches(br#"{"code":200}"#));
        assert!(!code.matches(br#"{"code":201}"#));
        let t = ExpectPattern::parse("text:welcome").unwrap();
        assert!(t.matches(b"hello, welcome!"));
        assert!(!t.matches(b"hello"));
        assert!(ExpectPattern::parse("json:type")
            .unwrap_err()
            .contains("json:KEY=VALUE"));
        assert!(ExpectPattern::parse("subscribed").is_err());
    }
}
