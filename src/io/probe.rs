//! Which backend can run here, and why: one io_uring probe per run, explained from what the
//! kernel says (`kernel.io_uring_disabled`, `kernel.io_uring_group`, the `Seccomp:` field of
//! `/proc/self/status`, the kernel version), so that `run`, its JSON and `doctor` all say the
//! same true thing in one line.

use crate::io::backend::{Backend, BackendKind, IoConfig};
use crate::io::uring::Ring;
use io_uring::IoUring;
use std::fs;

use std::net::{Ipv4Addr, SocketAddr};

/// Where the kernel version is read.
pub const OSRELEASE: &str = "/proc/sys/kernel/osrelease";
const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";
const IO_URING_GROUP: &str = "/proc/sys/kernel/io_uring_group";

/// The running kernel's version, from `kernel.osrelease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelVersion {
    /// The full release string, e.g. `6.8.0-45-generic`.
    pub release: String,
    /// Major version, the `6` of `6.8.0-45-generic`.
    pub major: u32,
    /// Minor version, the `8` of `6.8.0-45-generic`.
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

/// Parses `kernel.osrelease`, e.g. `6.8.0-45-generic` or `6.1`.
pub fn parse_kernel_release(text: &str) -> Result<KernelVersion, String> {
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

/// What the host says about io_uring, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// `kernel.io_uring_disabled` (6.6+): 0 on, 1 only for `kernel.io_uring_group`, 2 off.
    pub disabled: Option<u32>,
    /// `kernel.io_uring_group`: the group allowed io_uring when `disabled` is 1 (-1: none,
    /// only CAP_SYS_ADMIN may).
    pub group: Option<i64>,
    /// Whether this process may use io_uring when `disabled` is 1: it has CAP_SYS_ADMIN or
    /// is in that group.
    pub in_group: bool,
    /// The `Seccomp:` mode of this process: 0 none, 1 strict, 2 filter.
    pub seccomp: Option<u32>,
    /// The kernel version.
    pub kernel: Option<KernelVersion>,
}

impl HostFacts {
    /// Reads the facts of this host and process.
    pub fn read() -> Self {
        let num = |p: &str| fs::read_to_string(p).ok()?.trim().parse::<i64>().ok();
        let group = num(IO_URING_GROUP);
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let seccomp = field("Seccomp:").and_then(|v| v.parse().ok());
        // CAP_SYS_ADMIN is bit 21 of the effective set.
        let sys_admin = field("CapEff:")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .is_some_and(|caps| caps & (1 << 21) != 0);
        Self {
            disabled: num(IO_URING_DISABLED).and_then(|v| u32::try_from(v).ok()),
            in_group: sys_admin
                || group
                    .and_then(|g| u32::try_from(g).ok())
                    .is_some_and(in_group),
            group,
            seccomp,
            kernel: fs::read_to_string(OSRELEASE)
                .ok()
                .and_then(|t| parse_kernel_release(&t).ok()),
        }
    }
}

/// Whether this process is a member of group `gid`.
fn in_group(gid: u32) -> bool {
    // SAFETY: getegid has no preconditions.
    if unsafe { libc::getegid() } == gid {
        return true;
    }
    let mut groups = vec![0 as libc::gid_t; 256];
    // SAFETY: the buffer holds `groups.len()` gids and getgroups writes at most that many.
    let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
    usize::try_from(n).is_ok_and(|n| groups[..n].contains(&gid))
}

/// Why io_uring cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// Blocked or missing: the epoll backend is the fallback. The reason, in one line.
    Blocked(String),
    /// The ring could not get its memory (ENOMEM): a locked-memory limit, not a missing
    /// feature; the run does not fall back in silence. The reason and the fix.
    Memlock(String),
}

impl Unavailable {
    /// The one-line reason.
    pub fn reason(&self) -> &str {
        match self {
            Self::Blocked(r) | Self::Memlock(r) => r,
        }
    }
}

/// The backend chosen for a run and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The backend.
    pub kind: BackendKind,
    /// Why, in one line a user understands, e.g. "io_uring blocked by a seccomp filter
    /// (EPERM), as in Docker ≥ 25 and containerd 2 defaults".
    pub reason: String,
}

