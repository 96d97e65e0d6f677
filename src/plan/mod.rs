//! What to do: the validated plan of a run ([`Run`], one [`RunPlan`] per scenario) and the
//! plan-level types (URL, reconnect policy, storm, stages, thresholds, auth, messages). The
//! command line and scenario files are turned into a plan by `cli`; the plan is a pure value
//! (no DNS, no network), and [`prepare`] does what needs the outside world: resolving the
//! target, choosing source addresses, the auth pre-step.

pub mod auth;
pub mod files;
pub mod find_max;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_smoke;
pub mod message;
pub mod parse;
mod prepare;
pub mod reconnect;
pub mod segment;
pub mod stages;
pub mod threshold;
mod url;

pub use prepare::{prepare, Prepared};
pub use url::{parse_url, redacted, Url};

use crate::metrics::ShardStats;
use crate::proto::conn::ConnConfig;
use crate::proto::template::Template;
use crate::proto::tls::TlsSettings;
use reconnect::{Policy, Storm};
use segment::Segment;
use stages::Stage;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use threshold::Threshold;

/// Errors in user input; each says what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The URL does not parse.
    #[error("invalid URL `{url}`: {reason} (expected ws://host[:port][/path] or wss://...)")]
    BadUrl {
        /// The URL as given on the command line or in the scenario file, quoted in the message.
        url: String,
        /// What is wrong with it: a missing or unsupported scheme, credentials, an empty host,
        /// whitespace, or a bad port.
        reason: String,
    },
    /// A scenario file is wrong at this place (`FILE:LINE:COLUMN`).
    #[error("{at}: {reason}")]
    Scenario {
        /// Where: `FILE:LINE:COLUMN`.
        at: String,
        /// What is wrong and the fix.
        reason: String,
    },
    /// The auth pre-step failed (the run does not start).
    #[error("auth pre-step: {0}")]
    Auth(String),
    /// A certificate or key file cannot be used.
    #[error(transparent)]
    Cert(#[from] crate::certs::CertError),
    /// The host name does not resolve.
    #[error("cannot resolve `{host}`: {reason} (check the host name, or use an IP address)")]
    Resolve {
        /// The target URL's host as written (an IP address needs no lookup).
        host: String,
        /// The system resolver's error, or `no addresses` when the name resolved to none.
        reason: String,
    },
    /// A flag value is out of range or inconsistent with another.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag whose value is wrong or inconsistent, as the user types it (`--cpus`).
        flag: &'static str,
        /// What is wrong and the fix.
        reason: String,
    },
    /// A `@file` argument cannot be read.
    #[error("{flag}: cannot read `{path}`: {reason}")]
    File {
        /// The flag whose `@file` value cannot be read (`--message`, `--auth-body`, ...), or
        /// `scenario file` for the scenario file itself.
        flag: &'static str,
        /// The path as given after the `@` (or the scenario file's own path).
        path: PathBuf,
        /// The OS error as `std::io::Error` words it, e.g. `No such file or directory (os error
        /// 2)`.
        reason: String,
    },
}

impl PlanError {
    /// `flag` is wrong: `reason` says what and the fix.
    pub fn invalid(flag: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            flag,
            reason: reason.into(),
        }
    }
}

/// A whole run: one or more scenarios run together against one target. Run-wide settings
/// (target, TLS, CPUs, sources, drain, output) are the first scenario's.
#[derive(Debug, Clone)]
pub struct Run {
    /// The scenarios, in file order (one for a command-line run).
    pub scenarios: Vec<RunPlan>,
    /// Pass/fail criteria, overall or tagged with a scenario.
    pub thresholds: Vec<Threshold>,
    /// Check thresholds during the run from this time on, and stop at the first failure.
    pub abort_on_fail: Option<Duration>,
    /// The scenario file the run came from (None: the command line); errors found later
    /// (the auth pre-step's) then name their scenario.
    pub file: Option<PathBuf>,
}

impl Run {
    /// A run of one scenario (the command line without a scenario file).
    pub fn single(mut plan: RunPlan) -> Result<Self, PlanError> {
        if let Some(t) = plan
            .thresholds
            .iter()
            .find(|t| t.scenario.as_deref().is_some_and(|s| s != plan.name))
        {
            return Err(PlanError::Invalid {
                flag: "--threshold",
                reason: format!(
                    "`{}`: scenario tags need a scenario file; on the command line the one scenario is `{}`",
                    t.expr, plan.name
                ),
            });
        }
        let (thresholds, abort_on_fail) =
            (std::mem::take(&mut plan.thresholds), plan.abort_on_fail);
        let run = Self::new(vec![plan], thresholds, abort_on_fail);
        run.check_segment()?;
        Ok(run)
    }

