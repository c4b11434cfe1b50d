//! What themes cost, on the end-to-end loads' shape: 6 partitions, 50 ×
//! 20 segments, answers spread over 30 days, a comment on 40% of them
//! (the comments of `benches/probe.rs`'s themed load), the shipped
//! taxonomy.
//!
//! - `classify`: one comment matched against the taxonomy (per comment).
//! - `record_themes_off`: `Engine::record` of those answers without theme
//!   rows (as with `--themes off`), per answer.
//! - `record_themes_on`: the same with theme rows, each comment matched
//!   first (as the pipeline does), per answer: the difference with the
//!   above is what themes add to the engine per answer.
//! - `snapshot_partition_themes_off` / `_on`: one partition's state
//!   record (`Engine::partition_state_record_into`, each snapshot round
//!   in the service), without and with theme rows, per call.
//! - `theme_stats`: one refresh's theme rows of the warmed engine
//!   (`Engine::theme_stats`, every second in the service), per call.
//!
//! Run: `cargo bench --bench themes`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use nps_stream::engine::{Engine, EngineConfig, Observation};
use nps_stream::themes::{Taxonomy, ThemeSet, default_specs};
use std::hint::black_box;

#[path = "support/comments.rs"]
mod comments;
mod support;
use comments::COMMENTS;
use support::{Rng, T0};

const PARTITIONS: u64 = 6;
const BATCH: usize = 100_000;

struct Answer {
    id: String,
    product: String,
    region: String,
    score: u32,
    t: i64,
    comment: Option<&'static str>,
}

fn answers(rng: &mut Rng, first: u64, n: usize) -> Vec<Answer> {
    (0..n)
        .map(|i| Answer {
            id: format!("a-{}", first + i as u64),
            product: format!("producto-{:02}", rng.below(50)),
            region: format!("region-{:02}", rng.below(20)),
            score: rng.below(11) as u32,
            t: T0 - rng.below(30 * 86_400_000) as i64,
            comment: (rng.below(100) < 40).then(|| COMMENTS[rng.below(16) as usize]),
        })
        .collect()
}

fn record(engine: &mut Engine, taxonomy: Option<&Taxonomy>, batch: &[Answer], first: u64) {
    for (i, a) in batch.iter().enumerate() {
        let mut o = Observation::new(&a.id, &a.product, &a.region, a.score, a.t, 1.0);
        if let Some(c) = a.comment {
            o.comment = 1 + (c.len() % 255) as u8;
            o.themes = taxonomy.map_or(ThemeSet(0), |t| t.classify(c));
        }
        let partition = ((first + i as u64) % PARTITIONS) as i32;
        black_box(engine.record(partition, &o, T0));
    }
}

fn bench(c: &mut Criterion) {
    let taxonomy = Taxonomy::new(&default_specs()).unwrap();
    let mut g = c.benchmark_group("themes");
    g.throughput(Throughput::Elements(COMMENTS.len() as u64));
    g.bench_function("classify", |b| {
        b.iter(|| {
            for c in COMMENTS {
                black_box(taxonomy.classify(black_box(c)));
            }
        })
    });
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    let config = EngineConfig {
        dedup_max_ids: 0,
        ..EngineConfig::default()
    };
    let mut rng = Rng(0x51ead);
    for on in [false, true] {
        let mut engine = Engine::new(&config).unwrap();
        let tax = on.then(|| {
            engine.set_themes(taxonomy.names());
            &taxonomy
        });
        let mut next = 0;
        for _ in 0..10 {
            record(&mut engine, tax, &answers(&mut rng, next, BATCH), next);
            next += BATCH as u64;
        }
        let name = if on {
            "record_themes_on"
        } else {
            "record_themes_off"
        };
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let batch = (next, answers(&mut rng, next, BATCH));
                    next += BATCH as u64;
                    batch
                },
                |(first, batch)| {
                    record(&mut engine, tax, &batch, first);
                    batch
                },
                BatchSize::PerIteration,
            )
        });
        let name = if on {
            "snapshot_partition_themes_on"
        } else {
            "snapshot_partition_themes_off"
        };
        let mut buf = Vec::new();
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter(|| {
                engine.partition_state_record_into(0, "survey-responses", 0, &mut buf);
                black_box(buf.len())
            })
        });
        g.throughput(Throughput::Elements(BATCH as u64));
        if on {
            g.throughput(Throughput::Elements(1));
            g.bench_function("theme_stats", |b| {
                b.iter(|| black_box(engine.theme_stats(T0)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
