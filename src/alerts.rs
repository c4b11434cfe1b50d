//! Detractor alerts: which responses raise one, how urgent it is, and what
//! it carries. Pure: the service passes the clock reading and the segment's
//! current windows in, and gets bytes, key and headers out.
//!
//! One alert per accepted detractor (score ≤ `threshold`), late ones
//! included: closing the loop matters more than the window. Duplicates
//! never reach here (the engine reports them). The alert id is derived from
//! the response_id alone, so a redelivered alert carries the same id.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::engine::{AlertMark, WindowSpec, WindowStats};
use crate::pb::{AlertPriority, DetractorAlert, WindowNps};
use crate::schema::{ValidResponse, timestamp_from_ms as timestamp};

/// Content type header values, by format.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Message type header value: the fully qualified protobuf name.
pub const MESSAGE_TYPE: &str = "nps.v1.DetractorAlert";

/// How alerts are written on the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    #[default]
    Protobuf,
    /// The protobuf JSON mapping (camelCase fields, enum names, RFC 3339
    /// timestamps).
    Json,
}

impl std::str::FromStr for AlertFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "protobuf" => Ok(AlertFormat::Protobuf),
            "json" => Ok(AlertFormat::Json),
            other => Err(format!("`{other}` is not an alert format (protobuf, json)")),
        }
    }
}

/// When to alert and how urgently. Deserialized from the `[alerts]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertPolicy {
    /// Scores at or below this raise an alert (6: every detractor).
    pub threshold: u32,
    /// Scores at or below this are critical.
    pub critical_max_score: u32,
    /// customer_value at or above this is critical.
    pub critical_customer_value: f64,
    /// customer_value at or above this is high priority.
    pub high_customer_value: f64,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy {
            threshold: 6,
            critical_max_score: 3,
            critical_customer_value: 10_000.0,
            high_customer_value: 1_000.0,
        }
    }
}

impl AlertPolicy {
    pub fn should_alert(&self, response: &ValidResponse) -> bool {
        response.score <= self.threshold
    }

    /// The priority and the reasons for it (label-safe, fixed strings).
    pub fn priority(&self, response: &ValidResponse) -> (AlertPriority, Vec<&'static str>) {
        let value = response.msg.customer_value;
        let mut reasons = Vec::new();
        if response.score <= self.critical_max_score {
            reasons.push("lowest_scores");
        }
        if value.is_some_and(|v| v >= self.critical_customer_value) {
            reasons.push("top_value_customer");
        }
        if !reasons.is_empty() {
            return (AlertPriority::Critical, reasons);
        }
        if value.is_some_and(|v| v >= self.high_customer_value) {
            return (AlertPriority::High, vec!["high_value_customer"]);
        }
        (AlertPriority::Normal, vec!["detractor"])
    }
}

/// Deterministic alert id: 32 hex digits of xxh3-128 over the response_id.
pub fn alert_id(response_id: &str) -> String {
    format!(
        "{:032x}",
        xxhash_rust::xxh3::xxh3_128(response_id.as_bytes())
    )
}

/// What an alert says besides its response and its windows: whether the
/// response came late, which version of the alert it is (the engine's
/// mark: a revision, or a withdrawal of a response revised out of
/// detracting), and the share of the input its window figures cover (the
/// input partitions this instance owns, of the topic's), and the themes
/// its comment mentions (sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub late: bool,
    pub mark: AlertMark,
    pub partitions_covered: u32,
    pub partitions_total: u32,
    pub themes: Vec<String>,
    /// The response's value of each breakdown, by label.
    pub breakdowns: BTreeMap<String, String>,
}

/// A response's value of each breakdown, by label, as its alert carries
/// it (`DetractorAlert.breakdowns`); `breakdowns` are (label, attribute).
pub fn breakdown_values<'a>(
    response: &ValidResponse,
    breakdowns: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    breakdowns
        .into_iter()
        .map(|(label, attribute)| {
            let given = response.msg.attributes.get(attribute);
            let value = crate::engine::value_of(given.map(String::as_str));
            (label.to_string(), value.to_string())
        })
        .collect()
}

