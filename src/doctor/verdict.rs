//! The verdict: pure. Each area's check turns its readings into a [`LimitCheck`] (capacity,
//! status, fix); the smallest capacity is the ceiling; each area adds its notes.

use super::{cpus, limits, listen, ports, uring, DoctorOptions, Readings};

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
    /// The connection count asked for (`-c N`); `None` when only capacities are reported.
    pub connections: Option<u64>,
    /// One check per limit, in this order: open files, `fs.nr_open`, `fs.file-max`, ephemeral
    /// ports, the conntrack table (only when `nf_conntrack` is loaded), memory.
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

/// Judges `readings` against `opts`: one check per limit that caps the connection count, the
/// ceiling, and notes. Pure; [`run`](super::run) feeds it the host's readings.
pub fn verdict(readings: &Readings, opts: &DoctorOptions) -> Verdict {
    let r = readings;
    let want = opts.connections;
    let mut checks = vec![
        limits::check_nofile(r, opts),
        limits::check_nr_open(r, opts),
        limits::check_file_max(r, want),
        ports::check_ports(r, opts),
    ];
    checks.extend(ports::check_conntrack(r, want));
    checks.push(limits::check_memory(r, want));

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

/// A check for a limit that could be read: `Info` without a count, `Ok` when `want` fits
/// `capacity`, otherwise `TooLow` with `fix(want)`.
pub(crate) fn judge(
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

/// A check for a limit that could not be read, with the reason.
pub(crate) fn unknown(limit: &'static str, why: &str) -> LimitCheck {
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
    notes.extend(ports::tw_reuse_note(r, opts));
    notes.extend(listen::gateway_notes(r, opts));
    notes.extend(uring::uring_notes(&r.uring));
    notes.extend(cpus::cpu_notes(r, opts));
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fixtures::{check, opts, readings};
    use crate::doctor::{DoctorReport, Support};

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
}
