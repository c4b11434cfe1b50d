//! End to end against librdkafka's in-process mock cluster, with the real
//! binary as a subprocess: metrics, alerts, dead letters, offsets, restart,
//! SIGTERM, and the demo.
//!
//! Expectations are computed here from the generated data with plain
//! arithmetic, not with the crate's engine.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::mock::*;
use common::*;
use nps_stream::pb::{Channel, DetractorAlert, SurveyResponse};
use prost::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// Whether the window gauges are exactly the truth computed from `all`:
/// every segment and window, counts, NPS, margin and weighted NPS, and no
/// other series.
fn windows_match(m: &Metrics, all: &[(SurveyResponse, i64)]) -> Result<(), String> {
    let want = expected(all);
    for ((product, region, window), e) in &want {
        let l = |extra: &[(&'static str, &'static str)]| {
            let mut v: Vec<(&str, &str)> = vec![
                ("product", product.as_str()),
                ("region", region.as_str()),
                ("window", window),
            ];
            v.extend_from_slice(extra);
            v
        };
        let got = |cat: &'static str| {
            m.get("nps_window_responses", &l(&[("category", cat)]))
                .unwrap_or(-1.0)
        };
        let counts = (got("promoter"), got("passive"), got("detractor"));
        if counts != (e.p as f64, e.pa as f64, e.d as f64) {
            return Err(format!(
                "{product}/{region}/{window}: (P, passive, D) {counts:?} vs {:?}",
                (e.p, e.pa, e.d)
            ));
        }
        let n = (e.p + e.pa + e.d) as f64;
        let nps = 100.0 * (e.p as f64 - e.d as f64) / n;
        let (p, d) = (e.p as f64 / n, e.d as f64 / n);
        let moe = 1.96 * ((p + d - (p - d) * (p - d)) / n).sqrt() * 100.0;
        let wnps = 100.0 * e.wnet / e.wtot;
        let score = m.get("nps_score", &l(&[])).unwrap_or(f64::NAN);
        if !close(score, nps, 1e-9) {
            return Err(format!("{product}/{region}/{window}: nps {score} vs {nps}"));
        }
        let got_moe = m
            .get("nps_score_margin_of_error", &l(&[]))
            .unwrap_or(f64::NAN);
        if !close(got_moe, moe, 1e-9) {
            return Err(format!(
                "{product}/{region}/{window}: moe {got_moe} vs {moe}"
            ));
        }
        let got_w = m.get("nps_weighted_score", &l(&[])).unwrap_or(f64::NAN);
        if !close(got_w, wnps, 1e-4) {
            return Err(format!(
                "{product}/{region}/{window}: weighted {got_w} vs {wnps}"
            ));
        }
    }
    let series = m.count("nps_window_responses");
    if series != want.len() * 3 {
        return Err(format!(
            "{series} nps_window_responses series, want {}",
            want.len() * 3
        ));
    }
    Ok(())
}

/// Every answer of `all` with where it sits in the input topic
/// (partition, offset of its first copy) and its age.
type Placed = Vec<(i32, i64, SurveyResponse, i64)>;

fn placed_answers(brokers: &str, all: &[(SurveyResponse, i64)]) -> Placed {
    let mut at: BTreeMap<String, (i32, i64)> = BTreeMap::new();
    for r in read_topic(brokers, INPUT, usize::MAX, Duration::from_secs(5)) {
        let id = String::from_utf8(r.key.clone().unwrap_or_default()).unwrap_or_default();
        at.entry(id).or_insert((r.partition, r.offset));
    }
    all.iter()
        .map(|(r, age)| {
            let (p, o) = at[&r.response_id];
            (p, o, r.clone(), *age)
        })
        .collect()
}

/// An alert's window figures for its segment, against what the data
/// allows: each window in order; its count at least the segment's
/// answers in the window that precede the alert's in its own partition
/// (read before it, whatever the interleaving), at most those plus every
/// such answer of the other partitions; the promoters and detractors
/// behind the NPS within the same bounds; no NPS for an empty window.
fn segment_figures_within_bounds(a: &DetractorAlert, placed: &Placed) {
    let (p0, o0) = placed
        .iter()
        .find(|(_, _, r, _)| r.response_id == a.response_id)
        .map(|(p, o, _, _)| (*p, *o))
        .unwrap();
    let names: Vec<&str> = a.segment_nps.iter().map(|w| w.window.as_str()).collect();
    assert_eq!(names, ["1h", "24h", "7d", "30d"], "{}", a.response_id);
    for (w, (_, len)) in a.segment_nps.iter().zip(WINDOWS) {
        // (answers, net promoters) sure to be counted, and maybe counted.
        let (mut sure, mut maybe) = ((0i64, 0i64), (0i64, 0i64));
        for (p, o, r, age) in placed {
            if (r.product.as_str(), r.region.as_str()) != (a.product.as_str(), a.region.as_str())
                || *age >= len
            {
                continue;
            }
            let s = r.score.unwrap();
            let net = i64::from(s >= 9) - i64::from(s <= 6);
            let slot = if *p == p0 && *o <= o0 {
                &mut sure
            } else if *p != p0 {
                &mut maybe
            } else {
                continue;
            };
            slot.0 += 1;
            slot.1 += net;
        }
        let n = w.responses as i64;
        let what = format!("{} {}: {w:?}", a.response_id, w.window);
        assert!(
            sure.0 <= n && n <= sure.0 + maybe.0,
            "count out of bounds, {what}"
        );
        match w.nps {
            None => assert_eq!(n, 0, "{what}"),
            Some(nps) => {
                assert!(n > 0, "{what}");
                // nps = 100 · net / n, net within the bounds of the answers.
                let net = (nps * n as f64 / 100.0).round() as i64;
                assert!(
                    (nps - 100.0 * net as f64 / n as f64).abs() < 1e-6,
                    "NPS not a whole net over the count, {what}"
                );
                let lowest = sure.1 - maybe.0;
                let highest = sure.1 + maybe.0;
                assert!(lowest <= net && net <= highest, "net out of bounds, {what}");
                assert!(w.margin_of_error.is_some(), "{what}");
            }
        }
    }
}

