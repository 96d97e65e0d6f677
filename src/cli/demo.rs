//! `sockstorm demo`: the built-in gateway in-process, stormed by three scenarios built from
//! words through the same parser as the command line.

use super::args::RunArgs;
use super::run::storm;
use super::CliError;
use crate::certs;
use crate::io::sock;
use crate::plan::{self, parse, prepare, PlanError, Run, RunPlan};
use crate::server::{self as gateway, Gateway, ServeConfig, ServerTlsOptions};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Instead of the storm: `find-max connections` against the gateway capped at 2,000 open
    /// WebSockets (`serve --max-connections 2000`), in well under a minute.
    #[arg(long)]
    pub find_max: bool,
}

/// The cap of `demo --find-max`'s gateway.
const DEMO_CAP: u64 = 2000;

/// Starts the gateway in-process and storms it with three scenarios.
pub(super) fn demo(a: &DemoArgs) -> Result<u8, CliError> {
    if a.find_max {
        return demo_find_max(a);
    }
    let (soft, _) = sock::raise_nofile_limit().unwrap_or((1024, 1024));
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
    let gw = demo_gateway(gw_cpu, |c| c.tls = tls)?;
    let scheme = if a.tls { "wss" } else { "ws" };
    let url = format!("{scheme}://{}/demo", gw.local_addr());
    let mut tls_flags = Vec::new();
    if let Some(ca) = &ca {
        let path =
            std::env::temp_dir().join(format!("sockstorm-demo-ca-{}.pem", gw.local_addr().port()));
        std::fs::write(&path, &ca.ca_pem).map_err(|source| CliError::CaOut {
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
    let scenarios = demo_scenarios(a, &url, connections, &client_cpus, &tls_flags)?;
    let code = prepare(Run::new(scenarios, Vec::new(), None))
        .map_err(CliError::from)
        .and_then(|run| storm(&run));
    let s = gw.stats();
    gw.shutdown();
    eprintln!(
        "sockstorm demo: gateway accepted {} connections, answered {} messages. The process CPU and RSS \
         above include the in-process gateway; `sockstorm serve` + `sockstorm run` measure the client alone.",
        s.accepted, s.msgs_out
    );
    code
}

/// The demo's in-process gateway: loopback, any free port, one thread pinned to `cpu`, no
/// report of its own; `tweak` sets the rest.
fn demo_gateway(cpu: usize, tweak: impl FnOnce(&mut ServeConfig)) -> Result<Gateway, CliError> {
    let mut cfg = ServeConfig {
        listen: "127.0.0.1:0"
            .parse()
            .unwrap_or_else(|_| unreachable!("constant address")),
        threads: 1,
        cpus: vec![cpu],
        report: false,
        ..ServeConfig::default()
    };
    tweak(&mut cfg);
    Ok(Gateway::start(cfg)?)
}

/// `demo --find-max`: the search against a gateway with a known limit.
fn demo_find_max(a: &DemoArgs) -> Result<u8, CliError> {
    let cpus = plan::available_cpus();
    let gw_cpu = cpus.last().copied().unwrap_or(0);
    let client_cpu = cpus.first().copied().unwrap_or(0);
    let gw = demo_gateway(gw_cpu, |c| c.max_connections = DEMO_CAP)?;
    let url = format!("ws://{}/demo", gw.local_addr());
    eprintln!(
        "sockstorm demo: built-in gateway on {url} (CPU {gw_cpu}) capped at {DEMO_CAP} open WebSockets \
         (serve --max-connections {DEMO_CAP}); find-max connections from 500, ×1.5, each step held 2 s"
    );
    let mut words = vec![
        url,
        "--connect-rate".to_owned(),
        "4000".to_owned(),
        "--ping-interval".to_owned(),
        "1s".to_owned(),
        "--cpus".to_owned(),
        client_cpu.to_string(),
    ];
    if let Some(path) = &a.json {
        words.extend(["--json".into(), path.display().to_string()]);
    }
    if a.quiet {
        words.push("-q".into());
    }
    let search = plan::find_max::SearchWords {
        start: Some(500.0),
        step_hold: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let code = super::find_max::search("connections", &search, words, None);
    let s = gw.stats();
    gw.shutdown();
    eprintln!(
        "sockstorm demo: the gateway refused {} upgrades with 503 beyond its cap of {DEMO_CAP}",
        s.handshakes_rejected
    );
    code
}

/// The demo's three scenarios, from words through the same parser as the command line:
/// echo sessions; a tenth of the connections subscribed to a channel that two publishers
/// feed from the second second on (fan-out latency, loss, broadcast completion).
fn demo_scenarios(
    a: &DemoArgs,
    url: &str,
    connections: u64,
    cpus: &[usize],
    tls_flags: &[String],
) -> Result<Vec<RunPlan>, CliError> {
    let subscribers = (connections / 10).max(1);
    let publishers = 2;
    let echo_count = connections.saturating_sub(subscribers + publishers).max(1);
    let total = (echo_count + subscribers) as f64;
    let share = |n: u64| (a.connect_rate * n as f64 / total).to_string();
    let cpus: Vec<String> = cpus.iter().map(usize::to_string).collect();
    let mut common: Vec<String> = vec![
        url.to_owned(),
        "-d".into(),
        format!("{}us", a.duration.as_micros()),
        "--ping-interval".into(),
        "5s".into(),
        "--cpus".into(),
        cpus.join(","),
    ];
    if let Some(path) = &a.json {
        common.extend(["--json".into(), path.display().to_string()]);
    }
    if a.quiet {
        common.push("-q".into());
    }
    common.extend(tls_flags.iter().cloned());
    let plan = |name: &str, words: &[&str]| -> Result<RunPlan, CliError> {
        let words = common
            .iter()
            .cloned()
            .chain(words.iter().map(|w| (*w).to_owned()));
        let args = RunArgs::from_words(words).map_err(|e| PlanError::Invalid {
            flag: "demo",
            reason: e.to_string(),
        })?;
        let mut p = args.plan()?;
        p.name = name.into();
        Ok(p)
    };
    let echo = plan(
        "echo",
        &[
            "-c",
            &echo_count.to_string(),
            "--connect-rate",
            &share(echo_count),
            "--send-on-open",
            r#"{"type":"subscribe","channel":"demo"}"#,
            "--message",
            r#"{"type":"echo","payload":"sockstorm demo message"}"#,
            "--message-rate",
            "1",
            // The gateway acknowledges the subscribe: time it.
            "--expect",
            "json:type=subscribed",
        ],
    )?;
    let feed = ["--role", "subscriber", "--channel", "demo-feed"];
    let (subs, rate) = (subscribers.to_string(), share(subscribers));
    let feed_words = [&["-c", subs.as_str(), "--connect-rate", &rate], &feed[..]].concat();
    let feed_plan = plan("feed", &feed_words)?;
    let mut publish = plan(
        "publishers",
        &[
            "-c",
            &publishers.to_string(),
            "--connect-rate",
            "100",
            "--message-rate",
            "2",
            "--role",
            "publisher",
            "--channel",
            "demo-feed",
        ],
    )?;
    publish.start = Duration::from_secs(1).min(a.duration / 2);
    Ok(vec![echo, feed_plan, publish])
}
