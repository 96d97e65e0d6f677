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
//! inboxes are unbounded: a worker that cannot keep up with the others' publishes queues them.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::AcqRel;
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
}

impl Inbox {
    /// An inbox around `waker`, and the receiving end for its worker.
    pub(super) fn new(waker: Waker) -> (Self, mpsc::Receiver<Relayed>) {
        let (tx, rx) = mpsc::channel();
        let inbox = Self {
            tx,
            waker,
            pending: AtomicBool::new(false),
        };
        (inbox, rx)
    }

    /// Queues `msg` and wakes the worker unless a wake is already pending. A worker that has
    /// stopped drops the message.
    pub(super) fn send(&self, msg: Relayed) {
        if self.tx.send(msg).is_err() {
            return;
        }
        // The swap orders the send before the worker's `take_pending`: either the worker sees
        // the message when it drains, or this sender sees the flag cleared and wakes it.
        if !self.pending.swap(true, AcqRel) {
            // A failed wake leaves the message queued until the loop's next turn.
            let _ = self.waker.wake();
        }
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
}
