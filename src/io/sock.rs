//! Socket creation and tuning (socket2), source-address binding, and the open-files limit.

use std::io;

/// Reads RLIMIT_NOFILE as `(soft, hard)`.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit struct for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new `(soft, hard)`.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let (soft, hard) = nofile_limit()?;
    if soft < hard {
        let lim = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: `lim` is a valid rlimit struct; setrlimit only reads it.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    nofile_limit()
}

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{IntoRawFd, RawFd};
use std::time::Duration;

/// How client sockets are tuned.
#[derive(Debug, Clone, Copy, Default)]
pub struct SockOptions {
    /// Close with RST (SO_LINGER 0) instead of FIN, so no TIME_WAIT is left behind.
    pub linger_zero: bool,
}

/// Creates a TCP socket for `dest`, tuned and (if `source` is given) bound to that address
/// with IP_BIND_ADDRESS_NO_PORT, so the port is chosen at connect time per 4-tuple and a
/// source address is not limited to 28k ports across all destinations. Returns the raw fd,
/// which the caller owns and must close.
pub fn client_socket(
    dest: &SocketAddr,
    source: Option<IpAddr>,
    opts: SockOptions,
) -> io::Result<RawFd> {
    let sock = Socket::new(
        Domain::for_address(*dest),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    sock.set_tcp_nodelay(true)?;
    sock.set_reuse_address(true)?;
    if opts.linger_zero {
        sock.set_linger(Some(Duration::ZERO))?;
    }
    if let Some(ip) = source {
        set_bind_address_no_port(&sock)?;
        sock.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    Ok(sock.into_raw_fd())
}

fn set_bind_address_no_port(sock: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: valid socket fd, pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resident set size of this process in bytes, from /proc/self/statm.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// User and system CPU time of this process so far, from getrusage.
pub fn cpu_time() -> (Duration, Duration) {
    // SAFETY: zeroed rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_bound_socket_connects_from_that_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dest = listener.local_addr().unwrap();
        let fd = client_socket(
            &dest,
            Some("127.0.0.3".parse().unwrap()),
            SockOptions::default(),
        )
        .unwrap();
        // SAFETY (test): we own fd and hand it to socket2 exactly once.
        let sock = unsafe { <Socket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        sock.connect(&SockAddr::from(dest)).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), "127.0.0.3".parse::<IpAddr>().unwrap());
        assert!(sock.tcp_nodelay().unwrap());
    }

    #[test]
    fn limits_and_usage_are_readable() {
        let (soft, hard) = raise_nofile_limit().unwrap();
        assert_eq!(soft, hard);
        assert!(rss_bytes().unwrap() > 0);
    }
}
