//! Alerts read back from the alerts topic (what opens a case), and the
//! escalation record: what the tracker decided, with the alert's content.

use prost::Message;

use super::{AlertIn, Escalation, alert_id, alert_key};
use crate::pb::{AlertPriority, CaseEscalation, DetractorAlert};
use crate::schema::timestamp_from_ms;

/// Why a record of the alerts topic opens no case. Only records written by
/// something else than nps-stream get here (the topic is nps-stream's
/// output), so they are counted and skipped, not dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AlertReadError {
    #[error("not a DetractorAlert in protobuf or its JSON mapping")]
    Undecodable,
    #[error("alert_id is not one nps-stream writes")]
    AlertId,
    #[error("emitted_at is missing")]
    EmittedAt,
}

/// Decodes an alert as written by nps-stream in either format (a value
/// starting with `{` is JSON).
pub fn decode_alert(value: &[u8]) -> Result<DetractorAlert, AlertReadError> {
    if value.first() == Some(&b'{') {
        serde_json::from_slice(value).map_err(|_| AlertReadError::Undecodable)
    } else {
        DetractorAlert::decode(value).map_err(|_| AlertReadError::Undecodable)
    }
}

/// What the tracker needs of an alert at `offset` of alerts partition
/// `partition`.
pub fn alert_in(
    alert: &DetractorAlert,
    partition: i32,
    offset: i64,
) -> Result<AlertIn<'_>, AlertReadError> {
    let key = alert_key(&alert.alert_id).ok_or(AlertReadError::AlertId)?;
    let emitted = alert.emitted_at.as_ref().ok_or(AlertReadError::EmittedAt)?;
    Ok(AlertIn {
        alert: key,
        customer_id: &alert.customer_id,
        product: &alert.product,
        region: &alert.region,
        priority: AlertPriority::try_from(alert.priority).unwrap_or_default(),
        emitted_at_ms: crate::schema::ms_from_timestamp(emitted),
        partition,
        offset,
    })
}

/// Deterministic from the alert and the level, so an escalation sent again
/// after a crash carries the same id.
pub fn escalation_id(alert: &str, level: u8) -> String {
    format!(
        "{:032x}",
        xxhash_rust::xxh3::xxh3_128(format!("{alert}/escalation/{level}").as_bytes())
    )
}

/// Builds the record; `alert` is the alert the case was opened from (at
/// hand for a repeat detractor, read back at a due check).
pub fn build(
    esc: &Escalation,
    alert: &DetractorAlert,
    product: &str,
    region: &str,
    emitted_at_ms: i64,
) -> CaseEscalation {
    let id = alert_id(esc.alert);
    CaseEscalation {
        escalation_id: escalation_id(&id, esc.level),
        alert_id: id,
        level: u32::from(esc.level),
        reason: esc.reason.as_str().into(),
        previous_alert_id: esc.previous.map(alert_id).unwrap_or_default(),
        product: product.into(),
        region: region.into(),
        priority: esc.priority as i32,
        customer_id: alert.customer_id.clone(),
        customer_value: alert.customer_value,
        score: alert.score,
        comment: alert.comment.clone(),
        opened_at: Some(timestamp_from_ms(esc.opened_at_ms)),
        due_at: Some(timestamp_from_ms(esc.due_at_ms)),
        state: esc.state as i32,
        emitted_at: Some(timestamp_from_ms(emitted_at_ms)),
        themes: alert.themes.clone(),
        breakdowns: alert.breakdowns.clone(),
    }
}

/// The Kafka key: the customer id, else the alert id.
pub fn key(e: &CaseEscalation) -> &str {
    crate::alerts::customer_key(&e.customer_id, &e.alert_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertFormat;
    use crate::cases::{EscalationReason, SegmentId};
    use crate::pb::CaseState;

    #[test]
    fn alerts_read_back_in_either_format_open_the_same_case() {
        let alert = DetractorAlert {
            alert_id: crate::alerts::alert_id("r-9"),
            customer_id: "c-9".into(),
            product: "p".into(),
            region: "r".into(),
            priority: AlertPriority::Critical as i32,
            emitted_at: Some(timestamp_from_ms(1_767_225_600_123)),
            ..Default::default()
        };
        for format in [AlertFormat::Protobuf, AlertFormat::Json] {
            let (bytes, _) = crate::alerts::encode(&alert, format);
            let back = decode_alert(&bytes).unwrap();
            let a = alert_in(&back, 2, 40).unwrap();
            assert_eq!(Some(a.alert), alert_key(&alert.alert_id));
            assert_eq!((a.customer_id, a.product, a.region), ("c-9", "p", "r"));
            assert_eq!(a.priority, AlertPriority::Critical);
            assert_eq!(
                (a.emitted_at_ms, a.partition, a.offset),
                (1_767_225_600_123, 2, 40)
            );
        }
        assert_eq!(
            decode_alert(b"{nope").unwrap_err(),
            AlertReadError::Undecodable
        );
        let mut other = alert.clone();
        other.alert_id = "x".into();
        assert_eq!(alert_in(&other, 0, 0).unwrap_err(), AlertReadError::AlertId);
        other.alert_id = alert.alert_id.clone();
        other.emitted_at = None;
        assert_eq!(
            alert_in(&other, 0, 0).unwrap_err(),
            AlertReadError::EmittedAt
        );
    }

    #[test]
    fn ids_are_deterministic_per_level_and_the_record_carries_the_alert() {
        let a = crate::alerts::alert_id("r-1");
        assert_eq!(escalation_id(&a, 1), escalation_id(&a, 1));
        assert_ne!(escalation_id(&a, 1), escalation_id(&a, 2));
        let alert = DetractorAlert {
            alert_id: a.clone(),
            customer_id: "c-1".into(),
            score: 2,
            comment: "nadie llamó".into(),
            customer_value: Some(900.0),
            ..Default::default()
        };
        let esc = Escalation {
            alert: crate::cases::alert_key(&a).unwrap(),
            level: 2,
            reason: EscalationReason::ContactSlaMissed,
            previous: None,
            segment: SegmentId(0),
            priority: AlertPriority::High,
            opened_at_ms: 1_000,
            due_at_ms: 2_000,
            state: CaseState::Acknowledged,
            partition: 0,
            alert_offset: 7,
        };
        let r = build(&esc, &alert, "p", "r", 5_000);
        assert_eq!(r.alert_id, a);
        assert_eq!(r.escalation_id, escalation_id(&a, 2));
        assert_eq!((r.level, r.reason.as_str()), (2, "contact_sla_missed"));
        assert_eq!(r.previous_alert_id, "");
        assert_eq!((r.score, r.customer_value), (2, Some(900.0)));
        assert_eq!(r.comment, "nadie llamó");
        assert_eq!(r.state, CaseState::Acknowledged as i32);
        assert_eq!(r.due_at.unwrap().seconds, 2);
        assert_eq!(key(&r), "c-1");
        let prev = crate::alerts::alert_id("r-0");
        let esc = Escalation {
            previous: crate::cases::alert_key(&prev),
            ..esc
        };
        let r = build(&esc, &alert, "p", "r", 5_000);
        assert_eq!(r.previous_alert_id, prev);
    }
}
