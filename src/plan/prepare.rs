//! The step between a plan and a run that needs the outside world: resolving the target,
//! choosing source addresses, and the auth pre-step (one HTTP request whose token fills
//! `{{token}}`). Building a plan has no side effects; this is where they are, called once
//! by `cli` before the engine starts.

use super::auth::AuthSpec;
use super::message::TOKEN_SLOT;
use super::{auto_sources, PlanError, Run, Url};
use crate::proto::conn::Message;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::Deref;
use std::sync::Arc;

/// One resolved target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where its connections go.
    pub addr: SocketAddr,
    /// Its share of the connections, relative to the others'.
    pub weight: u32,
    /// Its URL as reports show it (with the address when the name resolved to several).
    pub label: String,
}

/// A run ready to start: its plan, the resolved target and the source addresses.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The plan, with the auth pre-step's token filled in.
    pub run: Run,
    /// The target address (the first the name resolved to).
    pub target: SocketAddr,
    /// Every target address with its weight and how reports name it, `target` first (one
    /// for a run with a single URL).
    pub targets: Vec<Target>,
    /// Source addresses rotated round-robin (empty: the kernel's choice).
    pub source_ips: Vec<IpAddr>,
    /// Whether they were chosen automatically (loopback spreading) rather than given.
    pub source_ips_auto: bool,
}

impl Deref for Prepared {
    type Target = Run;

    fn deref(&self) -> &Run {
        &self.run
    }
}

/// Resolves the target, checks or chooses the source addresses, and makes the auth
/// pre-step: once per distinct request (scenarios asking the same share the token).
pub fn prepare(mut run: Run) -> Result<Prepared, PlanError> {
    let main = run.main();
    let targets = resolve_targets(main)?;
    let target = targets[0].addr;
    let (source_ips, source_ips_auto) = if main.source_ips.is_empty() {
        // Sized by the first scenario, whose settings are the run's: other scenarios' connections
        // are not counted (give --source-ip for runs whose other scenarios add thousands).
        // Ports are per (source, target) pair: the largest target's share counts.
        let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
        let most = targets
            .iter()
            .map(|t| u64::from(t.weight))
            .max()
            .unwrap_or(1);
        let share = (main.connections * most).div_ceil(total.max(1));
        let loopback = targets.iter().all(|t| t.addr.ip().is_loopback());
        let auto = if loopback {
            auto_sources(target.ip(), share)
        } else {
            Vec::new()
        };
        (auto, true)
    } else {
        if let Some(ip) = main
            .source_ips
            .iter()
            .find(|ip| ip.is_ipv4() != target.is_ipv4())
        {
            return Err(PlanError::Invalid {
                flag: "--source-ip",
                reason: format!(
                    "{ip} is not the same address family as the target {}",
                    target.ip()
                ),
            });
        }
        (main.source_ips.clone(), false)
    };
    let from_file = run.file.is_some();
    // One request per run: the scenarios that inherit the file's top-level `auth` ask the
    // same request and share its token; a scenario's own, different `auth` gets its own.
    let mut fetched: Vec<(AuthSpec, String)> = Vec::new();
    for p in &mut run.scenarios {
        let Some(spec) = p.auth_pre_step.take() else {
            continue;
        };
        let token = match fetched.iter().find(|(s, _)| *s == spec) {
            Some((_, token)) => token.clone(),
            None => {
                // A scenario file's errors name the scenario.
                let token = spec.fetch().map_err(|e| match e {
                    PlanError::Auth(m) if from_file => {
                        PlanError::Auth(format!("scenario `{}`: {m}", p.name))
                    }
                    e => e,
                })?;
                fetched.push((spec.clone(), token.clone()));
                token
            }
        };
        fill_token(p, &token);
        p.auth_pre_step = Some(spec);
    }
    Ok(Prepared {
        run,
        target,
        targets,
        source_ips,
        source_ips_auto,
    })
}

/// The pre-step's token in every place `{{token}}` was written: the upgrade request (URL
/// and headers) and the messages.
fn fill_token(p: &mut super::RunPlan, token: &str) {
    let c = &mut p.conn;
    c.template.fill_token(token);
    let messages = c
        .on_open
        .iter_mut()
        .chain(c.message.as_mut())
        .chain(c.on_reconnect.as_mut())
        .chain(c.heartbeat.as_mut().map(|h| &mut h.message));
    for m in messages {
        fill_message(m, token);
    }
}

fn fill_message(m: &mut Message, token: &str) {
    if let Some(t) = &mut m.template {
        Arc::make_mut(t).fill(TOKEN_SLOT, token);
    } else if let Ok(text) = std::str::from_utf8(&m.payload) {
        if text.contains(TOKEN_SLOT) {
            m.payload = text.replace(TOKEN_SLOT, token).into_bytes().into();
        }
    }
}

/// Every target of the run resolved: the first address of each name, or with `--resolve all`
/// every address (one target each, the weight of its URL). All of one address family.
fn resolve_targets(main: &super::RunPlan) -> Result<Vec<Target>, PlanError> {
    let mut out: Vec<Target> = Vec::new();
    for t in &main.targets {
        let addrs = resolve(&t.url)?;
        let several = main.resolve_all && addrs.len() > 1;
        let take = if main.resolve_all { addrs.len() } else { 1 };
        let family = out.first().map_or(addrs[0].is_ipv4(), |o| o.addr.is_ipv4());
        for addr in addrs.into_iter().take(take) {
            if out.iter().any(|o| o.addr == addr) {
                continue;
            }
            if main.resolve_all && addr.is_ipv4() != family {
                // A dual-stack name: its records of the other family are left out.
                continue;
            }
            out.push(Target {
                addr,
                weight: t.weight,
                label: if several {
                    format!("{} ({addr})", t.text)
                } else {
                    t.text.clone()
                },
            });
        }
    }
    if let Some(t) = out
        .iter()
        .find(|t| t.addr.is_ipv4() != out[0].addr.is_ipv4())
    {
        return Err(PlanError::Invalid {
            flag: "--target",
            reason: format!(
                "{} ({}) is not the same address family as {} ({}): use targets of one family (or --resolve first)",
                t.label, t.addr, out[0].label, out[0].addr
            ),
        });
    }
    if out.len() > crate::metrics::targets::MAX_TARGETS {
        return Err(PlanError::Invalid {
            flag: "--resolve",
            reason: format!(
                "more than {} target addresses",
                crate::metrics::targets::MAX_TARGETS
            ),
        });
    }
    Ok(out)
}

fn resolve(url: &Url) -> Result<Vec<SocketAddr>, PlanError> {
    let err = |reason: String| PlanError::Resolve {
        host: url.host.clone(),
        reason,
    };
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(err("no addresses".into()));
    }
    Ok(addrs)
}
