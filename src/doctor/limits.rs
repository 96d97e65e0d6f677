//! Open files and memory: RLIMIT_NOFILE, `fs.nr_open`, `fs.file-max` and `/proc/meminfo`, and
//! the checks that turn them into connection capacities.

use super::procfs::parse_u64;
use super::verdict::{judge, unknown, LimitCheck};
use super::{DoctorOptions, Readings};
use crate::io::backend::BackendKind;
use crate::io::sock::{epoll_capacity, epoll_fds_needed};

/// File descriptors the process needs besides connection sockets: stdio, rings, eventfds,
/// timers, log and result files.
pub(crate) const RESERVED_FDS: u64 = 64;
/// Rough kernel memory of one idle TCP socket (file, inode, dentry, sock), in bytes.
const KERNEL_BYTES_PER_CONN: u64 = 4 * 1024;
/// Rough client memory of one idle connection (state machine, slab slot, timer entry), in bytes.
const CLIENT_BYTES_PER_CONN: u64 = 1024;

pub(crate) const NR_OPEN: &str = "/proc/sys/fs/nr_open";
pub(crate) const FILE_MAX: &str = "/proc/sys/fs/file-max";
pub(crate) const FILE_NR: &str = "/proc/sys/fs/file-nr";
pub(crate) const MEMINFO: &str = "/proc/meminfo";

/// Memory figures from `/proc/meminfo`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`: usable RAM.
    pub total_kib: u64,
    /// `MemAvailable`: what new allocations can get without swapping.
    pub available_kib: u64,
}

