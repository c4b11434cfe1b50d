//! The end-to-end benchmarks' Kafka probes, driven by `benches/e2e.sh`:
//!
//! - `load BROKERS TOPIC N DETRACTOR_SHARE [COMMENT_SHARE]`: produces N
//!   answers as the outside measurement of issue 20 did: 50 products × 20
//!   regions, a comment on one answer in seven, DETRACTOR_SHARE of them
//!   detractors (0.20 ordinary traffic, 0.64 an alert storm), the rest
//!   passives and promoters half and half, given over the last 30 days;
//!   keyed by response_id. With COMMENT_SHARE, that share of the answers
//!   carry a comment drawn from `COMMENTS` (Spanish and English, some
//!   mentioning themes of the shipped taxonomy, some none). With
//!   `TIMELINE=live` in the environment, the answers are given in time
//!   order over the last ten minutes instead (each up to 2 s early), as a
//!   live feed brings them: most are their segment's newest.
//! - `bare BROKERS TOPIC N [KEY=VALUE ...]`: the ordinary baseline. A
//!   plain rdkafka consumer (a `BaseConsumer` poll loop, the leanest
//!   rdkafka reads) with librdkafka's defaults (a group, its
//!   auto commit) that decodes each of N records of TOPIC as a
//!   `SurveyResponse`; prints the rate from the first record to the N-th
//!   and the process's CPU time.
//! - `forward BROKERS TOPIC ALERTS N [KEY=VALUE ...]`: the alert-storm
//!   baseline, "consume and forward": the same consumer, plus a producer
//!   with librdkafka's defaults that sends an alert-sized record (a
//!   `DetractorAlert` of 320 bytes naming the answer, keyed by
//!   customer_id) to ALERTS for each detractor (score 0-6), and waits for
//!   every delivery before it stops; the rate runs from the first record
//!   to the last delivery.
//! - `latency BROKERS ALERTS INPUT IDLE [FORWARDED]`: reads the protobuf
//!   `DetractorAlert`s of the ALERTS topic (and of FORWARDED, written by a
//!   `forward` running beside nps-stream) and the answers of the INPUT
//!   topic as they arrive, until IDLE seconds pass without an alert, and
//!   prints in milliseconds the median and p99 of (the alert's read time −
//!   its answer's produce time, the input record's CreateTime) and of
//!   (`emitted_at` − that produce time: the part before the alert was
//!   sent), for each stream, and what nps-stream adds at the median.
//!
//! - `committed BROKERS GROUP TOPIC N`: polls GROUP's committed offsets
//!   of TOPIC every 100 ms until they add up to N (every record of a
//!   topic loaded with N, offsets from 0, done: nps-stream commits an
//!   offset only once its alert is acknowledged); prints that moment
//!   (Unix ms). Light on the service measured, unlike scraping a
//!   /metrics of several megabytes in a tight loop.
//! - `first-emitted BROKERS ALERTS`: the earliest `emitted_at` (Unix ms)
//!   of the first `DetractorAlert` of each partition of ALERTS, a topic of
//!   one run: when nps-stream began to process.
//!
//! - `mock-broker TOPIC:PARTITIONS ...`: librdkafka's mock cluster with
//!   these topics; prints its bootstrap address and serves until killed.
//!
//! Run without a mode (as `cargo bench` does) it prints this and exits.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nps_stream::kafka::client_config;

#[path = "support/comments.rs"]
mod comments;
use comments::COMMENTS;
use nps_stream::pb::{DetractorAlert, SurveyResponse};
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn consumer(brokers: &str, topics: &[&str], extra: &[String], fast: bool) -> StreamConsumer {
    let mut props = BTreeMap::new();
    for kv in extra {
        if let Some((k, v)) = kv.split_once('=') {
            props.insert(k.to_string(), v.to_string());
        }
    }
    let group = format!("probe-{}", std::process::id());
    let mut c = client_config(brokers, &[("auto.offset.reset", "earliest")], &props);
    c.set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    if fast {
        c.set("fetch.wait.max.ms", "5");
    }
    let consumer: StreamConsumer = c.create().expect("consumer");
    consumer.subscribe(topics).expect("subscribe");
    consumer
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A consumer with librdkafka's defaults: only the brokers, a group of its
/// own, and reading from the beginning.
fn plain_consumer(brokers: &str, topic: &str, extra: &[String]) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", format!("plain-{}", std::process::id()))
        .set("auto.offset.reset", "earliest");
    for kv in extra {
        if let Some((k, v)) = kv.split_once('=') {
            c.set(k, v);
        }
    }
    let consumer: BaseConsumer = c.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// The next record of a baseline's consumer: a `BaseConsumer` poll loop,
/// the leanest way rdkafka reads (no stream, no waker per record).
fn next_record(consumer: &BaseConsumer) -> BorrowedMessage<'_> {
    loop {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            return m.expect("poll");
        }
    }
}

