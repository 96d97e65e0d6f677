//! The io_uring driver of one shard: a safe shell over the raw `io-uring` crate.
//!
//! One ring per shard, created with SINGLE_ISSUER and DEFER_TASKRUN (since 6.1): only the
//! shard's thread submits, and completions are processed only when it asks for them, so no
//! task-work interrupts the hot loop. Receives are multishot (since 6.0) into a provided buffer
//! ring (since 5.19) shared by all connections of the shard, so an idle connection holds no
//! receive buffer. Send buffers are owned by the ring while the kernel reads them and handed
//! back on completion, which is what makes this API safe. The shard sleeps in `io_uring_enter`
//! with a timeout (EXT_ARG, since 5.11) until its next timer or an eventfd wake-up.

use crate::io::sock::SockOptions;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use socket2::SockAddr;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// Operation kinds encoded in `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `IORING_OP_CONNECT` of the slot's socket to the target (available since 5.5).
    Connect = 1,
    /// Send of the slot's buffer.
    Send = 2,
    /// Multishot `IORING_OP_RECV` into the shard's provided buffers: one completion per read until
    /// it ends (multishot since 6.0).
    Recv = 3,
    /// `IORING_OP_CLOSE` of the slot's direct descriptor, which frees the table slot (since 5.6;
    /// of a direct descriptor, since 5.15).
    Close = 4,
    /// Cancellation of another op (its own completion is ignored).
    Cancel = 5,
    /// Read of the wake-up eventfd.
    Wake = 6,
    /// Socket creation, socket options or bind ahead of a connect; completes only on failure.
    Setup = 7,
    /// `IORING_OP_POLL_ADD` for an error or hang-up only, on a socket no longer read
    /// (available since 5.1).
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

/// One completion, moved out of the completion queue. It carries back what the kernel no
/// longer uses: the buffer of a finished send, the provided buffer a receive filled.
#[derive(Debug)]
pub struct Completion {
    user_data: u64,
    result: i32,
    flags: u32,
    sent: Option<Vec<u8>>,
    buf: Option<RecvBuf>,
}

/// A provided buffer filled by a receive: read it with [`Ring::buffer`], then hand it back
/// with [`Ring::recycle`]. Only [`Ring::reap`] makes these, so it always names a buffer the
/// kernel has finished writing.
#[derive(Debug)]
pub struct RecvBuf {
    bid: u16,
    len: usize,
}

impl Completion {
    /// The packed `user_data` of the request.
    pub fn user_data(&self) -> u64 {
        self.user_data
    }

    /// Result: bytes, 0, or `-errno`.
    pub fn result(&self) -> i32 {
        self.result
    }

    /// Whether a multishot request stays armed after this completion.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The buffer of a completed send, handed back for reuse; `None` for other ops, or once taken.
    pub fn take_sent(&mut self) -> Option<Vec<u8>> {
        self.sent.take()
    }

    /// The provided buffer a receive filled: read it with [`Ring::buffer`], then give it back with
    /// [`Ring::recycle`]; `None` for other ops, or once taken.
    pub fn take_buffer(&mut self) -> Option<RecvBuf> {
        self.buf.take()
    }
}

/// Ring sizes; memory cost is `buf_count × buf_size` for receive buffers (touched lazily).
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    /// Submission queue entries (default 4096).
    pub entries: u32,
    /// Provided receive buffers, a power of two ≤ 32768 (default 256: a burst that finds them
    /// all in use ends the multishot receive with ENOBUFS and the shard re-arms it).
    pub buf_count: u16,
    /// Size of each receive buffer in bytes (default 4096).
    pub buf_size: u32,
    /// Direct-descriptor table size: the most sockets this ring holds at once. The kernel caps
    /// it at RLIMIT_NOFILE, but per ring, and the sockets stay out of the process's fd table.
    pub files: u32,
    /// Socket tuning applied by the ring to every socket it creates.
    pub sock: SockOptions,
    /// Create sockets in the ring when the kernel can (6.11+), else with syscalls.
    pub setup: SocketSetup,
}

