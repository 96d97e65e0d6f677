//! The auth pre-step: one HTTP(S) request before the storm (e.g. `POST /v1/auth/token`) whose
//! JSON answer carries the token that replaces `{{token}}` in headers, the URL and messages.
//! The token never appears in reports or logs.

use crate::plan::PlanError;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;

/// What to request and where the token is in the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSpec {
    /// The auth server's URL (`--auth-url`), http:// or https://; messages show it without
    /// credentials or query.
    pub url: String,
    /// Request body (JSON); POST when given, GET otherwise.
    pub body: Option<String>,
    /// `--auth-header` name/value pairs added to every auth request (after `Content-Type` on a
    /// POST); their values are never reported.
    pub headers: Vec<(String, String)>,
    /// Path of the token in the JSON answer, dot-separated (`token`, `data.access_token`).
    pub field: String,
    /// CAs trusted for the auth server (`--cacert`) instead of the Mozilla roots.
    pub cacerts: Vec<CertificateDer<'static>>,
    /// `--insecure`: do not verify the auth server's certificate (the flag also covers the target).
    pub insecure: bool,
}

/// The placeholder the token replaces in the URL, `-H` values and messages (per-connection tokens:
/// in the upgrade request only).
pub const TOKEN: &str = crate::proto::ws::handshake::TOKEN_SLOT;

fn fail(reason: String) -> PlanError {
    PlanError::Auth(reason)
}

impl AuthSpec {
    /// Makes the pre-step request (15 s timeout) and returns the token; a failure is
    /// [`PlanError::Auth`] with a message that never holds the token.
    pub fn fetch(&self) -> Result<String, PlanError> {
        let agent = self.agent(Duration::from_secs(15));
        self.fetch_with(&agent, self.body.as_deref())
            .map_err(|e| fail(e.message))
    }

    /// An HTTP client for this server (keeps connections alive between requests).
    pub fn agent(&self, timeout: Duration) -> ureq::Agent {
        let mut tls = ureq::tls::TlsConfig::builder()
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .disable_verification(self.insecure);
        // A private auth server is signed by the run's --cacert: trust exactly that then;
        // otherwise the Mozilla roots.
        if !self.cacerts.is_empty() {
            let roots = self
                .cacerts
                .iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)));
        }
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into()
    }

    /// One request with `body` (POST) or none (GET): the token, or why there is none.
    pub fn fetch_with(&self, agent: &ureq::Agent, body: Option<&str>) -> Result<String, AuthError> {
        let method = if body.is_some() { "POST" } else { "GET" };
        // Without credentials (user:password@, the query): messages reach the report.
        let shown = shown_url(&self.url);
        let what = format!("{method} {shown}");
        let clean = |text: String| text.replace(&self.url, &shown);
        let fail = |cause: String, message: String| AuthError { cause, message };
        let res = match body {
            Some(body) => {
                let mut req = agent
                    .post(&self.url)
                    .header("Content-Type", "application/json");
                for (n, v) in &self.headers {
                    req = req.header(n, v);
                }
                req.send(body.as_bytes())
            }
            None => {
                let mut req = agent.get(&self.url);
                for (n, v) in &self.headers {
                    req = req.header(n, v);
                }
                req.call()
            }
        };
        let mut res = res.map_err(|e| {
            let cause = match e {
                ureq::Error::Timeout(_) => "auth_timeout",
                ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                    "auth_connect"
                }
                _ => "auth_error",
            };
            fail(cause.into(), clean(format!("{what} failed: {e}")))
        })?;
        let status = res.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(fail(
                format!("auth_http_{status}"),
                format!(
                    "{what} answered HTTP {status}: check the URL, --auth-body and --auth-header"
                ),
            ));
        }
        let v: serde_json::Value = res.body_mut().read_json().map_err(|e| {
            fail(
                "auth_not_json".into(),
                format!("{what}: the answer is not JSON ({e})"),
            )
        })?;
        let token = token_at(&v, &self.field).ok_or_else(|| {
            fail(
                "auth_no_token".into(),
                format!(
                    "{what}: the JSON answer has no string or number at `{}` (set --auth-token-field)",
                    self.field
                ),
            )
        })?;
        // It goes into header values and the request line: visible ASCII only (RFC 6750's
        // b64token), or a server could inject headers. The message does not echo it.
        if !is_bearer(&token) {
            return Err(fail(
                "auth_bad_token".into(),
                format!(
                    "the token at `{}` has characters a bearer token cannot have (spaces, control or non-ASCII); check --auth-token-field",
                    self.field
                ),
            ));
        }
        Ok(token)
    }
}

/// Why an auth request gave no token: a cause for counting, and a message for people.
#[derive(Debug, Clone)]
pub struct AuthError {
    /// `auth_http_401`, `auth_timeout`, `auth_connect`, `auth_not_json`, `auth_no_token`, ...
    pub cause: String,
    /// What happened and what to check (never the token).
    pub message: String,
}

/// `url` as it may be shown: no `user:password@`, no query.
fn shown_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Whether `t` can go in a header value and a request line as it is.
pub fn is_bearer(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
}

/// The string (or number) at a dot-separated path.
fn token_at(v: &serde_json::Value, path: &str) -> Option<String> {
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    match cur {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_paths() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"token":"a","data":{"access_token":"b","n":7}}"#).unwrap();
        assert_eq!(token_at(&v, "token").as_deref(), Some("a"));
        assert_eq!(token_at(&v, "data.access_token").as_deref(), Some("b"));
        assert_eq!(token_at(&v, "data.n").as_deref(), Some("7"));
        assert_eq!(token_at(&v, "data"), None);
        assert_eq!(token_at(&v, "missing.x"), None);
    }

    #[test]
    fn shown_urls_have_no_credentials() {
        assert_eq!(
            shown_url("http://admin:hunter2@h:8/v1/t?key=s3cr3t"),
            "http://h:8/v1/t"
        );
        assert_eq!(shown_url("https://h/a@b"), "https://h/a@b");
        assert_eq!(shown_url("http://h"), "http://h");
    }
}
