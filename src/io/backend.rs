//! The contract between a shard and its I/O backend, in completion style.
//!
//! A shard asks its backend to open a connection (socket, options, optional bind, connect and
//! the first send, as one request), send, receive until told otherwise, watch a socket it no
//! longer reads for a hang-up, cancel, close (or reset), and wait until the next deadline or a
//! wake-up. Every request names itself with a `user_data` word ([`pack`]: slot, generation,
//! operation), and finishes with exactly one final [`Completion`] carrying it; a receive also
//! posts one completion per read before its final one. The shard never learns how the
//! backend does it:
//!
//! - [`crate::io::uring::Ring`] hands the requests to the kernel as io_uring operations
//!   (linked chains, multishot receives into provided buffers, direct descriptors);
//! - [`crate::io::epoll::Poller`] performs them with nonblocking syscalls when epoll reports
//!   the socket ready (edge-triggered, through mio), and posts the same completions.
//!
//! The shard's logic (schedule, timers, reconnects, stages, storms, fan-out, TLS, metrics) is
//! written once against [`Backend`], so the two cannot drift apart.

use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::time::Duration;

use crate::io::sock::SockOptions;

/// Operation kinds encoded in `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The TCP connect of the slot's socket to the target.
    Connect = 1,
    /// Send of the slot's buffer.
    Send = 2,
    /// Receive: one completion per read until it ends (EOF, an error, a cancel).
    Recv = 3,
    /// Close of the slot's socket, which frees the slot for the backend.
    Close = 4,
    /// Cancellation of another op (its own completion, if any, is ignored).
    Cancel = 5,
    /// A wake-up from another thread ([`Waker`]).
    Wake = 6,
    /// Socket creation, socket options or bind ahead of a connect; completes only on failure.
    Setup = 7,
    /// Watch for an error or hang-up only, on a socket no longer read.
    Hangup = 8,
}

impl Op {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Connect,
            2 => Self::Send,
            3 => Self::Recv,
            4 => Self::Close,
            5 => Self::Cancel,
            6 => Self::Wake,
            7 => Self::Setup,
            8 => Self::Hangup,
            _ => return None,
        })
    }
}

/// Packs slot (32 bits), generation (24 bits) and op (8 bits) into `user_data`, so a completion
/// for a slot that has since been reused is recognised by its stale generation.
pub fn pack(slot: u32, gen: u32, op: Op) -> u64 {
    u64::from(slot) | (u64::from(gen & 0xFF_FFFF) << 32) | ((op as u64) << 56)
}

/// Inverse of [`pack`].
pub fn unpack(ud: u64) -> (u32, u32, Option<Op>) {
    (
        ud as u32,
        ((ud >> 32) as u32) & 0xFF_FFFF,
        Op::from_u8((ud >> 56) as u8),
    )
}

/// One completion, handed to the shard. It carries back what the backend no longer uses: the
/// buffer of a finished send, the receive buffer a read filled.
#[derive(Debug)]
pub struct Completion {
    pub(crate) user_data: u64,
    pub(crate) result: i32,
    pub(crate) more: bool,
    pub(crate) sent: Option<Vec<u8>>,
    pub(crate) buf: Option<RecvBuf>,
}

impl Completion {
    /// A completion of `user_data` with `result` (bytes, 0, or `-errno`) and nothing attached.
    pub(crate) fn new(user_data: u64, result: i32) -> Self {
        Self {
            user_data,
            result,
            more: false,
            sent: None,
            buf: None,
        }
    }

    /// The packed `user_data` of the request.
    pub fn user_data(&self) -> u64 {
        self.user_data
    }

    /// Result: bytes, 0, or `-errno`.
    pub fn result(&self) -> i32 {
        self.result
    }

    /// Whether a receive stays armed after this completion.
    pub fn more(&self) -> bool {
        self.more
    }

    /// The buffer of a completed send, handed back for reuse; `None` for other ops, or once taken.
    pub fn take_sent(&mut self) -> Option<Vec<u8>> {
        self.sent.take()
    }

    /// The buffer a receive filled: read it with [`Backend::buffer`], then give it back with
    /// [`Backend::recycle`] before the next [`Backend::reap`]; `None` for other ops, or once
    /// taken.
    pub fn take_buffer(&mut self) -> Option<RecvBuf> {
        self.buf.take()
    }
}

