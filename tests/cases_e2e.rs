//! Closing the loop end to end on a real broker (Tansu), with an
//! independent CRM (tests/py/crm.py, Python confluent-kafka): detractors
//! become cases with contact SLAs of seconds; the CRM answers some within
//! the SLA, some after it, some never, some with stale events; bad and
//! orphan events are produced too. The escalations topic must then hold
//! exactly one escalation per expected (case, level) and nothing else, and
//! every close-the-loop metric must equal what this file computes from the
//! plan. Also: a kill -9 mid-run loses no escalation (a re-sent one keeps
//! its escalation_id), and two instances sum to the truth.
//!
//! `bash tests/run-all.sh` installs Tansu and the Python client; under a
//! bare `cargo test` without them these tests say so and check nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nps_stream::pb::{CaseEvent, SurveyResponse};
use nps_stream::schema::timestamp_from_ms as ts;
use prost::Message;

const INPUT: &str = "survey-responses";
const ALERTS: &str = "nps-detractor-alerts";
const DLQ: &str = "survey-responses-dlq";
const EVENTS: &str = "nps-case-events";
const ESCALATIONS: &str = "nps-case-escalations";
/// Contact SLAs: tens of seconds, so that neither a second's tick nor a
/// CRM or tracker delayed by several seconds on a loaded machine decides
/// an outcome (an in-time contact comes at 0.4× the SLA, 12 s or more
/// before it is due; a late one at 1.5×: 10 s or more after the level-1
/// check and before the level-2 one).
const SLA: &str = "critical=20s,high=25s,normal=30s";
const PRIORITIES: [(&str, i64); 3] = [
    ("ALERT_PRIORITY_CRITICAL", 20_000),
    ("ALERT_PRIORITY_HIGH", 25_000),
    ("ALERT_PRIORITY_NORMAL", 30_000),
];
const CRM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/crm.py");
/// Every detractor's comment: it mentions two themes of the shipped
/// taxonomy.
const COMMENT: &str = "Nadie contesta y la app se cae";

/// The root cause a plan's RESOLVED event names: one of the default
/// `[cases] root_causes`, a free text (counted as `other`), or none.
fn root_cause(plan: Plan) -> &'static str {
    match plan {
        Plan::OnTime => "billing_error",
        Plan::Late => "cliente molesto",
        _ => "",
    }
}

fn parts() -> Option<String> {
    let python = python()?;
    have_tool("tansu").then_some(python)
}

/// What the CRM does with a customer's case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Plan {
    OnTime,
    Late,
    Never,
    AckOnly,
    Unreachable,
    Stale,
    /// An ACKNOWLEDGED sent before the answer (the event waits for its
    /// alert, then is stale: older than the case); nothing after.
    EarlyEvent,
}

const PLANS: [Plan; 7] = [
    Plan::OnTime,
    Plan::Late,
    Plan::Never,
    Plan::AckOnly,
    Plan::Unreachable,
    Plan::Stale,
    Plan::EarlyEvent,
];

/// [send at, occurred at] (fractions of the SLA), state, outcome.
fn steps(plan: Plan) -> Vec<(f64, f64, &'static str, &'static str)> {
    let (ack, attempted, contacted, resolved, unreachable) = (
        "CASE_STATE_ACKNOWLEDGED",
        "CASE_STATE_CONTACT_ATTEMPTED",
        "CASE_STATE_CONTACTED",
        "CASE_STATE_RESOLVED",
        "CASE_STATE_UNREACHABLE",
    );
    match plan {
        Plan::OnTime => vec![
            (0.2, 0.2, ack, ""),
            (0.4, 0.4, contacted, ""),
            (0.6, 0.6, resolved, "CASE_OUTCOME_RECOVERED"),
        ],
        Plan::Late => vec![
            (0.2, 0.2, ack, ""),
            (1.5, 1.5, contacted, ""),
            (1.6, 1.6, resolved, "CASE_OUTCOME_NOT_RECOVERED"),
        ],
        Plan::Never | Plan::EarlyEvent => vec![],
        Plan::AckOnly => vec![(0.2, 0.2, ack, ""), (0.5, 0.5, attempted, "")],
        Plan::Unreachable => vec![(0.5, 0.5, unreachable, "")],
        Plan::Stale => vec![
            (0.3, 0.3, contacted, ""),
            (0.5, 0.1, ack, ""),
            (0.7, 0.7, resolved, "CASE_OUTCOME_CHURNED"),
        ],
    }
}

