//! `sockstorm serve`: the built-in target gateway on loopback, until a signal (SIGINT, SIGTERM, SIGHUP) or --duration.

use super::{control, CliError, EXIT_OK};
use crate::certs;
use crate::plan::{parse, PlanError};
use crate::server::{self as gateway, AckRoute, Gateway, Reject, ServeConfig, ServerTlsOptions};
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Flags of `sockstorm serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; port 0 picks a free port). Any other address
    /// (0.0.0.0 binds every interface) gets a warning: the gateway has no authentication.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Share the port with another listener that set SO_REUSEPORT (such as a second serve):
    /// the kernel then splits new connections between them. Without it, a port already in use
    /// is an error (exit 1).
    #[arg(long)]
    pub reuse_port: bool,
    /// Output queued per connection (e.g. 4MiB, 64KiB, 1048576) beyond which deliveries to a
    /// client that stopped reading are dropped and counted as overflow; at least --max-message-size.
    #[arg(long, value_name = "BYTES", default_value = "4MiB", value_parser = parse_bytes)]
    pub max_queued_bytes: usize,
    /// Largest message (and frame) a client may send; a larger one is closed with 1009 "message too big".
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub max_message_size: usize,
    /// Unfinished (partly received) messages all connections together may buffer; the
    /// connection that goes beyond is closed with 1009 "message too big". At least --max-message-size.
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_unfinished_bytes: usize,
    /// Publishes queued between event-loop threads (--threads > 1), all together; a publish
    /// that would go beyond is not relayed to that thread, counted as `relay dropped`. At
    /// least --max-message-size.
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_relay_bytes: usize,
    /// Close connections that have not completed the WebSocket upgrade (TLS handshake
    /// included) this long after they were accepted.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse::duration)]
    pub handshake_timeout: Duration,
    /// Event-loop threads (at least 1).
    #[arg(long, default_value_t = 1, value_parser = threads)]
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
    /// Ping every connection at this interval; no pong within --ping-timeout closes it with
    /// 1011 "keepalive ping timeout" (as Python websockets does), a reset if the close
    /// cannot reach it.
    #[arg(long, value_name = "D", value_parser = parse::duration)]
    pub ping_interval: Option<Duration>,
    /// How long a ping may go unanswered (needs --ping-interval).
    #[arg(long, value_name = "D", default_value = "20s", value_parser = parse::duration, requires = "ping_interval")]
    pub ping_timeout: Duration,
    /// Reset (RST) a client whose outgoing queue has been full this long (it stopped
    /// reading); without it, deliveries beyond the queue are dropped and counted as overflow.
    #[arg(long, value_name = "D", value_parser = parse::duration)]
    pub slow_consumer_timeout: Option<Duration>,
    /// Ack route: answer a JSON message whose "action" (or "type") is ACTION with {"type":REPLY_TYPE,"NAME":VALUE}, VALUE copied from the message's FIELD (a dotted path such as message.id; NAME is its last segment). Repeatable; adds to or overrides the built-in routes apply_operation=operation_applied:opId, rate=ack:itemId, send_message=message_ack:message.id, join_document=document_joined:documentId.
    #[arg(long, value_name = "ACTION=REPLY_TYPE:FIELD", value_parser = parse_ack)]
    pub ack: Vec<AckRoute>,
    /// Market-data streams: after {"op":"subscribe","streams":[...]}, send each subscribed stream R quotes per second, {"type":"quote","stream":NAME,"seq":N,"price":P,"ts":UNIX_MS} with N = 1, 2, 3, ... per connection and stream (0 = subscriptions are only acknowledged).
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    pub stream_rate: f64,
    /// Market-data streams: skip (never send) every Kth seq of each connection's stream, a gap the client can detect (0 = none).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub stream_gap_every: u64,
    /// Agree to permessage-deflate (RFC 7692) with clients that offer it: `deflate`, or
    /// `deflate:` with any of server_no_context_takeover, client_no_context_takeover,
    /// server_max_window_bits=N, client_max_window_bits=N (comma-separated), asked of every
    /// client on top of its offer. Every message sent is then compressed, so a fan-out run
    /// shows what compression costs the gateway. Default: offers are declined.
    #[arg(long, value_name = "deflate[:PARAMS]", value_parser = crate::proto::ws::deflate::Offer::parse)]
    pub compression: Option<crate::proto::ws::deflate::Offer>,
    /// Read buffer per connection in bytes (at least 256).
    #[arg(long, default_value_t = 4096, value_parser = read_buffer)]
    pub read_buffer: usize,
    /// Listen backlog (also capped by net.core.somaxconn).
    #[arg(long, default_value_t = 4096)]
    pub backlog: i32,
    /// Exit by itself after this long, more than 0 (default: until Ctrl-C, SIGTERM or SIGHUP).
    #[arg(long, value_parser = positive_duration)]
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
    /// Capacity cap (tests, demos): answer upgrades beyond N open WebSockets with 503.
    #[arg(long, value_name = "N", value_parser = cap_count, help_heading = "Capacity caps")]
    pub max_connections: Option<u64>,
    /// Capacity cap: accept at most R connections a second; beyond it the listen backlog
    /// fills and connects time out.
    #[arg(long, value_name = "R", value_parser = cap_rate, help_heading = "Capacity caps")]
    pub max_accept_rate: Option<f64>,
    /// Capacity cap: read at most R messages a second; beyond it messages wait in the
    /// sockets, so echo latency grows (nothing is dropped).
    #[arg(long, value_name = "R", value_parser = cap_rate, help_heading = "Capacity caps")]
    pub max_msg_rate: Option<f64>,
}

/// `--max-connections`: at least 1.
fn cap_count(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "`{s}` is not a connection count of at least 1 (e.g. 3000)"
        )),
    }
}

/// `--max-accept-rate`, `--max-msg-rate`: a rate per second above 0.
fn cap_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate per second above 0 (e.g. 2000)"
        )),
    }
}

/// `serve --threads`: at least 1.
fn threads(s: &str) -> Result<usize, String> {
    at_least(s, 1, "at least one event-loop thread (e.g. 1)")
}

/// `serve --read-buffer`: at least the gateway's minimum.
fn read_buffer(s: &str) -> Result<usize, String> {
    at_least(
        s,
        gateway::MIN_READ_BUFFER,
        &format!("at least {} bytes (e.g. 4096)", gateway::MIN_READ_BUFFER),
    )
}

/// A count of at least `min`; `fix` says what to give instead.
fn at_least(s: &str, min: usize, fix: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        Ok(_) => Err(format!("too small: give {fix}")),
        Err(e) => Err(format!("{e}: give {fix}")),
    }
}

/// `serve --duration`: a duration longer than zero (a zero one would stop before serving).
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse::duration(s)?;
    if d.is_zero() {
        return Err(
            "must be longer than 0 (e.g. 30s; leave it out to serve until a signal)".into(),
        );
    }
    Ok(d)
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

/// A byte count: digits with an optional binary unit, `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`,
/// `G`/`GB`/`GiB` (any case; all powers of 1024), e.g. `4MiB`, `64k`, `1048576`.
pub(super) fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("`{s}` is not a size (e.g. 4MiB, 64KiB, 1048576)")),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!("`{s}` is not a size of at least 1 byte (e.g. 4MiB, 64KiB, 1048576)")
        })
}

/// Checks the limits that depend on each other: one message must fit in the output queue and
/// in the budget of unfinished messages.
fn check_limits(a: &ServeArgs) -> Result<(), CliError> {
    for (flag, value) in [
        ("--max-queued-bytes", a.max_queued_bytes),
        ("--max-unfinished-bytes", a.max_unfinished_bytes),
        ("--max-relay-bytes", a.max_relay_bytes),
    ] {
        if value < a.max_message_size {
            return Err(PlanError::invalid(
                flag,
                format!(
                    "{value} bytes is below --max-message-size ({} bytes): one message must fit; raise it or lower --max-message-size",
                    a.max_message_size
                ),
            )
            .into());
        }
    }
    if a.handshake_timeout < Duration::from_millis(1) {
        return Err(PlanError::invalid("--handshake-timeout", "must be at least 1ms").into());
    }
    Ok(())
}

/// The warning for a listen address other hosts can reach; `None` for loopback.
fn exposure_warning(listen: SocketAddr) -> Option<String> {
    crate::results::live::exposed(
        "--listen",
        listen,
        "the built-in gateway has no authentication and is meant for tests: use 127.0.0.1 unless other hosts must reach it",
    )
}

/// `ACTION=REPLY_TYPE:FIELD` of `serve --ack`.
fn parse_ack(s: &str) -> Result<AckRoute, String> {
    s.parse().map_err(|e: gateway::ServerError| e.to_string())
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

pub(super) fn serve(a: &ServeArgs) -> Result<u8, CliError> {
    let ctl = control();
    check_limits(a)?;
    if let Some(warning) = exposure_warning(a.listen) {
        eprintln!("{warning}");
    }
    let (tls, ca_pem) = serve_tls(a)?;
    let gw = Gateway::start(serve_config(a, tls))?;
    let mut tls_note = String::new();
    if let Some(pem) = ca_pem {
        let path = a.ca_out.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("sockstorm-ca-{}.pem", gw.local_addr().port()))
        });
        std::fs::write(&path, pem).map_err(|source| CliError::CaOut {
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
    let (mode, faults) = described(a);
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
    print_stopped(a, &s);
    Ok(EXIT_OK)
}

/// The gateway's settings from `serve`'s flags.
fn serve_config(a: &ServeArgs, tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> ServeConfig {
    ServeConfig {
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
        keepalive: a.ping_interval.map(|i| (i, a.ping_timeout)),
        slow_consumer_timeout: a.slow_consumer_timeout,
        acks: a.ack.clone(),
        stream_rate: a.stream_rate,
        stream_gap_every: a.stream_gap_every,
        max_queued_bytes: a.max_queued_bytes,
        max_message_size: a.max_message_size,
        max_unfinished_bytes: a.max_unfinished_bytes,
        max_relay_bytes: a.max_relay_bytes,
        handshake_timeout: a.handshake_timeout,
        reuse_port: a.reuse_port,
        max_connections: a.max_connections.unwrap_or(0),
        max_accept_rate: a.max_accept_rate.unwrap_or(0.0),
        max_msg_rate: a.max_msg_rate.unwrap_or(0.0),
        compression: a.compression,
        ..ServeConfig::default()
    }
}

/// What the gateway serves (echo, fan-out, ack routes, compression, streams) and the faults
/// it injects, as the listening line says them.
fn described(a: &ServeArgs) -> (String, String) {
    let mut mode = "echo + channels".to_owned();
    if a.publish_rate > 0.0 {
        mode.push_str(&format!(" + fan-out {}/s", a.publish_rate));
    }
    if !a.ack.is_empty() {
        let routes: Vec<String> = a.ack.iter().map(AckRoute::to_string).collect();
        mode.push_str(&format!(" + ack routes {}", routes.join(" ")));
    }
    if let Some(c) = &a.compression {
        let mut asked = vec![];
        if c.server_no_context_takeover {
            asked.push("server_no_context_takeover".to_owned());
        }
        if c.client_no_context_takeover {
            asked.push("client_no_context_takeover".to_owned());
        }
        if let Some(b) = c.server_max_window_bits {
            asked.push(format!("server_max_window_bits={b}"));
        }
        if let Some(b) = c.client_max_window_bits {
            asked.push(format!("client_max_window_bits={b}"));
        }
        mode.push_str(" + permessage-deflate");
        if !asked.is_empty() {
            mode.push_str(&format!(" ({})", asked.join(", ")));
        }
    }
    if a.stream_rate > 0.0 {
        mode.push_str(&format!(" + streams {}/s", a.stream_rate));
        if a.stream_gap_every > 0 {
            mode.push_str(&format!(" (every {}th seq skipped)", a.stream_gap_every));
        }
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
    (mode, faults)
}

/// The totals `serve` prints when it stops.
fn print_stopped(a: &ServeArgs, s: &gateway::GatewayStats) {
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
    if s.compressed_sessions > 0 {
        println!(
            "sockstorm serve: permessage-deflate: {} compressed sessions",
            s.compressed_sessions
        );
    }
    if s.acks > 0 {
        println!("sockstorm serve: acks: {}", s.acks);
    }
    if s.stream_msgs > 0 || s.stream_skipped > 0 {
        println!(
            "sockstorm serve: streams: {} quotes, {} seqs skipped, {} gaps visible",
            s.stream_msgs, s.stream_skipped, s.stream_gaps_visible
        );
    }
    let faults = gateway::fault_totals(s);
    if !faults.is_empty() {
        println!("sockstorm serve: {}", faults.trim_start());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("64k"), Ok(64 << 10));
        assert_eq!(parse_bytes("64 KB"), Ok(64 << 10));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("10B"), Ok(10));
        for bad in [
            "",
            "0",
            "0MiB",
            "MiB",
            "1.5MiB",
            "1 TB",
            "-1",
            "99999999999999999999G",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_loopback_listens_quietly() {
        let warn = |a: &str| exposure_warning(a.parse().unwrap());
        assert_eq!(warn("127.0.0.1:8080"), None);
        assert_eq!(warn("[::1]:8080"), None);
        let all = warn("0.0.0.0:8080").unwrap();
        assert!(all.starts_with("warning: --listen 0.0.0.0:8080 "), "{all}");
        assert!(all.contains("every network interface"), "{all}");
        assert!(warn("[::]:80").unwrap().contains("every network interface"));
        assert!(warn("192.168.1.5:8080")
            .unwrap()
            .contains("from the network"));
    }
}
