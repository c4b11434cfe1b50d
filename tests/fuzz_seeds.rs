//! The fuzz targets' seed corpus (fuzz/seeds/) and its replay on the stable
//! toolchain.
//!
//! The seeds are made here from the test data (tests/data/golden.jsonl, the
//! shipped configs) and from one planted fault per refusal reason; the
//! committed files must equal what this file makes (rewrite them with
//! `NPS_WRITE_SEEDS=1 cargo test --test fuzz_seeds -- --test-threads=1`).
//! Every committed seed, and every input under fuzz/regressions/ (each
//! crash or hang a fuzzer found), runs through the same checks the fuzz
//! targets make (fuzz/src/checks.rs), so the ordinary suite guards every
//! finding.

#[path = "../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;
#[path = "../fuzz/src/input.rs"]
#[allow(dead_code)]
mod input;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nps_stream::engine::{Engine, EngineConfig};
use nps_stream::pb::SurveyResponse;
use nps_stream::schema::{self, Limits, Reason};
use prost::Message;

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 6] = [
    ("survey_payload", checks::survey_payload),
    ("snapshot_restore", checks::snapshot_restore),
    ("config_toml", checks::config_toml),
    ("send_json_line", checks::send_json_line),
    ("case_event", checks::case_event),
    ("revisions", checks::revisions),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden() -> Vec<(String, SurveyResponse)> {
    let text = std::fs::read_to_string(root().join("tests/data/golden.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| Some((l.to_string(), nps_stream::send::parse_line(l)?.unwrap())))
        .collect()
}

fn record(msg: &SurveyResponse) -> Vec<u8> {
    input::encode(Some(&msg.encode_to_vec()), &[])
}

/// One seed per refusal reason (a planted fault on a golden answer), and
/// accepted answers in every framing.
fn payload_seeds() -> Vec<(String, Vec<u8>)> {
    let answers = golden();
    let base = answers[0].1.clone();
    let with = |f: &dyn Fn(&mut SurveyResponse)| {
        let mut m = base.clone();
        f(&mut m);
        record(&m)
    };
    let body = base.encode_to_vec();
    let framed = |prefix: &[u8]| {
        let mut v = prefix.to_vec();
        v.extend_from_slice(&body);
        input::encode(Some(&v), &[])
    };
    let mut seeds: Vec<(String, Vec<u8>)> = vec![
        ("empty_payload".into(), input::encode(Some(&[]), &[])),
        ("null_value".into(), input::encode(None, &[])),
        (
            "payload_too_large".into(),
            input::encode(
                Some(&vec![0x0a; Limits::default().max_payload_bytes + 1]),
                &[],
            ),
        ),
        (
            "invalid_framing".into(),
            input::encode(Some(&[0, 1, 2]), &[]),
        ),
        (
            "invalid_framing_header".into(),
            input::encode(Some(&body), &[("__value_schema_id", Some(&[7, 1]))]),
        ),
        (
            "unexpected_message_type".into(),
            framed(&[0, 0, 0, 0, 1, 2, 2]),
        ),
        (
            "undecodable".into(),
            input::encode(Some(&[0x0a, 0xff]), &[]),
        ),
        (
            "missing_response_id".into(),
            with(&|m| m.response_id.clear()),
        ),
        ("missing_product".into(), with(&|m| m.product = " ".into())),
        ("missing_region".into(), with(&|m| m.region.clear())),
        ("missing_channel".into(), with(&|m| m.channel = 0)),
        ("unknown_channel".into(), with(&|m| m.channel = 99)),
        ("missing_score".into(), with(&|m| m.score = None)),
        ("score_out_of_range".into(), with(&|m| m.score = Some(11))),
        ("missing_timestamp".into(), with(&|m| m.responded_at = None)),
        (
            "invalid_timestamp".into(),
            with(&|m| m.responded_at.as_mut().unwrap().nanos = -1),
        ),
        (
            "future_timestamp".into(),
            with(&|m| m.responded_at = Some(schema::timestamp_from_ms(input::NOW_MS + 86_400_000))),
        ),
        (
            "invalid_customer_value".into(),
            with(&|m| m.customer_value = Some(-1.0)),
        ),
        (
            "field_too_long".into(),
            with(&|m| m.comment = "x".repeat(Limits::default().max_comment_bytes + 1)),
        ),
        (
            "too_many_attributes".into(),
            with(&|m| {
                for i in 0..=Limits::default().max_attributes {
                    m.attributes.insert(format!("k{i}"), "v".into());
                }
            }),
        ),
        (
            "invalid_label_value".into(),
            with(&|m| m.product = "__other__".into()),
        ),
        ("valid_confluent".into(), framed(&[0, 0, 0, 0, 42, 0])),
        (
            "valid_schema_id_header".into(),
            input::encode(
                Some(&body),
                &[("__value_schema_id", Some(&[0, 0, 0, 0, 42]))],
            ),
        ),
        (
            "valid_guid_header".into(),
            input::encode(
                Some(&body),
                &[("other", None), ("__value_schema_id", Some(&[1; 17]))],
            ),
        ),
        (
            "valid_attributes".into(),
            with(&|m| {
                m.survey_id = "s-1".into();
                m.attributes.insert("store".into(), "12".into());
            }),
        ),
    ];
    for (i, (_, msg)) in answers.iter().enumerate() {
        seeds.push((format!("golden_{i:02}"), record(msg)));
    }
    seeds
}

fn snapshot_seeds() -> Vec<(String, Vec<u8>)> {
    let mut engine = Engine::new(&EngineConfig::default()).unwrap();
    let limits = Limits::default();
    for (_, msg) in golden() {
        if let Ok(v) = schema::validate(msg, input::NOW_MS, &limits) {
            engine.record(checks::PARTITION, &v.observation(), input::NOW_MS);
        }
    }
    let state = engine.partition_state_record(checks::PARTITION, checks::TOPIC, 22);
    let body = nps_stream::engine::snapshot::decode(&state)
        .unwrap()
        .encode_to_vec();
    let empty = Engine::new(&EngineConfig::default())
        .unwrap()
        .partition_state_record(checks::PARTITION, checks::TOPIC, 0);
    let whole = engine.snapshot().encode_to_vec();
    let tag = |mode: u8, bytes: &[u8]| [&[mode][..], bytes].concat();
    vec![
        ("state_record".into(), tag(0, &state)),
        ("state_record_empty".into(), tag(0, &empty)),
        ("body".into(), tag(1, &body)),
        ("engine".into(), tag(2, &whole)),
    ]
}

fn config_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = ["compose", "kubernetes"]
        .iter()
        .map(|d| {
            let text = std::fs::read(root().join(format!("deploy/{d}/nps-stream.toml"))).unwrap();
            (format!("deploy_{d}"), text)
        })
        .collect();
    seeds.push((
        "every_table".into(),
        br#"brokers = "127.0.0.1:9092"
metrics_addr = "127.0.0.1:9898"
auto_offset_reset = "latest"
snapshot_max_bytes = 1048576
[engine]
windows = ["15m", "1d"]
buckets_per_window = 12
dedup_horizon = "2h"
dedup_max_ids = 1000
[limits]
max_payload_bytes = 4096
max_label_bytes = 32
max_future_skew = "1m"
max_customer_value = 1000.0
[alerts]
threshold = 4
"#
        .to_vec(),
    ));
    seeds.push((
        "refused".into(),
        b"[engine]\nwindows = [\"soon\"]\n".to_vec(),
    ));
    seeds
}

fn send_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = golden()
        .into_iter()
        .enumerate()
        .map(|(i, (line, _))| (format!("golden_{i:02}"), line.into_bytes()))
        .collect();
    seeds.push((
        "attributes".into(),
        br#"{"responseId":"x","product":"p","region":"r","channel":"CHANNEL_WEB","score":3,"respondedAt":"2025-12-01T00:00:00.5Z","customerValue":"NaN","surveyId":"s","attributes":{"a":"b"}}"#.to_vec(),
    ));
    seeds
}

/// Case events: accepted ones in every encoding, and one planted fault per
/// refusal reason.
fn case_event_seeds() -> Vec<(String, Vec<u8>)> {
    use nps_stream::pb::{CaseEvent, CaseOutcome, CaseState};
    let base = CaseEvent {
        alert_id: nps_stream::alerts::alert_id("a-3"),
        customer_id: "cust-3".into(),
        state: CaseState::Resolved as i32,
        occurred_at: Some(schema::timestamp_from_ms(input::NOW_MS - 3_600_000)),
        owner: "equipo-sur".into(),
        outcome: CaseOutcome::Recovered as i32,
        root_cause: String::new(),
    };
    let with = |f: &dyn Fn(&mut CaseEvent)| {
        let mut m = base.clone();
        f(&mut m);
        input::encode(Some(&m.encode_to_vec()), &[])
    };
    let body = base.encode_to_vec();
    let framed = [&[0u8, 0, 0, 0, 5, 0][..], &body].concat();
    let json = serde_json::to_vec(&base).unwrap();
    vec![
        ("valid_protobuf".into(), input::encode(Some(&body), &[])),
        ("valid_confluent".into(), input::encode(Some(&framed), &[])),
        ("valid_json".into(), input::encode(Some(&json), &[])),
        (
            "valid_contacted".into(),
            with(&|m| {
                m.state = CaseState::Contacted as i32;
                m.outcome = 0;
            }),
        ),
        ("empty_payload".into(), input::encode(Some(&[]), &[])),
        (
            "undecodable".into(),
            input::encode(Some(&[0x0a, 0xff]), &[]),
        ),
        (
            "undecodable_json".into(),
            input::encode(Some(b"{\"alertId\": 3"), &[]),
        ),
        ("missing_alert_id".into(), with(&|m| m.alert_id.clear())),
        (
            "unknown_alert".into(),
            with(&|m| m.alert_id = "ticket-42".into()),
        ),
        ("unknown_state".into(), with(&|m| m.state = 0)),
        ("unknown_outcome".into(), with(&|m| m.outcome = 7)),
        ("missing_timestamp".into(), with(&|m| m.occurred_at = None)),
        (
            "invalid_timestamp".into(),
            with(&|m| m.occurred_at.as_mut().unwrap().nanos = -5),
        ),
        (
            "future_timestamp".into(),
            with(&|m| m.occurred_at = Some(schema::timestamp_from_ms(input::NOW_MS + 86_400_000))),
        ),
        (
            "field_too_long".into(),
            with(&|m| m.owner = "o".repeat(300)),
        ),
    ]
}

/// Steps of the `revisions` target: `[length][which][clock][payload]`
/// (see `checks::revisions`).
fn revision_step(msg: &SurveyResponse, which: u8, clock: u8) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let len = u8::try_from(body.len()).expect("a seed payload under 256 bytes");
    [&[len, which, clock][..], &body].concat()
}

