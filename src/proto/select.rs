//! Looking values up in received (or sent) JSON messages, for the rules users write about
//! message content: `json:PATH` selects a value (`json:message.id` looks inside the nested
//! object `message`), and a [`Cond`] tests one (`json:price>0`, `json:type=quote`,
//! `text:ack`). Sans-IO and allocation-free: a message is walked once, in place, and a value
//! comes back as the bytes it is written with (a string without its quotes, escapes kept).

/// Where a value is in a JSON message: object keys from the top, e.g. `json:message.id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    keys: Box<[Box<[u8]>]>,
    text: Box<str>,
}

impl JsonPath {
    /// Parses `json:KEY` or `json:KEY.KEY...`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("json:")
            .ok_or_else(|| format!("`{s}`: expected json:PATH, e.g. json:id or json:message.id"))?;
        if rest.is_empty() || rest.split('.').any(str::is_empty) {
            return Err(format!(
                "`{s}`: empty key in the path; write json:id or json:message.id"
            ));
        }
        Ok(Self {
            keys: rest.split('.').map(|k| k.as_bytes().into()).collect(),
            text: s.into(),
        })
    }

    /// The path as written (`json:message.id`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The last key (`id` for `json:message.id`).
    pub fn last_key(&self) -> &[u8] {
        self.keys.last().map_or(&[][..], |k| &k[..])
    }

    /// The value at this path in `msg`, as written: a string's contents without the quotes
    /// (escapes kept), a number, `true`, `false`, `null`, or a whole object or array. `None`
    /// when `msg` is not a JSON object or the path is not in it.
    pub fn find<'a>(&self, msg: &'a [u8]) -> Option<&'a [u8]> {
        let mut p = Parser { s: msg, i: 0 };
        let mut depth = 0;
        loop {
            p.ws();
            if p.peek()? != b'{' {
                return None;
            }
            p.i += 1;
            let key = &self.keys[depth];
            loop {
                p.ws();
                match p.peek()? {
                    b'}' => return None,
                    b',' => {
                        p.i += 1;
                        continue;
                    }
                    b'"' => {}
                    _ => return None,
                }
                let k = p.string()?;
                p.ws();
                if p.peek()? != b':' {
                    return None;
                }
                p.i += 1;
                p.ws();
                if k == &key[..] {
                    if depth + 1 == self.keys.len() {
                        return p.value();
                    }
                    depth += 1;
                    break;
                }
                p.value()?;
            }
        }
    }
}

/// A cursor over a JSON text.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    /// A string at the cursor: its contents, escapes kept.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.i + 1;
        let mut j = start;
        loop {
            match *self.s.get(j)? {
                b'"' => {
                    self.i = j + 1;
                    return Some(&self.s[start..j]);
                }
                b'\\' => j += 2,
                _ => j += 1,
            }
        }
    }

    /// The value at the cursor, skipped over; strings without quotes.
    fn value(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        match self.peek()? {
            b'"' => self.string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(&self.s[start..self.i]);
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                        break;
                    }
                    self.i += 1;
                }
                (self.i > start).then(|| &self.s[start..self.i])
            }
        }
    }
}

/// A comparison in a [`Cond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=` (`==` also reads so): equal, as numbers when both are numbers, else as text.
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// A test on a message's content: `json:PATH OP VALUE`, `json:PATH` (present), or
/// `text:SUBSTRING`.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// The value at the path compares to `value` (a number for `<`, `>`...).
    Json {
        /// Where the value is.
        path: JsonPath,
        /// How it compares.
        op: CmpOp,
        /// What it is compared to, as written (quotes around a string value dropped).
        value: Box<[u8]>,
        /// `value` as a number, if it is one.
        number: Option<f64>,
    },
    /// The path is present (any value).
    Has(JsonPath),
    /// The message contains these bytes.
    Contains(Box<[u8]>),
}

