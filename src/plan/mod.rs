//! What to do: command-line flags turned into a validated [`RunPlan`]. Every user-input error
//! of a run is found here, before any connection starts, and names the flag and the fix.

pub mod auth;
pub mod file;
pub mod parse;
pub mod tls;

use crate::engine::reconnect::{Policy, Storm};
use crate::engine::stages::{Stage, Stages};
use crate::metrics::threshold::Threshold;
use crate::metrics::ShardStats;
use crate::proto::conn::{Fanout, Heartbeat, Message, Mode};
use crate::proto::inspect::{ExpectPattern, LatencyField, TimeUnit};
use crate::proto::template::{Resolve, Template};
use crate::proto::tls::TlsSettings;
use crate::proto::ws::frame::OpCode;
use clap::Args;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tls::TlsArgs;

/// Errors in user input; each says what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The URL does not parse.
    #[error("invalid URL `{url}`: {reason} (expected ws://host[:port][/path] or wss://...)")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A scenario file is wrong at this place (`FILE:LINE:COLUMN`).
    #[error("{at}: {reason}")]
    Scenario {
        /// Where: `FILE:LINE:COLUMN`.
        at: String,
        /// What is wrong and the fix.
        reason: String,
    },
    /// The auth pre-step failed (the run does not start).
    #[error("auth pre-step: {0}")]
    Auth(String),
    /// A certificate or key file cannot be used.
    #[error(transparent)]
    Cert(#[from] crate::certs::CertError),
    /// The host name does not resolve.
    #[error("cannot resolve `{host}`: {reason} (check the host name, or use an IP address)")]
    Resolve {
        /// Host name.
        host: String,
        /// Resolver error.
        reason: String,
    },
    /// A flag value is out of range or inconsistent with another.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong and the fix.
        reason: String,
    },
    /// A `@file` argument cannot be read.
    #[error("{flag}: cannot read `{path}`: {reason}")]
    File {
        /// The flag.
        flag: &'static str,
        /// Path given.
        path: PathBuf,
        /// OS error.
        reason: String,
    },
}

