//! Rules about message content, as users write them: named requests with their own rate and
//! a reply rule (`publish` answered by `message_ack` with the same `id`), checks on received
//! messages (k6's `check`), and sequence tracking of server streams (gaps, duplicates,
//! reorders per stream key).
//!
//! Requests awaiting a reply are indexed by their match value (a hash of it), so a reply is
//! found in O(1) whatever is pending, and at most [`MAX_PENDING`] wait per connection: the
//! oldest beyond that, and any older than `reply_timeout`, count as unanswered. Streams keep
//! at most [`MAX_STREAMS`] keys per connection. Received messages are inspected whole, from a
//! per-connection buffer of at most [`INSPECT_MAX`] bytes.

use super::{Ctx, Micros, Recorder};
use crate::proto::select::{Cond, JsonPath};
use crate::proto::template::Fnv;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Requests awaiting their reply, per connection, at most.
pub const MAX_PENDING: usize = 1024;
/// Stream keys tracked per connection, at most; messages of further keys are counted in
/// `stream_keys_untracked`.
pub const MAX_STREAMS: usize = 256;
/// How much of a received message the rules see: values beyond it are not found.
pub const INSPECT_MAX: usize = 64 * 1024;

/// How the reply to a request is recognized.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyRule {
    /// No reply is expected: the request is only counted as sent.
    None,
    /// The server echoes the payload back unchanged.
    Echo,
    /// The reply carries the request's value at `sent` at its own path `reply` (the same
    /// path unless given): `match = "json:id"`.
    Correlate {
        /// Where the value is in the request.
        sent: JsonPath,
        /// Where it is in the reply.
        reply: JsonPath,
    },
    /// The next message that satisfies the condition answers the oldest request waiting:
    /// `match = "json:type=message_ack"`.
    Next(Cond),
}

impl ReplyRule {
    /// Parses a `match`: `echo`, `none`, `json:PATH` (the same value comes back), or a
    /// condition the reply satisfies (`json:type=message_ack`, `text:ack`). `reply_path`
    /// names where a correlated reply carries the value when it is not at the same path.
    pub fn parse(s: &str, reply_path: Option<&str>) -> Result<Self, String> {
        let rule = match s.trim() {
            "echo" => Self::Echo,
            "none" => Self::None,
            s if s.starts_with("json:") && !s.contains(['=', '!', '<', '>']) => {
                let sent = JsonPath::parse(s)?;
                let reply = match reply_path {
                    Some(p) => JsonPath::parse(p)?,
                    None => sent.clone(),
                };
                return Ok(Self::Correlate { sent, reply });
            }
            s => Self::Next(Cond::parse(s).map_err(|e| {
                format!("{e}; a reply is `echo`, `none`, json:PATH (the same value comes back) or a condition such as json:type=message_ack")
            })?),
        };
        if reply_path.is_some() {
            return Err(format!(
                "a reply path applies to a json:PATH match only, not to `{s}`"
            ));
        }
        Ok(rule)
    }
}

/// A named message a scenario sends at its own rate: `[[scenario.message]]`.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its name in reports and thresholds (`ws_reply{msg:NAME}`).
    pub name: Box<str>,
    /// What is sent.
    pub message: super::Message,
    /// µs between sends per connection (0: sent once, right after the session opens).
    pub interval: Micros,
    /// Sends per connection before it stops (0: no limit; 1 with interval 0).
    pub count: u64,
    /// How its reply is recognized.
    pub reply: ReplyRule,
    /// Only messages satisfying this may answer it (a correlated reply's type, say).
    pub reply_on: Option<Cond>,
}

/// A check on received messages, counted pass/fail: `{ name, on, expect }`.
#[derive(Debug, Clone)]
pub struct Check {
    /// Its name in reports and thresholds (`checks{name:NAME}`).
    pub name: Box<str>,
    /// Which messages it applies to (all when `None`).
    pub on: Option<Cond>,
    /// What those messages must satisfy.
    pub expect: Cond,
}

/// Sequence tracking of a server stream: `stream = { seq = "json:seq", key = "json:stream" }`.
#[derive(Debug, Clone)]
pub struct StreamRule {
    /// Where the per-stream sequence number is.
    pub seq: JsonPath,
    /// What tells the streams apart (one stream per connection when `None`).
    pub key: Option<JsonPath>,
}

