//! Configuration: command-line flags, `NPS_*` environment variables and a
//! TOML file (`--config`), resolved in that order of precedence over the
//! built-in defaults, and validated before anything connects.
//!
//! Every error names the flag (or file key) it is about, in one line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::alerts::{AlertFormat, AlertPolicy};
use crate::engine::{Engine, EngineConfig};
use crate::schema::Limits;

mod cases;
mod figures;
mod promoters;
mod properties;
mod themes;

pub use cases::{CasesArgs, CasesSettings};
pub use figures::{ANY_PRODUCT, Benchmark, Breakdown, Target, benchmark_of};
pub use promoters::PromotersArgs;
use properties::RESERVED_PROPERTIES;
pub use properties::{is_secret_property, parse_properties};
pub use themes::{ThemesArgs, ThemesSettings};

#[derive(Debug, Parser)]
#[command(
    name = "nps-stream",
    version,
    about = "Streaming Net Promoter Score from Kafka"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume survey responses and serve NPS metrics, alerts and dead letters.
    Run(RunArgs),
    /// Run the real pipeline on an embedded Kafka with generated responses.
    Demo(DemoArgs),
    /// Produce JSON-lines SurveyResponses (protobuf JSON mapping) as protobuf.
    Send(SendArgs),
    /// Load and validate a configuration (flags, env, file), print it, exit.
    CheckConfig(RunArgs),
    /// Probe a running instance's HTTP endpoint (exit 0 on 2xx): for
    /// container health checks.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The endpoint to GET [default: /healthz on the instance's metrics
    /// address: --metrics-addr, else `metrics_addr` in --config, else
    /// 0.0.0.0:9898; an unspecified address is probed on loopback].
    #[arg(long)]
    pub url: Option<String>,
    /// The instance's metrics address, as given to `run`.
    #[arg(long, env = "NPS_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// The instance's settings file, as given to `run` (only
    /// `metrics_addr` is read).
    #[arg(long, env = "NPS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Path probed when --url is absent.
    #[arg(long, default_value = "/healthz")]
    pub path: String,
    /// Connect and read timeout.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    Earliest,
    Latest,
}