/// Flags of `sockstorm run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Target WebSocket URL, e.g. ws://127.0.0.1:8080/ws or wss://host/ws, or a scenario
    /// file (FILE.toml, see examples/) whose settings the other flags override.
    #[arg(value_name = "URL|FILE.toml")]
    pub url: String,
    /// With a scenario file: the target instead of the file's `url` (scenarios keep their
    /// paths unless this URL has one).
    #[arg(long = "url", value_name = "URL")]
    pub target_url: Option<String>,
    /// Scenario name for `{{scenario}}` (set by the scenario file).
    #[arg(skip)]
    pub scenario: Option<String>,
    /// Directory relative paths in templates are read from (the scenario file's).
    #[arg(skip)]
    pub base_dir: Option<PathBuf>,
    /// Connections to open and hold (session mode).
    #[arg(short = 'c', long, default_value_t = 100)]
    pub connections: u64,
    /// New connections per second across all shards (planned centrally, split per shard).
    /// Default 2000 in session mode; unlimited in handshake mode.
    #[arg(long)]
    pub connect_rate: Option<f64>,
    /// `session`: open and hold WebSocket sessions; `handshake`: repeat connect → TLS
    /// handshake [→ upgrade] → close, to measure handshake throughput.
    #[arg(long, value_enum, default_value_t = ModeArg::Session)]
    pub mode: ModeArg,
    /// Handshake mode: connections in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u64,
    /// Handshake mode: also upgrade to WebSocket before closing.
    #[arg(long)]
    pub upgrade: bool,
    /// Handshake mode: close with `rst` (SO_LINGER 0, no TIME_WAIT) or `fin` (close_notify or
    /// close frame, then FIN).
    #[arg(long, value_enum, default_value_t = CloseArg::Rst)]
    pub close: CloseArg,
    /// k6-style stages: the open-connection count ramps linearly to each TARGET over its
    /// DURATION, e.g. 2m:5000,5m:5000,1m:0 (ramp-down closes gracefully). Sets the run
    /// length (-d) and the connection count (-c, the largest target); openings are paced by
    /// --connect-rate, and a ramp faster than that is reported as lag.
    #[arg(long, value_parser = crate::engine::stages::parse_flag)]
    pub stages: Option<Stages>,
    /// Open model: start new sessions at this rate (per second) for the whole run, each
    /// living --session-lifetime, whatever happens to the others (churn). Replaces -c.
    #[arg(long, requires = "session_lifetime")]
    pub arrival_rate: Option<f64>,
    /// Open model: how long each session lives before it closes gracefully.
    #[arg(long, requires = "arrival_rate", value_parser = parse::duration)]
    pub session_lifetime: Option<Duration>,
    /// Run length from the start (ramp included), e.g. 30s, 5m, 1h30m.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse::duration)]
    pub duration: Duration,
    /// Budget for TCP connect plus the WebSocket upgrade.
    #[arg(long, default_value = "10s", value_parser = parse::duration)]
    pub connect_timeout: Duration,
    /// After the run, how long replies in flight are awaited before closing.
    #[arg(long, default_value = "2s", value_parser = parse::duration)]
    pub drain: Duration,
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
    /// `seq` field the lost session received).
    #[arg(long, value_name = "TEXT|@file")]
    pub on_reconnect: Option<String>,
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
    /// Unit of the --latency-from timestamp (Unix epoch based).
    #[arg(long, value_enum, default_value_t = LatencyUnitArg::Ms)]
    pub latency_unit: LatencyUnitArg,
    /// Reply expected once a session opens (e.g. the ack of --send-on-open):
    /// `json:KEY=VALUE` or `text:SUBSTRING`; time to it is recorded as ws_subscribe_ack.
    #[arg(long, value_name = "PATTERN", value_parser = ExpectPattern::parse)]
    pub expect: Option<ExpectPattern>,
    /// How long to wait for the --expect reply before counting `expect_timeout`.
    #[arg(long, default_value = "5s", value_parser = parse::duration)]
    pub expect_timeout: Duration,
    /// Do not replace failed or server-closed connections.
    #[arg(long)]
    pub no_reconnect: bool,
    /// When replacements open: `rate` (queued at --connect-rate), `immediate`, `fixed:DUR`,
    /// or `exponential:BASE:MAX[:full|decorrelated]` (per-connection backoff with jitter).
    #[arg(long, default_value = "rate", value_parser = Policy::parse)]
    pub reconnect_policy: Policy,
    /// Reconnect storm: at this time from the start, drop --storm-fraction of the open
    /// sessions, which then come back by --reconnect-policy; recovery is reported.
    #[arg(long, value_parser = parse::duration)]
    pub storm_at: Option<Duration>,
    /// Repeat the storm at this interval after --storm-at (default: once).
    #[arg(long, requires = "storm_at", value_parser = parse::duration)]
    pub storm_every: Option<Duration>,
    /// Share of open sessions the storm drops (0..1).
    #[arg(long, default_value_t = 0.5)]
    pub storm_fraction: f64,
    /// How the storm drops them: `rst` (abrupt) or `graceful` (close handshake).
    #[arg(long, value_enum, default_value_t = StormCloseArg::Rst)]
    pub storm_close: StormCloseArg,
    /// CPUs to run shards on: list and ranges, e.g. 0,2-3 (default: all).
    #[arg(long, value_parser = parse::cpu_list)]
    pub cpus: Option<parse::CpuList>,
    /// Source addresses to rotate: list, range (127.0.0.1-127.0.0.32) or CIDR (127.0.0.0/27).
    #[arg(long, value_parser = parse::source_ips)]
    pub source_ip: Option<parse::IpList>,
    /// Close sockets with RST (SO_LINGER 0) to leave no TIME_WAIT behind.
    #[arg(long)]
    pub linger_zero: bool,
    /// Do not validate UTF-8 in received text messages.
    #[arg(long)]
    pub no_utf8_check: bool,
    /// Grid for scheduled sends: messages due within one step go out together (fewer
    /// wake-ups), each stamped with its grid time. 0 = exact per-connection timers.
    #[arg(long, default_value = "1ms", value_parser = parse::duration)]
    pub timer_resolution: Duration,
    /// How client sockets are made: `auto` (in the io_uring ring when the kernel has it,
    /// 6.11+) or `syscalls` (socket/setsockopt/bind, then installed in the ring).
    #[arg(long, value_enum, default_value_t = SocketSetupArg::Auto)]
    pub socket_setup: SocketSetupArg,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No live progress line on stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Auth pre-step: request this http(s) URL before the storm; the token in its JSON answer
    /// replaces `{{token}}` in -H values, the URL and messages (it never appears in reports).
    #[arg(long, help_heading = "Auth pre-step")]
    pub auth_url: Option<String>,
    /// JSON body of the auth request (TEXT or @file); POST when given, GET otherwise.
    #[arg(long, help_heading = "Auth pre-step")]
    pub auth_body: Option<String>,
    /// Header of the auth request 'Name: value' (repeatable).
    #[arg(long = "auth-header", value_parser = parse::header, help_heading = "Auth pre-step")]
    pub auth_headers: Vec<(String, String)>,
    /// Where the token is in the JSON answer, dot-separated (e.g. data.access_token).
    #[arg(long, default_value = "token", help_heading = "Auth pre-step")]
    pub auth_token_field: String,
    /// One auth request per connection (each gets its own token, in its upgrade request),
    /// made at --auth-rate in the background; openings wait for tokens. The body may use
    /// {{conn_id}} (the request's number) and {{line FILE}} (e.g. one user per line).
    #[arg(long, requires = "auth_url", help_heading = "Auth pre-step")]
    pub auth_per_connection: bool,
    /// --auth-per-connection: auth requests per second at most.
    #[arg(long, default_value_t = 100.0, help_heading = "Auth pre-step")]
    pub auth_rate: f64,
    /// Pass/fail criterion on the results, repeatable, e.g. 'ws_connecting: p(95)<200ms',
    /// 'connect_errors: rate<0.1%', 'msgs_received: count>0'. Any failing: exit code 99.
    #[arg(long = "threshold", value_name = "EXPR", value_parser = parse_threshold)]
    pub thresholds: Vec<Threshold>,
    /// Stop the run early (gracefully, results kept, exit 99) once a --threshold with data
    /// fails, checked every second from this time on (e.g. 10s: let the ramp settle first).
    #[arg(long, value_name = "DELAY", value_parser = parse::duration)]
    pub abort_on_fail: Option<Duration>,
    /// TLS settings.
    #[command(flatten)]
    pub tls: TlsArgs,
}

fn parse_threshold(s: &str) -> Result<Threshold, String> {
    Threshold::parse(s).map_err(|e| e.reason)
}

/// `--role` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// Publishes to the channel.
    Publisher,
    /// Subscribes to the channel.
    Subscriber,
}

/// `--storm-close` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StormCloseArg {
    /// RST, no close frame.
    Rst,
    /// Close frame 1000, then FIN.
    Graceful,
}

/// `--latency-unit` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LatencyUnitArg {
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Hold WebSocket sessions.
    Session,
    /// Repeat handshakes.
    Handshake,
}

/// `--close` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloseArg {
    /// SO_LINGER 0.
    Rst,
    /// Graceful.
    Fin,
}

/// `--socket-setup` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SocketSetupArg {
    /// In the ring when the kernel supports it.
    Auto,
    /// With syscalls.
    Syscalls,
}