/// What the rules need per connection.
#[derive(Debug, Default)]
pub(super) struct RuleState {
    /// Per request: when its next send is due, and how many went out.
    next: Vec<(Micros, u64)>,
    /// Correlated and echoed requests awaiting a reply: key → request and intended send
    /// time, packed ([`pack`]: 16 bytes an entry).
    pending: HashMap<u64, u64, BuildHasherDefault<PassHasher>>,
    /// Their keys, oldest first, for timeouts and the bound (keys already answered are
    /// skipped when they come up).
    order: VecDeque<u64>,
    /// `Next`-rule requests awaiting a reply, per request: intended send times, oldest first
    /// (an empty queue allocates nothing), and how many in all.
    fifo: Vec<VecDeque<Micros>>,
    queued: usize,
    /// Per stream key, sorted by its hash.
    streams: Vec<Stream>,
}

/// The keys are hashes already.
#[derive(Debug, Default)]
pub(super) struct PassHasher(u64);

impl Hasher for PassHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Request `req` sent at `at` (µs since the shard's epoch: 48 bits last 8.9 years), as one
/// word.
fn pack(req: u16, at: Micros) -> u64 {
    (u64::from(req) << 48) | (at & 0xFFFF_FFFF_FFFF)
}

/// The request and send time of a packed pending entry.
fn unpack(v: u64) -> (u16, Micros) {
    ((v >> 48) as u16, v & 0xFFFF_FFFF_FFFF)
}

/// The pending-map key of request `req`'s value `v`.
fn key(req: u16, value: &[u8]) -> u64 {
    Fnv::of(value) ^ u64::from(req).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl RuleState {
    /// State for a session opening at `now`: first sends spread over one interval.
    pub(super) fn open<R: Recorder>(ctx: &mut Ctx<'_, R>, now: Micros) -> Self {
        let next = ctx
            .cfg
            .requests
            .iter()
            .map(|r| {
                let phase = if r.interval > 0 {
                    ctx.rng.below(r.interval)
                } else {
                    0
                };
                (now.saturating_add(phase), 0)
            })
            .collect();
        Self {
            next,
            ..Self::default()
        }
    }

    /// Whether request `i` has sent all it may.
    fn done(&self, r: &Request, i: usize) -> bool {
        let limit = if r.interval == 0 { 1 } else { r.count };
        limit > 0 && self.next.get(i).is_some_and(|n| n.1 >= limit)
    }

    /// The earliest instant a request is due or a pending reply times out.
    pub(super) fn next_due(&self, cfg: &super::ConnConfig, stopping: bool) -> Option<Micros> {
        let mut t = u64::MAX;
        if !stopping {
            for (i, r) in cfg.requests.iter().enumerate() {
                if !self.done(r, i) {
                    t = t.min(cfg.on_grid(self.next[i].0));
                }
            }
        }
        if cfg.reply_timeout > 0 {
            let oldest = [
                self.order
                    .front()
                    .and_then(|k| self.pending.get(k))
                    .map(|&v| unpack(v).1),
                self.fifo.iter().filter_map(|q| q.front().copied()).min(),
            ];
            for at in oldest.into_iter().flatten() {
                t = t.min(at.saturating_add(cfg.reply_timeout));
            }
        }
        (t != u64::MAX).then_some(t)
    }

    /// Whether a request is due now.
    pub(super) fn wants_send(&self, cfg: &super::ConnConfig, now: Micros) -> bool {
        cfg.requests
            .iter()
            .enumerate()
            .any(|(i, r)| !self.done(r, i) && cfg.on_grid(self.next[i].0) <= now)
    }

    /// Whether replies are still awaited.
    pub(super) fn awaiting(&self) -> bool {
        !self.pending.is_empty() || self.queued > 0
    }

    /// Requests due at `now`: `(request, intended send time)`, each advanced past this send.
    pub(super) fn take_due(
        &mut self,
        cfg: &super::ConnConfig,
        now: Micros,
        out: &mut Vec<(u16, Micros)>,
    ) {
        for (i, r) in cfg.requests.iter().enumerate() {
            while !self.done(r, i) {
                let intended = cfg.on_grid(self.next[i].0);
                if intended > now {
                    break;
                }
                out.push((i as u16, intended));
                self.next[i].1 += 1;
                self.next[i].0 = self.next[i].0.saturating_add(r.interval.max(1));
            }
        }
    }

    /// Request `req`, rendered as `payload`, went out with intended time `at`: note what its
    /// reply will be recognized by.
    pub(super) fn sent<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        req: u16,
        payload: &[u8],
        at: Micros,
    ) {
        let r = &ctx.cfg.requests[usize::from(req)];
        ctx.stats.request_sent(req);
        let k = match &r.reply {
            ReplyRule::None => return,
            ReplyRule::Next(_) => {
                let i = usize::from(req);
                if self.fifo.len() <= i {
                    self.fifo.resize_with(i + 1, VecDeque::new);
                }
                self.fifo[i].push_back(at);
                if self.queued == MAX_PENDING {
                    // The oldest of this request's, not of all: close enough to the bound.
                    self.fifo[i].pop_front();
                    ctx.stats.request_unanswered(req, 1);
                } else {
                    self.queued += 1;
                }
                return;
            }
            ReplyRule::Echo => key(req, payload),
            ReplyRule::Correlate { sent, .. } => match sent.find(payload) {
                Some(v) => key(req, v),
                // Nothing to recognize its reply by.
                None => return ctx.stats.request_unanswered(req, 1),
            },
        };
        if let Some(old) = self.pending.insert(k, pack(req, at)) {
            // The same value is still awaited from an earlier send: that one will never be
            // told apart, count it as unanswered.
            ctx.stats.request_unanswered(unpack(old).0, 1);
        } else {
            self.order.push_back(k);
        }
        while self.pending.len() > MAX_PENDING {
            self.evict_oldest(ctx);
        }
    }

    /// Drops the oldest pending entry as unanswered.
    fn evict_oldest<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>) {
        while let Some(k) = self.order.pop_front() {
            if let Some(v) = self.pending.remove(&k) {
                ctx.stats.request_unanswered(unpack(v).0, 1);
                return;
            }
        }
    }

    /// Replies awaited longer than `reply_timeout` at `now` count as unanswered.
    pub(super) fn expire<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros) {
        let timeout = ctx.cfg.reply_timeout;
        if timeout == 0 {
            return;
        }
        while let Some(&k) = self.order.front() {
            match self.pending.get(&k).map(|&v| unpack(v)) {
                // Answered already.
                None => {}
                Some((_, at)) if at.saturating_add(timeout) > now => break,
                Some((req, _)) => {
                    self.pending.remove(&k);
                    ctx.stats.request_unanswered(req, 1);
                }
            }
            self.order.pop_front();
        }
        for (req, q) in self.fifo.iter_mut().enumerate() {
            while q
                .front()
                .is_some_and(|&at| at.saturating_add(timeout) <= now)
            {
                q.pop_front();
                self.queued -= 1;
                ctx.stats.request_unanswered(req as u16, 1);
            }
        }
        if self.pending.is_empty() {
            self.order.clear();
        }
    }

    /// Every reply still awaited is unanswered (the session ends).
    pub(super) fn account<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>) {
        for (_, v) in self.pending.drain() {
            ctx.stats.request_unanswered(unpack(v).0, 1);
        }
        for (req, q) in self.fifo.iter_mut().enumerate() {
            ctx.stats.request_unanswered(req as u16, q.len() as u64);
            q.clear();
        }
        self.queued = 0;
        self.order.clear();
    }

    /// A complete received message (its first [`INSPECT_MAX`] bytes): replies, checks and
    /// stream sequence. Returns whether it answered a request.
    pub(super) fn on_message<R: Recorder>(
        &mut self,
        ctx: &mut Ctx<'_, R>,
        now: Micros,
        msg: &[u8],
    ) -> bool {
        let answered = self.match_reply(ctx, now, msg);
        for (i, c) in ctx.cfg.checks.iter().enumerate() {
            if c.on.as_ref().is_none_or(|on| on.holds(msg)) {
                ctx.stats.check(i as u16, c.expect.holds(msg));
            }
        }
        if let Some(s) = &ctx.cfg.stream {
            self.track(ctx, s, msg);
        }
        answered
    }

    fn match_reply<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, now: Micros, msg: &[u8]) -> bool {
        if !self.pending.is_empty() {
            for (i, r) in ctx.cfg.requests.iter().enumerate() {
                if r.reply_on.as_ref().is_some_and(|on| !on.holds(msg)) {
                    continue;
                }
                let k = match &r.reply {
                    ReplyRule::Echo => key(i as u16, msg),
                    ReplyRule::Correlate { reply, .. } => match reply.find(msg) {
                        Some(v) => key(i as u16, v),
                        None => continue,
                    },
                    ReplyRule::None | ReplyRule::Next(_) => continue,
                };
                if let Some((req, at)) = self.pending.remove(&k).map(unpack) {
                    ctx.stats.request_answered(req, now.saturating_sub(at));
                    // Answered keys leave the front of the order at once, so the oldest
                    // pending one is always first (replies mostly come in order).
                    while let Some(k) = self.order.front() {
                        if self.pending.contains_key(k) {
                            break;
                        }
                        self.order.pop_front();
                    }
                    return true;
                }
            }
        }
        if self.queued == 0 {
            return false;
        }
        // The request waiting longest among those whose rule this message meets.
        let mut best: Option<(usize, Micros)> = None;
        for (i, q) in self.fifo.iter().enumerate() {
            let Some(&at) = q.front() else { continue };
            if best.is_some_and(|b| b.1 <= at) {
                continue;
            }
            let r = &ctx.cfg.requests[i];
            let fits = r.reply_on.as_ref().is_none_or(|on| on.holds(msg));
            if let (ReplyRule::Next(c), true) = (&r.reply, fits) {
                if c.holds(msg) {
                    best = Some((i, at));
                }
            }
        }
        let Some((i, at)) = best else {
            return false;
        };
        self.fifo[i].pop_front();
        self.queued -= 1;
        ctx.stats.request_answered(i as u16, now.saturating_sub(at));
        true
    }

    /// A stream message: in sequence, after a gap (the sequence numbers jumped over are
    /// `stream_skipped`), a duplicate, or late (after a later one; if it was jumped over, it
    /// is `stream_filled`: lost = skipped − filled).
    fn track<R: Recorder>(&mut self, ctx: &mut Ctx<'_, R>, s: &StreamRule, msg: &[u8]) {
        let Some(seq) = s
            .seq
            .find(msg)
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
        else {
            return;
        };
        let k = match &s.key {
            Some(p) => match p.find(msg) {
                Some(v) => Fnv::of(v),
                None => return,
            },
            None => 0,
        };
        let c = ctx.stats.counters();
        c.stream_msgs += 1;
        let i = match self.streams.binary_search_by_key(&k, |e| e.key) {
            Ok(i) => i,
            Err(i) => {
                if self.streams.len() >= MAX_STREAMS {
                    c.stream_keys_untracked += 1;
                    return;
                }
                // The first message of a stream sets where it starts.
                let t = Stream {
                    key: k,
                    first: seq,
                    last: seq,
                    seen: 1,
                };
                self.streams.insert(i, t);
                return;
            }
        };
        let t = &mut self.streams[i];
        if seq > t.last {
            let skipped = seq - t.last - 1;
            if skipped > 0 {
                c.stream_gaps += 1;
                c.stream_skipped += skipped;
            }
            let shift = seq - t.last;
            t.seen = if shift >= 64 {
                1
            } else {
                (t.seen << shift) | 1
            };
            t.last = seq;
            return;
        }
        let back = t.last - seq;
        if back < 64 && t.seen & (1 << back) != 0 {
            c.stream_duplicates += 1;
            return;
        }
        if back < 64 {
            t.seen |= 1 << back;
        }
        c.stream_late += 1;
        if seq > t.first {
            // Jumped over when a later one came: not lost after all.
            c.stream_filled += 1;
        }
    }
}

/// What a connection received of one stream.
#[derive(Debug, Clone, Copy)]
struct Stream {
    /// Hash of the stream's key.
    key: u64,
    /// The first sequence number received, the highest, and which of the 64 below the
    /// highest arrived (bit i: `last - i`).
    first: u64,
    last: u64,
    seen: u64,
}
