//! The keys of a scenario file: which describe the whole run, which are not flags, and what
//! one key becomes (an [`Item`]: `run` flag words with the span of the value they came from).
//! Also the wording that errors about keys share: a value's kind, a clap error's first line,
//! and the nearest known key for a misspelt one.

use std::ops::Range;
use toml::de::DeValue;

/// Keys that describe the whole run: only at the top level.
const RUN_WIDE: &[&str] = &[
    "url",
    "targets",
    "target_weights",
    "resolve",
    "duration",
    "cpus",
    "source_ip",
    "json",
    "hdr_log",
    "csv",
    "metrics_listen",
    "metrics_linger",
    "quiet",
    "fail_on_saturation",
    "drain",
    "socket_setup",
    "backend",
    "linger_zero",
    "timer_resolution",
    "abort_on_fail",
    "show_query",
    "max_identical_failures",
    "no_utf8_check",
    "tls",
    "segment",
    "segments",
    "start_at",
    "start_late_ok",
];

/// The TLS keys: run-wide too, at the top or in the `tls` table (there `version` and
/// `tickets` stand for `tls_version` and `tls_tickets`).
pub(super) const TLS_KEYS: &[&str] = &[
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
pub(super) fn run_wide(key: &str) -> bool {
    RUN_WIDE.contains(&key) || TLS_KEYS.contains(&key)
}

/// Keys that are not flags.
pub(super) const SPECIAL: &[&str] = &[
    "scenario",
    "tls",
    "heartbeat",
    "misbehave",
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
    "targets",
    "reconnect",
    "checks",
    "stream",
];

/// One flag produced by a key of the file, with where it came from.
#[derive(Debug, Clone)]
pub(super) struct Item {
    /// The key as written (dotted for table members, e.g. `storm.at`).
    pub(super) key: String,
    /// The flag's long name.
    pub(super) flag: String,
    /// Command-line words (`--flag=value`, or `--flag` for a switch).
    pub(super) args: Vec<String>,
    /// Where the value is.
    pub(super) span: Range<usize>,
}

impl Item {
    /// The flag `flag` with its words `args`, set by `key` whose value is at `span`.
    pub(super) fn new(key: &str, flag: &str, args: Vec<String>, span: Range<usize>) -> Self {
        Self {
            key: key.to_owned(),
            flag: flag.to_owned(),
            args,
            span,
        }
    }
}

/// What a TOML value is, for messages.
pub(super) fn kind(v: &DeValue<'_>) -> &'static str {
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
pub(super) fn clap_reason(e: &clap::Error) -> String {
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
pub(super) fn closest(key: &str, known: &[String]) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_key_is_suggested() {
        let known = vec!["message".to_owned(), "message_rate".to_owned()];
        assert_eq!(closest("mesage", &known).as_deref(), Some("message"));
        assert_eq!(closest("zzzzzzzzz", &known), None);
    }
}
