//! Fixed-bucket histograms for the endpoint, filled from the engine's HDR histograms.
//!
//! Every pod and every run exposes the same bounds, 100 µs .. 60 s ([`BOUNDS_US`]), so that
//! `sum by (le)` across pods and `histogram_quantile` over the sum mean what they say.
//!
//! **Which bucket an HDR count goes to.** An HDR histogram (1 µs .. 60 s, 3 significant
//! figures) keeps counts per value range ("equivalent values"): 1 µs wide below 2,048 µs,
//! 2 µs wide up to 4,096 µs, and so on, doubling, so each range is at most 1/1024 of its
//! values wide. A range's count goes to the first fixed bucket whose bound is at least the
//! range's *highest* equivalent value, the value HDR reports for it (`value_iterated_to`,
//! and what the summary's percentiles and the thresholds use). Bounds up to 1 ms fall on
//! range edges, so their counts are exact. Larger bounds can fall inside a range (1 s lies
//! in 999,936..1,000,447 µs): that range counts above the bound, so a sample at most 0.1 %
//! under such a bound may show in the next bucket, and none above a bound ever shows below
//! it (a bucket never claims faster than was measured). Latencies saturated at 60 s
//! (the histograms' limit) show only in `+Inf`.

use hdrhistogram::Histogram;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The buckets' upper bounds in µs (`le`, in seconds on the endpoint: 0.0001 .. 60); one more
/// bucket, `+Inf`, holds the rest.
pub const BOUNDS_US: [u64; 18] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// A histogram with the fixed [`BOUNDS_US`], as the endpoint shows it: counts per bucket and
/// the sum. Clones share the counts (the registry holds one, the exporter fills it).
#[derive(Debug, Clone, Default)]
pub struct FixedHistogram {
    inner: Arc<Counts>,
}

/// Counts per bucket (not cumulative; the last is `+Inf`) and the sum of the values, µs.
#[derive(Debug, Default)]
struct Counts {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

/// The bucket of a value HDR reports, µs: the first bound at least `us` (`+Inf` past the last).
pub fn bucket_of(us: u64) -> usize {
    BOUNDS_US.partition_point(|&b| b < us)
}

impl FixedHistogram {
    /// Adds every count of `h` (µs) to its bucket (see the module doc for the rule), and the
    /// values to the sum (each range's middle value: HDR's `median_equivalent`, as its mean).
    pub fn add_hdr(&self, h: &Histogram<u64>) {
        if h.is_empty() {
            return;
        }
        let mut add = [0u64; BOUNDS_US.len() + 1];
        let mut sum = 0u64;
        for v in h.iter_recorded() {
            let n = v.count_at_value();
            let reported = v.value_iterated_to();
            add[bucket_of(reported)] += n;
            sum = sum.saturating_add(h.median_equivalent(reported).saturating_mul(n));
        }
        for (b, n) in self.inner.buckets.iter().zip(add) {
            if n > 0 {
                b.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.inner.sum_us.fetch_add(sum, Ordering::Relaxed);
    }

    /// Counts per bucket, not cumulative, with their bounds in seconds (the last `+Inf`).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BOUNDS_US
            .iter()
            .map(|&b| b as f64 / 1e6)
            .chain([f64::INFINITY])
            .zip(&self.inner.buckets)
            .map(|(le, n)| (le, n.load(Ordering::Relaxed)))
            .collect()
    }
}

impl TypedMetric for FixedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for FixedHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets = self.buckets();
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.inner.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::new_histogram;

    fn filled(values: &[(u64, u64)]) -> (Histogram<u64>, FixedHistogram) {
        let mut h = new_histogram();
        for &(v, n) in values {
            h.saturating_record_n(v, n);
        }
        let f = FixedHistogram::default();
        f.add_hdr(&h);
        (h, f)
    }

    #[test]
    fn counts_are_exact_and_bounds_up_to_a_millisecond_are_range_edges() {
        let (h, f) = filled(&[(1, 3), (100, 5), (101, 7), (250, 1), (999, 2), (1_000, 4)]);
        let b = f.buckets();
        assert_eq!(b.iter().map(|b| b.1).sum::<u64>(), h.len());
        assert_eq!(b[0], (0.0001, 8), "1 µs and 100 µs are ≤ 100 µs");
        assert_eq!(b[1], (0.00025, 8), "101 µs and 250 µs are ≤ 250 µs");
        assert_eq!(b[3], (0.001, 6), "999 µs and 1 ms are ≤ 1 ms");
        // Every bound up to 2,047 µs is the top of its own 1 µs range.
        for &bound in BOUNDS_US.iter().filter(|&&b| b < 2_048) {
            assert_eq!(h.highest_equivalent(bound), bound);
        }
    }

    #[test]
    fn a_range_that_straddles_a_bound_counts_above_it() {
        // 1 s lies inside the range 999,936..=1,000,447 µs.
        let h = new_histogram();
        assert!(h.lowest_equivalent(1_000_000) < 1_000_000);
        assert!(h.highest_equivalent(1_000_000) > 1_000_000);
        let (_, f) = filled(&[(999_000, 1), (1_000_000, 2), (1_200_000, 4)]);
        let b = f.buckets();
        assert_eq!(b[bucket_of(1_000_000)], (1.0, 1), "only 999 ms is ≤ 1 s");
        assert_eq!(b[bucket_of(2_500_000)], (2.5, 6));
    }

    #[test]
    fn saturated_latencies_show_only_in_inf_and_the_sum_is_near() {
        let (h, f) = filled(&[(crate::metrics::HIST_MAX_US, 2), (2_000, 10)]);
        let b = f.buckets();
        assert_eq!(b.last(), Some(&(f64::INFINITY, 2)));
        assert_eq!(b[bucket_of(2_000)].1, 10);
        let sum = f.inner.sum_us.load(Ordering::Relaxed) as f64;
        let exact = (2 * crate::metrics::HIST_MAX_US + 10 * 2_000) as f64;
        assert!((sum - exact).abs() / exact < 1e-3, "{sum} vs {exact}");
        // Adding twice adds up.
        f.add_hdr(&h);
        assert_eq!(f.buckets().iter().map(|b| b.1).sum::<u64>(), 24);
    }
}
