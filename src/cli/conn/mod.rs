//! The connection flags of `sockstorm run` and what they become: the connection behaviour of
//! a scenario ([`ConnConfig`]): the upgrade request, the messages (on open, rate-driven, on
//! reconnect, heartbeat), the replies expected, timers. A new connection option is a flag
//! and a line here, its field (with its default) in `proto::conn`'s config, and the code in
//! `proto::conn` that uses it; scenario files and the demo get it by its name.

mod app;
mod request;

use crate::plan::message::{load_message, templated, Resolver};
use crate::plan::{parse, PlanError, Url};
use crate::proto::conn::{App, ConnConfig, Fanout, Heartbeat, Message, Mode};
use crate::proto::inspect::{ExpectPattern, LatencyField, TimeUnit};
use crate::proto::ws::frame::OpCode;
use app::{app, check_app_message};
use clap::Args;
use request::request;
use std::time::Duration;

/// Flags of `sockstorm run` that say how each connection behaves.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Budget for TCP connect plus the WebSocket upgrade.
    #[arg(long, default_value = "10s", value_parser = parse::duration)]
    pub connect_timeout: Duration,
    /// How long to wait for the server's close reply after our close frame.
    #[arg(long, default_value = "1s", value_parser = parse::duration)]
    pub close_wait: Duration,
    /// Extra request header 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_parser = parse::header)]
    pub headers: Vec<(String, String)>,
    /// Subprotocol to offer in Sec-WebSocket-Protocol (repeatable).
    #[arg(long = "subprotocol")]
    pub subprotocols: Vec<String>,
    /// Message sent once when a connection opens (TEXT or @file), e.g. a subscribe;
    /// repeatable: sent in order.
    #[arg(long)]
    pub send_on_open: Vec<String>,
    /// Message sent at --message-rate per connection and matched to its echo (TEXT or @file).
    #[arg(long)]
    pub message: Option<String>,
    /// Messages per second per connection (requires --message); fractions allowed (0.2 = every 5 s).
    #[arg(long, default_value_t = 1.0)]
    pub message_rate: f64,
    /// Send messages as binary frames instead of text.
    #[arg(long)]
    pub binary: bool,
    /// Rate-driven messages per connection before it stops sending (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub message_count: u64,
    /// Messages per second across all connections (open model: the total stays the same
    /// whatever the replies do), instead of --message-rate per connection.
    #[arg(long, value_name = "R")]
    pub message_total_rate: Option<f64>,
    /// Message a replacement connection sends after --send-on-open, e.g.
    /// '{"action":"resume_session","lastSequence":{{last_seq}}}' ({{last_seq}}: the highest
    /// --last-seq-field (`seq`) the lost session received).
    #[arg(long, value_name = "TEXT|@file")]
    pub on_reconnect: Option<String>,
    /// The numeric field of received messages whose highest value `{{last_seq}}` gives
    /// (a JSON key, e.g. `sequence`; fan-out subscribers use their deliveries' `seq`).
    #[arg(long, value_name = "NAME", default_value = "seq")]
    pub last_seq_field: String,
    /// Fan-out role: `publisher` sends --message (default: a publish to --channel carrying
    /// pub, seq and ts) without expecting an echo; `subscriber` subscribes to --channel and
    /// measures delivery latency, loss, duplicates and reordering. Both in one run (a
    /// scenario file) give exact loss and broadcast completion.
    #[arg(long, value_enum, help_heading = "Fan-out")]
    pub role: Option<RoleArg>,
    /// Fan-out channel to publish to or subscribe to.
    #[arg(long, requires = "role", help_heading = "Fan-out")]
    pub channel: Option<String>,
    /// Application-level heartbeat: send --heartbeat-message at this interval and expect
    /// --heartbeat-expect within --heartbeat-timeout (else: heartbeat_timeout, session closed).
    #[arg(long, value_parser = parse::duration, help_heading = "Heartbeat")]
    pub heartbeat_interval: Option<Duration>,
    /// The heartbeat message.
    #[arg(long, default_value = r#"{"type":"ping"}"#, help_heading = "Heartbeat")]
    pub heartbeat_message: String,
    /// The reply that answers a heartbeat (json:KEY=VALUE or text:SUBSTRING).
    #[arg(long, default_value = "json:type=pong", value_parser = ExpectPattern::parse, help_heading = "Heartbeat")]
    pub heartbeat_expect: ExpectPattern,
    /// How long a heartbeat may go unanswered.
    #[arg(long, default_value = "10s", value_parser = parse::duration, help_heading = "Heartbeat")]
    pub heartbeat_timeout: Duration,
    /// Send a ping at this interval on every connection and record the pong RTT (e.g. 5s).
    #[arg(long, value_parser = parse::duration)]
    pub ping_interval: Option<Duration>,
    /// Close a session as `heartbeat_timeout` when a ping is unanswered this long (needs
    /// --ping-interval).
    #[arg(long, value_parser = parse::duration)]
    pub pong_timeout: Option<Duration>,
    /// One-way latency from a server timestamp in received messages: `json:FIELD` (its
    /// first numeric occurrence), recorded as ws_msg_latency.
    #[arg(long, value_name = "json:FIELD")]
    pub latency_from: Option<String>,
    /// Unit of the --latency-from timestamp (Unix epoch based); a fraction is read exactly
    /// in any unit (e.g. `1712345678.123456` with `s`).
    #[arg(long, value_enum, default_value_t = LatencyUnitArg::Ms)]
    pub latency_unit: LatencyUnitArg,
    /// Reply expected once a session opens (e.g. the ack of --send-on-open):
    /// `json:KEY=VALUE` or `text:SUBSTRING`; time to it is recorded as ws_subscribe_ack.
    #[arg(long, value_name = "PATTERN", value_parser = ExpectPattern::parse)]
    pub expect: Option<ExpectPattern>,
    /// How long to wait for the --expect reply before counting `expect_timeout`.
    #[arg(long, default_value = "5s", value_parser = parse::duration)]
    pub expect_timeout: Duration,
    /// Do not validate UTF-8 in received text messages.
    #[arg(long)]
    pub no_utf8_check: bool,
    /// Offer permessage-deflate (RFC 7692): `deflate`, or `deflate:` with any of
    /// client_no_context_takeover, server_no_context_takeover, client_max_window_bits=N,
    /// server_max_window_bits=N (comma-separated). Messages are compressed both ways when the
    /// server agrees; server_no_context_takeover is the low-memory choice (no window kept per
    /// idle connection).
    #[arg(long, value_name = "deflate[:PARAMS]", value_parser = crate::proto::ws::deflate::Offer::parse)]
    pub compression: Option<crate::proto::ws::deflate::Offer>,
    /// Largest size a compressed message may inflate to (e.g. 16MiB, 64k); beyond it the
    /// connection fails with `message_too_big`.
    #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = super::serve::parse_bytes)]
    pub max_message_size: usize,
    /// Misbehave on purpose: answer no server ping (as --no-pong-after 0); the server's
    /// keepalive then closes the session (often 1011), counted by code.
    #[arg(long, conflicts_with = "no_pong_after", help_heading = "Misbehave")]
    pub no_pong: bool,
    /// Misbehave on purpose: stop answering server pings this long into each session.
    #[arg(long, value_name = "D", value_parser = parse::duration, help_heading = "Misbehave")]
    pub no_pong_after: Option<Duration>,
    /// Misbehave on purpose: stop reading the socket this long into each session; the
    /// server's sends back up until it closes or resets the connection (a reset counts as
    /// `reset`, close code 1006).
    #[arg(long, value_name = "D", value_parser = parse::duration, help_heading = "Misbehave")]
    pub stop_reading_after: Option<Duration>,
    /// Grid for scheduled sends: messages due within one step go out together (fewer
    /// wake-ups), each stamped with its grid time. 0 = exact per-connection timers.
    #[arg(long, default_value = "1ms", value_parser = parse::duration)]
    pub timer_resolution: Duration,
    /// Named requests, reply rules, checks and streams.
    #[command(flatten)]
    pub rules: super::rules::RulesArgs,
    /// The application protocol over each session: `raw` (messages as given), `socketio`
    /// (Socket.IO v4: messages are emits, `["event", data]`), `stomp` (STOMP 1.2: messages
    /// are SENT to --destination), `graphql-ws` (graphql-transport-ws: --send-on-open
    /// messages are subscriptions, --message an operation answered by its first result).
    #[arg(long, value_enum, default_value_t = ProtocolArg::Raw, help_heading = "Application protocol")]
    pub protocol: ProtocolArg,
    /// Socket.IO: the namespace to connect to (e.g. /chat).
    #[arg(long, default_value = "/", help_heading = "Application protocol")]
    pub namespace: String,
    /// Socket.IO: the namespace CONNECT's auth object; graphql-ws: connection_init's
    /// payload (a JSON object; `{{token}}` and `{{env NAME}}` allowed).
    #[arg(long, value_name = "JSON", help_heading = "Application protocol")]
    pub init_payload: Option<String>,
    /// Ask for an acknowledgement of every --message: a Socket.IO ack, a STOMP receipt;
    /// the time to it is app_ack.
    #[arg(long, help_heading = "Application protocol")]
    pub ack: bool,
    /// STOMP: where messages are sent (default: --channel).
    #[arg(long, value_name = "DEST", help_heading = "Application protocol")]
    pub destination: Option<String>,
    /// STOMP: a destination subscribed to on open, with a receipt (repeatable; default for
    /// --role subscriber: --channel). The receipt's time is ws_subscribe_ack.
    #[arg(
        long = "subscribe",
        value_name = "DEST",
        help_heading = "Application protocol"
    )]
    pub subscribe: Vec<String>,
    /// STOMP: CONNECT's login and passcode, USER:PASSCODE (`{{env NAME}}` allowed; never
    /// written to reports).
    #[arg(
        long,
        value_name = "USER:PASSCODE",
        help_heading = "Application protocol"
    )]
    pub stomp_login: Option<String>,
    /// STOMP: CONNECT's host header (the virtual host).
    #[arg(long, default_value = "/", help_heading = "Application protocol")]
    pub stomp_host: String,
    /// STOMP: CONNECT's heart-beat, CX,CY in ms: we can send every CX, we want the
    /// broker's every CY (0: none); a broker silent for twice the agreed interval is dead
    /// (heartbeat_timeout).
    #[arg(
        long,
        value_name = "CX,CY",
        default_value = "10000,10000",
        help_heading = "Application protocol"
    )]
    pub stomp_heart_beat: String,
}