/// Parses `/proc/meminfo` for `MemTotal` and `MemAvailable` (kB).
pub(crate) fn parse_meminfo(text: &str) -> Result<MemInfo, String> {
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

/// Parses `fs.file-nr` (`allocated  free  max`) for the allocated count.
pub(crate) fn parse_file_nr(text: &str) -> Result<u64, String> {
    let first = text.split_whitespace().next().unwrap_or("");
    parse_u64(first)
}

/// Whether runs here use epoll, where every socket is an fd of the process.
fn epoll(r: &Readings) -> bool {
    matches!(&r.uring.backend, Ok(b) if b.kind == BackendKind::Epoll)
}

/// Open files, for the backend runs will use. io_uring: sockets live in each client shard's
/// direct-descriptor table, which the kernel caps at RLIMIT_NOFILE per ring (raised to the
/// hard limit at start), so capacity grows with shards, and the process's own fd table holds
/// only a few descriptors per shard. epoll: every socket is one of the process's fds, so all
/// shards together hold about RLIMIT_NOFILE.
pub(crate) fn check_nofile(r: &Readings, opts: &DoctorOptions) -> LimitCheck {
    let want = opts.connections;
    let shards = opts.shards.max(1) as u64;
    match &r.nofile {
        Ok((soft, hard)) => {
            let per_ring = hard.saturating_sub(RESERVED_FDS);
            let fds = epoll_capacity(*hard, shards);
            let epoll = epoll(r);
            let capacity = if epoll { fds } else { per_ring * shards };
            let detail = if epoll {
                format!(
                    "epoll: every connection is one of the process's fds, so hard limit {hard} holds \
                     {fds} across all {shards} shard(s) (io_uring would hold {shards} × {per_ring} \
                     here); soft limit {soft} is raised to the hard limit at start"
                )
            } else {
                format!(
                    "io_uring: hard limit {hard} caps each of {shards} shard(s) at {per_ring} \
                     connections, {capacity} in all ({RESERVED_FDS} kept per shard for sockets \
                     still closing; soft limit {soft} is raised to the hard limit at start; epoll \
                     would hold {fds})"
                )
            };
            let fix = |n: u64| {
                let need = if epoll {
                    epoll_fds_needed(n, shards)
                } else {
                    n.div_ceil(shards) + RESERVED_FDS
                };
                let mut fix = format!(
                    "{}raise the hard limit to at least {need}: \
                     `ulimit -Hn {need}` as root in the launching shell, `nofile` in \
                     /etc/security/limits.d (tuning/limits.d/90-sockstorm.conf, new sessions), or \
                     `LimitNOFILE={need}` in the systemd unit \
                     (tuning/systemd/sockstorm.service.d/limits.conf); see tuning/",
                    if epoll {
                        ""
                    } else {
                        "run more shards (--cpus), or "
                    }
                );
                if matches!(r.nr_open, Ok(nr) if nr < need) {
                    fix.push_str("; fs.nr_open caps the hard limit, raise it first");
                }
                fix
            };
            judge("open files (RLIMIT_NOFILE)", capacity, want, detail, fix)
        }
        Err(e) => unknown("open files (RLIMIT_NOFILE)", e),
    }
}

/// `fs.nr_open` caps what any hard limit can be raised to.
pub(crate) fn check_nr_open(r: &Readings, opts: &DoctorOptions) -> LimitCheck {
    let want = opts.connections;
    let shards = opts.shards.max(1) as u64;
    match &r.nr_open {
        Ok(nr) => {
            let epoll = epoll(r);
            let capacity = if epoll {
                epoll_capacity(*nr, shards)
            } else {
                nr.saturating_sub(RESERVED_FDS) * shards
            };
            let detail = if epoll {
                format!("no hard limit (so no process's fd table) may exceed {nr}")
            } else {
                format!("no hard limit (so no shard's descriptor table) may exceed {nr}")
            };
            let fix = |n: u64| {
                let need = if epoll {
                    epoll_fds_needed(n, shards)
                } else {
                    n.div_ceil(shards) + RESERVED_FDS
                };
                format!(
                    "`sysctl -w fs.nr_open={need}`; persist it in /etc/sysctl.d \
                     (tuning/sysctl.d/90-sockstorm-loadgen.conf)"
                )
            };
            judge("fs.nr_open", capacity, want, detail, fix)
        }
        Err(e) => unknown("fs.nr_open", e),
    }
}

/// `fs.file-max` counts every open file on the host, so the files open now are subtracted.
pub(crate) fn check_file_max(r: &Readings, want: Option<u64>) -> LimitCheck {
    match &r.file_max {
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
    }
}

/// Memory: idle connections cost kernel socket memory plus a little client state.
pub(crate) fn check_memory(r: &Readings, want: Option<u64>) -> LimitCheck {
    match &r.memory {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fixtures::{check, opts, readings};
    use crate::doctor::{verdict, CheckStatus};

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
    fn single_numbers_and_file_nr() {
        assert_eq!(parse_u64("1048576\n"), Ok(1_048_576));
        assert!(parse_u64("").is_err());
        assert!(parse_u64("-1").is_err());
        assert_eq!(parse_file_nr("1234\t0\t9223372036854775807\n"), Ok(1234));
        assert!(parse_file_nr("").is_err());
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
    fn epoll_holds_one_fd_table_across_shards_and_says_what_io_uring_would() {
        let mut r = readings();
        r.nofile = Ok((1024, 20_000));
        r.uring.backend = Ok(crate::io::probe::Selected {
            kind: BackendKind::Epoll,
            reason: "io_uring blocked by a seccomp filter (EPERM), as in Docker ≥ 25 and \
                     containerd 2 defaults"
                .to_owned(),
        });
        let v = verdict(&r, &opts(25_000, 1));
        let c = check(&v, "open files (RLIMIT_NOFILE)");
        assert_eq!(c.status, CheckStatus::TooLow);
        // 8 shards: one table of 20,000 less 64 and three fds per shard.
        assert_eq!(c.capacity, Some(20_000 - 64 - 24));
        assert!(
            c.detail.contains("io_uring would hold 8 × 19936 here"),
            "{}",
            c.detail
        );
        let fix = c.fix.as_deref().unwrap();
        assert!(fix.contains("ulimit -Hn 25088"), "{fix}");
        assert!(
            !fix.contains("--cpus"),
            "more shards do not help epoll: {fix}"
        );
        assert!(
            v.notes
                .iter()
                .any(|n| n.contains("runs use the epoll backend: io_uring blocked")),
            "{:?}",
            v.notes
        );
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
}