    /// A run of `scenarios`, their fan-out channels numbered 1, 2, ... by name across the run
    /// (0: none), so that publishers and subscribers of one channel meet in the accounting.
    /// With a segment (`--segment`, the first scenario's), each scenario is cut to its share
    /// ([`RunPlan::apply_segment`]).
    pub fn new(
        mut scenarios: Vec<RunPlan>,
        thresholds: Vec<Threshold>,
        abort_on_fail: Option<Duration>,
    ) -> Self {
        let mut names: Vec<String> = Vec::new();
        for p in &mut scenarios {
            p.conn.channel = p.channel.as_deref().map_or(0, |c| {
                let i = names.iter().position(|n| n == c).unwrap_or_else(|| {
                    names.push(c.to_owned());
                    names.len() - 1
                });
                i as u32 + 1
            });
        }
        if let Some(seg) = scenarios.first().and_then(|p| p.segment) {
            for p in &mut scenarios {
                p.apply_segment(seg);
            }
        }
        Self {
            scenarios,
            thresholds,
            abort_on_fail,
            file: None,
        }
    }

    /// A segment (`--segment`) must hold at least one connection: a run split over more
    /// segments than it has connections leaves some with nothing to do.
    pub fn check_segment(&self) -> Result<(), PlanError> {
        match self.main().segment {
            Some(seg) if self.connections() == 0 => Err(PlanError::invalid(
                "--segment",
                format!(
                    "segment {}/{} holds none of the run's connections (the run has fewer than {} \
                     per scenario): split it over fewer segments, or raise -c",
                    seg.index, seg.count, seg.count
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The first scenario, which carries the run-wide settings.
    pub fn main(&self) -> &RunPlan {
        &self.scenarios[0]
    }

    /// Connections of all scenarios.
    pub fn connections(&self) -> u64 {
        self.scenarios.iter().map(|p| p.connections).sum()
    }

    /// Connections of the whole run, every segment's together (this process's without one).
    pub fn whole_connections(&self) -> u64 {
        self.scenarios.iter().map(RunPlan::whole_connections).sum()
    }

    /// Run length: the longest scenario (its start included).
    pub fn duration(&self) -> Duration {
        self.scenarios
            .iter()
            .map(|p| p.duration)
            .max()
            .unwrap_or_default()
    }

    /// Whether the run has more than one scenario.
    pub fn is_multi(&self) -> bool {
        self.scenarios.len() > 1
    }

    /// The statistics threshold `t` is evaluated on: its scenario's, or the overall ones.
    pub fn stats_for<'a>(
        &self,
        t: &Threshold,
        total: &'a ShardStats,
        per_scenario: &[&'a ShardStats],
    ) -> &'a ShardStats {
        t.scenario
            .as_deref()
            .and_then(|name| self.scenarios.iter().position(|p| p.name == name))
            .and_then(|k| per_scenario.get(k).copied())
            .unwrap_or(total)
    }
}

/// One target as given: its URL (as reports show it, and parsed) and its share of the
/// connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// As reports show it (query values redacted).
    pub text: String,
    /// Parsed.
    pub url: Url,
    /// Its weight among the targets (1: equal shares).
    pub weight: u32,
}

/// A validated scenario: everything the engine needs for its connections. The connection
/// behaviour is [`RunPlan::conn`], built here once: the engine hands it to every shard as
/// it is, and the reports read it back.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Scenario name (its tag in reports and thresholds); `default` on the command line.
    pub name: String,
    /// Delay from the run's start to the scenario's first connection.
    pub start: Duration,
    /// The URL as reports and logs show it: as given, but with every query-string value
    /// redacted ([`redacted`]); template expressions in the path stay expressions.
    pub url_text: String,
    /// `url_text` parsed: whether to use TLS, the host (for DNS and the `Host` header), the port
    /// and the request path.
    pub url: Url,
    /// Every target with its weight, `url` first (one for a run with a single URL); run-wide:
    /// only the first scenario's count. Resolved by [`prepare`].
    pub targets: Vec<TargetSpec>,
    /// `--resolve all`: every address a target's name resolves to is a target of its own.
    pub resolve_all: bool,
    /// Connections to hold (session mode), in flight (handshake mode), or the capacity for
    /// sessions alive at once (open model).
    pub connections: u64,
    /// New connections per second across all shards (infinite: as fast as they complete).
    pub connect_rate: f64,
    /// TLS settings for wss:// (shared by every shard's client).
    pub tls: Option<Arc<TlsSettings>>,
    /// Pass/fail criteria given with this scenario (a [`Run`] gathers them).
    pub thresholds: Vec<Threshold>,
    /// The auth pre-step to make before the run (one token for every connection); made by
    /// [`prepare`], which fills `{{token}}` in the upgrade request and the messages.
    pub auth_pre_step: Option<auth::AuthSpec>,
    /// Per-connection auth: each connection's own token, fetched at a bounded rate.
    pub auth_pool: Option<Arc<AuthPool>>,
    /// Check thresholds during the run from this time on, and stop at the first failure.
    pub abort_on_fail: Option<Duration>,
    /// Attempts on a shard in a row failing with one persistent TLS cause, with no success in
    /// the run, after which the run stops (`--max-identical-failures`, default 100; 0: never).
    /// Run-wide: only the first scenario's counts.
    pub max_identical_failures: u64,
    /// Messages per second per connection (0: none); [`ConnConfig::message_interval`] is
    /// what connections use, this is what reports show.
    pub message_rate: f64,
    /// Run length, from the run's start (this scenario's `start` included).
    pub duration: Duration,
    /// After the run, how long replies in flight are awaited.
    pub drain: Duration,
    /// Replace failed or server-closed connections to hold the count; true unless `--no-reconnect`.
    pub reconnect: bool,
    /// When replacements open (`--reconnect-policy`; default `rate`: queued at `connect_rate`).
    pub policy: Policy,
    /// The reconnect storm to cause (`--storm-at`, `--storm-every`, `--storm-fraction`,
    /// `--storm-close`); `None`: no storm.
    pub storm: Option<Storm>,
    /// Stages (empty: hold `connections` for `duration`).
    pub stages: Vec<Stage>,
    /// CPUs to run shards on, one shard each (`--cpus`; default: every CPU this process may use).
    /// Run-wide: only the first scenario's counts.
    pub cpus: Vec<usize>,
    /// Source addresses given with `--source-ip` (empty: chosen by [`prepare`]).
    pub source_ips: Vec<IpAddr>,
    /// `--linger-zero`: close sockets with RST (SO_LINGER 0), leaving no TIME_WAIT behind.
    /// Run-wide: only the first scenario's counts.
    pub linger_zero: bool,
    /// Make sockets with syscalls even where the io_uring ring could (`--socket-setup syscalls`).
    pub socket_syscalls: bool,
    /// The I/O backend asked for (`--backend`); run-wide: only the first scenario's counts.
    pub backend: Backend,
    /// `--json`: the file the JSON results are written to at the end; `None`: no JSON file.
    pub json: Option<PathBuf>,
    /// `--hdr-log`: the file the HdrHistogram interval log is written to, live; `None`: none.
    pub hdr_log: Option<PathBuf>,
    /// `--csv`: the file the per-second timeline is written to as CSV, live; `None`: none.
    pub csv: Option<PathBuf>,
    /// `--metrics-listen`: where the live Prometheus endpoint listens; `None`: no endpoint.
    /// Run-wide: only the first scenario's counts.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `--metrics-linger`: after the run, how long the endpoint waits for a scrape of the
    /// final figures (zero: the process exits at once).
    pub metrics_linger: Duration,
    /// `-q`/`--quiet`: no live progress line on stderr (the summary still goes to stdout).
    pub quiet: bool,
    /// `--fail-on-saturation`: exit 98 when the generator was the bottleneck.
    pub fail_on_saturation: bool,
    /// Fan-out channel by name; [`ConnConfig::channel`] is its number in the run.
    pub channel: Option<String>,
    /// How each connection behaves: request, messages, timers, checks.
    pub conn: ConnConfig,
    /// `--segment`: this process's part of a run split across processes or hosts (None: the
    /// whole run). Run-wide: only the first scenario's counts.
    pub segment: Option<Segment>,
    /// With a segment: what the whole run has of this scenario before the cut (the plan
    /// results name, and what `sockstorm merge` compares across segments).
    pub unsplit: Option<segment::Unsplit>,
    /// `--start-at`: the wall-clock instant the shards start at, once set up (None: at once).
    /// Run-wide: only the first scenario's counts.
    pub start_at: Option<SystemTime>,
    /// `--start-late-ok`: start at once when `start_at` has passed, instead of failing.
    pub start_late_ok: bool,
}

impl RunPlan {
    /// Cuts this scenario to segment `seg`'s share ([`segment`]): its connections, its connect
    /// (or arrival) rate and per-connection auth rate in proportion, and each stage's target.
    /// Per-connection message rates stay, so a `--message-total-rate` splits with the
    /// connections; the storm's fraction applies to the segment's sessions. A segment with
    /// none of the scenario's connections makes no auth requests.
    pub fn apply_segment(&mut self, seg: Segment) {
        let whole = self.connections;
        self.unsplit = Some(segment::Unsplit {
            connections: whole,
            connect_rate: self.connect_rate,
            stage_targets: self.stages.iter().map(|st| st.target).collect(),
        });
        self.connect_rate = seg.rate(self.connect_rate, whole);
        self.connections = seg.share(whole);
        if self.connections == 0 {
            self.auth_pool = None;
        } else if let Some(pool) = &mut self.auth_pool {
            let pool = Arc::make_mut(pool);
            pool.rate = seg.rate(pool.rate, whole);
        }
        for st in &mut self.stages {
            st.target = seg.share(st.target);
        }
        self.segment = Some(seg);
    }
}

impl RunPlan {
    /// This scenario's connections in the whole run (before a segment's cut).
    pub fn whole_connections(&self) -> u64 {
        self.unsplit
            .as_ref()
            .map_or(self.connections, |u| u.connections)
    }

    /// This scenario's connect (or arrival) rate in the whole run.
    pub fn whole_connect_rate(&self) -> f64 {
        self.unsplit
            .as_ref()
            .map_or(self.connect_rate, |u| u.connect_rate)
    }

    /// Stage `k`'s target in the whole run.
    pub fn whole_stage_target(&self, k: usize) -> u64 {
        self.unsplit
            .as_ref()
            .and_then(|u| u.stage_targets.get(k).copied())
            .unwrap_or_else(|| self.stages[k].target)
    }
}

/// Ports one source address should use towards one destination before we spread over more
/// loopback addresses: the kernel's port search slows sharply as a range fills up.
pub const PORTS_PER_SOURCE: u64 = 2000;

/// Per-connection auth: the request, its body template, the rate, the timeout.
#[derive(Debug, Clone)]
pub struct AuthPool {
    /// The auth request (URL, headers, token field, trust), the same for every connection.
    pub spec: auth::AuthSpec,
    /// The body, rendered per request (`{{conn_id}}` = the request's number).
    pub body: Option<Template>,
    /// Auth requests per second at most (`--auth-rate`, default 100, at least 0.001).
    pub rate: f64,
    /// How long one auth request may take before it counts as `auth_timeout` (`--connect-timeout`).
    pub timeout: Duration,
}

/// On IPv4 loopback, connections beyond [`PORTS_PER_SOURCE`] are spread over 127.0.0.1,
/// 127.0.0.2, ... so no single source address fills its port range.
pub fn auto_sources(target: IpAddr, connections: u64) -> Vec<IpAddr> {
    match target {
        IpAddr::V4(v4) if v4.is_loopback() && connections > PORTS_PER_SOURCE => {
            let n = connections.div_ceil(PORTS_PER_SOURCE).min(250) as u8;
            (1..=n).map(|i| IpAddr::from([127, 0, 0, i])).collect()
        }
        _ => Vec::new(),
    }
}

/// CPUs this process may run on.
pub fn available_cpus() -> Vec<usize> {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    if ids.is_empty() {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    } else {
        ids.into_iter().map(|c| c.id).collect()
    }
}

/// The I/O backend a run asks for (`--backend`, `backend = …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// io_uring where it can run, else epoll; the run says which and why.
    #[default]
    Auto,
    /// io_uring, or an error saying why it cannot run here.
    Uring,
    /// epoll (mio).
    Epoll,
}

/// Splits `total` by `weights` (largest remainder: the parts add up to `total` exactly).
pub fn split_weighted(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut parts: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
    let mut left = total.saturating_sub(parts.iter().sum());
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &i in order.iter().cycle().take(weights.len() * 2) {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
}