/// Delighted-style flows on golden answers: the comment after the score,
/// 3 changed to 9 (withdrawn), 8 changed to 2 (first alert), a stale
/// version after a newer one, a duplicate, a revision of nothing, and an
/// answer sent again after the horizon.
fn revision_seeds() -> Vec<(String, Vec<u8>)> {
    let base = golden()
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.encode_to_vec().len() < 200)
        .expect("a short golden answer");
    let with = |score: u32, comment: &str| SurveyResponse {
        score: Some(score),
        comment: comment.into(),
        responded_at: Some(schema::timestamp_from_ms(input::NOW_MS - 600_000)),
        ..base.clone()
    };
    let upd = |minutes: u8| 8 | (minutes << 4);
    let flow = |steps: &[(&SurveyResponse, u8, u8)]| -> Vec<u8> {
        steps
            .iter()
            .flat_map(|(m, which, clock)| revision_step(m, *which, *clock))
            .collect()
    };
    vec![
        (
            "comment_after_score".into(),
            flow(&[
                (&with(2, ""), 0, 0),
                (&with(2, "Nadie me llamó"), upd(1), 1),
            ]),
        ),
        (
            "three_to_nine".into(),
            flow(&[(&with(3, "mal"), 1, 0), (&with(9, "mal"), 1 | upd(2), 2)]),
        ),
        (
            "eight_to_two".into(),
            flow(&[(&with(8, ""), 2, 0), (&with(2, "peor"), 2 | upd(3), 1)]),
        ),
        (
            "stale_after_newer".into(),
            flow(&[(&with(5, ""), 3 | upd(5), 0), (&with(6, ""), 3 | upd(1), 1)]),
        ),
        (
            "duplicate".into(),
            flow(&[(&with(10, ""), 4, 0), (&with(10, ""), 4, 1)]),
        ),
        (
            "revision_of_nothing".into(),
            flow(&[(&with(7, ""), 5 | upd(4), 0)]),
        ),
        (
            "again_after_the_horizon".into(),
            flow(&[
                (&with(9, ""), 6, 0),
                (&with(9, ""), 7, 255),
                (&with(4, ""), 7, 255),
                (&with(9, ""), 6, 0),
            ]),
        ),
    ]
}

