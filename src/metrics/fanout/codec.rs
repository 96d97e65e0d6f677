//! The fan-out log as result documents carry it, so that `sockstorm merge` can settle what
//! was owed across hosts exactly: a scenario's [`FanoutStats`] (publish log, subscriber
//! sessions, deliveries per publisher, per-message delivery buckets) as compact binary
//! (LEB128 varints, times as deltas), raw DEFLATE, base64.
//!
//! Decoding trusts nothing: every count is checked against the bytes left and the same caps
//! the run keeps, and the inflated size is bounded, so an edited or hostile document gives an
//! error, never a large allocation.

use super::{FanoutStats, BUCKETS, COUNTED_PUBLISHERS, LOGGED_MESSAGES, TRACKED_MESSAGES};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use std::io::{Read as _, Write as _};

/// Leading bytes of the binary form, with its version.
const MAGIC: &[u8; 5] = b"SSFO\x01";
/// The largest inflated log accepted (a full log of 1,000,000 messages is ~15 MB).
const MAX_INFLATED: u64 = 256 << 20;

impl FanoutStats {
    /// The log as text for a result document: binary, raw DEFLATE, base64 (standard, padded).
    /// Deterministic: sets and maps are written sorted.
    pub fn to_text(&self) -> String {
        let mut z = DeflateEncoder::new(Vec::new(), Compression::fast());
        // Writing into memory cannot fail.
        let bytes = match z.write_all(&self.to_bytes()).and_then(|()| z.finish()) {
            Ok(b) => b,
            Err(_) => unreachable!("deflating into memory"),
        };
        STANDARD.encode(bytes)
    }