/// A parsed ws:// or wss:// URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// wss://.
    pub tls: bool,
    /// Host as written (name or address).
    pub host: String,
    /// Port (default 80, or 443 for wss://).
    pub port: u16,
    /// Path and query, at least "/".
    pub path: String,
}

impl Url {
    /// The Host header value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl Url {
    fn default_port(&self) -> u16 {
        if self.tls {
            443
        } else {
            80
        }
    }
}

/// Parses `ws://host[:port][/path]` and `wss://...`.
pub fn parse_url(url: &str) -> Result<Url, PlanError> {
    let bad = |reason: &str| PlanError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("missing scheme"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "ws" => false,
        "wss" => true,
        _ => return Err(bad(&format!("unsupported scheme `{scheme}`"))),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    if authority.contains('@') {
        return Err(bad(
            "credentials in the URL are not supported; pass them with -H",
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed `[` in IPv6 host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad("garbage after IPv6 host")),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("whitespace in host"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("whitespace in path (percent-encode it)"));
    }
    let port = match port {
        None if tls => 443,
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad(&format!("invalid port `{p}`")))?,
    };
    Ok(Url {
        tls,
        host,
        port,
        path,
    })
}

/// A whole run: one or more scenarios run together against one target. Run-wide settings
/// (target, TLS, CPUs, sources, drain, output) are the first scenario's.
#[derive(Debug, Clone)]
pub struct Run {
    /// The scenarios, in file order (one for a command-line run).
    pub scenarios: Vec<RunPlan>,
    /// Pass/fail criteria, overall or tagged with a scenario.
    pub thresholds: Vec<Threshold>,
    /// Check thresholds during the run from this time on, and stop at the first failure.
    pub abort_on_fail: Option<Duration>,
}

impl Run {
    /// A run of one scenario (the command line without a scenario file).
    pub fn single(mut plan: RunPlan) -> Result<Self, PlanError> {
        if let Some(t) = plan
            .thresholds
            .iter()
            .find(|t| t.scenario.as_deref().is_some_and(|s| s != plan.name))
        {
            return Err(PlanError::Invalid {
                flag: "--threshold",
                reason: format!(
                    "`{}`: scenario tags need a scenario file; on the command line the one scenario is `{}`",
                    t.expr, plan.name
                ),
            });
        }
        Ok(Self {
            thresholds: std::mem::take(&mut plan.thresholds),
            abort_on_fail: plan.abort_on_fail,
            scenarios: vec![plan],
        })
    }

    /// The first scenario, which carries the run-wide settings.
    pub fn main(&self) -> &RunPlan {
        &self.scenarios[0]
    }

    /// Connections of all scenarios.
    pub fn connections(&self) -> u64 {
        self.scenarios.iter().map(|p| p.connections).sum()
    }

    /// Run length: the longest scenario (its start included).
    pub fn duration(&self) -> Duration {
        self.scenarios
            .iter()
            .map(|p| p.duration)
            .max()
            .unwrap_or_default()
    }

    /// Whether the run has more than one scenario.
    pub fn is_multi(&self) -> bool {
        self.scenarios.len() > 1
    }

    /// The statistics threshold `t` is evaluated on: its scenario's, or the overall ones.
    pub fn stats_for<'a>(
        &self,
        t: &Threshold,
        total: &'a ShardStats,
        per_scenario: &[&'a ShardStats],
    ) -> &'a ShardStats {
        t.scenario
            .as_deref()
            .and_then(|name| self.scenarios.iter().position(|p| p.name == name))
            .and_then(|k| per_scenario.get(k).copied())
            .unwrap_or(total)
    }
}

/// A validated scenario: everything the engine needs for its connections.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Scenario name (its tag in reports and thresholds); `default` on the command line.
    pub name: String,
    /// Delay from the run's start to the scenario's first connection.
    pub start: Duration,
    /// The URL as given.
    pub url_text: String,
    /// Parsed URL.
    pub url: Url,
    /// Resolved target.
    pub target: SocketAddr,
    /// Connections to hold (session mode) or in flight (handshake mode).
    pub connections: u64,
    /// Connections per second overall (infinite: as fast as possible).
    pub connect_rate: f64,
    /// Session or handshake cycles.
    pub mode: Mode,
    /// TLS settings for wss://.
    pub tls: Option<Arc<TlsSettings>>,
    /// Pass/fail criteria evaluated at the end.
    pub thresholds: Vec<Threshold>,
    /// Whether a token came from an auth pre-step.
    pub auth: bool,
    /// Per-connection auth: each connection's own token, fetched at a bounded rate.
    pub auth_pool: Option<Arc<AuthPool>>,
    /// Check thresholds during the run from this time on, and stop at the first failure.
    pub abort_on_fail: Option<Duration>,
    /// Pong deadline after a ping.
    pub pong_timeout: Option<Duration>,
    /// Server timestamp field for one-way latency.
    pub latency_from: Option<LatencyField>,
    /// Reply expected after open.
    pub expect: Option<ExpectPattern>,
    /// Wait for the expected reply.
    pub expect_timeout: Duration,
    /// Run length.
    pub duration: Duration,
    /// Connect + upgrade budget.
    pub connect_timeout: Duration,
    /// Drain time at the end.
    pub drain: Duration,
    /// Close-handshake wait.
    pub close_wait: Duration,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Offered subprotocols.
    pub subprotocols: Vec<String>,
    /// Messages on open, in order.
    pub on_open: Vec<Message>,
    /// Rate-driven message.
    pub message: Option<Message>,
    /// Rate-driven messages per connection (0: no limit).
    pub message_count: u64,
    /// Sent by replacement connections after `on_open`.
    pub on_reconnect: Option<Message>,
    /// Fan-out role.
    pub fanout: Option<Fanout>,
    /// Fan-out channel.
    pub channel: Option<String>,
    /// Application-level heartbeat.
    pub heartbeat: Option<Heartbeat>,
    /// Messages per second per connection (0 = none).
    pub message_rate: f64,
    /// Ping interval.
    pub ping_interval: Option<Duration>,
    /// Hold the count by reconnecting.
    pub reconnect: bool,
    /// When replacements open.
    pub policy: Policy,
    /// Reconnect storm.
    pub storm: Option<Storm>,
    /// Stages (empty: hold `connections` for `duration`).
    pub stages: Vec<Stage>,
    /// Open model: the lifetime of each session (the rate is `connect_rate`).
    pub session_lifetime: Option<Duration>,
    /// CPUs for shards.
    pub cpus: Vec<usize>,
    /// Source addresses to rotate (empty: kernel's choice).
    pub source_ips: Vec<IpAddr>,
    /// Whether the source addresses were chosen automatically (loopback spreading).
    pub source_ips_auto: bool,
    /// RST on close.
    pub linger_zero: bool,
    /// UTF-8 validation of received text.
    pub validate_utf8: bool,
    /// Send-schedule grid.
    pub timer_resolution: Duration,
    /// How sockets are made.
    pub socket_setup: SocketSetupArg,
    /// JSON output path.
    pub json: Option<PathBuf>,
    /// Suppress progress.
    pub quiet: bool,
}

