//! Per-shard statistics and their merge.
//!
//! Each shard owns one [`ShardStats`]: plain HDR histograms and counters, never shared or
//! locked. Once a second the shard hands a copy of what it gathered to the engine and resets;
//! the engine adds the intervals up (`Histogram::add`). Every histogram has the same bounds
//! (1 µs .. 60 s, 3 significant figures), so merges cannot fail, across shards, runs and nodes.

pub mod fanout;
pub mod find_max;
pub mod health;
pub mod named;
pub mod run;
pub mod targets;

use crate::proto::conn::{Failure, Recorder};
use crate::proto::tls::Negotiated;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// The counters and histograms a connection records; defined by the protocol core, which
/// measures them (see [`crate::proto::conn::Recorder`]).
pub use crate::proto::conn::{Counters, Hist};

/// Highest trackable latency: 60 s in µs. Larger values saturate to it.
pub const HIST_MAX_US: u64 = 60_000_000;
/// Significant figures kept by every histogram.
pub const HIST_SIGFIG: u8 = 3;

/// Formats `us` microseconds for people: `µs` below 1 ms, else `ms` or `s` with two decimals
/// (`1.25ms`).
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Distinct server error texts counted per run, at most (the rest count together).
pub const MAX_APP_ERRORS: usize = 32;
/// Characters of a server error text kept.
pub const APP_ERROR_CHARS: usize = 120;
/// Where error texts beyond [`MAX_APP_ERRORS`] are counted.
pub const OTHER_APP_ERRORS: &str = "(other texts)";

/// Builds an empty histogram with the crate-wide bounds.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid (1 ≤ low, high ≥ 2·low, sigfig ≤ 5).
    Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG)
        .unwrap_or_else(|_| unreachable!("valid constant bounds"))
}

/// An empty histogram with the crate-wide bounds, shared: what [`ShardStats::hist`] shows for
/// a histogram nothing was recorded in.
pub fn empty_histogram() -> &'static Histogram<u64> {
    static EMPTY: std::sync::OnceLock<Histogram<u64>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(new_histogram)
}

/// Everything one shard measured in one interval (or a merge of many).
#[derive(Debug, Clone)]
pub struct ShardStats {
    /// Latency histograms indexed like [`Hist::ALL`], each allocated when its first value is
    /// recorded (or merged in): a scenario pays only for what its connections measure.
    hists: [Option<Box<Histogram<u64>>>; Hist::ALL.len()],
    /// Event counts (attempts, sessions, messages, pings, bytes, TLS handshakes...), one field per
    /// counted event.
    pub counters: Counters,
    /// Failures by cause (connect and session).
    pub failures: BTreeMap<Failure, u64>,
    /// Close codes received from the server (1005 = close frame without code,
    /// 1006 = connection lost without a close frame).
    pub close_codes: BTreeMap<u16, u64>,
    /// Completed TLS handshakes by negotiated version, cipher suite and group.
    pub tls_params: BTreeMap<TlsParam, u64>,
    /// `--protocol`: the servers' error texts, counted (at most [`MAX_APP_ERRORS`] texts of
    /// at most [`APP_ERROR_CHARS`] characters; further texts count as [`OTHER_APP_ERRORS`]).
    pub app_errors: BTreeMap<String, u64>,
    /// Per target, in the run's target order (empty for a run with one target).
    pub targets: Vec<targets::TargetStats>,
    /// Fan-out publish log, subscriber sessions and per-message delivery times.
    pub fanout: fanout::FanoutStats,
    /// Named requests' replies and checks' verdicts.
    pub named: named::Named,
}

/// One negotiated TLS parameter (IANA numbers), for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsParam {
    /// A protocol version by its wire number (0x0303: TLS 1.2, 0x0304: TLS 1.3; 0 if unknown).
    Version(u16),
    /// A cipher suite by its IANA number (0x1301: TLS_AES_128_GCM_SHA256).
    Cipher(u16),
    /// Key-exchange group (0: resumed without one).
    Group(u16),
}

impl Default for ShardStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ShardStats {
    /// Statistics with nothing recorded: zero counters, empty maps, and no histogram allocated
    /// yet (each, once used, holds 17,408 `u64` counts: 136 KiB).
    pub fn new() -> Self {
        Self {
            hists: Default::default(),
            counters: Counters::default(),
            failures: BTreeMap::new(),
            close_codes: BTreeMap::new(),
            tls_params: BTreeMap::new(),
            app_errors: BTreeMap::new(),
            targets: Vec::new(),
            fanout: fanout::FanoutStats::default(),
            named: named::Named::default(),
        }
    }

