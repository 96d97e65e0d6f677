//! The reader of one scenario file. It knows the file's text, so it turns a byte span into
//! `FILE:LINE:COL` and every error into one placed there; it knows the file's directory, so
//! paths in values are made relative to the file, not to the working directory; and it knows
//! the `run` flags, so a key is checked against them and a misspelt one gets a suggestion.
//! What a key becomes is in [`super::items`], the blocks it reads in [`super::blocks`].

use super::keys::{closest, kind, SPECIAL};
use crate::cli::args::RunWords as Flags;
use crate::plan::PlanError;
use clap::CommandFactory;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::{DeArray, DeValue};
use toml::Spanned;

/// The reader: the file's text (for positions) and its directory (for relative paths).
pub(super) struct Reader<'a> {
    path: &'a Path,
    /// The file's contents, which spans index.
    pub(super) text: &'a str,
    /// The file's directory: relative paths in values start here.
    pub(super) base: PathBuf,
    /// Each `run` flag's long name, whether it takes a value, and whether it repeats.
    longs: Vec<(String, bool, bool)>,
}

impl<'a> Reader<'a> {
    /// A reader of the file at `path` whose contents are `text`.
    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        let longs = Flags::command()
            .get_arguments()
            .filter_map(|a| {
                let long = a.get_long()?.to_owned();
                let takes = a.get_action().takes_values();
                let repeat = matches!(a.get_action(), clap::ArgAction::Append);
                Some((long, takes, repeat))
            })
            .collect();
        Self {
            path,
            text,
            base: path.parent().map(Path::to_owned).unwrap_or_default(),
            longs,
        }
    }
}

impl Reader<'_> {
    /// `FILE:LINE:COL` of a byte offset.
    pub(super) fn at(&self, offset: usize) -> String {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{}:{line}:{col}", self.path.display())
    }

    /// The error `reason`, placed at the start of `span`.
    pub(super) fn err(&self, span: &Range<usize>, reason: impl Into<String>) -> PlanError {
        PlanError::Scenario {
            at: self.at(span.start),
            reason: reason.into(),
        }
    }

    /// (takes a value, repeatable) of a long flag, if it is one.
    pub(super) fn flag(&self, name: &str) -> Option<(bool, bool)> {
        self.longs
            .iter()
            .find(|(l, _, _)| l == name)
            .map(|(_, v, r)| (*v, *r))
    }

    /// The known keys, for suggestions.
    fn known(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .longs
            .iter()
            .map(|(l, _, _)| l.replace('-', "_"))
            .collect();
        k.extend(SPECIAL.iter().map(|s| s.to_string()));
        k
    }

    /// The error for an unknown `key` at `span`, found `scope` (e.g. "at the top level"),
    /// with the nearest known key or a pointer to the flags.
    pub(super) fn unknown(&self, key: &str, span: &Range<usize>, scope: &str) -> PlanError {
        let hint = match closest(key, &self.known()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "every `sockstorm run --flag` is a key (with _ for -), see examples/".into(),
        };
        self.err(span, format!("unknown key `{key}` {scope}: {hint}"))
    }

    /// A string, number or boolean as flag text; anything else is an error at the value.
    pub(super) fn scalar(&self, key: &str, v: &Spanned<DeValue<'_>>) -> Result<String, PlanError> {
        match v.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .map(|n| n.to_string())
                .map_err(|_| self.err(&v.span(), format!("`{key}`: integer out of range"))),
            DeValue::Float(f) => Ok(f.as_str().to_owned()),
            DeValue::Boolean(b) => Ok(b.to_string()),
            other => Err(self.err(
                &v.span(),
                format!("`{key}` takes a string or a number, not {}", kind(other)),
            )),
        }
    }

    /// One scalar or a list of them, each as flag text with its own span.
    pub(super) fn strings(
        &self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
    ) -> Result<Vec<(String, Range<usize>)>, PlanError> {
        match v.get_ref() {
            DeValue::Array(a) => self.array_strings(key, a),
            _ => Ok(vec![(self.scalar(key, v)?, v.span())]),
        }
    }

    /// Each element of a list as flag text, with its span.
    pub(super) fn array_strings(
        &self,
        key: &str,
        a: &DeArray<'_>,
    ) -> Result<Vec<(String, Range<usize>)>, PlanError> {
        a.iter()
            .map(|e| Ok((self.scalar(key, e)?, e.span())))
            .collect()
    }

    /// A path value made relative to the file's directory.
    pub(super) fn path(&self, p: &str) -> String {
        let pb = Path::new(p);
        if pb.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(pb).display().to_string()
        }
    }
}