/// Ports one source address should use towards one destination before we spread over more
/// loopback addresses: the kernel's port search slows sharply as a range fills up.
pub const PORTS_PER_SOURCE: u64 = 2000;

impl RunPlan {
    /// Validates flags and resolves the target.
    pub fn from_args(a: &RunArgs) -> Result<Self, PlanError> {
        if a.target_url.is_some() {
            return Err(PlanError::Invalid {
                flag: "--url",
                reason: "is for scenario files (sockstorm run FILE.toml --url URL); give the URL itself instead".into(),
            });
        }
        let url = parse_url(&a.url)?;
        let target = resolve(&url)?;
        let inv = |flag: &'static str, reason: String| PlanError::Invalid { flag, reason };
        let handshake = a.mode == ModeArg::Handshake;
        let stages = a.stages.clone().map(|s| s.0).unwrap_or_default();
        if handshake && !stages.is_empty() {
            return Err(inv("--stages", "applies to session mode".into()));
        }
        if !stages.is_empty() && stages.iter().all(|s| s.target == 0) {
            return Err(inv(
                "--stages",
                "every target is 0: no connection would open".into(),
            ));
        }
        let (connections, mode) = if handshake {
            if a.concurrency == 0 {
                return Err(inv("--concurrency", "must be at least 1".into()));
            }
            if !url.tls && !a.upgrade {
                return Err(inv(
                    "--mode",
                    "handshake mode on a ws:// URL has nothing to handshake: use wss:// or add --upgrade".into(),
                ));
            }
            let mode = Mode::Handshake {
                upgrade: a.upgrade,
                rst: a.close == CloseArg::Rst,
            };
            (a.concurrency, mode)
        } else {
            for (given, flag) in [
                (a.upgrade, "--upgrade"),
                (a.close != CloseArg::Rst, "--close"),
                (a.concurrency != 64, "--concurrency"),
            ] {
                if given {
                    return Err(inv(flag, "only applies with --mode handshake".into()));
                }
            }
            let n = stages
                .iter()
                .map(|s| s.target)
                .max()
                .unwrap_or(a.connections);
            (n, Mode::Session)
        };
        // Open model: arrivals at a rate, each living a lifetime; capacity for those alive at
        // once (rate × lifetime, with room for arrivals bunching and slow closes).
        let (connections, arrival_rate) = match (a.arrival_rate, a.session_lifetime) {
            (Some(r), Some(life)) => {
                if handshake || !stages.is_empty() {
                    return Err(inv(
                        "--arrival-rate",
                        "is its own load shape: not with --mode handshake or --stages".into(),
                    ));
                }
                if !(r.is_finite() && r > 0.0) {
                    return Err(inv(
                        "--arrival-rate",
                        format!("must be a positive number of sessions per second, got {r}"),
                    ));
                }
                if life.is_zero() {
                    return Err(inv("--session-lifetime", "must be longer than 0".into()));
                }
                let alive = r * (life + a.close_wait).as_secs_f64();
                ((alive * 1.25).ceil() as u64 + 64, Some(r))
            }
            _ => (connections, None),
        };
        let duration = if stages.is_empty() {
            a.duration
        } else {
            stages.iter().map(|s| s.duration).sum()
        };
        if connections == 0 {
            return Err(inv("--connections", "must be at least 1".into()));
        }
        let connect_rate = match arrival_rate.or(a.connect_rate) {
            Some(r) if !(r.is_finite() && r > 0.0) => {
                return Err(inv(
                    "--connect-rate",
                    format!("must be a positive number of connections per second, got {r}"),
                ))
            }
            Some(r) => r,
            None if handshake => f64::INFINITY,
            None => 2000.0,
        };
        if !url.tls {
            if let Some(flag) = a.tls.given() {
                return Err(inv(flag, "only applies to wss:// URLs".into()));
            }
        }
        if a.duration.is_zero() {
            return Err(inv("--duration", "must be longer than 0 (e.g. 30s)".into()));
        }
        if a.connect_timeout.is_zero() {
            return Err(inv(
                "--connect-timeout",
                "must be longer than 0 (e.g. 10s)".into(),
            ));
        }
        let opcode = if a.binary {
            OpCode::Binary
        } else {
            OpCode::Text
        };
        let channel_json =
            || serde_json::to_string(a.channel.as_deref().unwrap_or_default()).unwrap_or_default();
        let needs_channel = match a.role {
            Some(RoleArg::Publisher) => a.message.is_none(),
            Some(RoleArg::Subscriber) => a.send_on_open.is_empty(),
            None => false,
        };
        if needs_channel && a.channel.as_deref().is_none_or(str::is_empty) {
            return Err(inv(
                "--channel",
                "a publisher or subscriber needs a channel (or its own --message / --send-on-open)"
                    .into(),
            ));
        }
        let default_open = (a.role == Some(RoleArg::Subscriber) && a.send_on_open.is_empty())
            .then(|| format!(r#"{{"action":"subscribe","channel":{}}}"#, channel_json()));
        let default_message = (a.role == Some(RoleArg::Publisher) && a.message.is_none())
            .then(|| {
                format!(
                    r#"{{"action":"publish","channel":{},"pub":{{{{conn_id}}}},"seq":{{{{seq}}}},"ts":{{{{now_us}}}}}}"#,
                    channel_json()
                )
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
        let expect = match (&a.expect, a.role) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(RoleArg::Subscriber)) if a.send_on_open.is_empty() => {
                Some(ExpectPattern::JsonEq {
                    key: "type".into(),
                    value: "subscribed".into(),
                })
            }
            _ => None,
        };
        if let Some(hb) = a.heartbeat_interval {
            if hb < Duration::from_millis(1) || a.heartbeat_timeout.is_zero() {
                return Err(inv(
                    "--heartbeat-interval/--heartbeat-timeout",
                    "must be at least 1ms".into(),
                ));
            }
        }
        // A total rate is the per-connection rate times the connections alive at once.
        let alive = match (arrival_rate, a.session_lifetime) {
            (Some(r), Some(life)) => (r * life.as_secs_f64()).max(1.0),
            _ => connections as f64,
        };
        let message_rate = match a.message_total_rate {
            Some(_) if message.is_none() => {
                return Err(inv(
                    "--message-total-rate",
                    "needs --message (or --role publisher)".into(),
                ))
            }
            Some(t) if !(t.is_finite() && t > 0.0) => {
                return Err(inv(
                    "--message-total-rate",
                    format!("must be a positive number of messages per second, got {t}"),
                ))
            }
            Some(t) => t / alive,
            None => a.message_rate,
        };
        if message.is_some() && !(message_rate.is_finite() && message_rate > 0.0) {
            return Err(inv(
                "--message-rate",
                format!(
                    "must be a positive rate per connection, got {}",
                    message_rate
                ),
            ));
        }
        if message.is_some() && message_rate < 0.001 {
            return Err(inv(
                "--message-rate",
                "must be at least 0.001 per second (one message per 1000 s)".into(),
            ));
        }
        if message.is_some() && message_rate > 100_000.0 {
            return Err(inv(
                "--message-rate",
                "is per connection; above 100000/s use more connections".into(),
            ));
        }
        if a.timer_resolution > Duration::from_millis(100) {
            return Err(inv(
                "--timer-resolution",
                "above 100ms it distorts the schedule; use 1ms (default) or 0 for exact timers"
                    .into(),
            ));
        }
        if let Some(p) = a.ping_interval {
            if p < Duration::from_millis(1) {
                return Err(inv("--ping-interval", "must be at least 1ms".into()));
            }
        }
        for (name, _) in &a.headers {
            if [
                "host",
                "upgrade",
                "connection",
                "sec-websocket-key",
                "sec-websocket-version",
            ]
            .contains(&name.to_ascii_lowercase().as_str())
            {
                return Err(inv(
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
                return Err(inv(
                    "--subprotocol",
                    format!("`{p}` is not a valid token (no spaces, commas or other separators such as {{}} ; : / =)"),
                ));
            }
        }
        let available = available_cpus();
        let cpus = match &a.cpus {
            Some(parse::CpuList(list)) => {
                if let Some(c) = list.iter().find(|c| !available.contains(c)) {
                    return Err(inv(
                        "--cpus",
                        format!(
                            "CPU {c} is not available to this process (available: {available:?})"
                        ),
                    ));
                }
                list.clone()
            }
            None => available,
        };
        let (source_ips, auto) = match &a.source_ip {
            Some(parse::IpList(ips)) => {
                if let Some(ip) = ips.iter().find(|ip| ip.is_ipv4() != target.is_ipv4()) {
                    return Err(inv(
                        "--source-ip",
                        format!(
                            "{ip} is not the same address family as the target {}",
                            target.ip()
                        ),
                    ));
                }
                (ips.clone(), false)
            }
            None => (auto_sources(target.ip(), connections), true),
        };
        if a.pong_timeout.is_some() && a.ping_interval.is_none() {
            return Err(inv(
                "--pong-timeout",
                "needs --ping-interval (no pings, no pongs to wait for)".into(),
            ));
        }
        if a.pong_timeout.is_some_and(|d| d.is_zero()) || a.expect_timeout.is_zero() {
            return Err(inv(
                "--pong-timeout/--expect-timeout",
                "must be longer than 0".into(),
            ));
        }
        let latency_from = match a.latency_from.as_deref() {
            None => None,
            Some(spec) => {
                let field = spec.strip_prefix("json:").filter(|f| {
                    !f.is_empty() && !f.contains(['"', '\\']) && f.chars().all(|c| !c.is_control())
                });
                let Some(field) = field else {
                    return Err(inv(
                        "--latency-from",
                        format!("`{spec}`: expected json:FIELD, e.g. json:server_ts"),
                    ));
                };
                let unit = match a.latency_unit {
                    LatencyUnitArg::Ms => TimeUnit::Millis,
                    LatencyUnitArg::Us => TimeUnit::Micros,
                    LatencyUnitArg::Ns => TimeUnit::Nanos,
                };
                Some(LatencyField::new(field, unit))
            }
        };
        let storm = match a.storm_at {
            None => None,
            Some(_) if handshake || arrival_rate.is_some() || !stages.is_empty() => {
                return Err(inv(
                    "--storm-at",
                    "recovery is measured against a fixed connection count: not with --mode handshake, --arrival-rate or --stages".into(),
                ))
            }
            Some(at) if at >= duration => {
                return Err(inv(
                    "--storm-at",
                    format!("{at:?} is not within the run (-d {:?})", duration),
                ))
            }
            Some(at) => {
                if !(a.storm_fraction > 0.0 && a.storm_fraction <= 1.0) {
                    return Err(inv(
                        "--storm-fraction",
                        format!("must be in (0, 1], got {}", a.storm_fraction),
                    ));
                }
                if a.storm_every.is_some_and(|e| e.is_zero()) {
                    return Err(inv("--storm-every", "must be longer than 0".into()));
                }
                Some(Storm {
                    at: at.as_micros() as u64,
                    fraction: a.storm_fraction,
                    rst: a.storm_close == StormCloseArg::Rst,
                    every: a.storm_every.map_or(0, |e| e.as_micros() as u64),
                })
            }
        };
        if a.abort_on_fail.is_some() && a.thresholds.is_empty() {
            return Err(inv(
                "--abort-on-fail",
                "needs at least one --threshold to check".into(),
            ));
        }
        let spec = auth_spec(a)?;
        if a.auth_per_connection
            && a.send_on_open
                .iter()
                .chain(&a.message)
                .chain(&a.on_reconnect)
                .any(|m| m.contains(auth::TOKEN))
        {
            return Err(inv(
                "--auth-per-connection",
                "each connection's token goes in its upgrade request only: use {{token}} in -H values or the URL, not in messages".into(),
            ));
        }
        if a.auth_per_connection && !(a.auth_rate.is_finite() && a.auth_rate >= 0.001) {
            return Err(inv(
                "--auth-rate",
                format!(
                    "must be at least 0.001 requests per second, got {}",
                    a.auth_rate
                ),
            ));
        }
        if a.auth_per_connection {
            let in_request = a.url.contains(auth::TOKEN)
                || a.headers.iter().any(|(_, v)| v.contains(auth::TOKEN));
            if !in_request {
                return Err(inv(
                    "--auth-per-connection",
                    "no {{token}} in -H values or the URL: each connection's token would be fetched and never sent".into(),
                ));
            }
            if handshake && !a.upgrade {
                return Err(inv(
                    "--auth-per-connection",
                    "handshake cycles without --upgrade send no upgrade request to carry a token"
                        .into(),
                ));
            }
        }
        // One token for the whole run (the pre-step), or one per connection later.
        let (token, auth_pool) = match spec {
            Some(spec) if a.auth_per_connection => {
                let body = match &spec.body {
                    None => None,
                    Some(b) => Some(
                        Template::parse(
                            b,
                            &Resolver {
                                token: None,
                                scenario: a.scenario.as_deref().unwrap_or("default"),
                                base: a.base_dir.as_deref(),
                            },
                        )
                        .map_err(|reason| inv("--auth-body", reason))?
                        .unwrap_or_else(|| Template::literal(b)),
                    ),
                };
                let pool = AuthPool {
                    spec,
                    body,
                    rate: a.auth_rate,
                    timeout: a.connect_timeout,
                };
                (None, Some(Arc::new(pool)))
            }
            Some(spec) => {
                let token = spec.fetch().map_err(|e| match (&a.scenario, e) {
                    (Some(name), PlanError::Auth(m)) => {
                        PlanError::Auth(format!("scenario `{name}`: {m}"))
                    }
                    (_, e) => e,
                })?;
                (Some(token), None)
            }
            None => (None, None),
        };
        let resolver = Resolver {
            token: token.as_deref(),
            scenario: a.scenario.as_deref().unwrap_or("default"),
            base: a.base_dir.as_deref(),
        };
        // Per-connection tokens: the placeholder stays in the request template.
        let request_resolver = Resolver {
            token: if auth_pool.is_some() {
                Some(crate::proto::ws::handshake::TOKEN_SLOT)
            } else {
                token.as_deref()
            },
            ..resolver
        };
        // Headers and the URL are one request template for every connection: they take the
        // expressions fixed before the run ({{token}}, {{env}}, {{scenario}}).
        let fixed = |flag: &'static str, text: &str| -> Result<String, PlanError> {
            match Template::parse(text, &request_resolver) {
                Ok(None) => Ok(text.to_owned()),
                Ok(Some(t)) if t.is_fixed() => {
                    Ok(String::from_utf8_lossy(&t.render_fixed()).into_owned())
                }
                Ok(Some(_)) => Err(inv(
                    flag,
                    format!("`{text}`: only {{{{token}}}}, {{{{env NAME}}}} and {{{{scenario}}}} can be used here (the upgrade request is the same for every connection); per-connection values go in messages"),
                )),
                Err(reason) => Err(inv(flag, reason)),
            }
        };
        let headers = a
            .headers
            .iter()
            .map(|(n, v)| Ok((n.clone(), fixed("--header", v)?)))
            .collect::<Result<Vec<_>, PlanError>>()?;
        if headers
            .iter()
            .any(|(_, v)| v.chars().any(|c| c.is_control()))
        {
            return Err(inv(
                "--header",
                "a header value rendered with a control character (check {{env}})".into(),
            ));
        }
        let path = fixed("URL", &url.path)?;
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(inv(
                "URL",
                "the path rendered with whitespace (percent-encode it)".into(),
            ));
        }
        let url = Url { path, ..url };
        let on_open = on_open
            .into_iter()
            .map(|m| templated("--send-on-open", m, &resolver))
            .collect::<Result<Vec<_>, _>>()?;
        let message = message
            .map(|m| templated("--message", m, &resolver))
            .transpose()?;
        let on_reconnect = on_reconnect
            .map(|m| templated("--on-reconnect", m, &resolver))
            .transpose()?;
        let heartbeat = match a.heartbeat_interval {
            None => None,
            Some(iv) => {
                let m = Message::fixed(opcode, a.heartbeat_message.as_bytes().into());
                Some(Heartbeat {
                    interval: iv.as_micros() as u64,
                    message: templated("--heartbeat-message", m, &resolver)?,
                    expect: a.heartbeat_expect.clone(),
                    timeout: a.heartbeat_timeout.as_micros() as u64,
                })
            }
        };
        let tls = if url.tls {
            let per_shard = connections.div_ceil(cpus.len().max(1) as u64);
            Some(Arc::new(a.tls.settings(&url.host, per_shard)?))
        } else {
            None
        };
        Ok(Self {
            name: "default".into(),
            start: Duration::ZERO,
            url_text: a.url.clone(),
            url,
            target,
            connections,
            connect_rate,
            mode,
            tls,
            thresholds: a.thresholds.clone(),
            auth: token.is_some() || auth_pool.is_some(),
            auth_pool,
            abort_on_fail: a.abort_on_fail,
            pong_timeout: a.pong_timeout,
            latency_from,
            expect,
            expect_timeout: a.expect_timeout,
            message_count: a.message_count,
            on_reconnect,
            channel: a.channel.clone(),
            fanout: a.role.map(|r| match r {
                RoleArg::Publisher => Fanout::Publisher,
                RoleArg::Subscriber => Fanout::Subscriber,
            }),
            heartbeat,
            duration,
            connect_timeout: a.connect_timeout,
            drain: a.drain,
            close_wait: a.close_wait,
            headers,
            subprotocols: a.subprotocols.clone(),
            on_open,
            message_rate: if message.is_some() { message_rate } else { 0.0 },
            message,
            ping_interval: a.ping_interval,
            reconnect: !a.no_reconnect,
            policy: a.reconnect_policy,
            storm,
            stages,
            session_lifetime: a.session_lifetime,
            cpus,
            source_ips,
            source_ips_auto: auto,
            linger_zero: a.linger_zero || matches!(mode, Mode::Handshake { rst: true, .. }),
            validate_utf8: !a.no_utf8_check,
            timer_resolution: a.timer_resolution,
            socket_setup: a.socket_setup,
            json: a.json.clone(),
            quiet: a.quiet,
        })
    }
}

/// The auth request asked for, if any; `{{token}}` without one is an error.
fn auth_spec(a: &RunArgs) -> Result<Option<auth::AuthSpec>, PlanError> {
    let uses_token = a.url.contains(auth::TOKEN)
        || a.headers.iter().any(|(_, v)| v.contains(auth::TOKEN))
        || a.send_on_open
            .iter()
            .chain(&a.message)
            .chain(&a.on_reconnect)
            .any(|m| m.contains(auth::TOKEN));
    // A scenario of a file that inherits the top level's auth but never uses the token
    // needs no request.
    if !uses_token && a.scenario.is_some() {
        return Ok(None);
    }
    let Some(auth_url) = &a.auth_url else {
        if uses_token {
            return Err(PlanError::Invalid {
                flag: "--auth-url",
                reason: "`{{token}}` is used but no auth pre-step gives one: add --auth-url".into(),
            });
        }
        return Ok(None);
    };
    if !(auth_url.starts_with("http://") || auth_url.starts_with("https://")) {
        return Err(PlanError::Invalid {
            flag: "--auth-url",
            reason: format!("`{auth_url}` is not an http:// or https:// URL"),
        });
    }
    let body = a
        .auth_body
        .as_deref()
        .map(|b| match b.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path).map_err(|e| PlanError::File {
                flag: "--auth-body",
                path: path.into(),
                reason: e.to_string(),
            }),
            None => Ok(b.to_owned()),
        })
        .transpose()?;
    let cacerts = match &a.tls.cacert {
        Some(p) => crate::certs::load_certs("--cacert", p)?,
        None => Vec::new(),
    };
    let spec = auth::AuthSpec {
        url: auth_url.clone(),
        body,
        headers: a.auth_headers.clone(),
        field: a.auth_token_field.clone(),
        cacerts,
        insecure: a.tls.insecure,
    };
    Ok(Some(spec))
}

