//! Segments (`--segment I/N`, 0-based) and the common start (`--start-at`): one plan split
//! across N processes or hosts so that the N segments together are exactly the unsplit run.
//!
//! Counts (connections, stage targets) split by floor and remainder: segment `i` of `n` gets
//! `c / n`, plus one when `i < c % n`, so the shares always add up to `c`. Rates that are
//! totals (connect and arrival rates) split in proportion to the connections. Connection
//! numbers (`{{conn_id}}`, and so `{{line FILE}}` rows) are strided: segment `i`'s k-th
//! number is `i + n·k`, disjoint from every other segment's for any k (replacements too), and
//! for the initial connections the union over segments is exactly `0..c`, the unsplit run's.

use super::PlanError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a segment's index came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentSource {
    /// `--segment I/N` (or `segment = "I/N"` in a scenario file).
    Flag,
    /// `--segment auto` in a Kubernetes Indexed Job: `JOB_COMPLETION_INDEX` and `--segments N`.
    JobCompletionIndex,
    /// `--segment auto` under Slurm: `SLURM_PROCID` and `SLURM_NTASKS`.
    SlurmProcid,
}

impl SegmentSource {
    /// The name results show: `flag`, `JOB_COMPLETION_INDEX` or `SLURM_PROCID`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flag => "flag",
            Self::JobCompletionIndex => "JOB_COMPLETION_INDEX",
            Self::SlurmProcid => "SLURM_PROCID",
        }
    }
}

/// This process's part of a split run: segment `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// 0-based, below `count`.
    pub index: u64,
    /// Segments in the whole run, at least 1.
    pub count: u64,
    /// Where `index` came from.
    pub source: SegmentSource,
}

/// A scenario's figures in the whole run, kept when a segment cuts them: results name the
/// plan (the same in every segment), with this segment's share beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsplit {
    /// Connections of the whole run.
    pub connections: u64,
    /// Connect (or arrival) rate of the whole run, per second.
    pub connect_rate: f64,
    /// Each stage's target in the whole run.
    pub stage_targets: Vec<u64>,
}

/// `--segment` as given: `I/N` or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentArg {
    /// `I/N`, 0-based.
    Fixed(u64, u64),
    /// `auto`: from the orchestrator's environment.
    Auto,
}

/// Parses `--segment`: `I/N` (0-based, `0/3`, `1/3`, `2/3`) or `auto`.
pub fn parse_segment(s: &str) -> Result<SegmentArg, String> {
    let s = s.trim();
    if s == "auto" {
        return Ok(SegmentArg::Auto);
    }
    let bad = || {
        format!(
            "`{s}` is not I/N: give the 0-based segment index and the segment count, e.g. 0/3 \
             (segments 0/3, 1/3 and 2/3 make the whole run), or `auto`"
        )
    };
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let i: u64 = i.trim().parse().map_err(|_| bad())?;
    let n: u64 = n.trim().parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(format!("`{s}`: the segment count must be at least 1"));
    }
    if i >= n {
        return Err(format!(
            "`{s}`: segments are numbered from 0, so the index must be below {n} (0/{n} .. {}/{n})",
            n - 1
        ));
    }
    Ok(SegmentArg::Fixed(i, n))
}

/// The segment of this process: `arg` as given, `auto` looked up in the environment through
/// `env` (`JOB_COMPLETION_INDEX` with `segments`, else `SLURM_PROCID`/`SLURM_NTASKS`).
pub fn resolve(
    arg: Option<SegmentArg>,
    segments: Option<u64>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Segment>, PlanError> {
    let number = |name: &'static str, v: String| {
        v.trim().parse::<u64>().map_err(|_| {
            PlanError::invalid(
                "--segment",
                format!("auto: {name}=`{v}` is not a whole number"),
            )
        })
    };
    let (index, count, source) = match arg {
        None => {
            if segments.is_some() {
                return Err(PlanError::invalid(
                    "--segments",
                    "only applies with --segment auto (Kubernetes Indexed Job)",
                ));
            }
            return Ok(None);
        }
        Some(SegmentArg::Fixed(i, n)) => {
            if segments.is_some() {
                return Err(PlanError::invalid(
                    "--segments",
                    "only applies with --segment auto; --segment I/N already gives the count",
                ));
            }
            (i, n, SegmentSource::Flag)
        }
        Some(SegmentArg::Auto) => match (env("JOB_COMPLETION_INDEX"), env("SLURM_PROCID")) {
            (Some(k), _) => {
                let Some(n) = segments else {
                    return Err(PlanError::invalid(
                        "--segment",
                        "auto: JOB_COMPLETION_INDEX is set (Kubernetes Indexed Job) but the segment \
                         count is not: add --segments N (the Job's completions)",
                    ));
                };
                (
                    number("JOB_COMPLETION_INDEX", k)?,
                    n,
                    SegmentSource::JobCompletionIndex,
                )
            }
            (None, Some(k)) => {
                let n =
                    match (segments, env("SLURM_NTASKS")) {
                        (Some(n), _) => n,
                        (None, Some(n)) => number("SLURM_NTASKS", n)?,
                        (None, None) => return Err(PlanError::invalid(
                            "--segment",
                            "auto: SLURM_PROCID is set but SLURM_NTASKS is not: run under srun, \
                             or add --segments N",
                        )),
                    };
                (number("SLURM_PROCID", k)?, n, SegmentSource::SlurmProcid)
            }
            (None, None) => return Err(PlanError::invalid(
                "--segment",
                "auto: neither JOB_COMPLETION_INDEX (Kubernetes Indexed Job, with --segments N) \
                     nor SLURM_PROCID (Slurm, srun) is set: give --segment I/N instead",
            )),
        },
    };
    if count == 0 || index >= count {
        return Err(PlanError::invalid(
            if source == SegmentSource::Flag || segments.is_none() {
                "--segment"
            } else {
                "--segments"
            },
            format!(
                "segment {index} of {count} ({}): the index is 0-based and must be below the count",
                source.name()
            ),
        ));
    }
    Ok(Some(Segment {
        index,
        count,
        source,
    }))
}

