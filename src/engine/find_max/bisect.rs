//! The search order, on its own: exponential steps up from `--start` (×`--factor`, capped at
//! `--max`) until one fails, then bisection between the largest passing and the smallest
//! failing value until they are within `--precision`. When the very first step fails, it
//! steps down (÷factor) until one passes. Values are whole numbers (connections, or per
//! second), at least 1.

/// Where the search stands.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Bisect {
    max: f64,
    factor: f64,
    precision: f64,
    /// Largest value that passed.
    pub(super) good: Option<f64>,
    /// Smallest value that failed.
    pub(super) bad: Option<f64>,
}

impl Bisect {
    pub(super) fn new(max: f64, factor: f64, precision: f64) -> Self {
        Self {
            max,
            factor,
            precision,
            good: None,
            bad: None,
        }
    }

    /// Records a step's verdict; the next value to try, or None when the search is over.
    pub(super) fn next(&mut self, value: f64, pass: bool) -> Option<f64> {
        if pass {
            self.good = Some(self.good.map_or(value, |g| g.max(value)));
        } else {
            self.bad = Some(self.bad.map_or(value, |b| b.min(value)));
        }
        match (self.good, self.bad) {
            (Some(g), None) => {
                (g < self.max).then(|| (g * self.factor).round().min(self.max).max(g + 1.0))
            }
            (None, Some(b)) => {
                let v = (b / self.factor).floor();
                (v >= 1.0 && v < b).then_some(v)
            }
            (Some(g), Some(b)) => {
                if b <= g + 1.0 || (b - g) / g <= self.precision {
                    return None;
                }
                let mid = ((g + b) / 2.0).round();
                (mid > g && mid < b).then_some(mid)
            }
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a limit: values up to `limit` pass.
    fn search(start: f64, max: f64, limit: f64) -> (Option<f64>, Vec<f64>) {
        let mut b = Bisect::new(max, 1.5, 0.05);
        let mut v = Some(start);
        let mut tried = Vec::new();
        while let Some(x) = v {
            tried.push(x);
            assert!(tried.len() < 60, "does not end: {tried:?}");
            v = b.next(x, x <= limit);
        }
        (b.good, tried)
    }

    #[test]
    fn finds_the_limit_within_precision() {
        let (good, tried) = search(1000.0, 1e6, 3000.0);
        assert_eq!(tried[..4], [1000.0, 1500.0, 2250.0, 3375.0]);
        let g = good.unwrap();
        assert!((3000.0 / 1.05..=3000.0).contains(&g), "{g} {tried:?}");
        // Started above the limit: steps down, then bisects.
        let (good, tried) = search(1000.0, 1e6, 300.0);
        assert_eq!(tried[..4], [1000.0, 666.0, 444.0, 296.0]);
        assert!(good.unwrap() >= 300.0 / 1.05);
        // Every step passes: stops at the ceiling.
        let (good, tried) = search(100.0, 200.0, 1e9);
        assert_eq!((good, tried), (Some(200.0), vec![100.0, 150.0, 200.0]));
        // Nothing passes.
        assert_eq!(search(5.0, 100.0, 0.0).0, None);
    }
}