/// Builds the alert for a detractor. `windows` are the segment's windows as
/// they stand after this response was counted. A withdrawal's one
/// priority reason is `withdrawn`.
pub fn build(
    response: &ValidResponse,
    windows: &[(&WindowSpec, WindowStats)],
    context: &Context,
    emitted_at_ms: i64,
    policy: &AlertPolicy,
) -> DetractorAlert {
    let (priority, mut reasons) = policy.priority(response);
    if context.mark.withdrawn {
        reasons = vec!["withdrawn"];
    }
    let m = &response.msg;
    DetractorAlert {
        alert_id: alert_id(&m.response_id),
        response_id: m.response_id.clone(),
        customer_id: m.customer_id.clone(),
        product: m.product.clone(),
        region: m.region.clone(),
        channel: response.channel as i32,
        score: response.score,
        comment: m.comment.clone(),
        responded_at: m.responded_at,
        customer_value: m.customer_value,
        survey_id: m.survey_id.clone(),
        priority: priority as i32,
        priority_reasons: reasons.into_iter().map(String::from).collect(),
        segment_nps: windows
            .iter()
            .map(|(spec, s)| WindowNps {
                window: spec.name.clone(),
                nps: s.nps(),
                responses: s.responses(),
                margin_of_error: s.margin_of_error(),
                weighted_nps: s.weighted_nps(),
            })
            .collect(),
        emitted_at: Some(timestamp(emitted_at_ms)),
        late: context.late,
        attributes: m.attributes.clone(),
        revision: context.mark.revision,
        withdrawn: context.mark.withdrawn,
        partitions_covered: context.partitions_covered,
        partitions_total: context.partitions_total,
        themes: context.themes.clone(),
        breakdowns: context.breakdowns.clone(),
    }
}

/// The Kafka key: customer_id, else response_id, so one customer's alerts
/// stay in order on one partition.
pub fn key(alert: &DetractorAlert) -> &str {
    customer_key(&alert.customer_id, &alert.response_id)
}

/// The key of what nps-stream emits about a customer: the customer_id,
/// else the record's own id.
pub fn customer_key<'a>(customer_id: &'a str, otherwise: &'a str) -> &'a str {
    if customer_id.is_empty() {
        otherwise
    } else {
        customer_id
    }
}