/// A receive buffer filled by a read: read it with [`Backend::buffer`], then hand it back with
/// [`Backend::recycle`]. Only a backend's `reap` makes these, so it always names bytes the
/// kernel has finished writing.
#[derive(Debug)]
pub struct RecvBuf {
    /// The backend's name for the buffer: a provided-buffer id (io_uring) or an offset into
    /// the shard's receive arena (epoll).
    pub(crate) id: usize,
    pub(crate) len: usize,
}

/// Sizes and socket setup of one shard's backend. Memory: `buf_count × buf_size` bytes of
/// receive buffers per shard (1 MiB by default), touched lazily.
#[derive(Debug, Clone, Copy)]
pub struct IoConfig {
    /// io_uring submission queue entries (default 4096; epoll: the events read per wait).
    pub entries: u32,
    /// io_uring: provided receive buffers, a power of two ≤ 32768 (default 256: a burst that
    /// finds them all in use ends the multishot receive with ENOBUFS and the shard re-arms it).
    /// epoll: the receive arena holds `buf_count × buf_size` bytes a turn.
    pub buf_count: u16,
    /// Size of each receive buffer, and of each read, in bytes (default 4096).
    pub buf_size: u32,
    /// The most sockets the shard holds at once: slots `0..files`. io_uring: its
    /// direct-descriptor table, capped by the kernel at RLIMIT_NOFILE per ring, with the
    /// sockets out of the process's fd table. epoll: this shard's share of the process's fd
    /// table.
    pub files: u32,
    /// Socket tuning applied to every socket.
    pub sock: SockOptions,
    /// io_uring: create sockets in the ring when the kernel can (6.11+), else with syscalls.
    /// epoll always uses syscalls.
    pub setup: SocketSetup,
}

/// How io_uring creates and binds sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketSetup {
    /// In the ring (socket, options, bind linked to the connect) if the kernel supports it.
    #[default]
    Auto,
    /// With syscalls, then installed in the descriptor table (kernels 6.1-6.10).
    Syscalls,
}

impl Default for IoConfig {
    fn default() -> Self {
        Self {
            entries: 4096,
            buf_count: 256,
            buf_size: 4096,
            files: 1024,
            sock: SockOptions::default(),
            setup: SocketSetup::Auto,
        }
    }
}

/// Which backend a shard runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring ([`crate::io::uring::Ring`]).
    Uring,
    /// epoll through mio ([`crate::io::epoll::Poller`]).
    Epoll,
}

impl BackendKind {
    /// The name users type and read: `uring` or `epoll`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uring => "uring",
            Self::Epoll => "epoll",
        }
    }
}

/// What a shard needs from its I/O backend. Requests are queued by the methods below and
/// take effect by [`Backend::wait`] at the latest; their completions come out of
/// [`Backend::reap`], each exactly once.
pub trait Backend: Sized {
    /// Sets the backend up for connections to `targets` (at least one, all of one address
    /// family), from `sources` if any.
    fn new(cfg: IoConfig, targets: &[SocketAddr], sources: &[std::net::IpAddr])
        -> io::Result<Self>;

    /// Slots `0..files` can hold a socket.
    fn files(&self) -> u32;

    /// A handle that wakes this backend's thread from its wait.
    fn waker(&self) -> io::Result<Waker>;

    /// Re-arms the wake-up after a [`Op::Wake`] completion.
    fn arm_wake(&mut self);

    /// Opens a connection to `targets[target]` in `slot`: socket, options, bind to
    /// `sources[source]` with IP_BIND_ADDRESS_NO_PORT (if given), connect, then the send of
    /// `buf` (the upgrade request). `ud` names the setup (a completion only if it fails), the connect and the
    /// send; if the connect fails the send completes with `-ECANCELED`. Gives `buf` back with
    /// an errno if the slot is out of range (EMFILE), busy, or the socket could not be made.
    fn open(
        &mut self,
        slot: u32,
        target: usize,
        source: Option<usize>,
        buf: Vec<u8>,
        ud: [u64; 3],
    ) -> Result<(), (Vec<u8>, i32)>;

    /// Sends `buf` whole on the socket in `slot`; the buffer comes back with the completion,
    /// whose result is the bytes written (fewer on a short write) or `-errno`. At most one send
    /// per slot is in flight: a second is refused with its buffer.
    fn send(&mut self, slot: u32, buf: Vec<u8>, ud: u64) -> Result<(), Vec<u8>>;

    /// Receives on the socket in `slot`: a completion per read (`more()` set), until EOF (0),
    /// an error, or a cancel ends it.
    fn recv(&mut self, slot: u32, ud: u64);