    /// A log from [`Self::to_text`]'s text; the error says what is wrong with it.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let z = STANDARD
            .decode(text)
            .map_err(|e| format!("not base64: {e}"))?;
        let mut bytes = Vec::new();
        DeflateDecoder::new(z.as_slice())
            .take(MAX_INFLATED + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("not raw DEFLATE: {e}"))?;
        if bytes.len() as u64 > MAX_INFLATED {
            return Err(format!("inflates beyond {} MiB", MAX_INFLATED >> 20));
        }
        Self::from_bytes(&bytes)
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut o = MAGIC.to_vec();
        put(&mut o, self.unlogged);
        put(&mut o, u64::from(self.untimed));
        put(&mut o, self.unattributed);
        put(&mut o, self.published.len() as u64);
        let mut prev = 0;
        for &(ch, p, seq, ts) in &self.published {
            put(&mut o, u64::from(ch));
            put(&mut o, p);
            put(&mut o, seq);
            put(&mut o, zigzag(ts.wrapping_sub(prev)));
            prev = ts;
        }
        put(&mut o, self.sessions.len() as u64);
        let mut prev = 0;
        for &(ch, from, to) in &self.sessions {
            put(&mut o, u64::from(ch));
            put(&mut o, zigzag(from.wrapping_sub(prev)));
            put(&mut o, to - from); // sessions are kept only when to > from
            prev = from;
        }
        let mut ids: Vec<u64> = self.publishers.iter().copied().collect();
        ids.sort_unstable();
        put(&mut o, ids.len() as u64);
        let mut prev = 0;
        for id in ids {
            put(&mut o, id - prev);
            prev = id;
        }
        let mut by: Vec<(u64, u64)> = self.by_publisher.iter().map(|(&p, &n)| (p, n)).collect();
        by.sort_unstable();
        put(&mut o, by.len() as u64);
        let mut prev = 0;
        for (id, n) in by {
            put(&mut o, id - prev);
            put(&mut o, n);
            prev = id;
        }
        let mut lat: Vec<_> = self.latencies.iter().collect();
        lat.sort_unstable_by_key(|(k, _)| **k);
        put(&mut o, lat.len() as u64);
        for (&(p, seq), b) in lat {
            put(&mut o, p);
            put(&mut o, seq);
            let used: Vec<(usize, u32)> = b
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (i, *n))
                .collect();
            put(&mut o, used.len() as u64);
            for (i, n) in used {
                put(&mut o, i as u64);
                put(&mut o, u64::from(n));
            }
        }
        o
    }

    fn from_bytes(b: &[u8]) -> Result<Self, String> {
        let Some(rest) = b.strip_prefix(MAGIC) else {
            return Err("not a sockstorm fan-out log (version 1)".into());
        };
        let mut r = Reader { b: rest };
        let mut f = Self {
            unlogged: r.get()?,
            untimed: r.get()? != 0,
            unattributed: r.get()?,
            ..Self::default()
        };
        let n = r.count(LOGGED_MESSAGES, "published messages")?;
        f.published.reserve(n);
        let mut prev = 0u64;
        for _ in 0..n {
            let (ch, p, seq) = (r.channel()?, r.get()?, r.get()?);
            prev = prev.wrapping_add(unzigzag(r.get()?));
            f.published.push((ch, p, seq, prev));
        }
        let n = r.count(usize::MAX, "subscriber sessions")?;
        f.sessions.reserve(n);
        let mut prev = 0u64;
        for _ in 0..n {
            let ch = r.channel()?;
            prev = prev.wrapping_add(unzigzag(r.get()?));
            let len = r.get()?;
            let to = prev.checked_add(len).filter(|_| len > 0);
            f.sessions.push((
                ch,
                prev,
                to.ok_or("a subscriber session ends before it begins")?,
            ));
        }
        let n = r.count(usize::MAX, "publishers")?;
        let mut id = 0u64;
        for _ in 0..n {
            id = id.checked_add(r.get()?).ok_or("publisher id overflows")?;
            f.publishers.insert(id);
        }
        let n = r.count(COUNTED_PUBLISHERS, "publishers counted apart")?;
        let mut id = 0u64;
        for _ in 0..n {
            id = id.checked_add(r.get()?).ok_or("publisher id overflows")?;
            f.by_publisher.insert(id, r.get()?);
        }
        let n = r.count(TRACKED_MESSAGES, "timed messages")?;
        for _ in 0..n {
            let key = (r.get()?, r.get()?);
            let mut buckets = Box::new([0u32; BUCKETS]);
            for _ in 0..r.count(BUCKETS, "latency buckets")? {
                let i = usize::try_from(r.get()?).unwrap_or(BUCKETS);
                let slot = buckets.get_mut(i).ok_or("a latency bucket out of range")?;
                *slot = u32::try_from(r.get()?).map_err(|_| "a bucket count beyond 2^32")?;
            }
            f.latencies.insert(key, buckets);
        }
        if !r.b.is_empty() {
            return Err(format!("{} bytes after the end of the log", r.b.len()));
        }
        Ok(f)
    }
}

fn put(o: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        o.push(v as u8 | 0x80);
        v >>= 7;
    }
    o.push(v as u8);
}

fn zigzag(v: u64) -> u64 {
    (v << 1) ^ ((v as i64 >> 63) as u64)
}

fn unzigzag(v: u64) -> u64 {
    (v >> 1) ^ (v & 1).wrapping_neg()
}

