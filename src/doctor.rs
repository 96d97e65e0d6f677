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
//! Parsers for each `/proc` text are small pure functions with tests on fixture strings; the
//! files the fixes refer to live in `tuning/` at the repository root.

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;

use io_uring::opcode;
use serde_json::{json, Value};

/// File descriptors the process needs besides connection sockets: stdio, rings, eventfds,
/// timers, log and result files.
const RESERVED_FDS: u64 = 64;
/// Rough kernel memory of one idle TCP socket (file, inode, dentry, sock), in bytes.
const KERNEL_BYTES_PER_CONN: u64 = 4 * 1024;
/// Rough client memory of one idle connection (state machine, slab slot, timer entry), in bytes.
const CLIENT_BYTES_PER_CONN: u64 = 1024;
/// The ephemeral port range `tuning/sysctl.d/90-sockstorm-loadgen.conf` sets.
const WIDE_PORT_RANGE: PortRange = PortRange {
    low: 1024,
    high: 65535,
};
/// Listen-queue size `tuning/sysctl.d/90-sockstorm-gateway.conf` sets.
const GATEWAY_BACKLOG: u64 = 65535;
/// Seconds a closed connection's tuple stays in TIME_WAIT (`TCP_TIMEWAIT_LEN`, not tunable).
const TIME_WAIT_SECS: u64 = 60;

const NR_OPEN: &str = "/proc/sys/fs/nr_open";
const FILE_MAX: &str = "/proc/sys/fs/file-max";
const FILE_NR: &str = "/proc/sys/fs/file-nr";
const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
const TCP_TW_REUSE: &str = "/proc/sys/net/ipv4/tcp_tw_reuse";
const TCP_FIN_TIMEOUT: &str = "/proc/sys/net/ipv4/tcp_fin_timeout";
const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";
const TCP_MAX_SYN_BACKLOG: &str = "/proc/sys/net/ipv4/tcp_max_syn_backlog";
const OSRELEASE: &str = "/proc/sys/kernel/osrelease";
const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";
const CPU_ONLINE: &str = "/sys/devices/system/cpu/online";
const NODE_DIR: &str = "/sys/devices/system/node";
const MEMINFO: &str = "/proc/meminfo";
const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
const CONNTRACK_COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";

/// Section titles of the human report, in print order.
const SECTIONS: [&str; 7] = [
    "Open files",
    "Ports",
    "Listen queues (gateway on this host)",
    "io_uring",
    "CPUs",
    "Memory",
    "Verdict",
];

/// The io_uring opcodes the backend submits: (name, opcode, first kernel).
const OPCODES: [(&str, u8, &str); 8] = [
    ("Connect", opcode::Connect::CODE, "5.5"),
    ("Send", opcode::Send::CODE, "5.6"),
    (
        "Recv",
        opcode::Recv::CODE,
        "5.6; RecvMulti uses it, multishot since 6.0",
    ),
    ("Close", opcode::Close::CODE, "5.6"),
    ("AsyncCancel", opcode::AsyncCancel::CODE, "5.5"),
    ("Read", opcode::Read::CODE, "5.6"),
    ("Socket", opcode::Socket::CODE, "5.19"),
    ("Bind", opcode::Bind::CODE, "6.11"),
];

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
    /// Client shards (one per CPU) the run will start.
    pub shards: usize,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            connections: None,
            target: None,
            source_ips: 1,
            shards: 1,
        }
    }
}

/// A host reading, or the reason it could not be read (reported as "unknown: <reason>").
pub type Reading<T> = Result<T, String>;

/// The ephemeral port range `net.ipv4.ip_local_port_range`, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port of the range.
    pub low: u16,
    /// Last port of the range.
    pub high: u16,
}

impl PortRange {
    /// Number of ports in the range.
    pub fn size(&self) -> u64 {
        u64::from(self.high).saturating_sub(u64::from(self.low)) + 1
    }
}

/// Memory figures from `/proc/meminfo`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`: usable RAM.
    pub total_kib: u64,
    /// `MemAvailable`: what new allocations can get without swapping.
    pub available_kib: u64,
}

/// The running kernel's version, from `kernel.osrelease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelVersion {
    /// The full release string, e.g. `6.8.0-45-generic`.
    pub release: String,
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch level (0 when the release has none).
    pub patch: u32,
}

impl KernelVersion {
    /// Whether this kernel is `major.minor` or newer.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

/// Whether a kernel feature can be used, as found by trying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// The kernel accepted it.
    Yes,
    /// The kernel refused it; the reason says why and what would fix it.
    No(String),
    /// It could not be tried; the reason says why.
    Unknown(String),
}

impl Support {
    fn is_yes(&self) -> bool {
        matches!(self, Self::Yes)
    }

    fn from_bool(yes: bool, no: impl FnOnce() -> String) -> Self {
        if yes {
            Self::Yes
        } else {
            Self::No(no())
        }
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Yes => f.write_str("yes"),
            Self::No(why) => write!(f, "no ({why})"),
            Self::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

/// One io_uring opcode the backend submits and whether the kernel supports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpcodeSupport {
    /// The `io_uring::opcode` type name.
    pub name: &'static str,
    /// The first kernel that has it.
    pub since: &'static str,
    /// What `IORING_REGISTER_PROBE` said.
    pub support: Support,
}

/// io_uring availability, from the sysctl and a live probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringReadings {
    /// `kernel.io_uring_disabled` (6.6+): 0 enabled, 1 only for `kernel.io_uring_group`, 2 off.
    pub disabled: Reading<u32>,
    /// Whether a plain ring can be created at all.
    pub ring: Support,
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0+).
    pub single_issuer: Support,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1+).
    pub defer_taskrun: Support,
    /// The opcodes the backend submits.
    pub opcodes: Vec<OpcodeSupport>,
    /// Provided buffer rings (`IORING_REGISTER_PBUF_RING`, 5.19+).
    pub buf_ring: Support,
    /// Multishot recv (6.0+); the probe cannot tell, so this comes from the kernel version.
    pub multishot_recv: Support,
}

/// The connection-tracking table (netfilter), present when `nf_conntrack` is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conntrack {
    /// `net.netfilter.nf_conntrack_max`: tracked flows allowed.
    pub max: u64,
    /// `net.netfilter.nf_conntrack_count`: flows tracked now.
    pub count: u64,
}

/// One NUMA node and its CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// Node number (`nodeN`).
    pub id: u32,
    /// The node's `cpulist`, e.g. `0-15,32-47` (empty for a memory-only node).
    pub cpulist: String,
    /// Number of CPUs in `cpulist`.
    pub cpus: u64,
}

/// CPU topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuReadings {
    /// `std::thread::available_parallelism`: CPUs this process may use (affinity, cgroup quota).
    pub available: Reading<usize>,
    /// `/sys/devices/system/cpu/online` as (list, count).
    pub online: Reading<(String, u64)>,
    /// NUMA nodes from `/sys/devices/system/node/node*/cpulist`.
    pub numa_nodes: Reading<Vec<NumaNode>>,
}

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
    /// `net.ipv4.ip_local_port_range`.
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
    /// The running kernel.
    pub kernel: Reading<KernelVersion>,
    /// io_uring availability.
    pub uring: UringReadings,
    /// CPU topology.
    pub cpu: CpuReadings,
    /// `/proc/meminfo`.
    pub memory: Reading<MemInfo>,
}

/// How one limit compares with the requested connection count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// The limit allows the requested connections.
    Ok,
    /// The limit is below the requested connections; the check carries the fix.
    TooLow,
    /// The limit could not be read.
    Unknown,
    /// No connection count was given; only the capacity is reported.
    Info,
}

/// One limit that caps the number of connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitCheck {
    /// Which limit, e.g. `open files (RLIMIT_NOFILE)`.
    pub limit: &'static str,
    /// Connections this limit allows, if it could be read.
    pub capacity: Option<u64>,
    /// How the capacity compares with the requested connections.
    pub status: CheckStatus,
    /// The numbers behind the capacity, or why it is unknown.
    pub detail: String,
    /// What to change when the status is `TooLow`.
    pub fix: Option<String>,
}

