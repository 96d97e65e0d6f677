//! The slab: one slot per connection (reused, with a generation so that stale completions
//! are caught), what each has in flight in the ring, and freeing slots once nothing is.

use super::Shard;
use crate::io::backend::{pack, Backend, Op};
use crate::proto::conn::{Conn, Micros};

/// Initial capacity of pooled send buffers (an upgrade request or a few small frames).
pub(super) const SEND_BUF_CAPACITY: usize = 256;

#[derive(Debug)]
pub(super) struct Slot {
    /// In use by a connection (or by its requests still in flight).
    pub(super) allocated: bool,
    pub(super) gen: u32,
    /// The group (scenario) of the connection.
    pub(super) group: u16,
    /// Its target (index in the run's targets), and when its connect was submitted.
    pub(super) target: u16,
    pub(super) opened_at: Micros,
    /// The direct descriptor `slot index` holds (or is being created for) this connection.
    pub(super) has_socket: bool,
    pub(super) conn: Option<Conn>,
    /// Requests in flight that will produce a final completion.
    pub(super) ops: u16,
    pub(super) connecting: bool,
    pub(super) recv_armed: bool,
    /// The connection stopped reading (`--stop-reading-after`): its receive is cancelled
    /// and a hang-up watch is (or was) in flight instead.
    pub(super) watching: bool,
    pub(super) sending: bool,
    pub(super) close_submitted: bool,
    pub(super) in_dirty: bool,
    pub(super) timer_at: Micros,
    /// Consecutive failed attempts of the connection this slot replaces, and the last delay.
    pub(super) retry: (u32, Micros),
    /// Close with RST (a storm's abrupt drop).
    pub(super) rst: bool,
    /// Being closed because the stages ramp down.
    pub(super) retired: bool,
    /// No longer counted as open (a storm's graceful drop, closing).
    pub(super) uncounted: bool,
}

impl Slot {
    pub(super) fn new() -> Self {
        Self {
            allocated: false,
            gen: 0,
            group: 0,
            target: 0,
            opened_at: 0,
            has_socket: false,
            conn: None,
            ops: 0,
            connecting: false,
            recv_armed: false,
            watching: false,
            sending: false,
            close_submitted: false,
            in_dirty: false,
            timer_at: 0,
            retry: (0, 0),
            rst: false,
            retired: false,
            uncounted: false,
        }
    }
}

/// Largest send buffer kept for reuse; bigger ones (a large message) are freed.
const POOLED_MAX: usize = 64 * 1024;

/// Returns a send buffer to the pool, emptied: the next connection to take it appends to it,
/// so a buffer returned with its bytes (an upgrade request whose opening failed) would send
/// them again on another connection's socket.
pub(super) fn recycle(pool: &mut Vec<Vec<u8>>, mut buf: Vec<u8>) {
    buf.clear();
    if buf.capacity() <= POOLED_MAX {
        pool.push(buf);
    }
}

/// Hands `buf` to the ring as the slot's one send in flight.
pub(super) fn start_send<B: Backend>(
    io: &mut B,
    slot: &mut Slot,
    i: u32,
    buf: Vec<u8>,
    inflight: &mut u64,
    pool: &mut Vec<Vec<u8>>,
) {
    match io.send(i, buf, pack(i, slot.gen, Op::Send)) {
        Ok(()) => {
            slot.sending = true;
            slot.ops += 1;
            *inflight += 1;
        }
        // Only if the slot already had a send in flight, which `slot.sending` rules out.
        Err(buf) => recycle(pool, buf),
    }
}

/// Arms the slot's multishot receive (after the connect, or when the kernel ended it).
pub(super) fn arm_recv<B: Backend>(io: &mut B, slot: &mut Slot, i: u32, inflight: &mut u64) {
    slot.recv_armed = true;
    slot.ops += 1;
    *inflight += 1;
    io.recv(i, pack(i, slot.gen, Op::Recv));
}

/// The connection in the slot stopped reading: its receive is cancelled and only an error
/// or hang-up of the socket is watched for.
pub(super) fn stop_reading<B: Backend>(io: &mut B, slot: &mut Slot, i: u32, inflight: &mut u64) {
    slot.watching = true;
    if slot.recv_armed {
        io.cancel(pack(i, slot.gen, Op::Recv), pack(i, slot.gen, Op::Cancel));
    }
    slot.ops += 1;
    *inflight += 1;
    io.watch_hangup(i, pack(i, slot.gen, Op::Hangup));
}

impl<B: Backend> Shard<B> {
    /// A slot is free for one more connection: a freed one, or a new one inside the ring's
    /// descriptor table. Slots of sockets still closing are not free; while the table is
    /// full of them, openings wait (an opening beyond it could only fail, as EMFILE, and
    /// with an immediate reconnect policy its replacement would fail the same way at once).
    pub(super) fn slot_available(&self) -> bool {
        !self.free.is_empty() || (self.slots.len() as u32) < self.io.files()
    }

    pub(super) fn maybe_free(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        if slot.allocated && slot.conn.is_none() && slot.ops == 0 {
            let gen = slot.gen.wrapping_add(1) & 0xFF_FFFF;
            *slot = Slot::new();
            slot.gen = gen;
            self.free.push(i);
        }
    }

    pub(super) fn op_done(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        slot.ops -= 1;
        self.inflight -= 1;
    }
}