impl Segment {
    /// This segment's share of the count `n`: `n / count`, plus one for the first `n % count`
    /// segments. The shares of all segments add up to `n`.
    pub fn share(&self, n: u64) -> u64 {
        n / self.count + u64::from(self.index < n % self.count)
    }

    /// This segment's share of the total rate `rate` of `whole` connections: in proportion to
    /// its connections (`share(whole)`); an unlimited rate stays unlimited.
    pub fn rate(&self, rate: f64, whole: u64) -> f64 {
        if !rate.is_finite() || whole == 0 {
            return rate;
        }
        rate * self.share(whole) as f64 / whole as f64
    }

    /// The run-wide connection number of this segment's `k`-th (`i + n·k`).
    pub fn conn_id(&self, k: u64) -> u64 {
        self.index + self.count * k
    }
}

/// `--start-at`: an RFC 3339 instant (`2026-12-06T07:00:00Z`, `…+02:00`, fractions of a
/// second allowed) or `+DURATION` from now (`+2s`), as a wall-clock instant.
pub fn parse_start_at(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    if let Some(d) = s.strip_prefix('+') {
        let d = super::parse::duration(d)?;
        return Ok(SystemTime::now() + d);
    }
    parse_rfc3339(s).ok_or_else(|| {
        format!(
            "`{s}` is neither an RFC 3339 instant (2026-12-06T07:00:00Z, \
             2026-12-06T09:00:00.5+02:00) nor +DURATION from now (+30s)"
        )
    })
}

/// An RFC 3339 date-time with `Z` or a `±HH:MM` offset.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut nanos = 0i64;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (k, c) in f[..digits].bytes().take(9).enumerate() {
            nanos += i64::from(c - b'0') * 10i64.pow(8 - k as u32);
        }
        rest = &f[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || ob[3] != b':' || !matches!(ob[0], b'+' | b'-') {
                return None;
            }
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            if oh > 23 || om > 59 {
                return None;
            }
            (oh * 60 + om) * 60 * if ob[0] == b'-' { -1 } else { 1 }
        }
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let (yy, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let unix = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    let unix = u64::try_from(unix).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(unix) + Duration::from_nanos(nanos as u64))
}

