//! `template`: message templates parsed and rendered, checked against a reference reading of
//! the same text.

use crate::proto::rng::Rng;
use crate::proto::template::{Resolve, Template, Vars};

/// A resolver whose answers follow from the names asked: environment variables whose name
/// starts with an upper-case letter are set, `{{line empty}}` has no line, `{{line missing}}`
/// cannot be read, every other file has two lines; the token exists when `token` is set.
struct Fixed {
    token: bool,
}

impl Resolve for Fixed {
    fn env(&self, name: &str) -> Option<String> {
        name.starts_with(|c: char| c.is_ascii_uppercase())
            .then(|| format!("<{name}>"))
    }

    fn lines(&self, path: &str) -> Result<Vec<String>, String> {
        match path {
            "empty" => Ok(Vec::new()),
            "missing" => Err(format!("{path}: no such file")),
            _ => Ok(vec![format!("1:{path}"), format!("2:{path}")]),
        }
    }

    fn token(&self) -> Option<&str> {
        self.token.then_some("T0K")
    }

    fn scenario(&self) -> &str {
        "scn"
    }
}

/// What the reference reading expects one `{{…}}` to render as.
enum Piece {
    Text(String),
    /// A number from the `Vars`: conn_id, seq, last_seq, now_ms, now_us.
    Var(fn(&Vars<'_>) -> u64),
    RandInt(u64, u64),
    Choice(Vec<String>),
    Lines(Vec<String>),
}

/// The reference: `text` read piece by piece, without sharing code with the parser. `None`
/// when the template is invalid.
fn reference(text: &str, r: &Fixed) -> Option<Vec<Piece>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push(Piece::Text(rest[..open].to_owned()));
        let after = &rest[open + 2..];
        let close = after.find("}}")?;
        let words: Vec<&str> = after[..close].split_whitespace().collect();
        rest = &after[close + 2..];
        out.push(match words[..] {
            ["conn_id"] => Piece::Var(|v| v.conn_id),
            ["seq"] => Piece::Var(|v| v.seq),
            ["last_seq"] => Piece::Var(|v| v.last_seq),
            ["now_ms"] => Piece::Var(|v| v.now_unix_us / 1000),
            ["now_us"] => Piece::Var(|v| v.now_unix_us),
            ["scenario"] => Piece::Text(r.scenario().to_owned()),
            ["token"] => Piece::Text(r.token()?.to_owned()),
            ["env", name] => Piece::Text(r.env(name)?),
            ["rand_int", lo, hi] => {
                let (lo, hi) = (lo.parse().ok()?, hi.parse().ok()?);
                if lo > hi {
                    return None;
                }
                Piece::RandInt(lo, hi)
            }
            ["rand_choice", ref choices @ ..] if !choices.is_empty() => {
                Piece::Choice(choices.iter().map(|c| c.to_string()).collect())
            }
            ["line", path] => {
                let lines = r.lines(path).ok()?;
                if lines.is_empty() {
                    return None;
                }
                Piece::Lines(lines)
            }
            _ => return None,
        });
    }
    out.push(Piece::Text(rest.to_owned()));
    Some(out)
}

/// The reference rendering: each piece in order, random ones drawn from `rng` one draw each.
fn render_reference(pieces: &[Piece], v: &Vars<'_>, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
            Piece::Var(f) => out.extend_from_slice(f(v).to_string().as_bytes()),
            Piece::RandInt(lo, hi) => {
                let x = match (hi - lo).checked_add(1) {
                    Some(n) => lo + rng.below(n),
                    None => rng.next_u64(),
                };
                assert!((*lo..=*hi).contains(&x));
                out.extend_from_slice(x.to_string().as_bytes());
            }
            Piece::Choice(c) => {
                out.extend_from_slice(c[rng.below(c.len() as u64) as usize].as_bytes())
            }
            Piece::Lines(l) => {
                out.extend_from_slice(l[(v.conn_id % l.len() as u64) as usize].as_bytes())
            }
        }
    }
    out
}

