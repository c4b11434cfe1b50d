//! Why: `/api/v1/themes` (per theme, the answers of the selected segments
//! that mention it in one window, their NPS, what the theme costs and its
//! share of the detractors' and promoters' comments) and
//! `/api/v1/root-causes` (the causes of resolved cases, a Pareto).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ApiError, FILTERS, Filter, bad};
use crate::engine::{COMMENTED, Category, WindowStats};
use crate::metrics::View;

/// A `/api/v1/themes` request: the filters of `/api/v1/segments`, the
/// window required.
#[derive(Debug, Clone, PartialEq)]
pub struct ThemeQuery {
    filter: Filter,
}

impl ThemeQuery {
    pub fn parse(params: &BTreeMap<String, String>) -> Result<ThemeQuery, ApiError> {
        let mut filter = Filter::default();
        for (k, v) in params {
            if !filter.take(k, v) {
                return Err(bad(format!("unknown parameter `{k}` ({FILTERS})")));
            }
        }
        if filter.window.is_none() {
            return Err(bad("window: required (a window of /api/v1/summary)"));
        }
        Ok(ThemeQuery { filter })
    }
}

/// One theme over the selected segments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThemeRow {
    pub theme: String,
    /// Answers whose comment mentions it, by category.
    pub responses: u64,
    pub promoters: u64,
    pub passives: u64,
    pub detractors: u64,
    /// NPS of those answers.
    pub nps_with: Option<f64>,
    /// NPS of the answers that do not mention it (null when every answer
    /// does).
    pub nps_without: Option<f64>,
    /// NPS of all answers minus `nps_without`: negative, the points the
    /// theme costs; positive, what it earns.
    pub impact_points: Option<f64>,
    /// Of the detractors' (promoters') comments, the share that mention
    /// it (null without any).
    pub detractor_comment_share: Option<f64>,
    pub promoter_comment_share: Option<f64>,
}

/// `/api/v1/themes`: every theme with answers in the window, most costly
/// first (by `impact_points`; themes without one last).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Themes {
    pub refreshed_at_ms: i64,
    pub window: String,
    /// Segments selected that hold answers in the window.
    pub segments: usize,
    /// Their answers, those with a comment, and their NPS.
    pub responses: u64,
    pub commented: u64,
    pub nps: Option<f64>,
    pub themes: Vec<ThemeRow>,
}

fn add(into: &mut WindowStats, w: &WindowStats) {
    into.promoters += w.promoters;
    into.passives += w.passives;
    into.detractors += w.detractors;
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The themes `q` asks for.
pub fn themes(view: &View, q: &ThemeQuery) -> Result<Themes, ApiError> {
    let windows = view.series.windows();
    let w = q.filter.window_index(windows)?.unwrap_or(0);
    let mut all = WindowStats::default();
    let mut segments = 0;
    for (product, region, stats) in view.series.segments() {
        if let Some(s) = stats.get(w).filter(|s| s.responses() > 0)
            && q.filter.matches(product, region)
        {
            add(&mut all, s);
            segments += 1;
        }
    }
    let mut rows: BTreeMap<u8, WindowStats> = BTreeMap::new();
    for (product, region, theme_rows) in view.series.theme_rows() {
        if !q.filter.matches(product, region) {
            continue;
        }
        for (row, stats) in theme_rows {
            if let Some(s) = stats.get(w) {
                add(rows.entry(*row).or_default(), s);
            }
        }
    }
    let commented = rows.remove(&COMMENTED).unwrap_or_default();
    let names = view.series.theme_names();
    let mut themes: Vec<ThemeRow> = rows
        .into_iter()
        .filter(|(_, t)| t.responses() > 0)
        .filter_map(|(row, t)| {
            let without = WindowStats {
                promoters: all.promoters.saturating_sub(t.promoters),
                passives: all.passives.saturating_sub(t.passives),
                detractors: all.detractors.saturating_sub(t.detractors),
                ..WindowStats::default()
            };
            let nps_without = without.nps();
            Some(ThemeRow {
                theme: names.get(usize::from(row))?.clone(),
                responses: t.responses(),
                promoters: t.count(Category::Promoter),
                passives: t.count(Category::Passive),
                detractors: t.count(Category::Detractor),
                nps_with: t.nps(),
                nps_without,
                impact_points: all.nps().zip(nps_without).map(|(a, b)| a - b),
                detractor_comment_share: share(t.detractors, commented.detractors),
                promoter_comment_share: share(t.promoters, commented.promoters),
            })
        })
        .collect();
    themes.sort_by(|a, b| {
        super::by_figure(a.impact_points, b.impact_points, false).then(a.theme.cmp(&b.theme))
    });
    Ok(Themes {
        refreshed_at_ms: view.refreshed_at_ms,
        window: windows[w].clone(),
        segments,
        responses: all.responses(),
        commented: commented.responses(),
        nps: all.nps(),
        themes,
    })
}

/// One root cause's resolved cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RootCauseRow {
    pub root_cause: String,
    pub cases: u64,
    /// Of every case resolved with a cause.
    pub share: f64,
    /// This cause's share and those of every cause above it: the Pareto
    /// curve.
    pub cumulative_share: f64,
}

/// `/api/v1/root-causes`: the causes of the cases this instance resolved
/// since it started, most frequent first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RootCauses {
    pub product: Option<String>,
    pub region: Option<String>,
    pub total: u64,
    pub root_causes: Vec<RootCauseRow>,
}

/// The root causes of `product` (and `region`), or of every case.
pub fn root_causes(view: &View, params: &BTreeMap<String, String>) -> Result<RootCauses, ApiError> {
    let (mut product, mut region) = (None, None);
    for (k, v) in params {
        match k.as_str() {
            "product" => product = Some(v.clone()),
            "region" => region = Some(v.clone()),
            other => {
                return Err(bad(format!(
                    "unknown parameter `{other}` (product, region)"
                )));
            }
        }
    }
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for ((p, r, cause), n) in &view.root_causes {
        if product.as_ref().is_none_or(|x| x == p) && region.as_ref().is_none_or(|x| x == r) {
            *counts.entry(cause).or_default() += n;
        }
    }
    let total: u64 = counts.values().sum();
    let mut sorted: Vec<(&str, u64)> = counts.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut running = 0;
    let root_causes = sorted
        .into_iter()
        .map(|(cause, cases)| {
            running += cases;
            RootCauseRow {
                root_cause: cause.to_string(),
                cases,
                share: cases as f64 / total as f64,
                cumulative_share: running as f64 / total as f64,
            }
        })
        .collect();
    Ok(RootCauses {
        product,
        region,
        total,
        root_causes,
    })
}