impl OffsetReset {
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

/// Flags of `run` (and `check-config`). All optional: unset falls back to
/// the file, then to the default.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// TOML file with any of the settings below (flags and env win over it).
    #[arg(long, env = "NPS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, e.g. 127.0.0.1:9092.
    #[arg(long, env = "NPS_BROKERS")]
    pub brokers: Option<String>,
    /// Consumer group id [default: nps-stream].
    #[arg(long, env = "NPS_GROUP_ID")]
    pub group_id: Option<String>,
    /// Topic of SurveyResponse events [default: survey-responses].
    #[arg(long, env = "NPS_INPUT_TOPIC")]
    pub input_topic: Option<String>,
    /// Topic detractor alerts go to [default: nps-detractor-alerts].
    #[arg(long, env = "NPS_ALERTS_TOPIC")]
    pub alerts_topic: Option<String>,
    /// Topic refused events go to, unchanged [default: survey-responses-dlq].
    #[arg(long, env = "NPS_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// Where /metrics, /healthz and /readyz listen [default: 0.0.0.0:9898].
    #[arg(long, env = "NPS_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Rolling windows [default: 1h,24h,7d,30d].
    #[arg(long, env = "NPS_WINDOWS", value_delimiter = ',')]
    pub windows: Option<Vec<String>>,
    /// librdkafka property passed as is (repeatable), e.g. -X security.protocol=SASL_SSL.
    /// NPS_KAFKA_PROPERTIES holds several separated by `;`; a `;` inside a
    /// value is written `\;`, a backslash before it `\\`.
    #[arg(short = 'X', value_name = "KEY=VALUE", env = "NPS_KAFKA_PROPERTIES")]
    pub kafka: Vec<String>,
    /// Alert encoding: protobuf or json [default: protobuf].
    #[arg(long, env = "NPS_ALERTS_FORMAT")]
    pub alerts_format: Option<String>,
    /// Where a group with no committed offset starts [default: earliest].
    #[arg(long, env = "NPS_AUTO_OFFSET_RESET")]
    pub auto_offset_reset: Option<OffsetReset>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "NPS_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Most (product, region) segments kept [default: 10000].
    #[arg(long, env = "NPS_MAX_KEYS")]
    pub max_keys: Option<usize>,
    /// Buckets per window [default: 48].
    #[arg(long, env = "NPS_BUCKETS_PER_WINDOW")]
    pub buckets_per_window: Option<u32>,
    /// How long a response_id is remembered [default: 24h].
    #[arg(long, env = "NPS_DEDUP_HORIZON")]
    pub dedup_horizon: Option<String>,
    /// Most response_ids remembered per partition [default: 1000000].
    #[arg(long, env = "NPS_DEDUP_MAX_IDS")]
    pub dedup_max_ids: Option<usize>,
    /// Snapshot format to write: this release's, or the one before it
    /// until every instance runs this release (the first of an upgrade's
    /// two rolls) [default: 2].
    #[arg(long, env = "NPS_SNAPSHOT_FORMAT")]
    pub snapshot_format: Option<u32>,
    /// How far in the future responded_at may be [default: 5m].
    #[arg(long, env = "NPS_MAX_FUTURE_SKEW")]
    pub max_future_skew: Option<String>,
    /// Scores at or below this raise an alert [default: 6].
    #[arg(long, env = "NPS_ALERT_THRESHOLD")]
    pub alert_threshold: Option<u32>,
    /// How long everything after SIGTERM may take: deliveries, final
    /// snapshots, the commit, leaving the group [default: 30s].
    #[arg(long, env = "NPS_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<String>,
    /// How long a consuming loop may go without turning (outside a
    /// rebalance) before /healthz fails [default: 60s].
    #[arg(long, env = "NPS_STALL_TIMEOUT")]
    pub stall_timeout: Option<String>,
    /// Files (comma-separated) whose change stops the process in order, so
    /// that it starts again with them: mounted credentials and CAs that an
    /// operator rotates.
    #[arg(long, env = "NPS_RESTART_ON_CHANGE", value_delimiter = ',')]
    pub restart_on_change: Option<Vec<PathBuf>>,
    /// Topic the per-partition snapshots go to, created (compacted) if
    /// missing [default: `<group-id>-state`].
    #[arg(long, env = "NPS_STATE_TOPIC")]
    pub state_topic: Option<String>,
    /// How often each partition's state is snapshotted (also on revoke and
    /// shutdown) [default: 10s].
    #[arg(long, env = "NPS_SNAPSHOT_INTERVAL")]
    pub snapshot_interval: Option<String>,
    /// Largest snapshot record written to the state topic, in bytes; the
    /// topic is created with room for it (a broker with a lower
    /// `message.max.bytes`, e.g. 1 MB or 8 MB on managed services, needs a
    /// lower value) [default: 67108864, 64 MiB].
    #[arg(long, env = "NPS_SNAPSHOT_MAX_BYTES")]
    pub snapshot_max_bytes: Option<usize>,
    /// Most records whose alert, promoter event or dead letter awaits the
    /// broker's acknowledgement; beyond it fetching pauses (the consumer
    /// stays in its group) until deliveries catch up [default: 50000].
    #[arg(long, env = "NPS_MAX_PENDING")]
    pub max_pending: Option<usize>,
    #[command(flatten)]
    pub cases: CasesArgs,
    #[command(flatten)]
    pub promoters: PromotersArgs,
    #[command(flatten)]
    pub themes: ThemesArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where /metrics, /healthz and /readyz listen.
    #[arg(long, env = "NPS_METRICS_ADDR", default_value = "127.0.0.1:9898")]
    pub metrics_addr: String,
    /// Responses generated per second.
    #[arg(long, env = "NPS_DEMO_RATE", default_value_t = 200)]
    pub rate: u32,
    /// Seconds between the printed NPS tables.
    #[arg(long, default_value_t = 5)]
    pub table_every: u64,
    /// Stop after this long (e.g. 30s); runs until Ctrl-C when absent.
    #[arg(long)]
    pub duration: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "NPS_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "NPS_BROKERS")]
    pub brokers: String,
    /// Topic to produce to.
    #[arg(long, env = "NPS_INPUT_TOPIC", default_value = "survey-responses")]
    pub topic: String,
    /// JSON-lines file; `-` or absent reads standard input.
    #[arg(long, short = 'f', conflicts_with = "generate")]
    pub file: Option<PathBuf>,
    /// Produce generated answers instead of reading lines (the demo's data:
    /// a month of history, then a live stream; 3% are malformed on purpose).
    #[arg(long)]
    pub generate: bool,
    /// With --generate: live answers per second.
    #[arg(long, default_value_t = 200, requires = "generate")]
    pub rate: u32,
    /// With --generate: answers spread over the past 30 days sent first.
    #[arg(long, default_value_t = 20_000, requires = "generate")]
    pub history: u64,
    /// With --generate: stop after this many live answers (default: never).
    #[arg(long, requires = "generate")]
    pub count: Option<u64>,
    /// Send case events (one `CaseEvent` per line, protobuf JSON mapping)
    /// to --case-events-topic instead of answers: what a CRM integration
    /// writes. Lines that do not validate are skipped and reported.
    #[arg(long, conflicts_with = "generate")]
    pub case_events: bool,
    /// With --case-events: the topic.
    #[arg(
        long,
        env = "NPS_CASE_EVENTS_TOPIC",
        default_value = "nps-case-events",
        requires = "case_events"
    )]
    pub case_events_topic: String,
    /// librdkafka property passed as is (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub kafka: Vec<String>,
}

