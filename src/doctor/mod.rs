//! Host limits and tuning checks (`sockstorm doctor`).
//!
//! The model is read, then judge, then print:
//!
//! 1. [`run`] reads the host into [`Readings`]: rlimits, sysctls under `/proc/sys`, `/proc/meminfo`,
//!    the CPU and NUMA topology under `/sys`, and a live io_uring probe (a small ring is created
//!    and asked which opcodes and features it supports). Every reading is a [`Reading`]: the
//!    value, or the reason it could not be read. Reading never panics.
//! 2. [`verdict`] is pure: it turns [`Readings`] and [`DoctorOptions`] into one [`LimitCheck`]
//!    per limit that caps the number of connections (open files, `fs.nr_open`, `fs.file-max`,
//!    ephemeral ports, memory), each with its capacity and, when `-c N` does not fit, the
//!    concrete fix; plus notes on settings that do not cap the count but shape a run
//!    (TIME_WAIT reuse, listen queues of a gateway on this host, io_uring, CPUs).
//! 3. [`DoctorReport`] holds both; `Display` is the human report, [`DoctorReport::to_json`] the
//!    machine one.
//!
//! One file per area of the host, each with its readings, parsers, checks and notes: `limits`
//! (open files and memory), `ports` (ephemeral ports, TIME_WAIT, conntrack), `listen` (listen
//! queues of a gateway on this host), `uring` (kernel version and the live io_uring probe),
//! `cpus` (CPUs and NUMA nodes). `procfs` holds the shared file readers and list parsers,
//! `verdict` the judgement, and `report` the human and JSON output.
//!
//! Parsers for each `/proc` text are small pure functions with tests on fixture strings; the
//! files the fixes refer to live in `tuning/` at the repository root.

use std::net::SocketAddr;
use std::ops::RangeInclusive;

mod cpus;
#[cfg(test)]
mod fixtures;
mod limits;
mod listen;
mod ports;
mod procfs;
mod report;
mod uring;
mod verdict;

pub use cpus::{CpuReadings, NumaNode};
pub use limits::MemInfo;
pub use ports::{Conntrack, PortRange};
pub use uring::{KernelVersion, OpcodeSupport, Support, UringReadings};
pub use verdict::{verdict, CheckStatus, LimitCheck, Verdict};

use procfs::{parse_cpulist, parse_u64, read_with};

/// What `sockstorm doctor` is asked to check. Defaults: no connection count, no target, one
/// source address, one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorOptions {
    /// Connections the run will hold open from this host (`-c N`); `None` only reports readings.
    pub connections: Option<u64>,
    /// The gateway the run targets; a loopback target adds notes about a gateway on this host.
    pub target: Option<SocketAddr>,
    /// Source addresses the run rotates (`--source-ip`), at least 1 (0 is read as 1).
    pub source_ips: u32,
    /// Target addresses the connections are spread over (`--target` repeated), at least 1:
    /// each (source, target) pair has its own ports.
    pub targets: u32,
    /// Client shards (one per CPU) the run will start.
    pub shards: usize,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            connections: None,
            target: None,
            source_ips: 1,
            targets: 1,
            shards: 1,
        }
    }
}

/// A host reading, or why it could not be read: the report prints `unknown (<reason>)`, the
/// JSON `{"unknown": "<reason>"}`.
pub type Reading<T> = Result<T, String>;

