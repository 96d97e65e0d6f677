//! One client connection of the gateway: the upgrade handshake, the open WebSocket (echo,
//! subscribe acks, published events) and the fault-injection path that refuses the upgrade.
//!
//! Every connection is driven the same way: on any readiness event the worker hands the
//! connection to [`Conn::drive`], which moves bytes until the socket would block and returns the
//! connection (keep it) or `None` (drop it, which closes the socket). Nothing here blocks, and any
//! error a client can provoke closes only that connection.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::ServerConfig;
use tungstenite::error::ProtocolError;
use tungstenite::handshake::server::{NoCallback, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error as WsError, Message, WebSocket};

use super::stream::ServerStream;
use super::tls::{Accept, TlsStream};
use super::ThreadStats;

/// Largest HTTP request head a refusing connection reads before it gives up.
const MAX_REJECT_REQUEST: usize = 16 * 1024;

/// Events queued for a connection whose socket is full before further events are dropped for it
/// (the client sees a gap in `seq`). About 60 bytes each.
const MAX_QUEUED_WHILE_BLOCKED: u32 = 1024;

/// The upgrade handshake in progress (tungstenite resumes it after `WouldBlock`).
type Handshake = MidHandshake<ServerHandshake<ServerStream, NoCallback>>;

/// What every connection of one worker shares: counters and settings.
pub(super) struct DriveCtx {
    /// This worker's counters.
    pub(super) stats: Arc<ThreadStats>,
    /// Settings for every WebSocket (read buffer size, limits).
    pub(super) ws_config: WebSocketConfig,
    /// Fault injection: `None` = upgrade normally.
    pub(super) reject: Option<Refusal>,
    /// `wss://`: the TLS settings every connection shares; `None` = plain `ws://`.
    pub(super) tls: Option<Arc<ServerConfig>>,
}

/// How a refusing connection ends once the request has been read.
#[derive(Clone)]
pub(super) enum Refusal {
    /// Close without answering.
    Close,
    /// Write this HTTP response, then close.
    Answer(Box<[u8]>),
}

/// A client connection in one of its phases.
pub(super) enum Conn {
    /// `wss://`: the TLS handshake, until the client's first application bytes arrive.
    Tls(Box<TlsStream>),
    /// Reading the upgrade request or writing the 101 response.
    Handshake(Box<Handshake>),
    /// Upgraded: WebSocket messages flow.
    Open(Box<OpenConn>),
    /// Fault injection: reading the request, then refusing it.
    Reject(Box<RejectConn>),
}

impl Conn {
    /// Starts serving a freshly accepted (and already registered) stream; `None` if rustls
    /// refused to start a connection (counted as a TLS failure).
    pub(super) fn new(stream: TcpStream, ctx: &DriveCtx) -> Option<Self> {
        match &ctx.tls {
            None => Some(Self::upgrade(ServerStream::Plain(stream), ctx)),
            Some(config) => match TlsStream::new(stream, config) {
                Ok(tls) => Some(Self::Tls(Box::new(tls))),
                Err(_) => {
                    ctx.stats.tls_failures.fetch_add(1, Relaxed);
                    None
                }
            },
        }
    }

    /// The WebSocket phase on an established transport: the upgrade, or its refusal.
    fn upgrade(stream: ServerStream, ctx: &DriveCtx) -> Self {
        if ctx.reject.is_some() {
            Self::Reject(Box::new(RejectConn {
                stream,
                request: Vec::new(),
                written: None,
            }))
        } else {
            Self::Handshake(Box::new(ServerHandshake::start(
                stream,
                NoCallback,
                Some(ctx.ws_config),
            )))
        }
    }

    /// True once the WebSocket upgrade has completed.
    pub(super) fn is_open(&self) -> bool {
        matches!(self, Self::Open(_))
    }

