//! Fan-out subscribers: reading `pub`, `seq` and `ts` from each delivery as it streams in,
//! telling new deliveries from duplicates and late ones per publisher, and recording their
//! one-way latency and whether they were owed (published while the session was subscribed;
//! whether the publisher was one of the run's is settled at the end, by the publish log).
//!
//! Publishers are looked up in a hash map, at most [`TRACKED_PUBLISHERS`] per connection:
//! a stream with ever more distinct `pub` ids costs neither time per delivery nor memory
//! beyond that (about 150 KiB per connection when full); deliveries of further publishers
//! are counted as `fanout_untracked` and nothing else.

use super::{Ctx, Extras, Fanout, Hist, Micros, Recorder};
use crate::proto::inspect::{LatencyField, TimeUnit};
use std::collections::HashMap;

/// Publishers whose deliveries one subscriber connection tells apart (duplicates, order).
pub const TRACKED_PUBLISHERS: usize = 4096;

/// What a subscriber received from each publisher it tracks, by publisher id.
pub(super) type Tracks = HashMap<u64, Track>;

/// The fields subscribers read from each delivery: publisher id, sequence, send time (µs).
pub fn fanout_fields() -> [LatencyField; 3] {
    [
        LatencyField::new("pub", TimeUnit::Micros),
        LatencyField::new("seq", TimeUnit::Micros),
        LatencyField::new("ts", TimeUnit::Micros),
    ]
}

/// What a subscriber received from one publisher: the highest sequence, and which of the 64
/// below it arrived (bit i: `last - i`), to tell duplicates from late arrivals.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Track {
    last: u64,
    seen: u64,
}

/// How a delivery relates to what came before from its publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Next or later in sequence.
    InOrder,
    /// Earlier than one already received, and new.
    Reordered,
    /// Received before.
    Duplicate,
}

impl Track {
    fn note(&mut self, seq: u64) -> Arrival {
        if seq > self.last {
            let shift = seq - self.last;
            self.seen = if shift >= 64 {
                1
            } else {
                (self.seen << shift) | 1
            };
            self.last = seq;
            return Arrival::InOrder;
        }
        let back = self.last - seq;
        if back < 64 {
            if self.seen & (1 << back) != 0 {
                return Arrival::Duplicate;
            }
            self.seen |= 1 << back;
        }
        Arrival::Reordered
    }
}

/// The fan-out fields, parsed once per thread.
pub(super) fn fields() -> &'static [LatencyField; 3] {
    static FIELDS: std::sync::OnceLock<[LatencyField; 3]> = std::sync::OnceLock::new();
    FIELDS.get_or_init(fanout_fields)
}

/// A subscriber's complete message: a delivery if it carries `pub`, `seq` and `ts`.
pub(super) fn fan_out<R: Recorder>(
    ctx: &mut Ctx<'_, R>,
    x: &mut Extras,
    now: Micros,
    last_seq: &mut u64,
) {
    if ctx.cfg.fanout != Some(Fanout::Subscriber) {
        return;
    }
    let [p, q, t] = [x.fan[0].value(), x.fan[1].value(), x.fan[2].value()];
    if let (Some(publisher), Some(seq), Some(ts)) = (p, q, t) {
        *last_seq = (*last_seq).max(seq);
        deliver(ctx, x, now, publisher, seq, ts);
    }
}

/// A subscriber received message `seq` of `publisher`, sent at `ts` (Unix µs).
fn deliver<R: Recorder>(
    ctx: &mut Ctx<'_, R>,
    x: &mut Extras,
    now: Micros,
    publisher: u64,
    seq: u64,
    ts: u64,
) {
    let full = x.tracks.len() >= TRACKED_PUBLISHERS;
    let track = match x.tracks.get_mut(&publisher) {
        Some(t) => t,
        None if full => {
            // Not told apart from its duplicates, so not counted as delivered either.
            ctx.stats.counters().fanout_untracked += 1;
            return;
        }
        None => x.tracks.entry(publisher).or_default(),
    };
    let c = ctx.stats.counters();
    match track.note(seq) {
        Arrival::Duplicate => {
            c.fanout_duplicates += 1;
            return;
        }
        Arrival::Reordered => c.fanout_reordered += 1,
        Arrival::InOrder => {}
    }
    c.fanout_delivered += 1;
    let arrived = ctx.epoch_unix_us.saturating_add(now);
    let latency = arrived.saturating_sub(ts);
    ctx.stats.record(Hist::WsMsgLatency, latency);
    // Only what was published while subscribed is owed; earlier (and later) ones are a bonus.
    let subscribed = x.subscribed_at != 0 && ts >= x.subscribed_at;
    if subscribed && (x.session_end == 0 || ts < x.session_end) {
        ctx.stats.counters().fanout_delivered_owed += 1;
        ctx.stats.delivered(publisher, seq, latency);
    }
}
