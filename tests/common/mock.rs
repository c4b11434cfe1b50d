//! The mock-cluster tests' data and helpers: a deterministic dataset with
//! its truth computed by plain arithmetic, a producer of raw records, and
//! checks of committed offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nps_stream::pb::SurveyResponse;
use nps_stream::schema::{CHANNELS, timestamp_from_ms as ts};
use prost::Message as _;
use rdkafka::Offset;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use std::mem::ManuallyDrop;

use super::{Metrics, Service, committed_and_end, read_topic};

pub const INPUT: &str = "survey-responses";
pub const ALERTS: &str = "nps-detractor-alerts";
pub const DLQ: &str = "survey-responses-dlq";
pub const PROMOTERS: &str = "nps-promoter-events";

pub const MIN: i64 = 60_000;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;
/// Ages well inside or outside each window's edges.
pub const AGES: [i64; 5] = [10 * MIN, 5 * HOUR, 3 * DAY, 20 * DAY, 40 * DAY];
pub const WINDOWS: [(&str, i64); 4] = [
    ("1h", HOUR),
    ("24h", DAY),
    ("7d", 7 * DAY),
    ("30d", 30 * DAY),
];
pub const PRODUCTS: [&str; 3] = ["Cuenta Corriente", "Tarjeta Oro", "Seguro Auto"];
pub const REGIONS: [&str; 2] = ["Norte", "Sur"];

/// The mock coordinator makes a member joining a group that had members
/// wait `session.timeout.ms` − 1 s (44 s by default), even after they left:
/// a shorter session keeps restarts quick.
pub const QUICK_REJOIN: &[&str] = &["-X", "session.timeout.ms=6000"];

