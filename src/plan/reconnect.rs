//! When lost connections come back: the reconnect policy (`--reconnect-policy`) and the
//! reconnect storm (`--storm-at`, `--storm-fraction`, `--storm-close`).

use crate::proto::conn::Micros;
use crate::proto::rng::Rng;
use std::time::Duration;

/// How a lost connection (failed, closed by the server, dropped by a storm) is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Queued behind the connect schedule, at `--connect-rate` (the default).
    Rate,
    /// At once, whatever the connect rate.
    Immediate,
    /// After this many µs (`fixed:DUR`), outside the connect schedule.
    Fixed(Micros),
    /// After `base · 2^attempt`, capped at `max`, with jitter.
    Exponential {
        /// `BASE`, µs (> 0): full jitter draws the first retry's delay up to it, and the cap
        /// doubles with each further attempt; decorrelated jitter never waits less.
        base: Micros,
        /// `MAX`, µs (≥ `base`): no delay is longer.
        max: Micros,
        /// How the delay is drawn within its bounds (`full`, the default, or `decorrelated`).
        jitter: Jitter,
    },
}

/// Jitter of exponential backoff (AWS architecture blog's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, min(max, base · 2^attempt)]`.
    Full,
    /// Uniform in `[base, min(max, 3 · previous delay)]`.
    Decorrelated,
}

impl Policy {
    /// Parses `rate`, `immediate`, `fixed:DUR` or `exponential:BASE:MAX[:full|decorrelated]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let dur = |d: &str| -> Result<Micros, String> {
            crate::plan::parse::duration(d).map(|d: Duration| d.as_micros() as Micros)
        };
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["rate"] => Ok(Self::Rate),
            ["immediate"] => Ok(Self::Immediate),
            ["fixed", d] => Ok(Self::Fixed(dur(d)?)),
            ["exponential", base, max, rest @ ..] => {
                let (base, max) = (dur(base)?, dur(max)?);
                if base == 0 || max < base {
                    return Err(format!("`{s}`: need 0 < BASE <= MAX"));
                }
                let jitter = match rest {
                    [] | ["full"] => Jitter::Full,
                    ["decorrelated"] => Jitter::Decorrelated,
                    _ => return Err(format!("`{s}`: jitter is `full` or `decorrelated`")),
                };
                Ok(Self::Exponential { base, max, jitter })
            }
            _ => Err(format!(
                "`{s}`: expected rate, immediate, fixed:DUR or exponential:BASE:MAX[:full|decorrelated]"
            )),
        }
    }

    /// Delay before retry number `attempt` (0 = first) after a delay of `prev`; `None` for
    /// [`Policy::Rate`], whose retries wait in the connect schedule instead.
    pub fn delay(&self, attempt: u32, prev: Micros, rng: &mut Rng) -> Option<Micros> {
        match *self {
            Self::Rate => None,
            Self::Immediate => Some(0),
            Self::Fixed(d) => Some(d),
            Self::Exponential { base, max, jitter } => Some(match jitter {
                Jitter::Full => {
                    let cap = base.saturating_mul(1 << attempt.min(32)).min(max);
                    rng.below(cap + 1)
                }
                Jitter::Decorrelated => {
                    // The first retry has no previous delay: start from `base`, jittered.
                    let hi = prev.max(base).saturating_mul(3).clamp(base, max);
                    base + rng.below(hi - base + 1)
                }
            }),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = |us: Micros| crate::metrics::fmt_us(us);
        match *self {
            Self::Rate => f.write_str("rate"),
            Self::Immediate => f.write_str("immediate"),
            Self::Fixed(us) => write!(f, "fixed:{}", d(us)),
            Self::Exponential { base, max, jitter } => write!(
                f,
                "exponential:{}:{}:{}",
                d(base),
                d(max),
                match jitter {
                    Jitter::Full => "full",
                    Jitter::Decorrelated => "decorrelated",
                }
            ),
        }
    }
}

/// Drop a share of the open sessions at once, then let the policy bring them back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Storm {
    /// When the first storm comes, µs from the run's start (`--storm-at`, within the run).
    pub at: Micros,
    /// Share of the open sessions each storm drops, in (0, 1] (`--storm-fraction`, default 0.5).
    pub fraction: f64,
    /// RST (abrupt, no close frame) rather than a close handshake.
    pub rst: bool,
    /// Repeat every this long after the first, µs (0: once).
    pub every: Micros,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Micros = 1000;

    #[test]
    fn policies_parse_and_bound_their_delays() {
        assert_eq!(Policy::parse("rate"), Ok(Policy::Rate));
        assert_eq!(Policy::parse("fixed:250ms"), Ok(Policy::Fixed(250 * MS)));
        assert_eq!(
            Policy::parse("exponential:100ms:5s").unwrap().to_string(),
            "exponential:100.00ms:5.00s:full"
        );
        let exp = Policy::parse("exponential:100ms:5s").unwrap();
        let dec = Policy::parse("exponential:100ms:5s:decorrelated").unwrap();
        assert!(Policy::parse("exponential:5s:100ms")
            .unwrap_err()
            .contains("BASE <= MAX"));
        assert!(Policy::parse("sometimes")
            .unwrap_err()
            .contains("expected rate"));
        let mut rng = Rng::new(3);
        assert_eq!(Policy::Rate.delay(0, 0, &mut rng), None);
        assert_eq!(Policy::Immediate.delay(7, 0, &mut rng), Some(0));
        for attempt in 0..40 {
            let cap = ((100 * MS) << attempt.min(20)).min(5000 * MS);
            for _ in 0..200 {
                let d = exp.delay(attempt, 0, &mut rng).unwrap();
                assert!(d <= cap, "attempt {attempt}: {d} > {cap}");
                let prev = rng.below(5000 * MS);
                let d = dec.delay(attempt, prev, &mut rng).unwrap();
                assert!(
                    (100 * MS..=(prev.max(100 * MS) * 3).clamp(100 * MS, 5000 * MS)).contains(&d)
                );
            }
        }
        // Both jitters spread the first retries of 1,000 connections.
        let first: std::collections::BTreeSet<_> = (0..1000)
            .map(|_| dec.delay(0, 0, &mut rng).unwrap() / MS)
            .collect();
        assert!(first.len() > 50);
        // Full jitter spreads: the first retries of 1,000 connections are not all alike.
        let first: std::collections::BTreeSet<_> = (0..1000)
            .map(|_| exp.delay(0, 0, &mut rng).unwrap() / MS)
            .collect();
        assert!(first.len() > 50);
    }
}
