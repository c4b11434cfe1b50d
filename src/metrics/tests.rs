//! Unit tests of the metric names and the rendered series.

use super::*;
use crate::engine::{
    Category, Engine, EngineConfig, KeyId, Observation, SegmentStats, WindowStats,
};
use crate::pb::{AlertPriority, Channel};

fn render(e: &Engine, series: &mut SegmentSeries, now: i64) -> String {
    let segments = e.segments(now);
    series.refresh(e.layout().specs(), &segments, |k| e.segment_name(k));
    series.render()
}

fn record(e: &mut Engine, id: &str, category: Category, t: i64) -> KeyId {
    match e.record(
        0,
        &Observation {
            response_id: id,
            product: "Tarjeta \"Oro\"",
            region: "Norte",
            category,
            responded_at_ms: t,
            weight: 1.0,
            score: 0,
            updated_at_ms: None,
            content: xxhash_rust::xxh3::xxh3_64(id.as_bytes()) as u32,
            comment: 0,
            themes: crate::themes::ThemeSet(0),
            alerting: false,
            breakdowns: Default::default(),
        },
        t,
    ) {
        crate::engine::Outcome::Counted(c, _) => c.key,
        other => panic!("{other:?}"),
    }
}

#[test]
fn window_series_exist_exactly_while_the_window_holds_responses() {
    let mut e = Engine::new(&EngineConfig::default()).unwrap();
    let mut series = SegmentSeries::default();
    let t0 = 1_763_812_800_000;
    record(&mut e, "r", Category::Detractor, t0);
    let text = render(&e, &mut series, t0);
    assert!(
        text.contains(r#"nps_score{product="Tarjeta \"Oro\"",region="Norte",window="1h"} -100"#),
        "{text}"
    );
    assert!(text.contains(
        r#"nps_window_responses{product="Tarjeta \"Oro\"",region="Norte",window="30d",category="detractor"} 1"#
    ));
    // Two hours later the 1h series are gone, the 24h ones remain.
    let later = t0 + 2 * 3_600_000;
    let text = render(&e, &mut series, later);
    assert!(!text.contains(r#"window="1h""#), "{text}");
    assert!(
        text.contains(r#"nps_score{product="Tarjeta \"Oro\"",region="Norte",window="24h"} -100"#)
    );
    // After 31 days nothing but the headers.
    let gone = t0 + 31 * 86_400_000;
    e.sweep(gone);
    let text = render(&e, &mut series, gone);
    assert_eq!(
        text.lines().filter(|l| !l.starts_with('#')).count(),
        0,
        "{text}"
    );
    // A new response brings the segment's series back, from zero.
    record(&mut e, "r2", Category::Promoter, gone);
    let text = render(&e, &mut series, gone);
    let hour = r#"nps_score{product="Tarjeta \"Oro\"",region="Norte",window="1h"} 100"#;
    assert!(text.contains(hour), "{text}");
    let month = r#"nps_window_responses{product="Tarjeta \"Oro\"",region="Norte",window="30d",category="detractor"} 0"#;
    assert!(text.contains(month), "{text}");
}

#[test]
fn counters_count_by_channel_and_priority_and_go_with_their_segment() {
    let mut e = Engine::new(&EngineConfig::default()).unwrap();
    let mut series = SegmentSeries::default();
    let t0 = 1_763_812_800_000;
    let key = record(&mut e, "a", Category::Detractor, t0);
    // A row appears once the series has room for the id.
    assert!(!series.count_response(key, Channel::Sms, Category::Detractor));
    series.grow(key.index() + 1);
    for _ in 0..3 {
        assert!(series.count_response(key, Channel::Sms, Category::Detractor));
    }
    assert!(series.count_response(key, Channel::InApp, Category::Promoter));
    assert!(series.count_alert(key, AlertPriority::Critical));
    series.set_tiers(&["strategic".into(), "high_value".into(), "standard".into()]);
    assert!(series.count_promoter(key, 2, false));
    assert!(series.count_promoter(key, 2, false));
    assert!(series.count_promoter(key, 0, true));
    let text = render(&e, &mut series, t0);
    let labels = r#"product="Tarjeta \"Oro\"",region="Norte""#;
    for line in [
        format!(r#"nps_responses_total{{{labels},channel="sms",category="detractor"}} 3"#),
        format!(r#"nps_responses_total{{{labels},channel="in_app",category="promoter"}} 1"#),
        format!(r#"nps_detractor_alerts_total{{{labels},priority="critical"}} 1"#),
        format!(r#"nps_promoter_events_total{{{labels},tier="standard"}} 2"#),
        format!(r#"nps_promoter_events_withdrawn_total{{{labels},tier="strategic"}} 1"#),
    ] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    // Only counters that counted something are series.
    assert_eq!(text.matches("nps_responses_total{").count(), 2, "{text}");
    assert_eq!(
        text.matches("nps_promoter_events_total{").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("nps_promoter_events_withdrawn_total{").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("# TYPE nps_responses_total counter").count(),
        1
    );
    // Every family once, headers included, in one piece or in chunks.
    let mut chunked = String::new();
    let mut cursor = RenderCursor::default();
    while series.render_some(&mut cursor, 1, &mut chunked) {}
    assert_eq!(chunked, text);
    // Once the segment leaves the table, its counters go with it.
    let gone = t0 + 31 * 86_400_000;
    e.sweep(gone);
    let text = render(&e, &mut series, gone);
    assert!(!text.contains("nps_responses_total{"), "{text}");
    assert!(!text.contains("nps_promoter_events_total{"), "{text}");
    let again = record(&mut e, "b", Category::Promoter, gone);
    series.grow(again.index() + 1);
    series.count_response(again, Channel::Web, Category::Promoter);
    let text = render(&e, &mut series, gone);
    assert!(
        text.contains(&format!(
            r#"nps_responses_total{{{labels},channel="web",category="promoter"}} 1"#
        )),
        "{text}"
    );
    assert!(!text.contains("channel=\"sms\""), "{text}");
}

#[test]
fn empty_window_publishes_no_score() {
    let layout = crate::engine::WindowLayout::new(&["1h"], 48).unwrap();
    let seg = SegmentStats {
        key: KeyId(0),
        product: "p",
        region: "r",
        windows: vec![WindowStats::default()],
    };
    let mut series = SegmentSeries::default();
    series.refresh(layout.specs(), &[seg], |_| Some(("p", "r")));
    let text = series.render();
    assert_eq!(
        text.lines().filter(|l| !l.starts_with('#')).count(),
        0,
        "{text}"
    );
}

#[test]
fn theme_series_count_each_category_while_the_window_holds_a_mention() {
    let mut e = Engine::new(&EngineConfig::default()).unwrap();
    let names: Vec<String> = vec!["app_website".into(), "waiting_time".into()];
    e.set_themes(&names);
    let mut series = SegmentSeries::default();
    let t0 = 1_763_812_800_000;
    let answer = |id: &'static str, category, themes: u64, comment: u8| Observation {
        response_id: id,
        product: "Tarjeta \"Oro\"",
        region: "Norte",
        category,
        responded_at_ms: t0,
        weight: 1.0,
        score: 0,
        updated_at_ms: None,
        content: xxhash_rust::xxh3::xxh3_64(id.as_bytes()) as u32,
        comment,
        themes: crate::themes::ThemeSet(themes),
        alerting: false,
        breakdowns: Default::default(),
    };
    e.record(0, &answer("a", Category::Detractor, 0b10, 3), t0);
    e.record(0, &answer("b", Category::Detractor, 0b11, 4), t0);
    e.record(0, &answer("c", Category::Promoter, 0, 5), t0);
    e.record(0, &answer("d", Category::Promoter, 0, 0), t0);
    let segments = e.segments(t0);
    series.refresh(e.layout().specs(), &segments, |k| e.segment_name(k));
    series.refresh_themes(&names, e.theme_stats(t0));
    let text = series.render();
    let labels = r#"product="Tarjeta \"Oro\"",region="Norte",window="24h""#;
    for line in [
        format!(r#"nps_theme_responses{{{labels},theme="waiting_time",category="detractor"}} 2"#),
        format!(r#"nps_theme_responses{{{labels},theme="waiting_time",category="promoter"}} 0"#),
        format!(r#"nps_theme_responses{{{labels},theme="app_website",category="detractor"}} 1"#),
        format!(r#"nps_commented_responses{{{labels},category="detractor"}} 2"#),
        format!(r#"nps_commented_responses{{{labels},category="promoter"}} 1"#),
        format!(r#"nps_commented_responses{{{labels},category="passive"}} 0"#),
    ] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    assert!(text.contains("# TYPE nps_theme_responses gauge"));
    // Two hours later the 1h series are gone.
    let later = t0 + 2 * 3_600_000;
    series.refresh_themes(&names, e.theme_stats(later));
    let text = series.render();
    assert!(
        !text.contains(
            r#"nps_theme_responses{product="Tarjeta \"Oro\"",region="Norte",window="1h""#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"window="30d",theme="app_website""#),
        "{text}"
    );
}
