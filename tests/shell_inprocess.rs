//! The async shell driven in-process (no subprocess, no HTTP): the
//! pipeline's `run` against librdkafka's mock cluster, on a multi-threaded
//! runtime, stopped through its shutdown trigger. What it did is read from
//! the view it publishes, the topics and the group's committed offsets,
//! all with the test's own clients.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::mock::Cluster;
use common::*;
use nps_stream::clock::SystemClock;
use nps_stream::config::{Cli, Command, Settings};
use nps_stream::kafka::Health;
use nps_stream::metrics::View;
use nps_stream::pb::{Channel, SurveyResponse};
use nps_stream::schema::timestamp_from_ms as ts;
use prost::Message;
use rdkafka::Offset;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const INPUT: &str = "survey-responses";
const ALERTS: &str = "nps-detractor-alerts";

fn settings(brokers: &str, group: &str, extra: &[&str]) -> Settings {
    let mut argv = vec![
        "nps-stream",
        "run",
        "--brokers",
        brokers,
        "--group-id",
        group,
        "-X",
        "session.timeout.ms=6000",
    ];
    argv.extend_from_slice(extra);
    let Command::Run(args) = <Cli as clap::Parser>::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    Settings::resolve(&args, false).unwrap()
}

/// `n` answers, one in three a detractor, over two segments.
fn answers(n: usize, prefix: &str) -> Vec<SurveyResponse> {
    let now = now_ms();
    (0..n)
        .map(|i| SurveyResponse {
            response_id: format!("{prefix}-{i}"),
            customer_id: format!("cust-{i}"),
            product: ["Cuenta", "Tarjeta"][i % 2].into(),
            region: "Norte".into(),
            channel: Channel::Web as i32,
            score: Some(if i % 3 == 0 { 2 } else { 9 }),
            responded_at: Some(ts(now - 60_000)),
            comment: String::new(),
            customer_value: None,
            survey_id: "s".into(),
            attributes: Default::default(),
            updated_at: None,
        })
        .collect()
}

fn produce(brokers: &str, data: &[SurveyResponse]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for r in data {
        let bytes = r.encode_to_vec();
        p.send(
            BaseRecord::to(INPUT)
                .key(r.response_id.as_bytes())
                .payload(bytes.as_slice()),
        )
        .map_err(|(e, _)| e)
        .unwrap();
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

fn cluster() -> (Cluster, String) {
    let c = Cluster::new();
    c.create_topic(INPUT, 2, 1).unwrap();
    c.create_topic(ALERTS, 1, 1).unwrap();
    c.create_topic("survey-responses-dlq", 1, 1).unwrap();
    let b = c.bootstrap_servers();
    (c, b)
}

/// Runs the pipeline on its own runtime until `done(view)` holds, then
/// fires shutdown; returns how long the stop took.
fn run_until(settings: Settings, done: impl Fn(&View) -> bool) -> Duration {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (trigger, stop) = nps_stream::shutdown::channel();
        let view = Arc::new(RwLock::new(View::default()));
        let task = tokio::spawn(nps_stream::pipeline::run(
            settings,
            Arc::new(SystemClock),
            stop,
            view.clone(),
            Health::new(),
            false,
        ));
        let deadline = Instant::now() + Duration::from_secs(90);
        while !done(&view.read().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "never done: {:?}",
                view.read().unwrap().consumed
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let asked = Instant::now();
        trigger.fire();
        task.await.unwrap().unwrap();
        asked.elapsed()
    })
}

#[test]
fn in_process_every_record_is_counted_alerted_once_and_committed_at_shutdown() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let data = answers(300, "ip");
    produce(&brokers, &data);
    run_until(settings(&brokers, "g-ip", &[]), |v| v.consumed == 300);
    let (committed, ends) = committed_and_end(&brokers, "g-ip", 2);
    assert_eq!(committed, ends, "the shutdown commit covers everything");
    let detractors: BTreeSet<String> = data
        .iter()
        .filter(|r| r.score == Some(2))
        .map(|r| r.response_id.clone())
        .collect();
    let alerts = alerts_by_response(&brokers, detractors.len());
    assert!(alerts.values().all(|ids| ids.len() == 1), "one alert each");
    assert_eq!(alerts.into_keys().collect::<BTreeSet<_>>(), detractors);
}

#[test]
fn in_process_shutdown_is_bounded_while_alerts_cannot_be_delivered() {
    let _heavy = heavy();
    let (cluster, brokers) = cluster();
    let data = answers(60, "ipb");
    produce(&brokers, &data);
    // No leader for the alerts: every alert stays pending.
    cluster.partition_leader(ALERTS, 0, None).unwrap();
    let took = run_until(
        settings(&brokers, "g-ipb", &["--shutdown-timeout", "2s"]),
        |v| v.consumed == 60,
    );
    assert!(took < Duration::from_secs(2 + 6), "stop took {took:?}");
    // Committed exactly up to each partition's first (undelivered)
    // detractor: the records before it needed no delivery.
    let mut first = [i64::MAX; 2];
    for r in read_topic(&brokers, INPUT, data.len(), Duration::from_secs(10)) {
        let answer = SurveyResponse::decode(r.payload.as_deref().unwrap()).unwrap();
        if answer.score == Some(2) {
            let f = &mut first[r.partition as usize];
            *f = (*f).min(r.offset);
        }
    }
    let (committed, _) = committed_and_end(&brokers, "g-ipb", 2);
    for (p, c) in committed.iter().enumerate() {
        match (c, first[p]) {
            (Offset::Offset(o), f) => assert_eq!(*o, f, "partition {p}"),
            // Its first record is a detractor: nothing was committable.
            (Offset::Invalid, 0) => {}
            other => panic!("partition {p}: {other:?}"),
        }
    }
}
