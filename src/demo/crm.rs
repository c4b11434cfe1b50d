//! The demo's CRM: it reads the detractor alerts and, like a contact
//! centre, acknowledges, calls and resolves most of them within the demo's
//! SLAs of seconds, some late, a few never (so escalations and the close
//! the loop panels move within a minute). It writes `CaseEvent`s to the
//! case-events topic keyed by customer id, as a real integration would.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::cases::Sla;
use crate::clock::Clock;
use crate::pb::{AlertPriority, CaseEvent, CaseOutcome, CaseState, DetractorAlert};
use crate::schema::timestamp_from_ms;
use crate::shutdown::Shutdown;

/// What the CRM will do with a case, by a hash of its alert id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Called within the SLA, then resolved.
    OnTime,
    /// Called after the SLA (escalated at level 1 first).
    Late,
    /// Never reached: UNREACHABLE within the SLA.
    Unreachable,
    /// Nobody acts: escalated at the SLA and at twice it.
    Never,
}

fn fate(alert_id: &str) -> Fate {
    match xxhash_rust::xxh3::xxh3_64(alert_id.as_bytes()) % 100 {
        0..65 => Fate::OnTime,
        65..80 => Fate::Late,
        80..85 => Fate::Unreachable,
        _ => Fate::Never,
    }
}

/// The events the CRM sends for an alert: (ms after the alert, state,
/// outcome).
fn plan(alert_id: &str, sla_ms: i64) -> Vec<(i64, CaseState, CaseOutcome)> {
    let h = xxhash_rust::xxh3::xxh3_64(alert_id.as_bytes());
    let outcome = match (h >> 8) % 10 {
        0..6 => CaseOutcome::Recovered,
        6..9 => CaseOutcome::NotRecovered,
        _ => CaseOutcome::Churned,
    };
    let at = |f: f64| (sla_ms as f64 * f) as i64;
    match fate(alert_id) {
        Fate::OnTime => vec![
            (at(0.1), CaseState::Acknowledged, CaseOutcome::Unspecified),
            (at(0.5), CaseState::Contacted, CaseOutcome::Unspecified),
            (at(0.8), CaseState::Resolved, outcome),
        ],
        Fate::Late => vec![
            (at(0.2), CaseState::Acknowledged, CaseOutcome::Unspecified),
            (
                at(0.6),
                CaseState::ContactAttempted,
                CaseOutcome::Unspecified,
            ),
            (at(1.4), CaseState::Contacted, CaseOutcome::Unspecified),
            (at(1.6), CaseState::Resolved, outcome),
        ],
        Fate::Unreachable => vec![(at(0.9), CaseState::Unreachable, CaseOutcome::Unspecified)],
        Fate::Never => Vec::new(),
    }
}

/// An event to send: (when, alert id, customer id, state, outcome, root
/// cause).
type Planned = (i64, String, String, i32, i32, String);

/// The root cause an agent records on resolving: the one behind the
/// comment's first theme, else one by a hash of the alert id; one in
/// twenty is free text a CRM did not map (counted as `other`).
fn root_cause(alert: &DetractorAlert) -> String {
    let h = xxhash_rust::xxh3::xxh3_64(alert.alert_id.as_bytes());
    if h % 20 == 7 {
        return "cliente molesto".into();
    }
    let by_theme = alert.themes.first().and_then(|t| match t.as_str() {
        "waiting_time" | "reachability" => Some("long_wait"),
        "billing_errors" => Some("billing_error"),
        "staff_attitude" => Some("staff_behaviour"),
        "staff_knowledge" | "resolution" | "process_complexity" => Some("process_failure"),
        "app_website" => Some("system_failure"),
        "product_quality" => Some("defective_product"),
        "delivery" => Some("delivery_failure"),
        "price_fees" => Some("price"),
        "communication" => Some("communication_gap"),
        "trust_security" => Some("policy_limitation"),
        _ => None,
    });
    let causes = crate::cases::DEFAULT_ROOT_CAUSES;
    by_theme
        .unwrap_or(causes[(h >> 16) as usize % causes.len()])
        .to_string()
}

