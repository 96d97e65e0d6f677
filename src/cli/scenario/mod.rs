//! Scenario files: `sockstorm run FILE.toml`. Every key is a `sockstorm run` flag by its long
//! name (`message_rate` for `--message-rate`), plus a few tables that read better in a file
//! (`stages`, `storm`, `auth`, `tls`, `headers`) and the scenario-only keys `name`, `weight`
//! and `start`. Top-level keys are defaults for every `[[scenario]]`; flags on the command
//! line override both. Each value goes through the same parser as its flag, and each
//! validation error of the plan is traced back to the key it came from, so every mistake is
//! reported as `FILE:LINE:COLUMN: what is wrong and the fix`.

use super::args::{ModeArg, RoleArg, RunArgs, RunWords as Flags};
use crate::plan::threshold::Threshold;
use crate::plan::{parse, parse_url, prepare, PlanError, Prepared, Run, RunPlan, Url};
use clap::{CommandFactory, FromArgMatches, Parser};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

/// Keys that describe the whole run: only at the top level.
const RUN_WIDE: &[&str] = &[
    "url",
    "duration",
    "cpus",
    "source_ip",
    "json",
    "quiet",
    "drain",
    "socket_setup",
    "linger_zero",
    "timer_resolution",
    "abort_on_fail",
    "no_utf8_check",
    "tls",
];

/// The TLS keys: run-wide too, at the top or in the `tls` table (there `version` and
/// `tickets` stand for `tls_version` and `tls_tickets`).
const TLS_KEYS: &[&str] = &[
    "cacert",
    "insecure",
    "no_verify_cache",
    "sni",
    "tls_version",
    "ciphers",
    "kx",
    "alpn",
    "cert",
    "key",
    "resume",
    "tls_tickets",
];

/// Whether `key` describes the whole run (allowed at the top level only).
fn run_wide(key: &str) -> bool {
    RUN_WIDE.contains(&key) || TLS_KEYS.contains(&key)
}

/// Keys that are not flags.
const SPECIAL: &[&str] = &[
    "scenario",
    "tls",
    "heartbeat",
    "name",
    "weight",
    "start",
    "thresholds",
    "stages",
    "storm",
    "auth",
    "headers",
    "on_open",
    "on_open_file",
    "message_file",
    "subprotocols",
    "reconnect",
];

/// One flag produced by a key of the file, with where it came from.
#[derive(Debug, Clone)]
struct Item {
    /// The key as written (dotted for table members, e.g. `storm.at`).
    key: String,
    /// The flag's long name.
    flag: String,
    /// Command-line words (`--flag=value`, or `--flag` for a switch).
    args: Vec<String>,
    /// Where the value is.
    span: Range<usize>,
}

/// A `[[scenario]]` block (or the top level when there is none), read but not validated.
#[derive(Debug)]
struct Block {
    name: String,
    name_span: Range<usize>,
    items: Vec<Item>,
    weight: Option<f64>,
    start: Duration,
    start_span: Range<usize>,
    thresholds: Vec<(String, Range<usize>)>,
    /// The block sets its own connection count / connect rate.
    own_connections: bool,
    own_rate: bool,
}

/// The reader: the file's text (for positions) and its directory (for relative paths).
struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    base: PathBuf,
    longs: Vec<(String, bool, bool)>,
}

