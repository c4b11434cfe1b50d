//! Unit tests of the API over a view filled from the engine.

use super::*;
use crate::engine::{Engine, EngineConfig, Observation};
use crate::metrics::SegmentSeries;

const T0: i64 = 1_763_812_800_000;

/// A view of three segments: (A, Norte) 2 promoters and a detractor,
/// (A, Sur) a passive, (B, Norte) a detractor with customer_value 3.
fn view() -> View {
    let mut e = Engine::new(&EngineConfig::default()).unwrap();
    let answers = [
        ("1", "A", "Norte", 10, 1.0),
        ("2", "A", "Norte", 9, 1.0),
        ("3", "A", "Norte", 2, 1.0),
        ("4", "A", "Sur", 8, 1.0),
        ("5", "B", "Norte", 0, 3.0),
    ];
    for (id, p, r, score, w) in answers {
        e.record(0, &Observation::new(id, p, r, score, T0 - 60_000, w), T0);
    }
    let mut series = SegmentSeries::default();
    series.refresh(e.layout().specs(), &e.segments(T0), |k| e.segment_name(k));
    View {
        series,
        refreshed_at_ms: T0,
        partitions_held: vec![0, 3],
        partitions_total: 12,
        ..View::default()
    }
}

fn query(pairs: &[(&str, &str)]) -> Result<SegmentQuery, ApiError> {
    SegmentQuery::parse(
        &pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn rows(v: &View, pairs: &[(&str, &str)]) -> Vec<(String, String, String)> {
    segments(v, &query(pairs).unwrap())
        .unwrap()
        .rows
        .into_iter()
        .map(|r| (r.product, r.region, r.window))
        .collect()
}

#[test]
fn a_row_carries_the_window_figures() {
    let v = view();
    let page = segments(
        &v,
        &query(&[("window", "24h"), ("product", "A"), ("region", "Norte")]).unwrap(),
    )
    .unwrap();
    assert_eq!((page.total, page.pages, page.refreshed_at_ms), (1, 1, T0));
    let r = &page.rows[0];
    assert_eq!(
        (r.responses, r.promoters, r.passives, r.detractors),
        (3, 2, 0, 1)
    );
    let nps = 100.0 * (2.0 - 1.0) / 3.0;
    assert!((r.nps.unwrap() - nps).abs() < 1e-9);
    assert!(r.margin_of_error.unwrap() > 0.0);
    assert_eq!((r.weight_net, r.weight_total), (1.0, 3.0));
    let b = &rows(&v, &[("window", "1h"), ("product", "B")]);
    assert_eq!(b, &[("B".into(), "Norte".into(), "1h".into())]);
    let page = segments(&v, &query(&[("window", "1h"), ("product", "B")]).unwrap()).unwrap();
    assert_eq!(page.rows[0].nps, Some(-100.0));
    assert_eq!(page.rows[0].weighted_nps, Some(-100.0));
    assert_eq!(page.rows[0].weight_total, 3.0);
}

#[test]
fn filters_sorts_and_pages() {
    let v = view();
    // Every window of every segment by default, product then region then
    // window order.
    let all = rows(&v, &[]);
    assert_eq!(all.len(), 3 * 4);
    assert_eq!(all[0], ("A".into(), "Norte".into(), "1h".into()));
    assert_eq!(all[3], ("A".into(), "Norte".into(), "30d".into()));
    assert_eq!(rows(&v, &[("window", "7d"), ("region", "Norte")]).len(), 2);
    assert_eq!(rows(&v, &[("window", "7d"), ("q", "sur")]).len(), 1);
    assert_eq!(
        rows(&v, &[("window", "7d"), ("product_contains", "a")]).len(),
        2
    );
    assert_eq!(
        rows(&v, &[("window", "7d"), ("region_contains", "ORT")]).len(),
        2
    );
    assert_eq!(rows(&v, &[("window", "7d"), ("product", "C")]).len(), 0);
    let by_nps: Vec<String> = rows(&v, &[("window", "24h"), ("sort", "nps"), ("order", "desc")])
        .into_iter()
        .map(|r| format!("{}/{}", r.0, r.1))
        .collect();
    assert_eq!(by_nps, ["A/Norte", "A/Sur", "B/Norte"]);
    let by_responses: Vec<String> = rows(&v, &[("window", "24h"), ("sort", "responses")])
        .into_iter()
        .map(|r| format!("{}/{}", r.0, r.1))
        .collect();
    assert_eq!(by_responses, ["A/Sur", "B/Norte", "A/Norte"]);
    let by_region: Vec<String> = rows(
        &v,
        &[("window", "24h"), ("sort", "region"), ("order", "desc")],
    )
    .into_iter()
    .map(|r| format!("{}/{}", r.0, r.1))
    .collect();
    assert_eq!(by_region, ["A/Sur", "A/Norte", "B/Norte"]);
    // Pages of 5: 5, 5, 2, then none.
    let mut paged = Vec::new();
    for page in 1..=4 {
        let p = segments(
            &v,
            &query(&[("per_page", "5"), ("page", &page.to_string())]).unwrap(),
        )
        .unwrap();
        assert_eq!((p.total, p.pages), (12, 3));
        assert_eq!(p.rows.len(), [5, 5, 2, 0][page - 1]);
        paged.extend(p.rows.into_iter().map(|r| (r.product, r.region, r.window)));
    }
    assert_eq!(paged, all);
}

#[test]
fn bad_parameters_are_refused_with_what_is_wrong() {
    let v = view();
    for (pairs, says) in [
        (vec![("window", "2h")], "window: `2h`"),
        (vec![("page", "0")], "page"),
        (vec![("page", "x")], "page"),
        (vec![("per_page", "0")], "per_page"),
        (vec![("per_page", "1001")], "per_page"),
        (vec![("sort", "score")], "sort"),
        (vec![("order", "up")], "order"),
        (vec![("wndow", "24h")], "unknown parameter `wndow`"),
    ] {
        let e = query(&pairs).and_then(|q| segments(&v, &q)).unwrap_err();
        assert!(e.error.contains(says), "{pairs:?}: {}", e.error);
    }
}

#[test]
fn the_summary_says_what_the_instance_holds() {
    let mut v = view();
    v.consumed = 7;
    v.rejected = 2;
    v.rejected_by_reason = [("missing_score", 2)].into();
    v.alerts_sent = 2;
    let s = summary(&v);
    assert_eq!(s.windows, ["1h", "24h", "7d", "30d"]);
    assert_eq!((s.segments, s.consumed, s.alerts_sent), (3, 7, 2));
    assert_eq!(s.rejected.by_reason["missing_score"], 2);
    assert_eq!(
        s.partitions,
        Partitions {
            held: vec![0, 3],
            total: 12,
            all: false
        }
    );
    assert!(s.cases.is_none(), "no case tracker ran");
    v.cases.enabled = true;
    v.cases.open_by_priority = [1, 2, 3, 4];
    v.cases.closed = 4;
    v.cases.closed_within_sla = 3;
    let c = summary(&v).cases.unwrap();
    assert_eq!(
        (
            c.open_by_priority.normal,
            c.open_by_priority.high,
            c.open_by_priority.critical
        ),
        (3, 3, 4)
    );
    assert_eq!(c.sla_met_share, Some(0.75));
    v.partitions_held = (0..12).collect();
    assert!(summary(&v).partitions.all);
}

#[test]
fn ten_thousand_segments_page_through_completely() {
    let mut e = Engine::new(&EngineConfig {
        max_keys: 20_000,
        ..EngineConfig::default()
    })
    .unwrap();
    for i in 0..10_000u32 {
        let (p, r) = (format!("p{:03}", i / 100), format!("r{:02}", i % 100));
        let id = format!("id-{i}");
        e.record(
            0,
            &Observation::new(&id, &p, &r, i % 11, T0 - 60_000, 1.0),
            T0,
        );
    }
    let mut series = SegmentSeries::default();
    series.refresh(e.layout().specs(), &e.segments(T0), |k| e.segment_name(k));
    let v = View {
        series,
        ..View::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut last_nps = f64::INFINITY;
    for page in 1..=11 {
        let p = segments(
            &v,
            &query(&[
                ("window", "24h"),
                ("sort", "nps"),
                ("order", "desc"),
                ("per_page", "1000"),
                ("page", &page.to_string()),
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!((p.total, p.pages), (10_000, 10));
        assert_eq!(p.rows.len(), if page <= 10 { 1000 } else { 0 });
        for r in p.rows {
            let nps = r.nps.unwrap();
            assert!(nps <= last_nps);
            last_nps = nps;
            assert!(seen.insert((r.product, r.region)));
        }
    }
    assert_eq!(seen.len(), 10_000);
}
