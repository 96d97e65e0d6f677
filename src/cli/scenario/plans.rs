//! Each scenario's `RunArgs` built into its `RunPlan`, with the checks that need the plans:
//! a scenario's `start` falls within the run, and fan-out scenarios name their channels all
//! or none.

use super::blocks::Block;
use super::Input;
use crate::cli::args::RunArgs;
use crate::plan::{PlanError, RunPlan};

impl Input<'_> {
    /// The scenarios' plans, in the order of the blocks, with their errors traced back to
    /// the key that caused them.
    pub(super) fn plans(&self, args: &[RunArgs]) -> Result<Vec<RunPlan>, PlanError> {
        let scenarios = self
            .file
            .blocks
            .iter()
            .zip(args)
            .map(|(b, a)| self.plan(b, a))
            .collect::<Result<Vec<_>, _>>()?;
        self.check_channels(&scenarios)?;
        Ok(scenarios)
    }

    /// Scenario `b`'s plan from its `RunArgs` `a`, named and started as the block says (a
    /// staged scenario's run is longer by its start).
    fn plan(&self, b: &Block, a: &RunArgs) -> Result<RunPlan, PlanError> {
        let mut plan = a.plan().map_err(|e| self.locate(e, b))?;
        plan.name = b.name.clone();
        plan.start = b.start;
        if !b.start.is_zero() {
            if a.stages.is_some() {
                plan.duration += b.start;
            }
            if b.start >= plan.duration {
                return Err(self.r.err(
                    &b.start_span,
                    format!(
                        "`start` {:?} is not within the run ({:?})",
                        b.start, plan.duration
                    ),
                ));
            }
        }
        Ok(plan)
    }

    /// Messages are owed per channel: every fan-out scenario names its channel, or none does.
    fn check_channels(&self, scenarios: &[RunPlan]) -> Result<(), PlanError> {
        let named = |p: &RunPlan| p.conn.fanout.is_some() && p.channel.is_some();
        if !scenarios.iter().any(named) {
            return Ok(());
        }
        if let Some(k) = scenarios
            .iter()
            .position(|p| p.conn.fanout.is_some() && p.channel.is_none())
        {
            let b = &self.file.blocks[k];
            return Err(self.r.err(
                &b.name_span,
                format!(
                    "scenario `{}` has a role but no `channel` while others name theirs: give it its `channel` (messages are owed to the subscribers of their channel)",
                    b.name
                ),
            ));
        }
        Ok(())
    }
}
