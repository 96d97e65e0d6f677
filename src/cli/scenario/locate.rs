//! Plan errors traced back to the file. The plan names a bad value by its flag; here the flag
//! leads back to the key that set it (in the scenario's block first, then at the top), so
//! the error reads `FILE:LINE:COL: `key`: what is wrong`. Values given on the command line
//! keep their errors as they are. A target that does not resolve is placed at the `url`.

use super::blocks::Block;
use super::Input;
use crate::plan::PlanError;

impl Input<'_> {
    /// A plan error of scenario `b`, named by flag, placed at the key that set the flag (the
    /// block's first, then the top level's); errors of command-line flags are returned as
    /// they are.
    pub(super) fn locate(&self, e: PlanError, b: &Block) -> PlanError {
        let (r, top) = (self.r, &self.file.top);
        let PlanError::Invalid { flag, reason } = &e else {
            return match e {
                PlanError::BadUrl { .. } | PlanError::Resolve { .. } => {
                    let at = top.url_item().map_or(0, |i| i.span.start);
                    PlanError::Scenario {
                        at: r.at(at),
                        reason: e.to_string(),
                    }
                }
                e => e,
            };
        };
        let flags: Vec<&str> = flag.split('/').map(|f| f.trim_start_matches('-')).collect();
        // A value given on the command line is reported as such, not at the file's key.
        if flags.iter().any(|f| self.cmd.sets(&f.replace('-', "_"))) {
            return e;
        }
        let hit = b
            .items
            .iter()
            .chain(&top.items)
            .find(|i| flags.contains(&i.flag.as_str()));
        let scope = self.file.scope(b);
        match hit {
            Some(i) => PlanError::Scenario {
                at: r.at(i.span.start),
                reason: format!("{scope}`{}`: {reason}", i.key),
            },
            None => PlanError::Scenario {
                at: r.at(b.name_span.start),
                reason: format!("{scope}{flag}: {reason}"),
            },
        }
    }
}

/// A target that does not resolve, placed at `url_at` (the file's top-level `url`); other
/// errors as they are.
pub(super) fn unresolved_target(url_at: &str, e: PlanError) -> PlanError {
    match e {
        PlanError::Resolve { .. } => PlanError::Scenario {
            at: url_at.to_owned(),
            reason: e.to_string(),
        },
        e => e,
    }
}
