//! The epoll driver of one shard, for hosts where io_uring is blocked (container seccomp
//! profiles, `kernel.io_uring_disabled`) or too old. It keeps the completion contract of
//! [`Backend`]: requests are performed with nonblocking syscalls when epoll (through mio,
//! edge-triggered) reports their socket ready, and their completions queue up for
//! [`Backend::reap`] exactly as the io_uring driver would post them.
//!
//! - Sockets are made and tuned with socket2 as [`client_socket`] does for io_uring's syscall
//!   path (TCP_NODELAY, SO_REUSEADDR, SO_LINGER 0 on request, IP_BIND_ADDRESS_NO_PORT with a
//!   source address), set nonblocking, registered once for readable and writable edges, and
//!   connected. Every socket is an fd: a process holds RLIMIT_NOFILE of them across shards.
//! - Receives read into one arena per shard, reused every turn: each armed, readable socket
//!   gets at most one read of `buf_size` bytes per turn, so a flooding peer cannot starve the
//!   others or the timers, and an idle connection holds no receive buffer. A socket that may
//!   have more to read is read again next turn, which then does not sleep.
//! - Sends are written at once; what the socket does not take waits for its writable edge.
//! - The shard sleeps in `epoll_wait` until its next deadline or its eventfd is written.

use crate::io::backend::{eventfd, unpack, Backend, Completion, IoConfig, Op, RecvBuf, Waker};
use crate::io::sock::{client_socket, SockOptions};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{SockAddr, Socket};
use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// The token of the wake-up eventfd (slots use their index).
const WAKE: Token = Token(usize::MAX);

/// A send in flight: its buffer, how much is written, and its `user_data`.
#[derive(Debug)]
struct Sending {
    buf: Vec<u8>,
    written: usize,
    ud: u64,
}

/// One slot's socket and the requests in flight on it.
#[derive(Debug)]
struct Sock {
    socket: Socket,
    /// The connect in flight (its `user_data`), until the socket is writable or fails.
    connect: Option<u64>,
    /// The send in flight; while `connect` is, it waits behind it (io_uring's linked chain).
    send: Option<Sending>,
    /// The armed receive.
    recv: Option<u64>,
    /// The armed hang-up watch.
    hangup: Option<u64>,
    /// In `ready`: read it this turn.
    queued: bool,
    /// The peer hung up (EPOLLRDHUP/EPOLLHUP) or the socket has an error (EPOLLERR): sticky,
    /// for a hang-up watch armed later, and so a short read does not end the reads before
    /// the EOF or the error is read.
    hup: bool,
    err: bool,
}

