//! The attack suite: whole runs of the real binary against a hostile server
//! (`common/hostile.rs`), one named mode per misbehaviour — handshake abuses, frame
//! violations, floods, stalls and signals at each phase. Each run goes under `prlimit --as`
//! so a regression dies at the limit instead of taking the machine down; its RSS is sampled
//! from /proc while it runs, and the test asserts the bound, the time to finish, the exit code,
//! the exact classification in the JSON and the count identities that must always hold.

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use common::child::{Exit, Run, Spawn};
use common::*;
use hostile::{Hostile, Mode, Stats};
use serde_json::{json, Value};
use std::thread;
use std::time::Duration;

/// CPUs the client's shards run on (one shard each, by default all of them).
fn cpus() -> u64 {
    thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// The client's address-space limit, in bytes: 1 GiB and 128 MiB per shard (thread stacks,
/// malloc arenas and io_uring rings reserve address space they never touch).
fn as_limit() -> u64 {
    (1u64 << 30) + cpus() * (128 << 20)
}

/// The RSS bound (KiB) for a run of a few connections, floods included: 40 MiB and 2 MiB per
/// shard. A run holds about 7 MiB before it connects and stays within 25 MiB under every mode
/// here; buffering a flood, or a map per publisher id, would cross it.
fn rss_bound_kib() -> u64 {
    (40 << 10) + cpus() * (2 << 10)
}

/// Where the run named `name` writes its JSON.
fn json_of(name: &str) -> std::path::PathBuf {
    json_path(&format!("attack-{name}"))
}

/// `sockstorm run URL ARGS --json PATH` under `prlimit --as`, started in the background.
fn storm(name: &str, url: &str, args: &[&str]) -> Run {
    let json = json_of(name);
    let _ = std::fs::remove_file(&json);
    let mut all = vec!["run", url];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", json.to_str().unwrap()]);
    Spawn::new(name, &all).address_space(as_limit()).start()
}

/// `sockstorm run` with `args` against a fresh `mode` server: RSS sampled for `watch`, then
/// to the exit (15 s at most). The server comes back too, for its stats.
fn attack(name: &str, mode: Mode, args: &[&str], watch: Duration) -> (Hostile, Finished) {
    let server = Hostile::start(mode);
    let mut run = storm(name, &server.url(), args);
    run.watch(watch);
    (server, Finished::wait(run, Duration::from_secs(15)))
}

/// What a finished run left: the child's exit, time and peak RSS, its JSON and output.
struct Finished {
    exit: Exit,
    v: Value,
    text: String,
}

impl Finished {
    /// Waits for `run` (killing it `limit` after its start) and reads its JSON.
    fn wait(run: Run, limit: Duration) -> Self {
        let exit = run.finish(limit);
        let text = exit.text();
        let v = match std::fs::read(json_of(&exit.name)) {
            Ok(b) => serde_json::from_slice(&b).unwrap(),
            Err(e) => panic!("{}: no JSON ({e}); {:?}\n{text}", exit.name, exit.status),
        };
        Self { exit, v, text }
    }

    fn c(&self, name: &str) -> u64 {
        self.v["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: counter {name} missing", self.exit.name))
    }

    /// Exit code, a finish within `within`, RSS within [`rss_bound_kib()`], and the identities.
    fn check(&self, code: i32, within: Duration) {
        let (n, e) = (&self.exit.name, &self.exit);
        assert_eq!(e.code(), Some(code), "{n}: exit code\n{}", self.text);
        assert!(e.took < within, "{n}: took {:?}", e.took);
        assert!(e.max_rss_kib > 0, "{n}: RSS never sampled");
        assert!(
            e.max_rss_kib < rss_bound_kib(),
            "{n}: RSS {} KiB",
            e.max_rss_kib
        );
        self.identities();
    }

    /// What every attack run must show: [`Self::check`] (exit `code` within `within`, RSS,
    /// identities) and exactly `failures`, by cause.
    fn expect(&self, code: i32, within: Duration, failures: Value) {
        self.check(code, within);
        assert_eq!(self.v["failures"], failures, "{}", self.exit.name);
    }

    /// Every attempt and every session is accounted for, once. (A violation during our close
    /// handshake is the one failure outside connect_failed + sessions_dropped: see
    /// `a_close_never_answered_or_answered_with_a_violation_ends_the_session_incomplete`.)
    fn identities(&self) {
        let n = &self.exit.name;
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

#[test]
fn handshake_abuses_fail_every_attempt_with_its_own_cause() {
    // Each handshake abuse, and the one failure cause it must give every attempt.
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
    in_parallel(cases, |(name, mode, cause)| {
        let (server, f) = attack(
            name,
            mode,
            &[
                "-c",
                "4",
                "-d",
                "2s",
                "--connect-timeout",
                "1s",
                "--no-reconnect",
            ],
            Duration::ZERO,
        );
        f.expect(3, Duration::from_secs(2 + 3), json!({ cause: N }));
        assert_eq!(f.c("attempts"), N, "{name}");
        assert_eq!(f.c("established"), 0, "{name}");
        assert_eq!(f.c("connect_failed"), N, "{name}");
        assert_eq!(Stats::get(&server.stats.accepted), N, "{name}");
        if mode == Mode::EndlessHeader {
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
    let (server, f) = attack(
        "reset-churn",
        Mode::ResetAtOnce,
        &["-c", "8", "-d", "2s", "--connect-timeout", "1s"],
        Duration::ZERO,
    );
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
    let run = storm("query", &url, &["-c", "2", "-d", "1s", "--no-reconnect"]);
    let f = Finished::wait(run, Duration::from_secs(15));
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
    let (server, f) = attack(
        "100-headers",
        Mode::Headers(100),
        &["-c", "4", "-d", "1s", "--no-reconnect"],
        Duration::ZERO,
    );
    f.expect(0, Duration::from_secs(1 + 3), json!({}));
    assert_eq!(f.c("established"), N);
    assert_eq!(f.c("closed_clean"), N);
    assert_eq!(f.v["close_codes"], json!({"1000": N}));
    assert_eq!(Stats::get(&server.stats.closes), N);
}

#[test]
fn frame_violations_drop_every_session_with_their_own_cause() {
    // Each frame violation, and the failure cause it must give every session.
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
    in_parallel(cases, |(name, mode, cause)| {
        let (server, f) = attack(
            name,
            mode,
            &["-c", "4", "-d", "1s", "--no-reconnect"],
            Duration::ZERO,
        );
        f.expect(3, Duration::from_secs(1 + 3), json!({ cause: N }));
        assert_eq!(f.c("established"), N, "{name}");
        assert_eq!(f.c("sessions_dropped"), N, "{name}");
        assert_eq!(Stats::get(&server.stats.upgraded), N, "{name}");
    });
}

#[test]
fn two_close_frames_are_one_close() {
    let (server, f) = attack(
        "two-closes",
        Mode::TwoCloses,
        &["-c", "4", "-d", "1s", "--no-reconnect"],
        Duration::ZERO,
    );
    f.expect(0, Duration::from_secs(1 + 3), json!({}));
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
        let (server, f) = attack(
            "mute",
            Mode::Mute,
            &[
                "-c",
                "4",
                "-d",
                "1s",
                "--close-wait",
                "500ms",
                "--no-reconnect",
            ],
            Duration::ZERO,
        );
        f.expect(0, Duration::from_millis(1500 + 3000), json!({}));
        let took = f.exit.took;
        assert!(took >= Duration::from_millis(1500), "{took:?}");
        assert_eq!(f.c("closes_incomplete"), N);
        assert_eq!(f.v["close_codes"], json!({}));
        assert_eq!(Stats::get(&server.stats.closes), N);
    });
    // A masked close reply: the violation is the server's, counted by its cause, while the
    // session (already closing) ends incomplete rather than dropped. The only failures outside
    // connect_failed + sessions_dropped.
    let (_server, f) = attack(
        "masked-close-reply",
        Mode::MaskedCloseReply,
        &["-c", "4", "-d", "1s", "--no-reconnect"],
        Duration::ZERO,
    );
    let e = &f.exit;
    assert_eq!(e.code(), Some(3), "{}", f.text);
    assert!(e.took < Duration::from_secs(1 + 3), "{:?}", e.took);
    assert!(e.max_rss_kib < rss_bound_kib(), "RSS {} KiB", e.max_rss_kib);
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
    let (_server, f) = attack(
        "huge-length",
        Mode::HugeLength,
        &[
            "-c",
            "2",
            "-d",
            "2s",
            "--close-wait",
            "300ms",
            "--no-reconnect",
        ],
        Duration::from_secs(1),
    );
    f.expect(0, Duration::from_secs(2 + 3), json!({}));
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
    let (server, f) = attack(
        "ping-flood",
        Mode::PingFlood,
        &["-c", "4", "-d", "2s", "--no-reconnect"],
        Duration::from_secs(1),
    );
    f.expect(0, Duration::from_secs(2 + 3), json!({}));
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
    let (server, f) = attack(
        "message-flood",
        Mode::MessageFlood,
        &["-c", "2", "-d", "2s", "--no-reconnect"],
        Duration::from_secs(1),
    );
    f.expect(0, Duration::from_secs(2 + 3), json!({}));
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
    let msg = write_file("attack-non-reading-msg", &"x".repeat(64 * 1024));
    let msg_arg = format!("@{}", msg.display());
    let (conns, rate, secs) = (2u64, 100u64, 2u64);
    let (_server, f) = attack(
        "non-reading",
        Mode::NonReading,
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
        Duration::from_secs(1),
    );
    f.expect(3, Duration::from_secs(secs + 3), json!({}));
    assert!(f.text.contains("send backlog: "), "{}", f.text);
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
    let (server, f) = attack(
        "fanout-ids",
        Mode::FanoutIds(IDS),
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
        Duration::from_secs(2),
    );
    f.expect(0, Duration::from_secs(3 + 3), json!({}));
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
    assert_eq!(f.c("established"), 0, "{}", f.exit.name);
    assert_eq!(f.c("abandoned"), N, "{}", f.exit.name);
    assert_eq!(f.c("abandoned_accepted"), N, "{}", f.exit.name);
    assert_eq!(f.c("abandoned_stalled"), N, "{}", f.exit.name);
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
        let mut s = storm(p.name, &server.url(), p.args);
        s.watch(p.at);
        assert!(s.sample(), "{}: ended before the signal", p.name);
        let mut sent = s.signal(p.signals[0]);
        for sig in &p.signals[1..] {
            thread::sleep(Duration::from_millis(50));
            sent = s.signal(sig);
        }
        let f = Finished::wait(s, Duration::from_secs(20));
        let took = f.exit.ended.duration_since(sent);
        // A first signal stops gracefully within 2 s; a second one at once.
        let bound = Duration::from_millis(if p.signals.len() > 1 { 1000 } else { 2000 });
        assert!(
            took < bound,
            "{}: stopped {took:?} after the signal",
            p.name
        );
        assert!(
            f.exit.max_rss_kib < rss_bound_kib(),
            "{}: RSS {} KiB",
            p.name,
            f.exit.max_rss_kib
        );
        assert_eq!(f.exit.code(), Some(p.code), "{}\n{}", p.name, f.text);
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
