//! The Kubernetes manifests as kustomize builds them (`kubectl
//! kustomize`): the base and each overlay render; every core object passes
//! the Kubernetes 1.30 schemas (kubernetes-validate 1.37.0, pinned by the
//! test command, ships them) and every Strimzi object Strimzi's CRD
//! schemas (tests/strimzi); the Strimzi overlay gives nps-stream each topic
//! with the settings it needs and its user the rights it uses; and the
//! pods' memory limit covers the most the shipped settings let an instance
//! hold (`nps_stream::sizing`).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use clap::Parser;
use common::manifests::*;
use common::*;
use nps_stream::config::{Cli, Command as Sub, Settings};
use nps_stream::sizing::Bound;
use serde::Deserialize as _;
use serde_json::Value;

const KUSTOMIZATIONS: [&str; 3] = [
    "deploy/kubernetes",
    "deploy/overlays/kube-prometheus-stack",
    "deploy/overlays/strimzi",
];

/// The objects `kubectl kustomize DIR` renders, or None without kubectl.
fn build(dir: &str) -> Option<Vec<Value>> {
    if !have_tool("kubectl") {
        return None;
    }
    let out = run_ok(Command::new("kubectl").arg("kustomize").arg(repo(dir)));
    Some(
        serde_yaml_ng::Deserializer::from_str(&out)
            .map(|d| {
                let v = serde_yaml_ng::Value::deserialize(d).unwrap();
                serde_json::to_value(v).unwrap()
            })
            .collect(),
    )
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

/// Core objects (apiVersion without a dotted group) against Kubernetes
/// 1.30's schemas, strictly (unknown fields refused).
fn validate_core(dir: &str, docs: &[Value]) {
    if !have_tool("kubernetes-validate") {
        return;
    }
    let core: Vec<&Value> = docs
        .iter()
        .filter(|d| !s(&d["apiVersion"]).split('/').next().unwrap().contains('.'))
        .collect();
    let tmp = std::env::temp_dir().join(format!(
        "nps-kustomize-{}-{}",
        std::process::id(),
        dir.replace('/', "-")
    ));
    std::fs::create_dir_all(&tmp).unwrap();
    let files: Vec<_> = core
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let f = tmp.join(format!("{i}.yaml"));
            std::fs::write(&f, serde_yaml_ng::to_string(d).unwrap()).unwrap();
            f
        })
        .collect();
    let text = run_ok(
        Command::new("kubernetes-validate")
            .args(["--strict", "-k", "1.30.0"])
            .args(&files),
    );
    assert_eq!(
        text.matches(" passed ").count(),
        files.len(),
        "{dir}: {text}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// Strimzi's objects against Strimzi's CRD schemas (tests/strimzi, which
/// the README's test command installs): whether all passed, and the
/// validator's line per object. None when the schemas are not installed.
fn validate_strimzi(docs: &[Value]) -> Option<(bool, String)> {
    let dir = repo("tests/strimzi");
    if !dir
        .join("node_modules/@kubernetes-models/strimzi-kafka-operator")
        .is_dir()
    {
        assert!(
            std::env::var("NPS_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "Strimzi's schemas are not installed; run the suite with `bash tests/run-all.sh`"
        );
        eprintln!("note: Strimzi's schemas not installed, check skipped");
        return None;
    }
    let mut child = Command::new("node")
        .arg("validate.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let input = serde_json::to_vec(docs).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    ))
}

#[test]
fn every_kustomization_builds_and_its_objects_pass_their_schemas() {
    for dir in KUSTOMIZATIONS {
        let Some(docs) = build(dir) else { return };
        validate_core(dir, &docs);
        let strimzi: Vec<Value> = docs
            .iter()
            .filter(|d| s(&d["apiVersion"]).starts_with("kafka.strimzi.io/"))
            .cloned()
            .collect();
        if let (false, Some((passed, text))) = (strimzi.is_empty(), validate_strimzi(&strimzi)) {
            assert!(passed, "{dir}: {text}");
            assert_eq!(
                text.lines().filter(|l| l.starts_with("ok ")).count(),
                strimzi.len()
            );
        }
    }
}

#[test]
fn the_strimzi_schemas_refuse_what_strimzi_would() {
    let Some(docs) = build("deploy/overlays/strimzi") else {
        return;
    };
    let mut user = one(&docs, "KafkaUser").clone();
    user["spec"]["authorization"]["acls"][0]["operations"] = serde_json::json!(["Fly"]);
    let mut topic = of_kind(&docs, "KafkaTopic")[0].clone();
    topic["spec"]["partitions"] = serde_json::json!("twelve");
    for bad in [user, topic] {
        if let Some((passed, text)) = validate_strimzi(&[bad]) {
            assert!(!passed && text.starts_with("invalid "), "{text}");
        }
    }
}

/// The settings the rendered ConfigMap holds, with the environment the
/// Deployment gives the container (plain values; secrets left out).
fn settings(docs: &[Value]) -> Settings {
    let config = one(docs, "ConfigMap");
    let toml = s(&config["data"]["nps-stream.toml"]);
    let path = std::env::temp_dir().join(format!("nps-k8s-{}.toml", std::process::id()));
    std::fs::write(&path, toml).unwrap();
    let Sub::CheckConfig(args) = Cli::try_parse_from([
        "nps-stream",
        "check-config",
        "--config",
        path.to_str().unwrap(),
    ])
    .unwrap()
    .command
    else {
        unreachable!()
    };
    let settings = Settings::resolve(&args, false).unwrap();
    std::fs::remove_file(&path).unwrap();
    settings
}

fn container(docs: &[Value]) -> &Value {
    &one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn env(docs: &[Value]) -> BTreeMap<String, Value> {
    container(docs)["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (s(&e["name"]).to_string(), e.clone()))
        .collect()
}

#[test]
fn the_memory_limit_covers_the_bound_at_the_shipped_settings() {
    let Some(docs) = build("deploy/overlays/strimzi") else {
        return;
    };
    let settings = settings(&docs);
    // After one pod of the Deployment is lost, the others share the input
    // topic's partitions.
    let replicas = one(&docs, "Deployment")["spec"]["replicas"]
        .as_u64()
        .unwrap();
    let input = of_kind(&docs, "KafkaTopic")
        .into_iter()
        .find(|t| t["metadata"]["name"] == settings.input_topic.as_str())
        .expect("the input's KafkaTopic");
    let partitions = input["spec"]["partitions"].as_u64().unwrap();
    let held = partitions.div_ceil(replicas - 1);
    let bound = Bound::of(&settings, held);
    let resources = &container(&docs)["resources"];
    let limit = bytes_of(s(&resources["limits"]["memory"]));
    let request = bytes_of(s(&resources["requests"]["memory"]));
    println!(
        "holding {held} of {partitions} partitions: bound {} MiB, limit {} MiB\n{bound}",
        bound.total() >> 20,
        limit >> 20
    );
    assert!(
        limit >= bound.total(),
        "limit {limit} under the bound\n{bound}"
    );
    assert!(request <= limit);
    // The request is what an instance holds in a steady state at its
    // share: at least the state of its partitions' keys' segments, the
    // runtime and its fetch queue.
    let steady = Bound::of(&settings, partitions.div_ceil(replicas));
    let floor: u64 = steady
        .parts
        .iter()
        .filter(|p| p.what.starts_with("runtime") || p.what.starts_with("input fetch queue"))
        .map(|p| p.bytes)
        .sum();
    assert!(request >= floor, "request {request} under {floor}");
}

#[test]
fn a_rollout_that_rebuilds_from_the_input_is_not_cut_short() {
    let Some(docs) = build("deploy/kubernetes") else {
        return;
    };
    // Kubernetes' default progress deadline is 600 s; NpsStreamNotReady
    // already pages after 5 minutes of a pod not ready.
    let deadline = one(&docs, "Deployment")["spec"]["progressDeadlineSeconds"]
        .as_u64()
        .expect("progressDeadlineSeconds");
    assert!(deadline > 600, "{deadline}");
}

#[test]
fn the_strimzi_overlay_gives_every_topic_its_settings_and_the_user_its_rights() {
    let Some(docs) = build("deploy/overlays/strimzi") else {
        return;
    };
    let settings = settings(&docs);
    let topics: BTreeMap<String, &Value> = of_kind(&docs, "KafkaTopic")
        .into_iter()
        .map(|t| (s(&t["metadata"]["name"]).to_string(), &t["spec"]))
        .collect();
    let config = |topic: &str, key: &str| -> Option<u64> {
        let v = &topics[topic]["config"][key];
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    let state_topic = match settings.state_topic.as_str() {
        "" => format!("{}-state", settings.group_id),
        t => t.to_string(),
    };
    let read = [settings.input_topic.clone()];
    let write = [
        settings.alerts_topic.clone(),
        settings.dlq_topic.clone(),
        settings.cases.escalations_topic.clone(),
        settings.promoters.topic.clone(),
    ];
    let both = [state_topic.clone()];
    let read_by_tracker = [
        settings.alerts_topic.clone(),
        settings.cases.case_events_topic.clone(),
    ];
    for t in read
        .iter()
        .chain(&write)
        .chain(&both)
        .chain(&read_by_tracker)
    {
        assert!(topics.contains_key(t), "no KafkaTopic for {t}");
    }
    assert_eq!(topics.len(), 7);
    // Outputs follow the input's partitions; case events are
    // co-partitioned with the alerts.
    let partitions = |t: &str| topics[t]["partitions"].as_u64().unwrap();
    for t in topics.keys() {
        assert_eq!(partitions(t), partitions(&settings.input_topic), "{t}");
    }
    assert_eq!(
        partitions(&settings.cases.case_events_topic),
        partitions(&settings.alerts_topic)
    );
    // The state topic is compacted and takes a whole partition's record.
    assert_eq!(topics[&state_topic]["config"]["cleanup.policy"], "compact");
    let record = config(&state_topic, "max.message.bytes").unwrap();
    assert!(
        record >= settings.snapshot_max_bytes as u64 + 1024,
        "{record}"
    );
    // Retention: the input at least the longest window, the alerts at least
    // the repeat horizon (the case tracker reads them back).
    let longest = settings
        .engine
        .windows
        .iter()
        .map(|w| humantime::parse_duration(w).unwrap().as_millis() as u64)
        .max()
        .unwrap();
    assert!(config(&settings.input_topic, "retention.ms").unwrap() >= longest);
    let horizon = settings.cases.repeat_horizon.as_millis() as u64;
    assert!(config(&settings.alerts_topic, "retention.ms").unwrap() >= horizon);

    // The user: exactly the operations used, on those topics and on the
    // groups by prefix.
    let user = one(&docs, "KafkaUser");
    assert_eq!(user["spec"]["authentication"]["type"], "scram-sha-512");
    let mut rights: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for acl in user["spec"]["authorization"]["acls"].as_array().unwrap() {
        let r = &acl["resource"];
        let key = (s(&r["type"]).to_string(), s(&r["name"]).to_string());
        if r["type"] == "group" {
            assert_eq!(r["patternType"], "prefix");
        }
        rights.insert(key, strings(&acl["operations"]));
    }
    let has = |kind: &str, name: &str, op: &str| {
        rights
            .get(&(kind.to_string(), name.to_string()))
            .is_some_and(|ops| ops.iter().any(|o| o == op))
    };
    assert!(has("group", &settings.group_id, "Read"));
    assert!(has("topic", &settings.input_topic, "Read"));
    assert!(has("topic", &settings.input_topic, "DescribeConfigs"));
    assert!(!has("topic", &settings.input_topic, "Write"));
    for t in &write {
        assert!(has("topic", t, "Write"), "{t}");
    }
    for t in read_by_tracker.iter().chain(&both) {
        assert!(has("topic", t, "Read"), "{t}");
    }
    assert!(has("topic", &state_topic, "Write"));
    assert!(
        !rights
            .values()
            .flatten()
            .any(|o| o == "All" || o == "Create")
    );

    // One cluster everywhere: the resources' label, the bootstrap address,
    // the CA Secret.
    let cluster = s(&user["metadata"]["labels"]["strimzi.io/cluster"]).to_string();
    for t in of_kind(&docs, "KafkaTopic") {
        assert_eq!(s(&t["metadata"]["labels"]["strimzi.io/cluster"]), cluster);
    }
    let env = env(&docs);
    assert!(s(&env["NPS_BROKERS"]["value"]).starts_with(&format!("{cluster}-kafka-bootstrap:")));

    // TLS trusts the mounted cluster CA; SCRAM reads the User Operator's
    // Secret (named after the user, key `password`); both files are watched.
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    let mounted = |secret: &str, key: &str| -> String {
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["secret"]["secretName"] == secret)
            .unwrap_or_else(|| panic!("no volume of Secret {secret}"));
        let mount = container(&docs)["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume["name"])
            .unwrap();
        let item = volume["secret"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["key"] == key)
            .unwrap();
        format!("{}/{}", s(&mount["mountPath"]), s(&item["path"]))
    };
    let ca = mounted(&format!("{cluster}-cluster-ca-cert"), "ca.crt");
    let user_name = s(&user["metadata"]["name"]);
    let password = mounted(user_name, "password");
    let properties = s(&env["NPS_KAFKA_PROPERTIES"]["value"]);
    assert!(
        properties.contains(&format!("ssl.ca.location={ca}")),
        "{properties}"
    );
    assert!(properties.contains("sasl.username=$(KAFKA_SASL_USERNAME)"));
    assert!(properties.contains("sasl.password=$(KAFKA_SASL_PASSWORD)"));
    assert_eq!(s(&env["KAFKA_SASL_USERNAME"]["value"]), user_name);
    let from = &env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"];
    assert_eq!((s(&from["name"]), s(&from["key"])), (user_name, "password"));
    let watched: Vec<&str> = s(&env["NPS_RESTART_ON_CHANGE"]["value"])
        .split(',')
        .collect();
    assert!(watched.contains(&ca.as_str()) && watched.contains(&password.as_str()));
    // The TLS listener the NetworkPolicy lets out.
    let port = s(&env["NPS_BROKERS"]["value"]).rsplit(':').next().unwrap();
    let egress = serde_json::to_string(&one(&docs, "NetworkPolicy")["spec"]["egress"]).unwrap();
    assert!(egress.contains(&format!("\"port\":{port}")), "{egress}");
}
