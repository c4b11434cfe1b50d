//! Settings of the figures beside the segments: `[[breakdowns]]` (NPS by
//! an attribute of the answer, such as the team or the agent),
//! `[[benchmarks]]` (a product's sector quartiles) and `[[targets]]`
//! (the NPS a product should reach).

use std::collections::BTreeSet;

use serde::Deserialize;

use super::{ConfigError, invalid};
use crate::engine::{BreakdownSpec, MAX_BREAKDOWNS, MAX_VALUES};
use crate::themes::label_safe;

/// One `[[breakdowns]]` entry: count answers by the value of one of their
/// attributes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Breakdown {
    /// The key of `SurveyResponse.attributes` whose value is counted.
    pub attribute: String,
    /// The `breakdown` label value and the API's name for it.
    pub label: String,
    /// No NPS is shown (API, page, recording rule) for a value with fewer
    /// answers in the window.
    #[serde(default = "default_min_responses")]
    pub min_responses: u64,
    /// Most values counted as themselves; later ones count under `other`.
    #[serde(default = "default_max_values")]
    pub max_values: usize,
    /// Whether the values are exported to /metrics (`false`: the API and
    /// the page only, for thousands of values such as agents).
    #[serde(default = "default_true")]
    pub prometheus: bool,
}

fn default_min_responses() -> u64 {
    30
}

fn default_max_values() -> usize {
    500
}

fn default_true() -> bool {
    true
}

impl Breakdown {
    /// What the engine needs of it.
    pub fn spec(&self) -> BreakdownSpec {
        BreakdownSpec {
            label: self.label.clone(),
            max_values: self.max_values,
        }
    }
}

/// One `[[benchmarks]]` entry: where a product's sector stands (a
/// product of `*`: every product without an entry of its own).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Benchmark {
    pub product: String,
    pub p25: f64,
    pub median: f64,
    pub p75: f64,
    /// The survey the quartiles come from.
    pub source: String,
}

/// The product every other product falls back to.
pub const ANY_PRODUCT: &str = "*";

/// The benchmark of `product`: its own, else the `*` entry.
pub fn benchmark_of<'a>(benchmarks: &'a [Benchmark], product: &str) -> Option<&'a Benchmark> {
    benchmarks
        .iter()
        .find(|b| b.product == product)
        .or_else(|| benchmarks.iter().find(|b| b.product == ANY_PRODUCT))
}

/// One `[[targets]]` entry: the NPS a product (every region) or a product
/// in one region should reach.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub product: String,
    #[serde(default)]
    pub region: Option<String>,
    pub nps: f64,
}

pub(super) fn validate_breakdowns(breakdowns: &[Breakdown]) -> Result<(), ConfigError> {
    const KEY: &str = "[[breakdowns]]";
    if breakdowns.len() > MAX_BREAKDOWNS {
        return Err(invalid(
            KEY,
            format!(
                "at most {MAX_BREAKDOWNS} breakdowns, not {}",
                breakdowns.len()
            ),
        ));
    }
    let (mut labels, mut attributes) = (BTreeSet::new(), BTreeSet::new());
    for b in breakdowns {
        if !label_safe(&b.label) {
            return Err(invalid(
                KEY,
                format!(
                    "label `{}` must be 1 to 32 characters of a-z, 0-9 and _",
                    b.label
                ),
            ));
        }
        if b.attribute.is_empty() || b.attribute.len() > 64 {
            return Err(invalid(
                KEY,
                format!("attribute of {} must be 1 to 64 bytes", b.label),
            ));
        }
        if !labels.insert(&b.label) || !attributes.insert(&b.attribute) {
            return Err(invalid(
                KEY,
                format!("{} ({}) is given twice", b.label, b.attribute),
            ));
        }
        if !(1..=MAX_VALUES).contains(&b.max_values) {
            return Err(invalid(
                KEY,
                format!("max_values of {} must be from 1 to {MAX_VALUES}", b.label),
            ));
        }
        if b.min_responses == 0 {
            return Err(invalid(
                KEY,
                format!("min_responses of {} must be at least 1", b.label),
            ));
        }
    }
    Ok(())
}

pub(super) fn validate_benchmarks(benchmarks: &[Benchmark]) -> Result<(), ConfigError> {
    const KEY: &str = "[[benchmarks]]";
    let mut seen = BTreeSet::new();
    for b in benchmarks {
        let quartiles = [b.p25, b.median, b.p75];
        if b.product.is_empty() || b.source.trim().is_empty() {
            return Err(invalid(KEY, "product and source must not be empty"));
        }
        if quartiles.iter().any(|q| !(-100.0..=100.0).contains(q)) {
            return Err(invalid(
                KEY,
                format!("quartiles of {} must be from -100 to 100", b.product),
            ));
        }
        if !(b.p25 <= b.median && b.median <= b.p75) {
            return Err(invalid(
                KEY,
                format!("{}: p25 <= median <= p75 must hold", b.product),
            ));
        }
        if !seen.insert(&b.product) {
            return Err(invalid(KEY, format!("{} has two benchmarks", b.product)));
        }
    }
    Ok(())
}

pub(super) fn validate_targets(targets: &[Target]) -> Result<(), ConfigError> {
    let mut seen = BTreeSet::new();
    for t in targets {
        if t.product.is_empty() || t.region.as_deref() == Some("") {
            return Err(invalid(
                "[[targets]]",
                "product (and region, when given) must not be empty",
            ));
        }
        if !(-100.0..=100.0).contains(&t.nps) {
            return Err(invalid(
                "[[targets]]",
                format!("nps of {} must be from -100 to 100", t.product),
            ));
        }
        if !seen.insert((&t.product, &t.region)) {
            return Err(invalid(
                "[[targets]]",
                format!(
                    "{} {} has two targets",
                    t.product,
                    t.region.as_deref().unwrap_or("(every region)")
                ),
            ));
        }
    }
    Ok(())
}
