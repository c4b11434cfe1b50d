//! deploy/: the container, the Compose stack, the Kubernetes manifests and
//! the Grafana dashboard, checked with real tools where this machine has
//! them (hadolint, kubernetes-validate, promtool, a Prometheus server) and
//! against the binary itself: every flag, environment variable, path and
//! port they use must be one nps-stream really accepts or serves.
//!
//! There is no Docker engine or Kubernetes here: the images and clusters
//! themselves are not started.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use common::*;
use nps_stream::config::{Cli, Command as Sub};
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A YAML file as JSON values, with `<<` merge keys applied.
fn yaml(path: &Path) -> Value {
    let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    v.apply_merge().unwrap();
    serde_json::to_value(v).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| match x {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// The environment variables a subcommand reads (clap's `env = ...`).
fn env_names(sub: &str) -> BTreeSet<String> {
    let cmd = Cli::command();
    let sub = cmd
        .get_subcommands()
        .find(|c| c.get_name() == sub)
        .unwrap_or_else(|| panic!("no subcommand {sub}"));
    sub.get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().to_string())
        .collect()
}

/// Runs `nps-stream check-config ARGS` with exactly `env` as NPS_*
/// environment; returns what it printed. Fails the test on a refusal.
fn check_config(args: &[String], env: &BTreeMap<String, String>) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config").args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("NPS_") {
            cmd.env_remove(k);
        }
    }
    run_ok(cmd.envs(env))
}

/// A field of check-config's printout, e.g. `metrics_addr: 0.0.0.0:9898,`.
fn field(printout: &str, name: &str) -> String {
    printout
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {printout}"))
        .trim_end_matches(',')
        .trim_matches('"')
        .to_string()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn default_metrics_port() -> u16 {
    let out = check_config(&["--brokers".into(), "x".into()], &BTreeMap::new());
    port_of(&field(&out, "metrics_addr"))
}

// ---------------------------------------------------------------- Dockerfile

/// Dockerfile instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read(&repo("deploy/docker/Dockerfile"));
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                let (ins, rest) = cur.split_once(' ').unwrap_or((&cur, ""));
                out.push((ins.to_uppercase(), rest.trim().to_string()));
                cur.clear();
            }
        }
    }
    out
}

fn instruction<'a>(ins: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    ins.iter()
        .filter(|(i, _)| i == name)
        .map(|(_, a)| a.as_str())
        .collect()
}

#[test]
fn dockerfile_passes_hadolint() {
    if have_tool("hadolint") {
        run_ok(Command::new("hadolint").arg(repo("deploy/docker/Dockerfile")));
    }
}

#[test]
fn dockerfile_uses_the_binarys_real_commands_port_and_version() {
    let ins = dockerfile();
    let port = default_metrics_port();
    assert_eq!(instruction(&ins, "EXPOSE"), vec![port.to_string().as_str()]);

    // ENTRYPOINT + CMD is a command line the binary accepts.
    let json = |a: &str| -> Vec<String> { serde_json::from_str(a).expect("exec form") };
    let mut argv = json(instruction(&ins, "ENTRYPOINT")[0]);
    argv.extend(json(instruction(&ins, "CMD").last().unwrap()));
    assert_eq!(argv[0], "nps-stream");
    assert!(matches!(
        Cli::try_parse_from(&argv).map(|c| c.command),
        Ok(Sub::Run(_))
    ));

    // HEALTHCHECK runs `nps-stream healthcheck` on the exposed port.
    let hc = instruction(&ins, "HEALTHCHECK")[0];
    let probe = json(&hc[hc.find("CMD ").unwrap() + 4..]);
    match Cli::try_parse_from(&probe).map(|c| c.command) {
        Ok(Sub::Healthcheck(a)) => {
            assert!(a.url.ends_with(&format!(":{port}/healthz")), "{}", a.url)
        }
        other => panic!("HEALTHCHECK {probe:?} is not a healthcheck: {other:?}"),
    }

    // ENV names are ones `run` reads.
    let run_env = env_names("run");
    for e in instruction(&ins, "ENV") {
        for pair in e.split_whitespace() {
            let name = pair.split('=').next().unwrap();
            assert!(run_env.contains(name), "ENV {name} is not read by run");
        }
    }

    // Labels carry the crate's version; the user is not root.
    let version = format!("VERSION={}", env!("CARGO_PKG_VERSION"));
    assert!(instruction(&ins, "ARG").contains(&version.as_str()));
    let user = instruction(&ins, "USER");
    assert_eq!(user.len(), 1);
    assert!(!["0", "root"].contains(&user[0].split(':').next().unwrap()));
    assert!(ins.iter().any(
        |(i, a)| i == "LABEL" && a.contains("org.opencontainers.image.version=\"${VERSION}\"")
    ));

    // What the build copies from the context exists.
    for c in instruction(&ins, "COPY") {
        if c.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = c.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(repo(src).exists(), "COPY {src}: no such path");
        }
    }
}

