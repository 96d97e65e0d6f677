//! The flags about message content: named requests with their rate and reply rule, checks on
//! received messages, and stream sequence tracking; flattened into the connection flags. In a
//! scenario file, `[[scenario.message]]` tables, `checks = [...]` and `stream = {...}` become
//! these flags (a request's or check's members are `NAME=VALUE` words of one flag each).

use crate::plan::message::{load_message, templated, Resolver};
use crate::plan::{parse, PlanError};
use crate::proto::conn::{Check, ReplyRule, Request, StreamRule};
use crate::proto::select::{Cond, JsonPath};
use crate::proto::ws::frame::OpCode;
use clap::Args;
use std::time::Duration;

/// Flags of `sockstorm run` about what messages say: requests, replies, checks, streams.
#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    /// A named message with its own rate and reply rule: NAME=TEXT or NAME=@file
    /// (repeatable; templates as in --message). Reports give each its reply latency
    /// (ws_reply{msg:NAME}) and its sent, answered and unanswered counts.
    #[arg(long = "request", value_name = "NAME=TEXT", help_heading = "Requests")]
    pub requests: Vec<String>,
    /// NAME=R: sends of request NAME per second per connection (default 1; 0 = once, right
    /// after the session opens).
    #[arg(
        long = "request-rate",
        value_name = "NAME=R",
        help_heading = "Requests"
    )]
    pub request_rates: Vec<String>,
    /// NAME=N: sends of request NAME per connection before it stops (default: no limit).
    #[arg(
        long = "request-count",
        value_name = "NAME=N",
        help_heading = "Requests"
    )]
    pub request_counts: Vec<String>,
    /// NAME=RULE: how NAME's reply is recognized: `json:PATH` (the reply carries the same
    /// value, e.g. json:id), a condition the next reply meets (json:type=message_ack), `echo`,
    /// or `none` (default: nothing expected).
    #[arg(
        long = "request-reply",
        value_name = "NAME=RULE",
        help_heading = "Requests"
    )]
    pub request_replies: Vec<String>,
    /// NAME=json:PATH: where a json:PATH reply carries the value, when not at the same path
    /// (a request's json:message.id answered with a top-level id: json:id).
    #[arg(
        long = "request-reply-path",
        value_name = "NAME=PATH",
        help_heading = "Requests"
    )]
    pub request_reply_paths: Vec<String>,
    /// NAME=COND: only messages meeting COND can be NAME's reply (e.g. json:type=message_ack).
    #[arg(
        long = "request-reply-on",
        value_name = "NAME=COND",
        help_heading = "Requests"
    )]
    pub request_reply_ons: Vec<String>,
    /// A request unanswered this long counts as unanswered (0: only when its session ends).
    #[arg(long, default_value = "10s", value_parser = parse::duration, help_heading = "Requests")]
    pub reply_timeout: Duration,
    /// A check on received messages, counted pass/fail (k6's check): NAME=COND, e.g.
    /// 'price positive=json:price>0'; repeatable. Thresholds: checks{name:NAME}: rate>0.99.
    #[arg(long = "check", value_name = "NAME=COND", help_heading = "Checks")]
    pub checks: Vec<String>,
    /// NAME=COND: the check NAME applies only to messages meeting COND (default: all).
    #[arg(long = "check-on", value_name = "NAME=COND", help_heading = "Checks")]
    pub check_ons: Vec<String>,
    /// Sequence number of server streams (json:PATH): gaps, duplicates and late messages
    /// are counted per stream (stream_gaps, stream_skipped, stream_duplicates, stream_late).
    #[arg(long, value_name = "json:PATH", value_parser = JsonPath::parse, help_heading = "Streams")]
    pub stream_seq: Option<JsonPath>,
    /// What tells streams apart (json:PATH, e.g. json:stream); one stream per connection if
    /// not given.
    #[arg(long, value_name = "json:PATH", value_parser = JsonPath::parse, requires = "stream_seq", help_heading = "Streams")]
    pub stream_key: Option<JsonPath>,
}

/// What the rules add to a connection config.
pub(super) struct Rules {
    pub(super) requests: Vec<Request>,
    pub(super) checks: Vec<Check>,
    pub(super) stream: Option<StreamRule>,
    pub(super) reply_timeout: u64,
}

/// `NAME=VALUE` split at the first `=`.
fn named<'a>(flag: &'static str, word: &'a str) -> Result<(&'a str, &'a str), PlanError> {
    match word.split_once('=') {
        Some((n, v)) if !n.trim().is_empty() => Ok((n.trim(), v)),
        _ => Err(PlanError::invalid(
            flag,
            format!("`{word}`: expected NAME=VALUE, e.g. publish=json:id"),
        )),
    }
}

