//! `--csv FILE`: the per-second timeline as CSV (RFC 4180: a header row, CRLF line ends,
//! fields with a comma, a quote or a line break quoted with `"` and inner quotes doubled),
//! one row per merged second, written and flushed as the run goes on.
//!
//! Columns: `t_s` (seconds from the start, 0.1 s), `unix_s` (the Unix second the row covers,
//! as the JSON timeline's `unix_s`), `open`, `target` (connections), then per second:
//! `established`, `failures` and `failures_<cause>` for each failure cause seen in the run
//! so far (sorted by name), `msgs_sent`, `msgs_received`, `msgs_pushed`, and `<hist>_p50_us`,
//! `<hist>_p99_us` of every latency histogram ([`Hist::ALL`]: `tcp_connect`,
//! `tls_handshake_full`, `tls_handshake_resumed`, `ws_upgrade`, `ws_connecting`,
//! `ws_subscribe_ack`, `ws_msg_rtt`, `ws_msg_latency`, `ws_ping`, `ws_heartbeat`), empty in a
//! second without samples. Rows are the JSON timeline's samples, one for one (the last covers
//! what the shards' final reports brought), so the count columns add up to the JSON counters.
//!
//! A failure cause first seen mid-run adds a column: the file is read back and rewritten in
//! place with the new header and a 0 in that column for the rows before (columns only grow,
//! so the new text covers the old). Nothing is held in memory between seconds but the causes'
//! names. An output that cannot seek (a FIFO) gets a new header row instead.

use crate::metrics::run::{Observer, Tick};
use crate::metrics::Hist;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Columns before the failure causes.
const HEAD: [&str; 6] = ["t_s", "unix_s", "open", "target", "established", "failures"];
/// Count columns after the failure causes, before the latencies.
const MSGS: [&str; 3] = ["msgs_sent", "msgs_received", "msgs_pushed"];

/// `field` as an RFC 4180 field: quoted when it holds a comma, a quote or a line break.
fn quote(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// The timeline CSV writer, an [`Observer`] of the run.
pub struct CsvTimeline<W: Read + Write + Seek> {
    out: W,
    /// Failure causes seen so far, sorted: one column each.
    causes: Vec<String>,
    /// The run's start, µs since the Unix epoch (None: not told; `unix_s` stays empty).
    epoch_unix_us: Option<u64>,
    /// Rows written.
    rows: u64,
    /// The first write that failed (nothing is written after it).
    error: Option<io::Error>,
}

impl<W: Read + Write + Seek> CsvTimeline<W> {
    /// A timeline to `out`, starting with the header row.
    pub fn new(out: W) -> Self {
        let mut csv = Self {
            out,
            causes: Vec::new(),
            epoch_unix_us: None,
            rows: 0,
            error: None,
        };
        let header = csv.header();
        csv.emit(&header);
        csv
    }

    /// The first write that failed, if one did (the file ends before it).
    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    /// The output (tests read the file back from it).
    pub fn into_inner(self) -> W {
        self.out
    }

    /// The header row for the current causes.
    fn header(&self) -> String {
        let causes = self.causes.iter().map(|c| format!("failures_{c}"));
        let hists = Hist::ALL.into_iter().flat_map(|h| {
            [
                format!("{}_p50_us", h.name()),
                format!("{}_p99_us", h.name()),
            ]
        });
        let cells: Vec<String> = HEAD
            .into_iter()
            .map(str::to_owned)
            .chain(causes)
            .chain(MSGS.into_iter().map(str::to_owned))
            .chain(hists)
            .map(|c| quote(&c))
            .collect();
        format!("{}\r\n", cells.join(","))
    }

    /// Writes `text` and flushes, unless a write failed before.
    fn emit(&mut self, text: &str) {
        if self.error.is_some() {
            return;
        }
        let written = self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush());
        if let Err(e) = written {
            self.error = Some(e);
        }
    }

    /// Adds the causes `new` as columns: the file is rewritten with them (a 0 in the rows
    /// before), or, when it cannot seek, a new header row follows.
    fn add_causes(&mut self, new: &[String]) {
        let old = std::mem::take(&mut self.causes);
        self.causes = old.iter().chain(new).cloned().collect();
        self.causes.sort();
        if self.error.is_some() {
            return;
        }
        let mut text = String::new();
        let read = self
            .out
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.out.read_to_string(&mut text));
        if read.is_err() {
            let header = self.header();
            let _ = self.out.seek(SeekFrom::End(0));
            self.emit(&header);
            return;
        }
        let mut out = self.header();
        for row in text.split("\r\n").skip(1).filter(|r| !r.is_empty()) {
            // Data rows hold numbers only: no quoting to mind.
            let cells: Vec<&str> = row.split(',').collect();
            if cells.len() < HEAD.len() + old.len() {
                continue;
            }
            let (head, rest) = cells.split_at(HEAD.len());
            let (was, tail) = rest.split_at(old.len());
            let mid = self
                .causes
                .iter()
                .map(|c| old.iter().position(|o| o == c).map_or("0", |i| was[i]));
            let cells: Vec<&str> = head
                .iter()
                .copied()
                .chain(mid)
                .chain(tail.iter().copied())
                .collect();
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        }
        if let Err(e) = self.out.seek(SeekFrom::Start(0)) {
            self.error = Some(e);
            return;
        }
        self.emit(&out);
    }

    /// The row for `tick`.
    fn row(&self, tick: &Tick<'_>) -> String {
        let s = tick.second;
        let c = &s.counters;
        let unix_s = self
            .epoch_unix_us
            .map_or(String::new(), |e| (e / 1_000_000 + self.rows).to_string());
        let mut cells = vec![
            format!("{:.1}", (tick.t * 10.0).round() / 10.0),
            unix_s,
            tick.open.to_string(),
            tick.target.to_string(),
            c.established.to_string(),
            s.failure_total().to_string(),
        ];
        let by_cause: Vec<(String, u64)> = s.failures.iter().map(|(f, n)| (f.name(), *n)).collect();
        for cause in &self.causes {
            let n: u64 = by_cause
                .iter()
                .filter(|(k, _)| k == cause)
                .map(|(_, n)| n)
                .sum();
            cells.push(n.to_string());
        }
        cells.extend([c.msgs_sent, c.msgs_received, c.msgs_pushed].map(|n| n.to_string()));
        for h in Hist::ALL {
            let h = s.hist(h);
            for q in [0.50, 0.99] {
                cells.push(if h.is_empty() {
                    String::new()
                } else {
                    h.value_at_quantile(q).to_string()
                });
            }
        }
        format!("{}\r\n", cells.join(","))
    }
}