fn generated() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut all = Vec::new();
    for (target, seeds) in [
        ("survey_payload", payload_seeds()),
        ("snapshot_restore", snapshot_seeds()),
        ("config_toml", config_seeds()),
        ("send_json_line", send_seeds()),
        ("case_event", case_event_seeds()),
        ("revisions", revision_seeds()),
    ] {
        all.extend(seeds.into_iter().map(|(n, b)| (target, n, b)));
    }
    all
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn committed_seeds_are_made_from_the_test_data() {
    let seeds = root().join("fuzz/seeds");
    if std::env::var_os("NPS_WRITE_SEEDS").is_some() {
        let _ = std::fs::remove_dir_all(&seeds);
        for (target, name, bytes) in generated() {
            let dir = seeds.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let made = generated();
    for (target, name, bytes) in &made {
        let path = seeds.join(target).join(name);
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (NPS_WRITE_SEEDS=1 writes it)", path.display()));
        assert!(
            committed == *bytes,
            "{} differs from what the test data makes",
            path.display()
        );
    }
    for (target, _) in TARGETS {
        let n = files(&seeds.join(target)).len();
        let expected = made.iter().filter(|(t, ..)| *t == target).count();
        assert_eq!(
            n, expected,
            "{target}: stray seeds (put findings in fuzz/regressions/)"
        );
    }
}

#[test]
fn every_refusal_reason_has_a_seed() {
    let mut seen = BTreeSet::new();
    let mut valid = 0;
    for (_, data) in payload_seeds() {
        let rec = input::parse(&data);
        let verdict = schema::decode_and_validate(
            rec.payload,
            rec.headers.iter().copied(),
            input::NOW_MS,
            &Limits::default(),
        );
        match verdict {
            Ok(_) => valid += 1,
            Err(r) => {
                seen.insert(r.reason());
            }
        }
    }
    // `revision_after_horizon` comes from the engine (a version of a
    // response it does not remember), not from validation.
    let missing: Vec<_> = Reason::ALL
        .iter()
        .filter(|r| !seen.contains(r) && **r != Reason::RevisionAfterHorizon)
        .collect();
    assert!(missing.is_empty(), "no seed for {missing:?}");
    assert!(valid > 20, "accepted seeds: {valid}");
}

#[test]
fn every_case_event_refusal_reason_has_a_seed() {
    use nps_stream::cases::event::{EventRejection, decode_event};
    let mut seen = BTreeSet::new();
    for (_, data) in case_event_seeds() {
        let rec = input::parse(&data);
        let verdict = decode_event(
            rec.payload,
            rec.headers.iter().copied(),
            input::NOW_MS,
            &Limits::default(),
        );
        if let Err(r) = verdict {
            seen.insert(r.reason());
        }
    }
    let missing: Vec<_> = EventRejection::REASONS
        .iter()
        .filter(|r| !seen.contains(*r))
        .collect();
    assert!(missing.is_empty(), "no seed for {missing:?}");
}

#[test]
fn every_seed_and_regression_passes_its_target_checks() {
    let mut ran = 0;
    for (target, check) in TARGETS {
        for kind in ["seeds", "regressions"] {
            for path in files(&root().join("fuzz").join(kind).join(target)) {
                let bytes = std::fs::read(&path).unwrap();
                let result = std::panic::catch_unwind(|| check(&bytes));
                assert!(result.is_ok(), "{} fails its checks", path.display());
                ran += 1;
            }
        }
    }
    assert!(ran >= generated().len(), "ran {ran}");
}

#[test]
fn the_input_layout_reads_back_what_it_wrote() {
    let headers: [(&str, Option<&[u8]>); 3] = [("a", Some(b"1")), ("b", None), ("", Some(b""))];
    for payload in [None, Some(&b""[..]), Some(&b"\x00\x01"[..])] {
        let bytes = input::encode(payload, &headers);
        let rec = input::parse(&bytes);
        assert_eq!(rec.payload, payload);
        assert_eq!(rec.headers, headers);
    }
    // Cut inside the headers: what was read, and an empty value.
    let rec = input::parse(&[2, 1, b'a', 0, 0, 9]);
    assert_eq!(rec.headers, vec![("a", Some(&b""[..]))]);
    assert_eq!(rec.payload, Some(&[][..]));
}