/// The judgement on a set of readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The requested connections, if any.
    pub connections: Option<u64>,
    /// One check per limit.
    pub checks: Vec<LimitCheck>,
    /// The smallest known capacity and the limit it comes from.
    pub ceiling: Option<(u64, &'static str)>,
    /// Settings that do not cap the count but shape a run.
    pub notes: Vec<String>,
}

impl Verdict {
    /// `None` without a connection count; otherwise `Some(false)` if any limit is too low.
    /// Limits that could not be read do not count as failures (they are reported as unknown).
    pub fn fits(&self) -> Option<bool> {
        self.connections?;
        Some(self.checks.iter().all(|c| c.status != CheckStatus::TooLow))
    }
}

/// What `sockstorm doctor` found: the options, every reading, and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorReport {
    /// The options the report was made for.
    pub options: DoctorOptions,
    /// Everything read from the host.
    pub readings: Readings,
    /// Limit checks and notes.
    pub verdict: Verdict,
}

impl DoctorReport {
    /// Whether the requested connections fit; `None` when no count was given.
    pub fn fits(&self) -> Option<bool> {
        self.verdict.fits()
    }

    /// The report as JSON; unreadable values appear as `{"unknown": "<reason>"}`.
    pub fn to_json(&self) -> Value {
        let r = &self.readings;
        let o = &self.options;
        let u = &r.uring;
        let opcodes: serde_json::Map<String, Value> = u
            .opcodes
            .iter()
            .map(|op| (op.name.to_owned(), support_json(&op.support)))
            .collect();
        json!({
            "options": {
                "connections": o.connections,
                "target": o.target.map(|t| t.to_string()),
                "source_ips": o.source_ips,
                "shards": o.shards,
            },
            "nofile": reading_json(&r.nofile, |&(soft, hard)| json!({"soft": soft, "hard": hard})),
            "fs.nr_open": reading_json(&r.nr_open, |v| json!(v)),
            "fs.file-max": reading_json(&r.file_max, |v| json!(v)),
            "fs.file-nr.allocated": reading_json(&r.files_in_use, |v| json!(v)),
            "net.ipv4.ip_local_port_range": reading_json(&r.port_range, |p| {
                json!({"low": p.low, "high": p.high, "size": p.size()})
            }),
            "net.ipv4.ip_local_reserved_ports": reading_json(&r.reserved_ports, |l| {
                json!(format_list(l))
            }),
            "ports": {
                "per_tuple": reading_json(&port_budget(r), |v| json!(v)),
                "total": reading_json(&port_budget(r), |v| {
                    json!(v.saturating_mul(u64::from(o.source_ips.max(1))))
                }),
            },
            "net.netfilter.nf_conntrack": reading_json(&r.conntrack, |c| match c {
                Some(c) => json!({"max": c.max, "count": c.count}),
                None => json!("not loaded"),
            }),
            "net.ipv4.tcp_tw_reuse": reading_json(&r.tcp_tw_reuse, |v| json!(v)),
            "net.ipv4.tcp_fin_timeout": reading_json(&r.tcp_fin_timeout, |v| json!(v)),
            "net.core.somaxconn": reading_json(&r.somaxconn, |v| json!(v)),
            "net.ipv4.tcp_max_syn_backlog": reading_json(&r.tcp_max_syn_backlog, |v| json!(v)),
            "kernel": reading_json(&r.kernel, |k| json!(k.release)),
            "io_uring": {
                "kernel.io_uring_disabled": reading_json(&u.disabled, |v| json!(v)),
                "ring": support_json(&u.ring),
                "single_issuer": support_json(&u.single_issuer),
                "defer_taskrun": support_json(&u.defer_taskrun),
                "opcodes": opcodes,
                "buf_ring": support_json(&u.buf_ring),
                "multishot_recv": support_json(&u.multishot_recv),
            },
            "cpu": {
                "available_parallelism": reading_json(&r.cpu.available, |v| json!(v)),
                "online": reading_json(&r.cpu.online, |(list, n)| json!({"list": list, "count": n})),
                "numa_nodes": reading_json(&r.cpu.numa_nodes, |nodes| {
                    json!(nodes
                        .iter()
                        .map(|n| json!({"node": n.id, "cpulist": n.cpulist, "cpus": n.cpus}))
                        .collect::<Vec<_>>())
                }),
            },
            "memory": reading_json(&r.memory, |m| {
                json!({"total_kib": m.total_kib, "available_kib": m.available_kib})
            }),
            "verdict": {
                "connections": self.verdict.connections,
                "fits": self.fits(),
                "ceiling": self.verdict.ceiling.map(|(n, limit)| json!({"connections": n, "limit": limit})),
                "checks": self.verdict.checks.iter().map(|c| json!({
                    "limit": c.limit,
                    "capacity": c.capacity,
                    "status": status_name(c.status),
                    "detail": c.detail,
                    "fix": c.fix,
                })).collect::<Vec<_>>(),
                "notes": self.verdict.notes,
            },
        })
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

// ---------------------------------------------------------------------------------------------
// Reading the host.

fn read_host() -> Readings {
    let kernel = read_with(OSRELEASE, parse_kernel_release);
    let uring = read_uring(&kernel);
    Readings {
        nofile: crate::io::sock::nofile_limit()
            .map_err(|e| format!("getrlimit(RLIMIT_NOFILE): {e}")),
        nr_open: read_with(NR_OPEN, parse_u64),
        file_max: read_with(FILE_MAX, parse_u64),
        files_in_use: read_with(FILE_NR, parse_file_nr),
        port_range: read_with(PORT_RANGE, parse_port_range),
        reserved_ports: read_with(RESERVED_PORTS, parse_cpulist),
        tcp_tw_reuse: read_with(TCP_TW_REUSE, parse_u64),
        tcp_fin_timeout: read_with(TCP_FIN_TIMEOUT, parse_u64),
        conntrack: read_conntrack(),
        somaxconn: read_with(SOMAXCONN, parse_u64),
        tcp_max_syn_backlog: read_with(TCP_MAX_SYN_BACKLOG, parse_u64),
        kernel,
        uring,
        cpu: read_cpus(),
        memory: read_with(MEMINFO, parse_meminfo),
    }
}

fn read_text(path: &Path) -> Reading<String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_with<T>(path: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Reading<T> {
    let text = read_text(Path::new(path))?;
    parse(&text).map_err(|e| format!("{path}: {e}"))
}

fn read_conntrack() -> Reading<Option<Conntrack>> {
    if !Path::new(CONNTRACK_MAX).exists() {
        return Ok(None);
    }
    let max = read_with(CONNTRACK_MAX, parse_u64)?;
    let count = read_with(CONNTRACK_COUNT, parse_u64)?;
    Ok(Some(Conntrack { max, count }))
}

fn read_cpus() -> CpuReadings {
    CpuReadings {
        available: std::thread::available_parallelism()
            .map(usize::from)
            .map_err(|e| format!("available_parallelism: {e}")),
        online: read_with(CPU_ONLINE, |text| {
            let list = parse_cpulist(text)?;
            Ok((text.trim().to_owned(), list_count(&list)))
        }),
        numa_nodes: read_numa(),
    }
}

fn read_numa() -> Reading<Vec<NumaNode>> {
    let entries = fs::read_dir(NODE_DIR).map_err(|e| format!("cannot read {NODE_DIR}: {e}"))?;
    let mut nodes = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("node"))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        let path = entry.path().join("cpulist");
        let text = read_text(&path)?;
        let list = parse_cpulist(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        nodes.push(NumaNode {
            id,
            cpulist: text.trim().to_owned(),
            cpus: list_count(&list),
        });
    }
    if nodes.is_empty() {
        return Err(format!("no node* entries in {NODE_DIR}"));
    }
    nodes.sort_by_key(|n| n.id);
    Ok(nodes)
}

/// Creates small rings to learn which setup flags, opcodes and features the kernel allows.
fn read_uring(kernel: &Reading<KernelVersion>) -> UringReadings {
    type Ring = io_uring::IoUring;

    let disabled = match fs::read_to_string(IO_URING_DISABLED) {
        Ok(text) => parse_u64(&text)
            .and_then(|v| u32::try_from(v).map_err(|e| e.to_string()))
            .map_err(|e| format!("{IO_URING_DISABLED}: {e}")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err("absent: kernels before 6.6 have no such switch".to_owned())
        }
        Err(e) => Err(format!("cannot read {IO_URING_DISABLED}: {e}")),
    };

    let (ring, single_issuer, defer_taskrun) = match Ring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)
    {
        Ok(ring) => (Ok(ring), Support::Yes, Support::Yes),
        Err(both) => match Ring::builder().setup_single_issuer().build(8) {
            Ok(ring) => (
                Ok(ring),
                Support::Yes,
                Support::No(explain_uring_error(&both, "6.1")),
            ),
            Err(single) => match Ring::new(8) {
                Ok(ring) => (
                    Ok(ring),
                    Support::No(explain_uring_error(&single, "6.0")),
                    Support::No("needs SINGLE_ISSUER".to_owned()),
                ),
                Err(plain) => {
                    let why = explain_uring_error(&plain, "5.1");
                    let untried = || Support::Unknown("no ring could be created".to_owned());
                    (Err(why), untried(), untried())
                }
            },
        },
    };

    let opcodes = match &ring {
        Ok(ring) => {
            let mut probe = io_uring::Probe::new();
            match ring.submitter().register_probe(&mut probe) {
                Ok(()) => OPCODES
                    .iter()
                    .map(|&(name, code, since)| OpcodeSupport {
                        name,
                        since,
                        support: Support::from_bool(probe.is_supported(code), || {
                            format!("not in this kernel's probe; needs {since}")
                        }),
                    })
                    .collect(),
                Err(e) => opcodes_unknown(&format!("IORING_REGISTER_PROBE (5.6+) failed: {e}")),
            }
        }
        Err(_) => opcodes_unknown("no ring could be created"),
    };

    let buf_ring = match &ring {
        // Unregistering a group that was never registered tells the two cases apart without
        // handing the kernel any memory: ENOENT means the command exists (5.19+), EINVAL that it
        // does not.
        Ok(ring) => match ring.submitter().unregister_buf_ring(u16::MAX) {
            Ok(()) => Support::Yes,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Support::Yes,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Support::No(format!(
                "IORING_UNREGISTER_PBUF_RING rejected ({e}); provided buffer rings need 5.19{}",
                kernel_suffix(kernel)
            )),
            Err(e) => Support::Unknown(format!("IORING_UNREGISTER_PBUF_RING: {e}")),
        },
        Err(_) => Support::Unknown(format!("no ring could be created{}", kernel_suffix(kernel))),
    };

    let multishot_recv = match kernel {
        Ok(k) => Support::from_bool(k.at_least(6, 0), || {
            format!("kernel {} is older than 6.0", k.release)
        }),
        Err(e) => Support::Unknown(e.clone()),
    };

    UringReadings {
        disabled,
        ring: match ring {
            Ok(_) => Support::Yes,
            Err(why) => Support::No(why),
        },
        single_issuer,
        defer_taskrun,
        opcodes,
        buf_ring,
        multishot_recv,
    }
}

fn opcodes_unknown(why: &str) -> Vec<OpcodeSupport> {
    OPCODES
        .iter()
        .map(|&(name, _, since)| OpcodeSupport {
            name,
            since,
            support: Support::Unknown(why.to_owned()),
        })
        .collect()
}

fn kernel_suffix(kernel: &Reading<KernelVersion>) -> String {
    match kernel {
        Ok(k) => format!("; kernel is {}", k.release),
        Err(_) => String::new(),
    }
}

/// Turns an `io_uring_setup` error into a cause a user can act on.
fn explain_uring_error(e: &io::Error, since: &str) -> String {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) => {
            "io_uring is off (kernel.io_uring_disabled) or blocked by a seccomp profile \
             (recent Docker releases block it by default)"
                .to_owned()
        }
        Some(libc::ENOSYS) => "kernel built without io_uring, or blocked by seccomp".to_owned(),
        Some(libc::ENOMEM) => {
            "RLIMIT_MEMLOCK too low (kernels before 5.12 charge rings to it)".to_owned()
        }
        Some(libc::EINVAL) => format!("not known to this kernel; needs {since}"),
        _ => format!("needs {since}"),
    };
    format!("{e}: {hint}")
}

