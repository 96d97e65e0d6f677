//! A merged section read back into [`ShardStats`], so the plan's thresholds are evaluated on
//! merged data by the same code as a single run's ([`crate::plan::threshold::Threshold::eval`]).

use super::error::ResultsError;
use super::{num, Part};
use crate::metrics::named::{CheckStats, RequestStats};
use crate::metrics::{Hist, ShardStats};
use crate::results::hdr;
use serde_json::Value;

/// The counters, histograms, named requests and checks of merged section `v` (the run's or a
/// scenario's) as statistics; `file` names it in errors.
pub(super) fn of_section(file: &str, v: &Value) -> Result<ShardStats, ResultsError> {
    let mut s = ShardStats::new();
    for (k, n) in v["counters"].as_object().into_iter().flatten() {
        if let Some(c) = s.counters.by_name_mut(k) {
            *c = num(n);
        }
    }
    let part = [Part { file, v }];
    for h in Hist::ALL {
        let sum = super::measures::add_hists(&part, &format!("histograms.{}", h.name()), |v| {
            v["histograms"].get(h.name())
        })?;
        s.add_hist(h, &sum);
    }
    for (name, r) in v["requests"].as_object().into_iter().flatten() {
        let latency = match r["reply_latency"]["hdr"].as_str() {
            Some(t) => hdr::decode(t).map_err(|reason| ResultsError::Histogram {
                file: file.to_owned(),
                name: format!("requests.{name}.reply_latency"),
                reason,
            })?,
            None => crate::metrics::new_histogram(),
        };
        s.named.requests.push(RequestStats {
            name: name.as_str().into(),
            latency,
            sent: num(&r["sent"]),
            answered: num(&r["answered"]),
            unanswered: num(&r["unanswered"]),
            unsent: num(&r["unsent"]),
        });
    }
    for (name, c) in v["checks"].as_object().into_iter().flatten() {
        s.named.checks.push(CheckStats {
            name: name.as_str().into(),
            passed: num(&c["passed"]),
            failed: num(&c["failed"]),
        });
    }
    Ok(s)
}