impl Reader<'_> {
    /// `FILE:LINE:COL` of a byte offset.
    fn at(&self, offset: usize) -> String {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{}:{line}:{col}", self.path.display())
    }

    fn err(&self, span: &Range<usize>, reason: impl Into<String>) -> PlanError {
        PlanError::Scenario {
            at: self.at(span.start),
            reason: reason.into(),
        }
    }

    /// (takes a value, repeatable) of a long flag, if it is one.
    fn flag(&self, name: &str) -> Option<(bool, bool)> {
        self.longs
            .iter()
            .find(|(l, _, _)| l == name)
            .map(|(_, v, r)| (*v, *r))
    }

    /// The known keys, for suggestions.
    fn known(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .longs
            .iter()
            .map(|(l, _, _)| l.replace('-', "_"))
            .collect();
        k.extend(SPECIAL.iter().map(|s| s.to_string()));
        k
    }

    fn unknown(&self, key: &str, span: &Range<usize>, scope: &str) -> PlanError {
        let hint = match closest(key, &self.known()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "every `sockstorm run --flag` is a key (with _ for -), see examples/".into(),
        };
        self.err(span, format!("unknown key `{key}` {scope}: {hint}"))
    }

    /// A scalar as flag text; `None` for `false`.
    fn scalar(&self, key: &str, v: &Spanned<DeValue<'_>>) -> Result<String, PlanError> {
        match v.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .map(|n| n.to_string())
                .map_err(|_| self.err(&v.span(), format!("`{key}`: integer out of range"))),
            DeValue::Float(f) => Ok(f.as_str().to_owned()),
            DeValue::Boolean(b) => Ok(b.to_string()),
            other => Err(self.err(
                &v.span(),
                format!("`{key}` takes a string or a number, not {}", kind(other)),
            )),
        }
    }

    /// A path value made relative to the file's directory.
    fn path(&self, p: &str) -> String {
        let pb = Path::new(p);
        if pb.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(pb).display().to_string()
        }
    }

    /// Turns `key = value` into flags, checking each value with its flag's own parser.
    fn item(
        &self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        out: &mut Vec<Item>,
    ) -> Result<(), PlanError> {
        let span = v.span();
        let push =
            |out: &mut Vec<Item>, k: &str, flag: &str, args: Vec<String>, span: Range<usize>| {
                out.push(Item {
                    key: k.to_owned(),
                    flag: flag.to_owned(),
                    args,
                    span,
                })
            };
        match key {
            "on_open" | "send_on_open" => {
                for (s, sp) in self.strings(key, v)? {
                    let s = match s.strip_prefix('@') {
                        Some(p) => format!("@{}", self.path(p)),
                        None => s,
                    };
                    push(
                        out,
                        key,
                        "send-on-open",
                        vec![format!("--send-on-open={s}")],
                        sp,
                    );
                }
            }
            "on_open_file" | "message_file" => {
                let flag = if key == "on_open_file" {
                    "send-on-open"
                } else {
                    "message"
                };
                let s = self.scalar(key, v)?;
                push(
                    out,
                    key,
                    flag,
                    vec![format!("--{flag}=@{}", self.path(&s))],
                    span,
                );
            }
            "reconnect" => match v.get_ref() {
                DeValue::Boolean(false) => push(
                    out,
                    key,
                    "no-reconnect",
                    vec!["--no-reconnect".into()],
                    span,
                ),
                // No words, but it replaces a `reconnect = false` at the top.
                DeValue::Boolean(true) => push(out, key, "no-reconnect", Vec::new(), span),
                other => {
                    return Err(self.err(
                        &span,
                        format!("`reconnect` is true or false, not {}", kind(other)),
                    ))
                }
            },
            "headers" => {
                let DeValue::Table(t) = v.get_ref() else {
                    return Err(self.err(
                        &span,
                        "`headers` is a table: headers = { Authorization = \"Bearer {{token}}\" }",
                    ));
                };
                for (name, value) in t.iter() {
                    let n = name.get_ref();
                    if n.is_empty()
                        || n.contains(':')
                        || n.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err(self.err(
                            &name.span(),
                            format!("`{n}` is not a header name (no colon, spaces or control characters)"),
                        ));
                    }
                    let s = self.scalar(&format!("headers.{}", name.get_ref()), value)?;
                    let arg = format!("--header={}: {s}", name.get_ref());
                    push(
                        out,
                        &format!("headers.{}", name.get_ref()),
                        "header",
                        vec![arg],
                        value.span(),
                    );
                }
            }
            "subprotocols" => {
                for (s, sp) in self.strings(key, v)? {
                    push(
                        out,
                        key,
                        "subprotocol",
                        vec![format!("--subprotocol={s}")],
                        sp,
                    );
                }
            }
            "stages" => {
                let text = self.stages(v)?;
                push(out, key, "stages", vec![format!("--stages={text}")], span);
            }
            "storm" | "auth" | "tls" | "heartbeat" => {
                let DeValue::Table(t) = v.get_ref() else {
                    return Err(self.err(&span, format!("`{key}` is a table: {key} = {{ ... }}")));
                };
                for (k, val) in t.iter() {
                    let sub = k.get_ref().as_ref();
                    let dotted = format!("{key}.{sub}");
                    let flag = match (key, sub) {
                        ("storm", "at" | "every" | "fraction" | "close") => format!("storm-{sub}"),
                        ("heartbeat", "interval" | "message" | "expect" | "timeout") => {
                            format!("heartbeat-{sub}")
                        }
                        ("auth", "url" | "body" | "token_field" | "per_connection" | "rate") => {
                            format!("auth-{}", sub.replace('_', "-"))
                        }
                        ("auth", "body_file") => {
                            let s = self.scalar(&dotted, val)?;
                            let arg = format!("--auth-body=@{}", self.path(&s));
                            push(out, &dotted, "auth-body", vec![arg], val.span());
                            continue;
                        }
                        ("auth", "headers") => {
                            let DeValue::Table(h) = val.get_ref() else {
                                return Err(self.err(&val.span(), "`auth.headers` is a table"));
                            };
                            for (name, hv) in h.iter() {
                                let s = self.scalar(&dotted, hv)?;
                                let arg = format!("--auth-header={}: {s}", name.get_ref());
                                push(out, &dotted, "auth-header", vec![arg], hv.span());
                            }
                            continue;
                        }
                        ("tls", "version" | "tickets") => format!("tls-{sub}"),
                        ("tls", _) if TLS_KEYS.contains(&sub) => sub.replace('_', "-"),
                        _ => {
                            let keys: &[&str] = match key {
                                "storm" => &["at", "every", "fraction", "close"],
                                "auth" => &[
                                    "url",
                                    "body",
                                    "body_file",
                                    "headers",
                                    "token_field",
                                    "per_connection",
                                    "rate",
                                ],
                                "heartbeat" => &["interval", "message", "expect", "timeout"],
                                _ => &[],
                            };
                            // The tls table's names: its keys without their `tls_` prefix.
                            let tls: Vec<&str> = TLS_KEYS
                                .iter()
                                .map(|k| k.strip_prefix("tls_").unwrap_or(k))
                                .collect();
                            let keys = if key == "tls" { &tls[..] } else { keys };
                            let known: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                            let hint = closest(sub, &known).map_or_else(
                                || format!("`{key}` has {}", keys.join(", ")),
                                |s| format!("did you mean `{s}`?"),
                            );
                            return Err(self.err(
                                &k.span(),
                                format!("unknown key `{sub}` in `{key}`: {hint}"),
                            ));
                        }
                    };
                    self.flag_item(&dotted, &flag, val, out)?;
                }
            }
            _ => {
                let flag = key.replace('_', "-");
                self.flag_item(key, &flag, v, out)?;
            }
        }
        Ok(())
    }

    /// `key = value` for the flag `--flag`.
    fn flag_item(
        &self,
        key: &str,
        flag: &str,
        v: &Spanned<DeValue<'_>>,
        out: &mut Vec<Item>,
    ) -> Result<(), PlanError> {
        let Some((takes_value, repeatable)) = self.flag(flag) else {
            return Err(self.unknown(key, &v.span(), "here"));
        };
        let relative = ["cacert", "cert", "key"].contains(&flag);
        let mut args = Vec::new();
        if !takes_value {
            match v.get_ref() {
                DeValue::Boolean(true) => args.push(format!("--{flag}")),
                DeValue::Boolean(false) => {}
                other => {
                    return Err(self.err(
                        &v.span(),
                        format!("`{key}` is true or false, not {}", kind(other)),
                    ))
                }
            }
        } else if let DeValue::Array(a) = v.get_ref() {
            if !repeatable {
                return Err(self.err(&v.span(), format!("`{key}` takes one value, not a list")));
            }
            for (s, _) in self.array_strings(key, a)? {
                args.push(format!("--{flag}={s}"));
            }
        } else {
            let mut s = self.scalar(key, v)?;
            if relative {
                s = self.path(&s);
            }
            if matches!(flag, "message" | "send-on-open" | "auth-body") {
                if let Some(p) = s.strip_prefix('@') {
                    s = format!("@{}", self.path(p));
                }
            }
            args.push(format!("--{flag}={s}"));
        }
        // The value alone through the flag's own parser: type and range errors point here.
        let mut probe = vec!["ws://127.0.0.1/".to_owned()];
        probe.extend(args.iter().cloned());
        if let Err(e) = Flags::try_parse_from(&probe) {
            if e.kind() != clap::error::ErrorKind::MissingRequiredArgument {
                return Err(self.err(&v.span(), format!("`{key}`: {}", clap_reason(&e))));
            }
        }
        out.push(Item {
            key: key.to_owned(),
            flag: flag.to_owned(),
            args,
            span: v.span(),
        });
        Ok(())
    }

    fn strings(
        &self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
    ) -> Result<Vec<(String, Range<usize>)>, PlanError> {
        match v.get_ref() {
            DeValue::Array(a) => self.array_strings(key, a),
            _ => Ok(vec![(self.scalar(key, v)?, v.span())]),
        }
    }

    fn array_strings(
        &self,
        key: &str,
        a: &DeArray<'_>,
    ) -> Result<Vec<(String, Range<usize>)>, PlanError> {
        a.iter()
            .map(|e| Ok((self.scalar(key, e)?, e.span())))
            .collect()
    }

    /// `stages = [{ duration = "30s", target = 100 }, ...]` as the `--stages` text.
    fn stages(&self, v: &Spanned<DeValue<'_>>) -> Result<String, PlanError> {
        let example =
            "stages = [{ duration = \"30s\", target = 1000 }, { duration = \"1m\", target = 0 }]";
        let DeValue::Array(a) = v.get_ref() else {
            return Err(self.err(
                &v.span(),
                format!("`stages` is a list of tables: {example}"),
            ));
        };
        if a.iter().next().is_none() {
            return Err(self.err(&v.span(), format!("`stages` is empty: {example}")));
        }
        let mut parts = Vec::new();
        for (i, st) in a.iter().enumerate() {
            let DeValue::Table(t) = st.get_ref() else {
                return Err(self.err(
                    &st.span(),
                    format!("stage {} is not a table: {example}", i + 1),
                ));
            };
            let (mut d, mut n) = (None, None);
            for (k, val) in t.iter() {
                match k.get_ref().as_ref() {
                    "duration" => {
                        let s = self.scalar("duration", val)?;
                        parse::duration(&s)
                            .ok()
                            .filter(|d| !d.is_zero())
                            .ok_or_else(|| {
                                self.err(
                                    &val.span(),
                                    format!("stage {}: `{s}` is not a duration longer than 0 (e.g. \"30s\", \"2m\")", i + 1),
                                )
                            })?;
                        d = Some(s);
                    }
                    "target" => {
                        let bad = || {
                            self.err(
                                &val.span(),
                                format!(
                                    "stage {}: target is a number of connections, 0 or more",
                                    i + 1
                                ),
                            )
                        };
                        let DeValue::Integer(x) = val.get_ref() else {
                            return Err(bad());
                        };
                        let x = i64::from_str_radix(x.as_str(), x.radix()).map_err(|_| bad())?;
                        if x < 0 {
                            return Err(bad());
                        }
                        n = Some(x);
                    }
                    other => {
                        return Err(self.err(
                            &k.span(),
                            format!(
                            "unknown key `{other}` in a stage: a stage has `duration` and `target`"
                        ),
                        ))
                    }
                }
            }
            match (d, n) {
                (Some(d), Some(n)) => parts.push(format!("{d}:{n}")),
                _ => {
                    return Err(self.err(
                        &st.span(),
                        format!("stage {} needs both `duration` and `target`", i + 1),
                    ))
                }
            }
        }
        Ok(parts.join(","))
    }

    /// Reads a block's keys. `top` is the top level (which may hold run-wide keys).
    fn block(&self, t: &DeTable<'_>, top: bool, span: Range<usize>) -> Result<Block, PlanError> {
        let mut b = Block {
            name: "default".into(),
            name_span: span.clone(),
            items: Vec::new(),
            weight: None,
            start: Duration::ZERO,
            start_span: span,
            thresholds: Vec::new(),
            own_connections: false,
            own_rate: false,
        };
        let mut named = false;
        for (k, v) in t.iter() {
            let key = k.get_ref().as_ref();
            if top && key == "scenario" {
                continue;
            }
            if !top && run_wide(key) && key != "url" {
                return Err(self.err(
                    &k.span(),
                    format!(
                        "`{key}` applies to the whole run: move it above the first [[scenario]]"
                    ),
                ));
            }
            match key {
                "name" if !top => {
                    let s = self.scalar(key, v)?;
                    let ok = !s.is_empty()
                        && s.len() <= 32
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
                    if !ok {
                        return Err(self.err(
                            &v.span(),
                            format!("scenario name `{s}`: use 1-32 letters, digits, `_`, `-` or `.` (it tags metrics)"),
                        ));
                    }
                    b.name = s;
                    b.name_span = v.span();
                    named = true;
                }
                "weight" if !top => {
                    let s = self.scalar(key, v)?;
                    match s.parse::<f64>() {
                        Ok(w) if w.is_finite() && w > 0.0 => b.weight = Some(w),
                        _ => {
                            return Err(self.err(
                                &v.span(),
                                format!("`weight` must be a number above 0, got {s}"),
                            ))
                        }
                    }
                }
                "start" if !top => {
                    let s = self.scalar(key, v)?;
                    b.start = parse::duration(&s)
                        .map_err(|e| self.err(&v.span(), format!("`start`: {e}")))?;
                    b.start_span = v.span();
                }
                "thresholds" | "threshold" => {
                    for (s, sp) in self.strings(key, v)? {
                        b.thresholds.push((s, sp));
                    }
                }
                "scenario" | "name" | "weight" | "start" => {
                    return Err(self.err(
                        &k.span(),
                        format!("`{key}` belongs in a [[scenario]] block"),
                    ))
                }
                _ => {
                    if self.flag(&key.replace('_', "-")).is_none() && !SPECIAL.contains(&key) {
                        let scope = if top {
                            "at the top level"
                        } else {
                            "in [[scenario]]"
                        };
                        return Err(self.unknown(key, &k.span(), scope));
                    }
                    b.own_connections |= key == "connections";
                    b.own_rate |= key == "connect_rate";
                    self.item(key, v, &mut b.items)?;
                }
            }
        }
        if !top && !named {
            return Err(PlanError::Scenario {
                at: self.at(b.name_span.start),
                reason: "this [[scenario]] has no `name`: add name = \"...\" (it tags its metrics)"
                    .into(),
            });
        }
        Ok(b)
    }
}