/// Per-connection auth: the request, its body template, the rate, the timeout.
#[derive(Debug)]
pub struct AuthPool {
    /// What to request.
    pub spec: auth::AuthSpec,
    /// The body, rendered per request (`{{conn_id}}` = the request's number).
    pub body: Option<Template>,
    /// Requests per second at most.
    pub rate: f64,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Template inputs fixed before the run: the environment, files, the auth token.
#[derive(Clone, Copy)]
struct Resolver<'a> {
    token: Option<&'a str>,
    scenario: &'a str,
    base: Option<&'a std::path::Path>,
}

impl Resolve for Resolver<'_> {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn lines(&self, path: &str) -> Result<Vec<String>, String> {
        let full = match self.base {
            Some(b) if std::path::Path::new(path).is_relative() => b.join(path),
            _ => PathBuf::from(path),
        };
        std::fs::read_to_string(full)
            .map(|t| {
                t.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .map_err(|e| format!("cannot read `{path}`: {e}"))
    }

    fn token(&self) -> Option<&str> {
        self.token
    }

    fn scenario(&self) -> &str {
        self.scenario
    }
}

/// `m` with its `{{...}}` expressions parsed: fixed ones rendered now, the others per send.
fn templated(flag: &'static str, m: Message, r: &Resolver<'_>) -> Result<Message, PlanError> {
    // Only text can hold template expressions; a binary file is sent as it is.
    let Ok(text) = std::str::from_utf8(&m.payload) else {
        return Ok(m);
    };
    let t = match Template::parse(text, r) {
        Ok(None) => return Ok(m),
        Ok(Some(t)) => t,
        Err(reason) => return Err(PlanError::Invalid { flag, reason }),
    };
    if t.is_fixed() {
        return Ok(Message::fixed(m.opcode, t.render_fixed().into()));
    }
    Ok(Message {
        opcode: m.opcode,
        payload: Box::new([]),
        template: Some(Arc::new(t)),
    })
}

