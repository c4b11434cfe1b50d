//! The live page and its JSON API, against a running demo (the embedded
//! broker, answers arriving all the time): every API parameter, bad ones,
//! paging, equality with /metrics at one refresh, no customer data; and
//! the page itself in headless Chromium (Debian's chromium and
//! chromedriver, driven by selenium from `tests/py/browser.py`): it
//! renders the segments, its numbers are the API's and /metrics' at one
//! refresh, filtering works, it updates as answers arrive, and a
//! screenshot is written.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn demo(name: &str) -> Service {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut svc = Service::start(
        &[
            "demo",
            "--metrics-addr",
            &addr,
            "--rate",
            "100",
            "--table-every",
            "3600",
        ],
        port,
        name,
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // The history is spread over 30 days: the last hour fills with the
        // live stream. Once it holds every segment, every window does.
        if let Some((200, body)) = http_get(&svc.metrics_addr, "/api/v1/segments?window=1h") {
            let s: Value = serde_json::from_str(&body).unwrap();
            if s["total"].as_u64().unwrap_or(0) >= 20 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no segments:\n{}", svc.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = &mut svc;
    svc
}

fn get_json(addr: &str, path: &str) -> (u16, Value) {
    let (code, body) = http_get(addr, path).unwrap_or_else(|| panic!("GET {path}"));
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code, v)
}

/// Every page of `query` (per_page 7), all from one refresh of the
/// windows: asked again until they agree.
fn all_pages(addr: &str, query: &str) -> Vec<Value> {
    for _ in 0..20 {
        let mut rows = Vec::new();
        let mut stamps = std::collections::BTreeSet::new();
        let mut page = 1;
        loop {
            let (code, p) = get_json(
                addr,
                &format!("/api/v1/segments?{query}&per_page=7&page={page}"),
            );
            assert_eq!(code, 200, "{p}");
            stamps.insert(p["refreshed_at_ms"].as_i64().unwrap());
            let n = p["rows"].as_array().unwrap().len();
            rows.extend(p["rows"].as_array().unwrap().iter().cloned());
            assert!(n <= 7);
            if page >= p["pages"].as_u64().unwrap() as usize {
                assert_eq!(rows.len(), p["total"].as_u64().unwrap() as usize);
                break;
            }
            assert_eq!(n, 7, "a page before the last is full");
            page += 1;
        }
        if stamps.len() == 1 {
            return rows;
        }
    }
    panic!("the pages never came from one refresh");
}

/// The API's rows against /metrics: each row's numbers are its series'.
fn rows_match_metrics(rows: &[Value], m: &Metrics) -> Result<(), String> {
    let num = |v: &Value| v.as_f64();
    for r in rows {
        let (p, g, w) = (
            r["product"].as_str().unwrap(),
            r["region"].as_str().unwrap(),
            r["window"].as_str().unwrap(),
        );
        let labels = [("product", p), ("region", g), ("window", w)];
        let checks = [
            ("nps_score", num(&r["nps"])),
            ("nps_score_margin_of_error", num(&r["margin_of_error"])),
            ("nps_weighted_score", num(&r["weighted_nps"])),
            ("nps_window_weight_net", num(&r["weight_net"])),
            ("nps_window_weight", num(&r["weight_total"])),
        ];
        for (name, want) in checks {
            if m.get(name, &labels) != want {
                return Err(format!(
                    "{name}{labels:?}: /metrics {:?}, API {want:?}",
                    m.get(name, &labels)
                ));
            }
        }
        for (category, field) in [
            ("promoter", "promoters"),
            ("passive", "passives"),
            ("detractor", "detractors"),
        ] {
            let l = [
                ("product", p),
                ("region", g),
                ("window", w),
                ("category", category),
            ];
            if m.get("nps_window_responses", &l) != num(&r[field]) {
                return Err(format!(
                    "nps_window_responses{l:?}: /metrics {:?}, API {}",
                    m.get("nps_window_responses", &l),
                    r[field]
                ));
            }
        }
    }
    Ok(())
}

