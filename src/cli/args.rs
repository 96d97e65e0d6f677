//! The flags of `sockstorm run` (clap). Scenario files use the same names as keys
//! (`message_rate` for `--message-rate`) and go through the same value parsers; what the
//! flags mean as a plan is built in `cli::build`.

use super::conn::ConnArgs;
use super::tls_args::TlsArgs;
use crate::plan::parse;
use crate::plan::reconnect::Policy;
use crate::plan::stages::Stages;
use crate::plan::threshold::Threshold;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// `--resolve` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResolveArg {
    /// The first address the name resolves to.
    First,
    /// Every address: one target each.
    All,
}

/// Flags of `sockstorm run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Target WebSocket URL, e.g. ws://127.0.0.1:8080/ws or wss://host/ws, or a scenario
    /// file (FILE.toml, see examples/) whose settings the other flags override.
    #[arg(value_name = "URL|FILE.toml")]
    pub url: String,
    /// More targets: URLs of the same service (the same scheme and path, other hosts or
    /// ports) that the connections are spread over with the first, round-robin or by
    /// --target-weights. The upgrade request's Host and the TLS name stay the first URL's.
    #[arg(value_name = "URL")]
    pub more_urls: Vec<String>,
    /// A further target, as the URLs after the first (repeatable; `targets = [...]` in
    /// scenario files).
    #[arg(long = "target", value_name = "URL")]
    pub targets: Vec<String>,
    /// How the connections are shared among the targets, in their order (the first URL's
    /// first), e.g. 3,1,1; default: equally (round-robin).
    #[arg(long, value_name = "W,W,…")]
    pub target_weights: Option<String>,
    /// `first`: connect to the first address the host name resolves to; `all`: every A/AAAA
    /// record is a target of its own (a cluster behind one DNS name).
    #[arg(long, value_enum, default_value_t = ResolveArg::First)]
    pub resolve: ResolveArg,
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
    #[arg(long, value_parser = crate::plan::stages::parse_flag)]
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
    /// After the run, how long replies in flight are awaited before closing.
    #[arg(long, default_value = "2s", value_parser = parse::duration)]
    pub drain: Duration,
    /// How each connection behaves: the upgrade request, messages, replies, timers.
    #[command(flatten)]
    pub conn: ConnArgs,
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
    /// How client sockets are made: `auto` (in the io_uring ring when the kernel has it,
    /// 6.11+) or `syscalls` (socket/setsockopt/bind, then installed in the ring).
    #[arg(long, value_enum, default_value_t = SocketSetupArg::Auto)]
    pub socket_setup: SocketSetupArg,
    /// I/O backend: `auto` (io_uring where the kernel and the seccomp profile allow it, else
    /// epoll, and the summary says why), `uring` or `epoll`.
    #[arg(long, value_enum, env = "SOCKSTORM_BACKEND", default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Run one segment of a run split across processes or hosts: I/N, 0-based (0/3, 1/3 and
    /// 2/3 together are the whole run), or `auto` (Kubernetes Indexed Job:
    /// JOB_COMPLETION_INDEX with --segments N; Slurm: SLURM_PROCID of SLURM_NTASKS). -c, rates
    /// and stage targets stay the whole run's; this process takes its share, and
    /// {{conn_id}} numbers are unique across segments.
    #[arg(long, value_name = "I/N|auto", value_parser = crate::plan::segment::parse_segment, help_heading = "More than one host")]
    pub segment: Option<crate::plan::segment::SegmentArg>,
    /// --segment auto in a Kubernetes Indexed Job: the segment count (the Job's completions);
    /// under Slurm, overrides SLURM_NTASKS.
    #[arg(long, value_name = "N", help_heading = "More than one host")]
    pub segments: Option<u64>,
    /// Start at this wall-clock instant, with the plan built and the shards pinned and set up:
    /// RFC 3339 (2026-12-06T07:00:00Z, or with an offset such as +02:00) or +DURATION from
    /// now (+30s). Give every segment the same instant. An instant already past is an error
    /// unless --start-late-ok.
    #[arg(long, value_name = "INSTANT|+DURATION", value_parser = crate::plan::segment::parse_start_at, help_heading = "More than one host")]
    pub start_at: Option<std::time::SystemTime>,
    /// With --start-at: start at once if the instant has already passed (the start offset
    /// in the results says how late), instead of failing.
    #[arg(long, requires = "start_at", help_heading = "More than one host")]
    pub start_late_ok: bool,
    /// Write the results as JSON to this file.
    #[arg(long, help_heading = "Results")]
    pub json: Option<PathBuf>,
    /// Write an HdrHistogram interval log to this file as the run goes: one line per
    /// histogram per second, tagged with its name (Tag=ws_connecting,...), values in µs
    /// (Java's HistogramLogProcessor: -outputValueUnitRatio 1000 for ms).
    #[arg(long, value_name = "FILE", help_heading = "Results")]
    pub hdr_log: Option<PathBuf>,
    /// Write the per-second timeline as CSV to this file as the run goes: open and target
    /// connections, connects, failures by cause and messages per second, p50/p99 of each
    /// latency.
    #[arg(long, value_name = "FILE", help_heading = "Results")]
    pub csv: Option<PathBuf>,
    /// Write the HTML report of the results to this file at the end (as `sockstorm report`
    /// makes from the JSON): one page, charts and data inline, that opens offline.
    #[arg(long, value_name = "FILE.html")]
    pub html: Option<PathBuf>,
    /// No live progress line on stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Exit 98 when the load generator itself was the bottleneck (`generator-bound`: a shard
    /// at ≥ 95 % CPU for a second, or its timers later than the latency it reports), rather
    /// than pass latencies that measure the client.
    #[arg(long)]
    pub fail_on_saturation: bool,
    /// Serve live Prometheus/OpenMetrics metrics at http://ADDR/metrics while the run goes on,
    /// from the once-a-second merged figures (e.g. 127.0.0.1:9464; port 0 picks a free port;
    /// the address is printed on stderr). Keep it on loopback unless Prometheus scrapes from
    /// another host: any other address gets a warning.
    #[arg(long, value_name = "ADDR", help_heading = "Live metrics")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// After the run, keep serving the final figures until a scrape has read them, for at
    /// most this long (give Prometheus' scrape interval, e.g. 15s); 0s: exit at once.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse::duration, requires = "metrics_listen", help_heading = "Live metrics")]
    pub metrics_linger: Duration,
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
    /// Stop the run (exit 3) once this many attempts in a row on a shard failed with the same
    /// certificate, verification or TLS configuration cause while no connection ever
    /// succeeded: each further attempt would fail the same way. 0: never stop for that.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_identical_failures: u64,
    /// Show the URL's query values (and fragment) in the banner, summary and JSON; by default
    /// they are `***`, since query strings carry tokens and session ids.
    #[arg(long)]
    pub show_query: bool,
    /// TLS settings.
    #[command(flatten)]
    pub tls: TlsArgs,
}

