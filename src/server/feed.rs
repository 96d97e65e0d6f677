//! Sequenced market-data streams: `{"op":"subscribe","streams":[…]}` starts, per named
//! stream, a feed of `{"type":"quote","stream":NAME,"seq":N,"price":P,"ts":T}` to that
//! connection, `N` = 1, 2, 3, … per (connection, stream), `P` a positive price, `T` the
//! intended send time in Unix milliseconds.
//!
//! Model: each worker owns the [`Feeds`] of *its* connections, by slot, and one tick schedule,
//! `stream_rate` ticks per second (anchored when its first stream is subscribed, like the
//! fan-out clock). At each tick every subscribed stream of every open connection takes its next
//! seq: every `gap_every`-th seq is skipped (not sent, counted in `stream_skipped`), the others
//! are queued like any delivery, so a client that stops reading loses quotes beyond its queue
//! limits (1,024 messages, `max_queued_bytes`; counted in `channel_overflow`) instead of growing
//! the gateway. A seq that
//! was not sent (skipped or lost to overflow) and is followed by a quote that was queued on the
//! same stream is counted once in `stream_gaps_visible`: exactly the missing seqs a client can
//! detect. A loop that fell behind sends at most [`MAX_CATCH_UP`] ticks back to back and
//! skips the rest of the schedule; that slows the feed but takes no seqs, so it is no gap.
//!
//! Cost: at most [`MAX_STREAMS_PER_CONN`] streams per connection (more are acknowledged but
//! not streamed, counted in `stream_subs_refused`), each about 2 × its name + 64 bytes; names
//! longer than [`MAX_STREAM_NAME`] are refused the same way.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tungstenite::Message;

use super::conn::{Conn, Delivery};
use super::worker::mark_unflushed;
use super::{PublishClock, ThreadStats};

/// Streams one connection can have; further subscriptions are acknowledged, not streamed.
pub(super) const MAX_STREAMS_PER_CONN: usize = 64;

/// Longest stream name streamed, in bytes.
pub(super) const MAX_STREAM_NAME: usize = 256;

/// Ticks sent back to back when the loop fell behind the schedule; older ones are skipped.
const MAX_CATCH_UP: u32 = 64;

/// One stream of one connection.
#[derive(Debug)]
struct Sub {
    /// The name as subscribed.
    name: Box<str>,
    /// `{"type":"quote","stream":NAME,"seq":` with NAME as a JSON string.
    head: Box<str>,
    /// The last seq taken (sent or not); 0 before the first.
    seq: u64,
    /// Seqs not sent since the last quote that was.
    missing: u64,
}

impl Sub {
    /// The quote for `self.seq`, due at `ts_ms`.
    fn quote(&self, ts_ms: u64) -> String {
        // A positive price that moves with the seq: 100.00 to 109.99.
        let cents = 10_000 + self.seq.wrapping_mul(37) % 1_000;
        format!(
            r#"{}{},"price":{}.{:02},"ts":{ts_ms}}}"#,
            self.head,
            self.seq,
            cents / 100,
            cents % 100
        )
    }
}

/// The streams of one worker's connections and their tick schedule.
#[derive(Debug)]
pub(super) struct Feeds {
    /// Ticks per second (> 0): each subscribed stream takes one seq per tick.
    rate: f64,
    /// Every `gap_every`-th seq of each stream is skipped; 0 = none.
    gap_every: u64,
    /// Slot → its streams.
    by_slot: Vec<Vec<Sub>>,
    /// Streams of all slots.
    total: usize,
    /// The schedule's origin, set by the first subscription.
    clock: Option<PublishClock>,
    /// The next tick; meaningful while `total > 0`.
    next_k: u64,
}

impl Feeds {
    /// The feeds of a worker, `None` when streaming is off (`rate` 0: subscriptions are only
    /// acknowledged).
    pub(super) fn new(rate: f64, gap_every: u64) -> Option<Self> {
        (rate > 0.0).then(|| Self {
            rate,
            gap_every,
            by_slot: Vec::new(),
            total: 0,
            clock: None,
            next_k: 1,
        })
    }

    /// Starts `names` for the connection in `slot` (one already streamed keeps its seq); names
    /// beyond the per-connection limit, or too long, are counted in `stream_subs_refused`.
    pub(super) fn subscribe(
        &mut self,
        slot: usize,
        names: Vec<Box<str>>,
        now: Instant,
        stats: &ThreadStats,
    ) {
        if self.by_slot.len() <= slot {
            self.by_slot.resize_with(slot + 1, Vec::new);
        }
        let Some(subs) = self.by_slot.get_mut(slot) else {
            return;
        };
        let was_idle = self.total == 0;
        for name in names {
            if subs.iter().any(|s| s.name == name) {
                continue;
            }
            if subs.len() >= MAX_STREAMS_PER_CONN || name.len() > MAX_STREAM_NAME {
                stats.stream_subs_refused.fetch_add(1, Relaxed);
                continue;
            }
            let head = format!(
                r#"{{"type":"quote","stream":{},"seq":"#,
                serde_json::Value::from(&*name)
            );
            subs.push(Sub {
                name,
                head: head.into(),
                seq: 0,
                missing: 0,
            });
            self.total += 1;
        }
        if was_idle && self.total > 0 {
            // The first stream starts the schedule; after an idle spell it resumes at the
            // current tick rather than catching up.
            let clock = *self.clock.get_or_insert_with(PublishClock::now);
            let due = clock.ticks_elapsed(now, self.rate);
            self.next_k = self.next_k.max(due.saturating_add(1));
        }
    }

