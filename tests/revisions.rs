//! Golden test of revisions (issue 18): the flows survey tools produce,
//! as protobuf JSON through decode, validation, the engine and the alert
//! rules, with the windows and alert marks worked out by hand.
//!
//! At 2025-11-22T12:00:00Z, product Cuenta × Norte, window 1h:
//! - d-1 (Delighted): the score 3 alone, then the same with the comment
//!   (updated_at +1 min): one detractor, alerted twice: revision 0, then
//!   revision 1 carrying the comment.
//! - d-2: a 3, then revised to a 9: the detractor leaves, a promoter comes;
//!   the alert is withdrawn (revision 1, withdrawn).
//! - d-3: an 8, then revised to a 2: the passive leaves, a detractor comes;
//!   its first alert (revision 0).
//! - d-4: a 6 (alerted), revised to a 7 at 11:50 (the alert withdrawn),
//!   then a 10 made at 11:40 (sent earlier, arriving later): stale, the 7
//!   stays.
//! - d-1's first version again: older than the one counted (no
//!   updated_at): stale.
//! - d-5: a revision (updated_at set) of a response never seen: refused as
//!   revision_after_horizon.
//!
//! So the hour holds d-1 (3), d-2 (9), d-3 (2), d-4 (7): P1 Pa1 D2,
//! NPS (1−2)/4 = −25.

use nps_stream::alerts::AlertPolicy;
use nps_stream::engine::{AlertMark, Engine, EngineConfig, Observation, Outcome};
use nps_stream::pb::SurveyResponse;
use nps_stream::schema::{Limits, decode_and_validate};
use prost::Message;

const NOW_MS: i64 = 1_763_812_800_000; // 2025-11-22T12:00:00Z

const FLOW: &str = r#"
{"responseId": "d-1", "product": "Cuenta", "region": "Norte", "channel": "CHANNEL_EMAIL", "score": 3, "respondedAt": "2025-11-22T11:30:00Z"}
{"responseId": "d-1", "product": "Cuenta", "region": "Norte", "channel": "CHANNEL_EMAIL", "score": 3, "respondedAt": "2025-11-22T11:30:00Z", "comment": "Nadie me llamó", "updatedAt": "2025-11-22T11:31:00Z"}
{"responseId": "d-2", "product": "Cuenta", "region": "Norte", "channel": "CHANNEL_SMS", "score": 3, "respondedAt": "2025-11-22T11:32:00Z"}
{"responseId": "d-2", "product": "Cuenta", "region": "Norte", "channel": "CHANNEL_SMS", "score": 9, "respondedAt": "2025-11-22T11:32:00Z", "updatedAt": "2025-11-22T11:35:00Z"}
{"responseId": "d-3", "product": "Cuenta", "region": "Norte", "channel": "CHANNEL_WEB", "score": 8, "respondedAt": "2025-11-22T11:33:00Z"}
{"responseId": "d-3", "product": "Cuenta", "region": "Norte", "channel": "CHANNEL_WEB", "score": 2, "respondedAt": "2025-11-22T11:33:00Z", "updatedAt": "2025-11-22T11:36:00Z"}
{"responseId": "d-4", "product": "Cuenta", "region": "Norte", "channel": "CHANNEL_CHAT", "score": 6, "respondedAt": "2025-11-22T11:34:00Z"}
{"responseId": "d-4", "product": "Cuenta", "region": "Norte", "channel": "CHANNEL_CHAT", "score": 7, "respondedAt": "2025-11-22T11:34:00Z", "updatedAt": "2025-11-22T11:50:00Z"}
{"responseId": "d-4", "product": "Cuenta", "region": "Norte", "channel": "CHANNEL_CHAT", "score": 10, "respondedAt": "2025-11-22T11:34:00Z", "updatedAt": "2025-11-22T11:40:00Z"}
{"responseId": "d-1", "product": "Cuenta", "region": "Norte", "channel": "CHANNEL_EMAIL", "score": 3, "respondedAt": "2025-11-22T11:30:00Z"}
{"responseId": "d-5", "product": "Cuenta", "region": "Norte", "channel": "CHANNEL_EMAIL", "score": 1, "respondedAt": "2025-11-22T11:30:00Z", "updatedAt": "2025-11-22T11:45:00Z"}
"#;

/// What each line did: the outcome's kind and its alert mark.
fn kind(o: &Outcome) -> (&'static str, Option<AlertMark>) {
    match o {
        Outcome::Counted(_, a) => ("counted", *a),
        Outcome::Revised { alert, .. } => ("revised", *alert),
        Outcome::Duplicate => ("duplicate", None),
        Outcome::Stale => ("stale", None),
        Outcome::RevisionAfterHorizon => ("revision_after_horizon", None),
    }
}

fn mark(revision: u32, withdrawn: bool) -> Option<AlertMark> {
    Some(AlertMark {
        revision,
        withdrawn,
    })
}

#[test]
fn delighted_style_flows_count_the_latest_version_and_alert_by_revision() {
    let mut engine = Engine::new(&EngineConfig::default()).unwrap();
    let (limits, policy) = (Limits::default(), AlertPolicy::default());
    // The first version the engine takes for d-1 is the score alone; the
    // seconds apart only order the versions.
    let mut got = Vec::new();
    for (i, line) in FLOW.trim().lines().enumerate() {
        let msg: SurveyResponse = serde_json::from_str(line).unwrap();
        let bytes = msg.encode_to_vec();
        let valid = decode_and_validate(Some(&bytes), [], NOW_MS, &limits).unwrap();
        let obs = Observation {
            alerting: policy.should_alert(&valid),
            ..valid.observation()
        };
        got.push(kind(&engine.record(0, &obs, NOW_MS + i as i64)));
    }
    assert_eq!(
        got,
        vec![
            ("counted", mark(0, false)),
            ("revised", mark(1, false)),
            ("counted", mark(0, false)),
            ("revised", mark(1, true)),
            ("counted", None),
            ("revised", mark(0, false)),
            ("counted", mark(0, false)),
            ("revised", mark(1, true)),
            ("stale", None),
            ("stale", None),
            ("revision_after_horizon", None),
        ]
    );
    let segs = engine.segments(NOW_MS + 100);
    assert_eq!(segs.len(), 1);
    let hour = &segs[0].windows[0];
    assert_eq!((hour.promoters, hour.passives, hour.detractors), (1, 1, 2));
    assert_eq!(hour.nps(), Some(-25.0));
}
