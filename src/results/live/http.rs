//! The endpoint's HTTP side: one thread, one request per connection, `GET /metrics` only.
//!
//! Requests are read up to [`MAX_REQUEST`] bytes with a [`IO_TIMEOUT`] per read and write, so
//! a client that stalls or sends too much is answered (or dropped) without holding the
//! registry. The registry is encoded under the shared lock into a buffer, the lock released,
//! then the buffer written. OpenMetrics 1.0 text when the scraper accepts it (Prometheus
//! asks for it first), else the Prometheus text format 0.0.4.

use super::Shared;
use prometheus_client::encoding::{prometheus_text, text};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// The largest request head read (request line and headers); more is answered 431.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one read or write may wait before the connection is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The OpenMetrics text format's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `listener` until the process exits.
pub(super) fn serve(listener: &TcpListener, shared: &Shared) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => answer(stream, shared),
            // Out of descriptors or a connection reset before accept: try the next one, not
            // in a tight loop.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `GET /metrics` (or `HEAD`), and whether OpenMetrics is accepted.
    Metrics { head: bool, openmetrics: bool },
    /// Another path.
    NotFound,
    /// Another method.
    Method,
    /// Not an HTTP request head.
    Bad,
    /// A head longer than [`MAX_REQUEST`], or with more than 32 headers.
    TooLarge,
}

/// Reads one request from `stream` and answers it.
fn answer(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let request = loop {
        if len == buf.len() {
            break Request::TooLarge;
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        if let Some(r) = parse(&buf[..len]) {
            break r;
        }
    };
    let (status, content_type, body, head) = match request {
        Request::Metrics { head, openmetrics } => {
            let (body, finished) = encode(shared, openmetrics);
            if let Some(body) = body {
                let ct = if openmetrics {
                    OPENMETRICS
                } else {
                    prometheus_text::CONTENT_TYPE
                };
                let sent = respond(&mut stream, "200 OK", ct, body.as_bytes(), head);
                if sent && finished {
                    let mut state = shared.lock();
                    state.final_scrapes += 1;
                    shared.scraped.notify_all();
                }
                return;
            }
            (
                "500 Internal Server Error",
                "text/plain",
                "encoding failed\n",
                head,
            )
        }
        Request::NotFound => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n",
            false,
        ),
        Request::Method => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n",
            false,
        ),
        Request::Bad => ("400 Bad Request", "text/plain", "bad request\n", false),
        Request::TooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too large: 8 KiB and 32 headers at most\n",
            false,
        ),
    };
    respond(&mut stream, status, content_type, body.as_bytes(), head);
}

/// The registry as text, and whether it held the final figures (`None`: encoding failed).
fn encode(shared: &Shared, openmetrics: bool) -> (Option<String>, bool) {
    let state = shared.lock();
    let mut body = String::with_capacity(16 * 1024);
    let ok = if openmetrics {
        text::encode(&mut body, &state.metrics.registry)
    } else {
        prometheus_text::encode(&mut body, &state.metrics.registry)
    };
    (ok.is_ok().then_some(body), state.finished)
}

/// Writes a response; whether all of it went out.
fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head: bool,
) -> bool {
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut ok = stream.write_all(header.as_bytes()).is_ok();
    if ok && !head {
        ok = stream.write_all(body).is_ok();
    }
    ok && stream.flush().is_ok()
}

/// The request in `buf`, once its head is complete (`None`: read more).
fn parse(buf: &[u8]) -> Option<Request> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Request::TooLarge),
        Err(_) => Some(Request::Bad),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("");
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            let head = match req.method {
                Some("GET") => false,
                Some("HEAD") => true,
                _ => return Some(Request::Method),
            };
            if path != "/metrics" {
                return Some(Request::NotFound);
            }
            let openmetrics = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("accept")
                    && String::from_utf8_lossy(h.value).contains("application/openmetrics-text")
            });
            Some(Request::Metrics { head, openmetrics })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart() {
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Request::Metrics {
                head: false,
                openmetrics: false
            })
        );
        assert_eq!(
            parse(b"HEAD /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n"),
            Some(Request::Metrics { head: true, openmetrics: true })
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Some(Request::NotFound));
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Request::Method)
        );
        assert_eq!(parse(b"\x16\x03\x01 hello\r\n\r\n"), Some(Request::Bad));
    }
}