    /// Statistics with nothing recorded, named after `cfg`'s requests and checks.
    pub fn for_config(cfg: &crate::proto::conn::ConnConfig) -> Self {
        Self {
            named: named::Named::for_config(cfg),
            ..Self::new()
        }
    }

    /// Records a latency in µs (saturating at [`HIST_MAX_US`]).
    #[inline]
    pub fn record(&mut self, h: Hist, us: u64) {
        self.hists[h as usize]
            .get_or_insert_with(|| Box::new(new_histogram()))
            .saturating_record(us.clamp(1, HIST_MAX_US));
    }

    /// The histogram for `h` (an empty one if nothing was recorded).
    pub fn hist(&self, h: Hist) -> &Histogram<u64> {
        self.hists[h as usize]
            .as_deref()
            .unwrap_or_else(|| empty_histogram())
    }

    /// Adds `other` (a histogram with the crate-wide bounds, e.g. read back from a result
    /// document) into histogram `h`.
    pub fn add_hist(&mut self, h: Hist, other: &Histogram<u64>) {
        if !other.is_empty() {
            named::add_hist(
                self.hists[h as usize].get_or_insert_with(|| Box::new(new_histogram())),
                other,
            );
        }
    }

    /// Counts one failure.
    pub fn fail(&mut self, f: Failure) {
        *self.failures.entry(f).or_insert(0) += 1;
    }

    /// Counts one received close code.
    pub fn close_code(&mut self, code: u16) {
        *self.close_codes.entry(code).or_insert(0) += 1;
    }

    /// Whether nothing at all was recorded: no count, failure, close code, TLS parameter,
    /// histogram value or fan-out entry.
    pub fn is_empty(&self) -> bool {
        self.counters == Counters::default()
            && self.failures.is_empty()
            && self.close_codes.is_empty()
            && self.app_errors.is_empty()
            && self.targets.iter().all(targets::TargetStats::is_empty)
            && self.tls_params.is_empty()
            && self.hists.iter().flatten().all(|h| h.is_empty())
            && self.fanout.is_empty()
    }

    /// Total failures of all causes.
    pub fn failure_total(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Self) {
        self.add_measures(other);
        if !other.fanout.is_empty() {
            self.fanout.add(&other.fanout);
        }
    }

    /// Adds `other`'s histograms, counters and maps into `self`, but not its fan-out log
    /// (which only the end of the run needs, and which grows with the run).
    pub fn add_measures(&mut self, other: &Self) {
        for (a, b) in self.hists.iter_mut().zip(&other.hists) {
            if let Some(b) = b.as_deref().filter(|b| !b.is_empty()) {
                named::add_hist(a.get_or_insert_with(|| Box::new(new_histogram())), b);
            }
        }
        self.named.add(&other.named);
        self.counters.add(&other.counters);
        for (k, v) in &other.failures {
            *self.failures.entry(*k).or_insert(0) += v;
        }
        for (k, v) in &other.close_codes {
            *self.close_codes.entry(*k).or_insert(0) += v;
        }
        for (k, v) in &other.tls_params {
            *self.tls_params.entry(*k).or_insert(0) += v;
        }
        for (k, v) in &other.app_errors {
            self.app_error_n(k, *v);
        }
        targets::add_all(&mut self.targets, &other.targets);
    }

    /// Moves the gathered interval out, leaving `self` empty with no histogram allocated.
    pub fn take_interval(&mut self) -> Self {
        let mut out = Self::new();
        // Histograms move out (the next value allocates a fresh one): nothing is copied, and
        // a scenario that measures nothing holds no histogram between seconds, however many
        // scenarios there are.
        for (o, h) in out.hists.iter_mut().zip(&mut self.hists) {
            *o = h.take();
        }
        out.counters = std::mem::take(&mut self.counters);
        out.failures = std::mem::take(&mut self.failures);
        out.close_codes = std::mem::take(&mut self.close_codes);
        out.tls_params = std::mem::take(&mut self.tls_params);
        out.app_errors = std::mem::take(&mut self.app_errors);
        out.targets = std::mem::take(&mut self.targets);
        out.fanout = self.fanout.take();
        out.named = self.named.clone();
        self.named.reset();
        out
    }

    /// Empties `self` and frees its histograms (a scenario idle from now on holds none).
    pub fn release(&mut self) {
        self.reset();
        self.hists = Default::default();
    }

    /// Empties `self`, keeping its allocations.
    pub fn reset(&mut self) {
        self.fanout.take();
        for h in self.hists.iter_mut().flatten() {
            h.reset();
        }
        self.counters = Counters::default();
        self.named.reset();
        self.failures.clear();
        self.close_codes.clear();
        self.tls_params.clear();
        self.app_errors.clear();
        self.targets.clear();
    }