#[test]
fn healthcheck_command_probes_a_running_instance() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let probe = |path: &str| {
        Command::new(BIN)
            .args(["healthcheck", "--url", &format!("http://{addr}{path}")])
            .args(["--timeout", "2s"])
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(probe("/healthz"), Some(1), "nothing listens yet");
    // No broker: alive but not ready.
    let dead = format!("127.0.0.1:{}", free_port());
    let mut svc = Service::start(
        &["run", "--brokers", &dead, "--metrics-addr", &addr],
        port,
        "healthcheck",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc.status("/healthz") != Some(200) {
        assert!(Instant::now() < deadline, "{}", svc.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(probe("/healthz"), Some(0));
    assert_eq!(probe("/readyz"), Some(1), "503 is a failure");
    assert!(svc.terminate(Duration::from_secs(30)).success());
    assert_eq!(probe("/healthz"), Some(1));
}

// ------------------------------------------------------------------ Compose

fn compose_dir() -> PathBuf {
    repo("deploy/compose")
}

/// Host path of `container_path` through a service's bind mounts.
fn host_path(svc: &Value, container_path: &str) -> Option<PathBuf> {
    strings(&svc["volumes"]).iter().find_map(|v| {
        let mut parts = v.split(':');
        let (src, dst) = (parts.next()?, parts.next()?);
        let rest = container_path.strip_prefix(dst)?;
        let rest = rest.trim_start_matches('/');
        let base = compose_dir().join(src);
        Some(if rest.is_empty() {
            base
        } else {
            base.join(rest)
        })
    })
}

fn env_map(svc: &Value) -> BTreeMap<String, String> {
    svc["environment"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_string)))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_stack_refers_to_real_paths_flags_env_and_ports() {
    let compose = yaml(&compose_dir().join("docker-compose.yml"));
    let services = compose["services"].as_object().unwrap();
    for name in [
        "kafka",
        "kafka-init",
        "nps-stream",
        "producer",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(name), "no service {name}");
    }

    // Every bind mount's source and every build context exists.
    for (name, svc) in services {
        if let Some(vols) = svc.get("volumes") {
            for v in strings(vols) {
                let src = v.split(':').next().unwrap();
                if src.starts_with('.') {
                    assert!(
                        compose_dir().join(src).exists(),
                        "{name}: volume {v}: no {src}"
                    );
                }
            }
        }
        if let Some(build) = svc.get("build") {
            let ctx = compose_dir().join(s(&build["context"]));
            assert!(ctx.join(s(&build["dockerfile"])).is_file(), "{name}: build");
        }
    }

    // nps-stream: its command and environment pass check-config.
    let nps = &services["nps-stream"];
    let nps_env = env_map(nps);
    let run_env = env_names("run");
    for k in nps_env.keys().filter(|k| k.starts_with("NPS_")) {
        assert!(run_env.contains(k), "nps-stream: {k} is not read by run");
    }
    let mut args = strings(&nps["command"]);
    assert_eq!(args.remove(0), "run");
    let args: Vec<String> = args
        .into_iter()
        .map(|a| match host_path(nps, &a) {
            Some(p) if a.starts_with('/') => p.display().to_string(),
            _ => a,
        })
        .collect();
    let settings = check_config(&args, &nps_env);
    let metrics_port = port_of(&field(&settings, "metrics_addr"));
    let published: Vec<u16> = strings(&nps["ports"])
        .iter()
        .map(|p| p.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(published, vec![metrics_port], "container port of /metrics");
    let grace = humantime::parse_duration(s(&nps["stop_grace_period"])).unwrap();
    let shutdown = humantime::parse_duration(&field(&settings, "shutdown_timeout")).unwrap();
    assert!(grace > shutdown, "stop_grace_period must exceed shutdown");

    // The broker address is the one Kafka advertises; the topics nps-stream
    // uses are the ones kafka-init creates.
    let kafka_env = env_map(&services["kafka"]);
    assert!(kafka_env["KAFKA_ADVERTISED_LISTENERS"].contains(&nps_env["NPS_BROKERS"]));
    let init = strings(&services["kafka-init"]["command"]).join(" ");
    for t in ["input_topic", "alerts_topic", "dlq_topic"] {
        let topic = field(&settings, t);
        assert!(init.contains(&format!("{topic}:")), "{topic} not created");
    }
    let state = field(&settings, "state_topic");
    assert!(
        init.contains(&format!("--topic {state} "))
            && init.contains("--config cleanup.policy=compact"),
        "state topic {state} not created compacted: {init}"
    );

    // The producer's command line is one `send` accepts.
    let producer = &services["producer"];
    let p_env = env_map(producer);
    let send_env = env_names("send");
    for k in p_env.keys() {
        assert!(send_env.contains(k), "producer: {k} is not read by send");
    }
    assert_eq!(p_env["NPS_INPUT_TOPIC"], field(&settings, "input_topic"));
    let mut argv = vec!["nps-stream".to_string()];
    argv.extend(strings(&producer["command"]));
    argv.extend(["--brokers".into(), p_env["NPS_BROKERS"].clone()]);
    match Cli::try_parse_from(&argv).map(|c| c.command) {
        Ok(Sub::Send(a)) => assert!(a.generate),
        other => panic!("{argv:?}: {other:?}"),
    }

    // Prometheus scrapes nps-stream's port by its service name and loads
    // the project's rules.
    let prom = &services["prometheus"];
    let prom_args = strings(&prom["command"]);
    let config_in = prom_args
        .iter()
        .find_map(|a| a.strip_prefix("--config.file="))
        .unwrap();
    let config_path = host_path(prom, config_in).unwrap();
    let config = yaml(&config_path);
    let job = &config["scrape_configs"][0];
    assert_eq!(s(&job["job_name"]), "nps-stream", "the job the alerts use");
    let sd = &job["dns_sd_configs"][0];
    assert_eq!(strings(&sd["names"]), vec!["nps-stream"]);
    assert_eq!(sd["port"].as_u64(), Some(u64::from(metrics_port)));
    let mut rules = Vec::new();
    for r in strings(&config["rule_files"]) {
        let p = host_path(prom, &r).unwrap_or_else(|| panic!("rule file {r} not mounted"));
        assert!(p.is_file(), "{}", p.display());
        rules.push(p);
    }
    assert!(rules.contains(&compose_dir().join("../prometheus/nps-rules.yml")));
    if have_tool("promtool") {
        // promtool checks the config with the rule paths as mounted.
        let dir = std::env::temp_dir().join(format!("nps-compose-{}", rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = read(&config_path);
        for (r, p) in strings(&config["rule_files"]).iter().zip(&rules) {
            text = text.replace(r.as_str(), &p.display().to_string());
        }
        std::fs::write(dir.join("prometheus.yml"), text).unwrap();
        run_ok(
            Command::new("promtool")
                .args(["check", "config"])
                .arg(dir.join("prometheus.yml")),
        );
        std::fs::remove_dir_all(dir).ok();
    }

    // Grafana: provisioning and dashboards mounted where its config says,
    // the datasource points at the prometheus service.
    let graf = &services["grafana"];
    let prov = host_path(graf, "/etc/grafana/provisioning").unwrap();
    let ds = yaml(&prov.join("datasources/prometheus.yml"));
    let url = s(&ds["datasources"][0]["url"]);
    assert_eq!(url, "http://prometheus:9090");
    assert!(strings(&prom["ports"]).iter().any(|p| p.ends_with(":9090")));
    let providers = yaml(&prov.join("dashboards/nps-stream.yml"));
    let dash_dir = s(&providers["providers"][0]["options"]["path"]);
    let dash_host = host_path(graf, dash_dir).unwrap();
    assert!(dash_host.join("nps-stream.json").is_file());
    let home = &env_map(graf)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"];
    assert!(host_path(graf, home).unwrap().is_file(), "{home}");
}

// --------------------------------------------------------------- Kubernetes

fn k8s_docs() -> BTreeMap<String, Value> {
    let dir = repo("deploy/kubernetes");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".yaml") {
            out.insert(name, yaml(&p));
        }
    }
    out
}

fn kind<'a>(docs: &'a BTreeMap<String, Value>, k: &str) -> &'a Value {
    docs.values()
        .find(|d| d["kind"] == k)
        .unwrap_or_else(|| panic!("no {k}"))
}

