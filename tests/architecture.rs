//! One-way layers between the top-level modules of `src/`, enforced.
//!
//! Every `.rs` file under `src/` is read as text. Each path in code that reaches the crate root
//! and goes on into a top-level module `x` is an edge from the file's top-level module to `x`:
//! `crate::x…`, and `super::x…` / `super::super::x…` once the `super`s climb to the root (a
//! file's depth comes from its path, and each inline `mod m { … }` adds one level). That holds
//! for a `use`, a `pub use`, a path in an expression, a type or an attribute, and for each first
//! segment inside a grouped `use crate::{a::B, c::{D, E}}` or `use super::{super::a::B, c}`.
//! Comments and string literals are blanked out first; `self::` and `super::` paths that stay
//! inside the file's top-level module are not edges. `src/main.rs` is the node `main`, whose
//! paths into the library are `sockstorm::x…`; `src/lib.rs` only declares modules and is no node.
//! The edges are checked against [`LAYERS`], the layering that docs/ARCHITECTURE.md draws, and
//! the graph they form must have no cycle.
//!
//! What would hide edges from this reading is a violation of its own: a glob import of the crate
//! root (`use crate::*;`, `use super::*;` where `super` is the root), an alias of it
//! (`use crate as x;`, `extern crate self as x;`), and any path into a module in `lib.rs`.
//!
//! Test code (inline `#[cfg(test)] mod … { … }` modules and test-only files) may also use the
//! few extra edges in [`TEST_ONLY_LAYERS`], each of which some test code must use. It is left out
//! of the cycle check: tests compile with the whole crate and do not make a layer depend on
//! another.
//!
//! The scanner, the checker and the cycle finder are pure functions over strings and graphs;
//! the unit tests at the bottom run them on small made-up inputs, and the `src_*` tests run them
//! on the real `src/`.
//!
//! The same reading keeps files and functions small enough to hold in a head: no source file
//! over [`MAX_FILE_LINES`] lines outside its test code, no function over [`MAX_FN_LINES`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

