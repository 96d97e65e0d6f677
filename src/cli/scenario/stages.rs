//! `stages = [{ duration = "30s", target = 100 }, ...]`: a load profile written as a list of
//! tables, checked stage by stage and turned into the `--stages` text (`30s:100,...`).

use super::reader::Reader;
use crate::plan::{parse, PlanError};
use toml::de::DeValue;
use toml::Spanned;

/// How a `stages` list is written, shown in its errors.
const EXAMPLE: &str =
    "stages = [{ duration = \"30s\", target = 1000 }, { duration = \"1m\", target = 0 }]";

impl Reader<'_> {
    /// `stages = [{ duration = "30s", target = 100 }, ...]` as the `--stages` text.
    pub(super) fn stages(&self, v: &Spanned<DeValue<'_>>) -> Result<String, PlanError> {
        let DeValue::Array(a) = v.get_ref() else {
            return Err(self.err(
                &v.span(),
                format!("`stages` is a list of tables: {EXAMPLE}"),
            ));
        };
        if a.iter().next().is_none() {
            return Err(self.err(&v.span(), format!("`stages` is empty: {EXAMPLE}")));
        }
        let parts = a
            .iter()
            .enumerate()
            .map(|(i, st)| self.stage(i + 1, st))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(parts.join(","))
    }

    /// Stage `number` (from 1) as `duration:target`.
    fn stage(&self, number: usize, st: &Spanned<DeValue<'_>>) -> Result<String, PlanError> {
        let DeValue::Table(t) = st.get_ref() else {
            return Err(self.err(
                &st.span(),
                format!("stage {number} is not a table: {EXAMPLE}"),
            ));
        };
        let (mut duration, mut target) = (None, None);
        for (k, val) in t.iter() {
            match k.get_ref().as_ref() {
                "duration" => duration = Some(self.stage_duration(number, val)?),
                "target" => target = Some(self.stage_target(number, val)?),
                other => {
                    return Err(self.err(
                        &k.span(),
                        format!(
                            "unknown key `{other}` in a stage: a stage has `duration` and `target`"
                        ),
                    ))
                }
            }
        }
        match (duration, target) {
            (Some(d), Some(n)) => Ok(format!("{d}:{n}")),
            _ => Err(self.err(
                &st.span(),
                format!("stage {number} needs both `duration` and `target`"),
            )),
        }
    }

    /// A stage's duration, as written, once checked to be a duration longer than 0.
    fn stage_duration(
        &self,
        number: usize,
        val: &Spanned<DeValue<'_>>,
    ) -> Result<String, PlanError> {
        let s = self.scalar("duration", val)?;
        parse::duration(&s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                self.err(
                    &val.span(),
                    format!("stage {number}: `{s}` is not a duration longer than 0 (e.g. \"30s\", \"2m\")"),
                )
            })?;
        Ok(s)
    }

    /// A stage's target: a whole number of connections, 0 or more.
    fn stage_target(&self, number: usize, val: &Spanned<DeValue<'_>>) -> Result<i64, PlanError> {
        let bad = || {
            self.err(
                &val.span(),
                format!("stage {number}: target is a number of connections, 0 or more"),
            )
        };
        let DeValue::Integer(x) = val.get_ref() else {
            return Err(bad());
        };
        let x = i64::from_str_radix(x.as_str(), x.radix()).map_err(|_| bad())?;
        if x < 0 {
            return Err(bad());
        }
        Ok(x)
    }
}