fn labels_match(selector: &Value, labels: &Value) {
    let sel = selector.as_object().expect("selector labels");
    assert!(!sel.is_empty());
    for (k, v) in sel {
        assert_eq!(&labels[k], v, "selector {k}={v} does not match {labels}");
    }
}

fn bytes_of(q: &str) -> u64 {
    let (n, unit) = q.split_at(q.find(|c: char| c.is_alphabetic()).unwrap_or(q.len()));
    let n: u64 = n.parse().unwrap();
    n * match unit {
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "" => 1,
        u => panic!("unit {u}"),
    }
}

#[test]
fn kubernetes_manifests_pass_schema_validation() {
    if have_tool("kubernetes-validate") {
        // Core kinds against the Kubernetes API schemas; the Prometheus
        // Operator's kinds are checked structurally below.
        let files = [
            "configmap.yaml",
            "deployment.yaml",
            "service.yaml",
            "poddisruptionbudget.yaml",
        ];
        let text = run_ok(
            Command::new("kubernetes-validate")
                .arg("--strict")
                .args(files.map(|f| repo("deploy/kubernetes").join(f))),
        );
        assert_eq!(text.matches(" passed ").count(), files.len(), "{text}");
    }
}

#[test]
fn kubernetes_manifests_agree_with_the_binary_and_each_other() {
    let docs = k8s_docs();
    let kustomization = &docs["kustomization.yaml"];
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let files: BTreeSet<String> = docs
        .keys()
        .filter(|k| *k != "kustomization.yaml")
        .cloned()
        .collect();
    assert_eq!(listed, files, "kustomization lists every manifest");

    let deploy = kind(&docs, "Deployment");
    let pod = &deploy["spec"]["template"];
    let pod_labels = &pod["metadata"]["labels"];
    labels_match(&deploy["spec"]["selector"]["matchLabels"], pod_labels);
    let container = &pod["spec"]["containers"][0];

    // Environment: $(VAR) references are defined; secrets come from a
    // Secret, never from the manifests.
    let env: BTreeMap<String, &Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (s(&e["name"]).to_string(), e))
        .collect();
    let mut args = strings(&container["args"]);
    for a in &mut args {
        while let Some(start) = a.find("$(") {
            let end = start + a[start..].find(')').unwrap();
            let var = a[start + 2..end].to_string();
            assert!(env.contains_key(&var), "$({var}) is not in env");
            a.replace_range(start..=end, "from-env");
        }
    }
    let password = args
        .iter()
        .find(|a| a.starts_with("sasl.password="))
        .expect("SASL password argument");
    assert_eq!(password, "sasl.password=from-env");
    assert!(
        env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"].is_string(),
        "password from a Secret"
    );

    // The config file: mounted from the ConfigMap at the path in args.
    assert_eq!(args.remove(0), "run");
    let config_at = args.iter().position(|a| a == "--config").unwrap() + 1;
    let config_path = Path::new(&args[config_at]);
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| config_path.starts_with(s(&m["mountPath"])))
        .expect("config file mounted");
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let cm = kind(&docs, "ConfigMap");
    assert_eq!(cm["metadata"]["name"], volume["configMap"]["name"]);
    let file = config_path.file_name().unwrap().to_string_lossy();
    let toml = s(&cm["data"][file.as_ref()]);
    let tmp = std::env::temp_dir().join(format!("nps-k8s-{}.toml", rand_suffix()));
    std::fs::write(&tmp, toml).unwrap();
    args[config_at] = tmp.display().to_string();
    let mut nps_env = BTreeMap::new();
    for name in env.keys().filter(|k| k.starts_with("NPS_")) {
        assert!(env_names("run").contains(name), "{name} not read by run");
        nps_env.insert(name.clone(), "from-env".to_string());
    }
    let settings = check_config(&args, &nps_env);
    std::fs::remove_file(tmp).ok();
    assert!(
        settings.contains("\"sasl.password\": \"<redacted>\""),
        "secrets are not printed: {settings}"
    );

    // Ports and probes: the metrics port, by name, with the real paths.
    let metrics_port = port_of(&field(&settings, "metrics_addr"));
    let ports = container["ports"].as_array().unwrap();
    let named = ports.iter().find(|p| p["name"] == "metrics").unwrap();
    assert_eq!(
        named["containerPort"].as_u64(),
        Some(u64::from(metrics_port))
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(s(&get["path"]), path, "{probe}");
        assert_eq!(s(&get["port"]), "metrics", "{probe}");
    }

    // Graceful termination outlasts the shutdown bound.
    let shutdown = humantime::parse_duration(&field(&settings, "shutdown_timeout")).unwrap();
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(Duration::from_secs(grace) > shutdown);

    // Memory request covers the engine at its key bound plus librdkafka's
    // fetch queue (64 MiB by default); a limit is set.
    let max_keys: u64 = field(&settings, "max_keys").parse().unwrap();
    let request = bytes_of(s(&container["resources"]["requests"]["memory"]));
    assert!(request >= max_keys * 4096 + (64 << 20), "{request}");
    assert!(bytes_of(s(&container["resources"]["limits"]["memory"])) > request);
    assert!(container["resources"]["requests"]["cpu"].is_string());

    // Runs as the image's user.
    let user = instruction(&dockerfile(), "USER")[0]
        .split(':')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        pod["spec"]["securityContext"]["runAsUser"].to_string(),
        user
    );

    // Service, PodDisruptionBudget and PodMonitor select these pods and
    // use the named port; the PodMonitor's job is the one the alerts use.
    let svc = kind(&docs, "Service");
    labels_match(&svc["spec"]["selector"], pod_labels);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    let pdb = kind(&docs, "PodDisruptionBudget");
    labels_match(&pdb["spec"]["selector"]["matchLabels"], pod_labels);
    let pm = kind(&docs, "PodMonitor");
    assert_eq!(s(&pm["apiVersion"]), "monitoring.coreos.com/v1");
    labels_match(&pm["spec"]["selector"]["matchLabels"], pod_labels);
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(s(&endpoint["path"]), "/metrics");
    let job = &pod_labels[s(&pm["spec"]["jobLabel"])];
    assert_eq!(job, "nps-stream");
    assert!(read(&repo("deploy/prometheus/nps-rules.yml")).contains("up{job=\"nps-stream\"}"));

    // PrometheusRule carries exactly deploy/prometheus/nps-rules.yml.
    let rules = yaml(&repo("deploy/prometheus/nps-rules.yml"));
    let pr = kind(&docs, "PrometheusRule");
    assert_eq!(
        pr["spec"]["groups"], rules["groups"],
        "prometheusrule.yaml differs from nps-rules.yml: regenerate it (command at its top)"
    );
}