/// Why the asked-for backend cannot run (`--backend uring` where io_uring cannot work, or
/// any backend when io_uring fails for lack of locked memory).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectError(pub String);

/// Chooses the backend: `want` = `None` is `auto` (io_uring where it works, else epoll).
pub fn select(want: Option<BackendKind>) -> Result<Selected, SelectError> {
    match want {
        Some(BackendKind::Epoll) => Ok(Selected {
            kind: BackendKind::Epoll,
            reason: "chosen with --backend epoll".to_owned(),
        }),
        Some(BackendKind::Uring) => match probe_uring() {
            Ok(()) => Ok(Selected {
                kind: BackendKind::Uring,
                reason: "chosen with --backend uring".to_owned(),
            }),
            Err(u) => Err(SelectError(format!(
                "--backend uring: {}; use --backend auto or epoll",
                u.reason()
            ))),
        },
        None => match probe_uring() {
            Ok(()) => Ok(Selected {
                kind: BackendKind::Uring,
                reason: "io_uring is available".to_owned(),
            }),
            Err(Unavailable::Blocked(reason)) => Ok(Selected {
                kind: BackendKind::Epoll,
                reason,
            }),
            Err(Unavailable::Memlock(reason)) => Err(SelectError(reason)),
        },
    }
}

/// Sets up a small ring the way a shard does (flags, opcodes, descriptor table, buffer ring)
/// and explains a refusal.
pub fn probe_uring() -> Result<(), Unavailable> {
    let facts = HostFacts::read();
    // The flags first, alone: their errno is the kernel's answer to io_uring_setup.
    if let Err(e) = IoUring::<io_uring::squeue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_clamp()
        .build(8)
    {
        return Err(explain(e.raw_os_error(), &e.to_string(), &facts));
    }
    let cfg = IoConfig {
        entries: 8,
        buf_count: 1,
        buf_size: 64,
        files: 1,
        ..IoConfig::default()
    };
    match Ring::new(cfg, &[SocketAddr::from((Ipv4Addr::LOCALHOST, 9))], &[]) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {
            Err(explain(Some(libc::ENOMEM), &e.to_string(), &facts))
        }
        Err(e) => Err(Unavailable::Blocked(format!(
            "io_uring lacks a feature the backend needs ({e}){}",
            kernel_note(&facts)
        ))),
    }
}

fn kernel_note(facts: &HostFacts) -> String {
    facts
        .kernel
        .as_ref()
        .map_or_else(String::new, |k| format!("; kernel {}", k.release))
}

/// Turns an `io_uring_setup` refusal into one line a user understands, from what the host
/// says. Pure, so every case is tested.
pub fn explain(errno: Option<i32>, error: &str, f: &HostFacts) -> Unavailable {
    match errno {
        Some(libc::ENOMEM) => Unavailable::Memlock(
            "io_uring could not get its memory (ENOMEM): the receive buffer ring it pins is \
             charged to the locked-memory limit (RLIMIT_MEMLOCK), the ring itself to the memory \
             cgroup; raise the limit (ulimit -l unlimited, LimitMEMLOCK=infinity, the \
             container's memlock ulimit) or the cgroup's memory, or run with --backend epoll"
                .to_owned(),
        ),
        _ if f.disabled == Some(2) => {
            Unavailable::Blocked("kernel.io_uring_disabled = 2 (io_uring is off)".to_owned())
        }
        _ if f.disabled == Some(1) && !f.in_group => Unavailable::Blocked(match f.group {
            Some(g) if g >= 0 => format!(
                "kernel.io_uring_disabled = 1 and this process is neither in \
                 kernel.io_uring_group ({g}) nor has CAP_SYS_ADMIN"
            ),
            _ => "kernel.io_uring_disabled = 1 and no kernel.io_uring_group is set: only \
                  CAP_SYS_ADMIN may use io_uring"
                .to_owned(),
        }),
        Some(libc::EPERM) if f.seccomp == Some(2) => Unavailable::Blocked(
            "io_uring blocked by a seccomp filter (EPERM), as in Docker ≥ 25 and containerd 2 \
             defaults"
                .to_owned(),
        ),
        Some(libc::ENOSYS) if f.seccomp == Some(2) => Unavailable::Blocked(
            "io_uring blocked by a seccomp filter (ENOSYS), as in Podman's default profile"
                .to_owned(),
        ),
        Some(libc::ENOSYS) => Unavailable::Blocked(format!(
            "this kernel has no io_uring (ENOSYS; CONFIG_IO_URING off){}",
            kernel_note(f)
        )),
        Some(libc::EINVAL) if f.kernel.as_ref().is_some_and(|k| !k.at_least(6, 1)) => {
            Unavailable::Blocked(format!(
                "kernel {} lacks io_uring's DEFER_TASKRUN (Linux 6.1 or later is needed)",
                f.kernel.as_ref().map_or("", |k| k.release.as_str())
            ))
        }
        Some(libc::EPERM) => Unavailable::Blocked(
            "io_uring refused (EPERM): blocked by a security policy (seccomp, SELinux or \
             kernel.io_uring_disabled)"
                .to_owned(),
        ),
        _ => Unavailable::Blocked(format!("io_uring setup failed ({error}){}", kernel_note(f))),
    }
}