/// `n` valid responses, deterministic; each with its age.
pub fn dataset(n: usize, now: i64, prefix: &str) -> Vec<(SurveyResponse, i64)> {
    (0..n)
        .map(|i| {
            let score = ((i * 7) % 11) as u32;
            let age = AGES[(i / 6) % AGES.len()];
            let msg = SurveyResponse {
                response_id: format!("{prefix}-{i:05}"),
                customer_id: if i % 5 == 0 {
                    String::new()
                } else {
                    format!("cust-{}", i % 97)
                },
                product: PRODUCTS[i % 3].into(),
                region: REGIONS[(i / 3) % 2].into(),
                channel: CHANNELS[i % 6] as i32,
                score: Some(score),
                responded_at: Some(ts(now - age)),
                comment: if score <= 6 {
                    format!("queja {i}")
                } else if score >= 9 && i % 3 != 0 {
                    format!("me encanta {i}")
                } else {
                    String::new()
                },
                // Mostly small values; now and then a customer worth 2,500
                // (a detractor among them gets a `high` alert) or 25,000
                // (`critical` whatever the score).
                customer_value: if i % 4 == 0 {
                    None
                } else if i % 50 == 7 {
                    Some(2_500.0)
                } else if i % 50 == 13 {
                    Some(25_000.0)
                } else {
                    Some((i % 13) as f64 * 10.5)
                },
                survey_id: "s-1".into(),
                attributes: Default::default(),
                updated_at: None,
            };
            (msg, age)
        })
        .collect()
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Expect {
    pub p: u64,
    pub pa: u64,
    pub d: u64,
    pub wnet: f64,
    pub wtot: f64,
}

/// Per (product, region, window), from the data alone.
pub fn expected(
    data: &[(SurveyResponse, i64)],
) -> BTreeMap<(String, String, &'static str), Expect> {
    let mut out = BTreeMap::new();
    for (m, age) in data {
        for (w, len) in WINDOWS {
            if *age >= len {
                continue;
            }
            let e: &mut Expect = out
                .entry((m.product.clone(), m.region.clone(), w))
                .or_default();
            let s = m.score.unwrap();
            let weight = m.customer_value.unwrap_or(1.0);
            e.wtot += weight;
            if s >= 9 {
                e.p += 1;
                e.wnet += weight;
            } else if s >= 7 {
                e.pa += 1;
            } else {
                e.d += 1;
                e.wnet -= weight;
            }
        }
    }
    out
}

/// Raw payloads that must be refused, with the reason each must get.
pub fn bad_events(now: i64) -> Vec<(Option<Vec<u8>>, &'static str)> {
    let good = |f: &dyn Fn(&mut SurveyResponse)| {
        let mut m = dataset(1, now, "bad").remove(0).0;
        f(&mut m);
        Some(m.encode_to_vec())
    };
    vec![
        (
            Some(b"\xff\xfe not protobuf at all".to_vec()),
            "undecodable",
        ),
        (good(&|m| m.score = None), "missing_score"),
        (good(&|m| m.score = Some(11)), "score_out_of_range"),
        (good(&|m| m.channel = 42), "unknown_channel"),
        (
            good(&|m| m.responded_at = Some(ts(now + HOUR))),
            "future_timestamp",
        ),
        (good(&|m| m.product = "p".repeat(300)), "field_too_long"),
        (
            good(&|m| m.region = "Norte\n".into()),
            "invalid_label_value",
        ),
        (good(&|m| m.responded_at = None), "missing_timestamp"),
        (Some(vec![0, 0, 0]), "invalid_framing"),
        (None, "empty_payload"),
    ]
}

/// (payload, key, one header) of a record to produce.
pub type Input = (
    Option<Vec<u8>>,
    Vec<u8>,
    Option<(&'static str, &'static str)>,
);

/// Produces `records` to the input topic.
pub fn produce(brokers: &str, records: &[Input]) {
    produce_to(brokers, INPUT, records);
}

/// Produces `records` to `topic`, waiting for room when the producer's
/// queue is full.
pub fn produce_to(brokers: &str, topic: &str, records: &[Input]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (payload, key, header) in records {
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key.as_slice());
        if let Some(p) = payload {
            r = r.payload(p.as_slice());
        }
        if let Some((k, v)) = header {
            r = r.headers(OwnedHeaders::new().insert(Header {
                key: k,
                value: Some(*v),
            }));
        }
        let mut r = r;
        loop {
            match producer.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(10));
                    r = back;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// A one-broker mock cluster whose groups form at once. librdkafka's mock
/// coordinator holds the first member of an empty group for
/// `group.initial.rebalance.delay.ms` (3 s, as Kafka does), on every start
/// of a service and of its case tracker; the tests start services some
/// hundred times. Derefs to rdkafka's `MockCluster`.
pub struct Cluster {
    mock: ManuallyDrop<MockCluster<'static, DefaultProducerContext>>,
    /// The client that owns the mock cluster; it outlives `mock`.
    _owner: Box<BaseProducer>,
}

impl Cluster {
    pub fn new() -> Cluster {
        let owner: Box<BaseProducer> = Box::new(
            ClientConfig::new()
                .set("test.mock.num.brokers", "1")
                .create()
                .expect("a client with a mock cluster"),
        );
        // SAFETY: the client's handle is valid while `owner` lives, and
        // the mock cluster it returns lives as long as the client; the
        // setter only writes the cluster's default under its lock.
        unsafe {
            let raw = rdkafka::bindings::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
            assert!(!raw.is_null(), "the client has no mock cluster");
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(raw, 0);
        }
        let mock = owner
            .client()
            .mock_cluster()
            .expect("the client's mock cluster");
        // SAFETY: `mock` borrows the client in `owner`, a heap allocation
        // that never moves and is dropped only after `mock` (see Drop).
        let mock = unsafe {
            std::mem::transmute::<
                MockCluster<'_, DefaultProducerContext>,
                MockCluster<'static, DefaultProducerContext>,
            >(mock)
        };
        Cluster {
            mock: ManuallyDrop::new(mock),
            _owner: owner,
        }
    }
}

impl std::ops::Deref for Cluster {
    type Target = MockCluster<'static, DefaultProducerContext>;
    fn deref(&self) -> &Self::Target {
        &self.mock
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, before the client it borrows.
        unsafe { ManuallyDrop::drop(&mut self.mock) }
    }
}

pub fn cluster() -> (Cluster, String) {
    let c = Cluster::new();
    c.create_topic(INPUT, 4, 1).unwrap();
    c.create_topic(ALERTS, 2, 1).unwrap();
    c.create_topic(DLQ, 1, 1).unwrap();
    let b = c.bootstrap_servers();
    (c, b)
}

/// Waits until the group has committed everything in the input topic.
pub fn wait_committed(
    brokers: &str,
    group: &str,
    partitions: i32,
    timeout: Duration,
    svc: &Service,
) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (c, e) = committed_and_end(brokers, group, partitions);
        if c == e {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all committed: {c:?} vs {e:?}\n{}",
            svc.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn consumed(m: &Metrics) -> f64 {
    m.get("nps_events_consumed_total", &[]).unwrap_or(0.0)
}

pub fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

pub fn good_records(data: &[(SurveyResponse, i64)]) -> Vec<Input> {
    data.iter()
        .map(|(m, _)| {
            (
                Some(m.encode_to_vec()),
                m.response_id.clone().into_bytes(),
                None,
            )
        })
        .collect()
}

pub fn detractor_ids(data: &[(SurveyResponse, i64)]) -> BTreeSet<String> {
    data.iter()
        .filter(|(r, _)| r.score.unwrap() <= 6)
        .map(|(r, _)| r.response_id.clone())
        .collect()
}

/// The first offset of a detractor per input partition among `data`'s
/// records, as they sit in the topic.
pub fn first_detractor_offsets(
    brokers: &str,
    data: &[(SurveyResponse, i64)],
) -> BTreeMap<i32, i64> {
    first_offsets_of(brokers, &detractor_ids(data))
}

/// The first offset per input partition of a record that sends something
/// (a detractor's alert or a promoter's event) among `data`'s records.
pub fn first_delivery_offsets(brokers: &str, data: &[(SurveyResponse, i64)]) -> BTreeMap<i32, i64> {
    let sending = data
        .iter()
        .filter(|(r, _)| r.score.unwrap() <= 6 || r.score.unwrap() >= 9)
        .map(|(r, _)| r.response_id.clone())
        .collect();
    first_offsets_of(brokers, &sending)
}

/// The first offset per input partition of a record keyed by one of `ids`.
pub fn first_offsets_of(brokers: &str, ids: &BTreeSet<String>) -> BTreeMap<i32, i64> {
    let mut first = BTreeMap::new();
    let all = read_topic(brokers, INPUT, usize::MAX, Duration::from_secs(5));
    for r in all {
        let id = String::from_utf8(r.key.clone().unwrap()).unwrap();
        if ids.contains(&id) {
            let e = first.entry(r.partition).or_insert(r.offset);
            *e = (*e).min(r.offset);
        }
    }
    first
}

/// No partition of `group` is committed past its offset in `limits` (its
/// first undelivered alert). Nothing committed is allowed: with the
/// producer's queue full, reading can stop before any partition reaches
/// a record its commit could cover. (Where every partition is read to its
/// end, `assert_committed_at` asks for the exact offsets.)
pub fn assert_not_committed_past(brokers: &str, group: &str, limits: &BTreeMap<i32, i64>) {
    let (committed, _) = committed_and_end(brokers, group, 4);
    for (p, first) in limits {
        match committed[*p as usize] {
            Offset::Offset(c) => assert!(c <= *first, "partition {p}: {c} past {first}"),
            Offset::Invalid => {}
            other => panic!("partition {p}: {other:?}"),
        }
    }
}

/// Every partition of `group` is committed exactly at its offset in
/// `limits` (its first undelivered record), or at its end when it has
/// none; nothing committed only where that offset is 0.
pub fn assert_committed_at(brokers: &str, group: &str, limits: &BTreeMap<i32, i64>) {
    let (committed, end) = committed_and_end(brokers, group, 4);
    for (p, c) in committed.iter().enumerate() {
        let want = match limits.get(&(p as i32)) {
            Some(first) => *first,
            None => match end[p] {
                Offset::Offset(e) => e,
                other => panic!("partition {p}: end {other:?}"),
            },
        };
        match c {
            Offset::Offset(o) => assert_eq!(*o, want, "partition {p}"),
            Offset::Invalid if want == 0 => {}
            other => panic!("partition {p}: committed {other:?}, want {want}"),
        }
    }
}
