//! What a connection tells its driver: [`Event`]s, polled with [`Conn::poll_event`] after every
//! call that fed it something, as quinn-proto's `Connection::poll` hands out its events.
//!
//! The queue is two bits in the connection (a session opens at most once and ends once, in that
//! order), in the byte that also says whether it opened and whether a storm took it, so
//! reporting costs no memory per connection and never allocates. An ending is read
//! from the finished connection when it is polled: nothing about it changes once it is done,
//! except a session handed over with [`Conn::resume_from`], which it then carries on.

use super::{Conn, Outcome};

/// Something that happened to a connection that its driver acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The WebSocket session opened (a valid 101 arrived): the connection counts as open.
    SessionOpened,
    /// The connection is finished: close its socket (with RST if the driver chose so) and drop
    /// it. Always the last event, reported once.
    Ended(Ending),
}

/// How a finished connection ended: what a driver needs to account for it and to replace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// How it ended: stopped by us, closed by the server (with its code), failed (with the cause),
    /// a completed handshake cycle, or dropped by a storm.
    pub outcome: Outcome,
    /// Whether it ever reached Open (it was counted as open, and no longer is).
    pub established: bool,
    /// A reconnect storm took it ([`Conn::storm_drop`]); its replacement is part of the storm.
    pub storm_dropped: bool,
    /// The highest `seq` its replacement resumes from (`on_reconnect`'s `{{last_seq}}`), when
    /// it had a session, or was itself resuming one and failed before its own opened.
    pub resume: Option<u64>,
}

// Bits of `Conn::marks`.
/// The session reached Open.
pub(super) const OPENED: u8 = 1;
/// A reconnect storm took the session.
pub(super) const STORM_DROPPED: u8 = 2;
/// [`Event::SessionOpened`] not yet polled.
pub(super) const EV_OPENED: u8 = 4;
/// [`Event::Ended`] not yet polled.
pub(super) const EV_ENDED: u8 = 8;

impl Conn {
    /// The next event, if any; call until `None` after every `handle_*`, `poll_transmit`,
    /// `stop`, `abort` or `storm_drop`. [`Event::SessionOpened`] comes before the
    /// [`Event::Ended`] of the same connection, even when both happened in one call.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.marks & EV_OPENED != 0 {
            self.marks &= !EV_OPENED;
            return Some(Event::SessionOpened);
        }
        if self.marks & EV_ENDED != 0 {
            self.marks &= !EV_ENDED;
            return Some(Event::Ended(self.ending()));
        }
        None
    }

    /// The ending of a finished connection.
    fn ending(&self) -> Ending {
        let established = self.marks & OPENED != 0;
        Ending {
            // Every path to Done sets an outcome; a close we began ends as Stopped otherwise.
            outcome: self.outcome.unwrap_or(Outcome::Stopped),
            established,
            storm_dropped: self.marks & STORM_DROPPED != 0,
            resume: (established || self.resuming).then_some(self.last_seq),
        }
    }
}
