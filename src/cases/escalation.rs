//! The escalation record: what the tracker decided, with the alert's
//! content (read back from the alerts topic by the shell).

use super::{Escalation, alert_id};
use crate::pb::{CaseEscalation, DetractorAlert};
use crate::schema::timestamp_from_ms;

/// Deterministic from the alert and the level, so an escalation sent again
/// after a crash carries the same id.
pub fn escalation_id(alert: &str, level: u8) -> String {
    format!(
        "{:032x}",
        xxhash_rust::xxh3::xxh3_128(format!("{alert}/escalation/{level}").as_bytes())
    )
}

/// Builds the record; `alert` is the alert the case was opened from.
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
        previous_alert_id: esc.previous_alert.map(alert_id).unwrap_or_default(),
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
    }
}

/// The Kafka key: the customer id, else the alert id.
pub fn key(e: &CaseEscalation) -> &str {
    if e.customer_id.is_empty() {
        &e.alert_id
    } else {
        &e.customer_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{EscalationReason, SegmentId};
    use crate::pb::{AlertPriority, CaseState};

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
            previous_alert: None,
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
    }
}
