//! The client side of the HTTP/1.1 upgrade (RFC 6455 §4): a request pre-rendered once per run
//! with holes for what differs per connection (the `Sec-WebSocket-Key`, its own token, templated
//! path and header values), and an incremental response check.

use super::deflate::{Negotiated, Offer};
use crate::proto::template::{Template, Vars};
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
    /// The server answered with an extension we did not offer (we offer none): RFC 6455
    /// §4.1 says to fail the connection.
    BadExtension,
    /// The server's permessage-deflate answer has a parameter we did not offer, an invalid
    /// value, or more than one extension (RFC 7692 §7.1).
    BadDeflate,
    /// A 101 with more than [`MAX_HEADERS`] header fields.
    TooManyHeaders,
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
            Self::BadExtension => f.write_str("bad_extension"),
            Self::BadDeflate => f.write_str("bad_deflate_params"),
            Self::TooManyHeaders => f.write_str("upgrade_too_many_headers"),
            Self::Malformed => f.write_str("malformed_http_response"),
        }
    }
}

/// The upgrade request, rendered once per run as far as it is the same for every connection:
/// only the key, a per-connection token and the templated parts of the path and header values
/// (`{{conn_id}}`, `{{line FILE}}`, ...) are rendered per connection, straight into the send
/// buffer.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    /// The request in order: fixed text, pre-rendered, and the places filled per connection.
    pieces: Vec<Piece>,
    /// The extra headers' names, for reports (their values may be secret).
    header_names: Vec<String>,
    /// The subprotocols offered, in order.
    subprotocols: Vec<String>,
    /// The permessage-deflate offer, if any.
    deflate: Option<Offer>,
}

/// One piece of the upgrade request.
#[derive(Debug, Clone)]
enum Piece {
    /// Text that is the same for every connection.
    Fixed(Vec<u8>),
    /// The connection's `Sec-WebSocket-Key`.
    Key,
    /// The connection's own token (`--auth-per-connection`).
    Token,
    /// A part of the path or of a header value rendered per connection.
    Value(Template),
}

/// Where a per-connection token (`--auth-per-connection`) goes in headers or the path.
pub const TOKEN_SLOT: &str = "{{token}}";

impl RequestTemplate {
    /// Renders the request for `host` (the Host header value) and `path` (with query), all
    /// fixed but the key and [`TOKEN_SLOT`]s.
    pub fn new(
        host: &str,
        path: &str,
        headers: &[(String, String)],
        subprotocols: &[String],
    ) -> Self {
        let headers: Vec<(String, Template)> = headers
            .iter()
            .map(|(n, v)| (n.clone(), Template::literal(v)))
            .collect();
        Self::templated(host, &Template::literal(path), &headers, subprotocols)
    }