/// What a TOML value is, for messages.
fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table",
    }
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ").trim_start_matches("error: ").to_owned()
}

/// The known key nearest to `key` (edit distance ≤ 3), if any.
fn closest(key: &str, known: &[String]) -> Option<String> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                cur.push(
                    (prev[j] + usize::from(ca != *cb))
                        .min(prev[j + 1] + 1)
                        .min(cur[j] + 1),
                );
            }
            prev = cur;
        }
        prev[b.len()]
    }
    known
        .iter()
        .map(|k| (dist(key, k), k))
        .filter(|(d, _)| *d <= (key.chars().count() / 3).max(1))
        .min()
        .map(|(_, k)| k.clone())
}

/// Splits `total` by `weights` (largest remainder: the parts add up to `total` exactly).
pub(super) fn split_weighted(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut parts: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
    let mut left = total.saturating_sub(parts.iter().sum());
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &i in order.iter().cycle().take(weights.len() * 2) {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
}

/// Loads `path` and merges `cli` (the `run` words after the file) over it.
fn read(path: &Path, cli: &[String]) -> Result<Run, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError::File {
        flag: "scenario file",
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let longs = Flags::command()
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?.to_owned();
            let takes = a.get_action().takes_values();
            let repeat = matches!(a.get_action(), clap::ArgAction::Append);
            Some((long, takes, repeat))
        })
        .collect();
    let r = Reader {
        path,
        text: &text,
        base: path.parent().map(Path::to_owned).unwrap_or_default(),
        longs,
    };
    let doc = DeTable::parse(&text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        r.err(&(at..at), format!("invalid TOML: {}", e.message().trim()))
    })?;
    let top_t = doc.get_ref();
    let top = r.block(top_t, true, 0..0)?;
    let mut blocks = Vec::new();
    if let Some(sc) = top_t.get("scenario") {
        let DeValue::Array(a) = sc.get_ref() else {
            return Err(r.err(
                &sc.span(),
                "`scenario` is a list of blocks: write each as [[scenario]]",
            ));
        };
        for s in a.iter() {
            let DeValue::Table(t) = s.get_ref() else {
                return Err(r.err(
                    &s.span(),
                    "each scenario is a table: write it as [[scenario]]",
                ));
            };
            blocks.push(r.block(t, false, s.span())?);
        }
    }
    let single = blocks.is_empty();
    if single {
        blocks.push(Block {
            name: "default".into(),
            name_span: 0..0,
            items: Vec::new(),
            weight: None,
            start: Duration::ZERO,
            start_span: 0..0,
            thresholds: Vec::new(),
            own_connections: false,
            own_rate: false,
        });
    }
    for (i, b) in blocks.iter().enumerate() {
        if let Some(first) = blocks[..i].iter().find(|o| o.name == b.name) {
            return Err(r.err(
                &b.name_span,
                format!("scenario name `{}` is used twice (also at {}): names tag the metrics, make them unique", b.name, r.at(first.name_span.start)),
            ));
        }
    }

    // The command line on its own: which totals it sets, and its thresholds.
    let url_top = top
        .items
        .iter()
        .find(|i| i.flag == "url")
        .map(|i| i.args[0].trim_start_matches("--url=").to_owned());
    let mut cli_words = vec![url_top.clone().unwrap_or_else(|| "ws://127.0.0.1/".into())];
    cli_words.extend(cli.iter().cloned());
    let cli_matches = Flags::command()
        .try_get_matches_from(&cli_words)
        .map_err(|e| PlanError::Invalid {
            flag: "command line",
            reason: clap_reason(&e),
        })?;
    let cli_flags = Flags::from_arg_matches(&cli_matches).map_err(|e| PlanError::Invalid {
        flag: "command line",
        reason: clap_reason(&e),
    })?;
    let from_cli =
        |id: &str| cli_matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let value_of = |flag: &str| -> Option<String> {
        top.items
            .iter()
            .find(|i| i.flag == flag)
            .and_then(|i| i.args.first())
            .and_then(|a| a.split_once('=').map(|(_, v)| v.to_owned()))
    };
    let url_item = top.items.iter().find(|i| i.flag == "url");
    let file_url = match (&url_top, url_item) {
        (Some(u), Some(i)) => Some(parse_url(u).map_err(|e| r.err(&i.span, e.to_string()))?),
        _ => None,
    };
    let cli_url = match &cli_flags.run.target_url {
        Some(u) if from_cli("target_url") => Some(parse_url(u)?),
        _ => None,
    };
    // The target: --url's, else the file's; the path: --url's if it has one, else the file's.
    let (run_url, cli_path) = match (cli_url, &file_url) {
        (Some(c), f) => {
            let explicit = c.path != "/";
            let path = match f {
                Some(f) if !explicit => f.path.clone(),
                _ => c.path.clone(),
            };
            (Url { path, ..c }, explicit)
        }
        (None, Some(f)) => (f.clone(), false),
        (None, None) => {
            return Err(PlanError::Scenario {
                at: r.at(0),
                reason: "no target: add url = \"ws://host:port/path\" at the top (or pass --url)"
                    .into(),
            })
        }
    };
    let scheme = |u: &Url| if u.tls { "wss" } else { "ws" };
    let url = format!(
        "{}://{}{}",
        scheme(&run_url),
        run_url.host_header(),
        run_url.path
    );
    let total_connections: u64 = if from_cli("connections") {
        cli_flags.run.connections
    } else {
        value_of("connections")
            .and_then(|v| v.parse().ok())
            .unwrap_or(100)
    };
    let total_rate: Option<f64> = if from_cli("connect_rate") {
        cli_flags.run.connect_rate
    } else {
        value_of("connect-rate").and_then(|v| v.parse().ok())
    };

    // Each scenario: the top level, then the block, then the command line.
    let mut args_list = Vec::new();
    for b in &blocks {
        let own_url = b.items.iter().find(|i| i.flag == "url");
        let mut words = vec![url.clone()];
        // A key in the block replaces the same key at the top (a header, a table member or
        // a list as a whole; a switch turned back off too).
        let replaced = |t: &Item| b.items.iter().any(|i| same_key(t, i));
        for i in top.items.iter().filter(|t| !replaced(t)).chain(&b.items) {
            if i.flag != "url" {
                words.extend(i.args.iter().cloned());
            }
        }
        words.extend(cli.iter().cloned());
        let mut a = match Flags::try_parse_from(&words) {
            Ok(f) => f.run,
            Err(e) => {
                let scope = if single {
                    String::new()
                } else {
                    format!("scenario `{}`: ", b.name)
                };
                return Err(r.err(&b.name_span, format!("{scope}{}", clap_reason(&e))));
            }
        };
        // A scenario's own url may change the path (`/feed`, or the file's target with
        // another path); the target is the run's.
        if let Some(i) = own_url {
            let own = i.args[0].trim_start_matches("--url=");
            let path = if own.starts_with('/') {
                if own.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(r.err(&i.span, "whitespace in the path (percent-encode it)"));
                }
                own.to_owned()
            } else {
                let own_u = parse_url(own).map_err(|e| r.err(&i.span, e.to_string()))?;
                let base = file_url.as_ref().unwrap_or(&run_url);
                if (base.tls, &base.host, base.port) != (own_u.tls, &own_u.host, own_u.port) {
                    return Err(r.err(
                        &i.span,
                        format!(
                            "scenario `{}`: one run has one target ({}://{}); a scenario may change the path only (url = \"/path\")",
                            b.name,
                            scheme(base),
                            base.host_header()
                        ),
                    ));
                }
                own_u.path
            };
            if !cli_path {
                a.url = format!("{}://{}{}", scheme(&run_url), run_url.host_header(), path);
            }
        }
        // A storm after the end of a run shortened on the command line is left out.
        if from_cli("duration") && a.stages.is_none() && a.storm_at.is_some_and(|t| t >= a.duration)
        {
            eprintln!(
                "sockstorm: warning: scenario `{}`: the storm at {:?} is after the end of the run (-d {:?}); no storm",
                b.name,
                a.storm_at.unwrap_or_default(),
                a.duration
            );
            a.storm_at = None;
            a.storm_every = None;
        }
        a.target_url = None;
        a.scenario = Some(b.name.clone());
        a.base_dir = Some(r.base.clone());
        a.thresholds.clear();
        a.abort_on_fail = None;
        args_list.push(a);
    }

    // Connections and connect rate: totals split by weight over the scenarios that hold a
    // connection count (not stages, arrivals or handshake cycles) and do not set their own
    // (a total on the command line is split over all of them).
    let holds =
        |a: &RunArgs| a.stages.is_none() && a.arrival_rate.is_none() && a.mode == ModeArg::Session;
    let shared: Vec<usize> = (0..blocks.len())
        .filter(|&k| holds(&args_list[k]))
        .filter(|&k| !blocks[k].own_connections || single || from_cli("connections"))
        .collect();
    let weights: Vec<f64> = shared
        .iter()
        .map(|&k| blocks[k].weight.unwrap_or(1.0))
        .collect();
    for (&k, n) in shared
        .iter()
        .zip(split_weighted(total_connections, &weights))
    {
        if n == 0 && args_list[k].stages.is_none() && args_list[k].arrival_rate.is_none() {
            return Err(r.err(
                &blocks[k].name_span,
                format!("scenario `{}` gets 0 of the {total_connections} connections by weight: raise `connections` or its weight", blocks[k].name),
            ));
        }
        args_list[k].connections = n;
    }
    // Connections a scenario opens at its peak, for the rate split: its count, or the
    // largest stage target.
    let peak = |a: &RunArgs| match &a.stages {
        Some(st) => st.0.iter().map(|s| s.target).max().unwrap_or(0),
        None => a.connections,
    };
    let paced = |a: &RunArgs| a.arrival_rate.is_none() && a.mode == ModeArg::Session;
    let total: u64 = args_list
        .iter()
        .filter(|a| paced(a))
        .map(peak)
        .sum::<u64>()
        .max(1);
    for (k, a) in args_list.iter_mut().enumerate() {
        if !paced(a) || (blocks[k].own_rate && !from_cli("connect_rate")) {
            continue;
        }
        let rate = total_rate.unwrap_or(2000.0);
        a.connect_rate = Some(rate * peak(a) as f64 / total as f64)
            .filter(|r| *r > 0.0)
            .or(Some(rate));
    }
    // Per-connection auth at the top level: its rate is shared by the scenarios using it.
    let own_auth_rate = |k: usize| blocks[k].items.iter().any(|i| i.flag == "auth-rate");
    let apc: Vec<usize> = (0..blocks.len())
        .filter(|&k| args_list[k].auth_per_connection && !own_auth_rate(k))
        .collect();
    if apc.len() > 1 {
        let sum: u64 = apc.iter().map(|&k| peak(&args_list[k])).sum::<u64>().max(1);
        for &k in &apc {
            let a = &mut args_list[k];
            a.auth_rate = a.auth_rate * peak(a) as f64 / sum as f64;
        }
    }
    // A total message rate in the file is shared by the scenarios that send, by connections.
    let total_msgs = if from_cli("message_total_rate") {
        cli_flags.run.message_total_rate
    } else {
        value_of("message-total-rate").and_then(|v| v.parse::<f64>().ok())
    };
    if let Some(t) = total_msgs {
        let sends = |a: &RunArgs| a.message.is_some() || a.role == Some(RoleArg::Publisher);
        let senders: u64 = args_list
            .iter()
            .filter(|a| sends(a))
            .map(peak)
            .sum::<u64>()
            .max(1);
        for a in &mut args_list {
            a.message_total_rate = sends(a).then(|| t * peak(a) as f64 / senders as f64);
        }
    }

    // Plans, with their errors traced back to the key that caused them.
    let mut scenarios = Vec::new();
    for (b, a) in blocks.iter().zip(&args_list) {
        let mut plan = a
            .plan()
            .map_err(|e| locate(&r, e, b, &top, single, &from_cli))?;
        plan.name = b.name.clone();
        plan.start = b.start;
        if !b.start.is_zero() {
            if a.stages.is_some() {
                plan.duration += b.start;
            }
            if b.start >= plan.duration {
                return Err(r.err(
                    &b.start_span,
                    format!(
                        "`start` {:?} is not within the run ({:?})",
                        b.start, plan.duration
                    ),
                ));
            }
        }
        scenarios.push(plan);
    }
    // Messages are owed per channel: every fan-out scenario names its channel, or none does.
    let named = |p: &RunPlan| p.conn.fanout.is_some() && p.channel.is_some();
    if scenarios.iter().any(named) {
        if let Some(k) = scenarios
            .iter()
            .position(|p| p.conn.fanout.is_some() && p.channel.is_none())
        {
            return Err(r.err(
                &blocks[k].name_span,
                format!(
                    "scenario `{}` has a role but no `channel` while others name theirs: give it its `channel` (messages are owed to the subscribers of their channel)",
                    blocks[k].name
                ),
            ));
        }
    }

    // Thresholds: the top level's are overall (or tagged), a block's are its own.
    let mut thresholds = Vec::new();
    let names: Vec<&str> = blocks.iter().map(|b| b.name.as_str()).collect();
    for (b, tagged) in std::iter::once((&top, false)).chain(blocks.iter().map(|b| (b, !single))) {
        for (expr, sp) in &b.thresholds {
            let mut t = Threshold::parse(expr)
                .map_err(|e| r.err(sp, format!("threshold `{expr}`: {}", e.reason)))?;
            if tagged {
                match &t.scenario {
                    Some(other) if other != &b.name => {
                        return Err(r.err(
                            sp,
                            format!(
                                "threshold `{expr}` is in scenario `{}` but tagged `{other}`",
                                b.name
                            ),
                        ))
                    }
                    Some(_) => {}
                    None => {
                        if let Some((m, rest)) = t.expr.split_once(':') {
                            t.expr = format!("{}{{scenario:{}}}:{rest}", m.trim(), b.name);
                        }
                        t.scenario = Some(b.name.clone());
                    }
                }
            }
            if let Some(tag) = &t.scenario {
                if !names.contains(&tag.as_str()) && !single {
                    return Err(r.err(
                        sp,
                        format!(
                            "threshold `{expr}`: no scenario is named `{tag}` (scenarios: {})",
                            names.join(", ")
                        ),
                    ));
                }
                if single {
                    t.scenario = None;
                }
            }
            thresholds.push(t);
        }
    }
    for t in &cli_flags.run.thresholds {
        if let Some(tag) = &t.scenario {
            if !names.contains(&tag.as_str()) {
                return Err(PlanError::Invalid {
                    flag: "--threshold",
                    reason: format!(
                        "`{}`: no scenario is named `{tag}` (scenarios: {})",
                        t.expr,
                        names.join(", ")
                    ),
                });
            }
        }
        thresholds.push(t.clone());
    }
    let abort_on_fail = if from_cli("abort_on_fail") {
        cli_flags.run.abort_on_fail
    } else {
        value_of("abort-on-fail").and_then(|v| parse::duration(&v).ok())
    };
    if abort_on_fail.is_some() && thresholds.is_empty() {
        return Err(PlanError::Invalid {
            flag: "--abort-on-fail",
            reason: "needs at least one threshold to check".into(),
        });
    }
    Ok(Run::new(scenarios, thresholds, abort_on_fail))
}

