//! Contracts of README that only a fault or an odd cluster shows, on
//! librdkafka's mock cluster with the real binary: a producer stalled by
//! retriable errors is renewed and loses nothing; the start-up topic
//! contract (co-partitioned case topics, and nothing written to the
//! topics of a feature turned off); revisions past the
//! dedup bound dead-lettered, never counted twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::mock::*;
use common::*;
use nps_stream::pb::{DetractorAlert, SurveyResponse};
use nps_stream::schema::timestamp_from_ms as ts;
use prost::Message;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const EVENTS: &str = "nps-case-events";
const ESCALATIONS: &str = "nps-case-escalations";

/// README: deliveries that make no progress for 20 s while the brokers are
/// reachable renew the producer. Every produce is answered with a
/// retriable error (NOT_ENOUGH_REPLICAS) for longer than that: the
/// producer is renewed, nothing is committed past a record whose alert or
/// promoter event is undelivered, and once writes are accepted every
/// detractor's alert arrives with its deterministic id.
#[test]
fn a_stalled_producer_is_renewed_and_every_alert_delivered_with_its_id() {
    let _heavy = heavy();
    let (cluster, brokers) = cluster();
    let data = dataset(300, now_ms(), "stall");
    produce(&brokers, &good_records(&data));
    let first = first_delivery_offsets(&brokers, &data);
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 1_000_000],
    );
    let mut svc = Service::run(&brokers, "g-stall", QUICK_REJOIN, "stall");
    let started = Instant::now();
    let m = svc.wait_for("the producer renewed", Duration::from_secs(120), |m| {
        consumed(m) == data.len() as f64
            && m.get("nps_producer_renewals_total", &[]).unwrap_or(0.0) >= 1.0
    });
    assert!(
        started.elapsed() >= Duration::from_secs(20),
        "renewed after {:?}, before 20 s without progress",
        started.elapsed()
    );
    assert!(m.get("nps_pending_deliveries", &[]).unwrap_or(0.0) > 0.0);
    // Committed exactly up to each partition's first record that sends
    // something: the records before it needed no delivery.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (committed, _) = committed_and_end(&brokers, "g-stall", 4);
        let at_first = first.iter().all(|(p, f)| {
            committed[*p as usize] == rdkafka::Offset::Offset(*f)
                || (*f == 0 && committed[*p as usize] == rdkafka::Offset::Invalid)
        });
        if at_first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "committed {committed:?}, want {first:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_committed_at(&brokers, "g-stall", &first);

    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    wait_committed(&brokers, "g-stall", 4, Duration::from_secs(90), &svc);
    let m = svc.wait_for(
        "every delivery acknowledged",
        Duration::from_secs(60),
        |m| m.get("nps_pending_deliveries", &[]) == Some(0.0),
    );
    assert!(m.get("nps_producer_renewals_total", &[]).unwrap() >= 1.0);
    let detractors = detractor_ids(&data);
    let records = read_topic(&brokers, ALERTS, detractors.len(), Duration::from_secs(30));
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &records {
        let a = DetractorAlert::decode(r.payload.as_deref().unwrap()).unwrap();
        assert_eq!(a.alert_id, expected_alert_id(&a.response_id));
        assert_eq!(r.header("nps.alert-id"), Some(a.alert_id.clone()));
        ids.entry(a.response_id).or_default().insert(a.alert_id);
    }
    let alerted: BTreeSet<String> = ids.keys().cloned().collect();
    assert_eq!(alerted, detractors, "every detractor has its alert");
    assert!(ids.values().all(|i| i.len() == 1));
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// A mock cluster with the input, alerts and dead-letter topics, and
/// `extra` topics with their partition counts.
fn cluster_with(extra: &[(&str, i32)]) -> (Cluster, String) {
    let (c, b) = cluster();
    for (t, p) in extra {
        c.create_topic(t, *p, 1).unwrap();
    }
    (c, b)
}

/// README: the case-events topic must have as many partitions as the
/// alerts topic; otherwise the start stops, naming both, with exit 1.
#[test]
fn case_topics_not_co_partitioned_stop_the_start_naming_both() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster_with(&[(EVENTS, 3), (ESCALATIONS, 2)]);
    let mut svc = Service::run(&brokers, "g-mismatch", QUICK_REJOIN, "mismatch");
    let (status, logs) = svc.exit_within(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(
        logs.contains(
            "case tracking: nps-detractor-alerts has 2 partitions but nps-case-events has 3"
        ),
        "{logs}"
    );
}

