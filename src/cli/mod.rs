//! Command-line interface: clap definitions and subcommand dispatch.
//!
//! Exit codes: 0 the run completed without failures; 1 a setup error (bad target, limits,
//! io_uring unavailable); 2 bad usage (flags); 3 the run completed but connections failed or
//! sessions dropped (or `doctor` says N does not fit); 130 interrupted by Ctrl-C (the summary
//! and JSON still hold everything measured).

use crate::certs::{self, CertError};
use crate::doctor::{self, DoctorOptions};
use crate::engine::{self, RunControl, RunResult};
use crate::metrics::report;
use crate::plan::{self, parse, Run, RunArgs, RunPlan};
use crate::server::{self as gateway, Gateway, Reject, ServeConfig, ServerTlsOptions};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Exit code: completed, no failures.
pub const EXIT_OK: u8 = 0;
/// Exit code: setup error.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: invalid flags (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: completed with failures.
pub const EXIT_FAILURES: u8 = 3;
/// Exit code: interrupted by Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;
/// The run completed but a `--threshold` failed (k6's code for the same).
pub const EXIT_THRESHOLDS: u8 = 99;

/// sockstorm: open and drive as many WebSocket connections as this host allows.
#[derive(Debug, Parser)]
#[command(name = "sockstorm", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Storm a WebSocket endpoint: open, hold and drive connections, then report.
    Run(Box<RunArgs>),
    /// Run the built-in target gateway (echo, channels, fan-out, auth endpoint) on loopback.
    Serve(ServeArgs),
    /// Start the built-in gateway in-process and storm it: a first look in ~30 s.
    Demo(DemoArgs),
    /// Check this host's limits and tuning for N connections.
    Doctor(DoctorArgs),
}

/// Flags of `sockstorm serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Event-loop threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// CPUs to pin the threads to, e.g. 1 or 0,2-3.
    #[arg(long, value_parser = parse::cpu_list)]
    pub cpus: Option<parse::CpuList>,
    /// Fan-out: broadcast a sequence-numbered, timestamped event to every connection R times per second.
    #[arg(long, default_value_t = 0.0)]
    pub publish_rate: f64,
    /// Fault injection: answer upgrades with this HTTP status (e.g. 503), or `close` to drop them.
    #[arg(long, value_parser = parse_reject)]
    pub reject_with: Option<Reject>,
    /// Fault injection: drop every Nth channel delivery (one message to one subscriber), counted gateway-wide (0 = off).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub drop_every: u64,
    /// Fault injection: close each WebSocket this long after it opened, with this close code, e.g. 5s:1012.
    #[arg(long, value_name = "DUR:CODE", value_parser = parse_close_after)]
    pub close_after: Option<(Duration, u16)>,
    /// Read buffer per connection in bytes.
    #[arg(long, default_value_t = 4096)]
    pub read_buffer: usize,
    /// Listen backlog (also capped by net.core.somaxconn).
    #[arg(long, default_value_t = 4096)]
    pub backlog: i32,
    /// Exit by itself after this long (default: until Ctrl-C).
    #[arg(long, value_parser = parse::duration)]
    pub duration: Option<Duration>,
    /// No per-second stats line on stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Serve wss:// (TLS 1.2 and 1.3); without --cert/--key, with a generated test CA.
    #[arg(long)]
    pub tls: bool,
    /// Certificate chain to serve (PEM, leaf first) instead of a generated one.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    pub key: Option<PathBuf>,
    /// Mutual TLS: require client certificates issued by this CA (PEM).
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub client_ca: Option<PathBuf>,
    /// Where to write the generated CA certificate [default: <temp dir>/sockstorm-ca-<port>.pem].
    #[arg(long, value_name = "PATH", requires = "tls", conflicts_with = "cert")]
    pub ca_out: Option<PathBuf>,
    /// TLS 1.3 session tickets sent per handshake (0 = no TLS 1.3 resumption).
    #[arg(long, value_name = "N", default_value_t = 2, requires = "tls")]
    pub tls_tickets: usize,
}

fn parse_reject(s: &str) -> Result<Reject, String> {
    if s.eq_ignore_ascii_case("close") {
        return Ok(Reject::Close);
    }
    s.parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .map(Reject::Status)
        .ok_or_else(|| format!("`{s}` is neither an HTTP status 200-599 nor `close`"))
}

