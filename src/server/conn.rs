//! One client connection of the gateway: reading the request head to route it, the upgrade
//! handshake, the open WebSocket (echo, commands, channel and fan-out deliveries), and the
//! plain HTTP answers (the demo auth endpoint, fault-injection refusals).
//!
//! Every connection is driven the same way: on any readiness event the worker hands the
//! connection to [`Conn::drive`], which moves bytes until the socket would block and returns the
//! connection (keep it) or `None` (drop it, which closes the socket). Nothing here blocks, and any
//! error a client can provoke closes only that connection.
//!
//! Routing: the gateway reads the request head itself (plain or decrypted TLS bytes alike) and
//! decides from it: `GET`/`POST /v1/auth/token` without `Upgrade` gets the demo token; anything
//! else goes to tungstenite's handshake (or its refusal, with fault injection), which reads the
//! same bytes again from [`ServerStream::replay`]. A request tungstenite cannot accept is
//! counted as rejected, as before.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use rustls::ServerConfig;
use serde_json::Value;
use tungstenite::error::ProtocolError;
use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error as WsError, Message, Utf8Bytes, WebSocket};

use super::ack::Routes;
use super::budget::{Budget, Charge};
use super::caps::{Bucket, ConnCap};
use super::channel::ChannelOp;
use super::command::{self, Command};
use super::deflate::{self, DeflateError};
use super::stream::ServerStream;
use super::tls::{Accept, TlsStream};
use super::{RequestLog, SeenRequest, ThreadStats};
use crate::proto::ws::deflate::{Negotiated, Offer};

/// Largest HTTP request head the gateway reads before handing it on as it is (tungstenite then
/// refuses it).
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Largest auth request body read before answering (the body is read, so that closing the
/// connection does not reset it under the client's feet; a larger one is answered all the same).
const MAX_AUTH_BODY: usize = 64 * 1024;

/// Path of the demo auth endpoint (the query string is ignored).
const AUTH_PATH: &str = "/v1/auth/token";

/// Body of the demo auth endpoint's answer.
pub(super) const AUTH_BODY: &str = r#"{"token":"sockstorm-demo-token","expires_in":3600}"#;

/// Deliveries (channel messages, fan-out events, stream quotes) queued for a connection whose
/// socket is full before further ones are dropped for it and counted in `channel_overflow`.
/// About 60 bytes each for fan-out events; channel messages are as large as published, so
/// their bytes are capped too (`ServeConfig::max_queued_bytes`, tungstenite's write buffer
/// limit).
const MAX_QUEUED_WHILE_BLOCKED: u32 = 1024;

/// Channel requests one drive of a connection collects before it stops reading so that the
/// worker carries them out (and drives it again): a client publishing fast cannot pile up
/// more than this many, or [`MAX_PUBLISH_BYTES_PER_DRIVE`], in the gateway.
const MAX_OPS_PER_DRIVE: usize = 64;

/// Bytes of publishes one drive collects before it stops reading (see
/// [`MAX_OPS_PER_DRIVE`]); one larger message still goes through.
const MAX_PUBLISH_BYTES_PER_DRIVE: usize = 256 * 1024;

/// Largest header of a frame the server sends (2 + 8 length bytes, no mask), rounded up.
pub(super) const MAX_FRAME_HEADER: usize = 14;

/// Header of a control frame a client sends: 2 bytes and the 4-byte mask (its payload is at
/// most 125 bytes, so no extended length).
const CLIENT_CONTROL_HEADER: u64 = 6;

/// The upgrade handshake in progress (tungstenite resumes it after `WouldBlock`).
type Handshake = MidHandshake<ServerHandshake<ServerStream, Extensions>>;

/// Adds the agreed `Sec-WebSocket-Extensions` answer (if any) to the 101.
pub(super) struct Extensions(Option<String>);

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
    /// The auth endpoint's whole HTTP answer.
    pub(super) auth_answer: Arc<[u8]>,
    /// Where upgrade requests are kept (`record_requests`); `None` = not kept.
    pub(super) requests: Option<Arc<RequestLog>>,
    /// The ack routes (built-in and configured).
    pub(super) routes: Arc<Routes>,
    /// The gateway-wide budget of unfinished messages.
    pub(super) budget: Arc<Budget>,
    /// `--max-connections`: the gateway-wide cap on open WebSockets; `None` = no cap.
    pub(super) cap: Option<Arc<ConnCap>>,
    /// `--max-msg-rate`: this thread's share of the message rate; `None` = no cap.
    pub(super) msg_rate: Option<RefCell<Bucket>>,
    /// `--compression`: permessage-deflate is agreed to when a client offers it, with these
    /// parameters asked for on top; `None` = never.
    pub(super) compression: Option<Offer>,
}

