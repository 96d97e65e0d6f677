//! The live progress line on stderr, once a second: open sessions, rates and p99 latencies
//! (handshake rates in handshake mode). On a terminal it rewrites one line.

use super::p99;
use crate::metrics::run::{Observer, Tick};
use crate::metrics::Hist;
use std::io::Write;

/// The live progress line on stderr.
pub struct Progress {
    quiet: bool,
    tty: bool,
    /// Handshake mode: handshake rates instead of open sessions and messages.
    cycles: bool,
}

impl Progress {
    /// A progress line; `cycles`: handshake mode (handshake rates instead of sessions).
    pub fn new(quiet: bool, cycles: bool) -> Self {
        Self {
            quiet,
            cycles,
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    fn line(&self, tick: &Tick<'_>) {
        let Tick {
            t,
            open,
            target,
            second,
            total,
        } = *tick;
        if self.quiet {
            return;
        }
        let p99 = |h: Hist| p99(second, h);
        let c = &second.counters;
        let errors = total.failure_total() + second.failure_total();
        let line = if self.cycles {
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
            format!(
            "[{t:6.1}s] open {open}/{target}  conn/s {}  msgs/s {}/{}  p99 connect {}  rtt {}  ping {}  errors {}",
            c.established,
            c.msgs_sent,
            c.msgs_received,
            p99(Hist::WsConnecting),
            p99(Hist::WsMsgRtt),
            p99(Hist::WsPing),
            errors,
        )
        };
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
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
