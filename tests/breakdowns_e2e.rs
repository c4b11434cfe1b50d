//! Breakdowns and benchmarks end to end, with the real binary.
//!
//! On librdkafka's mock cluster: answers with a `team` and an `agent_id`
//! attribute (missing, too long and with a control character for some),
//! revised so that answers move between teams, and a second batch of new
//! teams past `max_values`. The team gauges must equal the counts of the
//! latest versions computed here, the agent breakdown (kept off /metrics)
//! must be in the API with no NPS below its `min_responses`, every alert
//! must carry the values of the version it was sent for, and the
//! benchmarks must place each product in its sector's quartile.
//!
//! On Tansu: answers written by the independent Python client, and each
//! team's NPS as Prometheus' recording rule gives it, summed over the
//! instance's series, against tests/py/breakdowns.py's count; the alerts,
//! read by that client, carry each answer's team.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::mock::*;
use common::*;
use nps_stream::pb::{DetractorAlert, SurveyResponse};
use nps_stream::schema::timestamp_from_ms as ts;
use prost::Message;

/// The settings of these tests: team (3 values at most, 40 answers to
/// show an NPS) and agent (API only, 10 answers), and benchmarks.
const SETTINGS: &str = r#"
[[breakdowns]]
attribute = "team"
label = "team"
min_responses = 40
max_values = 3
[[breakdowns]]
attribute = "agent_id"
label = "agent"
min_responses = 10
prometheus = false
[[benchmarks]]
product = "*"
p25 = -20
median = 0
p75 = 20
source = "test sector"
[[benchmarks]]
product = "Tarjeta Oro"
p25 = 40
median = 60
p75 = 80
source = "test cards"
"#;

/// The teams of the first batch, in turn (None: no attribute).
const FIRST: [Option<&str>; 6] = [
    Some("Altas"),
    Some("Bajas"),
    Some("Cobros"),
    None,
    Some("equipo-con-un-nombre-muy-largo-que-pasa-de-los-sesenta-y-cuatro-bytes"),
    Some("Altas\u{7}"),
];
/// New teams of the second batch, past `max_values`: counted as `other`.
const LATE_TEAMS: [&str; 2] = ["Dúo", "Extra"];

/// The value an attribute is counted under (docs/breakdowns.md).
fn value_of(attr: Option<&str>) -> String {
    match attr {
        None | Some("") => "unknown".into(),
        Some(v) if v.len() > 64 || v.chars().any(char::is_control) => "invalid".into(),
        Some(v) => v.into(),
    }
}

fn category(score: u32) -> usize {
    match score {
        9..=10 => 0,
        7..=8 => 1,
        _ => 2,
    }
}

const CATEGORIES: [&str; 3] = ["promoter", "passive", "detractor"];

/// A version, with the team value it counts under and its age.
#[derive(Clone)]
struct Version {
    msg: SurveyResponse,
    team: String,
    agent: String,
    age: i64,
}

fn answer(id: String, i: usize, now: i64, team: Option<&str>) -> SurveyResponse {
    let age = AGES[(i / 6) % AGES.len()];
    let mut attributes = BTreeMap::from([("agent_id".to_string(), format!("ag-{}", i % 4))]);
    if let Some(t) = team {
        attributes.insert("team".into(), t.into());
    }
    SurveyResponse {
        response_id: id,
        customer_id: format!("cust-{}", i % 47),
        product: PRODUCTS[i % 3].into(),
        region: REGIONS[(i / 3) % 2].into(),
        channel: 4,
        score: Some(((i * 7) % 11) as u32),
        responded_at: Some(ts(now - age)),
        comment: String::new(),
        customer_value: Some(10.0),
        survey_id: "s-1".into(),
        attributes,
        updated_at: None,
    }
}

fn version(msg: SurveyResponse, team: String, age: i64) -> Version {
    let agent = value_of(msg.attributes.get("agent_id").map(String::as_str));
    Version {
        msg,
        team,
        agent,
        age,
    }
}

