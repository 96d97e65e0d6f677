//! The client side of the HTTP/1.1 upgrade (RFC 6455 §4): a request pre-rendered once per run
//! with a hole for the per-connection `Sec-WebSocket-Key`, and an incremental response check.

use base64::Engine as _;
use std::fmt;

/// Largest upgrade response we buffer; a server sending more headers than this is broken.
pub const MAX_RESPONSE: usize = 16 * 1024;

/// Why an upgrade failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UpgradeFailure {
    /// The server answered with this status instead of 101.
    Status(u16),
    /// 101 without `Upgrade: websocket`.
    MissingUpgrade,
    /// 101 without `Connection: upgrade`.
    MissingConnection,
    /// `Sec-WebSocket-Accept` missing or not derived from our key.
    BadAccept,
    /// The server selected a subprotocol we did not offer.
    BadSubprotocol,
    /// Not parsable as an HTTP/1.1 response, or larger than [`MAX_RESPONSE`].
    Malformed,
}

impl fmt::Display for UpgradeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(s) => write!(f, "http_{s}"),
            Self::MissingUpgrade => f.write_str("upgrade_header_missing"),
            Self::MissingConnection => f.write_str("connection_header_missing"),
            Self::BadAccept => f.write_str("bad_accept_key"),
            Self::BadSubprotocol => f.write_str("bad_subprotocol"),
            Self::Malformed => f.write_str("malformed_http_response"),
        }
    }
}

/// The upgrade request, rendered once per run; only the key differs per connection.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    /// Before the key and after it, each split where a per-connection token goes.
    head: Vec<Vec<u8>>,
    tail: Vec<Vec<u8>>,
    /// The extra headers' names, for reports (their values may be secret).
    header_names: Vec<String>,
    /// The subprotocols offered, in order.
    subprotocols: Vec<String>,
}

/// Where a per-connection token (`--auth-per-connection`) goes in headers or the path.
pub const TOKEN_SLOT: &str = "{{token}}";

fn split_slots(text: &str) -> Vec<Vec<u8>> {
    text.split(TOKEN_SLOT)
        .map(|p| p.as_bytes().to_vec())
        .collect()
}

fn join_slots(parts: &[Vec<u8>], token: &[u8], out: &mut Vec<u8>) {
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(token);
        }
        out.extend_from_slice(p);
    }
}

