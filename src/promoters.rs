//! Promoter events: which responses raise one, their tier and suggested
//! actions, and what the event carries. Pure: the service passes the clock
//! reading in and gets the event out; the `[promoters]` table configures
//! tiers and actions.
//!
//! One event per accepted promoter (score 9–10), late ones included; a
//! revision of a promoter sends it again (same `event_id`) with the new
//! fields, and a revision below 9 sends it once more, `withdrawn`. These
//! events feed referral and advocacy programmes. They are not meant for
//! inviting only happy customers to public review sites, which Google's
//! and Trustpilot's policies and the FTC's rule on consumer reviews
//! (16 CFR 465) forbid.

use serde::Deserialize;

use crate::engine::Category;
use crate::pb::PromoterEvent;
use crate::schema::{ValidResponse, timestamp_from_ms as timestamp};

/// Message type header value.
pub const MESSAGE_TYPE: &str = "nps.v1.PromoterEvent";
/// Most tiers (each is a label value of `nps_promoter_events_total`).
pub const MAX_TIERS: usize = 8;
/// Most action rules.
pub const MAX_ACTIONS: usize = 32;

/// A tier: promoters whose customer_value is at least `min_customer_value`
/// (absent counts as 0), and below every higher tier's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub name: String,
    #[serde(default)]
    pub min_customer_value: f64,
}

/// An action suggested for the promoters that meet every condition given.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRule {
    pub name: String,
    /// 9 (every promoter) or 10.
    #[serde(default = "nine")]
    pub min_score: u32,
    /// Only promoters in these tiers (empty: every tier).
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Only promoters who left a comment.
    #[serde(default)]
    pub with_comment: bool,
}

fn nine() -> u32 {
    9
}

/// The `[promoters]` settings: whether events are sent, where, and their
/// tiers and actions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromoterPolicy {
    pub enabled: bool,
    pub topic: String,
    /// Highest threshold first once validated.
    pub tiers: Vec<Tier>,
    pub actions: Vec<ActionRule>,
}

impl Default for PromoterPolicy {
    /// Tiers at the alert policy's value thresholds; a referral ask for
    /// every promoter, a case study for high-value ones who said why.
    fn default() -> Self {
        let tier = |name: &str, min: f64| Tier {
            name: name.into(),
            min_customer_value: min,
        };
        PromoterPolicy {
            enabled: true,
            topic: "nps-promoter-events".into(),
            tiers: vec![
                tier("strategic", 10_000.0),
                tier("high_value", 1_000.0),
                tier("standard", 0.0),
            ],
            actions: vec![
                ActionRule {
                    name: "referral".into(),
                    min_score: 9,
                    tiers: vec![],
                    with_comment: false,
                },
                ActionRule {
                    name: "case_study".into(),
                    min_score: 9,
                    tiers: vec!["strategic".into(), "high_value".into()],
                    with_comment: true,
                },
            ],
        }
    }
}

