//! What one `key = value` of a scenario file becomes: `run` flag words, as [`Item`]s. Most
//! keys are a flag by their name (`message_rate` is `--message-rate`); the tables (`storm`,
//! `auth`, `tls`, `heartbeat`, `headers`) and the message keys are spelt out here. Each value
//! goes alone through its flag's own parser, so type and range errors point at the value.

use super::keys::{clap_reason, closest, kind, Item, TLS_KEYS};
use super::reader::Reader;
use crate::cli::args::RunWords as Flags;
use crate::plan::PlanError;
use clap::Parser;
use std::ops::Range;
use toml::de::DeValue;
use toml::Spanned;

impl Reader<'_> {
    /// Turns `key = value` into flags, checking each value with its flag's own parser.
    pub(super) fn item(
        &self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        out: &mut Vec<Item>,
    ) -> Result<(), PlanError> {
        match key {
            "on_open" | "send_on_open" => self.on_open(key, v, out),
            "on_open_file" | "message_file" => self.message_file(key, v, out),
            "reconnect" => self.reconnect(key, v, out),
            "headers" => self.headers(v, out),
            "targets" => {
                for (s, sp) in self.strings(key, v)? {
                    let args = vec![format!("--target={s}")];
                    out.push(Item::new(key, "target", args, sp));
                }
                Ok(())
            }
            "subprotocols" => {
                for (s, sp) in self.strings(key, v)? {
                    let args = vec![format!("--subprotocol={s}")];
                    out.push(Item::new(key, "subprotocol", args, sp));
                }
                Ok(())
            }
            "stages" => {
                let text = self.stages(v)?;
                let args = vec![format!("--stages={text}")];
                out.push(Item::new(key, "stages", args, v.span()));
                Ok(())
            }
            "message" if matches!(v.get_ref(), DeValue::Array(_) | DeValue::Table(_)) => {
                self.requests(v, out)
            }
            "checks" => self.checks(v, out),
            "storm" | "auth" | "tls" | "heartbeat" | "stream" | "misbehave" => {
                self.table(key, v, out)
            }
            _ => {
                let flag = key.replace('_', "-");
                self.flag_item(key, &flag, v, out)
            }
        }
    }

    /// `on_open`: a message or a list of them, sent when a connection opens; an `@file` is
    /// read relative to the scenario file.
    fn on_open(
        &self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        out: &mut Vec<Item>,
    ) -> Result<(), PlanError> {
        for (s, sp) in self.strings(key, v)? {
            let s = match s.strip_prefix('@') {
                Some(p) => format!("@{}", self.path(p)),
                None => s,
            };
            let args = vec![format!("--send-on-open={s}")];
            out.push(Item::new(key, "send-on-open", args, sp));
        }
        Ok(())
    }

    /// `on_open_file` / `message_file`: the message is the named file's contents (`@file`),
    /// relative to the scenario file.
    fn message_file(
        &self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        out: &mut Vec<Item>,
    ) -> Result<(), PlanError> {
        let flag = if key == "on_open_file" {
            "send-on-open"
        } else {
            "message"
        };
        let s = self.scalar(key, v)?;
        let args = vec![format!("--{flag}=@{}", self.path(&s))];
        out.push(Item::new(key, flag, args, v.span()));
        Ok(())
    }

    /// `reconnect = false` is `--no-reconnect`; `true` gives no words but still replaces a
    /// `reconnect = false` at the top.
    fn reconnect(
        &self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        out: &mut Vec<Item>,
    ) -> Result<(), PlanError> {
        let args = match v.get_ref() {
            DeValue::Boolean(false) => vec!["--no-reconnect".into()],
            DeValue::Boolean(true) => Vec::new(),
            other => {
                return Err(self.err(
                    &v.span(),
                    format!("`reconnect` is true or false, not {}", kind(other)),
                ))
            }
        };
        out.push(Item::new(key, "no-reconnect", args, v.span()));
        Ok(())
    }

    /// `headers = { Name = "value" }`: one `--header` per name, keyed `headers.Name` so a
    /// block replaces the top's header of the same name only.
    fn headers(&self, v: &Spanned<DeValue<'_>>, out: &mut Vec<Item>) -> Result<(), PlanError> {
        let DeValue::Table(t) = v.get_ref() else {
            return Err(self.err(
                &v.span(),
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
            let key = format!("headers.{n}");
            let s = self.scalar(&key, value)?;
            // Checked here, at the value, with the flag's own parser (whose error shows no
            // value): a header value may be a secret.
            if let Err(e) = crate::plan::parse::header(&format!("{n}: {s}")) {
                return Err(self.err(&value.span(), format!("`{key}`: {e}")));
            }
            let args = vec![format!("--header={n}: {s}")];
            out.push(Item::new(&key, "header", args, value.span()));
        }
        Ok(())
    }

    /// A `storm`, `auth`, `tls`, `heartbeat` or `misbehave` table: each member is the flag named by the
    /// table and the member (`storm.at` is `--storm-at`), keyed by its dotted name.
    fn table(
        &self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        out: &mut Vec<Item>,
    ) -> Result<(), PlanError> {
        let DeValue::Table(t) = v.get_ref() else {
            return Err(self.err(&v.span(), format!("`{key}` is a table: {key} = {{ ... }}")));
        };
        for (k, val) in t.iter() {
            let sub = k.get_ref().as_ref();
            let dotted = format!("{key}.{sub}");
            match (key, sub) {
                ("auth", "body_file") => self.auth_body_file(&dotted, val, out)?,
                ("auth", "headers") => self.auth_headers(&dotted, val, out)?,
                _ => match member_flag(key, sub) {
                    Some(flag) => self.flag_item(&dotted, &flag, val, out)?,
                    None => return Err(self.unknown_member(key, sub, &k.span())),
                },
            }
        }
        Ok(())
    }

    /// `[[scenario.message]]` (or `[[message]]` at the top): named requests, each member the
    /// `--request-*` flag of its name, keyed `message.NAME.MEMBER` so a scenario's request
    /// replaces the top's of the same name member by member.
    fn requests(&self, v: &Spanned<DeValue<'_>>, out: &mut Vec<Item>) -> Result<(), PlanError> {
        let one = std::slice::from_ref(v);
        let tables = match v.get_ref() {
            DeValue::Array(a) => &a[..],
            _ => one,
        };
        for t in tables {
            let DeValue::Table(members) = t.get_ref() else {
                return Err(self.err(
                    &t.span(),
                    "a named message is a table: [[scenario.message]] with name, text (or file), rate, reply",
                ));
            };
            let name = self.member_name("message", t, members)?;
            for (k, val) in members.iter() {
                let sub = k.get_ref().as_ref();
                let dotted = format!("message.{name}.{sub}");
                let word = |flag: &str, value: String| vec![format!("--{flag}={name}={value}")];
                let (flag, args) = match sub {
                    "name" => continue,
                    "text" => ("request", word("request", self.scalar(&dotted, val)?)),
                    "file" => {
                        let p = self.path(&self.scalar(&dotted, val)?);
                        ("request", word("request", format!("@{p}")))
                    }
                    "rate" => (
                        "request-rate",
                        word("request-rate", self.scalar(&dotted, val)?),
                    ),
                    "count" => (
                        "request-count",
                        word("request-count", self.scalar(&dotted, val)?),
                    ),
                    "reply" => {
                        self.reply(&name, &dotted, val, out)?;
                        continue;
                    }
                    _ => {
                        let known = ["name", "text", "file", "rate", "count", "reply"];
                        let list: Vec<String> = known.iter().map(|s| s.to_string()).collect();
                        let hint = closest(sub, &list).map_or_else(
                            || format!("a named message has {}", known.join(", ")),
                            |s| format!("did you mean `{s}`?"),
                        );
                        return Err(self.err(
                            &k.span(),
                            format!("unknown key `{sub}` in message `{name}`: {hint}"),
                        ));
                    }
                };
                out.push(Item::new(&dotted, flag, args, val.span()));
            }
            if !members
                .iter()
                .any(|(k, _)| matches!(k.get_ref().as_ref(), "text" | "file"))
            {
                return Err(self.err(
                    &t.span(),
                    format!(
                        "message `{name}` has nothing to send: give text = '...' or file = \"...\""
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A named message's `reply`: `"RULE"`, or `{ match = "RULE", path = "json:PATH", on =
    /// "COND" }`.
    fn reply(
        &self,
        name: &str,
        dotted: &str,
        v: &Spanned<DeValue<'_>>,
        out: &mut Vec<Item>,
    ) -> Result<(), PlanError> {
        let members: Vec<(String, &Spanned<DeValue<'_>>)> = match v.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .map(|(k, v)| (k.get_ref().to_string(), v))
                .collect(),
            _ => vec![("match".to_owned(), v)],
        };
        for (sub, val) in members {
            let flag = match sub.as_str() {
                "match" => "request-reply",
                "path" => "request-reply-path",
                "on" => "request-reply-on",
                _ => {
                    return Err(self.err(
                        &val.span(),
                        format!(
                        "unknown key `{sub}` in the reply of `{name}`: a reply has match, path, on"
                    ),
                    ))
                }
            };
            let value = self.scalar(dotted, val)?;
            let args = vec![format!("--{flag}={name}={value}")];
            out.push(Item::new(
                &format!("{dotted}.{sub}"),
                flag,
                args,
                val.span(),
            ));
        }
        Ok(())
    }

    /// `checks = [{ name, on, expect }]`: one `--check` (and `--check-on`) per check.
    fn checks(&self, v: &Spanned<DeValue<'_>>, out: &mut Vec<Item>) -> Result<(), PlanError> {
        let DeValue::Array(list) = v.get_ref() else {
            return Err(self.err(
                &v.span(),
                "`checks` is a list: checks = [{ name = \"price positive\", on = \"json:type=quote\", expect = \"json:price>0\" }]",
            ));
        };
        for t in list {
            let DeValue::Table(members) = t.get_ref() else {
                return Err(self.err(&t.span(), "a check is a table: { name, on, expect }"));
            };
            let name = self.member_name("check", t, members)?;
            let mut has_expect = false;
            for (k, val) in members.iter() {
                let sub = k.get_ref().as_ref();
                let dotted = format!("checks.{name}.{sub}");
                let flag = match sub {
                    "name" => continue,
                    "expect" => {
                        has_expect = true;
                        "check"
                    }
                    "on" => "check-on",
                    _ => {
                        return Err(self.err(
                            &k.span(),
                            format!(
                            "unknown key `{sub}` in check `{name}`: a check has name, on, expect"
                        ),
                        ))
                    }
                };
                let value = self.scalar(&dotted, val)?;
                let args = vec![format!("--{flag}={name}={value}")];
                out.push(Item::new(&dotted, flag, args, val.span()));
            }
            if !has_expect {
                return Err(self.err(
                    &t.span(),
                    format!("check `{name}` has no `expect`: e.g. expect = \"json:price>0\""),
                ));
            }
        }
        Ok(())
    }

    /// The `name` of a named message or check table.
    fn member_name(
        &self,
        what: &str,
        t: &Spanned<DeValue<'_>>,
        members: &toml::de::DeTable<'_>,
    ) -> Result<String, PlanError> {
        let name = members
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == "name")
            .map(|(_, v)| self.scalar(&format!("{what}.name"), v))
            .transpose()?;
        match name {
            Some(n) if !n.is_empty() && !n.contains(['=', '{', '}', ',']) => Ok(n),
            Some(n) => Err(self.err(
                &t.span(),
                format!("`{n}` cannot name a {what}: no =, {{, }} or commas"),
            )),
            None => Err(self.err(
                &t.span(),
                format!("a {what} needs a name (name = \"...\"): reports and thresholds use it"),
            )),
        }
    }

    /// `auth.body_file`: the auth request's body is the named file's contents, relative to
    /// the scenario file.
    fn auth_body_file(
        &self,
        dotted: &str,
        v: &Spanned<DeValue<'_>>,
        out: &mut Vec<Item>,
    ) -> Result<(), PlanError> {
        let s = self.scalar(dotted, v)?;
        let args = vec![format!("--auth-body=@{}", self.path(&s))];
        out.push(Item::new(dotted, "auth-body", args, v.span()));
        Ok(())
    }

    /// `auth.headers = { Name = "value" }`: one `--auth-header` per name.
    fn auth_headers(
        &self,
        dotted: &str,
        v: &Spanned<DeValue<'_>>,
        out: &mut Vec<Item>,
    ) -> Result<(), PlanError> {
        let DeValue::Table(h) = v.get_ref() else {
            return Err(self.err(&v.span(), "`auth.headers` is a table"));
        };
        for (name, hv) in h.iter() {
            let s = self.scalar(dotted, hv)?;
            let args = vec![format!("--auth-header={}: {s}", name.get_ref())];
            out.push(Item::new(dotted, "auth-header", args, hv.span()));
        }
        Ok(())
    }

    /// The error for a member `sub` that table `table` does not have, with the nearest
    /// member or the table's list of members.
    fn unknown_member(&self, table: &str, sub: &str, span: &Range<usize>) -> PlanError {
        let keys: &[&str] = match table {
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
            "stream" => &["seq", "key"],
            "misbehave" => &["no_pong_after", "stop_reading_after"],
            _ => &[],
        };
        // The tls table's names: its keys without their `tls_` prefix.
        let tls: Vec<&str> = TLS_KEYS
            .iter()
            .map(|k| k.strip_prefix("tls_").unwrap_or(k))
            .collect();
        let keys = if table == "tls" { &tls[..] } else { keys };
        let known: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let hint = closest(sub, &known).map_or_else(
            || format!("`{table}` has {}", keys.join(", ")),
            |s| format!("did you mean `{s}`?"),
        );
        self.err(span, format!("unknown key `{sub}` in `{table}`: {hint}"))
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
        let args = if takes_value {
            self.value_words(key, flag, repeatable, v)?
        } else {
            self.switch_words(key, flag, v)?
        };
        // The value alone through the flag's own parser: type and range errors point here.
        let mut probe = vec!["ws://127.0.0.1/".to_owned()];
        probe.extend(args.iter().cloned());
        if let Err(e) = Flags::try_parse_from(&probe) {
            if e.kind() != clap::error::ErrorKind::MissingRequiredArgument {
                return Err(self.err(&v.span(), format!("`{key}`: {}", clap_reason(&e))));
            }
        }
        out.push(Item::new(key, flag, args, v.span()));
        Ok(())
    }

    /// The words of a switch: `--flag` for `true`, none for `false`.
    fn switch_words(
        &self,
        key: &str,
        flag: &str,
        v: &Spanned<DeValue<'_>>,
    ) -> Result<Vec<String>, PlanError> {
        match v.get_ref() {
            DeValue::Boolean(true) => Ok(vec![format!("--{flag}")]),
            DeValue::Boolean(false) => Ok(Vec::new()),
            other => Err(self.err(
                &v.span(),
                format!("`{key}` is true or false, not {}", kind(other)),
            )),
        }
    }

    /// The words of a flag that takes a value: `--flag=value`, once per element of a list
    /// for a repeatable flag. File paths are made relative to the scenario file.
    fn value_words(
        &self,
        key: &str,
        flag: &str,
        repeatable: bool,
        v: &Spanned<DeValue<'_>>,
    ) -> Result<Vec<String>, PlanError> {
        if let DeValue::Array(a) = v.get_ref() {
            if !repeatable {
                return Err(self.err(&v.span(), format!("`{key}` takes one value, not a list")));
            }
            return Ok(self
                .array_strings(key, a)?
                .into_iter()
                .map(|(s, _)| format!("--{flag}={s}"))
                .collect());
        }
        let mut s = self.scalar(key, v)?;
        if ["cacert", "cert", "key"].contains(&flag) {
            s = self.path(&s);
        }
        if matches!(flag, "message" | "send-on-open" | "auth-body") {
            if let Some(p) = s.strip_prefix('@') {
                s = format!("@{}", self.path(p));
            }
        }
        Ok(vec![format!("--{flag}={s}")])
    }
}

/// The flag of member `sub` of table `table` (`storm.at` is `storm-at`), if the table has
/// that member; `auth.body_file` and `auth.headers` are read by their own methods.
fn member_flag(table: &str, sub: &str) -> Option<String> {
    match (table, sub) {
        ("storm", "at" | "every" | "fraction" | "close") => Some(format!("storm-{sub}")),
        ("heartbeat", "interval" | "message" | "expect" | "timeout") => {
            Some(format!("heartbeat-{sub}"))
        }
        ("auth", "url" | "body" | "token_field" | "per_connection" | "rate") => {
            Some(format!("auth-{}", sub.replace('_', "-")))
        }
        ("stream", "seq" | "key") => Some(format!("stream-{sub}")),
        ("tls", "version" | "tickets") => Some(format!("tls-{sub}")),
        ("misbehave", "no_pong_after" | "stop_reading_after") => Some(sub.replace('_', "-")),
        ("tls", _) if TLS_KEYS.contains(&sub) => Some(sub.replace('_', "-")),
        _ => None,
    }
}