    /// Makes all the progress the socket allows; `None` means the connection is finished and the
    /// caller drops it (closing the socket).
    pub(super) fn drive(self, ctx: &DriveCtx) -> Option<Self> {
        match self {
            Self::Tls(mut tls) => match tls.drive_accept(&ctx.stats).ok()? {
                Accept::Pending => Some(Self::Tls(tls)),
                // The upgrade request is (partly) decrypted already: no event will announce it.
                Accept::Ready => Self::upgrade(ServerStream::Tls(tls), ctx).drive(ctx),
            },
            Self::Handshake(mid) => match mid.handshake() {
                Ok(ws) => {
                    let mut open = Box::new(OpenConn {
                        ws,
                        blocked: false,
                        queued_blocked: 0,
                    });
                    // Bytes may have arrived after the handshake's last read: read them now, as
                    // the edge-triggered poller will not report them again.
                    if open.drive(ctx).is_err() {
                        open.close();
                        return None;
                    }
                    Some(Self::Open(open))
                }
                Err(HandshakeError::Interrupted(mid)) => Some(Self::Handshake(Box::new(mid))),
                Err(HandshakeError::Failure(err)) => {
                    if is_refused_request(&err) {
                        ctx.stats.handshakes_rejected.fetch_add(1, Relaxed);
                    }
                    None
                }
            },
            Self::Open(mut open) => {
                if open.drive(ctx).is_err() {
                    open.close();
                    return None;
                }
                Some(Self::Open(open))
            }
            Self::Reject(mut rej) => {
                rej.drive(ctx).ok()?;
                Some(Self::Reject(rej))
            }
        }
    }
}

/// A handshake failure that is the client's request being unacceptable (not a dropped socket).
fn is_refused_request(err: &WsError) -> bool {
    !matches!(
        err,
        WsError::Io(_)
            | WsError::ConnectionClosed
            | WsError::AlreadyClosed
            | WsError::Protocol(ProtocolError::HandshakeIncomplete)
    )
}

/// Tells the caller to drop the connection.
#[derive(Debug)]
pub(super) struct Finished;

/// An upgraded connection.
pub(super) struct OpenConn {
    /// The WebSocket; it owns the socket and the buffered output.
    ws: WebSocket<ServerStream>,
    /// The last flush hit `WouldBlock`: output is queued and a WRITABLE event will come. While
    /// set, nothing more is read from this client (backpressure for echo).
    blocked: bool,
    /// Events queued while `blocked`; see [`MAX_QUEUED_WHILE_BLOCKED`].
    queued_blocked: u32,
}

/// Outcome of handing a message to tungstenite.
fn queued(res: Result<(), WsError>) -> Result<bool, Finished> {
    match res {
        Ok(()) => Ok(false),
        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(_) => Err(Finished),
    }
}

impl OpenConn {
    /// Ends the transport politely before the connection is dropped.
    fn close(&mut self) {
        self.ws.get_mut().close();
    }

    /// Flushes queued output, then reads and answers messages until the socket would block.
    fn drive(&mut self, ctx: &DriveCtx) -> Result<(), Finished> {
        loop {
            if self.blocked {
                self.flush()?;
                if self.blocked {
                    return Ok(());
                }
            }
            let reply = match self.ws.read() {
                Ok(Message::Text(text)) => {
                    ctx.stats.msgs_in.fetch_add(1, Relaxed);
                    match subscribe_ack(&text) {
                        Some(ack) => Message::Text(ack.into()),
                        None => Message::Text(text),
                    }
                }
                Ok(Message::Binary(data)) => {
                    ctx.stats.msgs_in.fetch_add(1, Relaxed);
                    Message::Binary(data)
                }
                // Pongs and the reply to a close are queued by tungstenite and written by the next
                // read or flush; after a close the next read reports `ConnectionClosed`.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_)) => {
                    continue
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(Finished),
            };
            ctx.stats.msgs_out.fetch_add(1, Relaxed);
            if queued(self.ws.write(reply))? {
                self.blocked = true;
            }
        }
        self.flush()
    }

    /// Writes everything tungstenite has queued; sets or clears `blocked`.
    fn flush(&mut self) -> Result<(), Finished> {
        self.blocked = queued(self.ws.flush())?;
        if !self.blocked {
            self.queued_blocked = 0;
        }
        Ok(())
    }

    /// Sends one published event; a client that stopped reading loses events beyond
    /// [`MAX_QUEUED_WHILE_BLOCKED`] instead of growing the buffer without bound.
    pub(super) fn publish(&mut self, event: Message, ctx: &DriveCtx) -> Result<(), Finished> {
        if !self.ws.can_write() {
            return Ok(());
        }
        if self.blocked {
            if self.queued_blocked >= MAX_QUEUED_WHILE_BLOCKED {
                return Ok(());
            }
            self.queued_blocked += 1;
            ctx.stats.msgs_out.fetch_add(1, Relaxed);
            // Buffered; the pending WRITABLE event flushes it.
            queued(self.ws.write(event))?;
            return Ok(());
        }
        ctx.stats.msgs_out.fetch_add(1, Relaxed);
        if queued(self.ws.write(event))? {
            self.blocked = true;
            return Ok(());
        }
        self.flush()
    }
}

