//! `sockstorm run` flags → a validated [`RunPlan`]: every user-input error of a run is found
//! here, before anything connects, and names the flag and the fix. Pure: no DNS and no
//! network (that is [`crate::plan::prepare`]); files named by `@file` and `{{line FILE}}` are
//! read, as they are part of the input.
//!
//! [`RunArgs::plan`] works in steps: the load shape (connections, mode, rates, stages, open
//! model), the checks of flags that stand alone, the machine (CPUs, sources), the storm, the
//! auth steps, then the connection behaviour ([`conn`](super::conn)).

mod auth;
#[cfg(test)]
mod tests;

use super::args::{BackendArg, CloseArg, ModeArg, RunArgs, SocketSetupArg, StormCloseArg};
use super::conn::Load;
use crate::plan::message::Resolver;
use crate::plan::reconnect::Storm;
use crate::plan::stages::Stage;
use crate::plan::{available_cpus, parse, parse_url, redacted, Backend, PlanError, RunPlan, Url};
use crate::proto::conn::Mode;
use std::sync::Arc;
use std::time::Duration;

/// How much load, and in what shape.
#[derive(Debug)]
struct Shape {
    /// Connections held, in flight, or room for those alive at once (open model).
    connections: u64,
    mode: Mode,
    /// Open model: sessions started per second.
    arrival_rate: Option<f64>,
    /// Run length (the stages' sum with stages).
    duration: Duration,
    connect_rate: f64,
    stages: Vec<Stage>,
}

impl RunArgs {
    /// Validates the flags and builds the scenario's plan.
    pub fn plan(&self) -> Result<RunPlan, PlanError> {
        let a = self;
        if a.target_url.is_some() {
            return Err(PlanError::invalid(
                "--url",
                "is for scenario files (sockstorm run FILE.toml --url URL); give the URL itself instead",
            ));
        }
        let url = parse_url(&a.url)?;
        let shape = shape(a, &url)?;
        check_flags(a, &url)?;
        a.conn.check()?;
        let cpus = cpus(a)?;
        let segment =
            crate::plan::segment::resolve(a.segment, a.segments, |k| std::env::var(k).ok())?;
        let (start_at, start_late_ok) = start_at(a)?;
        let storm = storm(a, &shape)?;
        let auth = auth::steps(a, shape.mode)?;
        let resolver = Resolver {
            token: auth.pre_step.is_some(),
            scenario: a.scenario.as_deref().unwrap_or("default"),
            base: a.base_dir.as_deref(),
        };
        let load = Load {
            url: &url,
            request: Resolver {
                token: auth.gives_token(),
                ..resolver
            },
            messages: resolver,
            mode: shape.mode,
            // The connections alive at once (the open model's rate × lifetime).
            alive: match (shape.arrival_rate, a.session_lifetime) {
                (Some(r), Some(life)) => (r * life.as_secs_f64()).max(1.0),
                _ => shape.connections as f64,
            },
            session_lifetime: a.session_lifetime,
        };
        let (conn, message_rate) = a.conn.config(&load)?;
        let tls = if url.tls {
            let per_shard = shape.connections.div_ceil(cpus.len().max(1) as u64);
            Some(Arc::new(a.tls.settings(&url.host, per_shard)?))
        } else {
            None
        };
        Ok(RunPlan {
            name: "default".into(),
            start: Duration::ZERO,
            url_text: if a.show_query {
                a.url.clone()
            } else {
                redacted(&a.url)
            },
            targets: targets(a, &url)?,
            resolve_all: a.resolve == super::args::ResolveArg::All,
            url,
            connections: shape.connections,
            connect_rate: shape.connect_rate,
            tls,
            thresholds: a.thresholds.clone(),
            auth_pre_step: auth.pre_step,
            auth_pool: auth.pool,
            abort_on_fail: a.abort_on_fail,
            max_identical_failures: a.max_identical_failures,
            message_rate,
            duration: shape.duration,
            drain: a.drain,
            reconnect: !a.no_reconnect,
            policy: a.reconnect_policy,
            storm,
            stages: shape.stages,
            cpus,
            source_ips: a.source_ip.clone().map(|l| l.0).unwrap_or_default(),
            linger_zero: a.linger_zero || matches!(shape.mode, Mode::Handshake { rst: true, .. }),
            socket_syscalls: a.socket_setup == SocketSetupArg::Syscalls,
            backend: match a.backend {
                BackendArg::Auto => Backend::Auto,
                BackendArg::Uring => Backend::Uring,
                BackendArg::Epoll => Backend::Epoll,
            },
            json: a.json.clone(),
            hdr_log: a.hdr_log.clone(),
            csv: a.csv.clone(),
            metrics_listen: a.metrics_listen,
            metrics_linger: a.metrics_linger,
            quiet: a.quiet,
            fail_on_saturation: a.fail_on_saturation,
            channel: a.conn.channel.clone(),
            conn,
            segment,
            start_at,
            start_late_ok,
            unsplit: None,
        })
    }
}

