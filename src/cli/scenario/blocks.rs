//! The blocks of a scenario file: the top level (defaults for every scenario, plus the keys
//! that describe the whole run) and each `[[scenario]]` (its name, weight, start and
//! thresholds, and keys that override the top's). A block is read into flag [`Item`]s but not
//! yet merged or validated as a run.

use super::keys::{run_wide, Item, SPECIAL};
use super::reader::Reader;
use crate::plan::{parse, PlanError};
use std::ops::Range;
use std::time::Duration;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A `[[scenario]]` block (or the top level when there is none), read but not validated.
#[derive(Debug)]
pub(super) struct Block {
    /// The scenario's name, which tags its metrics (`default` when the file has none).
    pub(super) name: String,
    /// Where the name is (the block itself for an unnamed one): errors of the whole
    /// scenario are reported here.
    pub(super) name_span: Range<usize>,
    /// The flags its keys set, in the file's order.
    pub(super) items: Vec<Item>,
    /// Its share of the connections and rates (1 when not given).
    pub(super) weight: Option<f64>,
    /// How long after the run's start the scenario begins.
    pub(super) start: Duration,
    /// Where `start` is.
    pub(super) start_span: Range<usize>,
    /// Its threshold expressions, each with where it is.
    pub(super) thresholds: Vec<(String, Range<usize>)>,
    /// The block sets its own connection count.
    pub(super) own_connections: bool,
    /// The block sets its own connect rate.
    pub(super) own_rate: bool,
}

impl Block {
    /// A block with no keys yet, named `default`, whose errors are placed at `span`.
    pub(super) fn unnamed(span: Range<usize>) -> Self {
        Self {
            name: "default".into(),
            name_span: span.clone(),
            items: Vec::new(),
            weight: None,
            start: Duration::ZERO,
            start_span: span,
            thresholds: Vec::new(),
            own_connections: false,
            own_rate: false,
        }
    }

    /// The block's `url` item, if it has one.
    pub(super) fn url_item(&self) -> Option<&Item> {
        self.items.iter().find(|i| i.flag == "url")
    }

    /// The url the block gives, as written.
    pub(super) fn url(&self) -> Option<String> {
        self.url_item()
            .map(|i| i.args[0].trim_start_matches("--url=").to_owned())
    }

    /// The value the block gives the flag `flag` (the text after `=` of its first word).
    pub(super) fn value(&self, flag: &str) -> Option<String> {
        self.items
            .iter()
            .find(|i| i.flag == flag)
            .and_then(|i| i.args.first())
            .and_then(|a| a.split_once('=').map(|(_, v)| v.to_owned()))
    }
}

/// A scenario file read: its top level and its scenarios.
pub(super) struct ScenarioFile {
    /// The top level: defaults for every scenario, and the run-wide keys.
    pub(super) top: Block,
    /// The `[[scenario]]` blocks, or one empty `default` block when the file has none.
    pub(super) blocks: Vec<Block>,
    /// The file has no `[[scenario]]`: messages do not name the scenario, and thresholds
    /// are not tagged with it.
    pub(super) single: bool,
}

impl ScenarioFile {
    /// The prefix that names scenario `b` in a message (none when there is just one).
    pub(super) fn scope(&self, b: &Block) -> String {
        if self.single {
            String::new()
        } else {
            format!("scenario `{}`: ", b.name)
        }
    }
}