    /// Watches the socket in `slot` for an error (a reset) or a hang-up without reading it:
    /// one completion, with the `POLLERR`/`POLLHUP`/`POLLRDHUP` bits that fired.
    fn watch_hangup(&mut self, slot: u32, ud: u64);

    /// Cancels the request whose `user_data` is `target_ud`: it completes with `-ECANCELED`
    /// unless it completed already. The cancel's own completion (`ud`) may or may not come.
    fn cancel(&mut self, target_ud: u64, ud: u64);

    /// Closes the socket in `slot`, freeing the slot once the completion (`ud`) comes.
    fn close(&mut self, slot: u32, ud: u64);

    /// Closes the socket in `slot` with RST (SO_LINGER 0 first; if that fails, `ud_opt`
    /// completes with the error and the close is a FIN).
    fn close_rst(&mut self, slot: u32, ud_opt: u64, ud: u64);

    /// The bytes a receive left in its buffer.
    fn buffer(&self, b: &RecvBuf) -> &[u8];

    /// Hands a receive buffer back.
    fn recycle(&mut self, b: RecvBuf);

    /// Starts what was queued and sleeps until a completion, a wake-up or `timeout` (`None`:
    /// no timeout). Never polls: an idle shard sleeps until its next deadline.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// Moves the completions available now into `out` (cleared first).
    fn reap(&mut self, out: &mut Vec<Completion>);

    /// Completion backlog events so far: io_uring completion-queue overflows (completions
    /// the kernel had to hold back because the queue was full), or epoll waits that returned
    /// a full event buffer (more sockets ready than one wait takes).
    fn backlog(&mut self) -> u64;

    /// How much later than asked a timed wait may end by design, µs (epoll waits in whole
    /// milliseconds, rounded up; io_uring to the nanosecond).
    fn timer_granularity_us(&self) -> u64;
}

/// Wakes a sleeping shard from another thread: a write to the shard's eventfd.
#[derive(Debug)]
pub struct Waker(File);

impl Waker {
    /// Interrupts the shard's wait; it re-checks its stop flag.
    pub fn wake(&self) {
        // An eventfd write of 1 cannot block or fail unless the counter would overflow.
        let _ = (&self.0).write(&1u64.to_ne_bytes());
    }

    pub(crate) fn from_file(f: &File) -> io::Result<Self> {
        Ok(Self(f.try_clone()?))
    }
}

