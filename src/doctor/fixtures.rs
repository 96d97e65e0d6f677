//! Made-up readings and options shared by the unit tests of every area.

use super::uring::{parse_kernel_release, OPCODES};
use super::{
    CpuReadings, DoctorOptions, LimitCheck, MemInfo, NumaNode, OpcodeSupport, PortRange, Readings,
    Support, UringReadings, Verdict,
};
use crate::io::backend::BackendKind;
use crate::io::probe::Selected;

pub(crate) fn uring_ok() -> UringReadings {
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
        backend: Ok(Selected {
            kind: BackendKind::Uring,
            reason: "io_uring is available".to_owned(),
        }),
    }
}

/// A well-tuned 16 GiB host with the default port range.
pub(crate) fn readings() -> Readings {
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

pub(crate) fn opts(n: u64, source_ips: u32) -> DoctorOptions {
    DoctorOptions {
        connections: Some(n),
        target: Some("127.0.0.1:8080".parse().unwrap()),
        source_ips,
        targets: 1,
        shards: 8,
    }
}

pub(crate) fn check<'a>(v: &'a Verdict, limit: &str) -> &'a LimitCheck {
    v.checks.iter().find(|c| c.limit == limit).unwrap()
}