/// README: `--cases off` and `--promoters off` need no case or promoter
/// topic and write nothing to them, whatever the answers.
#[test]
fn cases_and_promoters_off_write_nothing_to_their_topics() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster_with(&[(ESCALATIONS, 2), (PROMOTERS, 4)]);
    let data = dataset(200, now_ms(), "off");
    produce(&brokers, &good_records(&data));
    let args = quick_with(&["--cases", "off", "--promoters", "off"]);
    let mut svc = Service::run(&brokers, "g-off", &args, "off");
    wait_committed(&brokers, "g-off", 4, Duration::from_secs(90), &svc);
    let m = svc.wait_for("all consumed", Duration::from_secs(30), |m| {
        consumed(m) == data.len() as f64
    });
    assert_eq!(m.sum("nps_promoter_events_total", &[]), 0.0);
    assert_eq!(m.count("nps_cases_open"), 0);
    assert!(svc.terminate(Duration::from_secs(30)).success());
    // The alerts still go out, one per detractor.
    let detractors = detractor_ids(&data);
    let alerts = read_topic(&brokers, ALERTS, detractors.len(), Duration::from_secs(30));
    assert_eq!(alerts.len(), detractors.len());
    for t in [ESCALATIONS, PROMOTERS] {
        assert_eq!(topic_end_total(&brokers, t), 0, "{t} written to");
    }
    assert!(
        !topic_names(&brokers).contains(EVENTS),
        "the case-events topic was created"
    );
}

