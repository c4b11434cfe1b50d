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
use common::manifests::*;
use common::*;
use nps_stream::config::{Cli, Command as Sub};
use serde_json::Value;

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

    // HEALTHCHECK runs `nps-stream healthcheck` with no port of its own:
    // it probes the metrics address the container configures, and by
    // default the exposed port.
    let hc = instruction(&ins, "HEALTHCHECK")[0];
    let probe = json(&hc[hc.find("CMD ").unwrap() + 4..]);
    match Cli::try_parse_from(&probe).map(|c| c.command) {
        Ok(Sub::Healthcheck(a)) => {
            assert_eq!(a.url, None, "HEALTHCHECK hard-codes its URL");
            assert!(
                !hc.contains(&port.to_string()),
                "HEALTHCHECK hard-codes a port"
            );
            let defaulted = nps_stream::config::HealthcheckArgs {
                metrics_addr: None,
                config: None,
                ..a
            };
            assert_eq!(
                defaulted.resolved_url().unwrap(),
                format!("http://127.0.0.1:{port}/healthz")
            );
        }
        other => panic!("HEALTHCHECK {probe:?} is not a healthcheck: {other:?}"),
    }

    // The image sets no NPS_* variable: an ENV beats the TOML file, so a
    // ConfigMap or Compose file edit of the same key would be ignored.
    for e in instruction(&ins, "ENV") {
        for pair in e.split_whitespace() {
            let name = pair.split('=').next().unwrap();
            assert!(
                !name.starts_with("NPS_"),
                "ENV {name} would override the settings file"
            );
        }
    }

    // The user and group of USER both exist in the image.
    let user = instruction(&ins, "USER")[0];
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    let runs = instruction(&ins, "RUN").join("\n");
    assert!(
        runs.contains(&format!("groupadd --system --gid {gid} ")),
        "no group {gid}"
    );
    assert!(
        runs.contains(&format!("useradd --system --uid {uid} --gid {gid} ")),
        "user {uid} not in group {gid}"
    );

    // Dependencies are not rebuilt on every source change: the build's
    // registry and target directories are BuildKit cache mounts.
    let build = instruction(&ins, "RUN")
        .into_iter()
        .find(|r| r.contains("cargo build"))
        .expect("a cargo build");
    for target in ["/usr/local/cargo/registry", "/src/target"] {
        assert!(
            build.contains(&format!("--mount=type=cache,target={target}")),
            "{target} is not a cache mount: {build}"
        );
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
    let _heavy = heavy();
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

    // Without --url it finds the instance where `run` was told to listen:
    // a flag, NPS_METRICS_ADDR, or the settings file named by NPS_CONFIG
    // (an unspecified address is probed on loopback).
    let via = |args: &[&str], env: &[(&str, &str)]| {
        Command::new(BIN)
            .arg("healthcheck")
            .args(args)
            .env_remove("NPS_METRICS_ADDR")
            .env_remove("NPS_CONFIG")
            .envs(env.iter().copied())
            .status()
            .unwrap()
            .code()
    };
    let any = format!("0.0.0.0:{port}");
    assert_eq!(via(&["--metrics-addr", &any], &[]), Some(0));
    assert_eq!(via(&[], &[("NPS_METRICS_ADDR", &addr)]), Some(0));
    let file = std::env::temp_dir().join(format!("nps-hc-{}.toml", rand_suffix()));
    std::fs::write(&file, format!("metrics_addr = \"{any}\"\n")).unwrap();
    assert_eq!(via(&[], &[("NPS_CONFIG", file.to_str().unwrap())]), Some(0));
    std::fs::remove_file(&file).ok();
    assert_eq!(
        via(&["--metrics-addr", &addr, "--path", "/readyz"], &[]),
        Some(1)
    );
    // Elsewhere (the default port, nothing there in this test) it fails.
    let elsewhere = format!("127.0.0.1:{}", free_port());
    assert_eq!(via(&[], &[("NPS_METRICS_ADDR", &elsewhere)]), Some(1));
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
    let mut nps_env = env_map(nps);
    if let Some(file) = nps_env.get("NPS_CONFIG").cloned() {
        let host = host_path(nps, &file).unwrap_or_else(|| panic!("NPS_CONFIG {file} not mounted"));
        nps_env.insert("NPS_CONFIG".into(), host.display().to_string());
    }
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
    let published = strings(&nps["ports"]);
    let container_ports: Vec<u16> = published
        .iter()
        .map(|p| p.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        container_ports,
        vec![metrics_port],
        "container port of /metrics"
    );
    // `--scale` runs several replicas: a fixed host port (or a range,
    // which Compose hands out racily) would fail all but one.
    for p in &published {
        let parts: Vec<&str> = p.split(':').collect();
        let host_port = if parts.len() > 1 {
            parts[parts.len() - 2]
        } else {
            ""
        };
        assert!(
            host_port.is_empty(),
            "nps-stream publishes a fixed host port: {p}"
        );
    }
    // The image's HEALTHCHECK finds the metrics address in the same file
    // or environment as `run`.
    if nps["healthcheck"].is_null() {
        let hc = nps_stream::config::HealthcheckArgs {
            url: None,
            metrics_addr: nps_env.get("NPS_METRICS_ADDR").cloned(),
            config: nps_env.get("NPS_CONFIG").map(PathBuf::from),
            path: "/healthz".into(),
            timeout: Duration::from_secs(1),
        };
        let url = hc.resolved_url().unwrap();
        assert!(url.ends_with(&format!(":{metrics_port}/healthz")), "{url}");
    }
    let grace = humantime::parse_duration(s(&nps["stop_grace_period"])).unwrap();
    let shutdown = humantime::parse_duration(&field(&settings, "shutdown_timeout")).unwrap();
    assert!(grace > shutdown, "stop_grace_period must exceed shutdown");

    // The broker address is the one Kafka advertises; the topics nps-stream
    // uses are the ones kafka-init creates.
    let kafka_env = env_map(&services["kafka"]);
    assert!(kafka_env["KAFKA_ADVERTISED_LISTENERS"].contains(&nps_env["NPS_BROKERS"]));
    // The host reaches Kafka too (kcat, `nps-stream send`): a listener
    // advertised as localhost on a published port, declared everywhere.
    let advertised = &kafka_env["KAFKA_ADVERTISED_LISTENERS"];
    let host_listener = advertised
        .split(',')
        .find(|l| l.contains("://localhost:"))
        .unwrap_or_else(|| panic!("no listener for the host in {advertised}"));
    let (name, port) = host_listener.split_once("://localhost:").unwrap();
    assert!(
        kafka_env["KAFKA_LISTENERS"].contains(&format!("{name}://:{port}")),
        "{name} is advertised but not listened on"
    );
    assert!(
        kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].contains(&format!("{name}:")),
        "{name} has no security protocol"
    );
    assert!(
        strings(&services["kafka"]["ports"]).contains(&format!("{port}:{port}")),
        "{port} is not published"
    );
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
    // It runs the nps-stream image, whose HEALTHCHECK probes /healthz,
    // which `send` does not serve: the check is turned off, not left to
    // mark the producer unhealthy forever.
    assert_eq!(
        producer["healthcheck"]["disable"], true,
        "producer healthcheck"
    );

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
    // The settings file becomes the ConfigMap through configMapGenerator,
    // whose hashed name changes with the file, so edits roll the pods.
    let generators = kustomization["configMapGenerator"]
        .as_array()
        .expect("configMapGenerator");
    assert_eq!(generators.len(), 1);
    let generator = &generators[0];
    assert!(
        !docs.values().any(|d| d["kind"] == "ConfigMap"),
        "a plain ConfigMap does not roll the pods when edited"
    );

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
    // No secret on the command line (/proc/PID/cmdline is world-readable).
    for a in &args {
        assert!(
            !a.contains("$(") && !a.contains("password"),
            "secret or variable in args: {a}"
        );
    }
    // $(VAR) in an env value expands only from variables defined before it.
    let order: Vec<String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| s(&e["name"]).to_string())
        .collect();
    let mut expanded: BTreeMap<String, String> = BTreeMap::new();
    for (i, name) in order.iter().enumerate() {
        let Some(mut v) = env[name]["value"].as_str().map(str::to_string) else {
            continue;
        };
        while let Some(start) = v.find("$(") {
            let end = start + v[start..].find(')').unwrap();
            let var = v[start + 2..end].to_string();
            assert!(
                order[..i].contains(&var),
                "{name}: $({var}) is not defined before it"
            );
            v.replace_range(start..=end, "from-env");
        }
        expanded.insert(name.clone(), v);
    }
    let props = expanded
        .get("NPS_KAFKA_PROPERTIES")
        .expect("SASL credentials through NPS_KAFKA_PROPERTIES");
    assert!(
        props.split(';').any(|p| p == "sasl.password=from-env"),
        "{props}"
    );
    assert!(
        props.split(';').any(|p| p == "sasl.username=from-env"),
        "{props}"
    );
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
    assert_eq!(generator["name"], volume["configMap"]["name"]);
    let file = config_path.file_name().unwrap().to_string_lossy();
    assert_eq!(strings(&generator["files"]), vec![file.to_string()]);
    let toml_path = repo("deploy/kubernetes").join(file.as_ref());
    args[config_at] = toml_path.display().to_string();
    let mut nps_env = BTreeMap::new();
    for name in env.keys().filter(|k| k.starts_with("NPS_")) {
        assert!(env_names("run").contains(name), "{name} not read by run");
        nps_env.insert(name.clone(), expanded[name].clone());
    }
    let settings = check_config(&args, &nps_env);
    assert!(
        settings.contains("\"sasl.password\": \"<redacted>\""),
        "secrets are not printed: {settings}"
    );
    // The Secret's credentials join the file's SASL settings.
    assert!(
        settings.contains("\"sasl.mechanism\": \"SCRAM-SHA-512\""),
        "{settings}"
    );
    assert!(
        settings.contains("\"sasl.username\": \"from-env\""),
        "{settings}"
    );
    // Incremental rebalances, so a pod joining or leaving does not make
    // every pod restore (and turn NotReady) at once.
    assert!(
        settings.contains("\"partition.assignment.strategy\": \"cooperative-sticky\""),
        "{settings}"
    );
    // No API access; replicas spread over nodes.
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    let spread = pod["spec"]["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints");
    assert!(
        spread
            .iter()
            .any(|c| c["topologyKey"] == "kubernetes.io/hostname")
    );
    for c in spread {
        labels_match(&c["labelSelector"]["matchLabels"], pod_labels);
    }

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

    // Memory: tests/kubernetes.rs holds the limit against the settings'
    // bound.
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
    // Unready pods (all of them during a Kafka outage) never block a drain.
    assert_eq!(s(&pdb["spec"]["unhealthyPodEvictionPolicy"]), "AlwaysAllow");

    // The NetworkPolicy covers these pods: in, only the metrics port and
    // only from the monitoring namespace; out, DNS and the brokers' port.
    let np = kind(&docs, "NetworkPolicy");
    labels_match(&np["spec"]["podSelector"]["matchLabels"], pod_labels);
    assert_eq!(strings(&np["spec"]["policyTypes"]), ["Ingress", "Egress"]);
    let ingress = np["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(ingress[0]["ports"].as_array().unwrap().len(), 1);
    assert_eq!(s(&ingress[0]["ports"][0]["port"]), "metrics");
    assert!(ingress[0]["from"][0]["namespaceSelector"].is_object());
    let egress_ports: BTreeSet<String> = np["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap().iter())
        .map(|p| p["port"].to_string())
        .collect();
    let broker_ports: BTreeSet<String> = field(&settings, "brokers")
        .split(',')
        .map(|b| b.rsplit(':').next().unwrap().to_string())
        .collect();
    for p in broker_ports.iter().chain([&"53".to_string()]) {
        assert!(
            egress_ports.contains(p),
            "egress to port {p}: {egress_ports:?}"
        );
    }
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

/// kube-prometheus-stack's Prometheus selects PodMonitors and rules by
/// `release`: the overlay adds it to exactly those two, over the base.
#[test]
fn kube_prometheus_stack_overlay_labels_the_monitor_and_the_rules() {
    let dir = repo("deploy/overlays/kube-prometheus-stack");
    let k = yaml(&dir.join("kustomization.yaml"));
    let bases = strings(&k["resources"]);
    assert_eq!(bases.len(), 2);
    for b in &bases {
        assert!(dir.join(b).join("kustomization.yaml").is_file(), "{b}");
    }
    // The dashboard comes along for Grafana's sidecar: a ConfigMap of the
    // dashboard file itself, labelled as the sidecar looks for.
    let grafana = dir.join(&bases[1]).canonicalize().unwrap();
    assert_eq!(grafana, repo("deploy/grafana").canonicalize().unwrap());
    let g = yaml(&grafana.join("kustomization.yaml"));
    let generator = &g["configMapGenerator"][0];
    assert_eq!(strings(&generator["files"]), ["dashboards/nps-stream.json"]);
    assert!(grafana.join("dashboards/nps-stream.json").is_file());
    assert_eq!(s(&generator["options"]["labels"]["grafana_dashboard"]), "1");
    let base = k8s_docs();
    let mut kinds = BTreeSet::new();
    for p in k["patches"].as_array().unwrap() {
        let target = &p["target"];
        let patched = kind(&base, s(&target["kind"]));
        assert_eq!(patched["metadata"]["name"], target["name"]);
        assert_eq!(
            s(&patched["apiVersion"]).split('/').next(),
            target["group"].as_str()
        );
        let ops: Value = serde_yaml_ng::from_str(s(&p["patch"])).unwrap();
        assert_eq!(ops[0]["op"], "add");
        assert_eq!(ops[0]["path"], "/metadata/labels/release");
        assert!(ops[0]["value"].is_string());
        // `add` under /metadata/labels needs the map to exist in the base.
        assert!(patched["metadata"]["labels"].is_object());
        kinds.insert(s(&target["kind"]).to_string());
    }
    let want: BTreeSet<String> = ["PodMonitor", "PrometheusRule"].map(String::from).into();
    assert_eq!(kinds, want);
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
        .replace("$cluster", ".*")
        .replace("$namespace", ".*")
        .replace("$window", "24h")
        .replace("$breakdown", "team")
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
    for n in common::reference::reference_metrics().keys() {
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
    // Contacts come hours apart: the time to first contact is read from
    // the 24h recording rules, never a rate over a few minutes (mostly
    // empty).
    let contact: Vec<BTreeSet<String>> = queries
        .iter()
        .filter(|(t, _)| t.starts_with("Time to first contact"))
        .map(|(_, e)| metric_names(e))
        .collect();
    let rule = |q: &str| BTreeSet::from([format!("nps:case_first_contact_seconds:{q}_24h")]);
    assert_eq!(contact, [rule("p50"), rule("p90")]);
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
    assert_eq!(
        var_names,
        [
            "cluster",
            "namespace",
            "window",
            "product",
            "region",
            "breakdown"
        ]
    );
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

/// The table panels' queries, by panel: Grafana's `merge` joins their rows
/// on every column they share, `__name__` included.
fn table_queries(d: &Value) -> Vec<(String, Vec<String>)> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "table")
        .map(|p| {
            let exprs = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| s(&t["expr"]).to_string())
                .collect();
            (s(&p["title"]).to_string(), exprs)
        })
        .collect()
}

/// Every division's divisor is a parenthesised expression filtered by
/// `> 0` (after any `on()`/`group_left()` modifiers), so an empty window
/// shows no value rather than NaN or ±Inf. Returns the unguarded ones.
fn unguarded_divisions(expr: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find(" / ") {
        let mut after = rest[i + 3..].trim_start();
        for modifier in ["on()", "group_left()", "ignoring()"] {
            after = after.strip_prefix(modifier).unwrap_or(after).trim_start();
        }
        let guarded = after.starts_with('(') && {
            let mut depth = 0;
            let mut end = None;
            for (j, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            end.is_some_and(|j| after[..j].trim_end().ends_with("> 0"))
        };
        if !guarded {
            bad.push(after.chars().take(60).collect());
        }
        rest = &rest[i + 3..];
    }
    bad
}

#[test]
fn unguarded_divisions_are_found() {
    assert_eq!(unguarded_divisions("a / (b > 0)"), Vec::<String>::new());
    assert_eq!(
        unguarded_divisions("sum(a) / on() group_left() (sum(b) > 0)"),
        Vec::<String>::new()
    );
    assert_eq!(unguarded_divisions("a / b").len(), 1);
    assert_eq!(unguarded_divisions("a / (b) > 0").len(), 1);
    assert_eq!(unguarded_divisions("a / scalar(b)").len(), 1);
}

/// The labels a table query aggregates by: `sum by (a, b) (…)` → [a, b].
fn table_labels(expr: &str) -> Vec<&str> {
    expr.strip_prefix("sum by (")
        .and_then(|rest| rest.split_once(')'))
        .map(|(labels, _)| labels.split(", ").collect())
        .unwrap_or_default()
}

#[test]
fn dashboard_tables_aggregate_away_the_metric_name_and_divisions_are_guarded() {
    let d = dashboard();
    let tables = table_queries(&d);
    assert!(!tables.is_empty());
    for (title, exprs) in &tables {
        assert!(exprs.len() > 1, "{title}: a table of one query");
        let by = table_labels(&exprs[0]);
        for e in exprs {
            // A plain selector keeps `__name__`, which differs per query:
            // merge would then give each segment one row per query. Every
            // query of a table aggregates by the same labels, product
            // first, then region (a theme table adds the theme; a
            // product's table has none).
            assert!(
                e.starts_with("sum by (product") && e.ends_with(')'),
                "{title}: `{e}` must aggregate by (product…) so merge joins its rows"
            );
            assert_eq!(table_labels(e), by, "{title}: `{e}`");
        }
    }
    for (title, expr) in panel_queries(&d) {
        let bad = unguarded_divisions(&expr);
        assert!(
            bad.is_empty(),
            "{title}: divisor not guarded by `> 0`: {bad:?}"
        );
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
        // The demo's answers are never revised.
        "nps_promoter_events_withdrawn_total",
    ]
    .iter()
    .any(|m| expr.contains(m))
}

#[test]
fn dashboard_panels_show_data_from_a_running_instance() {
    let _heavy = heavy();
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

    // A table's queries come back labelled by product and region only
    // (no `__name__`, no window), so Grafana's merge makes one row per
    // segment rather than one per query.
    for (title, exprs) in table_queries(&d) {
        for e in &exprs {
            let rows = prom.query(&substitute(e, ".*", ".*"));
            assert!(!rows.is_empty(), "{title}: `{e}` has no rows");
            let mut want = table_labels(e);
            want.sort();
            for (labels, _) in rows {
                let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
                // A product's target (every region) has no region label.
                assert!(
                    keys == want || keys == ["product"],
                    "{title}: `{e}` would not merge: {keys:?}"
                );
            }
        }
    }

    // Template variables list values.
    for (name, selector, label) in variable_queries(&d) {
        let q = format!("count by ({label}) ({})", substitute(&selector, ".*", ".*"));
        assert!(!prom.query(&q).is_empty(), "variable {name}: {q}");
    }

    // The demo's segment whose NPS drops in the last 24h (issue 19): its
    // shift is significant and NpsShiftedSignificantly holds for it (pending:
    // the rule's `for` is 10m, checked by promtool). The other segments'
    // NPS does not move, so their z is noise: at 2.58 one of 19 crosses by
    // chance in about one run in six, so "no other" is checked at |z| < 4
    // (by chance: about one run in a thousand).
    let (product, region) = nps_stream::generator::DROPPING;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let z = prom.query(&format!(
            "nps:shift_z:segment{{product=\"{product}\",region=\"{region}\"}}"
        ));
        let alert = prom.query(&format!(
            "ALERTS{{alertname=\"NpsShiftedSignificantly\",product=\"{product}\",region=\"{region}\",direction=\"down\"}}"
        ));
        if z.first().is_some_and(|(_, z)| *z <= -4.0) && !alert.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no significant drop for {product} / {region}: z {z:?}, alerts {alert:?}\n{}",
            prom.logs()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let others = prom.query(&format!(
        "abs(nps:shift_z:segment) >= 4 unless on (product, region) nps:shift_z:segment{{product=\"{product}\",region=\"{region}\"}}"
    ));
    assert!(others.is_empty(), "other segments shifted: {others:?}");
    let alerts = prom.query("ALERTS{alertname=\"NpsShiftedSignificantly\"}");
    assert!(
        alerts
            .iter()
            .any(|(l, _)| l["product"] == product && l["region"] == region),
        "{alerts:?}"
    );
    // Targets: every configured one is exported and compared.
    assert_eq!(
        prom.query("nps:target_gap:7d").len(),
        5,
        "{:?}",
        prom.query("nps:target_gap:7d")
    );
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

// ------------------------------------------------------- README's commands

/// The ```sh blocks of docs/deploying.md (README links to it).
fn readme_deploy_blocks() -> Vec<String> {
    let text = read(&repo("docs/deploying.md"));
    assert!(read(&repo("README.md")).contains("(docs/deploying.md)"));
    let mut blocks = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("```sh\n") {
        let body = &rest[i + 6..];
        let j = body.find("```").unwrap();
        blocks.push(body[..j].to_string());
        rest = &body[j + 3..];
    }
    blocks
}

/// Stand-ins for docker, kubectl and kustomize: each checks what it is
/// given as the real one would need it (files and folders exist from
/// where it runs, the build context is the repository, only a built
/// image is pushed) and logs its call.
const STUBS: &[(&str, &str)] = &[
    (
        "docker",
        r#"echo "docker $*" >> "$STUB_DIR/log"
case "$1" in
  build)
    shift; file=Dockerfile; tag=""; ctx=""
    while [ $# -gt 0 ]; do
      case "$1" in -f) file=$2; shift 2;; -t) tag=$2; shift 2;; *) ctx=$1; shift;; esac
    done
    [ -f "$ctx/Cargo.toml" ] || { echo "build context '$ctx' is not the repository (from $PWD)" >&2; exit 1; }
    [ -f "$file" ] || { echo "no Dockerfile '$file' from $PWD" >&2; exit 1; }
    echo "$tag" >> "$STUB_DIR/built";;
  push)
    grep -qxF "$2" "$STUB_DIR/built" 2>/dev/null || { echo "push of an image never built: $2" >&2; exit 1; };;
  compose)
    shift; file=docker-compose.yml
    while [ $# -gt 0 ]; do case "$1" in -f) file=$2; shift 2;; *) shift;; esac; done
    [ -f "$file" ] || { echo "no compose file '$file' from $PWD" >&2; exit 1; };;
  *) echo "unexpected: docker $*" >&2; exit 1;;
