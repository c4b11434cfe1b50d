use super::*;

fn args(list: &[&str]) -> RunArgs {
    let mut full = vec!["nps-stream", "run"];
    full.extend_from_slice(list);
    match Cli::try_parse_from(full).unwrap().command {
        Command::Run(a) => a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn defaults_fill_what_is_not_given() {
    let s = Settings::resolve(&args(&["--brokers", "127.0.0.1:9092"]), false).unwrap();
    assert_eq!(s.group_id, "nps-stream");
    assert_eq!(s.input_topic, "survey-responses");
    assert_eq!(s.alerts_topic, "nps-detractor-alerts");
    assert_eq!(s.dlq_topic, "survey-responses-dlq");
    assert_eq!(s.metrics_addr.to_string(), "0.0.0.0:9898");
    assert_eq!(s.engine.windows, vec!["1h", "24h", "7d", "30d"]);
    assert_eq!(s.alerts_format, AlertFormat::Protobuf);
    assert_eq!(s.auto_offset_reset, OffsetReset::Earliest);
    assert_eq!(s.state_topic, "nps-stream-state");
    assert_eq!(s.snapshot_interval, Duration::from_secs(10));
    let s = Settings::resolve(&args(&["--brokers", "b", "--group-id", "g1"]), false).unwrap();
    assert_eq!(s.state_topic, "g1-state");
}

#[test]
fn flags_win_over_the_file() {
    let dir = std::env::temp_dir().join(format!("nps-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        r#"
brokers = "file:9092"
group_id = "from-file"
alerts_format = "json"
[kafka]
"security.protocol" = "SASL_SSL"
[engine]
windows = ["15m", "1d"]
max_keys = 50
[alerts]
threshold = 4
"#,
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let s = Settings::resolve(
        &args(&[
            "--config",
            p,
            "--group-id",
            "flag",
            "-X",
            "sasl.mechanism=PLAIN",
        ]),
        false,
    )
    .unwrap();
    assert_eq!(s.brokers, "file:9092");
    assert_eq!(s.group_id, "flag");
    assert_eq!(s.alerts_format, AlertFormat::Json);
    assert_eq!(s.engine.windows, vec!["15m", "1d"]);
    assert_eq!(s.engine.max_keys, 50);
    assert_eq!(s.alerts.threshold, 4);
    assert_eq!(s.kafka["security.protocol"], "SASL_SSL");
    assert_eq!(s.kafka["sasl.mechanism"], "PLAIN");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn errors_name_the_flag() {
    let err = |list: &[&str]| Settings::resolve(&args(list), false).unwrap_err();
    assert!(matches!(
        err(&[]),
        ConfigError::Missing {
            flag: "--brokers",
            ..
        }
    ));
    for (list, flag) in [
        (&["--windows", "1h,soon"][..], "--windows / [engine]"),
        (&["--dedup-max-ids", "16777217"], "--dedup-max-ids"),
        (&["--metrics-addr", "nowhere"], "--metrics-addr"),
        (&["-X", "novalue"], "-X"),
        (&["--alerts-format", "xml"], "--alerts-format"),
        (&["--input-topic", "bad topic"], "--input-topic"),
        (&["--dedup-horizon", "later"], "--dedup-horizon"),
        (&["--snapshot-interval", "0s"], "--snapshot-interval"),
        (&["--snapshot-max-bytes", "10"], "--snapshot-max-bytes"),
        (&["--alert-threshold", "11"], "--alert-threshold"),
        (&["--max-keys", "0"], "--max-keys"),
        (&["--max-pending", "0"], "--max-pending"),
        // A group id that makes no topic name is caught.
        (&["--group-id", "a b"], "--state-topic"),
    ] {
        let mut full = vec!["--brokers", "b"];
        full.extend_from_slice(list);
        let e = err(&full);
        assert!(
            matches!(&e, ConfigError::Invalid { flag: f, .. } if f == flag),
            "{list:?}: {e:?}"
        );
        assert!(e.to_string().starts_with(flag), "one line naming it: {e}");
    }
    assert_eq!(
        err(&["--brokers", "b", "-X", "group.id=x"]),
        ConfigError::Reserved { key: "group.id" }
    );
    assert!(matches!(
        err(&["--brokers", "b", "--config", "/nonexistent.toml"]),
        ConfigError::File { .. }
    ));
}

#[test]
fn max_pending_comes_from_the_flag_or_the_file() {
    let s = Settings::resolve(&args(&["--brokers", "b"]), false).unwrap();
    assert_eq!(s.max_pending, 50_000);
    let s = Settings::resolve(&args(&["--brokers", "b", "--max-pending", "500"]), false).unwrap();
    assert_eq!(s.max_pending, 500);
    let dir = std::env::temp_dir().join(format!("nps-cfg-mp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, "brokers = \"b\"\nmax_pending = 700\n").unwrap();
    let s = Settings::resolve(&args(&["--config", path.to_str().unwrap()]), false).unwrap();
    assert_eq!(s.max_pending, 700);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unknown_file_keys_are_refused() {
    let dir = std::env::temp_dir().join(format!("nps-cfg2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, "brokers = \"b\"\nbrokerz = 1\n").unwrap();
    let e = Settings::resolve(&args(&["--config", path.to_str().unwrap()]), false).unwrap_err();
    assert!(
        matches!(&e, ConfigError::File { reason, .. } if reason.contains("brokerz")),
        "{e}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn case_tracking_settings_come_from_flags_and_the_file_and_are_checked() {
    let s = Settings::resolve(&args(&["--brokers", "b"]), false).unwrap();
    assert!(s.cases.enabled);
    assert_eq!(s.cases.case_events_topic, "nps-case-events");
    assert_eq!(s.cases.escalations_topic, "nps-case-escalations");
    assert_eq!(s.cases.contact_sla.critical, Duration::from_secs(4 * 3600));
    assert_eq!(s.cases.repeat_horizon, Duration::from_secs(90 * 86_400));
    assert_eq!(s.cases.orphan_grace, Duration::from_secs(600));
    assert_eq!(s.cases.closed_retention, Duration::from_secs(30 * 86_400));
    assert_eq!(s.cases.max_cases, 2_000_000);
    assert_eq!(s.cases.tracker(), crate::cases::CaseConfig::default());
    let s = Settings::from_toml(
        "brokers = \"b\"\n[cases]\nenabled = false\ncontact_sla = \"high=2h\"\norphan_grace = \"1m\"\nclosed_retention = \"2d\"\nmax_cases = 5000\n",
        false,
    )
    .unwrap();
    assert!(!s.cases.enabled);
    assert_eq!(s.cases.contact_sla.high, Duration::from_secs(7200));
    assert_eq!(s.cases.contact_sla.normal, Duration::from_secs(48 * 3600));
    assert_eq!(s.cases.orphan_grace, Duration::from_secs(60));
    let t = s.cases.tracker();
    assert_eq!(
        (t.closed_retention, t.max_cases),
        (Duration::from_secs(2 * 86_400), 5000)
    );
    let s = Settings::resolve(
        &args(&[
            "--brokers",
            "b",
            "--cases",
            "off",
            "--contact-sla",
            "critical=10s",
            "--repeat-horizon",
            "7d",
            "--case-events-topic",
            "crm-events",
            "--escalations-topic",
            "crm-escalations",
            "--closed-retention",
            "5m",
            "--max-cases",
            "70000",
        ]),
        false,
    )
    .unwrap();
    assert!(!s.cases.enabled);
    assert_eq!(s.cases.contact_sla.critical, Duration::from_secs(10));
    assert_eq!(s.cases.repeat_horizon, Duration::from_secs(7 * 86_400));
    assert_eq!(
        (
            s.cases.case_events_topic.as_str(),
            s.cases.escalations_topic.as_str()
        ),
        ("crm-events", "crm-escalations")
    );
    assert_eq!(
        (s.cases.closed_retention, s.cases.max_cases),
        (Duration::from_secs(300), 70_000)
    );
    for (flags, flag) in [
        (&["--cases", "maybe"][..], "--cases"),
        (&["--contact-sla", "urgent=1h"][..], "--contact-sla"),
        (&["--contact-sla", "high=0s"][..], "--contact-sla"),
        (&["--orphan-grace", "soon"][..], "--orphan-grace"),
        (&["--closed-retention", "a while"][..], "--closed-retention"),
        (&["--max-cases", "0"][..], "--max-cases"),
        (
            &["--case-events-topic", "bad topic"][..],
            "--case-events-topic",
        ),
        (
            &["--case-events-topic", "nps-detractor-alerts"][..],
            "--case-events-topic",
        ),
    ] {
        let mut a = vec!["--brokers", "b"];
        a.extend_from_slice(flags);
        let e = Settings::resolve(&args(&a), false).unwrap_err();
        assert_eq!(e.flag(), flag, "{flags:?}: {e}");
    }
}

#[test]
fn targets_come_from_the_file_and_are_checked() {
    let s = Settings::from_toml(
        "brokers = \"b\"\n\
         [[targets]]\nproduct = \"Tarjeta Oro\"\nnps = 40\n\
         [[targets]]\nproduct = \"Tarjeta Oro\"\nregion = \"Norte\"\nnps = 45.5\n",
        false,
    )
    .unwrap();
    assert_eq!(
        s.targets,
        vec![
            Target {
                product: "Tarjeta Oro".into(),
                region: None,
                nps: 40.0
            },
            Target {
                product: "Tarjeta Oro".into(),
                region: Some("Norte".into()),
                nps: 45.5
            },
        ]
    );
    for (bad, says) in [
        (
            "[[targets]]\nproduct = \"A\"\nnps = 101\n",
            "from -100 to 100",
        ),
        (
            "[[targets]]\nproduct = \"\"\nnps = 1\n",
            "must not be empty",
        ),
        (
            "[[targets]]\nproduct = \"A\"\nnps = 1\n[[targets]]\nproduct = \"A\"\nnps = 2\n",
            "two targets",
        ),
    ] {
        let e = Settings::from_toml(&format!("brokers = \"b\"\n{bad}"), false).unwrap_err();
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
    let e = Settings::from_toml(
        "brokers = \"b\"\n[[targets]]\nproduct = \"A\"\nnps = 1\nregio = \"x\"\n",
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("regio"), "{e}");
}

#[test]
fn promoter_settings_come_from_flags_and_the_file_and_are_checked() {
    let s = Settings::resolve(&args(&["--brokers", "b"]), false).unwrap();
    assert!(s.promoters.enabled);
    assert_eq!(s.promoters.topic, "nps-promoter-events");
    assert_eq!(
        s.promoters.tier_names(),
        vec!["strategic", "high_value", "standard"]
    );
    let s = Settings::resolve(
        &args(&[
            "--brokers",
            "b",
            "--promoters",
            "off",
            "--promoter-topic",
            "promotores",
        ]),
        false,
    )
    .unwrap();
    assert!(!s.promoters.enabled);
    assert_eq!(s.promoters.topic, "promotores");
    let s = Settings::from_toml(
        "brokers = \"b\"\n[promoters]\ntopic = \"p\"\n[[promoters.tiers]]\nname = \"all\"\n[[promoters.actions]]\nname = \"thank_you\"\n",
        false,
    )
    .unwrap();
    assert_eq!(s.promoters.topic, "p");
    assert_eq!(s.promoters.tier_names(), vec!["all"]);
    assert_eq!(s.promoters.actions[0].name, "thank_you");
    let refused = |a: &[&str]| Settings::resolve(&args(a), false).unwrap_err().flag();
    assert_eq!(
        refused(&["--brokers", "b", "--promoters", "maybe"]),
        "--promoters"
    );
    assert_eq!(
        refused(&["--brokers", "b", "--promoter-topic", "nps-detractor-alerts"]),
        "--promoter-topic"
    );
    assert_eq!(
        refused(&["--brokers", "b", "--promoter-topic", "a b"]),
        "--promoter-topic"
    );
    let e = Settings::from_toml(
        "brokers = \"b\"\n[[promoters.tiers]]\nname = \"Oro\"\n",
        false,
    )
    .unwrap_err();
    assert_eq!(e.flag(), "[promoters]");
    assert!(e.to_string().contains("label value"), "{e}");
}

#[test]
fn theme_settings_come_from_the_flag_and_the_file_and_are_checked() {
    let s = Settings::resolve(&args(&["--brokers", "b"]), false).unwrap();
    assert!(s.themes.enabled);
    assert_eq!(s.themes.taxonomy, crate::themes::default_specs());
    assert!(s.themes.taxonomy().is_some());
    let s = Settings::resolve(&args(&["--brokers", "b", "--themes", "off"]), false).unwrap();
    assert!(!s.themes.enabled);
    assert!(s.themes.taxonomy().is_none());
    let s = Settings::from_toml("brokers = \"b\"\nthemes = \"off\"\n", false).unwrap();
    assert!(!s.themes.enabled);
    let s = Settings::from_toml(
        "brokers = \"b\"\n[[themes]]\nname = \"wait\"\npatterns = [\"lent*\", \"tiempo de espera\"]\n[[themes]]\nname = \"app\"\npatterns = [\"app\"]\n",
        false,
    )
    .unwrap();
    let t = s.themes.taxonomy().unwrap();
    assert_eq!(t.names(), ["app", "wait"]);
    assert_eq!(t.names_of(t.classify("La app, lentísima")), ["app", "wait"]);
    let refused = |text: &str| Settings::from_toml(text, false).unwrap_err();
    let e = refused("brokers = \"b\"\n[[themes]]\nname = \"Espera\"\npatterns = [\"x\"]\n");
    assert_eq!(e.flag(), "[[themes]]");
    assert!(e.to_string().contains("`Espera`"), "{e}");
    let e = refused("brokers = \"b\"\n[[themes]]\nname = \"a\"\npatterns = []\n");
    assert!(e.to_string().contains("1 to 64 patterns"), "{e}");
    let many: String = (0..65)
        .map(|i| format!("[[themes]]\nname = \"t{i}\"\npatterns = [\"x\"]\n"))
        .collect();
    let e = refused(&format!("brokers = \"b\"\n{many}"));
    assert!(e.to_string().contains("at most 64 themes"), "{e}");
    let e = refused("brokers = \"b\"\n[[themes]]\nname = \"a\"\npattern = [\"x\"]\n");
    assert!(e.to_string().contains("pattern"), "{e}");
    let e = refused("brokers = \"b\"\nthemes = \"maybe\"\n");
    assert!(e.to_string().contains("maybe"), "{e}");
    assert_eq!(
        Settings::resolve(&args(&["--brokers", "b", "--themes", "x"]), false)
            .unwrap_err()
            .flag(),
        "--themes"
    );
}

#[test]
fn root_causes_come_from_the_file_and_are_checked() {
    let s = Settings::resolve(&args(&["--brokers", "b"]), false).unwrap();
    assert_eq!(
        s.cases.root_causes,
        crate::cases::DEFAULT_ROOT_CAUSES.map(String::from)
    );
    let s = Settings::from_toml(
        "brokers = \"b\"\n[cases]\nroot_causes = [\"billing_error\", \"long_wait\"]\n",
        false,
    )
    .unwrap();
    assert_eq!(
        s.cases.tracker().root_causes,
        ["billing_error", "long_wait"]
    );
    for (bad, why) in [
        ("[\"Billing\"]", "`Billing` must be"),
        ("[\"other\"]", "`other` is what"),
        ("[\"a\", \"a\"]", "`a` is listed twice"),
    ] {
        let e = Settings::from_toml(
            &format!("brokers = \"b\"\n[cases]\nroot_causes = {bad}\n"),
            false,
        )
        .unwrap_err();
        assert_eq!(e.flag(), "[cases] root_causes");
        assert!(e.to_string().contains(why), "{e}");
    }
}

#[test]
fn a_property_list_keeps_an_escaped_semicolon_and_never_echoes_a_malformed_entry() {
    let list = r"security.protocol=SASL_SSL;sasl.password=pa\;ss\\;sasl.username=nps;;".to_string();
    let p = parse_properties(&[list]).unwrap();
    assert_eq!(p["sasl.password"], r"pa;ss\");
    assert_eq!(p["sasl.username"], "nps");
    assert_eq!(p["security.protocol"], "SASL_SSL");
    assert_eq!(p.len(), 3);
    // A backslash before anything else stays as it is.
    let p = parse_properties(&[r"sasl.password=a\b".to_string()]).unwrap();
    assert_eq!(p["sasl.password"], r"a\b");
    // The unescaped `;` cuts the password; what follows is named by place.
    let e = parse_properties(&["sasl.password=secret;part2".to_string()]).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("property 2"), "{text}");
    assert!(
        !text.contains("part2") && !text.contains("secret"),
        "{text}"
    );
}

#[test]
fn breakdowns_and_benchmarks_come_from_the_file_and_are_checked() {
    let s = Settings::from_toml(
        "brokers = \"b\"\n\
         [[breakdowns]]\nattribute = \"team\"\nlabel = \"team\"\n\
         [[breakdowns]]\nattribute = \"agent_id\"\nlabel = \"agent\"\nmin_responses = 10\n\
         max_values = 5000\nprometheus = false\n\
         [[benchmarks]]\nproduct = \"*\"\np25 = 10\nmedian = 32\np75 = 50\nsource = \"Sector survey 2026\"\n\
         [[benchmarks]]\nproduct = \"Tarjeta Oro\"\np25 = 20\nmedian = 41.5\np75 = 60\nsource = \"Banca 2026\"\n",
        false,
    )
    .unwrap();
    assert_eq!(
        s.breakdowns,
        vec![
            Breakdown {
                attribute: "team".into(),
                label: "team".into(),
                min_responses: 30,
                max_values: 500,
                prometheus: true,
            },
            Breakdown {
                attribute: "agent_id".into(),
                label: "agent".into(),
                min_responses: 10,
                max_values: 5000,
                prometheus: false,
            },
        ]
    );
    assert_eq!(
        benchmark_of(&s.benchmarks, "Tarjeta Oro").unwrap().median,
        41.5
    );
    assert_eq!(
        benchmark_of(&s.benchmarks, "Seguro Hogar").unwrap().median,
        32.0
    );
    let breakdown = |label: &str, rest: &str| {
        format!("[[breakdowns]]\nattribute = \"{label}\"\nlabel = \"{label}\"\n{rest}")
    };
    let five: String = (0..5).map(|i| breakdown(&format!("b{i}"), "")).collect();
    let benchmark = |q: &str| format!("[[benchmarks]]\nproduct = \"A\"\nsource = \"s\"\n{q}");
    for (bad, says) in [
        (five, "at most 4 breakdowns"),
        (breakdown("Team", ""), "a-z, 0-9 and _"),
        (breakdown("team", "max_values = 0\n"), "max_values of team"),
        (
            breakdown("team", "max_values = 60001\n"),
            "max_values of team",
        ),
        (
            breakdown("team", "min_responses = 0\n"),
            "min_responses of team",
        ),
        (breakdown("team", "colour = 1\n"), "colour"),
        (
            breakdown("team", "") + &breakdown("team", ""),
            "given twice",
        ),
        (
            benchmark("p25 = 50\nmedian = 40\np75 = 60\n"),
            "p25 <= median <= p75",
        ),
        (
            benchmark("p25 = 50\nmedian = 60\np75 = 101\n"),
            "from -100 to 100",
        ),
        (benchmark("median = 60\np75 = 70\n"), "p25"),
        (
            benchmark("p25 = 1\nmedian = 2\np75 = 3\n")
                + &benchmark("p25 = 1\nmedian = 2\np75 = 3\n"),
            "two benchmarks",
        ),
    ] {
        let e = Settings::from_toml(&format!("brokers = \"b\"\n{bad}"), false).unwrap_err();
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
}