// ---------------------------------------------------------------------------------------------
// Parsers: pure, one per /proc or /sys text.

/// Parses a single-number sysctl such as `fs.nr_open`.
fn parse_u64(text: &str) -> Result<u64, String> {
    let t = text.trim();
    t.parse()
        .map_err(|_| format!("expected a number, found {t:?}"))
}

/// Parses `net.ipv4.ip_local_port_range`: two ports separated by whitespace.
fn parse_port_range(text: &str) -> Result<PortRange, String> {
    let mut fields = text.split_whitespace();
    let (Some(low), Some(high), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(format!("expected two ports, found {:?}", text.trim()));
    };
    let port = |s: &str| s.parse::<u16>().map_err(|_| format!("not a port: {s:?}"));
    let (low, high) = (port(low)?, port(high)?);
    if low > high {
        return Err(format!("range {low} {high} is empty"));
    }
    Ok(PortRange { low, high })
}

/// Parses a kernel list such as a `cpulist` (`0-3,8`) or `ip_local_reserved_ports`
/// (`8080,9000-9010`); an empty text is an empty list.
fn parse_cpulist(text: &str) -> Result<Vec<RangeInclusive<u32>>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|item| {
            let num = |s: &str| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("bad list item {item:?}"))
            };
            let (a, b) = match item.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let a = num(item)?;
                    (a, a)
                }
            };
            if a > b {
                return Err(format!("bad list item {item:?}: {a} > {b}"));
            }
            Ok(a..=b)
        })
        .collect()
}

/// Number of entries in a parsed list.
fn list_count(list: &[RangeInclusive<u32>]) -> u64 {
    list.iter()
        .map(|r| u64::from(*r.end()) - u64::from(*r.start()) + 1)
        .sum()
}

/// Parses `/proc/meminfo` for `MemTotal` and `MemAvailable` (kB).
fn parse_meminfo(text: &str) -> Result<MemInfo, String> {
    let field = |key: &str| -> Result<u64, String> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix(':')))
            .ok_or_else(|| format!("no {key} line"))?;
        let value = line.trim().trim_end_matches("kB").trim();
        value
            .parse()
            .map_err(|_| format!("bad {key} value {value:?}"))
    };
    Ok(MemInfo {
        total_kib: field("MemTotal")?,
        available_kib: field("MemAvailable")?,
    })
}

/// Parses `kernel.osrelease`, e.g. `6.8.0-45-generic` or `6.1`.
fn parse_kernel_release(text: &str) -> Result<KernelVersion, String> {
    let release = text.trim();
    let numeric = release
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .unwrap_or("");
    let mut parts = numeric
        .split('.')
        .filter(|p| !p.is_empty())
        .map(str::parse::<u32>);
    let bad = || format!("unrecognised kernel release {release:?}");
    let major = parts.next().and_then(Result::ok).ok_or_else(bad)?;
    let minor = parts.next().and_then(Result::ok).ok_or_else(bad)?;
    let patch = parts.next().and_then(Result::ok).unwrap_or(0);
    Ok(KernelVersion {
        release: release.to_owned(),
        major,
        minor,
        patch,
    })
}

/// Parses `fs.file-nr` (`allocated  free  max`) for the allocated count.
fn parse_file_nr(text: &str) -> Result<u64, String> {
    let first = text.split_whitespace().next().unwrap_or("");
    parse_u64(first)
}

// ---------------------------------------------------------------------------------------------
// The verdict: pure.

