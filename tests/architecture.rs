//! One-way layers between the top-level modules of `src/`, enforced.
//!
//! Every `.rs` file under `src/` is read as text. Each `crate::x…` path in code (a `use`, a
//! `pub use`, a path in an expression, a type or an attribute, and each first segment inside a
//! grouped `use crate::{a::B, c::{D, E}}`) is an edge from the file's top-level module to `x`.
//! Comments and string literals are blanked out first; `self::` and `super::` paths stay inside
//! a module and are not edges. The edges are checked against [`LAYERS`], the layering that
//! docs/ARCHITECTURE.md draws, and the graph they form must have no cycle.
//!
//! Test code (inline `#[cfg(test)] mod … { … }` modules and test-only files) may also use the
//! few extra edges in [`TEST_ONLY_LAYERS`]. It is left out of the cycle check: tests compile
//! with the whole crate and do not make a layer depend on another.
//!
//! The scanner, the checker and the cycle finder are pure functions over strings and graphs;
//! the unit tests at the bottom run them on small made-up inputs, and the `src_*` tests run them
//! on the real `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

/// An allowed-dependency table: each top-level module with the modules it may import.
type Table = [(&'static str, &'static [&'static str])];

/// docs/ARCHITECTURE.md's layering: cli → engine → {plan, proto, io, metrics}; results → metrics; report
/// → results; nothing below imports upward. A module may import only the modules listed next to
/// it. A new top-level module must be added here (and to docs/ARCHITECTURE.md) before it can be used.
const LAYERS: &Table = &[
    (
        "cli",
        &[
            "certs", "doctor", "engine", "io", "metrics", "plan", "proto", "report", "results",
            "server",
        ],
    ),
    ("engine", &["io", "metrics", "plan", "proto"]),
    ("results", &["metrics", "plan", "proto"]),
    ("report", &["results", "metrics", "plan", "proto"]),
    ("plan", &["certs", "metrics", "proto"]),
    ("metrics", &["proto"]),
    ("server", &["certs", "io"]),
    ("doctor", &["io"]),
    ("io", &[]),
    ("proto", &[]),
    ("certs", &[]),
];

/// Extra edges allowed in test code only, on top of [`LAYERS`].
const TEST_ONLY_LAYERS: &Table = &[
    // The connection is tested against the real gateway, its TLS and its statistics.
    ("proto", &["certs", "server", "metrics"]),
    // The gateway's tests drive it with the plan's auth spec and the engine.
    ("server", &["plan", "engine"]),
    // Unit tests parse command-line flags.
    ("plan", &["cli"]),
    ("metrics", &["plan"]),
];

/// A reference to `crate::<target>` found in one file's text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ref {
    /// 1-based line of the target's name.
    line: usize,
    /// The first path segment after `crate::`.
    target: String,
    /// The path as written, whitespace collapsed, e.g. `crate::c::{D, E}`.
    text: String,
    /// Inside an inline `#[cfg(test)] mod … { … }`.
    test: bool,
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Violation {
    /// A module that is not a key of the table, with the edges that mention it.
    NotInTable { module: String, edges: Vec<Edge> },
    /// An edge the table does not allow.
    NotAllowed(Edge),
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

/// Every `crate::<target>` reference in a file's text, in order. Grouped imports give one
/// reference per first segment inside the braces.
fn scan(text: &str) -> Vec<Ref> {
    let code = strip(text);
    let b = code.as_bytes();
    let tests = test_ranges(&code);
    let line_of = |at: usize| 1 + b[..at].iter().filter(|&&c| c == b'\n').count();
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate") {
        let end = at + "crate".len();
        if (at > 0 && is_ident(b[at - 1])) || b.get(end).is_some_and(|&c| is_ident(c)) {
            continue;
        }
        let j = skip_ws(b, end);
        if !b[j..].starts_with(b"::") {
            continue; // `pub(crate)`, `crate` as a path on its own
        }
        let j = skip_ws(b, j + 2);
        let test = tests.iter().any(|r| r.contains(&at));
        targets(&code, j, test, &line_of, &mut found);
    }
    found
}

/// The references in the path after `crate::`, starting at `start`: one identifier, or a group.
fn targets(
    code: &str,
    start: usize,
    test: bool,
    line_of: &dyn Fn(usize) -> usize,
    out: &mut Vec<Ref>,
) {
    let b = code.as_bytes();
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
                            targets(code, s, test, line_of, out);
                        }
                        item = j + 1;
                    }
                    _ => {}
                }
            }
        }
        Some(&c) if is_ident(c) && !c.is_ascii_digit() => {
            let name_end = start + b[start..].iter().take_while(|&&c| is_ident(c)).count();
            let target = code[start..name_end].to_string();
            if target == "self" || target == "super" {
                return;
            }
            let text = format!("crate::{}", collapse_ws(&code[start..path_end(b, start)]));
            out.push(Ref {
                line: line_of(start),
                target,
                text,
                test,
            });
        }
        _ => {} // `crate::*` or something this scanner does not understand
    }
}