/// User + system CPU seconds of this process (fields 14 and 15 of
/// /proc/self/stat, in clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

async fn bare(brokers: &str, topic: &str, n: u64, extra: &[String]) {
    let consumer = plain_consumer(brokers, topic, extra);
    let (mut bytes, mut decoded) = (0usize, 0u64);
    let mut first = None;
    for _ in 0..n {
        let m = next_record(&consumer);
        first.get_or_insert_with(Instant::now);
        let payload = m.payload().unwrap_or_default();
        bytes += payload.len();
        decoded += u64::from(SurveyResponse::decode(payload).is_ok());
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    println!(
        "bare consumer: {n} records ({bytes} bytes, {decoded} decoded), cpu {:.2} s, in {secs:.3} s: {:.0} records/s",
        cpu_seconds(),
        n as f64 / secs
    );
}

/// Counts delivery reports: acknowledged and failed.
#[derive(Default)]
struct Acks {
    ok: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

impl rdkafka::ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let n = if result.is_ok() {
            &self.ok
        } else {
            &self.failed
        };
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The size of an alert nps-stream writes for a detractor (protobuf, with
/// the comment), as issue 20's outside baseline used.
const ALERT_BYTES: usize = 320;

/// An alert-sized record for a detractor: a `DetractorAlert` naming the
/// answer (so that `latency` can pair them) and when it was sent, padded
/// with a comment to `ALERT_BYTES`.
fn forwarded(answer: &SurveyResponse, buf: &mut Vec<u8>) {
    let now = now_ms();
    let mut alert = DetractorAlert {
        alert_id: answer.response_id.clone(),
        response_id: answer.response_id.clone(),
        customer_id: answer.customer_id.clone(),
        emitted_at: Some(nps_stream::schema::timestamp_from_ms(now as i64)),
        ..Default::default()
    };
    let pad = ALERT_BYTES.saturating_sub(alert.encoded_len() + 3);
    alert.comment = "x".repeat(pad);
    buf.clear();
    alert.encode(buf).expect("a Vec grows");
}

/// `extra`: KEY=VALUE properties for its consumer (the same as
/// nps-stream's when the latencies are compared).
async fn forward(brokers: &str, topic: &str, alerts: &str, n: u64, extra: &[String]) {
    let consumer = plain_consumer(brokers, topic, extra);
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create_with_context(Acks::default())
        .expect("producer");
    let mut alert = Vec::with_capacity(ALERT_BYTES + 16);
    let (mut sent, mut first) = (0u64, None);
    for _ in 0..n {
        let m = next_record(&consumer);
        first.get_or_insert_with(Instant::now);
        let Ok(answer) = SurveyResponse::decode(m.payload().unwrap_or_default()) else {
            continue;
        };
        if answer.score.is_some_and(|s| s <= 6) {
            forwarded(&answer, &mut alert);
            let record = BaseRecord::to(alerts)
                .key(answer.customer_id.as_str())
                .payload(alert.as_slice());
            send_retrying(&producer, record);
            sent += 1;
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let acks = producer.context();
    let ok = acks.ok.load(std::sync::atomic::Ordering::Relaxed);
    let failed = acks.failed.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "forwarding consumer: {n} records, {sent} alerts forwarded ({ok} acknowledged, {failed} failed), cpu {:.2} s, in {secs:.3} s: {:.0} records/s",
        cpu_seconds(),
        n as f64 / secs
    );
}

/// How many partitions `topic` has, from the brokers' metadata.
fn partitions_of(c: &rdkafka::consumer::BaseConsumer, topic: &str) -> i32 {
    c.fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata")
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32)
}

/// Sends `record`, serving delivery reports while the producer's queue
/// is full.
fn send_retrying(producer: &BaseProducer<Acks>, mut record: BaseRecord<'_, str, [u8]>) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                producer.poll(Duration::from_millis(1));
                record = back;
            }
        }
    }
}

