//! The attack suite: whole runs of the real binary against a hostile server
//! (`common/hostile.rs`), one named mode per misbehaviour — handshake abuses, frame
//! violations, floods, stalls and signals at each phase. Each run goes under `prlimit --as`
//! so a regression dies at the limit instead of taking the machine down; its RSS is sampled
//! from /proc while it runs, and the test asserts the bound, the time to finish, the exit code,
//! the exact classification in the JSON and the count identities that must always hold.

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use common::*;
use hostile::{Hostile, Mode, Stats};
use serde_json::{json, Value};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// CPUs the client's shards run on (one shard each, by default all of them).
fn cpus() -> u64 {
    thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// The client's address-space limit, in bytes: 1 GiB and 128 MiB per shard (thread stacks,
/// malloc arenas and io_uring rings reserve address space they never touch). Plain bytes:
/// util-linux 2.38's `prlimit` crashes on suffixes.
fn as_limit() -> String {
    ((1u64 << 30) + cpus() * (128 << 20)).to_string()
}

/// The RSS bound (KiB) for a run of a few connections, floods included: 40 MiB and 2 MiB per
/// shard. A run holds about 7 MiB before it connects and stays within 25 MiB under every mode
/// here; buffering a flood, or a map per publisher id, would cross it.
fn rss_bound_kib() -> u64 {
    (40 << 10) + cpus() * (2 << 10)
}

/// A `sockstorm run` child under `prlimit --as`, its output going to files.
struct Storm {
    name: String,
    child: Child,
    json: PathBuf,
    started: Instant,
    max_rss_kib: u64,
}

/// What a finished run left: exit code, time to finish, peak RSS, JSON and output.
struct Finished {
    name: String,
    code: Option<i32>,
    took: Duration,
    /// When the exit was seen (within 20 ms).
    ended: Instant,
    max_rss_kib: u64,
    v: Value,
    text: String,
}

impl Storm {
    /// `sockstorm run URL ARGS --json PATH`, started in the background.
    fn start(name: &str, url: &str, args: &[&str]) -> Self {
        let json = json_path(&format!("attack-{name}"));
        let _ = std::fs::remove_file(&json);
        let out = File::create(json.with_extension("out")).unwrap();
        let err = File::create(json.with_extension("err")).unwrap();
        let bin = env!("CARGO_BIN_EXE_sockstorm");
        let prlimit = Command::new("prlimit").arg("--version").output().is_ok();
        let mut cmd = if prlimit {
            let mut c = Command::new("prlimit");
            c.arg(format!("--as={}", as_limit())).arg("--").arg(bin);
            c
        } else {
            eprintln!("prlimit not found: {name} runs without an address-space limit");
            Command::new(bin)
        };
        let child = cmd
            .arg("run")
            .arg(url)
            .args(args)
            .args(["--json", json.to_str().unwrap()])
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap();
        Self {
            name: name.to_owned(),
            child,
            json,
            started: Instant::now(),
            max_rss_kib: 0,
        }
    }

    /// Samples the child's RSS for `d` (or until it exits).
    fn watch(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && self.sample() {
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// One RSS sample; false once the child has exited.
    fn sample(&mut self) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
        else {
            return false;
        };
        let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
        else {
            return false; // a zombie: exited
        };
        self.max_rss_kib = self.max_rss_kib.max(kib);
        true
    }

    /// Sends `sig` (INT, TERM, HUP); the time it was sent.
    fn signal(&self, sig: &str) -> Instant {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "{}: kill -{sig} failed", self.name);
        Instant::now()
    }

    /// Waits for the exit (killing it after `limit`), sampling RSS all along.
    fn finish(mut self, limit: Duration) -> Finished {
        let status = loop {
            self.sample();
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{}: still running after {limit:?}", self.name);
            }
            thread::sleep(Duration::from_millis(20));
        };
        let ended = Instant::now();
        let took = ended - self.started;
        eprintln!(
            "{}: exit {:?} after {took:.2?}, peak RSS {} KiB",
            self.name,
            status.code(),
            self.max_rss_kib
        );
        let text = format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(self.json.with_extension("out")).unwrap_or_default(),
            std::fs::read_to_string(self.json.with_extension("err")).unwrap_or_default()
        );
        let v = match std::fs::read(&self.json) {
            Ok(b) => serde_json::from_slice(&b).unwrap(),
            Err(e) => panic!("{}: no JSON ({e}); {status:?}\n{text}", self.name),
        };
        Finished {
            name: self.name,
            code: status.code(),
            took,
            ended,
            max_rss_kib: self.max_rss_kib,
            v,
            text,
        }
    }
}

