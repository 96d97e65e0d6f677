//! Fan-out accounting: what publishers sent, when each subscriber session was subscribed, and
//! per message how fast its deliveries arrived. Shards gather these like any statistics; at
//! the end the merged log says what every subscriber was owed (each message published while
//! it was subscribed), so loss is exact, and per message when 50 / 99 / 100 % of the
//! subscribers owed it had it (broadcast completion). A delivery is owed only if its
//! publisher is one of the run's: subscribers count their deliveries per publisher id, and
//! the final accounting keeps those of the ids that published (others' are foreign).

mod codec;

use crate::proto::conn::Counters;
use std::collections::{HashMap, HashSet};

/// Why owed and lost are not computed when the publish log overflowed.
pub const NOT_EXACT: &str = "more messages were published than the log holds (1,000,000): what was owed, and so the loss, is unknown";

/// Log-linear latency buckets: exact below 16 µs, then 8 per power of two (±6 %).
const BUCKETS: usize = 16 + 24 * 8;
/// Messages whose deliveries are timed, run-wide (beyond: counted, not timed). A message is
/// admitted by the first data that reaches the merge, then every shard's data for it is kept.
const TRACKED_MESSAGES: usize = 20_000;
/// Published messages logged, run-wide (beyond: their loss cannot be computed).
const LOGGED_MESSAGES: usize = 1_000_000;
/// Publisher ids whose owed deliveries are counted apart, run-wide (beyond: counted as
/// foreign). Each subscriber connection tracks at most 4,096 publishers.
const COUNTED_PUBLISHERS: usize = 65_536;

fn bucket(us: u64) -> usize {
    if us < 16 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as usize; // ≥ 4
    let m = ((us >> (e - 3)) & 7) as usize;
    (16 + (e - 4) * 8 + m).min(BUCKETS - 1)
}

/// The largest latency in bucket `b`, µs.
fn bucket_top(b: usize) -> u64 {
    if b < 16 {
        return b as u64;
    }
    let (e, m) = ((b - 16) / 8 + 4, ((b - 16) % 8) as u64);
    ((8 + m + 1) << (e - 3)) - 1
}

/// Fan-out data of one shard interval (or a merge).
#[derive(Debug, Clone, Default)]
pub struct FanoutStats {
    /// (channel, publisher, seq, send time Unix µs) of every message published.
    published: Vec<(u32, u64, u64, u64)>,
    /// Subscriber sessions: (channel, subscribed from, ended), Unix µs.
    sessions: Vec<(u32, u64, u64)>,
    /// Per message, the latencies of its owed deliveries.
    latencies: HashMap<(u64, u64), Box<[u32; BUCKETS]>>,
    /// Messages published beyond the log's capacity (their loss cannot be computed).
    pub unlogged: u64,
    /// Messages not timed because the timing table was full.
    untimed: bool,
    /// Ids of the publishers that sent (the run's publishers, once merged).
    publishers: HashSet<u64>,
    /// Deliveries in a subscribed window, by the id in their `pub` field.
    by_publisher: HashMap<u64, u64>,
    /// Such deliveries beyond [`COUNTED_PUBLISHERS`] distinct ids.
    unattributed: u64,
}

/// Sessions of one channel, sorted by start and by end.
struct Owed {
    from: Vec<u64>,
    to: Vec<u64>,
}

impl Owed {
    fn of(sessions: &[(u32, u64, u64)]) -> HashMap<u32, Self> {
        let mut by: HashMap<u32, Self> = HashMap::new();
        for &(ch, a, b) in sessions {
            let e = by.entry(ch).or_insert(Self {
                from: Vec::new(),
                to: Vec::new(),
            });
            e.from.push(a);
            e.to.push(b);
        }
        for e in by.values_mut() {
            e.from.sort_unstable();
            e.to.sort_unstable();
        }
        by
    }

    /// Sessions subscribed at `ts`: begun by then, minus ended by then (each began first).
    fn at(&self, ts: u64) -> u64 {
        (self.from.partition_point(|&a| a <= ts) - self.to.partition_point(|&b| b <= ts)) as u64
    }
}

