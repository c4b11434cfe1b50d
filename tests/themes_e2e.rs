//! Themes end to end on librdkafka's mock cluster, with the real binary:
//! comments written from phrases whose themes this file knows by
//! construction (with accents, case and punctuation varied), revised so
//! that answers move between themes, through a taxonomy in the settings
//! file. The theme gauges must equal the counts of the latest versions
//! computed here, and every alert and promoter event must carry the
//! themes of the version it was sent for. With `--themes off` there are
//! no theme gauges and no themes on the outputs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::mock::*;
use common::*;
use nps_stream::pb::{DetractorAlert, PromoterEvent, SurveyResponse};
use nps_stream::schema::timestamp_from_ms as ts;
use prost::Message;

/// The taxonomy of these tests, and phrases that mention each theme.
const TAXONOMY: &str = r#"
[[themes]]
name = "app"
patterns = ["app", "aplicacion*"]
[[themes]]
name = "espera"
patterns = ["tiempo de espera", "lent*"]
[[themes]]
name = "cobro"
patterns = ["cobr*"]
"#;
const THEMES: [(&str, [&str; 3]); 3] = [
    ("app", ["La APP", "la aplicación", "Aplicaciones"]),
    ("espera", ["tiempo de Espera", "lentísimo", "¡LENTO!"]),
    ("cobro", ["me cobraron", "COBRO doble", "cobran"]),
];
/// Phrases that mention none of them.
const NEUTRAL: [&str; 2] = ["todo bien", "gracias, señora"];

/// A comment mentioning the themes of `bits` (bit i: `THEMES[i]`); empty
/// for some answers without a theme.
fn comment(i: usize, bits: u8) -> String {
    let mut parts: Vec<&str> = THEMES
        .iter()
        .enumerate()
        .filter(|(t, _)| bits >> t & 1 == 1)
        .map(|(t, (_, phrases))| phrases[(i + t) % 3])
        .collect();
    if bits == 0 && i % 3 == 2 {
        return String::new();
    }
    parts.insert(i % (parts.len() + 1), NEUTRAL[i % 2]);
    parts.join(", ")
}

fn names(bits: u8) -> Vec<String> {
    let mut n: Vec<String> = THEMES
        .iter()
        .enumerate()
        .filter(|(t, _)| bits >> t & 1 == 1)
        .map(|(_, (name, _))| name.to_string())
        .collect();
    n.sort();
    n
}

fn category(score: u32) -> &'static str {
    match score {
        9..=10 => "promoter",
        7..=8 => "passive",
        _ => "detractor",
    }
}

/// A version of an answer: what it says and the themes it mentions.
#[derive(Debug, Clone)]
struct Version {
    msg: SurveyResponse,
    bits: u8,
    age: i64,
}

/// `n` answers, each first version with the themes of `i % 8`; every
/// fifth one revised (a new comment, some with a new score), so that its
/// latest version mentions the themes of `(i / 8) % 8`.
fn versions(n: usize, now: i64, prefix: &str) -> Vec<Vec<Version>> {
    (0..n)
        .map(|i| {
            let age = AGES[(i / 6) % AGES.len()];
            let first = SurveyResponse {
                response_id: format!("{prefix}-{i:05}"),
                customer_id: format!("cust-{}", i % 53),
                product: PRODUCTS[i % 3].into(),
                region: REGIONS[(i / 3) % 2].into(),
                channel: 1 + (i % 6) as i32,
                score: Some(((i * 7) % 11) as u32),
                responded_at: Some(ts(now - age)),
                comment: comment(i, (i % 8) as u8),
                customer_value: Some(10.0),
                survey_id: "s-1".into(),
                attributes: Default::default(),
                updated_at: None,
            };
            let mut out = vec![Version {
                bits: (i % 8) as u8,
                msg: first.clone(),
                age,
            }];
            if i % 5 == 1 {
                let bits = ((i / 8) % 8) as u8;
                let mut revised = first;
                revised.comment = format!("{} (editado)", comment(i + 1, bits));
                if i % 10 == 1 {
                    revised.score = Some(((i * 3) % 11) as u32);
                }
                revised.updated_at = Some(ts(now - age + 60_000));
                out.push(Version {
                    bits,
                    msg: revised,
                    age,
                });
            }
            out
        })
        .collect()
}

