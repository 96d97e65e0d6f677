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
    /// `--auth-header` name/value pairs added to every auth request; on a POST they come after
    /// our `Content-Type: application/json`, which one of the same name replaces. Their values
    /// are never reported.
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
                let mut req = agent.post(&self.url);
                // A user's own Content-Type replaces ours: two make servers (aiohttp) answer 400.
                if !self
                    .headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                {
                    req = req.header("Content-Type", "application/json");
                }
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
            // The answer's body usually names the cause ("Duplicate Content-Type").
            let mut head = Vec::new();
            let _ = std::io::Read::read_to_end(
                &mut std::io::Read::take(res.body_mut().as_reader(), EXCERPT_READ as u64),
                &mut head,
            );
            return Err(fail(
                format!("auth_http_{status}"),
                format!(
                    "{what} answered HTTP {status}: check the URL, --auth-body and --auth-header{}",
                    self.excerpt(&head)
                ),
            ));
        }
        let text = res.body_mut().read_to_vec().map_err(|e| {
            fail(
                "auth_not_json".into(),
                clean(format!("{what}: the answer could not be read ({e})")),
            )
        })?;
        let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
            fail(
                "auth_not_json".into(),
                format!(
                    "{what}: the answer is not JSON ({e}){}",
                    self.excerpt(&text)
                ),
            )
        })?;
        let token = token_at(&v, &self.field).ok_or_else(|| {
            fail(
                "auth_no_token".into(),
                format!(
                    "{what}: the JSON answer has no string or number at `{}` (set --auth-token-field){}",
                    self.field,
                    self.excerpt(&text)
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

/// Bytes of a failed answer read to show its start (the rest is not read).
const EXCERPT_READ: usize = 4096;
/// Bytes of a failed answer shown, at most.
const EXCERPT_SHOWN: usize = 200;
/// What a secret is replaced with in a shown answer.
const REDACTED: &str = "[redacted]";

impl AuthSpec {
    /// `; the answer begins: …` with the start of `body` (≤ 200 bytes, one line), secrets
    /// redacted; empty for an empty body.
    fn excerpt(&self, body: &[u8]) -> String {
        let head = &body[..body.len().min(EXCERPT_READ)];
        let text = redact(&String::from_utf8_lossy(head), &self.field, &self.headers);
        let one_line: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let one_line = one_line.trim();
        if one_line.is_empty() {
            return String::new();
        }
        let mut end = one_line.len().min(EXCERPT_SHOWN);
        while !one_line.is_char_boundary(end) {
            end -= 1;
        }
        let more = if end < one_line.len() || body.len() > head.len() {
            "…"
        } else {
            ""
        };
        format!("; the answer begins: {}{more}", &one_line[..end])
    }
}

/// Parts of JSON key names whose values are redacted from a shown answer.
const SECRET_KEYS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "jwt",
    "api_key",
    "apikey",
    "credential",
];

/// `text` with what may be a secret replaced by `[redacted]`: the values of JSON keys named
/// like `field`'s last part or holding one of [`SECRET_KEYS`]; the
/// word after `Bearer`; JWT-shaped words; long words mixing letters and digits (opaque
/// tokens); and any `--auth-header` value the server echoes.
fn redact(text: &str, field: &str, headers: &[(String, String)]) -> String {
    let mut text = text.to_owned();
    for (_, v) in headers {
        let v = v.trim();
        if v.len() >= 4 {
            text = text.replace(v, REDACTED);
        }
    }
    let key = field
        .rsplit('.')
        .next()
        .unwrap_or(field)
        .to_ascii_lowercase();
    let secret_key = |k: &str| {
        let k = k.to_ascii_lowercase();
        k == key || SECRET_KEYS.iter().any(|s| k.contains(s))
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    // JSON `"key": value` pairs whose key looks secret: the value goes.
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let Some(len) = text[i + 1..].find('"') else {
            break;
        };
        let k = &text[i + 1..i + 1 + len];
        let mut j = i + 2 + len;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j >= b.len() || b[j] != b':' || !secret_key(k) {
            i += len + 2;
            continue;
        }
        j += 1;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        let (start, end) = if j < b.len() && b[j] == b'"' {
            // To the closing quote (escaped quotes skipped), or the end of what was read.
            let mut e = j + 1;
            while e < b.len() && b[e] != b'"' {
                e += if b[e] == b'\\' { 2 } else { 1 };
            }
            (j + 1, e.min(b.len()))
        } else {
            let mut e = j;
            while e < b.len() && !matches!(b[e], b',' | b'}' | b']') && !b[e].is_ascii_whitespace()
            {
                e += 1;
            }
            (j, e)
        };
        if end > start {
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = end;
        }
        i = end.max(j);
    }
    out.push_str(&text[copied..]);
    // Word by word: what follows `Bearer`, JWTs, opaque tokens.
    let word_char = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    let mut result = String::with_capacity(out.len());
    let mut after_bearer = false;
    let mut rest = out.as_str();
    while !rest.is_empty() {
        let n = rest.find(|c: char| !word_char(c)).unwrap_or(rest.len());
        if n == 0 {
            let c = rest.chars().next().unwrap_or(' ');
            result.push(c);
            rest = &rest[c.len_utf8()..];
            if !c.is_whitespace() {
                after_bearer = false;
            }
            continue;
        }
        let word = &rest[..n];
        if after_bearer || looks_like_token(word) {
            result.push_str(REDACTED);
        } else {
            result.push_str(word);
        }
        after_bearer = word.eq_ignore_ascii_case("bearer");
        rest = &rest[n..];
    }
    result
}

/// A JWT (three base64url parts, the first a JSON header) or a long opaque token (at least
/// 24 characters mixing letters and digits).
fn looks_like_token(w: &str) -> bool {
    let jwt = w.starts_with("eyJ") && w.split('.').count() == 3;
    let letters = w.bytes().any(|c| c.is_ascii_alphabetic());
    let digits = w.bytes().any(|c| c.is_ascii_digit());
    jwt || (w.len() >= 24 && letters && digits)
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

    /// An HTTP server for one request: answers what `respond` makes of the request's head,
    /// and hands the head back.
    fn serve_once(
        respond: impl FnOnce(&str) -> (u16, String) + Send + 'static,
    ) -> (String, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/auth/token", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&req).to_string();
            let head = head.split("\r\n\r\n").next().unwrap_or_default().to_owned();
            let (status, body) = respond(&head);
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            head
        });
        (url, h)
    }

    fn spec(url: String, headers: &[(&str, &str)]) -> AuthSpec {
        AuthSpec {
            url,
            body: Some(r#"{"user":"load"}"#.into()),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            field: "token".into(),
            cacerts: Vec::new(),
            insecure: false,
        }
    }

    fn content_types(head: &str) -> Vec<String> {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    #[test]
    fn a_user_content_type_replaces_ours() {
        // Like aiohttp: two Content-Type headers are a 400.
        let (url, h) = serve_once(|head| {
            if content_types(head).len() > 1 {
                (400, "400: Duplicate Content-Type".into())
            } else {
                (200, r#"{"token":"t0k"}"#.into())
            }
        });
        let s = spec(url, &[("content-type", "application/json; charset=utf-8")]);
        let token = s.fetch().map_err(|e| e.to_string());
        let head = h.join().unwrap();
        assert_eq!(token.as_deref(), Ok("t0k"), "{head}");
        assert_eq!(
            content_types(&head),
            ["application/json; charset=utf-8"],
            "{head}"
        );
        // Without one of the user's, ours is sent, once.
        let (url, h) = serve_once(|_| (200, r#"{"token":"t0k"}"#.into()));
        assert_eq!(spec(url, &[("X-Api-Key", "k")]).fetch().unwrap(), "t0k");
        assert_eq!(content_types(&h.join().unwrap()), ["application/json"]);
    }

    #[test]
    fn a_refusal_shows_the_start_of_the_answer_without_secrets() {
        let (url, h) = serve_once(|_| {
            (
                400,
                r#"{"error":"Duplicate Content-Type","token":"s3cr3t-1","hint":"Bearer abc.def or eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl","key":"sk_live_4eC39HqLyjWDarjtT1zdp7dc"}"#.into(),
            )
        });
        let e = spec(url.clone(), &[("X-Api-Key", "hunter22")])
            .fetch()
            .unwrap_err()
            .to_string();
        h.join().unwrap();
        assert!(e.contains("answered HTTP 400"), "{e}");
        assert!(
            e.contains(r#"the answer begins: {"error":"Duplicate Content-Type""#),
            "{e}"
        );
        for secret in ["s3cr3t", "abc.def", "eyJ", "sk_live", "4eC39"] {
            assert!(!e.contains(secret), "{secret} in {e}");
        }
        // No token in a JSON answer: its start is shown too, the token-like value redacted.
        let (url, h) = serve_once(|_| {
            (
                200,
                format!(
                    r#"{{"data":{{"access_token":"s3cr3t-2"}},"pad":"{}"}}"#,
                    "x".repeat(400)
                ),
            )
        });
        let e = spec(url, &[]).fetch().unwrap_err().to_string();
        h.join().unwrap();
        assert!(e.contains("no string or number at `token`"), "{e}");
        assert!(
            e.contains(r#"the answer begins: {"data":{"access_token":"[redacted]"},"pad":"xxx"#),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(e.ends_with('…'), "{e}");
        let shown = e.split("the answer begins: ").nth(1).unwrap();
        assert!(shown.len() <= 200 + '…'.len_utf8(), "{}", shown.len());
    }

    #[test]
    fn redaction() {
        let h = [("X-Api-Key".to_owned(), "hunter22".to_owned())];
        let r = |t: &str| redact(t, "data.access_token", &h);
        assert_eq!(
            r(r#"{"access_token": "a b"}"#),
            r#"{"access_token": "[redacted]"}"#
        );
        assert_eq!(
            r(r#"{"Password":12345,"n":1}"#),
            r#"{"Password":[redacted],"n":1}"#
        );
        assert_eq!(
            r(r#"{"refresh_token":"cut off"#),
            r#"{"refresh_token":"[redacted]"#
        );
        assert_eq!(
            r("use authorization: bearer x.y"),
            "use authorization: bearer [redacted]"
        );
        assert_eq!(r("bad key hunter22!"), "bad key [redacted]!");
        assert_eq!(r("user not found"), "user not found");
        assert_eq!(r("eyJa.eyJb.c"), "[redacted]");
        assert_eq!(r("id 0123456789abcdef0123456789abcdef"), "id [redacted]");
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
