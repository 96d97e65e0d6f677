//! The auth steps of a run: a pre-step (one token for every connection, fetched by
//! `prepare`) or a request per connection at a bounded rate (`--auth-per-connection`).

use crate::cli::args::RunArgs;
use crate::plan::auth::{self, AuthSpec};
use crate::plan::message::Resolver;
use crate::plan::{files, AuthPool, PlanError};
use crate::proto::conn::Mode;
use crate::proto::template::Template;
use std::path::Path;
use std::sync::Arc;

/// What the flags ask for: at most one of the two.
#[derive(Debug, Default)]
pub(super) struct Steps {
    /// One token for the run.
    pub(super) pre_step: Option<AuthSpec>,
    /// One token per connection.
    pub(super) pool: Option<Arc<AuthPool>>,
}

impl Steps {
    /// Whether a token fills `{{token}}` (else `{{token}}` is an error).
    pub(super) fn gives_token(&self) -> bool {
        self.pre_step.is_some() || self.pool.is_some()
    }
}

/// Checks the auth flags and builds the steps.
pub(super) fn steps(a: &RunArgs, mode: Mode) -> Result<Steps, PlanError> {
    let spec = spec(a)?;
    if a.auth_per_connection {
        if a.conn.message_texts().any(|m| m.contains(auth::TOKEN)) {
            return Err(PlanError::invalid(
                "--auth-per-connection",
                "each connection's token goes in its upgrade request only: use {{token}} in -H values or the URL, not in messages",
            ));
        }
        if !(a.auth_rate.is_finite() && a.auth_rate >= 0.001) {
            return Err(PlanError::invalid(
                "--auth-rate",
                format!(
                    "must be at least 0.001 requests per second, got {}",
                    a.auth_rate
                ),
            ));
        }
        let in_request = a.url.contains(auth::TOKEN)
            || a.conn.headers.iter().any(|(_, v)| v.contains(auth::TOKEN));
        if !in_request {
            return Err(PlanError::invalid(
                "--auth-per-connection",
                "no {{token}} in -H values or the URL: each connection's token would be fetched and never sent",
            ));
        }
        if matches!(mode, Mode::Handshake { upgrade: false, .. }) {
            return Err(PlanError::invalid(
                "--auth-per-connection",
                "handshake cycles without --upgrade send no upgrade request to carry a token",
            ));
        }
    }
    let Some(spec) = spec else {
        return Ok(Steps::default());
    };
    if !a.auth_per_connection {
        return Ok(Steps {
            pre_step: Some(spec),
            pool: None,
        });
    }
    let resolver = Resolver {
        token: false,
        scenario: a.scenario.as_deref().unwrap_or("default"),
        base: a.base_dir.as_deref(),
    };
    let body = match &spec.body {
        None => None,
        Some(b) => Some(
            Template::parse(b, &resolver)
                .map_err(|reason| PlanError::invalid("--auth-body", reason))?
                .unwrap_or_else(|| Template::literal(b)),
        ),
    };
    let pool = AuthPool {
        spec,
        body,
        rate: a.auth_rate,
        timeout: a.conn.connect_timeout,
    };
    Ok(Steps {
        pre_step: None,
        pool: Some(Arc::new(pool)),
    })
}

/// The auth request asked for, if any; `{{token}}` without one is an error.
fn spec(a: &RunArgs) -> Result<Option<AuthSpec>, PlanError> {
    let uses_token = a.url.contains(auth::TOKEN)
        || a.conn.headers.iter().any(|(_, v)| v.contains(auth::TOKEN))
        || a.conn.message_texts().any(|m| m.contains(auth::TOKEN));
    // A scenario of a file that inherits the top level's auth but never uses the token
    // needs no request.
    if !uses_token && a.scenario.is_some() {
        return Ok(None);
    }
    let Some(auth_url) = &a.auth_url else {
        if uses_token {
            return Err(PlanError::invalid(
                "--auth-url",
                "`{{token}}` is used but no auth pre-step gives one: add --auth-url",
            ));
        }
        return Ok(None);
    };
    if !(auth_url.starts_with("http://") || auth_url.starts_with("https://")) {
        return Err(PlanError::invalid(
            "--auth-url",
            format!("`{auth_url}` is not an http:// or https:// URL"),
        ));
    }
    let body = a
        .auth_body
        .as_deref()
        .map(|b| match b.strip_prefix('@') {
            Some(path) => files::read_text_limited(Path::new(path), files::MESSAGE_FILE_MAX)
                .map_err(|reason| PlanError::File {
                    flag: "--auth-body",
                    path: path.into(),
                    reason,
                }),
            None => Ok(b.to_owned()),
        })
        .transpose()?;
    let cacerts = match &a.tls.cacert {
        Some(p) => crate::certs::load_certs("--cacert", p)?,
        None => Vec::new(),
    };
    Ok(Some(AuthSpec {
        url: auth_url.clone(),
        body,
        headers: a.auth_headers.clone(),
        field: a.auth_token_field.clone(),
        cacerts,
        insecure: a.tls.insecure,
    }))
}