fn parse_threshold(s: &str) -> Result<Threshold, String> {
    Threshold::parse(s).map_err(|e| e.reason)
}

/// `--storm-close` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StormCloseArg {
    /// Abrupt: RST (SO_LINGER 0), no close frame; the server sees a reset.
    Rst,
    /// A close frame with code 1000, the server's close reply awaited, then FIN.
    Graceful,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Open WebSocket sessions and hold them for the run (messages, pings, reconnects).
    Session,
    /// Repeat connect → TLS handshake [→ upgrade] → close, `--concurrency` at a time.
    Handshake,
}

/// `--close` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloseArg {
    /// Close with RST (SO_LINGER 0): no TIME_WAIT left behind; our last TLS flight is sent first.
    Rst,
    /// Close gracefully: close_notify (TLS) or, with `--upgrade`, a close frame, then FIN.
    Fin,
}

/// `--backend` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// io_uring where it can run, else epoll (Docker ≥ 25, containerd 2 and Podman block
    /// io_uring by default).
    Auto,
    /// io_uring only: an error (exit 2) where it cannot run.
    Uring,
    /// epoll (mio), wherever.
    Epoll,
}

/// `--socket-setup` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SocketSetupArg {
    /// Socket, options, bind and connect as one linked chain in the io_uring ring where the
    /// kernel has those operations (6.11+), else with syscalls.
    Auto,
    /// socket/setsockopt/bind with syscalls, then the socket installed in the ring's table.
    Syscalls,
}

/// `run` flags parsed from words, as they follow `run` on the command line (scenario files
/// and the demo build their runs this way too).
#[derive(Debug, clap::Parser)]
#[command(no_binary_name = true, args_override_self = true)]
pub(crate) struct RunWords {
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

impl RunArgs {
    /// Parses `words` (the URL or file first, then flags) like the command line does.
    pub fn from_words<I, T>(words: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser;
        RunWords::try_parse_from(words).map(|w| w.run)
    }
}
