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
        (
            r.counts.responses,
            r.counts.promoters,
            r.counts.passives,
            r.counts.detractors
        ),
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

/// A view where (A, Norte) has 100 answers in 24h, the prompt's example:
/// 40 promoters, 20 passives, 40 detractors; 40 mention `app` (5, 5, 30),
/// 4 detractors `wait`; commented: 10 promoters, 0 passives, 40
/// detractors. (B, Sur) has 10 promoters all mentioning `wait`.
fn themed_view() -> View {
    let names: Vec<String> = vec!["app".into(), "wait".into()];
    let mut e = Engine::new(&EngineConfig::default()).unwrap();
    e.set_themes(&names);
    let mut n = 0;
    let mut put =
        |e: &mut Engine, p: &str, r: &str, score: u32, count: usize, themes: u64, comment: u8| {
            for _ in 0..count {
                n += 1;
                let id = format!("r{n}");
                let mut o = Observation::new(&id, p, r, score, T0 - 60_000, 1.0);
                o.themes = crate::themes::ThemeSet(themes);
                o.comment = comment;
                e.record(0, &o, T0);
            }
        };
    put(&mut e, "A", "Norte", 10, 5, 0b01, 1);
    put(&mut e, "A", "Norte", 10, 5, 0, 1);
    put(&mut e, "A", "Norte", 10, 30, 0, 0);
    put(&mut e, "A", "Norte", 8, 5, 0b01, 1);
    put(&mut e, "A", "Norte", 8, 15, 0, 0);
    put(&mut e, "A", "Norte", 2, 30, 0b01, 1);
    put(&mut e, "A", "Norte", 2, 4, 0b10, 1);
    put(&mut e, "A", "Norte", 2, 6, 0, 1);
    put(&mut e, "B", "Sur", 9, 10, 0b10, 1);
    let mut series = SegmentSeries::default();
    series.refresh(e.layout().specs(), &e.segments(T0), |k| e.segment_name(k));
    series.refresh_themes(&names, e.theme_stats(T0));
    let mut root_causes = BTreeMap::new();
    for (p, r, cause, count) in [
        ("A", "Norte", "billing_error", 6),
        ("A", "Sur", "billing_error", 2),
        ("A", "Norte", "long_wait", 3),
        ("A", "Norte", "other", 1),
        ("B", "Sur", "long_wait", 5),
    ] {
        root_causes.insert((p.to_string(), r.to_string(), cause.to_string()), count);
    }
    View {
        series,
        refreshed_at_ms: T0,
        root_causes,
        ..View::default()
    }
}

fn theme_query(pairs: &[(&str, &str)]) -> Result<ThemeQuery, ApiError> {
    ThemeQuery::parse(
        &pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn themes_give_each_theme_s_nps_and_cost_most_costly_first() {
    let v = themed_view();
    let t = themes(
        &v,
        &theme_query(&[("window", "24h"), ("product", "A"), ("region", "Norte")]).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (t.window.as_str(), t.segments, t.responses, t.commented),
        ("24h", 1, 100, 55)
    );
    assert_eq!(t.nps, Some(0.0));
    let app = &t.themes[0];
    assert_eq!(app.theme, "app");
    assert_eq!(
        (app.responses, app.promoters, app.passives, app.detractors),
        (40, 5, 5, 30)
    );
    assert_eq!(app.nps_with, Some(-62.5));
    assert_eq!(app.nps_without, Some(100.0 * 25.0 / 60.0));
    assert_eq!(app.impact_points, Some(0.0 - 100.0 * 25.0 / 60.0));
    assert_eq!(app.detractor_comment_share, Some(0.75));
    assert_eq!(app.promoter_comment_share, Some(0.5));
    let wait = &t.themes[1];
    assert_eq!(
        (wait.theme.as_str(), wait.detractors, wait.responses),
        ("wait", 4, 4)
    );
    assert_eq!(wait.impact_points, Some(0.0 - 100.0 * 4.0 / 96.0));
    assert_eq!(wait.promoter_comment_share, Some(0.0));

    // Every segment: `wait` also holds B's promoters; B's answers all
    // mention it, but the other segment's do not, so there is a rest.
    let t = themes(&v, &theme_query(&[("window", "24h")]).unwrap()).unwrap();
    assert_eq!((t.segments, t.responses), (2, 110));
    let wait = t.themes.iter().find(|r| r.theme == "wait").unwrap();
    assert_eq!((wait.promoters, wait.detractors), (10, 4));
    // (B, Sur) alone: every answer mentions `wait`: no rest, no impact.
    let t = themes(
        &v,
        &theme_query(&[("window", "1h"), ("product", "B")]).unwrap(),
    )
    .unwrap();
    assert_eq!(t.themes.len(), 1);
    assert_eq!(
        (t.themes[0].nps_with, t.themes[0].impact_points),
        (Some(100.0), None)
    );
}

#[test]
fn themes_refuse_what_segments_refuse_and_want_a_window() {
    let v = themed_view();
    for (pairs, says) in [
        (&[][..], "window: required"),
        (
            &[("window", "2h")][..],
            "window: `2h` is not one of 1h, 24h, 7d, 30d",
        ),
        (
            &[("window", "24h"), ("sort", "nps")][..],
            "unknown parameter `sort`",
        ),
    ] {
        let e = theme_query(pairs).and_then(|q| themes(&v, &q)).unwrap_err();
        assert!(e.error.starts_with(says), "{pairs:?}: {}", e.error);
    }
    // Filters as /api/v1/segments has them.
    let t = themes(
        &v,
        &theme_query(&[("window", "24h"), ("q", "sur")]).unwrap(),
    )
    .unwrap();
    assert_eq!((t.segments, t.responses), (1, 10));
}

#[test]
fn root_causes_are_a_pareto_per_product() {
    let v = themed_view();
    let params = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<String, String>>()
    };
    let r = root_causes(&v, &params(&[("product", "A")])).unwrap();
    assert_eq!(r.total, 12);
    let rows: Vec<(&str, u64)> = r
        .root_causes
        .iter()
        .map(|c| (c.root_cause.as_str(), c.cases))
        .collect();
    assert_eq!(rows, [("billing_error", 8), ("long_wait", 3), ("other", 1)]);
    assert_eq!(r.root_causes[0].share, 8.0 / 12.0);
    assert_eq!(r.root_causes[1].cumulative_share, 11.0 / 12.0);
    assert_eq!(r.root_causes[2].cumulative_share, 1.0);
    let all = root_causes(&v, &params(&[])).unwrap();
    assert_eq!(
        (all.total, all.root_causes[0].root_cause.as_str()),
        (17, "billing_error")
    );
    let one = root_causes(&v, &params(&[("product", "A"), ("region", "Sur")])).unwrap();
    assert_eq!(one.total, 2);
    let none = root_causes(&v, &params(&[("product", "Z")])).unwrap();
    assert_eq!((none.total, none.root_causes.len()), (0, 0));
    let e = root_causes(&v, &params(&[("window", "24h")])).unwrap_err();
    assert!(
        e.error.contains("unknown parameter `window`"),
        "{}",
        e.error
    );
}
