//! Throughput of the pure core, on one core, with realistic data: ~120-byte
//! payloads, 50 products × 20 regions, the 4 default windows, all six
//! channels, event times as answers arrive (90% within 5 minutes, 10% up to
//! 3 days late), a dedup set in steady state (full at its default bound).
//!
//! - `aggregate_windows_only`: `Engine::record` with dedup off.
//! - `aggregate`: `Engine::record` on validated responses.
//! - `aggregate_with_breakdowns`: the same with two breakdowns counted, a
//!   team (50 values) and an agent (500), every answer naming both.
//! - `decode_validate_aggregate`: protobuf bytes → decode → validate → record.
//! - `alert_window_stats`: an answer counted, then its alert's window
//!   figures (`Engine::segment_stats`: every window of its segment, merged
//!   over the partitions), on the end-to-end loads' shape: 6 partitions,
//!   1,000 segments, answers spread over 30 days (about 170 per segment
//!   and partition); `_answers_only` is the same answers without the
//!   figures, `_summed` the figures summed afresh over the rings each
//!   time (as before they were kept between alerts), `_live` the same
//!   figures on a live feed (answers in time order, the clock moving with
//!   them: most answers are their segment's newest), with its own
//!   `_answers_only`. Per alert.
//! - `naive_decode_fold`: the baseline issue 20 names, what one would write
//!   by hand: a fresh prost decode of each payload, then a counter per
//!   (product, region) and category in a `HashMap` (no validation, no
//!   windows, no dedup, no weights), on the same payloads.
//!
//! Run: `cargo bench --bench engine`. Figures are per event; README quotes
//! them with the machine they ran on.

use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use nps_stream::engine::{
    BreakdownSpec, Engine, EngineConfig, KeyId, MAX_BREAKDOWNS, Observation, Outcome,
};
use nps_stream::pb::SurveyResponse;
use nps_stream::schema::{CHANNELS, Decoder, Limits, timestamp_from_ms};
use prost::Message;
use std::hint::black_box;

mod support;
use support::{Rng, T0};

const BATCH: usize = 100_000;

struct Event {
    id: String,
    product: String,
    region: String,
    score: u32,
    t: i64,
    weight: f64,
}

fn events(rng: &mut Rng, first_id: u64, n: usize, now: i64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let score = [10, 9, 9, 8, 7, 10, 6, 3, 9, 0, 8][rng.below(11) as usize];
            Event {
                id: format!("{:016x}-{:08x}-resp", rng.next(), first_id + i as u64),
                product: format!("producto-{:02}", rng.below(50)),
                region: format!("region-{:02}", rng.below(20)),
                score,
                // As answers arrive: most within minutes of being given
                // (SMS, chat, in-app, web, phone/CTI), one in ten later
                // (email, up to 3 days).
                t: now
                    - if rng.below(10) < 9 {
                        rng.below(300_000)
                    } else {
                        rng.below(3 * 86_400_000)
                    } as i64,
                weight: if rng.below(4) == 0 {
                    1.0
                } else {
                    (rng.below(500_000) as f64) / 100.0
                },
            }
        })
        .collect()
}

fn payload(e: &Event, rng: &mut Rng) -> Vec<u8> {
    SurveyResponse {
        response_id: e.id.clone(),
        customer_id: format!("cust-{:08}", rng.below(10_000_000)),
        product: e.product.clone(),
        region: e.region.clone(),
        channel: CHANNELS[rng.below(6) as usize] as i32,
        score: Some(e.score),
        responded_at: Some(timestamp_from_ms(e.t)),
        comment: if e.score <= 6 {
            "Tardaron en atender".into()
        } else {
            String::new()
        },
        customer_value: (e.weight != 1.0).then_some(e.weight),
        survey_id: "nps-2025-q4".into(),
        attributes: Default::default(),
        updated_at: None,
    }
    .encode_to_vec()
}