    /// Like [`RequestTemplate::new`], with a path and header values that may vary per
    /// connection; their fixed parts are rendered now. Their text must already be checked
    /// (no whitespace in the path, no control characters in values).
    pub fn templated(
        host: &str,
        path: &Template,
        headers: &[(String, Template)],
        subprotocols: &[String],
    ) -> Self {
        let mut t = Self {
            pieces: Vec::new(),
            header_names: headers.iter().map(|(n, _)| n.clone()).collect(),
            subprotocols: subprotocols.to_vec(),
            deflate: None,
        };
        t.push_text("GET ");
        t.push_value(path);
        t.push_text(&format!(" HTTP/1.1\r\nHost: {host}\r\n"));
        t.push_text("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
        t.pieces.push(Piece::Key);
        t.push_text("\r\nSec-WebSocket-Version: 13\r\n");
        if !subprotocols.is_empty() {
            t.push_text(&format!(
                "Sec-WebSocket-Protocol: {}\r\n",
                subprotocols.join(", ")
            ));
        }
        for (name, value) in headers {
            t.push_text(&format!("{name}: "));
            t.push_value(value);
            t.push_text("\r\n");
        }
        t.push_text("\r\n");
        t
    }

    /// Adds the permessage-deflate offer (`Sec-WebSocket-Extensions`) to the request.
    pub fn with_deflate(mut self, offer: Offer) -> Self {
        // The request ends with its blank line: the header goes before it.
        if let Some(Piece::Fixed(last)) = self.pieces.last_mut() {
            last.truncate(last.len().saturating_sub(2));
        }
        self.push_text(&format!(
            "Sec-WebSocket-Extensions: {}\r\n\r\n",
            offer.header_value()
        ));
        self.deflate = Some(offer);
        self
    }

    /// The permessage-deflate offer the request makes.
    pub fn deflate(&self) -> Option<&Offer> {
        self.deflate.as_ref()
    }

    fn push_bytes(&mut self, b: &[u8]) {
        match self.pieces.last_mut() {
            Some(Piece::Fixed(prev)) => prev.extend_from_slice(b),
            _ => self.pieces.push(Piece::Fixed(b.to_vec())),
        }
    }

    fn push_text(&mut self, text: &str) {
        self.push_bytes(text.as_bytes());
    }

    /// A path or header value: fixed parts pre-rendered, a token place at each [`TOKEN_SLOT`].
    fn push_value(&mut self, value: &Template) {
        for (i, piece) in value.split_at(TOKEN_SLOT).into_iter().enumerate() {
            if i > 0 {
                self.pieces.push(Piece::Token);
            }
            if piece.is_fixed() {
                self.push_bytes(&piece.render_fixed());
            } else {
                self.pieces.push(Piece::Value(piece));
            }
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
        let pieces = std::mem::take(&mut self.pieces);
        for p in pieces {
            match p {
                Piece::Token => self.push_text(token),
                Piece::Fixed(b) => self.push_bytes(&b),
                p => self.pieces.push(p),
            }
        }
    }

    /// Whether the request has a place for a per-connection token.
    pub fn wants_token(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Token))
    }

    /// Whether anything but the key and the token is rendered per connection.
    pub fn is_templated(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Value(_)))
    }

    /// Appends the request carrying `key`, `token` in its places and the connection's values
    /// (`vars`: its `{{conn_id}}`, ...) to `out`. Allocates nothing beyond `out`'s growth.
    pub fn render(
        &self,
        key: &[u8; 24],
        token: Option<&str>,
        vars: &mut Vars<'_>,
        out: &mut Vec<u8>,
    ) {
        for p in &self.pieces {
            match p {
                Piece::Fixed(b) => out.extend_from_slice(b),
                Piece::Key => out.extend_from_slice(key),
                Piece::Token => out.extend_from_slice(token.unwrap_or_default().as_bytes()),
                Piece::Value(t) => t.render(vars, out),
            }
        }
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

/// Header fields a 101 may have (proxies and gateways add many; beyond this it fails with
/// its own cause).
pub const MAX_HEADERS: usize = 128;

/// Checks a (possibly partial) upgrade response. `Ok(None)`: need more bytes;
/// `Ok(Some(n))`: a valid 101 whose head is `n` bytes long (frames may follow).
pub fn check_response(
    buf: &[u8],
    key: &[u8; 24],
    template: &RequestTemplate,
) -> Result<Option<usize>, UpgradeFailure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(UpgradeFailure::TooManyHeaders),
        _ => return Err(UpgradeFailure::Malformed),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(UpgradeFailure::Status(code));
    }
    let (mut upgrade, mut connection, mut accept_ok, mut proto) = (false, false, false, None);
    let mut deflate_seen = false;
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
        } else if h.name.eq_ignore_ascii_case("sec-websocket-extensions")
            && !h.value.trim_ascii().is_empty()
        {
            match &template.deflate {
                // RFC 6455 §4.1: an extension we did not offer fails the connection.
                None => return Err(UpgradeFailure::BadExtension),
                Some(_) if deflate_seen => return Err(UpgradeFailure::BadDeflate),
                Some(o) => {
                    o.accept(h.value).map_err(|_| UpgradeFailure::BadDeflate)?;
                    deflate_seen = true;
                }
            }
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
        let offered = template
            .subprotocols
            .iter()
            .any(|o| o.as_bytes() == p.trim_ascii());
        if !offered {
            return Err(UpgradeFailure::BadSubprotocol);
        }
    }
    Ok(Some(n))
}