/// `--protocol` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolArg {
    /// Messages are the scenario's own bytes.
    Raw,
    /// Socket.IO v4 over Engine.IO v4, WebSocket transport.
    Socketio,
    /// STOMP 1.2 over WebSocket.
    Stomp,
    /// GraphQL over WebSocket, the graphql-transport-ws subprotocol.
    #[value(name = "graphql-ws")]
    GraphqlWs,
}

/// `--role` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// Sends sequence-numbered, timestamped messages to `--channel`, expecting no echo.
    Publisher,
    /// Subscribes to `--channel` and accounts for every message owed to it (loss,
    /// duplicates, order, delivery latency).
    Subscriber,
}

/// `--latency-unit` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LatencyUnitArg {
    /// Seconds since the Unix epoch, fractions read exactly (Python's `time.time()`).
    S,
    /// The timestamp counts milliseconds since the Unix epoch (JavaScript's `Date.now()`).
    Ms,
    /// Microseconds since the Unix epoch.
    Us,
    /// Nanoseconds since the Unix epoch.
    Ns,
}

/// What the connection config needs from the rest of the plan.
#[derive(Debug)]
pub(super) struct Load<'a> {
    /// The target URL (its host and path go into the upgrade request).
    pub(super) url: &'a Url,
    /// Template inputs of the upgrade request (`{{token}}`: the pre-step's or each
    /// connection's own).
    pub(super) request: Resolver<'a>,
    /// Template inputs of the messages (`{{token}}`: only the pre-step's).
    pub(super) messages: Resolver<'a>,
    /// Session or handshake cycles.
    pub(super) mode: Mode,
    /// Connections alive at once, over which `--message-total-rate` is shared.
    pub(super) alive: f64,
    /// Open model: how long each session lives.
    pub(super) session_lifetime: Option<Duration>,
}

