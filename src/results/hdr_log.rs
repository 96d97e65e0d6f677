//! `--hdr-log FILE`: an HdrHistogram interval log, written while the run goes on — what
//! Java's `HistogramLogProcessor`, `HistogramLogReader` and every HdrHistogram library read.
//!
//! The log (HdrHistogram log format 1.3, as the Java `HistogramLogWriter` writes it):
//!
//! ```text
//! #[Logged with sockstorm 0.1.0: values in us, Interval_Max in ms (max value divisor 1000)]
//! #[Histogram log format version 1.3]
//! #[StartTime: 1796537134.576 (seconds since epoch)]
//! #[BaseTime: 1796537134.576 (seconds since epoch)]
//! #[MaxValueDivisor: 1000.000]
//! "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
//! Tag=tcp_connect,0.000,0.423,0.850,HISTFAAAAC...
//! Tag=ws_connecting,0.000,0.423,1.230,HISTFAAAAC...
//! ```
//!
//! One line per histogram per merged second (the engine's tick), tagged with the histogram's
//! name (a named request's replies: `ws_reply{msg:NAME}`, with `,`, spaces and line breaks
//! in NAME made `_`); a histogram gets lines from its first value on, so a tag's series has
//! no gaps after that. `StartTime` and `BaseTime` are the run's start (its shards' common epoch, the JSON's
//! `host.started_unix_us`); interval timestamps are seconds after it. An interval ends on the
//! Unix-second boundary the shards reported at (the first covers the rest of the second the
//! run started in, as the JSON timeline's samples do); the last one, what the shards' final
//! reports brought, ends when the run did. The interval histograms of a tag add up to the
//! JSON's histogram of that name, exactly.
//!
//! Units: recorded values are µs. `Interval_Max` is the interval's max divided by 1000, so
//! that column is in milliseconds, as in Java's logs (which record ns and divide by 10⁶).
//! Java's `HistogramLogProcessor` assumes ns by default (`-outputValueUnitRatio 1000000`
//! prints ms); for sockstorm's µs give `-outputValueUnitRatio 1000` to read milliseconds.
//!
//! Each second's lines are written with one `write` and flushed, so the log on disk is whole
//! up to the last second even when the process is killed.

