//! Messages and templates of a scenario: `TEXT` or `@file` loaded, `{{...}}` expressions
//! parsed, fixed ones (`{{env}}`, `{{scenario}}`, `{{line}}` files) rendered once, before the
//! run. `{{token}}` stays a slot ([`TOKEN_SLOT`]) that `prepare` or each connection fills.

use super::PlanError;
use crate::proto::conn::Message;
use crate::proto::template::{Resolve, Template};
use crate::proto::ws::frame::OpCode;
pub use crate::proto::ws::handshake::TOKEN_SLOT;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Template inputs fixed before the run: the environment, files, the auth token.
#[derive(Debug, Clone, Copy)]
pub struct Resolver<'a> {
    /// Whether an auth step gives a token: `{{token}}` becomes [`TOKEN_SLOT`], filled later.
    pub token: bool,
    /// The scenario's name, which `{{scenario}}` renders to (`default` on the command line).
    pub scenario: &'a str,
    /// Directory relative `{{line FILE}}` paths are read from.
    pub base: Option<&'a Path>,
}

impl Resolve for Resolver<'_> {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn lines(&self, path: &str) -> Result<Vec<String>, String> {
        let full = match self.base {
            Some(b) if Path::new(path).is_relative() => b.join(path),
            _ => PathBuf::from(path),
        };
        super::files::read_text_limited(&full, super::files::LINES_FILE_MAX)
            .map(|t| {
                t.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .map_err(|e| format!("cannot read `{path}`: {e}"))
    }

    fn token(&self) -> Option<&str> {
        self.token.then_some(TOKEN_SLOT)
    }

    fn scenario(&self) -> &str {
        self.scenario
    }
}

/// `m` with its `{{...}}` expressions parsed: fixed ones rendered now, the others per send.
pub fn templated(flag: &'static str, m: Message, r: &Resolver<'_>) -> Result<Message, PlanError> {
    // Only text can hold template expressions; a binary file is sent as it is.
    let Ok(text) = std::str::from_utf8(&m.payload) else {
        return Ok(m);
    };
    let t = match Template::parse(text, r) {
        Ok(None) => return Ok(m),
        Ok(Some(t)) => t,
        Err(reason) => return Err(PlanError::Invalid { flag, reason }),
    };
    if t.is_fixed() {
        return Ok(Message::fixed(m.opcode, t.render_fixed().into()));
    }
    Ok(Message {
        opcode: m.opcode,
        payload: Box::new([]),
        template: Some(Arc::new(t)),
    })
}

/// `--flag TEXT|@file`: the bytes to send, checked to be UTF-8 unless sent as binary.
pub fn load_message(flag: &'static str, spec: &str, opcode: OpCode) -> Result<Message, PlanError> {
    let payload = match spec.strip_prefix('@') {
        Some(path) => super::files::read_limited(Path::new(path), super::files::MESSAGE_FILE_MAX)
            .map_err(|reason| PlanError::File {
            flag,
            path: path.into(),
            reason,
        })?,
        None => spec.as_bytes().to_vec(),
    };
    if opcode == OpCode::Text && std::str::from_utf8(&payload).is_err() {
        return Err(PlanError::Invalid {
            flag,
            reason: "content is not UTF-8 text; add --binary to send it as binary".into(),
        });
    }
    Ok(Message::fixed(opcode, payload.into()))
}