impl FanoutStats {
    /// A publisher sent message `seq` to `channel` at `ts`.
    pub fn publish(&mut self, channel: u32, publisher: u64, seq: u64, ts: u64) {
        self.publishers.insert(publisher);
        if self.published.len() < LOGGED_MESSAGES {
            self.published.push((channel, publisher, seq, ts));
        } else {
            self.unlogged += 1;
        }
    }

    /// A subscriber session of `channel` was subscribed from `from` to `to`.
    pub fn session(&mut self, channel: u32, from: u64, to: u64) {
        if to > from {
            self.sessions.push((channel, from, to));
        }
    }

    /// An owed delivery of `(publisher, seq)` arrived after `latency` µs. (A shard's interval
    /// holds what one second brought; the run-wide cap applies when intervals are merged.)
    pub fn delivered(&mut self, publisher: u64, seq: u64, latency: u64) {
        self.count_from(publisher, 1);
        let entry = self
            .latencies
            .entry((publisher, seq))
            .or_insert_with(|| Box::new([0; BUCKETS]));
        entry[bucket(latency)] += 1;
    }

    /// Counts `n` deliveries in a subscribed window from `publisher`, within the cap.
    fn count_from(&mut self, publisher: u64, n: u64) {
        let full = self.by_publisher.len() >= COUNTED_PUBLISHERS;
        match self.by_publisher.get_mut(&publisher) {
            Some(k) => *k += n,
            None if full => self.unattributed += n,
            None => {
                self.by_publisher.insert(publisher, n);
            }
        }
    }

    /// Whether anything was gathered.
    pub fn is_empty(&self) -> bool {
        self.published.is_empty()
            && self.sessions.is_empty()
            && self.latencies.is_empty()
            && self.by_publisher.is_empty()
            && self.unattributed == 0
    }

    /// Splits the deliveries `subs` received in their subscribed windows into those of this
    /// log's publishers (owed) and the rest (foreign): `(owed, foreign)`.
    pub fn attribute(&self, subs: &Self) -> (u64, u64) {
        let (mut owed, mut foreign) = (0, subs.unattributed);
        for (p, n) in &subs.by_publisher {
            if self.publishers.contains(p) {
                owed += n;
            } else {
                foreign += n;
            }
        }
        (owed, foreign)
    }

    /// Adds `other` into `self`, within the run-wide caps.
    pub fn add(&mut self, other: &Self) {
        let room = LOGGED_MESSAGES.saturating_sub(self.published.len());
        let take = other.published.len().min(room);
        self.published.extend_from_slice(&other.published[..take]);
        self.unlogged += other.unlogged + (other.published.len() - take) as u64;
        self.sessions.extend_from_slice(&other.sessions);
        self.untimed |= other.untimed;
        self.publishers.extend(&other.publishers);
        self.unattributed += other.unattributed;
        for (&p, &n) in &other.by_publisher {
            self.count_from(p, n);
        }
        for (k, v) in &other.latencies {
            let full = self.latencies.len() >= TRACKED_MESSAGES;
            if full && !self.latencies.contains_key(k) {
                self.untimed = true;
                continue;
            }
            let e = self
                .latencies
                .entry(*k)
                .or_insert_with(|| Box::new([0; BUCKETS]));
            for (a, b) in e.iter_mut().zip(v.iter()) {
                *a += b;
            }
        }
    }

    /// Moves the gathered data out.
    pub fn take(&mut self) -> Self {
        std::mem::take(self)
    }

    /// Deliveries owed to the subscriber sessions of `subs` by the messages logged here.
    pub fn owed_to(&self, subs: &Self) -> u64 {
        let owed = Owed::of(&subs.sessions);
        self.published
            .iter()
            .map(|&(ch, _, _, ts)| owed.get(&ch).map_or(0, |o| o.at(ts)))
            .sum()
    }