use crate::metrics::run::{Observer, Tick};
use crate::metrics::{empty_histogram, Hist};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What `Interval_Max` is divided by: µs → ms (Java's logs divide ns by 10⁶, also to ms).
pub const MAX_VALUE_DIVISOR: f64 = 1000.0;

/// The legend line Java's `HistogramLogWriter` writes after the headers (readers skip it).
const LEGEND: &str =
    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n";

/// The interval log writer, an [`Observer`] of the run. Memory: one reused buffer of a
/// second's lines (each histogram ~100 bytes to a few KiB, V2 + DEFLATE, base64).
pub struct HdrLog<W: Write> {
    out: W,
    serializer: V2DeflateSerializer,
    /// Writes one second's lines into `buf`; its own header comes first and is skipped.
    lines: IntervalLogWriterBuilder,
    /// Bytes of `lines`' header in `buf`.
    skip: usize,
    buf: Vec<u8>,
    /// The run's start, µs since the Unix epoch (None: not started yet).
    epoch_unix_us: Option<u64>,
    /// Ticks written so far.
    ticks: u64,
    /// Where the last interval ended, after the start.
    last_end: Duration,
    /// Histograms that have had a value (by [`Hist`] index): they get a line every second.
    seen: [bool; Hist::ALL.len()],
    /// Named requests whose replies have had a value: (name, tag), in the order they had one.
    replies: Vec<(Box<str>, String)>,
    /// The first write that failed (nothing is written after it).
    error: Option<io::Error>,
}

impl<W: Write> HdrLog<W> {
    /// An interval log to `out`; its headers are written when the run starts.
    pub fn new(out: W) -> Self {
        let mut lines = IntervalLogWriterBuilder::new();
        lines.with_max_value_divisor(MAX_VALUE_DIVISOR);
        let mut buf = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        // Into memory: cannot fail.
        let _ = lines.begin_log_with(&mut buf, &mut serializer);
        Self {
            out,
            serializer,
            lines,
            skip: buf.len(),
            buf,
            epoch_unix_us: None,
            ticks: 0,
            last_end: Duration::ZERO,
            seen: [false; Hist::ALL.len()],
            replies: Vec::new(),
            error: None,
        }
    }

    /// The first write that failed, if one did (the log ends before it).
    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    /// The output (tests read the log back from it).
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Writes the headers for a run started at `epoch_unix_us`.
    fn begin(&mut self, epoch_unix_us: u64) {
        self.epoch_unix_us = Some(epoch_unix_us);
        let start = UNIX_EPOCH + Duration::from_micros(epoch_unix_us);
        let mut header = IntervalLogWriterBuilder::new();
        header
            .add_comment(&format!(
                "[Logged with sockstorm {}: values in us, Interval_Max in ms (max value divisor {MAX_VALUE_DIVISOR})]",
                env!("CARGO_PKG_VERSION")
            ))
            .add_comment("[Histogram log format version 1.3]")
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(MAX_VALUE_DIVISOR);
        self.buf.clear();
        let _ = header.begin_log_with(&mut self.buf, &mut self.serializer);
        self.buf.extend_from_slice(LEGEND.as_bytes());
        self.emit(0);
    }

    /// Writes `buf[from..]` and flushes, unless a write failed before.
    fn emit(&mut self, from: usize) {
        if self.error.is_some() {
            return;
        }
        let written = self
            .out
            .write_all(&self.buf[from..])
            .and_then(|()| self.out.flush());
        if let Err(e) = written {
            self.error = Some(e);
        }
    }

    /// The interval the next tick covers, after the start: from the last one's end to the
    /// Unix-second boundary it was reported at (or to `t`, for a last, partial second).
    fn interval(&mut self, epoch_unix_us: u64, t: f64) -> (Duration, Duration) {
        let boundary_us = (epoch_unix_us / 1_000_000 + self.ticks + 1) * 1_000_000 - epoch_unix_us;
        let end = Duration::from_micros(boundary_us).min(Duration::from_secs_f64(t.max(0.0)));
        let start = self.last_end.min(end);
        self.last_end = end;
        self.ticks += 1;
        (start, end - start)
    }
}

impl<W: Write> Observer for HdrLog<W> {
    fn started(&mut self, epoch_unix_us: u64) {
        self.begin(epoch_unix_us);
    }

    fn tick(&mut self, tick: &Tick<'_>) {
        let epoch = match self.epoch_unix_us {
            Some(e) => e,
            None => {
                // Not told when the run started: it was `t` seconds ago.
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .saturating_sub(Duration::from_secs_f64(tick.t.max(0.0)));
                let e = now.as_micros() as u64;
                self.begin(e);
                e
            }
        };
        let (start, length) = self.interval(epoch, tick.t);
        let named = &tick.second.named;
        for r in named.requests.iter().filter(|r| !r.latency.is_empty()) {
            if !self.replies.iter().any(|(n, _)| *n == r.name) {
                self.replies.push((r.name.clone(), reply_tag(&r.name)));
            }
        }
        self.buf.clear();
        {
            let Ok(mut w) = self
                .lines
                .begin_log_with(&mut self.buf, &mut self.serializer)
            else {
                unreachable!("writing into memory")
            };
            for (i, h) in Hist::ALL.into_iter().enumerate() {
                let hist = tick.second.hist(h);
                self.seen[i] |= !hist.is_empty();
                if self.seen[i] {
                    // Into memory, with a valid tag: cannot fail.
                    let _ = w.write_histogram(hist, start, length, Tag::new(h.name()));
                }
            }
            for (name, tag) in &self.replies {
                let hist = match named.request_named(name) {
                    Some(r) => &r.latency,
                    None => empty_histogram(),
                };
                let _ = w.write_histogram(hist, start, length, Tag::new(tag));
            }
        }
        self.emit(self.skip);
    }
}

/// The tag of request `name`'s replies: `ws_reply{msg:NAME}`, as thresholds name them, with
/// what a tag cannot hold (`,`, space, CR, LF) made `_`.
fn reply_tag(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if matches!(c, ',' | ' ' | '\r' | '\n') {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("ws_reply{{msg:{name}}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ShardStats;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn a_log_reads_back_tagged_and_adds_up() {
        let mut log = HdrLog::new(Vec::new());
        log.started(1_796_537_134_576_731);
        let total = ShardStats::new();
        let mut second = ShardStats::new();
        second.record(Hist::WsConnecting, 1_500);
        second.record(Hist::WsConnecting, 2_500);
        let tick = |second| Tick {
            t: 0.43,
            open: 2,
            target: 2,
            second,
            total: &total,
            shard_busy_pct: &[],
            scenarios: &[],
        };
        log.tick(&tick(&second));
        let mut later = ShardStats::new();
        later.record(Hist::TcpConnect, 90);
        log.tick(&Tick {
            t: 1.44,
            ..tick(&later)
        });
        let text = String::from_utf8(log.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("#[Histogram log format version 1.3]"));
        assert_eq!(
            lines[2],
            "#[StartTime: 1796537134.577 (seconds since epoch)]"
        );
        assert!(lines[3].starts_with("#[BaseTime: 1796537134.577"), "{text}");
        assert_eq!(lines[5], LEGEND.trim_end());
        // Second 1: ws_connecting only, [0, 0.423246) (the next Unix second), max 2.5 ms.
        assert!(lines[6].starts_with("Tag=ws_connecting,0.000,0.423,2.501,"));
        // Second 2: ws_connecting goes on (empty), tcp_connect starts; ends at t.
        assert!(lines[7].starts_with("Tag=tcp_connect,0.423,1.000,0.090,"));
        assert!(lines[8].starts_with("Tag=ws_connecting,0.423,1.000,0.000,"));
        assert_eq!(lines.len(), 9, "{text}");
        let mut counts = std::collections::BTreeMap::new();
        for e in IntervalLogIterator::new(text.as_bytes()) {
            if let LogEntry::Interval(i) = e.unwrap() {
                let h = crate::results::hdr::decode(i.encoded_histogram()).unwrap();
                *counts
                    .entry(i.tag().unwrap().as_str().to_owned())
                    .or_insert(0) += h.len();
            }
        }
        assert_eq!(counts["ws_connecting"], 2);
        assert_eq!(counts["tcp_connect"], 1);
    }

    #[test]
    fn reply_tags_are_valid_tags() {
        assert_eq!(reply_tag("quote"), "ws_reply{msg:quote}");
        let odd = reply_tag("a b,c\n");
        assert_eq!(odd, "ws_reply{msg:a_b_c_}");
        assert!(Tag::new(&odd).is_some());
    }
}