// ------------------------------------------------------------------ Grafana

fn dashboard() -> Value {
    serde_json::from_str(&read(&repo("deploy/grafana/dashboards/nps-stream.json"))).unwrap()
}

/// (panel title, expression) of every panel query.
fn panel_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((s(&p["title"]).to_string(), s(&t["expr"]).to_string()));
        }
    }
    out
}

/// The template variables' queries: (name, metric selector, label).
fn variable_queries(d: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let q = s(&v["query"]["query"]);
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {q}"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        out.push((
            s(&v["name"]).to_string(),
            selector.trim().to_string(),
            label.trim().to_string(),
        ));
    }
    out
}

fn substitute(expr: &str, product: &str, region: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$window", "24h")
        .replace("$product", product)
        .replace("$region", region)
}

/// Metric names in a PromQL expression: identifiers that are not
/// functions, keywords, label names or durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Drop string literals, label matchers and ranges.
    let mut plain = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut in_str = false;
    let mut escaped = false;
    for c in expr.chars() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            c => plain.push(c),
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let lower = word.to_ascii_lowercase();
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&lower.as_str())
            {
                skip_group = true;
            } else if next == Some(&'(')
                || [
                    "and",
                    "or",
                    "unless",
                    "bool",
                    "offset",
                    "inf",
                    "nan",
                    "sum",
                    "min",
                    "max",
                    "avg",
                    "group",
                    "stddev",
                    "stdvar",
                    "count",
                    "count_values",
                    "bottomk",
                    "topk",
                    "quantile",
                    "limitk",
                ]
                .contains(&lower.as_str())
            {
                // a function or an operator
            } else {
                names.insert(word);
            }
            continue;
        }
        if c == '(' && skip_group {
            // the label list of by/on/...
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            skip_group = false;
        }
        i += 1;
    }
    names
}