/// How a refusing connection ends once the request has been read.
#[derive(Clone)]
pub(super) enum Refusal {
    /// Close without answering.
    Close,
    /// Write this HTTP response, then close.
    Answer(Arc<[u8]>),
}

/// A client connection in one of its phases.
pub(super) enum Conn {
    /// `wss://`: the TLS handshake, until the client's first application bytes arrive.
    Tls(Box<TlsStream>),
    /// Reading the HTTP request head to route it.
    Request(Box<RequestConn>),
    /// The upgrade handshake: tungstenite reads the request (again) and writes the 101.
    Handshake(Box<Handshake>),
    /// Upgraded: WebSocket messages flow.
    Open(Box<OpenConn>),
    /// Writing a plain HTTP answer (auth token or refusal), then closing.
    Answer(Box<AnswerConn>),
}

impl Conn {
    /// Starts serving a freshly accepted (and already registered) stream; `None` if rustls
    /// refused to start a connection (counted as a TLS failure).
    pub(super) fn new(stream: TcpStream, ctx: &DriveCtx) -> Option<Self> {
        match &ctx.tls {
            None => Some(Self::request(ServerStream::plain(stream))),
            Some(config) => match TlsStream::new(stream, config) {
                Ok(tls) => Some(Self::Tls(Box::new(tls))),
                Err(_) => {
                    ctx.stats.tls_failures.fetch_add(1, Relaxed);
                    None
                }
            },
        }
    }

    /// The HTTP phase on an established transport: read the request head first.
    fn request(stream: ServerStream) -> Self {
        Self::Request(Box::new(RequestConn {
            stream,
            buf: Vec::new(),
            parsed: None,
        }))
    }

    /// True once the WebSocket upgrade has completed.
    pub(super) fn is_open(&self) -> bool {
        matches!(self, Self::Open(_))
    }