/// Waits until the windows are exactly the truth of `all`.
fn wait_windows(svc: &mut Service, all: &[(SurveyResponse, i64)], timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let m = svc.metrics();
        let verdict = match &m {
            Some(m) => windows_match(m, all),
            None => Err("no scrape".into()),
        };
        match verdict {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("windows never matched the truth: {e}\n{}", svc.logs())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

#[test]
fn responses_become_metrics_alerts_and_dead_letters_with_offsets_committed() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let now = now_ms();
    let data = dataset(600, now, "r");
    let mut records: Vec<Input> = Vec::new();
    for (m, _) in &data {
        records.push((
            Some(m.encode_to_vec()),
            m.response_id.clone().into_bytes(),
            None,
        ));
    }
    // Five redeliveries, the same content again: duplicates, no effect, no
    // alert. (New content would be a revision: tests/revisions.rs.)
    for (m, _) in data.iter().take(5) {
        let dup = m.clone();
        records.push((
            Some(dup.encode_to_vec()),
            m.response_id.clone().into_bytes(),
            None,
        ));
    }
    // Three good responses in the Confluent framing: counted.
    let framed = dataset(3, now, "framed");
    for (m, _) in &framed {
        let mut bytes = vec![0, 0, 0, 0, 42, 0];
        bytes.extend_from_slice(&m.encode_to_vec());
        records.push((Some(bytes), m.response_id.clone().into_bytes(), None));
    }
    let bad = bad_events(now);
    for (i, (payload, _)) in bad.iter().enumerate() {
        records.push((
            payload.clone(),
            format!("bad-{i}").into_bytes(),
            Some(("trace-id", "t-1")),
        ));
    }
    produce(&brokers, &records);
    let total = records.len() as f64;

    let mut svc = Service::run(&brokers, "g-e2e", QUICK_REJOIN, "e2e");
    // Readiness is published by the one-second refresh: it may follow the
    // last record by up to a second.
    svc.wait_for(
        "every record consumed, ready",
        Duration::from_secs(60),
        |m| consumed(m) == total && m.get("nps_ready", &[]) == Some(1.0),
    );
    assert_eq!(svc.status("/readyz"), Some(200));
    assert_eq!(svc.status("/healthz"), Some(200));
    // The windows are published by a refresh every second: wait for the
    // one that holds the last record.
    let mut all: Vec<(SurveyResponse, i64)> = data.clone();
    all.extend(framed.iter().cloned());
    wait_windows(&mut svc, &all, Duration::from_secs(30));
    let m = svc.metrics().unwrap();
    if let Err(e) = windows_match(&m, &all) {
        panic!("{e}");
    }
    if have_tool("promtool") {
        let (_, raw) = http_get(&svc.metrics_addr, "/metrics").unwrap();
        promtool_check_metrics(&raw).unwrap();
    }
    // 3 × 2 segments × 4 windows, each with 3 category series.
    assert_eq!(m.count("nps_window_responses"), 3 * 2 * 4 * 3);

    // End-to-end delay (processing time − responded_at): one observation
    // per counted response, each in the bucket of its age (the ages are
    // fixed and far from the bucket bounds; the run adds seconds).
    let count_younger = |secs: i64| all.iter().filter(|(_, age)| age / 1000 < secs).count() as f64;
    assert_eq!(
        m.get("nps_end_to_end_delay_seconds_count", &[]),
        Some(all.len() as f64)
    );
    for (le, secs) in [
        ("900", 900),
        ("86400", 86_400),
        ("604800", 604_800),
        ("2592000", 2_592_000),
    ] {
        assert_eq!(
            m.get("nps_end_to_end_delay_seconds_bucket", &[("le", le)]),
            Some(count_younger(secs)),
            "le={le}"
        );
    }
    assert_eq!(
        m.get("nps_end_to_end_delay_seconds_bucket", &[("le", "+Inf")]),
        Some(all.len() as f64)
    );
    let ages: f64 = all.iter().map(|(_, age)| *age as f64 / 1000.0).sum();
    let elapsed = (now_ms() - now) as f64 / 1000.0;
    let sum = m.get("nps_end_to_end_delay_seconds_sum", &[]).unwrap();
    assert!(
        sum >= ages && sum <= ages + elapsed * all.len() as f64,
        "delay sum {sum} outside [{ages}, {ages} + {elapsed} s each]"
    );

    // Consumer lag: one series per assigned partition, 0 once all is read
    // (from librdkafka's statistics, every second).
    let m = svc.wait_for("lag 0 on every partition", Duration::from_secs(10), |m| {
        (0..4).all(|p| {
            m.get(
                "nps_consumer_lag",
                &[("topic", INPUT), ("partition", &p.to_string())],
            ) == Some(0.0)
        })
    });
    assert_eq!(m.count("nps_consumer_lag"), 4);
    // Offsets committed, none refused.
    assert!(
        m.get("nps_offset_commits_total", &[("result", "ok")])
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        m.get("nps_offset_commits_total", &[("result", "error")])
            .unwrap_or(0.0),
        0.0
    );

    for (_, reason) in &bad {
        assert_eq!(
            m.get("nps_events_rejected_total", &[("reason", reason)]),
            Some(1.0),
            "{reason}"
        );
    }
    assert_eq!(m.get("nps_duplicates_total", &[]), Some(5.0));
    let late = all.iter().filter(|(_, age)| *age >= 30 * DAY).count() as f64;
    assert_eq!(m.get("nps_late_events_total", &[]), Some(late));
    assert_eq!(m.sum("nps_responses_total", &[]), all.len() as f64);
    // Every (product, region, channel, category) counter equals the count
    // in the data, and no other series exists.
    let mut by_channel: BTreeMap<(String, String, &str, &str), f64> = BTreeMap::new();
    for (r, _) in &all {
        let channel = match Channel::try_from(r.channel).unwrap() {
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Chat => "chat",
            Channel::Phone => "phone",
            Channel::Web => "web",
            Channel::InApp => "in_app",
            Channel::Unspecified => "unspecified",
        };
        let category = match r.score.unwrap() {
            9..=10 => "promoter",
            7..=8 => "passive",
            _ => "detractor",
        };
        *by_channel
            .entry((r.product.clone(), r.region.clone(), channel, category))
            .or_default() += 1.0;
    }
    assert!(
        by_channel
            .iter()
            .any(|((_, _, ch, cat), n)| *ch == "sms" && *cat == "detractor" && *n > 0.0),
        "the data has SMS detractors"
    );
    assert_eq!(m.count("nps_responses_total"), by_channel.len());
    for ((product, region, channel, category), n) in &by_channel {
        assert_eq!(
            m.get(
                "nps_responses_total",
                &[
                    ("product", product),
                    ("region", region),
                    ("channel", channel),
                    ("category", category)
                ]
            ),
            Some(*n),
            "{product}/{region}/{channel}/{category}"
        );
    }

    // Exactly the detractors (late ones included) got one alert each.
    let detractors: BTreeMap<String, &SurveyResponse> = all
        .iter()
        .filter(|(r, _)| r.score.unwrap() <= 6)
        .map(|(r, _)| (r.response_id.clone(), r))
        .collect();
    let alerts = read_topic(&brokers, ALERTS, detractors.len(), Duration::from_secs(30));
    assert_eq!(alerts.len(), detractors.len());
    assert_eq!(
        m.sum("nps_detractor_alerts_total", &[]),
        detractors.len() as f64
    );
    let mut seen = BTreeSet::new();
    let mut by_priority: BTreeMap<i32, f64> = BTreeMap::new();
    let mut critical_by_value = 0;
    let placed = placed_answers(&brokers, &all);
    for rec in &alerts {
        assert_eq!(
            rec.header("content-type").as_deref(),
            Some("application/x-protobuf")
        );
        assert_eq!(
            rec.header("nps.message-type").as_deref(),
            Some("nps.v1.DetractorAlert")
        );
        let a = DetractorAlert::decode(rec.payload.as_deref().unwrap()).unwrap();
        let r = detractors[&a.response_id];
        assert!(
            seen.insert(a.response_id.clone()),
            "two alerts for {}",
            a.response_id
        );
        // As README documents it: xxh3-128 of the response_id, 32
        // lowercase hex digits.
        assert_eq!(
            a.alert_id,
            format!(
                "{:032x}",
                xxhash_rust::xxh3::xxh3_128(r.response_id.as_bytes())
            )
        );
        assert_eq!(
            (a.product.as_str(), a.region.as_str()),
            (r.product.as_str(), r.region.as_str())
        );
        assert_eq!((a.score, a.channel), (r.score.unwrap(), r.channel));
        assert_eq!(a.comment, r.comment);
        assert_eq!(a.customer_value, r.customer_value);
        assert_eq!(a.responded_at, r.responded_at);
        let want_key = if r.customer_id.is_empty() {
            &r.response_id
        } else {
            &r.customer_id
        };
        assert_eq!(rec.key.as_deref(), Some(want_key.as_bytes()));
        segment_figures_within_bounds(&a, &placed);
        // One instance: its figures cover every input partition.
        assert_eq!((a.partitions_covered, a.partitions_total), (4, 4));
        // README: critical for a score ≤ 3 or a customer_value ≥ 10,000;
        // high for a customer_value ≥ 1,000; normal otherwise.
        let value = r.customer_value.unwrap_or(0.0);
        let expected_priority = if r.score.unwrap() <= 3 || value >= 10_000.0 {
            3
        } else if value >= 1_000.0 {
            2
        } else {
            1
        };
        assert_eq!(a.priority, expected_priority, "{}", a.response_id);
        *by_priority.entry(expected_priority).or_insert(0.0) += 1.0;
        if r.score.unwrap() > 3 && value >= 10_000.0 {
            critical_by_value += 1;
        }
        let age = now - (r.responded_at.unwrap().seconds * 1000);
        assert_eq!(a.late, age > 30 * DAY + MIN, "{}", a.response_id);
    }

    // Every priority fires, critical also for a valuable customer whose
    // score alone would not make it so, and the counters agree.
    assert!(
        critical_by_value > 0,
        "no value-critical detractor in the data"
    );
    for (priority, name) in [(1, "normal"), (2, "high"), (3, "critical")] {
        let want = by_priority.get(&priority).copied().unwrap_or(0.0);
        assert!(want > 0.0, "no {name} alert in the data");
        assert_eq!(
            m.sum("nps_detractor_alerts_total", &[("priority", name)]),
            want,
            "{name}"
        );
    }

    check_promoter_events(&brokers, &all, &m);

    // Every refused record is in the DLQ, unchanged, with its reason.
    let dead = read_topic(&brokers, DLQ, bad.len(), Duration::from_secs(30));
    assert_eq!(dead.len(), bad.len());
    let mut reasons: Vec<String> = Vec::new();
    for rec in &dead {
        let key = String::from_utf8(rec.key.clone().unwrap()).unwrap();
        let i: usize = key.trim_start_matches("bad-").parse().unwrap();
        assert_eq!(rec.payload, bad[i].0, "payload unchanged");
        assert_eq!(rec.header("nps.dlq.reason").as_deref(), Some(bad[i].1));
        assert_eq!(rec.header("nps.dlq.source.topic").as_deref(), Some(INPUT));
        assert!(
            rec.header("nps.dlq.source.offset")
                .unwrap()
                .parse::<i64>()
                .is_ok()
        );
        assert!(rec.header("nps.dlq.error").is_some());
        assert_eq!(
            rec.header("trace-id").as_deref(),
            Some("t-1"),
            "original headers kept"
        );
        reasons.push(bad[i].1.to_string());
    }
    reasons.sort();
    let mut want: Vec<String> = bad.iter().map(|(_, r)| r.to_string()).collect();
    want.sort();
    assert_eq!(reasons, want);

    // Graceful stop commits; committed offsets are the end offsets.
    let status = svc.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit {status}:\n{}", svc.logs());
    let (committed, ends) = committed_and_end(&brokers, "g-e2e", 4);
    assert_eq!(committed, ends);

    // A restart of the group reprocesses nothing that was committed: one
    // new record is produced after it has its partitions, and once that
    // one is consumed (so the service is live and reading), it is the
    // only one.
    let mut again = Service::run(&brokers, "g-e2e", QUICK_REJOIN, "e2e-restart");
    again.wait_for("ready", Duration::from_secs(30), |m| {
        m.get("nps_assigned_partitions", &[]) == Some(4.0)
    });
    let marker = dataset(1, now, "after-restart").remove(0).0;
    produce(
        &brokers,
        &[(
            Some(marker.encode_to_vec()),
            marker.response_id.clone().into_bytes(),
            None,
        )],
    );
    again.wait_for("the new record", Duration::from_secs(30), |m| {
        consumed(m) >= 1.0
    });
    // A commit interval and a refresh later, still only that one.
    std::thread::sleep(Duration::from_secs(2));
    let m = again.metrics().unwrap();
    assert_eq!(consumed(&m), 1.0, "{}", again.logs());
    assert_eq!(m.sum("nps_responses_total", &[]), 1.0);
    assert!(again.terminate(Duration::from_secs(30)).success());
}

/// Exactly the promoters (late ones included) got one promoter event each,
/// with README's default tiers and actions, and the counters agree.
fn check_promoter_events(brokers: &str, all: &[(SurveyResponse, i64)], m: &Metrics) {
    let promoters: BTreeMap<String, &SurveyResponse> = all
        .iter()
        .filter(|(r, _)| r.score.unwrap() >= 9)
        .map(|(r, _)| (r.response_id.clone(), r))
        .collect();
    let events = read_topic(brokers, PROMOTERS, promoters.len(), Duration::from_secs(30));
    assert_eq!(events.len(), promoters.len());
    let mut seen = BTreeSet::new();
    let mut by_tier: BTreeMap<(String, String, &str), f64> = BTreeMap::new();
    let mut case_studies = 0;
    for rec in &events {
        assert_eq!(
            rec.header("nps.message-type").as_deref(),
            Some("nps.v1.PromoterEvent")
        );
        let e = nps_stream::pb::PromoterEvent::decode(rec.payload.as_deref().unwrap()).unwrap();
        assert_eq!(
            rec.header("nps.event-id").as_deref(),
            Some(e.event_id.as_str())
        );
        assert!(
            seen.insert(e.response_id.clone()),
            "two events for {}",
            e.response_id
        );
        let r = promoters[&e.response_id];
        assert_eq!(
            e.event_id,
            format!(
                "{:032x}",
                xxhash_rust::xxh3::xxh3_128(r.response_id.as_bytes())
            )
        );
        assert_eq!(
            (
                &e.customer_id,
                &e.product,
                &e.region,
                &e.comment,
                &e.survey_id
            ),
            (
                &r.customer_id,
                &r.product,
                &r.region,
                &r.comment,
                &r.survey_id
            )
        );
        assert_eq!(
            (e.score, e.channel, e.responded_at),
            (r.score.unwrap(), r.channel, r.responded_at)
        );
        assert_eq!(e.customer_value, r.customer_value);
        let want_key = if r.customer_id.is_empty() {
            &r.response_id
        } else {
            &r.customer_id
        };
        assert_eq!(rec.key.as_deref(), Some(want_key.as_bytes()));
        // README's defaults: strategic ≥ 10,000, high_value ≥ 1,000,
        // standard; referral for all, case_study for the two upper tiers
        // with a comment.
        let value = r.customer_value.unwrap_or(0.0);
        let tier = if value >= 10_000.0 {
            "strategic"
        } else if value >= 1_000.0 {
            "high_value"
        } else {
            "standard"
        };
        assert_eq!(e.tier, tier, "{}", e.response_id);
        let mut actions = vec!["referral"];
        if tier != "standard" && !r.comment.is_empty() {
            actions.push("case_study");
            case_studies += 1;
        }
        assert_eq!(e.suggested_actions, actions, "{}", e.response_id);
        assert!(!e.withdrawn);
        assert!(e.emitted_at.is_some());
        *by_tier
            .entry((r.product.clone(), r.region.clone(), tier))
            .or_default() += 1.0;
    }
    assert!(case_studies > 0, "no case study in the data");
    assert!(
        by_tier.keys().any(|k| k.2 == "strategic"),
        "no strategic promoter in the data"
    );
    assert_eq!(m.count("nps_promoter_events_total"), by_tier.len());
    for ((product, region, tier), n) in &by_tier {
        assert_eq!(
            m.get(
                "nps_promoter_events_total",
                &[("product", product), ("region", region), ("tier", tier)]
            ),
            Some(*n),
            "{product}/{region}/{tier}"
        );
    }
    assert_eq!(m.count("nps_promoter_events_withdrawn_total"), 0);
}

#[test]
fn sigterm_during_a_steady_stream_loses_no_alert_and_no_dead_letter() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let now = now_ms();
    let data = dataset(4000, now, "s");
    let bad = bad_events(now);
    let mut records: Vec<Input> = Vec::new();
    for (i, (m, _)) in data.iter().enumerate() {
        records.push((
            Some(m.encode_to_vec()),
            m.response_id.clone().into_bytes(),
            None,
        ));
        if i % 400 == 0 {
            let (payload, _) = &bad[(i / 400) % bad.len()];
            records.push((payload.clone(), format!("bad-{i}").into_bytes(), None));
        }
    }
    let bad_count = data.len().div_ceil(400);

    let mut svc = Service::run(&brokers, "g-term", QUICK_REJOIN, "term-1");
    // Produce while the service runs, and stop it in the middle.
    let producer_brokers = brokers.clone();
    let half = records.len() / 2;
    let (first, second) = records.split_at(half);
    let first = first.to_vec();
    let feeder = std::thread::spawn(move || produce(&producer_brokers, &first));
    svc.wait_for("some progress", Duration::from_secs(60), |m| {
        consumed(m) > 200.0
    });
    let status = svc.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit {status}:\n{}", svc.logs());
    feeder.join().unwrap();
    produce(&brokers, second);

    let mut svc = Service::run(&brokers, "g-term", QUICK_REJOIN, "term-2");
    wait_committed(&brokers, "g-term", 4, Duration::from_secs(60), &svc);
    let detractors: BTreeSet<String> = data
        .iter()
        .filter(|(r, _)| r.score.unwrap() <= 6)
        .map(|(r, _)| r.response_id.clone())
        .collect();
    let alerted: BTreeSet<String> = alerts_by_response(&brokers, detractors.len())
        .into_keys()
        .collect();
    assert_eq!(
        alerted, detractors,
        "every detractor has at least one alert"
    );
    let dead = read_topic(&brokers, DLQ, bad_count, Duration::from_secs(30));
    let dead_keys: BTreeSet<Vec<u8>> = dead.iter().filter_map(|r| r.key.clone()).collect();
    assert_eq!(
        dead_keys.len(),
        bad_count,
        "every bad record dead-lettered at least once"
    );
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

#[test]
fn demo_serves_nps_metrics_alerts_and_a_table() {
    let _heavy = heavy();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut demo = Service::start(
        &["demo", "--metrics-addr", &addr, "--table-every", "2"],
        port,
        "demo",
    );
    // A generous bound: on a loaded machine the demo's start (embedded
    // broker, topics, a month of history) takes seconds.
    let m = demo.wait_for("nps_score series", Duration::from_secs(90), |m| {
        m.count("nps_score") > 0
    });
    assert!(m.count("nps_window_responses") > 0);
    assert!(m.sum("nps_detractor_alerts_total", &[]) > 0.0);
    let status = demo.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit {status}:\n{}", demo.logs());
}

#[test]
fn bad_flags_are_one_clear_line_before_connecting() {
    let out = std::process::Command::new(BIN)
        .args(["run", "--brokers", "127.0.0.1:1", "--windows", "1h,soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: --windows"), "{err}");
}

/// Runs `send` with `args` on `text` as its file; it must exit 1 (lines
/// skipped). Returns its standard error.
fn send_lines_expecting_skips(args: &[&str], brokers: &str, text: &str) -> String {
    let file = std::env::temp_dir().join(format!("nps-send-{}.jsonl", rand_suffix()));
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["send", "--brokers", brokers])
        .args(args)
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    std::fs::remove_file(file).ok();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "bad lines make exit code 1: {err}"
    );
    err
}