/// What a dashboard may refer to: nps-stream's metrics, the recording
/// rules, and Prometheus's own `up`.
fn known_series() -> BTreeSet<String> {
    let mut known: BTreeSet<String> = ["up".to_string()].into();
    for n in nps_stream::metrics::NAMES {
        known.insert(n.to_string());
        for suffix in ["_bucket", "_sum", "_count"] {
            known.insert(format!("{n}{suffix}"));
        }
    }
    let rules = yaml(&repo("deploy/prometheus/nps-rules.yml"));
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            if let Some(rec) = r["record"].as_str() {
                known.insert(rec.to_string());
            }
        }
    }
    known
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        r#"100 * sum by (window, product) (a:b{x="}y\"", le=~"1"}) + count(e) / on() group_left(z) rate(c_total[5m]) > bool 0.5 and histogram_quantile(0.9, d_bucket) or up offset 5m"#,
    );
    let want: BTreeSet<String> = ["a:b", "c_total", "d_bucket", "e", "up"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want);
}

#[test]
fn dashboard_queries_parse_and_name_only_exported_series() {
    let d = dashboard();
    assert_eq!(d["uid"], "nps-stream");
    let queries = panel_queries(&d);
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let known = known_series();
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: {expr}");
        for n in &names {
            assert!(known.contains(n), "{title}: `{n}` is not exported: {expr}");
        }
    }
    let vars = variable_queries(&d);
    let var_names: Vec<&str> = vars.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(var_names, ["window", "product", "region"]);
    for (_, selector, _) in &vars {
        for n in metric_names(selector) {
            assert!(known.contains(&n), "variable: {n}");
        }
    }
    // Panels cover what a team watches.
    let all: String = queries.iter().map(|q| q.1.as_str()).collect();
    for needed in [
        "nps:score:segment",
        "nps:score_margin_of_error:segment",
        "nps:responses:rate5m",
        "nps:window_responses:sum",
        "nps:detractor_alerts:rate5m",
        "nps:events_rejected:rate5m",
        "nps_consumer_lag",
        "nps_end_to_end_delay_seconds_bucket",
    ] {
        assert!(all.contains(needed), "no panel uses {needed}");
    }
    // Every expression parses: promtool checks them as recording rules.
    if have_tool("promtool") {
        let rules: Vec<Value> = queries
            .iter()
            .chain(
                vars.iter()
                    .map(|(n, sel, _)| (n.clone(), sel.clone()))
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .enumerate()
            .map(|(i, (_, e))| {
                serde_json::json!({"record": format!("dashboard:q{i}"), "expr": substitute(e, ".*", ".*")})
            })
            .collect();
        let file = std::env::temp_dir().join(format!("nps-dash-{}.yml", rand_suffix()));
        let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
        std::fs::write(&file, doc.to_string()).unwrap();
        run_ok(Command::new("promtool").args(["check", "rules"]).arg(&file));
        std::fs::remove_file(&file).ok();
    }
}