/// One shard's epoll instance, its sockets by slot, and the completions due.
pub struct Poller {
    poll: Poll,
    events: Events,
    socks: Vec<Option<Sock>>,
    files: u32,
    /// The targets, as the kernel takes them and as addresses.
    targets: Box<[(SockAddr, SocketAddr)]>,
    sources: Box<[IpAddr]>,
    sock: SockOptions,
    /// Waits that returned a full event buffer (a readiness backlog).
    full_waits: u64,
    /// Completions due, handed out by the next `reap`.
    done: Vec<Completion>,
    /// Slots with an armed receive to read this turn (or carried over from the last).
    ready: Vec<u32>,
    /// The slots `reap` is reading (swapped with `ready`, so no turn allocates).
    reading: Vec<u32>,
    /// Slots read this turn that may have more: queued behind the ones the arena had no room
    /// for, so a few busy sockets cannot keep the others unread turn after turn.
    reread: Vec<u32>,
    /// The receive arena: reads of this turn, `read_size` bytes at most each.
    arena: Box<[u8]>,
    read_size: usize,
    wake_file: File,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("files", &self.files)
            .field(
                "targets",
                &self.targets.iter().map(|t| t.1).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Backend for Poller {
    fn new(cfg: IoConfig, targets: &[SocketAddr], sources: &[IpAddr]) -> io::Result<Self> {
        let poll = Poll::new()?;
        let wake_file = eventfd(true)?;
        poll.registry().register(
            &mut SourceFd(&wake_file.as_raw_fd()),
            WAKE,
            Interest::READABLE,
        )?;
        let read_size = cfg.buf_size.max(64) as usize;
        let arena_len = (usize::from(cfg.buf_count.max(1)) * read_size).max(read_size);
        Ok(Self {
            poll,
            events: Events::with_capacity(cfg.entries.clamp(64, 4096) as usize),
            socks: Vec::new(),
            files: cfg.files,
            targets: targets.iter().map(|t| (SockAddr::from(*t), *t)).collect(),
            sources: sources.into(),
            sock: cfg.sock,
            full_waits: 0,
            done: Vec::new(),
            ready: Vec::new(),
            reading: Vec::new(),
            reread: Vec::new(),
            arena: vec![0; arena_len].into_boxed_slice(),
            read_size,
            wake_file,
        })
    }

    fn files(&self) -> u32 {
        self.files
    }

    fn waker(&self) -> io::Result<Waker> {
        Waker::from_file(&self.wake_file)
    }

    fn arm_wake(&mut self) {
        // The eventfd stays registered; each wake-up is drained when it is reported.
    }

    fn open(
        &mut self,
        slot: u32,
        target: usize,
        source: Option<usize>,
        buf: Vec<u8>,
        ud: [u64; 3],
    ) -> Result<(), (Vec<u8>, i32)> {
        let [_, ud_connect, ud_send] = ud;
        let i = slot as usize;
        if slot >= self.files {
            return Err((buf, libc::EMFILE));
        }
        if self.socks.get(i).is_some_and(Option::is_some) {
            return Err((buf, libc::EBUSY));
        }
        let Some((to, to_addr)) = self.targets.get(target) else {
            return Err((buf, libc::EINVAL));
        };
        let ip = source.and_then(|k| self.sources.get(k)).copied();
        let socket = match client_socket(to_addr, ip, self.sock)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
        {
            Ok(s) => s,
            Err(e) => return Err((buf, errno(&e))),
        };
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&socket.as_raw_fd()),
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return Err((buf, errno(&e)));
        }
        let connect = socket.connect(to);
        if self.socks.len() <= i {
            self.socks.resize_with(i + 1, || None);
        }
        let mut s = Sock {
            socket,
            connect: Some(ud_connect),
            send: Some(Sending {
                buf,
                written: 0,
                ud: ud_send,
            }),
            recv: None,
            hangup: None,
            queued: false,
            hup: false,
            err: false,
        };
        match connect {
            Ok(()) => {
                s.connect = None;
                self.done.push(Completion::new(ud_connect, 0));
                write_some(&mut s, &mut self.done);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => {
                s.connect = None;
                self.done.push(Completion::new(ud_connect, -errno(&e)));
                cancel_send(&mut s, &mut self.done);
            }
        }
        self.socks[i] = Some(s);
        Ok(())
    }

    fn send(&mut self, slot: u32, buf: Vec<u8>, ud: u64) -> Result<(), Vec<u8>> {
        let Some(s) = self.socks.get_mut(slot as usize).and_then(Option::as_mut) else {
            let mut c = Completion::new(ud, -libc::EBADF);
            c.sent = Some(buf);
            self.done.push(c);
            return Ok(());
        };
        if s.send.is_some() {
            return Err(buf);
        }
        s.send = Some(Sending {
            buf,
            written: 0,
            ud,
        });
        if s.connect.is_none() {
            write_some(s, &mut self.done);
        }
        Ok(())
    }

    fn recv(&mut self, slot: u32, ud: u64) {
        let Some(s) = self.socks.get_mut(slot as usize).and_then(Option::as_mut) else {
            self.done.push(Completion::new(ud, -libc::EBADF));
            return;
        };
        debug_assert!(s.recv.is_none(), "one receive per slot");
        s.recv = Some(ud);
        // Bytes may have arrived before the receive was armed (their edge is gone): try a
        // read this turn, which finds them or EAGAIN.
        if !s.queued {
            s.queued = true;
            self.ready.push(slot);
        }
    }

    fn watch_hangup(&mut self, slot: u32, ud: u64) {
        let Some(s) = self.socks.get_mut(slot as usize).and_then(Option::as_mut) else {
            self.done.push(Completion::new(ud, -libc::EBADF));
            return;
        };
        debug_assert!(s.hangup.is_none(), "one hang-up watch per slot");
        s.hangup = Some(ud);
        check_hangup(s, &mut self.done);
    }

    fn cancel(&mut self, target_ud: u64, _ud: u64) {
        let (slot, _, op) = unpack(target_ud);
        let Some(s) = self.socks.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let done = &mut self.done;
        match op {
            Some(Op::Connect) if s.connect == Some(target_ud) => {
                s.connect = None;
                done.push(Completion::new(target_ud, -libc::ECANCELED));
                cancel_send(s, done);
            }
            Some(Op::Send) if s.send.as_ref().is_some_and(|x| x.ud == target_ud) => {
                cancel_send(s, done);
            }
            Some(Op::Recv) if s.recv == Some(target_ud) => {
                s.recv = None;
                done.push(Completion::new(target_ud, -libc::ECANCELED));
            }
            Some(Op::Hangup) if s.hangup == Some(target_ud) => {
                s.hangup = None;
                done.push(Completion::new(target_ud, -libc::ECANCELED));
            }
            _ => {}
        }
    }

    fn close(&mut self, slot: u32, ud: u64) {
        self.close_slot(slot, ud);
    }

    fn close_rst(&mut self, slot: u32, ud_opt: u64, ud: u64) {
        if let Some(s) = self.socks.get(slot as usize).and_then(Option::as_ref) {
            if let Err(e) = s.socket.set_linger(Some(Duration::ZERO)) {
                self.done.push(Completion::new(ud_opt, -errno(&e)));
            }
        }
        self.close_slot(slot, ud);
    }

    fn buffer(&self, b: &RecvBuf) -> &[u8] {
        self.arena.get(b.id..b.id + b.len).unwrap_or(&[])
    }

    fn recycle(&mut self, _b: RecvBuf) {
        // The arena is reused whole by the next `reap`.
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        // Completions already due, or sockets left with bytes to read: look, do not sleep.
        let timeout = if self.done.is_empty() && self.ready.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut woken = false;
        if self.events.iter().count() >= self.events.capacity() {
            self.full_waits += 1;
        }
        for ev in self.events.iter() {
            if ev.token() == WAKE {
                woken = true;
                continue;
            }
            let slot = ev.token().0;
            let Some(s) = self.socks.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            s.err |= ev.is_error();
            s.hup |= ev.is_read_closed() || ev.is_error();
            let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
            if writable {
                if let Some(ud) = s.connect.take() {
                    let res = match s.socket.take_error() {
                        Ok(None) => 0,
                        Ok(Some(e)) | Err(e) => -errno(&e),
                    };
                    self.done.push(Completion::new(ud, res));
                    if res != 0 {
                        cancel_send(s, &mut self.done);
                    }
                }
                if s.connect.is_none() && s.send.is_some() {
                    write_some(s, &mut self.done);
                }
            }
            if s.connect.is_none() {
                let readable = ev.is_readable() || s.hup;
                if readable && s.recv.is_some() && !s.queued {
                    s.queued = true;
                    self.ready.push(slot as u32);
                }
                check_hangup(s, &mut self.done);
            }
        }
        if woken {
            let mut b = [0u8; 8];
            // Nonblocking: drains the counter, or finds it drained already.
            let _ = (&self.wake_file).read(&mut b);
            self.done.push(Completion::new(
                crate::io::backend::pack(u32::MAX, 0, Op::Wake),
                8,
            ));
        }
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        out.append(&mut self.done);
        // The shard has recycled every buffer of the last turn: the arena is free again.
        let mut used = 0;
        std::mem::swap(&mut self.ready, &mut self.reading);
        let (ready, keep, reread) = (&mut self.reading, &mut self.ready, &mut self.reread);
        keep.clear();
        reread.clear();
        for slot in ready.drain(..) {
            let Some(s) = self.socks.get_mut(slot as usize).and_then(Option::as_mut) else {
                continue;
            };
            let Some(ud) = s.recv else {
                s.queued = false;
                continue;
            };
            if self.arena.len() - used < self.read_size {
                keep.push(slot);
                continue;
            }
            let dst = &mut self.arena[used..used + self.read_size];
            match (&s.socket).read(dst) {
                Ok(0) => {
                    s.queued = false;
                    s.recv = None;
                    out.push(Completion::new(ud, 0));
                }
                Ok(n) => {
                    out.push(Completion {
                        user_data: ud,
                        result: n as i32,
                        more: true,
                        sent: None,
                        buf: Some(RecvBuf { id: used, len: n }),
                    });
                    used += n;
                    // A full read may have left more; a hang-up or an error is still to be
                    // read. A short read drained the socket: new bytes bring a new edge.
                    if n == self.read_size || s.hup || s.err {
                        reread.push(slot);
                    } else {
                        s.queued = false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => s.queued = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => reread.push(slot),
                Err(e) => {
                    s.queued = false;
                    s.recv = None;
                    out.push(Completion::new(ud, -errno(&e)));
                }
            }
        }
        keep.append(reread);
    }

    fn backlog(&mut self) -> u64 {
        self.full_waits
    }

    fn timer_granularity_us(&self) -> u64 {
        // epoll_wait takes whole milliseconds; mio rounds a timeout up.
        1_000
    }
}

impl Poller {
    /// Closes the socket in `slot`: requests still in flight on it complete with
    /// `-ECANCELED`, then the close itself.
    fn close_slot(&mut self, slot: u32, ud: u64) {
        if let Some(mut s) = self.socks.get_mut(slot as usize).and_then(Option::take) {
            let done = &mut self.done;
            if let Some(c) = s.connect.take() {
                done.push(Completion::new(c, -libc::ECANCELED));
            }
            // A last send left in flight (a close frame, a close_notify: the shard does not
            // cancel a completed cycle's) gets one more try before the socket goes.
            write_some(&mut s, done);
            cancel_send(&mut s, done);
            for r in [s.recv.take(), s.hangup.take()].into_iter().flatten() {
                done.push(Completion::new(r, -libc::ECANCELED));
            }
            // Closing the fd removes it from the epoll set.
            drop(s);
        }
        self.done.push(Completion::new(ud, 0));
    }
}

/// Writes as much of the slot's send as the socket takes; completes it once all is written
/// (result: its length) or on an error. What is left waits for the next writable edge.
fn write_some(s: &mut Sock, done: &mut Vec<Completion>) {
    let Some(mut x) = s.send.take() else { return };
    loop {
        match s
            .socket
            .send_with_flags(&x.buf[x.written..], libc::MSG_NOSIGNAL)
        {
            Ok(n) => {
                x.written += n;
                if x.written >= x.buf.len() || n == 0 {
                    let mut c = Completion::new(x.ud, x.written as i32);
                    c.sent = Some(x.buf);
                    done.push(c);
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                let mut c = Completion::new(x.ud, -errno(&e));
                c.sent = Some(x.buf);
                done.push(c);
                return;
            }
        }
    }
    s.send = Some(x);
}

/// The slot's send, if any, completes with `-ECANCELED` and its buffer.
fn cancel_send(s: &mut Sock, done: &mut Vec<Completion>) {
    if let Some(x) = s.send.take() {
        let mut c = Completion::new(x.ud, -libc::ECANCELED);
        c.sent = Some(x.buf);
        done.push(c);
    }
}

/// Completes an armed hang-up watch if the socket has an error or the peer hung up.
fn check_hangup(s: &mut Sock, done: &mut Vec<Completion>) {
    if !(s.err || s.hup) {
        return;
    }
    if let Some(ud) = s.hangup.take() {
        let bits = if s.err {
            libc::POLLERR | libc::POLLHUP
        } else {
            libc::POLLHUP | libc::POLLRDHUP
        };
        done.push(Completion::new(ud, i32::from(bits)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::backend::tests::loopback_round_trip;
    use crate::io::backend::SocketSetup;

    #[test]
    fn connect_send_and_receive_in_several_reads() {
        loopback_round_trip::<Poller>(SocketSetup::Syscalls);
    }

    #[test]
    fn the_backend_contract_holds() {
        crate::io::backend::tests::contract::<Poller>();
    }
}
