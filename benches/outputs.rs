//! What the pipeline does besides counting, on one core:
//!
//! - `alerts/build_encode_{protobuf,json}`: a detractor's alert built from
//!   the validated response and its segment's 4 windows, then serialized.
//! - `metrics/refresh_10k_keys`: the refresh tick with 10,000 segments × 4
//!   windows: sweep, per-segment window stats, into the series table.
//! - `metrics/scrape_10k_keys`: rendering that table as Prometheus text,
//!   in 64 KB chunks, as a scrape of /metrics does.
//! - `snapshot/{encode,decode}_1000_keys`: one partition's state record
//!   (1,000 segments with a month of answers, 100,000 answers, the dedup
//!   set) written, and read back into a fresh engine.
//!
//! Run: `cargo bench --bench outputs`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nps_stream::alerts::{self, AlertFormat, AlertPolicy};
use nps_stream::engine::{Category, Engine, EngineConfig, Observation};
use nps_stream::metrics::{RenderCursor, SegmentSeries};
use nps_stream::pb::{AlertPriority, Channel, SurveyResponse};
use nps_stream::schema::{CHANNELS, Limits, decode_and_validate, timestamp_from_ms};
use prost::Message;
use std::hint::black_box;

mod support;
use support::{Rng, T0};

const DAY: i64 = 86_400_000;

/// `n` answers over `products` × 20 regions, spread over the last 30 days,
/// recorded on partition 0.
fn filled(rng: &mut Rng, products: u64, n: usize) -> Engine {
    let mut engine = Engine::new(&EngineConfig::default()).unwrap();
    for i in 0..n {
        let id = format!("{:016x}-{i:08x}", rng.next());
        let product = format!("producto-{:03}", rng.below(products));
        let region = format!("region-{:02}", rng.below(20));
        let score = [10, 9, 9, 8, 7, 10, 6, 3, 9, 0, 8][rng.below(11) as usize];
        let obs = Observation::new(
            &id,
            &product,
            &region,
            score,
            T0 - rng.below(30 * DAY as u64) as i64,
            1.0 + rng.below(1000) as f64,
        );
        engine.record(0, &obs, T0);
    }
    engine
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);

    // Alerts.
    let engine = filled(&mut rng, 50, 200_000);
    let detractor = SurveyResponse {
        response_id: "0123456789abcdef-00000001".into(),
        customer_id: "cust-00012345".into(),
        product: "producto-007".into(),
        region: "region-03".into(),
        channel: CHANNELS[2] as i32,
        score: Some(3),
        responded_at: Some(timestamp_from_ms(T0 - 60_000)),
        comment: "Nadie me devolvió la llamada".into(),
        customer_value: Some(12_500.0),
        survey_id: "nps-2025-q4".into(),
        attributes: Default::default(),
        updated_at: None,
    }
    .encode_to_vec();
    let valid = decode_and_validate(Some(&detractor), [], T0, &Limits::default()).unwrap();
    let key = engine
        .segments(T0)
        .iter()
        .find(|s| s.product == "producto-007" && s.region == "region-03")
        .map(|s| s.key)
        .unwrap();
    let specs = engine.layout().specs().to_vec();
    let policy = AlertPolicy::default();
    let mut g = c.benchmark_group("alerts");
    g.throughput(Throughput::Elements(1));
    for (name, format) in [
        ("build_encode_protobuf", AlertFormat::Protobuf),
        ("build_encode_json", AlertFormat::Json),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let stats = engine.segment_stats_summed(key, T0);
                let windows: Vec<_> = specs.iter().zip(stats).collect();
                let alert =
                    alerts::build(&valid, &windows, &alerts::Context::default(), T0, &policy);
                black_box(alerts::encode(&alert, format))
            })
        });
    }
    g.finish();
    drop(engine);

    // The refresh tick with 10,000 segments.
    let mut engine = filled(&mut rng, 500, 400_000);
    let keys = engine.gauges().keys;
    let mut series = SegmentSeries::default();
    series.grow(keys + 1);
    for k in 0..keys as u32 {
        // Every segment has counted responses in two channels and alerts.
        let key = nps_stream::engine::KeyId::from_index(k as usize);
        series.count_response(key, Channel::Sms, Category::Promoter);
        series.count_response(key, Channel::Email, Category::Detractor);
        series.count_alert(key, AlertPriority::High);
    }
    let segments = engine.segments(T0);
    series.refresh(engine.layout().specs(), &segments, |k| {
        engine.segment_name(k)
    });
    drop(segments);
    let text = series.render().len();
    eprintln!("refresh: {keys} segments, {text} bytes of exposition text");
    let mut g = c.benchmark_group("metrics");
    g.sample_size(20);
    g.throughput(Throughput::Elements(keys as u64));
    // On the consuming task, every second.
    g.bench_function("refresh_10k_keys", |b| {
        b.iter(|| {
            engine.sweep(T0);
            let segments = engine.segments(T0);
            series.refresh(engine.layout().specs(), &segments, |k| {
                engine.segment_name(k)
            });
        })
    });
    // On the HTTP task, per scrape, in 64 KB chunks.
    g.bench_function("scrape_10k_keys", |b| {
        b.iter(|| {
            let mut cursor = RenderCursor::default();
            let mut bytes = 0;
            let mut out = String::with_capacity(80 * 1024);
            while series.render_some(&mut cursor, 32, &mut out) {
                if out.len() >= 64 * 1024 {
                    bytes += out.len();
                    out.clear();
                }
            }
            black_box(bytes + out.len())
        })
    });
    g.finish();
    drop(engine);

    // One partition's snapshot with 1,000 segments.
    let engine = filled(&mut rng, 50, 100_000);
    let record = engine.partition_state_record(0, "survey-responses", 100_000);
    eprintln!(
        "snapshot: {} segments, {} bytes",
        engine.gauges().keys,
        record.len()
    );
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(record.len() as u64));
    g.bench_function("encode_1000_keys", |b| {
        b.iter(|| black_box(engine.partition_state_record(0, "survey-responses", 100_000)))
    });
    g.bench_function("decode_1000_keys", |b| {
        b.iter(|| {
            let mut fresh = Engine::new(&EngineConfig::default()).unwrap();
            black_box(fresh.restore_state_record(&record, 0, "survey-responses"))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