/// Ports connect() can pick per (source address, destination address, destination port):
/// the range minus the reserved ports inside it.
fn port_budget(r: &Readings) -> Reading<u64> {
    let range = r.port_range.clone()?;
    // Unknown reserved ports are counted as none: the default is none, and the error shows
    // next to the reading.
    let reserved = r.reserved_ports.as_deref().unwrap_or(&[]);
    let (low, high) = (u32::from(range.low), u32::from(range.high));
    let inside: u64 = reserved
        .iter()
        .map(|p| {
            let (a, b) = ((*p.start()).max(low), (*p.end()).min(high));
            if a > b {
                0
            } else {
                u64::from(b - a) + 1
            }
        })
        .sum();
    Ok(range.size().saturating_sub(inside))
}

/// The `n`-th loopback address counting from 127.0.0.1 (n >= 1).
fn nth_loopback(n: u64) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(127, 0, 0, 1));
    let offset = u32::try_from(n.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(0x00ff_fffe);
    Ipv4Addr::from(base + offset)
}

fn is_local_target(target: Option<SocketAddr>) -> bool {
    target.is_none_or(|t| t.ip().is_loopback() || t.ip().is_unspecified())
}

fn source_ip_fix(k: u64, target: Option<SocketAddr>) -> String {
    match target.map(|t| t.ip()) {
        Some(ip @ IpAddr::V4(_)) if ip.is_loopback() => format!(
            "rotate {k} source addresses: `--source-ip 127.0.0.1-{}` (any 127/8 address works \
             without setup)",
            nth_loopback(k)
        ),
        Some(IpAddr::V6(_)) => format!(
            "rotate {k} IPv6 source addresses assigned to this host (`--source-ip` over {k} \
             addresses of your prefix; add them with `ip addr add`)"
        ),
        Some(_) => format!(
            "rotate {k} source addresses assigned to this host (`--source-ip A-B` over {k} \
             addresses; add them with `ip addr add`)"
        ),
        None => format!(
            "rotate {k} source addresses: `--source-ip 127.0.0.1-{}` for a loopback target, or \
             {k} addresses assigned to this host for a remote one",
            nth_loopback(k)
        ),
    }
}

/// Judges `readings` against `opts`: one check per limit that caps the connection count, the
/// ceiling, and notes. Pure; [`run`] feeds it the host's readings.
pub fn verdict(readings: &Readings, opts: &DoctorOptions) -> Verdict {
    let r = readings;
    let want = opts.connections;
    let ips = u64::from(opts.source_ips.max(1));
    let mut checks = Vec::new();

    // Sockets live in each client shard's io_uring direct-descriptor table, which the kernel
    // caps at RLIMIT_NOFILE per ring (raised to the hard limit at start): capacity grows with
    // shards, and the process's own fd table holds only a few descriptors per shard.
    let shards = opts.shards.max(1) as u64;
    checks.push(match &r.nofile {
        Ok((soft, hard)) => {
            let capacity = hard.saturating_sub(RESERVED_FDS) * shards;
            let detail = format!(
                "hard limit {hard} caps each of {shards} shard(s) at {} connections, {capacity} in \
                 all ({RESERVED_FDS} kept per shard for sockets still closing; soft limit {soft} is \
                 raised to the hard limit at start)",
                hard.saturating_sub(RESERVED_FDS)
            );
            let fix = |n: u64| {
                let need = n.div_ceil(shards) + RESERVED_FDS;
                let mut fix = format!(
                    "run more shards (--cpus), or raise the hard limit to at least {need}: \
                     `ulimit -Hn {need}` as root in the launching shell, `nofile` in \
                     /etc/security/limits.d (tuning/limits.d/90-sockstorm.conf, new sessions), or \
                     `LimitNOFILE={need}` in the systemd unit \
                     (tuning/systemd/sockstorm.service.d/limits.conf); see tuning/"
                );
                if matches!(r.nr_open, Ok(nr) if nr < need) {
                    fix.push_str("; fs.nr_open caps the hard limit, raise it first");
                }
                fix
            };
            judge("open files (RLIMIT_NOFILE)", capacity, want, detail, fix)
        }
        Err(e) => unknown("open files (RLIMIT_NOFILE)", e),
    });

    // fs.nr_open caps what any hard limit can be raised to.
    checks.push(match &r.nr_open {
        Ok(nr) => {
            let capacity = nr.saturating_sub(RESERVED_FDS) * shards;
            let detail = format!("no hard limit (so no shard's descriptor table) may exceed {nr}");
            let fix = |n: u64| {
                let need = n.div_ceil(shards) + RESERVED_FDS;
                format!(
                    "`sysctl -w fs.nr_open={need}`; persist it in /etc/sysctl.d \
                     (tuning/sysctl.d/90-sockstorm-loadgen.conf)"
                )
            };
            judge("fs.nr_open", capacity, want, detail, fix)
        }
        Err(e) => unknown("fs.nr_open", e),
    });

    // fs.file-max counts every open file on the host, so subtract those open now.
    checks.push(match &r.file_max {
        Ok(max) => {
            let in_use = r.files_in_use.as_ref().copied().unwrap_or(0);
            let capacity = max.saturating_sub(in_use);
            let detail = match &r.files_in_use {
                Ok(n) => format!("{max} files system-wide, {n} open now"),
                Err(_) => format!("{max} files system-wide (files open now unknown)"),
            };
            let fix = |n: u64| {
                format!(
                    "`sysctl -w fs.file-max={}` (this run plus what is open now); persist it in \
                     /etc/sysctl.d (tuning/sysctl.d/90-sockstorm-loadgen.conf)",
                    n.saturating_add(in_use).saturating_add(RESERVED_FDS)
                )
            };
            judge("fs.file-max", capacity, want, detail, fix)
        }
        Err(e) => unknown("fs.file-max", e),
    });

    // Ephemeral ports: the budget holds per (source, destination, destination port).
    checks.push(match port_budget(r) {
        Ok(0) => LimitCheck {
            limit: "ephemeral ports",
            capacity: Some(0),
            status: if want.is_some() {
                CheckStatus::TooLow
            } else {
                CheckStatus::Info
            },
            detail: "every port of ip_local_port_range is reserved".to_owned(),
            fix: want.map(|_| "shrink net.ipv4.ip_local_reserved_ports".to_owned()),
        },
        Ok(per_tuple) => {
            let capacity = per_tuple.saturating_mul(ips);
            let s = if ips == 1 { "" } else { "es" };
            let detail = format!(
                "{per_tuple} ports per (source address, destination address, destination port) \
                 × {ips} source address{s}"
            );
            let fix = |n: u64| {
                let k = n.div_ceil(per_tuple);
                let wide = WIDE_PORT_RANGE.size();
                let mut fix = source_ip_fix(k, opts.target);
                if per_tuple < wide {
                    fix.push_str(&format!(
                        "; or widen net.ipv4.ip_local_port_range to `{} {}` \
                         (tuning/sysctl.d/90-sockstorm-loadgen.conf), then {}{} suffice{}",
                        WIDE_PORT_RANGE.low,
                        WIDE_PORT_RANGE.high,
                        n.div_ceil(wide),
                        if n.div_ceil(wide) == 1 {
                            " address"
                        } else {
                            " addresses"
                        },
                        if n.div_ceil(wide) == 1 { "s" } else { "" },
                    ));
                }
                fix
            };
            judge("ephemeral ports", capacity, want, detail, fix)
        }
        Err(e) => unknown("ephemeral ports", &e),
    });

    // Connection tracking: with nf_conntrack loaded every connection is a tracked flow, and a
    // full table drops new SYNs ("nf_conntrack: table full, dropping packet").
    match &r.conntrack {
        Ok(None) => {}
        Ok(Some(ct)) => {
            let capacity = ct.max.saturating_sub(ct.count);
            let detail = format!("{} flows tracked of {} allowed", ct.count, ct.max);
            let fix = |n: u64| {
                format!(
                    "`sysctl -w net.netfilter.nf_conntrack_max={}` (tuning/sysctl.d/\
                     90-sockstorm-loadgen.conf), or exempt the test traffic with a `notrack` \
                     rule in the raw table",
                    n.saturating_add(ct.count)
                )
            };
            checks.push(judge("conntrack table", capacity, want, detail, fix));
        }
        Err(e) => checks.push(unknown("conntrack table", e)),
    }

    // Memory: idle connections cost kernel socket memory plus a little client state.
    checks.push(match &r.memory {
        Ok(m) => {
            let per_conn = KERNEL_BYTES_PER_CONN + CLIENT_BYTES_PER_CONN;
            let capacity = m.available_kib.saturating_mul(1024) / per_conn;
            let detail = format!(
                "MemAvailable {} MiB at ~{} KiB per idle ws:// connection ({} KiB kernel socket + \
                 {} KiB client)",
                m.available_kib / 1024,
                per_conn / 1024,
                KERNEL_BYTES_PER_CONN / 1024,
                CLIENT_BYTES_PER_CONN / 1024,
            );
            let fix = |n: u64| {
                format!(
                    "{n} connections need ~{} MiB but only {} MiB are available: stop other \
                     memory users, split the load across hosts (`--segment i/n`), or use a \
                     larger host",
                    n.saturating_mul(per_conn) / (1024 * 1024),
                    m.available_kib / 1024
                )
            };
            judge("memory", capacity, want, detail, fix)
        }
        Err(e) => unknown("memory", e),
    });

    let ceiling = checks
        .iter()
        .filter_map(|c| c.capacity.map(|n| (n, c.limit)))
        .min_by_key(|&(n, _)| n);

    Verdict {
        connections: want,
        notes: notes(r, opts),
        checks,
        ceiling,
    }
}

