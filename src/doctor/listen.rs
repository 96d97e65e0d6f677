//! Listen queues of a gateway on this host (`net.core.somaxconn`, `tcp_max_syn_backlog`), which
//! matter when the target is on loopback: the gateway then shares this host's limits.

use std::net::SocketAddr;

use super::report::show;
use super::{DoctorOptions, Reading, Readings};

/// Listen-queue size `tuning/sysctl.d/90-sockstorm-gateway.conf` sets.
const GATEWAY_BACKLOG: u64 = 65535;

pub(crate) const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";
pub(crate) const TCP_MAX_SYN_BACKLOG: &str = "/proc/sys/net/ipv4/tcp_max_syn_backlog";

/// Whether the gateway may run on this host: a loopback or unspecified target, or none given.
fn is_local_target(target: Option<SocketAddr>) -> bool {
    target.is_none_or(|t| t.ip().is_loopback() || t.ip().is_unspecified())
}

/// Notes for a gateway on this host: short listen queues, and the sockets and descriptors its
/// side of every connection needs. Empty for a remote target.
pub(crate) fn gateway_notes(r: &Readings, opts: &DoctorOptions) -> Vec<String> {
    let mut notes = Vec::new();
    if !is_local_target(opts.target) {
        return notes;
    }
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
    notes
}