/// Micros of a duration, for the config's timers.
fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl ConnArgs {
    /// The connection config, and the message rate per connection (0: no messages).
    pub(super) fn config(&self, load: &Load<'_>) -> Result<(ConnConfig, f64), PlanError> {
        config(self, load)
    }

    /// The texts sent as messages as given (before `@file`s are read), for the auth checks:
    /// `--send-on-open`, `--message` and `--on-reconnect`.
    pub(super) fn message_texts(&self) -> impl Iterator<Item = &str> {
        self.send_on_open
            .iter()
            .chain(&self.message)
            .chain(&self.on_reconnect)
            .map(String::as_str)
            .chain(self.rules.message_texts())
    }

    /// The checks of connection flags that stand alone: zero durations, timers, reserved
    /// headers, subprotocol tokens, pings and pongs.
    pub(super) fn check(&self) -> Result<(), PlanError> {
        let a = self;
        if a.connect_timeout.is_zero() {
            return Err(PlanError::invalid(
                "--connect-timeout",
                "must be longer than 0 (e.g. 10s)",
            ));
        }
        if let Some(hb) = a.heartbeat_interval {
            if hb < Duration::from_millis(1) || a.heartbeat_timeout.is_zero() {
                return Err(PlanError::invalid(
                    "--heartbeat-interval/--heartbeat-timeout",
                    "must be at least 1ms",
                ));
            }
        }
        if a.timer_resolution > Duration::from_millis(100) {
            return Err(PlanError::invalid(
                "--timer-resolution",
                "above 100ms it distorts the schedule; use 1ms (default) or 0 for exact timers",
            ));
        }
        if a.ping_interval
            .is_some_and(|p| p < Duration::from_millis(1))
        {
            return Err(PlanError::invalid(
                "--ping-interval",
                "must be at least 1ms",
            ));
        }
        check_headers(a)?;

        if a.pong_timeout.is_some() && a.ping_interval.is_none() {
            return Err(PlanError::invalid(
                "--pong-timeout",
                "needs --ping-interval (no pings, no pongs to wait for)",
            ));
        }
        if a.pong_timeout.is_some_and(|d| d.is_zero()) || a.expect_timeout.is_zero() {
            return Err(PlanError::invalid(
                "--pong-timeout/--expect-timeout",
                "must be longer than 0",
            ));
        }
        Ok(())
    }
}

