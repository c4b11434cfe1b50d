//! Case events from a CRM, ticketing or contact-centre integration:
//! decoding (plain protobuf, Confluent framing or the schema-id header, or
//! the protobuf JSON mapping when the value starts with `{`) and
//! validation. Every refusal is a named reason (a label of
//! `nps_events_rejected_total` and a dead-letter header) whose details
//! carry no customer data.

use prost::Message;

use super::{EventIn, alert_key};
use crate::pb::{CaseEvent, CaseOutcome, CaseState};
use crate::schema::{self, Limits, Rejection};

/// Why a case event was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventRejection {
    /// Empty, too large, badly framed or not protobuf (the survey path's
    /// reasons).
    #[error("{0}")]
    Record(Rejection),
    #[error("not a CaseEvent in protobuf JSON: {0}")]
    Json(String),
    #[error("alert_id is missing")]
    MissingAlertId,
    /// Not an id nps-stream writes (32 hex digits), or (from the tracker)
    /// no alert came for it within the grace.
    #[error("alert_id names no alert")]
    UnknownAlert,
    #[error("state {0} is not a known CaseState")]
    UnknownState(i32),
    #[error("outcome {0} is not a known CaseOutcome")]
    UnknownOutcome(i32),
    #[error("occurred_at is missing")]
    MissingTimestamp,
    #[error("occurred_at is not a valid timestamp")]
    InvalidTimestamp,
    #[error("occurred_at is {ahead_ms} ms in the future, more than the allowed skew")]
    FutureTimestamp { ahead_ms: i64 },
    #[error("{field} is {len} bytes, over the limit of {limit}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        limit: usize,
    },
}

impl EventRejection {
    /// The metric label and dead-letter reason.
    pub fn reason(&self) -> &'static str {
        match self {
            EventRejection::Record(r) => r.reason().as_str(),
            EventRejection::Json(_) => "undecodable",
            EventRejection::MissingAlertId => "missing_alert_id",
            EventRejection::UnknownAlert => "unknown_alert",
            EventRejection::UnknownState(_) => "unknown_state",
            EventRejection::UnknownOutcome(_) => "unknown_outcome",
            EventRejection::MissingTimestamp => "missing_timestamp",
            EventRejection::InvalidTimestamp => "invalid_timestamp",
            EventRejection::FutureTimestamp { .. } => "future_timestamp",
            EventRejection::FieldTooLong { .. } => "field_too_long",
        }
    }

    /// Every reason, for registering the metric's series.
    pub const REASONS: [&'static str; 8] = [
        "missing_alert_id",
        "unknown_alert",
        "unknown_state",
        "unknown_outcome",
        "missing_timestamp",
        "invalid_timestamp",
        "future_timestamp",
        "field_too_long",
    ];
}

/// Decodes and validates a case event at processing time `now_ms`.
pub fn decode_event<'h>(
    payload: Option<&[u8]>,
    headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    now_ms: i64,
    limits: &Limits,
) -> Result<(CaseEvent, EventIn), EventRejection> {
    let msg = match payload {
        Some(p) if p.first() == Some(&b'{') => {
            if p.len() > limits.max_payload_bytes {
                return Err(EventRejection::Record(Rejection::PayloadTooLarge {
                    size: p.len(),
                    limit: limits.max_payload_bytes,
                }));
            }
            serde_json::from_slice::<CaseEvent>(p).map_err(|e| {
                // serde_json's message can quote the input: keep its
                // position only.
                EventRejection::Json(format!("line {} column {}", e.line(), e.column()))
            })?
        }
        _ => {
            let (body, _) =
                schema::unframe(payload, headers, limits).map_err(EventRejection::Record)?;
            CaseEvent::decode(body)
                .map_err(|e| EventRejection::Record(Rejection::Undecodable(e.to_string())))?
        }
    };
    let event = validate_event(&msg, now_ms, limits)?;
    Ok((msg, event))
}

