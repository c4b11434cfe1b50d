//! The JSON API on the metrics port: `/api/v1/segments` (the window
//! figures of every segment, filtered, sorted and paged),
//! `/api/v1/summary` (what the instance holds and has done),
//! `/api/v1/themes` and `/api/v1/root-causes` (why: `why`),
//! `/api/v1/breakdowns/{label}` and `/api/v1/benchmarks` (`figures`). Pure: each
//! reads a [`View`] as the last refresh left it, the numbers /metrics
//! renders from the same view. No customer data: counts and scores only.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::{Category, WindowStats};
use crate::metrics::View;

/// Rows per page unless `per_page` says otherwise, and the most it may.
pub const DEFAULT_PER_PAGE: usize = 100;
pub const MAX_PER_PAGE: usize = 1000;

/// A refused request: 400, with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    pub error: String,
}

fn bad(error: impl Into<String>) -> ApiError {
    ApiError {
        error: error.into(),
    }
}

/// How rows are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    Product,
    Region,
    Nps,
    Responses,
    MarginOfError,
    WeightedNps,
}

/// The filters `/api/v1/segments` and `/api/v1/themes` share.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    window: Option<String>,
    product: Option<String>,
    region: Option<String>,
    /// Lowercase; in the product or the region.
    contains: Option<String>,
    /// Lowercase; in the product, in the region.
    product_contains: Option<String>,
    region_contains: Option<String>,
}

/// The filters' parameter names, for error messages.
const FILTERS: &str = "window, product, region, q, product_contains, region_contains";

impl Filter {
    /// Takes `k=v` when `k` is a filter; false when it is not.
    fn take(&mut self, k: &str, v: &str) -> bool {
        let lower = || Some(v.to_lowercase()).filter(|s| !s.is_empty());
        match k {
            "window" => self.window = Some(v.to_string()),
            "product" => self.product = Some(v.to_string()),
            "region" => self.region = Some(v.to_string()),
            "q" => self.contains = lower(),
            "product_contains" => self.product_contains = lower(),
            "region_contains" => self.region_contains = lower(),
            _ => return false,
        }
        true
    }

    /// Whether a segment passes the filters.
    fn matches(&self, product: &str, region: &str) -> bool {
        let has = |text: &str, part: &Option<String>| {
            part.as_deref()
                .is_none_or(|c| text.to_lowercase().contains(c))
        };
        self.product.as_deref().is_none_or(|p| p == product)
            && self.region.as_deref().is_none_or(|r| r == region)
            && (self.contains.is_none()
                || has(product, &self.contains)
                || has(region, &self.contains))
            && has(product, &self.product_contains)
            && has(region, &self.region_contains)
    }

    /// The index of the window asked for among `windows` (None: every
    /// window), or why it is not one of them.
    fn window_index(&self, windows: &[String]) -> Result<Option<usize>, ApiError> {
        self.window
            .as_deref()
            .map(|w| window_named(windows, w))
            .transpose()
    }
}

/// The index of window `w` among `windows`, or why it is not one of them.
fn window_named(windows: &[String], w: &str) -> Result<usize, ApiError> {
    windows.iter().position(|n| n == w).ok_or_else(|| {
        bad(format!(
            "window: `{w}` is not one of {}",
            windows.join(", ")
        ))
    })
}

/// A `/api/v1/segments` request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentQuery {
    filter: Filter,
    sort: Sort,
    descending: bool,
    page: usize,
    per_page: usize,
}