impl PromoterPolicy {
    /// Checks the tiers and actions and orders the tiers, highest threshold
    /// first. The error says what is wrong, for `[promoters]`.
    pub fn validate(&mut self) -> Result<(), String> {
        if self.tiers.is_empty() || self.tiers.len() > MAX_TIERS {
            return Err(format!("tiers: from 1 to {MAX_TIERS}"));
        }
        self.tiers
            .sort_by(|a, b| b.min_customer_value.total_cmp(&a.min_customer_value));
        let mut names = std::collections::BTreeSet::new();
        for t in &self.tiers {
            if !crate::themes::label_safe(&t.name) {
                return Err(format!(
                    "tier `{}`: 1 to 32 of a-z, 0-9 and _ (it is a label value)",
                    t.name
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(format!("tier `{}` given twice", t.name));
            }
            if !(t.min_customer_value.is_finite() && t.min_customer_value >= 0.0) {
                return Err(format!(
                    "tier `{}`: min_customer_value must be a number ≥ 0",
                    t.name
                ));
            }
        }
        if !self.tiers.iter().any(|t| t.min_customer_value == 0.0) {
            return Err(
                "tiers: one tier needs min_customer_value = 0 (promoters without a customer_value fall in it)"
                    .into(),
            );
        }
        if let Some(w) = self
            .tiers
            .windows(2)
            .find(|w| w[0].min_customer_value == w[1].min_customer_value)
        {
            return Err(format!(
                "tiers `{}` and `{}` have the same min_customer_value",
                w[0].name, w[1].name
            ));
        }
        if self.actions.len() > MAX_ACTIONS {
            return Err(format!("actions: at most {MAX_ACTIONS}"));
        }
        let mut actions = std::collections::BTreeSet::new();
        for a in &self.actions {
            if !crate::themes::label_safe(&a.name) {
                return Err(format!("action `{}`: 1 to 32 of a-z, 0-9 and _", a.name));
            }
            if !actions.insert(a.name.as_str()) {
                return Err(format!("action `{}` given twice", a.name));
            }
            if !(9..=10).contains(&a.min_score) {
                return Err(format!("action `{}`: min_score is 9 or 10", a.name));
            }
            if let Some(t) = a.tiers.iter().find(|t| !names.contains(t.as_str())) {
                return Err(format!("action `{}`: no tier `{t}`", a.name));
            }
        }
        Ok(())
    }

    /// The index (in `tiers`, highest first) of the tier a customer_value
    /// falls in.
    pub fn tier(&self, customer_value: Option<f64>) -> usize {
        let v = customer_value.filter(|v| v.is_finite()).unwrap_or(0.0);
        self.tiers
            .iter()
            .position(|t| v >= t.min_customer_value)
            .unwrap_or(self.tiers.len().saturating_sub(1))
    }

    /// The tier names, highest first (label values).
    pub fn tier_names(&self) -> Vec<String> {
        self.tiers.iter().map(|t| t.name.clone()).collect()
    }

    /// The actions that apply to a promoter of this score, tier and comment.
    fn actions(&self, score: u32, tier: &str, commented: bool) -> Vec<String> {
        self.actions
            .iter()
            .filter(|a| {
                score >= a.min_score
                    && (a.tiers.is_empty() || a.tiers.iter().any(|t| t == tier))
                    && (commented || !a.with_comment)
            })
            .map(|a| a.name.clone())
            .collect()
    }
}

/// What a counted version means for promoter events: from its category and
/// the previous version's (None for a first version). `Some(false)`: send
/// the event; `Some(true)`: send it withdrawn; None: nothing to send.
pub fn transition(now: Category, before: Option<Category>) -> Option<bool> {
    match (now, before) {
        (Category::Promoter, _) => Some(false),
        (_, Some(Category::Promoter)) => Some(true),
        _ => None,
    }
}

/// Builds the event of a promoter (or, `withdrawn`, of a response revised
/// out of promoting), with the index of its tier; `themes`: those its
/// comment mentions, sorted.
pub fn build(
    response: &ValidResponse,
    policy: &PromoterPolicy,
    (late, withdrawn): (bool, bool),
    themes: Vec<String>,
    emitted_at_ms: i64,
) -> (PromoterEvent, usize) {
    let m = &response.msg;
    let tier = policy.tier(m.customer_value);
    let tier_name = policy.tiers.get(tier).map(|t| t.name.clone());
    let suggested_actions = match (&tier_name, withdrawn) {
        (Some(name), false) => policy.actions(response.score, name, !m.comment.trim().is_empty()),
        _ => Vec::new(),
    };
    let event = PromoterEvent {
        event_id: crate::alerts::alert_id(&m.response_id),
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
        attributes: m.attributes.clone(),
        tier: tier_name.unwrap_or_default(),
        suggested_actions,
        emitted_at: Some(timestamp(emitted_at_ms)),
        withdrawn,
        updated_at: m.updated_at,
        late,
        themes,
    };
    (event, tier)
}

/// The Kafka key: customer_id, else response_id.
pub fn key(event: &PromoterEvent) -> &str {
    crate::alerts::customer_key(&event.customer_id, &event.response_id)
}

#[cfg(test)]
mod tests;