/// How sockets are created and bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketSetup {
    /// In the ring (socket, options, bind linked to the connect) if the kernel supports it.
    #[default]
    Auto,
    /// With syscalls, then installed in the descriptor table (kernels 6.1-6.10).
    Syscalls,
}

impl Default for RingConfig {
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

const BUF_GROUP: u16 = 0;

/// Socket option values the kernel reads while a chain is in flight: statics outlive it.
static ONE: libc::c_int = 1;
static LINGER_ZERO: libc::linger = libc::linger {
    l_onoff: 1,
    l_linger: 0,
};

fn ptr_of<T>(v: &'static T) -> *const libc::c_void {
    (v as *const T).cast()
}

/// The provided buffer ring: `count` entries of 16 bytes (page aligned) plus the buffers.
struct BufRing {
    entries: *mut types::BufRingEntry,
    layout: Layout,
    data: Vec<u8>,
    count: u16,
    size: u32,
    tail: u16,
}

impl BufRing {
    fn new(count: u16, size: u32) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two ≤ 32768",
            ));
        }
        let layout = Layout::from_size_align(usize::from(count) * 16, 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: layout has non-zero size (count ≥ 1).
        let entries = unsafe { alloc_zeroed(layout) }.cast::<types::BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "buffer ring allocation failed",
            ));
        }
        let data = vec![0u8; usize::from(count) * size as usize];
        Ok(Self {
            entries,
            layout,
            data,
            count,
            size,
            tail: 0,
        })
    }

    /// Hands buffer `bid` (back) to the kernel.
    fn push(&mut self, bid: u16) {
        if bid >= self.count {
            return; // not one of ours: never hand the kernel an address outside `data`
        }
        let idx = usize::from(self.tail & (self.count - 1));
        let addr = self.data.as_ptr() as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: idx < count, so the entry lies inside the allocation; the kernel only reads
        // entries between its head and our published tail, and this one is past the tail.
        let e = unsafe { &mut *self.entries.add(idx) };
        e.set_addr(addr);
        e.set_len(self.size);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: `entries` is the ring base; the tail field overlays entry 0's reserved field
        // and is only written by us. Release publishes the entry before the new tail.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries)
                .cast_mut()
                .cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn slice(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * self.size as usize;
        let end = start + len.min(self.size as usize);
        self.data.get(start..end).unwrap_or(&[])
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; only reached for a buffer ring that was
        // never registered with a kernel ring (`Ring` leaks registered ones).
        unsafe { dealloc(self.entries.cast(), self.layout) }
    }
}

/// One shard's ring with its buffer ring, wake-up eventfd and in-flight send buffers.
pub struct Ring {
    ring: IoUring,
    /// Leaked on drop: requests still in flight when the ring fd closes are torn down
    /// asynchronously by the kernel and may yet write into these buffers.
    bufs: ManuallyDrop<BufRing>,
    /// Send buffers by slot, at most one in flight per slot; leaked on drop like `bufs`.
    sends: ManuallyDrop<Vec<Option<Vec<u8>>>>,
    target: Box<SockAddr>,
    /// Source addresses (port 0) for bind, boxed so the kernel's pointers stay valid.
    sources: Box<[SockAddr]>,
    target_addr: SocketAddr,
    files: u32,
    sock: SockOptions,
    /// Whether the ring creates, tunes and binds sockets itself.
    setup_in_ring: bool,
    wake_fd: RawFd,
    wake_buf: Box<[u8; 8]>,
    wake_file: File,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Stop the kernel from picking more provided buffers; the memory itself stays.
        let _ = self.ring.submitter().unregister_buf_ring(BUF_GROUP);
    }
}

/// Wakes a sleeping shard from another thread.
#[derive(Debug)]
pub struct Waker(File);

