//! One client connection of the gateway through its phases: TLS, the request head (read and
//! routed in `request.rs`, which also writes the plain HTTP answers: the demo auth endpoint,
//! fault-injection refusals), the upgrade handshake, and the open WebSocket (echo, commands,
//! channel and fan-out deliveries).
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
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use rustls::ServerConfig;
use serde_json::Value;
use tungstenite::error::ProtocolError;
use tungstenite::handshake::server::ServerHandshake;
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
use super::request::{AnswerConn, Extensions, RequestConn};
use super::stream::ServerStream;
use super::tls::{Accept, TlsStream};
use super::{RequestLog, ThreadStats};
use crate::proto::ws::deflate::Offer;

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
