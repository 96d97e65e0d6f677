//! Histograms in the result document: HdrHistogram's V2 + DEFLATE encoding (the format every
//! HdrHistogram implementation reads), base64 (standard alphabet, padded), beside the
//! percentile summary made from the same histogram.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// `h` as V2 + DEFLATE, base64. An empty histogram encodes too (its bounds only, ~40 bytes).
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail, and every count of a u64 histogram fits the format.
    if V2DeflateSerializer::new().serialize(h, &mut bytes).is_err() {
        unreachable!("serializing into memory");
    }
    STANDARD.encode(bytes)
}

/// A histogram from [`encode`]'s text; the error says what is wrong with it.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| format!("not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("not an HdrHistogram V2 + DEFLATE encoding: {e:?}"))
}

/// A histogram's JSON object: count, min, mean, percentiles and max in µs, and `hdr`, the
/// whole histogram ([`encode`]).
pub fn to_json(h: &Histogram<u64>) -> Value {
    let mut v = if h.is_empty() {
        json!({"count": 0, "min_us": 0, "mean_us": 0.0, "p50_us": 0, "p90_us": 0, "p95_us": 0,
               "p99_us": 0, "p999_us": 0, "max_us": 0})
    } else {
        json!({
            "count": h.len(),
            "min_us": h.min(),
            "mean_us": (h.mean() * 10.0).round() / 10.0,
            "p50_us": h.value_at_quantile(0.50),
            "p90_us": h.value_at_quantile(0.90),
            "p95_us": h.value_at_quantile(0.95),
            "p99_us": h.value_at_quantile(0.99),
            "p999_us": h.value_at_quantile(0.999),
            "max_us": h.max(),
        })
    };
    v["hdr"] = encode(h).into();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::new_histogram;

    #[test]
    fn round_trip_keeps_every_count() {
        let mut h = new_histogram();
        for v in [1, 2, 999, 1_000, 12_345, 59_999_999, 60_000_000] {
            h.saturating_record_n(v, v % 7 + 1);
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.len(), h.len());
        let empty = decode(&encode(&new_histogram())).unwrap();
        assert_eq!(empty.len(), 0);
    }

    #[test]
    fn summary_carries_the_histogram() {
        let mut h = new_histogram();
        h.saturating_record(250);
        let v = to_json(&h);
        assert_eq!(v["count"], 1);
        assert_eq!(decode(v["hdr"].as_str().unwrap()).unwrap().len(), 1);
    }

    #[test]
    fn garbage_is_refused_with_why() {
        assert!(decode("!!").unwrap_err().starts_with("not base64"));
        assert!(decode("AAAA").unwrap_err().contains("HdrHistogram"));
    }
}
