//! A scenario file's `[find_max]` table: the capacity search `sockstorm find-max FILE.toml`
//! runs on the file's scenarios (`mode`, `slo`, `start`, `max`, `factor`, `precision`,
//! `step_hold`). Each value is checked here, at its place in the file; `sockstorm run` on the
//! same file ignores the table.

use super::reader::Reader;
use crate::plan::find_max::{SearchMode, SearchWords};
use crate::plan::{parse, PlanError};
use std::path::Path;
use toml::de::{DeTable, DeValue};

/// The table's mode (if it names one) and settings; `None` when the file has no table.
pub(in crate::cli) fn read(
    path: &Path,
) -> Result<Option<(Option<SearchMode>, SearchWords)>, PlanError> {
    let text = crate::plan::files::read_text_limited(path, crate::plan::files::SCENARIO_FILE_MAX)
        .map_err(|reason| PlanError::File {
        flag: "scenario file",
        path: path.to_owned(),
        reason,
    })?;
    let r = Reader::new(path, &text);
    let doc = DeTable::parse(&text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        r.err(&(at..at), format!("invalid TOML: {}", e.message().trim()))
    })?;
    let Some(table) = doc.get_ref().get("find_max") else {
        return Ok(None);
    };
    let DeValue::Table(t) = table.get_ref() else {
        return Err(r.err(
            &table.span(),
            "`find_max` is a table: write it as [find_max]",
        ));
    };
    let mut mode = None;
    let mut w = SearchWords::default();
    for (k, v) in t.iter() {
        let key = k.get_ref().as_ref();
        let at = v.span();
        let number = |s: &str| {
            s.parse::<f64>()
                .map_err(|_| r.err(&at, format!("`{key}`: `{s}` is not a number")))
        };
        match key {
            "mode" => {
                let s = r.scalar(key, v)?;
                mode = Some(SearchMode::parse(&s).map_err(|e| r.err(&at, format!("`mode`: {e}")))?);
            }
            "slo" | "slos" => w.slo = r.strings(key, v)?.into_iter().map(|(s, _)| s).collect(),
            "start" => w.start = Some(number(&r.scalar(key, v)?)?),
            "max" => w.max = Some(number(&r.scalar(key, v)?)?),
            "factor" => w.factor = Some(number(&r.scalar(key, v)?)?),
            "precision" => w.precision = Some(r.scalar(key, v)?),
            "step_hold" => {
                let s = r.scalar(key, v)?;
                w.step_hold = Some(parse::duration(&s).map_err(|e| r.err(&at, format!("`step_hold`: {e}")))?);
            }
            _ => {
                return Err(r.err(
                    &k.span(),
                    format!("unknown key `{key}` in [find_max]: the keys are mode, slo, start, max, factor, precision and step_hold"),
                ))
            }
        }
    }
    Ok(Some((mode, w)))
}
