//! The per-shard TLS session store that makes resumption work at storm scale: TLS 1.3 tickets
//! kept by the hundred, the TLS 1.2 session shared, and the view forced-full handshakes get.

use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// A shard's session store. Only its shard's thread uses it, so the lock is never contended;
/// rustls' trait asks for `Sync` because configurations may be shared across threads.
///
/// TLS 1.3 tickets are single-use: the store keeps up to `capacity` of them (rustls' default
/// cache keeps 8 per server, which a burst of new connections exhausts at once) and hands out
/// the newest first. The TLS 1.2 session is reusable and shared by every connection. The run
/// has one target, so entries are not keyed by server name.
pub struct SessionStore {
    inner: Mutex<StoreInner>,
    capacity: usize,
    /// Sessions handed to a ClientHello.
    pub(super) taken: AtomicU64,
    /// TLS 1.3 tickets received.
    pub(super) inserted: AtomicU64,
}

#[derive(Default)]
struct StoreInner {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

impl SessionStore {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(StoreInner::default()),
            capacity: capacity.max(1),
            taken: AtomicU64::new(0),
            inserted: AtomicU64::new(0),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut StoreInner) -> R) -> R {
        // A panic while holding the lock cannot leave the store inconsistent; go on.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.with(|s| s.tls13.len());
        write!(f, "SessionStore({n} TLS 1.3 tickets of {})", self.capacity)
    }
}

impl ClientSessionStore for SessionStore {
    fn set_kx_hint(&self, _: ServerName<'static>, group: NamedGroup) {
        self.with(|s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(|s| s.kx_hint)
    }

    fn set_tls12_session(&self, _: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with(|s| s.tls12 = Some(value));
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        let v = self.with(|s| s.tls12.clone());
        if v.is_some() {
            self.taken.fetch_add(1, Relaxed);
        }
        v
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {
        self.with(|s| s.tls12 = None);
    }

    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.inserted.fetch_add(1, Relaxed);
        let cap = self.capacity;
        self.with(|s| {
            if s.tls13.len() >= cap {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        let v = self.with(|s| s.tls13.pop_back());
        if v.is_some() {
            self.taken.fetch_add(1, Relaxed);
        }
        v
    }
}

/// The store as seen by forced-full handshakes: they add what they receive, take nothing.
#[derive(Debug)]
pub(super) struct FullOnly(pub(super) Arc<SessionStore>);

impl ClientSessionStore for FullOnly {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.0.set_kx_hint(name, group);
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.0.kx_hint(name)
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.0.set_tls12_session(name, value);
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.0.insert_tls13_ticket(name, value);
    }

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        None
    }
}
