//! `sockstorm doctor`: this host's limits and tuning for N connections.

use super::{EXIT_FAILURES, EXIT_OK};
use crate::doctor::{self, DoctorOptions};
use crate::plan::{self, parse};
use clap::Args;
use std::net::SocketAddr;

/// Flags of `sockstorm doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Connections you plan to open: say whether they fit and what to change.
    #[arg(short = 'c', long)]
    pub connections: Option<u64>,
    /// Target address (host:port) the connections go to; repeat it for a run over several
    /// targets (ports are per source and target, so each adds a port budget).
    #[arg(long)]
    pub target: Vec<SocketAddr>,
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

pub(super) fn doctor_cmd(a: &DoctorArgs) -> u8 {
    let opts = DoctorOptions {
        connections: a.connections,
        target: a.target.first().copied(),
        targets: a.target.len().max(1) as u32,
        // Without --source-ip, count what `run` would choose (it spreads loopback targets,
        // sized by each target's share).
        source_ips: a.source_ip.as_ref().map_or_else(
            || match (a.target.first(), a.connections) {
                (Some(t), Some(n)) => {
                    let share = n.div_ceil(a.target.len().max(1) as u64);
                    plan::auto_sources(t.ip(), share).len().max(1) as u32
                }
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