/// What permessage-deflate the server agreed to in `head` (a response [`check_response`]
/// accepted): `None` when we offered none or it declined.
pub fn deflate_answer(head: &[u8], template: &RequestTemplate) -> Option<Negotiated> {
    let offer = template.deflate.as_ref()?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(head).ok()?;
    resp.headers
        .iter()
        .find(|h| {
            h.name.eq_ignore_ascii_case("sec-websocket-extensions")
                && !h.value.trim_ascii().is_empty()
        })
        .and_then(|h| offer.accept(h.value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8; 24] = b"dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn many_headers_pass_and_too_many_fail_with_their_cause_and_extensions_are_refused() {
        let with = |extra: &str| {
            let mut r = ok_response();
            r.truncate(r.len() - 2);
            r.extend_from_slice(extra.as_bytes());
            r.extend_from_slice(b"\r\n");
            r
        };
        let headers = |n: usize| (0..n).map(|i| format!("X-H{i}: v\r\n")).collect::<String>();
        let t = template();
        assert!(check_response(&with(&headers(100)), KEY, &t)
            .unwrap()
            .is_some());
        assert_eq!(
            check_response(&with(&headers(200)), KEY, &t),
            Err(UpgradeFailure::TooManyHeaders)
        );
        assert_eq!(
            check_response(
                &with("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
                KEY,
                &t
            ),
            Err(UpgradeFailure::BadExtension)
        );
    }

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
        let text = render(&template(), None, 0);
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
        let text = render(&t, Some("abc"), 0);
        assert!(text.starts_with("GET /ws?t=abc HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("\r\nAuthorization: Bearer abc\r\n"), "{text}");
        assert!(!text.contains("{{"), "{text}");
    }

    /// The request `t` renders for connection `conn_id` with `token`.
    fn render(t: &RequestTemplate, token: Option<&str>, conn_id: u64) -> String {
        let mut rng = crate::proto::rng::Rng::new(1);
        let mut vars = Vars {
            conn_id,
            seq: 0,
            last_seq: 0,
            now_unix_us: 0,
            rng: &mut rng,
        };
        let mut out = Vec::new();
        t.render(KEY, token, &mut vars, &mut out);
        String::from_utf8(out).unwrap()
    }

    struct Lines;
    impl crate::proto::template::Resolve for Lines {
        fn env(&self, _: &str) -> Option<String> {
            None
        }
        fn lines(&self, _: &str) -> Result<Vec<String>, String> {
            Ok(vec!["s-a".into(), "s-b".into(), "s-c".into()])
        }
        fn token(&self) -> Option<&str> {
            Some(TOKEN_SLOT)
        }
        fn scenario(&self) -> &str {
            "sc"
        }
    }

    #[test]
    fn per_connection_values_render_into_path_and_headers() {
        let parse = |s: &str| Template::parse(s, &Lines).unwrap().unwrap();
        let t = RequestTemplate::templated(
            "h",
            &parse("/q?clientId={{conn_id}}&session={{line s.txt}}&t={{token}}&x={{scenario}}"),
            &[
                ("Authorization".into(), parse("Bearer {{line t.txt}}")),
                ("X-Fixed".into(), Template::literal("f")),
            ],
            &[],
        );
        assert!(t.is_templated() && t.wants_token() && !template().is_templated());
        // Fixed text is pre-rendered: key, token and the two values are the only holes.
        let holes = t.pieces.iter().filter(|p| !matches!(p, Piece::Fixed(_)));
        assert_eq!(holes.count(), 4, "{:?}", t.pieces);
        for (id, line) in [(0, "s-a"), (1, "s-b"), (2, "s-c"), (3, "s-a"), (7, "s-b")] {
            let text = render(&t, Some("tk"), id);
            assert!(
                text.starts_with(&format!(
                    "GET /q?clientId={id}&session={line}&t=tk&x=sc HTTP/1.1\r\n"
                )),
                "{text}"
            );
            assert!(
                text.contains(&format!(
                    "\r\nAuthorization: Bearer {line}\r\nX-Fixed: f\r\n\r\n"
                )),
                "{text}"
            );
        }
        let mut filled = t.clone();
        filled.fill_token("run-wide");
        assert!(!filled.wants_token());
        assert!(
            render(&filled, None, 5).starts_with("GET /q?clientId=5&session=s-c&t=run-wide&x=sc ")
        );
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