/// The value given for `name` in `words` (`NAME=VALUE`), the last one winning; an unknown
/// name is an error.
fn lookup<'a>(
    flag: &'static str,
    words: &'a [String],
    names: &[&str],
    name: &str,
) -> Result<Option<&'a str>, PlanError> {
    let mut found = None;
    for w in words {
        let (n, v) = named(flag, w)?;
        if !names.contains(&n) {
            return Err(PlanError::invalid(
                flag,
                format!(
                    "`{n}` names no {}; known: {}",
                    if flag.starts_with("--check") {
                        "check (--check NAME=COND)"
                    } else {
                        "request (--request NAME=TEXT)"
                    },
                    names.join(", ")
                ),
            ));
        }
        if n == name {
            found = Some(v);
        }
    }
    Ok(found)
}

impl RulesArgs {
    /// The requests, checks and stream rule, checked.
    pub(super) fn rules(&self, opcode: OpCode, r: &Resolver<'_>) -> Result<Rules, PlanError> {
        let mut names: Vec<&str> = Vec::new();
        let mut specs = Vec::new();
        for w in &self.requests {
            let (n, text) = named("--request", w)?;
            if names.contains(&n) {
                return Err(PlanError::invalid(
                    "--request",
                    format!("`{n}` is named twice: each request needs its own name"),
                ));
            }
            names.push(n);
            specs.push((n, text));
        }
        let mut requests = Vec::new();
        for (n, text) in specs {
            let m = load_message("--request", text, opcode)?;
            let message = templated("--request", m, r)?;
            let rate = match lookup("--request-rate", &self.request_rates, &names, n)? {
                None => 1.0,
                Some(v) => match v.trim().parse::<f64>() {
                    Ok(x) if x.is_finite() && x >= 0.0 && (x == 0.0 || x >= 1e-6) => x,
                    _ => {
                        return Err(PlanError::invalid(
                            "--request-rate",
                            format!("`{n}={v}`: the rate is a number of sends per second per connection, >= 0 (0: once)"),
                        ))
                    }
                },
            };
            let count = match lookup("--request-count", &self.request_counts, &names, n)? {
                None => 0,
                Some(v) => v.trim().parse::<u64>().map_err(|_| {
                    PlanError::invalid(
                        "--request-count",
                        format!("`{n}={v}`: expected a whole number of sends"),
                    )
                })?,
            };
            let path = lookup("--request-reply-path", &self.request_reply_paths, &names, n)?;
            let reply = match lookup("--request-reply", &self.request_replies, &names, n)? {
                None if path.is_some() => {
                    return Err(PlanError::invalid(
                        "--request-reply-path",
                        format!("`{n}` has a reply path but no json:PATH reply rule"),
                    ))
                }
                None => ReplyRule::None,
                Some(v) => ReplyRule::parse(v, path.map(str::trim))
                    .map_err(|e| PlanError::invalid("--request-reply", format!("`{n}`: {e}")))?,
            };
            let reply_on = lookup("--request-reply-on", &self.request_reply_ons, &names, n)?
                .map(|v| {
                    Cond::parse(v.trim()).map_err(|e| {
                        PlanError::invalid("--request-reply-on", format!("`{n}`: {e}"))
                    })
                })
                .transpose()?;
            requests.push(Request {
                name: n.into(),
                message,
                interval: if rate > 0.0 {
                    (1e6 / rate).max(1.0) as u64
                } else {
                    0
                },
                count,
                reply,
                reply_on,
            });
        }
        Ok(Rules {
            requests,
            checks: self.checks()?,
            stream: self.stream_seq.clone().map(|seq| StreamRule {
                seq,
                key: self.stream_key.clone(),
            }),
            reply_timeout: self.reply_timeout.as_micros() as u64,
        })
    }

    fn checks(&self) -> Result<Vec<Check>, PlanError> {
        let mut names: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for w in &self.checks {
            let (n, cond) = named("--check", w)?;
            if names.contains(&n) {
                return Err(PlanError::invalid(
                    "--check",
                    format!("`{n}` is named twice: each check needs its own name"),
                ));
            }
            names.push(n);
            let expect = Cond::parse(cond.trim())
                .map_err(|e| PlanError::invalid("--check", format!("`{n}`: {e}")))?;
            out.push(Check {
                name: n.into(),
                on: None,
                expect,
            });
        }
        for c in &mut out {
            c.on = lookup("--check-on", &self.check_ons, &names, &c.name)?
                .map(|v| {
                    Cond::parse(v.trim())
                        .map_err(|e| PlanError::invalid("--check-on", format!("`{}`: {e}", c.name)))
                })
                .transpose()?;
        }
        Ok(out)
    }

    /// The request texts as given (before `@file`s are read), for the auth checks.
    pub(super) fn message_texts(&self) -> impl Iterator<Item = &str> {
        self.requests
            .iter()
            .filter_map(|w| w.split_once('=').map(|(_, t)| t))
    }
}