/// Panels that show trouble (errors, retries, duplicates, late answers,
/// overflow) may be empty on a healthy demo; every other one must show data.
fn may_be_empty(expr: &str) -> bool {
    [
        "nps_kafka_errors_total",
        "nps_delivery_retries_total",
        "nps_duplicates_total",
        "nps_late_events_total",
        "nps_cardinality_overflow_total",
    ]
    .iter()
    .any(|m| expr.contains(m))
}

#[test]
fn dashboard_panels_show_data_from_a_running_instance() {
    if !(have_tool("prometheus") && have_tool("promtool")) {
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut demo = Service::start(
        &[
            "demo",
            "--metrics-addr",
            &addr,
            "--rate",
            "200",
            "--table-every",
            "3600",
        ],
        port,
        "dashboard",
    );
    let prom = Prometheus::start(&[&addr]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let segment = loop {
        let r = prom.query("nps:score:segment{window=\"24h\"}");
        if let Some((labels, _)) = r.first() {
            break (labels["product"].clone(), labels["region"].clone());
        }
        assert!(
            Instant::now() < deadline,
            "no NPS in Prometheus:\n{}\n{}",
            demo.logs(),
            prom.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    };

    // What the instance exports is in the names' contract.
    let scraped = demo.metrics().unwrap();
    let known = known_series();
    for name in scraped.names() {
        assert!(known.contains(&name), "exported but not in NAMES: {name}");
    }

    // Every panel query, for all segments and for one, returns series
    // (rates need a few scrapes: retried for a while).
    let d = dashboard();
    let mut missing = Vec::new();
    for (title, expr) in panel_queries(&d) {
        let all = substitute(&expr, ".*", ".*");
        let one = substitute(&expr, &segment.0, &segment.1);
        let deadline = Instant::now() + Duration::from_secs(60);
        let found = loop {
            if !prom.query(&all).is_empty() || !prom.query(&one).is_empty() {
                break true;
            }
            if may_be_empty(&expr) || Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        if !found && !may_be_empty(&expr) {
            missing.push(format!("{title}: {all}"));
        }
    }
    assert!(missing.is_empty(), "panels without data: {missing:#?}");

    // Template variables list values.
    for (name, selector, label) in variable_queries(&d) {
        let q = format!("count by ({label}) ({})", substitute(&selector, ".*", ".*"));
        assert!(!prom.query(&q).is_empty(), "variable {name}: {q}");
    }
    assert!(demo.terminate(Duration::from_secs(30)).success());
}

// A parse of the CLI used above, so a renamed subcommand fails here first.
#[test]
fn subcommands_used_by_deploy_exist() {
    for sub in ["run", "send", "check-config", "healthcheck"] {
        assert!(
            Cli::command().find_subcommand(sub).is_some(),
            "no subcommand {sub}"
        );
    }
    assert!(Cli::try_parse_from(["nps-stream", "healthcheck"]).is_ok());
}