/// `DUR:CODE` of `serve --close-after`, e.g. `5s:1012`.
fn parse_close_after(s: &str) -> Result<(Duration, u16), String> {
    let (dur, code) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not DURATION:CODE (e.g. 5s:1012)"))?;
    let dur = parse::duration(dur)?;
    let code = code
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|&c| gateway::close_code_allowed(c))
        .ok_or_else(|| {
            format!(
                "`{code}` is not a close code a server may send (e.g. 1000, 1001, 1012, 1013, 4000-4999)"
            )
        })?;
    Ok((dur, code))
}

/// Flags of `sockstorm demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Connections (default: 10,000, or what the open-files limit allows with the gateway in the same process).
    #[arg(short = 'c', long)]
    pub connections: Option<u64>,
    /// New connections per second.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Run length.
    #[arg(short = 'd', long, default_value = "25s", value_parser = parse::duration)]
    pub duration: Duration,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No live progress line.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Over wss://: the gateway serves TLS with a generated test CA, which the client trusts.
    #[arg(long)]
    pub tls: bool,
}

/// Flags of `sockstorm doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Connections you plan to open: say whether they fit and what to change.
    #[arg(short = 'c', long)]
    pub connections: Option<u64>,
    /// Target address (host:port) the connections go to.
    #[arg(long)]
    pub target: Option<SocketAddr>,
    /// Source addresses you will rotate (same syntax as `run --source-ip`).
    #[arg(long, value_parser = parse::source_ips)]
    pub source_ip: Option<parse::IpList>,
    /// CPUs the client shards will run on.
    #[arg(long, value_parser = parse::cpu_list)]
    pub cpus: Option<parse::CpuList>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Errors a subcommand reports before exiting (see [`CliError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Invalid run settings.
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// The engine could not run.
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    /// The built-in gateway could not start.
    #[error("built-in gateway: {0}")]
    Server(#[from] crate::server::ServerError),
    /// A certificate or key flag names an unusable file, or test certificates failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// Results could not be written.
    #[error(
        "cannot write results to `{path}`: {source} (check the directory exists and is writable)"
    )]
    Output {
        /// Output path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
}

impl CliError {
    /// [`EXIT_USAGE`] for invalid flag values, [`EXIT_ERROR`] for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Plan(
                plan::PlanError::Invalid { .. }
                | plan::PlanError::Scenario { .. }
                | plan::PlanError::File { .. }
                | plan::PlanError::BadUrl { .. }
                | plan::PlanError::Cert(_),
            ) => EXIT_USAGE,
            Self::Cert(CertError::Generate(_) | CertError::Config(_)) => EXIT_ERROR,
            Self::Cert(_) => EXIT_USAGE,
            _ => EXIT_ERROR,
        }
    }
}

/// The process-wide run control Ctrl-C talks to.
fn control() -> &'static RunControl {
    static CTL: RunControl = RunControl::new();
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Without a handler Ctrl-C kills the process and loses the results; a failure to
        // install is reported but not fatal.
        if let Err(e) = ctrlc::set_handler(|| CTL.interrupt()) {
            eprintln!(
                "warning: cannot install the Ctrl-C handler ({e}); Ctrl-C will lose the results"
            );
        }
    });
    &CTL
}

/// Runs the parsed command; returns the exit code.
pub fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Run(args) => {
            if is_scenario_file(&args.url) {
                let path = Path::new(&args.url);
                let run = plan::file::load(path, &run_words(&args.url))?;
                return storm(&run);
            }
            let plan = RunPlan::from_args(&args)?;
            storm(&Run::single(plan)?)
        }
        Command::Serve(args) => serve(&args),
        Command::Demo(args) => demo(&args),
        Command::Doctor(args) => Ok(doctor_cmd(&args)),
    }
}

/// Whether the `run` target is a scenario file rather than a URL.
fn is_scenario_file(target: &str) -> bool {
    !target.contains("://") && (target.ends_with(".toml") || Path::new(target).is_file())
}

/// The words given after `run` on this process's command line, without the scenario file.
fn run_words(file: &str) -> Vec<String> {
    let mut words: Vec<String> = std::env::args()
        .skip_while(|w| w != "run")
        .skip(1)
        .collect();
    if let Some(i) = words.iter().position(|w| w == file) {
        words.remove(i);
    }
    words
}

fn storm(run: &Run) -> Result<u8, CliError> {
    let ctl = control();
    let plan = run.main();
    if !plan.quiet {
        let rate = if plan.connect_rate.is_finite() {
            format!("at {}/s", plan.connect_rate)
        } else {
            "as fast as they complete".to_owned()
        };
        let what = match plan.mode {
            crate::proto::conn::Mode::Session if run.is_multi() => {
                let names: Vec<&str> = run.scenarios.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "{} connections in {} scenarios ({})",
                    run.connections(),
                    names.len(),
                    names.join(", ")
                )
            }
            crate::proto::conn::Mode::Session => format!("{} connections", plan.connections),
            crate::proto::conn::Mode::Handshake { .. } => {
                format!("handshake cycles, {} in flight,", plan.connections)
            }
        };
        eprintln!(
            "sockstorm: {what} to {} ({}) {rate} over {} shard(s) for {:?}",
            plan.url_text,
            plan.target,
            plan.cpus.len(),
            run.duration()
        );
    }
    let result = engine::run(run, ctl)?;
    finish(run, &result)
}

fn finish(run: &Run, result: &RunResult) -> Result<u8, CliError> {
    let plan = run.main();
    // JSON first: if stdout is a closed pipe, the results file must still be written.
    if let Some(path) = &plan.json {
        write_json(path, &report::to_json(run, result))?;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(report::summary(run, result).as_bytes());
    let _ = out.flush();
    let c = &result.stats.counters;
    Ok(if result.threshold_abort.is_some() {
        EXIT_THRESHOLDS
    } else if result.interrupted {
        EXIT_INTERRUPTED
    } else if report::thresholds(run, result).iter().any(|t| !t.pass) {
        EXIT_THRESHOLDS
    } else if result.stats.failure_total() > 0
        || c.sessions_dropped > 0
        || result.auth.iter().any(|(_, a)| !a.failures.is_empty())
    {
        EXIT_FAILURES
    } else {
        EXIT_OK
    })
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), CliError> {
    let err = |source| CliError::Output {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(v).map_err(|e| err(e.into()))?;
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The TLS settings `serve` flags ask for, and the generated CA (to be written out) if any.
fn serve_tls(
    a: &ServeArgs,
) -> Result<(Option<std::sync::Arc<rustls::ServerConfig>>, Option<String>), CliError> {
    if !a.tls {
        return Ok((None, None));
    }
    let (chain, key, ca_pem) = match (&a.cert, &a.key) {
        (Some(cert), Some(key)) => (
            certs::load_certs("--cert", cert)?,
            certs::load_key("--key", key)?,
            None,
        ),
        // clap enforces --cert and --key together.
        _ => {
            let ca = certs::generate_test_ca()?;
            (ca.chain, ca.key, Some(ca.ca_pem))
        }
    };
    let mut opts = ServerTlsOptions::new(chain, key);
    opts.tickets_per_handshake = a.tls_tickets;
    if let Some(path) = &a.client_ca {
        opts.client_ca = Some(certs::load_certs("--client-ca", path)?);
    }
    Ok((Some(gateway::server_tls_config(&opts)?), ca_pem))
}

fn serve(a: &ServeArgs) -> Result<u8, CliError> {
    let ctl = control();
    let (tls, ca_pem) = serve_tls(a)?;
    let cfg = ServeConfig {
        listen: a.listen,
        threads: a.threads,
        cpus: a.cpus.clone().map(|c| c.0).unwrap_or_default(),
        publish_rate: a.publish_rate,
        reject: a.reject_with,
        read_buffer: a.read_buffer,
        backlog: a.backlog,
        report: !a.quiet,
        tls,
        drop_every: a.drop_every,
        close_after: a.close_after,
    };
    let gw = Gateway::start(cfg)?;
    let mut tls_note = String::new();
    if let Some(pem) = ca_pem {
        let path = a.ca_out.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("sockstorm-ca-{}.pem", gw.local_addr().port()))
        });
        std::fs::write(&path, pem).map_err(|source| CliError::Output {
            path: path.clone(),
            source,
        })?;
        tls_note = format!(
            "; CA certificate written to {0} (use --cacert {0})",
            path.display()
        );
    }
    if a.client_ca.is_some() {
        tls_note.push_str("; client certificates required");
    }
    let mut mode = "echo + channels".to_owned();
    if a.publish_rate > 0.0 {
        mode.push_str(&format!(" + fan-out {}/s", a.publish_rate));
    }
    let mut faults = Vec::new();
    if a.drop_every > 0 {
        faults.push(format!("dropping 1 in {} channel deliveries", a.drop_every));
    }
    if let Some((after, code)) = a.close_after {
        faults.push(format!(
            "closing each connection {after:?} after it opened with {code}"
        ));
    }
    let faults = if faults.is_empty() {
        String::new()
    } else {
        format!("; fault injection: {}", faults.join(", "))
    };
    println!(
        "sockstorm serve: listening on {}://{}/ ({mode}, {} thread(s)){faults}{tls_note}",
        if a.tls { "wss" } else { "ws" },
        gw.local_addr(),
        a.threads
    );
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    while ctl.level() == 0 && a.duration.is_none_or(|d| start.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = gw.stats();
    gw.shutdown();
    println!(
        "sockstorm serve: stopped; accepted {} connections, {} messages in, {} out, {} handshakes rejected",
        s.accepted, s.msgs_in, s.msgs_out, s.handshakes_rejected
    );
    if a.tls {
        println!(
            "sockstorm serve: TLS handshakes: {} full, {} resumed, {} failed",
            s.tls_handshakes_full, s.tls_handshakes_resumed, s.tls_failures
        );
    }
    if s.channel_publishes > 0 {
        println!(
            "sockstorm serve: channels: {} publishes, {} deliveries",
            s.channel_publishes, s.channel_deliveries
        );
    }
    let faults = gateway::fault_totals(&s);
    if !faults.is_empty() {
        println!("sockstorm serve: {}", faults.trim_start());
    }
    Ok(EXIT_OK)
}

fn demo(a: &DemoArgs) -> Result<u8, CliError> {
    let (soft, _) = crate::io::sock::raise_nofile_limit().unwrap_or((1024, 1024));
    // The client's sockets live in io_uring descriptor tables, but the in-process gateway
    // needs one process fd per connection.
    let fit = soft.saturating_sub(256) / 1000 * 1000;
    let connections = a.connections.unwrap_or(10_000.min(fit.max(100)));
    let cpus = plan::available_cpus();
    let gw_cpu = cpus.last().copied().unwrap_or(0);
    let client_cpus: Vec<usize> = if cpus.len() > 1 {
        cpus[..cpus.len() - 1].to_vec()
    } else {
        cpus.clone()
    };
    let ca = a.tls.then(certs::generate_test_ca).transpose()?;
    let tls = match &ca {
        Some(ca) => Some(gateway::server_tls_config(&ServerTlsOptions::new(
            ca.chain.clone(),
            ca.key.clone_key(),
        ))?),
        None => None,
    };
    let gw = Gateway::start(ServeConfig {
        listen: "127.0.0.1:0"
            .parse()
            .unwrap_or_else(|_| unreachable!("constant address")),
        threads: 1,
        cpus: vec![gw_cpu],
        report: false,
        tls,
        ..ServeConfig::default()
    })?;
    let scheme = if a.tls { "wss" } else { "ws" };
    let url = format!("{scheme}://{}/demo", gw.local_addr());
    let mut tls_flags = Vec::new();
    if let Some(ca) = &ca {
        let path =
            std::env::temp_dir().join(format!("sockstorm-demo-ca-{}.pem", gw.local_addr().port()));
        std::fs::write(&path, &ca.ca_pem).map_err(|source| CliError::Output {
            path: path.clone(),
            source,
        })?;
        tls_flags = vec!["--cacert".to_owned(), path.display().to_string()];
    }
    eprintln!(
        "sockstorm demo: built-in gateway on {url} (CPU {gw_cpu}); client on CPU(s) {client_cpus:?}; \
         {connections} connections at {}/s for {:?}: echo sessions (one message per second each, ping every 5 s), \
         a tenth subscribed to a channel two publishers feed{}",
        a.connect_rate,
        a.duration,
        if a.connections.is_none() && connections < 10_000 {
            format!(" (the open-files limit {soft} leaves the in-process gateway room for no more)")
        } else {
            String::new()
        }
    );
    let args = RunArgs {
        url,
        target_url: None,
        scenario: None,
        base_dir: None,
        message_count: 0,
        message_total_rate: None,
        on_reconnect: None,
        role: None,
        channel: None,
        heartbeat_interval: None,
        heartbeat_message: r#"{"type":"ping"}"#.into(),
        heartbeat_expect: crate::proto::inspect::ExpectPattern::JsonEq {
            key: "type".into(),
            value: "pong".into(),
        },
        heartbeat_timeout: Duration::from_secs(10),
        connections,
        connect_rate: Some(a.connect_rate),
        mode: plan::ModeArg::Session,
        concurrency: 64,
        upgrade: false,
        close: plan::CloseArg::Rst,
        duration: a.duration,
        connect_timeout: Duration::from_secs(10),
        drain: Duration::from_secs(2),
        close_wait: Duration::from_secs(1),
        headers: Vec::new(),
        subprotocols: Vec::new(),
        send_on_open: vec![r#"{"type":"subscribe","channel":"demo"}"#.into()],
        message: Some(r#"{"type":"echo","payload":"sockstorm demo message"}"#.into()),
        message_rate: 1.0,
        binary: false,
        ping_interval: Some(Duration::from_secs(5)),
        no_reconnect: false,
        reconnect_policy: engine::reconnect::Policy::Rate,
        stages: None,
        arrival_rate: None,
        session_lifetime: None,
        storm_at: None,
        storm_every: None,
        storm_fraction: 0.5,
        storm_close: plan::StormCloseArg::Rst,
        cpus: Some(parse::CpuList(client_cpus)),
        source_ip: None,
        linger_zero: false,
        no_utf8_check: false,
        timer_resolution: Duration::from_millis(1),
        socket_setup: plan::SocketSetupArg::Auto,
        json: a.json.clone(),
        quiet: a.quiet,
        thresholds: Vec::new(),
        abort_on_fail: None,
        auth_url: None,
        auth_body: None,
        auth_headers: Vec::new(),
        auth_token_field: "token".into(),
        auth_per_connection: false,
        auth_rate: 100.0,
        pong_timeout: None,
        latency_from: None,
        latency_unit: plan::LatencyUnitArg::Ms,
        // The gateway acknowledges the subscribe: time it.
        expect: Some(crate::proto::inspect::ExpectPattern::JsonEq {
            key: "type".into(),
            value: "subscribed".into(),
        }),
        expect_timeout: Duration::from_secs(5),
        tls: plan::tls::TlsArgs::from_flags(
            &tls_flags.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        // `--cacert <absolute path we wrote>` always parses.
        .unwrap_or_else(|_| unreachable!("demo TLS flags parse")),
    };
    // Three scenarios: echo sessions; a tenth of the connections subscribed to a channel
    // that two publishers feed from the second second on (fan-out latency, loss,
    // broadcast completion).
    let subscribers = (connections / 10).max(1);
    let publishers = 2;
    let echo_count = connections.saturating_sub(subscribers + publishers).max(1);
    let total = (echo_count + subscribers) as f64;
    let share = |n: u64| Some(a.connect_rate * n as f64 / total);
    let mut echo = RunPlan::from_args(&RunArgs {
        connections: echo_count,
        connect_rate: share(echo_count),
        ..args.clone()
    })?;
    echo.name = "echo".into();
    let feed_args = RunArgs {
        connections: subscribers,
        connect_rate: share(subscribers),
        send_on_open: Vec::new(),
        message: None,
        expect: None,
        role: Some(plan::RoleArg::Subscriber),
        channel: Some("demo-feed".into()),
        ..args.clone()
    };
    let mut feed = RunPlan::from_args(&feed_args)?;
    feed.name = "feed".into();
    let mut publish = RunPlan::from_args(&RunArgs {
        connections: publishers,
        connect_rate: Some(100.0),
        message_rate: 2.0,
        role: Some(plan::RoleArg::Publisher),
        ..feed_args
    })?;
    publish.name = "publishers".into();
    publish.start = Duration::from_secs(1).min(a.duration / 2);
    let code = storm(&Run {
        scenarios: vec![echo, feed, publish],
        thresholds: Vec::new(),
        abort_on_fail: None,
    });
    let s = gw.stats();
    gw.shutdown();
    eprintln!(
        "sockstorm demo: gateway accepted {} connections, answered {} messages. The process CPU and RSS \
         above include the in-process gateway; `sockstorm serve` + `sockstorm run` measure the client alone.",
        s.accepted, s.msgs_out
    );
    code
}

fn doctor_cmd(a: &DoctorArgs) -> u8 {
    let opts = DoctorOptions {
        connections: a.connections,
        target: a.target,
        // Without --source-ip, count what `run` would choose (it spreads loopback targets).
        source_ips: a.source_ip.as_ref().map_or_else(
            || match (a.target, a.connections) {
                (Some(t), Some(n)) => plan::auto_sources(t.ip(), n).len().max(1) as u32,
                _ => 1,
            },
            |v| v.0.len() as u32,
        ),
        shards: a
            .cpus
            .as_ref()
            .map_or_else(|| plan::available_cpus().len(), |c| c.0.len()),
    };
    let report = doctor::run(&opts);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).unwrap_or_default()
        );
    } else {
        print!("{report}");
    }
    match report.fits() {
        Some(false) => EXIT_FAILURES,
        _ => EXIT_OK,
    }
}
