//! The live Prometheus/OpenMetrics endpoint (`--metrics-listen ADDR`): `GET /metrics` while
//! the run goes on.
//!
//! The model: the engine's collecting thread merges the shards' intervals once a second and
//! tells its observers ([`crate::metrics::run::Observer`]); the [`LiveObserver`] adds that
//! second to a prometheus-client registry held under one mutex. A small HTTP thread
//! (`http.rs`) encodes the registry under the same mutex for each scrape. Only these two
//! threads touch it, never a shard: a scrape reads the last merged second and cannot slow
//! the connections down, and it sees whole seconds only (no half-updated counters).
//!
//! Counters end equal to the result document's: the observer is also told the shards' final
//! part-second, after which `sockstorm_run_finished` is 1. The endpoint then serves the
//! final figures until the process exits, and `--metrics-linger` keeps the process waiting
//! for one scrape of them (at most that long), so that Prometheus sees the end of a run
//! whose pod is about to go away.
//!
//! Latencies are histograms with fixed buckets ([`buckets`]), the same in every pod. Not
//! exported yet: per-shard CPU (the engine does not measure it per shard).

pub mod buckets;
mod http;
mod metrics;

use crate::metrics::run::{Observer, Tick};
use crate::plan::Run;
use metrics::Metrics;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The address cannot be listened on: in use by another process (another run's endpoint,
    /// a Prometheus exporter), not an address of this host, or a port below 1024 without the
    /// privilege. Fix: give another port, or port 0 to pick a free one.
    #[error("--metrics-listen {addr}: cannot listen there ({source}); give another port (e.g. {port_hint}), or port 0 to pick a free one")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// A nearby address to suggest.
        port_hint: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The HTTP thread could not be started (out of threads or memory). Fix: lower the load
    /// on the host, or run without `--metrics-listen`.
    #[error("--metrics-listen: cannot start the HTTP thread: {0}")]
    Thread(std::io::Error),
}

/// What the observer and the HTTP thread share.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a scrape served the final figures.
    scraped: Condvar,
}

/// The registry, and whether the final figures are in and were served.
struct State {
    metrics: Metrics,
    finished: bool,
    final_scrapes: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves whole seconds in the registry: keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running endpoint: its address and the observer that feeds it.
pub struct Live {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl Live {
    /// Binds `addr` and starts serving (before the run starts, so that an address in use
    /// fails at once); the endpoint shows `run`'s scenarios, at zero until the first tick.
    pub fn start(run: &Run, addr: SocketAddr) -> Result<Self, LiveError> {
        let listener = TcpListener::bind(addr).map_err(|source| LiveError::Bind {
            addr,
            port_hint: SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1024)),
            source,
        })?;
        let bound = listener.local_addr().unwrap_or(addr);
        let names = run.scenarios.iter().map(|p| p.name.clone()).collect();
        let targets: Vec<u64> = run.scenarios.iter().map(|p| p.connections).collect();
        let segment = run
            .main()
            .segment
            .map(|s| format!("{}/{}", s.index, s.count));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                metrics: Metrics::new(names, &targets, segment),
                finished: false,
                final_scrapes: 0,
            }),
            scraped: Condvar::new(),
        });
        let serving = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || http::serve(&listener, &serving))
            .map_err(LiveError::Thread)?;
        Ok(Self {
            shared,
            addr: bound,
        })
    }

    /// The address the endpoint listens on (the port chosen when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The observer that feeds the endpoint from the engine's collecting thread.
    pub fn observer(&self) -> LiveObserver {
        LiveObserver {
            shared: Arc::clone(&self.shared),
        }
    }

    /// After the run: waits until a scrape has read the final figures, at most `limit`
    /// (zero: not at all) and until `stop` says so (a signal); whether one did.
    pub fn linger(&self, limit: Duration, stop: &dyn Fn() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut state = self.shared.lock();
        while state.final_scrapes == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stop() {
                return false;
            }
            let slice = left.min(Duration::from_millis(100));
            state = match self.shared.scraped.wait_timeout(state, slice) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

/// Feeds each merged second to the endpoint (see the module doc).
pub struct LiveObserver {
    shared: Arc<Shared>,
}

impl Observer for LiveObserver {
    fn tick(&mut self, tick: &Tick<'_>) {
        self.shared.lock().metrics.add(tick);
    }

    fn finish(&mut self) {
        // The last tick (the shards' final reports) came before: the figures are final.
        let mut state = self.shared.lock();
        state.metrics.finish();
        state.finished = true;
    }
}

/// The warning for an endpoint address other hosts can reach; `None` for loopback.
pub fn exposure_warning(addr: SocketAddr) -> Option<String> {
    exposed(
        "--metrics-listen",
        addr,
        "the endpoint has no authentication and shows the run's scenarios and figures: use 127.0.0.1 unless Prometheus scrapes from another host",
    )
}

/// The warning for a listener (`flag` at `addr`) that other hosts can reach, `what` saying
/// what it exposes and the fix; `None` on loopback.
pub fn exposed(flag: &str, addr: SocketAddr, what: &str) -> Option<String> {
    let ip = addr.ip();
    if ip.is_loopback() {
        return None;
    }
    let reach = if ip.is_unspecified() {
        "every network interface of this host"
    } else {
        "the network"
    };
    Some(format!(
        "warning: {flag} {addr} accepts connections from {reach}; {what}"
    ))
}
