//! What each fuzz target checks. Shared with the test suite
//! (tests/fuzz_seeds.rs includes this file and runs every committed seed
//! through it on the stable toolchain), so a finding, once its input is
//! in `fuzz/seeds/`, is a regression test of the ordinary suite.
//!
//! Beyond "no panic", each target checks an invariant: what is accepted
//! re-encodes to something accepted the same way; what is refused is
//! refused with a named reason and changes nothing.

use nps_stream::alerts::{self, AlertFormat, AlertPolicy};
use nps_stream::cases::{AlertIn, Applied, CaseConfig, Tracker, event::decode_event};
use nps_stream::config::Settings;
use nps_stream::engine::{Engine, EngineConfig, Outcome};
use nps_stream::pb::{self, DetractorAlert, SurveyResponse};
use nps_stream::schema::{self, Limits, Reason};
use prost::Message;

use crate::input::{self, NOW_MS};

/// The partition and topic snapshots are restored for.
pub const PARTITION: i32 = 3;
pub const TOPIC: &str = "survey-responses";

/// A Kafka record (value and headers) through framing detection, decode
/// and validation, then, when valid, through the engine and the alert.
pub fn survey_payload(data: &[u8]) {
    let rec = input::parse(data);
    let limits = Limits::default();
    let valid = match schema::decode_and_validate(
        rec.payload,
        rec.headers.iter().copied(),
        NOW_MS,
        &limits,
    ) {
        Ok(v) => v,
        Err(rejection) => {
            // Named, and one of the closed set of metric labels.
            let reason = rejection.reason();
            assert!(Reason::ALL.contains(&reason));
            assert!(!rejection.to_string().is_empty());
            return;
        }
    };
    // Re-encoded plainly, and in Confluent framing, it is the same answer.
    let plain = valid.msg.encode_to_vec();
    let again = schema::decode_and_validate(Some(&plain), [], NOW_MS, &limits);
    assert_eq!(again.as_ref(), Ok(&valid), "plain re-encoding");
    let mut framed = vec![0, 0, 0, 0, 7, 0];
    framed.extend_from_slice(&plain);
    let again = schema::decode_and_validate(Some(&framed), [], NOW_MS, &limits);
    assert_eq!(again.as_ref(), Ok(&valid), "confluent re-encoding");

    // Counted once under its segment, then a duplicate.
    let mut engine = Engine::new(&EngineConfig::default()).expect("default engine");
    let obs = valid.observation();
    let (key, late) = match engine.record(0, &obs, NOW_MS) {
        Outcome::Counted(c, _) => {
            assert_eq!(c.category, valid.category);
            (c.key, c.late)
        }
        // A version with updated_at and nothing remembered of it.
        Outcome::RevisionAfterHorizon => {
            assert!(valid.updated_at_ms.is_some());
            return;
        }
        other => panic!("first sight: {other:?}"),
    };
    assert_eq!(engine.record(0, &obs, NOW_MS), Outcome::Duplicate);
    assert_eq!(
        engine.segment_name(key),
        Some((valid.msg.product.as_str(), valid.msg.region.as_str()))
    );

    // Its alert encodes and decodes back in both formats.
    let stats = engine.segment_stats(key, NOW_MS);
    let specs = engine.layout().specs();
    let windows: Vec<_> = specs.iter().zip(stats).collect();
    let alert = alerts::build(
        &valid,
        &windows,
        &alerts::Context {
            late,
            ..Default::default()
        },
        NOW_MS,
        &AlertPolicy::default(),
    );
    assert_eq!(alert.alert_id, alerts::alert_id(&valid.msg.response_id));
    let (bytes, _) = alerts::encode(&alert, AlertFormat::Protobuf);
    let back = DetractorAlert::decode(bytes.as_slice()).expect("own protobuf alert decodes");
    assert_eq!(back, alert);
    let (json, _) = alerts::encode(&alert, AlertFormat::Json);
    let back: DetractorAlert = serde_json::from_slice(&json).expect("own JSON alert parses");
    assert_eq!(back, alert);
}

