//! The run's thresholds and `--abort-on-fail`. The top level's thresholds are overall (or
//! tagged with a scenario), a block's are its own scenario's; the command line's come last,
//! and every tag must name a scenario of the file.

use super::blocks::Block;
use super::Input;
use crate::plan::threshold::Threshold;
use crate::plan::{parse, PlanError};
use std::ops::Range;
use std::time::Duration;

impl Input<'_> {
    /// The file's thresholds, then the command line's.
    pub(super) fn thresholds(&self) -> Result<Vec<Threshold>, PlanError> {
        let (top, blocks, single) = (&self.file.top, &self.file.blocks, self.file.single);
        let names: Vec<&str> = blocks.iter().map(|b| b.name.as_str()).collect();
        let mut thresholds = Vec::new();
        for (b, tagged) in std::iter::once((top, false)).chain(blocks.iter().map(|b| (b, !single)))
        {
            for (expr, sp) in &b.thresholds {
                thresholds.push(self.file_threshold(b, tagged, expr, sp, &names)?);
            }
        }
        for t in &self.cmd.flags.run.thresholds {
            if let Some(tag) = &t.scenario {
                if !names.contains(&tag.as_str()) {
                    return Err(PlanError::Invalid {
                        flag: "--threshold",
                        reason: format!(
                            "`{}`: no scenario is named `{tag}` (scenarios: {})",
                            t.expr,
                            names.join(", ")
                        ),
                    });
                }
            }
            thresholds.push(t.clone());
        }
        Ok(thresholds)
    }

    /// Threshold `expr` of block `b`, at `sp`: parsed, tagged with `b`'s scenario when
    /// `tagged`, its tag checked against the scenarios' `names` (and dropped when the file
    /// has just one scenario).
    fn file_threshold(
        &self,
        b: &Block,
        tagged: bool,
        expr: &str,
        sp: &Range<usize>,
        names: &[&str],
    ) -> Result<Threshold, PlanError> {
        let r = self.r;
        let single = self.file.single;
        let mut t = Threshold::parse(expr)
            .map_err(|e| r.err(sp, format!("threshold `{expr}`: {}", e.reason)))?;
        if tagged {
            match &t.scenario {
                Some(other) if other != &b.name => {
                    return Err(r.err(
                        sp,
                        format!(
                            "threshold `{expr}` is in scenario `{}` but tagged `{other}`",
                            b.name
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    // The metric is what comes before the first `:` outside its tag.
                    let split = match (t.expr.find('{'), t.expr.find('}')) {
                        (Some(o), Some(c)) if o < c && !t.expr[..o].contains(':') => {
                            t.expr[c..].find(':').map(|i| i + c)
                        }
                        _ => t.expr.find(':'),
                    };
                    if let Some(at) = split {
                        let (m, rest) = (t.expr[..at].trim(), &t.expr[at + 1..]);
                        t.expr = match m.strip_suffix('}') {
                            Some(open) => format!("{open},scenario:{}}}:{rest}", b.name),
                            None => format!("{m}{{scenario:{}}}:{rest}", b.name),
                        };
                    }
                    t.scenario = Some(b.name.clone());
                }
            }
        }
        if let Some(tag) = &t.scenario {
            if !names.contains(&tag.as_str()) && !single {
                return Err(r.err(
                    sp,
                    format!(
                        "threshold `{expr}`: no scenario is named `{tag}` (scenarios: {})",
                        names.join(", ")
                    ),
                ));
            }
            if single {
                t.scenario = None;
            }
        }
        Ok(t)
    }

    /// `abort_on_fail` (the command line's, else the file's), which needs a threshold.
    pub(super) fn abort_on_fail(
        &self,
        thresholds: &[Threshold],
    ) -> Result<Option<Duration>, PlanError> {
        let abort_on_fail = if self.cmd.sets("abort_on_fail") {
            self.cmd.flags.run.abort_on_fail
        } else {
            self.file
                .top
                .value("abort-on-fail")
                .and_then(|v| parse::duration(&v).ok())
        };
        if abort_on_fail.is_some() && thresholds.is_empty() {
            return Err(PlanError::Invalid {
                flag: "--abort-on-fail",
                reason: "needs at least one threshold to check".into(),
            });
        }
        Ok(abort_on_fail)
    }
}