    /// Target `t`'s measures (the list grows to hold it).
    pub fn target(&mut self, t: usize) -> &mut targets::TargetStats {
        if self.targets.len() <= t {
            self.targets.resize_with(t + 1, Default::default);
        }
        &mut self.targets[t]
    }

    /// Counts `n` of the server error text `text` (already cut to size), within the bound.
    pub fn app_error_n(&mut self, text: &str, n: u64) {
        let key = if self.app_errors.contains_key(text) || self.app_errors.len() < MAX_APP_ERRORS {
            text
        } else {
            OTHER_APP_ERRORS
        };
        *self.app_errors.entry(key.to_owned()).or_insert(0) += n;
    }
}

/// The shard's statistics are what its connections record into.
impl Recorder for ShardStats {
    #[inline]
    fn counters(&mut self) -> &mut Counters {
        &mut self.counters
    }

    #[inline]
    fn record(&mut self, hist: Hist, us: u64) {
        Self::record(self, hist, us);
    }

    #[inline]
    fn fail(&mut self, failure: Failure) {
        Self::fail(self, failure);
    }

    #[inline]
    fn close_code(&mut self, code: u16) {
        Self::close_code(self, code);
    }

    fn app_error(&mut self, text: &[u8]) {
        // Printable, one line, cut to size: a server's text reaches reports as it reads.
        let t: String = String::from_utf8_lossy(text)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(APP_ERROR_CHARS)
            .collect();
        self.app_error_n(t.trim(), 1);
    }

    fn tls_negotiated(&mut self, n: &Negotiated) {
        for p in [
            TlsParam::Version(n.version),
            TlsParam::Cipher(n.cipher),
            TlsParam::Group(n.group),
        ] {
            *self.tls_params.entry(p).or_insert(0) += 1;
        }
    }

    fn published(&mut self, channel: u32, publisher: u64, seq: u64, sent_unix_us: u64) {
        self.fanout.publish(channel, publisher, seq, sent_unix_us);
    }

    fn subscribed(&mut self, channel: u32, from_unix_us: u64, to_unix_us: u64) {
        self.fanout.session(channel, from_unix_us, to_unix_us);
    }

    fn delivered(&mut self, publisher: u64, seq: u64, latency_us: u64) {
        self.fanout.delivered(publisher, seq, latency_us);
    }

    fn request_sent(&mut self, req: u16) {
        self.counters.requests_sent += 1;
        self.named.request(req).sent += 1;
    }

    fn request_answered(&mut self, req: u16, us: u64) {
        self.counters.replies_received += 1;
        let r = self.named.request(req);
        r.answered += 1;
        r.latency.saturating_record(us.clamp(1, HIST_MAX_US));
    }

    fn request_unanswered(&mut self, req: u16, n: u64) {
        self.counters.replies_unanswered += n;
        self.named.request(req).unanswered += n;
    }

    fn request_unsent(&mut self, req: u16, n: u64) {
        self.counters.requests_unsent += n;
        self.named.request(req).unsent += n;
    }

    fn check(&mut self, check: u16, pass: bool) {
        let c = self.named.check(check);
        if pass {
            c.passed += 1;
            self.counters.checks_passed += 1;
        } else {
            c.failed += 1;
            self.counters.checks_failed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything_exactly() {
        let mut a = ShardStats::new();
        let mut b = ShardStats::new();
        a.record(Hist::WsMsgRtt, 100);
        b.record(Hist::WsMsgRtt, 300);
        b.record(Hist::WsMsgRtt, u64::MAX);
        a.counters.msgs_sent = 2;
        b.counters.msgs_sent = 3;
        a.fail(Failure::Refused);
        b.fail(Failure::Refused);
        b.close_code(1000);
        a.add(&b);
        assert_eq!(a.hist(Hist::WsMsgRtt).len(), 3);
        assert_eq!(
            a.hist(Hist::WsMsgRtt).max(),
            a.hist(Hist::WsMsgRtt).highest_equivalent(HIST_MAX_US)
        );
        assert_eq!(a.counters.msgs_sent, 5);
        assert_eq!(a.failures[&Failure::Refused], 2);
        assert_eq!(a.close_codes[&1000], 1);
        let taken = a.take_interval();
        assert_eq!(taken.counters.msgs_sent, 5);
        assert_eq!(a.counters.msgs_sent, 0);
        assert_eq!(a.hist(Hist::WsMsgRtt).len(), 0);
    }
}
