//! The plain HTTP side of a gateway connection: reading the request head to route it (the demo
//! auth endpoint, or the WebSocket upgrade with its permessage-deflate answer), and writing a
//! fixed HTTP answer (the auth token, a fault-injection refusal) before closing.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response, ServerHandshake};

use super::stream::ServerStream;
use super::SeenRequest;
use crate::proto::ws::deflate::{Negotiated, Offer};

use super::conn::{Conn, DriveCtx, Finished, Refusal};

/// Adds the agreed `Sec-WebSocket-Extensions` answer (if any) to the 101.
pub(super) struct Extensions(pub(super) Option<String>);

impl Callback for Extensions {
    fn on_request(self, _: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
        if let Some(value) = self.0.and_then(|v| v.parse().ok()) {
            response
                .headers_mut()
                .insert("Sec-WebSocket-Extensions", value);
        }
        Ok(response)
    }
}

/// Largest HTTP request head the gateway reads before handing it on as it is (tungstenite then
/// refuses it).
pub(super) const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Largest auth request body read before answering (the body is read, so that closing the
/// connection does not reset it under the client's feet; a larger one is answered all the same).
pub(super) const MAX_AUTH_BODY: usize = 64 * 1024;

/// Path of the demo auth endpoint (the query string is ignored).
pub(super) const AUTH_PATH: &str = "/v1/auth/token";

/// Body of the demo auth endpoint's answer.
pub(super) const AUTH_BODY: &str = r#"{"token":"sockstorm-demo-token","expires_in":3600}"#;

/// Where a request goes once its head has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// The demo auth endpoint.
    Auth,
    /// Everything else: the WebSocket upgrade (or its refusal).
    Upgrade,
}

/// A connection whose request head is being read.
pub(super) struct RequestConn {
    /// The client connection.
    pub(super) stream: ServerStream,
    /// Bytes read so far: the head (and an auth request's body), maybe a first WebSocket frame.
    pub(super) buf: Vec<u8>,
    /// Once the head is complete (or hopeless): where it goes and how many bytes of the request
    /// to read before going there.
    pub(super) parsed: Option<(Route, usize)>,
}

impl RequestConn {
    /// Reads until the request is routed (`Ok(true)`) or the socket would block (`Ok(false)`).
    pub(super) fn read_request(&mut self) -> Result<bool, Finished> {
        let mut chunk = [0u8; 2048];
        loop {
            if self.parsed.is_some_and(|(_, len)| self.buf.len() >= len) {
                return Ok(true);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(Finished),
                Ok(n) => {
                    self.buf.extend_from_slice(chunk.get(..n).ok_or(Finished)?);
                    if self.parsed.is_none() {
                        self.parsed = route(&self.buf);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Finished),
            }
        }
    }

    /// The phase after a routed request; `None` = close without answering.
    pub(super) fn route(self, ctx: &DriveCtx) -> Option<Conn> {
        let Self {
            mut stream,
            buf,
            parsed,
        } = self;
        let answer = |stream, answer| {
            Conn::Answer(Box::new(AnswerConn {
                stream,
                answer,
                written: 0,
            }))
        };
        if let Some((Route::Auth, _)) = parsed {
            ctx.stats.auth_requests.fetch_add(1, Relaxed);
            return Some(answer(stream, Arc::clone(&ctx.auth_answer)));
        }
        if let Some(log) = &ctx.requests {
            log.record(|| seen_request(&buf));
        }
        if let Some(cap) = ctx.cap.as_ref().filter(|c| c.full()) {
            ctx.stats.handshakes_rejected.fetch_add(1, Relaxed);
            return Some(answer(stream, Arc::clone(&cap.answer)));
        }
        match &ctx.reject {
            Some(refusal) => {
                ctx.stats.handshakes_rejected.fetch_add(1, Relaxed);
                match refusal {
                    Refusal::Close => None,
                    Refusal::Answer(bytes) => Some(answer(stream, Arc::clone(bytes))),
                }
            }
            None => {
                let agreed = match (&ctx.compression, parsed) {
                    (Some(ours), Some((Route::Upgrade, head))) => {
                        deflate_answer(ours, &buf).map(|a| (a, head))
                    }
                    _ => None,
                };
                let answer = match agreed {
                    Some(((n, value), head)) => {
                        let max = ctx.ws_config.max_message_size.unwrap_or(usize::MAX);
                        stream.agree_deflate(buf, head, n, max);
                        Some(value)
                    }
                    None => {
                        stream.replay(buf);
                        None
                    }
                };
                Some(Conn::Handshake(Box::new(ServerHandshake::start(
                    stream,
                    Extensions(answer),
                    Some(ctx.ws_config),
                ))))
            }
        }
    }
}

/// Where the request in `buf` goes and how long it is, once that can be told. A request that is
/// not HTTP, or whose head is too long, counts as complete: it goes on to be refused.
pub(super) fn route(buf: &[u8]) -> Option<(Route, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(head)) => Some(match auth_body_len(&req) {
            Some(body) => (Route::Auth, head.saturating_add(body.min(MAX_AUTH_BODY))),
            None => (Route::Upgrade, head),
        }),
        Ok(httparse::Status::Partial) if buf.len() <= MAX_REQUEST_HEAD => None,
        Ok(httparse::Status::Partial) | Err(_) => Some((Route::Upgrade, buf.len())),
    }
}