/// The first batch: `n` answers, every fifth revised (another team, or
/// none, and for some a new score); the second: `late` answers of new
/// teams. Each answer's versions in order.
fn batches(n: usize, late: usize, now: i64) -> (Vec<Vec<Version>>, Vec<Vec<Version>>) {
    let first = (0..n)
        .map(|i| {
            let team = FIRST[i % FIRST.len()];
            let msg = answer(format!("b-{i:05}"), i, now, team);
            let age = AGES[(i / 6) % AGES.len()];
            let mut out = vec![version(msg.clone(), value_of(team), age)];
            if i % 5 == 1 {
                let moved = [Some("Altas"), Some("Bajas"), Some("Cobros"), None][(i / 5) % 4];
                let mut revised = msg;
                match moved {
                    Some(t) => revised.attributes.insert("team".into(), t.into()),
                    None => revised.attributes.remove("team"),
                };
                if i % 10 == 1 {
                    revised.score = Some(((i * 3) % 11) as u32);
                }
                revised.updated_at = Some(ts(now - age + 60_000));
                out.push(version(revised, value_of(moved), age));
            }
            out
        })
        .collect();
    let second = (0..late)
        .map(|j| {
            let i = n + j;
            let team = LATE_TEAMS[j % 2];
            let msg = answer(format!("b-{i:05}"), i, now, Some(team));
            vec![version(msg, "other".into(), AGES[(i / 6) % AGES.len()])]
        })
        .collect();
    (first, second)
}

