//! What every connection of a run does: [`ConnConfig`] and the messages, mode, fan-out role and
//! heartbeat it is made of. Built once per run (by the plan), shared by a shard's connections;
//! what only a shard knows at run time (its TLS client, its epoch) travels in [`super::Ctx`].

use super::Micros;
use crate::proto::inspect::{ExpectPattern, LatencyField, TimeUnit};
use crate::proto::template::Template;
use crate::proto::ws::frame::OpCode;
use crate::proto::ws::handshake::RequestTemplate;
use std::sync::Arc;

/// A message payload with its frame type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The frame type of every send of it: `Text`, or `Binary` with `--binary`.
    pub opcode: OpCode,
    /// Payload bytes (empty when `template` renders each one).
    pub payload: Box<[u8]>,
    /// Rendered anew for every send (`{{seq}}`, `{{now_ms}}`, ...), if the text has any.
    pub template: Option<Arc<Template>>,
}

impl Message {
    /// A message whose payload is always the same.
    pub fn fixed(opcode: OpCode, payload: Box<[u8]>) -> Self {
        Self {
            opcode,
            payload,
            template: None,
        }
    }
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Open a WebSocket session and hold it until the run stops.
    Session,
    /// Connect, complete the TLS handshake (and the upgrade if `upgrade`), then close at once
    /// (with RST if `rst`, else close_notify / close frame); the backend starts the next one.
    Handshake {
        /// Also upgrade to WebSocket before closing.
        upgrade: bool,
        /// Close with RST instead of a graceful close.
        rst: bool,
    },
}

/// Fan-out role of a scenario's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fanout {
    /// Sends its rate-driven message (carrying `pub`, `seq` and `ts`) to a channel and
    /// expects no echo; every message sent is logged for the subscribers' loss accounting.
    Publisher,
    /// Receives the publishers' messages: one-way latency, loss, duplicates, reordering.
    Subscriber,
}

/// An application-level heartbeat: a message at an interval, answered by a matching reply.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// µs between heartbeats (`--heartbeat-interval`).
    pub interval: Micros,
    /// The heartbeat itself (`--heartbeat-message`, default `{"type":"ping"}`), templated like any
    /// message.
    pub message: Message,
    /// What a received message must match to answer the heartbeat (`--heartbeat-expect`, default
    /// `json:type=pong`).
    pub expect: ExpectPattern,
    /// An unanswered heartbeat ends the session as `heartbeat_timeout` after this long, µs.
    pub timeout: Micros,
}

/// The application protocol the sessions speak (`--protocol`), with its settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum App {
    /// Messages are the scenario's own bytes.
    #[default]
    Raw,
    /// Socket.IO v4 over Engine.IO v4: messages are emits (`["event", …]`).
    SocketIo {
        /// The namespace connected to (`/` or `/chat`).
        namespace: String,
        /// The CONNECT's auth object (`--init-payload`).
        auth: Option<String>,
        /// Rate-driven emits ask for an ack (`--ack`).
        ack: bool,
    },
    /// STOMP 1.2: messages are SENT to `destination`; `subscribe` lists the destinations
    /// subscribed on open.
    Stomp {
        /// CONNECT's host, login and heart-beat.
        client: crate::proto::app::stomp::Client,
        /// Where messages are sent.
        destination: Option<String>,
        /// Subscribed on open, each with a receipt.
        subscribe: Vec<String>,
        /// SENDs ask for a receipt (`--ack`).
        receipts: bool,
    },
    /// GraphQL over WebSocket (`graphql-transport-ws`): on-open messages are subscriptions,
    /// rate-driven ones operations answered by their first result.
    GraphqlWs {
        /// `connection_init`'s payload (`--init-payload`).
        init: Option<String>,
    },
}

impl App {
    /// Whether rate-driven messages ask for an acknowledgement.
    pub fn acks(&self) -> bool {
        matches!(
            self,
            Self::SocketIo { ack: true, .. } | Self::Stomp { receipts: true, .. }
        )
    }

    /// Its protocol.
    pub fn protocol(&self) -> crate::proto::app::Protocol {
        use crate::proto::app::Protocol;
        match self {
            Self::Raw => Protocol::Raw,
            Self::SocketIo { .. } => Protocol::SocketIo,
            Self::Stomp { .. } => Protocol::Stomp,
            Self::GraphqlWs { .. } => Protocol::GraphqlWs,
        }
    }
}