async fn committed(brokers: &str, group: &str, topic: &str, n: i64) {
    let probe: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let partitions = partitions_of(&probe, topic);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    loop {
        let done: i64 = probe
            .committed_offsets(tpl.clone(), Duration::from_secs(10))
            .map(|t| {
                t.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .sum()
            })
            .unwrap_or(0);
        if done >= n {
            println!("{:.0}", now_ms());
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn first_emitted(brokers: &str, alerts: &str) {
    let c: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("first-{}", std::process::id()))
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let parts = partitions_of(&c, alerts);
    let mut first = f64::INFINITY;
    for p in 0..parts {
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(alerts, p, rdkafka::Offset::Beginning)
            .expect("partition");
        c.assign(&tpl).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if let Some(t) = m
                        .payload()
                        .and_then(|b| DetractorAlert::decode(b).ok())
                        .and_then(|a| a.emitted_at)
                    {
                        first = first.min(t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1e6);
                    }
                    break;
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                _ => {}
            }
        }
    }
    println!("{first:.0}");
}

/// Issue 20's load: see the module's header.
fn load(brokers: &str, topic: &str, n: u64, detractor_share: f64, comment_share: Option<f64>) {
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create_with_context(Acks::default())
        .expect("producer");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // TIMELINE=live: answers in time order, like a feed; else spread over
    // 30 days.
    let live = std::env::var("TIMELINE").is_ok_and(|t| t == "live");
    // xorshift64*: deterministic, enough for a benchmark's load.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for i in 0..n {
        let r = (next() % 1_000_000) as f64 / 1_000_000.0;
        let score = if r < detractor_share {
            (next() % 7) as u32
        } else if r < detractor_share + (1.0 - detractor_share) / 2.0 {
            7 + (next() % 2) as u32
        } else {
            9 + (next() % 2) as u32
        };
        let id = format!("ld-{i:010}");
        let answer = SurveyResponse {
            response_id: id.clone(),
            customer_id: format!("cli-{:06}", next() % 200_000),
            product: format!("Producto {:02}", next() % 50),
            region: format!("Región {:02}", next() % 20),
            channel: nps_stream::schema::CHANNELS[(next() % 6) as usize] as i32,
            score: Some(score),
            responded_at: Some(nps_stream::schema::timestamp_from_ms(match live {
                // In order over the last ten minutes, each up to 2 s early.
                true => now - 600_000 + (i * 600_000 / n.max(1)) as i64 - (next() % 2_000) as i64,
                false => now - (next() % (30 * 86_400_000)) as i64,
            })),
            comment: match comment_share {
                None if next() % 7 == 0 => COMMENTS[0].into(),
                None => String::new(),
                Some(share) if ((next() % 1_000_000) as f64) < share * 1_000_000.0 => {
                    COMMENTS[(next() % COMMENTS.len() as u64) as usize].into()
                }
                Some(_) => String::new(),
            },
            customer_value: Some(50.0 + (next() % 5_000) as f64),
            survey_id: "nps-relacional-2026".into(),
            attributes: Default::default(),
            updated_at: None,
        };
        let bytes = answer.encode_to_vec();
        let record = BaseRecord::to(topic)
            .key(id.as_str())
            .payload(bytes.as_slice());
        send_retrying(&producer, record);
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    let failed = producer
        .context()
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(failed, 0, "answers not delivered");
}

/// One stream of alerts, paired with the answers' produce times.
#[derive(Default)]
struct Paired {
    /// Alerts read before their answer: response_id → (read, emitted).
    early: HashMap<String, (f64, f64)>,
    /// Produce → readable, and produce → sent (`emitted_at`), in ms.
    total: Vec<f64>,
    before_send: Vec<f64>,
}

impl Paired {
    fn alert(&mut self, produced: &HashMap<String, f64>, alert: DetractorAlert, read: f64) {
        let emitted = alert.emitted_at.map_or(f64::NAN, |t| {
            t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1e6
        });
        match produced.get(&alert.response_id) {
            Some(ts) => {
                self.total.push(read - ts);
                self.before_send.push(emitted - ts);
            }
            None => {
                self.early.insert(alert.response_id, (read, emitted));
            }
        }
    }

    fn answer(&mut self, id: &str, ts: f64) {
        if let Some((read, emitted)) = self.early.remove(id) {
            self.total.push(read - ts);
            self.before_send.push(emitted - ts);
        }
    }

    fn print(&mut self, what: &str) {
        for v in [&mut self.total, &mut self.before_send] {
            v.sort_by(f64::total_cmp);
        }
        let (total, sent) = (&self.total, &self.before_send);
        if total.is_empty() {
            println!("{what}: none read");
            return;
        }
        println!(
            "{what} latency over {} alerts: produce → readable p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
             produce → alert sent p50 {:.1} ms, p99 {:.1} ms",
            total.len(),
            percentile(total, 0.5),
            percentile(total, 0.9),
            percentile(total, 0.99),
            total[total.len() - 1],
            percentile(sent, 0.5),
            percentile(sent, 0.99),
        );
    }
}