/// Header names sockstorm sets itself, and subprotocols that are not RFC 7230 tokens.
fn check_headers(a: &ConnArgs) -> Result<(), PlanError> {
    for (name, _) in &a.headers {
        let reserved = [
            "host",
            "upgrade",
            "connection",
            "sec-websocket-key",
            "sec-websocket-version",
        ];
        if reserved.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(PlanError::invalid(
                "--header",
                format!("`{name}` is set by sockstorm itself and cannot be overridden"),
            ));
        }
    }
    for p in &a.subprotocols {
        // An RFC 7230 token: no separators (so no `{{...}}` either).
        if p.is_empty()
            || p.chars()
                .any(|c| !c.is_ascii_graphic() || "(),/:;<=>?@[\\]{}\"".contains(c))
        {
            return Err(PlanError::invalid(
                "--subprotocol",
                format!("`{p}` is not a valid token (no spaces, commas or other separators such as {{}} ; : / =)"),
            ));
        }
    }
    Ok(())
}

/// See [`ConnArgs::config`].
fn config(a: &ConnArgs, load: &Load<'_>) -> Result<(ConnConfig, f64), PlanError> {
    let opcode = if a.binary {
        OpCode::Binary
    } else {
        OpCode::Text
    };
    // Messages take a token only from the pre-step (one for the run); a connection's own
    // token goes in its upgrade request alone.
    let resolver = &load.messages;
    let (on_open, message, on_reconnect) = messages(a, opcode, resolver)?;
    let rate = message_rate(a, load, message.is_some())?;
    let rules = a.rules.rules(opcode, resolver)?;
    let heartbeat = match a.heartbeat_interval {
        None => None,
        Some(iv) => {
            let m = Message::fixed(opcode, a.heartbeat_message.as_bytes().into());
            Some(Heartbeat {
                interval: us(iv),
                message: templated("--heartbeat-message", m, resolver)?,
                expect: a.heartbeat_expect.clone(),
                timeout: us(a.heartbeat_timeout),
            })
        }
    };
    let app = app(a, resolver)?;
    if let (App::GraphqlWs { .. }, true) = (&app, rate > 0.0) {
        // An operation's id is its intended send time on the timer grid: one per grid step.
        let interval = (1e6 / rate).max(1.0) as u64;
        if interval < us(a.timer_resolution).max(1) {
            return Err(PlanError::invalid(
                "--message-rate",
                "with --protocol graphql-ws, at most one operation per --timer-resolution step per connection (lower the rate or the resolution)",
            ));
        }
    }
    for r in &rules.requests {
        if r.message.template.is_none() {
            check_app_message(a.protocol, "[[scenario.message]]", &r.message)?;
        }
    }
    if let App::Stomp {
        destination: None, ..
    } = &app
    {
        if message.is_some() || !on_open.is_empty() || !rules.requests.is_empty() {
            return Err(PlanError::invalid(
                "--destination",
                "with --protocol stomp, messages are SENT to a destination: give --destination /topic/NAME (or --channel with --role publisher)",
            ));
        }
    }
    let expect = match (&a.expect, a.role) {
        (Some(e), _) => Some(e.clone()),
        (None, Some(RoleArg::Subscriber))
            if a.send_on_open.is_empty() && a.protocol == ProtocolArg::Raw =>
        {
            Some(ExpectPattern::JsonEq {
                key: "type".into(),
                value: "subscribed".into(),
            })
        }
        _ => None,
    };
    let conn = ConnConfig {
        mode: load.mode,
        template: request(a, load.url, &load.request)?,
        connect_timeout: us(a.connect_timeout),
        on_open,
        message,
        message_count: a.message_count,
        on_reconnect,
        fanout: a.role.map(|r| match r {
            RoleArg::Publisher => Fanout::Publisher,
            RoleArg::Subscriber => Fanout::Subscriber,
        }),
        // Numbered across the run by `Run::new`.
        channel: 0,
        heartbeat,
        message_interval: if rate > 0.0 {
            (1e6 / rate).max(1.0) as u64
        } else {
            0
        },
        ping_interval: a.ping_interval.map_or(0, us),
        pong_timeout: a.pong_timeout.map_or(0, us),
        latency_from: latency_from(a)?,
        last_seq_field: LatencyField::new(
            json_key("--last-seq-field", &a.last_seq_field)?,
            TimeUnit::Micros,
        ),
        expect: expect.map(|p| (p, us(a.expect_timeout))),
        session_lifetime: load.session_lifetime.map_or(0, us),
        close_wait: us(a.close_wait),
        validate_utf8: !a.no_utf8_check,
        max_message_size: a.max_message_size as u64,
        no_pong_after: if a.no_pong {
            Some(0)
        } else {
            a.no_pong_after.map(us)
        },
        stop_reading_after: a.stop_reading_after.map(us),
        timer_resolution: us(a.timer_resolution),
        requests: rules.requests,
        reply_timeout: rules.reply_timeout,
        checks: rules.checks,
        stream: rules.stream,
        app,
    };
    Ok((conn, rate))
}