impl Finished {
    fn c(&self, name: &str) -> u64 {
        self.v["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: counter {name} missing", self.name))
    }

    /// Exit code, a finish within `within`, RSS within [`rss_bound_kib()`], and the identities.
    fn check(&self, code: i32, within: Duration) {
        let n = &self.name;
        assert_eq!(self.code, Some(code), "{n}: exit code\n{}", self.text);
        assert!(self.took < within, "{n}: took {:?}", self.took);
        assert!(self.max_rss_kib > 0, "{n}: RSS never sampled");
        assert!(
            self.max_rss_kib < rss_bound_kib(),
            "{n}: RSS {} KiB",
            self.max_rss_kib
        );
        self.identities();
    }

    /// Every attempt and every session is accounted for, once. (A violation during our close
    /// handshake is the one failure outside connect_failed + sessions_dropped: see
    /// `a_close_never_answered_or_answered_with_a_violation_ends_the_session_incomplete`.)
    fn identities(&self) {
        let n = &self.name;
        let counters = &self.v["counters"];
        assert_eq!(
            self.c("attempts"),
            self.c("established") + self.c("connect_failed") + self.c("abandoned"),
            "{n}: attempts = established + connect_failed + abandoned: {counters}"
        );
        assert_eq!(
            self.c("established"),
            self.c("sessions_dropped")
                + self.c("closed_by_server")
                + self.c("closed_clean")
                + self.c("closes_incomplete"),
            "{n}: every session ends one way: {counters}"
        );
        let failures: u64 = self.v["failures"]
            .as_object()
            .unwrap()
            .values()
            .map(|x| x.as_u64().unwrap())
            .sum();
        assert_eq!(
            failures,
            self.c("connect_failed") + self.c("sessions_dropped"),
            "{n}: each failure has one cause: {}",
            self.v["failures"]
        );
        assert!(self.c("abandoned_accepted") <= self.c("abandoned"), "{n}");
        assert_eq!(
            self.c("msgs_sent"),
            self.c("msgs_received") + self.c("msgs_unanswered"),
            "{n}: sent messages answered or not: {counters}"
        );
    }
}

/// Runs `f` for each case in its own thread; panics name the failed cases.
fn in_parallel<T: Send + 'static>(cases: Vec<T>, f: fn(T)) {
    let handles: Vec<_> = cases
        .into_iter()
        .map(|c| thread::spawn(move || f(c)))
        .collect();
    let failed = handles.into_iter().filter_map(|h| h.join().err()).count();
    assert_eq!(failed, 0, "{failed} cases failed (see their panics above)");
}

const N: u64 = 4;

/// A handshake abuse and the one failure cause it must give every attempt.
struct Abuse {
    name: &'static str,
    mode: Mode,
    cause: &'static str,
}

