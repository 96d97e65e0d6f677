//! Capacity caps for tests and demos (`serve --max-connections`, `--max-accept-rate`,
//! `--max-msg-rate`): a gateway with a known limit, for `find-max` to find. Beyond the cap of
//! open WebSockets, upgrades are answered 503; beyond the accept rate, the listener is left
//! alone so its backlog fills and connects time out; beyond the message rate, connections are
//! not read until the rate allows, so echoes wait in the sockets and their latency grows
//! (nothing is buffered or dropped).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub(super) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket of `rate`/s (> 0) holding 10 ms worth, at least one token.
    pub(super) fn new(rate: f64) -> Self {
        let burst = (rate / 100.0).max(1.0);
        Self {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        // Callers pass instants taken at different moments: time only moves forward here, or
        // an earlier one would count the same interval twice.
        if now <= self.at {
            return;
        }
        let dt = (now - self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = now;
    }

    /// Whether a token is there now (without taking it).
    pub(super) fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Takes a token (the balance may go below zero once: it is paid back before the next).
    pub(super) fn take(&mut self) {
        self.tokens -= 1.0;
    }

    /// When the next token will be there.
    pub(super) fn next(&self, now: Instant) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        now + Duration::from_secs_f64(missing / self.rate)
    }
}

/// The gateway-wide cap on open WebSockets (`--max-connections`).
#[derive(Debug)]
pub(super) struct ConnCap {
    /// Open WebSockets at most.
    max: u64,
    /// Open now, all threads.
    open: AtomicU64,
    /// The answer to an upgrade over the cap: 503.
    pub(super) answer: Arc<[u8]>,
}

impl ConnCap {
    pub(super) fn new(max: u64) -> Self {
        Self {
            max,
            open: AtomicU64::new(0),
            answer: super::request::reject_response(503).into(),
        }
    }

    /// Whether the cap is reached: a new upgrade is refused. Checked when the request is read
    /// and counted when the connection opens, so with several threads a few upgrades in
    /// flight at once may pass it (with one, the default, none).
    pub(super) fn full(&self) -> bool {
        self.open.load(Relaxed) >= self.max
    }

    pub(super) fn opened(&self) {
        self.open.fetch_add(1, Relaxed);
    }

    pub(super) fn closed(&self, n: u64) {
        self.open.fetch_sub(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_rate_and_no_more() {
        let mut b = Bucket::new(1000.0);
        let t0 = b.at;
        let mut taken = 0;
        // 100 ms in 1 ms steps: 10 saved up at the start, then one per ms.
        for ms in 0..=100 {
            let now = t0 + Duration::from_millis(ms);
            while b.ready(now) {
                b.take();
                taken += 1;
            }
        }
        assert_eq!(taken, 10 + 100);
        let now = t0 + Duration::from_millis(100);
        let next = b.next(now);
        assert!(
            next > now && next <= now + Duration::from_millis(1),
            "{next:?}"
        );
    }

    #[test]
    fn the_connection_cap_counts_opens_and_closes() {
        let c = ConnCap::new(2);
        assert!(!c.full());
        c.opened();
        c.opened();
        assert!(c.full());
        c.closed(1);
        assert!(!c.full());
        assert!(c.answer.starts_with(b"HTTP/1.1 503 "));
    }
}
