//! CPUs and NUMA nodes: what this process may use, what is online, and how the CPUs split
//! into NUMA nodes; shards beyond the usable CPUs share cores.

use std::fs;

use super::procfs::{list_count, parse_cpulist, read_text, read_with};
use super::{DoctorOptions, Reading, Readings};

const CPU_ONLINE: &str = "/sys/devices/system/cpu/online";
const NODE_DIR: &str = "/sys/devices/system/node";

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

/// CPU topology: the CPUs this process may use, the CPUs online, and the NUMA nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuReadings {
    /// `std::thread::available_parallelism`: CPUs this process may use (affinity, cgroup quota).
    pub available: Reading<usize>,
    /// `/sys/devices/system/cpu/online` as (list, count).
    pub online: Reading<(String, u64)>,
    /// NUMA nodes from `/sys/devices/system/node/node*/cpulist`.
    pub numa_nodes: Reading<Vec<NumaNode>>,
}

/// Reads the usable and online CPUs and the NUMA nodes.
pub(crate) fn read_cpus() -> CpuReadings {
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

/// Notes on CPUs: more shards than usable CPUs, and more than one NUMA node.
pub(crate) fn cpu_notes(r: &Readings, opts: &DoctorOptions) -> Vec<String> {
    let mut notes = Vec::new();
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