impl SegmentQuery {
    /// From the query string's parameters; unknown ones are refused (so
    /// a typo is not silently ignored).
    pub fn parse(params: &BTreeMap<String, String>) -> Result<SegmentQuery, ApiError> {
        let mut q = SegmentQuery {
            filter: Filter::default(),
            sort: Sort::Product,
            descending: false,
            page: 1,
            per_page: DEFAULT_PER_PAGE,
        };
        for (k, v) in params {
            if q.filter.take(k, v) {
                continue;
            }
            match k.as_str() {
                "sort" => {
                    q.sort = match v.as_str() {
                        "product" => Sort::Product,
                        "region" => Sort::Region,
                        "nps" => Sort::Nps,
                        "responses" => Sort::Responses,
                        "margin_of_error" => Sort::MarginOfError,
                        "weighted_nps" => Sort::WeightedNps,
                        other => {
                            return Err(bad(format!(
                                "sort: `{other}` is not one of product, region, nps, responses, margin_of_error, weighted_nps"
                            )));
                        }
                    }
                }
                "order" => {
                    q.descending = match v.as_str() {
                        "asc" => false,
                        "desc" => true,
                        other => return Err(bad(format!("order: `{other}` is not asc or desc"))),
                    }
                }
                "page" => {
                    q.page = v.parse().ok().filter(|p| *p >= 1).ok_or_else(|| {
                        bad(format!("page: `{v}` is not a page number (1, 2, ...)"))
                    })?;
                }
                "per_page" => {
                    q.per_page = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_PER_PAGE).contains(n))
                        .ok_or_else(|| {
                            bad(format!("per_page: `{v}` is not from 1 to {MAX_PER_PAGE}"))
                        })?;
                }
                other => {
                    return Err(bad(format!(
                        "unknown parameter `{other}` ({FILTERS}, sort, order, page, per_page)"
                    )));
                }
            }
        }
        Ok(q)
    }
}

/// One segment in one window: the numbers of its /metrics series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentRow {
    pub product: String,
    pub region: String,
    pub window: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// Null when the window holds no response.
    pub nps: Option<f64>,
    pub margin_of_error: Option<f64>,
    pub weighted_nps: Option<f64>,
    pub weight_net: f64,
    pub weight_total: f64,
}

impl SegmentRow {
    fn new(product: &str, region: &str, window: &str, w: &WindowStats) -> SegmentRow {
        SegmentRow {
            product: product.into(),
            region: region.into(),
            window: window.into(),
            counts: Counts::of(w),
            nps: w.nps(),
            margin_of_error: w.margin_of_error(),
            weighted_nps: w.weighted_nps(),
            weight_net: w.weight_net,
            weight_total: w.weight_total,
        }
    }
}

/// Answers in a window by category, as the API's rows give them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Counts {
    pub responses: u64,
    pub promoters: u64,
    pub passives: u64,
    pub detractors: u64,
}

impl Counts {
    pub fn of(w: &WindowStats) -> Counts {
        Counts {
            responses: w.responses(),
            promoters: w.count(Category::Promoter),
            passives: w.count(Category::Passive),
            detractors: w.count(Category::Detractor),
        }
    }
}

/// A page of rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentPage {
    pub refreshed_at_ms: i64,
    /// Rows matching the filters, over every page.
    pub total: usize,
    pub page: usize,
    pub per_page: usize,
    pub pages: usize,
    pub rows: Vec<SegmentRow>,
}

/// Orders two optional figures, absent ones last whatever the order.
fn by_figure(a: Option<f64>, b: Option<f64>, descending: bool) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) if descending => b.total_cmp(&a),
        (Some(a), Some(b)) => a.total_cmp(&b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

/// The rows `q` asks for.
pub fn segments(view: &View, q: &SegmentQuery) -> Result<SegmentPage, ApiError> {
    let windows = view.series.windows();
    let wanted: Vec<usize> = match q.filter.window_index(windows)? {
        Some(i) => vec![i],
        None => (0..windows.len()).collect(),
    };
    let mut rows: Vec<(usize, SegmentRow)> = Vec::new();
    for (product, region, stats) in view.series.segments() {
        if !q.filter.matches(product, region) {
            continue;
        }
        for &i in &wanted {
            if let Some(w) = stats.get(i).filter(|w| w.responses() > 0) {
                rows.push((i, SegmentRow::new(product, region, &windows[i], w)));
            }
        }
    }
    let names = |a: &(usize, SegmentRow), b: &(usize, SegmentRow)| {
        (&a.1.product, &a.1.region, a.0).cmp(&(&b.1.product, &b.1.region, b.0))
    };
    rows.sort_by(|a, b| {
        let primary = match q.sort {
            Sort::Product => a.1.product.cmp(&b.1.product),
            Sort::Region => a.1.region.cmp(&b.1.region),
            Sort::Responses => a.1.counts.responses.cmp(&b.1.counts.responses),
            Sort::Nps => return by_figure(a.1.nps, b.1.nps, q.descending).then(names(a, b)),
            Sort::MarginOfError => {
                return by_figure(a.1.margin_of_error, b.1.margin_of_error, q.descending)
                    .then(names(a, b));
            }
            Sort::WeightedNps => {
                return by_figure(a.1.weighted_nps, b.1.weighted_nps, q.descending)
                    .then(names(a, b));
            }
        };
        let primary = if q.descending {
            primary.reverse()
        } else {
            primary
        };
        primary.then(names(a, b))
    });
    let total = rows.len();
    let start = (q.page - 1).saturating_mul(q.per_page).min(total);
    let rows = rows
        .into_iter()
        .skip(start)
        .take(q.per_page)
        .map(|(_, r)| r)
        .collect();
    Ok(SegmentPage {
        refreshed_at_ms: view.refreshed_at_ms,
        total,
        page: q.page,
        per_page: q.per_page,
        pages: total.div_ceil(q.per_page),
        rows,
    })
}

/// Open or overdue cases by priority.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ByPriority {
    pub normal: u64,
    pub high: u64,
    pub critical: u64,
}

