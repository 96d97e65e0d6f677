//! One `RunArgs` per scenario. Its words are the top level's items, then the block's (a key
//! in the block replaces the same key at the top), then the command line's, parsed as one
//! `sockstorm run`. The run's totals are then split over the scenarios: connections by
//! weight, and the connect rate, a shared per-connection auth rate and a total message rate
//! by the connections each scenario opens at its peak.

use super::blocks::Block;
use super::keys::{clap_reason, Item};
use super::target::Target;
use super::Input;
use crate::cli::args::{ModeArg, RunArgs, RunWords as Flags};
use crate::cli::conn::RoleArg;
use crate::plan::{split_weighted, PlanError};
use clap::Parser;

impl Input<'_> {
    /// Each scenario's `RunArgs`, before the totals are split.
    pub(super) fn scenario_args(
        &self,
        target: &Target,
        cli: &[String],
    ) -> Result<Vec<RunArgs>, PlanError> {
        let url = target.url();
        self.file
            .blocks
            .iter()
            .map(|b| self.scenario_args_of(b, target, &url, cli))
            .collect()
    }

    /// Scenario `b`'s `RunArgs`: its words parsed, its own url's path applied, a storm past
    /// a shortened run left out, and the run-wide parts (thresholds, abort) left to the run.
    fn scenario_args_of(
        &self,
        b: &Block,
        target: &Target,
        url: &str,
        cli: &[String],
    ) -> Result<RunArgs, PlanError> {
        self.check_channel_has_role(b)?;
        let mut a = match Flags::try_parse_from(words(&self.file.top, b, url, cli)) {
            Ok(f) => f.run,
            Err(e) => {
                let reason = format!("{}{}", self.file.scope(b), clap_reason(&e));
                return Err(self.r.err(&b.name_span, reason));
            }
        };
        if let Some(own) = b.url_item() {
            if let Some(u) = target.scenario_url(self.r, b, own)? {
                a.url = u;
            }
        }
        self.drop_late_storm(b, &mut a);
        a.target_url = None;
        a.scenario = Some(b.name.clone());
        a.base_dir = Some(self.r.base.clone());
        a.thresholds.clear();
        a.abort_on_fail = None;
        Ok(a)
    }

    /// A `channel` (the block's, else the top level's) in a scenario without a `role` is
    /// reported at the `channel` key, with the fix; clap would only say that `--role` is
    /// missing, with nothing to place it at but the scenario's name.
    fn check_channel_has_role(&self, b: &Block) -> Result<(), PlanError> {
        let top = &self.file.top;
        let find = |flag: &str| {
            b.items
                .iter()
                .chain(&top.items)
                .find(|i| i.flag == flag && !i.key.contains('.'))
        };
        let Some(channel) = find("channel") else {
            return Ok(());
        };
        if find("role").is_some() || self.cmd.sets("role") {
            return Ok(());
        }
        Err(self.r.err(
            &channel.span,
            format!(
                "{}`{}`: a channel needs a role: add role = \"publisher\" or role = \"subscriber\" to {} (or remove the channel)",
                self.file.scope(b),
                channel.key,
                if b.items.iter().any(|i| std::ptr::eq(i, channel)) || self.file.single {
                    "this scenario".to_owned()
                } else {
                    format!("scenario `{}`", b.name)
                }
            ),
        ))
    }

    /// Leaves out, with a warning, a storm after the end of a run shortened on the command
    /// line.
    fn drop_late_storm(&self, b: &Block, a: &mut RunArgs) {
        if self.cmd.sets("duration")
            && a.stages.is_none()
            && a.storm_at.is_some_and(|t| t >= a.duration)
        {
            eprintln!(
                "sockstorm: warning: scenario `{}`: the storm at {:?} is after the end of the run (-d {:?}); no storm",
                b.name,
                a.storm_at.unwrap_or_default(),
                a.duration
            );
            a.storm_at = None;
            a.storm_every = None;
        }
    }

    /// Splits the run's totals over the scenarios' `args` (in the order of the blocks).
    pub(super) fn split_totals(&self, args: &mut [RunArgs]) -> Result<(), PlanError> {
        self.split_connections(args)?;
        self.split_connect_rate(args);
        self.split_auth_rate(args);
        self.split_message_rate(args);
        Ok(())
    }

    /// Connections: the total split by weight over the scenarios that hold a connection
    /// count (not stages, arrivals or handshake cycles) and do not set their own (a total on
    /// the command line is split over all of them). A scenario left with none is an error.
    fn split_connections(&self, args: &mut [RunArgs]) -> Result<(), PlanError> {
        let blocks = &self.file.blocks;
        let total_connections: u64 = if self.cmd.sets("connections") {
            self.cmd.flags.run.connections
        } else {
            self.file
                .top
                .value("connections")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100)
        };
        let holds = |a: &RunArgs| {
            a.stages.is_none() && a.arrival_rate.is_none() && a.mode == ModeArg::Session
        };
        let shared: Vec<usize> = (0..blocks.len())
            .filter(|&k| holds(&args[k]))
            .filter(|&k| {
                !blocks[k].own_connections || self.file.single || self.cmd.sets("connections")
            })
            .collect();
        let weights: Vec<f64> = shared
            .iter()
            .map(|&k| blocks[k].weight.unwrap_or(1.0))
            .collect();
        for (&k, n) in shared
            .iter()
            .zip(split_weighted(total_connections, &weights))
        {
            if n == 0 && args[k].stages.is_none() && args[k].arrival_rate.is_none() {
                return Err(self.r.err(
                    &blocks[k].name_span,
                    format!("scenario `{}` gets 0 of the {total_connections} connections by weight: raise `connections` or its weight", blocks[k].name),
                ));
            }
            args[k].connections = n;
        }
        Ok(())
    }

    /// The connect rate (2000/s unless given): split by peak connections over the paced
    /// session scenarios that do not set their own (the command line's is split over all).
    fn split_connect_rate(&self, args: &mut [RunArgs]) {
        let total_rate: Option<f64> = if self.cmd.sets("connect_rate") {
            self.cmd.flags.run.connect_rate
        } else {
            self.file
                .top
                .value("connect-rate")
                .and_then(|v| v.parse().ok())
        };
        let paced = |a: &RunArgs| a.arrival_rate.is_none() && a.mode == ModeArg::Session;
        let total: u64 = args
            .iter()
            .filter(|a| paced(a))
            .map(peak)
            .sum::<u64>()
            .max(1);
        for (k, a) in args.iter_mut().enumerate() {
            if !paced(a) || (self.file.blocks[k].own_rate && !self.cmd.sets("connect_rate")) {
                continue;
            }
            let rate = total_rate.unwrap_or(2000.0);
            a.connect_rate = Some(rate * peak(a) as f64 / total as f64)
                .filter(|r| *r > 0.0)
                .or(Some(rate));
        }
    }

    /// Per-connection auth at the top level: its rate is shared, by peak connections, by the
    /// scenarios that use it without a rate of their own.
    fn split_auth_rate(&self, args: &mut [RunArgs]) {
        let blocks = &self.file.blocks;
        let own_auth_rate = |k: usize| blocks[k].items.iter().any(|i| i.flag == "auth-rate");
        let apc: Vec<usize> = (0..blocks.len())
            .filter(|&k| args[k].auth_per_connection && !own_auth_rate(k))
            .collect();
        if apc.len() > 1 {
            let sum: u64 = apc.iter().map(|&k| peak(&args[k])).sum::<u64>().max(1);
            for &k in &apc {
                let a = &mut args[k];
                a.auth_rate = a.auth_rate * peak(a) as f64 / sum as f64;
            }
        }
    }

    /// A total message rate (the command line's, else the file's) is shared by the
    /// scenarios that send, by peak connections.
    fn split_message_rate(&self, args: &mut [RunArgs]) {
        let total_msgs = if self.cmd.sets("message_total_rate") {
            self.cmd.flags.run.conn.message_total_rate
        } else {
            self.file
                .top
                .value("message-total-rate")
                .and_then(|v| v.parse::<f64>().ok())
        };
        let Some(t) = total_msgs else {
            return;
        };
        let sends =
            |a: &RunArgs| a.conn.message.is_some() || a.conn.role == Some(RoleArg::Publisher);
        let senders: u64 = args
            .iter()
            .filter(|a| sends(a))
            .map(peak)
            .sum::<u64>()
            .max(1);
        for a in args.iter_mut() {
            a.conn.message_total_rate = sends(a).then(|| t * peak(a) as f64 / senders as f64);
        }
    }
}