impl Cond {
    /// Parses `json:PATH OP VALUE` (OP one of `=`, `==`, `!=`, `>`, `>=`, `<`, `<=`),
    /// `json:PATH`, or `text:SUBSTRING`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(t) = s.strip_prefix("text:") {
            if t.is_empty() {
                return Err(format!("`{s}`: text: needs the text to look for"));
            }
            return Ok(Self::Contains(t.as_bytes().into()));
        }
        if !s.starts_with("json:") {
            return Err(format!(
                "`{s}`: expected json:PATH OP VALUE (e.g. json:type=quote, json:price>0) or text:SUBSTRING"
            ));
        }
        let Some(at) = s.find(['=', '!', '<', '>']) else {
            return Ok(Self::Has(JsonPath::parse(s)?));
        };
        let (lhs, rest) = s.split_at(at);
        let path = JsonPath::parse(lhs.trim())?;
        let (op, value) = [
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            (">=", CmpOp::Ge),
            ("<=", CmpOp::Le),
            ("=", CmpOp::Eq),
            (">", CmpOp::Gt),
            ("<", CmpOp::Lt),
        ]
        .into_iter()
        .find_map(|(t, op)| rest.strip_prefix(t).map(|v| (op, v.trim())))
        .ok_or_else(|| format!("`{s}`: `{rest}` is not a comparison (=, !=, >, >=, <, <=)"))?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let number = value.parse::<f64>().ok().filter(|v| v.is_finite());
        if number.is_none() && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            return Err(format!(
                "`{s}`: `{value}` is not a number, and only numbers compare with <, >, <= or >="
            ));
        }
        Ok(Self::Json {
            path,
            op,
            value: value.as_bytes().into(),
            number,
        })
    }

    /// Whether `msg` (a whole message, or its first bytes) satisfies the condition.
    pub fn holds(&self, msg: &[u8]) -> bool {
        match self {
            Self::Contains(needle) => msg.windows(needle.len()).any(|w| w == &needle[..]),
            Self::Has(path) => path.find(msg).is_some(),
            Self::Json {
                path,
                op,
                value,
                number,
            } => {
                let Some(v) = path.find(msg) else {
                    return false;
                };
                let as_num = || std::str::from_utf8(v).ok()?.parse::<f64>().ok();
                match (op, number) {
                    (CmpOp::Eq | CmpOp::Ne, _) => {
                        let eq = match (number, as_num()) {
                            (Some(a), Some(b)) => *a == b,
                            _ => v == &value[..],
                        };
                        eq == (*op == CmpOp::Eq)
                    }
                    (_, Some(n)) => as_num().is_some_and(|x| match op {
                        CmpOp::Gt => x > *n,
                        CmpOp::Ge => x >= *n,
                        CmpOp::Lt => x < *n,
                        CmpOp::Le => x <= *n,
                        CmpOp::Eq | CmpOp::Ne => false,
                    }),
                    (_, None) => false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(path: &str, msg: &'a str) -> Option<&'a str> {
        JsonPath::parse(path)
            .unwrap()
            .find(msg.as_bytes())
            .map(|v| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn paths_find_values_as_written() {
        let m = r#"{"action":"publish","channel":"room:42","message":{"id":"ab12","senderId":"u-1","n":[1,{"id":9}]},"sentAt":1712345678901}"#;
        assert_eq!(find("json:action", m), Some("publish"));
        assert_eq!(find("json:message.id", m), Some("ab12"));
        assert_eq!(find("json:id", m), None, "top level only, not anywhere");
        assert_eq!(find("json:sentAt", m), Some("1712345678901"));
        assert_eq!(find("json:message.n", m), Some(r#"[1,{"id":9}]"#));
        assert_eq!(find("json:message.senderId", m), Some("u-1"));
        assert_eq!(find("json:message.nope", m), None);
        assert_eq!(find("json:a", r#" { "a" : "x\"y" } "#), Some(r#"x\"y"#));
        assert_eq!(find("json:b", r#"{"a":"}{","b":true}"#), Some("true"));
        assert_eq!(find("json:a", "not json"), None);
        assert_eq!(find("json:a", r#"{"a":"#), None, "truncated");
        assert_eq!(find("json:a.b", r#"{"a":5}"#), None);
        assert!(JsonPath::parse("id").is_err());
        assert!(JsonPath::parse("json:a..b").is_err());
    }

    /// A random JSON value of depth at most `depth`, with keys from a small set (repeats and
    /// nesting included) and strings that need escapes.
    fn random_value(rng: &mut crate::proto::rng::Rng, depth: u32) -> serde_json::Value {
        use serde_json::Value;
        let keys = ["id", "a", "type", "seq", "message", "x\"y", "é"];
        match rng.below(if depth == 0 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.below(2) == 0),
            2 => Value::from(rng.below(1 << 40) as i64 - (1 << 39)),
            3 => Value::from(rng.below(1000) as f64 / 8.0),
            4 => Value::String(
                [
                    "plain",
                    "q\"uote",
                    "back\\slash",
                    "}{][,:",
                    "ünï",
                    "\u{1}ctl",
                ][rng.below(6) as usize]
                    .to_owned(),
            ),
            5 => Value::Array(
                (0..rng.below(4))
                    .map(|_| random_value(rng, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.below(5))
                    .map(|_| {
                        let k = keys[rng.below(keys.len() as u64) as usize].to_owned();
                        (k, random_value(rng, depth - 1))
                    })
                    .collect(),
            ),
        }
    }

    /// What `find` must return for `v`: its JSON text, a string without its quotes.
    fn as_written(v: &serde_json::Value) -> String {
        let t = serde_json::to_string(v).unwrap();
        match v {
            serde_json::Value::String(_) => t[1..t.len() - 1].to_owned(),
            _ => t,
        }
    }

    #[test]
    fn paths_agree_with_serde_json_and_survive_any_bytes() {
        let mut rng = crate::proto::rng::Rng::new(42);
        for _ in 0..3000 {
            let v = random_value(&mut rng, 3);
            let text = serde_json::to_string(&v).unwrap();
            // Pretty printing puts whitespace everywhere the walker must skip.
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            let serde_json::Value::Object(top) = &v else {
                assert_eq!(
                    JsonPath::parse("json:id").unwrap().find(text.as_bytes()),
                    None
                );
                continue;
            };
            for (k, inner) in top {
                let p = JsonPath::parse(&format!("json:{k}")).unwrap();
                if k.contains('"') {
                    continue; // a path names keys as written, escapes and all
                }
                for t in [&text, &pretty] {
                    let got = p
                        .find(t.as_bytes())
                        .map(|b| String::from_utf8(b.to_vec()).unwrap());
                    if inner.is_object() || inner.is_array() {
                        assert!(got.is_some(), "{k} in {t}");
                    } else {
                        assert_eq!(
                            got.as_deref(),
                            Some(as_written(inner).as_str()),
                            "{k} in {t}"
                        );
                    }
                }
                if let serde_json::Value::Object(o) = inner {
                    for (k2, v2) in o {
                        if k2.contains('"') || inner.is_array() || v2.is_object() || v2.is_array() {
                            continue;
                        }
                        let p = JsonPath::parse(&format!("json:{k}.{k2}")).unwrap();
                        let got = p
                            .find(text.as_bytes())
                            .map(|b| String::from_utf8(b.to_vec()).unwrap());
                        assert_eq!(
                            got.as_deref(),
                            Some(as_written(v2).as_str()),
                            "{k}.{k2} in {text}"
                        );
                    }
                }
            }
            // Any cut or corrupted copy: no panic, whatever it finds.
            let bytes = text.as_bytes();
            let cut = rng.below(bytes.len() as u64 + 1) as usize;
            let mut bad = bytes[..cut].to_vec();
            if !bad.is_empty() {
                let i = rng.below(bad.len() as u64) as usize;
                bad[i] = rng.below(256) as u8;
            }
            for p in ["json:id", "json:message.id", "json:a.a.a"] {
                let _ = JsonPath::parse(p).unwrap().find(&bad);
                let _ = Cond::parse(&format!("{p}>1")).unwrap().holds(&bad);
            }
        }
    }

    #[test]
    fn conditions() {
        let quote = br#"{"type":"quote","stream":"quotes.NYSE:IBM","seq":7,"price":187.25}"#;
        let holds = |c: &str, m: &[u8]| Cond::parse(c).unwrap().holds(m);
        assert!(holds("json:type=quote", quote));
        assert!(holds("json:type == \"quote\"", quote));
        assert!(!holds("json:type=snapshot", quote));
        assert!(holds("json:type!=snapshot", quote));
        assert!(holds("json:price>0", quote));
        assert!(holds("json:price>=187.25", quote));
        assert!(!holds("json:price<100", quote));
        assert!(holds("json:seq=7.0", quote), "numbers compare as numbers");
        assert!(holds("json:stream", quote));
        assert!(!holds("json:volume", quote));
        assert!(holds("text:IBM", quote));
        assert!(!holds("json:price>0", br#"{"price":"n/a"}"#));
        assert!(Cond::parse("json:type>quote")
            .unwrap_err()
            .contains("not a number"));
        assert!(Cond::parse("price>0").unwrap_err().contains("json:PATH"));
    }
}