/// Reads varints off a byte slice, failing on truncation and overlong encodings.
struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn get(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for (i, &byte) in self.b.iter().enumerate().take(10) {
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.b = &self.b[i + 1..];
                return Ok(v);
            }
        }
        Err("truncated (or a number longer than 64 bits)".into())
    }

    /// A count of entries, each at least one byte: no more than the bytes left, nor `cap`.
    fn count(&mut self, cap: usize, what: &str) -> Result<usize, String> {
        let n = self.get()?;
        if n > self.b.len() as u64 {
            return Err(format!("{n} {what} in {} bytes: truncated", self.b.len()));
        }
        let n = n as usize;
        if n > cap {
            return Err(format!("{n} {what}, more than a run keeps ({cap})"));
        }
        Ok(n)
    }

    fn channel(&mut self) -> Result<u32, String> {
        u32::try_from(self.get()?).map_err(|_| "a channel number beyond 2^32".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FanoutStats {
        let mut f = FanoutStats::default();
        for p in [3u64, 11, 1 << 40] {
            for seq in 1..=50u64 {
                f.publish(
                    (p % 3) as u32,
                    p,
                    seq,
                    1_700_000_000_000_000 + seq * 1_000 - p % 7,
                );
            }
        }
        f.session(0, 1_700_000_000_000_500, 1_700_000_000_040_000);
        f.session(2, 1_700_000_000_000_100, 1_700_000_000_090_000);
        for seq in 1..=40 {
            f.delivered(3, seq, seq * 17);
            f.delivered(1 << 40, seq, 90_000 + seq);
        }
        f.count_from(99, 4);
        f.unlogged = 7;
        f
    }

    #[test]
    fn a_log_survives_its_text_exactly() {
        let f = sample();
        let back = FanoutStats::from_text(&f.to_text()).unwrap();
        assert_eq!(back.published, f.published);
        assert_eq!(back.sessions, f.sessions);
        assert_eq!(back.publishers, f.publishers);
        assert_eq!(back.by_publisher, f.by_publisher);
        assert_eq!(back.latencies, f.latencies);
        assert_eq!(
            (back.unlogged, back.untimed, back.unattributed),
            (f.unlogged, f.untimed, f.unattributed)
        );
        assert_eq!(back.summarize(), f.summarize());
        assert_eq!(back.to_text(), f.to_text(), "deterministic");
        let empty = FanoutStats::default();
        assert!(FanoutStats::from_text(&empty.to_text()).unwrap().is_empty());
    }

    #[test]
    fn damaged_logs_are_refused_without_allocating() {
        let bytes = sample().to_bytes();
        for cut in [0, 3, 5, 6, 20, bytes.len() / 2, bytes.len() - 1] {
            let e = FanoutStats::from_bytes(&bytes[..cut]).unwrap_err();
            assert!(!e.is_empty(), "{cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(
            FanoutStats::from_bytes(&extra).unwrap_err(),
            "1 bytes after the end of the log"
        );
        // A count far beyond the bytes that follow.
        let mut huge = MAGIC.to_vec();
        for v in [0, 0, 0, u64::MAX >> 1] {
            put(&mut huge, v);
        }
        let e = FanoutStats::from_bytes(&huge).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        assert!(FanoutStats::from_text("@@")
            .unwrap_err()
            .starts_with("not base64"));
        assert!(FanoutStats::from_text("AAAA").is_err());
    }

    #[test]
    fn logs_of_several_hosts_settle_like_one() {
        // Publisher 7 on one host, subscribers on two others: each host alone owes nothing.
        let mut pubs = FanoutStats::default();
        for seq in 1..=10 {
            pubs.publish(1, 7, seq, 1_000 * seq);
        }
        let mut subs = [FanoutStats::default(), FanoutStats::default()];
        for s in &mut subs {
            s.session(1, 500, 20_000);
            for seq in 1..=10 {
                s.delivered(7, seq, 100);
            }
        }
        subs[1].session(1, 5_500, 20_000); // a late joiner owed messages 6..=10
        for seq in 6..=9 {
            subs[1].delivered(7, seq, 150);
        }
        let mut all = FanoutStats::default();
        for f in [&pubs, &subs[0], &subs[1]] {
            all.add(&FanoutStats::from_text(&f.to_text()).unwrap());
        }
        let s = all.summarize().unwrap();
        assert_eq!((s.published, s.sessions, s.expected), (10, 3, 25));
        assert_eq!(s.delivered_owed, 24);
        assert_eq!(s.incomplete, 1, "message 10 never reached the late joiner");
    }
}
