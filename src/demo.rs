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

use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::clock::{Clock, SystemClock};
use crate::config::{DemoArgs, RunArgs, Settings};
use crate::generator::Generator;
use crate::metrics::View;
use crate::shutdown::{self, Shutdown};

mod crm;

/// The demo's contact SLAs and repeat horizon: seconds, so that cases,
/// escalations and the close-the-loop panels move within a minute.
const DEMO_SLA: &str = "critical=10s,high=20s,normal=30s";
const DEMO_REPEAT_HORIZON: &str = "2m";

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
    let mut answers = Generator::new(0x5eed_1234_abcd_0001, "demo");
    // First a month of history, so the windows tell different stories.
    let now = clock.now_ms();
    for _ in 0..HISTORY {
        let (key, bytes) = answers.history(now);
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
                    let (key, bytes) = answers.live(now);
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
        "consumed {} · dead-lettered {} · detractor alerts sent {} · promoter events sent {}\n",
        view.consumed, view.rejected, view.alerts_sent, view.promoter_events
    ));
    let c = &view.cases;
    let met = if c.closed > 0 {
        format!(
            "{:.0}%",
            100.0 * c.closed_within_sla as f64 / c.closed as f64
        )
    } else {
        "–".into()
    };
    out.push_str(&format!(
        "cases: open {} · overdue {} · escalations {} · closed {} (contacted within SLA {met})\n",
        c.open, c.overdue, c.escalations, c.closed
    ));
    out
}

/// The demo's targets: one per product, and one for the segment whose NPS
/// drops (`generator::DROPPING`), so the dashboard's target table and
/// `NpsBelowTarget` have something to show.
fn demo_targets() -> Vec<crate::config::Target> {
    let product = |product: &str, nps: f64| crate::config::Target {
        product: product.into(),
        region: None,
        nps,
    };
    let (dropping_product, dropping_region) = crate::generator::DROPPING;
    vec![
        product("Cuenta Corriente", 30.0),
        product("Tarjeta Oro", 50.0),
        product("Préstamo Personal", 20.0),
        product("Seguro Auto", 30.0),
        crate::config::Target {
            product: dropping_product.into(),
            region: Some(dropping_region.into()),
            nps: 60.0,
        },
    ]
}

/// The demo's breakdowns: the team (on /metrics) and the agent (API and
/// page only) of its phone and chat answers (`generator::TEAMS`).
fn demo_breakdowns() -> Vec<crate::config::Breakdown> {
    let breakdown =
        |attribute: &str, label: &str, min_responses, prometheus| crate::config::Breakdown {
            attribute: attribute.into(),
            label: label.into(),
            min_responses,
            max_values: 500,
            prometheus,
        };
    vec![
        breakdown("team", "team", 30, true),
        breakdown("agent_id", "agent", 10, false),
    ]
}

/// The demo's sector benchmarks: illustrative quartiles, not a survey's.
fn demo_benchmarks() -> Vec<crate::config::Benchmark> {
    let benchmark = |product: &str, p25, median, p75| crate::config::Benchmark {
        product: product.into(),
        p25,
        median,
        p75,
        source: "illustrative quartiles for the demo (not survey data)".into(),
    };
    vec![
        benchmark("*", 15.0, 32.0, 48.0),
        benchmark("App Móvil", 30.0, 45.0, 60.0),
    ]
}

pub async fn run(args: DemoArgs) -> crate::error::Result<()> {
    let embedded = |what: String| move |source| crate::error::Error::Embedded { what, source };
    let cluster = MockCluster::new(1).map_err(embedded("starting the mock cluster".into()))?;
    let bootstrap = cluster.bootstrap_servers();
    let run_args = RunArgs {
        brokers: Some(bootstrap.clone()),
        metrics_addr: Some(args.metrics_addr.clone()),
        group_id: Some("nps-stream-demo".into()),
        cases: crate::config::CasesArgs {
            contact_sla: Some(DEMO_SLA.into()),
            repeat_horizon: Some(DEMO_REPEAT_HORIZON.into()),
            ..Default::default()
        },
        ..RunArgs::default()
    };
    let mut settings = Settings::resolve(&run_args, false)?;
    settings.targets = demo_targets();
    settings.breakdowns = demo_breakdowns();
    settings.benchmarks = demo_benchmarks();
    for (topic, partitions) in [
        (settings.input_topic.as_str(), 6),
        (settings.alerts_topic.as_str(), 3),
        (settings.dlq_topic.as_str(), 1),
        (settings.state_topic.as_str(), 6),
        (settings.cases.case_events_topic.as_str(), 3),
        (settings.cases.escalations_topic.as_str(), 3),
        (settings.promoters.topic.as_str(), 3),
    ] {
        cluster
            .create_topic(topic, partitions, 1)
            .map_err(embedded(format!("creating topic {topic}")))?;
    }
    println!(
        "nps-stream demo: open http://{}/ for the live page",
        settings.metrics_addr
    );
    println!("  embedded Kafka at {bootstrap}");
    println!("  metrics:  http://{}/metrics", settings.metrics_addr);
    println!(
        "  API:      http://{0}/api/v1/segments?window=24h  http://{0}/api/v1/summary",
        settings.metrics_addr
    );
    println!(
        "  alerts:   kcat -C -b {bootstrap} -t {} -J",
        settings.alerts_topic
    );
    println!(
        "  dead letters: kcat -C -b {bootstrap} -t {} -J",
        settings.dlq_topic
    );
    println!(
        "  promoter events: kcat -C -b {bootstrap} -t {} -J   (for referral and advocacy, not review gating)",
        settings.promoters.topic
    );
    println!(
        "  escalations: kcat -C -b {bootstrap} -t {} -J   (demo SLAs: {DEMO_SLA})",
        settings.cases.escalations_topic
    );
    println!("  Ctrl-C to stop\n");

    let (trigger, stop) = shutdown::channel();
    tokio::spawn(shutdown::on_signals(trigger.clone()));
    if let Some(d) = &args.duration {
        let d = humantime::parse_duration(d).map_err(|_| crate::config::ConfigError::Invalid {
            flag: "--duration".into(),
            reason: format!("`{d}` is not a duration (e.g. 30s, 5m)"),
        })?;
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
        .map_err(|source| crate::error::Error::Client {
            what: "the demo producer",
            source,
        })?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gen_task = tokio::spawn(generate(
        producer,
        settings.input_topic.clone(),
        args.rate,
        clock.clone(),
        stop.clone(),
    ));
    let crm_task = tokio::spawn(crm::run(
        bootstrap.clone(),
        settings.alerts_topic.clone(),
        settings.cases.case_events_topic.clone(),
        settings.cases.contact_sla,
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
    let _ = crm_task.await;
    let _ = printer.await;
    if let Ok(v) = view.read() {
        println!("{}", table(&v));
    }
    drop(cluster);
    result
}
