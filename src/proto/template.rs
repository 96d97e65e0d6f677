//! Message templates: `{{conn_id}}`, `{{scenario}}`, `{{seq}}`, `{{last_seq}}`, `{{now_ms}}`, `{{now_us}}`,
//! `{{rand_int LO HI}}`, `{{rand_choice A B ...}}`, `{{line FILE}}` (one line per connection,
//! round-robin), `{{env NAME}}` and `{{token}}` (both fixed before the run). Parsed once into
//! parts; rendering writes straight into the caller's buffer, so sending a templated message
//! allocates nothing.

use crate::proto::rng::Rng;
use std::sync::Arc;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<[u8]>),
    ConnId,
    Seq,
    LastSeq,
    NowMs,
    NowUs,
    RandInt(u64, u64),
    RandChoice(Vec<Box<[u8]>>),
    Line(Arc<Vec<Box<[u8]>>>),
}

/// A message text parsed once, before the run, into literal and variable parts;
/// [`Template::render`] writes it per send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// What a rendering may vary with.
#[derive(Debug)]
pub struct Vars<'a> {
    /// `{{conn_id}}`: the connection's run-wide number (an auth body's: the request's number);
    /// `{{line FILE}}` picks its line by it.
    pub conn_id: u64,
    /// This connection's templated-message counter (from 1).
    pub seq: u64,
    /// `{{now_us}}` (and `{{now_ms}}`, a thousandth of it): the wall clock when the message is
    /// rendered, Unix µs.
    pub now_unix_us: u64,
    /// The highest `seq` this connection (or the session it resumes) received.
    pub last_seq: u64,
    /// The shard's PRNG, for `{{rand_int LO HI}}` and `{{rand_choice A B ...}}`.
    pub rng: &'a mut Rng,
}

/// Where fixed values come from while parsing: environment variables, files, the token.
pub trait Resolve {
    /// The value of environment variable `name`, for `{{env NAME}}`; `None` (unset) makes the
    /// template an error.
    fn env(&self, name: &str) -> Option<String>;
    /// `{{line FILE}}`: the file's non-empty lines.
    fn lines(&self, path: &str) -> Result<Vec<String>, String>;
    /// `{{token}}`, if an auth pre-step gave one.
    fn token(&self) -> Option<&str>;
    /// `{{scenario}}`: the scenario's name.
    fn scenario(&self) -> &str;
}

