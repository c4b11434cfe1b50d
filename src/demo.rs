//! `nps-stream demo`: the real `run` pipeline on an embedded Kafka.
//!
//! Starts librdkafka's in-process mock cluster, creates the topics, feeds it
//! realistic survey answers from every channel for several products and
//! regions (detractors with comments, a few malformed events for the
//! dead-letter topic), runs the same service as `run`, and prints a table of
//! NPS per product × region × window every few seconds. The mock cluster
//! keeps about 5 MiB per partition; at the default rate that is hours.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use prost::Message;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::{DemoArgs, RunArgs, Settings};
use crate::pb::SurveyResponse;
use crate::pipeline::{Clock, SystemClock, View};
use crate::schema::{CHANNELS, timestamp_from_ms};
use crate::shutdown::{self, Shutdown};

const PRODUCTS: [(&str, u32); 5] = [
    // (name, how good it is: shifts the score distribution)
    ("Cuenta Corriente", 1),
    ("Tarjeta Oro", 2),
    ("Préstamo Personal", 0),
    ("Seguro Auto", 1),
    ("App Móvil", 2),
];
const REGIONS: [&str; 4] = ["Norte", "Sur", "Centro", "Occidente"];
const COMPLAINTS: [&str; 6] = [
    "Nadie me devolvió la llamada",
    "Me cobraron una comisión que no me explicaron",
    "La app se cae al transferir",
    "Tardaron tres semanas en resolver mi reclamo",
    "El ejecutivo no conocía el producto",
    "Me hicieron repetir mi caso cuatro veces",
];

/// A small deterministic generator (xorshift64*), enough for demo data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Score distributions (0..=10 weights) by product quality: 0 struggling,
/// 1 average, 2 loved.
const SCORE_WEIGHTS: [[u64; 11]; 3] = [
    [4, 2, 3, 4, 5, 8, 10, 12, 14, 18, 20],
    [2, 1, 1, 2, 3, 5, 7, 12, 18, 24, 25],
    [1, 0, 1, 1, 1, 2, 4, 9, 17, 28, 36],
];

fn score(rng: &mut Rng, quality: u32) -> u32 {
    let weights = &SCORE_WEIGHTS[quality.min(2) as usize];
    let mut pick = rng.below(weights.iter().sum());
    for (s, w) in weights.iter().enumerate() {
        if pick < *w {
            return s as u32;
        }
        pick -= w;
    }
    10
}

/// One generated answer given at `t`; `n` makes ids unique.
fn answer(rng: &mut Rng, n: u64, t: i64) -> SurveyResponse {
    let (product, quality) = PRODUCTS[rng.below(PRODUCTS.len() as u64) as usize];
    let region = REGIONS[rng.below(REGIONS.len() as u64) as usize];
    let channel = CHANNELS[rng.below(CHANNELS.len() as u64) as usize];
    // The south had a bad month: one quality step down.
    let quality = if region == "Sur" {
        quality.saturating_sub(1)
    } else {
        quality
    };
    let score = score(rng, quality);
    let customer = rng.below(50_000);
    SurveyResponse {
        response_id: format!("demo-{n:010}"),
        customer_id: format!("cli-{customer:05}"),
        product: product.into(),
        region: region.into(),
        channel: channel as i32,
        score: Some(score),
        responded_at: Some(timestamp_from_ms(t)),
        comment: if score <= 6 {
            COMPLAINTS[rng.below(COMPLAINTS.len() as u64) as usize].into()
        } else {
            String::new()
        },
        // A few high-value customers weigh much more.
        customer_value: Some(if rng.below(20) == 0 {
            5_000.0 + rng.below(50_000) as f64
        } else {
            50.0 + rng.below(2_000) as f64
        }),
        survey_id: "nps-relacional-2026".into(),
        attributes: Default::default(),
    }
}

/// When an answer given around `now` arrives stamped: email answers come
/// hours later than the others.
fn live_time(rng: &mut Rng, now_ms: i64) -> i64 {
    now_ms
        - rng.below(120_000) as i64
        - if rng.below(6) == 0 {
            rng.below(6 * 3_600_000) as i64
        } else {
            0
        }
}

/// The bytes to produce for answer `n` given at `t`: three in a hundred
/// are malformed.
fn payload(rng: &mut Rng, n: u64, t: i64) -> Vec<u8> {
    let mut msg = answer(rng, n, t);
    match rng.below(100) {
        0 => msg.score = None,
        1 => msg.channel = 42,
        2 => return b"\x00\x00\x01".to_vec(),
        _ => {}
    }
    msg.encode_to_vec()
}

/// Answers of the past month produced at start.
const HISTORY: u32 = 20_000;

