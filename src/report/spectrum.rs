//! The percentile spectrum of a histogram (an "HDR plot"): latency against percentile, for a
//! chart whose x axis is `1/(1-q)` on a log scale, so 90 %, 99 %, 99.9 % … are equally spaced.
//! Made from the whole histogram (`hdr`, decoded) when the document carries it, else from the
//! percentile fields beside it.

use crate::results::hdr;
use serde_json::{json, Value};

/// Steps per halving of the distance to 100 % (HdrHistogram's `iter_quantiles`): 5 gives
/// about 5 points per "nine" × 3.3, ~60 points for a million samples.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The percentile fields of a histogram's JSON object, with their quantile.
const FIELDS: [(&str, f64); 5] = [
    ("p50_us", 0.50),
    ("p90_us", 0.90),
    ("p95_us", 0.95),
    ("p99_us", 0.99),
    ("p999_us", 0.999),
];

/// The spectrum of histogram `h` (a result document's histogram object): `{"source": "hdr" |
/// "percentiles", "count": N, "points": [[q, µs], …]}` with q in [0, 1) rising; `None` when
/// it holds no sample. The last point (the maximum) is placed at q = 1 − 1/N, the rank of the
/// last sample, since 1/(1−q) has no finite value at q = 1.
pub(super) fn spectrum(h: &Value) -> Option<Value> {
    let count = h["count"].as_u64().unwrap_or(0);
    if count == 0 {
        return None;
    }
    let last_q = 1.0 - 1.0 / count as f64;
    let decoded = h["hdr"].as_str().map(hdr::decode);
    let (source, mut points) = match decoded {
        Some(Ok(hist)) if !hist.is_empty() => {
            let points: Vec<(f64, u64)> = hist
                .iter_quantiles(TICKS_PER_HALF_DISTANCE)
                .map(|v| (v.quantile_iterated_to().min(last_q), v.value_iterated_to()))
                .collect();
            ("hdr", points)
        }
        _ => {
            let mut points: Vec<(f64, u64)> = vec![(0.0, h["min_us"].as_u64().unwrap_or(0))];
            points.extend(
                FIELDS
                    .iter()
                    .filter(|(_, q)| *q < last_q)
                    .filter_map(|(k, q)| h[*k].as_u64().map(|v| (*q, v))),
            );
            ("percentiles", points)
        }
    };
    points.push((last_q, h["max_us"].as_u64().unwrap_or(0)));
    // One value per quantile (the largest), quantiles rising: what a log x axis can draw.
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    points.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 = kept.1.max(later.1);
            true
        } else {
            false
        }
    });
    let points: Vec<Value> = points.iter().map(|(q, v)| json!([q, v])).collect();
    Some(json!({"source": source, "count": count, "points": points}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;

    /// The result document's bounds (1 µs .. 60 s, 3 significant figures).
    fn new_histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
    }

    #[test]
    fn from_the_whole_histogram() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.saturating_record(v);
        }
        let s = spectrum(&hdr::to_json(&h)).unwrap();
        assert_eq!(s["source"], "hdr");
        assert_eq!(s["count"], 10_000);
        let points = s["points"].as_array().unwrap();
        assert!(points.len() > 20, "{}", points.len());
        let q = |p: &Value| p[0].as_f64().unwrap();
        let v = |p: &Value| p[1].as_u64().unwrap();
        assert!(points.windows(2).all(|w| q(&w[0]) < q(&w[1])));
        assert!(points.windows(2).all(|w| v(&w[0]) <= v(&w[1])));
        let last = points.last().unwrap();
        assert_eq!(q(last), 1.0 - 1.0 / 10_000.0);
        assert_eq!(v(last), h.max());
        // The median is near 5,000 µs within the histogram's precision.
        let mid = points.iter().find(|p| q(p) >= 0.5).unwrap();
        assert!((4_990..=5_010).contains(&v(mid)), "{mid}");
    }

    #[test]
    fn from_the_percentiles_when_hdr_is_missing_and_none_when_empty() {
        let h = json!({"count": 1000, "min_us": 5, "p50_us": 10, "p90_us": 20, "p95_us": 30,
                       "p99_us": 40, "p999_us": 50, "max_us": 60});
        let s = spectrum(&h).unwrap();
        assert_eq!(s["source"], "percentiles");
        assert_eq!(
            s["points"],
            json!([
                [0.0, 5],
                [0.5, 10],
                [0.9, 20],
                [0.95, 30],
                [0.99, 40],
                [0.999, 60]
            ])
        );
        assert!(spectrum(&hdr::to_json(&new_histogram())).is_none());
        assert!(spectrum(&json!({})).is_none());
    }
}
