//! The tracker's settings: contact SLAs per priority, horizons and caps;
//! and alert ids as numbers.

use std::time::Duration;

use crate::pb::AlertPriority;

/// Contact SLAs per priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sla {
    pub critical: Duration,
    pub high: Duration,
    pub normal: Duration,
}

impl Default for Sla {
    fn default() -> Self {
        Sla {
            critical: Duration::from_secs(4 * 3600),
            high: Duration::from_secs(24 * 3600),
            normal: Duration::from_secs(48 * 3600),
        }
    }
}

impl Sla {
    pub(super) fn ms(&self, p: AlertPriority) -> i64 {
        let d = match p {
            AlertPriority::Critical => self.critical,
            AlertPriority::High => self.high,
            AlertPriority::Normal | AlertPriority::Unspecified => self.normal,
        };
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    /// Parses `critical=4h,high=24h,normal=48h` (any subset; the others
    /// keep their default).
    pub fn parse(s: &str) -> Result<Sla, String> {
        let mut sla = Sla::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not PRIORITY=DURATION"))?;
            let d = humantime::parse_duration(v.trim())
                .map_err(|_| format!("`{v}` is not a duration (e.g. 4h, 30m)"))?;
            if d.is_zero() {
                return Err(format!("{k}: an SLA must be longer than zero"));
            }
            match k.trim() {
                "critical" => sla.critical = d,
                "high" => sla.high = d,
                "normal" => sla.normal = d,
                other => return Err(format!("`{other}`: priorities are critical, high, normal")),
            }
        }
        Ok(sla)
    }
}

/// The tracker's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseConfig {
    pub sla: Sla,
    /// A customer's previous case opened within this: a repeat detractor.
    pub repeat_horizon: Duration,
    /// How long an event for an unknown alert waits for it.
    pub orphan_grace: Duration,
    /// How long a closed case is kept (a REOPENED may still come).
    pub closed_retention: Duration,
    /// Most cases held (open and closed); beyond it the oldest closed case
    /// is forgotten first, then the oldest open one (counted).
    pub max_cases: usize,
    /// Most customers remembered for repeat detection (oldest forgotten).
    pub max_customers: usize,
    /// Most events waiting for their alert (oldest expires early).
    pub max_orphans: usize,
    /// Most (product, region) names; beyond it `__other__`.
    pub max_segments: usize,
    /// The root causes a RESOLVED event may name (label-safe); any other
    /// non-empty value is `other`.
    pub root_causes: Vec<String>,
}

impl Default for CaseConfig {
    fn default() -> Self {
        CaseConfig {
            sla: Sla::default(),
            repeat_horizon: Duration::from_secs(90 * 86_400),
            orphan_grace: Duration::from_secs(600),
            closed_retention: Duration::from_secs(30 * 86_400),
            max_cases: 2_000_000,
            max_customers: 4_000_000,
            max_orphans: 100_000,
            max_segments: 10_000,
            root_causes: DEFAULT_ROOT_CAUSES.map(String::from).to_vec(),
        }
    }
}

/// The root causes a CRM may send unless `[cases] root_causes` says
/// otherwise: causes a closing agent finds on the company's side.
pub const DEFAULT_ROOT_CAUSES: [&str; 10] = [
    "billing_error",
    "communication_gap",
    "defective_product",
    "delivery_failure",
    "long_wait",
    "policy_limitation",
    "price",
    "process_failure",
    "staff_behaviour",
    "system_failure",
];

/// Most root causes in `[cases] root_causes` (a number below `OTHER`).
pub const MAX_ROOT_CAUSES: usize = 64;

impl CaseConfig {
    /// What a case event's `root_cause` names: none (empty), one of the
    /// listed causes, or `other`.
    pub fn root_cause(&self, value: &str) -> super::RootCause {
        if value.is_empty() {
            return super::RootCause::NONE;
        }
        match self.root_causes.iter().position(|c| c == value) {
            Some(i) if i < MAX_ROOT_CAUSES => super::RootCause(i as u8 + 1),
            _ => super::RootCause::OTHER,
        }
    }

    /// The label value of a root cause (`None` for none).
    pub fn root_cause_name(&self, cause: super::RootCause) -> Option<&str> {
        match cause {
            super::RootCause::NONE => None,
            super::RootCause::OTHER => Some("other"),
            super::RootCause(i) => self
                .root_causes
                .get(usize::from(i) - 1)
                .map(String::as_str)
                .or(Some("other")),
        }
    }
}

pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// An alert id: the 32 hex digits of `alerts::alert_id`, as a number.
pub type AlertKey = u128;

/// Parses an alert id; `None` when it is not 32 hex digits (such an alert
/// was not written by nps-stream).
pub fn alert_key(alert_id: &str) -> Option<AlertKey> {
    if alert_id.len() != 32 {
        return None;
    }
    u128::from_str_radix(alert_id, 16).ok()
}

/// The text form of an alert key.
pub fn alert_id(key: AlertKey) -> String {
    format!("{key:032x}")
}
