//! The end-to-end benchmarks' Kafka probes, driven by `benches/e2e.sh`:
//!
//! - `bare BROKERS TOPIC N [KEY=VALUE ...]`: the baseline. A bare rdkafka
//!   consumer with nps-stream's consumer settings (the same
//!   `client_config`, group, no auto commit, no offset store) that reads N
//!   records from TOPIC and discards them; prints the rate from the first
//!   record to the N-th.
//! - `latency BROKERS ALERTS INPUT IDLE`: reads the protobuf
//!   `DetractorAlert`s of the ALERTS topic and the answers of the INPUT
//!   topic as they arrive, until IDLE seconds pass without an alert, and
//!   prints in milliseconds the median and p99 of (the alert's read time −
//!   its answer's produce time, the input record's CreateTime) and of
//!   (`emitted_at` − that produce time: the part before nps-stream sent
//!   the alert).
//!
//! - `mock-broker TOPIC:PARTITIONS ...`: librdkafka's mock cluster with
//!   these topics; prints its bootstrap address and serves until killed.
//!
//! Run without a mode (as `cargo bench` does) it prints this and exits.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nps_stream::kafka::client_config;
use nps_stream::pb::DetractorAlert;
use prost::Message as _;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};

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

async fn bare(brokers: &str, topic: &str, n: u64, extra: &[String]) {
    let consumer = consumer(brokers, &[topic], extra, false);
    let mut bytes = 0usize;
    let mut first = None;
    for _ in 0..n {
        let m = consumer.recv().await.expect("recv");
        first.get_or_insert_with(Instant::now);
        bytes += m.payload().map_or(0, <[u8]>::len);
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    // user + system CPU seconds of the whole process (fields 14 and 15 of
    // /proc/self/stat, in clock ticks of 1/100 s).
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN);
    println!(
        "bare consumer: {n} records ({bytes} bytes), cpu {cpu:.2} s, in {secs:.3} s: {:.0} records/s",
        n as f64 / secs
    );
}

async fn latency(brokers: &str, alerts: &str, input: &str, idle: u64) {
    let consumer = consumer(brokers, &[alerts, input], &[], true);
    // response_id → when its answer was produced (the input record's
    // CreateTime, set by the producer) or when its alert was read; a pair
    // is complete whichever arrives second.
    let mut produced: HashMap<String, f64> = HashMap::new();
    let mut read_at: HashMap<String, (f64, f64)> = HashMap::new();
    let mut total = Vec::new();
    let mut before_send = Vec::new();
    // The baseline: produce → readable for the answers themselves, read by
    // this bare consumer.
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
            bare.push(now - ts as f64);
            if let Some((read, emitted)) = read_at.remove(&id) {
                total.push(read - ts as f64);
                before_send.push(emitted - ts as f64);
            } else {
                produced.insert(id, ts as f64);
            }
            continue;
        }
        let Some(alert) = m.payload().and_then(|p| DetractorAlert::decode(p).ok()) else {
            continue;
        };
        alerts_seen += 1;
        last_alert = Instant::now();
        let emitted = alert.emitted_at.map_or(f64::NAN, |t| {
            t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1e6
        });
        match produced.remove(&alert.response_id) {
            Some(ts) => {
                total.push(now - ts);
                before_send.push(emitted - ts);
            }
            None => {
                read_at.insert(alert.response_id, (now, emitted));
            }
        }
    }
    for v in [&mut total, &mut before_send, &mut bare] {
        v.sort_by(f64::total_cmp);
    }
    if total.is_empty() || bare.is_empty() {
        println!("no alerts read");
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
    println!(
        "alert latency over {} alerts: produce → readable p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         produce → alert sent p50 {:.1} ms, p99 {:.1} ms",
        total.len(),
        percentile(&total, 0.5),
        percentile(&total, 0.9),
        percentile(&total, 0.99),
        total[total.len() - 1],
        percentile(&before_send, 0.5),
        percentile(&before_send, 0.99),
    );
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
        "latency" => {
            latency(&arg(1), &arg(2), &arg(3), arg(4).parse().expect("IDLE")).await;
        }
        "mock-broker" => mock_broker(&args[1..]),
        _ => println!("probe: used by benches/e2e.sh (see its header); nothing to do here"),
    }
}