    /// Stops `names` for the connection in `slot`, or all its streams for `None`.
    pub(super) fn unsubscribe(&mut self, slot: usize, names: Option<&[Box<str>]>) {
        let Some(subs) = self.by_slot.get_mut(slot) else {
            return;
        };
        let before = subs.len();
        match names {
            None => subs.clear(),
            Some(names) => subs.retain(|s| !names.contains(&s.name)),
        }
        self.total -= before - subs.len();
    }

    /// Forgets the streams of `slot` (its connection closed; the slot may be reused).
    pub(super) fn remove(&mut self, slot: usize) {
        if let Some(subs) = self.by_slot.get_mut(slot) {
            self.total -= subs.len();
            *subs = Vec::new();
        }
    }

    /// How long until the next tick; `None` without streams.
    pub(super) fn timeout(&self, now: Instant) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let clock = self.clock?;
        clock
            .deadline(self.next_k, self.rate)
            .map(|d| d.saturating_duration_since(now))
    }

    /// Sends every tick that is due (up to [`MAX_CATCH_UP`]) to the open connections in
    /// `slots`; connections with buffered quotes go on `unflushed`, failed ones on `failed`.
    pub(super) fn send_due(
        &mut self,
        now: Instant,
        slots: &mut [Option<Conn>],
        stats: &ThreadStats,
        (unflushed, failed): (&mut Vec<usize>, &mut Vec<usize>),
    ) {
        let Some(clock) = self.clock else {
            return;
        };
        let mut k = self.next_k;
        let mut sent = 0;
        while self.total > 0 && clock.deadline(k, self.rate).is_some_and(|d| d <= now) {
            if sent == MAX_CATCH_UP {
                k = k.max(clock.ticks_elapsed(now, self.rate).saturating_add(1));
                break;
            }
            let ts_ms = clock.ts_us(k, self.rate) / 1_000;
            self.tick(ts_ms, slots, stats, unflushed, failed);
            k += 1;
            sent += 1;
        }
        self.next_k = k;
    }

    /// One tick: every stream of every open connection takes its next seq.
    fn tick(
        &mut self,
        ts_ms: u64,
        slots: &mut [Option<Conn>],
        stats: &ThreadStats,
        unflushed: &mut Vec<usize>,
        failed: &mut Vec<usize>,
    ) {
        for (slot, subs) in self.by_slot.iter_mut().enumerate() {
            if subs.is_empty() {
                continue;
            }
            let Some(Some(Conn::Open(conn))) = slots.get_mut(slot) else {
                continue;
            };
            // A closing connection takes no seqs: nothing is lost that it could have seen.
            if !conn.accepts_deliveries() {
                continue;
            }
            for sub in subs.iter_mut() {
                sub.seq += 1;
                if self.gap_every > 0 && sub.seq % self.gap_every == 0 {
                    stats.stream_skipped.fetch_add(1, Relaxed);
                    sub.missing += 1;
                    continue;
                }
                match conn.deliver(Message::Text(sub.quote(ts_ms).into())) {
                    Ok(Delivery::Queued) => {
                        stats.stream_msgs.fetch_add(1, Relaxed);
                        stats.msgs_out.fetch_add(1, Relaxed);
                        if sub.missing > 0 {
                            stats.stream_gaps_visible.fetch_add(sub.missing, Relaxed);
                            sub.missing = 0;
                        }
                        mark_unflushed(conn, slot, unflushed);
                    }
                    Ok(Delivery::Overflow) => {
                        stats.channel_overflow.fetch_add(1, Relaxed);
                        sub.missing += 1;
                    }
                    Err(_) => {
                        failed.push(slot);
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Box<str>> {
        list.iter().map(|&s| Box::from(s)).collect()
    }

    #[test]
    fn subscriptions_are_capped_and_counted() {
        let stats = ThreadStats::default();
        let mut feeds = Feeds::new(10.0, 0).unwrap();
        let now = Instant::now();
        let many: Vec<String> = (0..70).map(|i| format!("s{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        feeds.subscribe(3, names(&many), now, &stats);
        assert_eq!(feeds.total, MAX_STREAMS_PER_CONN);
        assert_eq!(stats.stream_subs_refused.load(Relaxed), 6);
        // Already streamed: neither added nor refused.
        feeds.subscribe(3, names(&["s0"]), now, &stats);
        assert_eq!(stats.stream_subs_refused.load(Relaxed), 6);
        let long = "x".repeat(MAX_STREAM_NAME + 1);
        feeds.subscribe(0, names(&[&long, "a"]), now, &stats);
        assert_eq!(stats.stream_subs_refused.load(Relaxed), 7);
        assert_eq!(feeds.total, MAX_STREAMS_PER_CONN + 1);
        assert!(feeds.timeout(now).is_some());

        feeds.unsubscribe(3, Some(&names(&["s1", "nope"])));
        assert_eq!(feeds.total, MAX_STREAMS_PER_CONN);
        feeds.unsubscribe(3, None);
        assert_eq!(feeds.total, 1);
        feeds.remove(0);
        feeds.remove(99);
        assert_eq!(feeds.total, 0);
        assert_eq!(feeds.timeout(now), None);
        assert!(Feeds::new(0.0, 5).is_none());
    }

    #[test]
    fn quotes_are_json_with_an_escaped_name() {
        let stats = ThreadStats::default();
        let mut feeds = Feeds::new(1.0, 0).unwrap();
        feeds.subscribe(0, names(&["q.\"X\""]), Instant::now(), &stats);
        let sub = &mut feeds.by_slot[0][0];
        sub.seq = 7;
        let quote: serde_json::Value = serde_json::from_str(&sub.quote(1_700_000_000_123)).unwrap();
        assert_eq!(
            quote,
            serde_json::json!({"type": "quote", "stream": "q.\"X\"", "seq": 7,
                "price": 102.59, "ts": 1_700_000_000_123u64})
        );
    }
}
