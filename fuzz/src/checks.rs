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
    let alert = alerts::build(&valid, &windows, late, NOW_MS, &AlertPolicy::default());
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
