//! Golden test: a fixed, hand-checked dataset (tests/data/golden.jsonl),
//! through the whole pure path: protobuf-JSON → protobuf bytes → decode →
//! validate → engine. The expected figures were worked out by hand from the
//! definitions (see README, "NPS rules"):
//!
//! Cuenta Corriente × Norte, at 2025-11-22T12:00:00Z
//! - 1h:  10 responses, scores 10 9 9 8 7 6 5 3 0 10 → P4 Pa2 D4, NPS 0;
//!   margin 1.96·√(.8/10)·100 = 55.437; weights P 1+2+1+1=5, D 5+1+1+1=8,
//!   total 15 → weighted NPS (5−8)/15 = −20.
//! - 24h: + two 10s at 3h → P6 Pa2 D4, NPS 2/12 = 16.667;
//!   margin 1.96·√((.5+.3333−.02778)/12)·100 = 50.782; weighted (7−8)/17 = −5.882.
//! - 7d:  + a 2 at 5 days with value 10 → P6 Pa2 D5, NPS 1/13 = 7.692;
//!   margin 49.829; weighted (7−18)/27 = −40.741.
//! - 30d: + a 9 at 20 days, no value (weight 1) → P7 Pa2 D5, NPS 2/14 = 14.286;
//!   margin 47.917; weighted (8−18)/28 = −35.714.
//! - A 0 at 40 days is late: in no window. A repeat of a-0 (the same content, redelivered) is a duplicate.
//!
//! Seguro Auto × Sur: 8, 8, 7 in the last hour → all passives: NPS 0,
//! margin 0, weighted 0 (weights 100, 250.5, 0).
//!
//! Three more lines are refused: missing score, score 11, 10 min ahead.

use nps_stream::engine::{Engine, EngineConfig, Outcome};
use nps_stream::pb::SurveyResponse;
use nps_stream::schema::{Limits, Reason, decode_and_validate};
use prost::Message;

const NOW_MS: i64 = 1_763_812_800_000; // 2025-11-22T12:00:00Z

fn close(got: Option<f64>, want: f64) {
    let got = got.expect("a value");
    assert!((got - want).abs() < 5e-4, "got {got}, want {want}");
}

#[test]
fn golden_dataset_gives_hand_checked_figures() {
    let text = include_str!("data/golden.jsonl");
    let mut engine = Engine::new(&EngineConfig::default()).unwrap();
    let limits = Limits::default();
    let (mut late, mut dups, mut refused) = (0, 0, Vec::new());
    for line in text.lines() {
        let msg: SurveyResponse = serde_json::from_str(line).unwrap();
        let bytes = msg.encode_to_vec();
        match decode_and_validate(Some(&bytes), [], NOW_MS, &limits) {
            Ok(v) => match engine.record(0, &v.observation(), NOW_MS) {
                Outcome::Duplicate => dups += 1,
                Outcome::Counted(c, _) if c.late => late += 1,
                Outcome::Counted(..) => {}
                other => panic!("{other:?} in the golden data: {line}"),
            },
            Err(r) => refused.push(r.reason()),
        }
    }
    assert_eq!((late, dups), (1, 1));
    assert_eq!(
        refused,
        vec![
            Reason::MissingScore,
            Reason::ScoreOutOfRange,
            Reason::FutureTimestamp
        ]
    );

    let segments = engine.segments(NOW_MS);
    assert_eq!(segments.len(), 2);
    let a = segments
        .iter()
        .find(|s| s.product == "Cuenta Corriente")
        .unwrap();
    assert_eq!(a.region, "Norte");
    let counts: Vec<(u64, u64, u64)> = a
        .windows
        .iter()
        .map(|w| (w.promoters, w.passives, w.detractors))
        .collect();
    assert_eq!(counts, vec![(4, 2, 4), (6, 2, 4), (6, 2, 5), (7, 2, 5)]);
    let want = [
        (0.0, 55.437, -20.0),
        (16.667, 50.782, -5.882),
        (7.692, 49.829, -40.741),
        (14.286, 47.917, -35.714),
    ];
    for (w, (nps, moe, weighted)) in a.windows.iter().zip(want) {
        close(w.nps(), nps);
        close(w.margin_of_error(), moe);
        close(w.weighted_nps(), weighted);
    }

    let b = segments
        .iter()
        .find(|s| s.product == "Seguro Auto")
        .unwrap();
    for w in &b.windows {
        assert_eq!((w.promoters, w.passives, w.detractors), (0, 3, 0));
        assert_eq!(w.nps(), Some(0.0));
        assert_eq!(w.margin_of_error(), Some(0.0));
        assert_eq!(w.weighted_nps(), Some(0.0));
    }
}