/// Runs the CRM until `shutdown`.
pub(super) async fn run(
    bootstrap: String,
    alerts_topic: String,
    events_topic: String,
    sla: Sla,
    clock: Arc<dyn Clock>,
    mut shutdown: Shutdown,
) {
    let consumer: StreamConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "nps-demo-crm")
        .set("auto.offset.reset", "earliest")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "demo CRM: no consumer");
            return;
        }
    };
    let producer: FutureProducer = match ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "10")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "demo CRM: no producer");
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[&alerts_topic]) {
        tracing::warn!(error = %e, "demo CRM: cannot subscribe");
        return;
    }
    let mut agenda: BinaryHeap<Reverse<Planned>> = BinaryHeap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = tick.tick() => {
                let now = clock.now_ms();
                while agenda.peek().is_some_and(|Reverse(e)| e.0 <= now) {
                    let Some(Reverse((at, alert_id, customer_id, state, outcome, cause))) = agenda.pop() else {
                        break;
                    };
                    let resolved = state == CaseState::Resolved as i32;
                    let event = CaseEvent {
                        alert_id,
                        customer_id,
                        state,
                        occurred_at: Some(timestamp_from_ms(at)),
                        owner: "equipo-retencion".into(),
                        outcome,
                        root_cause: if resolved { cause } else { String::new() },
                    };
                    let bytes = event.encode_to_vec();
                    let record = FutureRecord::to(&events_topic)
                        .key(&event.customer_id)
                        .payload(&bytes);
                    if let Err((e, _)) = producer.send_result(record) {
                        tracing::debug!(error = %e, "demo CRM: event not sent");
                    }
                }
            }
            msg = consumer.recv() => {
                let Ok(msg) = msg else { continue };
                let Some(Ok(alert)) = msg.payload().map(DetractorAlert::decode) else {
                    continue;
                };
                let sla_ms = sla_ms(&sla, alert.priority());
                let emitted = alert
                    .emitted_at
                    .as_ref()
                    .map(crate::schema::ms_from_timestamp)
                    .unwrap_or_else(|| clock.now_ms());
                let cause = root_cause(&alert);
                for (after, state, outcome) in plan(&alert.alert_id, sla_ms) {
                    agenda.push(Reverse((
                        emitted + after,
                        alert.alert_id.clone(),
                        alert.customer_id.clone(),
                        state as i32,
                        outcome as i32,
                        cause.clone(),
                    )));
                }
            }
        }
    }
}

fn sla_ms(sla: &Sla, p: AlertPriority) -> i64 {
    let d = match p {
        AlertPriority::Critical => sla.critical,
        AlertPriority::High => sla.high,
        _ => sla.normal,
    };
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_cases_are_called_in_time_some_late_a_few_never() {
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..10_000 {
            *counts
                .entry(format!(
                    "{:?}",
                    fate(&crate::alerts::alert_id(&i.to_string()))
                ))
                .or_insert(0) += 1;
        }
        let share = |k: &str| counts[k] as f64 / 10_000.0;
        assert!((share("OnTime") - 0.65).abs() < 0.03, "{counts:?}");
        assert!((share("Late") - 0.15).abs() < 0.02, "{counts:?}");
        assert!((share("Never") - 0.15).abs() < 0.02, "{counts:?}");
        // On time means before the SLA; late after it.
        let id = (0..)
            .map(|i: u32| crate::alerts::alert_id(&i.to_string()))
            .find(|a| fate(a) == Fate::Late)
            .unwrap();
        let contact = plan(&id, 10_000)
            .into_iter()
            .find(|(_, s, _)| *s == CaseState::Contacted)
            .unwrap();
        assert!(contact.0 > 10_000);
    }
}