impl<W: Read + Write + Seek> Observer for CsvTimeline<W> {
    fn started(&mut self, epoch_unix_us: u64) {
        self.epoch_unix_us = Some(epoch_unix_us);
    }

    fn tick(&mut self, tick: &Tick<'_>) {
        let new: Vec<String> = tick
            .second
            .failures
            .keys()
            .map(|f| f.name())
            .filter(|n| !self.causes.contains(n))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !new.is_empty() {
            self.add_causes(&new);
        }
        let row = self.row(tick);
        self.emit(&row);
        self.rows += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ShardStats;
    use crate::proto::conn::Failure;
    use std::io::Cursor;

    #[test]
    fn fields_are_quoted_as_rfc_4180_says() {
        assert_eq!(quote("refused"), "refused");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn a_cause_seen_mid_run_adds_a_column_to_every_row() {
        let mut csv = CsvTimeline::new(Cursor::new(Vec::new()));
        csv.started(1_796_537_134_576_731);
        let total = ShardStats::new();
        let mut first = ShardStats::new();
        first.counters.established = 5;
        first.counters.msgs_sent = 7;
        first.record(Hist::WsConnecting, 1_000);
        let tick = |second| Tick {
            t: 0.42,
            open: 5,
            target: 10,
            second,
            total: &total,
            shard_busy_pct: &[],
            scenarios: &[],
        };
        csv.tick(&tick(&first));
        let mut second = ShardStats::new();
        second.fail(Failure::Refused);
        second.fail(Failure::Refused);
        csv.tick(&Tick {
            t: 1.43,
            ..tick(&second)
        });
        let text = String::from_utf8(csv.into_inner().into_inner()).unwrap();
        let rows: Vec<Vec<&str>> = text
            .split_terminator("\r\n")
            .map(|r| r.split(',').collect())
            .collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert_eq!(
            rows[0][..10],
            [
                "t_s",
                "unix_s",
                "open",
                "target",
                "established",
                "failures",
                "failures_refused",
                "msgs_sent",
                "msgs_received",
                "msgs_pushed"
            ]
        );
        assert_eq!(rows[0].len(), 10 + 2 * Hist::ALL.len());
        assert!(rows.iter().all(|r| r.len() == rows[0].len()), "{text}");
        let col = |name: &str| rows[0].iter().position(|c| *c == name).unwrap();
        assert_eq!(
            rows[1][..8],
            ["0.4", "1796537134", "5", "10", "5", "0", "0", "7"]
        );
        assert_eq!(
            rows[2][..8],
            ["1.4", "1796537135", "5", "10", "0", "2", "2", "0"]
        );
        assert_eq!(rows[1][col("ws_connecting_p50_us")], "1000");
        assert_eq!(rows[2][col("ws_connecting_p50_us")], "");
    }
}