/// The reply to a `{"type":"subscribe",…}` text message, `None` for anything else.
///
/// Cheap for ordinary traffic: JSON is parsed only when the text looks like an object that
/// mentions "subscribe".
pub(super) fn subscribe_ack(text: &str) -> Option<String> {
    if !text.trim_start().starts_with('{') || !text.contains("subscribe") {
        return None;
    }
    let serde_json::Value::Object(obj) = serde_json::from_str(text).ok()? else {
        return None;
    };
    if obj.get("type").and_then(serde_json::Value::as_str) != Some("subscribe") {
        return None;
    }
    Some(match obj.get("channel") {
        // `Value`'s Display is compact JSON, so the channel is copied verbatim in meaning.
        Some(channel) => format!(r#"{{"type":"subscribed","channel":{channel}}}"#),
        None => r#"{"type":"subscribed"}"#.to_owned(),
    })
}

/// A connection whose upgrade is refused (fault injection).
pub(super) struct RejectConn {
    /// The client connection.
    stream: ServerStream,
    /// The request head read so far.
    request: Vec<u8>,
    /// `None` while reading the request; then how much of the answer has been written.
    written: Option<usize>,
}

impl RejectConn {
    /// Reads the whole request head, then answers (or just closes); `Err` = drop the socket.
    fn drive(&mut self, ctx: &DriveCtx) -> Result<(), Finished> {
        let Some(refusal) = &ctx.reject else {
            return Err(Finished);
        };
        if self.written.is_none() {
            if !self.read_request()? {
                return Ok(());
            }
            ctx.stats.handshakes_rejected.fetch_add(1, Relaxed);
            self.request = Vec::new();
            self.written = Some(0);
        }
        let Refusal::Answer(answer) = refusal else {
            return Err(Finished);
        };
        let mut written = self.written.unwrap_or(0);
        while let Some(rest) = answer.get(written..).filter(|rest| !rest.is_empty()) {
            match self.stream.write(rest) {
                Ok(0) => return Err(Finished),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.written = Some(written);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Finished),
            }
        }
        // A TLS stream may still hold the answer's records.
        match self.stream.flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.written = Some(written);
                Ok(())
            }
            _ => {
                // Answered: dropping the stream closes the connection.
                self.stream.close();
                Err(Finished)
            }
        }
    }

    /// Reads until the request head is complete (`Ok(true)`) or the socket would block
    /// (`Ok(false)`). A request that is not HTTP counts as complete: it is refused all the same.
    fn read_request(&mut self) -> Result<bool, Finished> {
        let mut chunk = [0u8; 2048];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(Finished),
                Ok(n) => {
                    self.request
                        .extend_from_slice(chunk.get(..n).ok_or(Finished)?);
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    match httparse::Request::new(&mut headers).parse(&self.request) {
                        Ok(httparse::Status::Partial) => {}
                        Ok(httparse::Status::Complete(_)) | Err(_) => return Ok(true),
                    }
                    if self.request.len() > MAX_REJECT_REQUEST {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Finished),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_ack_copies_channel() {
        assert_eq!(
            subscribe_ack(r#"{"type":"subscribe","channel":"prices"}"#).as_deref(),
            Some(r#"{"type":"subscribed","channel":"prices"}"#)
        );
        assert_eq!(
            subscribe_ack(r#" {"channel":{"a":[1,2]},"type":"subscribe"}"#).as_deref(),
            Some(r#"{"type":"subscribed","channel":{"a":[1,2]}}"#)
        );
        assert_eq!(
            subscribe_ack(r#"{"type":"subscribe"}"#).as_deref(),
            Some(r#"{"type":"subscribed"}"#)
        );
    }

    #[test]
    fn subscribe_ack_ignores_everything_else() {
        assert_eq!(subscribe_ack("subscribe"), None);
        assert_eq!(subscribe_ack(r#"{"type":"subscribed"}"#), None);
        assert_eq!(subscribe_ack(r#"{"type":"other","subscribe":1}"#), None);
        assert_eq!(subscribe_ack(r#"{"type":"subscribe""#), None);
        assert_eq!(subscribe_ack(r#"{"type":["subscribe"]}"#), None);
        assert_eq!(subscribe_ack(&"[".repeat(10_000)), None);
        assert_eq!(
            subscribe_ack(&format!("{{subscribe{}", "{".repeat(10_000))),
            None
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
