//! k6-style stages: the number of open connections ramps linearly from one target to the
//! next over each stage's duration (`--stages 30s:1000,1m:1000,10s:0`).

use std::time::Duration;

/// One stage: reach `target` connections (run-wide) over `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// How long the ramp to `target` takes.
    pub duration: Duration,
    /// Connections open at the end of the stage.
    pub target: u64,
}

/// The `--stages` value (one argument holding every stage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages(pub Vec<Stage>);

/// Parses the `--stages` value.
pub fn parse_flag(s: &str) -> Result<Stages, String> {
    parse(s).map(Stages)
}

/// Parses `DUR:TARGET,DUR:TARGET,...`.
pub fn parse(s: &str) -> Result<Vec<Stage>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (d, t) = part
            .split_once(':')
            .ok_or_else(|| format!("`{part}`: expected DURATION:TARGET, e.g. 30s:1000"))?;
        let duration = crate::plan::parse::duration(d)?;
        if duration.is_zero() {
            return Err(format!("`{part}`: a stage lasts longer than 0"));
        }
        let target = t
            .parse()
            .map_err(|_| format!("`{part}`: `{t}` is not a connection count"))?;
        out.push(Stage { duration, target });
    }
    Ok(out)
}
