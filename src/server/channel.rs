//! Publish/subscribe channels of the gateway.
//!
//! Model: each worker owns [`Channels`], the membership of *its* connections (channel → slots
//! and slot → channels); no thread ever reads another's. A publish received by worker `i` is
//! delivered by `i` to its own members at once and handed to every other worker as a
//! [`Relayed`] message through that worker's [`Inbox`] (an `mpsc` channel plus its
//! `mio::Waker`); each worker delivers relayed messages to its own members. Both paths are
//! FIFO, so every subscriber sees each publisher's messages in the order they were published.
//! The message text is shared (`Utf8Bytes` is reference-counted): relaying it to N threads and
//! M subscribers copies it only into each subscriber's output buffer.
//!
//! Cost: about 100 bytes per membership (the channel name is shared between both maps). The
//! inboxes together hold at most `max_relay_bytes` ([`RelayBudget`]): a worker that cannot keep
//! up with the others' publishes queues them up to that, and further relays to it are dropped
//! and counted (`relay_dropped`).

use std::collections::HashMap;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{mpsc, Arc};

use mio::Waker;
use tungstenite::Utf8Bytes;

/// What the worker does on behalf of a connection after driving it, in arrival order.
#[derive(Debug)]
pub(super) enum ChannelOp {
    /// The connection joins this channel.
    Join(Arc<str>),
    /// The connection leaves this channel.
    Leave(Arc<str>),
    /// Relay `text` (the publish message itself, byte for byte) to every member of `channel`.
    Publish {
        /// The channel published to.
        channel: Arc<str>,
        /// The whole message as received.
        text: Utf8Bytes,
    },
    /// The connection starts these market-data streams (module `feed`).
    StreamSubscribe(Vec<Box<str>>),
    /// The connection stops these streams; `None` = all of them.
    StreamUnsubscribe(Option<Vec<Box<str>>>),
}

/// A publish handed from the worker that received it to another worker.
#[derive(Debug)]
pub(super) struct Relayed {
    /// The channel published to.
    pub(super) channel: Arc<str>,
    /// The whole message as received.
    pub(super) text: Utf8Bytes,
}

/// Bytes a queued relay is charged beyond its message: the queue node, the channel name's
/// reference and the message's header, rounded up.
const RELAY_OVERHEAD: usize = 64;

impl Relayed {
    /// What this relay is charged against the [`RelayBudget`] while it is queued.
    fn cost(&self) -> usize {
        self.text.len() + RELAY_OVERHEAD
    }
}

/// The bytes all inboxes together may hold (`max_relay_bytes`), shared by every worker.
#[derive(Debug)]
pub(super) struct RelayBudget {
    /// Charged bytes queued now.
    queued: AtomicUsize,
    /// The cap.
    cap: usize,
}

impl RelayBudget {
    /// A budget of `cap` bytes, none queued.
    pub(super) fn new(cap: usize) -> Self {
        Self {
            queued: AtomicUsize::new(0),
            cap,
        }
    }

    /// Charges `n` bytes if they fit under the cap.
    fn try_take(&self, n: usize) -> bool {
        self.queued
            .fetch_update(AcqRel, Relaxed, |q| {
                q.checked_add(n).filter(|&t| t <= self.cap)
            })
            .is_ok()
    }

    /// Returns `n` charged bytes.
    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, AcqRel);
    }

    /// Charged bytes queued now.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }
}

/// The way into one worker: its relay queue and the waker that interrupts its `poll`.
#[derive(Debug)]
pub(super) struct Inbox {
    /// Publishes from other workers, FIFO.
    tx: mpsc::Sender<Relayed>,
    /// Wakes the worker (also used to stop it).
    waker: Waker,
    /// Set when a wake is on its way and the worker has not drained the queue since: senders
    /// skip the `eventfd` write then, so a burst of publishes costs one wake-up.
    pending: AtomicBool,
    /// The bytes every inbox together may hold.
    budget: Arc<RelayBudget>,
}

impl Inbox {
    /// An inbox around `waker`, charging `budget`, and the receiving end for its worker.
    pub(super) fn new(waker: Waker, budget: Arc<RelayBudget>) -> (Self, mpsc::Receiver<Relayed>) {
        let (tx, rx) = mpsc::channel();
        let inbox = Self {
            tx,
            waker,
            pending: AtomicBool::new(false),
            budget,
        };
        (inbox, rx)
    }

    /// Queues `msg` and wakes the worker unless a wake is already pending; false (`msg`
    /// dropped) when the inboxes together hold `max_relay_bytes`. A worker that has stopped
    /// drops the message too (true: nobody misses it).
    pub(super) fn send(&self, msg: Relayed) -> bool {
        let cost = msg.cost();
        if !self.budget.try_take(cost) {
            return false;
        }
        if self.tx.send(msg).is_err() {
            self.budget.release(cost);
            return true;
        }
        // The swap orders the send before the worker's `take_pending`: either the worker sees
        // the message when it drains, or this sender sees the flag cleared and wakes it.
        if !self.pending.swap(true, AcqRel) {
            // A failed wake leaves the message queued until the loop's next turn.
            let _ = self.waker.wake();
        }
        true
    }

    /// The worker took `msg` out of its queue: its bytes go back to the budget.
    pub(super) fn received(&self, msg: &Relayed) {
        self.budget.release(msg.cost());
    }