/// Input: `[sel, text…]` (the text read as lossy UTF-8). Bit 0 of `sel`: a token exists; the
/// other bits pick the variables. Must hold: no panic; `None` exactly when the text has no
/// `{{`; the parser accepts exactly what the reference accepts; the rendering (appended to
/// what the buffer held) equals the reference's, with the same random draws; a template is
/// fixed exactly when the reference has no variable piece, and then `render_fixed` renders
/// the same bytes.
pub fn template(data: &[u8]) {
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let r = Fixed {
        token: sel & 1 != 0,
    };
    let parsed = Template::parse(&text, &r);
    let expect = reference(&text, &r);
    let t = match (parsed, &expect) {
        (Ok(None), _) => {
            assert!(
                !text.contains("{{"),
                "a template read as plain text: {text:?}"
            );
            return;
        }
        (Ok(Some(t)), Some(_)) => t,
        (Err(e), None) => {
            assert!(!e.is_empty());
            return;
        }
        (Ok(Some(_)), None) => panic!("accepted, reference rejects: {text:?}"),
        (Err(e), Some(_)) => panic!("rejected ({e}), reference accepts: {text:?}"),
    };
    let pieces = expect.unwrap_or_default();
    assert!(text.contains("{{"));
    let big = [0, 1, 9, 10, 999, u64::MAX / 2, u64::MAX - 1, u64::MAX];
    let n = |shift: u8| big[usize::from((sel >> shift) & 7)];
    let seed = u64::from(sel).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let (mut rng, mut ref_rng) = (Rng::new(seed), Rng::new(seed));
    let mut v = Vars {
        conn_id: n(1),
        seq: n(4),
        last_seq: n(2),
        now_unix_us: n(5),
        rng: &mut rng,
    };
    let mut out = b"prefix".to_vec();
    t.render(&mut v, &mut out);
    let want = render_reference(&pieces, &v, &mut ref_rng);
    assert_eq!(&out[..6], b"prefix", "render replaced what the buffer held");
    assert_eq!(
        String::from_utf8_lossy(&out[6..]),
        String::from_utf8_lossy(&want),
        "{text:?}"
    );
    let fixed = pieces.iter().all(|p| matches!(p, Piece::Text(_)));
    assert_eq!(t.is_fixed(), fixed, "{text:?}");
    if fixed {
        assert_eq!(t.render_fixed(), want, "{text:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fuzz_smoke::{smoke_runs, Gen};

    /// A template of the known expressions (some malformed), literal text and stray braces.
    pub(super) fn text(g: &mut Gen) -> Vec<u8> {
        let mut v = vec![g.byte()];
        for _ in 0..g.below(8) {
            let piece = match g.below(16) {
                0 => "{{conn_id}}".to_owned(),
                1 => "{{ seq }}".to_owned(),
                2 => "{{last_seq}}".to_owned(),
                3 => g
                    .pick(&["{{now_ms}}", "{{now_us}}", "{{scenario}}", "{{token}}"])
                    .into(),
                4 => {
                    let lo = g.pick(&["0", "1", "7", "18446744073709551615", "-1", "x"]);
                    let hi = g.pick(&["0", "5", "100", "18446744073709551615", ""]);
                    format!("{{{{rand_int {lo} {hi}}}}}")
                }
                5 => g
                    .pick(&[
                        "{{rand_choice a b c}}",
                        "{{rand_choice}}",
                        "{{rand_choice é}}",
                    ])
                    .into(),
                6 => g
                    .pick(&["{{env HOME}}", "{{env lower}}", "{{env}}", "{{env A B}}"])
                    .into(),
                7 => g
                    .pick(&["{{line users.txt}}", "{{line empty}}", "{{line missing}}"])
                    .into(),
                8 => g
                    .pick(&["{{", "}}", "{", "}", "{{}}", "{{{seq}}}", "{{unknown}}"])
                    .into(),
                9 => g
                    .pick(&["{\"id\":", ",\"ts\":", "}", " ", "€", "\n"])
                    .into(),
                _ => String::from_utf8_lossy(&g.random(6)).into_owned(),
            };
            v.extend_from_slice(piece.as_bytes());
        }
        v
    }

    #[test]
    fn template_smoke() {
        smoke_runs(11, 100_000, text, template);
    }

    /// The generator reaches rendering of every kind of piece, and rejections.
    #[test]
    fn template_generator_reaches_deep_paths() {
        let mut g = Gen::new(12);
        let (mut rendered, mut rejected, mut random) = (0, 0, 0);
        for _ in 0..5000 {
            let d = text(&mut g);
            let s = String::from_utf8_lossy(&d[1..]).into_owned();
            match Template::parse(
                &s,
                &Fixed {
                    token: d[0] & 1 != 0,
                },
            ) {
                Ok(Some(t)) if !t.is_fixed() => {
                    rendered += 1;
                    random += usize::from(s.contains("{{rand_int 0 5}}"));
                }
                Err(_) => rejected += 1,
                _ => {}
            }
        }
        assert!(
            rendered > 1000 && rejected > 1000 && random > 10,
            "{rendered} {rejected} {random}"
        );
    }
}
