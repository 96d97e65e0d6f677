//! What is checked before anything is added: every document has this layout version and the
//! first one's plan identity, and no run is given twice.

use super::error::ResultsError;
use super::read::Input;
use super::{num, real};
use crate::results::identity::first_difference;
use crate::results::SCHEMA_VERSION;
use serde_json::{json, Value};

/// What [`inputs`] lets through: each run once, what `--partial` skipped, and the segments
/// missing from a split run (only with `--partial`).
pub(super) struct Checked<'a> {
    /// The documents to merge.
    pub kept: Vec<&'a Input>,
    /// One line per document skipped as a duplicate run or segment.
    pub skipped: Vec<String>,
    /// Segments of the split run that no document holds (0-based), and their count.
    pub missing: Option<(Vec<u64>, u64)>,
}

/// The inputs to merge: every document has this layout version and the first one's plan,
/// no run is given twice, and a split run (`--segment I/N`) has each of its N segments
/// exactly once and no unsplit run beside them. Without `partial` a duplicate or a missing
/// segment is an error; with it, each run and segment is merged once and the gaps reported.
pub(super) fn inputs(inputs: &[Input], partial: bool) -> Result<Checked<'_>, ResultsError> {
    let first = &inputs[0];
    let mut kept: Vec<&Input> = Vec::new();
    let mut seen: Vec<(String, &str)> = Vec::new();
    let mut segments = Segments::default();
    let mut skipped = Vec::new();
    for i in inputs {
        schema(i)?;
        same_plan(first, i)?;
        let rows = rows(&i.name, &i.doc);
        let ids: Vec<String> = rows
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
        if let Some(dup) = segments.add(&i.name, &rows)? {
            if !partial {
                return Err(dup);
            }
            skipped.push(format!("{dup}: merged once"));
            continue;
        }
        seen.extend(ids.into_iter().map(|id| (id, i.name.as_str())));
        kept.push(i);
    }
    let missing = segments.missing();
    if let Some((gaps, count)) = &missing {
        if !partial {
            return Err(ResultsError::MissingSegments {
                missing: list(gaps),
                count: *count,
            });
        }
    }
    Ok(Checked {
        kept,
        skipped,
        missing,
    })
}

/// The segments seen so far: their count and, per index, the document holding it.
#[derive(Default)]
struct Segments {
    /// N of `--segment I/N`, once a document gave it; and the document.
    count: Option<(u64, String)>,
    /// The first document without a segment (an unsplit run).
    whole: Option<String>,
    /// Index → document.
    by_index: Vec<(u64, String)>,
}

impl Segments {
    /// Records the rows of document `file`. A segment already held by another document is
    /// returned as the error to raise (or skip, with `--partial`); a different segment count,
    /// or segments beside an unsplit run, is an error either way.
    fn add(&mut self, file: &str, rows: &[Value]) -> Result<Option<ResultsError>, ResultsError> {
        let mut mine = Vec::new();
        for r in rows {
            let (Some(index), Some(count)) = (r["segment"].as_u64(), r["segments"].as_u64()) else {
                if let Some((n, other)) = &self.count {
                    return Err(ResultsError::SegmentMix {
                        whole: file.to_owned(),
                        split: other.clone(),
                        count: *n,
                    });
                }
                self.whole.get_or_insert_with(|| file.to_owned());
                continue;
            };
            if let Some(whole) = &self.whole {
                return Err(ResultsError::SegmentMix {
                    whole: whole.clone(),
                    split: file.to_owned(),
                    count,
                });
            }
            match &self.count {
                Some((n, other)) if *n != count => {
                    return Err(ResultsError::SegmentCount {
                        file: file.to_owned(),
                        count,
                        other: other.clone(),
                        other_count: *n,
                    })
                }
                Some(_) => {}
                None => self.count = Some((count, file.to_owned())),
            }
            if let Some((_, other)) = self.by_index.iter().find(|(k, _)| *k == index) {
                return Ok(Some(ResultsError::DuplicateSegment {
                    file: file.to_owned(),
                    other: other.clone(),
                    index,
                    count,
                }));
            }
            mine.push((index, file.to_owned()));
        }
        self.by_index.extend(mine);
        Ok(None)
    }

    /// The indices below the count that no document held, if any.
    fn missing(&self) -> Option<(Vec<u64>, u64)> {
        let (n, _) = self.count.as_ref()?;
        let gaps: Vec<u64> = (0..*n)
            .filter(|k| !self.by_index.iter().any(|(i, _)| i == k))
            .collect();
        (!gaps.is_empty()).then_some((gaps, *n))
    }
}

/// `0, 2, 5` (at most 20, then how many more).
fn list(v: &[u64]) -> String {
    let mut s: Vec<String> = v.iter().take(20).map(u64::to_string).collect();
    if v.len() > 20 {
        s.push(format!("and {} more", v.len() - 20));
    }
    s.join(", ")
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
        "segment": doc["segment"]["index"],
        "segments": doc["segment"]["count"],
        "segment_source": doc["segment"]["source"],
        "start_offset_us": doc["start_at"]["offset_us"],
        "connections": doc["segment"]["connections"].as_u64().unwrap_or_else(|| num(&doc["settings"]["connections"])),
        "established": num(&doc["counters"]["established"]),
        "peak_open": num(&p["peak_open"]),
        "failures": doc["failures"].as_object().map_or(0, |f| f.values().map(num).sum::<u64>()),
        "client_cpu_s": ((real(&p["cpu_user_s"]) + real(&p["cpu_sys_s"])) * 1000.0).round() / 1000.0,
        "elapsed_s": doc["elapsed_s"],
        "backend": doc["backend"]["name"],
        "verdict": doc["verdict"],
        "generator": doc["generator"]["verdict"],
    })]
}