impl Waker {
    /// Interrupts the shard's wait; it re-checks its stop flag.
    pub fn wake(&self) {
        // An eventfd write of 1 cannot block or fail unless the counter would overflow.
        let _ = (&self.0).write(&1u64.to_ne_bytes());
    }
}

impl Ring {
    /// Creates the ring, registers the buffer ring, arms the eventfd read.
    pub fn new(cfg: RingConfig, target: SocketAddr, sources: &[IpAddr]) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(cfg.entries * 4)
            .setup_clamp()
            .build(cfg.entries)?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::RecvMulti::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel's io_uring lacks recv; Linux 6.1 or later is needed",
            ));
        }
        // Socket (5.19), socket options (6.7) and bind (6.11) in the ring; older kernels
        // create sockets with syscalls and install them in the table.
        let setup_in_ring = cfg.setup == SocketSetup::Auto
            && [
                opcode::Socket::CODE,
                opcode::SetSockOpt::CODE,
                opcode::Bind::CODE,
            ]
            .iter()
            .all(|&c| probe.is_supported(c));
        ring.submitter().register_files_sparse(cfg.files)?;
        // SAFETY: eventfd has no memory-safety preconditions.
        let wake_fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if wake_fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: wake_fd is a fresh fd we own; the File closes it on drop.
        let wake_file = unsafe { File::from_raw_fd(wake_fd) };
        let mut bufs = ManuallyDrop::new(BufRing::new(cfg.buf_count, cfg.buf_size)?);
        // SAFETY: the entries allocation is never freed while the process runs (`bufs` is
        // leaked, see `Drop for Ring`); count matches the allocation.
        let reg = unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.entries as u64,
                cfg.buf_count,
                BUF_GROUP,
                0,
            )
        };
        if let Err(e) = reg {
            // Never registered: nothing can write into it, so it may be freed.
            ManuallyDrop::into_inner(bufs);
            return Err(e);
        }
        for bid in 0..cfg.buf_count {
            bufs.push(bid);
        }
        let mut r = Self {
            ring,
            bufs,
            sends: ManuallyDrop::new(Vec::new()),
            target: Box::new(SockAddr::from(target)),
            sources: sources
                .iter()
                .map(|ip| SockAddr::from(SocketAddr::new(*ip, 0)))
                .collect(),
            target_addr: target,
            files: cfg.files,
            sock: cfg.sock,
            setup_in_ring,
            wake_fd,
            wake_buf: Box::new([0; 8]),
            wake_file,
        };
        r.arm_wake();
        Ok(r)
    }

    /// Size of the direct-descriptor table: slots `0..files` can hold a socket.
    pub fn files(&self) -> u32 {
        self.files
    }

    /// A handle that wakes this ring's thread.
    pub fn waker(&self) -> io::Result<Waker> {
        Ok(Waker(self.wake_file.try_clone()?))
    }

    /// Re-arms the eventfd read after a wake completion.
    pub fn arm_wake(&mut self) {
        let e = opcode::Read::new(types::Fd(self.wake_fd), self.wake_buf.as_mut_ptr(), 8)
            .build()
            .user_data(pack(u32::MAX, 0, Op::Wake));
        self.push(e);
    }

    fn push(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every pointer inside `e` refers to memory owned by `self` (target
            // address, wake buffer, send buffers, buffer ring) that outlives the request.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            // Queue full: hand what we have to the kernel and retry.
            if self.ring.submit().is_err() {
                std::thread::yield_now();
            }
        }
    }

    /// Arms a multishot receive on the socket in `slot` into the provided buffer ring.
    pub fn recv_multishot(&mut self, slot: u32, ud: u64) {
        let e = opcode::RecvMulti::new(types::Fixed(slot), BUF_GROUP)
            .build()
            .user_data(ud);
        self.push(e);
    }

    /// Watches the socket in `slot` for an error (a reset) or a hang-up without reading it:
    /// one completion, with the `POLLERR`/`POLLHUP`/`POLLRDHUP` bits that fired.
    pub fn watch_hangup(&mut self, slot: u32, ud: u64) {
        let mask = (libc::POLLERR | libc::POLLHUP | libc::POLLRDHUP) as u32;
        let e = opcode::PollAdd::new(types::Fixed(slot), mask)
            .build()
            .user_data(ud);
        self.push(e);
    }

    /// Sends `buf` on the socket in `slot`; the buffer comes back with the completion.
    pub fn send(&mut self, slot: u32, buf: Vec<u8>, ud: u64) -> Result<(), Vec<u8>> {
        let e = self.send_entry(slot, buf, ud)?;
        self.push(e);
        Ok(())
    }

    /// Opens a connection in direct-descriptor slot `slot`, as one linked chain: socket,
    /// socket options, bind to `sources[source]` with IP_BIND_ADDRESS_NO_PORT (if given),
    /// connect, and the send of `buf` (the upgrade request). No syscall per step and no
    /// wake-up in between. Setup steps post a completion (`ud_setup`) only if they fail; the
    /// rest of the chain then completes with `-ECANCELED`. On kernels without those
    /// operations the socket is made with syscalls and installed in the slot first. Gives
    /// `buf` back with an errno if the slot is out of range (EMFILE), busy (EBUSY), or the
    /// socket could not be made.
    pub fn open(
        &mut self,
        slot: u32,
        source: Option<usize>,
        buf: Vec<u8>,
        ud: [u64; 3],
    ) -> Result<(), (Vec<u8>, i32)> {
        let [ud_setup, ud_connect, ud_send] = ud;
        if slot >= self.files {
            return Err((buf, libc::EMFILE));
        }
        if !self.setup_in_ring {
            if let Err(e) = self.install_socket(slot, source) {
                return Err((buf, e.raw_os_error().unwrap_or(libc::EIO)));
            }
        }
        let send = self
            .send_entry(slot, buf, ud_send)
            .map_err(|b| (b, libc::EBUSY))?;
        let fixed = types::Fixed(slot);
        let link = squeue::Flags::IO_LINK;
        let mut chain: Vec<squeue::Entry> = Vec::with_capacity(7);
        if self.setup_in_ring {
            self.setup_chain(&mut chain, slot, source, ud_setup);
        }
        chain.push(
            opcode::Connect::new(fixed, self.target.as_ptr().cast(), self.target.len())
                .build()
                .flags(link)
                .user_data(ud_connect),
        );
        chain.push(send);
        self.push_chain(chain)
    }

    /// The in-ring steps ahead of a connect: socket into `slot`, options, bind. They post a
    /// completion only if they fail.
    fn setup_chain(
        &self,
        chain: &mut Vec<squeue::Entry>,
        slot: u32,
        source: Option<usize>,
        ud_setup: u64,
    ) {
        let fixed = types::Fixed(slot);
        let setup = squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS;
        let domain = if self.target.is_ipv6() {
            libc::AF_INET6
        } else {
            libc::AF_INET
        };
        chain.push(
            opcode::Socket::new(domain, libc::SOCK_STREAM, libc::IPPROTO_TCP)
                .file_index(types::DestinationSlot::try_from_slot_target(slot).ok())
                .build()
                .flags(setup)
                .user_data(ud_setup),
        );
        let opt = |level: i32, name: i32, val: *const libc::c_void, len: usize| {
            opcode::SetSockOpt::new(fixed, level as u32, name as u32, val, len as u32)
                .build()
                .flags(setup)
                .user_data(ud_setup)
        };
        chain.push(opt(
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            ptr_of(&ONE),
            size_of::<libc::c_int>(),
        ));
        chain.push(opt(
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            ptr_of(&ONE),
            size_of::<libc::c_int>(),
        ));
        if self.sock.linger_zero {
            chain.push(opt(
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                ptr_of(&LINGER_ZERO),
                size_of::<libc::linger>(),
            ));
        }
        if let Some(src) = source.and_then(|i| self.sources.get(i)) {
            chain.push(opt(
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                ptr_of(&ONE),
                size_of::<libc::c_int>(),
            ));
            chain.push(
                opcode::Bind::new(fixed, src.as_ptr().cast(), src.len())
                    .build()
                    .flags(setup)
                    .user_data(ud_setup),
            );
        }
    }

    /// Makes a tuned, bound socket with syscalls and installs it in direct slot `slot`; the
    /// table keeps its own reference, so our descriptor is closed right away.
    fn install_socket(&mut self, slot: u32, source: Option<usize>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let ip = source
            .and_then(|i| self.sources.get(i))
            .and_then(SockAddr::as_socket)
            .map(|a| a.ip());
        let sock = crate::io::sock::client_socket(&self.target_addr, ip, self.sock)?;
        self.ring
            .submitter()
            .register_files_update(slot, &[sock.as_raw_fd()])?;
        Ok(())
    }

    /// Queues a linked chain whole: a link must not be split across submissions.
    fn push_chain(&mut self, chain: Vec<squeue::Entry>) -> Result<(), (Vec<u8>, i32)> {
        let free = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if free < chain.len() && self.ring.submit().is_err() {
            std::thread::yield_now();
        }
        for e in chain {
            self.push(e);
        }
        Ok(())
    }

    fn send_entry(&mut self, slot: u32, buf: Vec<u8>, ud: u64) -> Result<squeue::Entry, Vec<u8>> {
        let i = slot as usize;
        if self.sends.len() <= i {
            self.sends.resize_with(i + 1, || None);
        }
        if self.sends[i].is_some() {
            // One send per slot at a time: the kernel may still be reading the other buffer.
            return Err(buf);
        }
        let (ptr, len) = (buf.as_ptr(), buf.len() as u32);
        // The Vec's heap block does not move when the Vec value moves into the table.
        self.sends[i] = Some(buf);
        Ok(opcode::Send::new(types::Fixed(slot), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud))
    }

    /// Cancels the request whose `user_data` is `target_ud`; the cancellation completes with `ud`
    /// (packed with [`Op::Cancel`], its result ignored).
    pub fn cancel(&mut self, target_ud: u64, ud: u64) {
        let e = opcode::AsyncCancel::new(target_ud).build().user_data(ud);
        self.push(e);
    }

    /// Closes the socket in `slot` with RST: SO_LINGER 0 first (hard-linked, so the close
    /// happens even where the kernel cannot set options in the ring; then it is a FIN).
    pub fn close_rst(&mut self, slot: u32, ud_opt: u64, ud: u64) {
        let opt = opcode::SetSockOpt::new(
            types::Fixed(slot),
            libc::SOL_SOCKET as u32,
            libc::SO_LINGER as u32,
            ptr_of(&LINGER_ZERO),
            size_of::<libc::linger>() as u32,
        )
        .build()
        .flags(squeue::Flags::IO_HARDLINK | squeue::Flags::SKIP_SUCCESS)
        .user_data(ud_opt);
        let close = opcode::Close::new(types::Fixed(slot)).build().user_data(ud);
        let _ = self.push_chain(vec![opt, close]);
    }

    /// Closes the socket in direct-descriptor `slot`, freeing the slot.
    pub fn close(&mut self, slot: u32, ud: u64) {
        let e = opcode::Close::new(types::Fixed(slot)).build().user_data(ud);
        self.push(e);
    }

    /// The bytes a receive left in its provided buffer.
    pub fn buffer(&self, b: &RecvBuf) -> &[u8] {
        self.bufs.slice(b.bid, b.len)
    }

    /// Returns a provided buffer to the kernel.
    pub fn recycle(&mut self, b: RecvBuf) {
        self.bufs.push(b.bid);
    }

    /// Submits queued requests and waits for at least one completion or `timeout`.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let res = match timeout {
            Some(t) => {
                let ts = types::Timespec::new()
                    .sec(t.as_secs())
                    .nsec(t.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submitter().submit_and_wait(1),
        };
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves all available completions into `out` (cleared first).
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        for c in self.ring.completion() {
            let (slot, _, op) = unpack(c.user_data());
            // The kernel is done with a send's buffer once its completion is posted, and only
            // one send per slot is ever in flight.
            let sent = match op {
                Some(Op::Send) => self.sends.get_mut(slot as usize).and_then(Option::take),
                _ => None,
            };
            let buf = cqueue::buffer_select(c.flags()).map(|bid| RecvBuf {
                bid,
                len: usize::try_from(c.result()).unwrap_or(0),
            });
            out.push(Completion {
                user_data: c.user_data(),
                result: c.result(),
                flags: c.flags(),
                sent,
                buf,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_roundtrip() {
        let ud = pack(123_456, 0xAB_CDEF, Op::Recv);
        assert_eq!(unpack(ud), (123_456, 0xAB_CDEF, Some(Op::Recv)));
        assert_eq!(unpack(pack(1, 0x1FF_FFFF, Op::Close)).1, 0xFF_FFFF);
    }

    #[test]
    fn connect_send_and_multishot_recv_with_sockets_made_in_the_ring() {
        loopback_round_trip(SocketSetup::Auto);
    }

    #[test]
    fn connect_send_and_multishot_recv_with_sockets_made_by_syscalls() {
        loopback_round_trip(SocketSetup::Syscalls);
    }

    fn loopback_round_trip(setup: SocketSetup) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = RingConfig {
            entries: 64,
            buf_count: 8,
            buf_size: 64,
            files: 4,
            setup,
            ..RingConfig::default()
        };
        let source: IpAddr = "127.0.0.3".parse().unwrap();
        let mut ring = Ring::new(cfg, addr, &[source]).unwrap();
        // Socket, options, bind, connect and the send go out as one linked chain.
        let ud = [
            pack(1, 1, Op::Setup),
            pack(1, 1, Op::Connect),
            pack(1, 1, Op::Send),
        ];
        ring.open(1, Some(0), b"ping".to_vec(), ud).unwrap();
        // A slot beyond the descriptor table is refused, and the buffer handed back.
        assert_eq!(
            ring.open(4, None, b"x".to_vec(), ud).unwrap_err(),
            (b"x".to_vec(), libc::EMFILE)
        );
        let mut cq = Vec::new();
        let mut got = Vec::new();
        // The connect reaches the kernel with the first submit; the backlog completes it.
        ring.submit_and_wait(Some(Duration::from_millis(100)))
            .unwrap();
        let (mut server, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source, "bound to the source address");
        let mut connected = false;
        let mut received = Vec::new();
        for _ in 0..50 {
            ring.submit_and_wait(Some(Duration::from_millis(100)))
                .unwrap();
            ring.reap(&mut cq);
            for mut c in cq.drain(..) {
                got.push(unpack(c.user_data()).2);
                match unpack(c.user_data()).2 {
                    Some(Op::Connect) => {
                        assert_eq!(c.result(), 0);
                        connected = true;
                        ring.recv_multishot(1, pack(1, 1, Op::Recv));
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
        ring.submit_and_wait(Some(Duration::from_secs(5))).unwrap();
        ring.reap(&mut cq);
        ring.close(1, pack(1, 1, Op::Close));
        assert!(
            cq.iter().any(|c| unpack(c.user_data()).2 == Some(Op::Wake)) || {
                ring.submit_and_wait(Some(Duration::from_secs(5))).unwrap();
                ring.reap(&mut cq);
                cq.iter().any(|c| unpack(c.user_data()).2 == Some(Op::Wake))
            }
        );
    }
}
