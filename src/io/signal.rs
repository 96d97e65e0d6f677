//! Termination signals: SIGINT (Ctrl-C), SIGTERM (`docker stop`, systemd, Kubernetes) and
//! SIGHUP (the terminal went away) all reach one handler, so each stops a run the same way
//! and none kills the process with its results unwritten.
//!
//! The handler runs in signal context: it only calls the function given to [`install`],
//! which must do nothing but atomic operations (no allocation, no locks, no I/O).

use std::io;
use std::sync::OnceLock;

/// A termination signal [`install`] handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP (1): the controlling terminal closed.
    Hangup,
    /// SIGINT (2): Ctrl-C.
    Interrupt,
    /// SIGTERM (15): a polite request to stop (`kill`, `docker stop`, systemd, Kubernetes).
    Terminate,
}

impl Signal {
    /// Every signal [`install`] handles.
    pub const ALL: [Self; 3] = [Self::Hangup, Self::Interrupt, Self::Terminate];

    /// The signal's number on Linux (1, 2, 15); a process it ends exits with 128 + this.
    pub fn number(self) -> i32 {
        match self {
            Self::Hangup => libc::SIGHUP,
            Self::Interrupt => libc::SIGINT,
            Self::Terminate => libc::SIGTERM,
        }
    }

    /// The signal's name, e.g. `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hangup => "SIGHUP",
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        }
    }

    /// The signal with this number, if it is one [`install`] handles.
    pub fn from_number(n: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.number() == n)
    }
}

/// The function the handler calls; set once by [`install`].
static HANDLER: OnceLock<fn(Signal)> = OnceLock::new();

extern "C" fn on_signal(sig: libc::c_int) {
    // `OnceLock::get` is a single atomic load: safe in signal context.
    if let (Some(f), Some(s)) = (HANDLER.get(), Signal::from_number(sig)) {
        f(s);
    }
}

/// Routes SIGINT, SIGTERM and SIGHUP to `handler` (system calls they interrupt are restarted).
/// `handler` runs in signal context: atomic operations only. A second call keeps the first
/// handler.
pub fn install(handler: fn(Signal)) -> io::Result<()> {
    let _ = HANDLER.set(handler);
    for s in Signal::ALL {
        // SAFETY: an all-zero sigaction is a valid value (empty mask, no flags) that is then
        // filled in; `on_signal` has the `extern "C" fn(c_int)` signature sa_sigaction needs
        // without SA_SIGINFO, and only does an atomic load and calls a function that does
        // atomic operations (async-signal-safe). sigaction only reads `act`.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(s.number(), &act, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names() {
        assert_eq!(Signal::Interrupt.number(), 2);
        assert_eq!(Signal::Terminate.number(), 15);
        assert_eq!(Signal::Hangup.number(), 1);
        assert_eq!(Signal::from_number(15), Some(Signal::Terminate));
        assert_eq!(Signal::from_number(9), None);
        assert_eq!(Signal::Hangup.name(), "SIGHUP");
    }
}