/// README, revisions: a version with `updated_at` whose response_id was
/// pushed out by `--dedup-max-ids` is dead-lettered as
/// `revision_after_horizon` and never counted twice; ids pushed out
/// before their horizon are counted in `nps_dedup_evicted_early_total`.
/// One input partition, 300 answers, room for 100: the first 200 are
/// forgotten. Revisions of 10 forgotten and 10 remembered answers: the
/// forgotten ones' are dead letters, the remembered ones' are counted, and
/// the windows hold the first versions of the one and the revisions of
/// the other.
#[test]
fn revisions_past_the_dedup_bound_are_dead_lettered_and_never_counted_twice() {
    let _heavy = heavy();
    let cluster = Cluster::new();
    cluster.create_topic(INPUT, 1, 1).unwrap();
    cluster.create_topic(ALERTS, 1, 1).unwrap();
    cluster.create_topic(DLQ, 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let now = now_ms();
    // Passives 10 minutes old: no alert, no promoter event.
    let first: Vec<SurveyResponse> = (0..300)
        .map(|i| SurveyResponse {
            response_id: format!("bound-{i:03}"),
            customer_id: format!("cust-b{i}"),
            product: "Tarjeta Oro".into(),
            region: "Norte".into(),
            channel: nps_stream::pb::Channel::Email as i32,
            score: Some(8),
            responded_at: Some(ts(now - 10 * MIN)),
            survey_id: "s".into(),
            ..Default::default()
        })
        .collect();
    send_answers(&brokers, &first);
    let args = quick_with(&["--dedup-max-ids", "100", "--cases", "off"]);
    let mut svc = Service::run(&brokers, "g-bound-ids", &args, "bound-ids");
    svc.wait_for("the first versions", Duration::from_secs(60), |m| {
        consumed(m) == 300.0
            && m.get("nps_dedup_evicted_early_total", &[]) == Some(200.0)
            && m.get("nps_dedup_ids", &[]) == Some(100.0)
    });
    // Revised to a 2, an hour later by updated_at.
    let revise = |i: usize| {
        let mut r = first[i].clone();
        r.score = Some(2);
        r.updated_at = Some(ts(now + HOUR / 60));
        r
    };
    let forgotten: Vec<SurveyResponse> = (0..10).map(revise).collect();
    let remembered: Vec<SurveyResponse> = (290..300).map(revise).collect();
    let revisions: Vec<SurveyResponse> = forgotten.iter().chain(&remembered).cloned().collect();
    send_answers(&brokers, &revisions);
    let m = svc.wait_for("the revisions", Duration::from_secs(60), |m| {
        consumed(m) == 320.0
            && m.get(
                "nps_window_responses",
                &[("window", "1h"), ("category", "detractor")],
            ) == Some(10.0)
    });
    assert_eq!(
        m.get(
            "nps_events_rejected_total",
            &[("reason", "revision_after_horizon")]
        ),
        Some(10.0)
    );
    assert_eq!(
        m.get("nps_revisions_total", &[("effect", "score")]),
        Some(10.0)
    );
    // Each answer once: 290 passives and the 10 revised to detractors.
    for (category, n) in [("passive", 290.0), ("detractor", 10.0), ("promoter", 0.0)] {
        assert_eq!(
            m.get(
                "nps_window_responses",
                &[("window", "1h"), ("category", category)]
            ),
            Some(n),
            "{category}"
        );
    }
    assert_eq!(m.get("nps_dedup_evicted_early_total", &[]), Some(200.0));
    assert_eq!(m.sum("nps_responses_total", &[]), 300.0);
    let dead = read_topic(&brokers, DLQ, 10, Duration::from_secs(30));
    let keys: BTreeSet<String> = dead
        .iter()
        .map(|r| {
            assert_eq!(
                r.header("nps.dlq.reason").as_deref(),
                Some("revision_after_horizon")
            );
            String::from_utf8(r.key.clone().unwrap()).unwrap()
        })
        .collect();
    let want: BTreeSet<String> = forgotten.iter().map(|r| r.response_id.clone()).collect();
    assert_eq!(keys, want);
    assert_eq!(dead.len(), 10);
    // Only the remembered ones' revisions alert.
    let alerts = read_topic(&brokers, ALERTS, 10, Duration::from_secs(30));
    let alerted: BTreeSet<String> = alerts
        .iter()
        .map(|r| {
            DetractorAlert::decode(r.payload.as_deref().unwrap())
                .unwrap()
                .response_id
        })
        .collect();
    let want: BTreeSet<String> = remembered.iter().map(|r| r.response_id.clone()).collect();
    assert_eq!(alerted, want);
    assert_eq!(alerts.len(), 10);
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// Every topic renamed, and the thresholds moved, on a running service:
/// `--input-topic`, `--alerts-topic`, `--dlq-topic`, `--promoter-topic`,
/// `--case-events-topic`, `--escalations-topic`, `--alert-threshold 4`,
/// `--max-future-skew 1m`, `--max-cases 3`, a 3 s contact SLA and the
/// windows 1h and 2d. The
/// records go where the flags say and nowhere else; scores 5 and 6 raise
/// no alert; an answer 3 minutes ahead is refused; two of five cases are
/// evicted and the three kept escalate, as protobuf with their headers;
/// the dead letters carry their source headers.
#[test]
fn renamed_topics_and_moved_thresholds_take_effect() {
    let _heavy = heavy();
    let (input, alerts, dlq, promoters, events, escalations) = (
        "in-2",
        "alerts-2",
        "dlq-2",
        "promoters-2",
        "events-2",
        "escalations-2",
    );
    let cluster = Cluster::new();
    for (t, p) in [
        (input, 2),
        (alerts, 2),
        (dlq, 1),
        (promoters, 2),
        (events, 2),
        (escalations, 2),
    ] {
        cluster.create_topic(t, p, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let now = now_ms();
    let answer = |i: usize, score: u32, at: i64| SurveyResponse {
        response_id: format!("tuned-{i}"),
        customer_id: format!("cust-t{i}"),
        product: "Tarjeta Oro".into(),
        region: "Sur".into(),
        channel: nps_stream::pb::Channel::Sms as i32,
        score: Some(score),
        responded_at: Some(ts(at)),
        survey_id: "s".into(),
        ..Default::default()
    };
    // Five detractors at 2, one each at 5 and 6, two promoters, one answer
    // 3 minutes ahead, one undecodable payload.
    let mut good: Vec<SurveyResponse> = (0..5).map(|i| answer(i, 2, now - MIN)).collect();
    good.extend([answer(5, 5, now - MIN), answer(6, 6, now - MIN)]);
    good.extend([answer(7, 10, now - MIN), answer(8, 9, now - MIN)]);
    let ahead = answer(9, 8, now + 3 * MIN);
    let mut records: Vec<Input> = good
        .iter()
        .chain([&ahead])
        .map(|a| {
            (
                Some(a.encode_to_vec()),
                a.response_id.clone().into_bytes(),
                None,
            )
        })
        .collect();
    records.push((
        Some(b"\xff\xfe not protobuf".to_vec()),
        b"tuned-bad".to_vec(),
        None,
    ));
    produce_to(&brokers, input, &records);
    // A record on the alerts topic that nps-stream did not write: the case
    // tracker skips it.
    produce_to(
        &brokers,
        alerts,
        &[(Some(b"\xff not an alert".to_vec()), b"x".to_vec(), None)],
    );
    let config = std::env::temp_dir().join(format!("nps-tuned-{}.toml", rand_suffix()));
    std::fs::write(
        &config,
        "[[targets]]\nproduct = \"Tarjeta Oro\"\nnps = 35\n[[targets]]\nproduct = \"Tarjeta Oro\"\nregion = \"Sur\"\nnps = 45\n",
    )
    .unwrap();
    let config_arg = config.to_str().unwrap().to_string();
    let args = [
        "--config",
        config_arg.as_str(),
        "-X",
        "session.timeout.ms=6000",
        "--input-topic",
        input,
        "--alerts-topic",
        alerts,
        "--dlq-topic",
        dlq,
        "--promoter-topic",
        promoters,
        "--case-events-topic",
        events,
        "--escalations-topic",
        escalations,
        "--alert-threshold",
        "4",
        "--max-future-skew",
        "1m",
        "--max-cases",
        "3",
        "--contact-sla",
        "critical=3s,high=3s,normal=3s",
        "--windows",
        "1h,2d",
    ];
    let mut svc = Service::run(&brokers, "g-tuned", &args, "tuned");
    let m = svc.wait_for(
        "the answers, the evictions and the escalations",
        Duration::from_secs(90),
        |m| {
            consumed(m) == records.len() as f64
                && m.get("nps_cases_evicted_total", &[]) == Some(2.0)
                && m.sum("nps_case_escalations_total", &[("level", "2")]) == 3.0
        },
    );
    assert_eq!(m.sum("nps_case_escalations_total", &[("level", "1")]), 3.0);
    assert_eq!(m.sum("nps_cases_open", &[]), 3.0);
    assert_eq!(
        m.get(
            "nps_case_alerts_skipped_total",
            &[("reason", "undecodable")]
        ),
        Some(1.0)
    );
    // Every detractor's customer is remembered, evicted cases' too.
    assert_eq!(m.get("nps_case_customers", &[]), Some(5.0));
    assert_eq!(
        m.get("nps_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );
    assert_eq!(
        m.get("nps_target", &[("product", "Tarjeta Oro"), ("region", "")]),
        Some(35.0)
    );
    assert_eq!(
        m.get(
            "nps_target",
            &[("product", "Tarjeta Oro"), ("region", "Sur")]
        ),
        Some(45.0)
    );
    // One segment, held by each input partition that has one of its
    // counted answers.
    assert_eq!(m.get("nps_engine_keys", &[]), Some(1.0));
    let sources = read_topic(&brokers, input, records.len(), Duration::from_secs(30));
    let counted: BTreeSet<String> = good.iter().map(|a| a.response_id.clone()).collect();
    let holding: BTreeSet<i32> = sources
        .iter()
        .filter(|r| counted.contains(&String::from_utf8(r.key.clone().unwrap()).unwrap()))
        .map(|r| r.partition)
        .collect();
    assert_eq!(
        m.get("nps_engine_segment_states", &[]),
        Some(holding.len() as f64)
    );
    // The snapshot bytes acknowledged are the bytes of the snapshots the
    // state topic holds (asked again while a snapshot round is on its way).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let acked = svc.metrics().unwrap().get("nps_snapshot_bytes_total", &[]);
        // The pipeline's snapshots, keyed by input partition (the case
        // tracker keeps its own there too, under other keys).
        let held: usize = read_topic(&brokers, "g-tuned-state", 0, Duration::ZERO)
            .iter()
            .filter(|r| r.key.as_deref().is_some_and(|k| k.starts_with(b"in-2/")))
            .map(|r| r.payload.as_ref().map_or(0, Vec::len))
            .sum();
        let again = svc.metrics().unwrap().get("nps_snapshot_bytes_total", &[]);
        if acked.is_some() && acked == again && acked == Some(held as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "snapshot bytes {acked:?} against {held} on the state topic"
        );
    }
    let windows: BTreeSet<String> = m
        .series("nps_window_responses")
        .into_iter()
        .map(|l| l["window"].clone())
        .collect();
    assert_eq!(
        windows,
        BTreeSet::from(["1h".to_string(), "2d".to_string()])
    );
    for reason in ["future_timestamp", "undecodable"] {
        assert_eq!(
            m.get("nps_events_rejected_total", &[("reason", reason)]),
            Some(1.0),
            "{reason}"
        );
    }
    assert!(svc.terminate(Duration::from_secs(30)).success());

    // Alerts: the five at 2, none for 5 and 6 (and the foreign record).
    let got: Vec<Record> = read_topic(&brokers, alerts, 6, Duration::from_secs(30))
        .into_iter()
        .filter(|r| r.key.as_deref() != Some(b"x".as_slice()))
        .collect();
    let alerted: BTreeSet<String> = got
        .iter()
        .map(|r| {
            DetractorAlert::decode(r.payload.as_deref().unwrap())
                .unwrap()
                .response_id
        })
        .collect();
    let want: BTreeSet<String> = (0..5).map(|i| format!("tuned-{i}")).collect();
    assert_eq!(alerted, want);
    assert_eq!(got.len(), 5);
    assert_eq!(topic_end_total(&brokers, promoters), 2);
    // Escalations: protobuf, with their headers, one per kept case and
    // level.
    let esc = read_topic(&brokers, escalations, 6, Duration::from_secs(30));
    assert_eq!(esc.len(), 6);
    let mut levels: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for r in &esc {
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/x-protobuf")
        );
        assert_eq!(
            r.header("nps.message-type").as_deref(),
            Some("nps.v1.CaseEscalation")
        );
        let e = nps_stream::pb::CaseEscalation::decode(r.payload.as_deref().unwrap()).unwrap();
        assert_eq!(e.reason, "contact_sla_missed");
        assert_eq!(
            e.alert_id,
            expected_alert_id(&format!("tuned-{}", &e.customer_id[6..]))
        );
        assert_eq!(r.key.as_deref(), Some(e.customer_id.as_bytes()));
        levels.entry(e.customer_id).or_default().insert(e.level);
    }
    assert_eq!(levels.len(), 3, "{levels:?}");
    assert!(levels.values().all(|l| l == &BTreeSet::from([1, 2])));
    // Dead letters: with where they came from and when.
    let dead = read_topic(&brokers, dlq, 2, Duration::from_secs(30));
    assert_eq!(dead.len(), 2);
    for d in &dead {
        let key = d.key.clone().unwrap();
        let src = sources
            .iter()
            .find(|s| s.key.as_ref() == Some(&key))
            .unwrap();
        assert_eq!(d.header("nps.dlq.source.topic").as_deref(), Some(input));
        assert_eq!(
            d.header("nps.dlq.source.partition"),
            Some(src.partition.to_string())
        );
        assert_eq!(
            d.header("nps.dlq.source.offset"),
            Some(src.offset.to_string())
        );
        let failed_at: i64 = d.header("nps.dlq.failed_at_ms").unwrap().parse().unwrap();
        assert!(
            (now..now_ms()).contains(&failed_at),
            "failed_at_ms {failed_at} outside the run"
        );
        assert_eq!(d.payload, src.payload, "the payload unchanged");
    }
    // Nothing went to the default topics.
    let names = topic_names(&brokers);
    for t in [INPUT, ALERTS, DLQ, PROMOTERS, EVENTS, ESCALATIONS] {
        assert!(!names.contains(t), "{t} exists: {names:?}");
    }
}

/// A one-partition mock cluster with the input, alerts and dead-letter
/// topics.
fn one_partition() -> (Cluster, String) {
    let cluster = Cluster::new();
    for t in [INPUT, ALERTS, DLQ] {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

/// `one_partition`, with the case-events and escalations topics.
fn one_partition_with_cases() -> (Cluster, String) {
    let (cluster, brokers) = one_partition();
    for t in [EVENTS, ESCALATIONS] {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    (cluster, brokers)
}

/// The flags of a quick-rejoin instance, then `extra`.
fn quick_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    QUICK_REJOIN
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

/// An answer of customer `customer`, a minute old.
fn answer_of(id: &str, customer: &str, score: u32, now: i64) -> SurveyResponse {
    SurveyResponse {
        response_id: id.into(),
        customer_id: customer.into(),
        product: "Seguro Auto".into(),
        region: "Norte".into(),
        channel: nps_stream::pb::Channel::Web as i32,
        score: Some(score),
        responded_at: Some(ts(now - MIN)),
        survey_id: "s".into(),
        ..Default::default()
    }
}

fn send_answers(brokers: &str, answers: &[SurveyResponse]) {
    let records: Vec<Input> = answers
        .iter()
        .map(|a| {
            (
                Some(a.encode_to_vec()),
                a.response_id.clone().into_bytes(),
                None,
            )
        })
        .collect();
    produce(brokers, &records);
}

/// `--dedup-horizon 15s` on a running service: a revision within the
/// horizon replaces its first version; one that comes after it is
/// dead-lettered as `revision_after_horizon`.
#[test]
fn a_revision_past_the_dedup_horizon_is_dead_lettered() {
    let _heavy = heavy();
    let (_cluster, brokers) = one_partition();
    let now = now_ms();
    let first: Vec<SurveyResponse> = (0..2)
        .map(|i| answer_of(&format!("hz-{i}"), &format!("cust-hz{i}"), 8, now))
        .collect();
    let revised = |i: usize| {
        let mut r = first[i].clone();
        r.score = Some(3);
        r.updated_at = Some(ts(now));
        r
    };
    send_answers(&brokers, &first);
    let args = quick_with(&["--dedup-horizon", "15s", "--cases", "off"]);
    let mut svc = Service::run(&brokers, "g-horizon", &args, "horizon");
    svc.wait_for("the first versions", Duration::from_secs(60), |m| {
        consumed(m) == 2.0
    });
    let seen = Instant::now();
    send_answers(&brokers, &[revised(0)]);
    svc.wait_for(
        "the revision within the horizon",
        Duration::from_secs(60),
        |m| consumed(m) == 3.0,
    );
    assert!(
        seen.elapsed() < Duration::from_secs(15),
        "the first revision came {:?} after its answer: not within the horizon",
        seen.elapsed()
    );
    // Time passes beyond the horizon before the second revision is sent.
    std::thread::sleep(Duration::from_secs(18).saturating_sub(seen.elapsed()));
    send_answers(&brokers, &[revised(1)]);
    let m = svc.wait_for(
        "the revision after the horizon",
        Duration::from_secs(60),
        |m| {
            consumed(m) == 4.0
                && m.get(
                    "nps_events_rejected_total",
                    &[("reason", "revision_after_horizon")],
                ) == Some(1.0)
        },
    );
    assert_eq!(
        m.get("nps_revisions_total", &[("effect", "score")]),
        Some(1.0)
    );
    let dead = read_topic(&brokers, DLQ, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key.as_deref(), Some(b"hz-1".as_slice()));
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// `--repeat-horizon 20s` on a running service: a customer's second
/// detractor answer within 20 s of the first case is a repeat (escalated
/// at once); a third one more than 20 s after the second case is not.
#[test]
fn a_repeat_detractor_counts_only_within_the_repeat_horizon() {
    let _heavy = heavy();
    let (_cluster, brokers) = one_partition_with_cases();
    let now = now_ms();
    let args = quick_with(&["--repeat-horizon", "20s", "--promoters", "off"]);
    let mut svc = Service::run(&brokers, "g-repeat", &args, "repeat");
    send_answers(&brokers, &[answer_of("rp-1", "cust-rp", 2, now)]);
    svc.wait_for("the first case", Duration::from_secs(60), |m| {
        m.sum("nps_cases_open", &[]) == 1.0
    });
    let second = Instant::now();
    send_answers(&brokers, &[answer_of("rp-2", "cust-rp", 2, now)]);
    svc.wait_for("the repeat", Duration::from_secs(60), |m| {
        m.sum("nps_repeat_detractors_total", &[]) == 1.0 && m.sum("nps_cases_open", &[]) == 2.0
    });
    assert!(
        second.elapsed() < Duration::from_secs(20),
        "the second case opened {:?} after it was sent: not within the horizon",
        second.elapsed()
    );
    // Time passes beyond the horizon before the third answer is sent.
    std::thread::sleep(Duration::from_secs(23).saturating_sub(second.elapsed()));
    send_answers(&brokers, &[answer_of("rp-3", "cust-rp", 2, now)]);
    let m = svc.wait_for("the third case", Duration::from_secs(60), |m| {
        m.sum("nps_cases_open", &[]) == 3.0
    });
    assert_eq!(m.sum("nps_repeat_detractors_total", &[]), 1.0);
    assert_eq!(m.get("nps_case_customers", &[]), Some(1.0));
    assert_eq!(m.get("nps_case_replaying_partitions", &[]), Some(0.0));
    assert_eq!(m.get("nps_case_readback_errors_total", &[]), Some(0.0));
    assert_eq!(
        m.sum(
            "nps_case_escalations_total",
            &[("reason", "repeat_detractor")]
        ),
        1.0
    );
    assert!(svc.terminate(Duration::from_secs(30)).success());
    let esc = read_topic(&brokers, ESCALATIONS, 1, Duration::from_secs(30));
    assert_eq!(esc.len(), 1);
}

/// A case event for `alert` of `customer`, as a CRM writes it.
fn case_event(alert: &str, customer: &str, state: i32, outcome: i32) -> Input {
    let e = nps_stream::pb::CaseEvent {
        alert_id: alert.into(),
        customer_id: customer.into(),
        state,
        occurred_at: Some(ts(now_ms())),
        outcome,
        ..Default::default()
    };
    (Some(e.encode_to_vec()), customer.as_bytes().to_vec(), None)
}

/// `--closed-retention 15s` on a running service: a REOPENED for a case
/// closed within the retention reopens it; one for a case closed longer
/// ago finds no case, waits `--orphan-grace` (10 s) for an alert that
/// never comes (an orphan event), and is dead-lettered as `unknown_alert`.
#[test]
fn a_case_closed_longer_than_closed_retention_is_forgotten() {
    use nps_stream::pb::{CaseOutcome, CaseState};
    let _heavy = heavy();
    let (_cluster, brokers) = one_partition_with_cases();
    let now = now_ms();
    let args = quick_with(&[
        "--closed-retention",
        "15s",
        "--orphan-grace",
        "10s",
        "--promoters",
        "off",
    ]);
    let mut svc = Service::run(&brokers, "g-retention", &args, "retention");
    let (a, b) = ("cust-ret-a", "cust-ret-b");
    send_answers(
        &brokers,
        &[answer_of("ret-a", a, 2, now), answer_of("ret-b", b, 2, now)],
    );
    svc.wait_for("two cases", Duration::from_secs(60), |m| {
        m.sum("nps_cases_open", &[]) == 2.0
    });
    let (alert_a, alert_b) = (expected_alert_id("ret-a"), expected_alert_id("ret-b"));
    let resolved = CaseState::Resolved as i32;
    let recovered = CaseOutcome::Recovered as i32;
    produce_to(
        &brokers,
        EVENTS,
        &[case_event(&alert_a, a, resolved, recovered)],
    );
    svc.wait_for("a closed", Duration::from_secs(60), |m| {
        m.sum("nps_cases_closed_total", &[]) == 1.0
    });
    let closed_a = Instant::now();
    produce_to(
        &brokers,
        EVENTS,
        &[case_event(&alert_b, b, resolved, recovered)],
    );
    svc.wait_for("b closed", Duration::from_secs(60), |m| {
        m.sum("nps_cases_closed_total", &[]) == 2.0
    });
    // b, closed just now, is reopened while a's retention runs out.
    let reopened = CaseState::Reopened as i32;
    produce_to(&brokers, EVENTS, &[case_event(&alert_b, b, reopened, 0)]);
    svc.wait_for("b reopened", Duration::from_secs(60), |m| {
        m.sum("nps_cases_open", &[]) == 1.0
    });
    assert!(
        closed_a.elapsed() < Duration::from_secs(15),
        "b was reopened {:?} after a closed: not within the retention",
        closed_a.elapsed()
    );
    // Time passes beyond a's retention before its REOPENED is sent.
    std::thread::sleep(Duration::from_secs(18).saturating_sub(closed_a.elapsed()));
    produce_to(&brokers, EVENTS, &[case_event(&alert_a, a, reopened, 0)]);
    svc.wait_for(
        "a's REOPENED waiting for its alert",
        Duration::from_secs(10),
        |m| m.get("nps_case_orphan_events", &[]) == Some(1.0),
    );
    let m = svc.wait_for("a's REOPENED dead-lettered", Duration::from_secs(60), |m| {
        m.get("nps_events_rejected_total", &[("reason", "unknown_alert")]) == Some(1.0)
    });
    assert_eq!(m.sum("nps_cases_open", &[]), 1.0, "only b is open again");
    assert_eq!(m.get("nps_case_orphan_events", &[]), Some(0.0));
    assert!(svc.terminate(Duration::from_secs(30)).success());
    let dead = read_topic(&brokers, DLQ, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key.as_deref(), Some(a.as_bytes()));
    assert_eq!(
        dead[0].header("nps.dlq.source.topic").as_deref(),
        Some(EVENTS)
    );
}

/// README, revisions: a detractor revised to 7–10 gets a last alert
/// revision with `withdrawn = true`, and its case closes as `withdrawn`
/// with no escalation, however short the SLA.
#[test]
fn a_detractor_revised_to_a_promoter_withdraws_its_alert_and_closes_its_case() {
    let _heavy = heavy();
    let (_cluster, brokers) = one_partition_with_cases();
    let now = now_ms();
    let args = quick_with(&[
        "--contact-sla",
        "critical=4s,high=4s,normal=4s",
        "--promoters",
        "off",
    ]);
    let mut svc = Service::run(&brokers, "g-withdrawn", &args, "withdrawn");
    let first = answer_of("wd-1", "cust-wd", 2, now);
    send_answers(&brokers, std::slice::from_ref(&first));
    svc.wait_for("the case", Duration::from_secs(60), |m| {
        m.sum("nps_cases_open", &[]) == 1.0
    });
    let mut revised = first.clone();
    revised.score = Some(9);
    revised.updated_at = Some(ts(now));
    send_answers(&brokers, &[revised]);
    let m = svc.wait_for("the case withdrawn", Duration::from_secs(60), |m| {
        m.sum("nps_cases_closed_total", &[("outcome", "withdrawn")]) == 1.0
            && m.sum("nps_cases_open", &[]) == 0.0
    });
    assert_eq!(m.sum("nps_cases_closed_total", &[]), 1.0);
    // Past twice the SLA: nothing escalated.
    let closed = Instant::now();
    std::thread::sleep(Duration::from_secs(9).saturating_sub(closed.elapsed()));
    let m = svc.metrics().expect("metrics");
    assert_eq!(m.sum("nps_case_escalations_total", &[]), 0.0);
    assert_eq!(m.sum("nps_cases_due_total", &[]), 0.0);
    assert!(svc.terminate(Duration::from_secs(30)).success());
    assert_eq!(topic_end_total(&brokers, ESCALATIONS), 0);
    let alerts: Vec<DetractorAlert> = read_topic(&brokers, ALERTS, 2, Duration::from_secs(30))
        .iter()
        .map(|r| DetractorAlert::decode(r.payload.as_deref().unwrap()).unwrap())
        .collect();
    let marks: Vec<(u32, bool, u32)> = alerts
        .iter()
        .map(|a| (a.revision, a.withdrawn, a.score))
        .collect();
    assert_eq!(marks, [(0, false, 2), (1, true, 9)]);
    assert!(
        alerts
            .iter()
            .all(|a| a.alert_id == expected_alert_id("wd-1"))
    );
}

/// README: offset commits are counted by result. The broker refuses the
/// next three OffsetCommit requests with an error librdkafka does not
/// retry by itself (OFFSET_METADATA_TOO_LARGE): exactly three commits are
/// counted `error`, the service commits again, and the group ends committed
/// at the end of the log with the commits after them counted `ok`.
#[test]
fn refused_offset_commits_are_counted_then_made_again() {
    let _heavy = heavy();
    let (cluster, brokers) = one_partition();
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 3],
    );
    let now = now_ms();
    let answers: Vec<SurveyResponse> = (0..5)
        .map(|i| answer_of(&format!("cm-{i}"), &format!("cust-cm{i}"), 9, now))
        .collect();
    send_answers(&brokers, &answers);
    let args = quick_with(&["--cases", "off", "--promoters", "off"]);
    let mut svc = Service::run(&brokers, "g-commits", &args, "commits");
    svc.wait_for("the answers", Duration::from_secs(60), |m| {
        consumed(m) == 5.0
    });
    wait_committed(&brokers, "g-commits", 1, Duration::from_secs(60), &svc);
    let commits = |m: &Metrics, result: &str| {
        m.get("nps_offset_commits_total", &[("result", result)])
            .unwrap_or(0.0)
    };
    let m = svc.wait_for("the commit counted", Duration::from_secs(30), |m| {
        commits(m, "ok") >= 1.0
    });
    assert_eq!(commits(&m, "error"), 3.0, "{}", svc.logs());
    assert!(svc.terminate(Duration::from_secs(30)).success());
}