fn judge(
    limit: &'static str,
    capacity: u64,
    want: Option<u64>,
    detail: String,
    fix: impl FnOnce(u64) -> String,
) -> LimitCheck {
    let (status, fix) = match want {
        None => (CheckStatus::Info, None),
        Some(n) if n <= capacity => (CheckStatus::Ok, None),
        Some(n) => (CheckStatus::TooLow, Some(fix(n))),
    };
    LimitCheck {
        limit,
        capacity: Some(capacity),
        status,
        detail,
        fix,
    }
}

fn unknown(limit: &'static str, why: &str) -> LimitCheck {
    LimitCheck {
        limit,
        capacity: None,
        status: CheckStatus::Unknown,
        detail: format!("unknown: {why}"),
        fix: None,
    }
}

/// Settings that do not cap the connection count but shape a run.
fn notes(r: &Readings, opts: &DoctorOptions) -> Vec<String> {
    let mut notes = Vec::new();
    let ips = u64::from(opts.source_ips.max(1));

    // 2 already covers a loopback target.
    let loopback_target = opts.target.is_some_and(|t| t.ip().is_loopback());
    if let Ok(reuse) = r.tcp_tw_reuse {
        if reuse != 1 && !(reuse == 2 && loopback_target) {
            let meaning = if reuse == 2 { "loopback only" } else { "off" };
            let churn = port_budget(r)
                .map(|b| {
                    format!(
                        " (here about {} new connections/s per destination)",
                        b.saturating_mul(ips) / TIME_WAIT_SECS
                    )
                })
                .unwrap_or_default();
            notes.push(format!(
                "net.ipv4.tcp_tw_reuse = {reuse} ({meaning}): every connection this host closes \
                 first keeps its 4-tuple in TIME_WAIT for {TIME_WAIT_SECS} s, so reconnect loops \
                 and `--mode handshake` are capped at ports / {TIME_WAIT_SECS} s{churn}; set it \
                 to 1 (needs net.ipv4.tcp_timestamps, on by default)"
            ));
        }
    }

    if is_local_target(opts.target) {
        let low = |v: &Reading<u64>| matches!(v, Ok(n) if *n < GATEWAY_BACKLOG);
        if low(&r.somaxconn) || low(&r.tcp_max_syn_backlog) {
            notes.push(format!(
                "a gateway on this host gets a listen backlog of at most net.core.somaxconn ({}) \
                 and keeps at most net.ipv4.tcp_max_syn_backlog ({}) half-open connections; \
                 connect bursts beyond that are dropped and retried after 1 s. Raise both to \
                 {GATEWAY_BACKLOG} (tuning/sysctl.d/90-sockstorm-gateway.conf)",
                show(&r.somaxconn, u64::to_string),
                show(&r.tcp_max_syn_backlog, u64::to_string),
            ));
        }
        if let (Some(n), Some(_)) = (opts.connections, opts.target) {
            notes.push(format!(
                "the target is on this host: its gateway holds the other {n} sockets, so it needs \
                 its own fd limit of {n}+ and fs.file-max and memory must cover {} sockets",
                n.saturating_mul(2)
            ));
        }
    }

    let u = &r.uring;
    if let Support::No(why) | Support::Unknown(why) = &u.ring {
        notes.push(format!(
            "io_uring is not usable ({why}); runs fall back to the epoll backend"
        ));
    } else {
        let mut missing: Vec<String> = u
            .opcodes
            .iter()
            .filter(|op| !op.support.is_yes())
            .map(|op| format!("{} ({})", op.name, op.since))
            .collect();
        for (name, s) in [
            ("SINGLE_ISSUER (6.0)", &u.single_issuer),
            ("DEFER_TASKRUN (6.1)", &u.defer_taskrun),
            ("provided buffer rings (5.19)", &u.buf_ring),
            ("multishot recv (6.0)", &u.multishot_recv),
        ] {
            if !s.is_yes() {
                missing.push(name.to_owned());
            }
        }
        if !missing.is_empty() {
            notes.push(format!(
                "io_uring works but lacks {}; the io_uring backend may be unavailable or slower, \
                 the epoll backend is the fallback",
                missing.join(", ")
            ));
        }
    }
    if let Ok(2) = u.disabled {
        notes.push("kernel.io_uring_disabled = 2: io_uring is off for every process".to_owned());
    }

    let shards = u64::try_from(opts.shards.max(1)).unwrap_or(u64::MAX);
    if let Ok(avail) = r.cpu.available {
        let avail = u64::try_from(avail).unwrap_or(u64::MAX);
        if shards > avail {
            notes.push(format!(
                "{shards} shards on {avail} usable CPUs: shards share cores, and latencies include \
                 scheduling delay"
            ));
        }
    }
    if let Ok(nodes) = &r.cpu.numa_nodes {
        if nodes.len() > 1 {
            notes.push(format!(
                "{} NUMA nodes: pin a run to one (`--numa-node`) so socket memory and the NIC's \
                 interrupts stay local",
                nodes.len()
            ));
        }
    }
    notes
}

// ---------------------------------------------------------------------------------------------
// Presentation.

fn show<T>(r: &Reading<T>, f: impl FnOnce(&T) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(why) => format!("unknown ({why})"),
    }
}