#[test]
fn handshake_abuses_fail_every_attempt_with_its_own_cause() {
    let cases = vec![
        ("silent", Mode::Silent, "upgrade_timeout"),
        (
            "close-at-once",
            Mode::CloseAtOnce,
            "closed_during_handshake",
        ),
        ("reset-at-once", Mode::ResetAtOnce, "reset"),
        (
            "garbage-status",
            Mode::GarbageStatus,
            "malformed_http_response",
        ),
        ("status-404", Mode::NotFound, "http_404"),
        ("status-503", Mode::Unavailable, "http_503"),
        ("bad-accept", Mode::BadAccept, "bad_accept_key"),
        ("no-upgrade", Mode::NoUpgrade, "upgrade_header_missing"),
        (
            "no-connection",
            Mode::NoConnection,
            "connection_header_missing",
        ),
        (
            "130-headers",
            Mode::Headers(130),
            "upgrade_too_many_headers",
        ),
        ("extension", Mode::Extension, "bad_extension"),
        ("subprotocol", Mode::Subprotocol, "bad_subprotocol"),
        (
            "endless-header",
            Mode::EndlessHeader,
            "malformed_http_response",
        ),
        ("trickle", Mode::Trickle, "upgrade_timeout"),
    ];
    let cases = cases
        .into_iter()
        .map(|(name, mode, cause)| Abuse { name, mode, cause })
        .collect();
    in_parallel(cases, |a| {
        let server = Hostile::start(a.mode);
        let f = Storm::start(
            a.name,
            &server.url(),
            &[
                "-c",
                "4",
                "-d",
                "2s",
                "--connect-timeout",
                "1s",
                "--no-reconnect",
            ],
        )
        .finish(Duration::from_secs(15));
        f.check(3, Duration::from_secs(2 + 3));
        assert_eq!(f.v["failures"], json!({ a.cause: N }), "{}", a.name);
        assert_eq!(f.c("attempts"), N, "{}", a.name);
        assert_eq!(f.c("established"), 0, "{}", a.name);
        assert_eq!(f.c("connect_failed"), N, "{}", a.name);
        assert_eq!(Stats::get(&server.stats.accepted), N, "{}", a.name);
        if a.mode == Mode::EndlessHeader {
            // The head is read up to its 16 KiB limit and no further.
            assert!(
                f.c("bytes_received") < N * (32 << 10),
                "{}",
                f.v["counters"]
            );
        }
    });
}

#[test]
fn reconnect_churn_against_a_resetting_server_keeps_every_attempt_accounted_for() {
    let server = Hostile::start(Mode::ResetAtOnce);
    let f = Storm::start(
        "reset-churn",
        &server.url(),
        &["-c", "8", "-d", "2s", "--connect-timeout", "1s"],
    )
    .finish(Duration::from_secs(15));
    f.check(3, Duration::from_secs(2 + 3));
    let attempts = f.c("attempts");
    // Replacements keep coming (with backoff) and each is one more attempt.
    assert!(attempts > 8, "{}", f.v["counters"]);
    assert_eq!(attempts, 8 + f.c("reconnects"), "{}", f.v["counters"]);
    assert_eq!(f.c("established"), 0);
    // Every attempt that reached the server and ended before the run did was reset.
    let reset = f.v["failures"]["reset"].as_u64().unwrap_or(0);
    assert_eq!(
        f.v["failures"],
        json!({ "reset": reset }),
        "only resets: {}",
        f.v["failures"]
    );
    assert_eq!(reset + f.c("abandoned"), attempts);
    assert!(Stats::get(&server.stats.accepted) >= reset);
}

#[test]
fn the_target_query_goes_to_the_server_but_is_never_shown_and_the_fragment_never_leaves() {
    let server = Hostile::start(Mode::Headers(0));
    let url = format!("{}feed?token=s3cr3t-42&room=1#frag", server.url());
    let f = Storm::start("query", &url, &["-c", "2", "-d", "1s", "--no-reconnect"])
        .finish(Duration::from_secs(15));
    f.check(0, Duration::from_secs(1 + 3));
    assert_eq!(f.c("closed_clean"), 2);
    let lines = server.stats.request_lines.lock().unwrap().clone();
    assert_eq!(
        lines,
        vec!["GET /feed?token=s3cr3t-42&room=1 HTTP/1.1"; 2],
        "the query as given, no fragment"
    );
    let json = f.v.to_string();
    for (what, text) in [("output", &f.text), ("JSON", &json)] {
        assert!(!text.contains("s3cr3t"), "{what} shows the token:\n{text}");
        assert!(text.contains("token=***"), "{what}:\n{text}");
    }
}

#[test]
fn a_101_with_100_header_fields_is_accepted() {
    let server = Hostile::start(Mode::Headers(100));
    let f = Storm::start(
        "100-headers",
        &server.url(),
        &["-c", "4", "-d", "1s", "--no-reconnect"],
    )
    .finish(Duration::from_secs(15));
    f.check(0, Duration::from_secs(1 + 3));
    assert_eq!(f.v["failures"], json!({}));
    assert_eq!(f.c("established"), N);
    assert_eq!(f.c("closed_clean"), N);
    assert_eq!(f.v["close_codes"], json!({"1000": N}));
    assert_eq!(Stats::get(&server.stats.closes), N);
}

/// A frame violation and the failure cause it must give every session.
struct Violation {
    name: &'static str,
    mode: Mode,
    cause: &'static str,
}