    /// Makes all the progress the socket allows; `None` means the connection is finished and the
    /// caller drops it (closing the socket). Channel requests of the client are appended to
    /// `ops` in arrival order, for the worker to carry out.
    pub(super) fn drive(self, ctx: &DriveCtx, ops: &mut Vec<ChannelOp>) -> Option<Self> {
        match self {
            Self::Tls(mut tls) => match tls.drive_accept(&ctx.stats).ok()? {
                Accept::Pending => Some(Self::Tls(tls)),
                // The request is (partly) decrypted already: no event will announce it.
                Accept::Ready => Self::request(ServerStream::tls(tls)).drive(ctx, ops),
            },
            Self::Request(mut req) => {
                if !req.read_request().ok()? {
                    return Some(Self::Request(req));
                }
                // Routed: the next phase starts now, as no event will announce the bytes read.
                (*req).route(ctx)?.drive(ctx, ops)
            }
            Self::Handshake(mid) => match mid.handshake() {
                Ok(mut ws) => {
                    if ws.get_mut().start_deflate() {
                        ctx.stats.compressed_sessions.fetch_add(1, Relaxed);
                    }
                    let read_mark = ws.get_ref().read_total();
                    let mut open = Box::new(OpenConn {
                        ws,
                        read_mark,
                        unfinished: Charge::new(&ctx.budget),
                        more: false,
                        throttled: false,
                        queued_throttled: false,
                        blocked: false,
                        queued_blocked: 0,
                        unflushed: false,
                        close_at: None,
                        keepalive: Keepalive::default(),
                        full_since: None,
                    });
                    // Bytes may have arrived after the handshake's last read: read them now, as
                    // the edge-triggered poller will not report them again.
                    if open.drive(ctx, ops).is_err() {
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
                if open.drive(ctx, ops).is_err() {
                    open.close();
                    return None;
                }
                Some(Self::Open(open))
            }
            Self::Answer(mut answer) => {
                answer.drive().ok()?;
                Some(Self::Answer(answer))
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

/// Where a request goes once its head has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The demo auth endpoint.
    Auth,
    /// Everything else: the WebSocket upgrade (or its refusal).
    Upgrade,
}

/// A connection whose request head is being read.
pub(super) struct RequestConn {
    /// The client connection.
    stream: ServerStream,
    /// Bytes read so far: the head (and an auth request's body), maybe a first WebSocket frame.
    buf: Vec<u8>,
    /// Once the head is complete (or hopeless): where it goes and how many bytes of the request
    /// to read before going there.
    parsed: Option<(Route, usize)>,
}

impl RequestConn {
    /// Reads until the request is routed (`Ok(true)`) or the socket would block (`Ok(false)`).
    fn read_request(&mut self) -> Result<bool, Finished> {
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
    fn route(self, ctx: &DriveCtx) -> Option<Conn> {
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
fn route(buf: &[u8]) -> Option<(Route, usize)> {
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
fn deflate_answer(ours: &Offer, buf: &[u8]) -> Option<(Negotiated, String)> {
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
fn seen_request(buf: &[u8]) -> SeenRequest {
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
    stream: ServerStream,
    /// The whole answer.
    answer: Arc<[u8]>,
    /// How much of it has been written.
    written: usize,
}

impl AnswerConn {
    /// Writes the answer; `Err` = done (answered or failed): drop the socket.
    fn drive(&mut self) -> Result<(), Finished> {
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

/// What became of one delivery handed to [`OpenConn::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// Written or buffered; the worker flushes it at the end of its turn.
    Queued,
    /// Dropped: the client already has [`MAX_QUEUED_WHILE_BLOCKED`] deliveries, or
    /// `max_queued_bytes` of output, waiting.
    Overflow,
}

/// An upgraded connection.
///
/// Output: a delivery that would take tungstenite's write buffer beyond
/// `max_queued_bytes` (+ one write buffer + a frame header) is refused by tungstenite
/// (`WriteBufferFull`) and dropped as overflow. Replies (echoes, acks, pings) are only written
/// while not `blocked`, when the buffer holds at most one write buffer, so they always fit.
///
/// Input: bytes read from the socket that are not yet part of a whole message are charged
/// to the gateway-wide budget (`unfinished`): `read_total - read_mark`, where the mark moves
/// to the read total when a data message comes out whole and past each control frame.
/// Whatever of the next message was read with the end of one is forgiven: at most one read
/// (`read_buffer` bytes).
pub(super) struct OpenConn {
    /// The WebSocket; it owns the socket and the buffered output.
    ws: WebSocket<ServerStream>,
    /// The stream's read total when the last whole message came out (plus the control frames
    /// since).
    read_mark: u64,
    /// This connection's share of the budget of unfinished messages.
    unfinished: Charge,
    /// The last drive stopped reading with channel requests to carry out
    /// ([`MAX_OPS_PER_DRIVE`]): the worker carries them out and drives it again, as no
    /// readiness event will come for what is left in the socket.
    pub(super) more: bool,
    /// The last drive stopped reading for `--max-msg-rate`: the worker drives it again when
    /// the rate allows (it is in the worker's throttled queue while this is set).
    pub(super) throttled: bool,
    /// In the worker's throttled queue.
    pub(super) queued_throttled: bool,
    /// The last flush hit `WouldBlock`: output is queued and a WRITABLE event will come. While
    /// set, nothing more is read from this client (backpressure for echo).
    blocked: bool,
    /// Deliveries queued while `blocked`; see [`MAX_QUEUED_WHILE_BLOCKED`].
    queued_blocked: u32,
    /// Deliveries are buffered and the slot is in the worker's list to flush at the end of
    /// the turn.
    pub(super) unflushed: bool,
    /// When `close_after` closes this connection (its key in the worker's close queue).
    pub(super) close_at: Option<Instant>,
    /// Server pings (`keepalive`): when the next is due, the unanswered one, a close to
    /// give up on.
    keepalive: Keepalive,
    /// Since when deliveries overflow (the client is not reading): the slow-consumer rule.
    pub(super) full_since: Option<Instant>,
}

/// The server-ping state of one connection (`ServeConfig::keepalive`).
#[derive(Debug, Default)]
struct Keepalive {
    /// When the next ping is due (set on the first sweep).
    next: Option<Instant>,
    /// When the unanswered ping was sent.
    sent: Option<Instant>,
    /// The keepalive close was sent: abort if the connection is still there at this time.
    abort_at: Option<Instant>,
}

/// What a keepalive sweep did to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeepaliveStep {
    /// Nothing due.
    Idle,
    /// A ping was written (buffered): flush at the end of the turn.
    Pinged,
    /// No pong within the timeout: the close 1011 "keepalive ping timeout" was written
    /// (buffered): flush at the end of the turn.
    TimedOut,
    /// Give up: reset the connection now (its close could not be written, or was not
    /// answered within the timeout).
    Abort,
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
    pub(super) fn close(&mut self) {
        self.ws.get_mut().close();
    }

    /// Flushes queued output, then reads and answers messages until the socket would block.
    fn drive(&mut self, ctx: &DriveCtx, ops: &mut Vec<ChannelOp>) -> Result<(), Finished> {
        let mut publish_bytes = 0;
        self.throttled = false;
        loop {
            if ops.len() >= MAX_OPS_PER_DRIVE || publish_bytes >= MAX_PUBLISH_BYTES_PER_DRIVE {
                self.more = true;
                break;
            }
            if self.blocked {
                self.flush()?;
                if self.blocked {
                    return Ok(());
                }
            }
            if let Some(b) = &ctx.msg_rate {
                if !b.borrow_mut().ready(Instant::now()) {
                    // Left in the socket until the rate allows: the echo waits.
                    self.throttled = true;
                    break;
                }
            }
            let mut is_ack = false;
            let read = self.ws.read();
            self.mark_read(&read);
            let reply = match read {
                Ok(Message::Text(text)) => {
                    ctx.stats.msgs_in.fetch_add(1, Relaxed);
                    if let Some(b) = &ctx.msg_rate {
                        b.borrow_mut().take();
                    }
                    match command::parse(&text, &ctx.routes) {
                        None => Message::Text(text),
                        Some(Command::Publish(channel)) => {
                            publish_bytes += text.len();
                            ops.push(ChannelOp::Publish {
                                channel: channel.into(),
                                text,
                            });
                            continue;
                        }
                        Some(cmd) => {
                            match &cmd {
                                Command::Subscribe(Some(Value::String(c))) => {
                                    ops.push(ChannelOp::Join(c.as_str().into()));
                                }
                                Command::Unsubscribe(Some(Value::String(c))) => {
                                    ops.push(ChannelOp::Leave(c.as_str().into()));
                                }
                                Command::StreamSubscribe(streams) => {
                                    let names = command::stream_names(streams);
                                    ops.push(ChannelOp::StreamSubscribe(names));
                                }
                                Command::StreamUnsubscribe(streams) => {
                                    let names =
                                        streams.as_ref().map(|_| command::stream_names(streams));
                                    ops.push(ChannelOp::StreamUnsubscribe(names));
                                }
                                Command::Ack(..) => is_ack = true,
                                _ => {}
                            }
                            let Some(ack) = cmd.reply() else {
                                continue;
                            };
                            Message::Text(ack.into())
                        }
                    }
                }
                Ok(Message::Binary(data)) => {
                    ctx.stats.msgs_in.fetch_add(1, Relaxed);
                    if let Some(b) = &ctx.msg_rate {
                        b.borrow_mut().take();
                    }
                    Message::Binary(data)
                }
                Ok(Message::Pong(_)) => {
                    // Any pong answers the keepalive ping (RFC 6455 §5.5.3 lets a client
                    // answer only the latest).
                    self.keepalive.sent = None;
                    continue;
                }
                // Pongs and the reply to a close are queued by tungstenite and written by the next
                // read or flush; after a close the next read reports `ConnectionClosed`.
                Ok(Message::Ping(_) | Message::Close(_) | Message::Frame(_)) => continue,
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                // A compressed message over the size limit, or one that breaks the rules.
                Err(WsError::Io(e)) if deflate::failure(&e).is_some() => {
                    if deflate::failure(&e) == Some(DeflateError::TooBig) {
                        return Err(self.close_too_big(ctx));
                    }
                    ctx.stats.protocol_errors.fetch_add(1, Relaxed);
                    return Err(Finished);
                }
                // The client went away (EOF without a close frame, maybe mid-frame): not a
                // violation.
                Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    return Err(Finished)
                }
                Err(WsError::Capacity(_)) => return Err(self.close_too_big(ctx)),
                Err(WsError::Protocol(_) | WsError::Utf8(_)) => {
                    ctx.stats.protocol_errors.fetch_add(1, Relaxed);
                    return Err(Finished);
                }
                Err(_) => return Err(Finished),
            };
            // After the server's close frame (close_after) nothing more may be sent; messages
            // the client sent before it saw that frame go unanswered.
            if !self.ws.can_write() {
                continue;
            }
            ctx.stats.msgs_out.fetch_add(1, Relaxed);
            if is_ack {
                ctx.stats.acks.fetch_add(1, Relaxed);
            }
            if queued(self.ws.write(reply))? {
                self.blocked = true;
            }
        }
        let unfinished = self
            .ws
            .get_ref()
            .read_total()
            .saturating_sub(self.read_mark);
        if !self
            .unfinished
            .set(usize::try_from(unfinished).unwrap_or(usize::MAX))
        {
            return Err(self.close_too_big(ctx));
        }
        self.flush()
    }

    /// Moves the read mark past what `read` returned: to the read total for a whole data
    /// message (nothing unfinished any more), past the frame for a control frame (which a
    /// fragmented message may have around it).
    fn mark_read(&mut self, read: &Result<Message, WsError>) {
        let control = match read {
            Ok(Message::Text(_) | Message::Binary(_)) => {
                self.read_mark = self.ws.get_ref().read_total();
                return;
            }
            Ok(Message::Ping(p) | Message::Pong(p)) => p.len(),
            Ok(Message::Close(c)) => c.as_ref().map_or(0, |c| 2 + c.reason.len()),
            Ok(Message::Frame(_)) | Err(_) => return,
        };
        let read_total = self.ws.get_ref().read_total();
        self.read_mark = (self.read_mark + CLIENT_CONTROL_HEADER + control as u64).min(read_total);
    }

    /// Ends a connection whose message is too big (over `max_message_size`, or over the
    /// gateway's budget of unfinished ones): a close 1009 "message too big", written if the
    /// socket takes it, then the connection is dropped, which frees the message at once.
    fn close_too_big(&mut self, ctx: &DriveCtx) -> Finished {
        ctx.stats.too_big_closes.fetch_add(1, Relaxed);
        let _ = self.server_close(1009, "message too big");
        let _ = self.ws.flush();
        Finished
    }

    /// Writes everything tungstenite has queued; sets or clears `blocked`.
    pub(super) fn flush(&mut self) -> Result<(), Finished> {
        self.blocked = queued(self.ws.flush())?;
        if !self.blocked {
            self.queued_blocked = 0;
            self.full_since = None;
        }
        Ok(())
    }

    /// Makes dropping the connection a reset (RST) instead of a FIN: a client that stopped
    /// reading learns at once, where a FIN would wait behind the data it does not read.
    pub(super) fn abort(&mut self) {
        self.ws.get_mut().abort();
    }

    /// Server pings every `interval`; a ping unanswered for `timeout` closes the connection
    /// with 1011 "keepalive ping timeout", as Python `websockets` does, and a close not
    /// answered within `timeout` more (or that cannot even be written) becomes a reset.
    pub(super) fn keepalive(
        &mut self,
        now: Instant,
        (interval, timeout): (Duration, Duration),
    ) -> Result<KeepaliveStep, Finished> {
        let k = &mut self.keepalive;
        if let Some(at) = k.abort_at {
            return Ok(if now >= at {
                KeepaliveStep::Abort
            } else {
                KeepaliveStep::Idle
            });
        }
        if !self.ws.can_write() {
            // Closing for another reason (the client's close, close_after): no more pings.
            return Ok(KeepaliveStep::Idle);
        }
        if let Some(sent) = k.sent {
            if now.saturating_duration_since(sent) < timeout {
                return Ok(KeepaliveStep::Idle);
            }
            if self.blocked {
                return Ok(KeepaliveStep::Abort);
            }
            k.abort_at = Some(now + timeout);
            self.server_close(1011, "keepalive ping timeout")?;
            return Ok(KeepaliveStep::TimedOut);
        }
        let due = *k.next.get_or_insert(now + interval);
        if now < due {
            return Ok(KeepaliveStep::Idle);
        }
        k.sent = Some(now);
        k.next = Some(now + interval);
        if queued(self.ws.write(Message::Ping(Default::default())))? {
            self.blocked = true;
        }
        Ok(KeepaliveStep::Pinged)
    }

    /// Whether deliveries can still be made: false once a close frame was sent or received (a
    /// closing connection is no longer a channel member or fan-out receiver).
    pub(super) fn accepts_deliveries(&self) -> bool {
        self.ws.can_write()
    }

    /// Queues one delivery (channel message, fan-out event, stream quote) without flushing; a
    /// client that stopped reading loses deliveries beyond [`MAX_QUEUED_WHILE_BLOCKED`] or
    /// `max_queued_bytes` instead of growing the buffer without bound. Check [`Self::accepts_deliveries`] first.
    pub(super) fn deliver(&mut self, msg: Message) -> Result<Delivery, Finished> {
        if self.blocked {
            if self.queued_blocked >= MAX_QUEUED_WHILE_BLOCKED {
                self.full_since.get_or_insert_with(Instant::now);
                return Ok(Delivery::Overflow);
            }
            self.queued_blocked += 1;
        }
        // `WouldBlock` means buffered: the pending WRITABLE event flushes it.
        let written = match self.ws.write(msg) {
            // Over `max_queued_bytes`: the message was not buffered.
            Err(WsError::WriteBufferFull(_)) => {
                self.full_since.get_or_insert_with(Instant::now);
                return Ok(Delivery::Overflow);
            }
            other => queued(other)?,
        };
        if written {
            self.blocked = true;
        }
        Ok(Delivery::Queued)
    }

    /// Starts the close handshake with `code` and `reason`; false if the connection was
    /// already closing. The client's close reply then ends the connection as usual.
    pub(super) fn server_close(
        &mut self,
        code: u16,
        reason: &'static str,
    ) -> Result<bool, Finished> {
        if !self.ws.can_write() {
            return Ok(false);
        }
        let frame = CloseFrame {
            code: code.into(),
            reason: Utf8Bytes::from_static(reason),
        };
        self.blocked = queued(self.ws.close(Some(frame)))?;
        if !self.blocked {
            self.queued_blocked = 0;
        }
        Ok(true)
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