#[test]
fn send_produces_json_lines_as_protobuf_and_reports_bad_lines() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let now = now_ms();
    let data = dataset(50, now, "json");
    let mut text = String::new();
    for (i, (m, _)) in data.iter().enumerate() {
        text.push_str(&serde_json::to_string(m).unwrap());
        text.push('\n');
        if i == 10 {
            text.push_str("{this is not json\n\n");
        }
        if i == 20 {
            text.push_str("{\"score\": \"high\"}\n");
        }
    }
    let err = send_lines_expecting_skips(&["--topic", INPUT], &brokers, &text);
    assert!(err.contains("line 12: skipped"), "{err}");
    assert!(err.contains("line 24: skipped"), "{err}");
    let records = read_topic(&brokers, INPUT, data.len(), Duration::from_secs(30));
    assert_eq!(records.len(), data.len());
    let mut got: Vec<SurveyResponse> = records
        .iter()
        .map(|r| {
            let m = SurveyResponse::decode(r.payload.as_deref().unwrap()).unwrap();
            assert_eq!(r.key.as_deref(), Some(m.response_id.as_bytes()));
            m
        })
        .collect();
    got.sort_by(|a, b| a.response_id.cmp(&b.response_id));
    let want: Vec<SurveyResponse> = data.into_iter().map(|(m, _)| m).collect();
    assert_eq!(got, want);
}

#[test]
fn send_case_events_validates_lines_and_keys_them_by_customer() {
    let _heavy = heavy();
    use nps_stream::pb::{CaseEvent, CaseState};
    let (cluster, brokers) = cluster();
    cluster.create_topic("nps-case-events", 2, 1).unwrap();
    let alert = nps_stream::alerts::alert_id("r-1");
    let other = nps_stream::alerts::alert_id("r-2");
    let text = format!(
        r#"{{"alertId":"{alert}","customerId":"cust-1","state":"CASE_STATE_CONTACTED","occurredAt":"2025-12-01T10:00:00Z","owner":"equipo-norte"}}

{{"alertId":"{other}","state":"CASE_STATE_RESOLVED","outcome":"CASE_OUTCOME_RECOVERED","occurredAt":"2025-12-01T11:00:00Z"}}
{{"alertId":"{alert}","state":"CASE_STATE_UNSPECIFIED","occurredAt":"2025-12-01T10:00:00Z"}}
{{"alertId":"{alert}","state":"CASE_STATE_CONTACTED"}}
not json
"#
    );
    let err = send_lines_expecting_skips(&["--case-events"], &brokers, &text);
    for (line, reason) in [
        (4, "unknown_state"),
        (5, "missing_timestamp"),
        (6, "undecodable"),
    ] {
        assert!(
            err.contains(&format!("line {line}: skipped: {reason}")),
            "{err}"
        );
    }
    assert!(
        err.contains("sent 2 case events to nps-case-events"),
        "{err}"
    );
    let records = read_topic(&brokers, "nps-case-events", 2, Duration::from_secs(30));
    let mut got: Vec<(Vec<u8>, CaseEvent)> = records
        .iter()
        .map(|r| {
            let e = CaseEvent::decode(r.payload.as_deref().unwrap()).unwrap();
            (r.key.clone().unwrap(), e)
        })
        .collect();
    got.sort_by(|a, b| {
        a.1.occurred_at
            .unwrap()
            .seconds
            .cmp(&b.1.occurred_at.unwrap().seconds)
    });
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, b"cust-1", "keyed by customer");
    assert_eq!(got[0].1.state, CaseState::Contacted as i32);
    assert_eq!(got[0].1.owner, "equipo-norte");
    assert_eq!(got[1].0, other.as_bytes(), "no customer: keyed by alert");
    assert_eq!(got[1].1.state, CaseState::Resolved as i32);
}

#[test]
fn a_dead_letter_too_large_for_the_producer_goes_out_without_its_value_then_its_key() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let now = now_ms();
    let good = dataset(2, now, "big");
    // Fits the input topic, but not once the dead-letter headers are added
    // (librdkafka's message.max.bytes is 1,000,000).
    let huge = vec![0xffu8; 999_800];
    // A key that large: without its value it is still too large, so the
    // key goes too.
    let huge_key = vec![b'k'; 999_800];
    let records: Vec<Input> = vec![
        (Some(good[0].0.encode_to_vec()), b"g0".to_vec(), None),
        (Some(huge), b"huge".to_vec(), None),
        (Some(good[1].0.encode_to_vec()), b"g1".to_vec(), None),
        (Some(b"\xff".to_vec()), huge_key, None),
    ];
    produce(&brokers, &records);
    let mut svc = Service::run(&brokers, "g-huge", &[], "huge");
    let m = svc.wait_for("all four consumed", Duration::from_secs(60), |m| {
        consumed(m) == 4.0
    });
    assert_eq!(
        m.get("nps_events_rejected_total", &[("reason", "undecodable")]),
        Some(2.0)
    );
    let mut dead = read_topic(&brokers, DLQ, 2, Duration::from_secs(30));
    assert_eq!(dead.len(), 2);
    let keyless = dead
        .iter()
        .position(|d| d.key.is_none())
        .expect("a dead letter without its key");
    let keyless = dead.remove(keyless);
    for marker in ["nps.value-dropped", "nps.key-dropped"] {
        assert_eq!(
            keyless.header(marker).as_deref(),
            Some("too_large"),
            "{marker}"
        );
    }
    assert_eq!(keyless.payload, None);
    assert_eq!(
        keyless.header("nps.dlq.reason").as_deref(),
        Some("undecodable")
    );
    assert_eq!(dead[0].key.as_deref(), Some(&b"huge"[..]));
    assert_eq!(dead[0].payload, None, "value dropped");
    assert_eq!(
        dead[0].header("nps.value-dropped").as_deref(),
        Some("too_large")
    );
    assert_eq!(
        dead[0].header("nps.dlq.reason").as_deref(),
        Some("undecodable")
    );
    // Nothing stalled: the partition's offsets are committed past it.
    assert!(svc.terminate(Duration::from_secs(30)).success());
    let (committed, ends) = committed_and_end(&brokers, "g-huge", 4);
    for (p, (c, e)) in committed.iter().zip(&ends).enumerate() {
        if *e != Offset::Offset(0) {
            assert_eq!(c, e, "partition {p}: {committed:?} vs {ends:?}");
        }
    }
}