/// Reads the scenario file at `path` with the command line's `cli` words over it, and
/// prepares the run; a target that does not resolve is reported at the file's `url`.
pub(super) fn load(path: &Path, cli: &[String]) -> Result<Prepared, PlanError> {
    let run = read(path, cli)?;
    prepare(run).map_err(|e| match e {
        PlanError::Resolve { .. }
            if !cli.iter().any(|w| w == "--url" || w.starts_with("--url=")) =>
        {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            // The value of the top level's `url = ...` (the run's target).
            let at = text
                .lines()
                .enumerate()
                .find(|(_, l)| l.trim_start().starts_with("url") && l.contains('='))
                .map_or_else(
                    || path.display().to_string(),
                    |(n, l)| {
                        let eq = l.find('=').unwrap_or(0) + 1;
                        let col = eq + (l[eq..].len() - l[eq..].trim_start().len());
                        format!(
                            "{}:{}:{}",
                            path.display(),
                            n + 1,
                            l[..col].chars().count() + 1
                        )
                    },
                );
            PlanError::Scenario {
                at,
                reason: e.to_string(),
            }
        }
        e => e,
    })
}

/// Whether a block's item replaces a top-level one: a table member or header by its dotted
/// key, anything else by its flag (so `on_open` replaces `send_on_open`).
fn same_key(top: &Item, block: &Item) -> bool {
    if top.key.contains('.') || block.key.contains('.') {
        top.key == block.key
    } else {
        top.flag == block.flag
    }
}

