//! Per-connection auth (`--auth-per-connection`): a background thread makes one auth request
//! per connection at a bounded rate and hands each token to a shard, whose next opening
//! carries it in its upgrade request. The thread is the only place that blocks on HTTP; the
//! shards only take ready tokens from their channel (openings wait, and that wait shows as
//! connect-schedule lag). Tokens never reach reports or logs: only counts, causes, latencies.

use crate::metrics::run::AuthStats;
use crate::plan::AuthPool;
use crate::proto::rng::Rng;
use crate::proto::template::Vars;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A running auth thread: its statistics so far and the flag that stops it.
#[derive(Debug)]
pub struct AuthWorker {
    /// What the thread has done so far (requests, tokens, failures by cause, latency), updated as
    /// each request is sent and answered; [`AuthWorker::finish`] takes a copy.
    pub stats: Arc<Mutex<AuthStats>>,
    stop: Arc<AtomicBool>,
}

impl AuthWorker {
    /// Stops making requests (a request in flight ends by its timeout) and returns the
    /// statistics gathered; a request still unanswered counts as `auth_unanswered`.
    pub fn finish(&self) -> AuthStats {
        self.stop.store(true, Ordering::SeqCst);
        let mut s = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        if s.in_flight {
            *s.failures.entry("auth_unanswered".into()).or_insert(0) += 1;
            s.first_error.get_or_insert_with(|| {
                "an auth request was still unanswered at the end (is the auth server hung?)".into()
            });
        }
        s
    }
}

impl Drop for AuthWorker {
    fn drop(&mut self) {
        // Whatever ended the run (an error included), no more requests.
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One channel per shard holding one token: the thread fetches a token when a shard has
/// taken its last, so requests follow openings (a few ahead at most, one per shard).
pub fn channels(shards: usize) -> (Vec<SyncSender<String>>, Vec<Receiver<String>>) {
    (0..shards)
        .map(|_| std::sync::mpsc::sync_channel(1))
        .unzip()
}

/// Starts the thread for `pool`, feeding `senders` round-robin; request `n`'s `{{conn_id}}`
/// is `ids.0 + ids.1·n` (a segment's numbers, unique across `--segment`s; `(0, 1)`: `n`).
pub fn spawn(
    name: &str,
    pool: Arc<AuthPool>,
    senders: Vec<SyncSender<String>>,
    ids: (u64, u64),
) -> std::io::Result<AuthWorker> {
    let stats = Arc::new(Mutex::new(AuthStats::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (s, f) = (stats.clone(), stop.clone());
    std::thread::Builder::new()
        .name(format!("auth-{name}"))
        .spawn(move || run(&pool, &senders, &s, &f, ids))?;
    Ok(AuthWorker { stats, stop })
}

fn run(
    pool: &AuthPool,
    senders: &[SyncSender<String>],
    stats: &Mutex<AuthStats>,
    stop: &AtomicBool,
    ids: (u64, u64),
) {
    let agent = pool.spec.agent(pool.timeout);
    let start = Instant::now();
    let mut rng = Rng::from_entropy(0xA07);
    let mut body = Vec::new();
    let mut next = 0usize;
    let gap = Duration::from_secs_f64(1.0 / pool.rate);
    let mut due = start;
    for n in 0u64.. {
        // At most `rate` per second: time spent waiting for a shard to take a token is not
        // made up for with a burst.
        if !sleep_until(due, stop) {
            return;
        }
        let floor = Instant::now().checked_sub(gap).unwrap_or(due);
        due = due.max(floor).checked_add(gap).unwrap_or(due);
        let text = pool.body.as_ref().map(|t| {
            body.clear();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros() as u64;
            t.render(
                &mut Vars {
                    conn_id: ids.0 + ids.1 * n,
                    seq: n + 1,
                    last_seq: 0,
                    now_unix_us: now,
                    rng: &mut rng,
                },
                &mut body,
            );
            String::from_utf8_lossy(&body).into_owned()
        });
        if let Ok(mut s) = stats.lock() {
            s.requests += 1;
            s.in_flight = true;
        }
        let t0 = Instant::now();
        let result = pool.spec.fetch_with(&agent, text.as_deref());
        let took = t0.elapsed().as_micros() as u64;
        let token = {
            let Ok(mut s) = stats.lock() else { return };
            s.in_flight = false;
            match result {
                Ok(t) => {
                    s.tokens += 1;
                    s.latency
                        .saturating_record(took.clamp(1, crate::metrics::HIST_MAX_US));
                    Some(t)
                }
                Err(e) => {
                    *s.failures.entry(e.cause).or_insert(0) += 1;
                    s.first_error.get_or_insert(e.message);
                    None
                }
            }
        };
        if let Some(t) = token {
            if !hand_over(t, senders, &mut next, stop) {
                return;
            }
        }
    }
}

/// Sleeps until `due` in short steps; false if stopped meanwhile.
fn sleep_until(due: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            return true;
        }
        std::thread::sleep((due - now).min(Duration::from_millis(50)));
    }
}

/// Gives `token` to the next shard with room (waiting while all are full); false when the
/// run is over (stopped, or every shard gone).
fn hand_over(
    mut token: String,
    senders: &[SyncSender<String>],
    next: &mut usize,
    stop: &AtomicBool,
) -> bool {
    loop {
        let mut gone = 0;
        for k in 0..senders.len() {
            let i = (*next + k) % senders.len();
            match senders[i].try_send(token) {
                Ok(()) => {
                    *next = i + 1;
                    return true;
                }
                Err(TrySendError::Full(t)) => token = t,
                Err(TrySendError::Disconnected(t)) => {
                    token = t;
                    gone += 1;
                }
            }
        }
        if gone == senders.len() || stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