/// An engine whose dedup set is full (1M ids, unless disabled) and all
/// keys present.
fn warm_engine(rng: &mut Rng, config: &EngineConfig) -> (Engine, u64) {
    warm_engine_with(rng, Engine::new(config).unwrap(), |_| NO_VALUES)
}

/// No breakdown values.
const NO_VALUES: [Option<&str>; MAX_BREAKDOWNS] = [None; MAX_BREAKDOWNS];

/// `engine` warmed as `warm_engine` does, each answer naming the
/// breakdown values `values` gives (with its index).
fn warm_engine_with<'s>(
    rng: &mut Rng,
    mut engine: Engine,
    values: impl Fn(usize) -> [Option<&'s str>; MAX_BREAKDOWNS],
) -> (Engine, u64) {
    let warm = events(rng, 0, 1_100_000, T0);
    for (i, e) in warm.iter().enumerate() {
        let o = Observation {
            breakdowns: values(i),
            ..obs(e)
        };
        engine.record(0, &o, T0);
    }
    (engine, warm.len() as u64)
}

/// Times `Engine::record` on batches of answers not seen before (ids from
/// `next_id` on), each naming the breakdown values `values` gives.
fn record_fresh<'s>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    (engine, rng, next_id): (&mut Engine, &mut Rng, &mut u64),
    values: impl Fn(usize) -> [Option<&'s str>; MAX_BREAKDOWNS],
) {
    g.bench_function(name, |b| {
        b.iter_batched(
            || {
                let batch = events(rng, *next_id, BATCH, T0);
                *next_id += BATCH as u64;
                batch
            },
            |batch| {
                for (i, e) in batch.iter().enumerate() {
                    let o = Observation {
                        breakdowns: values(i),
                        ..obs(e)
                    };
                    black_box(engine.record(0, &o, T0));
                }
                batch
            },
            BatchSize::PerIteration,
        )
    });
}

fn obs(e: &Event) -> Observation<'_> {
    Observation::new(&e.id, &e.product, &e.region, e.score, e.t, e.weight)
}

/// A batch of payloads of answers not seen before (ids from `next_id` on).
fn fresh_payloads(rng: &mut Rng, next_id: &mut u64) -> Vec<Vec<u8>> {
    let batch = events(rng, *next_id, BATCH, T0);
    *next_id += BATCH as u64;
    batch.iter().map(|e| payload(e, rng)).collect()
}

/// The naive fold (see the header): per (product, region), promoters,
/// passives and detractors.
fn naive_fold(
    counts: &mut std::collections::HashMap<(String, String), [u64; 3]>,
    batch: &[Vec<u8>],
) {
    for bytes in batch {
        if let Ok(m) = SurveyResponse::decode(bytes.as_slice()) {
            let s = m.score.unwrap_or_default();
            let c = counts.entry((m.product, m.region)).or_default();
            c[usize::from(s < 9) + usize::from(s < 7)] += 1;
        }
    }
}