impl Template {
    /// Parses `text`; `None` when it has no `{{` at all (a plain message).
    pub fn parse(text: &str, r: &dyn Resolve) -> Result<Option<Self>, String> {
        if !text.contains("{{") {
            return Ok(None);
        }
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            lit.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("`{{{{` at byte {open} is never closed with `}}}}`"))?;
            let expr = after[..close].trim();
            rest = &after[close + 2..];
            let words: Vec<&str> = expr.split_whitespace().collect();
            let part = match words.as_slice() {
                ["conn_id"] => Part::ConnId,
                ["seq"] => Part::Seq,
                ["last_seq"] => Part::LastSeq,
                ["scenario"] => {
                    lit.push_str(r.scenario());
                    continue;
                }
                ["now_ms"] => Part::NowMs,
                ["now_us"] => Part::NowUs,
                ["rand_int", lo, hi] => {
                    let (lo, hi) = (lo.parse::<u64>(), hi.parse::<u64>());
                    match (lo, hi) {
                        (Ok(lo), Ok(hi)) if lo <= hi => Part::RandInt(lo, hi),
                        _ => return Err(format!("`{{{{{expr}}}}}`: rand_int takes LO HI, 0 <= LO <= HI")),
                    }
                }
                ["rand_choice", choices @ ..] if !choices.is_empty() => {
                    Part::RandChoice(choices.iter().map(|c| c.as_bytes().into()).collect())
                }
                ["env", name] => {
                    let v = r.env(name).ok_or_else(|| {
                        format!("`{{{{{expr}}}}}`: environment variable {name} is not set")
                    })?;
                    lit.push_str(&v);
                    continue;
                }
                ["token"] => {
                    let t = r.token().ok_or_else(|| {
                        "`{{token}}` is used but no auth pre-step gives one: add --auth-url"
                            .to_owned()
                    })?;
                    lit.push_str(t);
                    continue;
                }
                ["line", path] => {
                    let lines = r.lines(path)?;
                    if lines.is_empty() {
                        return Err(format!("`{{{{{expr}}}}}`: {path} has no non-empty line"));
                    }
                    Part::Line(Arc::new(lines.into_iter().map(|l| l.into_bytes().into()).collect()))
                }
                _ => {
                    return Err(format!(
                        "unknown template expression `{{{{{expr}}}}}`; known: conn_id, seq, now_ms, now_us, \
                         rand_int LO HI, rand_choice A B.., line FILE, env NAME, token"
                    ))
                }
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit).into_bytes().into()));
            }
            parts.push(part);
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.into_bytes().into()));
        }
        Ok(Some(Self { parts }))
    }

    /// Replaces `slot` with `value` in the literal text (a value known only after parsing,
    /// like an auth pre-step's token).
    pub fn fill(&mut self, slot: &str, value: &str) {
        for p in &mut self.parts {
            if let Part::Lit(b) = p {
                if let Ok(text) = std::str::from_utf8(b) {
                    if text.contains(slot) {
                        *b = text.replace(slot, value).into_bytes().into();
                    }
                }
            }
        }
    }

    /// The template cut at every `slot` in its literal text (a value only the caller knows,
    /// like a connection's own token): the pieces before, between and after, in order; one
    /// piece when `slot` does not occur.
    pub fn split_at(&self, slot: &str) -> Vec<Self> {
        let mut pieces = vec![Self { parts: Vec::new() }];
        for p in &self.parts {
            let text = match p {
                Part::Lit(b) => std::str::from_utf8(b).ok(),
                _ => None,
            };
            let Some(text) = text.filter(|t| t.contains(slot)) else {
                if let Some(last) = pieces.last_mut() {
                    last.parts.push(p.clone());
                }
                continue;
            };
            for (i, lit) in text.split(slot).enumerate() {
                if i > 0 {
                    pieces.push(Self { parts: Vec::new() });
                }
                if let (false, Some(last)) = (lit.is_empty(), pieces.last_mut()) {
                    last.parts.push(Part::Lit(lit.as_bytes().into()));
                }
            }
        }
        pieces
    }

    /// Whether any text the template can render (its literal text, `rand_choice` choices and
    /// `line` file lines; numbers never) satisfies `f`: to check a rendering before the run.
    pub fn any_text(&self, f: impl Fn(&[u8]) -> bool) -> bool {
        self.parts.iter().any(|p| match p {
            Part::Lit(b) => f(b),
            Part::RandChoice(c) => c.iter().any(|b| f(b)),
            Part::Line(lines) => lines.iter().any(|b| f(b)),
            _ => false,
        })
    }

    /// A template that renders `text` as it is.
    pub fn literal(text: &str) -> Self {
        Self {
            parts: vec![Part::Lit(text.as_bytes().into())],
        }
    }

    /// The text of a fixed template (see [`Template::is_fixed`]), rendered once.
    pub fn render_fixed(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rng = Rng::new(0);
        self.render(
            &mut Vars {
                conn_id: 0,
                seq: 0,
                last_seq: 0,
                now_unix_us: 0,
                rng: &mut rng,
            },
            &mut out,
        );
        out
    }

    /// Whether every part is fixed (only `env`/`token`): the caller can render it once.
    pub fn is_fixed(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// Appends the rendering to `out`.
    pub fn render(&self, v: &mut Vars<'_>, out: &mut Vec<u8>) {
        for p in &self.parts {
            match p {
                Part::Lit(b) => out.extend_from_slice(b),
                Part::ConnId => push_u64(out, v.conn_id),
                Part::Seq => push_u64(out, v.seq),
                Part::LastSeq => push_u64(out, v.last_seq),
                Part::NowMs => push_u64(out, v.now_unix_us / 1000),
                Part::NowUs => push_u64(out, v.now_unix_us),
                Part::RandInt(lo, hi) => {
                    let span = hi - lo;
                    let x = if span == u64::MAX {
                        v.rng.next_u64()
                    } else {
                        lo + v.rng.below(span + 1)
                    };
                    push_u64(out, x)
                }
                Part::RandChoice(c) => {
                    out.extend_from_slice(&c[v.rng.below(c.len() as u64) as usize])
                }
                Part::Line(lines) => {
                    out.extend_from_slice(&lines[(v.conn_id % lines.len() as u64) as usize])
                }
            }
        }
    }
}

