//! Trends: `/api/v1/segments/trend?product=…&region=…&window=…` and
//! `/api/v1/breakdowns/{label}/trend?value=…&window=…`, a point per
//! bucket of the window from the engine's own buckets (oldest first), so
//! a trend shows the window's history from the first look.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ApiError, Counts, bad, window_named};
use crate::engine::TrendPoint;
use crate::metrics::{TrendOf, TrendRead, View};

/// One bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub start_ms: i64,
    #[serde(flatten)]
    pub counts: Counts,
    /// Null for a bucket without answers.
    pub nps: Option<f64>,
    pub margin_of_error: Option<f64>,
}

/// A trend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trend {
    pub window: String,
    /// Each point's width.
    pub bucket_ms: i64,
    pub refreshed_at_ms: i64,
    pub points: Vec<Point>,
}

/// Why a trend is not answered.
#[derive(Debug, Clone, PartialEq)]
pub enum TrendError {
    /// A refused request (400).
    Bad(ApiError),
    /// Nothing of that name is held (404).
    NotFound(ApiError),
}

/// The named parameters (all required, no other), in order.
fn required<'a>(
    params: &'a BTreeMap<String, String>,
    names: &[&str],
) -> Result<Vec<&'a str>, TrendError> {
    if let Some(k) = params.keys().find(|k| !names.contains(&k.as_str())) {
        let known = names.join(", ");
        return Err(TrendError::Bad(bad(format!(
            "unknown parameter `{k}` ({known})"
        ))));
    }
    names
        .iter()
        .map(|n| {
            let v = params.get(*n).map(String::as_str);
            v.ok_or_else(|| TrendError::Bad(bad(format!("{n}: required"))))
        })
        .collect()
}

/// What to read, checked against the view: the trend's subject, its read
/// (window, time), and the window's name and bucket width.
pub struct TrendRequest<'a> {
    pub of: TrendOf<'a>,
    pub read: TrendRead,
    window: String,
    bucket_ms: i64,
    refreshed_at_ms: i64,
}

/// A segment's trend request.
pub fn segment_request<'a>(
    view: &View,
    params: &'a BTreeMap<String, String>,
) -> Result<TrendRequest<'a>, TrendError> {
    let [product, region, window] = required(params, &["product", "region", "window"])?[..] else {
        return Err(TrendError::Bad(bad(
            "product, region and window are required",
        )));
    };
    request(view, TrendOf::Segment { product, region }, window)
}

/// A breakdown value's trend request.
pub fn value_request<'a>(
    view: &View,
    label: &str,
    params: &'a BTreeMap<String, String>,
) -> Result<TrendRequest<'a>, TrendError> {
    let [value, window] = required(params, &["value", "window"])?[..] else {
        return Err(TrendError::Bad(bad("value and window are required")));
    };
    let breakdown = (view.breakdowns.iter().position(|b| b.label == label))
        .ok_or_else(|| TrendError::NotFound(bad(format!("no breakdown `{label}`"))))?;
    request(view, TrendOf::Value { breakdown, value }, window)
}

fn request<'a>(view: &View, of: TrendOf<'a>, window: &str) -> Result<TrendRequest<'a>, TrendError> {
    let w = window_named(&view.window_names, window).map_err(TrendError::Bad)?;
    let bucket_ms = view.window_bucket_ms.get(w).copied().unwrap_or(0);
    Ok(TrendRequest {
        of,
        read: (w, view.refreshed_at_ms),
        window: window.to_string(),
        bucket_ms,
        refreshed_at_ms: view.refreshed_at_ms,
    })
}

/// The answer to `request` from the engine's buckets (`None`: not held).
pub fn trend(
    request: &TrendRequest<'_>,
    points: Option<Vec<TrendPoint>>,
) -> Result<Trend, TrendError> {
    let points = points.ok_or_else(|| TrendError::NotFound(bad("not in the windows")))?;
    Ok(Trend {
        window: request.window.clone(),
        bucket_ms: request.bucket_ms,
        refreshed_at_ms: request.refreshed_at_ms,
        points: points
            .into_iter()
            .map(|p| Point {
                start_ms: p.start_ms,
                counts: Counts::of(&p.stats),
                nps: p.stats.nps(),
                margin_of_error: p.stats.margin_of_error(),
            })
            .collect(),
    })
}
