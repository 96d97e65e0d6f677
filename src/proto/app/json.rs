//! Just enough JSON for the protocols' envelopes: the top-level fields of an object and the
//! elements of an array, as byte spans of the message, without allocating or building a tree.
//! Values are skipped structurally (strings with their escapes, nested objects and arrays), so
//! a payload is handed on exactly as the server wrote it.

/// The JSON text is not what an envelope may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Nesting deeper than this is refused (a hostile message cannot make the skipper loop long
/// on brackets alone: it is iterative anyway, this only bounds what is accepted).
const MAX_DEPTH: usize = 512;

/// The end of the JSON value starting at `i` (after whitespace).
pub fn skip_value(b: &[u8], i: usize) -> Result<usize, Malformed> {
    let mut i = ws(b, i);
    let mut depth = 0usize;
    loop {
        match b.get(i).ok_or(Malformed)? {
            b'"' => i = skip_string(b, i)?,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Malformed);
                }
                i += 1;
                continue;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1).ok_or(Malformed)?;
                i += 1;
            }
            b',' | b':' if depth > 0 => {
                i += 1;
                continue;
            }
            c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.') => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b'+' | b'.'))
                {
                    i += 1;
                }
            }
            c if depth > 0 && matches!(c, b' ' | b'\t' | b'\n' | b'\r') => {
                i += 1;
                continue;
            }
            _ => return Err(Malformed),
        }
        if depth == 0 {
            return Ok(i);
        }
    }
}

/// The end of the string starting at `b[i] == '"'`.
fn skip_string(b: &[u8], mut i: usize) -> Result<usize, Malformed> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Ok(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Err(Malformed)
}

/// The top-level fields of the object `b`: `(key as written, without quotes; value span)`.
pub fn fields(b: &[u8]) -> Fields<'_> {
    let i = ws(b, 0);
    let ok = b.get(i) == Some(&b'{');
    Fields {
        b,
        i: i + 1,
        done: !ok,
        bad: !ok,
        first: true,
    }
}

/// One field: its key as written and its value's span.
type Field<'a> = (&'a [u8], &'a [u8]);

/// Iterator of [`fields`]; [`Fields::malformed`] says whether it stopped on bad JSON.
#[derive(Debug)]
pub struct Fields<'a> {
    b: &'a [u8],
    i: usize,
    done: bool,
    bad: bool,
    first: bool,
}

impl Fields<'_> {
    /// Whether iteration stopped because the text is not an object.
    pub fn malformed(&self) -> bool {
        self.bad
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let b = self.b;
        let mut step = || -> Result<Option<Field<'a>>, Malformed> {
            let mut i = ws(b, self.i);
            if b.get(i) == Some(&b'}') {
                return Ok(None);
            }
            if !self.first {
                if b.get(i) != Some(&b',') {
                    return Err(Malformed);
                }
                i = ws(b, i + 1);
            }
            self.first = false;
            if b.get(i) != Some(&b'"') {
                return Err(Malformed);
            }
            let kend = skip_string(b, i)?;
            let key = &b[i + 1..kend - 1];
            i = ws(b, kend);
            if b.get(i) != Some(&b':') {
                return Err(Malformed);
            }
            let vstart = ws(b, i + 1);
            let vend = skip_value(b, vstart)?;
            self.i = vend;
            Ok(Some((key, &b[vstart..vend])))
        };
        match step() {
            Ok(Some(kv)) => Some(kv),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(Malformed) => {
                self.done = true;
                self.bad = true;
                None
            }
        }
    }
}

/// The value of top-level field `name` of object `b` (the first one), or `None`.
pub fn field<'a>(b: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    fields(b).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// The contents of a JSON string value without its quotes, if it is one without escapes.
pub fn plain_str(v: &[u8]) -> Option<&[u8]> {
    let inner = v.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    (!inner.contains(&b'\\')).then_some(inner)
}

/// An unsigned integer value (`25000`; `25000.0` is not one).
pub fn uint(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The first element of the array `b` and where the rest begins, for `["event", …]`.
pub fn first_element(b: &[u8]) -> Option<&[u8]> {
    let i = ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let s = ws(b, i + 1);
    let e = skip_value(b, s).ok()?;
    Some(&b[s..e])
}

/// Appends `s` to `out` as a JSON string (quoted, escaped).
pub fn push_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 => {
                let hex = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(hex[usize::from(c >> 4)]);
                out.push(hex[usize::from(c & 15)]);
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

/// Whether `b` is one whole JSON value (with surrounding whitespace allowed).
pub fn is_value(b: &[u8]) -> bool {
    skip_value(b, 0).is_ok_and(|e| ws(b, e) == b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_spans() {
        let m = br#" {"id":"7","type":"next","payload":{"data":{"n":[1,{"a":"}"}],"s":"x\"y"}}} "#;
        let f: Vec<_> = fields(m).collect();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0], (&b"id"[..], &br#""7""#[..]));
        assert_eq!(f[1].1, br#""next""#);
        assert_eq!(f[2].1, br#"{"data":{"n":[1,{"a":"}"}],"s":"x\"y"}}"#);
        assert_eq!(field(m, b"type").and_then(plain_str), Some(&b"next"[..]));
        assert_eq!(field(m, b"nope"), None);
        assert_eq!(plain_str(br#""x\"y""#), None);
    }

    #[test]
    fn malformed_is_refused() {
        for bad in [
            &b"{"[..],
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":1 \"b\":2}",
            b"[1",
            b"\"abc",
            b"{\"a\":1]",
            b"}",
        ] {
            let mut f = fields(bad);
            f.by_ref().for_each(drop);
            assert!(
                f.malformed() || !is_value(bad),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(is_value(br#"[1, "two", {"3": null}]"#));
        assert!(!is_value(b"hello world"));
        assert!(!is_value(&[b'['; 600]));
    }

    #[test]
    fn numbers_and_arrays() {
        assert_eq!(uint(b"25000"), Some(25000));
        assert_eq!(uint(b"25000.5"), None);
        assert_eq!(uint(b"-1"), None);
        assert_eq!(
            first_element(br#"["echo",{"a":1}]"#),
            Some(&br#""echo""#[..])
        );
        assert_eq!(first_element(b"{}"), None);
        let mut out = Vec::new();
        push_string(&mut out, b"a\"b\\c\n\x01");
        assert_eq!(out, br#""a\"b\\c\n\u0001""#);
    }
}