impl RequestTemplate {
    /// Renders the request for `host` (the Host header value) and `path` (with query).
    pub fn new(
        host: &str,
        path: &str,
        headers: &[(String, String)],
        subprotocols: &[String],
    ) -> Self {
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
        head.push_str("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
        let mut tail = String::from("\r\nSec-WebSocket-Version: 13\r\n");
        if !subprotocols.is_empty() {
            tail.push_str("Sec-WebSocket-Protocol: ");
            tail.push_str(&subprotocols.join(", "));
            tail.push_str("\r\n");
        }
        for (name, value) in headers {
            tail.push_str(name);
            tail.push_str(": ");
            tail.push_str(value);
            tail.push_str("\r\n");
        }
        tail.push_str("\r\n");
        Self {
            head: split_slots(&head),
            tail: split_slots(&tail),
            header_names: headers.iter().map(|(n, _)| n.clone()).collect(),
            subprotocols: subprotocols.to_vec(),
        }
    }

    /// Names of the extra headers, in order (the values are never reported: they may carry
    /// tokens).
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// The subprotocols offered in `Sec-WebSocket-Protocol`, in order.
    pub fn subprotocols(&self) -> &[String] {
        &self.subprotocols
    }

    /// Puts `token` in every token place for good (a token for the whole run, from an auth
    /// pre-step): the request then has no place left for a per-connection one.
    pub fn fill_token(&mut self, token: &str) {
        for parts in [&mut self.head, &mut self.tail] {
            let mut joined = Vec::new();
            join_slots(parts, token.as_bytes(), &mut joined);
            *parts = vec![joined];
        }
    }

    /// Whether the request has a place for a per-connection token.
    pub fn wants_token(&self) -> bool {
        self.head.len() > 1 || self.tail.len() > 1
    }

    /// Appends the request carrying `key` (and `token` in its places) to `out`.
    pub fn render(&self, key: &[u8; 24], token: Option<&str>, out: &mut Vec<u8>) {
        let token = token.unwrap_or_default().as_bytes();
        join_slots(&self.head, token, out);
        out.extend_from_slice(key);
        join_slots(&self.tail, token, out);
    }
}

/// Base64 of a 16-byte nonce: the `Sec-WebSocket-Key` value.
pub fn make_key(nonce: [u8; 16]) -> [u8; 24] {
    let mut key = [0u8; 24];
    // 16 bytes always encode to exactly 24 characters with padding.
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(nonce, &mut key)
        .unwrap_or(0);
    debug_assert_eq!(n, 24);
    key
}

/// Checks a (possibly partial) upgrade response. `Ok(None)`: need more bytes;
/// `Ok(Some(n))`: a valid 101 whose head is `n` bytes long (frames may follow).
pub fn check_response(
    buf: &[u8],
    key: &[u8; 24],
    template: &RequestTemplate,
) -> Result<Option<usize>, UpgradeFailure> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE => return Ok(None),
        _ => return Err(UpgradeFailure::Malformed),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(UpgradeFailure::Status(code));
    }
    let (mut upgrade, mut connection, mut accept_ok, mut proto) = (false, false, false, None);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade |= h.value.eq_ignore_ascii_case(b"websocket");
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection |= h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        } else if h.name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept_ok =
                h.value.trim_ascii() == tungstenite::handshake::derive_accept_key(key).as_bytes();
        } else if h.name.eq_ignore_ascii_case("sec-websocket-protocol") {
            proto = Some(h.value);
        }
    }
    if !upgrade {
        return Err(UpgradeFailure::MissingUpgrade);
    }
    if !connection {
        return Err(UpgradeFailure::MissingConnection);
    }
    if !accept_ok {
        return Err(UpgradeFailure::BadAccept);
    }
    if let Some(p) = proto {
        let offered = !template.subprotocols.is_empty()
            // The protocol line comes before any header that could hold a token.
            && std::str::from_utf8(template.tail.first().map_or(&[][..], Vec::as_slice))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find(|l| l.starts_with("Sec-WebSocket-Protocol: "))
                })
                .is_some_and(|l| l[24..].split(", ").any(|o| o.as_bytes() == p.trim_ascii()));
        if !offered {
            return Err(UpgradeFailure::BadSubprotocol);
        }
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8; 24] = b"dGhlIHNhbXBsZSBub25jZQ==";

    fn ok_response() -> Vec<u8> {
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            .to_vec()
    }

    fn template() -> RequestTemplate {
        RequestTemplate::new(
            "example.com:80",
            "/chat?x=1",
            &[("X-Tag".into(), "a".into())],
            &["chat".into()],
        )
    }

    #[test]
    fn renders_rfc_request() {
        let mut out = Vec::new();
        template().render(KEY, None, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            text,
            "GET /chat?x=1 HTTP/1.1\r\nHost: example.com:80\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Protocol: chat\r\nX-Tag: a\r\n\r\n"
        );
        assert_eq!(make_key(*b"the sample nonce"), *KEY);
    }

    #[test]
    fn per_connection_tokens_fill_their_places() {
        let t = RequestTemplate::new(
            "h",
            "/ws?t={{token}}",
            &[("Authorization".into(), "Bearer {{token}}".into())],
            &[],
        );
        assert!(t.wants_token() && !template().wants_token());
        let mut out = Vec::new();
        t.render(KEY, Some("abc"), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /ws?t=abc HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("\r\nAuthorization: Bearer abc\r\n"), "{text}");
        assert!(!text.contains("{{"), "{text}");
    }

    #[test]
    fn accepts_rfc_example_split_at_every_byte() {
        let mut resp = ok_response();
        let head = resp.len();
        resp.extend_from_slice(&[0x81, 0x00]);
        for split in 0..resp.len() {
            let r = check_response(&resp[..split], KEY, &template());
            if split < head {
                assert_eq!(r, Ok(None), "split {split}");
            } else {
                assert_eq!(r, Ok(Some(head)), "split {split}");
            }
        }
    }

    #[test]
    fn rejects_each_failure() {
        let t = template();
        let cases: Vec<(&[u8], UpgradeFailure)> = vec![
            (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", UpgradeFailure::Status(503)),
            (b"HTTP/1.1 404 Not Found\r\n\r\n", UpgradeFailure::Status(404)),
            (
                b"HTTP/1.1 101 OK\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                UpgradeFailure::MissingUpgrade,
            ),
            (
                b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                UpgradeFailure::MissingConnection,
            ),
            (
                b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: AAAALMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                UpgradeFailure::BadAccept,
            ),
            (
                b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                UpgradeFailure::BadSubprotocol,
            ),
            (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", UpgradeFailure::Malformed),
        ];
        for (resp, want) in cases {
            assert_eq!(
                check_response(resp, KEY, &t),
                Err(want),
                "{}",
                String::from_utf8_lossy(resp)
            );
        }
        let big = vec![b'a'; MAX_RESPONSE + 1];
        assert_eq!(
            check_response(&big, KEY, &t),
            Err(UpgradeFailure::Malformed)
        );
    }

    #[test]
    fn accepts_offered_subprotocol() {
        let mut resp = ok_response();
        resp.truncate(resp.len() - 2);
        resp.extend_from_slice(b"Sec-WebSocket-Protocol: chat\r\n\r\n");
        assert_eq!(
            check_response(&resp, KEY, &template()),
            Ok(Some(resp.len()))
        );
    }
}