/// Bytes from the state topic (which anyone with write access can fill)
/// restored into an engine. The first byte picks what the rest is:
/// 0: a state record as read from the topic; 1: a snapshot body put in a
/// valid envelope (so mutations get past the checksum); 2: a whole-engine
/// snapshot body.
pub fn snapshot_restore(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let config = EngineConfig::default();
    let wrapped;
    let record = match mode % 3 {
        0 => rest,
        1 => {
            wrapped = envelope(rest);
            &wrapped
        }
        _ => {
            let Ok(snap) = pb::EngineSnapshot::decode(rest) else {
                return;
            };
            if let Ok(engine) = Engine::restore(&config, &snap) {
                let first = nps_stream::engine::snapshot::encode(&engine.snapshot());
                let snap2 = nps_stream::engine::snapshot::decode(&first).expect("own snapshot");
                let engine2 = Engine::restore(&config, &snap2).expect("own snapshot restores");
                let second = nps_stream::engine::snapshot::encode(&engine2.snapshot());
                assert_eq!(first, second, "whole-engine snapshot is a fixed point");
            }
            return;
        }
    };
    let mut engine = Engine::new(&config).expect("default engine");
    let offset = match engine.restore_state_record(record, PARTITION, TOPIC) {
        Ok(offset) => offset,
        Err(error) => {
            assert!(!error.reason().is_empty());
            assert!(
                engine.partitions().is_empty(),
                "a refused snapshot loads nothing"
            );
            return;
        }
    };
    assert!(offset >= 0);
    // What restored re-encodes to a record that restores to the same bytes.
    let first = engine.partition_state_record(PARTITION, TOPIC, offset);
    let mut engine2 = Engine::new(&config).expect("default engine");
    let offset2 = engine2
        .restore_state_record(&first, PARTITION, TOPIC)
        .expect("a re-encoded snapshot restores");
    assert_eq!(offset2, offset);
    let second = engine2.partition_state_record(PARTITION, TOPIC, offset);
    assert_eq!(first, second, "state record is a fixed point");
    let now = engine.now_ms();
    assert_eq!(
        format!("{:?}", engine.segments(now)),
        format!("{:?}", engine2.segments(now))
    );
    // And the restored engine goes on working.
    engine.sweep(now.saturating_add(3_600_000));
    let _ = engine.gauges();
}

/// Wraps a snapshot body in an envelope with the right version and CRC.
pub fn envelope(body: &[u8]) -> Vec<u8> {
    pb::SnapshotEnvelope {
        format_version: nps_stream::engine::snapshot::FORMAT_VERSION,
        crc32: crc32fast::hash(body),
        body: body.to_vec(),
    }
    .encode_to_vec()
}

/// A `--config` file's text. Accepted settings build an engine that
/// counts an answer; refusals name a flag.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let settings = match Settings::from_toml(text, true) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.flag().is_empty());
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let _ = settings.redacted();
    let mut engine = Engine::new(&settings.engine).expect("validated engine settings build");
    let answer = SurveyResponse {
        response_id: "r".into(),
        product: "p".into(),
        region: "r".into(),
        channel: pb::Channel::Sms as i32,
        score: Some(3),
        responded_at: Some(schema::timestamp_from_ms(NOW_MS - 1000)),
        ..Default::default()
    };
    let limits = &settings.limits;
    if let Ok(valid) = schema::validate(answer, NOW_MS, limits) {
        engine.record(0, &valid.observation(), NOW_MS);
        let _ = settings.alerts.priority(&valid);
    }
    for later in [0, 3_600_000, 400 * 86_400_000] {
        engine.sweep(NOW_MS + later);
        let _ = engine.segments(NOW_MS + later);
    }
}