/// The Python with selenium, when chromium and chromedriver are there
/// too; None (the test checks nothing) outside the full suite, which
/// requires them.
fn browser() -> Option<String> {
    let tools = have_tool("chromium") && have_tool("chromedriver");
    let python = python().filter(|p| {
        Command::new(p)
            .args(["-c", "import selenium"])
            .status()
            .is_ok_and(|s| s.success())
    });
    let found = python.filter(|_| tools);
    if found.is_none() {
        assert!(
            std::env::var_os("NPS_REQUIRE_TOOLS").is_none(),
            "chromium, chromedriver and selenium are required (bash tests/run-all.sh installs them)"
        );
        eprintln!("skipped: chromium, chromedriver or selenium missing");
    }
    found
}

#[test]
fn the_api_answers_every_parameter_and_equals_metrics() {
    let _heavy = heavy();
    let svc = demo("api");
    let addr = svc.metrics_addr.clone();

    // Equal to /metrics at one refresh: the API asked before and after the
    // scrape, kept when both answers are the same refresh's.
    let mut matched = false;
    for _ in 0..20 {
        let (_, before) = get_json(&addr, "/api/v1/segments?per_page=1000");
        let m = svc.metrics().unwrap();
        let (_, after) = get_json(&addr, "/api/v1/segments?per_page=1000");
        if before["refreshed_at_ms"] != after["refreshed_at_ms"] {
            continue;
        }
        let rows = before["rows"].as_array().unwrap();
        assert_eq!(
            rows.len(),
            m.count("nps_window_weight"),
            "one row per window series"
        );
        rows_match_metrics(rows, &m).unwrap();
        matched = true;
        break;
    }
    assert!(matched, "never one refresh for the API and /metrics");

    // Filters, sorts and paging, each page of one refresh.
    let all = all_pages(&addr, "window=24h");
    assert_eq!(all.len(), 20, "the demo's 5 products x 4 regions");
    assert!(all.iter().all(|r| r["window"] == "24h"));
    let names: Vec<(String, String)> = all
        .iter()
        .map(|r| {
            (
                r["product"].as_str().unwrap().into(),
                r["region"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "product, then region, by default");
    let by_nps = all_pages(&addr, "window=24h&sort=nps&order=desc");
    let nps: Vec<f64> = by_nps.iter().map(|r| r["nps"].as_f64().unwrap()).collect();
    assert!(nps.windows(2).all(|w| w[0] >= w[1]), "{nps:?}");
    let by_responses = all_pages(&addr, "window=7d&sort=responses");
    let n: Vec<u64> = by_responses
        .iter()
        .map(|r| r["responses"].as_u64().unwrap())
        .collect();
    assert!(n.windows(2).all(|w| w[0] <= w[1]), "{n:?}");
    for (key, field) in [
        ("margin_of_error", "margin_of_error"),
        ("weighted_nps", "weighted_nps"),
    ] {
        let rows = all_pages(&addr, &format!("window=30d&sort={key}&order=desc"));
        assert_eq!(rows.len(), 20, "{key}");
        let v: Vec<f64> = rows
            .iter()
            .map(|r| r[field].as_f64().unwrap_or(f64::NEG_INFINITY))
            .collect();
        assert!(v.windows(2).all(|w| w[0] >= w[1]), "sort={key}: {v:?}");
    }
    for (query, keep) in [
        (
            "window=1h&product=Tarjeta%20Oro",
            &(|r: &Value| r["product"] == "Tarjeta Oro") as &dyn Fn(&Value) -> bool,
        ),
        ("window=1h&region=Sur", &|r: &Value| r["region"] == "Sur"),
        ("window=1h&product_contains=tarjeta", &|r: &Value| {
            r["product"].as_str().unwrap().contains("Tarjeta")
        }),
        ("window=1h&region_contains=NORTE", &|r: &Value| {
            r["region"] == "Norte"
        }),
        ("window=1h&q=m%C3%B3vil", &|r: &Value| {
            r["product"] == "App Móvil"
        }),
    ] {
        let rows = all_pages(&addr, query);
        assert!(
            !rows.is_empty() && rows.iter().all(keep),
            "{query}: {rows:?}"
        );
        let everything = all_pages(&addr, "window=1h");
        assert_eq!(
            rows.len(),
            everything.iter().filter(|r| keep(r)).count(),
            "{query}"
        );
    }
    let every_window = all_pages(&addr, "product=Seguro%20Auto&region=Norte");
    let windows: Vec<&str> = every_window
        .iter()
        .map(|r| r["window"].as_str().unwrap())
        .collect();
    assert_eq!(windows, ["1h", "24h", "7d", "30d"]);
    let (code, past) = get_json(&addr, "/api/v1/segments?page=99");
    assert_eq!((code, past["rows"].as_array().unwrap().len()), (200, 0));

    // Bad parameters: 400, JSON saying what is wrong.
    for (query, says) in [
        ("window=2h", "window"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("per_page=0", "per_page"),
        ("per_page=5000", "per_page"),
        ("sort=score", "sort"),
        ("order=random", "order"),
        ("customer_id=cli-1", "unknown parameter"),
    ] {
        let (code, e) = get_json(&addr, &format!("/api/v1/segments?{query}"));
        assert_eq!(code, 400, "{query}");
        assert!(e["error"].as_str().unwrap().contains(says), "{query}: {e}");
    }

    // The summary.
    let (code, s) = get_json(&addr, "/api/v1/summary");
    assert_eq!(code, 200);
    assert_eq!(s["windows"], serde_json::json!(["1h", "24h", "7d", "30d"]));
    assert_eq!(s["segments"], 20);
    assert_eq!(s["partitions"]["all"], true);
    assert_eq!(
        s["partitions"]["held"].as_array().unwrap().len() as u64,
        s["partitions"]["total"].as_u64().unwrap()
    );
    assert!(s["consumed"].as_u64().unwrap() > 0 && s["alerts_sent"].as_u64().unwrap() > 0);
    let reasons = s["rejected"]["by_reason"].as_object().unwrap();
    assert!(!reasons.is_empty(), "the demo sends malformed answers");
    let m = svc.metrics().unwrap();
    for (reason, n) in reasons {
        // The counter moves on as the demo runs: never behind the API's.
        let counted = m
            .get("nps_events_rejected_total", &[("reason", reason)])
            .unwrap();
        assert!(counted >= n.as_f64().unwrap(), "{reason}");
    }
    // The cases' figures hold together: the totals are the sums by
    // priority, overdue and in-time closes are parts of the open and the
    // closed, the share is their quotient, and the demo's detractors have
    // opened cases.
    let cases = &s["cases"];
    let n = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {s}"));
    let by = |k: &str| -> u64 {
        ["normal", "high", "critical"]
            .iter()
            .map(|p| n(&cases[k][p]))
            .sum()
    };
    let (open, overdue, closed, in_time) = (
        n(&cases["open"]),
        n(&cases["overdue"]),
        n(&cases["closed"]),
        n(&cases["closed_within_sla"]),
    );
    assert_eq!(by("open_by_priority"), open, "{s}");
    assert_eq!(by("overdue_by_priority"), overdue, "{s}");
    assert!(open > 0 && overdue <= open && in_time <= closed, "{s}");
    match cases["sla_met_share"].as_f64() {
        Some(share) => assert!((share - in_time as f64 / closed as f64).abs() < 1e-9, "{s}"),
        None => assert_eq!(closed, 0, "{s}"),
    }

    // No customer data anywhere in the API or the page.
    let (_, page) = http_get(&addr, "/").unwrap();
    let (_, segments) = http_get(&addr, "/api/v1/segments?per_page=1000").unwrap();
    let (_, summary) = http_get(&addr, "/api/v1/summary").unwrap();
    for body in [&page, &segments, &summary] {
        assert_eq!(customer_data_in(body), Vec::<&str>::new());
    }
}

#[test]
fn the_page_in_a_real_browser_shows_the_api_s_numbers_filters_and_updates() {
    let _heavy = heavy();
    let Some(python) = browser() else { return };
    let svc = demo("browser");
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live-page");
    std::fs::create_dir_all(&out).unwrap();
    let mut child = Command::new(python)
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/browser.py"),
            &format!("http://{}/", svc.metrics_addr),
            out.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = |step: &str| -> Value {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("browser.py ended before `{step}`"))
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["step"], step);
        v
    };

    // Rendered: the segments, as the API and /metrics gave them at the
    // same refresh.
    let loaded = next("loaded");
    assert_eq!(loaded["status"], "live");
    assert_eq!(loaded["window"], "24h");
    assert!(
        loaded["partial_hidden"].as_bool().unwrap(),
        "one instance holds every partition"
    );
    let shown = loaded["rows"].as_array().unwrap();
    let api = loaded["api"]["rows"].as_array().unwrap();
    assert_eq!(shown.len(), 20);
    assert_eq!(shown.len(), api.len());
    for (s, a) in shown.iter().zip(api) {
        assert_eq!(
            (&s["product"], &s["region"], &s["window"]),
            (&a["product"], &a["region"], &a["window"])
        );
        let same = |attr: &str, field: &str| {
            let page: Option<f64> = s[attr].as_str().and_then(|t| t.parse().ok());
            assert_eq!(page, a[field].as_f64(), "{attr} of {s}");
        };
        same("nps", "nps");
        same("margin", "margin_of_error");
        same("weighted", "weighted_nps");
        same("responses", "responses");
        same("promoters", "promoters");
        same("passives", "passives");
        same("detractors", "detractors");
        // What a person reads: one decimal (JavaScript's rounding).
        let text = s["text_nps"].as_str().unwrap();
        let (n, e) = text.split_once(" ± ").unwrap();
        for (shown, exact) in [(n, &a["nps"]), (e, &a["margin_of_error"])] {
            assert_eq!(shown.split('.').nth(1).map(str::len), Some(1), "{text}");
            let shown: f64 = shown.parse().unwrap();
            assert!(
                (shown - exact.as_f64().unwrap()).abs() <= 0.05 + 1e-9,
                "{text} for {a}"
            );
        }
    }
    let m = Metrics::parse(loaded["metrics"].as_str().unwrap());
    rows_match_metrics(api, &m).unwrap();
    assert_eq!(
        customer_data_in(loaded["html"].as_str().unwrap()),
        Vec::<&str>::new()
    );

    // Filtered by part of a product's name.
    let filtered = next("filtered");
    let first = shown[0]["product"].as_str().unwrap().to_lowercase();
    let rows = filtered["rows"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() < shown.len());
    assert!(rows.iter().all(|r| {
        r["product"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains(&first[..4])
    }));

    // New answers (the demo's stream goes on) show without a reload.
    writeln!(stdin, "go").unwrap();
    let updated = next("updated");
    let before: BTreeMap<(String, String), String> = shown
        .iter()
        .map(|r| {
            (
                (r["product"].to_string(), r["region"].to_string()),
                r["responses"].to_string(),
            )
        })
        .collect();
    assert!(updated["rows"].as_array().unwrap().iter().any(|r| {
        before.get(&(r["product"].to_string(), r["region"].to_string()))
            != Some(&r["responses"].to_string())
    }));

    // It polls: the rows showed three refreshes with nothing touched.
    let polled = next("polled");
    assert!(
        polled["refreshes"].as_array().unwrap().len() >= 3,
        "{polled}"
    );

    // A click on the NPS header sorts by NPS, descending; another one,
    // ascending (segments without an NPS last, then first).
    let sorted = next("sorted");
    for (order, descending) in [("desc", true), ("asc", false)] {
        let rows = sorted[order].as_array().unwrap();
        assert_eq!(rows.len(), 20, "{order}");
        let nps: Vec<f64> = rows
            .iter()
            .filter_map(|r| r["nps"].as_str().and_then(|t| t.parse().ok()))
            .collect();
        assert!(
            nps.windows(2).all(|w| if descending {
                w[0] >= w[1]
            } else {
                w[0] <= w[1]
            }),
            "{order}: {nps:?}"
        );
    }

    // Pages of 7: 7, 7 and 6 rows, each segment once, in the default
    // order (product, then region); "next" disabled on the last, and
    // "previous" back on page 2.
    let paged = next("paged");
    let pages: Vec<&Vec<Value>> = paged["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_array().unwrap())
        .collect();
    let sizes: Vec<usize> = pages.iter().map(|p| p.len()).collect();
    assert_eq!(sizes, [7, 7, 6], "{paged}");
    let names: Vec<(String, String)> = pages
        .iter()
        .flat_map(|p| p.iter())
        .map(|r| {
            (
                r["product"].as_str().unwrap().to_string(),
                r["region"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted_names = names.clone();
    sorted_names.sort();
    sorted_names.dedup();
    assert_eq!(names, sorted_names, "every segment once, in order");
    assert_eq!(names.len(), 20);
    assert_eq!(
        paged["info"],
        serde_json::json!(["page 1 of 3", "page 2 of 3", "page 3 of 3"])
    );
    assert_eq!(paged["next_disabled"], true);
    let back: Vec<&Value> = paged["back"].as_array().unwrap().iter().collect();
    let page_two: Vec<&Value> = pages[1].iter().collect();
    let key = |r: &&Value| (r["product"].clone(), r["region"].clone());
    assert_eq!(
        back.iter().map(key).collect::<Vec<_>>(),
        page_two.iter().map(key).collect::<Vec<_>>()
    );
    check_why_panel(&next("why"));
    check_teams_tab(&next("teams"));
    assert!(child.wait().unwrap().success());
    assert!(out.join("live-page.png").is_file());
    assert!(out.join("why-panel.png").is_file());
    assert!(out.join("teams-tab.png").is_file());
    eprintln!("screenshot: {}", out.join("live-page.png").display());
}

/// The Teams tab shows the API's leaderboard at the same refresh (no NPS
/// below min_responses, ranked best first, the demo's worse team last of
/// the teams ranked), with trends drawn from the engine's buckets at first
/// look; the Benchmarks card shows the API's quartiles.
fn check_teams_tab(teams: &Value) {
    assert_eq!(teams["tab_hidden"], false, "the demo has breakdowns");
    let fresh = teams["fresh_segment_trends"].as_array().unwrap();
    assert!(
        fresh.iter().filter(|n| n.as_u64() >= Some(10)).count() >= 10,
        "a fresh page draws the segments' trends from the engine: {fresh:?}"
    );
    for (label, min) in [("team", 30), ("agent", 10)] {
        let t = &teams[label];
        let shown = t["rows"].as_array().unwrap();
        let api = t["api"]["rows"].as_array().unwrap();
        assert_eq!(shown.len(), api.len(), "{label}");
        assert!(shown.len() >= 5, "{label}: {t}");
        for (s, a) in shown.iter().zip(api) {
            assert_eq!(s["value"], a["value"]);
            assert_eq!(s["responses"].as_str().unwrap(), a["responses"].to_string());
            let suppressed = a["responses"].as_u64().unwrap() < min;
            assert_eq!(a["suppressed"], suppressed, "{a}");
            assert_eq!(s["suppressed"], suppressed.to_string());
            let text = s["text_nps"].as_str().unwrap();
            if suppressed {
                assert_eq!(text, format!("fewer than {min} answers"));
                assert_eq!(s["nps"], "");
            } else {
                let nps: f64 = s["nps"].as_str().unwrap().parse().unwrap();
                assert_eq!(Some(nps), a["nps"].as_f64());
            }
        }
        let ranked: Vec<f64> = api
            .iter()
            .filter(|a| a["rank"].is_number())
            .map(|a| a["nps"].as_f64().unwrap())
            .collect();
        assert!(
            ranked.windows(2).all(|w| w[0] >= w[1]),
            "{label}: {ranked:?}"
        );
    }
    let team_rows = teams["team"]["api"]["rows"].as_array().unwrap();
    let last_ranked = team_rows.iter().rfind(|r| r["rank"].is_number()).unwrap();
    assert_eq!(last_ranked["value"], nps_stream::generator::WORSE_TEAM);
    let points = teams["team"]["trend_points"].as_array().unwrap();
    assert!(points.iter().all(|n| n.as_u64() >= Some(10)), "{points:?}");
    let bench = teams["benchmarks"].as_array().unwrap();
    let api = teams["benchmarks_api"]["rows"].as_array().unwrap();
    assert_eq!(bench.len(), 5, "every demo product has a benchmark");
    for (b, a) in bench.iter().zip(api) {
        assert_eq!(b["product"], a["product"]);
        assert_eq!(b["quartile"], a["quartile"]);
    }
}

/// The Why panel shows the API's themes at the same refresh, most costly
/// first, for every segment and for the segment clicked; and the clicked
/// segment's root causes.
fn check_why_panel(why: &Value) {
    for scope in ["every", "chosen"] {
        let panel = &why[scope];
        let shown = panel["themes"].as_array().unwrap();
        let api = panel["api"]["themes"].as_array().unwrap();
        assert!(!shown.is_empty(), "{scope}: no theme shown");
        assert_eq!(shown.len(), api.len(), "{scope}");
        for (s, a) in shown.iter().zip(api) {
            assert_eq!(s["theme"], a["theme"], "{scope}");
            assert_eq!(
                s["responses"].as_str().unwrap(),
                a["responses"].to_string(),
                "{scope}"
            );
            let impact: Option<f64> = s["impact"].as_str().and_then(|t| t.parse().ok());
            assert_eq!(impact, a["impact_points"].as_f64(), "{scope}: {s}");
        }
        let impacts: Vec<f64> = api
            .iter()
            .filter_map(|t| t["impact_points"].as_f64())
            .collect();
        assert!(
            impacts.windows(2).all(|w| w[0] <= w[1]),
            "{scope}: {impacts:?}"
        );
        assert!(customer_data_in(&panel.to_string()).is_empty());
    }
    let chosen = &why["chosen"];
    assert_eq!(chosen["api"]["segments"], 1, "{chosen}");
    let selected = chosen["selected"].as_array().unwrap();
    assert_eq!(selected.len(), 1);
    assert_eq!(selected[0]["product"], why["product"]);
    assert_eq!(selected[0]["region"], why["region"]);
    let scope = chosen["scope"].as_str().unwrap();
    assert!(scope.contains(why["product"].as_str().unwrap()), "{scope}");
    // Root causes: those shown are the API's (which may have counted more
    // cases since).
    let shown = why["causes"].as_array().unwrap();
    assert!(!shown.is_empty(), "no root cause within a minute: {why}");
    let api: BTreeMap<&str, u64> = why["api_causes"]["root_causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["root_cause"].as_str().unwrap(),
                c["cases"].as_u64().unwrap(),
            )
        })
        .collect();
    for c in shown {
        let n: u64 = c["cases"].as_str().unwrap().parse().unwrap();
        let cause = c["cause"].as_str().unwrap();
        assert!(
            api.get(cause).is_some_and(|a| *a >= n),
            "{cause}: {n} shown, API {api:?}"
        );
    }
}

/// Two instances in one group on the embedded broker: each says, in the
/// API and on its page, which of the input's partitions it holds.
#[test]
fn an_instance_holding_part_of_the_input_says_so() {
    let _heavy = heavy();
    let cluster = common::mock::Cluster::new();
    cluster.create_topic("survey-responses", 4, 1).unwrap();
    cluster.create_topic("nps-detractor-alerts", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let args = ["-X", "session.timeout.ms=6000", "--cases", "off"];
    let mut a = Service::run(&brokers, "g-page", &args, "page-a");
    let mut b = Service::run(&brokers, "g-page", &args, "page-b");
    for svc in [&mut a, &mut b] {
        svc.wait_for("two partitions each", Duration::from_secs(90), |m| {
            m.get("nps_assigned_partitions", &[]) == Some(2.0)
        });
    }
    let mut union = Vec::new();
    let mut summaries = Vec::new();
    for svc in [&a, &b] {
        // The view is published at the next refresh (every second).
        let deadline = Instant::now() + Duration::from_secs(10);
        let s = loop {
            let (_, s) = get_json(&svc.metrics_addr, "/api/v1/summary");
            if s["partitions"]["held"].as_array().unwrap().len() == 2 {
                break s;
            }
            assert!(Instant::now() < deadline, "{s}");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(s["partitions"]["total"], 4);
        assert_eq!(s["partitions"]["all"], false);
        assert!(s["cases"].is_null(), "--cases off");
        union.extend(
            s["partitions"]["held"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_i64().unwrap()),
        );
        summaries.push(s);
    }
    union.sort();
    assert_eq!(union, [0, 1, 2, 3]);
    let Some(python) = browser() else { return };
    let out = Command::new(python)
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/browser.py"),
            "--note",
            &format!("http://{}/", a.metrics_addr),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["partial_hidden"], false);
    let held: Vec<String> = summaries[0]["partitions"]["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    let note = page["partial"].as_str().unwrap();
    assert!(
        note.contains(&format!("holds partitions {} of 4", held.join(", ")))
            && note.contains("nps:score:segment"),
        "{note}"
    );
}