/// The `run` words of scenario `b`: the run's url, the top level's items that the block does
/// not replace, the block's items (a header, a table member or a list replaces the top's as
/// a whole; a switch turned back off too), then the command line's words.
fn words(top: &Block, b: &Block, url: &str, cli: &[String]) -> Vec<String> {
    let mut words = vec![url.to_owned()];
    let replaced = |t: &Item| b.items.iter().any(|i| same_key(t, i));
    for i in top.items.iter().filter(|t| !replaced(t)).chain(&b.items) {
        if i.flag != "url" {
            words.extend(i.args.iter().cloned());
        }
    }
    words.extend(cli.iter().cloned());
    words
}

/// Whether a block's item replaces a top-level one: a table member or header by its dotted
/// key, anything else by its flag (so `on_open` replaces `send_on_open`).
fn same_key(top: &Item, block: &Item) -> bool {
    if top.key.contains('.') || block.key.contains('.') {
        top.key == block.key
    } else {
        top.flag == block.flag
    }
}

/// Connections a scenario opens at its peak: its count, or its largest stage target.
fn peak(a: &RunArgs) -> u64 {
    match &a.stages {
        Some(st) => st.0.iter().map(|s| s.target).max().unwrap_or(0),
        None => a.connections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_split_exactly() {
        assert_eq!(split_weighted(100, &[1.0, 1.0, 1.0]), vec![34, 33, 33]);
        assert_eq!(split_weighted(10, &[3.0, 1.0]), vec![8, 2]);
        assert_eq!(split_weighted(7, &[0.5, 0.25, 0.25]).iter().sum::<u64>(), 7);
        assert_eq!(split_weighted(0, &[1.0]), vec![0]);
    }
}
