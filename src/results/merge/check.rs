//! What is checked before anything is added: every document has this layout version and the
//! first one's plan identity, and no run is given twice.

use super::error::ResultsError;
use super::read::Input;
use super::{num, real};
use crate::results::identity::first_difference;
use crate::results::SCHEMA_VERSION;
use serde_json::{json, Value};

/// The inputs to merge (each run once) and, with `partial`, what was skipped as a duplicate;
/// without it, a duplicate is an error.
pub(super) fn inputs(
    inputs: &[Input],
    partial: bool,
) -> Result<(Vec<&Input>, Vec<String>), ResultsError> {
    let first = &inputs[0];
    let mut kept: Vec<&Input> = Vec::new();
    let mut seen: Vec<(String, &str)> = Vec::new();
    let mut skipped = Vec::new();
    for i in inputs {
        schema(i)?;
        same_plan(first, i)?;
        let ids: Vec<String> = rows(&i.name, &i.doc)
            .iter()
            .filter_map(|r| r["run_id"].as_str().map(str::to_owned))
            .collect();
        if let Some((id, other)) = ids.iter().find_map(|id| seen.iter().find(|(s, _)| s == id)) {
            if !partial {
                return Err(ResultsError::Duplicate {
                    file: i.name.clone(),
                    other: (*other).to_owned(),
                    run_id: id.clone(),
                });
            }
            skipped.push(format!(
                "`{}` is the same run as `{other}` (run_id {id}): merged once",
                i.name
            ));
            continue;
        }
        seen.extend(ids.into_iter().map(|id| (id, i.name.as_str())));
        kept.push(i);
    }
    Ok((kept, skipped))
}

fn schema(i: &Input) -> Result<(), ResultsError> {
    let v = &i.doc["schema_version"];
    if v.as_u64() == Some(u64::from(SCHEMA_VERSION)) {
        return Ok(());
    }
    Err(ResultsError::Schema {
        file: i.name.clone(),
        found: v.to_string(),
        expected: SCHEMA_VERSION,
    })
}

/// `i` is a run of `first`'s plan: the same `plan.identity`, else the first key of
/// `plan.keys` that differs is named.
fn same_plan(first: &Input, i: &Input) -> Result<(), ResultsError> {
    let (a, b) = (&first.doc["plan"], &i.doc["plan"]);
    if a["identity"].is_string() && a["identity"] == b["identity"] {
        return Ok(());
    }
    let (key, ours, theirs) = first_difference(&a["keys"], &b["keys"]).map_or_else(
        || {
            (
                "plan.identity".to_owned(),
                a["identity"].clone(),
                b["identity"].clone(),
            )
        },
        |(k, x, y)| (format!("plan.keys.{k}"), x, y),
    );
    Err(ResultsError::PlanMismatch {
        file: i.name.clone(),
        first: first.name.clone(),
        key,
        theirs: theirs.to_string(),
        ours: ours.to_string(),
    })
}

/// The per-run rows of a document: its `merged.documents` if it is a merge, else one row
/// made from it (file, host, run id, start, sessions, client CPU, backend, verdict).
pub(super) fn rows(file: &str, doc: &Value) -> Vec<Value> {
    if let Some(rows) = doc["merged"]["documents"].as_array() {
        return rows.clone();
    }
    let p = &doc["process"];
    vec![json!({
        "file": file,
        "host": doc["host"]["name"],
        "run_id": doc["run_id"],
        "started_unix_us": doc["host"]["started_unix_us"],
        "established": num(&doc["counters"]["established"]),
        "peak_open": num(&p["peak_open"]),
        "failures": doc["failures"].as_object().map_or(0, |f| f.values().map(num).sum::<u64>()),
        "client_cpu_s": ((real(&p["cpu_user_s"]) + real(&p["cpu_sys_s"])) * 1000.0).round() / 1000.0,
        "elapsed_s": doc["elapsed_s"],
        "backend": doc["backend"]["name"],
        "verdict": doc["verdict"],
    })]
}