impl SendArgs {
    /// The topic records go to.
    pub fn destination(&self) -> &str {
        if self.case_events {
            &self.case_events_topic
        } else {
            &self.topic
        }
    }
}

impl HealthcheckArgs {
    /// The URL to probe: --url, else `path` on the metrics address of
    /// --metrics-addr, the file, or the default, with an unspecified IP
    /// (0.0.0.0, ::) replaced by loopback.
    pub fn resolved_url(&self) -> Result<String, ConfigError> {
        if let Some(u) = &self.url {
            return Ok(u.clone());
        }
        let mut addr = match (&self.metrics_addr, &self.config) {
            (Some(a), _) => a.parse().map_err(|_| {
                invalid(
                    "--metrics-addr",
                    format!("`{a}` is not an address like 0.0.0.0:9898"),
                )
            })?,
            (None, Some(path)) => load_file(path)?.metrics_addr,
            (None, None) => Settings::default().metrics_addr,
        };
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Ok(format!("http://{addr}{}", self.path))
    }
}

/// Largest snapshot record unless told otherwise: 64 MiB.
pub const DEFAULT_SNAPSHOT_MAX_BYTES: usize = 64 << 20;

/// Where /metrics, /healthz and /readyz listen unless told otherwise.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9898";

/// Everything `run` needs: the one settings type. Its `Default` holds
/// every default; the TOML file (`--config`) is read straight into it
/// (keys it lacks keep their default, unknown keys are refused); then the
/// `NPS_*` environment and the flags, which clap has already merged (a
/// flag over its variable), override what they name. The file uses the
/// flags' names with underscores, and tables for the engine, limits,
/// alert policy and librdkafka properties.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub brokers: String,
    pub group_id: String,
    pub input_topic: String,
    pub alerts_topic: String,
    pub dlq_topic: String,
    pub metrics_addr: SocketAddr,
    /// librdkafka properties, as with -X.
    pub kafka: BTreeMap<String, String>,
    pub alerts_format: AlertFormat,
    pub auto_offset_reset: OffsetReset,
    pub log_format: LogFormat,
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    /// A consuming loop silent this long (outside a rebalance) fails
    /// /healthz.
    #[serde(deserialize_with = "de_duration")]
    pub stall_timeout: Duration,
    /// Files whose change stops the process so that it restarts with them.
    pub restart_on_change: Vec<PathBuf>,
    /// Where per-partition snapshots go (recovery through Kafka); empty
    /// until resolved means `<group_id>-state`.
    pub state_topic: String,
    #[serde(deserialize_with = "de_duration")]
    pub snapshot_interval: Duration,
    /// Largest snapshot record; larger ones are not written (counted as
    /// `too_large`, the partition is rebuilt by replay instead).
    pub snapshot_max_bytes: usize,
    /// Most deliveries awaiting acknowledgement before fetching pauses.
    pub max_pending: usize,
    pub engine: EngineConfig,
    pub limits: Limits,
    pub alerts: AlertPolicy,
    pub cases: CasesSettings,
    /// Promoter events (`[promoters]`): topic, tiers, actions.
    pub promoters: crate::promoters::PromoterPolicy,
    /// Target NPS per product or product × region (`[[targets]]`),
    /// exported as `nps_target` for the `NpsBelowTarget` rule.
    pub targets: Vec<Target>,
    /// Comment themes: `themes = "on"|"off"` or the `[[themes]]` taxonomy.
    pub themes: ThemesSettings,
    /// NPS by an attribute of the answer (`[[breakdowns]]`).
    pub breakdowns: Vec<Breakdown>,
    /// Sector quartiles per product (`[[benchmarks]]`).
    pub benchmarks: Vec<Benchmark>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            brokers: String::new(),
            group_id: "nps-stream".into(),
            input_topic: "survey-responses".into(),
            alerts_topic: "nps-detractor-alerts".into(),
            dlq_topic: "survey-responses-dlq".into(),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 9898)),
            kafka: BTreeMap::new(),
            alerts_format: AlertFormat::default(),
            auto_offset_reset: OffsetReset::Earliest,
            log_format: LogFormat::default(),
            shutdown_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            restart_on_change: Vec::new(),
            state_topic: String::new(),
            snapshot_interval: Duration::from_secs(10),
            snapshot_max_bytes: DEFAULT_SNAPSHOT_MAX_BYTES,
            max_pending: 50_000,
            engine: EngineConfig::default(),
            limits: Limits::default(),
            alerts: AlertPolicy::default(),
            cases: CasesSettings::default(),
            promoters: crate::promoters::PromoterPolicy::default(),
            targets: Vec::new(),
            themes: ThemesSettings::default(),
            breakdowns: Vec::new(),
            benchmarks: Vec::new(),
        }
    }
}