impl ByPriority {
    fn of(n: [u64; 4]) -> ByPriority {
        // Unspecified priorities are counted as normal.
        ByPriority {
            normal: n[0] + n[1],
            high: n[2],
            critical: n[3],
        }
    }
}

/// The case tracker's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CasesSummary {
    pub open: u64,
    pub overdue: u64,
    pub open_by_priority: ByPriority,
    pub overdue_by_priority: ByPriority,
    pub escalations: u64,
    pub closed: u64,
    pub closed_within_sla: u64,
    /// closed_within_sla / closed; null before a case closed.
    pub sla_met_share: Option<f64>,
}

/// Which input partitions this instance's figures cover.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Partitions {
    pub held: Vec<i32>,
    /// The input topic's partition count (0 when unknown).
    pub total: u32,
    /// Every partition: the figures are the whole input's.
    pub all: bool,
}

/// Refused input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejected {
    pub total: u64,
    pub by_reason: BTreeMap<String, u64>,
}

/// `/api/v1/summary`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub refreshed_at_ms: i64,
    pub windows: Vec<String>,
    /// Segments holding responses in some window.
    pub segments: usize,
    pub partitions: Partitions,
    pub consumed: u64,
    pub rejected: Rejected,
    pub alerts_sent: u64,
    pub promoter_events: u64,
    /// Null when case tracking is off.
    pub cases: Option<CasesSummary>,
    /// The window trends are drawn over: the longest (widest buckets).
    pub trend_window: Option<String>,
    /// The breakdowns counted (`[[breakdowns]]`).
    pub breakdowns: Vec<BreakdownSummary>,
    /// Products have sector benchmarks (`[[benchmarks]]`).
    pub benchmarks: bool,
}

/// A breakdown, as the page lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakdownSummary {
    pub label: String,
    pub min_responses: u64,
}

pub fn summary(view: &View) -> Summary {
    let c = &view.cases;
    let total = view.partitions_total;
    Summary {
        refreshed_at_ms: view.refreshed_at_ms,
        windows: view.series.windows().to_vec(),
        segments: view.series.segments().count(),
        partitions: Partitions {
            held: view.partitions_held.clone(),
            total,
            all: total > 0 && view.partitions_held.len() as u32 >= total,
        },
        consumed: view.consumed,
        rejected: Rejected {
            total: view.rejected,
            by_reason: view
                .rejected_by_reason
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        },
        alerts_sent: view.alerts_sent,
        promoter_events: view.promoter_events,
        cases: c.enabled.then(|| CasesSummary {
            open: c.open,
            overdue: c.overdue,
            open_by_priority: ByPriority::of(c.open_by_priority),
            overdue_by_priority: ByPriority::of(c.overdue_by_priority),
            escalations: c.escalations,
            closed: c.closed,
            closed_within_sla: c.closed_within_sla,
            sla_met_share: (c.closed > 0).then(|| c.closed_within_sla as f64 / c.closed as f64),
        }),
        trend_window: (view.window_names.iter().zip(&view.window_bucket_ms))
            .max_by_key(|(_, ms)| **ms)
            .map(|(name, _)| name.clone()),
        breakdowns: (view.breakdowns.iter())
            .map(|b| BreakdownSummary {
                label: b.label.clone(),
                min_responses: b.min_responses,
            })
            .collect(),
        benchmarks: !view.benchmarks.is_empty(),
    }
}

mod figures;
mod trend;
mod why;
pub use figures::{benchmarks, breakdown, has_breakdown};
pub use trend::{TrendError, TrendRequest, segment_request, trend, value_request};
pub use why::{ThemeQuery, root_causes, themes};

#[cfg(test)]
mod tests;
