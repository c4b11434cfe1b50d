//! The figures beside the segments: `/api/v1/breakdowns/{label}` (a
//! leaderboard of a breakdown's values in one window, with no NPS shown
//! for a value below its `min_responses`) and `/api/v1/benchmarks` (each
//! product against its sector's quartiles).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ApiError, Counts, bad, window_named};
use crate::config::benchmark_of;
use crate::engine::{INVALID, OTHER_VALUE, UNKNOWN, WindowStats};
use crate::metrics::View;

/// The window a request names (required), as an index into `windows`.
fn window_of(params: &BTreeMap<String, String>, windows: &[String]) -> Result<usize, ApiError> {
    if let Some(k) = params.keys().find(|k| *k != "window") {
        return Err(bad(format!("unknown parameter `{k}` (window)")));
    }
    let w = params
        .get("window")
        .ok_or_else(|| bad("window: required (a window of /api/v1/summary)"))?;
    window_named(windows, w)
}

/// A value's figures in one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueRow {
    pub value: String,
    /// `value`, or `unknown` (no attribute), `other` (past max_values),
    /// `invalid`: only values are ranked.
    pub kind: &'static str,
    /// 1 for the best NPS among the values shown; null when not ranked.
    pub rank: Option<usize>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Fewer answers than `min_responses`: no NPS is shown.
    pub suppressed: bool,
    pub nps: Option<f64>,
    pub margin_of_error: Option<f64>,
    pub weighted_nps: Option<f64>,
}

/// `/api/v1/breakdowns/{label}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leaderboard {
    pub breakdown: String,
    pub window: String,
    pub min_responses: u64,
    pub refreshed_at_ms: i64,
    /// Values shown (ranked by NPS, best first; ties by answers), then
    /// the suppressed ones and `unknown`, `other`, `invalid` by answers.
    pub rows: Vec<ValueRow>,
}

fn kind_of(value: &str) -> &'static str {
    match value {
        UNKNOWN => "unknown",
        OTHER_VALUE => "other",
        INVALID => "invalid",
        _ => "value",
    }
}

/// Whether the view counts a breakdown of this label.
pub fn has_breakdown(view: &View, label: &str) -> bool {
    view.breakdowns.iter().any(|b| b.label == label)
}

/// The leaderboard of `label` in the window `params` name.
pub fn breakdown(
    view: &View,
    label: &str,
    params: &BTreeMap<String, String>,
) -> Result<Leaderboard, ApiError> {
    let b = view
        .breakdowns
        .iter()
        .find(|b| b.label == label)
        .ok_or_else(|| bad(format!("no breakdown `{label}`")))?;
    let w = window_of(params, &view.window_names)?;
    let mut rows: Vec<ValueRow> = b
        .values
        .iter()
        .filter_map(|(value, stats)| {
            let s = stats.get(w).filter(|s| s.responses() > 0)?;
            let suppressed = s.responses() < b.min_responses;
            let shown = |f: Option<f64>| f.filter(|_| !suppressed);
            Some(ValueRow {
                value: value.clone(),
                kind: kind_of(value),
                rank: None,
                counts: Counts::of(s),
                suppressed,
                nps: shown(s.nps()),
                margin_of_error: shown(s.margin_of_error()),
                weighted_nps: shown(s.weighted_nps()),
            })
        })
        .collect();
    let ranked = |r: &ValueRow| r.kind == "value" && !r.suppressed;
    rows.sort_by(|a, b| {
        ranked(b)
            .cmp(&ranked(a))
            .then_with(|| match (a.nps, b.nps) {
                (Some(x), Some(y)) if ranked(a) => y.total_cmp(&x),
                _ => std::cmp::Ordering::Equal,
            })
            .then(b.counts.responses.cmp(&a.counts.responses))
            .then_with(|| a.value.cmp(&b.value))
    });
    for (i, r) in rows.iter_mut().take_while(|r| ranked(r)).enumerate() {
        r.rank = Some(i + 1);
    }
    Ok(Leaderboard {
        breakdown: b.label.clone(),
        window: view.window_names[w].clone(),
        min_responses: b.min_responses,
        refreshed_at_ms: view.refreshed_at_ms,
        rows,
    })
}

/// A product against its sector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchmarkRow {
    pub product: String,
    pub responses: u64,
    pub nps: Option<f64>,
    pub margin_of_error: Option<f64>,
    pub p25: f64,
    pub median: f64,
    pub p75: f64,
    pub source: String,
    /// NPS minus the sector median, in points.
    pub vs_median: Option<f64>,
    /// Where the NPS falls among the sector: `top` (at or above p75),
    /// `upper_middle`, `lower_middle`, `bottom` (below p25).
    pub quartile: Option<&'static str>,
}

/// `/api/v1/benchmarks`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Benchmarks {
    pub window: String,
    pub refreshed_at_ms: i64,
    pub rows: Vec<BenchmarkRow>,
}

/// The quartile of the sector `nps` falls in.
pub fn quartile(nps: f64, p25: f64, median: f64, p75: f64) -> &'static str {
    if nps >= p75 {
        "top"
    } else if nps >= median {
        "upper_middle"
    } else if nps >= p25 {
        "lower_middle"
    } else {
        "bottom"
    }
}