/// Why a configuration was refused, naming the flag (or the file) it is
/// about. Displayed as one line; `main` prints it and exits with 2.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A setting that has no default was given nowhere.
    #[error("{flag}: required ({how})")]
    Missing {
        flag: &'static str,
        how: &'static str,
    },
    /// A value that is not acceptable for `flag` (from the flag, its
    /// environment variable or its file key).
    #[error("{flag}: {reason}")]
    Invalid { flag: String, reason: String },
    /// A librdkafka property that nps-stream sets itself.
    #[error("-X {key}: set by nps-stream itself (use the dedicated flag)")]
    Reserved { key: &'static str },
    /// The settings file cannot be read or parsed.
    #[error("--config {path}: {reason}")]
    File { path: String, reason: String },
}

impl ConfigError {
    /// The flag (or `--config`) the error is about.
    pub fn flag(&self) -> String {
        match self {
            ConfigError::Missing { flag, .. } => flag.to_string(),
            ConfigError::Invalid { flag, .. } => flag.clone(),
            ConfigError::Reserved { key } => format!("-X {key}"),
            ConfigError::File { .. } => "--config".into(),
        }
    }
}

fn invalid(flag: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag: flag.into(),
        reason: reason.into(),
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// A switch flag's value: `on`/`true` or `off`/`false`.
fn on_off(flag: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(invalid(flag, format!("`{other}`: on or off"))),
    }
}