/// Milliseconds from a contacted case's alert to its first contact: the
/// earliest-sent step that is a contact, dated as the CRM dates it.
fn first_contact_ms(c: &Case) -> i64 {
    let sla = PRIORITIES
        .iter()
        .find(|(p, _)| *p == c.priority)
        .map(|(_, ms)| *ms)
        .expect("a known priority");
    steps(c.plan)
        .into_iter()
        .find(|(_, _, state, _)| {
            matches!(
                *state,
                "CASE_STATE_CONTACTED" | "CASE_STATE_RESOLVED" | "CASE_STATE_UNREACHABLE"
            )
        })
        .map(|(_, occurred, _, _)| (occurred * sla as f64) as i64)
        .expect("a contacted case has a contact step")
}

/// A detractor: customer, plan, priority (by score and value).
struct Case {
    response_id: String,
    customer: String,
    plan: Plan,
    priority: &'static str,
}

fn response(case: &Case, now: i64) -> SurveyResponse {
    let (score, value) = match case.priority {
        "ALERT_PRIORITY_CRITICAL" => (1, None),
        "ALERT_PRIORITY_HIGH" => (5, Some(5_000.0)),
        _ => (5, None),
    };
    SurveyResponse {
        response_id: case.response_id.clone(),
        customer_id: case.customer.clone(),
        product: format!("producto-{}", case.plan as u8 % 2),
        region: "Norte".into(),
        channel: nps_stream::pb::Channel::Sms as i32,
        score: Some(score),
        responded_at: Some(ts(now - 60_000)),
        comment: COMMENT.into(),
        customer_value: value,
        survey_id: "nps-q4".into(),
        attributes: [("team".to_string(), team(case))].into(),
        updated_at: None,
    }
}

/// Two customers per plan and priority, plus the repeat customer's first
/// answer (handled in time).
fn cases(tag: &str) -> Vec<Case> {
    let mut out = Vec::new();
    for plan in PLANS {
        for (priority, _) in PRIORITIES {
            for i in 0..2 {
                let customer = format!("cust-{tag}-{plan:?}-{}-{i}", &priority[15..]);
                out.push(Case {
                    response_id: format!("r-{customer}"),
                    customer,
                    plan,
                    priority,
                });
            }
        }
    }
    out.push(repeat_case(tag, 1));
    out
}

fn repeat_case(tag: &str, n: u32) -> Case {
    Case {
        response_id: format!("r-cust-{tag}-repeat-{n}"),
        customer: format!("cust-{tag}-repeat"),
        plan: Plan::OnTime,
        priority: "ALERT_PRIORITY_NORMAL",
    }
}

fn alert_id(response_id: &str) -> String {
    expected_alert_id(response_id)
}

fn send_responses(brokers: &str, cases: &[&Case], now: i64) {
    let path = std::env::temp_dir().join(format!("nps-cases-{}.jsonl", rand_suffix()));
    let text: String = cases
        .iter()
        .map(|c| serde_json::to_string(&response(c, now)).unwrap() + "\n")
        .collect();
    std::fs::write(&path, text).unwrap();
    run_ok(Command::new(BIN).args([
        "send",
        "--brokers",
        brokers,
        "--topic",
        INPUT,
        "-f",
        path.to_str().unwrap(),
    ]));
    let _ = std::fs::remove_file(&path);
}

