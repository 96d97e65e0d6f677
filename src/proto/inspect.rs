//! Looking into received messages without buffering them: a streaming scanner for a numeric
//! JSON field (server timestamps for one-way latency), and the matcher for an expected reply
//! (a subscription ack). Sans-IO, fed payload chunks as they arrive.

/// Unit of a server timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Seconds since the Unix epoch, usually with a fraction (Python's `time.time()`,
    /// `--latency-unit s`).
    Seconds,
    /// Milliseconds since the Unix epoch (JavaScript's `Date.now()`).
    Millis,
    /// Microseconds since the Unix epoch (`--latency-unit us`).
    Micros,
    /// Nanoseconds since the Unix epoch (`--latency-unit ns`), truncated to whole µs.
    Nanos,
}

impl TimeUnit {
    /// The power of ten that turns this unit into µs.
    const fn micros_exp(self) -> i32 {
        match self {
            Self::Seconds => 6,
            Self::Millis => 3,
            Self::Micros => 0,
            Self::Nanos => -3,
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
    /// Inside the integer digits.
    Digits,
    /// Inside the digits after the decimal point.
    Fraction,
    /// After `e` or `E`: a sign or the first exponent digit.
    ExponentSign,
    /// Inside the exponent's digits.
    Exponent,
    /// The value is complete (or the field is absent or not a number).
    Done,
}

/// Digits kept of a number: one more is appended while the mantissa is below this, so 19
/// significant digits are kept (10^19 - 1 fits a `u64`) and every integer below 10^19 (any
/// id, sequence or nanosecond timestamp of this era) reads exactly.
const MANTISSA_MAX: u64 = 1_000_000_000_000_000_000;

/// Streaming extraction of the first occurrence of a numeric field from one message.
///
/// The number is read exactly as decimal text, never through a float: its first 19
/// significant digits as an integer `mantissa` and a power of ten, so `1712345678.123456`
/// seconds is 1712345678123456 µs to the µs (an `f64` would round it). A fraction, an
/// exponent (`1.7e9`) and leading zeros are read; a negative number or a string is not a
/// value.
#[derive(Debug, Clone, Copy, Default)]
pub struct FieldScan {
    state: ScanState,
    matched: u16,
    found: bool,
    exp_negative: bool,
    /// Power of ten of the mantissa's last digit (digits dropped, or after the point); i8
    /// keeps the scan at 16 bytes (five per connection) and saturates far beyond any time.
    exp: i8,
    /// The written exponent (`e…`), saturated at ±999.
    exp_written: i16,
    mantissa: u64,
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
                        self.mantissa = u64::from(b - b'0');
                        self.found = true;
                        self.state = ScanState::Digits;
                    }
                    _ => self.state = ScanState::Done,
                },
                ScanState::Digits => match b {
                    b'0'..=b'9' => {
                        if self.mantissa < MANTISSA_MAX {
                            self.mantissa = self.mantissa * 10 + u64::from(b - b'0');
                        } else {
                            self.exp = self.exp.saturating_add(1);
                        }
                    }
                    b'.' => self.state = ScanState::Fraction,
                    b'e' | b'E' => self.state = ScanState::ExponentSign,
                    _ => self.state = ScanState::Done,
                },
                ScanState::Fraction => match b {
                    b'0'..=b'9' => {
                        if self.mantissa < MANTISSA_MAX {
                            self.mantissa = self.mantissa * 10 + u64::from(b - b'0');
                            self.exp -= 1;
                        }
                    }
                    b'e' | b'E' => self.state = ScanState::ExponentSign,
                    _ => self.state = ScanState::Done,
                },
                ScanState::ExponentSign => match b {
                    b'+' => self.state = ScanState::Exponent,
                    b'-' => {
                        self.exp_negative = true;
                        self.state = ScanState::Exponent;
                    }
                    b'0'..=b'9' => {
                        self.exp_written = i16::from(b - b'0');
                        self.state = ScanState::Exponent;
                    }
                    _ => self.state = ScanState::Done,
                },
                ScanState::Exponent => match b {
                    b'0'..=b'9' => {
                        self.exp_written = (self.exp_written * 10 + i16::from(b - b'0')).min(999);
                    }
                    _ => self.state = ScanState::Done,
                },
            }
        }
    }

    /// The field's value, once the message has ended: its integer part (a fraction is
    /// dropped), saturating at `u64::MAX`.
    pub fn value(&self) -> Option<u64> {
        self.scaled(0)
    }

    /// The field's value read as a time in `unit`, in whole µs (truncated; saturating).
    pub fn micros(&self, unit: TimeUnit) -> Option<u64> {
        self.scaled(unit.micros_exp())
    }

    /// The value times 10^`pow`, truncated to an integer.
    fn scaled(&self, pow: i32) -> Option<u64> {
        if !self.found {
            return None;
        }
        let written = i32::from(self.exp_written);
        let e = i32::from(self.exp) + pow + if self.exp_negative { -written } else { written };
        let v = if e >= 0 {
            10u64
                .checked_pow(e as u32)
                .map_or(u64::MAX, |p| self.mantissa.saturating_mul(p))
        } else {
            10u64
                .checked_pow(e.unsigned_abs())
                .map_or(0, |p| self.mantissa / p)
        };
        // Zero is a mantissa of 0 whatever its exponent: never u64::MAX.
        Some(if self.mantissa == 0 { 0 } else { v })
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

    /// Found by the `json_scan` fuzz target: a 19-digit integer (a large `pub` id or `seq`, a
    /// nanosecond timestamp) was read with its last digit zeroed.
    #[test]
    fn nineteen_digit_integers_read_exactly() {
        let msg =
            br#"{"ts":2235262266461764679,"seq":9999999999999999999,"pub":18446744073709551615}"#;
        assert_eq!(scan("ts", &[msg]), Some(2_235_262_266_461_764_679));
        assert_eq!(scan("seq", &[msg]), Some(9_999_999_999_999_999_999));
        // Twenty digits keep nineteen.
        assert_eq!(scan("pub", &[msg]), Some(18_446_744_073_709_551_610));
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
        assert_eq!(us("3", TimeUnit::Millis), Some(3000));
        assert_eq!(us("3999", TimeUnit::Nanos), Some(3));
    }

    /// `text` as the value of `ts`, read in `unit`, µs.
    fn us(text: &str, unit: TimeUnit) -> Option<u64> {
        let f = LatencyField::new("ts", unit);
        let mut s = FieldScan::default();
        s.feed(&f, format!(r#"{{"ts":{text},"x":1}}"#).as_bytes());
        s.micros(unit)
    }

    #[test]
    fn the_scan_stays_small() {
        assert_eq!(size_of::<FieldScan>(), 16);
    }

    #[test]
    fn fractions_and_exponents_are_read_exactly_in_every_unit() {
        use TimeUnit::*;
        // Python's time.time(), as the asyncio article's server sends it.
        let msg = br#"{"type":"tick","timestamp": 1712345678.123456, "v":2}"#;
        let f = LatencyField::new("timestamp", Seconds);
        for i in 0..msg.len() {
            let mut s = FieldScan::default();
            s.feed(&f, &msg[..i]);
            s.feed(&f, &msg[i..]);
            assert_eq!(s.micros(Seconds), Some(1_712_345_678_123_456), "split {i}");
            assert_eq!(s.value(), Some(1_712_345_678), "split {i}");
        }
        assert_eq!(us("1712345678", Seconds), Some(1_712_345_678_000_000));
        assert_eq!(us("1712345678.5", Seconds), Some(1_712_345_678_500_000));
        // Below the µs: truncated.
        assert_eq!(
            us("1712345678.1234567", Seconds),
            Some(1_712_345_678_123_456)
        );
        assert_eq!(us("1712345678123.5", Millis), Some(1_712_345_678_123_500));
        assert_eq!(us("1712345678123", Millis), Some(1_712_345_678_123_000));
        assert_eq!(
            us("1712345678123456.9", Micros),
            Some(1_712_345_678_123_456)
        );
        assert_eq!(
            us("1712345678123456789", Nanos),
            Some(1_712_345_678_123_456)
        );
        assert_eq!(
            us("1712345678123456789.5", Nanos),
            Some(1_712_345_678_123_456)
        );
        assert_eq!(
            us("1.712345678123456e9", Seconds),
            Some(1_712_345_678_123_456)
        );
        assert_eq!(
            us("1712345678123456E-6", Seconds),
            Some(1_712_345_678_123_456)
        );
        assert_eq!(us("1.5e+3", Millis), Some(1_500_000));
        assert_eq!(us("0.000001", Seconds), Some(1));
        assert_eq!(us("0", Seconds), Some(0));
        assert_eq!(us("0e999", Seconds), Some(0));
        assert_eq!(us("1e999", Seconds), Some(u64::MAX), "saturates");
        assert_eq!(us("123456789012345678901234567890", Micros), Some(u64::MAX));
        assert_eq!(us("-5", Seconds), None, "negative: not a time");
        assert_eq!(us(r#""1712345678""#, Seconds), None, "a string: not read");
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