#[test]
fn frame_violations_drop_every_session_with_their_own_cause() {
    let cases = vec![
        ("masked", Mode::MaskedFrame, "protocol_masked_server_frame"),
        ("rsv", Mode::ReservedBits, "protocol_reserved_bits"),
        ("opcode", Mode::ReservedOpcode, "protocol_unknown_opcode"),
        (
            "fragmented-control",
            Mode::FragmentedControl,
            "protocol_control_frame_fragmented",
        ),
        (
            "long-control",
            Mode::LongControl,
            "protocol_control_frame_too_long",
        ),
        ("bad-utf8", Mode::BadUtf8, "protocol_invalid_utf8"),
        (
            "lone-continuation",
            Mode::LoneContinuation,
            "protocol_unexpected_continuation",
        ),
        (
            "close-1005",
            Mode::CloseCode1005,
            "protocol_invalid_close_code",
        ),
        (
            "close-999",
            Mode::CloseCode999,
            "protocol_invalid_close_code",
        ),
        ("length-top-bit", Mode::LengthTopBit, "protocol_bad_length"),
    ];
    let cases = cases
        .into_iter()
        .map(|(name, mode, cause)| Violation { name, mode, cause })
        .collect();
    in_parallel(cases, |x| {
        let server = Hostile::start(x.mode);
        let f = Storm::start(
            x.name,
            &server.url(),
            &["-c", "4", "-d", "1s", "--no-reconnect"],
        )
        .finish(Duration::from_secs(15));
        f.check(3, Duration::from_secs(1 + 3));
        assert_eq!(f.v["failures"], json!({ x.cause: N }), "{}", x.name);
        assert_eq!(f.c("established"), N, "{}", x.name);
        assert_eq!(f.c("sessions_dropped"), N, "{}", x.name);
        assert_eq!(Stats::get(&server.stats.upgraded), N, "{}", x.name);
    });
}

#[test]
fn two_close_frames_are_one_close() {
    let server = Hostile::start(Mode::TwoCloses);
    let f = Storm::start(
        "two-closes",
        &server.url(),
        &["-c", "4", "-d", "1s", "--no-reconnect"],
    )
    .finish(Duration::from_secs(15));
    f.check(0, Duration::from_secs(1 + 3));
    assert_eq!(f.v["failures"], json!({}));
    assert_eq!(f.c("closed_by_server"), N);
    // The first close counts; the second (1001) changes nothing.
    assert_eq!(f.v["close_codes"], json!({"1000": N}));
    // Each session answered the first close once.
    assert_eq!(Stats::get(&server.stats.closes), N);
}

#[test]
fn a_close_never_answered_or_answered_with_a_violation_ends_the_session_incomplete() {
    // Mute: our close waits out --close-wait, and the run is no failure.
    let mute = thread::spawn(|| {
        let server = Hostile::start(Mode::Mute);
        let f = Storm::start(
            "mute",
            &server.url(),
            &[
                "-c",
                "4",
                "-d",
                "1s",
                "--close-wait",
                "500ms",
                "--no-reconnect",
            ],
        )
        .finish(Duration::from_secs(15));
        f.check(0, Duration::from_millis(1500 + 3000));
        assert!(f.took >= Duration::from_millis(1500), "{:?}", f.took);
        assert_eq!(f.v["failures"], json!({}));
        assert_eq!(f.c("closes_incomplete"), N);
        assert_eq!(f.v["close_codes"], json!({}));
        assert_eq!(Stats::get(&server.stats.closes), N);
    });
    // A masked close reply: the violation is the server's, counted by its cause, while the
    // session (already closing) ends incomplete rather than dropped. The only failures outside
    // connect_failed + sessions_dropped.
    let server = Hostile::start(Mode::MaskedCloseReply);
    let f = Storm::start(
        "masked-close-reply",
        &server.url(),
        &["-c", "4", "-d", "1s", "--no-reconnect"],
    )
    .finish(Duration::from_secs(15));
    assert_eq!(f.code, Some(3), "{}", f.text);
    assert!(f.took < Duration::from_secs(1 + 3), "{:?}", f.took);
    assert!(f.max_rss_kib < rss_bound_kib(), "RSS {} KiB", f.max_rss_kib);
    assert_eq!(f.v["failures"], json!({"protocol_masked_server_frame": N}));
    assert_eq!(f.c("closes_incomplete"), N);
    assert_eq!(f.c("sessions_dropped"), 0);
    assert_eq!(f.c("closed_clean"), 0);
    assert_eq!(
        f.c("attempts"),
        f.c("established") + f.c("connect_failed") + f.c("abandoned")
    );
    mute.join().unwrap();
}