/// What the decode benchmarks time: each payload decoded, validated and
/// recorded, through one reused `Decoder` as the pipeline does.
fn decode_validate_record(
    engine: &mut Engine,
    decoder: &mut Decoder,
    batch: &[Vec<u8>],
    limits: &Limits,
) {
    for bytes in batch {
        if let Ok(v) = decoder.decode_and_validate(Some(bytes), [], T0, limits) {
            black_box(engine.record(0, &v.observation(), T0));
            decoder.recycle(v);
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);

    // The windows alone: dedup off.
    let no_dedup = EngineConfig {
        dedup_max_ids: 0,
        ..EngineConfig::default()
    };
    let (mut engine, mut next_id) = warm_engine(&mut rng, &no_dedup);
    g.bench_function("aggregate_windows_only", |b| {
        b.iter_batched(
            || events(&mut rng, 0, BATCH, T0),
            |batch| {
                for e in &batch {
                    black_box(engine.record(0, &obs(e), T0));
                }
                batch
            },
            BatchSize::PerIteration,
        )
    });
    drop(engine);

    let (mut engine, next) = warm_engine(&mut rng, &EngineConfig::default());
    next_id = next_id.max(next);

    record_fresh(
        &mut g,
        "aggregate",
        (&mut engine, &mut rng, &mut next_id),
        |_| NO_VALUES,
    );

    // Two breakdowns: each answer names one of 50 teams and 500 agents.
    let teams: Vec<String> = (0..50).map(|i| format!("equipo-{i:02}")).collect();
    let agents: Vec<String> = (0..500).map(|i| format!("agente-{i:03}")).collect();
    let name = |i: usize| {
        [
            Some(teams[i % 50].as_str()),
            Some(&agents[i % 500]),
            None,
            None,
        ]
    };
    let mut counted = Engine::new(&EngineConfig::default()).unwrap();
    counted.set_breakdowns(&[
        BreakdownSpec {
            label: "team".into(),
            max_values: 500,
        },
        BreakdownSpec {
            label: "agent".into(),
            max_values: 5_000,
        },
    ]);
    let (mut counted, next) = warm_engine_with(&mut rng, counted, name);
    next_id = next_id.max(next);
    let with = (&mut counted, &mut rng, &mut next_id);
    record_fresh(&mut g, "aggregate_with_breakdowns", with, name);
    drop(counted);

    let limits = Limits::default();
    let mut decoder = Decoder::default();
    let avg_len = {
        let sample = events(&mut rng, u64::MAX / 2, 1000, T0);
        sample
            .iter()
            .map(|e| payload(e, &mut rng).len())
            .sum::<usize>()
            / sample.len()
    };
    eprintln!("average payload: {avg_len} bytes");
    g.bench_function("decode_validate_aggregate", |b| {
        b.iter_batched(
            || fresh_payloads(&mut rng, &mut next_id),
            |batch| {
                decode_validate_record(&mut engine, &mut decoder, &batch, &limits);
                batch
            },
            BatchSize::PerIteration,
        )
    });

    let mut counts = std::collections::HashMap::new();
    g.bench_function("naive_decode_fold", |b| {
        b.iter_batched(
            || fresh_payloads(&mut rng, &mut next_id),
            |batch| {
                naive_fold(&mut counts, &batch);
                batch
            },
            BatchSize::PerIteration,
        )
    });
    black_box(counts.len());

    // The same with one record in ten a revision (issue 18): a response of
    // the batch before, its score changed and updated_at set, as survey
    // tools send a comment or a changed answer after the first version.
    let mut previous: Vec<Event> = events(&mut rng, next_id, BATCH, T0);
    next_id += BATCH as u64;
    g.bench_function("decode_validate_aggregate_10pct_revisions", |b| {
        b.iter_batched(
            || {
                let fresh = events(&mut rng, next_id, BATCH - BATCH / 10, T0);
                next_id += fresh.len() as u64;
                let mut payloads: Vec<Vec<u8>> =
                    fresh.iter().map(|e| payload(e, &mut rng)).collect();
                for (i, e) in previous.iter().step_by(10).enumerate() {
                    let mut m =
                        SurveyResponse::decode(payload(e, &mut rng).as_slice()).unwrap_or_default();
                    m.score = Some((e.score + 3) % 11);
                    m.updated_at = Some(timestamp_from_ms(T0));
                    payloads.insert((i * 10).min(payloads.len()), m.encode_to_vec());
                }
                previous = fresh;
                payloads
            },
            |batch| {
                decode_validate_record(&mut engine, &mut decoder, &batch, &limits);
                batch
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    drop(engine);
    alert_window_stats(c, &mut rng);
}

/// Answers of the end-to-end loads' shape: 50 × 20 segments, event times
/// spread over 30 days (dedup is off where they are used: no ids).
fn events_over_30_days(rng: &mut Rng, n: usize) -> Vec<Event> {
    (0..n)
        .map(|_| Event {
            id: String::new(),
            product: format!("producto-{:02}", rng.below(50)),
            region: format!("region-{:02}", rng.below(20)),
            score: rng.below(11) as u32,
            t: T0 - rng.below(30 * 86_400_000) as i64,
            weight: 50.0 + rng.below(5_000) as f64,
        })
        .collect()
}

/// `n` answers of a live feed from `clock` on, each with the instant it
/// arrives: 10,000 a second, answered up to 2 s before. `clock` counts
/// tenths of a millisecond and ends at the last arrival.
fn live_answers(rng: &mut Rng, n: usize, clock: &mut i64) -> Vec<(Event, i64)> {
    events_over_30_days(rng, n)
        .into_iter()
        .map(|e| {
            *clock += 1;
            let now = *clock / 10;
            let t = now - rng.below(2_000) as i64;
            (Event { t, ..e }, now)
        })
        .collect()
}

/// Times batches of `answers` (each with the instant it arrives) counted
/// one by one over the partitions, each followed by its alert's window
/// figures when `figures`.
fn answers_then_figures(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    engine: &mut Engine,
    mut answers: impl FnMut() -> Vec<(Event, i64)>,
    figures: bool,
) {
    g.bench_function(name, |b| {
        b.iter_batched(
            &mut answers,
            |batch| {
                for (i, (e, now)) in batch.iter().enumerate() {
                    let partition = (i % ALERT_PARTITIONS as usize) as i32;
                    match engine.record(partition, &obs(e), *now) {
                        Outcome::Counted(counted, _) if figures => {
                            black_box(engine.segment_stats(counted.key, *now));
                        }
                        outcome => {
                            black_box(outcome);
                        }
                    }
                }
                batch
            },
            BatchSize::PerIteration,
        )
    });
}

/// Partitions of the alert benches' engine (the end-to-end loads').
const ALERT_PARTITIONS: i32 = 6;

/// See the header: the window figures each alert carries.
fn alert_window_stats(c: &mut Criterion, rng: &mut Rng) {
    const ALERTS: usize = 10_000;
    let mut engine = Engine::new(&EngineConfig {
        dedup_max_ids: 0,
        ..EngineConfig::default()
    })
    .unwrap();
    let mut keys: Vec<KeyId> = Vec::new();
    for (i, e) in events_over_30_days(rng, 1_000_000).iter().enumerate() {
        let partition = (i % ALERT_PARTITIONS as usize) as i32;
        if let Outcome::Counted(counted, _) = engine.record(partition, &obs(e), T0)
            && keys.len() < ALERTS
        {
            keys.push(counted.key);
        }
    }
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.sample_size(20);
    // As in the pipeline: each alert follows its answer into the segment,
    // which the kept figures take in (the answers here are of the same
    // shape: spread over 30 days, any partition). The same answers without
    // the figures: what the figures add is the difference.
    let n = keys.len();
    for (name, figures) in [
        ("alert_window_stats", true),
        ("alert_window_stats_answers_only", false),
    ] {
        let spread = || {
            events_over_30_days(rng, n)
                .into_iter()
                .map(|e| (e, T0))
                .collect()
        };
        answers_then_figures(&mut g, name, &mut engine, spread, figures);
    }
    // A live feed: answers in time order, the clock moving with them
    // (10,000 answers per second, each answered up to 2 s before it
    // arrives), so that most answers are the newest of their segment.
    let mut clock = T0 * 10;
    for (name, figures) in [
        ("alert_window_stats_live", true),
        ("alert_window_stats_live_answers_only", false),
    ] {
        let live = || live_answers(rng, n, &mut clock);
        answers_then_figures(&mut g, name, &mut engine, live, figures);
    }
    // The figures summed afresh over the rings for each alert (before they
    // were kept between alerts).
    g.bench_function("alert_window_stats_summed", |b| {
        b.iter(|| {
            for k in &keys {
                black_box(engine.segment_stats_summed(*k, T0));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