/// Every product with answers in the window and a benchmark (its own or
/// `*`), its NPS over every region.
pub fn benchmarks(view: &View, params: &BTreeMap<String, String>) -> Result<Benchmarks, ApiError> {
    let w = window_of(params, &view.window_names)?;
    let mut products: BTreeMap<&str, WindowStats> = BTreeMap::new();
    for (product, _, stats) in view.series.segments() {
        if let Some(s) = stats.get(w) {
            products.entry(product).or_default().merge(s);
        }
    }
    let rows = products
        .into_iter()
        .filter(|(_, s)| s.responses() > 0)
        .filter_map(|(product, s)| {
            let b = benchmark_of(&view.benchmarks, product)?;
            let nps = s.nps();
            Some(BenchmarkRow {
                product: product.to_string(),
                responses: s.responses(),
                nps,
                margin_of_error: s.margin_of_error(),
                p25: b.p25,
                median: b.median,
                p75: b.p75,
                source: b.source.clone(),
                vs_median: nps.map(|n| n - b.median),
                quartile: nps.map(|n| quartile(n, b.p25, b.median, b.p75)),
            })
        })
        .collect();
    Ok(Benchmarks {
        window: view.window_names[w].clone(),
        refreshed_at_ms: view.refreshed_at_ms,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Benchmark;
    use crate::engine::{Engine, EngineConfig, Observation};
    use crate::metrics::BreakdownView;

    const T0: i64 = 1_763_812_800_000;

    fn stats(p: u64, pa: u64, d: u64) -> WindowStats {
        WindowStats {
            promoters: p,
            passives: pa,
            detractors: d,
            weight_net: p as f64 - d as f64,
            weight_total: (p + pa + d) as f64,
        }
    }

    fn view() -> View {
        let mut v = View {
            window_names: vec!["24h".into(), "30d".into()],
            ..View::default()
        };
        v.breakdowns.push(BreakdownView {
            label: "team".into(),
            min_responses: 30,
            prometheus: true,
            admitted: 3,
            values: vec![
                ("Altas".into(), vec![stats(20, 5, 5), stats(40, 10, 10)]),
                ("Bajas".into(), vec![stats(5, 5, 20), stats(10, 10, 40)]),
                ("Nueva".into(), vec![stats(9, 0, 0), stats(9, 0, 0)]),
                ("unknown".into(), vec![stats(1, 1, 40), stats(1, 1, 40)]),
                ("Vacía".into(), vec![WindowStats::default(), stats(1, 0, 0)]),
            ],
        });
        v
    }

    fn params(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_leaderboard_ranks_values_with_enough_answers_and_hides_the_rest() {
        let board = breakdown(&view(), "team", &params(&[("window", "24h")])).unwrap();
        let rows: Vec<_> = board
            .rows
            .iter()
            .map(|r| (r.value.as_str(), r.rank, r.suppressed, r.nps))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("Altas", Some(1), false, Some(50.0)),
                ("Bajas", Some(2), false, Some(-50.0)),
                ("unknown", None, false, Some(-92.85714285714286)),
                ("Nueva", None, true, None),
            ]
        );
        let nueva = &board.rows[3];
        assert_eq!(
            (
                nueva.counts.responses,
                nueva.margin_of_error,
                nueva.weighted_nps
            ),
            (9, None, None)
        );
        assert_eq!(board.min_responses, 30);
        for (bad_params, says) in [
            (params(&[]), "window: required"),
            (params(&[("window", "7d")]), "not one of 24h, 30d"),
            (
                params(&[("window", "24h"), ("sort", "x")]),
                "unknown parameter `sort`",
            ),
        ] {
            let e = breakdown(&view(), "team", &bad_params).unwrap_err();
            assert!(e.error.contains(says), "{e:?}");
        }
        assert!(!has_breakdown(&view(), "agent"));
    }

    #[test]
    fn products_stand_in_their_sector_quartile() {
        assert_eq!(quartile(60.0, 10.0, 30.0, 60.0), "top");
        assert_eq!(quartile(30.0, 10.0, 30.0, 60.0), "upper_middle");
        assert_eq!(quartile(29.9, 10.0, 30.0, 60.0), "lower_middle");
        assert_eq!(quartile(9.0, 10.0, 30.0, 60.0), "bottom");
        // A: 2 promoters, a passive, a detractor (NPS 25) over two
        // regions; B: a detractor (NPS -100).
        let mut e = Engine::new(&EngineConfig::default()).unwrap();
        let answers = [
            ("1", "A", "Norte", 10),
            ("2", "A", "Norte", 9),
            ("3", "A", "Sur", 2),
            ("4", "A", "Sur", 8),
            ("5", "B", "Norte", 0),
            ("6", "C", "Norte", 10),
        ];
        for (id, p, r, score) in answers {
            e.record(0, &Observation::new(id, p, r, score, T0 - 60_000, 1.0), T0);
        }
        let mut v = view();
        v.series
            .refresh(e.layout().specs(), &e.segments(T0), |k| e.segment_name(k));
        let benchmark = |product: &str, median: f64| Benchmark {
            product: product.into(),
            p25: median - 20.0,
            median,
            p75: median + 20.0,
            source: "Sector 2026".into(),
        };
        v.benchmarks = vec![benchmark("*", 30.0), benchmark("C", 0.0)];
        let b = benchmarks(&v, &params(&[("window", "24h")])).unwrap();
        let rows: Vec<_> = b
            .rows
            .iter()
            .map(|r| {
                (
                    r.product.as_str(),
                    r.responses,
                    r.nps,
                    r.median,
                    r.vs_median,
                    r.quartile,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("A", 4, Some(25.0), 30.0, Some(-5.0), Some("lower_middle")),
                ("B", 1, Some(-100.0), 30.0, Some(-130.0), Some("bottom")),
                ("C", 1, Some(100.0), 0.0, Some(100.0), Some("top")),
            ]
        );
        v.benchmarks = vec![benchmark("C", 0.0)];
        let b = benchmarks(&v, &params(&[("window", "24h")])).unwrap();
        assert_eq!(b.rows.len(), 1, "products without a benchmark are left out");
    }
}