/// Signed µs from `at` to `now` (negative: `now` is before `at`).
pub fn offset_us(at: SystemTime, now: SystemTime) -> i64 {
    match now.duration_since(at) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(index: u64, count: u64) -> Segment {
        Segment {
            index,
            count,
            source: SegmentSource::Flag,
        }
    }

    /// The segments of an `n`-way split.
    fn all(n: u64) -> Vec<Segment> {
        (0..n).map(|i| seg(i, n)).collect()
    }

    #[test]
    fn seven_over_three() {
        let shares: Vec<u64> = all(3).iter().map(|s| s.share(7)).collect();
        assert_eq!(shares, vec![3, 2, 2]);
        // Initial ids: {0,3,6}, {1,4}, {2,5}: exactly 0..7, as unsplit.
        let ids: Vec<Vec<u64>> = all(3)
            .iter()
            .map(|s| (0..s.share(7)).map(|k| s.conn_id(k)).collect())
            .collect();
        assert_eq!(ids, vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
    }

    #[test]
    fn counts_add_up_and_ids_are_disjoint_for_1_to_7_segments() {
        // Awkward plans: weighted scenarios (connections per scenario) and stage targets.
        let scenarios = [7u64, 1, 0, 2, 13, 1000, 99_999];
        let stages = [0u64, 1, 5, 6, 7, 50, 0];
        for n in 1..=7u64 {
            for &c in scenarios.iter().chain(&stages) {
                let shares: Vec<u64> = all(n).iter().map(|s| s.share(c)).collect();
                assert_eq!(shares.iter().sum::<u64>(), c, "{c} over {n}");
                let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(hi - lo <= 1, "{c} over {n}: {shares:?}");
                // Initial ids of all segments: exactly 0..c, each once.
                let mut ids: Vec<u64> = all(n)
                    .iter()
                    .flat_map(|s| (0..s.share(c)).map(|k| s.conn_id(k)).collect::<Vec<_>>())
                    .collect();
                ids.sort_unstable();
                assert_eq!(ids, (0..c).collect::<Vec<_>>(), "{c} over {n}");
            }
            // Replacements keep numbering past the initial count: still disjoint.
            let mut ids: Vec<u64> = all(n)
                .iter()
                .flat_map(|s| (0..50).map(|k| s.conn_id(k)).collect::<Vec<_>>())
                .collect();
            let len = ids.len();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), len);
            // Rates in proportion to connections add up to the total.
            let r: f64 = all(n).iter().map(|s| s.rate(1000.0, 7)).sum();
            assert!((r - 1000.0).abs() < 1e-9, "{r}");
            assert!(seg(0, n).rate(f64::INFINITY, 7).is_infinite());
            // A stage target's share never exceeds the segment's share of the largest one.
            for s in all(n) {
                let max = stages.iter().map(|&t| s.share(t)).max().unwrap();
                assert_eq!(max, s.share(*stages.iter().max().unwrap()));
            }
        }
    }

    #[test]
    fn segment_flag_parses() {
        assert_eq!(parse_segment("0/3"), Ok(SegmentArg::Fixed(0, 3)));
        assert_eq!(parse_segment("2/3"), Ok(SegmentArg::Fixed(2, 3)));
        assert_eq!(parse_segment("auto"), Ok(SegmentArg::Auto));
        assert!(parse_segment("3/3")
            .unwrap_err()
            .contains("numbered from 0"));
        assert!(parse_segment("1/0").unwrap_err().contains("at least 1"));
        assert!(parse_segment("1-3").unwrap_err().contains("is not I/N"));
    }

    #[test]
    fn auto_reads_the_orchestrator() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let k8s = resolve(
            Some(SegmentArg::Auto),
            Some(4),
            env(&[("JOB_COMPLETION_INDEX", "3")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (k8s.index, k8s.count, k8s.source.name()),
            (3, 4, "JOB_COMPLETION_INDEX")
        );
        let slurm = resolve(
            Some(SegmentArg::Auto),
            None,
            env(&[("SLURM_PROCID", "1"), ("SLURM_NTASKS", "3")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (slurm.index, slurm.count, slurm.source.name()),
            (1, 3, "SLURM_PROCID")
        );
        let none = resolve(Some(SegmentArg::Auto), None, env(&[])).unwrap_err();
        assert!(
            none.to_string().contains("neither JOB_COMPLETION_INDEX"),
            "{none}"
        );
        let no_count = resolve(
            Some(SegmentArg::Auto),
            None,
            env(&[("JOB_COMPLETION_INDEX", "0")]),
        )
        .unwrap_err();
        assert!(no_count.to_string().contains("--segments N"), "{no_count}");
        let out = resolve(
            Some(SegmentArg::Auto),
            Some(2),
            env(&[("JOB_COMPLETION_INDEX", "2")]),
        )
        .unwrap_err();
        assert!(out.to_string().contains("below the count"), "{out}");
        assert_eq!(resolve(None, None, env(&[])).unwrap(), None);
        assert!(resolve(None, Some(3), env(&[])).is_err());
    }

    #[test]
    fn start_at_parses_rfc3339_and_offsets() {
        let at = |s| {
            parse_start_at(s)
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros()
        };
        assert_eq!(at("1970-01-01T00:00:00Z"), 0);
        assert_eq!(at("2026-12-06T07:00:00Z"), 1_796_540_400_000_000);
        assert_eq!(at("2026-12-06T09:00:00+02:00"), 1_796_540_400_000_000);
        assert_eq!(at("2026-12-06T06:30:00.25-00:30"), 1_796_540_400_250_000);
        assert_eq!(at("2024-02-29T00:00:00Z"), 1_709_164_800_000_000);
        for bad in [
            "2026-02-29T00:00:00Z",
            "2026-12-06T07:00:00",
            "2026-12-06 07:00",
            "tomorrow",
            "+",
        ] {
            assert!(parse_start_at(bad).is_err(), "{bad}");
        }
        let soon = parse_start_at("+2s").unwrap();
        let ahead = offset_us(SystemTime::now(), soon);
        assert!((1_900_000..=2_000_000).contains(&ahead), "{ahead}");
        assert!(offset_us(soon, SystemTime::now()) < 0);
    }
}