/// Reads the facts of this host and process; exposed for `doctor`.
pub fn host_facts() -> HostFacts {
    HostFacts::read()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            disabled: Some(0),
            group: None,
            in_group: false,
            seccomp: Some(0),
            kernel: parse_kernel_release("6.18.0").ok(),
        }
    }

    #[test]
    fn every_refusal_has_its_one_line_reason() {
        let f = facts();
        let docker = HostFacts {
            seccomp: Some(2),
            ..f.clone()
        };
        assert_eq!(
            explain(Some(libc::EPERM), "", &docker).reason(),
            "io_uring blocked by a seccomp filter (EPERM), as in Docker ≥ 25 and containerd 2 defaults"
        );
        assert!(explain(Some(libc::ENOSYS), "", &docker)
            .reason()
            .contains("Podman"));
        let off = HostFacts {
            disabled: Some(2),
            ..f.clone()
        };
        assert_eq!(
            explain(Some(libc::EPERM), "", &off).reason(),
            "kernel.io_uring_disabled = 2 (io_uring is off)"
        );
        let group = HostFacts {
            disabled: Some(1),
            group: Some(1234),
            ..f.clone()
        };
        assert!(explain(Some(libc::EPERM), "", &group)
            .reason()
            .contains("neither in kernel.io_uring_group (1234) nor has CAP_SYS_ADMIN"));
        let no_group = HostFacts {
            group: Some(-1),
            ..group.clone()
        };
        assert!(explain(Some(libc::EPERM), "", &no_group)
            .reason()
            .ends_with("only CAP_SYS_ADMIN may use io_uring"));
        let allowed = HostFacts {
            in_group: true,
            seccomp: Some(2),
            ..group
        };
        assert!(explain(Some(libc::EPERM), "", &allowed)
            .reason()
            .contains("seccomp"));
        let old = HostFacts {
            kernel: parse_kernel_release("5.15.0-91-generic").ok(),
            ..f.clone()
        };
        assert!(explain(Some(libc::EINVAL), "", &old)
            .reason()
            .contains("kernel 5.15.0-91-generic lacks io_uring's DEFER_TASKRUN"));
        assert!(matches!(
            explain(Some(libc::ENOMEM), "", &f),
            Unavailable::Memlock(r) if r.contains("ulimit -l")
        ));
        assert!(explain(Some(libc::ENOSYS), "", &f)
            .reason()
            .contains("CONFIG_IO_URING"));
    }

    #[test]
    fn this_host_runs_io_uring_or_says_why_not() {
        match probe_uring() {
            Ok(()) => assert_eq!(select(None).unwrap().kind, BackendKind::Uring),
            Err(u) => assert!(!u.reason().is_empty()),
        }
        assert_eq!(
            select(Some(BackendKind::Epoll)).unwrap().kind,
            BackendKind::Epoll
        );
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
}