/// `--start-at`, which must not have passed already unless `--start-late-ok`.
fn start_at(a: &RunArgs) -> Result<(Option<std::time::SystemTime>, bool), PlanError> {
    if let Some(at) = a.start_at {
        let late = crate::plan::segment::offset_us(at, std::time::SystemTime::now());
        if late > 0 && !a.start_late_ok {
            return Err(PlanError::invalid(
                "--start-at",
                format!(
                    "the instant passed {:.3} s ago: give a later one (or +DURATION from now),                      or add --start-late-ok to start at once",
                    late as f64 / 1e6
                ),
            ));
        }
    }
    Ok((a.start_at, a.start_late_ok))
}

/// Connections, mode, rates, stages and the open model, checked together.
/// The run's targets: the URL, the URLs after it and `--target`s, each with its weight.
fn targets(a: &RunArgs, url: &Url) -> Result<Vec<crate::plan::TargetSpec>, PlanError> {
    let show = |t: &str| {
        if a.show_query {
            t.to_owned()
        } else {
            redacted(t)
        }
    };
    let mut out = vec![crate::plan::TargetSpec {
        text: show(&a.url),
        url: url.clone(),
        weight: 1,
    }];
    for t in a.more_urls.iter().chain(&a.targets) {
        let u = parse_url(t)?;
        if u.tls != url.tls || u.path != url.path {
            return Err(PlanError::invalid(
                "--target",
                format!(
                    "`{}` is not the same service as `{}`: several targets share the scheme and the path (ws:// or wss://, {}); run other services as scenarios of a file",
                    show(t),
                    show(&a.url),
                    url.path
                ),
            ));
        }
        out.push(crate::plan::TargetSpec {
            text: show(t),
            url: u,
            weight: 1,
        });
    }
    if let Some(w) = &a.target_weights {
        let weights: Vec<u32> = w
            .split(',')
            .map(|x| x.trim().parse().ok().filter(|&n| (1..=1000).contains(&n)))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                PlanError::invalid(
                    "--target-weights",
                    format!("`{w}`: expected whole numbers from 1 to 1000, e.g. 3,1,1"),
                )
            })?;
        if weights.len() != out.len() {
            return Err(PlanError::invalid(
                "--target-weights",
                format!(
                    "{} weights for {} targets: give one per target, the first URL's first",
                    weights.len(),
                    out.len()
                ),
            ));
        }
        for (t, w) in out.iter_mut().zip(weights) {
            t.weight = w;
        }
    }
    if out.len() > crate::metrics::targets::MAX_TARGETS {
        return Err(PlanError::invalid(
            "--target",
            format!("at most {} targets", crate::metrics::targets::MAX_TARGETS),
        ));
    }
    Ok(out)
}