/// One line of `send`'s JSON input. What parses encodes to protobuf and
/// back, prints as JSON that parses to the same message, and is judged the
/// same by validation whether read from the message or from its bytes.
pub fn send_json_line(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let Some(Ok(msg)) = nps_stream::send::parse_line(line) else {
        return;
    };
    let bytes = msg.encode_to_vec();
    let back = SurveyResponse::decode(bytes.as_slice()).expect("own encoding decodes");
    assert_eq!(back.encode_to_vec(), bytes);
    // (serde_json prints a non-finite number as null: such a value, which
    // validation refuses anyway, does not survive printing.)
    if msg.customer_value.is_none_or(f64::is_finite) {
        let json = serde_json::to_string(&msg).expect("a parsed message prints");
        let again = nps_stream::send::parse_line(&json)
            .expect("not blank")
            .expect("printed JSON parses");
        assert_eq!(again.encode_to_vec(), bytes);
    }
    if bytes.is_empty() {
        return; // an empty record is refused as empty_payload, not by its fields
    }
    let limits = Limits::default();
    let direct = schema::validate(msg, NOW_MS, &limits);
    let framed = schema::decode_and_validate(Some(&bytes), [], NOW_MS, &limits);
    assert_eq!(format!("{direct:?}"), format!("{framed:?}"));
}

/// A record of the case-events topic (written by a CRM integration) with
/// any headers. What is accepted decodes the same from its protobuf
/// re-encoding and from its JSON mapping, and moves (or is stale for) the
/// case of its alert; what is refused has a reason.
pub fn case_event(data: &[u8]) {
    let rec = input::parse(data);
    let limits = Limits::default();
    let (msg, event) = match decode_event(rec.payload, rec.headers.iter().copied(), NOW_MS, &limits)
    {
        Ok(ok) => ok,
        Err(rejection) => {
            assert!(!rejection.reason().is_empty());
            return;
        }
    };
    let plain = msg.encode_to_vec();
    if !plain.is_empty() && plain[0] != b'{' {
        let again = decode_event(Some(&plain), [], NOW_MS, &limits).expect("re-encoded");
        assert_eq!(again, (msg.clone(), event), "protobuf re-encoding");
    }
    let json = serde_json::to_vec(&msg).expect("a decoded event prints");
    let again = decode_event(Some(&json), [], NOW_MS, &limits).expect("its JSON decodes");
    assert_eq!(again.1, event, "JSON re-encoding");
    // Its case exists: the event moves it or is stale, never waits.
    let mut t = Tracker::<()>::new(CaseConfig::default());
    t.open(&AlertIn {
        alert: event.alert,
        customer_id: &msg.customer_id,
        product: "p",
        region: "r",
        priority: nps_stream::pb::AlertPriority::Normal,
        emitted_at_ms: NOW_MS - 86_400_000,
        partition: 0,
        offset: 0,
    });
    assert_ne!(t.event(0, &event, (), NOW_MS), Applied::Waiting);
    t.due(NOW_MS.saturating_add(400 * 86_400_000));
    let open: u64 = t.counts().map(|(_, _, c)| c.open).sum();
    assert!(open <= 1);
}

/// A window's promoters, passives, detractors, net and total weight.
type WindowFigures = (u64, u64, u64, f64, f64);