/// The top-level module of a file, from its path under `src/` (`plan/file.rs` → `plan`,
/// `doctor.rs` → `doctor`); `None` for the crate root (`lib.rs`, `main.rs`).
fn module_of(path: &str) -> Option<String> {
    match path.split_once('/') {
        Some((dir, _)) => Some(dir.to_string()),
        None if path == "lib.rs" || path == "main.rs" => None,
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
/// own module are not edges.
fn edges(path: &str, text: &str) -> Vec<Edge> {
    let Some(from) = module_of(path) else {
        return Vec::new();
    };
    let test_file = is_test_file(path);
    scan(text)
        .into_iter()
        .filter(|r| r.target != from)
        .map(|r| Edge {
            file: format!("src/{path}"),
            line: r.line,
            from: from.clone(),
            to: r.target,
            text: r.text,
            test: r.test || test_file,
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

fn render(violations: &[Violation]) -> String {
    let mut s = String::new();
    let (unknown, upward): (Vec<_>, Vec<_>) = violations
        .iter()
        .partition(|v| matches!(v, Violation::NotInTable { .. }));
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
// The real src/

/// Every top-level module under src/ and every edge between them.
fn load_src() -> (Vec<String>, Vec<Edge>) {
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
    let mut modules = BTreeSet::new();
    let mut all = Vec::new();
    for (path, text) in &files {
        if let Some(m) = module_of(path) {
            modules.insert(m);
        }
        all.extend(edges(path, text));
    }
    (modules.into_iter().collect(), all)
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
    let (modules, edges) = load_src();
    let violations = check(&modules, &edges, LAYERS, TEST_ONLY_LAYERS);
    assert!(violations.is_empty(), "\n{}", render(&violations));
}

#[test]
fn src_has_no_import_cycles() {
    let (_, edges) = load_src();
    let cycles = find_cycles(&edge_graph(&edges));
    assert!(
        cycles.is_empty(),
        "\nImport cycles between the top-level modules of src/ (test code not counted):\n{}\
         Fix: remove the imports outside the table. The lower module of a cycle must not import \
         the upper one: move the shared type down into the lower layer, as docs/ARCHITECTURE.md says.\n",
        render_cycles(&cycles, &edges, LAYERS)
    );
}

// ---------------------------------------------------------------------------------------------
// The checker, on made-up inputs

#[cfg(test)]
mod checker {
    use super::*;

    fn targets(text: &str) -> Vec<(usize, String)> {
        scan(text).into_iter().map(|r| (r.line, r.target)).collect()
    }

    fn check_files(files: &[(&str, &str)]) -> Vec<Violation> {
        let modules: Vec<String> = files.iter().filter_map(|(p, _)| module_of(p)).collect();
        let all: Vec<Edge> = files.iter().flat_map(|(p, t)| edges(p, t)).collect();
        check(&modules, &all, LAYERS, TEST_ONLY_LAYERS)
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
            ("lib.rs", "pub mod cli;\nuse crate::cli::run;\n"),
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
        let texts: Vec<String> = scan(text).into_iter().map(|r| r.text).collect();
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
        assert_eq!(scan(text)[3].text, "crate::d::parse_flag");
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
        let text = "use self::x::Y;\nuse super::Z;\nuse crate::plan::parse;\nuse crate::{self, plan};\nfn f() -> super::super::W { todo!() }\n";
        assert_eq!(edges("plan/file.rs", text), vec![]);
        assert_eq!(edges("lib.rs", "use crate::proto::X;"), vec![]);
        assert_eq!(edges("main.rs", "use crate::cli::run;"), vec![]);
    }

    #[test]
    fn module_of_uses_the_first_path_component() {
        assert_eq!(module_of("plan/file.rs").as_deref(), Some("plan"));
        assert_eq!(module_of("proto/ws/frame.rs").as_deref(), Some("proto"));
        assert_eq!(module_of("doctor.rs").as_deref(), Some("doctor"));
        assert_eq!(module_of("doctor/limits.rs").as_deref(), Some("doctor"));
        assert_eq!(module_of("lib.rs"), None);
        assert_eq!(module_of("main.rs"), None);
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
        let got: Vec<(String, bool)> = scan(text).into_iter().map(|r| (r.target, r.test)).collect();
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
                "plan/mod.rs",
                "#[cfg(test)]\nmod tests {\n    use crate::cli::RunArgs;\n}\n",
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
}