fn shape(a: &RunArgs, url: &Url) -> Result<Shape, PlanError> {
    let handshake = a.mode == ModeArg::Handshake;
    let stages = a.stages.clone().map(|s| s.0).unwrap_or_default();
    if handshake && !stages.is_empty() {
        return Err(PlanError::invalid("--stages", "applies to session mode"));
    }
    if !stages.is_empty() && stages.iter().all(|s| s.target == 0) {
        return Err(PlanError::invalid(
            "--stages",
            "every target is 0: no connection would open",
        ));
    }
    let (connections, mode) = if handshake {
        if a.concurrency == 0 {
            return Err(PlanError::invalid("--concurrency", "must be at least 1"));
        }
        if !url.tls && !a.upgrade {
            return Err(PlanError::invalid(
                "--mode",
                "handshake mode on a ws:// URL has nothing to handshake: use wss:// or add --upgrade",
            ));
        }
        let mode = Mode::Handshake {
            upgrade: a.upgrade,
            rst: a.close == CloseArg::Rst,
        };
        (a.concurrency, mode)
    } else {
        for (given, flag) in [
            (a.upgrade, "--upgrade"),
            (a.close != CloseArg::Rst, "--close"),
            (a.concurrency != 64, "--concurrency"),
        ] {
            if given {
                return Err(PlanError::invalid(
                    flag,
                    "only applies with --mode handshake",
                ));
            }
        }
        let n = stages
            .iter()
            .map(|s| s.target)
            .max()
            .unwrap_or(a.connections);
        (n, Mode::Session)
    };
    // Open model: arrivals at a rate, each living a lifetime; capacity for those alive at
    // once (rate × lifetime, with room for arrivals bunching and slow closes).
    let (connections, arrival_rate) = match (a.arrival_rate, a.session_lifetime) {
        (Some(r), Some(life)) => {
            if handshake || !stages.is_empty() {
                return Err(PlanError::invalid(
                    "--arrival-rate",
                    "is its own load shape: not with --mode handshake or --stages",
                ));
            }
            if !(r.is_finite() && r > 0.0) {
                return Err(PlanError::invalid(
                    "--arrival-rate",
                    format!("must be a positive number of sessions per second, got {r}"),
                ));
            }
            if life.is_zero() {
                return Err(PlanError::invalid(
                    "--session-lifetime",
                    "must be longer than 0",
                ));
            }
            let alive = r * (life + a.conn.close_wait).as_secs_f64();
            ((alive * 1.25).ceil() as u64 + 64, Some(r))
        }
        _ => (connections, None),
    };
    let duration = if stages.is_empty() {
        a.duration
    } else {
        stages.iter().map(|s| s.duration).sum()
    };
    if connections == 0 {
        return Err(PlanError::invalid("--connections", "must be at least 1"));
    }
    let connect_rate = match arrival_rate.or(a.connect_rate) {
        Some(r) if !(r.is_finite() && r > 0.0) => {
            return Err(PlanError::invalid(
                "--connect-rate",
                format!("must be a positive number of connections per second, got {r}"),
            ))
        }
        Some(r) => r,
        None if handshake => f64::INFINITY,
        None => 2000.0,
    };
    Ok(Shape {
        connections,
        mode,
        arrival_rate,
        duration,
        connect_rate,
        stages,
    })
}

/// Run-level flags checked on their own: TLS flags on ws://, the run length, early abort
/// (the connection flags check themselves: [`super::conn::ConnArgs::check`]).
fn check_flags(a: &RunArgs, url: &Url) -> Result<(), PlanError> {
    if !url.tls {
        if let Some(flag) = a.tls.given() {
            return Err(PlanError::invalid(flag, "only applies to wss:// URLs"));
        }
    }
    if a.duration.is_zero() {
        return Err(PlanError::invalid(
            "--duration",
            "must be longer than 0 (e.g. 30s)",
        ));
    }
    if a.abort_on_fail.is_some() && a.thresholds.is_empty() {
        return Err(PlanError::invalid(
            "--abort-on-fail",
            "needs at least one --threshold to check",
        ));
    }
    Ok(())
}

/// The CPUs to run shards on: the ones given (each must be available) or all.
fn cpus(a: &RunArgs) -> Result<Vec<usize>, PlanError> {
    let available = available_cpus();
    match &a.cpus {
        Some(parse::CpuList(list)) => {
            if let Some(c) = list.iter().find(|c| !available.contains(c)) {
                return Err(PlanError::invalid(
                    "--cpus",
                    format!("CPU {c} is not available to this process (available: {available:?})"),
                ));
            }
            Ok(list.clone())
        }
        None => Ok(available),
    }
}

/// The reconnect storm, if asked for: only against a fixed connection count.
fn storm(a: &RunArgs, shape: &Shape) -> Result<Option<Storm>, PlanError> {
    let Some(at) = a.storm_at else {
        return Ok(None);
    };
    if shape.mode != Mode::Session || shape.arrival_rate.is_some() || !shape.stages.is_empty() {
        return Err(PlanError::invalid(
            "--storm-at",
            "recovery is measured against a fixed connection count: not with --mode handshake, --arrival-rate or --stages",
        ));
    }
    if at >= shape.duration {
        return Err(PlanError::invalid(
            "--storm-at",
            format!("{at:?} is not within the run (-d {:?})", shape.duration),
        ));
    }
    if !(a.storm_fraction > 0.0 && a.storm_fraction <= 1.0) {
        return Err(PlanError::invalid(
            "--storm-fraction",
            format!("must be in (0, 1], got {}", a.storm_fraction),
        ));
    }
    if a.storm_every.is_some_and(|e| e.is_zero()) {
        return Err(PlanError::invalid("--storm-every", "must be longer than 0"));
    }
    Ok(Some(Storm {
        at: at.as_micros() as u64,
        fraction: a.storm_fraction,
        rst: a.storm_close == StormCloseArg::Rst,
        every: a.storm_every.map_or(0, |e| e.as_micros() as u64),
    }))
}