/// What every connection of a run does; shared (one per shard), never per connection, so its
/// size does not count towards the memory per connection.
///
/// [`ConnConfig::default`] is a plain echo-less session against `ws://localhost/`: the command
/// line's defaults for the timeouts (`--connect-timeout 10s`, `--close-wait 1s`,
/// `--timer-resolution 1ms`), UTF-8 validation on, and nothing sent, pinged, expected or
/// scanned. Build others with `ConnConfig { mode, message, .., ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Session or handshake cycles (default: session).
    pub mode: Mode,
    /// The pre-rendered upgrade request (default: `GET /` for host `localhost`).
    pub template: RequestTemplate,
    /// Budget for TCP connect + upgrade, µs (default 10 s).
    pub connect_timeout: Micros,
    /// Sent once right after the upgrade, in order (e.g. subscribe messages).
    pub on_open: Vec<Message>,
    /// Sent every `message_interval` and matched against echoes (`--message`; a publisher's is sent
    /// to its channel, not echoed); default `None`: nothing sent.
    pub message: Option<Message>,
    /// Rate-driven messages per connection before it stops sending (0: no limit).
    pub message_count: u64,
    /// Sent after `on_open` on a connection that replaces a lost one (resume a session).
    pub on_reconnect: Option<Message>,
    /// Fan-out role (`--role`); default `None`: neither publisher nor subscriber.
    pub fanout: Option<Fanout>,
    /// Fan-out channel (run-wide number of the channel's name): messages are owed to the
    /// subscribers of their own channel only.
    pub channel: u32,
    /// Application-level heartbeat (`--heartbeat-interval`); default `None`: no heartbeats.
    pub heartbeat: Option<Heartbeat>,
    /// Interval between rate-driven messages, µs; 0 = none.
    pub message_interval: Micros,
    /// Interval between WebSocket pings, µs (`--ping-interval`); default 0: no pings.
    pub ping_interval: Micros,
    /// A ping unanswered this long ends the session as `heartbeat_timeout`, µs; 0 = never.
    pub pong_timeout: Micros,
    /// One-way latency from a timestamp field of received messages (`--latency-from`,
    /// `--latency-unit`); default `None`: messages are not scanned.
    pub latency_from: Option<LatencyField>,
    /// The numeric field of received messages whose highest value a replacement resumes from
    /// (`{{last_seq}}` in `on_reconnect`; `--last-seq-field`); default `seq`. Fan-out
    /// subscribers resume from their deliveries' `seq`.
    pub last_seq_field: LatencyField,
    /// Reply expected after the on-open message, and how long to wait for it (µs).
    pub expect: Option<(ExpectPattern, Micros)>,
    /// Open model: a session ends (gracefully) this long after it opened, µs; 0 = never.
    pub session_lifetime: Micros,
    /// How long to wait for the server's close frame and FIN after ours, µs (default 1 s).
    pub close_wait: Micros,
    /// Validate UTF-8 of received text messages (default on).
    pub validate_utf8: bool,
    /// Largest size a compressed message may inflate to (`--max-message-size`); beyond it
    /// the connection fails (`message_too_big`) instead of allocating or scanning more.
    pub max_message_size: u64,
    /// Misbehave on purpose: answer no server ping once the session has been open this long,
    /// µs (`--no-pong` = 0, `--no-pong-after`); default `None`: every ping is answered.
    pub no_pong_after: Option<Micros>,
    /// Misbehave on purpose: stop reading the socket once the session has been open this
    /// long, µs (`--stop-reading-after`): the kernel's receive buffer fills and the server's
    /// sends back up. The connection then only notices a reset (or ends at the run's close
    /// wait). Default `None`: always read.
    pub stop_reading_after: Option<Micros>,
    /// Grid for scheduled sends, µs (0 behaves as 1: exact timers). Intended send times are
    /// rounded up to it, so all connections' sends due in one grid step go out in one
    /// wake-up, and, being stamped with the grid time, the batching adds no latency that the
    /// measurement would not see (default 1 ms).
    pub timer_resolution: Micros,
    /// Named messages with their own rate and reply rule (`[[scenario.message]]`).
    pub requests: Vec<super::rules::Request>,
    /// A request unanswered this long counts as unanswered, µs; 0 = only at the close.
    pub reply_timeout: Micros,
    /// Checks on received messages, counted pass/fail.
    pub checks: Vec<super::rules::Check>,
    /// Sequence tracking of server streams (`stream = { seq, key }`).
    pub stream: Option<super::rules::StreamRule>,
    /// The application protocol over the WebSocket session (default: raw).
    pub app: App,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Session,
            template: RequestTemplate::new("localhost", "/", &[], &[]),
            connect_timeout: 10_000_000,
            on_open: Vec::new(),
            message: None,
            message_count: 0,
            on_reconnect: None,
            fanout: None,
            channel: 0,
            heartbeat: None,
            message_interval: 0,
            ping_interval: 0,
            pong_timeout: 0,
            latency_from: None,
            last_seq_field: LatencyField::new("seq", TimeUnit::Micros),
            expect: None,
            session_lifetime: 0,
            close_wait: 1_000_000,
            validate_utf8: true,
            max_message_size: 16 << 20,
            no_pong_after: None,
            stop_reading_after: None,
            timer_resolution: 1_000,
            requests: Vec::new(),
            reply_timeout: 10_000_000,
            checks: Vec::new(),
            stream: None,
            app: App::Raw,
        }
    }
}

impl ConnConfig {
    /// Whether received messages are inspected whole (requests, checks or streams).
    pub fn inspects(&self) -> bool {
        !self.requests.is_empty() || !self.checks.is_empty() || self.stream.is_some()
    }

    /// `t` (µs) rounded up to a multiple of `timer_resolution`: the grid scheduled sends are due
    /// and stamped on.
    #[inline]
    pub fn on_grid(&self, t: Micros) -> Micros {
        let r = self.timer_resolution.max(1);
        t.div_ceil(r) * r
    }
}
