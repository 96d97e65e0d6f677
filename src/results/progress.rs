//! The live progress line on stderr, once a second: open sessions, rates and p99 latencies
//! (handshake rates in handshake mode). On a terminal it rewrites one line.

use super::p99;
use crate::metrics::health::SATURATED_PCT;
use crate::metrics::run::{Observer, Tick};
use crate::metrics::{fmt_us, Hist};
use std::io::Write;

/// The live progress line on stderr.
pub struct Progress {
    quiet: bool,
    tty: bool,
    /// Handshake mode: handshake rates instead of open sessions and messages.
    cycles: bool,
    /// The saturation warning was shown (once per run).
    warned: bool,
}

impl Progress {
    /// A progress line; `cycles`: handshake mode (handshake rates instead of sessions).
    pub fn new(quiet: bool, cycles: bool) -> Self {
        Self {
            quiet,
            cycles,
            warned: false,
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    fn line(&mut self, tick: &Tick<'_>) {
        if self.quiet {
            return;
        }
        let line = self.text(tick);
        let mut err = std::io::stderr().lock();
        if let Some(w) = self.saturation(tick) {
            let _ = writeln!(err, "{}{w}", if self.tty { "\r\x1b[2K" } else { "" });
        }
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// The warning, the first time a shard spent a whole second at ≥ 95 % CPU.
    fn saturation(&mut self, tick: &Tick<'_>) -> Option<String> {
        if self.warned {
            return None;
        }
        let (k, pct) = tick
            .shard_busy_pct
            .iter()
            .enumerate()
            .filter_map(|(k, p)| p.map(|p| (k, p)))
            .find(|(_, p)| *p >= SATURATED_PCT)?;
        self.warned = true;
        Some(format!(
            "sockstorm: WARNING at {:.0}s shard {k} was busy {pct:.0} % of the last second: the client is saturated, \
             so latencies from here on measure it as much as the target (see the generator verdict)",
            tick.t
        ))
    }

    /// The line for `tick`. Sessions: messages per second sent (echoed ones, named requests and a publisher's),
    /// answered (echoes and replies), and pushed (received without answering one of ours: pushes, acks, fan-out
    /// deliveries), then p99s, with the one-way latency (`--latency-from`, fan-out) in a
    /// second that measured one.
    fn text(&self, tick: &Tick<'_>) -> String {
        let Tick {
            t,
            open,
            target,
            second,
            total,
            ..
        } = *tick;
        let p99 = |h: Hist| p99(second, h);
        let c = &second.counters;
        let errors = total.failure_total() + second.failure_total();
        if self.cycles {
            let tls = c.tls_handshakes_full + c.tls_handshakes_resumed;
            format!(
                "[{t:6.1}s] handshakes/s {}  resumed {}%  p99 full {}  resumed {}  errors {errors}",
                c.handshake_cycles,
                (c.tls_handshakes_resumed * 100)
                    .checked_div(tls)
                    .unwrap_or(0),
                p99(Hist::TlsFull),
                p99(Hist::TlsResumed),
            )
        } else {
            let latency = if second.hist(Hist::WsMsgLatency).is_empty() {
                String::new()
            } else {
                format!("  latency {}", p99(Hist::WsMsgLatency))
            };
            // Named requests count as sent, their replies as answered (with the echoes), and
            // their reply latency shows in a second that had replies.
            let replies = second.named.all_replies();
            let reply = if replies.is_empty() {
                String::new()
            } else {
                format!("  reply {}", fmt_us(replies.value_at_quantile(0.99)))
            };
            format!(
                "[{t:6.1}s] open {open}/{target}  conn/s {}  msgs/s sent {} answered {} pushed {}  p99 connect {}  rtt {}{reply}{latency}  ping {}  errors {}",
                c.established,
                c.msgs_sent + c.fanout_published + c.requests_sent,
                c.msgs_received + c.replies_received,
                c.msgs_pushed,
                p99(Hist::WsConnecting),
                p99(Hist::WsMsgRtt),
                p99(Hist::WsPing),
                errors,
            )
        }
    }

    fn finish(&self) {
        if self.tty && !self.quiet {
            eprintln!();
        }
    }
}

impl Observer for Progress {
    fn tick(&mut self, tick: &Tick<'_>) {
        self.line(tick);
    }

    fn finish(&mut self) {
        Progress::finish(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ShardStats;

    #[test]
    fn a_push_only_second_shows_its_messages_and_latency() {
        let mut second = ShardStats::new();
        second.counters.msgs_pushed = 1200;
        for us in 1..=100 {
            second.record(Hist::WsMsgLatency, us * 100);
        }
        let total = ShardStats::new();
        let tick = Tick {
            t: 3.0,
            open: 200,
            target: 200,
            second: &second,
            total: &total,
            shard_busy_pct: &[],
            scenarios: &[],
        };
        let line = Progress::new(true, false).text(&tick);
        assert!(
            line.contains("msgs/s sent 0 answered 0 pushed 1200"),
            "{line}"
        );
        assert!(line.contains("latency 9.90ms"), "{line}");
        // An echo second without one-way latency shows no latency column.
        let mut echo = ShardStats::new();
        echo.counters.msgs_sent = 10;
        echo.counters.msgs_received = 9;
        let tick = Tick {
            second: &echo,
            ..tick
        };
        let line = Progress::new(true, false).text(&tick);
        assert!(
            line.contains("msgs/s sent 10 answered 9 pushed 0"),
            "{line}"
        );
        assert!(!line.contains("latency"), "{line}");
    }
}