fn duration(flag: &str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s)
        .map_err(|_| invalid(flag, format!("`{s}` is not a duration (e.g. 30s, 5m, 24h)")))
}

fn check_topic(flag: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(invalid(
            flag,
            format!("`{name}` is not a valid Kafka topic name"),
        ));
    }
    Ok(())
}

impl Settings {
    /// A copy safe to print: secret Kafka properties masked.
    pub fn redacted(&self) -> Settings {
        let mut s = self.clone();
        for (k, v) in s.kafka.iter_mut() {
            if is_secret_property(k) {
                *v = "<redacted>".into();
            }
        }
        s
    }

    /// Defaults, then the file, then environment and flags, validated.
    /// `brokers` may be absent only when `allow_no_brokers` (the demo
    /// provides its own).
    pub fn resolve(args: &RunArgs, allow_no_brokers: bool) -> Result<Settings, ConfigError> {
        let mut s = match &args.config {
            Some(path) => load_file(path)?,
            None => Settings::default(),
        };
        s.apply(args)?;
        s.validate(allow_no_brokers)?;
        Ok(s)
    }

    /// Overrides what the flags (or their variables) name.
    fn apply(&mut self, args: &RunArgs) -> Result<(), ConfigError> {
        let set = |field: &mut String, value: &Option<String>| {
            if let Some(v) = value {
                field.clone_from(v);
            }
        };
        set(&mut self.brokers, &args.brokers);
        set(&mut self.group_id, &args.group_id);
        set(&mut self.input_topic, &args.input_topic);
        set(&mut self.alerts_topic, &args.alerts_topic);
        set(&mut self.dlq_topic, &args.dlq_topic);
        set(&mut self.state_topic, &args.state_topic);
        if let Some(a) = &args.metrics_addr {
            self.metrics_addr = a.parse().map_err(|_| {
                invalid(
                    "--metrics-addr",
                    format!("`{a}` is not an address like 0.0.0.0:9898"),
                )
            })?;
        }
        self.kafka.extend(parse_properties(&args.kafka)?);
        if let Some(f) = &args.alerts_format {
            self.alerts_format = f
                .parse()
                .map_err(|e: String| invalid("--alerts-format", e))?;
        }
        if let Some(v) = args.auto_offset_reset {
            self.auto_offset_reset = v;
        }
        if let Some(v) = args.log_format {
            self.log_format = v;
        }
        if let Some(v) = &args.shutdown_timeout {
            self.shutdown_timeout = duration("--shutdown-timeout", v)?;
        }
        if let Some(v) = &args.stall_timeout {
            self.stall_timeout = duration("--stall-timeout", v)?;
        }
        if let Some(v) = &args.restart_on_change {
            self.restart_on_change.clone_from(v);
        }
        if let Some(v) = &args.snapshot_interval {
            self.snapshot_interval = duration("--snapshot-interval", v)?;
        }
        if let Some(v) = args.snapshot_max_bytes {
            self.snapshot_max_bytes = v;
        }
        if let Some(v) = args.max_pending {
            self.max_pending = v;
        }
        if let Some(w) = &args.windows {
            self.engine.windows = w
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(v) = args.max_keys {
            self.engine.max_keys = v;
        }
        if let Some(v) = args.buckets_per_window {
            self.engine.buckets_per_window = v;
        }
        if let Some(v) = &args.dedup_horizon {
            self.engine.dedup_horizon = duration("--dedup-horizon", v)?;
        }
        if let Some(v) = args.dedup_max_ids {
            self.engine.dedup_max_ids = v;
        }
        if let Some(v) = args.snapshot_format {
            self.engine.snapshot_format = v;
        }
        if let Some(v) = &args.max_future_skew {
            self.limits.max_future_skew = duration("--max-future-skew", v)?;
        }
        if let Some(v) = args.alert_threshold {
            self.alerts.threshold = v;
        }
        self.cases.apply(&args.cases)?;
        promoters::apply(self, &args.promoters)?;
        self.themes.apply(&args.themes)?;
        Ok(())
    }

    /// Checks what no type can: ranges, topic names, reserved properties;
    /// and derives the state topic from the group when it is not given.
    fn validate(&mut self, allow_no_brokers: bool) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() && !allow_no_brokers {
            return Err(ConfigError::Missing {
                flag: "--brokers",
                how: "flag, NPS_BROKERS or `brokers` in --config",
            });
        }
        if let Some(key) = RESERVED_PROPERTIES
            .iter()
            .find(|k| self.kafka.contains_key(**k))
        {
            return Err(ConfigError::Reserved { key });
        }
        Engine::new(&self.engine).map_err(|e| {
            use crate::engine::ConfigError as E;
            let flag = match e {
                E::DedupHorizon => "--dedup-horizon",
                E::MaxKeys => "--max-keys",
                E::DedupMaxIds => "--dedup-max-ids",
                E::SnapshotFormat => "--snapshot-format",
                E::Windows(_) | E::WindowsTooFine => "--windows / [engine]",
            };
            invalid(flag, e.to_string())
        })?;
        if self.engine.max_keys == 0 {
            return Err(invalid("--max-keys", "must be at least 1"));
        }
        if self.alerts.threshold > 10 {
            return Err(invalid("--alert-threshold", "must be a score from 0 to 10"));
        }
        if !(1024..=DEFAULT_SNAPSHOT_MAX_BYTES).contains(&self.snapshot_max_bytes) {
            return Err(invalid(
                "--snapshot-max-bytes",
                format!("must be from 1024 to {DEFAULT_SNAPSHOT_MAX_BYTES} (64 MiB)"),
            ));
        }
        if self.max_pending == 0 {
            return Err(invalid("--max-pending", "must be at least 1"));
        }
        if let Some(p) = self.restart_on_change.iter().find(|p| !p.is_file()) {
            return Err(invalid(
                "--restart-on-change",
                format!("{} is not a readable file", p.display()),
            ));
        }
        if self.stall_timeout < Duration::from_secs(5) {
            return Err(invalid(
                "--stall-timeout",
                "must be at least 5s (a loop beats once a second)",
            ));
        }
        if self.snapshot_interval < Duration::from_millis(100) {
            return Err(invalid("--snapshot-interval", "must be at least 100ms"));
        }
        if self.state_topic.is_empty() {
            self.state_topic = format!("{}-state", self.group_id);
        }
        check_topic("--state-topic", &self.state_topic)?;
        check_topic("--input-topic", &self.input_topic)?;
        check_topic("--alerts-topic", &self.alerts_topic)?;
        check_topic("--dlq-topic", &self.dlq_topic)?;
        self.cases.validate(&self.alerts_topic)?;
        promoters::validate(self)?;
        self.themes.validate()?;
        figures::validate_targets(&self.targets)?;
        figures::validate_breakdowns(&self.breakdowns)?;
        figures::validate_benchmarks(&self.benchmarks)?;
        Ok(())
    }
}

fn load_file(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        reason: format!("cannot read: {e}"),
    })?;
    parse_file(&text, &path.display().to_string())
}

fn parse_file(text: &str, path: &str) -> Result<Settings, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::File {
        path: path.to_string(),
        reason: e.message().trim().to_string(),
    })
}

impl Settings {
    /// The settings a `--config` file's text gives with no flag or
    /// variable set, validated (the fuzz target reads configs this way).
    pub fn from_toml(text: &str, allow_no_brokers: bool) -> Result<Settings, ConfigError> {
        let mut s = parse_file(text, "<text>")?;
        s.validate(allow_no_brokers)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests;