/// A plan error named by flag, placed at the key that set the flag (the block's first, then
/// the top level's); errors of command-line flags are returned as they are.
fn locate(
    r: &Reader<'_>,
    e: PlanError,
    b: &Block,
    top: &Block,
    single: bool,
    from_cli: &dyn Fn(&str) -> bool,
) -> PlanError {
    let PlanError::Invalid { flag, reason } = &e else {
        return match e {
            PlanError::BadUrl { .. } | PlanError::Resolve { .. } => {
                let at = top
                    .items
                    .iter()
                    .find(|i| i.flag == "url")
                    .map_or(0, |i| i.span.start);
                PlanError::Scenario {
                    at: r.at(at),
                    reason: e.to_string(),
                }
            }
            e => e,
        };
    };
    let flags: Vec<&str> = flag.split('/').map(|f| f.trim_start_matches('-')).collect();
    // A value given on the command line is reported as such, not at the file's key.
    if flags.iter().any(|f| from_cli(&f.replace('-', "_"))) {
        return e;
    }
    let hit = b
        .items
        .iter()
        .chain(&top.items)
        .find(|i| flags.contains(&i.flag.as_str()));
    let scope = if single {
        String::new()
    } else {
        format!("scenario `{}`: ", b.name)
    };
    match hit {
        Some(i) => PlanError::Scenario {
            at: r.at(i.span.start),
            reason: format!("{scope}`{}`: {reason}", i.key),
        },
        None => PlanError::Scenario {
            at: r.at(b.name_span.start),
            reason: format!("{scope}{flag}: {reason}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_split_exactly() {
        assert_eq!(split_weighted(100, &[1.0, 1.0, 1.0]), vec![34, 33, 33]);
        assert_eq!(split_weighted(10, &[3.0, 1.0]), vec![8, 2]);
        assert_eq!(split_weighted(7, &[0.5, 0.25, 0.25]).iter().sum::<u64>(), 7);
        assert_eq!(split_weighted(0, &[1.0]), vec![0]);
    }

    #[test]
    fn nearest_key_is_suggested() {
        let known = vec!["message".to_owned(), "message_rate".to_owned()];
        assert_eq!(closest("mesage", &known).as_deref(), Some("message"));
        assert_eq!(closest("zzzzzzzzz", &known), None);
    }
}