/// Versions of a few responses interleaved as survey tools send them
/// (issue 18): a score, then the comment; a changed score; an older version
/// after a newer one. Each step is `[length: u8][which: u8][clock: u8]`
/// then `length` bytes of a `SurveyResponse`: `which` picks one of eight
/// response ids (bits 0–2) and, with bit 3, gives the version an
/// `updated_at` (bits 4–7 minutes after `NOW_MS`); `clock` moves processing
/// time on by that many minutes. Checks: a duplicate repeats what is
/// counted, a stale version is older than it, and at the end the windows
/// equal those of a fresh engine fed only each response's latest counted
/// version.
pub fn revisions(data: &[u8]) {
    let limits = Limits::default();
    let config = EngineConfig {
        dedup_horizon: std::time::Duration::from_secs(6 * 3600),
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(&config).expect("engine");
    let mut decoder = schema::Decoder::default();
    // Per response id: what the engine counts of it now (a response sent
    // again after the horizon counts anew: a second entry).
    let mut counted: Vec<(u8, usize, i64, schema::ValidResponse)> = Vec::new();
    let mut current: [Option<usize>; 8] = Default::default();
    let (mut now, mut rest, mut step) = (NOW_MS, data, 0usize);
    // Σ |weight| of every version counted: the scale of rounding when a
    // weight is taken back out of a sum.
    let mut magnitude = 0.0f64;
    while let [len, which, clock, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        step += 1;
        now += i64::from(*clock) * 60_000;
        // The pipeline's reused decode buffer decides as a fresh decode,
        // whatever came before.
        let fresh = schema::decode_and_validate(Some(payload), [], now, &limits);
        let reused = decoder.decode_and_validate(Some(payload), [], now, &limits);
        assert_eq!(reused, fresh, "reused decoder");
        if let Ok(r) = reused {
            decoder.recycle(r);
        }
        let Ok(v) = fresh else {
            continue;
        };
        let id = which & 7;
        let mut msg = v.msg;
        msg.response_id = format!("r{id}");
        msg.updated_at = (which & 8 != 0)
            .then(|| schema::timestamp_from_ms(NOW_MS + i64::from(which >> 4) * 60_000));
        let Ok(v) = schema::validate(msg, now, &limits) else {
            continue;
        };
        let obs = nps_stream::engine::Observation {
            alerting: AlertPolicy::default().should_alert(&v),
            ..v.observation()
        };
        let held = current[usize::from(id)].map(|i| &counted[i].3);
        match engine.record(0, &obs, now) {
            Outcome::Duplicate => {
                let held = held.expect("a duplicate of something counted");
                assert_eq!(held.content, v.content, "duplicate of other content");
            }
            Outcome::Stale => {
                let held = held.expect("stale against something counted");
                assert!(v.updated_at_ms < held.updated_at_ms, "stale but not older");
            }
            Outcome::RevisionAfterHorizon => assert!(v.updated_at_ms.is_some()),
            Outcome::Counted(..) => {
                magnitude += v.weight.abs();
                current[usize::from(id)] = Some(counted.len());
                counted.push((id, step, now, v));
            }
            Outcome::Revised { .. } => {
                let i = current[usize::from(id)].expect("a revision of something counted");
                magnitude += v.weight.abs();
                counted[i].1 = step;
                counted[i].2 = now;
                counted[i].3 = v;
            }
        }
    }
    // Only the latest versions, each as a first version, at the time it
    // was counted.
    let mut fresh = Engine::new(&config).expect("engine");
    let mut latest: Vec<_> = counted.iter().enumerate().collect();
    latest.sort_by_key(|(_, (_, step, _, _))| *step);
    for (i, (_, _, at, v)) in latest {
        let mut msg = v.msg.clone();
        msg.response_id = format!("latest-{i}");
        msg.updated_at = None;
        let only = schema::validate(msg, *at, &limits).expect("a counted version validates");
        assert!(matches!(
            fresh.record(0, &only.observation(), *at),
            Outcome::Counted(..)
        ));
    }
    let view = |e: &Engine| -> Vec<(String, String, Vec<WindowFigures>)> {
        e.segments(now)
            .into_iter()
            .map(|s| {
                let w = s
                    .windows
                    .iter()
                    .map(|w| {
                        (
                            w.promoters,
                            w.passives,
                            w.detractors,
                            w.weight_net,
                            w.weight_total,
                        )
                    })
                    .collect();
                ((s.product.to_string(), s.region.to_string()), w)
            })
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .map(|((p, r), w)| (p, r, w))
            .collect()
    };
    let (got, want) = (view(&engine), view(&fresh));
    assert_eq!(got.len(), want.len(), "segments: {got:?} vs {want:?}");
    for ((gp, gr, gw), (wp, wr, ww)) in got.iter().zip(&want) {
        assert_eq!((gp, gr), (wp, wr));
        for (g, w) in gw.iter().zip(ww) {
            assert_eq!((g.0, g.1, g.2), (w.0, w.1, w.2), "{gp}/{gr} counts");
            // Weights were added and taken back out: equal up to the
            // rounding of sums of that magnitude (a closed bucket keeps its
            // sums in f32: about 6e-8 of the magnitude per addition).
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * magnitude.max(1.0);
            assert!(
                close(g.3, w.3) && close(g.4, w.4),
                "{gp}/{gr} weights {g:?} vs {w:?}"
            );
        }
    }
}