#[test]
fn check_config_validates_without_connecting() {
    let ok = std::process::Command::new(BIN)
        .args([
            "check-config",
            "--brokers",
            "127.0.0.1:1",
            "--windows",
            "15m,1d",
            "-X",
            "security.protocol=SSL",
            "-X",
            "sasl.password=hunter2",
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        out.contains("configuration OK") && out.contains("15m"),
        "{out}"
    );
    // Secrets are never printed.
    assert!(!out.contains("hunter2"), "{out}");
    assert!(out.contains("\"sasl.password\": \"<redacted>\""), "{out}");
    let bad = std::process::Command::new(BIN)
        .args([
            "check-config",
            "--brokers",
            "127.0.0.1:1",
            "--alert-threshold",
            "11",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("error: --alert-threshold"));
}

#[test]
fn send_generate_produces_history_then_a_paced_live_stream() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let out = std::process::Command::new(BIN)
        .args([
            "send",
            "--brokers",
            &brokers,
            "--topic",
            INPUT,
            "--generate",
            "--history",
            "400",
            "--rate",
            "500",
            "--count",
            "200",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let records = read_topic(&brokers, INPUT, 600, Duration::from_secs(30));
    assert_eq!(records.len(), 600, "{err}");
    let now = now_ms();
    let limits = nps_stream::schema::Limits::default();
    let mut valid = 0;
    let mut live = 0;
    let mut keys = BTreeSet::new();
    for r in &records {
        assert!(keys.insert(r.key.clone()), "keys are unique");
        if let Ok(v) = nps_stream::schema::decode_and_validate(
            r.payload.as_deref(),
            std::iter::empty(),
            now,
            &limits,
        ) {
            valid += 1;
            assert!(v.responded_at_ms > now - 31 * DAY);
            // live answers are stamped at most a few hours back
            if v.responded_at_ms > now - 7 * HOUR {
                live += 1;
            }
        }
    }
    // 3% malformed on purpose, for the dead-letter topic.
    assert!((540..600).contains(&valid), "{valid} valid of 600");
    // all 200 live ones (less the malformed) and the few history answers
    // that fall in the last hours
    assert!((180..=260).contains(&live), "{live} recent of {valid}");

    // A second run (a restarted producer) sends new answers, not
    // duplicates of the first run's.
    let again = std::process::Command::new(BIN)
        .args([
            "send",
            "--brokers",
            &brokers,
            "--topic",
            INPUT,
            "--generate",
        ])
        .args(["--history", "100", "--count", "0"])
        .output()
        .unwrap();
    assert!(again.status.success());
    let records = read_topic(&brokers, INPUT, 700, Duration::from_secs(30));
    let keys: BTreeSet<_> = records.iter().map(|r| r.key.clone()).collect();
    assert_eq!((records.len(), keys.len()), (700, 700));
}

#[test]
fn tls_and_sasl_properties_are_accepted_by_the_kafka_clients() {
    let _heavy = heavy();
    // Nobody listens on the port: the clients must start and keep
    // retrying, not refuse the configuration (librdkafka built without
    // OpenSSL refuses security.protocol=SASL_SSL outright).
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let mut svc = Service::run(
        &brokers,
        "g-tls",
        &[
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            "sasl.mechanism=SCRAM-SHA-512",
            "-X",
            "sasl.username=nps",
            "-X",
            "sasl.password=secret",
            "-X",
            "compression.type=zstd",
        ],
        "tls",
    );
    svc.wait_for("the clients report errors", Duration::from_secs(30), |m| {
        m.sum("nps_kafka_errors_total", &[]) > 0.0
    });
    assert_eq!(svc.status("/healthz"), Some(200));
    assert_eq!(svc.status("/readyz"), Some(503));
    assert!(svc.child.try_wait().unwrap().is_none(), "still running");
    let logs = svc.logs();
    assert!(!logs.contains("not available at build time"), "{logs}");
    assert!(logs.contains("sasl_ssl://"), "{logs}");
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

// ---- recovery: snapshots on the state topic, restore, replay -------------

const STATE: &str = "g-rec-state";
/// Snapshots every second, so a kill lands between snapshots and commits.
const FAST_SNAPSHOTS: &[&str] = &["-X", "session.timeout.ms=6000", "--snapshot-interval", "1s"];

fn restores(m: &Metrics, from: &str) -> f64 {
    m.get("nps_state_restores_total", &[("from", from)])
        .unwrap_or(0.0)
}

/// Runs a group over `data` to the end, stops it gracefully, and returns
/// the alerts it sent (one per detractor).
fn process_all_then_stop(brokers: &str, group: &str, data: &[(SurveyResponse, i64)]) {
    produce(brokers, &good_records(data));
    let mut svc = Service::run(brokers, group, FAST_SNAPSHOTS, &format!("{group}-1"));
    wait_committed(brokers, group, 4, Duration::from_secs(60), &svc);
    wait_windows(&mut svc, data, Duration::from_secs(10));
    let status = svc.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit {status}:\n{}", svc.logs());
    assert!(svc.logs().contains("partitions revoked"), "{}", svc.logs());
}

#[test]
fn kill_9_mid_stream_then_restart_equals_a_run_that_never_stopped() {
    let _heavy = heavy();
    let (cluster, brokers) = cluster();
    cluster.create_topic(STATE, 4, 1).unwrap();
    let now = now_ms();
    let data = dataset(6000, now, "k");
    let records = good_records(&data);

    let state = ["--state-topic", STATE];
    let args: Vec<&str> = FAST_SNAPSHOTS.iter().chain(&state).copied().collect();
    let mut svc = Service::run(&brokers, "g-kill", &args, "kill-1");
    // A steady stream: 100 records every 100 ms. Its second half waits
    // for the kill, so the kill lands mid-stream however slow the machine.
    let b = brokers.clone();
    let (killed, wait_kill) = std::sync::mpsc::channel::<()>();
    let (half, first_half_written) = std::sync::mpsc::channel::<()>();
    let feeder = std::thread::spawn(move || {
        for (i, chunk) in records.chunks(100).enumerate() {
            if i == 30 {
                let _ = half.send(());
                let _ = wait_kill.recv();
            }
            produce(&b, chunk);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // Mid-stream: the first half written, snapshots written, more than
    // two thirds of it read, the second half still to come.
    first_half_written
        .recv_timeout(Duration::from_secs(120))
        .expect("the feeder wrote the first half");
    svc.wait_for("snapshots and progress", Duration::from_secs(60), |m| {
        m.get("nps_snapshots_written_total", &[("result", "ok")])
            .unwrap_or(0.0)
            >= 4.0
            && consumed(m) > 2000.0
    });
    svc.child.kill().unwrap();
    svc.child.wait().unwrap();
    let (committed_at_kill, ends_at_kill) = committed_and_end(&brokers, "g-kill", 4);
    let written: i64 = ends_at_kill
        .iter()
        .map(|e| match e {
            Offset::Offset(o) => *o,
            _ => 0,
        })
        .sum();
    assert_eq!(
        written, 3000,
        "the first half written, the second held back"
    );
    killed.send(()).unwrap();
    feeder.join().unwrap();
    eprintln!("kill -9 at committed {committed_at_kill:?}, ends {ends_at_kill:?}");

    let mut svc = Service::run(&brokers, "g-kill", &args, "kill-2");
    wait_committed(&brokers, "g-kill", 4, Duration::from_secs(90), &svc);
    eprintln!(
        "restart replayed {:?} records",
        svc.metrics().unwrap().get("nps_state_replayed_total", &[])
    );
    // Every window of every segment equals the truth of all the data.
    wait_windows(&mut svc, &data, Duration::from_secs(10));
    let m = svc.metrics().unwrap();
    assert_eq!(restores(&m, "snapshot"), 4.0, "{}", svc.logs());
    assert_eq!(svc.status("/readyz"), Some(200));

    // Every detractor has an alert; a second one only for a response after
    // the last commit before the kill, with the same alert_id.
    let detractors = detractor_ids(&data);
    let alerts = alerts_by_response(&brokers, detractors.len());
    let alerted: BTreeSet<String> = alerts.keys().cloned().collect();
    assert_eq!(alerted, detractors);
    let input: BTreeMap<String, (i32, i64)> =
        read_topic(&brokers, INPUT, data.len(), Duration::from_secs(30))
            .into_iter()
            .map(|r| {
                (
                    String::from_utf8(r.key.unwrap()).unwrap(),
                    (r.partition, r.offset),
                )
            })
            .collect();
    let mut duplicated = 0;
    for (id, ids) in &alerts {
        if ids.len() == 1 {
            continue;
        }
        duplicated += 1;
        assert!(
            ids.iter().all(|a| a == &ids[0]),
            "{id}: different alert ids {ids:?}"
        );
        let (p, off) = input[id];
        let Offset::Offset(c) = committed_at_kill[p as usize] else {
            continue; // nothing committed on that partition yet
        };
        assert!(
            off >= c,
            "{id} at {p}/{off} alerted twice though committed up to {c}"
        );
    }
    eprintln!(
        "kill -9: {duplicated} detractors alerted twice (after the last commit); committed at kill {committed_at_kill:?}"
    );
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// What librdkafka's mock cluster cannot do is said, never assumed: it
/// takes no CreateTopics, so the state topic appears through automatic
/// creation, not compacted, and the warning names the refusal and how to
/// create the topic, with no quiet "created" and `nps_state_topic_degraded`
/// absent (nothing was created with less; the fallbacks' steps are
/// `state::tests`' unit test). It describes no topic configs, so the input
/// retention's check at start is counted `unknown`, with a line in the log
/// and no `nps_input_retention_seconds`.
#[test]
fn what_the_broker_cannot_do_is_said_not_assumed() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let args = ["--cases", "off", "--promoters", "off"];
    let mut svc = Service::run(&brokers, "g-unable", &args, "unable");
    let m = svc.wait_for(
        "ready, the retention checked",
        Duration::from_secs(60),
        |m| {
            m.get("nps_ready", &[]) == Some(1.0)
                && m.sum("nps_input_retention_checks_total", &[]) > 0.0
        },
    );
    assert_eq!(m.sum("nps_state_topic_degraded", &[]), 0.0);
    assert_eq!(
        m.get("nps_input_retention_checks_total", &[("result", "unknown")]),
        Some(1.0)
    );
    assert_eq!(m.sum("nps_input_retention_checks_total", &[]), 1.0);
    assert_eq!(m.sum("nps_input_retention_seconds", &[]), 0.0);
    let logs = svc.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("could not create the state topic"))
        .unwrap_or_else(|| panic!("no warning:\n{logs}"));
    assert!(
        warning.contains("WARN") && warning.contains("create it compacted"),
        "{warning}"
    );
    assert!(
        warning.contains("UnsupportedFeature"),
        "the broker's answer: {warning}"
    );
    assert!(!logs.contains("state topic created"), "{logs}");
    assert!(
        logs.contains("the input topic's retention is unknown"),
        "{logs}"
    );
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// A state topic that cannot be read at restore (its watermarks refused,
/// the next 40 ListOffsets requests answered TOPIC_AUTHORIZATION_FAILED):
/// each partition's read error is counted with its reason, its snapshot
/// as `unreadable`, and the partition is rebuilt from the input with the
/// same windows.
#[test]
fn a_state_read_refused_at_restore_is_counted_and_the_partition_rebuilt() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let _heavy = heavy();
    let (cluster, brokers) = cluster();
    let data = dataset(800, now_ms(), "unread");
    process_all_then_stop(&brokers, "g-unread", &data);
    cluster.request_errors(
        RDKafkaApiKey::ListOffsets,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 40],
    );
    let mut svc = Service::run(&brokers, "g-unread", FAST_SNAPSHOTS, "unread-2");
    let m = svc.wait_for("rebuilt", Duration::from_secs(90), |m| {
        restores(m, "rebuild") == 4.0 && m.get("nps_state_restoring_partitions", &[]) == Some(0.0)
    });
    assert_eq!(
        m.get("nps_state_read_errors_total", &[("reason", "watermarks")]),
        Some(4.0)
    );
    assert_eq!(
        m.get("nps_snapshot_errors_total", &[("reason", "unreadable")]),
        Some(4.0)
    );
    assert_eq!(restores(&m, "rebuild"), 4.0);
    assert_eq!(
        m.get("nps_state_replayed_total", &[]),
        Some(data.len() as f64)
    );
    wait_windows(&mut svc, &data, Duration::from_secs(30));
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// `--buckets-per-window` on a running service: a restart with another
/// bucket count finds every snapshot written with other windows
/// (`layout`), rebuilds each partition by replaying its input (counted, no
/// alert), and its windows are again exactly the data's.
#[test]
fn another_bucket_count_finds_the_snapshots_unusable_and_rebuilds() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let data = dataset(1200, now_ms(), "layout");
    process_all_then_stop(&brokers, "g-layout", &data);
    let args: Vec<&str> = FAST_SNAPSHOTS
        .iter()
        .copied()
        .chain(["--buckets-per-window", "12"])
        .collect();
    let mut svc = Service::run(&brokers, "g-layout", &args, "layout-2");
    let m = svc.wait_for("rebuilt", Duration::from_secs(90), |m| {
        restores(m, "rebuild") == 4.0
            && m.get("nps_snapshot_errors_total", &[("reason", "layout")]) == Some(4.0)
            && m.get("nps_state_restoring_partitions", &[]) == Some(0.0)
    });
    assert_eq!(restores(&m, "snapshot"), 0.0);
    assert_eq!(
        m.get("nps_state_replayed_total", &[]),
        Some(data.len() as f64)
    );
    wait_windows(&mut svc, &data, Duration::from_secs(30));
    // Replayed records raise no alert again: one per detractor in all.
    let detractors = detractor_ids(&data);
    let alerts = alerts_by_response(&brokers, detractors.len());
    assert_eq!(alerts.len(), detractors.len());
    assert!(alerts.values().all(|ids| ids.len() == 1));
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

#[test]
fn graceful_restart_restores_the_shutdown_snapshot_with_no_replay() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let now = now_ms();
    let data = dataset(3000, now, "g");
    process_all_then_stop(&brokers, "g-grace", &data);
    // The state topic was created by the service (the mock cluster has no
    // CreateTopics: auto-created) and holds a snapshot per partition.
    let snaps = read_topic(&brokers, "g-grace-state", 4, Duration::from_secs(10));
    let keys: BTreeSet<String> = snaps
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(
        keys,
        (0..4)
            .map(|p| format!("{INPUT}/{p}"))
            .collect::<BTreeSet<_>>()
    );

    // The commits that followed the snapshots of partitions 0 and 1 are
    // lost (a broker gone between the two): the snapshots are ahead. (The
    // mock takes commits from members only once a group exists: the same
    // state under a new group with those commits.)
    let (_, end) = committed_and_end(&brokers, "g-grace", 4);
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "g-grace-2")
        .create()
        .unwrap();
    let mut behind = TopicPartitionList::new();
    for (p, e) in end.iter().enumerate() {
        let at = if p < 2 { Offset::Offset(100) } else { *e };
        behind.add_partition_offset(INPUT, p as i32, at).unwrap();
    }
    probe
        .commit(&behind, rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    drop(probe);
    let (before, _) = committed_and_end(&brokers, "g-grace-2", 4);
    assert_eq!(before[..2], [Offset::Offset(100), Offset::Offset(100)]);

    let same_state = ["--state-topic", "g-grace-state"];
    let args: Vec<&str> = FAST_SNAPSHOTS.iter().chain(&same_state).copied().collect();
    let mut svc = Service::run(&brokers, "g-grace-2", &args, "grace-2");
    svc.wait_for("restored", Duration::from_secs(60), |m| {
        restores(m, "snapshot") == 4.0
    });
    wait_windows(&mut svc, &data, Duration::from_secs(10));
    // What a snapshot reflects is committed, with nothing read after it.
    wait_committed(&brokers, "g-grace-2", 4, Duration::from_secs(30), &svc);
    let m = svc.metrics().unwrap();
    assert_eq!(m.get("nps_state_replayed_total", &[]).unwrap_or(0.0), 0.0);
    assert_eq!(consumed(&m), 0.0, "nothing read beyond the snapshot");
    assert_eq!(restores(&m, "rebuild"), 0.0);
    assert_eq!(svc.status("/readyz"), Some(200));
    let detractors = detractor_ids(&data);
    let alerts = alerts_by_response(&brokers, detractors.len());
    assert!(alerts.values().all(|v| v.len() == 1), "no alert sent again");
    assert_eq!(alerts.len(), detractors.len());
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// docs/metrics.md: every loop exports the partition count of the topics it
/// reads and the lag of each partition it holds (the case tracker's
/// alerts and case events too), so that a partition nobody holds shows
/// (`NpsPartitionsUnowned`).
#[test]
fn the_lag_of_every_topic_a_loop_reads_is_exported_with_its_partition_count() {
    let _heavy = heavy();
    let (cluster, brokers) = cluster();
    for topic in ["nps-case-events", "nps-case-escalations"] {
        cluster.create_topic(topic, 2, 1).unwrap();
    }
    let data = dataset(500, now_ms(), "lag");
    produce(&brokers, &good_records(&data));
    let mut svc = Service::run(&brokers, "g-lag", QUICK_REJOIN, "lag");
    let held = |m: &Metrics, topic: &str| {
        m.series("nps_consumer_lag")
            .iter()
            .filter(|labels| labels.get("topic").map(String::as_str) == Some(topic))
            .count()
    };
    svc.wait_for("every partition's lag", Duration::from_secs(60), |m| {
        consumed(m) == data.len() as f64
            && held(m, INPUT) == 4
            && held(m, ALERTS) == 2
            && held(m, "nps-case-events") == 2
    });
    let m = svc.metrics().unwrap();
    for (topic, n) in [(INPUT, 4.0), (ALERTS, 2.0), ("nps-case-events", 2.0)] {
        assert_eq!(
            m.get("nps_topic_partitions", &[("topic", topic)]),
            Some(n),
            "{topic}"
        );
    }
}

/// docs/operations.md, "Upgrading and rolling back": the first roll writes
/// the previous format (`--snapshot-format 1`), every state record says
/// so, and the second roll (this release's format) restores every
/// partition from those records, replaying nothing before them.
#[test]
fn snapshots_written_in_the_previous_format_restore_after_the_second_roll() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let data = dataset(3000, now_ms(), "roll");
    produce(&brokers, &good_records(&data));
    let mut first: Vec<&str> = FAST_SNAPSHOTS.to_vec();
    first.extend(["--snapshot-format", "1"]);
    let mut svc = Service::run(&brokers, "g-roll", &first, "roll-1");
    wait_committed(&brokers, "g-roll", 4, Duration::from_secs(60), &svc);
    wait_windows(&mut svc, &data, Duration::from_secs(10));
    let m = svc.metrics().unwrap();
    assert_eq!(m.get("nps_snapshot_format_written", &[]), Some(1.0));
    assert!(
        svc.terminate(Duration::from_secs(30)).success(),
        "{}",
        svc.logs()
    );
    let snaps = read_topic(&brokers, "g-roll-state", 4, Duration::from_secs(10));
    let windows: Vec<_> = snaps
        .iter()
        .filter(|r| {
            r.key
                .as_deref()
                .is_some_and(|k| k.starts_with(INPUT.as_bytes()))
        })
        .collect();
    assert!(windows.len() >= 4);
    for r in &windows {
        let env = nps_stream::pb::SnapshotEnvelope::decode(r.payload.as_deref().unwrap()).unwrap();
        assert_eq!(env.format_version, 1);
    }

    let mut svc = Service::run(&brokers, "g-roll", FAST_SNAPSHOTS, "roll-2");
    svc.wait_for("restored", Duration::from_secs(60), |m| {
        restores(m, "snapshot") + restores(m, "rebuild") == 4.0
    });
    wait_windows(&mut svc, &data, Duration::from_secs(30));
    let m = svc.metrics().unwrap();
    assert_eq!(restores(&m, "snapshot"), 4.0, "{}", svc.logs());
    assert_eq!(m.sum("nps_state_replayed_total", &[]), 0.0);
    assert_eq!(m.sum("nps_snapshot_errors_total", &[]), 0.0);
    assert_eq!(
        m.get("nps_snapshot_format_written", &[]),
        Some(f64::from(nps_stream::engine::FORMAT_VERSION))
    );
}

#[test]
fn corrupt_snapshots_are_reported_and_their_partitions_rebuilt() {
    let _heavy = heavy();
    let (cluster, brokers) = cluster();
    // The case tracker snapshots too once its topics exist (the mock
    // cluster creates none on request).
    for topic in ["nps-case-events", "nps-case-escalations"] {
        cluster.create_topic(topic, 2, 1).unwrap();
    }
    let now = now_ms();
    let data = dataset(3000, now, "c");
    process_all_then_stop(&brokers, "g-corrupt", &data);
    let state = "g-corrupt-state";
    let snaps = read_topic(&brokers, state, 4, Duration::from_secs(10));
    let latest = |p: i32| {
        let key = format!("{INPUT}/{p}");
        snaps
            .iter()
            .rfind(|r| r.key.as_deref() == Some(key.as_bytes()))
            .unwrap()
            .clone()
    };
    // Partition 1: garbage; 2: a format from the future; 3: a flipped byte.
    let mut env =
        nps_stream::pb::SnapshotEnvelope::decode(latest(2).payload.as_deref().unwrap()).unwrap();
    env.format_version = 99;
    let mut flipped = latest(3).payload.unwrap();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x10;
    // And the case tracker's snapshot of alerts partition 0, in a format
    // from the future.
    let cases_key = format!("{ALERTS}/0");
    let cases_latest = snaps
        .iter()
        .rfind(|r| r.key.as_deref() == Some(cases_key.as_bytes()))
        .expect("a case snapshot")
        .clone();
    let mut cases_env =
        nps_stream::pb::SnapshotEnvelope::decode(cases_latest.payload.as_deref().unwrap()).unwrap();
    cases_env.format_version = 99;
    let bad: [(i32, Vec<u8>); 3] = [
        (1, b"not a snapshot at all".to_vec()),
        (2, env.encode_to_vec()),
        (3, flipped),
    ];
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for (p, bytes) in &bad {
        let key = format!("{INPUT}/{p}");
        let sp = latest(*p).partition;
        producer
            .send(
                BaseRecord::to(state)
                    .partition(sp)
                    .key(key.as_bytes())
                    .payload(bytes.as_slice()),
            )
            .unwrap();
    }
    producer
        .send(
            BaseRecord::to(state)
                .partition(cases_latest.partition)
                .key(cases_key.as_bytes())
                .payload(&cases_env.encode_to_vec()),
        )
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let mut svc = Service::run(&brokers, "g-corrupt", FAST_SNAPSHOTS, "corrupt-2");
    svc.wait_for("restored", Duration::from_secs(60), |m| {
        restores(m, "snapshot") + restores(m, "rebuild") == 4.0
    });
    wait_windows(&mut svc, &data, Duration::from_secs(30));
    let m = svc.metrics().unwrap();
    for reason in ["undecodable", "version", "checksum"] {
        assert_eq!(
            m.get("nps_snapshot_errors_total", &[("reason", reason)]),
            Some(1.0),
            "{reason}\n{}",
            svc.logs()
        );
    }
    // The format from the future is named, with the one this build reads.
    let reads = format!(
        "{}-{}",
        nps_stream::engine::OLDEST_READ,
        nps_stream::engine::FORMAT_VERSION
    );
    assert_eq!(
        m.get(
            "nps_snapshot_versions_unreadable_total",
            &[
                ("state", "windows"),
                ("found", "99"),
                ("reads", reads.as_str())
            ]
        ),
        Some(1.0)
    );
    let cases_reads = format!(
        "{}-{}",
        nps_stream::cases::CASES_OLDEST_READ,
        nps_stream::cases::CASES_FORMAT_VERSION
    );
    let cases_unreadable = [
        ("state", "cases"),
        ("found", "99"),
        ("reads", cases_reads.as_str()),
    ];
    svc.wait_for("the case snapshot refused", Duration::from_secs(30), |m| {
        m.get("nps_snapshot_versions_unreadable_total", &cases_unreadable) == Some(1.0)
    });
    let m = svc.metrics().unwrap();
    assert_eq!(m.sum("nps_snapshot_versions_unreadable_total", &[]), 2.0);
    assert_eq!(restores(&m, "rebuild"), 3.0);
    assert_eq!(restores(&m, "snapshot"), 1.0);
    // The three partitions were replayed from their start, without alerts.
    let (_, ends) = committed_and_end(&brokers, "g-corrupt", 4);
    let replayed: i64 = ends[1..]
        .iter()
        .map(|o| match o {
            Offset::Offset(o) => *o,
            _ => 0,
        })
        .sum();
    assert_eq!(
        m.get("nps_state_replayed_total", &[]),
        Some(replayed as f64)
    );
    assert_eq!(m.sum("nps_detractor_alerts_total", &[]), 0.0);
    assert!(svc.logs().contains("snapshot unusable"), "{}", svc.logs());
    assert_eq!(svc.status("/readyz"), Some(200));
    // Fresh snapshots replace the bad ones.
    svc.wait_for("new snapshots", Duration::from_secs(30), |m| {
        m.get("nps_snapshots_written_total", &[("result", "ok")])
            .unwrap_or(0.0)
            >= 3.0
    });
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

#[test]
fn broker_down_30s_and_refused_alert_writes_lose_nothing_and_commit_nothing_undelivered() {
    let _heavy = heavy();
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (cluster, brokers) = cluster();
    let now = now_ms();
    let data = dataset(4500, now, "f");
    let (batch1, rest) = data.split_at(1500);
    let (batch2, batch3) = rest.split_at(1500);

    // 1. A running group; the broker goes away for 30 s right after a
    //    batch arrives, with its alerts in flight.
    produce(&brokers, &good_records(batch1));
    let mut svc = Service::run(&brokers, "g-fault", FAST_SNAPSHOTS, "fault-1");
    wait_committed(&brokers, "g-fault", 4, Duration::from_secs(60), &svc);
    produce(&brokers, &good_records(batch2));
    cluster.broker_down(1).unwrap();
    let down = std::time::Instant::now();
    let mut saw_unready = false;
    // Commit attempts (ok or error) from the moment the outage is seen:
    // README promises none while cut off.
    let attempts = |m: &Metrics| m.sum("nps_offset_commits_total", &[]);
    let mut at_outage: Option<f64> = None;
    let mut during = Vec::new();
    while down.elapsed() < Duration::from_secs(30) {
        assert!(
            svc.child.try_wait().unwrap().is_none(),
            "exited during the outage:\n{}",
            svc.logs()
        );
        let m = svc.metrics().unwrap();
        let cut_off = m.get("nps_kafka_brokers_up", &[("client", "consumer")]) == Some(0.0);
        saw_unready |= svc.status("/readyz") == Some(503);
        if cut_off {
            let n = attempts(&m);
            at_outage.get_or_insert(n);
            during.push(n);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(saw_unready, "/readyz never said the brokers were gone");
    at_outage.expect("the consumer never saw the brokers gone");
    assert!(
        during.len() >= 10,
        "cut off for only {} samples",
        during.len()
    );
    // A commit already on its way when the brokers went may still come
    // back (as an error) in the first seconds; after that, none is made.
    let settled = &during[6..];
    assert!(
        settled.iter().all(|n| *n == settled[0]),
        "commits attempted while cut off: {during:?}"
    );
    assert!(svc.logs().contains("kafka brokers unreachable"));
    cluster.broker_up(1).unwrap();
    wait_committed(&brokers, "g-fault", 4, Duration::from_secs(90), &svc);
    let upto2: Vec<_> = batch1.iter().chain(batch2).cloned().collect();
    wait_windows(&mut svc, &upto2, Duration::from_secs(10));
    assert!(svc.terminate(Duration::from_secs(30)).success());

    // 2. Alert writes refused (non-retriable produce errors) while a new
    //    instance takes over: it must not commit past the first detractor
    //    whose alert is not delivered.
    produce(&brokers, &good_records(batch3));
    // Every write is refused: alerts and promoter events alike.
    let first_detractor = first_delivery_offsets(&brokers, batch3);
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 1_000_000],
    );
    let mut svc = Service::run(&brokers, "g-fault", FAST_SNAPSHOTS, "fault-2");
    svc.wait_for("deliveries retried", Duration::from_secs(60), |m| {
        m.get("nps_delivery_retries_total", &[]).unwrap_or(0.0) > 0.0
    });
    // Every record before a partition's first undelivered alert needs no
    // delivery: the commit reaches exactly that alert's offset, and stays
    // there over several commit intervals (never past it).
    let (_, ends) = committed_and_end(&brokers, "g-fault", 4);
    let expected: Vec<Offset> = (0..4)
        .map(|p| match first_detractor.get(&p) {
            Some(first) => Offset::Offset(*first),
            None => ends[p as usize],
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (committed, _) = committed_and_end(&brokers, "g-fault", 4);
        if committed == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "committed {committed:?}, want {expected:?} (each partition's first undelivered alert or promoter event)"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(3)); // several commit intervals
    let (committed, _) = committed_and_end(&brokers, "g-fault", 4);
    assert_eq!(
        committed, expected,
        "a commit moved past an undelivered alert"
    );
    assert!(svc.child.try_wait().unwrap().is_none(), "{}", svc.logs());
    cluster.clear_request_errors(RDKafkaApiKey::Produce);

    // 3. Once writes are accepted again, everything is delivered.
    wait_committed(&brokers, "g-fault", 4, Duration::from_secs(90), &svc);
    wait_windows(&mut svc, &data, Duration::from_secs(10));
    let detractors = detractor_ids(&data);
    let alerts = alerts_by_response(&brokers, detractors.len());
    let alerted: BTreeSet<String> = alerts.keys().cloned().collect();
    assert_eq!(alerted, detractors, "every detractor has an alert");
    for (id, ids) in &alerts {
        assert!(ids.iter().all(|a| a == &ids[0]), "{id}: {ids:?}");
    }
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// More deliveries waiting than `--max-pending`, for longer than
/// `max.poll.interval.ms`: fetching pauses, but the consumer is still
/// polled, so the member keeps its partitions (the 2026-12-02 soak's case
/// tracker, which stopped polling instead, was put out of the group); once
/// writes are accepted again everything is delivered and committed.
#[test]
fn deliveries_held_back_longer_than_the_poll_interval_keep_the_group_membership() {
    let _heavy = heavy();
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (cluster, brokers) = cluster();
    // 64% detractors: about 2,000 alerts and promoter events.
    let data = dataset(3_000, now_ms(), "bp");
    produce(&brokers, &good_records(&data));
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 10_000_000],
    );
    let poll_interval = &[
        "-X",
        "session.timeout.ms=6000",
        "-X",
        "max.poll.interval.ms=7000",
        "--max-pending",
        "500",
    ];
    let mut svc = Service::run(&brokers, "g-held", poll_interval, "held");
    svc.wait_for("500 deliveries waiting", Duration::from_secs(90), |m| {
        m.get("nps_pending_deliveries", &[]).unwrap_or(0.0) >= 500.0
    });
    // Four poll intervals held back: fetching stays paused (nothing more
    // is read) and the partitions stay this member's. (On the mock
    // cluster librdkafka did not put out a member that stopped polling
    // within 30 s, so the pause itself is what tells the fix.)
    let held = std::time::Instant::now();
    while held.elapsed() < Duration::from_secs(30) {
        let m = svc.metrics().expect("metrics");
        assert_eq!(
            m.get("nps_assigned_partitions", &[]),
            Some(4.0),
            "partitions lost while deliveries were held back:\n{}",
            svc.logs()
        );
        assert!(consumed(&m) < data.len() as f64, "nothing was held back");
        let logs = svc.logs();
        assert!(
            !logs.contains("maximum poll interval") && !logs.contains("partitions revoked"),
            "left the group while held back:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let logs = svc.logs();
    assert!(
        logs.contains("fetching paused until they catch up"),
        "{logs}"
    );
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    wait_committed(&brokers, "g-held", 4, Duration::from_secs(120), &svc);
    wait_windows(&mut svc, &data, Duration::from_secs(10));
    let detractors = detractor_ids(&data);
    let alerts = alerts_by_response(&brokers, detractors.len());
    let alerted: BTreeSet<String> = alerts.keys().cloned().collect();
    assert_eq!(alerted, detractors, "every detractor has an alert");
    assert!(svc.logs().contains("fetching resumed"));
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// Snapshots only at shutdown and revoke: the periodic one never comes.
const RARE_SNAPSHOTS: &[&str] = &["-X", "session.timeout.ms=6000", "--snapshot-interval", "1h"];

/// Leaves `group` with snapshots of `first` only and commits past
/// `second` too: one instance processes `first` and stops gracefully (its
/// shutdown snapshots), the next processes `second`, commits it, and is
/// killed before any snapshot of it.
fn snapshot_behind_the_commit(
    brokers: &str,
    group: &str,
    first: &[(SurveyResponse, i64)],
    second: &[(SurveyResponse, i64)],
) {
    produce(brokers, &good_records(first));
    let mut svc = Service::run(brokers, group, RARE_SNAPSHOTS, &format!("{group}-1"));
    wait_committed(brokers, group, 4, Duration::from_secs(60), &svc);
    assert!(svc.terminate(Duration::from_secs(30)).success());
    produce(brokers, &good_records(second));
    let mut svc = Service::run(brokers, group, RARE_SNAPSHOTS, &format!("{group}-2"));
    wait_committed(brokers, group, 4, Duration::from_secs(180), &svc);
    svc.child.kill().unwrap();
    svc.child.wait().unwrap();
}

#[test]
fn a_restart_replays_from_the_snapshot_to_the_commit_without_alerts() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let now = now_ms();
    let data = dataset(4000, now, "rp");
    let (batch1, batch2) = data.split_at(2000);
    // Its snapshot is the one from the shutdown, 500 records per partition
    // older than its commit.
    snapshot_behind_the_commit(&brokers, "g-replay", batch1, batch2);
    let detractors = detractor_ids(&data);
    let before = alerts_by_response(&brokers, detractors.len());
    assert_eq!(before.len(), detractors.len());

    let mut svc = Service::run(&brokers, "g-replay", RARE_SNAPSHOTS, "replay-3");
    svc.wait_for("replayed", Duration::from_secs(60), |m| {
        restores(m, "snapshot") == 4.0
    });
    wait_windows(&mut svc, &data, Duration::from_secs(10));
    let m = svc.metrics().unwrap();
    assert_eq!(
        m.get("nps_state_replayed_total", &[]),
        Some(batch2.len() as f64),
        "exactly the records between the snapshot and the commit"
    );
    assert_eq!(m.sum("nps_detractor_alerts_total", &[]), 0.0);
    assert_eq!(svc.status("/readyz"), Some(200));
    let after = alerts_by_response(&brokers, detractors.len());
    assert!(
        after.values().all(|ids| ids.len() == 1),
        "no alert sent twice"
    );
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// README: "precedence is flag, then environment, then file, then
/// default", and the file's `[kafka]` table merges with `-X` and
/// NPS_KAFKA_PROPERTIES key by key.
#[test]
fn flags_beat_environment_which_beats_the_file_which_beats_defaults() {
    let file = std::env::temp_dir().join(format!("nps-prec-{}.toml", rand_suffix()));
    std::fs::write(
        &file,
        r#"brokers = "file:9092"
group_id = "from-file"
input_topic = "file-input"
alerts_topic = "file-alerts"
[kafka]
"client.id" = "file-client"
"socket.timeout.ms" = "11111"
"#,
    )
    .unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| -> String {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("check-config")
            .arg("--config")
            .arg(&file)
            .args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("NPS_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd.envs(env.iter().copied()).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let field = |out: &str, name: &str| -> String {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {out}"));
        line.split_once(':')
            .unwrap()
            .1
            .trim()
            .trim_end_matches(',')
            .trim_matches('"')
            .to_string()
    };
    // File over defaults.
    let out = run(&[], &[]);
    assert_eq!(field(&out, "group_id"), "from-file");
    assert_eq!(field(&out, "brokers"), "file:9092");
    assert_eq!(field(&out, "dlq_topic"), "survey-responses-dlq", "default");
    // Environment over the file.
    let out = run(
        &[],
        &[
            ("NPS_GROUP_ID", "from-env"),
            ("NPS_INPUT_TOPIC", "env-input"),
            ("NPS_KAFKA_PROPERTIES", "client.id=env-client;linger.ms=7"),
        ],
    );
    assert_eq!(field(&out, "group_id"), "from-env");
    assert_eq!(field(&out, "input_topic"), "env-input");
    assert_eq!(field(&out, "alerts_topic"), "file-alerts");
    assert!(out.contains(r#""client.id": "env-client""#), "{out}");
    assert!(out.contains(r#""linger.ms": "7""#), "{out}");
    assert!(
        out.contains(r#""socket.timeout.ms": "11111""#),
        "file key kept: {out}"
    );
    // Flags over the environment.
    let out = run(
        &["--group-id", "from-flag"],
        &[
            ("NPS_GROUP_ID", "from-env"),
            ("NPS_INPUT_TOPIC", "env-input"),
        ],
    );
    assert_eq!(field(&out, "group_id"), "from-flag");
    assert_eq!(field(&out, "input_topic"), "env-input");
    std::fs::remove_file(&file).ok();
}

/// `--log-format json`: one JSON object per line, with level, message and
/// structured fields.
#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let _heavy = heavy();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dead = format!("127.0.0.1:{}", free_port());
    let mut svc = Service::start(
        &[
            "run",
            "--brokers",
            &dead,
            "--metrics-addr",
            &addr,
            "--log-format",
            "json",
        ],
        port,
        "json-logs",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while svc.status("/healthz") != Some(200) {
        assert!(std::time::Instant::now() < deadline, "{}", svc.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(svc.terminate(Duration::from_secs(30)).success());
    let logs = svc.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{logs}");
    let mut messages = Vec::new();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(v["timestamp"].is_string(), "{line}");
        messages.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(
        messages.iter().any(|m| m.starts_with("serving /metrics")),
        "{messages:?}"
    );
}

/// `send` exits 2 when deliveries fail (here: no broker, short timeout),
/// 1 when lines were skipped, 0 when all went.
#[test]
fn send_exit_codes_tell_failed_deliveries_from_skipped_lines() {
    let _heavy = heavy();
    let file = std::env::temp_dir().join(format!("nps-send-exit-{}.jsonl", rand_suffix()));
    let good = r#"{"responseId":"x-1","product":"P","region":"R","channel":"CHANNEL_WEB","score":9,"respondedAt":"2025-01-01T00:00:00Z"}"#;
    std::fs::write(&file, format!("{good}\nnot json\n")).unwrap();
    let send = |brokers: &str| {
        std::process::Command::new(BIN)
            .args(["send", "--brokers", brokers, "-f"])
            .arg(&file)
            .args(["-X", "message.timeout.ms=2000"])
            .output()
            .unwrap()
    };
    let dead = format!("127.0.0.1:{}", free_port());
    let out = send(&dead);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 deliveries failed"));
    let (_cluster, brokers) = cluster();
    let out = send(&brokers);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&file, format!("{good}\n")).unwrap();
    assert_eq!(send(&brokers).status.code(), Some(0));
    std::fs::remove_file(&file).ok();
}

/// SIGINT (Ctrl-C) stops the service like SIGTERM: it finishes, commits
/// everything it did and exits 0.
#[test]
fn sigint_stops_like_sigterm_with_everything_committed() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let data = dataset(800, now_ms(), "int");
    produce(&brokers, &good_records(&data));
    let mut svc = Service::run(&brokers, "g-int", QUICK_REJOIN, "sigint");
    svc.wait_for("all consumed", Duration::from_secs(60), |m| {
        consumed(m) == data.len() as f64
    });
    let status = svc.signal("INT", Duration::from_secs(30));
    assert!(status.success(), "exit {status}:\n{}", svc.logs());
    assert!(
        svc.logs().contains("signal=\"SIGINT\"") || svc.logs().contains("signal=SIGINT"),
        "{}",
        svc.logs()
    );
    let (committed, ends) = committed_and_end(&brokers, "g-int", 4);
    assert_eq!(committed, ends);
}

/// `send --generate` under SIGTERM (as `docker compose stop` sends it):
/// it stops producing, flushes what it queued, says how many went, exits
/// 0, and exactly that many records are on the topic.
#[test]
fn send_flushes_and_exits_cleanly_on_sigterm() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let mut child = generate_feed(&brokers, 300, 400);
    // SIGTERM once the history and some live answers are on the topic.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while topic_end_total(&brokers, INPUT) <= 320 {
        assert!(
            std::time::Instant::now() < deadline,
            "send wrote too little"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "send did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(err.contains("stopped by signal"), "{err}");
    let sent: usize = err
        .split("sent ")
        .filter_map(|s| s.split(' ').next()?.parse().ok())
        .last()
        .unwrap_or_else(|| panic!("{err}"));
    assert!(sent > 300, "history and some live answers: {sent}");
    let on_topic = read_topic(&brokers, INPUT, usize::MAX, Duration::from_secs(5));
    assert_eq!(on_topic.len(), sent, "{err}");
}

#[test]
fn customer_data_markers_catch_the_datasets_ids_and_comments() {
    // The check every Service runs on its logs when dropped finds what
    // the datasets put in: a leak could not pass unnoticed.
    let m = dataset(10, now_ms(), "mk");
    let leaked = format!("{:?}", m.iter().map(|(r, _)| r).collect::<Vec<_>>());
    assert!(customer_data_in(&leaked).contains(&"cust-"));
    assert!(customer_data_in(&leaked).contains(&"queja "));
    let mut demo = nps_stream::generator::Generator::new(1, "x");
    let answers: Vec<SurveyResponse> = (0..200)
        .filter_map(|_| SurveyResponse::decode(demo.history(now_ms()).1.as_slice()).ok())
        .collect();
    let found = customer_data_in(&format!("{answers:?}"));
    assert!(found.contains(&"cli-"), "{found:?}");
    assert!(found.len() >= 3, "the demo's comments: {found:?}");
    assert!(customer_data_in("partitions assigned partitions=[0, 1]").is_empty());
}

/// Commits `offset` for every input partition of `group`, as a group
/// whose log was truncated or recreated would have.
fn commit_offsets(brokers: &str, group: &str, offset: i64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset(INPUT, p, Offset::Offset(offset))
            .unwrap();
    }
    c.commit(&tpl, rdkafka::consumer::CommitMode::Sync).unwrap();
}

/// README: "A position found beyond the end of its log (a topic recreated
/// or truncated) starts again from `--auto-offset-reset`". The group's
/// commits point far past the end of a fresh log. With `earliest` every
/// record is read live (counted and alerted: none of them was processed
/// before), not replayed silently nor waited for up to the old offset;
/// with `latest` none of those already there is read, only what comes
/// next.
#[test]
fn a_committed_offset_beyond_the_log_starts_again_from_auto_offset_reset() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let now = now_ms();
    let data = dataset(400, now, "oor");
    produce(&brokers, &good_records(&data));

    commit_offsets(&brokers, "g-oor-earliest", 1_000_000);
    let mut svc = Service::run(
        &brokers,
        "g-oor-earliest",
        &["--auto-offset-reset", "earliest"],
        "oor-earliest",
    );
    wait_committed(&brokers, "g-oor-earliest", 4, Duration::from_secs(90), &svc);
    wait_windows(&mut svc, &data, Duration::from_secs(15));
    let m = svc.wait_for("ready", Duration::from_secs(10), |m| {
        m.get("nps_ready", &[]) == Some(1.0)
    });
    assert_eq!(consumed(&m), data.len() as f64, "read live");
    assert_eq!(m.get("nps_state_replayed_total", &[]).unwrap_or(0.0), 0.0);
    assert_eq!(m.get("nps_offset_resets_total", &[]), Some(4.0));
    let detractors = detractor_ids(&data);
    assert_eq!(
        m.sum("nps_detractor_alerts_total", &[]),
        detractors.len() as f64
    );
    let alerted: BTreeSet<String> = alerts_by_response(&brokers, detractors.len())
        .into_keys()
        .collect();
    assert_eq!(alerted, detractors);
    assert!(svc.terminate(Duration::from_secs(30)).success());

    commit_offsets(&brokers, "g-oor-latest", 1_000_000);
    let mut svc = Service::run(
        &brokers,
        "g-oor-latest",
        &["--auto-offset-reset", "latest"],
        "oor-latest",
    );
    svc.wait_for("partitions reset", Duration::from_secs(60), |m| {
        m.get("nps_assigned_partitions", &[]) == Some(4.0)
            && m.get("nps_offset_resets_total", &[]) == Some(4.0)
            && m.get("nps_ready", &[]) == Some(1.0)
    });
    // The end positions are resolved as fetching starts, and a record
    // written before that is skipped with the rest: probe rounds of 40
    // answers (every partition) until one round is counted in full.
    let mut probes = 0.0;
    let mut before = 0.0;
    for round in 0.. {
        assert!(round < 30, "no probe round counted in full");
        let probe = dataset(40, now, &format!("oor-probe-{round}"));
        produce(&brokers, &good_records(&probe));
        probes += probe.len() as f64;
        let full = before + probe.len() as f64;
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let mut counted = before;
        while counted < full && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            counted = consumed(&svc.metrics().expect("metrics"));
        }
        before = counted;
        if counted >= full {
            break;
        }
    }
    // Every partition is read to its end: nothing of the probes is left.
    wait_committed(&brokers, "g-oor-latest", 4, Duration::from_secs(60), &svc);
    let before = consumed(&svc.metrics().expect("metrics"));
    assert!(before <= probes, "only probes counted so far: {before}");
    let later = dataset(40, now, "oor-later");
    produce(&brokers, &good_records(&later));
    wait_committed(&brokers, "g-oor-latest", 4, Duration::from_secs(60), &svc);
    let m = svc.wait_for("the later ones counted", Duration::from_secs(15), |m| {
        m.sum("nps_responses_total", &[]) == before + later.len() as f64
    });
    assert_eq!(
        consumed(&m),
        before + later.len() as f64,
        "none of the 400 before"
    );
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// The cardinality guard: with room for fewer segments than the data has,
/// every response of a segment left out is counted under `__other__` and
/// in `nps_cardinality_overflow_total`, exactly.
#[test]
fn segments_past_max_keys_are_counted_as_overflow_exactly() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let data = dataset(600, now_ms(), "ovf");
    produce(&brokers, &good_records(&data));
    let mut svc = Service::run(&brokers, "g-ovf", &["--max-keys", "3"], "overflow");
    // The per-segment counters are published with the next refresh.
    let m = svc.wait_for("all consumed and published", Duration::from_secs(60), |m| {
        consumed(m) == data.len() as f64 && m.sum("nps_responses_total", &[]) == data.len() as f64
    });
    let admitted: BTreeSet<(String, String)> = m
        .series("nps_responses_total")
        .into_iter()
        .map(|l| (l["product"].clone(), l["region"].clone()))
        .filter(|(p, _)| p != "__other__")
        .collect();
    let segments: BTreeSet<(String, String)> = data
        .iter()
        .map(|(r, _)| (r.product.clone(), r.region.clone()))
        .collect();
    assert_eq!(segments.len(), 6);
    // Exactly max_keys real segments (which three depends on the order
    // the partitions were read in).
    assert_eq!(admitted.len(), 3, "{admitted:?}");
    assert!(admitted.is_subset(&segments));
    let left_out = data
        .iter()
        .filter(|(r, _)| !admitted.contains(&(r.product.clone(), r.region.clone())))
        .count() as f64;
    assert!(left_out > 0.0);
    assert_eq!(m.get("nps_cardinality_overflow_total", &[]), Some(left_out));
    assert_eq!(
        m.sum("nps_responses_total", &[("product", "__other__")]),
        left_out
    );
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// Everything after SIGTERM fits in `--shutdown-timeout`: here the broker
/// stops answering in time (every request takes 30 s) just before the
/// signal, so the final commit and the group leave would hang; the
/// process still ends within the bound, with nothing committed past what
/// was done (the next owner redoes the rest).
#[test]
fn a_broker_that_stops_answering_does_not_hold_the_stop_past_shutdown_timeout() {
    let _heavy = heavy();
    let (cluster, brokers) = cluster();
    let data = dataset(200, now_ms(), "slow");
    produce(&brokers, &good_records(&data));
    let mut args = QUICK_REJOIN.to_vec();
    args.extend(["--shutdown-timeout", "3s"]);
    let mut svc = Service::run(&brokers, "g-slow", &args, "slow");
    svc.wait_for("every answer read", Duration::from_secs(60), |m| {
        consumed(m) == data.len() as f64
    });
    cluster
        .broker_round_trip_time(1, Duration::from_secs(30))
        .unwrap();
    assert_stops_within(&mut svc, Duration::from_secs(3));
}

/// docs/configuration.md: a file named by `--restart-on-change` (a mounted
/// password or CA) that changes stops the service in order, exit status 0,
/// with its work committed, so that its supervisor starts it again with the
/// new content; while the file stays the same it keeps running.
#[test]
fn a_watched_file_that_changes_stops_the_service_in_order() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let data = dataset(200, now_ms(), "rotate");
    produce(&brokers, &good_records(&data));
    let dir = std::env::temp_dir().join(format!("nps-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let password = dir.join("password");
    std::fs::write(&password, "first").unwrap();
    let mut args = QUICK_REJOIN.to_vec();
    let watched = password.to_str().unwrap().to_string();
    args.extend(["--restart-on-change", &watched]);
    let mut svc = Service::run(&brokers, "g-rotate", &args, "rotate");
    svc.wait_for("every answer read", Duration::from_secs(60), |m| {
        consumed(m) == data.len() as f64
    });
    // Rewritten with the same content: not a change.
    std::fs::write(&password, "first").unwrap();
    std::thread::sleep(Duration::from_secs(12));
    assert!(
        svc.metrics().is_some(),
        "stopped without a change:\n{}",
        svc.logs()
    );
    std::fs::write(&password, "second").unwrap();
    let (status, logs) = svc.exit_within(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(logs.contains("--restart-on-change"), "{logs}");
    let (committed, end) = committed_and_end(&brokers, "g-rotate", 4);
    assert_eq!(committed, end, "work committed before the stop");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// README: on SIGTERM the service waits for pending deliveries at most
/// `--shutdown-timeout`, whatever the broker does. Here every write is
/// refused, so alerts stay pending: it must still exit within the bound,
/// having committed nothing past the first undelivered alert.
#[test]
fn shutdown_is_bounded_by_shutdown_timeout_while_the_broker_refuses_writes() {
    let _heavy = heavy();
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (cluster, brokers) = cluster();
    let data = dataset(400, now_ms(), "bound");
    produce(&brokers, &good_records(&data));
    let first_detractor = first_delivery_offsets(&brokers, &data);
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 1_000_000],
    );
    let mut args = QUICK_REJOIN.to_vec();
    args.extend(["--shutdown-timeout", "3s"]);
    let mut svc = Service::run(&brokers, "g-bound", &args, "bound");
    svc.wait_for(
        "deliveries refused and retried",
        Duration::from_secs(60),
        |m| {
            consumed(m) == data.len() as f64
                && m.get("nps_delivery_retries_total", &[]).unwrap_or(0.0) > 0.0
        },
    );
    assert_stops_within(&mut svc, Duration::from_secs(3));
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    assert_committed_at(&brokers, "g-bound", &first_detractor);
}

/// README, Input: the schema id may come in a `__value_schema_id` header
/// (the payload is then plain protobuf); a malformed one is refused as
/// `invalid_framing`. Payloads are limited to 1 MiB by default: exactly
/// 1 MiB is read, one byte more is refused as `payload_too_large`.
#[test]
fn schema_id_header_and_the_one_mib_payload_limit_end_to_end() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let now = now_ms();
    let good = dataset(3, now, "hdr");
    // A valid response padded with an unknown field (number 99, bytes) to
    // exactly `size` bytes: decoders skip unknown fields.
    let padded = |r: &SurveyResponse, size: usize| -> Vec<u8> {
        let mut bytes = r.encode_to_vec();
        let tag = [0x9a, 0x06]; // field 99, wire type 2
        let mut len = size - bytes.len() - tag.len() - 3;
        loop {
            let mut varint = Vec::new();
            prost::encoding::encode_varint(len as u64, &mut varint);
            let total = bytes.len() + tag.len() + varint.len() + len;
            if total == size {
                bytes.extend_from_slice(&tag);
                bytes.extend_from_slice(&varint);
                bytes.extend(std::iter::repeat_n(b'x', len));
                return bytes;
            }
            len = (len as i64 + size as i64 - total as i64) as usize;
        }
    };
    const MIB: usize = 1024 * 1024;
    type Raw<'a> = (Vec<u8>, &'a str, Option<&'a [u8]>);
    let records: Vec<Raw> = vec![
        (
            good[0].0.encode_to_vec(),
            "with-header",
            Some(&[0, 0, 0, 0, 7][..]),
        ),
        (good[1].0.encode_to_vec(), "bad-header", Some(&[0, 1][..])),
        (padded(&good[2].0, MIB), "one-mib", None),
        (padded(&good[2].0, MIB + 1), "one-mib-and-a-byte", None),
    ];
    assert_eq!(records[2].0.len(), MIB);
    assert_eq!(records[3].0.len(), MIB + 1);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.max.bytes", "4000000")
        .create()
        .unwrap();
    for (payload, key, header) in &records {
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(INPUT)
            .key(key.as_bytes())
            .payload(payload.as_slice())
            .partition(0);
        if let Some(h) = header {
            r = r.headers(OwnedHeaders::new().insert(Header {
                key: "__value_schema_id",
                value: Some(*h),
            }));
        }
        producer.send(r).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let mut svc = Service::run(&brokers, "g-hdr", &[], "schema-header");
    svc.wait_for("all four consumed", Duration::from_secs(60), |m| {
        consumed(m) == 4.0 && m.sum("nps_events_rejected_total", &[]) == 2.0
    });
    // The two accepted ones (per-segment counters follow within a refresh).
    let m = svc.wait_for("two counted", Duration::from_secs(10), |m| {
        m.sum("nps_responses_total", &[]) >= 2.0
    });
    assert_eq!(
        m.sum("nps_responses_total", &[]),
        2.0,
        "header one and 1 MiB one"
    );
    assert_eq!(
        m.get(
            "nps_events_rejected_total",
            &[("reason", "invalid_framing")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "nps_events_rejected_total",
            &[("reason", "payload_too_large")]
        ),
        Some(1.0)
    );
    let dead = read_topic(&brokers, DLQ, 2, Duration::from_secs(30));
    let reasons: BTreeMap<String, String> = dead
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                r.header("nps.dlq.reason").unwrap(),
            )
        })
        .collect();
    assert_eq!(reasons["bad-header"], "invalid_framing");
    assert_eq!(reasons["one-mib-and-a-byte"], "payload_too_large");
    assert_eq!(reasons.len(), 2);
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// README: `/readyz` is 503 while partitions restore, and the restore is
/// reported. A process killed after committing 120,000 records that its
/// last snapshot does not hold replays them on restart: sampled all along,
/// /readyz never says 200 before the last sample that still shows a
/// partition restoring, and some samples do.
#[test]
fn readyz_is_503_while_partitions_restore_and_the_restore_is_reported() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let now = now_ms();
    let data = dataset(121_000, now, "rz");
    let (batch1, batch2) = data.split_at(1_000);
    snapshot_behind_the_commit(&brokers, "g-readyz", batch1, batch2);

    let started = std::time::Instant::now();
    let svc = Service::run(&brokers, "g-readyz", RARE_SNAPSHOTS, "readyz-3");
    let mut samples: Vec<(Option<u16>, f64)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ready = svc.status("/readyz");
        let m = svc.metrics().unwrap_or_default();
        let restoring = m.get("nps_state_restoring_partitions", &[]).unwrap_or(0.0);
        samples.push((ready, restoring));
        if ready == Some(200)
            && m.get("nps_state_restores_total", &[("from", "snapshot")]) == Some(4.0)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", svc.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    // A few more samples once ready: it stays ready, nothing restores.
    for _ in 0..10 {
        let ready = svc.status("/readyz");
        let restoring = svc
            .metrics()
            .and_then(|m| m.get("nps_state_restoring_partitions", &[]))
            .unwrap_or(0.0);
        samples.push((ready, restoring));
        std::thread::sleep(Duration::from_millis(50));
    }
    let restoring_seen = samples.iter().filter(|(_, r)| *r > 0.0).count();
    assert!(
        restoring_seen > 0,
        "never caught a partition restoring: {samples:?}"
    );
    let first_ready = samples.iter().position(|(s, _)| *s == Some(200)).unwrap();
    let last_restoring = samples.iter().rposition(|(_, r)| *r > 0.0).unwrap();
    assert!(
        last_restoring < first_ready,
        "ready at sample {first_ready} while restoring at {last_restoring}: {samples:?}"
    );
    let m = svc.metrics().unwrap();
    assert_eq!(
        m.get("nps_state_replayed_total", &[]),
        Some(batch2.len() as f64)
    );
    assert_eq!(m.get("nps_state_restoring_partitions", &[]), Some(0.0));
    // Assign → live of the last partition: some time, and no longer than
    // the process has run.
    let last = m.get("nps_state_last_restore_seconds", &[]).unwrap();
    assert!(
        last > 0.0 && last <= started.elapsed().as_secs_f64(),
        "{last} s"
    );
    assert_eq!(
        m.sum("nps_detractor_alerts_total", &[]),
        0.0,
        "no alerts on replay"
    );
    let mut svc = svc;
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// README: "A snapshot is written only once every alert and dead letter
/// of the records it covers is acknowledged." The alerts topic has no
/// leader for a while (its writes wait), the state topic is fine: no
/// snapshot is written in that time, though one is due every second; once
/// the alerts go out, snapshots follow.
#[test]
fn no_snapshot_is_written_before_its_alerts_are_acknowledged() {
    let _heavy = heavy();
    let (cluster, brokers) = cluster();
    let data = dataset(400, now_ms(), "snapack");
    produce(&brokers, &good_records(&data));
    cluster.partition_leader(ALERTS, 0, None).unwrap();
    let mut svc = Service::run(&brokers, "g-snapack", FAST_SNAPSHOTS, "snapack");
    let ok = |m: &Metrics| {
        m.get("nps_snapshots_written_total", &[("result", "ok")])
            .unwrap_or(0.0)
    };
    svc.wait_for("all read, alerts waiting", Duration::from_secs(60), |m| {
        consumed(m) == data.len() as f64
            && m.get("nps_pending_deliveries", &[]).unwrap_or(0.0) > 0.0
    });
    // Every partition has a detractor early on, so every partition's
    // snapshot waits. Several snapshot intervals go by.
    let firsts = first_detractor_offsets(&brokers, &data);
    assert_eq!(firsts.len(), 4);
    let before = ok(&svc.metrics().unwrap());
    std::thread::sleep(Duration::from_secs(4));
    let m = svc.metrics().unwrap();
    assert_eq!(
        ok(&m),
        before,
        "a snapshot was written with its alerts pending"
    );
    assert!(m.get("nps_pending_deliveries", &[]).unwrap_or(0.0) > 0.0);
    // Meanwhile the group's offsets stay behind the undelivered alerts,
    // and nps_consumer_lag says by how much: the partition's end minus its
    // committed offset, as the broker reports both.
    let (committed, ends) = committed_and_end(&brokers, "g-snapack", 4);
    let lag_of = |m: &Metrics, p: usize| {
        m.get(
            "nps_consumer_lag",
            &[("topic", INPUT), ("partition", &p.to_string())],
        )
    };
    let m = svc.wait_for("the lag of each partition", Duration::from_secs(10), |m| {
        (0..4).all(|p| match (committed[p], ends[p]) {
            (Offset::Offset(c), Offset::Offset(e)) => lag_of(m, p) == Some((e - c) as f64),
            _ => true,
        })
    });
    let behind: f64 = (0..4)
        .filter(|p| matches!(committed[*p], Offset::Offset(_)))
        .filter_map(|p| lag_of(&m, p))
        .sum();
    assert!(behind > 0.0, "no partition behind: {committed:?} {ends:?}");

    cluster.partition_leader(ALERTS, 0, Some(1)).unwrap();
    svc.wait_for(
        "alerts delivered and snapshots written",
        Duration::from_secs(60),
        |m| m.get("nps_pending_deliveries", &[]) == Some(0.0) && ok(m) >= before + 4.0,
    );
    let detractors = detractor_ids(&data);
    let alerts = alerts_by_response(&brokers, detractors.len());
    assert_eq!(alerts.len(), detractors.len());
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// README: "The producer is idempotent; if it fails fatally ... it is
/// replaced and what it held is sent again." The broker answers a produce
/// with an out-of-order sequence, which is fatal to an idempotent
/// producer: the producer is renewed and every alert still arrives.
#[test]
fn a_fatal_producer_error_renews_the_producer_and_resends_its_alerts() {
    let _heavy = heavy();
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (cluster, brokers) = cluster();
    let data = dataset(300, now_ms(), "fatal");
    produce(&brokers, &good_records(&data));
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    let mut svc = Service::run(&brokers, "g-fatal", QUICK_REJOIN, "fatal");
    let m = svc.wait_for("renewed and delivered", Duration::from_secs(90), |m| {
        consumed(m) == data.len() as f64
            && m.get("nps_producer_renewals_total", &[]).unwrap_or(0.0) >= 1.0
            && m.get("nps_pending_deliveries", &[]) == Some(0.0)
    });
    assert!(m.get("nps_producer_renewals_total", &[]).unwrap() >= 1.0);
    let detractors = detractor_ids(&data);
    let alerts = alerts_by_response(&brokers, detractors.len());
    let alerted: BTreeSet<String> = alerts.keys().cloned().collect();
    assert_eq!(alerted, detractors, "every detractor has an alert");
    wait_committed(&brokers, "g-fatal", 4, Duration::from_secs(60), &svc);
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// More members than input partitions: the idle one holds nothing, yet it
/// is in the group, restores nothing and sees the brokers, so it is ready
/// (a rollout with more replicas than partitions completes, and
/// NpsStreamNotReady stays quiet), as is the one that works.
#[test]
fn an_idle_member_with_no_partition_is_ready() {
    let _heavy = heavy();
    let c = Cluster::new();
    c.create_topic(INPUT, 1, 1).unwrap();
    c.create_topic(ALERTS, 1, 1).unwrap();
    c.create_topic(DLQ, 1, 1).unwrap();
    let brokers = c.bootstrap_servers();
    let data = dataset(50, now_ms(), "idle");
    produce(&brokers, &good_records(&data));
    let mut a = Service::run(&brokers, "g-idle", QUICK_REJOIN, "idle-a");
    a.wait_for("a has the partition", Duration::from_secs(60), |m| {
        m.get("nps_assigned_partitions", &[]) == Some(1.0)
    });
    let mut b = Service::run(&brokers, "g-idle", QUICK_REJOIN, "idle-b");
    // b joins (the group rebalances); one of the two ends up idle.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let (busy, idle) = loop {
        let (ma, mb) = (
            a.metrics().unwrap_or_default(),
            b.metrics().unwrap_or_default(),
        );
        let pa = ma.get("nps_assigned_partitions", &[]).unwrap_or(-1.0);
        let pb = mb.get("nps_assigned_partitions", &[]).unwrap_or(-1.0);
        let joined = b.logs().contains("partitions assigned");
        if joined && pa + pb == 1.0 && pa >= 0.0 && pb >= 0.0 {
            break if pa == 1.0 {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stable assignment:\n{}\n{}",
            a.logs(),
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let m = idle.wait_for("the idle member ready", Duration::from_secs(30), |m| {
        m.get("nps_ready", &[]) == Some(1.0)
    });
    assert_eq!(m.get("nps_assigned_partitions", &[]), Some(0.0));
    assert_eq!(idle.status("/readyz"), Some(200), "{}", idle.logs());
    busy.wait_for("the busy member ready", Duration::from_secs(30), |m| {
        m.get("nps_ready", &[]) == Some(1.0)
    });
    assert_eq!(busy.status("/readyz"), Some(200));
    assert!(idle.terminate(Duration::from_secs(30)).success());
    assert!(busy.terminate(Duration::from_secs(30)).success());
}

/// README: a snapshot larger than the state topic's limit is not written
/// (`nps_snapshots_written_total{result="too_large"}`), and the partition
/// is rebuilt by replay when it moves. With `--snapshot-max-bytes 1024`
/// every partition's state (100 answers, their dedup ids) is over it.
#[test]
fn a_snapshot_over_the_limit_is_counted_too_large_and_the_partition_rebuilt() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let data = dataset(400, now_ms(), "big-state");
    produce(&brokers, &good_records(&data));
    let small = [
        "-X",
        "session.timeout.ms=6000",
        "--snapshot-interval",
        "1s",
        "--snapshot-max-bytes",
        "1024",
    ];
    let mut svc = Service::run(&brokers, "g-toolarge", &small, "toolarge-1");
    let m = svc.wait_for(
        "snapshots refused as too large",
        Duration::from_secs(60),
        |m| {
            consumed(m) == data.len() as f64
                && m.get("nps_snapshots_written_total", &[("result", "too_large")])
                    .unwrap_or(0.0)
                    >= 4.0
        },
    );
    assert_eq!(
        m.get("nps_snapshots_written_total", &[("result", "ok")])
            .unwrap_or(0.0),
        0.0
    );
    wait_committed(&brokers, "g-toolarge", 4, Duration::from_secs(60), &svc);
    assert!(svc.terminate(Duration::from_secs(30)).success());
    assert!(
        svc.logs()
            .contains("snapshot larger than --snapshot-max-bytes")
    );

    // No snapshot to restore: the next owner rebuilds every partition from
    // its earliest input, without alerts, to the same windows.
    let mut svc = Service::run(&brokers, "g-toolarge", QUICK_REJOIN, "toolarge-2");
    let m = svc.wait_for("rebuilt", Duration::from_secs(60), |m| {
        m.get("nps_state_restores_total", &[("from", "rebuild")]) == Some(4.0)
            && m.get("nps_state_restoring_partitions", &[]) == Some(0.0)
    });
    assert_eq!(
        m.get("nps_state_replayed_total", &[]),
        Some(data.len() as f64)
    );
    wait_windows(&mut svc, &data, Duration::from_secs(10));
    assert_eq!(
        svc.metrics()
            .unwrap()
            .sum("nps_detractor_alerts_total", &[]),
        0.0
    );
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// The shutdown bound holds even when the producer's own queue is full:
/// the alerts topic has no leader, so alerts pile up in a queue of ten
/// (`queue.buffering.max.messages=10`) and the next one cannot even be
/// queued. SIGTERM must still end the process within the bound, with
/// nothing committed past the first undelivered alert.
#[test]
fn shutdown_is_bounded_when_the_producer_queue_is_full() {
    let _heavy = heavy();
    let (cluster, brokers) = cluster();
    let data = dataset(400, now_ms(), "qfull");
    produce(&brokers, &good_records(&data));
    let first_detractor = first_detractor_offsets(&brokers, &data);
    cluster.partition_leader(ALERTS, 0, None).unwrap();
    cluster.partition_leader(ALERTS, 1, None).unwrap();
    let mut args = QUICK_REJOIN.to_vec();
    args.extend([
        "--shutdown-timeout",
        "3s",
        "-X",
        "queue.buffering.max.messages=10",
    ]);
    let mut svc = Service::run(&brokers, "g-qfull", &args, "qfull");
    // Reading starts; within a few detractors the queue is full and
    // reading stands still.
    svc.wait_for("reading under way", Duration::from_secs(60), |m| {
        consumed(m) > 0.0
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = consumed(&svc.metrics().unwrap());
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = consumed(&svc.metrics().unwrap());
        if now == last && now < data.len() as f64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reading never stood still: {now} of {}",
            data.len()
        );
        last = now;
    }
    let asked = std::time::Instant::now();
    let status = svc.terminate(Duration::from_secs(60));
    let took = asked.elapsed();
    assert!(
        took < Duration::from_millis(3_000 + 1_500),
        "took {took:?} for a 3 s bound ({status}):\n{}",
        svc.logs()
    );
    assert_eq!(status.code(), Some(0), "{}", svc.logs());
    assert_not_committed_past(&brokers, "g-qfull", &first_detractor);
}

/// Bad input at the edges, through the service: a record with 3,000
/// headers and one with a 1 MiB header value (too large to dead-letter
/// with its headers). Both are refused with their reasons and
/// dead-lettered, nothing stalls: the good record after them is counted
/// and every offset committed.
#[test]
fn records_with_thousands_of_headers_or_a_huge_header_are_dead_lettered_without_stalling() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let good = dataset(1, now_ms(), "edge").remove(0).0;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.max.bytes", "4000000")
        .create()
        .unwrap();
    let many = (0..3_000).fold(OwnedHeaders::new(), |h, i| {
        h.insert(Header {
            key: &format!("h-{i}"),
            value: Some("v"),
        })
    });
    let huge_value = vec![b'x'; 1 << 20];
    let huge = OwnedHeaders::new().insert(Header {
        key: "x-huge",
        value: Some(huge_value.as_slice()),
    });
    let good_bytes = good.encode_to_vec();
    let records: Vec<(&str, &[u8], OwnedHeaders)> = vec![
        ("many-headers", b"\xff\xfe garbage", many),
        ("huge-header", b"\xff\xfe garbage", huge),
        ("good", good_bytes.as_slice(), OwnedHeaders::new()),
    ];
    for (key, payload, headers) in records {
        producer
            .send(
                BaseRecord::to(INPUT)
                    .key(key)
                    .payload(payload)
                    .headers(headers)
                    .partition(0),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let mut svc = Service::run(&brokers, "g-edge", &[], "edge");
    // Everything went to partition 0: it is committed to its end.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while committed_and_end(&brokers, "g-edge", 1)
        != (vec![Offset::Offset(3)], vec![Offset::Offset(3)])
    {
        assert!(
            std::time::Instant::now() < deadline,
            "stalled:\n{}",
            svc.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let m = svc.wait_for("the good one counted", Duration::from_secs(15), |m| {
        m.sum("nps_responses_total", &[]) == 1.0
    });
    assert_eq!(consumed(&m), 3.0);
    assert_eq!(
        m.get("nps_events_rejected_total", &[("reason", "undecodable")]),
        Some(2.0)
    );
    let dead = read_topic(&brokers, DLQ, 2, Duration::from_secs(30));
    let by_key: BTreeMap<Vec<u8>, &common::Record> =
        dead.iter().map(|r| (r.key.clone().unwrap(), r)).collect();
    assert_eq!(by_key.len(), 2);
    for key in [&b"many-headers"[..], b"huge-header"] {
        let r = by_key[key];
        assert_eq!(r.header("nps.dlq.reason").as_deref(), Some("undecodable"));
    }
    // The huge one could not keep its headers nor its value; it says so.
    let huge = by_key[&b"huge-header"[..]];
    assert_eq!(huge.header("x-huge"), None);
    assert_eq!(
        huge.header("nps.value-dropped").as_deref(),
        Some("too_large")
    );
    assert_eq!(
        huge.header("nps.headers-dropped").as_deref(),
        Some("too_large")
    );
    // The one with many headers kept them all.
    assert_eq!(
        by_key[&b"many-headers"[..]].header("h-2999").as_deref(),
        Some("v")
    );
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// Sends SIGTERM and checks the process ends within `bound` (plus 1.5 s
/// for the signal and the exit), with status 0.
fn assert_stops_within(svc: &mut Service, bound: Duration) {
    let asked = std::time::Instant::now();
    let status = svc.terminate(bound + Duration::from_secs(60));
    let took = asked.elapsed();
    assert!(
        took < bound + Duration::from_millis(1_500),
        "took {took:?} for a {bound:?} bound:\n{}",
        svc.logs()
    );
    assert_eq!(status.code(), Some(0), "{}", svc.logs());
}