/// Checks a decoded case event.
pub fn validate_event(
    msg: &CaseEvent,
    now_ms: i64,
    limits: &Limits,
) -> Result<EventIn, EventRejection> {
    if msg.alert_id.is_empty() {
        return Err(EventRejection::MissingAlertId);
    }
    for (field, value) in [
        ("alert_id", &msg.alert_id),
        ("customer_id", &msg.customer_id),
        ("owner", &msg.owner),
        ("root_cause", &msg.root_cause),
    ] {
        if value.len() > limits.max_id_bytes {
            return Err(EventRejection::FieldTooLong {
                field,
                len: value.len(),
                limit: limits.max_id_bytes,
            });
        }
    }
    let alert = alert_key(&msg.alert_id).ok_or(EventRejection::UnknownAlert)?;
    let state = match CaseState::try_from(msg.state) {
        Ok(CaseState::Unspecified) | Err(_) => return Err(EventRejection::UnknownState(msg.state)),
        Ok(s) => s,
    };
    let outcome = CaseOutcome::try_from(msg.outcome)
        .map_err(|_| EventRejection::UnknownOutcome(msg.outcome))?;
    let occurred_at_ms =
        schema::timestamp_ms(msg.occurred_at.as_ref(), now_ms, limits).map_err(|r| match r {
            Rejection::MissingTimestamp => EventRejection::MissingTimestamp,
            Rejection::FutureTimestamp { ahead_ms } => EventRejection::FutureTimestamp { ahead_ms },
            _ => EventRejection::InvalidTimestamp,
        })?;
    Ok(EventIn {
        alert,
        state,
        occurred_at_ms,
        outcome,
        // Named by the tracker, which knows the configured causes.
        root_cause: super::RootCause::NONE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::timestamp_from_ms;

    const NOW: i64 = 1_767_225_600_000;

    fn good() -> CaseEvent {
        CaseEvent {
            alert_id: crate::alerts::alert_id("r-1"),
            customer_id: "c-1".into(),
            state: CaseState::Contacted as i32,
            occurred_at: Some(timestamp_from_ms(NOW - 1000)),
            owner: "equipo-norte".into(),
            outcome: 0,
            root_cause: String::new(),
        }
    }

    fn reason(msg: &CaseEvent) -> &'static str {
        decode_event(Some(&msg.encode_to_vec()), [], NOW, &Limits::default())
            .unwrap_err()
            .reason()
    }

    #[test]
    fn protobuf_confluent_and_json_decode_to_the_same_event() {
        let msg = good();
        let plain = msg.encode_to_vec();
        let mut framed = vec![0, 0, 0, 0, 9, 0];
        framed.extend_from_slice(&plain);
        let json = serde_json::to_vec(&msg).unwrap();
        assert_eq!(json[0], b'{');
        let limits = Limits::default();
        let a = decode_event(Some(&plain), [], NOW, &limits).unwrap();
        let b = decode_event(Some(&framed), [], NOW, &limits).unwrap();
        let c = decode_event(Some(&json), [], NOW, &limits).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.1.state, CaseState::Contacted);
        assert_eq!(a.1.occurred_at_ms, NOW - 1000);
        assert_eq!(Some(a.1.alert), alert_key(&msg.alert_id));
        // The JSON mapping with enum names, as an integrator writes it.
        let line = format!(
            r#"{{"alertId":"{}","state":"CASE_STATE_RESOLVED","outcome":"CASE_OUTCOME_RECOVERED","occurredAt":"2025-12-31T23:00:00Z"}}"#,
            msg.alert_id
        );
        let (_, e) = decode_event(Some(line.as_bytes()), [], NOW, &limits).unwrap();
        assert_eq!(
            (e.state, e.outcome),
            (CaseState::Resolved, CaseOutcome::Recovered)
        );
    }

    #[test]
    fn every_refusal_is_named() {
        let limits = Limits::default();
        let with = |f: &dyn Fn(&mut CaseEvent)| {
            let mut m = good();
            f(&mut m);
            reason(&m)
        };
        assert_eq!(with(&|m| m.alert_id.clear()), "missing_alert_id");
        assert_eq!(
            with(&|m| m.alert_id = "not-an-alert".into()),
            "unknown_alert"
        );
        assert_eq!(with(&|m| m.state = 0), "unknown_state");
        assert_eq!(with(&|m| m.state = 42), "unknown_state");
        assert_eq!(with(&|m| m.outcome = 9), "unknown_outcome");
        assert_eq!(with(&|m| m.occurred_at = None), "missing_timestamp");
        assert_eq!(
            with(&|m| m.occurred_at.as_mut().unwrap().nanos = -1),
            "invalid_timestamp"
        );
        assert_eq!(
            with(&|m| m.occurred_at = Some(timestamp_from_ms(NOW + 3_600_000))),
            "future_timestamp"
        );
        assert_eq!(with(&|m| m.owner = "x".repeat(300)), "field_too_long");
        let r = |p: &[u8]| {
            decode_event(Some(p), [], NOW, &limits)
                .unwrap_err()
                .reason()
        };
        assert_eq!(r(b""), "empty_payload");
        assert_eq!(r(b"{\"alertId\": 3"), "undecodable");
        assert_eq!(r(&[0x0a, 0xff]), "undecodable");
        assert_eq!(r(&[0, 1]), "invalid_framing");
        assert!(decode_event(None, [], NOW, &limits).is_err());
        // No customer data in the messages.
        let e = decode_event(
            Some(b"{\"owner\": \"Ana P\xc3\xa9rez\" x}"),
            [],
            NOW,
            &limits,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("Ana"), "{e}");
    }
}