/// The messages on open, rate-driven and on reconnect, with the fan-out roles' defaults.
#[allow(clippy::type_complexity)] // reason: three named parts of one answer, destructured at once
fn messages(
    a: &ConnArgs,
    opcode: OpCode,
    r: &Resolver<'_>,
) -> Result<(Vec<Message>, Option<Message>, Option<Message>), PlanError> {
    let channel_json =
        || serde_json::to_string(a.channel.as_deref().unwrap_or_default()).unwrap_or_default();
    let needs_channel = match a.role {
        Some(RoleArg::Publisher) => a.message.is_none() || a.protocol == ProtocolArg::Stomp,
        Some(RoleArg::Subscriber) => a.send_on_open.is_empty() || a.protocol == ProtocolArg::Stomp,
        None => false,
    } && !(a.protocol == ProtocolArg::Stomp
        && (a.destination.is_some() || !a.subscribe.is_empty()));
    if needs_channel && a.channel.as_deref().is_none_or(str::is_empty) {
        return Err(PlanError::invalid(
            "--channel",
            "a publisher or subscriber needs a channel (or its own --message / --send-on-open)",
        ));
    }
    // STOMP subscribes with SUBSCRIBE frames (--subscribe, --channel), not a message; a
    // Socket.IO subscriber emits `subscribe` and a publisher `publish`.
    let default_open = (a.role == Some(RoleArg::Subscriber)
        && a.send_on_open.is_empty()
        && a.protocol != ProtocolArg::Stomp)
        .then(|| match a.protocol {
            ProtocolArg::Socketio => format!(r#"["subscribe",{{"channel":{}}}]"#, channel_json()),
            _ => format!(r#"{{"action":"subscribe","channel":{}}}"#, channel_json()),
        });
    let default_message = (a.role == Some(RoleArg::Publisher) && a.message.is_none()).then(|| {
        let fields = r#""pub":{{conn_id}},"seq":{{seq}},"ts":{{now_us}}"#;
        match a.protocol {
            ProtocolArg::Socketio => {
                format!(r#"["publish",{{"channel":{},{fields}}}]"#, channel_json())
            }
            ProtocolArg::Stomp => format!("{{{fields}}}"),
            _ => format!(
                r#"{{"action":"publish","channel":{},{fields}}}"#,
                channel_json()
            ),
        }
    });
    let on_open = a
        .send_on_open
        .iter()
        .cloned()
        .chain(default_open)
        .map(|s| load_message("--send-on-open", &s, opcode))
        .collect::<Result<Vec<_>, _>>()?;
    let message = a
        .message
        .clone()
        .or(default_message)
        .as_deref()
        .map(|s| load_message("--message", s, opcode))
        .transpose()?;
    let on_reconnect = a
        .on_reconnect
        .as_deref()
        .map(|s| load_message("--on-reconnect", s, opcode))
        .transpose()?;
    for m in &on_open {
        check_app_message(a.protocol, "--send-on-open", m)?;
    }
    for m in message.iter().chain(&on_reconnect) {
        check_app_message(a.protocol, "--message/--on-reconnect", m)?;
    }
    let on_open = on_open
        .into_iter()
        .map(|m| templated("--send-on-open", m, r))
        .collect::<Result<Vec<_>, _>>()?;
    let message = message.map(|m| templated("--message", m, r)).transpose()?;
    let on_reconnect = on_reconnect
        .map(|m| templated("--on-reconnect", m, r))
        .transpose()?;
    Ok((on_open, message, on_reconnect))
}

/// Messages per second per connection: `--message-rate`, or `--message-total-rate` shared
/// by the connections alive at once. 0 without a message.
fn message_rate(a: &ConnArgs, load: &Load, has_message: bool) -> Result<f64, PlanError> {
    // A total rate is the per-connection rate times the connections alive at once.
    let alive = load.alive;
    let rate = match a.message_total_rate {
        Some(_) if !has_message => {
            return Err(PlanError::invalid(
                "--message-total-rate",
                "needs --message (or --role publisher)",
            ))
        }
        Some(t) if !(t.is_finite() && t > 0.0) => {
            return Err(PlanError::invalid(
                "--message-total-rate",
                format!("must be a positive number of messages per second, got {t}"),
            ))
        }
        Some(t) => t / alive,
        None => a.message_rate,
    };
    if !has_message {
        return Ok(0.0);
    }
    if !(rate.is_finite() && rate > 0.0) {
        return Err(PlanError::invalid(
            "--message-rate",
            format!("must be a positive rate per connection, got {rate}"),
        ));
    }
    if rate < 0.001 {
        return Err(PlanError::invalid(
            "--message-rate",
            "must be at least 0.001 per second (one message per 1000 s)",
        ));
    }
    if rate > 100_000.0 {
        return Err(PlanError::invalid(
            "--message-rate",
            "is per connection; above 100000/s use more connections",
        ));
    }
    Ok(rate)
}

/// `--latency-from json:FIELD` with its unit.
fn latency_from(a: &ConnArgs) -> Result<Option<LatencyField>, PlanError> {
    let Some(spec) = a.latency_from.as_deref() else {
        return Ok(None);
    };
    let field = spec.strip_prefix("json:").filter(|f| usable_key(f));
    let Some(field) = field else {
        return Err(PlanError::invalid(
            "--latency-from",
            format!("`{spec}`: expected json:FIELD, e.g. json:server_ts"),
        ));
    };
    let unit = match a.latency_unit {
        LatencyUnitArg::S => TimeUnit::Seconds,
        LatencyUnitArg::Ms => TimeUnit::Millis,
        LatencyUnitArg::Us => TimeUnit::Micros,
        LatencyUnitArg::Ns => TimeUnit::Nanos,
    };
    Ok(Some(LatencyField::new(field, unit)))
}

/// Whether `key` can be looked for as a JSON key as written: not empty, no quote, backslash or
/// control character (it is matched as `"key"` in the raw text).
fn usable_key(key: &str) -> bool {
    !key.is_empty() && !key.contains(['"', '\\']) && key.chars().all(|c| !c.is_control())
}

/// A field name given to `flag`, checked by [`usable_key`].
fn json_key<'a>(flag: &'static str, key: &'a str) -> Result<&'a str, PlanError> {
    if usable_key(key) {
        Ok(key)
    } else {
        Err(PlanError::invalid(
            flag,
            format!("`{key}`: expected a JSON key without quotes or backslashes, e.g. sequence"),
        ))
    }
}
