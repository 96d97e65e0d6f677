//! Ephemeral ports and what holds them: the port range and reserved ports, source addresses,
//! TIME_WAIT reuse, and the netfilter connection-tracking table.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use super::procfs::{parse_u64, read_with};
use super::verdict::{judge, unknown, CheckStatus, LimitCheck};
use super::{DoctorOptions, Reading, Readings};

/// The ephemeral port range `tuning/sysctl.d/90-sockstorm-loadgen.conf` sets.
const WIDE_PORT_RANGE: PortRange = PortRange {
    low: 1024,
    high: 65535,
};
/// Seconds a closed connection's tuple stays in TIME_WAIT (`TCP_TIMEWAIT_LEN`, not tunable).
pub(crate) const TIME_WAIT_SECS: u64 = 60;

pub(crate) const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
pub(crate) const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
pub(crate) const TCP_TW_REUSE: &str = "/proc/sys/net/ipv4/tcp_tw_reuse";
pub(crate) const TCP_FIN_TIMEOUT: &str = "/proc/sys/net/ipv4/tcp_fin_timeout";
const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
const CONNTRACK_COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";

/// The ephemeral port range `net.ipv4.ip_local_port_range`, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port connect() may pick (32768 by default).
    pub low: u16,
    /// Last port connect() may pick, inclusive (60999 by default).
    pub high: u16,
}

impl PortRange {
    /// Number of ports in the range, both ends counted (28232 for the default range).
    pub fn size(&self) -> u64 {
        u64::from(self.high).saturating_sub(u64::from(self.low)) + 1
    }
}

/// The connection-tracking table (netfilter), present when `nf_conntrack` is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conntrack {
    /// `net.netfilter.nf_conntrack_max`: tracked flows allowed.
    pub max: u64,
    /// `net.netfilter.nf_conntrack_count`: flows tracked now.
    pub count: u64,
}

/// Parses `net.ipv4.ip_local_port_range`: two ports separated by whitespace.
pub(crate) fn parse_port_range(text: &str) -> Result<PortRange, String> {
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

/// Reads the conntrack table's size and fill; `None` when `nf_conntrack` is not loaded.
pub(crate) fn read_conntrack() -> Reading<Option<Conntrack>> {
    if !Path::new(CONNTRACK_MAX).exists() {
        return Ok(None);
    }
    let max = read_with(CONNTRACK_MAX, parse_u64)?;
    let count = read_with(CONNTRACK_COUNT, parse_u64)?;
    Ok(Some(Conntrack { max, count }))
}

/// Ports connect() can pick per (source address, destination address, destination port):
/// the range minus the reserved ports inside it.
pub(crate) fn port_budget(r: &Readings) -> Reading<u64> {
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

/// Ephemeral ports: the budget holds per (source, destination, destination port).
pub(crate) fn check_ports(r: &Readings, opts: &DoctorOptions) -> LimitCheck {
    let want = opts.connections;
    let ips = u64::from(opts.source_ips.max(1));
    let targets = u64::from(opts.targets.max(1));
    match port_budget(r) {
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
            let capacity = per_tuple.saturating_mul(ips).saturating_mul(targets);
            let s = if ips == 1 { "" } else { "es" };
            let mut detail = format!(
                "{per_tuple} ports per (source address, destination address, destination port) \
                 × {ips} source address{s}"
            );
            if targets > 1 {
                detail.push_str(&format!(" × {targets} targets"));
            }
            // Spread evenly, each target needs its share of the ports.
            let fix = |n: u64| ports_fix(n.div_ceil(targets), per_tuple, opts.target);
            judge("ephemeral ports", capacity, want, detail, fix)
        }
        Err(e) => unknown("ephemeral ports", &e),
    }
}

/// The fix for `n` connections when each source address gets `per_tuple` ports: more source
/// addresses, or a wider port range and fewer of them.
fn ports_fix(n: u64, per_tuple: u64, target: Option<SocketAddr>) -> String {
    let k = n.div_ceil(per_tuple);
    let wide = WIDE_PORT_RANGE.size();
    let mut fix = source_ip_fix(k, target);
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
}

/// Connection tracking: with nf_conntrack loaded every connection is a tracked flow, and a
/// full table drops new SYNs ("nf_conntrack: table full, dropping packet"). `None` when the
/// module is not loaded.
pub(crate) fn check_conntrack(r: &Readings, want: Option<u64>) -> Option<LimitCheck> {
    match &r.conntrack {
        Ok(None) => None,
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
            Some(judge("conntrack table", capacity, want, detail, fix))
        }
        Err(e) => Some(unknown("conntrack table", e)),
    }
}

/// The TIME_WAIT note: without `tcp_tw_reuse` (2 already covers a loopback target), closed
/// connections hold their ports for [`TIME_WAIT_SECS`], which caps reconnect churn.
pub(crate) fn tw_reuse_note(r: &Readings, opts: &DoctorOptions) -> Option<String> {
    let ips = u64::from(opts.source_ips.max(1));
    let loopback_target = opts.target.is_some_and(|t| t.ip().is_loopback());
    let Ok(reuse) = r.tcp_tw_reuse else {
        return None;
    };
    if reuse == 1 || (reuse == 2 && loopback_target) {
        return None;
    }
    let meaning = if reuse == 2 { "loopback only" } else { "off" };
    let churn = port_budget(r)
        .map(|b| {
            format!(
                " (here about {} new connections/s per destination)",
                b.saturating_mul(ips) / TIME_WAIT_SECS
            )
        })
        .unwrap_or_default();
    Some(format!(
        "net.ipv4.tcp_tw_reuse = {reuse} ({meaning}): every connection this host closes \
         first keeps its 4-tuple in TIME_WAIT for {TIME_WAIT_SECS} s, so reconnect loops \
         and `--mode handshake` are capped at ports / {TIME_WAIT_SECS} s{churn}; set it \
         to 1 (needs net.ipv4.tcp_timestamps, on by default)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fixtures::{check, opts, readings};
    use crate::doctor::procfs::parse_cpulist;
    use crate::doctor::verdict;

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
    fn nth_loopback_counts_past_the_last_octet() {
        assert_eq!(nth_loopback(1), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(nth_loopback(4), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(nth_loopback(300), Ipv4Addr::new(127, 0, 1, 44));
        assert_eq!(nth_loopback(u64::MAX), Ipv4Addr::new(127, 255, 255, 255));
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
    fn each_target_adds_a_port_budget() {
        let mut o = opts(100_000, 1);
        o.target = Some("10.0.0.5:443".parse().unwrap());
        o.targets = 4;
        let v = verdict(&readings(), &o);
        let c = check(&v, "ephemeral ports");
        assert_eq!(c.capacity, Some(4 * 28232));
        assert!(c.detail.contains("× 4 targets"), "{}", c.detail);
        o.targets = 2;
        let v = verdict(&readings(), &o);
        let fix = check(&v, "ephemeral ports").fix.clone().unwrap();
        // 50,000 per target: 2 source addresses each.
        assert!(fix.contains("rotate 2 source addresses"), "{fix}");
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
}
