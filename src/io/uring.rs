//! The io_uring driver of one shard: a safe shell over the raw `io-uring` crate.
//!
//! One ring per shard, created with SINGLE_ISSUER and DEFER_TASKRUN (since 6.1): only the
//! shard's thread submits, and completions are processed only when it asks for them, so no
//! task-work interrupts the hot loop. Receives are multishot (since 6.0) into a provided buffer
//! ring (since 5.19) shared by all connections of the shard, so an idle connection holds no
//! receive buffer. Send buffers are owned by the ring while the kernel reads them and handed
//! back on completion, which is what makes this API safe. The shard sleeps in `io_uring_enter`
//! with a timeout (EXT_ARG, since 5.11) until its next timer or an eventfd wake-up.

use crate::io::backend::{
    eventfd, pack, unpack, Backend, Completion, IoConfig, Op, RecvBuf, SocketSetup, Waker,
};
use crate::io::sock::SockOptions;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use socket2::SockAddr;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

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
    /// The targets (boxed so the kernel's pointers stay valid), and as addresses.
    targets: Box<[SockAddr]>,
    target_addrs: Box<[SocketAddr]>,
    /// Source addresses (port 0) for bind, boxed so the kernel's pointers stay valid.
    sources: Box<[SockAddr]>,
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

impl Backend for Ring {
    /// Creates the ring, registers the buffer ring, arms the eventfd read.
    fn new(cfg: IoConfig, targets: &[SocketAddr], sources: &[IpAddr]) -> io::Result<Self> {
        if targets.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no target"));
        }
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
        let wake_file = eventfd(false)?;
        let wake_fd = wake_file.as_raw_fd();
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
            targets: targets.iter().map(|t| SockAddr::from(*t)).collect(),
            target_addrs: targets.into(),
            sources: sources
                .iter()
                .map(|ip| SockAddr::from(SocketAddr::new(*ip, 0)))
                .collect(),
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
    fn files(&self) -> u32 {
        self.files
    }

    /// A handle that wakes this ring's thread.
    fn waker(&self) -> io::Result<Waker> {
        Waker::from_file(&self.wake_file)
    }

    /// Re-arms the eventfd read after a wake completion.
    fn arm_wake(&mut self) {
        let e = opcode::Read::new(types::Fd(self.wake_fd), self.wake_buf.as_mut_ptr(), 8)
            .build()
            .user_data(pack(u32::MAX, 0, Op::Wake));
        self.push(e);
    }

    /// Arms a multishot receive on the socket in `slot` into the provided buffer ring.
    fn recv(&mut self, slot: u32, ud: u64) {
        let e = opcode::RecvMulti::new(types::Fixed(slot), BUF_GROUP)
            .build()
            .user_data(ud);
        self.push(e);
    }

    /// Watches the socket in `slot` for an error (a reset) or a hang-up without reading it:
    /// one completion, with the `POLLERR`/`POLLHUP`/`POLLRDHUP` bits that fired.
    fn watch_hangup(&mut self, slot: u32, ud: u64) {
        let mask = (libc::POLLERR | libc::POLLHUP | libc::POLLRDHUP) as u32;
        let e = opcode::PollAdd::new(types::Fixed(slot), mask)
            .build()
            .user_data(ud);
        self.push(e);
    }

    /// Sends `buf` on the socket in `slot`; the buffer comes back with the completion.
    fn send(&mut self, slot: u32, buf: Vec<u8>, ud: u64) -> Result<(), Vec<u8>> {
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
    fn open(
        &mut self,
        slot: u32,
        target: usize,
        source: Option<usize>,
        buf: Vec<u8>,
        ud: [u64; 3],
    ) -> Result<(), (Vec<u8>, i32)> {
        let [ud_setup, ud_connect, ud_send] = ud;
        if slot >= self.files {
            return Err((buf, libc::EMFILE));
        }
        if target >= self.targets.len() {
            return Err((buf, libc::EINVAL));
        }
        if !self.setup_in_ring {
            if let Err(e) = self.install_socket(slot, target, source) {
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
            opcode::Connect::new(
                fixed,
                self.targets[target].as_ptr().cast(),
                self.targets[target].len(),
            )
            .build()
            .flags(link)
            .user_data(ud_connect),
        );
        chain.push(send);
        self.push_chain(chain)
    }

    /// Cancels the request whose `user_data` is `target_ud`; the cancellation completes with `ud`
    /// (packed with [`Op::Cancel`], its result ignored).
    fn cancel(&mut self, target_ud: u64, ud: u64) {
        let e = opcode::AsyncCancel::new(target_ud).build().user_data(ud);
        self.push(e);
    }

    /// Closes the socket in `slot` with RST: SO_LINGER 0 first (hard-linked, so the close
    /// happens even where the kernel cannot set options in the ring; then it is a FIN).
    fn close_rst(&mut self, slot: u32, ud_opt: u64, ud: u64) {
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
    fn close(&mut self, slot: u32, ud: u64) {
        let e = opcode::Close::new(types::Fixed(slot)).build().user_data(ud);
        self.push(e);
    }

    /// The bytes a receive left in its provided buffer.
    fn buffer(&self, b: &RecvBuf) -> &[u8] {
        u16::try_from(b.id).map_or(&[], |bid| self.bufs.slice(bid, b.len))
    }

    /// Returns a provided buffer to the kernel.
    fn recycle(&mut self, b: RecvBuf) {
        if let Ok(bid) = u16::try_from(b.id) {
            self.bufs.push(bid);
        }
    }

    /// Submits queued requests and waits for at least one completion or `timeout`.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
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
    fn reap(&mut self, out: &mut Vec<Completion>) {
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
                id: usize::from(bid),
                len: usize::try_from(c.result()).unwrap_or(0),
            });
            out.push(Completion {
                user_data: c.user_data(),
                result: c.result(),
                more: cqueue::more(c.flags()),
                sent,
                buf,
            });
        }
    }

    fn backlog(&mut self) -> u64 {
        u64::from(self.ring.completion().overflow())
    }

    fn timer_granularity_us(&self) -> u64 {
        0
    }
}

impl Ring {
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
        let domain = if self.target_addrs[0].is_ipv6() {
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
    fn install_socket(
        &mut self,
        slot: u32,
        target: usize,
        source: Option<usize>,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let ip = source
            .and_then(|i| self.sources.get(i))
            .and_then(SockAddr::as_socket)
            .map(|a| a.ip());
        let sock = crate::io::sock::client_socket(&self.target_addrs[target], ip, self.sock)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::backend::tests::loopback_round_trip;

    #[test]
    fn connect_send_and_multishot_recv_with_sockets_made_in_the_ring() {
        loopback_round_trip::<Ring>(SocketSetup::Auto);
    }

    #[test]
    fn connect_send_and_multishot_recv_with_sockets_made_by_syscalls() {
        loopback_round_trip::<Ring>(SocketSetup::Syscalls);
    }

    #[test]
    fn the_backend_contract_holds() {
        crate::io::backend::tests::contract::<Ring>();
    }
}
