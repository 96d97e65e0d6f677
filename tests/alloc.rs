//! The steady state allocates nothing (docs/ARCHITECTURE.md, "The connection and its driver"):
//! an open connection sending messages and matching their echoes reuses its buffers, its FIFO
//! and its histograms.
//!
//! A counting wrapper around the system allocator counts allocations made by the current thread
//! while counting is switched on, so the test harness's own threads do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

#[path = "../benches/support/echo.rs"]
mod echo;

use echo::{EchoSession, Subscribers};

struct CountingAlloc;

thread_local! {
    /// Whether this thread's allocations are being counted (const-initialised: no lazy
    /// initialisation and no destructor, so the allocator may touch it at any time).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Allocations (including reallocations) this thread made while counting.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note_alloc() {
    // `try_with`: during thread teardown the slots may be gone; such allocations are not ours.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; counting touches only
// const-initialised thread-locals and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this wrapper.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this wrapper.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCS.with(Cell::get)
}

#[test]
fn the_counter_sees_allocations() {
    let n = allocations_in(|| {
        let v = std::hint::black_box(vec![1u8; 100]);
        drop(v);
    });
    assert_eq!(n, 1);
}

fn assert_steady_state_allocates_nothing(payload: &str, pings: bool) {
    let mut s = EchoSession::open(payload, pings);
    // Warm-up: the FIFO and the output buffer reach their working capacity.
    for _ in 0..100 {
        assert!(s.round_trip() > 0);
    }
    let before = s.stats().counters.clone();
    let mut written = 0;
    let n = allocations_in(|| {
        for _ in 0..1000 {
            written += s.round_trip();
        }
    });
    let after = &s.stats().counters;
    assert_eq!(after.msgs_sent - before.msgs_sent, 1000);
    assert_eq!(after.msgs_received - before.msgs_received, 1000);
    assert_eq!(after.msgs_pushed, 0, "every echo matched its message");
    if pings {
        assert_eq!(after.pings_sent - before.pings_sent, 100);
        assert_eq!(after.pongs_received - before.pongs_received, 100);
        assert_eq!(after.pongs_sent - before.pongs_sent, 100);
    }
    assert!(written >= 1000 * payload.len());
    assert_eq!(
        n,
        0,
        "{n} allocations in 1000 steady-state round trips ({}-byte message)",
        payload.len()
    );
}

#[test]
fn echo_round_trips_allocate_nothing_small_message() {
    assert_steady_state_allocates_nothing("hello, sockstorm", false);
}

#[test]
fn echo_round_trips_allocate_nothing_large_multibyte_message() {
    // 16-bit length header on the wire, multi-byte UTF-8 through the validator.
    let text = "héllo wörld €𝄞 ".repeat(40);
    assert!(text.len() > 125);
    assert_steady_state_allocates_nothing(&text, false);
}

#[test]
fn echo_round_trips_with_pings_both_ways_allocate_nothing() {
    assert_steady_state_allocates_nothing("hello, sockstorm", true);
}

#[test]
fn fan_out_deliveries_allocate_only_once_per_message_not_per_subscriber() {
    let mut subs = Subscribers::open(50);
    // Warm-up: the per-publisher windows and the shard's tables reach their working size.
    for seq in 1..=200 {
        subs.deliver(seq);
    }
    let n = allocations_in(|| {
        for seq in 201..=300 {
            subs.deliver(seq);
        }
    });
    let c = &subs.stats().counters;
    assert_eq!(c.fanout_delivered, 300 * 50);
    assert_eq!(c.fanout_delivered_owed, 300 * 50);
    assert_eq!((c.fanout_duplicates, c.fanout_reordered), (0, 0));
    // One timing row per new message (shared by its 50 deliveries), plus the table growing.
    assert!(
        n <= 100 + 2,
        "{n} allocations for 100 messages × 50 subscribers"
    );
}
