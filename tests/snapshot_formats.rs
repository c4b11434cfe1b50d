//! Golden snapshots of the previous format: state records written by a
//! format-1 build (tests/data/snapshots: `golden_v1.rs.txt` run at
//! 5fd4eee, the last commit writing format 1) restore exactly in this
//! build, with the window figures that build reported for them.

use std::collections::BTreeMap;

use nps_stream::engine::{Category, Engine, EngineConfig, Observation, Outcome, WindowStats};

const NOW: i64 = 1_764_000_000_000;
const TOPIC: &str = "survey-responses";

fn data(file: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/snapshots")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

type Windows = BTreeMap<(String, String), Vec<[String; 5]>>;

/// Per segment, per window: the counts and weight sums, as text.
fn figures(e: &Engine) -> Windows {
    let row = |w: &WindowStats| {
        [
            w.promoters.to_string(),
            w.passives.to_string(),
            w.detractors.to_string(),
            w.weight_net.to_string(),
            w.weight_total.to_string(),
        ]
    };
    e.segments(NOW)
        .into_iter()
        .map(|s| {
            let windows = s.windows.iter().map(row).collect();
            ((s.product.to_string(), s.region.to_string()), windows)
        })
        .collect()
}

/// What the format-1 build reported, from `engine-v1-windows.tsv`.
fn expected() -> Windows {
    let text = String::from_utf8(data("engine-v1-windows.tsv")).unwrap();
    let mut out = Windows::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        let [product, region, window, rest @ ..] = f.as_slice() else {
            panic!("{line}")
        };
        let figures: [String; 5] = std::array::from_fn(|i| rest[i].to_string());
        let windows = out
            .entry((product.to_string(), region.to_string()))
            .or_default();
        assert_eq!(window.parse::<usize>().unwrap(), windows.len());
        windows.push(figures);
    }
    out
}

fn restored() -> Engine {
    let mut e = Engine::new(&EngineConfig::default()).unwrap();
    for p in 0..2 {
        let record = data(&format!("engine-v1-partition-{p}.bin"));
        let offset = e.restore_state_record(&record, p, TOPIC).unwrap();
        assert_eq!(offset, 300 + i64::from(p));
    }
    e
}

#[test]
fn format_1_state_records_restore_the_windows_the_format_1_build_reported() {
    let e = restored();
    let want = expected();
    assert_eq!(want.len(), 6);
    assert_eq!(figures(&e), want);
}

#[test]
fn answers_a_format_1_build_remembered_are_not_counted_again() {
    let mut e = restored();
    let before = figures(&e);
    // resp-7 was counted in partition 1; its redelivery and a revision are
    // stale (format 1 kept no version to replace), a new answer counts.
    let mut again = Observation::new("resp-7", "Cuenta Nómina", "Norte", 3, NOW - 3_600_000, 1.0);
    assert_eq!(e.record(1, &again, NOW), Outcome::Stale);
    again.updated_at_ms = Some(NOW);
    again.content ^= 1;
    assert_eq!(e.record(1, &again, NOW), Outcome::Stale);
    assert_eq!(figures(&e), before);
    let new = Observation::new("resp-new", "Cuenta Nómina", "Sur", 10, NOW - 60_000, 1.0);
    let Outcome::Counted(counted, _) = e.record(1, &new, NOW) else {
        panic!("a new answer is counted")
    };
    assert_eq!(counted.category, Category::Promoter);
}