/// On IPv4 loopback, connections beyond [`PORTS_PER_SOURCE`] are spread over 127.0.0.1,
/// 127.0.0.2, ... so no single source address fills its port range.
pub fn auto_sources(target: IpAddr, connections: u64) -> Vec<IpAddr> {
    match target {
        IpAddr::V4(v4) if v4.is_loopback() && connections > PORTS_PER_SOURCE => {
            let n = connections.div_ceil(PORTS_PER_SOURCE).min(250) as u8;
            (1..=n).map(|i| IpAddr::from([127, 0, 0, i])).collect()
        }
        _ => Vec::new(),
    }
}

fn resolve(url: &Url) -> Result<SocketAddr, PlanError> {
    let err = |reason: String| PlanError::Resolve {
        host: url.host.clone(),
        reason,
    };
    let mut addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?;
    addrs.next().ok_or_else(|| err("no addresses".into()))
}

fn load_message(flag: &'static str, spec: &str, opcode: OpCode) -> Result<Message, PlanError> {
    let payload = match spec.strip_prefix('@') {
        Some(path) => std::fs::read(path).map_err(|e| PlanError::File {
            flag,
            path: path.into(),
            reason: e.to_string(),
        })?,
        None => spec.as_bytes().to_vec(),
    };
    if opcode == OpCode::Text && std::str::from_utf8(&payload).is_err() {
        return Err(PlanError::Invalid {
            flag,
            reason: "content is not UTF-8 text; add --binary to send it as binary".into(),
        });
    }
    Ok(Message::fixed(opcode, payload.into()))
}