    /// The final accounting over the merged data of a run.
    pub fn summarize(&self) -> Option<FanoutSummary> {
        if self.published.is_empty() && self.sessions.is_empty() && self.by_publisher.is_empty() {
            return None;
        }
        let (delivered_owed, foreign) = self.attribute(self);
        let by_channel = Owed::of(&self.sessions);
        let mut expected = 0;
        let (mut t50, mut t99, mut t100) = (Vec::new(), Vec::new(), Vec::new());
        let (mut incomplete, mut untimed) = (0, 0);
        for &(ch, p, seq, ts) in &self.published {
            let owed = by_channel.get(&ch).map_or(0, |o| o.at(ts));
            expected += owed;
            if owed == 0 {
                continue;
            }
            let Some(b) = self.latencies.get(&(p, seq)) else {
                // Not in the timing table: never delivered, or the table was full.
                if self.untimed {
                    untimed += 1;
                } else {
                    incomplete += 1;
                }
                continue;
            };
            let goals = [owed.div_ceil(2), (owed * 99).div_ceil(100), owed];
            let mut reached = [None; 3];
            let mut sum = 0u64;
            for (i, &n) in b.iter().enumerate() {
                sum += u64::from(n);
                for (g, r) in goals.iter().zip(reached.iter_mut()) {
                    if r.is_none() && sum >= *g {
                        *r = Some(bucket_top(i));
                    }
                }
            }
            if let Some(v) = reached[0] {
                t50.push(v);
            }
            if let Some(v) = reached[1] {
                t99.push(v);
            }
            match reached[2] {
                Some(v) => t100.push(v),
                None => incomplete += 1,
            }
        }
        Some(FanoutSummary {
            published: self.published.len() as u64 + self.unlogged,
            sessions: self.sessions.len() as u64,
            expected,
            delivered_owed,
            foreign,
            completion: [spread(t50), spread(t99), spread(t100)],
            incomplete,
            timed: self.latencies.len() as u64,
            untimed,
            exact: self.unlogged == 0,
        })
    }
}

/// Settles a run's fan-out counters once its whole log is known (at the end of a run, or when
/// `sockstorm merge` has added every host's log): deliveries owed by the run's publishers,
/// foreign ones, owed and lost, for the run (`run`, from the log `total`) and for each
/// scenario (its own log and counters). Owed and lost stay 0 when the log overflowed
/// ([`FanoutSummary::exact`] false). `None` when nothing fanned out.
pub fn settle(
    total: &FanoutStats,
    run: &mut Counters,
    scenarios: &mut [(&FanoutStats, &mut Counters)],
) -> Option<FanoutSummary> {
    let summary = total.summarize()?;
    // Only deliveries of the run's own publishers were owed.
    run.fanout_delivered_owed = summary.delivered_owed;
    run.fanout_foreign = summary.foreign;
    for (log, c) in scenarios.iter_mut() {
        let (owed, foreign) = total.attribute(log);
        c.fanout_delivered_owed = owed;
        c.fanout_foreign = foreign;
    }
    if !summary.exact {
        // More published than the log holds: what was owed is unknown, so is the loss.
        return Some(summary);
    }
    run.fanout_owed = summary.expected;
    run.fanout_lost = summary.expected.saturating_sub(run.fanout_delivered_owed);
    for (log, c) in scenarios.iter_mut() {
        if c.fanout_delivered > 0 || !log.is_empty() {
            c.fanout_owed = total.owed_to(log);
            c.fanout_lost = c.fanout_owed.saturating_sub(c.fanout_delivered_owed);
        }
    }
    Some(summary)
}

/// p50, p99 and max over messages, µs.
fn spread(mut v: Vec<u64>) -> Option<[u64; 3]> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
    Some([q(0.5), q(0.99), v[v.len() - 1]])
}