/// A fresh eventfd (close-on-exec; `nonblocking` for epoll, which drains it on readiness).
pub(crate) fn eventfd(nonblocking: bool) -> io::Result<File> {
    let flags = libc::EFD_CLOEXEC | if nonblocking { libc::EFD_NONBLOCK } else { 0 };
    // SAFETY: eventfd has no memory-safety preconditions.
    let fd = unsafe { libc::eventfd(0, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh fd we own; the File closes it on drop.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn user_data_roundtrip() {
        let ud = pack(123_456, 0xAB_CDEF, Op::Recv);
        assert_eq!(unpack(ud), (123_456, 0xAB_CDEF, Some(Op::Recv)));
        assert_eq!(unpack(pack(1, 0x1FF_FFFF, Op::Close)).1, 0xFF_FFFF);
    }

    /// Opens, sends, receives in several reads, wakes and closes through backend `B`.
    pub(crate) fn loopback_round_trip<B: Backend>(setup: SocketSetup) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = IoConfig {
            entries: 64,
            buf_count: 8,
            buf_size: 64,
            files: 4,
            setup,
            ..IoConfig::default()
        };
        let source: IpAddr = "127.0.0.3".parse().unwrap();
        let mut ring = B::new(cfg, &[addr], &[source]).unwrap();
        // Socket, options, bind, connect and the send go out as one linked chain.
        let ud = [
            pack(1, 1, Op::Setup),
            pack(1, 1, Op::Connect),
            pack(1, 1, Op::Send),
        ];
        ring.open(1, 0, Some(0), b"ping".to_vec(), ud).unwrap();
        // A slot beyond the descriptor table is refused, and the buffer handed back.
        assert_eq!(
            ring.open(4, 0, None, b"x".to_vec(), ud).unwrap_err(),
            (b"x".to_vec(), libc::EMFILE)
        );
        let mut cq = Vec::new();
        let mut got = Vec::new();
        // The connect reaches the kernel with the first submit; the backlog completes it.
        ring.wait(Some(Duration::from_millis(100))).unwrap();
        let (mut server, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source, "bound to the source address");
        let mut connected = false;
        let mut received = Vec::new();
        for _ in 0..50 {
            ring.wait(Some(Duration::from_millis(100))).unwrap();
            ring.reap(&mut cq);
            for mut c in cq.drain(..) {
                got.push(unpack(c.user_data()).2);
                match unpack(c.user_data()).2 {
                    Some(Op::Connect) => {
                        assert_eq!(c.result(), 0);
                        connected = true;
                        ring.recv(1, pack(1, 1, Op::Recv));
                    }
                    Some(Op::Send) => {
                        assert_eq!(c.result(), 4);
                        assert_eq!(c.take_sent().unwrap(), b"ping");
                        // 200 bytes arrive in several 64-byte provided buffers.
                        server.write_all(&[7u8; 200]).unwrap();
                    }
                    Some(Op::Recv) if c.result() > 0 => {
                        let b = c.take_buffer().unwrap();
                        received.extend_from_slice(ring.buffer(&b));
                        ring.recycle(b);
                        assert!(c.more());
                    }
                    _ => {}
                }
            }
            if received.len() == 200 {
                break;
            }
        }
        assert!(connected);
        assert!(!got.contains(&Some(Op::Setup)), "no setup step failed");
        assert_eq!(received, vec![7u8; 200]);
        let mut buf = [0u8; 4];
        io::Read::read_exact(&mut server, &mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        // A wake from another thread ends the wait.
        let w = ring.waker().unwrap();
        std::thread::spawn(move || w.wake());
        ring.wait(Some(Duration::from_secs(5))).unwrap();
        ring.reap(&mut cq);
        ring.close(1, pack(1, 1, Op::Close));
        assert!(
            cq.iter().any(|c| unpack(c.user_data()).2 == Some(Op::Wake)) || {
                ring.wait(Some(Duration::from_secs(5))).unwrap();
                ring.reap(&mut cq);
                cq.iter().any(|c| unpack(c.user_data()).2 == Some(Op::Wake))
            }
        );
    }

    /// One completion seen by [`drive`]: op, result, `more`, and the sent buffer's length.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Seen {
        pub(crate) op: Option<Op>,
        pub(crate) res: i32,
        pub(crate) more: bool,
        pub(crate) sent: Option<usize>,
        pub(crate) bytes: usize,
    }

    /// Waits and reaps until `done` holds for what was seen, for at most 5 s.
    pub(crate) fn drive<B: Backend>(b: &mut B, mut done: impl FnMut(&[Seen]) -> bool) -> Vec<Seen> {
        let mut seen = Vec::new();
        let mut cq = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while !done(&seen) {
            assert!(std::time::Instant::now() < until, "timed out; saw {seen:?}");
            b.wait(Some(Duration::from_millis(50))).unwrap();
            b.reap(&mut cq);
            for mut c in cq.drain(..) {
                let bytes = c.take_buffer().map_or(0, |r| {
                    let n = b.buffer(&r).len();
                    b.recycle(r);
                    n
                });
                seen.push(Seen {
                    op: unpack(c.user_data()).2,
                    res: c.result(),
                    more: c.more(),
                    sent: c.take_sent().map(|v| v.len()),
                    bytes,
                });
            }
        }
        seen
    }

    fn has(seen: &[Seen], op: Op) -> Option<&Seen> {
        seen.iter().find(|s| s.op == Some(op))
    }

    fn small<B: Backend>(target: SocketAddr) -> B {
        let cfg = IoConfig {
            entries: 64,
            buf_count: 8,
            buf_size: 4096,
            files: 8,
            ..IoConfig::default()
        };
        B::new(cfg, &[target], &[]).unwrap()
    }

    fn ud(slot: u32, op: Op) -> u64 {
        pack(slot, 1, op)
    }

    fn open<B: Backend>(b: &mut B, slot: u32, first: &[u8]) {
        let uds = [
            ud(slot, Op::Setup),
            ud(slot, Op::Connect),
            ud(slot, Op::Send),
        ];
        b.open(slot, 0, None, first.to_vec(), uds).unwrap();
    }

    /// The parts of the contract the shard relies on beyond the round trip: a refused
    /// connect cancels the send behind it; a send the peer does not read waits, and cancelling
    /// it hands the buffer back; a hang-up watch reports the peer's FIN and its reset; a
    /// cancelled receive ends with -ECANCELED; a close completes.
    pub(crate) fn contract<B: Backend>() {
        // Refused: nothing listens on a just-closed port.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let mut b = small::<B>(dead);
        open(&mut b, 0, b"GET / HTTP/1.1\r\n\r\n");
        let seen = drive(&mut b, |s| {
            has(s, Op::Connect).is_some() && has(s, Op::Send).is_some()
        });
        assert_eq!(has(&seen, Op::Connect).unwrap().res, -libc::ECONNREFUSED);
        let send = has(&seen, Op::Send).unwrap();
        assert_eq!((send.res, send.sent), (-libc::ECANCELED, Some(18)));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut b = small::<B>(listener.local_addr().unwrap());
        open(&mut b, 1, b"hello");
        let seen = drive(&mut b, |s| has(s, Op::Send).is_some());
        assert_eq!(has(&seen, Op::Connect).unwrap().res, 0);
        assert_eq!(has(&seen, Op::Send).unwrap().res, 5);
        let (peer, _) = listener.accept().unwrap();
        // 64 MiB the peer never reads: the send stays in flight; a cancel returns the buffer.
        b.send(1, vec![7u8; 64 << 20], ud(1, Op::Send)).unwrap();
        assert_eq!(
            b.send(1, vec![1], ud(1, Op::Send)),
            Err(vec![1]),
            "one send at a time"
        );
        // io_uring may end it short (the bytes the socket took); epoll keeps it in flight
        // until all is written. Either way, never all of it, and the buffer comes back.
        let mut turns = 0;
        let seen = drive(&mut b, |_| {
            turns += 1;
            turns > 3
        });
        let send = match has(&seen, Op::Send) {
            Some(short) => short.clone(),
            None => {
                b.cancel(ud(1, Op::Send), ud(1, Op::Cancel));
                let seen = drive(&mut b, |s| has(s, Op::Send).is_some());
                let cancelled = has(&seen, Op::Send).unwrap().clone();
                cancelled
            }
        };
        assert!(
            send.res == -libc::ECANCELED || (0..64 << 20).contains(&send.res),
            "{:?}",
            (send.op, send.res)
        );
        assert_eq!(send.sent, Some(64 << 20));
        // The peer closes: a watch on the unread socket reports the hang-up.
        b.watch_hangup(1, ud(1, Op::Hangup));
        drop(peer);
        let seen = drive(&mut b, |s| has(s, Op::Hangup).is_some());
        let bits = has(&seen, Op::Hangup).unwrap().res;
        assert!(
            bits > 0 && bits & i32::from(libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0,
            "{bits:#x}"
        );
        b.close(1, ud(1, Op::Close));
        let seen = drive(&mut b, |s| has(s, Op::Close).is_some());
        assert_eq!(has(&seen, Op::Close).unwrap().res, 0);

        // A receive armed, then cancelled: its final completion is -ECANCELED.
        open(&mut b, 2, b"x");
        drive(&mut b, |s| has(s, Op::Send).is_some());
        let (mut peer, _) = listener.accept().unwrap();
        b.recv(2, ud(2, Op::Recv));
        Write::write_all(&mut peer, b"abc").unwrap();
        let seen = drive(&mut b, |s| s.iter().map(|x| x.bytes).sum::<usize>() == 3);
        assert!(
            seen.iter().all(|x| x.op == Some(Op::Recv) && x.more),
            "{seen:?}"
        );
        b.cancel(ud(2, Op::Recv), ud(2, Op::Cancel));
        let seen = drive(&mut b, |s| {
            s.iter().any(|x| x.op == Some(Op::Recv) && !x.more)
        });
        let end = seen
            .iter()
            .find(|x| x.op == Some(Op::Recv) && !x.more)
            .unwrap();
        assert_eq!(end.res, -libc::ECANCELED);
        // Reset by the peer while watched: an error.
        b.watch_hangup(2, ud(2, Op::Hangup));
        let s2 = socket2::SockRef::from(&peer);
        s2.set_linger(Some(Duration::ZERO)).unwrap();
        drop(peer);
        let seen = drive(&mut b, |s| has(s, Op::Hangup).is_some());
        let bits = has(&seen, Op::Hangup).unwrap().res;
        assert!(
            bits & i32::from(libc::POLLERR | libc::POLLHUP) != 0,
            "{bits:#x}"
        );
        b.close_rst(2, ud(2, Op::Setup), ud(2, Op::Close));
        drive(&mut b, |s| has(s, Op::Close).is_some());
    }
}