/// The bad and orphan case events, each with the reason it must be
/// dead-lettered for.
fn bad_events(now: i64, tag: &str) -> Vec<(RawRecord, &'static str)> {
    let json = |v: serde_json::Value| Some(v.to_string().into_bytes());
    let iso = chrono_like;
    let known = alert_id(&format!("r-cust-{tag}-Never-CRITICAL-0"));
    let unknown_state = CaseEvent {
        alert_id: known.clone(),
        customer_id: "x".into(),
        state: 9,
        occurred_at: Some(ts(now)),
        ..Default::default()
    }
    .encode_to_vec();
    vec![
        (
            (Some("x".into()), Some(b"\x0a\xff\xff".to_vec()), vec![]),
            "undecodable",
        ),
        (
            (
                Some("x".into()),
                json(serde_json::json!({"state": "CASE_STATE_CONTACTED", "occurredAt": iso(now)})),
                vec![],
            ),
            "missing_alert_id",
        ),
        (
            (Some("x".into()), Some(unknown_state), vec![]),
            "unknown_state",
        ),
        (
            (
                Some("x".into()),
                json(
                    serde_json::json!({"alertId": known, "state": "CASE_STATE_CONTACTED", "occurredAt": iso(now + 3_600_000)}),
                ),
                vec![],
            ),
            "future_timestamp",
        ),
        (
            (
                Some("nobody".into()),
                json(
                    serde_json::json!({"alertId": alert_id("never-answered"), "state": "CASE_STATE_CONTACTED", "occurredAt": iso(now)}),
                ),
                vec![],
            ),
            "unknown_alert",
        ),
    ]
}

/// RFC 3339 of Unix ms (UTC), computed here (civil-from-days).
fn chrono_like(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, sec, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{milli:03}Z")
}

/// The early events: an ACKNOWLEDGED for each EarlyEvent case, before its
/// answer is even sent.
fn early_events(cases: &[Case], now: i64) -> Vec<RawRecord> {
    cases
        .iter()
        .filter(|c| c.plan == Plan::EarlyEvent)
        .map(|c| {
            let v = serde_json::json!({
                "alertId": alert_id(&c.response_id),
                "customerId": c.customer,
                "state": "CASE_STATE_ACKNOWLEDGED",
                "occurredAt": chrono_like(now),
            });
            (
                Some(c.customer.clone()),
                Some(v.to_string().into_bytes()),
                vec![],
            )
        })
        .collect()
}

fn plan_file(cases: &[Case]) -> std::path::PathBuf {
    let by_customer: serde_json::Map<String, serde_json::Value> = cases
        .iter()
        .map(|c| {
            let s: Vec<serde_json::Value> = steps(c.plan)
                .into_iter()
                .map(|(send, occurred, state, outcome)| {
                    let cause = if state == "CASE_STATE_RESOLVED" {
                        root_cause(c.plan)
                    } else {
                        ""
                    };
                    serde_json::json!([send, occurred, state, outcome, cause])
                })
                .collect();
            (c.customer.clone(), serde_json::Value::from(s))
        })
        .collect();
    let sla: serde_json::Map<String, serde_json::Value> = PRIORITIES
        .iter()
        .map(|(p, ms)| (p.to_string(), serde_json::Value::from(*ms)))
        .collect();
    let path = std::env::temp_dir().join(format!("nps-crm-plan-{}.json", rand_suffix()));
    std::fs::write(
        &path,
        serde_json::json!({"sla_ms": sla, "by_customer": by_customer}).to_string(),
    )
    .unwrap();
    path
}