/// Serializes an alert (or a promoter event: the same format setting) in
/// the chosen format; returns the bytes and the content type.
pub fn encode<M>(msg: &M, format: AlertFormat) -> (Vec<u8>, &'static str)
where
    M: prost::Message + serde::Serialize,
{
    match format {
        AlertFormat::Protobuf => (prost::Message::encode_to_vec(msg), CONTENT_TYPE_PROTOBUF),
        // Serializing a generated message to JSON cannot fail: no maps with
        // non-string keys, no non-finite numbers reach it (validation).
        AlertFormat::Json => (
            serde_json::to_vec(msg).unwrap_or_default(),
            CONTENT_TYPE_JSON,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Category, WindowLayout};
    use crate::pb::{Channel, SurveyResponse};
    use crate::schema::{Limits, validate};

    const NOW: i64 = 1_763_812_800_000;

    fn response(score: u32, value: Option<f64>, customer: &str) -> ValidResponse {
        let msg = SurveyResponse {
            response_id: "resp-42".into(),
            customer_id: customer.into(),
            product: "Tarjeta Oro".into(),
            region: "Norte".into(),
            channel: Channel::Phone as i32,
            score: Some(score),
            responded_at: Some(timestamp(NOW - 60_000)),
            comment: "Nadie me devolvió la llamada".into(),
            customer_value: value,
            survey_id: "s".into(),
            attributes: [("agent".to_string(), "17".to_string())].into(),
            updated_at: None,
        };
        validate(msg, NOW, &Limits::default()).unwrap()
    }

    #[test]
    fn only_scores_at_or_below_the_threshold_alert() {
        let p = AlertPolicy::default();
        assert!(p.should_alert(&response(6, None, "c")));
        assert!(!p.should_alert(&response(7, None, "c")));
        let strict = AlertPolicy {
            threshold: 4,
            ..AlertPolicy::default()
        };
        assert!(!strict.should_alert(&response(5, None, "c")));
    }

    #[test]
    fn priority_follows_score_and_customer_value() {
        let p = AlertPolicy::default();
        assert_eq!(
            p.priority(&response(3, None, "c")).0,
            AlertPriority::Critical
        );
        assert_eq!(
            p.priority(&response(6, Some(20_000.0), "c")).0,
            AlertPriority::Critical
        );
        assert_eq!(
            p.priority(&response(0, Some(20_000.0), "c")).1,
            vec!["lowest_scores", "top_value_customer"]
        );
        assert_eq!(
            p.priority(&response(5, Some(1_000.0), "c")).0,
            AlertPriority::High
        );
        assert_eq!(
            p.priority(&response(5, Some(999.0), "c")).0,
            AlertPriority::Normal
        );
    }

    #[test]
    fn alert_id_is_xxh3_128_of_the_response_id_in_lowercase_hex() {
        // Known answers from an independent implementation (Python's
        // xxhash 3: '%032x' % xxhash.xxh3_128_intdigest(b"resp-42")), so
        // a consumer in any language can recompute the id.
        assert_eq!(alert_id("resp-42"), "7beb20c9f52949d6f496b352b7d0354a");
        assert_eq!(alert_id("resp-43"), "84b93f5e88c351f0d5984d3eb8fae773");
        assert_eq!(alert_id(""), "99aa06d3014798d86001c324468d497f");
    }

    #[test]
    fn alert_carries_the_response_and_the_segment_nps() {
        let layout = WindowLayout::new(&["1h", "24h"], 48).unwrap();
        let mut hour = WindowStats::default();
        hour.add(Category::Promoter, 1.0);
        hour.add(Category::Detractor, 3.0);
        let windows = vec![
            (&layout.specs()[0], hour),
            (&layout.specs()[1], WindowStats::default()),
        ];
        let r = response(2, Some(1500.0), "cust-9");
        let a = build(
            &r,
            &windows,
            &Context::default(),
            NOW,
            &AlertPolicy::default(),
        );
        assert_eq!(a.alert_id, alert_id("resp-42"));
        assert_eq!(
            (a.product.as_str(), a.region.as_str(), a.score),
            ("Tarjeta Oro", "Norte", 2)
        );
        assert_eq!(a.channel, Channel::Phone as i32);
        assert_eq!(a.comment, "Nadie me devolvió la llamada");
        assert_eq!(a.priority, AlertPriority::Critical as i32);
        assert_eq!(a.emitted_at.unwrap().seconds, NOW / 1000);
        assert_eq!(a.segment_nps[0].window, "1h");
        assert_eq!(a.segment_nps[0].nps, Some(0.0));
        assert_eq!(a.segment_nps[0].weighted_nps, Some(-50.0));
        assert_eq!(a.segment_nps[1].nps, None, "an empty window has no NPS");
        assert_eq!(key(&a), "cust-9");
        let anonymous = build(
            &response(2, None, ""),
            &windows,
            &Context::default(),
            NOW,
            &AlertPolicy::default(),
        );
        assert_eq!(key(&anonymous), "resp-42");
    }

    #[test]
    fn a_withdrawal_says_so_in_its_reasons_and_carries_its_revision_and_share() {
        let context = Context {
            late: false,
            mark: AlertMark {
                revision: 2,
                withdrawn: true,
            },
            partitions_covered: 3,
            partitions_total: 12,
            themes: vec!["billing_errors".into(), "waiting_time".into()],
            breakdowns: [("team".to_string(), "Cobros".to_string())].into(),
        };
        let a = build(
            &response(2, Some(1500.0), "c"),
            &[],
            &context,
            NOW,
            &AlertPolicy::default(),
        );
        assert_eq!((a.revision, a.withdrawn), (2, true));
        assert_eq!(a.priority_reasons, vec!["withdrawn".to_string()]);
        assert_eq!((a.partitions_covered, a.partitions_total), (3, 12));
        assert_eq!(a.themes, ["billing_errors", "waiting_time"]);
        assert_eq!(a.breakdowns["team"], "Cobros");
        // The priority stays the policy's: only the reasons say withdrawn.
        assert_eq!(a.priority, AlertPriority::Critical as i32);
        let first = build(
            &response(2, Some(1500.0), "c"),
            &[],
            &Context::default(),
            NOW,
            &AlertPolicy::default(),
        );
        assert_eq!((first.revision, first.withdrawn), (0, false));
        assert_ne!(first.priority_reasons, vec!["withdrawn".to_string()]);
    }

    #[test]
    fn an_alert_carries_each_breakdown_value_as_counted() {
        let mut r = response(2, None, "c");
        r.msg
            .attributes
            .insert("team".into(), "Cobros Norte".into());
        r.msg.attributes.insert("agent".into(), "a\u{0}".into());
        let values = breakdown_values(&r, [("team", "team"), ("agent", "agent"), ("site", "site")]);
        let want: BTreeMap<String, String> = [
            ("team", "Cobros Norte"),
            ("agent", "invalid"),
            ("site", "unknown"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        assert_eq!(values, want);
    }

    #[test]
    fn both_formats_round_trip() {
        let a = build(
            &response(1, None, "c"),
            &[],
            &Context {
                late: true,
                ..Context::default()
            },
            NOW,
            &AlertPolicy::default(),
        );
        let (bytes, ct) = encode(&a, AlertFormat::Protobuf);
        assert_eq!(ct, CONTENT_TYPE_PROTOBUF);
        assert_eq!(
            <DetractorAlert as prost::Message>::decode(bytes.as_slice()).unwrap(),
            a
        );
        let (json, ct) = encode(&a, AlertFormat::Json);
        assert_eq!(ct, CONTENT_TYPE_JSON);
        let text = String::from_utf8(json).unwrap();
        assert!(
            text.contains(r#""alertId""#) && text.contains(r#""CHANNEL_PHONE""#),
            "{text}"
        );
        assert!(
            text.contains(r#""priority":"ALERT_PRIORITY_CRITICAL""#),
            "{text}"
        );
        let back: DetractorAlert = serde_json::from_str(&text).unwrap();
        assert_eq!(back, a);
    }
}