#[test]
fn a_declared_2_pow_40_byte_frame_streams_through_in_bounded_memory() {
    let _g = lock();
    let server = Hostile::start(Mode::HugeLength);
    let mut s = Storm::start(
        "huge-length",
        &server.url(),
        &[
            "-c",
            "2",
            "-d",
            "2s",
            "--close-wait",
            "300ms",
            "--no-reconnect",
        ],
    );
    s.watch(Duration::from_secs(1));
    let f = s.finish(Duration::from_secs(15));
    f.check(0, Duration::from_secs(2 + 3));
    assert_eq!(f.v["failures"], json!({}));
    assert_eq!(f.c("established"), 2);
    // Inside a frame that never ends, our close is never answered.
    assert_eq!(f.c("closes_incomplete"), 2);
    assert_eq!(f.c("msgs_pushed"), 0);
    // About 64 MB/s per connection for 2 s, streamed, never buffered.
    assert!(f.c("bytes_received") > 64 << 20, "{}", f.v["counters"]);
}

#[test]
fn a_ping_flood_is_answered_pong_for_pong_in_bounded_memory() {
    let _g = lock();
    let server = Hostile::start(Mode::PingFlood);
    let mut s = Storm::start(
        "ping-flood",
        &server.url(),
        &["-c", "4", "-d", "2s", "--no-reconnect"],
    );
    s.watch(Duration::from_secs(1));
    let f = s.finish(Duration::from_secs(15));
    f.check(0, Duration::from_secs(2 + 3));
    assert_eq!(f.v["failures"], json!({}));
    assert_eq!(f.c("closed_clean"), N);
    assert_eq!(f.v["close_codes"], json!({"1000": N}));
    // Every pong we counted reached the server before our close (and nothing else did).
    let pongs = f.c("pongs_sent");
    assert!(pongs > 1000, "{}", f.v["counters"]);
    assert_eq!(pongs, Stats::get(&server.stats.pongs));
    assert_eq!(Stats::get(&server.stats.closes), N);
}

#[test]
fn a_message_flood_is_counted_message_for_message_in_bounded_memory() {
    let _g = lock();
    let server = Hostile::start(Mode::MessageFlood);
    let mut s = Storm::start(
        "message-flood",
        &server.url(),
        &["-c", "2", "-d", "2s", "--no-reconnect"],
    );
    s.watch(Duration::from_secs(1));
    let f = s.finish(Duration::from_secs(15));
    f.check(0, Duration::from_secs(2 + 3));
    assert_eq!(f.v["failures"], json!({}));
    assert_eq!(f.c("closed_clean"), 2);
    // Every message the server wrote whole before our close was counted, once: before our
    // close (pushed) or after it (late).
    let got = f.c("msgs_pushed") + f.c("msgs_late");
    assert_eq!(got, Stats::get(&server.stats.msgs_written));
    assert!(got > 1000, "{}", f.v["counters"]);
    assert!(f.c("bytes_received") > got * 65536, "{}", f.v["counters"]);
}