/// Starts the CRM; it ends once it saw `expect` alerts and sent its plan.
fn start_crm(
    python: &str,
    brokers: &str,
    plan: &std::path::Path,
    expect: usize,
) -> std::process::Child {
    Command::new(python)
        .args([
            CRM,
            "--brokers",
            brokers,
            "--alerts",
            ALERTS,
            "--events",
            EVENTS,
            "--plan",
            plan.to_str().unwrap(),
            "--expect",
            &expect.to_string(),
            "--timeout",
            "180",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the CRM")
}

/// (alert id, level, reason) of every escalation this plan must produce.
fn expected_escalations(run: &Run) -> BTreeSet<(String, u64, String)> {
    let mut out = BTreeSet::new();
    let sla = "contact_sla_missed".to_string();
    for c in &run.cases {
        let a = alert_id(&c.response_id);
        match c.plan {
            Plan::Late => {
                out.insert((a, 1, sla.clone()));
            }
            Plan::Never | Plan::AckOnly | Plan::EarlyEvent => {
                out.insert((a.clone(), 1, sla.clone()));
                out.insert((a, 2, sla.clone()));
            }
            _ => {}
        }
    }
    out.insert((
        alert_id(&run.repeat.response_id),
        1,
        "repeat_detractor".into(),
    ));
    out
}

struct Run {
    /// The broker, kept running while the run lasts.
    _broker: Box<dyn std::any::Any>,
    brokers: String,
    cases: Vec<Case>,
    repeat: Case,
    bad: Vec<(RawRecord, &'static str)>,
}

fn setup(tag: &str) -> Run {
    let tansu = Tansu::start(free_port());
    tansu.create_topic(INPUT, 4);
    tansu.create_topic(ALERTS, 3);
    tansu.create_topic(DLQ, 1);
    let brokers = tansu.brokers();
    let now = now_ms();
    Run {
        _broker: Box::new(tansu),
        brokers,
        cases: cases(tag),
        repeat: repeat_case(tag, 2),
        bad: bad_events(now, tag),
    }
}

/// The same on librdkafka's in-process mock cluster (which does not
/// create topics: they are made here), for what Tansu cannot do: a kill -9'd
/// member's partitions are not reassigned there.
fn setup_mock(tag: &str) -> Run {
    let cluster = common::mock::Cluster::new();
    for (topic, partitions) in [
        (INPUT, 4),
        (ALERTS, 3),
        (DLQ, 1),
        (EVENTS, 3),
        (ESCALATIONS, 3),
    ] {
        cluster.create_topic(topic, partitions, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    Run {
        _broker: Box::new(cluster),
        brokers,
        cases: cases(tag),
        repeat: repeat_case(tag, 2),
        bad: bad_events(now_ms(), tag),
    }
}

/// The team an answer of this case names (a breakdown of the service).
fn team(case: &Case) -> String {
    format!("equipo-{}", case.plan as u8 % 3)
}

/// A settings file counting the `team` breakdown, written once.
fn breakdowns_file() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let text = "[[breakdowns]]\nattribute = \"team\"\nlabel = \"team\"\n";
        settings_file(text).to_str().unwrap().to_string()
    })
}

fn service_args() -> Vec<&'static str> {
    vec![
        "--config",
        breakdowns_file(),
        "--alerts-format",
        "json",
        "--contact-sla",
        SLA,
        "--orphan-grace",
        "20s",
        "--snapshot-interval",
        "2s",
        "-X",
        "session.timeout.ms=15000",
    ]
}

/// Drives a run: the first answers, the early and bad events, the CRM,
/// the repeat answer once the first alerts are out; waits until every
/// case is past twice its SLA. `during` is called once, mid-run.
fn drive(python: &str, run: &Run, during: impl FnOnce()) {
    let now = now_ms();
    py_produce(python, &run.brokers, EVENTS, &early_events(&run.cases, now));
    let plan = plan_file(
        &run.cases
            .iter()
            .chain([&run.repeat])
            .map(|c| Case {
                response_id: c.response_id.clone(),
                customer: c.customer.clone(),
                plan: c.plan,
                priority: c.priority,
            })
            .collect::<Vec<_>>(),
    );
    let mut crm = start_crm(python, &run.brokers, &plan, run.cases.len() + 1);
    send_responses(&run.brokers, &run.cases.iter().collect::<Vec<_>>(), now);
    let bad: Vec<RawRecord> = run.bad.iter().map(|(r, _)| r.clone()).collect();
    py_produce(python, &run.brokers, EVENTS, &bad);
    // The repeat answer once the first one's alert is in the alerts topic.
    let first = alert_id(&run.cases.last().unwrap().response_id);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let alerts = py_read(python, &run.brokers, ALERTS, run.cases.len(), 5);
        if alerts
            .iter()
            .any(|r| r["headers"]["nps.alert-id"].as_str() == Some(first.as_str()))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the first alerts never came");
    }
    send_responses(&run.brokers, &[&run.repeat], now_ms());
    std::thread::sleep(Duration::from_secs(6));
    during();
    let out = crm.wait_with_output_or_kill(Duration::from_secs(200));
    assert!(out, "the CRM did not finish its plan");
    let _ = std::fs::remove_file(&plan);
}