/// CPUs this process may run on.
pub fn available_cpus() -> Vec<usize> {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    if ids.is_empty() {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    } else {
        ids.into_iter().map(|c| c.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn plan(args: &[&str]) -> Result<RunPlan, PlanError> {
        let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap();
        RunPlan::from_args(&cli.run)
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:9001/a/b?x=1").unwrap(),
            Url {
                tls: false,
                host: "127.0.0.1".into(),
                port: 9001,
                path: "/a/b?x=1".into()
            }
        );
        assert_eq!(
            parse_url("WS://localhost").unwrap(),
            Url {
                tls: false,
                host: "localhost".into(),
                port: 80,
                path: "/".into()
            }
        );
        assert_eq!(
            parse_url("ws://[::1]:81?q").unwrap(),
            Url {
                tls: false,
                host: "::1".into(),
                port: 81,
                path: "/?q".into()
            }
        );
        assert_eq!(
            parse_url("ws://[::1]:81").unwrap().host_header(),
            "[::1]:81"
        );
        let w = parse_url("wss://example.com/x").unwrap();
        assert_eq!(
            (w.tls, w.port, w.host_header()),
            (true, 443, "example.com".into())
        );
        assert_eq!(parse_url("wss://h:8443/").unwrap().host_header(), "h:8443");
        for bad in [
            "http://x/",
            "x:80",
            "ws://",
            "ws://h:0/",
            "ws://h:99999/",
            "ws://u@h/",
            "ws://h/a b",
            "ws://[::1/",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(matches!(e, PlanError::BadUrl { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn flags_validate_with_the_fix_in_the_message() {
        let p = plan(&[
            "ws://127.0.0.1:9/",
            "-c",
            "10000",
            "--message",
            "hi",
            "--message-rate",
            "2",
        ])
        .unwrap();
        assert_eq!(
            p.source_ips.len(),
            5,
            "loopback spreads 10k connections over 5 sources"
        );
        assert_eq!(p.message_rate, 2.0);
        let msg = |args: &[&str]| plan(args).unwrap_err().to_string();
        assert!(msg(&["ws://127.0.0.1:9/", "-c", "0"]).contains("--connections"));
        assert!(msg(&["ws://127.0.0.1:9/", "--connect-rate", "0"]).contains("--connect-rate"));
        assert!(
            msg(&["ws://127.0.0.1:9/", "--message", "x", "--message-rate", "0"])
                .contains("--message-rate")
        );
        assert!(msg(&["ws://127.0.0.1:9/", "-H", "Host: a"]).contains("cannot be overridden"));
        assert!(
            msg(&["ws://127.0.0.1:9/", "--message", "@/nonexistent/file"]).contains("cannot read")
        );
        assert!(msg(&["ws://127.0.0.1:9/", "--cpus", "999"]).contains("not available"));
        assert!(msg(&["ws://127.0.0.1:9/", "--source-ip", "::1"]).contains("address family"));
        assert!(msg(&["ws://no-such-host.invalid/"]).contains("cannot resolve"));
        assert!(msg(&["ws://127.0.0.1:9/", "--insecure"]).contains("only applies to wss://"));
        assert!(msg(&["ws://127.0.0.1:9/", "--mode", "handshake"]).contains("--upgrade"));
        assert!(msg(&["ws://127.0.0.1:9/", "--upgrade"]).contains("--mode handshake"));
    }
}