#[test]
fn a_server_that_stops_reading_leaves_messages_and_pings_unsent_in_bounded_memory() {
    let _g = lock();
    let server = Hostile::start(Mode::NonReading);
    let msg = write_file("attack-non-reading-msg", &"x".repeat(64 * 1024));
    let msg_arg = format!("@{}", msg.display());
    let (conns, rate, secs) = (2u64, 100u64, 2u64);
    let mut s = Storm::start(
        "non-reading",
        &server.url(),
        &[
            "-c",
            &conns.to_string(),
            "-d",
            &format!("{secs}s"),
            "--message",
            &msg_arg,
            "--message-rate",
            &rate.to_string(),
            "--ping-interval",
            "100ms",
            "--drain",
            "200ms",
            "--close-wait",
            "300ms",
            "--no-reconnect",
        ],
    );
    s.watch(Duration::from_secs(1));
    let f = s.finish(Duration::from_secs(15));
    f.check(3, Duration::from_secs(secs + 3));
    assert!(f.text.contains("send backlog: "), "{}", f.text);
    assert_eq!(f.v["failures"], json!({}));
    assert_eq!(f.c("established"), conns);
    // Our close never got through either.
    assert_eq!(f.c("closes_incomplete"), conns);
    let (sent, unsent) = (f.c("msgs_sent"), f.c("msgs_unsent"));
    assert!(unsent > sent, "sent {sent}, unsent {unsent}");
    // Every ping slot of the sessions (one per 100 ms from the open until the stop at 2 s: 19
    // each, fewer if the open was late) is sent or skipped: with a send in flight the timer
    // could not fire, and its missed slots still count (they were lost: 8 of 38).
    let pings = f.c("pings_sent") + f.c("pings_skipped");
    assert!(f.c("pings_skipped") > 0, "{}", f.v["counters"]);
    assert!(
        (conns * 15..=conns * 20).contains(&pings),
        "ping slots {pings}: {}",
        f.v["counters"]
    );
    // Every planned message is sent or unsent (a message or two per connection at the edges).
    let planned = conns * rate * secs;
    assert!(
        sent + unsent >= planned * 9 / 10 && sent + unsent <= planned + 2 * conns,
        "planned {planned}, sent {sent}, unsent {unsent}"
    );
}

#[test]
fn a_fan_out_stream_of_300k_publisher_ids_tracks_4096_per_connection() {
    let _g = lock();
    const IDS: u64 = 150_000;
    const TRACKED: u64 = 4096;
    let server = Hostile::start(Mode::FanoutIds(IDS));
    let mut s = Storm::start(
        "fanout-ids",
        &server.url(),
        &[
            "-c",
            "2",
            "-d",
            "3s",
            "--drain",
            "0s",
            "--role",
            "subscriber",
            "--channel",
            "c",
            "--no-reconnect",
        ],
    );
    s.watch(Duration::from_secs(2));
    let f = s.finish(Duration::from_secs(15));
    f.check(0, Duration::from_secs(3 + 3));
    assert_eq!(f.v["failures"], json!({}));
    assert_eq!(Stats::get(&server.stats.msgs_written), 2 * IDS);
    let fo = &f.v["fanout"];
    assert_eq!(fo["delivered_total"], 2 * TRACKED, "{fo}");
    assert_eq!(fo["untracked"], 2 * (IDS - TRACKED), "{fo}");
    // None of them is one of the run's publishers (it has none): nothing owed.
    assert_eq!(fo["delivered_owed"], 0, "{fo}");
    assert_eq!(fo["duplicates"], 0, "{fo}");
    assert_eq!(f.c("closed_clean"), 2);
}

/// A signal at one phase of a run, and what the JSON must show of that phase.
struct Phase {
    name: &'static str,
    mode: Mode,
    args: &'static [&'static str],
    /// When the (first) signal goes.
    at: Duration,
    signals: &'static [&'static str],
    code: i32,
    /// Checks of the phase's counters.
    expect: fn(&Finished),
}

fn abandoned_all(f: &Finished) {
    assert_eq!(f.c("established"), 0, "{}", f.name);
    assert_eq!(f.c("abandoned"), N, "{}", f.name);
    assert_eq!(f.c("abandoned_accepted"), N, "{}", f.name);
    assert_eq!(f.c("abandoned_stalled"), N, "{}", f.name);
}

const CONNECTING: &[&str] = &[
    "-c",
    "4",
    "-d",
    "60s",
    "--connect-timeout",
    "60s",
    "--no-reconnect",
];

