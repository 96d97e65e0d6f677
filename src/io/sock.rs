//! Client socket options, the open-files limit, and process usage readings.

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

/// Descriptors a process keeps for itself under the epoll backend (stdio, the output file,
/// the auth threads' sockets, the metrics endpoint), plus three per shard (its epoll, its
/// eventfd and the engine's copy of it, the waker).
const EPOLL_RESERVE: u64 = 64;
const EPOLL_PER_SHARD: u64 = 3;

/// Connections the epoll backend holds under an fd limit of `limit` with `shards` shards:
/// every socket is one of the process's fds.
pub fn epoll_capacity(limit: u64, shards: u64) -> u64 {
    limit.saturating_sub(EPOLL_RESERVE + EPOLL_PER_SHARD * shards)
}

/// The fd limit the epoll backend needs for `connections` with `shards` shards.
pub fn epoll_fds_needed(connections: u64, shards: u64) -> u64 {
    connections + EPOLL_RESERVE + EPOLL_PER_SHARD * shards
}

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How client sockets are tuned (applied by the io_uring driver when it creates them).
#[derive(Debug, Clone, Copy, Default)]
pub struct SockOptions {
    /// Close with RST (SO_LINGER 0) instead of FIN, so no TIME_WAIT is left behind.
    pub linger_zero: bool,
}

/// Creates a tuned TCP socket for `dest` with syscalls, bound to `source` (if given) with
/// IP_BIND_ADDRESS_NO_PORT so the port is chosen per 4-tuple at connect time. The io_uring
/// driver uses this on kernels whose rings cannot create and bind sockets themselves.
pub fn client_socket(
    dest: &SocketAddr,
    source: Option<IpAddr>,
    opts: SockOptions,
) -> io::Result<Socket> {
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
    Ok(sock)
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

/// The calling thread's time on a CPU and time runnable but waiting for one, µs, from
/// `/proc/thread-self/schedstat` (`None` where the kernel does not keep it): together, how
/// much CPU the thread wanted. A thread busy all the time on a CPU it shares shows little
/// CPU use but long waits.
pub fn thread_sched_us() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut it = text.split_whitespace().map(|x| x.parse::<u64>().ok());
    let (on_cpu, waiting) = (it.next()??, it.next()??);
    Some((on_cpu / 1000, waiting / 1000))
}

/// CPU time (user + system) the calling thread has used, µs.
pub fn thread_cpu_us() -> u64 {
    // SAFETY: zeroed rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_usage_are_readable() {
        let (soft, hard) = raise_nofile_limit().unwrap();
        assert_eq!(soft, hard);
        assert!(rss_bytes().unwrap() > 0);
    }
}
