//! Message templates on the send path (criterion, `harness = false`): rendering a templated
//! message into the reused scratch buffer, against copying a fixed payload of the same size,
//! and the whole send (render + frame + mask).
//!
//! Run: `cargo bench --bench template` (short: `-- --warm-up-time 1 --measurement-time 2`).

use criterion::{criterion_group, criterion_main, Criterion};
use sockstorm::proto::rng::Rng;
use sockstorm::proto::template::{Resolve, Template, Vars};
use sockstorm::proto::ws::frame::{encode_frame, OpCode};
use std::hint::black_box;

struct Inputs;

impl Resolve for Inputs {
    fn env(&self, _: &str) -> Option<String> {
        Some("eu-west-1".into())
    }
    fn lines(&self, _: &str) -> Result<Vec<String>, String> {
        Err("no files in benchmarks".into())
    }
    fn token(&self) -> Option<&str> {
        None
    }
    fn scenario(&self) -> &str {
        "chat"
    }
}

/// A chat message with the per-send expressions a load test typically uses.
const CHAT: &str = r#"{"type":"chat","room":"{{scenario}}","region":"{{env REGION}}","from":{{conn_id}},"seq":{{seq}},"ts":{{now_us}},"n":{{rand_int 1 1000}},"mood":"{{rand_choice happy sad ok}}"}"#;

fn bench_render(c: &mut Criterion) {
    let t = Template::parse(CHAT, &Inputs).unwrap().unwrap();
    let mut rng = Rng::new(1);
    let mut out = Vec::with_capacity(256);
    let mut seq = 0u64;
    let render = |out: &mut Vec<u8>, rng: &mut Rng, seq: u64| {
        out.clear();
        t.render(
            &mut Vars {
                conn_id: 12_345,
                seq,
                last_seq: 0,
                now_unix_us: 1_763_900_000_000_000 + seq,
                rng,
            },
            out,
        );
    };
    render(&mut out, &mut rng, 1);
    let fixed = out.clone();
    let mut g = c.benchmark_group("template");
    g.bench_function("render_chat_message", |b| {
        b.iter(|| {
            seq += 1;
            render(&mut out, &mut rng, seq);
            black_box(out.len())
        })
    });
    g.bench_function("copy_fixed_same_size", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&fixed));
            black_box(out.len())
        })
    });
    let mut wire = Vec::with_capacity(512);
    g.bench_function("render_and_frame", |b| {
        b.iter(|| {
            seq += 1;
            render(&mut out, &mut rng, seq);
            wire.clear();
            encode_frame(&mut wire, OpCode::Text, true, &out, rng.mask());
            black_box(wire.len())
        })
    });
    g.bench_function("frame_fixed", |b| {
        b.iter(|| {
            wire.clear();
            encode_frame(&mut wire, OpCode::Text, true, black_box(&fixed), rng.mask());
            black_box(wire.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_render);
criterion_main!(benches);