#[test]
fn a_signal_at_any_phase_ends_the_run_within_two_seconds_with_what_was_measured() {
    let phases = vec![
        Phase {
            name: "connecting-int",
            mode: Mode::Silent,
            args: CONNECTING,
            at: Duration::from_millis(1500),
            signals: &["INT"],
            code: 130,
            expect: abandoned_all,
        },
        Phase {
            name: "connecting-term",
            mode: Mode::Silent,
            args: CONNECTING,
            at: Duration::from_millis(1500),
            signals: &["TERM"],
            code: 143,
            expect: abandoned_all,
        },
        Phase {
            name: "connecting-hup",
            mode: Mode::Silent,
            args: CONNECTING,
            at: Duration::from_millis(1500),
            signals: &["HUP"],
            code: 129,
            expect: abandoned_all,
        },
        Phase {
            name: "upgrading-term",
            mode: Mode::Trickle,
            args: CONNECTING,
            at: Duration::from_millis(1500),
            signals: &["TERM"],
            code: 143,
            expect: |f| {
                abandoned_all(f);
                // The first bytes of the trickled 101 had arrived.
                assert!(f.c("bytes_received") >= N, "{}", f.v["counters"]);
            },
        },
        Phase {
            name: "established-ping-flood-int",
            mode: Mode::PingFlood,
            args: &["-c", "4", "-d", "60s", "--no-reconnect"],
            at: Duration::from_millis(1500),
            signals: &["INT"],
            code: 130,
            expect: |f| {
                assert_eq!(f.c("established"), N);
                // Stopped gracefully: our close, answered.
                assert_eq!(f.c("closed_clean"), N, "{}", f.v["counters"]);
                assert!(f.c("pongs_sent") > 100, "{}", f.v["counters"]);
            },
        },
        Phase {
            name: "drain-int",
            mode: Mode::Mute,
            args: &[
                "-c",
                "4",
                "-d",
                "1s",
                "--drain",
                "60s",
                "--close-wait",
                "60s",
                "--message",
                "x",
                "--message-rate",
                "10",
                "--no-reconnect",
            ],
            at: Duration::from_millis(2000),
            signals: &["INT"],
            code: 130,
            expect: |f| {
                assert_eq!(f.c("established"), N);
                assert_eq!(f.c("msgs_received"), 0);
                assert!(f.c("msgs_unanswered") >= N, "{}", f.v["counters"]);
                assert_eq!(f.c("closes_incomplete"), N, "{}", f.v["counters"]);
            },
        },
        Phase {
            name: "close-wait-term",
            mode: Mode::Mute,
            args: &[
                "-c",
                "4",
                "-d",
                "1s",
                "--drain",
                "0s",
                "--close-wait",
                "60s",
                "--no-reconnect",
            ],
            at: Duration::from_millis(2000),
            signals: &["TERM"],
            code: 143,
            expect: |f| {
                assert_eq!(f.c("established"), N);
                assert_eq!(f.c("closes_incomplete"), N, "{}", f.v["counters"]);
            },
        },
        Phase {
            name: "close-wait-hup-then-int",
            mode: Mode::Mute,
            args: &[
                "-c",
                "4",
                "-d",
                "1s",
                "--drain",
                "0s",
                "--close-wait",
                "60s",
                "--no-reconnect",
            ],
            at: Duration::from_millis(2000),
            signals: &["HUP", "INT"],
            // The first signal sets the exit code.
            code: 129,
            expect: |f| {
                assert_eq!(f.c("established"), N);
                assert_eq!(f.c("closes_incomplete"), N, "{}", f.v["counters"]);
            },
        },
    ];
    in_parallel(phases, |p| {
        let server = Hostile::start(p.mode);
        let mut s = Storm::start(p.name, &server.url(), p.args);
        s.watch(p.at);
        assert!(s.sample(), "{}: ended before the signal", p.name);
        let mut sent = s.signal(p.signals[0]);
        for sig in &p.signals[1..] {
            thread::sleep(Duration::from_millis(50));
            sent = s.signal(sig);
        }
        let f = s.finish(Duration::from_secs(20));
        let took = f.ended.duration_since(sent);
        // A first signal stops gracefully within 2 s; a second one at once.
        let bound = Duration::from_millis(if p.signals.len() > 1 { 1000 } else { 2000 });
        assert!(
            took < bound,
            "{}: stopped {took:?} after the signal",
            p.name
        );
        assert!(
            f.max_rss_kib < rss_bound_kib(),
            "{}: RSS {} KiB",
            p.name,
            f.max_rss_kib
        );
        assert_eq!(f.code, Some(p.code), "{}\n{}", p.name, f.text);
        let sig = p.signals[0];
        assert!(
            f.text.contains(&format!("stopped by SIG{sig}")),
            "{}",
            f.text
        );
        assert_eq!(f.v["interrupted"], true, "{}", p.name);
        (p.expect)(&f);
        f.identities();
    });
}