/// The fan-out results of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutSummary {
    /// Messages the publishers sent during the run, on all channels, logged or not.
    pub published: u64,
    /// Subscriber sessions whose subscription lasted a nonzero time; a replaced connection's
    /// successor is a session of its own.
    pub sessions: u64,
    /// Deliveries owed: for each message, the sessions subscribed when it was sent.
    pub expected: u64,
    /// Deliveries received in a subscribed window from the run's publishers.
    pub delivered_owed: u64,
    /// Deliveries received in a subscribed window from ids that published nothing in the run
    /// (or beyond the 65,536 publisher ids counted apart): not owed.
    pub foreign: u64,
    /// Time until 50 %, 99 % and 100 % of the owed subscribers had a message: [p50, p99,
    /// max] over messages, µs (bucket upper bounds, within 12.5 %).
    pub completion: [Option<[u64; 3]>; 3],
    /// Messages some owed subscriber never received.
    pub incomplete: u64,
    /// Messages with at least one delivery in the timing table (at most 20,000 run-wide).
    pub timed: u64,
    /// Messages owed to someone but not timed (the timing table was full): neither in the
    /// completion figures nor counted incomplete; their loss is still exact.
    pub untimed: u64,
    /// Every published message was logged, so `expected` (and the loss) is complete; beyond
    /// the log's capacity it is not computed.
    pub exact: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_and_bound_their_values() {
        for us in [0, 1, 15, 16, 17, 100, 1_000, 123_456, 60_000_000] {
            let b = bucket(us);
            assert!(bucket_top(b) >= us, "{us}");
            assert!(b == 0 || bucket_top(b - 1) < us, "{us}");
            assert!(bucket_top(b) as f64 <= us as f64 * 1.13 + 1.0, "{us}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn owed_deliveries_and_completion_are_exact() {
        let mut f = FanoutStats::default();
        // Two publishers × 3 messages at t = 100, 200, 300.
        for p in [7, 9] {
            for (seq, ts) in [(1, 100), (2, 200), (3, 300)] {
                f.publish(1, p, seq, ts);
            }
        }
        // Session A subscribed throughout; B from 150 to 250 (owed message 2 only); C is on
        // another channel (owed nothing of channel 1).
        f.session(1, 50, 1_000);
        f.session(1, 150, 250);
        f.session(2, 50, 1_000);
        for p in [7, 9] {
            for seq in 1..=3 {
                f.delivered(p, seq, 10);
            }
            f.delivered(p, 2, 1_000);
        }
        let mut merged = FanoutStats::default();
        merged.add(&f);
        let s = merged.summarize().unwrap();
        assert_eq!(s.published, 6);
        assert_eq!(s.sessions, 3);
        assert_eq!(s.expected, 2 * (1 + 2 + 1));
        assert_eq!(s.incomplete, 0);
        // 50 % of message 2 at 10 µs, 100 % at ~1 ms.
        assert_eq!(s.completion[0], Some([10, 10, 10]));
        let full = s.completion[2].unwrap();
        assert!(full[2] >= 1_000 && full[2] < 1_130, "{full:?}");
        // A message owed but never delivered is incomplete.
        f.publish(1, 7, 4, 400);
        assert_eq!(f.summarize().unwrap().incomplete, 1);
        // Channel 2 is owed its own messages only.
        f.publish(2, 8, 1, 500);
        assert_eq!(f.summarize().unwrap().expected, 2 * (1 + 2 + 1) + 1 + 1);
    }

    #[test]
    fn deliveries_of_publishers_outside_the_run_are_not_owed() {
        // The run's publisher 7 sent two messages, one subscriber session owed both.
        let mut pubs = FanoutStats::default();
        pubs.publish(1, 7, 1, 100);
        pubs.publish(1, 7, 2, 200);
        let mut subs = FanoutStats::default();
        subs.session(1, 50, 1_000);
        subs.delivered(7, 1, 10);
        // A server (or another client) floods it with messages of ids that never published.
        for p in 1_000..1_500 {
            for seq in 1..=3 {
                subs.delivered(p, seq, 10);
            }
        }
        let mut run = FanoutStats::default();
        run.add(&pubs);
        run.add(&subs);
        let s = run.summarize().unwrap();
        assert_eq!(s.expected, 2);
        assert_eq!(s.delivered_owed, 1, "one of the two owed arrived");
        assert_eq!(s.foreign, 1_500);
        assert_eq!(run.attribute(&subs), (1, 1_500));
        // Nothing was owed, everything received is foreign.
        let mut none = FanoutStats::default();
        none.add(&subs);
        let s = none.summarize().unwrap();
        assert_eq!((s.expected, s.delivered_owed, s.foreign), (0, 0, 1_501));
    }

    #[test]
    fn publisher_ids_counted_apart_are_bounded() {
        let mut subs = FanoutStats::default();
        let n = COUNTED_PUBLISHERS as u64 + 1_000;
        for p in 0..n {
            subs.count_from(p, 1);
        }
        assert_eq!(subs.by_publisher.len(), COUNTED_PUBLISHERS);
        assert_eq!(subs.unattributed, 1_000);
        let mut run = FanoutStats::default();
        run.add(&subs);
        run.add(&subs);
        assert_eq!(run.by_publisher.len(), COUNTED_PUBLISHERS);
        assert_eq!(run.attribute(&run), (0, 2 * n));
    }
}
