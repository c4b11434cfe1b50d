//! A partition's state record: written (`partition_state_record`, every
//! `--snapshot-interval` and at each revoke) and restored into a fresh
//! engine (`restore_state_record`, each time a partition is assigned), at
//! the sizes docs/scaling.md plans with: 1,000 keys with answers over 30
//! days and their comments' themes, and a dedup set of 20,000 or 250,000
//! remembered answers. Prints each record's size.
//!
//! Run: `cargo bench --bench state`.

use criterion::{Criterion, criterion_group, criterion_main};
use nps_stream::engine::{Engine, EngineConfig, Observation};
use std::hint::black_box;

mod support;
use support::{Rng, T0};

const TOPIC: &str = "survey-responses";
const KEYS: u64 = 1_000;

/// An engine remembering `answers` answers for 31 days, counting the
/// shipped taxonomy's number of themes.
fn engine(answers: usize) -> Engine {
    let config = EngineConfig {
        dedup_max_ids: answers,
        dedup_horizon: std::time::Duration::from_secs(31 * 86_400),
        ..EngineConfig::default()
    };
    let mut e = Engine::new(&config).unwrap();
    let themes: Vec<String> = (0..13).map(|i| format!("theme_{i}")).collect();
    e.set_themes(&themes);
    e
}

/// One partition holding `answers` answers over the last 30 days (all
/// remembered) spread over `KEYS` keys, each commented with two themes.
fn partition(answers: usize) -> Engine {
    let mut e = engine(answers);
    let mut rng = Rng(0x5eed);
    for i in 0..answers {
        let k = rng.below(KEYS);
        let age = rng.below(30 * 86_400_000) as i64;
        let id = format!("resp-{i}");
        let product = format!("producto-{:02}", k / 20);
        let region = format!("region-{:02}", k % 20);
        let mut o = Observation::new(&id, &product, &region, rng.below(11) as u32, T0 - age, 1.0);
        o.comment = 1;
        o.themes = nps_stream::themes::ThemeSet((1 << rng.below(13)) | (1 << rng.below(13)));
        // Seen in the order they happened, as a live feed.
        e.record(0, &o, T0 - age);
    }
    e
}

fn bench(c: &mut Criterion) {
    for answers in [20_000, 250_000] {
        let e = partition(answers);
        let record = e.partition_state_record(0, TOPIC, 1);
        println!(
            "state record: {answers} answers over {KEYS} keys: {} bytes ({:.1} per answer)",
            record.len(),
            record.len() as f64 / answers as f64
        );
        let mut g = c.benchmark_group(format!("state_record_{answers}_answers"));
        g.sample_size(10);
        g.bench_function("write", |b| {
            b.iter(|| black_box(e.partition_state_record(0, TOPIC, 1)))
        });
        g.bench_function("restore", |b| {
            b.iter(|| {
                let mut fresh = engine(answers);
                fresh.restore_state_record(&record, 0, TOPIC).unwrap();
                black_box(fresh)
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