fn format_list(list: &[RangeInclusive<u32>]) -> String {
    list.iter()
        .map(|r| {
            if r.start() == r.end() {
                r.start().to_string()
            } else {
                format!("{}-{}", r.start(), r.end())
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn reading_json<T>(r: &Reading<T>, f: impl FnOnce(&T) -> Value) -> Value {
    match r {
        Ok(v) => f(v),
        Err(why) => json!({ "unknown": why }),
    }
}

fn support_json(s: &Support) -> Value {
    match s {
        Support::Yes => json!(true),
        Support::No(why) => json!({ "supported": false, "reason": why }),
        Support::Unknown(why) => json!({ "unknown": why }),
    }
}

fn status_name(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Ok => "ok",
        CheckStatus::TooLow => "too_low",
        CheckStatus::Unknown => "unknown",
        CheckStatus::Info => "info",
    }
}

fn disabled_meaning(v: u32) -> &'static str {
    match v {
        0 => "enabled for every process",
        1 => "only for members of kernel.io_uring_group and CAP_SYS_ADMIN",
        2 => "disabled for every process",
        _ => "unrecognised value",
    }
}

fn tw_reuse_meaning(v: u64) -> &'static str {
    match v {
        0 => "off",
        1 => "on for outgoing connections",
        2 => "loopback only",
        _ => "unrecognised value",
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.readings;
        let o = &self.options;
        let ips = u64::from(o.source_ips.max(1));
        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: String| -> fmt::Result {
            writeln!(f, "  {name:<31} {value}")
        };
        let mut sections = SECTIONS.iter();
        let mut section = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            writeln!(f, "\n{}", sections.next().copied().unwrap_or(""))
        };

        writeln!(f, "sockstorm doctor")?;
        writeln!(
            f,
            "  connections {}, target {}, {ips} source address(es), {} shard(s)",
            o.connections
                .map_or("not given".to_owned(), |n| n.to_string()),
            o.target.map_or("not given".to_owned(), |t| t.to_string()),
            o.shards,
        )?;

        section(f)?; // Open files
        row(
            f,
            "RLIMIT_NOFILE",
            show(&r.nofile, |(s, h)| format!("soft {s}, hard {h}")),
        )?;
        row(f, "fs.nr_open", show(&r.nr_open, u64::to_string))?;
        row(
            f,
            "fs.file-max",
            show(&r.file_max, |m| {
                format!("{m} ({} open now)", show(&r.files_in_use, u64::to_string))
            }),
        )?;

        section(f)?; // Ports
        row(
            f,
            "net.ipv4.ip_local_port_range",
            show(&r.port_range, |p| {
                format!("{} {} ({} ports)", p.low, p.high, p.size())
            }),
        )?;
        row(
            f,
            "net.ipv4.ip_local_reserved_ports",
            show(&r.reserved_ports, |l| {
                if l.is_empty() {
                    "none".to_owned()
                } else {
                    format_list(l)
                }
            }),
        )?;
        let budget = port_budget(r);
        row(
            f,
            "ports per (src, dst, dport)",
            show(&budget, |b| {
                format!("{b} (connect() may reuse a port for another destination)")
            }),
        )?;
        row(
            f,
            "ports per destination",
            show(&budget, |b| {
                format!("{} with {ips} source address(es)", b.saturating_mul(ips))
            }),
        )?;
        row(
            f,
            "net.ipv4.tcp_tw_reuse",
            show(&r.tcp_tw_reuse, |v| {
                format!("{v} ({})", tw_reuse_meaning(*v))
            }),
        )?;
        row(
            f,
            "net.ipv4.tcp_fin_timeout",
            show(&r.tcp_fin_timeout, |v| {
                format!("{v} s (FIN_WAIT_2; TIME_WAIT is fixed at {TIME_WAIT_SECS} s on Linux)")
            }),
        )?;
        row(
            f,
            "net.netfilter.nf_conntrack_max",
            show(&r.conntrack, |c| match c {
                Some(c) => format!("{} ({} tracked now)", c.max, c.count),
                None => "nf_conntrack not loaded (no limit)".to_owned(),
            }),
        )?;

        section(f)?; // Listen queues
        row(f, "net.core.somaxconn", show(&r.somaxconn, u64::to_string))?;
        row(
            f,
            "net.ipv4.tcp_max_syn_backlog",
            show(&r.tcp_max_syn_backlog, u64::to_string),
        )?;

        section(f)?; // io_uring
        let u = &r.uring;
        row(f, "kernel", show(&r.kernel, |k| k.release.clone()))?;
        row(
            f,
            "kernel.io_uring_disabled",
            show(&u.disabled, |v| format!("{v} ({})", disabled_meaning(*v))),
        )?;
        row(f, "ring", u.ring.to_string())?;
        row(f, "SETUP_SINGLE_ISSUER (6.0)", u.single_issuer.to_string())?;
        row(f, "SETUP_DEFER_TASKRUN (6.1)", u.defer_taskrun.to_string())?;
        for op in &u.opcodes {
            row(
                f,
                &format!("opcode {} ({})", op.name, op.since),
                op.support.to_string(),
            )?;
        }
        row(f, "provided buffer rings (5.19)", u.buf_ring.to_string())?;
        row(f, "multishot recv (6.0)", u.multishot_recv.to_string())?;

        section(f)?; // CPUs
        row(
            f,
            "available_parallelism",
            show(&r.cpu.available, usize::to_string),
        )?;
        row(
            f,
            "online",
            show(&r.cpu.online, |(l, n)| format!("{l} ({n} CPUs)")),
        )?;
        match &r.cpu.numa_nodes {
            Ok(nodes) => {
                for n in nodes {
                    row(
                        f,
                        &format!("NUMA node {}", n.id),
                        format!("{} ({} CPUs)", n.cpulist, n.cpus),
                    )?;
                }
            }
            Err(why) => row(f, "NUMA nodes", format!("unknown ({why})"))?,
        }

        section(f)?; // Memory
        row(
            f,
            "MemTotal",
            show(&r.memory, |m| format!("{} MiB", m.total_kib / 1024)),
        )?;
        row(
            f,
            "MemAvailable",
            show(&r.memory, |m| format!("{} MiB", m.available_kib / 1024)),
        )?;

        section(f)?; // Verdict
        let v = &self.verdict;
        for c in &v.checks {
            let mark = match c.status {
                CheckStatus::Ok => "ok",
                CheckStatus::TooLow => "TOO LOW",
                CheckStatus::Unknown => "unknown",
                CheckStatus::Info => "",
            };
            let cap = c.capacity.map_or("?".to_owned(), |n| n.to_string());
            writeln!(f, "  {:<27} {mark:<7} allows {cap}: {}", c.limit, c.detail)?;
            if let Some(fix) = &c.fix {
                writeln!(f, "      fix: {fix}")?;
            }
        }
        if let Some((n, limit)) = v.ceiling {
            writeln!(f, "  ceiling: about {n} connections, limited by {limit}")?;
        }
        match (v.connections, self.fits()) {
            (Some(n), Some(true)) => {
                let unknown: Vec<_> = v
                    .checks
                    .iter()
                    .filter(|c| c.status == CheckStatus::Unknown)
                    .map(|c| c.limit)
                    .collect();
                if unknown.is_empty() {
                    writeln!(f, "  {n} connections fit")?;
                } else {
                    writeln!(
                        f,
                        "  {n} connections fit the limits that could be read (unchecked: {})",
                        unknown.join(", ")
                    )?;
                }
            }
            (Some(n), _) => {
                let low: Vec<_> = v
                    .checks
                    .iter()
                    .filter(|c| c.status == CheckStatus::TooLow)
                    .map(|c| c.limit)
                    .collect();
                writeln!(
                    f,
                    "  {n} connections do NOT fit: too low: {}",
                    low.join(", ")
                )?;
            }
            (None, _) => writeln!(f, "  give `-c N` to check whether N connections fit")?,
        }
        for note in &v.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_parses_tab_separated() {
        let p = parse_port_range("32768\t60999\n").unwrap();
        assert_eq!(
            p,
            PortRange {
                low: 32768,
                high: 60999
            }
        );
        assert_eq!(p.size(), 28232);
        assert_eq!(parse_port_range("1024 65535").unwrap().size(), 64512);
        assert_eq!(parse_port_range("5000 5000").unwrap().size(), 1);
    }

    #[test]
    fn port_range_rejects_garbage() {
        assert!(parse_port_range("").is_err());
        assert!(parse_port_range("32768").is_err());
        assert!(parse_port_range("a b").is_err());
        assert!(parse_port_range("60999 32768").is_err());
        assert!(parse_port_range("1 70000").is_err());
        assert!(parse_port_range("1 2 3").is_err());
    }

    #[test]
    fn cpulist_parses_ranges_and_singles() {
        let l = parse_cpulist("0-3,8\n").unwrap();
        assert_eq!(l, vec![0..=3, 8..=8]);
        assert_eq!(list_count(&l), 5);
        assert_eq!(list_count(&parse_cpulist("0").unwrap()), 1);
        assert_eq!(list_count(&parse_cpulist("0-15,32-47").unwrap()), 32);
        assert!(parse_cpulist("\n").unwrap().is_empty());
        assert_eq!(
            format_list(&parse_cpulist("8080,9000-9010").unwrap()),
            "8080,9000-9010"
        );
    }

    #[test]
    fn cpulist_rejects_garbage() {
        assert!(parse_cpulist("3-1").is_err());
        assert!(parse_cpulist("0-3,x").is_err());
        assert!(parse_cpulist("0-").is_err());
        assert!(parse_cpulist(",").is_err());
    }

    #[test]
    fn meminfo_parses_total_and_available() {
        let text = "MemTotal:       16318480 kB\nMemFree:         1234567 kB\n\
                    MemAvailable:   12000000 kB\nBuffers:          100 kB\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(
            m,
            MemInfo {
                total_kib: 16_318_480,
                available_kib: 12_000_000
            }
        );
    }

    #[test]
    fn meminfo_without_available_is_an_error() {
        let err = parse_meminfo("MemTotal: 100 kB\nMemFree: 50 kB\n").unwrap_err();
        assert!(err.contains("MemAvailable"), "{err}");
        assert!(parse_meminfo("MemTotal: lots kB\nMemAvailable: 1 kB").is_err());
    }

    #[test]
    fn kernel_release_parses_common_forms() {
        let k = parse_kernel_release("6.18.44-fc-v669\n").unwrap();
        assert_eq!((k.major, k.minor, k.patch), (6, 18, 44));
        assert_eq!(k.release, "6.18.44-fc-v669");
        let k = parse_kernel_release("5.15.0-91-generic").unwrap();
        assert_eq!((k.major, k.minor, k.patch), (5, 15, 0));
        assert!(k.at_least(5, 6) && !k.at_least(5, 19) && !k.at_least(6, 0));
        let k = parse_kernel_release("6.1").unwrap();
        assert_eq!((k.major, k.minor, k.patch), (6, 1, 0));
        assert!(k.at_least(6, 1));
        let k = parse_kernel_release("6.0.0+rpt-rpi-v8").unwrap();
        assert!(k.at_least(6, 0));
        assert!(parse_kernel_release("linux").is_err());
        assert!(parse_kernel_release("6").is_err());
    }

    #[test]
    fn single_numbers_and_file_nr() {
        assert_eq!(parse_u64("1048576\n"), Ok(1_048_576));
        assert!(parse_u64("").is_err());
        assert!(parse_u64("-1").is_err());
        assert_eq!(parse_file_nr("1234\t0\t9223372036854775807\n"), Ok(1234));
        assert!(parse_file_nr("").is_err());
    }

    #[test]
    fn nth_loopback_counts_past_the_last_octet() {
        assert_eq!(nth_loopback(1), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(nth_loopback(4), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(nth_loopback(300), Ipv4Addr::new(127, 0, 1, 44));
        assert_eq!(nth_loopback(u64::MAX), Ipv4Addr::new(127, 255, 255, 255));
    }

    fn uring_ok() -> UringReadings {
        UringReadings {
            disabled: Ok(0),
            ring: Support::Yes,
            single_issuer: Support::Yes,
            defer_taskrun: Support::Yes,
            opcodes: OPCODES
                .iter()
                .map(|&(name, _, since)| OpcodeSupport {
                    name,
                    since,
                    support: Support::Yes,
                })
                .collect(),
            buf_ring: Support::Yes,
            multishot_recv: Support::Yes,
        }
    }

    /// A well-tuned 16 GiB host with the default port range.
    fn readings() -> Readings {
        Readings {
            nofile: Ok((1024, 1_048_576)),
            nr_open: Ok(1_048_576),
            file_max: Ok(9_223_372_036_854_775_807),
            files_in_use: Ok(2000),
            port_range: Ok(PortRange {
                low: 32768,
                high: 60999,
            }),
            reserved_ports: Ok(Vec::new()),
            tcp_tw_reuse: Ok(1),
            tcp_fin_timeout: Ok(60),
            conntrack: Ok(None),
            somaxconn: Ok(65535),
            tcp_max_syn_backlog: Ok(65535),
            kernel: parse_kernel_release("6.8.0-45-generic"),
            uring: uring_ok(),
            cpu: CpuReadings {
                available: Ok(8),
                online: Ok(("0-7".to_owned(), 8)),
                numa_nodes: Ok(vec![NumaNode {
                    id: 0,
                    cpulist: "0-7".to_owned(),
                    cpus: 8,
                }]),
            },
            memory: Ok(MemInfo {
                total_kib: 16 << 20,
                available_kib: 12 << 20,
            }),
        }
    }

    fn opts(n: u64, source_ips: u32) -> DoctorOptions {
        DoctorOptions {
            connections: Some(n),
            target: Some("127.0.0.1:8080".parse().unwrap()),
            source_ips,
            shards: 8,
        }
    }

    fn check<'a>(v: &'a Verdict, limit: &str) -> &'a LimitCheck {
        v.checks.iter().find(|c| c.limit == limit).unwrap()
    }

    #[test]
    fn verdict_fits() {
        let v = verdict(&readings(), &opts(20_000, 1));
        assert_eq!(v.fits(), Some(true), "{v:#?}");
        assert!(v
            .checks
            .iter()
            .all(|c| c.status == CheckStatus::Ok && c.fix.is_none()));
        // The default port range is the tightest limit here.
        assert_eq!(v.ceiling, Some((28232, "ephemeral ports")));
    }

    #[test]
    fn no_count_means_no_fit_answer() {
        let mut o = opts(1, 1);
        o.connections = None;
        let v = verdict(&readings(), &o);
        assert_eq!(v.fits(), None);
        assert!(v
            .checks
            .iter()
            .all(|c| c.status == CheckStatus::Info && c.fix.is_none()));
    }

    #[test]
    fn soft_limit_below_n_is_fine_when_the_hard_limit_covers_it() {
        let mut r = readings();
        r.nofile = Ok((1024, 50_000));
        let v = verdict(&r, &opts(20_000, 1));
        assert_eq!(
            check(&v, "open files (RLIMIT_NOFILE)").status,
            CheckStatus::Ok
        );
        assert_eq!(v.fits(), Some(true));
    }

    #[test]
    fn verdict_fd_hard_limit_too_low() {
        let mut r = readings();
        r.nofile = Ok((1024, 4096));
        let one_shard = DoctorOptions {
            shards: 1,
            ..opts(10_000, 1)
        };
        let v = verdict(&r, &one_shard);
        assert_eq!(v.fits(), Some(false));
        let c = check(&v, "open files (RLIMIT_NOFILE)");
        assert_eq!(c.status, CheckStatus::TooLow);
        assert_eq!(c.capacity, Some(4096 - RESERVED_FDS));
        let fix = c.fix.as_deref().unwrap();
        assert!(fix.contains("ulimit -Hn 10064"), "{fix}");
        assert!(fix.contains("LimitNOFILE=10064"), "{fix}");
        assert!(fix.contains("limits.d"), "{fix}");
        assert!(!fix.contains("nr_open"), "{fix}");
        assert_eq!(
            v.ceiling,
            Some((4096 - RESERVED_FDS, "open files (RLIMIT_NOFILE)"))
        );
        assert_eq!(check(&v, "ephemeral ports").status, CheckStatus::Ok);
        // Each shard has its own descriptor table: 8 shards hold 8 × (4096 − reserve).
        let v8 = verdict(&r, &opts(10_000, 1));
        let c8 = check(&v8, "open files (RLIMIT_NOFILE)");
        assert_eq!(c8.status, CheckStatus::Ok);
        assert_eq!(c8.capacity, Some(8 * (4096 - RESERVED_FDS)));
    }

    #[test]
    fn verdict_nr_open_caps_the_hard_limit() {
        let mut r = readings();
        r.nr_open = Ok(1_048_576);
        r.nofile = Ok((1024, 1_048_576));
        let o = DoctorOptions {
            shards: 1,
            ..opts(2_000_000, 100)
        };
        let v = verdict(&r, &o);
        assert_eq!(check(&v, "fs.nr_open").status, CheckStatus::TooLow);
        let fix = check(&v, "fs.nr_open").fix.clone().unwrap();
        assert!(fix.contains("fs.nr_open=2000064"), "{fix}");
        let fd_fix = check(&v, "open files (RLIMIT_NOFILE)").fix.clone().unwrap();
        assert!(
            fd_fix.contains("fs.nr_open caps the hard limit"),
            "{fd_fix}"
        );
    }

    #[test]
    fn verdict_ports_need_k_source_addresses() {
        let r = readings();
        let v = verdict(&r, &opts(100_000, 1));
        assert_eq!(v.fits(), Some(false));
        let c = check(&v, "ephemeral ports");
        assert_eq!(c.status, CheckStatus::TooLow);
        assert_eq!(c.capacity, Some(28232));
        let fix = c.fix.as_deref().unwrap();
        // ceil(100000 / 28232) = 4
        assert!(fix.contains("`--source-ip 127.0.0.1-127.0.0.4`"), "{fix}");
        assert!(fix.contains("rotate 4 source addresses"), "{fix}");
        // With the wide range, 64512 per address: 2 addresses.
        assert!(
            fix.contains("`1024 65535`") && fix.contains("then 2 addresses suffice"),
            "{fix}"
        );
        // The other limits are fine: ports are the only thing named.
        assert!(
            v.checks
                .iter()
                .filter(|c| c.status == CheckStatus::TooLow)
                .count()
                == 1
        );

        let v = verdict(&r, &opts(100_000, 4));
        assert_eq!(v.fits(), Some(true), "{v:#?}");
        assert_eq!(check(&v, "ephemeral ports").capacity, Some(4 * 28232));
    }

    #[test]
    fn verdict_ports_for_a_remote_target_ask_for_host_addresses() {
        let mut o = opts(100_000, 1);
        o.target = Some("10.0.0.5:443".parse().unwrap());
        let v = verdict(&readings(), &o);
        let fix = check(&v, "ephemeral ports").fix.clone().unwrap();
        assert!(
            fix.contains("rotate 4 source addresses assigned to this host"),
            "{fix}"
        );
        assert!(!fix.contains("127.0.0."), "{fix}");
    }

    #[test]
    fn reserved_ports_shrink_the_budget() {
        let mut r = readings();
        r.reserved_ports = parse_cpulist("8080,40000-40009,60990-61010");
        // 10 inside + 10 at the top end (60990..=60999); 8080 and 61000.. lie outside.
        assert_eq!(port_budget(&r), Ok(28232 - 20));
        r.reserved_ports = Ok(vec![0..=65535]);
        let v = verdict(&r, &opts(1, 1));
        assert_eq!(check(&v, "ephemeral ports").status, CheckStatus::TooLow);
    }

    #[test]
    fn verdict_memory_too_low() {
        let mut r = readings();
        r.memory = Ok(MemInfo {
            total_kib: 2 << 20,
            available_kib: 1 << 20,
        });
        let v = verdict(&r, &opts(1_000_000, 64));
        assert_eq!(v.fits(), Some(false));
        let c = check(&v, "memory");
        assert_eq!(c.status, CheckStatus::TooLow);
        // 1 GiB / 5 KiB
        assert_eq!(c.capacity, Some(209_715));
        let fix = c.fix.as_deref().unwrap();
        assert!(
            fix.contains("~4882 MiB") && fix.contains("1024 MiB"),
            "{fix}"
        );
        assert_eq!(v.ceiling, Some((209_715, "memory")));
    }

    #[test]
    fn file_max_counts_files_open_now() {
        let mut r = readings();
        r.file_max = Ok(100_000);
        r.files_in_use = Ok(90_000);
        let v = verdict(&r, &opts(20_000, 1));
        let c = check(&v, "fs.file-max");
        assert_eq!((c.status, c.capacity), (CheckStatus::TooLow, Some(10_000)));
        assert!(c.fix.as_deref().unwrap().contains("fs.file-max=110064"));
    }

    #[test]
    fn conntrack_table_counts_when_loaded() {
        let mut r = readings();
        let v = verdict(&r, &opts(20_000, 1));
        assert!(v.checks.iter().all(|c| c.limit != "conntrack table"));
        r.conntrack = Ok(Some(Conntrack {
            max: 262_144,
            count: 2_144,
        }));
        let v = verdict(&r, &opts(20_000, 1));
        assert_eq!(check(&v, "conntrack table").status, CheckStatus::Ok);
        let v = verdict(&r, &opts(300_000, 16));
        let c = check(&v, "conntrack table");
        assert_eq!((c.status, c.capacity), (CheckStatus::TooLow, Some(260_000)));
        let fix = c.fix.as_deref().unwrap();
        assert!(fix.contains("nf_conntrack_max=302144"), "{fix}");
    }

    #[test]
    fn unreadable_limits_are_unknown_not_failures() {
        let mut r = readings();
        r.memory = Err("cannot read /proc/meminfo: No such file".to_owned());
        r.nofile = Err("getrlimit: EPERM".to_owned());
        let v = verdict(&r, &opts(1000, 1));
        assert_eq!(check(&v, "memory").status, CheckStatus::Unknown);
        assert_eq!(check(&v, "memory").capacity, None);
        assert_eq!(v.fits(), Some(true));
        let report = DoctorReport {
            options: opts(1000, 1),
            readings: r,
            verdict: v,
        };
        let text = report.to_string();
        assert!(
            text.contains("unchecked: open files (RLIMIT_NOFILE), memory"),
            "{text}"
        );
        assert!(
            text.contains("unknown (cannot read /proc/meminfo"),
            "{text}"
        );
        assert_eq!(
            report.to_json()["memory"]["unknown"],
            "cannot read /proc/meminfo: No such file"
        );
    }

    #[test]
    fn notes_cover_tw_reuse_backlog_uring_and_cpus() {
        let mut r = readings();
        r.tcp_tw_reuse = Ok(0);
        r.somaxconn = Ok(4096);
        r.uring.ring = Support::No("EPERM".to_owned());
        r.cpu.available = Ok(2);
        let v = verdict(&r, &opts(1000, 1));
        let all = v.notes.join("\n");
        assert!(all.contains("tcp_tw_reuse = 0 (off)"), "{all}");
        assert!(all.contains("about 470 new connections/s"), "{all}");
        assert!(all.contains("net.core.somaxconn (4096)"), "{all}");
        assert!(
            all.contains("gateway holds the other 1000 sockets"),
            "{all}"
        );
        assert!(all.contains("io_uring is not usable (EPERM)"), "{all}");
        assert!(all.contains("8 shards on 2 usable CPUs"), "{all}");

        // Remote target: nothing about a gateway on this host.
        let mut o = opts(1000, 1);
        o.target = Some("10.0.0.5:443".parse().unwrap());
        let all = verdict(&r, &o).notes.join("\n");
        assert!(
            !all.contains("somaxconn") && !all.contains("gateway holds"),
            "{all}"
        );

        // tcp_tw_reuse = 2 (the default) covers loopback targets but not remote ones.
        let mut r = readings();
        r.tcp_tw_reuse = Ok(2);
        assert!(!verdict(&r, &opts(1000, 1))
            .notes
            .join("\n")
            .contains("tcp_tw_reuse"));
        let all = verdict(&r, &o).notes.join("\n");
        assert!(all.contains("tcp_tw_reuse = 2 (loopback only)"), "{all}");

        let mut r = readings();
        r.uring.buf_ring = Support::No("needs 5.19".to_owned());
        let all = verdict(&r, &opts(1000, 1)).notes.join("\n");
        assert!(all.contains("lacks provided buffer rings (5.19)"), "{all}");
        // A tuned host and a remote target leave nothing to note.
        let mut o = opts(1000, 1);
        o.target = Some("10.0.0.5:443".parse().unwrap());
        assert_eq!(verdict(&readings(), &o).notes, Vec::<String>::new());
    }

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