/// Per (value, window), the latest versions' counts by category and
/// their weights' net sum.
fn expected(
    answers: &[Vec<Version>],
    of: fn(&Version) -> &str,
) -> BTreeMap<(String, &'static str), [u64; 3]> {
    let mut out: BTreeMap<(String, &'static str), [u64; 3]> = BTreeMap::new();
    for versions in answers {
        let v = versions.last().unwrap();
        for (w, len) in WINDOWS {
            if v.age < len {
                out.entry((of(v).to_string(), w)).or_default()[category(v.msg.score.unwrap())] += 1;
            }
        }
    }
    out
}

fn produce_versions(brokers: &str, answers: &[Vec<Version>]) {
    let firsts = answers.iter().map(|v| &v[0]);
    let revisions = answers.iter().filter_map(|v| v.get(1));
    let records: Vec<Input> = firsts
        .chain(revisions)
        .map(|v| {
            let id = v.msg.response_id.clone().into_bytes();
            (Some(v.msg.encode_to_vec()), id, None)
        })
        .collect();
    produce(brokers, &records);
}

/// Whether /metrics holds exactly the expected team series.
fn teams_match(
    m: &Metrics,
    want: &BTreeMap<(String, &'static str), [u64; 3]>,
) -> Result<(), String> {
    for ((value, window), counts) in want {
        let n: u64 = counts.iter().sum();
        for (c, k) in CATEGORIES.iter().zip(counts) {
            let labels = [
                ("breakdown", "team"),
                ("value", value.as_str()),
                ("window", *window),
                ("category", *c),
            ];
            let got = m.get("nps_breakdown_responses", &labels);
            if got != Some(*k as f64) {
                return Err(format!("{labels:?}: {got:?}, want {k}"));
            }
        }
        let labels = [
            ("breakdown", "team"),
            ("value", value.as_str()),
            ("window", *window),
        ];
        let weight = m.get("nps_breakdown_weight", &labels);
        let net = m.get("nps_breakdown_weight_net", &labels);
        let want_net = 10.0 * (counts[0] as f64 - counts[2] as f64);
        if weight != Some(10.0 * n as f64) || net != Some(want_net) {
            return Err(format!("{labels:?}: weights {weight:?} {net:?}"));
        }
    }
    let exported = m.count("nps_breakdown_responses");
    if exported != want.len() * 3 {
        return Err(format!("{exported} team series, want {}", want.len() * 3));
    }
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn api(svc: &Service, path: &str) -> serde_json::Value {
    let (code, body) = http_get(&svc.metrics_addr, path).unwrap();
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Per (response id, revision), the breakdowns its alert must carry: a
/// version alerts when it is a detractor or withdraws a live alert.
fn expected_alerts(answers: &[Vec<Version>]) -> BTreeMap<(String, u32), BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for versions in answers {
        let (mut live, mut revision) = (false, 0);
        for v in versions {
            let detractor = v.msg.score.unwrap() <= 6;
            if detractor || live {
                let team = value_of(v.msg.attributes.get("team").map(String::as_str));
                let values = BTreeMap::from([
                    ("team".to_string(), team),
                    ("agent".to_string(), v.agent.clone()),
                ]);
                out.insert((v.msg.response_id.clone(), revision), values);
                revision += 1;
            }
            live = detractor;
        }
    }
    out
}

#[test]
fn team_gauges_count_the_latest_versions_and_alerts_carry_each_version_s_values() {
    let _heavy = heavy();
    let (_cluster, brokers) = cluster();
    let now = now_ms();
    let (first, second) = batches(420, 60, now);
    let config = settings_file(SETTINGS);
    let args = ["--config", config.to_str().unwrap(), "--cases", "off"];
    let mut svc = Service::run(&brokers, "g-breakdowns", &args, "breakdowns");
    // The first batch admits the three teams; the second's are new.
    produce_versions(&brokers, &first);
    let n_first: usize = first.iter().map(Vec::len).sum();
    svc.wait_for("the first batch", Duration::from_secs(60), |m| {
        consumed(m) == n_first as f64
    });
    produce_versions(&brokers, &second);
    let answers: Vec<Vec<Version>> = first.into_iter().chain(second).collect();
    let records: usize = answers.iter().map(Vec::len).sum();
    svc.wait_for("every record", Duration::from_secs(60), |m| {
        consumed(m) == records as f64
    });

    let want = expected(&answers, |v| &v.team);
    let values: BTreeSet<&str> = want.keys().map(|k| k.0.as_str()).collect();
    assert_eq!(
        values,
        ["Altas", "Bajas", "Cobros", "invalid", "other", "unknown"].into(),
        "the data exercises every kind of value"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = svc.metrics().unwrap();
        match teams_match(&m, &want) {
            Ok(()) => break m,
            Err(e) if Instant::now() > deadline => panic!("{e}\n{}", svc.logs()),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    };
    let team = [("breakdown", "team")];
    assert_eq!(m.get("nps_breakdown_overflow_total", &team), Some(60.0));
    assert_eq!(m.get("nps_breakdown_values", &team), Some(3.0));
    assert_eq!(m.get("nps_breakdown_min_responses", &team), Some(40.0));
    assert_eq!(
        m.get("nps_breakdown_values", &[("breakdown", "agent")]),
        Some(4.0)
    );
    assert!(
        m.series("nps_breakdown_responses")
            .iter()
            .all(|l| l["breakdown"] == "team"),
        "the agent breakdown stays off /metrics"
    );
    // Every revision was counted as one (none a duplicate): the teams'
    // counts above are those of the latest versions.
    let revisions = answers.iter().filter(|v| v.len() == 2).count();
    assert_eq!(m.sum("nps_revisions_total", &[]), revisions as f64);

    // The leaderboards: every value's counts, an NPS only from 40 (team)
    // or 10 (agent) answers, the ranked values best first.
    for (label, min, of) in [
        (
            "team",
            40,
            (|v: &Version| v.team.as_str()) as fn(&Version) -> &str,
        ),
        ("agent", 10, |v: &Version| v.agent.as_str()),
    ] {
        let want = expected(&answers, of);
        for window in ["24h", "30d"] {
            let board = api(&svc, &format!("/api/v1/breakdowns/{label}?window={window}"));
            let rows = board["rows"].as_array().unwrap();
            let want: BTreeMap<&str, [u64; 3]> = want
                .iter()
                .filter(|((_, w), _)| *w == window)
                .map(|((v, _), c)| (v.as_str(), *c))
                .collect();
            assert_eq!(rows.len(), want.len(), "{label} {window}: {board}");
            let mut ranked = Vec::new();
            for r in rows {
                let c = want[r["value"].as_str().unwrap()];
                let n: u64 = c.iter().sum();
                assert_eq!(r["responses"], n, "{r}");
                assert_eq!(
                    [&r["promoters"], &r["passives"], &r["detractors"]],
                    c.map(serde_json::Value::from).each_ref()
                );
                let shown = n >= min;
                assert_eq!(r["suppressed"], !shown, "{r}");
                if shown {
                    let nps = 100.0 * (c[0] as f64 - c[2] as f64) / n as f64;
                    assert!((r["nps"].as_f64().unwrap() - nps).abs() < 1e-9, "{r}");
                } else {
                    assert!(r["nps"].is_null() && r["margin_of_error"].is_null(), "{r}");
                }
                if r["rank"].is_number() {
                    ranked.push(r["nps"].as_f64().unwrap());
                }
            }
            assert!(
                ranked.windows(2).all(|w| w[0] >= w[1]),
                "{label} {window}: {ranked:?}"
            );
        }
    }
    let shown = |w: &str| {
        want.iter()
            .filter(|((_, win), _)| *win == w)
            .map(|(_, c)| c.iter().sum::<u64>() >= 40)
            .collect::<BTreeSet<bool>>()
    };
    assert_eq!(
        shown("24h"),
        [false, true].into(),
        "both shown and suppressed teams"
    );
    assert_eq!(
        http_get(&svc.metrics_addr, "/api/v1/breakdowns/site?window=24h").map(|r| r.0),
        Some(404)
    );

    // Trends from the engine's buckets: every bucket of the window, and
    // together exactly the window's answers.
    for window in ["24h", "30d"] {
        let board = api(&svc, &format!("/api/v1/breakdowns/team?window={window}"));
        for row in board["rows"].as_array().unwrap() {
            let value = row["value"].as_str().unwrap();
            let q = format!("value={}&window={window}", urlencode(value));
            let trend = api(&svc, &format!("/api/v1/breakdowns/team/trend?{q}"));
            let points = trend["points"].as_array().unwrap();
            assert_eq!(points.len(), 48, "{trend}");
            let sum: u64 = points
                .iter()
                .map(|p| p["responses"].as_u64().unwrap())
                .sum();
            assert_eq!(sum, row["responses"].as_u64().unwrap(), "{value} {window}");
            let starts: Vec<i64> = points
                .iter()
                .map(|p| p["start_ms"].as_i64().unwrap())
                .collect();
            let width = trend["bucket_ms"].as_i64().unwrap();
            assert!(starts.windows(2).all(|w| w[1] - w[0] == width), "{trend}");
        }
    }
    let segment = "/api/v1/segments/trend?product=Tarjeta%20Oro&region=Norte&window=30d";
    let want: u64 = (answers.iter().map(|v| v.last().unwrap()))
        .filter(|v| v.msg.product == "Tarjeta Oro" && v.msg.region == "Norte" && v.age < 30 * DAY)
        .count() as u64;
    let points = api(&svc, segment)["points"].as_array().unwrap().clone();
    let sum: u64 = points
        .iter()
        .map(|p| p["responses"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, want);
    for (path, code) in [
        (
            "/api/v1/segments/trend?product=Nada&region=Norte&window=30d",
            404,
        ),
        (
            "/api/v1/segments/trend?product=Tarjeta%20Oro&window=30d",
            400,
        ),
        ("/api/v1/breakdowns/team/trend?value=Nadie&window=30d", 404),
        ("/api/v1/breakdowns/site/trend?value=Altas&window=30d", 404),
        ("/api/v1/breakdowns/team/trend?value=Altas&window=2d", 400),
    ] {
        assert_eq!(
            http_get(&svc.metrics_addr, path).map(|r| r.0),
            Some(code),
            "{path}"
        );
    }

    // Benchmarks: each product's 30d NPS over its regions against its
    // sector (Tarjeta Oro its own; the others `*`).
    let bench = api(&svc, "/api/v1/benchmarks?window=30d");
    let mut per_product: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
    for versions in &answers {
        let v = versions.last().unwrap();
        if v.age < 30 * DAY {
            per_product.entry(v.msg.product.as_str()).or_default()
                [category(v.msg.score.unwrap())] += 1;
        }
    }
    let rows = bench["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{bench}");
    for r in rows {
        let product = r["product"].as_str().unwrap();
        let c = per_product[product];
        let nps = 100.0 * (c[0] as f64 - c[2] as f64) / c.iter().sum::<u64>() as f64;
        let (p25, median, p75) = if product == "Tarjeta Oro" {
            (40.0, 60.0, 80.0)
        } else {
            (-20.0, 0.0, 20.0)
        };
        assert!((r["nps"].as_f64().unwrap() - nps).abs() < 1e-9, "{r}");
        assert!(
            (r["vs_median"].as_f64().unwrap() - (nps - median)).abs() < 1e-9,
            "{r}"
        );
        let quartile = if nps >= p75 {
            "top"
        } else if nps >= median {
            "upper_middle"
        } else if nps >= p25 {
            "lower_middle"
        } else {
            "bottom"
        };
        assert_eq!(r["quartile"], quartile, "{r}");
        let q = |quantile| {
            m.get(
                "nps_benchmark",
                &[("product", product), ("quantile", quantile)],
            )
        };
        assert_eq!(
            (q("0.25"), q("0.5"), q("0.75")),
            (Some(p25), Some(median), Some(p75))
        );
    }

    // Every alert carries the values of the version it was sent for.
    let want_alerts = expected_alerts(&answers);
    let got: BTreeMap<(String, u32), BTreeMap<String, String>> =
        read_topic(&brokers, ALERTS, want_alerts.len(), Duration::from_secs(30))
            .into_iter()
            .map(|r| {
                let a = DetractorAlert::decode(r.payload.unwrap().as_slice()).unwrap();
                ((a.response_id, a.revision), a.breakdowns)
            })
            .collect();
    assert_eq!(got, want_alerts);
    assert!(
        got.values().any(|b| b["team"] == "invalid") && got.values().any(|b| b["team"] == "Dúo")
    );
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

/// tests/py/breakdowns.py's count of `data`'s teams at `now`.
fn oracle(python: &str, data: &[SurveyResponse], now: i64) -> serde_json::Value {
    let path = std::env::temp_dir().join(format!("nps-breakdowns-{}.jsonl", rand_suffix()));
    let text: String = data
        .iter()
        .map(|m| serde_json::to_string(m).unwrap() + "\n")
        .collect();
    std::fs::write(&path, text).unwrap();
    let out = run_ok(std::process::Command::new(python).args([
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/breakdowns.py"),
        "--data",
        path.to_str().unwrap(),
        "--now-ms",
        &now.to_string(),
        "--attribute",
        "team",
        "--min-responses",
        "40",
        "--benchmark",
        "*=0",
        "--benchmark",
        "Tarjeta Oro=60",
    ]));
    let _ = std::fs::remove_file(&path);
    serde_json::from_str(&out).unwrap()
}

/// A query's series, keyed by the values of `labels`.
fn by_labels(prom: &Prometheus, q: &str, labels: &[&str]) -> BTreeMap<Vec<String>, f64> {
    prom.query(q)
        .into_iter()
        .map(|(l, v)| {
            (
                labels
                    .iter()
                    .map(|k| l.get(*k).cloned().unwrap_or_default())
                    .collect(),
                v,
            )
        })
        .collect()
}

fn close(
    got: &BTreeMap<Vec<String>, f64>,
    want: &BTreeMap<Vec<String>, f64>,
) -> Result<(), String> {
    if got.keys().ne(want.keys()) {
        return Err(format!("series {:?}, want {:?}", got.keys(), want.keys()));
    }
    match got.iter().find(|(k, v)| (**v - want[*k]).abs() > 1e-9) {
        Some((k, v)) => Err(format!("{k:?}: {v}, want {}", want[k])),
        None => Ok(()),
    }
}

#[test]
fn each_team_s_nps_reaches_prometheus_from_a_real_broker_and_alerts_name_the_team() {
    let _heavy = heavy();
    let Some(python) = python() else { return };
    if !(have_tool("tansu") && have_tool("prometheus")) {
        return;
    }
    let tansu = Tansu::start(free_port());
    tansu.create_topic(INPUT, 3);
    tansu.create_topic(ALERTS, 3);
    tansu.create_topic(DLQ, 1);
    let brokers = tansu.brokers();
    let now = now_ms();
    let teams = [
        Some("Altas"),
        Some("Bajas"),
        Some("Cobros"),
        None,
        Some("Dúo"),
    ];
    let data: Vec<SurveyResponse> = (0..3000)
        .map(|i| {
            // A rare team: too few answers for an NPS in the short windows.
            let team = if i % 100 == 0 {
                Some("Rara")
            } else {
                teams[(i * 7 / 3) % 5]
            };
            let mut m = answer(format!("t-{i:05}"), i, now, team);
            // Scores skewed per team, so the teams' NPS differ.
            m.score = Some(((i * 7 + (i * 7 / 3) % 5) % 11) as u32);
            m
        })
        .collect();
    let records: Vec<RawRecord> = data
        .iter()
        .map(|m| (Some(m.response_id.clone()), Some(m.encode_to_vec()), vec![]))
        .collect();
    py_produce(&python, &brokers, INPUT, &records);
    let config = settings_file(&SETTINGS.replace("max_values = 3", "max_values = 10"));
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--cases",
        "off",
        "--alerts-format",
        "json",
    ];
    let mut svc = Service::run(&brokers, "g-teams", &args, "teams-tansu");
    let prom = Prometheus::start(&[&svc.metrics_addr]);
    svc.wait_for("every answer", Duration::from_secs(180), |m| {
        consumed(m) == 3000.0
    });

    let want = oracle(&python, &data, now);
    let want_counts = oracle_rows(&want["counts"], 3);
    let want_nps = oracle_rows(&want["nps"], 2);
    let want_vs = oracle_rows(&want["vs_median"], 2);
    assert!(
        want_nps.len() >= 10 && want_counts.len() > want_nps.len() * 3,
        "{want}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = by_labels(
            &prom,
            "sum by (value, window, category) (nps_breakdown_responses)",
            &["value", "window", "category"],
        );
        let nps = by_labels(&prom, "nps:score:breakdown", &["value", "window"]);
        let vs = by_labels(&prom, "nps:vs_benchmark:product", &["product", "window"]);
        let checked = close(&counts, &want_counts)
            .and(close(&nps, &want_nps))
            .and(close(&vs, &want_vs));
        match checked {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => panic!("{e}\n{}", prom.logs()),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    // Each detractor's alert, read by the independent client, names the
    // team its answer counts under.
    let detractors = data.iter().filter(|m| m.score.unwrap() <= 6).count();
    let alerts = py_read(&python, &brokers, ALERTS, detractors, 120);
    assert_eq!(alerts.len(), detractors);
    for a in &alerts {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(a["value_b64"].as_str().unwrap())
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let id = body["responseId"].as_str().unwrap();
        assert_eq!(
            body["breakdowns"]["team"], want["by_response"][id],
            "{body}"
        );
    }
    assert!(svc.terminate(Duration::from_secs(30)).success());
}