/// Per (product, region, window, theme or `*` for commented), the counts
/// of the latest versions by category.
fn expected(
    answers: &[Vec<Version>],
) -> BTreeMap<(String, String, &'static str, String), [u64; 3]> {
    let mut out: BTreeMap<_, [u64; 3]> = BTreeMap::new();
    for versions in answers {
        let v = versions.last().unwrap();
        let c = match category(v.msg.score.unwrap()) {
            "promoter" => 0,
            "passive" => 1,
            _ => 2,
        };
        let mut rows = names(v.bits);
        if !v.msg.comment.is_empty() {
            rows.push("*".into());
        }
        for (w, len) in WINDOWS {
            if v.age >= len {
                continue;
            }
            for row in &rows {
                let key = (v.msg.product.clone(), v.msg.region.clone(), w, row.clone());
                out.entry(key).or_default()[c] += 1;
            }
        }
    }
    out
}

/// Whether /metrics holds exactly the expected theme and commented series.
fn themes_match(
    m: &Metrics,
    want: &BTreeMap<(String, String, &'static str, String), [u64; 3]>,
) -> Result<(), String> {
    let mut rows = 0;
    for ((product, region, window, row), counts) in want {
        rows += 1;
        for (c, n) in ["promoter", "passive", "detractor"].iter().zip(counts) {
            let mut labels = vec![
                ("product", product.as_str()),
                ("region", region.as_str()),
                ("window", *window),
                ("category", *c),
            ];
            let name = if row == "*" {
                "nps_commented_responses"
            } else {
                labels.push(("theme", row.as_str()));
                "nps_theme_responses"
            };
            let got = m.get(name, &labels);
            if got != Some(*n as f64) {
                return Err(format!("{name} {labels:?}: {got:?}, want {n}"));
            }
        }
    }
    let exported = m.count("nps_theme_responses") + m.count("nps_commented_responses");
    if exported != rows * 3 {
        return Err(format!("{exported} theme series, want {}", rows * 3));
    }
    Ok(())
}

fn produce_versions(brokers: &str, answers: &[Vec<Version>]) {
    // First versions, then the revisions: each revision after its answer.
    let firsts = answers.iter().map(|v| &v[0]);
    let revisions = answers.iter().filter_map(|v| v.get(1));
    let records: Vec<Input> = firsts
        .chain(revisions)
        .map(|v| {
            (
                Some(v.msg.encode_to_vec()),
                v.msg.response_id.clone().into_bytes(),
                None,
            )
        })
        .collect();
    produce(brokers, &records);
}

/// Per response id, the themes of each version the outputs were sent
/// for: alerts by revision, promoter events by updated_at.
struct Sent {
    alerts: BTreeMap<String, Vec<Vec<String>>>,
    promoter_events: BTreeMap<(String, Option<i64>), Vec<String>>,
}

/// What the outputs must say, from the engine's rules: a version alerts
/// when it is a detractor or withdraws a live alert; a promoter event goes
/// for a promoter and withdraws when a promoter is revised out.
fn expected_sent(answers: &[Vec<Version>]) -> Sent {
    let mut sent = Sent {
        alerts: BTreeMap::new(),
        promoter_events: BTreeMap::new(),
    };
    for versions in answers {
        let mut live = false;
        let mut before: Option<&str> = None;
        for v in versions {
            let id = v.msg.response_id.clone();
            let cat = category(v.msg.score.unwrap());
            let detractor = cat == "detractor";
            if detractor || live {
                sent.alerts
                    .entry(id.clone())
                    .or_default()
                    .push(names(v.bits));
            }
            live = detractor;
            if cat == "promoter" || before == Some("promoter") {
                let updated = v
                    .msg
                    .updated_at
                    .as_ref()
                    .map(nps_stream::schema::ms_from_timestamp);
                sent.promoter_events.insert((id, updated), names(v.bits));
            }
            before = Some(cat);
        }
    }
    sent
}

fn read_sent(brokers: &str, want: &Sent) -> Sent {
    let n_alerts = want.alerts.values().map(Vec::len).sum();
    let mut alerts: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let mut by_revision: BTreeMap<(String, u32), Vec<String>> = BTreeMap::new();
    for r in read_topic(brokers, ALERTS, n_alerts, Duration::from_secs(30)) {
        let a = DetractorAlert::decode(r.payload.unwrap().as_slice()).unwrap();
        by_revision.insert((a.response_id, a.revision), a.themes);
    }
    for ((id, _), themes) in by_revision {
        alerts.entry(id).or_default().push(themes);
    }
    let mut promoter_events = BTreeMap::new();
    let n_events = want.promoter_events.len();
    for r in read_topic(brokers, PROMOTERS, n_events, Duration::from_secs(30)) {
        let e = PromoterEvent::decode(r.payload.unwrap().as_slice()).unwrap();
        let updated = e
            .updated_at
            .as_ref()
            .map(nps_stream::schema::ms_from_timestamp);
        promoter_events.insert((e.response_id, updated), e.themes);
    }
    Sent {
        alerts,
        promoter_events,
    }
}

fn run_until_counted(brokers: &str, group: &str, extra: &[&str], records: usize) -> Service {
    let mut svc = Service::run(brokers, group, extra, group);
    svc.wait_for("every record consumed", Duration::from_secs(60), |m| {
        consumed(m) == records as f64
    });
    svc
}

#[test]
fn theme_gauges_count_the_latest_versions_and_every_output_carries_its_version_s_themes() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let now = now_ms();
    let answers = versions(480, now, "t");
    produce_versions(&brokers, &answers);
    let records: usize = answers.iter().map(Vec::len).sum();
    let config = settings_file(TAXONOMY);
    let args = ["--config", config.to_str().unwrap(), "--cases", "off"];
    let mut svc = run_until_counted(&brokers, "g-themes", &args, records);

    let want = expected(&answers);
    // Every theme, and answers without comments, are in the data.
    let rows: BTreeSet<&String> = want.keys().map(|k| &k.3).collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = svc.metrics().unwrap();
        match themes_match(&m, &want) {
            Ok(()) => break m,
            Err(e) if std::time::Instant::now() > deadline => panic!("{e}\n{}", svc.logs()),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    };
    // Revisions moved answers: some changed their comment's themes.
    assert!(
        m.get("nps_revisions_total", &[("effect", "comment")])
            .unwrap()
            >= 90.0
    );

    let want_sent = expected_sent(&answers);
    let got = read_sent(&brokers, &want_sent);
    assert_eq!(got.alerts, want_sent.alerts);
    assert_eq!(got.promoter_events, want_sent.promoter_events);
    // Both carry themes: the check is not empty against empty.
    assert!(
        got.alerts
            .values()
            .flatten()
            .filter(|t| !t.is_empty())
            .count()
            > 100
    );
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

#[test]
fn themes_off_exports_no_theme_gauges_and_sends_no_themes() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let now = now_ms();
    let answers = versions(60, now, "off");
    produce_versions(&brokers, &answers);
    let records: usize = answers.iter().map(Vec::len).sum();
    let config = settings_file(TAXONOMY);
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--cases",
        "off",
        "--themes",
        "off",
    ];
    let mut svc = run_until_counted(&brokers, "g-themes-off", &args, records);
    let m = svc.wait_for("windows published", Duration::from_secs(30), |m| {
        m.count("nps_window_responses") > 0
    });
    assert_eq!(m.count("nps_theme_responses"), 0);
    assert_eq!(m.count("nps_commented_responses"), 0);
    let want = expected_sent(&answers);
    let got = read_sent(&brokers, &want);
    assert_eq!(got.alerts.len(), want.alerts.len());
    assert_eq!(got.promoter_events.len(), want.promoter_events.len());
    assert!(got.alerts.values().flatten().all(Vec::is_empty));
    assert!(got.promoter_events.values().all(Vec::is_empty));
    assert!(svc.terminate(Duration::from_secs(30)).success());
}