/// Waits until the close-the-loop metrics summed over `services` equal
/// the plan's (every case past its last check), or fails with the last
/// difference and the logs. Returns the scrapes that matched.
fn wait_metrics(services: &[&Service], run: &Run) -> Vec<Metrics> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let scrapes: Option<Vec<Metrics>> = services.iter().map(|s| s.metrics()).collect();
        let verdict = match &scrapes {
            Some(m) => check_metrics(m, run),
            None => Err("an instance did not answer /metrics".into()),
        };
        match verdict {
            Ok(()) => return scrapes.unwrap_or_default(),
            Err(e) if Instant::now() > deadline => {
                let logs: Vec<String> = services.iter().map(|s| s.logs()).collect();
                panic!(
                    "metrics never matched the plan: {e}\n{}",
                    logs.join("\n----\n")
                );
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

trait WaitChild {
    fn wait_with_output_or_kill(&mut self, timeout: Duration) -> bool;
}

impl WaitChild for std::process::Child {
    fn wait_with_output_or_kill(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.try_wait() {
                return status.success();
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Escalations read back with the independent client: (alert, level,
/// reason) → the escalation id of every record read for it (one entry per
/// record, so a duplicate shows); every record checked for content.
fn escalations(
    python: &str,
    run: &Run,
    expect: usize,
) -> BTreeMap<(String, u64, String), Vec<String>> {
    let records = py_read(python, &run.brokers, ESCALATIONS, expect, 30);
    let by_alert: BTreeMap<String, &Case> = run
        .cases
        .iter()
        .chain([&run.repeat])
        .map(|c| (alert_id(&c.response_id), c))
        .collect();
    let mut out: BTreeMap<(String, u64, String), Vec<String>> = BTreeMap::new();
    use base64::Engine as _;
    for r in records {
        let value = base64::engine::general_purpose::STANDARD
            .decode(r["value_b64"].as_str().unwrap())
            .unwrap();
        let e: serde_json::Value = serde_json::from_slice(&value).unwrap();
        let alert = e["alertId"].as_str().unwrap().to_string();
        let case = by_alert
            .get(&alert)
            .unwrap_or_else(|| panic!("escalation of an unknown alert: {e}"));
        assert_eq!(e["customerId"], case.customer, "{e}");
        assert_eq!(r["key"], case.customer, "keyed by customer: {r}");
        assert_eq!(e["comment"], COMMENT, "{e}");
        // The alert's themes, by the shipped taxonomy.
        assert_eq!(
            e["themes"],
            serde_json::json!(["app_website", "reachability"]),
            "{e}"
        );
        // The alert's breakdown values: the team that served the customer.
        assert_eq!(
            e["breakdowns"],
            serde_json::json!({"team": team(case)}),
            "{e}"
        );
        assert_eq!(e["priority"], case.priority, "{e}");
        let level = e["level"].as_u64().unwrap();
        let reason = e["reason"].as_str().unwrap().to_string();
        // Deterministic (README): a re-sent escalation keeps its id.
        let id = format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(format!("{alert}/escalation/{level}").as_bytes())
        );
        assert_eq!(e["escalationId"].as_str(), Some(id.as_str()), "{e}");
        if reason == "repeat_detractor" {
            let first = alert_id(&run.cases.last().unwrap().response_id);
            assert_eq!(e["previousAlertId"].as_str(), Some(first.as_str()), "{e}");
        }
        let sla = PRIORITIES
            .iter()
            .find(|(p, _)| *p == case.priority)
            .unwrap()
            .1;
        let (opened, due) = (
            e["openedAt"].as_str().unwrap(),
            e["dueAt"].as_str().unwrap(),
        );
        assert_eq!(rfc3339_ms(due) - rfc3339_ms(opened), sla, "{e}");
        out.entry((alert, level, reason))
            .or_default()
            .push(e["escalationId"].as_str().unwrap().to_string());
    }
    out
}

/// Unix ms of an RFC 3339 time as nps-stream writes it (UTC: `Z` or
/// `+00:00`).
fn rfc3339_ms(text: &str) -> i64 {
    let text = text.trim_end_matches('Z').trim_end_matches("+00:00");
    let (date, time) = text.split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + ms
}

fn prio_label(p: &str) -> String {
    p.trim_start_matches("ALERT_PRIORITY_").to_lowercase()
}

/// Every close-the-loop metric, summed over `instances`, against the plan:
/// the differences, if any.
fn check_metrics(instances: &[Metrics], run: &Run) -> Result<(), String> {
    let sum = |name: &str, labels: &[(&str, &str)]| -> f64 {
        instances.iter().map(|m| m.sum(name, labels)).sum()
    };
    let mut wrong = Vec::new();
    let mut want = |got: f64, n: f64, what: String| {
        if got != n {
            wrong.push(format!("{what}: {got}, want {n}"));
        }
    };
    let all: Vec<&Case> = run.cases.iter().chain([&run.repeat]).collect();
    // Escalations by priority, reason and level.
    let mut esc: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    let by_alert: BTreeMap<String, &Case> =
        all.iter().map(|c| (alert_id(&c.response_id), *c)).collect();
    for (a, level, reason) in expected_escalations(run) {
        *esc.entry((prio_label(by_alert[&a].priority), reason, level.to_string()))
            .or_default() += 1.0;
    }
    for ((p, reason, level), n) in &esc {
        let got = sum(
            "nps_case_escalations_total",
            &[("priority", p), ("reason", reason), ("level", level)],
        );
        want(got, *n, format!("escalations {p} {reason} {level}"));
    }
    want(
        sum("nps_case_escalations_total", &[]),
        esc.values().sum::<f64>(),
        "escalations".into(),
    );
    want(
        sum("nps_repeat_detractors_total", &[]),
        1.0,
        "repeat detractors".into(),
    );
    // Closed cases by outcome and SLA.
    let mut closed: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    // Per priority: cases contacted, and the seconds from alert to first
    // contact summed (the CRM dates each step emitted_at + its fraction of
    // the SLA, in whole milliseconds).
    let mut first_contact: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut open = 0.0;
    for c in &all {
        let how = match c.plan {
            Plan::OnTime => Some(("recovered", "met")),
            Plan::Late => Some(("not_recovered", "missed")),
            Plan::Unreachable => Some(("unreachable", "met")),
            Plan::Stale => Some(("churned", "met")),
            Plan::Never | Plan::AckOnly | Plan::EarlyEvent => None,
        };
        match how {
            Some(k) => {
                *closed.entry(k).or_default() += 1.0;
                let e = first_contact.entry(prio_label(c.priority)).or_default();
                e.0 += 1.0;
                e.1 += first_contact_ms(c) as f64 / 1000.0;
            }
            None => open += 1.0,
        }
    }
    for ((outcome, sla), n) in &closed {
        let got = sum(
            "nps_cases_closed_total",
            &[("outcome", outcome), ("sla", sla)],
        );
        want(got, *n, format!("closed {outcome} {sla}"));
    }
    want(
        sum("nps_cases_closed_total", &[]),
        closed.values().sum::<f64>(),
        "closed".into(),
    );
    for (p, (n, secs)) in &first_contact {
        let got = sum("nps_case_first_contact_seconds_count", &[("priority", p)]);
        want(got, *n, format!("first contacts {p}"));
        // Compared in whole microseconds: the histogram adds in another order.
        let got = sum("nps_case_first_contact_seconds_sum", &[("priority", p)]);
        want(
            (got * 1e6).round(),
            (secs * 1e6).round(),
            format!("microseconds to first contact {p}"),
        );
    }
    // Contact SLAs decided: met by every case contacted in time, missed by
    // the others (late or never).
    let met = all
        .iter()
        .filter(|c| matches!(c.plan, Plan::OnTime | Plan::Unreachable | Plan::Stale))
        .count() as f64;
    want(
        sum("nps_cases_due_total", &[("sla", "met")]),
        met,
        "SLA met".into(),
    );
    want(
        sum("nps_cases_due_total", &[("sla", "missed")]),
        all.len() as f64 - met,
        "SLA missed".into(),
    );
    want(sum("nps_cases_open", &[]), open, "open cases".into());
    // Root causes: each resolution that names one, by product.
    let mut causes: BTreeMap<(String, &str), f64> = BTreeMap::new();
    for c in &all {
        let cause = match root_cause(c.plan) {
            "" => continue,
            "billing_error" => "billing_error",
            _ => "other",
        };
        *causes
            .entry((format!("producto-{}", c.plan as u8 % 2), cause))
            .or_default() += 1.0;
    }
    for ((product, cause), n) in &causes {
        let labels = [
            ("product", product.as_str()),
            ("region", "Norte"),
            ("root_cause", cause),
        ];
        want(
            sum("nps_case_root_causes_total", &labels),
            *n,
            format!("root cause {product} {cause}"),
        );
    }
    want(
        sum("nps_case_root_causes_total", &[]),
        causes.values().sum::<f64>(),
        "root causes".into(),
    );
    want(sum("nps_cases_overdue", &[]), open, "overdue cases".into());
    // Case events by state: every valid one sent, stale and early ones too.
    let mut states: BTreeMap<String, f64> = BTreeMap::new();
    for c in &all {
        for (_, _, state, _) in steps(c.plan) {
            *states
                .entry(state.trim_start_matches("CASE_STATE_").to_lowercase())
                .or_default() += 1.0;
        }
        if c.plan == Plan::EarlyEvent {
            *states.entry("acknowledged".into()).or_default() += 1.0;
        }
    }
    for (state, n) in &states {
        want(
            sum("nps_case_events_total", &[("state", state)]),
            *n,
            format!("case events {state}"),
        );
    }
    let stale = all
        .iter()
        .filter(|c| matches!(c.plan, Plan::Stale | Plan::EarlyEvent))
        .count() as f64;
    want(
        sum("nps_case_events_stale_total", &[]),
        stale,
        "stale events".into(),
    );
    for (_, reason) in &run.bad {
        want(
            sum("nps_events_rejected_total", &[("reason", reason)]),
            1.0,
            format!("rejected {reason}"),
        );
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// The escalations read are exactly the expected (case, level) pairs.
fn same_escalations(
    got: &BTreeMap<(String, u64, String), Vec<String>>,
    want: &BTreeSet<(String, u64, String)>,
    services: &[&Service],
) {
    let got: BTreeSet<_> = got.keys().cloned().collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(want).collect();
    if !missing.is_empty() || !extra.is_empty() {
        let logs: Vec<String> = services.iter().map(|s| s.logs()).collect();
        panic!(
            "escalations missing: {missing:?}\nunexpected: {extra:?}\n{}",
            logs.join("\n----\n")
        );
    }
}

/// The dead letters of case events: their reasons, sorted.
fn dead_letter_reasons(python: &str, run: &Run) -> Vec<String> {
    let mut got: Vec<String> = py_read(python, &run.brokers, DLQ, run.bad.len(), 30)
        .iter()
        .filter(|r| r["headers"]["nps.dlq.source.topic"] == EVENTS)
        .map(|r| r["headers"]["nps.dlq.reason"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    got
}

fn want_reasons(run: &Run) -> Vec<String> {
    let mut want: Vec<String> = run.bad.iter().map(|(_, r)| r.to_string()).collect();
    want.sort();
    want
}

/// Waits until the escalations topic holds every expected (case, level),
/// or fails with what is missing; returns the last read (every record).
fn wait_escalations(
    python: &str,
    run: &Run,
    services: &[&Service],
) -> BTreeMap<(String, u64, String), Vec<String>> {
    let want = expected_escalations(run);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = escalations(python, run, want.len());
        if want.iter().all(|k| got.contains_key(k)) || Instant::now() > deadline {
            same_escalations(&got, &want, services);
            return got;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Exactly one record per (case, level): no duplicate escalation.
fn one_record_each(got: &BTreeMap<(String, u64, String), Vec<String>>) {
    let dup: Vec<_> = got.iter().filter(|(_, ids)| ids.len() != 1).collect();
    assert!(dup.is_empty(), "escalations sent more than once: {dup:?}");
}

#[test]
fn a_crm_s_answers_give_exactly_the_expected_escalations_dead_letters_and_metrics() {
    let Some(python) = parts() else { return };
    let _heavy = heavy();
    let run = setup("one");
    let svc = Service::run(&run.brokers, "g-cases", &service_args(), "cases-one");
    drive(&python, &run, || {});
    wait_metrics(&[&svc], &run);
    let got = wait_escalations(&python, &run, &[&svc]);
    one_record_each(&got);
    assert_eq!(dead_letter_reasons(&python, &run), want_reasons(&run));
    // Nothing moved while the topics were read.
    let m = svc.metrics().expect("metrics");
    check_metrics(&[m], &run).unwrap();
    // The case-events and escalations topics were created like the alerts
    // topic.
    for t in [EVENTS, ESCALATIONS] {
        assert_eq!(py_describe(&python, &run.brokers, t)["partitions"], 3);
    }
    let logs = svc.logs();
    for secret in [
        "Nadie me llam",
        "cust-one-repeat",
        "cust-one-Never",
        "agente-7",
    ] {
        assert!(
            !logs.contains(secret),
            "customer data or owner in logs: {secret}"
        );
    }
}

/// Waits until every instance is ready, holds input partitions and holds
/// case-tracker partitions: both members are in both groups.
fn wait_members(services: &mut [&mut Service]) {
    for svc in services.iter_mut() {
        svc.wait_for("ready with partitions", Duration::from_secs(90), |m| {
            m.get("nps_ready", &[]) == Some(1.0)
                && m.get("nps_assigned_partitions", &[]).unwrap_or(0.0) > 0.0
        });
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while !services
        .iter()
        .all(|s| s.logs().contains("case tracker partition assigned"))
    {
        assert!(
            Instant::now() < deadline,
            "an instance never took case-tracker partitions"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn two_instances_sum_to_the_truth() {
    let Some(python) = parts() else { return };
    let _heavy = heavy();
    let run = setup("two");
    let mut a = Service::run(&run.brokers, "g-cases2", &service_args(), "cases-two-a");
    let mut b = Service::run(&run.brokers, "g-cases2", &service_args(), "cases-two-b");
    wait_members(&mut [&mut a, &mut b]);
    drive(&python, &run, || {});
    let scrapes = wait_metrics(&[&a, &b], &run);
    assert!(
        scrapes
            .iter()
            .all(|m| m.sum("nps_case_events_total", &[]) > 0.0),
        "both instances track cases"
    );
    let got = wait_escalations(&python, &run, &[&a, &b]);
    one_record_each(&got);
    assert_eq!(dead_letter_reasons(&python, &run), want_reasons(&run));
    let (ma, mb) = (a.metrics().expect("metrics"), b.metrics().expect("metrics"));
    check_metrics(&[ma, mb], &run).unwrap();
}

#[test]
fn kill_9_mid_run_and_restart_loses_no_escalation() {
    let Some(python) = python() else { return };
    let _heavy = heavy();
    let run = setup_mock("kill");
    let mut args = service_args();
    // The mock coordinator makes a rejoining member wait the session
    // timeout: a short one keeps the restart quick.
    let last = args.len() - 1;
    args[last] = "session.timeout.ms=6000";
    let mut svc = Some(Service::run(
        &run.brokers,
        "g-cases-kill",
        &args,
        "cases-kill-a",
    ));
    let mut first_logs = String::new();
    drive(&python, &run, || {
        let mut killed = svc.take().unwrap();
        killed.signal("KILL", Duration::from_secs(10));
        first_logs = killed.logs();
        svc = Some(Service::run(
            &run.brokers,
            "g-cases-kill",
            &args,
            "cases-kill-b",
        ));
    });
    let svc = svc.unwrap();
    // Duplicates may come (sent again after the crash): each record's id is
    // checked against the deterministic one as it is read.
    wait_escalations(&python, &run, &[&svc]);
    let reasons: BTreeSet<String> = dead_letter_reasons(&python, &run).into_iter().collect();
    let want_reasons: BTreeSet<String> = want_reasons(&run).into_iter().collect();
    assert_eq!(reasons, want_reasons);
    assert!(
        svc.logs().contains("case tracker partition assigned"),
        "{first_logs}"
    );
}
