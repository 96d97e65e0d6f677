//! What the named parts of a scenario measured: each request's replies (`ws_reply{msg:NAME}`,
//! sent, answered, unanswered) and each check's passes and failures. Recorded by index on the
//! hot path (the request's or check's place in the scenario's config), merged by name.

use super::{new_histogram, HIST_MAX_US};
use crate::proto::conn::ConnConfig;
use hdrhistogram::Histogram;

/// One named request's replies.
#[derive(Debug, Clone)]
pub struct RequestStats {
    /// The request's name (`[[scenario.message]] name`).
    pub name: Box<str>,
    /// Intended send time → reply, µs.
    pub latency: Histogram<u64>,
    /// Sends.
    pub sent: u64,
    /// Sends answered by a reply.
    pub answered: u64,
    /// Sends never answered (timed out, or still awaited at the close).
    pub unanswered: u64,
    /// Sends planned but never made: the socket would not take them (send backlog).
    pub unsent: u64,
}

/// One check's verdicts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckStats {
    /// The check's name.
    pub name: Box<str>,
    /// Messages that satisfied it.
    pub passed: u64,
    /// Messages it applied to that did not.
    pub failed: u64,
}

/// The named requests' and checks' measurements of one shard interval, or of a merge.
#[derive(Debug, Clone, Default)]
pub struct Named {
    /// By request, in the scenario's order (a merge appends names it had not seen).
    pub requests: Vec<RequestStats>,
    /// By check, likewise.
    pub checks: Vec<CheckStats>,
}

impl RequestStats {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            latency: new_histogram(),
            sent: 0,
            answered: 0,
            unanswered: 0,
            unsent: 0,
        }
    }
}

impl Named {
    /// Empty measurements for `cfg`'s requests and checks.
    pub fn for_config(cfg: &ConnConfig) -> Self {
        Self {
            requests: cfg
                .requests
                .iter()
                .map(|r| RequestStats::new(&r.name))
                .collect(),
            checks: cfg
                .checks
                .iter()
                .map(|c| CheckStats {
                    name: c.name.clone(),
                    ..CheckStats::default()
                })
                .collect(),
        }
    }

    /// Request `i` (grown, unnamed, for a recorder made without a config).
    pub fn request(&mut self, i: u16) -> &mut RequestStats {
        let i = usize::from(i);
        while self.requests.len() <= i {
            self.requests.push(RequestStats::new(""));
        }
        &mut self.requests[i]
    }

    /// Check `i` (grown likewise).
    pub fn check(&mut self, i: u16) -> &mut CheckStats {
        let i = usize::from(i);
        if self.checks.len() <= i {
            self.checks.resize_with(i + 1, CheckStats::default);
        }
        &mut self.checks[i]
    }

    /// The request named `name`.
    pub fn request_named(&self, name: &str) -> Option<&RequestStats> {
        self.requests.iter().find(|r| &*r.name == name)
    }

    /// The check named `name`.
    pub fn check_named(&self, name: &str) -> Option<&CheckStats> {
        self.checks.iter().find(|c| &*c.name == name)
    }

    /// Every request's replies in one histogram (`ws_reply` without a tag).
    pub fn all_replies(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        for r in &self.requests {
            add_hist(&mut h, &r.latency);
        }
        h
    }

    /// Adds `other` into `self`, request by request and check by check, by name.
    pub fn add(&mut self, other: &Self) {
        for r in &other.requests {
            let mine = match self.requests.iter().position(|m| m.name == r.name) {
                Some(i) => &mut self.requests[i],
                None => {
                    self.requests.push(RequestStats::new(&r.name));
                    self.requests.last_mut().unwrap_or_else(|| unreachable!())
                }
            };
            add_hist(&mut mine.latency, &r.latency);
            mine.sent += r.sent;
            mine.answered += r.answered;
            mine.unanswered += r.unanswered;
            mine.unsent += r.unsent;
        }
        for c in &other.checks {
            match self.checks.iter_mut().find(|m| m.name == c.name) {
                Some(m) => {
                    m.passed += c.passed;
                    m.failed += c.failed;
                }
                None => self.checks.push(c.clone()),
            }
        }
    }

    /// Zero counts, empty histograms; the names stay.
    pub fn reset(&mut self) {
        for r in &mut self.requests {
            r.latency.reset();
            r.sent = 0;
            r.answered = 0;
            r.unanswered = 0;
            r.unsent = 0;
        }
        for c in &mut self.checks {
            c.passed = 0;
            c.failed = 0;
        }
    }
}

/// `b` into `a` (same bounds everywhere, so this cannot fail; saturate defensively anyway).
pub fn add_hist(a: &mut Histogram<u64>, b: &Histogram<u64>) {
    if a.add(b).is_err() {
        for v in b.iter_recorded() {
            a.saturating_record_n(v.value_iterated_to().min(HIST_MAX_US), v.count_at_value());
        }
    }
}