    /// Wakes the worker unconditionally (shutdown).
    pub(super) fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Called by the worker right before it drains its queue.
    pub(super) fn take_pending(&self) {
        self.pending.swap(false, AcqRel);
    }
}

/// Channel membership of one worker's connections, by slot.
#[derive(Debug, Default)]
pub(super) struct Channels {
    /// Channel → member slots (no duplicates; order is not meaningful).
    members: HashMap<Arc<str>, Vec<usize>>,
    /// Slot → the channels it is a member of.
    joined: Vec<Vec<Arc<str>>>,
}

impl Channels {
    /// Adds `slot` to `channel`; false if it already was a member.
    pub(super) fn join(&mut self, slot: usize, channel: Arc<str>) -> bool {
        if self.joined.len() <= slot {
            self.joined.resize_with(slot + 1, Vec::new);
        }
        let Some(joined) = self.joined.get_mut(slot) else {
            return false;
        };
        if joined.iter().any(|c| **c == *channel) {
            return false;
        }
        joined.push(Arc::clone(&channel));
        self.members.entry(channel).or_default().push(slot);
        true
    }

    /// Removes `slot` from `channel`; false if it was not a member.
    pub(super) fn leave(&mut self, slot: usize, channel: &str) -> bool {
        let Some(joined) = self.joined.get_mut(slot) else {
            return false;
        };
        let Some(i) = joined.iter().position(|c| **c == *channel) else {
            return false;
        };
        joined.swap_remove(i);
        self.remove_member(slot, channel);
        true
    }

    /// Removes `slot` from every channel (its connection closed; the slot may be reused).
    pub(super) fn leave_all(&mut self, slot: usize) {
        let Some(joined) = self.joined.get_mut(slot) else {
            return;
        };
        for channel in std::mem::take(joined) {
            self.remove_member(slot, &channel);
        }
    }

    /// The slots that are members of `channel`.
    pub(super) fn members(&self, channel: &str) -> &[usize] {
        self.members.get(channel).map_or(&[], Vec::as_slice)
    }

    /// Drops `slot` from `channel`'s member list, and the channel once it has no members.
    fn remove_member(&mut self, slot: usize, channel: &str) {
        let Some(members) = self.members.get_mut(channel) else {
            return;
        };
        if let Some(i) = members.iter().position(|&s| s == slot) {
            members.swap_remove(i);
        }
        if members.is_empty() {
            self.members.remove(channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(s: &[usize]) -> Vec<usize> {
        let mut v = s.to_vec();
        v.sort_unstable();
        v
    }

    #[test]
    fn join_leave_and_close() {
        let mut ch = Channels::default();
        assert!(ch.join(3, "a".into()));
        assert!(!ch.join(3, "a".into()));
        assert!(ch.join(0, "a".into()));
        assert!(ch.join(3, "b".into()));
        assert_eq!(sorted(ch.members("a")), [0, 3]);
        assert_eq!(ch.members("b"), [3]);
        assert!(ch.members("c").is_empty());

        assert!(ch.leave(0, "a"));
        assert!(!ch.leave(0, "a"));
        assert!(!ch.leave(7, "a"));
        assert_eq!(ch.members("a"), [3]);

        ch.leave_all(3);
        assert!(ch.members("a").is_empty() && ch.members("b").is_empty());
        // Empty channels are forgotten: churn over many names does not grow the map.
        assert!(ch.members.is_empty());
        // The slot is clean for its next connection.
        assert!(ch.join(3, "b".into()));
        assert_eq!(ch.members("b"), [3]);
    }

    /// Regression: the queues between worker threads were unbounded. Four publisher threads
    /// relay 64 KiB publishes into two inboxes nobody drains (a worker that fell behind):
    /// the budget holds exactly what fits, refuses the rest (the worker counts those as
    /// `relay_dropped`), and draining gives the bytes back.
    #[test]
    fn relays_beyond_the_byte_budget_are_refused_and_draining_frees_them() {
        let poll = mio::Poll::new().unwrap();
        let budget = Arc::new(RelayBudget::new(1 << 20));
        let (a, rx_a) = Inbox::new(
            Waker::new(poll.registry(), mio::Token(1)).unwrap(),
            Arc::clone(&budget),
        );
        let (b, _rx_b) = Inbox::new(
            Waker::new(poll.registry(), mio::Token(2)).unwrap(),
            Arc::clone(&budget),
        );
        let text = Utf8Bytes::from("x".repeat(64 << 10));
        let relay = || Relayed {
            channel: "c".into(),
            text: text.clone(),
        };
        let cost = relay().cost();
        let accepted: usize = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..200)
                            .map(|i| usize::from(if i % 2 == 0 { &a } else { &b }.send(relay())))
                            .sum::<usize>()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        });
        assert_eq!(
            accepted,
            (1 << 20) / cost,
            "800 relays of {cost} bytes into 1 MiB"
        );
        assert_eq!(budget.queued(), accepted * cost);
        assert!(!a.send(relay()));
        // The worker behind `a` drains one: one more fits again.
        let msg = rx_a.try_recv().unwrap();
        a.received(&msg);
        assert_eq!(budget.queued(), (accepted - 1) * cost);
        assert!(b.send(relay()));
        assert!(!b.send(relay()));
    }
}