/// Decimal digits of `x`, without allocating.
fn push_u64(out: &mut Vec<u8>, mut x: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (x % 10) as u8;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// FNV-1a, streaming: echoes of templated messages are matched by the hash of what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Feeds the next bytes of the message; chunks hash as if they were one slice.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash of `bytes` alone.
    pub fn of(bytes: &[u8]) -> u64 {
        let mut h = Self::default();
        h.feed(bytes);
        h.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R;
    impl Resolve for R {
        fn env(&self, name: &str) -> Option<String> {
            (name == "REGION").then(|| "eu-1".into())
        }
        fn lines(&self, path: &str) -> Result<Vec<String>, String> {
            match path {
                "users.txt" => Ok(vec!["alice".into(), "bob".into()]),
                _ => Err(format!("cannot read {path}")),
            }
        }
        fn token(&self) -> Option<&str> {
            None
        }
        fn scenario(&self) -> &str {
            "chat"
        }
    }

    fn render(t: &Template, conn_id: u64, seq: u64, rng: &mut Rng) -> String {
        let mut out = Vec::new();
        t.render(
            &mut Vars {
                conn_id,
                seq,
                last_seq: 0,
                now_unix_us: 1_700_000_000_123_456,
                rng,
            },
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn parses_and_renders_every_expression() {
        assert_eq!(Template::parse("plain", &R).unwrap(), None);
        let t = Template::parse(
            r#"{"id":{{conn_id}},"seq":{{ seq }},"ms":{{now_ms}},"us":{{now_us}},"r":"{{env REGION}}","u":"{{line users.txt}}","d":{{rand_int 1 6}},"c":"{{rand_choice a b}}"}"#,
            &R,
        )
        .unwrap()
        .unwrap();
        let mut rng = Rng::new(1);
        let s = render(&t, 3, 42, &mut rng);
        assert!(s.starts_with(r#"{"id":3,"seq":42,"ms":1700000000123,"us":1700000000123456,"r":"eu-1","u":"bob","d":"#), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert!((1..=6).contains(&v["d"].as_u64().unwrap()));
        assert!(["a", "b"].contains(&v["c"].as_str().unwrap()));
        assert_eq!(
            render(&t, 4, 1, &mut rng)
                .split("\"u\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next(),
            Some("alice")
        );
        let fixed = Template::parse("{{env REGION}}-x", &R).unwrap().unwrap();
        assert!(fixed.is_fixed());
        assert_eq!(render(&fixed, 0, 0, &mut rng), "eu-1-x");
        let mut big = Vec::new();
        push_u64(&mut big, u64::MAX);
        assert_eq!(big, b"18446744073709551615");
    }

    #[test]
    fn splits_at_a_slot_in_its_literal_text() {
        let t = Template::parse("a{{conn_id}}-SLOT-b-SLOT{{seq}}", &R)
            .unwrap()
            .unwrap();
        let pieces = t.split_at("SLOT");
        let mut rng = Rng::new(1);
        let texts: Vec<String> = pieces.iter().map(|p| render(p, 7, 9, &mut rng)).collect();
        assert_eq!(texts, ["a7-", "-b-", "9"]);
        assert!(!pieces[0].is_fixed() && pieces[1].is_fixed() && !pieces[2].is_fixed());
        assert_eq!(Template::literal("x").split_at("SLOT").len(), 1);
    }

    #[test]
    fn bad_templates_say_what_is_known() {
        let err = |s: &str| Template::parse(s, &R).unwrap_err();
        assert!(err("{{conn}}").contains("unknown template expression `{{conn}}`"));
        assert!(err("{{seq").contains("never closed"));
        assert!(err("{{rand_int 6 1}}").contains("LO <= HI"));
        assert!(err("{{env NOPE}}").contains("NOPE is not set"));
        assert!(err("{{line x.txt}}").contains("cannot read x.txt"));
        assert!(err("{{token}}").contains("--auth-url"));
        assert_eq!(Fnv::of(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
