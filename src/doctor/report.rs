//! Presentation: the human report (`Display`) and the machine one ([`DoctorReport::to_json`]).
//! Unreadable values print as `unknown (<reason>)` and serialize as `{"unknown": "<reason>"}`.

use std::fmt;

use serde_json::{json, Value};

use super::ports::{port_budget, TIME_WAIT_SECS};
use super::procfs::format_list;
use super::{CheckStatus, DoctorReport, Reading, Support};

/// Section titles of the human report, in print order.
pub(crate) const SECTIONS: [&str; 7] = [
    "Open files",
    "Ports",
    "Listen queues (gateway on this host)",
    "io_uring",
    "CPUs",
    "Memory",
    "Verdict",
];

/// Writes one section of the human report, under its title.
type WriteSection = fn(&DoctorReport, &mut fmt::Formatter<'_>) -> fmt::Result;

/// The section writers, in the order of [`SECTIONS`].
const SECTION_WRITERS: [WriteSection; 7] = [
    write_open_files,
    write_ports,
    write_listen_queues,
    write_uring,
    write_cpus,
    write_memory,
    write_verdict,
];

impl DoctorReport {
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

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let ips = u64::from(o.source_ips.max(1));
        writeln!(f, "sockstorm doctor")?;
        writeln!(
            f,
            "  connections {}, target {}, {ips} source address(es), {} shard(s)",
            o.connections
                .map_or("not given".to_owned(), |n| n.to_string()),
            o.target.map_or("not given".to_owned(), |t| t.to_string()),
            o.shards,
        )?;
        for (title, write) in SECTIONS.into_iter().zip(SECTION_WRITERS) {
            writeln!(f, "\n{title}")?;
            write(self, f)?;
        }
        Ok(())
    }
}

/// One `name value` line of the human report.
fn row(f: &mut fmt::Formatter<'_>, name: &str, value: String) -> fmt::Result {
    writeln!(f, "  {name:<31} {value}")
}

fn write_open_files(report: &DoctorReport, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let r = &report.readings;
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
    )
}

fn write_ports(report: &DoctorReport, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let r = &report.readings;
    let ips = u64::from(report.options.source_ips.max(1));
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
    )
}

fn write_listen_queues(report: &DoctorReport, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let r = &report.readings;
    row(f, "net.core.somaxconn", show(&r.somaxconn, u64::to_string))?;
    row(
        f,
        "net.ipv4.tcp_max_syn_backlog",
        show(&r.tcp_max_syn_backlog, u64::to_string),
    )
}

fn write_uring(report: &DoctorReport, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let r = &report.readings;
    let u = &r.uring;
    row(
        f,
        "backend (run --backend auto)",
        match &u.backend {
            Ok(b) => format!("{} ({})", b.kind.name(), b.reason),
            Err(e) => format!("none: {e}"),
        },
    )?;
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
    row(f, "multishot recv (6.0)", u.multishot_recv.to_string())
}

fn write_cpus(report: &DoctorReport, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let r = &report.readings;
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
            Ok(())
        }
        Err(why) => row(f, "NUMA nodes", format!("unknown ({why})")),
    }
}

fn write_memory(report: &DoctorReport, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let r = &report.readings;
    row(
        f,
        "MemTotal",
        show(&r.memory, |m| format!("{} MiB", m.total_kib / 1024)),
    )?;
    row(
        f,
        "MemAvailable",
        show(&r.memory, |m| format!("{} MiB", m.available_kib / 1024)),
    )
}

fn write_verdict(report: &DoctorReport, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let v = &report.verdict;
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
    write_fit(report, f)?;
    for note in &v.notes {
        writeln!(f, "  note: {note}")?;
    }
    Ok(())
}

/// The line that answers "do N connections fit?", naming the limits too low or unread.
fn write_fit(report: &DoctorReport, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let v = &report.verdict;
    let limits_with = |status: CheckStatus| -> Vec<&str> {
        v.checks
            .iter()
            .filter(|c| c.status == status)
            .map(|c| c.limit)
            .collect()
    };
    match (v.connections, report.fits()) {
        (Some(n), Some(true)) => {
            let unknown = limits_with(CheckStatus::Unknown);
            if unknown.is_empty() {
                writeln!(f, "  {n} connections fit")
            } else {
                writeln!(
                    f,
                    "  {n} connections fit the limits that could be read (unchecked: {})",
                    unknown.join(", ")
                )
            }
        }
        (Some(n), _) => {
            let low = limits_with(CheckStatus::TooLow);
            writeln!(
                f,
                "  {n} connections do NOT fit: too low: {}",
                low.join(", ")
            )
        }
        (None, _) => writeln!(f, "  give `-c N` to check whether N connections fit"),
    }
}

/// A reading as report text: its value through `f`, or `unknown (<reason>)`.
pub(crate) fn show<T>(r: &Reading<T>, f: impl FnOnce(&T) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(why) => format!("unknown ({why})"),
    }
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