async fn send_or_wait(producer: &FutureProducer, mut record: FutureRecord<'_, String, Vec<u8>>) {
    loop {
        match producer.send_result(record) {
            Ok(_) => return,
            Err((e, r)) => {
                tracing::debug!(error = %e, "demo producer: queue full, waiting");
                record = r;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn generate(
    producer: FutureProducer,
    topic: String,
    rate: u32,
    clock: Arc<dyn Clock>,
    mut shutdown: Shutdown,
) {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    // First a month of history, so the windows tell different stories.
    let now = clock.now_ms();
    let mut n = 0u64;
    for _ in 0..HISTORY {
        n += 1;
        let t = now - rng.below(30 * 86_400_000) as i64;
        let bytes = payload(&mut rng, n, t);
        let key = format!("demo-{n:010}");
        send_or_wait(
            &producer,
            FutureRecord::to(&topic).key(&key).payload(&bytes),
        )
        .await;
    }
    let per_tick = (rate / 20).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = tick.tick() => {
                let now = clock.now_ms();
                for _ in 0..per_tick {
                    n += 1;
                    let t = live_time(&mut rng, now);
                    let bytes = payload(&mut rng, n, t);
                    let key = format!("demo-{n:010}");
                    send_or_wait(&producer, FutureRecord::to(&topic).key(&key).payload(&bytes)).await;
                }
            }
        }
    }
}

fn fmt_opt(v: Option<f64>, width: usize) -> String {
    match v {
        Some(v) => format!("{v:>width$.1}"),
        None => format!("{:>width$}", "–"),
    }
}

/// The readable NPS table.
pub fn table(view: &View) -> String {
    let mut out = String::new();
    out.push_str(&format!("{:<20} {:<10}", "product", "region"));
    for w in &view.window_names {
        out.push_str(&format!(
            " │ {:>6} {:>5} {:>6} {:>6}",
            format!("NPS {w}"),
            "n",
            "±",
            "wNPS"
        ));
    }
    out.push('\n');
    let mut rows: Vec<_> = view.table.iter().collect();
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    for (product, region, windows) in rows {
        out.push_str(&format!("{product:<20} {region:<10}"));
        for w in windows {
            out.push_str(&format!(
                " │ {} {:>5} {} {}",
                fmt_opt(w.nps(), 6),
                w.responses(),
                fmt_opt(w.margin_of_error(), 6),
                fmt_opt(w.weighted_nps(), 6)
            ));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "consumed {} · dead-lettered {} · detractor alerts sent {}\n",
        view.consumed, view.rejected, view.alerts_sent
    ));
    out
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1).context("starting the embedded Kafka (mock cluster)")?;
    let bootstrap = cluster.bootstrap_servers();
    let run_args = RunArgs {
        brokers: Some(bootstrap.clone()),
        metrics_addr: Some(args.metrics_addr.clone()),
        group_id: Some("nps-stream-demo".into()),
        ..RunArgs::default()
    };
    let settings = Settings::resolve(&run_args, false)?;
    for (topic, partitions) in [
        (settings.input_topic.as_str(), 6),
        (settings.alerts_topic.as_str(), 3),
        (settings.dlq_topic.as_str(), 1),
    ] {
        cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }
    println!("nps-stream demo: embedded Kafka at {bootstrap}");
    println!("  metrics:  http://{}/metrics", settings.metrics_addr);
    println!(
        "  alerts:   kcat -C -b {bootstrap} -t {} -J",
        settings.alerts_topic
    );
    println!(
        "  dead letters: kcat -C -b {bootstrap} -t {} -J",
        settings.dlq_topic
    );
    println!("  Ctrl-C to stop\n");

    let (trigger, stop) = shutdown::channel();
    tokio::spawn(shutdown::on_signals(trigger.clone()));
    if let Some(d) = &args.duration {
        let d = humantime::parse_duration(d)
            .with_context(|| format!("--duration: `{d}` is not a duration"))?;
        let t = trigger.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            t.fire();
        });
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "10")
        .create()
        .context("creating the demo producer")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gen_task = tokio::spawn(generate(
        producer,
        settings.input_topic.clone(),
        args.rate,
        clock,
        stop.clone(),
    ));

    let view = Arc::new(RwLock::new(View::default()));
    let printer = {
        let view = view.clone();
        let mut stop = stop.clone();
        let every = Duration::from_secs(args.table_every.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.recv() => break,
                    _ = tick.tick() => {
                        if let Ok(v) = view.read() {
                            println!("{}", table(&v));
                        }
                    }
                }
            }
        })
    };

    let result = crate::service::run(settings, trigger, stop, view.clone(), true).await;
    let _ = gen_task.await;
    let _ = printer.await;
    if let Ok(v) = view.read() {
        println!("{}", table(&v));
    }
    drop(cluster);
    result
}