/// Everything `doctor` reads from the host; plain data, so verdicts can be tested on made-up
/// readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readings {
    /// RLIMIT_NOFILE as (soft, hard).
    pub nofile: Reading<(u64, u64)>,
    /// `fs.nr_open`: the highest RLIMIT_NOFILE any process may get.
    pub nr_open: Reading<u64>,
    /// `fs.file-max`: open files allowed system-wide.
    pub file_max: Reading<u64>,
    /// Open files allocated system-wide now (`fs.file-nr`, first field).
    pub files_in_use: Reading<u64>,
    /// `net.ipv4.ip_local_port_range`: the ephemeral ports connect() picks from; each (source,
    /// destination, destination port) has the whole range.
    pub port_range: Reading<PortRange>,
    /// `net.ipv4.ip_local_reserved_ports`: ports connect() never picks.
    pub reserved_ports: Reading<Vec<RangeInclusive<u32>>>,
    /// The conntrack table; `None` when `nf_conntrack` is not loaded (no limit).
    pub conntrack: Reading<Option<Conntrack>>,
    /// `net.ipv4.tcp_tw_reuse`: 0 off, 1 on, 2 loopback only.
    pub tcp_tw_reuse: Reading<u64>,
    /// `net.ipv4.tcp_fin_timeout` in seconds (FIN_WAIT_2, not TIME_WAIT).
    pub tcp_fin_timeout: Reading<u64>,
    /// `net.core.somaxconn`: cap on a listen backlog.
    pub somaxconn: Reading<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`: half-open connections a listener keeps.
    pub tcp_max_syn_backlog: Reading<u64>,
    /// The running kernel's version (`kernel.osrelease`); io_uring features are dated by it.
    pub kernel: Reading<KernelVersion>,
    /// The `kernel.io_uring_disabled` switch and what a live probe ring accepts.
    pub uring: UringReadings,
    /// CPUs this process may use, CPUs online, and NUMA nodes.
    pub cpu: CpuReadings,
    /// `MemTotal` and `MemAvailable` from `/proc/meminfo`.
    pub memory: Reading<MemInfo>,
}

/// What `sockstorm doctor` found: the options, every reading, and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorReport {
    /// The options the report was made for.
    pub options: DoctorOptions,
    /// Everything read from the host.
    pub readings: Readings,
    /// The judgement of `readings` against `options`: limit checks, ceiling and notes.
    pub verdict: Verdict,
}

impl DoctorReport {
    /// Whether the requested connections fit; `None` when no count was given.
    pub fn fits(&self) -> Option<bool> {
        self.verdict.fits()
    }
}

/// Reads the host and judges it against `opts`. Never panics: whatever cannot be read is
/// reported as unknown, with the reason.
pub fn run(opts: &DoctorOptions) -> DoctorReport {
    let readings = read_host();
    let verdict = verdict(&readings, opts);
    DoctorReport {
        options: opts.clone(),
        readings,
        verdict,
    }
}

fn read_host() -> Readings {
    let kernel = read_with(uring::OSRELEASE, uring::parse_kernel_release);
    let uring = uring::read_uring(&kernel);
    Readings {
        nofile: crate::io::sock::nofile_limit()
            .map_err(|e| format!("getrlimit(RLIMIT_NOFILE): {e}")),
        nr_open: read_with(limits::NR_OPEN, parse_u64),
        file_max: read_with(limits::FILE_MAX, parse_u64),
        files_in_use: read_with(limits::FILE_NR, limits::parse_file_nr),
        port_range: read_with(ports::PORT_RANGE, ports::parse_port_range),
        reserved_ports: read_with(ports::RESERVED_PORTS, parse_cpulist),
        tcp_tw_reuse: read_with(ports::TCP_TW_REUSE, parse_u64),
        tcp_fin_timeout: read_with(ports::TCP_FIN_TIMEOUT, parse_u64),
        conntrack: ports::read_conntrack(),
        somaxconn: read_with(listen::SOMAXCONN, parse_u64),
        tcp_max_syn_backlog: read_with(listen::TCP_MAX_SYN_BACKLOG, parse_u64),
        kernel,
        uring,
        cpu: cpus::read_cpus(),
        memory: read_with(limits::MEMINFO, limits::parse_meminfo),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::report::SECTIONS;
    use super::*;

    #[test]
    fn run_on_this_host_reports_every_section() {
        let report = run(&DoctorOptions {
            connections: None,
            ..DoctorOptions::default()
        });
        assert_eq!(report.fits(), None);
        let text = report.to_string();
        for section in SECTIONS {
            assert!(
                text.contains(&format!("\n{section}\n")),
                "missing {section:?} in\n{text}"
            );
        }
        for key in [
            "RLIMIT_NOFILE",
            "fs.nr_open",
            "fs.file-max",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.tcp_tw_reuse",
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.tcp_fin_timeout",
            "kernel.io_uring_disabled",
            "opcode Connect",
            "opcode Bind",
            "provided buffer rings",
            "available_parallelism",
            "MemAvailable",
        ] {
            assert!(text.contains(key), "missing {key:?} in\n{text}");
        }
        let json = report.to_json();
        for key in [
            "nofile",
            "net.ipv4.ip_local_port_range",
            "io_uring",
            "cpu",
            "memory",
            "verdict",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        assert_eq!(json["verdict"]["fits"], Value::Null);

        let report = run(&DoctorOptions {
            connections: Some(100),
            ..DoctorOptions::default()
        });
        assert!(report.fits().is_some());
        assert!(report.to_string().contains("100 connections"));
    }
}