esac"#,
    ),
    (
        "kubectl",
        r#"echo "kubectl $*" >> "$STUB_DIR/log"
case "$1 $2" in
  "apply -k"|"apply -n")
    shift; dir=""
    while [ $# -gt 0 ]; do case "$1" in -k) dir=$2; shift 2;; -n) shift 2;; *) echo "unexpected: kubectl apply ... $1" >&2; exit 1;; esac; done
    [ -f "$dir/kustomization.yaml" ] || { echo "no kustomization in '$dir' from $PWD" >&2; exit 1; };;
  "create secret") ;;
  *) echo "unexpected: kubectl $*" >&2; exit 1;;
esac"#,
    ),
    (
        "kustomize",
        r#"echo "kustomize $*" >> "$STUB_DIR/log"
[ "$1 $2 $3" = "edit set image" ] || { echo "unexpected: kustomize $*" >&2; exit 1; }
[ -f kustomization.yaml ] || { echo "kustomize edit outside a kustomization: $PWD" >&2; exit 1; }
name=${4%%=*}
grep -q "name: $name\$" kustomization.yaml || { echo "no image $name in kustomization.yaml" >&2; exit 1; }
echo "${4#*=}" >> "$STUB_DIR/images""#,
    ),
];

#[test]
fn readme_deploy_commands_run_from_the_repository_root() {
    let blocks = readme_deploy_blocks();
    assert!(blocks.len() >= 3, "{blocks:?}");
    let dir = std::env::temp_dir().join(format!("nps-readme-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in STUBS {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/usr/bin/env bash\nset -u\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    // Each block in a fresh shell from the root, as a reader pastes it.
    for block in &blocks {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(repo(""))
            .env("PATH", &path)
            .env("STUB_DIR", &dir)
            .env("KAFKA_PASSWORD", "secret")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README block failed:\n{block}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = read(&dir.join("log"));
    for call in [
        "docker build",
        "docker push",
        "kubectl create secret",
        "kubectl apply -k deploy/kubernetes",
        "kustomize edit set image",
        "docker compose",
    ] {
        assert!(log.contains(call), "README never runs `{call}`:\n{log}");
    }
    // The image the manifests are pointed at is the one built and pushed.
    let built = read(&dir.join("built"));
    for image in read(&dir.join("images")).lines() {
        assert!(built.lines().any(|b| b == image), "{image} was never built");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Every alert has a `runbook_url` into docs/runbooks.md whose anchor is a
/// heading there, and the alerts are split in two groups: business
/// (`team: cx`) and operational (`team: platform`).
#[test]
fn every_alert_has_a_runbook_and_a_team() {
    let rules = yaml(&repo("deploy/prometheus/nps-rules.yml"));
    let runbooks = read(&repo("docs/runbooks.md"));
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ')
                .collect::<String>()
                .replace(' ', "-")
        })
        .collect();
    let mut alerts = 0;
    for group in rules["groups"].as_array().unwrap() {
        let name = s(&group["name"]);
        for rule in group["rules"].as_array().unwrap() {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            let team = match name {
                "nps-stream-business" => "cx",
                "nps-stream-operational" => "platform",
                other => panic!(
                    "{alert} in group {other}: alerts go in the business or operational group"
                ),
            };
            assert_eq!(s(&rule["labels"]["team"]), team, "{alert}");
            let url = s(&rule["annotations"]["runbook_url"]);
            let (path, anchor) = url
                .split_once('#')
                .unwrap_or_else(|| panic!("{alert}: {url}"));
            assert_eq!(path, "docs/runbooks.md", "{alert}");
            assert_eq!(anchor, alert.to_lowercase(), "{alert}");
            assert!(
                anchors.contains(anchor),
                "{alert}: no heading for #{anchor}"
            );
        }
    }
    assert!(alerts >= 19, "{alerts} alerts");
}

/// Staging and production in one Prometheus stay apart on the dashboard:
/// it has `cluster` and `namespace` variables (every value by default,
/// which also matches series without the labels), and every series a
/// panel or a variable reads is filtered by both.
#[test]
fn dashboard_filters_every_series_by_cluster_and_namespace() {
    let d = dashboard();
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| s(&v["name"]))
        .collect();
    assert_eq!(&vars[..3], ["datasource", "cluster", "namespace"]);
    let filter = r#"{cluster=~"$cluster", namespace=~"$namespace""#;
    let mut exprs: Vec<String> = panel_queries(&d).into_iter().map(|(_, e)| e).collect();
    for (name, selector, _) in variable_queries(&d) {
        if name != "cluster" && name != "namespace" {
            exprs.push(selector);
        }
    }
    let mut checked = 0;
    for e in &exprs {
        for name in metric_names(e) {
            let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
            for (at, _) in e.match_indices(name.as_str()) {
                let rest = &e[at + name.len()..];
                if e[..at].ends_with(ident) || rest.starts_with(ident) {
                    continue;
                }
                checked += 1;
                assert!(
                    rest.starts_with(filter),
                    "{name} not filtered by cluster and namespace in {e}"
                );
            }
        }
    }
    assert!(checked >= 60, "{checked} selectors");
}