impl Reader<'_> {
    /// Parses the file as TOML and reads its top level and its `[[scenario]]` blocks, whose
    /// names must be unique.
    pub(super) fn file(&self) -> Result<ScenarioFile, PlanError> {
        let doc = DeTable::parse(self.text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            self.err(&(at..at), format!("invalid TOML: {}", e.message().trim()))
        })?;
        let top_t = doc.get_ref();
        let top = self.block(top_t, true, 0..0)?;
        let mut blocks = match top_t.get("scenario") {
            Some(sc) => self.scenarios(sc)?,
            None => Vec::new(),
        };
        let single = blocks.is_empty();
        if single {
            blocks.push(Block::unnamed(0..0));
        }
        self.check_unique(&blocks)?;
        Ok(ScenarioFile {
            top,
            blocks,
            single,
        })
    }

    /// The `[[scenario]]` blocks, from the top level's `scenario` value.
    fn scenarios(&self, sc: &Spanned<DeValue<'_>>) -> Result<Vec<Block>, PlanError> {
        let DeValue::Array(a) = sc.get_ref() else {
            return Err(self.err(
                &sc.span(),
                "`scenario` is a list of blocks: write each as [[scenario]]",
            ));
        };
        let mut blocks = Vec::new();
        for s in a.iter() {
            let DeValue::Table(t) = s.get_ref() else {
                return Err(self.err(
                    &s.span(),
                    "each scenario is a table: write it as [[scenario]]",
                ));
            };
            blocks.push(self.block(t, false, s.span())?);
        }
        Ok(blocks)
    }

    /// An error at the second of two scenarios with the same name.
    fn check_unique(&self, blocks: &[Block]) -> Result<(), PlanError> {
        for (i, b) in blocks.iter().enumerate() {
            if let Some(first) = blocks[..i].iter().find(|o| o.name == b.name) {
                return Err(self.err(
                    &b.name_span,
                    format!("scenario name `{}` is used twice (also at {}): names tag the metrics, make them unique", b.name, self.at(first.name_span.start)),
                ));
            }
        }
        Ok(())
    }

    /// Reads a block's keys. `top` is the top level (which may hold run-wide keys).
    fn block(&self, t: &DeTable<'_>, top: bool, span: Range<usize>) -> Result<Block, PlanError> {
        let mut b = Block::unnamed(span);
        let mut named = false;
        for (k, v) in t.iter() {
            let key = k.get_ref().as_ref();
            // `[find_max]` is read by `sockstorm find-max` (scenario::find_max).
            if top && (key == "scenario" || key == "find_max") {
                continue;
            }
            if !top && run_wide(key) && key != "url" {
                return Err(self.err(
                    &k.span(),
                    format!(
                        "`{key}` applies to the whole run: move it above the first [[scenario]]"
                    ),
                ));
            }
            match key {
                // Read from the command line only (`run FILE.toml --html report.html`).
                "html" => {
                    return Err(self.err(
                        &k.span(),
                        "`html` is not a scenario key: give --html FILE on the command line, or make the page from the JSON (sockstorm report RESULT.json -o FILE)",
                    ))
                }
                "name" if !top => {
                    b.name = self.scenario_name(v)?;
                    b.name_span = v.span();
                    named = true;
                }
                "weight" if !top => b.weight = Some(self.weight(v)?),
                "start" if !top => {
                    let s = self.scalar(key, v)?;
                    b.start = parse::duration(&s)
                        .map_err(|e| self.err(&v.span(), format!("`start`: {e}")))?;
                    b.start_span = v.span();
                }
                "thresholds" | "threshold" => b.thresholds.extend(self.strings(key, v)?),
                "scenario" | "name" | "weight" | "start" => {
                    return Err(self.err(
                        &k.span(),
                        format!("`{key}` belongs in a [[scenario]] block"),
                    ))
                }
                _ => {
                    if self.flag(&key.replace('_', "-")).is_none() && !SPECIAL.contains(&key) {
                        let scope = if top {
                            "at the top level"
                        } else {
                            "in [[scenario]]"
                        };
                        return Err(self.unknown(key, &k.span(), scope));
                    }
                    b.own_connections |= key == "connections";
                    b.own_rate |= key == "connect_rate";
                    self.item(key, v, &mut b.items)?;
                }
            }
        }
        if !top && !named {
            return Err(PlanError::Scenario {
                at: self.at(b.name_span.start),
                reason: "this [[scenario]] has no `name`: add name = \"...\" (it tags its metrics)"
                    .into(),
            });
        }
        Ok(b)
    }

    /// A scenario's `name`: 1-32 letters, digits, `_`, `-` or `.`, as it tags metrics.
    fn scenario_name(&self, v: &Spanned<DeValue<'_>>) -> Result<String, PlanError> {
        let s = self.scalar("name", v)?;
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !ok {
            return Err(self.err(
                &v.span(),
                format!("scenario name `{s}`: use 1-32 letters, digits, `_`, `-` or `.` (it tags metrics)"),
            ));
        }
        Ok(s)
    }

    /// A scenario's `weight`: a finite number above 0.
    fn weight(&self, v: &Spanned<DeValue<'_>>) -> Result<f64, PlanError> {
        let s = self.scalar("weight", v)?;
        match s.parse::<f64>() {
            Ok(w) if w.is_finite() && w > 0.0 => Ok(w),
            _ => Err(self.err(
                &v.span(),
                format!("`weight` must be a number above 0, got {s}"),
            )),
        }
    }
}
