//! io_uring: the kernel version, the `kernel.io_uring_disabled` switch, and a live probe that
//! creates small rings to learn which setup flags, opcodes and features the kernel allows.

use std::fmt;
use std::fs;
use std::io;

use io_uring::{opcode, IoUring, Probe};

use super::procfs::parse_u64;
use super::Reading;
use crate::io::backend::BackendKind;
pub use crate::io::probe::KernelVersion;
use crate::io::probe::Selected;
pub(crate) use crate::io::probe::{parse_kernel_release, OSRELEASE};

const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";

/// The io_uring opcodes the backend submits: (name, opcode, first kernel).
pub(crate) const OPCODES: [(&str, u8, &str); 8] = [
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
    /// The first kernel that has it, e.g. `5.19`.
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
    /// The backend `run --backend auto` would use here and why, from the same probe `run`
    /// makes (an error: io_uring lacks locked memory, and runs stop with this reason).
    pub backend: Reading<Selected>,
}

/// Creates small rings to learn which setup flags, opcodes and features the kernel allows.
pub(crate) fn read_uring(kernel: &Reading<KernelVersion>) -> UringReadings {
    let disabled = read_disabled();
    let (ring, single_issuer, defer_taskrun) = build_ring();
    let opcodes = match &ring {
        Ok(ring) => probe_opcodes(ring),
        Err(_) => opcodes_unknown("no ring could be created"),
    };
    let buf_ring = match &ring {
        Ok(ring) => probe_buf_ring(ring, kernel),
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
        backend: crate::io::probe::select(None).map_err(|e| e.0),
    }
}

/// Reads `kernel.io_uring_disabled`, which kernels before 6.6 do not have.
fn read_disabled() -> Reading<u32> {
    match fs::read_to_string(IO_URING_DISABLED) {
        Ok(text) => parse_u64(&text)
            .and_then(|v| u32::try_from(v).map_err(|e| e.to_string()))
            .map_err(|e| format!("{IO_URING_DISABLED}: {e}")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err("absent: kernels before 6.6 have no such switch".to_owned())
        }
        Err(e) => Err(format!("cannot read {IO_URING_DISABLED}: {e}")),
    }
}

/// Builds an 8-entry ring with the setup flags the backend uses, dropping them one at a time
/// until the kernel accepts: the ring (or why none could be made), then SINGLE_ISSUER and
/// DEFER_TASKRUN support.
fn build_ring() -> (Result<IoUring, String>, Support, Support) {
    match IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)
    {
        Ok(ring) => (Ok(ring), Support::Yes, Support::Yes),
        Err(both) => match IoUring::builder().setup_single_issuer().build(8) {
            Ok(ring) => (
                Ok(ring),
                Support::Yes,
                Support::No(explain_uring_error(&both, "6.1")),
            ),
            Err(single) => match IoUring::new(8) {
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
    }
}

/// Asks `ring` (`IORING_REGISTER_PROBE`) which of [`OPCODES`] the kernel supports.
fn probe_opcodes(ring: &IoUring) -> Vec<OpcodeSupport> {
    let mut probe = Probe::new();
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

/// Whether `ring` knows provided buffer rings. Unregistering a group that was never registered
/// tells the two cases apart without handing the kernel any memory: ENOENT means the command
/// exists (5.19+), EINVAL that it does not.
fn probe_buf_ring(ring: &IoUring, kernel: &Reading<KernelVersion>) -> Support {
    match ring.submitter().unregister_buf_ring(u16::MAX) {
        Ok(()) => Support::Yes,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Support::Yes,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Support::No(format!(
            "IORING_UNREGISTER_PBUF_RING rejected ({e}); provided buffer rings need 5.19{}",
            kernel_suffix(kernel)
        )),
        Err(e) => Support::Unknown(format!("IORING_UNREGISTER_PBUF_RING: {e}")),
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

/// Notes on io_uring: unusable (runs fall back to epoll), missing features, or switched off.
pub(crate) fn uring_notes(u: &UringReadings) -> Vec<String> {
    let mut notes = Vec::new();
    match &u.backend {
        Ok(b) if b.kind == BackendKind::Epoll => notes.push(format!(
            "runs use the epoll backend: {}; every connection is then one of the process's \
             RLIMIT_NOFILE fds, across all shards",
            b.reason
        )),
        Ok(_) => {}
        Err(e) => notes.push(format!("runs stop before they start: {e}")),
    }
    if let Support::No(why) | Support::Unknown(why) = &u.ring {
        notes.push(format!("io_uring is not usable ({why})"));
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
    notes
}
