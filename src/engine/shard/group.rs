//! One scenario's share of a shard: its plan and config, its statistics, its schedule state
//! (openings, replacements, stages, storms), and the context its connections are driven with.

use super::{GroupPlan, ShardStats};
use crate::proto::conn::{ConnConfig, Ctx, Micros};
use crate::proto::rng::Rng;
use crate::proto::tls::TlsClient;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

/// One scenario on this shard: its plan, config, statistics and schedule state.
pub(super) struct Group {
    pub(super) plan: GroupPlan,
    pub(super) cfg: ConnConfig,
    pub(super) stats: ShardStats,
    pub(super) pending_opens: u64,
    pub(super) initial_left: u64,
    pub(super) next_open_at: f64,
    /// Connections of the group in any phase.
    pub(super) live: u64,
    pub(super) lag_max: u64,
    /// Sessions opened so far, and when that count first reached the target (µs).
    pub(super) ramp: (u64, Micros),
    /// Replacements waiting for their policy's delay: (when, failed attempts, last delay).
    pub(super) reopen: BinaryHeap<Reverse<(Micros, u32, Micros)>>,
    /// Sessions open now.
    pub(super) open_now: u64,
    /// Storms: when the next one comes, when the one in progress began, the longest
    /// recovery, and whether one never recovered.
    pub(super) storm_next: Option<Micros>,
    pub(super) storm_started: Option<Micros>,
    pub(super) storm_worst: Micros,
    pub(super) storm_unrecovered: bool,
    /// Stages: connections being retired, the opening order (slot, generation) to retire the
    /// newest first, and the largest shortfall behind the ramp.
    pub(super) retiring: u64,
    pub(super) opened: Vec<(u32, u32)>,
    pub(super) ramp_deficit_max: u64,
    /// Highest `seq` of lost sessions, for their replacements' `on_reconnect` message.
    pub(super) resume_seqs: Vec<u64>,
    /// Per-connection auth: where tokens come from, and the one for the next opening.
    pub(super) tokens: Option<Receiver<String>>,
    pub(super) next_token: Option<String>,
    /// The shard's TLS client (shared by its groups) and wall clock at the epoch, Unix µs
    /// (re-anchored by the shard once a second): runtime values its connections get through
    /// their context.
    tls: Option<Arc<TlsClient>>,
    pub(super) epoch_unix_us: u64,
}

impl Group {
    pub(super) fn new(
        mut plan: GroupPlan,
        tls: Option<Arc<TlsClient>>,
        epoch_unix_us: u64,
    ) -> Self {
        // With stages the ramp decides what to open, not a fixed count.
        let n = if plan.ramp.is_active() {
            0
        } else {
            plan.arrivals.unwrap_or(plan.connections)
        };
        Self {
            stats: ShardStats::for_config(&plan.conn),
            cfg: plan.conn.clone(),
            pending_opens: n,
            initial_left: n,
            next_open_at: plan.open_offset_us,
            live: 0,
            lag_max: 0,
            ramp: (0, 0),
            reopen: BinaryHeap::new(),
            open_now: 0,
            storm_next: plan.storm.map(|s| s.at),
            storm_started: None,
            storm_worst: 0,
            storm_unrecovered: false,
            retiring: 0,
            opened: Vec::new(),
            ramp_deficit_max: 0,
            resume_seqs: Vec::new(),
            tokens: plan.tokens.take(),
            next_token: None,
            tls,
            epoch_unix_us,
            plan,
        }
    }

    /// Applies what the steering (`find-max`) set: the open-connection target, the connect
    /// interval, the message interval (each connection's next message follows the new one).
    pub(super) fn follow_knob(&mut self) {
        let Some(k) = &self.plan.knob else { return };
        let s = k.read();
        if let Some(t) = s.target {
            self.plan.ramp.hold(t);
        }
        if let Some(iv) = s.open_interval_us {
            self.plan.open_interval_us = iv;
        }
        if let Some(iv) = s.msg_interval_us {
            self.cfg.message_interval = iv;
        }
    }

    /// Whether the next opening can go: it needs no token, or one has arrived.
    pub(super) fn token_ready(&mut self) -> bool {
        let Some(rx) = &self.tokens else { return true };
        if self.next_token.is_none() {
            self.next_token = rx.try_recv().ok();
        }
        self.next_token.is_some()
    }

    /// Waiting for a token: openings that are due cannot go yet.
    pub(super) fn starved(&self) -> bool {
        self.tokens.is_some() && self.next_token.is_none()
    }

    /// The context a call into one of this group's connections takes: its config, the
    /// group's statistics, the shard's PRNG, TLS client and epoch.
    pub(super) fn ctx<'a>(&'a mut self, rng: &'a mut Rng) -> Ctx<'a, ShardStats> {
        Ctx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            rng,
            tls: self.tls.as_deref(),
            epoch_unix_us: self.epoch_unix_us,
            token: None,
        }
    }

    /// A session opened: it counts towards the ramp, the open sessions and a storm's
    /// recovery.
    pub(super) fn session_opened(&mut self, now: Micros) {
        self.ramp.0 += 1;
        if self.ramp.0 == self.plan.connections {
            self.ramp.1 = now;
        }
        self.open_now += 1;
        if let Some(started) = self.storm_started {
            if self.open_now >= self.plan.connections {
                self.storm_worst = self.storm_worst.max(now - started);
                self.storm_started = None;
            }
        }
    }
}