/// `forwarded`: the topic the consume-and-forward baseline writes to, read
/// as a second stream of alerts.
async fn latency(brokers: &str, alerts: &str, input: &str, idle: u64, forwarded: Option<&str>) {
    let mut topics = vec![alerts, input];
    topics.extend(forwarded);
    let consumer = consumer(brokers, &topics, &[], true);
    // response_id → when its answer was produced (the input record's
    // CreateTime, set by the producer); an alert and its answer are paired
    // whichever is read second.
    let mut produced: HashMap<String, f64> = HashMap::new();
    let (mut ours, mut theirs) = (Paired::default(), Paired::default());
    // The first baseline: produce → readable for the answers themselves,
    // read by this bare consumer.
    let mut bare = Vec::new();
    let mut last_alert = Instant::now();
    let mut alerts_seen = 0usize;
    loop {
        // Until `idle` seconds pass without an alert (two minutes for the first).
        let wait = if alerts_seen == 0 { 120 } else { idle };
        if last_alert.elapsed() > Duration::from_secs(wait) {
            break;
        }
        let m = match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Ok(m) => m.expect("recv"),
            Err(_) => continue,
        };
        let now = now_ms();
        if m.topic() == input {
            let (Some(key), Some(ts)) = (m.key(), m.timestamp().to_millis()) else {
                continue;
            };
            let id = String::from_utf8_lossy(key).into_owned();
            let ts = ts as f64;
            bare.push(now - ts);
            ours.answer(&id, ts);
            theirs.answer(&id, ts);
            produced.insert(id, ts);
            continue;
        }
        let Some(alert) = m.payload().and_then(|p| DetractorAlert::decode(p).ok()) else {
            continue;
        };
        if m.topic() == alerts {
            alerts_seen += 1;
            last_alert = Instant::now();
            ours.alert(&produced, alert, now);
        } else {
            theirs.alert(&produced, alert, now);
        }
    }
    bare.sort_by(f64::total_cmp);
    if bare.is_empty() {
        println!("no answers read");
        return;
    }
    println!(
        "bare consumer latency over {} answers: produce → readable p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        bare.len(),
        percentile(&bare, 0.5),
        percentile(&bare, 0.9),
        percentile(&bare, 0.99),
        bare[bare.len() - 1],
    );
    if forwarded.is_some() {
        theirs.print("consume-and-forward");
    }
    ours.print("nps-stream alert");
    if let (false, false) = (ours.total.is_empty(), theirs.total.is_empty()) {
        println!(
            "added by nps-stream at the median: {:.1} ms over the consume-and-forward baseline, {:.1} ms over the bare consumer",
            percentile(&ours.total, 0.5) - percentile(&theirs.total, 0.5),
            percentile(&ours.total, 0.5) - percentile(&bare, 0.5),
        );
    }
}

/// An embedded broker (librdkafka's mock cluster) with TOPIC:PARTITIONS
/// topics; prints its bootstrap address and serves until killed.
fn mock_broker(topics: &[String]) {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    for t in topics {
        let (name, parts) = t.split_once(':').unwrap_or((t, "1"));
        cluster
            .create_topic(name, parts.parse().expect("partitions"), 1)
            .expect("topic");
    }
    println!("{}", cluster.bootstrap_servers());
    loop {
        std::thread::park();
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "bare" => bare(&arg(1), &arg(2), arg(3).parse().expect("N"), &args[4..]).await,
        "forward" => {
            let n = arg(4).parse().expect("N");
            forward(&arg(1), &arg(2), &arg(3), n, &args[5.min(args.len())..]).await;
        }
        "load" => load(
            &arg(1),
            &arg(2),
            arg(3).parse().expect("N"),
            arg(4).parse().expect("DETRACTOR_SHARE"),
            args.get(5).map(|s| s.parse().expect("COMMENT_SHARE")),
        ),
        "latency" => {
            let idle = arg(4).parse().expect("IDLE");
            let forwarded = args.get(5).map(String::as_str);
            latency(&arg(1), &arg(2), &arg(3), idle, forwarded).await;
        }
        "committed" => committed(&arg(1), &arg(2), &arg(3), arg(4).parse().expect("N")).await,
        "first-emitted" => first_emitted(&arg(1), &arg(2)),
        "mock-broker" => mock_broker(&args[1..]),
        _ => println!("probe: used by benches/e2e.sh (see its header); nothing to do here"),
    }
}