/// The permessage-deflate answer to the offers in the request head in `buf`, if one is
/// accepted.
pub(super) fn deflate_answer(ours: &Offer, buf: &[u8]) -> Option<(Negotiated, String)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(buf).ok()?;
    let offers = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
        .map(|h| h.value);
    crate::proto::ws::deflate::answer(ours, offers)
}

/// The target and headers of the request head in `buf` (empty if it does not parse).
pub(super) fn seen_request(buf: &[u8]) -> SeenRequest {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let _ = req.parse(buf);
    SeenRequest {
        target: req.path.unwrap_or_default().to_owned(),
        headers: req
            .headers
            .iter()
            .filter(|h| !h.name.is_empty())
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
    }
}

/// For a request to the auth endpoint (`GET` or `POST`, no `Upgrade` header), the length of
/// its body; `None` for any other request.
fn auth_body_len(req: &httparse::Request<'_, '_>) -> Option<usize> {
    if !matches!(req.method, Some("GET" | "POST")) {
        return None;
    }
    let path = req.path?;
    if path.split('?').next() != Some(AUTH_PATH) {
        return None;
    }
    let mut body = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("upgrade") {
            return None;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            body = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    Some(body)
}

/// A connection that gets a fixed HTTP answer and is then closed.
pub(super) struct AnswerConn {
    /// The client connection.
    pub(super) stream: ServerStream,
    /// The whole answer.
    pub(super) answer: Arc<[u8]>,
    /// How much of it has been written.
    pub(super) written: usize,
}

impl AnswerConn {
    /// Writes the answer; `Err` = done (answered or failed): drop the socket.
    pub(super) fn drive(&mut self) -> Result<(), Finished> {
        while let Some(rest) = self.answer.get(self.written..).filter(|r| !r.is_empty()) {
            match self.stream.write(rest) {
                Ok(0) => return Err(Finished),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Finished),
            }
        }
        // A TLS stream may still hold the answer's records.
        match self.stream.flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            _ => {
                // Answered: dropping the stream closes the connection.
                self.stream.close();
                Err(Finished)
            }
        }
    }
}

/// The bytes that refuse an upgrade with `status`.
pub(super) fn reject_response(status: u16) -> Box<[u8]> {
    let reason = tungstenite::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("Unknown");
    format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .into_bytes()
        .into_boxed_slice()
}

/// The auth endpoint's whole answer: `200 OK` with [`AUTH_BODY`], then the connection closes.
pub(super) fn auth_response() -> Box<[u8]> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{AUTH_BODY}",
        AUTH_BODY.len()
    )
    .into_bytes()
    .into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_requests_are_routed_with_their_body() {
        let get = b"GET /v1/auth/token HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(route(get), Some((Route::Auth, get.len())));
        let query = b"GET /v1/auth/token?user=a HTTP/1.1\r\n\r\n";
        assert_eq!(route(query), Some((Route::Auth, query.len())));
        let post = b"POST /v1/auth/token HTTP/1.1\r\ncontent-length: 13\r\n\r\n";
        assert_eq!(route(post), Some((Route::Auth, post.len() + 13)));
        let huge = b"POST /v1/auth/token HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n";
        assert_eq!(route(huge), Some((Route::Auth, huge.len() + MAX_AUTH_BODY)));
        // Not complete yet.
        assert_eq!(route(b"POST /v1/auth/token HTTP/1.1\r\nHost"), None);
        assert_eq!(route(b"GE"), None);
    }

    #[test]
    fn everything_else_goes_to_the_upgrade() {
        for head in [
            &b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /v1/auth/tokens HTTP/1.1\r\n\r\n",
            b"PUT /v1/auth/token HTTP/1.1\r\n\r\n",
            b"GET /v1/auth/token HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        ] {
            assert_eq!(route(head), Some((Route::Upgrade, head.len())));
        }
        // Not HTTP, or a head that never ends: handed on at once, to be refused.
        let junk = [0u8, 1, 2, 3, 0xff, b'\r', b'\n'];
        assert_eq!(route(&junk), Some((Route::Upgrade, junk.len())));
        let mut long = b"GET /ws HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_REQUEST_HEAD + 1, b'a');
        assert_eq!(route(&long), Some((Route::Upgrade, long.len())));
    }

    #[test]
    fn auth_response_is_json_with_its_length() {
        let resp = auth_response();
        let text = std::str::from_utf8(&resp).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: application/json\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert_eq!(
            body,
            r#"{"token":"sockstorm-demo-token","expires_in":3600}"#
        );
    }

    #[test]
    fn reject_response_has_reason_and_no_body() {
        assert_eq!(
            &*reject_response(503),
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            &*reject_response(599),
            b"HTTP/1.1 599 Unknown\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
}
