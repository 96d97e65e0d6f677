//! Hot-path micro-benchmarks on stable (criterion, `harness = false`): the frame codec, the
//! upgrade check, the per-shard statistics and the per-message cost of an open connection.
//!
//! Run: `cargo bench --bench codec` (short: `-- --warm-up-time 1 --measurement-time 2`).
//! Wall-clock numbers on a shared machine are noisy; compare runs on the same idle host.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sockstorm::metrics::{Hist, ShardStats};
use sockstorm::proto::conn::Failure;
use sockstorm::proto::rng::Rng;
use sockstorm::proto::ws::frame::{
    apply_mask, encode_frame, Decoded, FrameDecoder, OpCode, Utf8Validator,
};
use sockstorm::proto::ws::handshake::{check_response, make_key, RequestTemplate};
use std::hint::black_box;

#[path = "support/echo.rs"]
mod echo;

use echo::{server_frame, EchoSession, Subscribers};

const KIB: usize = 1024;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// `encode_frame` (header + masking copy) into a reused buffer.
fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_frame");
    for len in [16, 125, KIB, 64 * KIB] {
        let p = payload(len);
        let mut out = Vec::with_capacity(len + 14);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &p, |b, p| {
            b.iter(|| {
                out.clear();
                encode_frame(
                    &mut out,
                    OpCode::Binary,
                    true,
                    black_box(p),
                    [0x12, 0x34, 0x56, 0x78],
                );
                black_box(out.len())
            });
        });
    }
    g.finish();
}

/// `FrameDecoder` over a 64 KiB buffer of back-to-back server frames.
fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_frames");
    for len in [16, KIB] {
        let frame = server_frame(0x82, &payload(len));
        let buf: Vec<u8> = frame.repeat(64 * KIB / frame.len());
        let frames = buf.len() / frame.len();
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &buf, |b, buf| {
            b.iter(|| {
                let mut dec = FrameDecoder::new();
                let mut input = black_box(&buf[..]);
                let (mut headers, mut bytes) = (0usize, 0usize);
                while let Ok(Some(ev)) = dec.decode(&mut input) {
                    match ev {
                        Decoded::Header(_) => headers += 1,
                        Decoded::Payload(p) => bytes += p.len(),
                        Decoded::End => {}
                    }
                }
                assert_eq!(headers, frames);
                bytes
            });
        });
    }
    g.finish();
}

/// `apply_mask` in place on 64 KiB (unaligned start offset, as for payloads behind a header).
fn bench_mask(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply_mask");
    let mut buf = payload(64 * KIB + 6);
    g.throughput(Throughput::Bytes(64 * KIB as u64));
    g.bench_function("64KiB", |b| {
        b.iter(|| apply_mask(black_box(&mut buf[6..]), [0xA1, 0xB2, 0xC3, 0xD4], 0));
    });
    g.finish();
}

/// `Utf8Validator::feed` on 64 KiB of ASCII text.
fn bench_utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8_feed");
    let text = payload(64 * KIB);
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("64KiB_ascii", |b| {
        b.iter(|| {
            let mut v = Utf8Validator::default();
            v.feed(black_box(&text)).unwrap();
            v.finish().unwrap();
        });
    });
    g.finish();
}

/// `check_response` on a complete, realistic 101 (nginx in front of an app server).
fn bench_check_response(c: &mut Criterion) {
    let key = make_key(*b"the sample nonce");
    let accept = tungstenite::handshake::derive_accept_key(&key);
    let template = RequestTemplate::new(
        "ws.example.com",
        "/socket?v=2&encoding=json",
        &[("Origin".into(), "https://example.com".into())],
        &["chat".into(), "superchat".into()],
    );
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\n\
         Server: nginx/1.24.0\r\n\
         Date: Tue, 14 Apr 2026 09:12:44 GMT\r\n\
         Connection: upgrade\r\n\
         Upgrade: websocket\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\
         Sec-WebSocket-Protocol: chat\r\n\
         Strict-Transport-Security: max-age=31536000\r\n\r\n"
    )
    .into_bytes();
    assert_eq!(check_response(&resp, &key, &template), Ok(Some(resp.len())));
    let mut g = c.benchmark_group("check_response");
    g.throughput(Throughput::Bytes(resp.len() as u64));
    g.bench_function("101_nginx", |b| {
        b.iter(|| check_response(black_box(&resp), &key, &template));
    });
    g.finish();
}

/// Per-shard statistics: one histogram record, and the once-a-second merge of two shards.
fn bench_stats(c: &mut Criterion) {
    let mut rng = Rng::new(3);
    // Log-uniform latencies from 1 µs to ~60 s touch every histogram bucket.
    let values: Vec<u64> = (0..4096)
        .map(|_| (1u64 << rng.below(26)) | rng.below(1 << 10))
        .collect();
    let mut g = c.benchmark_group("shard_stats");
    let mut stats = ShardStats::new();
    let mut i = 0usize;
    g.bench_function("record", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            stats.record(Hist::WsMsgRtt, black_box(values[i]));
        });
    });
    let populated = |seed| {
        let mut s = ShardStats::new();
        let mut r = Rng::new(seed);
        for h in Hist::ALL {
            for _ in 0..10_000 {
                s.record(h, 1 + r.below(2_000_000));
            }
        }
        s.counters.msgs_sent = 10_000;
        s.fail(Failure::Refused);
        s.fail(Failure::Reset);
        s.close_code(1000);
        s.close_code(1006);
        s
    };
    let mut acc = populated(4);
    let other = populated(5);
    g.bench_function("add", |b| b.iter(|| acc.add(black_box(&other))));
    g.finish();
}

/// User-space cost per echoed message on an open connection: the message out through
/// `poll_transmit` and its echo in through `handle_recv` (mask, encode, decode, UTF-8 check,
/// echo match, RTT record).
fn bench_conn_echo(c: &mut Criterion) {
    let mut g = c.benchmark_group("conn_echo_round_trip");
    for (name, len) in [("16B", 16), ("1KiB", KIB)] {
        let text = String::from_utf8(payload(len)).unwrap();
        let mut s = EchoSession::open(&text, false);
        g.bench_function(name, |b| b.iter(|| s.round_trip()));
        // Every message sent was matched to its echo (none at all when a filter skipped it).
        let c = &s.stats().counters;
        assert_eq!(c.msgs_received, c.msgs_sent);
    }
    g.finish();
}

/// A fan-out message reaching 50 subscribers of one shard: frame parse, three field scans,
/// the per-publisher window, latency and per-message timing (divide by 50 per delivery).
fn bench_fanout_deliver(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_deliver");
    let mut subs = Subscribers::open(50);
    let mut seq = 0;
    g.throughput(Throughput::Elements(50));
    g.bench_function("50_subscribers", |b| {
        b.iter(|| {
            seq += 1;
            subs.deliver(seq);
        })
    });
    g.finish();
    assert_eq!(subs.stats().counters.fanout_duplicates, 0);
}

criterion_group!(
    benches,
    bench_fanout_deliver,
    bench_encode,
    bench_decode,
    bench_mask,
    bench_utf8,
    bench_check_response,
    bench_stats,
    bench_conn_echo
);
criterion_main!(benches);
