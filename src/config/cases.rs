//! Settings of case tracking (closing the loop): flags, variables and the
//! `[cases]` table of the settings file.

use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::{ConfigError, check_topic, de_duration, duration, invalid, on_off};
use crate::cases::{CaseConfig, MAX_ROOT_CAUSES, Sla};

/// Flags of `run` for case tracking (flattened into its flags).
#[derive(Debug, Clone, Default, Args)]
pub struct CasesArgs {
    /// Case tracking: `on` (every detractor alert read back becomes a case
    /// with a contact SLA) or `off` [default: on].
    #[arg(long, env = "NPS_CASES")]
    pub cases: Option<String>,
    /// Topic a CRM writes `CaseEvent`s to [default: nps-case-events].
    #[arg(long, env = "NPS_CASE_EVENTS_TOPIC")]
    pub case_events_topic: Option<String>,
    /// Topic escalations go to [default: nps-case-escalations].
    #[arg(long, env = "NPS_ESCALATIONS_TOPIC")]
    pub escalations_topic: Option<String>,
    /// Contact SLA per priority, from the alert's emitted_at
    /// [default: critical=4h,high=24h,normal=48h].
    #[arg(long, env = "NPS_CONTACT_SLA")]
    pub contact_sla: Option<String>,
    /// A customer with a case opened within this is a repeat detractor
    /// [default: 90d].
    #[arg(long, env = "NPS_REPEAT_HORIZON")]
    pub repeat_horizon: Option<String>,
    /// How long a case event waits for its alert before it is dead-lettered
    /// as `unknown_alert` [default: 10m].
    #[arg(long, env = "NPS_ORPHAN_GRACE")]
    pub orphan_grace: Option<String>,
    /// How long a closed case is kept, so that a REOPENED still finds it
    /// [default: 30d].
    #[arg(long, env = "NPS_CLOSED_RETENTION")]
    pub closed_retention: Option<String>,
    /// Most cases held, open and closed; beyond it the oldest closed case
    /// is forgotten first, then the oldest open one (counted)
    /// [default: 2000000].
    #[arg(long, env = "NPS_MAX_CASES")]
    pub max_cases: Option<usize>,
    /// Most customers remembered for repeat detection; beyond it the tenth
    /// whose last cases are oldest are forgotten [default: 4000000].
    #[arg(long, env = "NPS_MAX_CUSTOMERS")]
    pub max_customers: Option<usize>,
}

/// The `[cases]` settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CasesSettings {
    pub enabled: bool,
    pub case_events_topic: String,
    pub escalations_topic: String,
    #[serde(deserialize_with = "de_sla")]
    pub contact_sla: Sla,
    #[serde(deserialize_with = "de_duration")]
    pub repeat_horizon: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub orphan_grace: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub closed_retention: Duration,
    pub max_cases: usize,
    pub max_customers: usize,
    /// The root causes a RESOLVED case event may name (label-safe names);
    /// any other non-empty value is counted as `other`.
    pub root_causes: Vec<String>,
}

impl Default for CasesSettings {
    fn default() -> Self {
        let c = CaseConfig::default();
        CasesSettings {
            enabled: true,
            case_events_topic: "nps-case-events".into(),
            escalations_topic: "nps-case-escalations".into(),
            contact_sla: c.sla,
            repeat_horizon: c.repeat_horizon,
            orphan_grace: c.orphan_grace,
            closed_retention: c.closed_retention,
            max_cases: c.max_cases,
            max_customers: c.max_customers,
            root_causes: c.root_causes,
        }
    }
}

fn de_sla<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Sla, D::Error> {
    let s = String::deserialize(d)?;
    Sla::parse(&s).map_err(serde::de::Error::custom)
}

impl CasesSettings {
    /// Overrides what the flags (or their variables) name.
    pub(super) fn apply(&mut self, args: &CasesArgs) -> Result<(), ConfigError> {
        if let Some(v) = &args.cases {
            self.enabled = on_off("--cases", v)?;
        }
        if let Some(v) = &args.case_events_topic {
            self.case_events_topic.clone_from(v);
        }
        if let Some(v) = &args.escalations_topic {
            self.escalations_topic.clone_from(v);
        }
        if let Some(v) = &args.contact_sla {
            self.contact_sla = Sla::parse(v).map_err(|e| invalid("--contact-sla", e))?;
        }
        if let Some(v) = &args.repeat_horizon {
            self.repeat_horizon = duration("--repeat-horizon", v)?;
        }
        if let Some(v) = &args.orphan_grace {
            self.orphan_grace = duration("--orphan-grace", v)?;
        }
        if let Some(v) = &args.closed_retention {
            self.closed_retention = duration("--closed-retention", v)?;
        }
        if let Some(v) = args.max_cases {
            self.max_cases = v;
        }
        if let Some(v) = args.max_customers {
            self.max_customers = v;
        }
        Ok(())
    }

    pub(super) fn validate(&self, alerts_topic: &str) -> Result<(), ConfigError> {
        check_topic("--case-events-topic", &self.case_events_topic)?;
        check_topic("--escalations-topic", &self.escalations_topic)?;
        if self.enabled && self.case_events_topic == alerts_topic {
            return Err(invalid(
                "--case-events-topic",
                "must differ from --alerts-topic",
            ));
        }
        if self.max_cases == 0 {
            return Err(invalid("--max-cases", "must be at least 1"));
        }
        if self.max_customers == 0 {
            return Err(invalid("--max-customers", "must be at least 1"));
        }
        self.check_root_causes()
            .map_err(|reason| invalid("[cases] root_causes", reason))
    }

    /// At most `MAX_ROOT_CAUSES` label-safe names, each once, not `other`.
    fn check_root_causes(&self) -> Result<(), String> {
        let causes = &self.root_causes;
        if causes.len() > MAX_ROOT_CAUSES {
            return Err(format!(
                "at most {MAX_ROOT_CAUSES} root causes, got {}",
                causes.len()
            ));
        }
        for (i, c) in causes.iter().enumerate() {
            if !crate::themes::label_safe(c) {
                return Err(format!(
                    "`{c}` must be 1 to 32 characters of a-z, 0-9 and _"
                ));
            }
            if c == "other" {
                return Err("`other` is what any unlisted value counts as".into());
            }
            if causes[..i].contains(c) {
                return Err(format!("`{c}` is listed twice"));
            }
        }
        Ok(())
    }

    /// The tracker's settings.
    pub fn tracker(&self) -> CaseConfig {
        CaseConfig {
            sla: self.contact_sla,
            repeat_horizon: self.repeat_horizon,
            orphan_grace: self.orphan_grace,
            closed_retention: self.closed_retention,
            max_cases: self.max_cases,
            max_customers: self.max_customers,
            root_causes: self.root_causes.clone(),
            ..CaseConfig::default()
        }
    }
}