/// An allowed-dependency table: each top-level module with the modules it may import.
type Table = [(&'static str, &'static [&'static str])];

/// docs/ARCHITECTURE.md's layering: main → cli → engine → {plan, proto, io, metrics}; results →
/// metrics; report → results (the HTML report reads only result documents); nothing below
/// imports upward. A module may import only the modules listed next to it. A new top-level module
/// must be added here (and to docs/ARCHITECTURE.md) before it can be used.
const LAYERS: &Table = &[
    ("main", &["cli"]),
    (
        "cli",
        &[
            "certs", "doctor", "engine", "io", "metrics", "plan", "proto", "report", "results",
            "server",
        ],
    ),
    ("engine", &["io", "metrics", "plan", "proto"]),
    ("results", &["metrics", "plan", "proto"]),
    ("report", &["results"]),
    ("plan", &["certs", "metrics", "proto"]),
    ("metrics", &["proto"]),
    ("server", &["certs", "io", "proto"]),
    ("doctor", &["io"]),
    ("io", &[]),
    ("proto", &[]),
    ("certs", &[]),
];

/// Extra edges allowed in test code only, on top of [`LAYERS`]. Each must be used by some test
/// code in `src/` (`src_test_only_layers_are_all_used`): remove an entry once no test needs it.
const TEST_ONLY_LAYERS: &Table = &[
    // The connection is tested against the real gateway, its TLS and its statistics.
    ("proto", &["certs", "server", "metrics"]),
    // The gateway's tests drive it with the plan's auth spec.
    ("server", &["plan"]),
];

/// Something one file's text says about the crate root.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ref {
    /// 1-based line of the target's name (of the `*`, of the root for an alias).
    line: usize,
    kind: Kind,
    /// The path as written, whitespace collapsed, e.g. `crate::c::{D, E}`, `super::super::a::B`.
    text: String,
    /// Inside an inline `#[cfg(test)] mod … { … }`.
    test: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A path into this top-level module: the first segment after the crate root.
    Module(String),
    /// A glob import of the crate root (`use crate::*;`): every top-level module in scope under
    /// its bare name, so the paths through them are not seen.
    Glob,
    /// An alias of the crate root (`use crate as x;`, `extern crate self as x;`): the paths
    /// through `x::` are not seen.
    Alias,
}

/// An import of one top-level module by another.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edge {
    /// Path from the crate root, e.g. `src/plan/mod.rs`.
    file: String,
    line: usize,
    from: String,
    to: String,
    text: String,
    /// Test code: an inline test module or a test-only file.
    test: bool,
}

impl Edge {
    fn site(&self) -> String {
        let test = if self.test { " [test code]" } else { "" };
        format!(
            "{}:{}: {} → {} ({}){test}",
            self.file, self.line, self.from, self.to, self.text
        )
    }
}

/// Why a line is forbidden whatever the table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// A glob import of the crate root.
    Glob,
    /// An alias of the crate root.
    Alias,
    /// A path into a module in `lib.rs`.
    LibRs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Violation {
    /// A module that is not a key of the table, with the edges that mention it.
    NotInTable { module: String, edges: Vec<Edge> },
    /// An edge the table does not allow.
    NotAllowed(Edge),
    /// A line that hides edges from this check, or that `lib.rs` must not have.
    Forbidden {
        file: String,
        line: usize,
        text: String,
        why: Why,
    },
}

type Graph = BTreeMap<String, BTreeSet<String>>;

// ---------------------------------------------------------------------------------------------
// Scanner

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `text` with comments, string literals and char literals replaced by spaces. Newlines and byte
/// offsets are kept, so lines and positions still match the original.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let n = b.len();
    let at = |i: usize| if i < n { b[i] } else { 0 };
    let mut out = b.to_vec();
    let mut blank = |r: Range<usize>| {
        for c in &mut out[r] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < n {
        match b[i] {
            b'/' if at(i + 1) == b'/' => {
                let end = text[i..].find('\n').map_or(n, |p| i + p);
                blank(i..end);
                i = end;
            }
            b'/' if at(i + 1) == b'*' => {
                let (mut depth, mut j) = (1, i + 2);
                while j < n && depth > 0 {
                    if b[j] == b'/' && at(j + 1) == b'*' {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && at(j + 1) == b'/' {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(i..j.min(n));
                i = j;
            }
            b'r' | b'b' | b'c' if i == 0 || !is_ident(b[i - 1]) => {
                // Raw strings r"…", r#"…"#, br"…", cr"…"; prefixed strings b"…", c"…".
                let mut j = i;
                if b[j] != b'r' && at(j + 1) == b'r' {
                    j += 1;
                }
                if b[j] == b'r' {
                    let mut k = j + 1;
                    while at(k) == b'#' {
                        k += 1;
                    }
                    if at(k) == b'"' {
                        let close = format!("\"{}", "#".repeat(k - j - 1));
                        let end = text[k + 1..]
                            .find(&close)
                            .map_or(n, |p| k + 1 + p + close.len());
                        blank(i..end);
                        i = end;
                        continue;
                    }
                } else if at(i + 1) == b'"' {
                    let end = string_end(b, i + 1);
                    blank(i..end);
                    i = end;
                    continue;
                }
                // An identifier (or b'x', handled at the quote): skip it whole.
                i += 1;
                while i < n && is_ident(b[i]) {
                    i += 1;
                }
            }
            b'"' => {
                let end = string_end(b, i);
                blank(i..end);
                i = end;
            }
            b'\'' => {
                if at(i + 1) == b'\\' {
                    // '\n', '\'', '\\', '\u{…}'
                    let end = text
                        .get(i + 3..)
                        .and_then(|t| t.find('\''))
                        .map_or(n, |p| i + 3 + p + 1);
                    blank(i..end);
                    i = end;
                } else if let Some(c) = text[i + 1..].chars().next() {
                    let close = i + 1 + c.len_utf8();
                    if at(close) == b'\'' {
                        blank(i..close + 1);
                        i = close + 1;
                    } else {
                        i += 1; // a lifetime or a label
                    }
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    // Only whole literals were blanked, so multi-byte characters are either intact or gone.
    String::from_utf8(out).expect("blanking keeps UTF-8 valid")
}

/// The end (one past the closing quote) of the string literal whose opening quote is at `open`.
fn string_end(b: &[u8], open: usize) -> usize {
    let mut j = open + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The index of the bracket closing the one at `open` (`{`/`}`, `[`/`]` or `(`/`)`), in
/// stripped code; the last index if it is never closed.
fn matching(b: &[u8], open: usize) -> usize {
    let (o, c) = match b[open] {
        b'{' => (b'{', b'}'),
        b'[' => (b'[', b']'),
        _ => (b'(', b')'),
    };
    let mut depth = 0usize;
    for (j, &x) in b.iter().enumerate().skip(open) {
        if x == o {
            depth += 1;
        } else if x == c {
            depth -= 1;
            if depth == 0 {
                return j;
            }
        }
    }
    b.len() - 1
}

fn collapse_ws(s: &str) -> String {
    let words: Vec<&str> = s.split_whitespace().collect();
    let s = words.join(" ").replace("{ ", "{").replace(" }", "}");
    let s = s
        .replace(" ::", "::")
        .replace(":: ", "::")
        .replace(",}", "}");
    if s.chars().count() > 100 {
        format!("{}…", s.chars().take(100).collect::<String>())
    } else {
        s
    }
}

/// The path starting at `start` (`a::b::C`, `a::{B, C}`, `a::*`), as written; ends before the
/// first thing that is not part of the path.
fn path_end(b: &[u8], start: usize) -> usize {
    let mut i = start;
    loop {
        match b.get(i) {
            Some(b'{') => return matching(b, i) + 1,
            Some(b'*') => return i + 1,
            Some(&c) if is_ident(c) => {
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
            }
            _ => return i,
        }
        let j = skip_ws(b, i);
        if b[j..].starts_with(b"::") {
            i = skip_ws(b, j + 2);
        } else {
            return i;
        }
    }
}

/// Whether the word `kw` (not a longer identifier) starts at `at`.
fn keyword_at(b: &[u8], at: usize, kw: &str) -> bool {
    b[at..].starts_with(kw.as_bytes()) && !b.get(at + kw.len()).is_some_and(|&c| is_ident(c))
}

/// Byte ranges of inline test modules: `#[cfg(test)]`, maybe more attributes and a visibility,
/// then `mod name { … }` up to its matching closing brace. (`mod name;` declares a file; test
/// files are recognised by their path, see [`is_test_file`].)
fn test_ranges(code: &str) -> Vec<Range<usize>> {
    const ATTR: &str = "#[cfg(test)]";
    let b = code.as_bytes();
    let mut ranges = Vec::new();
    for (start, _) in code.match_indices(ATTR) {
        let mut j = skip_ws(b, start + ATTR.len());
        while b[j..].starts_with(b"#[") {
            j = skip_ws(b, matching(b, j + 1) + 1);
        }
        if keyword_at(b, j, "pub") {
            j = skip_ws(b, j + 3);
            if b.get(j) == Some(&b'(') {
                j = skip_ws(b, matching(b, j) + 1);
            }
        }
        if !keyword_at(b, j, "mod") {
            continue;
        }
        let Some(p) = code[j..].find(['{', ';']) else {
            continue;
        };
        if b[j + p] == b'{' {
            ranges.push(start..matching(b, j + p) + 1);
        }
    }
    ranges
}

/// The end of the identifier (or number) starting at `at`.
fn word_end(b: &[u8], at: usize) -> usize {
    at + b[at..].iter().take_while(|&&c| is_ident(c)).count()
}

/// Every word (identifier, keyword or number) of stripped code, with its start.
fn words(code: &str) -> impl Iterator<Item = (usize, &str)> {
    let b = code.as_bytes();
    (0..b.len())
        .filter(move |&i| is_ident(b[i]) && (i == 0 || !is_ident(b[i - 1])))
        .map(move |i| (i, &code[i..word_end(b, i)]))
}

/// The word just before `at`, skipping whitespace (empty if something else is there).
fn word_before(code: &str, at: usize) -> &str {
    let head = code[..at].trim_end();
    let start = head
        .bytes()
        .rposition(|c| !is_ident(c))
        .map_or(0, |p| p + 1);
    &head[start..]
}

/// Whether the path starting at `at` is the one a `use` names: `use x`, `use ::x`.
fn after_use(code: &str, at: usize) -> bool {
    let head = code[..at].trim_end();
    let head = head.strip_suffix("::").unwrap_or(head);
    word_before(code, head.len()) == "use"
}

/// Whether `at` continues a path or a field access: `a::<at>`, `a.<at>`.
fn after_separator(code: &str, at: usize) -> bool {
    let head = code[..at].trim_end();
    head.ends_with("::") || head.ends_with('.')
}

/// `as name` after `at` (whitespace skipped): the end of the name.
fn alias_after(b: &[u8], at: usize) -> Option<usize> {
    let k = skip_ws(b, at);
    if !keyword_at(b, k, "as") {
        return None;
    }
    let m = skip_ws(b, k + 2);
    (b.get(m).is_some_and(|&c| is_ident(c))).then(|| word_end(b, m))
}

/// Each `kw NAME` of stripped code (an item keyword and the name it declares): where `kw`
/// starts, and the name's byte range. A keyword not followed by a name (`fn(u8)`) is skipped.
fn declarations<'c>(
    code: &'c str,
    kw: &'static str,
) -> impl Iterator<Item = (usize, Range<usize>)> + 'c {
    let b = code.as_bytes();
    words(code)
        .filter(move |&(_, w)| w == kw)
        .filter_map(move |(at, _)| {
            let name = skip_ws(b, at + kw.len());
            let end = word_end(b, name);
            (end > name).then_some((at, name..end))
        })
}

/// Byte ranges of the braces of inline modules (`mod name { … }`), each one level deeper.
fn inline_mods(code: &str) -> Vec<Range<usize>> {
    let b = code.as_bytes();
    declarations(code, "mod")
        .filter_map(|(_, name)| {
            let open = skip_ws(b, name.end);
            (b.get(open) == Some(&b'{')).then(|| open..matching(b, open) + 1)
        })
        .collect()
}

/// The modules a file declares (`mod name;` or `mod name { … }`).
fn declared_mods(code: &str) -> BTreeSet<&str> {
    declarations(code, "mod")
        .map(|(_, name)| &code[name])
        .collect()
}

/// Keywords that a path can follow.
const KEYWORDS: &[&str] = &[
    "as", "box", "break", "const", "dyn", "else", "extern", "for", "if", "impl", "in", "let",
    "match", "move", "mut", "pub", "ref", "return", "static", "type", "unsafe", "use", "where",
    "while", "yield",
];

/// Where a file sits in the module tree, from its path under `src/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    /// How many `super`s climb from the file's module to the crate root: 0 for `lib.rs` and
    /// `main.rs`; 1 for `plan.rs` and `plan/mod.rs`; 2 for `plan/url.rs` and `plan/x/mod.rs`;
    /// 3 for `plan/x/y.rs`. (Inside an inline `mod m { … }`, one more.)
    depth: usize,
    /// `main.rs`, the binary's crate root: the library's root is `sockstorm`. Its own root holds
    /// only what main.rs declares or imports, so a glob or an alias of it hides no edge.
    bin: bool,
    /// `lib.rs`, the library's root: the modules it declares are paths from the root too.
    lib: bool,
}

fn place_of(path: &str) -> Place {
    let bin = path == "main.rs";
    let lib = path == "lib.rs";
    let parts = path.split('/').count();
    let depth = if bin || lib {
        0
    } else if path.ends_with("/mod.rs") {
        parts - 1
    } else {
        parts
    };
    Place { depth, bin, lib }
}

/// Every reference to the crate root and what follows it in a file's text, in order. `path` is
/// the file's path under `src/`; it gives the file's depth (how far `super`s climb) and its
/// roots. Grouped imports give one reference per first segment inside the braces.
fn scan(path: &str, text: &str) -> Vec<Ref> {
    let place = place_of(path);
    let code = strip(text);
    let b = code.as_bytes();
    let declared = if place.lib {
        declared_mods(&code)
    } else {
        BTreeSet::new()
    };
    let mut s = Scan {
        code: &code,
        tests: test_ranges(&code),
        test: false,
        out: Vec::new(),
    };
    let mods = inline_mods(&code);
    let mut next = 0; // the first byte not yet read as part of a path
    for (at, word) in words(&code) {
        if at < next {
            continue;
        }
        s.test = s.tests.iter().any(|r| r.contains(&at));
        let depth = place.depth + mods.iter().filter(|r| r.contains(&at)).count();
        let end = at + word.len();
        // The level the path starts at (0: a crate root), and whether that root is the library's.
        let (level, lib_root) = match word {
            "crate" if word_before(&code, at) == "extern" => {
                // `extern crate self as x;` (main.rs: `extern crate sockstorm as x;`)
                let name = skip_ws(b, end);
                let name_end = word_end(b, name);
                let root = if place.bin { "sockstorm" } else { "self" };
                if &code[name..name_end] == root {
                    if let Some(alias_end) = alias_after(b, name_end) {
                        let text = format!("extern {}", collapse_ws(&code[at..alias_end]));
                        s.push(at, Kind::Alias, text);
                    }
                }
                next = name_end;
                continue;
            }
            "crate" => (0, !place.bin),
            "sockstorm" if place.bin => (0, true),
            "self" => (depth as isize, !place.bin),
            "super" => (depth as isize - 1, !place.bin),
            // lib.rs: `use plan::X;`, `cli::run()` name its modules from the root.
            w if declared.contains(w) && !after_separator(&code, at) => {
                let k = skip_ws(b, end);
                if b[k..].starts_with(b"::") || after_use(&code, at) {
                    s.resolve(at, 0, true, "");
                    next = path_end(b, at);
                }
                continue;
            }
            // Any other path is read whole, so that `std::{io, fmt::{self}}` is not mistaken for
            // paths of this crate; a keyword is not part of the path after it (`use ::sockstorm`).
            w => {
                if !KEYWORDS.contains(&w) {
                    next = path_end(b, at);
                }
                continue;
            }
        };
        next = path_end(b, at);
        // Climb: each `::super` goes one level up.
        let mut level = level;
        let mut j = end;
        let rest = loop {
            let k = skip_ws(b, j);
            if !b[k..].starts_with(b"::") {
                break None;
            }
            let m = skip_ws(b, k + 2);
            if keyword_at(b, m, "super") {
                level -= 1;
                j = m + "super".len();
            } else {
                break Some(m);
            }
        };
        match rest {
            _ if level < 0 => {} // more `super`s than levels: not Rust
            Some(m) => s.resolve(m, level, lib_root, &collapse_ws(&code[at..m])),
            // The root itself: `use crate as x;`, `use super::super as x;`.
            None if level == 0 && lib_root && after_use(&code, at) => {
                if let Some(alias_end) = alias_after(b, j) {
                    s.push(at, Kind::Alias, collapse_ws(&code[at..alias_end]));
                }
            }
            None => {}
        }
    }
    s.out
}

/// The state of [`scan`] over one file.
struct Scan<'c> {
    /// The stripped text.
    code: &'c str,
    /// The inline test modules.
    tests: Vec<Range<usize>>,
    /// Whether the path being read is in one.
    test: bool,
    out: Vec<Ref>,
}

impl Scan<'_> {
    fn push(&mut self, at: usize, kind: Kind, text: String) {
        let line = 1 + self.code.as_bytes()[..at]
            .iter()
            .filter(|&&c| c == b'\n')
            .count();
        self.out.push(Ref {
            line,
            kind,
            text,
            test: self.test,
        });
    }

    /// The references in the rest of a path, starting at `start`, relative to the module
    /// `level` levels below a crate root (the library's if `lib_root`): one segment, a `*` or a
    /// group. `prefix` is the path before `start` as written, e.g. `crate::`, `super::super::`.
    fn resolve(&mut self, start: usize, level: isize, lib_root: bool, prefix: &str) {
        let code = self.code;
        let b = code.as_bytes();
        if level < 0 {
            return;
        }
        match b.get(start) {
            Some(b'{') => {
                let close = matching(b, start);
                let mut item = start + 1;
                let mut depth = 0;
                for j in start + 1..=close {
                    match b[j] {
                        b'{' => depth += 1,
                        b'}' if depth > 0 => depth -= 1,
                        b',' | b'}' if depth == 0 => {
                            let s = skip_ws(b, item);
                            if s < j {
                                self.resolve(s, level, lib_root, prefix);
                            }
                            item = j + 1;
                        }
                        _ => {}
                    }
                }
            }
            Some(b'*') if level == 0 && lib_root => {
                self.push(start, Kind::Glob, format!("{prefix}*"));
            }
            Some(&c) if is_ident(c) && !c.is_ascii_digit() => {
                let end = word_end(b, start);
                match &code[start..end] {
                    "super" => {
                        // In a group: `use super::{super::a::B}`.
                        let k = skip_ws(b, end);
                        if b[k..].starts_with(b"::") {
                            let m = skip_ws(b, k + 2);
                            self.resolve(m, level - 1, lib_root, &format!("{prefix}super::"));
                        }
                    }
                    // `use crate::{self as x};`
                    "self" if level == 0 && lib_root => {
                        if let Some(alias_end) = alias_after(b, end) {
                            let alias = collapse_ws(&code[start..alias_end]);
                            self.push(start, Kind::Alias, format!("{prefix}{{{alias}}}"));
                        }
                    }
                    "self" => {} // `use super::{self, …}`: the module itself
                    target if level == 0 => {
                        let text =
                            format!("{prefix}{}", collapse_ws(&code[start..path_end(b, start)]));
                        self.push(start, Kind::Module(target.to_string()), text);
                    }
                    _ => {} // inside the file's own top-level module
                }
            }
            _ => {} // something this scanner does not understand
        }
    }
}

/// The top-level module of a file, from its path under `src/` (`plan/file.rs` → `plan`,
/// `doctor.rs` → `doctor`, `main.rs` → `main`, the binary); `None` for `lib.rs`, which only
/// declares modules.
fn module_of(path: &str) -> Option<String> {
    match path.split_once('/') {
        Some((dir, _)) => Some(dir.to_string()),
        None if path == "lib.rs" => None,
        None => Some(path.trim_end_matches(".rs").to_string()),
    }
}

/// A file that is test code as a whole: `tests.rs`, `*_tests.rs`, anything in a `tests`
/// directory, and `fuzz_smoke.rs`.
fn is_test_file(path: &str) -> bool {
    let mut parts: Vec<&str> = path.split('/').collect();
    let name = parts.pop().unwrap_or("");
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || name == "fuzz_smoke.rs"
        || parts.contains(&"tests")
}

/// The edges from one file, given its path under `src/` and its text. References to the file's
/// own module are not edges; `lib.rs` has none (see [`forbidden`]).
fn edges(path: &str, text: &str) -> Vec<Edge> {
    let Some(from) = module_of(path) else {
        return Vec::new();
    };
    let test_file = is_test_file(path);
    scan(path, text)
        .into_iter()
        .filter_map(|r| match r.kind {
            Kind::Module(to) if to != from => Some(Edge {
                file: format!("src/{path}"),
                line: r.line,
                from: from.clone(),
                to,
                text: r.text,
                test: r.test || test_file,
            }),
            _ => None,
        })
        .collect()
}

/// The lines of one file that are violations whatever the table says: globs and aliases of the
/// crate root (they hide edges), and in `lib.rs` any path into a module.
fn forbidden(path: &str, text: &str) -> Vec<Violation> {
    let lib = place_of(path).lib;
    scan(path, text)
        .into_iter()
        .filter_map(|r| {
            let why = match r.kind {
                Kind::Glob => Why::Glob,
                Kind::Alias => Why::Alias,
                Kind::Module(_) if lib => Why::LibRs,
                Kind::Module(_) => return None,
            };
            Some(Violation::Forbidden {
                file: format!("src/{path}"),
                line: r.line,
                text: r.text,
                why,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Checker

fn allowed(table: &Table, from: &str, to: &str) -> bool {
    table.iter().any(|(f, tos)| *f == from && tos.contains(&to))
}

/// Every violation of `main` (plus `test_only` for test code) by `edges`. `modules` are the
/// top-level modules that exist; each must be in the table even if it imports nothing.
fn check(modules: &[String], edges: &[Edge], main: &Table, test_only: &Table) -> Vec<Violation> {
    let known: BTreeSet<&str> = main.iter().map(|(m, _)| *m).collect();
    let mut unknown: BTreeMap<String, Vec<Edge>> = BTreeMap::new();
    for m in modules {
        if !known.contains(m.as_str()) {
            unknown.entry(m.clone()).or_default();
        }
    }
    let mut out = Vec::new();
    for e in edges {
        let mut placed = true;
        for m in [&e.from, &e.to] {
            if !known.contains(m.as_str()) {
                unknown.entry(m.clone()).or_default().push(e.clone());
                placed = false;
            }
        }
        let ok = allowed(main, &e.from, &e.to) || (e.test && allowed(test_only, &e.from, &e.to));
        if placed && !ok {
            out.push(Violation::NotAllowed(e.clone()));
        }
    }
    let unknown = unknown
        .into_iter()
        .map(|(module, edges)| Violation::NotInTable { module, edges });
    unknown.chain(out).collect()
}

/// The entries of `test_only` (as `from → to`) that no test code needs: no test edge makes
/// them, or `main` allows them anyway.
fn unused_test_only(edges: &[Edge], main: &Table, test_only: &Table) -> Vec<String> {
    let used: BTreeSet<(&str, &str)> = edges
        .iter()
        .filter(|e| e.test)
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    test_only
        .iter()
        .flat_map(|(from, tos)| tos.iter().map(move |to| (*from, *to)))
        .filter(|&(from, to)| allowed(main, from, to) || !used.contains(&(from, to)))
        .map(|(from, to)| format!("{from} → {to}"))
        .collect()
}

fn render(violations: &[Violation]) -> String {
    let mut s = String::new();
    let unknown: Vec<_> = violations
        .iter()
        .filter(|v| matches!(v, Violation::NotInTable { .. }))
        .collect();
    let upward: Vec<_> = violations
        .iter()
        .filter(|v| matches!(v, Violation::NotAllowed(_)))
        .collect();
    let forbidden: Vec<_> = violations
        .iter()
        .filter(|v| matches!(v, Violation::Forbidden { .. }))
        .collect();
    if !unknown.is_empty() {
        s.push_str(
            "Modules missing from the layering table. If it is a new top-level module, add it to \
             LAYERS in tests/architecture.rs (and to docs/ARCHITECTURE.md's layers) with the modules it may \
             import; if `crate::x` names an item defined in lib.rs, move it into the module \
             that owns it:\n",
        );
        for v in unknown {
            if let Violation::NotInTable { module, edges } = v {
                let _ = writeln!(s, "  module `{module}`");
                for e in edges {
                    let _ = writeln!(s, "    {}", e.site());
                }
            }
        }
    }
    if !upward.is_empty() {
        let _ = writeln!(
            s,
            "{} import(s) outside the layering table (LAYERS in tests/architecture.rs, which is \
             docs/ARCHITECTURE.md's layering; test code may also use TEST_ONLY_LAYERS):",
            upward.len()
        );
        for v in upward {
            if let Violation::NotAllowed(e) = v {
                let _ = writeln!(s, "  {}", e.site());
            }
        }
        s.push_str(
            "Fix: nothing below imports upward. Move the type or function down into the lower \
             layer that both sides may use (docs/ARCHITECTURE.md: \"when a type is needed by two layers, it \
             belongs to the lower one\"), or have the upper layer pass it in (a value, a trait \
             the lower layer defines). Change the table only together with docs/ARCHITECTURE.md.\n",
        );
    }
    if !forbidden.is_empty() {
        let _ = writeln!(
            s,
            "{} line(s) that hide imports from this check, or that lib.rs must not have:",
            forbidden.len()
        );
        for v in forbidden {
            if let Violation::Forbidden {
                file,
                line,
                text,
                why,
            } = v
            {
                let fix = match why {
                    Why::Glob => {
                        "a glob import of the crate root brings every top-level module into \
                         scope, and the paths through them are not seen as imports: import the \
                         modules by name instead (`use crate::{plan, proto};`)"
                    }
                    Why::Alias => {
                        "an alias of the crate root: the paths through it are not seen as \
                         imports. Write `crate::x::…` (in main.rs, `sockstorm::x::…`) instead"
                    }
                    Why::LibRs => {
                        "lib.rs only declares modules (`pub mod x;`): move this into the module \
                         that needs it"
                    }
                };
                let _ = writeln!(s, "  {file}:{line}: {text}: {fix}");
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Cycles

fn table_graph(table: &Table) -> Graph {
    table
        .iter()
        .map(|(m, tos)| (m.to_string(), tos.iter().map(|t| t.to_string()).collect()))
        .collect()
}

/// The graph of non-test edges (test code does not make a layer depend on another).
fn edge_graph(edges: &[Edge]) -> Graph {
    let mut g = Graph::new();
    for e in edges.iter().filter(|e| !e.test) {
        g.entry(e.from.clone()).or_default().insert(e.to.clone());
    }
    g
}

/// Every elementary cycle in `graph`, each as a path that starts and ends at the same module
/// (`["engine", "plan", "engine"]`), shortest first; empty when the graph is acyclic. For each
/// module `start` in order, a depth-first search walks simple paths through modules after
/// `start` only, and each path that leads back to `start` is a cycle; so each cycle is found
/// once, from its first module. (Exponential in the worst case; this graph has a dozen nodes.)
fn find_cycles(graph: &Graph) -> Vec<Vec<String>> {
    fn walk<'g>(
        start: &'g str,
        node: &'g str,
        graph: &'g Graph,
        path: &mut Vec<&'g str>,
        out: &mut Vec<Vec<String>>,
    ) {
        for next in graph.get(node).into_iter().flatten() {
            let next = next.as_str();
            if next == start {
                let mut cycle: Vec<String> = path.iter().map(|m| m.to_string()).collect();
                cycle.push(start.to_string());
                out.push(cycle);
            } else if next > start && !path.contains(&next) {
                path.push(next);
                walk(start, next, graph, path, out);
                path.pop();
            }
        }
    }
    let mut out = Vec::new();
    for start in graph.keys() {
        walk(start, start, graph, &mut vec![start.as_str()], &mut out);
    }
    out.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    out
}

fn cycle_path(cycle: &[String]) -> String {
    cycle.join(" → ")
}

/// The cycles, then the edges on them: where the table forbids an edge, every import that
/// makes it. (The table is acyclic, so each cycle has at least one such edge to remove.)
fn render_cycles(cycles: &[Vec<String>], edges: &[Edge], table: &Table) -> String {
    let mut s = String::new();
    let mut steps = BTreeSet::new();
    for c in cycles {
        let _ = writeln!(s, "  {}", cycle_path(c));
        steps.extend(c.windows(2).map(|w| (w[0].as_str(), w[1].as_str())));
    }
    s.push_str("The edges on these cycles:\n");
    for (from, to) in steps {
        let sites: Vec<&Edge> = edges
            .iter()
            .filter(|e| !e.test && e.from == from && e.to == to)
            .collect();
        if allowed(table, from, to) {
            let _ = writeln!(s, "  {from} → {to}: allowed ({} import(s))", sites.len());
        } else {
            let _ = writeln!(
                s,
                "  {from} → {to}: NOT in the table, remove these imports:"
            );
            for e in sites {
                let _ = writeln!(s, "    {}:{}: {}", e.file, e.line, e.text);
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Files and functions that fit in a head

/// The most lines a source file of `src/` may have outside its test code.
const MAX_FILE_LINES: usize = 800;
/// The most lines a function of `src/` may span (test code excepted), from `fn` to its `}`.
const MAX_FN_LINES: usize = 150;

/// A file or a function over its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Oversize {
    /// Path from the crate root, e.g. `src/plan/mod.rs`, and the 1-based line of the `fn`
    /// (1 for a file).
    site: String,
    /// `file`, or `fn NAME`.
    what: String,
    lines: usize,
}

/// The functions with a body in stripped `code`: (name, byte range from `fn` to the closing
/// brace). Nested functions are listed too; `fn(…)` pointer types and bodiless declarations
/// are not.
fn functions(code: &str) -> Vec<(&str, Range<usize>)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    for (at, name) in declarations(code, "fn") {
        // The body's `{`, or a `;` for a declaration; brackets of the signature (`[u8; 4]`,
        // arguments) are skipped whole.
        let mut j = name.end;
        let body = loop {
            match b.get(j) {
                None | Some(b';') => break None,
                Some(b'{') => break Some(j),
                Some(b'(' | b'[') => j = matching(b, j) + 1,
                Some(_) => j += 1,
            }
        };
        if let Some(open) = body {
            out.push((&code[name], at..matching(b, open) + 1));
        }
    }
    out
}

/// What of one file (path under `src/`, text) is over [`MAX_FILE_LINES`] or [`MAX_FN_LINES`].
/// Test files are not checked, and test modules count for neither.
fn oversized(path: &str, text: &str) -> Vec<Oversize> {
    if is_test_file(path) {
        return Vec::new();
    }
    let code = strip(text);
    let tests = test_ranges(&code);
    let in_tests = |at: usize| tests.iter().any(|r| r.contains(&at));
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let test_lines: usize = tests
        .iter()
        .map(|r| line_of(r.end - 1) - line_of(r.start) + 1)
        .sum();
    let lines = text.lines().count().saturating_sub(test_lines);
    let mut out = Vec::new();
    if lines > MAX_FILE_LINES {
        out.push(Oversize {
            site: format!("src/{path}"),
            what: "file".into(),
            lines,
        });
    }
    for (name, r) in functions(&code) {
        let span = line_of(r.end - 1) - line_of(r.start) + 1;
        if span > MAX_FN_LINES && !in_tests(r.start) {
            out.push(Oversize {
                site: format!("src/{path}:{}", line_of(r.start)),
                what: format!("fn {name}"),
                lines: span,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The real src/

/// The real src/: its top-level modules, every edge between them, and the lines forbidden
/// whatever the table says.
struct Src {
    modules: Vec<String>,
    edges: Vec<Edge>,
    forbidden: Vec<Violation>,
}

/// Every `.rs` file under `src/`, as (path from `src/`, text), sorted by path.
fn src_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, rel: &str, files: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .expect("UTF-8 file name");
            let rel = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            if p.is_dir() {
                walk(&p, &rel, files);
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&p)
                    .unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                files.push((rel, text));
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, "", &mut files);
    assert!(
        files.len() > 10,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    files
}

fn load_src() -> Src {
    let files = src_files();
    let mut modules = BTreeSet::new();
    let mut all = Vec::new();
    let mut bad = Vec::new();
    for (path, text) in &files {
        if let Some(m) = module_of(path) {
            modules.insert(m);
        }
        all.extend(edges(path, text));
        bad.extend(forbidden(path, text));
    }
    Src {
        modules: modules.into_iter().collect(),
        edges: all,
        forbidden: bad,
    }
}

#[test]
fn layer_table_is_acyclic_and_closed() {
    let keys: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    assert_eq!(keys.len(), LAYERS.len(), "a module appears twice in LAYERS");
    for (m, tos) in LAYERS.iter().chain(TEST_ONLY_LAYERS) {
        assert!(
            keys.contains(m),
            "`{m}` is in TEST_ONLY_LAYERS but not in LAYERS"
        );
        for t in *tos {
            assert!(
                keys.contains(t),
                "`{m} → {t}`: `{t}` is not a module of LAYERS"
            );
        }
    }
    let cycles = find_cycles(&table_graph(LAYERS));
    assert!(
        cycles.is_empty(),
        "LAYERS (docs/ARCHITECTURE.md's layering) has a cycle; layers must point one way:\n{}",
        cycles
            .iter()
            .map(|c| format!("  {}\n", cycle_path(c)))
            .collect::<String>()
    );
}

#[test]
fn src_imports_follow_the_layer_table() {
    let src = load_src();
    let mut violations = check(&src.modules, &src.edges, LAYERS, TEST_ONLY_LAYERS);
    violations.extend(src.forbidden);
    assert!(violations.is_empty(), "\n{}", render(&violations));
}

#[test]
fn src_test_only_layers_are_all_used() {
    let src = load_src();
    let unused = unused_test_only(&src.edges, LAYERS, TEST_ONLY_LAYERS);
    assert!(
        unused.is_empty(),
        "\nTEST_ONLY_LAYERS entries that no test code in src/ uses (or that LAYERS already \
         allows): {}.\nFix: remove the entry from TEST_ONLY_LAYERS in tests/architecture.rs, so that \
         test code cannot start reaching that far unnoticed.\n",
        unused.join(", ")
    );
}

#[test]
fn src_has_no_import_cycles() {
    let Src { edges, .. } = load_src();
    let cycles = find_cycles(&edge_graph(&edges));
    assert!(
        cycles.is_empty(),
        "\nImport cycles between the top-level modules of src/ (test code not counted):\n{}\
         Fix: remove the imports outside the table. The lower module of a cycle must not import \
         the upper one: move the shared type down into the lower layer, as docs/ARCHITECTURE.md says.\n",
        render_cycles(&cycles, &edges, LAYERS)
    );
}

#[test]
fn src_files_and_functions_fit_in_a_head() {
    let over: Vec<Oversize> = src_files()
        .iter()
        .flat_map(|(p, t)| oversized(p, t))
        .collect();
    assert!(
        over.is_empty(),
        "\nOver the size limits ({MAX_FILE_LINES} lines per file outside its tests, \
         {MAX_FN_LINES} per function):\n{}\
         Fix: split the file by concern into a directory of submodules (docs/ARCHITECTURE.md \
         says where each concern lives), or the function into the steps it goes through.\n",
        over.iter()
            .map(|o| format!("  {}: {} has {} lines\n", o.site, o.what, o.lines))
            .collect::<String>()
    );
}

// ---------------------------------------------------------------------------------------------
// The checker, on made-up inputs

#[cfg(test)]
mod checker {
    use super::*;

    /// The module targets (with their lines) of `text` in a file `path`.
    fn targets_in(path: &str, text: &str) -> Vec<(usize, String)> {
        scan(path, text)
            .into_iter()
            .filter_map(|r| match r.kind {
                Kind::Module(t) => Some((r.line, t)),
                _ => None,
            })
            .collect()
    }

    /// The module targets of `text` in a file two levels down (`super::super` is the root).
    fn targets(text: &str) -> Vec<(usize, String)> {
        targets_in("a/file.rs", text)
    }

    /// `(file:line, text, why)` of each forbidden line of `text` in a file `path`.
    fn forbidden_in(path: &str, text: &str) -> Vec<(String, String, Why)> {
        forbidden(path, text)
            .into_iter()
            .map(|v| match v {
                Violation::Forbidden {
                    file,
                    line,
                    text,
                    why,
                } => (format!("{file}:{line}"), text, why),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn check_files(files: &[(&str, &str)]) -> Vec<Violation> {
        let modules: Vec<String> = files.iter().filter_map(|(p, _)| module_of(p)).collect();
        let all: Vec<Edge> = files.iter().flat_map(|(p, t)| edges(p, t)).collect();
        let mut v = check(&modules, &all, LAYERS, TEST_ONLY_LAYERS);
        v.extend(files.iter().flat_map(|(p, t)| forbidden(p, t)));
        v
    }

    fn edge(file: &str, line: usize, from: &str, to: &str, text: &str, test: bool) -> Edge {
        Edge {
            file: file.into(),
            line,
            from: from.into(),
            to: to.into(),
            text: text.into(),
            test,
        }
    }

    fn graph(pairs: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (a, b) in pairs {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    }

    #[test]
    fn upward_import_is_reported() {
        let v = check_files(&[(
            "proto/conn.rs",
            "use std::fmt;\nuse crate::proto::rng::Rng;\nuse crate::metrics::X;\n",
        )]);
        assert_eq!(
            v,
            vec![Violation::NotAllowed(Edge {
                file: "src/proto/conn.rs".into(),
                line: 3,
                from: "proto".into(),
                to: "metrics".into(),
                text: "crate::metrics::X".into(),
                test: false,
            })]
        );
        let msg = render(&v);
        assert!(
            msg.contains("src/proto/conn.rs:3: proto → metrics (crate::metrics::X)"),
            "{msg}"
        );
        assert!(msg.contains("Move the type or function down"), "{msg}");
    }

    #[test]
    fn downward_imports_pass() {
        let v = check_files(&[
            (
                "engine/shard.rs",
                "use crate::proto::conn::Conn;\nuse crate::io::uring::Ring;\n",
            ),
            ("cli/mod.rs", "use crate::{engine, results::Doc};\n"),
            ("lib.rs", "pub mod cli;\npub mod engine;\n"),
            ("main.rs", "use sockstorm::cli::run;\n"),
            ("report/mod.rs", "use crate::results::Doc;\n"),
        ]);
        assert_eq!(v, vec![]);
    }

    #[test]
    fn grouped_multiline_import_yields_every_target() {
        let text = "use crate::{\n    a::B,\n    c::{D, E},\n    f::{g::{H, I}, J},\n    k,\n};\n";
        assert_eq!(
            targets(text),
            vec![
                (2, "a".into()),
                (3, "c".into()),
                (4, "f".into()),
                (5, "k".into())
            ]
        );
        let texts: Vec<String> = scan("a/file.rs", text)
            .into_iter()
            .map(|r| r.text)
            .collect();
        assert_eq!(
            texts,
            [
                "crate::a::B",
                "crate::c::{D, E}",
                "crate::f::{g::{H, I}, J}",
                "crate::k"
            ]
        );
        assert_eq!(
            targets("pub use crate::{a::{self, B}, {c::D, e}};"),
            vec![(1, "a".into()), (1, "c".into()), (1, "e".into())]
        );
    }

    #[test]
    fn paths_in_expressions_types_and_attributes_are_found() {
        let text = "\
fn f() -> crate::a::T {
    let x = crate::b::g(1) + crate :: c :: h();
    x
}
#[derive(Parser)]
struct Args {
    #[arg(long, value_parser = crate::d::parse_flag)]
    flag: u32,
    #[error(transparent)]
    E(#[from] crate::e::Error),
}
impl crate::f::Tr for Args {}
";
        assert_eq!(
            targets(text),
            vec![
                (1, "a".into()),
                (2, "b".into()),
                (2, "c".into()),
                (7, "d".into()),
                (10, "e".into()),
                (12, "f".into())
            ]
        );
        assert_eq!(scan("a/file.rs", text)[3].text, "crate::d::parse_flag");
    }

    #[test]
    fn comments_and_string_literals_are_ignored() {
        let text = r####"//! Uses crate::a::X.
/// See [`crate::b::Y`].
// use crate::c::Z;
/* crate::d /* nested: crate::e */ still a comment: crate::f */
fn f<'a>(s: &'a str) -> &'a str {
    let _ = "use crate::g::X; \" crate::h";
    let _ = r#"crate::i "quoted" crate::j"#;
    let _ = br"crate::k";
    let _ = b"crate::l";
    let _ = ('"', '\'', b'"', '{', '\u{7d}');
    let _ = crate::real::X; // crate::m
    'outer: loop { break 'outer; }
    pub(crate) fn g() {}
    s
}
"####;
        assert_eq!(targets(text), vec![(11, "real".into())]);
    }

    #[test]
    fn self_super_and_own_module_are_not_edges() {
        // plan/file.rs is two levels down: `super` is plan, `super::super` the crate root.
        let text = "use self::x::Y;\nuse super::Z;\nuse crate::plan::parse;\nuse crate::{self, plan};\nfn f() -> super::super::plan::W { super::g() }\npub(super) fn h() {}\npub(in super::super) fn i() {}\n";
        assert_eq!(edges("plan/file.rs", text), vec![]);
        assert_eq!(forbidden("plan/file.rs", text), vec![]);
        // `super::super::W` from plan/file.rs is the root's W: a top-level module.
        assert_eq!(
            edges("plan/file.rs", "fn f() -> super::super::W { todo!() }\n"),
            vec![edge(
                "src/plan/file.rs",
                1,
                "plan",
                "W",
                "super::super::W",
                false
            )]
        );
        assert_eq!(edges("lib.rs", "use crate::proto::X;"), vec![]);
    }

    #[test]
    fn module_of_uses_the_first_path_component() {
        assert_eq!(module_of("plan/file.rs").as_deref(), Some("plan"));
        assert_eq!(module_of("proto/ws/frame.rs").as_deref(), Some("proto"));
        assert_eq!(module_of("doctor.rs").as_deref(), Some("doctor"));
        assert_eq!(module_of("doctor/limits.rs").as_deref(), Some("doctor"));
        assert_eq!(module_of("lib.rs"), None);
        assert_eq!(module_of("main.rs").as_deref(), Some("main"));
    }

    #[test]
    fn inline_cfg_test_module_is_test_code() {
        let text = "\
use crate::a::X;
#[cfg(test)]
#[path = \"conn_tests.rs\"]
mod file_tests;
fn f() { let _ = crate::b::Y; }
#[cfg(test)]
mod tests {
    use super::*;
    use crate::c::Z;
    fn g() { if true { let _ = \"}\"; let _ = '}'; } }
    // }
    fn h() -> crate::d::W { todo!() }
}
use crate::e::V;
";
        let got: Vec<(String, bool)> = scan("a/file.rs", text)
            .into_iter()
            .map(|r| match r.kind {
                Kind::Module(t) => (t, r.test),
                other => panic!("{other:?}"),
            })
            .collect();
        let want = [
            ("a", false),
            ("b", false),
            ("c", true),
            ("d", true),
            ("e", false),
        ];
        assert_eq!(got, want.map(|(t, b)| (t.to_string(), b)));
    }

    #[test]
    fn test_files_are_test_code() {
        for p in [
            "server/tests.rs",
            "proto/conn_tests.rs",
            "proto/conn_tls_tests.rs",
            "proto/fuzz_smoke.rs",
            "server/tests/fanout.rs",
        ] {
            assert!(is_test_file(p), "{p}");
        }
        for p in [
            "proto/conn.rs",
            "server/mod.rs",
            "plan/latest.rs",
            "doctor.rs",
        ] {
            assert!(!is_test_file(p), "{p}");
        }
    }

    #[test]
    fn test_only_edges_are_allowed_in_test_code_only() {
        let v = check_files(&[
            ("proto/conn_tests.rs", "use crate::server::Gateway;\n"),
            (
                "server/mod.rs",
                "#[cfg(test)]\nmod tests {\n    use crate::plan::AuthSpec;\n}\n",
            ),
            ("proto/conn.rs", "use crate::certs::TestCa;\n"),
        ]);
        let sites: Vec<String> = v
            .iter()
            .map(|v| match v {
                Violation::NotAllowed(e) => e.site(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sites,
            ["src/proto/conn.rs:1: proto → certs (crate::certs::TestCa)"]
        );
        // Not in either table: reported even in test code, and marked as such.
        let v = check_files(&[(
            "io/sock.rs",
            "#[cfg(test)]\nmod tests { use crate::engine::E; }\n",
        )]);
        assert!(
            render(&v).contains("src/io/sock.rs:2: io → engine (crate::engine::E) [test code]"),
            "{}",
            render(&v)
        );
    }

    #[test]
    fn module_missing_from_the_table_fails() {
        let v = check_files(&[
            ("segment/mod.rs", "use crate::proto::X;\n"),
            ("lonely.rs", "fn f() {}\n"),
            ("cli/mod.rs", "use crate::segment::Y;\n"),
        ]);
        let modules: Vec<&str> = v
            .iter()
            .map(|v| match v {
                Violation::NotInTable { module, .. } => module.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(modules, ["lonely", "segment"]);
        let msg = render(&v);
        assert!(msg.contains("add it to LAYERS"), "{msg}");
        assert!(msg.contains("src/cli/mod.rs:1: cli → segment"), "{msg}");
    }

    #[test]
    fn cycle_a_b_a_is_found() {
        let cycles = find_cycles(&graph(&[("a", "b"), ("b", "a"), ("b", "c")]));
        assert_eq!(cycles, vec![vec!["a", "b", "a"]]);
        let cycles = find_cycles(&graph(&[("x", "y"), ("y", "z"), ("z", "y"), ("z", "x")]));
        assert_eq!(cycles, vec![vec!["y", "z", "y"], vec!["x", "y", "z", "x"]]);
        assert_eq!(find_cycles(&graph(&[("a", "a")])), vec![vec!["a", "a"]]);
    }

    #[test]
    fn acyclic_graph_passes() {
        let g = graph(&[
            ("cli", "engine"),
            ("cli", "plan"),
            ("engine", "plan"),
            ("plan", "proto"),
        ]);
        assert_eq!(find_cycles(&g), Vec::<Vec<String>>::new());
        assert_eq!(find_cycles(&Graph::new()), Vec::<Vec<String>>::new());
    }

    #[test]
    fn cycle_in_a_table_is_found() {
        const BAD: &Table = &[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])];
        assert_eq!(
            find_cycles(&table_graph(BAD)),
            vec![vec!["a", "b", "c", "a"]]
        );
    }

    #[test]
    fn cycle_among_edges_is_reported_with_its_imports() {
        let all: Vec<Edge> = [
            ("plan/mod.rs", "use crate::engine::Storm;\n"),
            ("engine/mod.rs", "\nuse crate::plan::Plan;\n"),
            ("engine/x_tests.rs", "use crate::io::X;\n"),
            (
                "io/mod.rs",
                "#[cfg(test)]\nmod tests { use crate::engine::E; }\n",
            ),
        ]
        .iter()
        .flat_map(|(p, t)| edges(p, t))
        .collect();
        let cycles = find_cycles(&edge_graph(&all));
        assert_eq!(cycles, vec![vec!["engine", "plan", "engine"]]);
        let msg = render_cycles(&cycles, &all, LAYERS);
        assert!(msg.contains("  engine → plan → engine\n"), "{msg}");
        assert!(
            msg.contains("  engine → plan: allowed (1 import(s))\n"),
            "{msg}"
        );
        assert!(msg.contains("  plan → engine: NOT in the table"), "{msg}");
        assert!(!msg.contains("src/engine/mod.rs"), "{msg}");
        assert!(
            msg.contains("src/plan/mod.rs:1: crate::engine::Storm"),
            "{msg}"
        );
    }

    #[test]
    fn super_chains_that_reach_the_root_are_edges() {
        // plan.rs and plan/mod.rs are one level down: `super` is the crate root.
        for path in ["plan/mod.rs", "plan.rs"] {
            assert_eq!(
                edges(path, "use super::engine::Storm;\n"),
                vec![edge(
                    &format!("src/{path}"),
                    1,
                    "plan",
                    "engine",
                    "super::engine::Storm",
                    false
                )]
            );
        }
        // Two levels down: `super` is plan, `super::super` the root.
        let text = "\
use super::parse::Spec;
use super::super::engine::Storm;
use super :: super :: {engine, proto::{X, Y}};
use super::{super::metrics::M, url::Url, self};
fn f() -> super::super::results::Doc { super::super::io::g(super::h()) }
";
        assert_eq!(
            targets_in("plan/url.rs", text),
            vec![
                (2, "engine".into()),
                (3, "engine".into()),
                (3, "proto".into()),
                (4, "metrics".into()),
                (5, "results".into()),
                (5, "io".into())
            ]
        );
        let texts: Vec<String> = scan("plan/url.rs", text)
            .into_iter()
            .map(|r| r.text)
            .collect();
        assert_eq!(
            texts,
            [
                "super::super::engine::Storm",
                "super::super::engine",
                "super::super::proto::{X, Y}",
                "super::super::metrics::M",
                "super::super::results::Doc",
                "super::super::io::g"
            ]
        );
        // A directory's mod.rs is as deep as its siblings' parent: plan/x/mod.rs is two levels
        // down, plan/x/y.rs three.
        assert_eq!(
            targets_in(
                "plan/x/mod.rs",
                "use super::super::engine::E;\nuse super::y::Z;\n"
            ),
            vec![(1, "engine".into())]
        );
        assert_eq!(
            targets_in(
                "plan/x/y.rs",
                "use super::super::engine::E;\nuse super::super::super::proto::P;\n"
            ),
            vec![(2, "proto".into())]
        );
        // `self::super` climbs too.
        assert_eq!(
            targets_in("plan/mod.rs", "use self::super::engine::E;\n"),
            vec![(1, "engine".into())]
        );
        // More `super`s than levels is not Rust, and not an edge.
        assert_eq!(
            targets_in("plan/mod.rs", "use super::super::engine::E;\n"),
            vec![]
        );
    }

    #[test]
    fn inline_modules_are_one_level_deeper() {
        // In doctor/mod.rs's tests, `super::report` is doctor::report, not a top-level `report`.
        let text = "\
#[cfg(test)]
mod tests {
    use super::*;
    use super::report::SECTIONS;
    use super::super::engine::E;
    mod inner {
        use super::super::super::proto::P;
        use super::super::report::R;
    }
}
fn f() -> super::io::X { todo!() }
";
        let got: Vec<(usize, String, bool)> = scan("doctor/mod.rs", text)
            .into_iter()
            .map(|r| match r.kind {
                Kind::Module(t) => (r.line, t, r.test),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                (5, "engine".to_string(), true),
                (7, "proto".to_string(), true),
                (11, "io".to_string(), false)
            ]
        );
        assert_eq!(
            check_files(&[("doctor/mod.rs", text)]),
            [
                Violation::NotAllowed(edge(
                    "src/doctor/mod.rs",
                    5,
                    "doctor",
                    "engine",
                    "super::super::engine::E",
                    true
                )),
                Violation::NotAllowed(edge(
                    "src/doctor/mod.rs",
                    7,
                    "doctor",
                    "proto",
                    "super::super::super::proto::P",
                    true
                ))
            ]
        );
    }

    #[test]
    fn glob_import_of_the_crate_root_is_forbidden() {
        use Why::Glob;
        let text = "\
use crate::*;
use super::*;
use crate::{plan, *};
use crate::plan::*;
#[cfg(test)]
mod tests {
    use super::*;
    use super::super::*;
}
";
        assert_eq!(
            forbidden_in("plan/mod.rs", text),
            [
                ("src/plan/mod.rs:1".into(), "crate::*".into(), Glob),
                ("src/plan/mod.rs:2".into(), "super::*".into(), Glob),
                ("src/plan/mod.rs:3".into(), "crate::*".into(), Glob),
                ("src/plan/mod.rs:8".into(), "super::super::*".into(), Glob)
            ]
        );
        // Two levels down, `super::*` is the file's parent module; `super::super::*` the root.
        assert_eq!(
            forbidden_in("plan/url.rs", "use super::*;\nuse super::{super::*, x};\n"),
            [("src/plan/url.rs:2".into(), "super::super::*".into(), Glob)]
        );
        // main.rs: the library's root is `sockstorm`; its own root imports nothing unseen.
        assert_eq!(
            forbidden_in(
                "main.rs",
                "use sockstorm::*;\nuse crate::*;\nmod tests { use super::*; }\n"
            ),
            [("src/main.rs:1".into(), "sockstorm::*".into(), Glob)]
        );
        let msg = render(&check_files(&[("plan/mod.rs", "use super::*;\n")]));
        assert!(
            msg.contains("src/plan/mod.rs:1: super::*: a glob import"),
            "{msg}"
        );
        assert!(msg.contains("import the modules by name"), "{msg}");
    }

    #[test]
    fn aliases_of_the_crate_root_are_forbidden() {
        use Why::Alias;
        let text = "\
use crate as root;
extern crate self as sockstorm;
pub use crate::{self as c, plan::X};
use super::{self as up};
use super::super as top;
use crate::engine as e;
pub(crate) fn f(&self) -> &dyn T { self as &dyn T }
";
        assert_eq!(
            forbidden_in("plan.rs", text),
            [
                ("src/plan.rs:1".into(), "crate as root".into(), Alias),
                (
                    "src/plan.rs:2".into(),
                    "extern crate self as sockstorm".into(),
                    Alias
                ),
                ("src/plan.rs:3".into(), "crate::{self as c}".into(), Alias),
                ("src/plan.rs:4".into(), "super::{self as up}".into(), Alias)
            ]
        );
        // Two levels down, `super` is not the root.
        assert_eq!(
            forbidden_in("plan/url.rs", "use super::{self as up};\n"),
            []
        );
        assert_eq!(
            forbidden_in(
                "main.rs",
                "use sockstorm as s;\nextern crate sockstorm as t;\nuse ::sockstorm::{self as u};\nuse crate as me;\nextern crate sockstorm;\n"
            ),
            [
                ("src/main.rs:1".into(), "sockstorm as s".into(), Alias),
                (
                    "src/main.rs:2".into(),
                    "extern crate sockstorm as t".into(),
                    Alias
                ),
                ("src/main.rs:3".into(), "sockstorm::{self as u}".into(), Alias)
            ]
        );
        let msg = render(&check_files(&[("plan/mod.rs", "use crate as root;\n")]));
        assert!(
            msg.contains("src/plan/mod.rs:1: crate as root: an alias of the crate root"),
            "{msg}"
        );
    }

    #[test]
    fn main_rs_is_the_node_main() {
        let text = "\
use clap::Parser;
use sockstorm::{cli, plan::Run};
fn main() {
    let c = ::sockstorm::cli::Cli::parse();
    crate::helper::go(sockstorm :: proto :: X);
}
";
        let got: Vec<(usize, String)> = edges("main.rs", text)
            .into_iter()
            .map(|e| {
                assert_eq!((e.file.as_str(), e.from.as_str()), ("src/main.rs", "main"));
                (e.line, e.to)
            })
            .collect();
        assert_eq!(
            got,
            [
                (2, "cli".into()),
                (2, "plan".into()),
                (4, "cli".into()),
                (5, "helper".into()),
                (5, "proto".into())
            ]
        );
        let v = check_files(&[(
            "main.rs",
            "fn main() { sockstorm::cli::run(sockstorm::engine::E); }\n",
        )]);
        assert_eq!(
            v,
            [Violation::NotAllowed(edge(
                "src/main.rs",
                1,
                "main",
                "engine",
                "sockstorm::engine::E",
                false
            ))]
        );
        // Nothing imports main.
        let v = check_files(&[("cli/mod.rs", "use crate::main::X;\n")]);
        assert!(
            matches!(&v[..], [Violation::NotAllowed(e)] if e.to == "main"),
            "{v:?}"
        );
    }

    #[test]
    fn lib_rs_only_declares_modules() {
        use Why::LibRs;
        let fine = "\
//! The crate: crate::plan::Run is documented, not used.
#![deny(unsafe_code)]
pub mod cli;
pub mod io;
#[cfg(feature = \"x\")]
pub mod plan;
use std::io::Write;
use std::{io::Read, fmt::{self}};
";
        assert_eq!(forbidden("lib.rs", fine), vec![]);
        assert_eq!(edges("lib.rs", fine), vec![]);
        let text = "\
pub mod cli;
pub mod plan;
pub use crate::cli::run;
pub use plan::{Run, RunPlan};
pub fn go() { cli::run(self::plan::x()) }
";
        assert_eq!(edges("lib.rs", text), vec![]);
        assert_eq!(
            forbidden_in("lib.rs", text),
            [
                ("src/lib.rs:3".into(), "crate::cli::run".into(), LibRs),
                ("src/lib.rs:4".into(), "plan::{Run, RunPlan}".into(), LibRs),
                ("src/lib.rs:5".into(), "cli::run".into(), LibRs),
                ("src/lib.rs:5".into(), "self::plan::x".into(), LibRs)
            ]
        );
        let msg = render(&check_files(&[("lib.rs", text)]));
        assert!(
            msg.contains("src/lib.rs:3: crate::cli::run: lib.rs only declares modules"),
            "{msg}"
        );
    }

    #[test]
    fn unused_test_only_entries_are_found() {
        const MAIN: &Table = &[("a", &["b"]), ("b", &[]), ("c", &[])];
        const TEST_ONLY: &Table = &[("b", &["a", "c"]), ("a", &["b", "c"]), ("c", &["a"])];
        let all = [
            edge("src/b/x.rs", 1, "b", "a", "crate::a::X", true),
            // Not test code: does not count as a use.
            edge("src/b/y.rs", 1, "b", "c", "crate::c::X", false),
            // a → b is in MAIN already.
            edge("src/a/x.rs", 1, "a", "b", "crate::b::X", true),
            edge("src/c/tests.rs", 1, "c", "a", "crate::a::X", true),
        ];
        assert_eq!(
            unused_test_only(&all, MAIN, TEST_ONLY),
            ["b → c", "a → b", "a → c"]
        );
    }

    #[test]
    fn report_may_import_only_results() {
        let v = check_files(&[(
            "report/mod.rs",
            "use crate::results::Doc;\nuse crate::metrics::M;\n",
        )]);
        let sites: Vec<String> = v
            .iter()
            .map(|v| match v {
                Violation::NotAllowed(e) => e.site(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sites,
            ["src/report/mod.rs:2: report → metrics (crate::metrics::M)"]
        );
    }

    #[test]
    fn paths_of_other_crates_are_read_whole() {
        // `io` inside std's group is std's, not lib.rs's module `io`.
        assert_eq!(
            forbidden_in("lib.rs", "pub mod io;\nuse std::{fmt, io::Read};\n"),
            []
        );
        assert_eq!(
            forbidden_in("lib.rs", "pub mod io;\nuse {io::Read};\n"),
            [("src/lib.rs:2".into(), "io::Read".into(), Why::LibRs)]
        );
    }
    #[test]
    fn oversized_files_and_functions_are_found() {
        let body = |n: usize| "    x();\n".repeat(n);
        // A function of MAX_FN_LINES lines is within the limit, one more is not; a nested one
        // counts on its own, a test module's and a test file's not at all.
        let text = format!(
            "fn fits() {{\n{}}}\n\
             pub(crate) fn long<T: Into<[u8; 4]>>(a: [u8; 2]) -> [u8; 2] where T: Copy {{\n{}}}\n\
             type F = fn(u8) -> u8;\n\
             trait T {{ fn declared(&self); }}\n\
             fn outer() {{\n fn inner() {{\n{} }}\n}}\n\
             #[cfg(test)]\nmod tests {{\n fn in_test() {{\n{} }}\n}}\n",
            body(MAX_FN_LINES - 2),
            body(MAX_FN_LINES - 1),
            body(MAX_FN_LINES),
            body(MAX_FILE_LINES),
        );
        let found: Vec<(String, String, usize)> = oversized("a/b.rs", &text)
            .into_iter()
            .map(|o| (o.site, o.what, o.lines))
            .collect();
        let long_at = MAX_FN_LINES + 1;
        let outer_at = long_at + MAX_FN_LINES + 3;
        assert_eq!(
            found,
            [
                (
                    format!("src/a/b.rs:{long_at}"),
                    "fn long".into(),
                    MAX_FN_LINES + 1
                ),
                (
                    format!("src/a/b.rs:{outer_at}"),
                    "fn outer".into(),
                    MAX_FN_LINES + 4
                ),
                (
                    format!("src/a/b.rs:{}", outer_at + 1),
                    "fn inner".into(),
                    MAX_FN_LINES + 2
                ),
            ]
        );
        // Braces in strings and comments do not end a function early.
        let tricky = format!(
            "fn s() {{\n let _ = \"}}\"; // }}\n{}}}\n",
            body(MAX_FN_LINES)
        );
        assert_eq!(oversized("a.rs", &tricky).len(), 1);
        // The file: its test module does not count, its other lines do.
        let file = format!(
            "{}#[cfg(test)]\nmod tests {{\n{}}}\n",
            "const A: u8 = 0;\n".repeat(MAX_FILE_LINES),
            body(50)
        );
        assert_eq!(oversized("a.rs", &file), []);
        let file = format!("const B: u8 = 0;\n{file}");
        assert_eq!(
            oversized("a.rs", &file),
            [Oversize {
                site: "src/a.rs".into(),
                what: "file".into(),
                lines: MAX_FILE_LINES + 1
            }]
        );
        assert_eq!(oversized("x/tests.rs", &file), []);
    }
}
