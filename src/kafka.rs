//! rdkafka clients: their configuration, the producer's context, the
//! shared health view (fed by every client's statistics and errors), the
//! renewable producer, and cached metadata lookups. The consumer's context
//! and its rebalances are the consumer driver's (the `consumer` module).
//!
//! Owns nothing of the NPS logic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;

use crate::events::Event;
use crate::metrics as m;

/// What the service knows about its Kafka connections, for /readyz, logs
/// and metrics. Updated from librdkafka's callbacks.
#[derive(Debug, Default)]
pub struct Health {
    /// Input partitions currently assigned.
    pub assigned: AtomicUsize,
    /// Assigned partitions still rebuilding their state (replaying).
    pub restoring: AtomicUsize,
    /// Set when the group gives this member an assignment, even an empty
    /// one: it is a member, ready to take partitions. Cleared when it loses
    /// its assignment (evicted) or a rebalance fails, until the next.
    pub joined: AtomicBool,
    /// Brokers in state UP as last reported by each client; -1 = unknown.
    consumer_brokers_up: AtomicI64,
    producer_brokers_up: AtomicI64,
    /// Set while the last statistics of a client saw no broker up.
    outage_logged: AtomicBool,
    /// How many times the consumer's statistics went from some brokers up
    /// to none.
    consumer_outages: std::sync::atomic::AtomicU64,
    /// Consumer lag per assigned input partition, from statistics.
    pub(crate) lags: Mutex<BTreeMap<i32, i64>>,
    /// The case tracker's lag per assigned (topic, partition), replaced
    /// each second.
    case_lags: Mutex<BTreeMap<(String, i32), i64>>,
    /// Per assigned partition: how many statistics in a row saw the
    /// consumer's next fetch offset beyond the log end.
    pub(crate) beyond_end: Mutex<BTreeMap<i32, u32>>,
    /// When each kind of client error was last logged (throttling).
    logged_errors: Mutex<BTreeMap<(&'static str, String), std::time::Instant>>,
    /// The consuming loops' heartbeats (`/healthz`).
    pub heartbeats: crate::liveness::Heartbeats,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health {
            consumer_brokers_up: AtomicI64::new(-1),
            producer_brokers_up: AtomicI64::new(-1),
            ..Health::default()
        })
    }

    /// Ready: a member of the group (an idle member, with no partition
    /// because the group has more members than the topic has partitions,
    /// is healthy and ready to take some), nothing restoring, and both
    /// clients see a broker up. Readiness must not depend on holding
    /// partitions: with more replicas than partitions a rollout would
    /// never complete and every idle pod would alert.
    pub fn ready(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
            && self.restoring.load(Ordering::Relaxed) == 0
            && self.consumer_brokers_up.load(Ordering::Relaxed) > 0
            && self.producer_brokers_up.load(Ordering::Relaxed) > 0
    }

    /// Brokers up as the consumer last saw them; -1 before its first
    /// statistics.
    pub fn consumer_brokers_up(&self) -> i64 {
        self.consumer_brokers_up.load(Ordering::Relaxed)
    }

    /// How many outages the consumer has seen (all its brokers down).
    pub fn consumer_outages(&self) -> u64 {
        self.consumer_outages.load(Ordering::Relaxed)
    }

    pub fn lags(&self) -> Vec<(i32, i64)> {
        match self.lags.lock() {
            Ok(l) => l.iter().map(|(p, v)| (*p, *v)).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The case tracker's lag: every (topic, partition) it holds.
    pub(crate) fn set_case_lags(&self, lags: BTreeMap<(String, i32), i64>) {
        if let Ok(mut l) = self.case_lags.lock() {
            *l = lags;
        }
    }

    pub fn case_lags(&self) -> Vec<(String, i32, i64)> {
        match self.case_lags.lock() {
            Ok(l) => l.iter().map(|((t, p), v)| (t.clone(), *p, *v)).collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn forget_lag(&self, partitions: &[i32]) {
        if let Ok(mut l) = self.lags.lock() {
            for p in partitions {
                l.remove(p);
            }
        }
        if let Ok(mut b) = self.beyond_end.lock() {
            for p in partitions {
                b.remove(p);
            }
        }
    }

    /// Partitions whose fetch position stayed beyond the log end for two
    /// statistics in a row: the log was truncated or the topic recreated
    /// (a broker that lost its data). Kafka would answer
    /// OFFSET_OUT_OF_RANGE and librdkafka reset the position; some
    /// Kafka-compatible brokers just return nothing, which would stall the
    /// partition forever. Taking them clears the flags.
    pub fn take_beyond_end(&self) -> Vec<i32> {
        match self.beyond_end.lock() {
            Ok(mut b) => {
                let hits: Vec<i32> = b
                    .iter()
                    .filter(|(_, n)| **n >= 2)
                    .map(|(p, _)| *p)
                    .collect();
                for p in &hits {
                    b.remove(p);
                }
                hits
            }
            Err(_) => Vec::new(),
        }
    }

    /// Whether an error of this kind should be logged now: at most once a
    /// minute each, so an outage does not flood the logs (the metric counts
    /// them all).
    fn should_log(&self, role: Role, error: &KafkaError) -> bool {
        let key = (role.as_str(), format!("{:?}", error.rdkafka_error_code()));
        let Ok(mut seen) = self.logged_errors.lock() else {
            return true;
        };
        let now = std::time::Instant::now();
        match seen.get(&key) {
            Some(t) if now.duration_since(*t) < std::time::Duration::from_secs(60) => false,
            _ => {
                seen.insert(key, now);
                true
            }
        }
    }

    pub(crate) fn brokers_seen(&self, client: Role, up: i64) {
        let slot = match client {
            Role::Consumer => &self.consumer_brokers_up,
            Role::Producer => &self.producer_brokers_up,
            Role::State => return,
        };
        let before = slot.swap(up, Ordering::Relaxed);
        if matches!(client, Role::Consumer) && up == 0 && before != 0 {
            self.consumer_outages.fetch_add(1, Ordering::Relaxed);
        }
        metrics::gauge!(m::KAFKA_BROKERS_UP, "client" => client.as_str()).set(up as f64);
        if up == 0 && before != 0 && !self.outage_logged.swap(true, Ordering::Relaxed) {
            tracing::error!(client = client.as_str(), "kafka brokers unreachable");
        } else if up > 0 && before == 0 && self.outage_logged.swap(false, Ordering::Relaxed) {
            tracing::info!(
                client = client.as_str(),
                brokers_up = up,
                "kafka brokers reachable again"
            );
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Role {
    Consumer,
    Producer,
    /// The state topic's clients.
    State,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Consumer => "consumer",
            Role::Producer => "producer",
            Role::State => "state",
        }
    }
}

pub(crate) fn count_up(stats: &Statistics) -> i64 {
    stats
        .brokers
        .values()
        // Bootstrap entries (nodeid -1) are not real brokers.
        .filter(|b| b.nodeid >= 0 && b.state == "UP")
        .count() as i64
}

pub fn on_client_error(health: &Health, role: Role, error: &KafkaError, reason: &str) {
    // The state reader asks to be told when it reaches a partition's end
    // (enable.partition.eof); librdkafka reports that as an error event.
    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
        tracing::debug!(client = role.as_str(), reason, "end of partition");
        return;
    }
    crate::events::ClientError {
        client: role.as_str(),
        error,
        reason,
        loud: health.should_log(role, error),
    }
    .emit();
}

/// The producers' context: health and errors.
pub struct ProducerCtx {
    pub health: Arc<Health>,
}

impl ClientContext for ProducerCtx {
    fn stats(&self, stats: Statistics) {
        self.health.brokers_seen(Role::Producer, count_up(&stats));
    }
    fn error(&self, error: KafkaError, reason: &str) {
        on_client_error(&self.health, Role::Producer, &error, reason);
    }
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_client(level, fac, log_message);
    }
}

impl rdkafka::producer::ProducerContext for ProducerCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

pub fn log_client(level: RDKafkaLogLevel, fac: &str, message: &str) {
    // -X properties go to every client nps-stream builds (consumer,
    // producers, state reader), so librdkafka warns once per client that a
    // consumer property means nothing to a producer and the reverse: that
    // is expected, and kept at debug.
    let level = if fac == "CONFWARN" && is_other_role_property(message) {
        RDKafkaLogLevel::Debug
    } else {
        level
    };
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", fac, "{message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", fac, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

/// librdkafka's warning that a property set on every client belongs to the
/// other role ("... is a consumer property and will be ignored by this
/// producer instance", and the reverse).
fn is_other_role_property(message: &str) -> bool {
    message.contains("is a consumer property and will be ignored by this producer instance")
        || message.contains("is a producer property and will be ignored by this consumer instance")
}

/// Runs blocking work that librdkafka's callbacks bring into an async
/// task: on a worker of a multi-threaded runtime, tokio first hands the
/// worker's other tasks to another thread (the HTTP server and the signal
/// handler go on); elsewhere (the runtime's `block_on` thread, no runtime)
/// it just runs. Never on a current-thread runtime, where blocking in place
/// is refused.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A client's settings: brokers, statistics every second (health, lag),
/// nps-stream's `defaults` for this client, then the user's -X properties,
/// which win over the defaults (the keys nps-stream must own are refused
/// by the config check).
pub fn client_config(
    brokers: &str,
    defaults: &[(&str, &str)],
    extra: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c.set("statistics.interval.ms", "1000");
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    // librdkafka's own debug contexts (-X debug=...) need debug-level logs.
    let level = if extra.contains_key("debug") {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Warning
    };
    c.set_log_level(level);
    for (k, v) in extra {
        c.set(k, v);
    }
    if let Some(location) = default_ca_location(extra, |k| std::env::var_os(k).is_some()) {
        c.set("ssl.ca.location", location);
    }
    c
}

/// Where TLS clients find the CAs that sign the brokers' certificates when
/// the user names none. OpenSSL is linked in (vendored), and its built-in
/// default is its build prefix (`/usr/local/ssl`), which no distribution
/// fills: a broker with a certificate from a public CA would fail the
/// handshake. `probe` makes librdkafka look in the usual system places
/// (`/etc/ssl/certs/ca-certificates.crt` on Debian, `/etc/pki/...` on Red
/// Hat, ...). Nothing is set when the user gave a CA (`ssl.ca.location`,
/// `ssl.ca.pem`, a certificate store) or pointed OpenSSL at one with
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`, nor without TLS.
fn default_ca_location(
    extra: &BTreeMap<String, String>,
    env_set: impl Fn(&str) -> bool,
) -> Option<&'static str> {
    let tls = extra
        .get("security.protocol")
        .is_some_and(|p| p.to_ascii_lowercase().contains("ssl"));
    let named = ["ssl.ca.location", "ssl.ca.pem", "ssl.ca.certificate.stores"]
        .iter()
        .any(|k| extra.contains_key(*k));
    let by_env = ["SSL_CERT_FILE", "SSL_CERT_DIR"].iter().any(|k| env_set(k));
    (tls && !named && !by_env).then_some("probe")
}

/// The partition count of `topic` as the brokers list it; `None` when it is
/// missing, in error or unanswered. Blocking.
pub(crate) fn partition_count<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: std::time::Duration,
) -> Option<i32> {
    let md = client.fetch_metadata(Some(topic), timeout).ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    if t.error().is_some() || t.partitions().is_empty() {
        return None;
    }
    Some(t.partitions().len() as i32)
}

/// The end of `partition`'s log as librdkafka last heard it in a fetch
/// answer: no request (rust-rdkafka has no binding for this call). `None`
/// before the partition's first fetch.
pub(crate) fn cached_log_end<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    cached_watermarks(client, topic, partition).map(|(_, high)| high)
}

/// The start and end of `partition`'s log as librdkafka last heard them
/// (see `cached_log_end`); the start is -1 when no answer told it.
pub(crate) fn cached_watermarks<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client's handle lives as long as the borrow; librdkafka
    // reads the NUL-terminated topic name, writes the two offsets, and
    // takes its own locks.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            client.native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low, high))
}

/// The producer of alerts and dead letters, renewable: an idempotent
/// producer whose broker lost its state (a broker restarted without its
/// data) fails fatally and can never send again, so it is replaced by a
/// fresh one. Dropping the old one fails what it still held back to the
/// pipeline, which sends it again on the new one.
/// How long records kept to retry wait after a refusal.
const REFUSED_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

pub struct RenewableProducer {
    current: std::sync::RwLock<FutureProducer<ProducerCtx>>,
    config: ClientConfig,
    health: Arc<Health>,
    /// Until when records kept to retry wait, after the producer refused
    /// one at once (`refused`).
    refused_until: Mutex<Option<std::time::Instant>>,
}

impl RenewableProducer {
    pub fn new(config: ClientConfig, health: Arc<Health>) -> KafkaResult<RenewableProducer> {
        let producer = config.create_with_context(ProducerCtx {
            health: health.clone(),
        })?;
        Ok(RenewableProducer {
            current: std::sync::RwLock::new(producer),
            config,
            health,
            refused_until: Mutex::new(None),
        })
    }

    /// The producer refused a record at once (a topic it knows to fail:
    /// authorization, a topic gone): every record kept to retry waits
    /// `REFUSED_WAIT` before the next try, so that thousands of them
    /// waiting make one try every 100 ms, not thousands.
    pub(crate) fn refused(&self) {
        if let Ok(mut until) = self.refused_until.lock() {
            *until = Some(std::time::Instant::now() + REFUSED_WAIT);
        }
    }

    /// Whether a refusal of this kind is said in the log now: the health
    /// view's throttle for client errors, once a minute per kind.
    pub(crate) fn should_log(&self, error: &KafkaError) -> bool {
        self.health.should_log(Role::Producer, error)
    }

    /// Whether records kept to retry wait still (see `refused`).
    pub(crate) fn refusing(&self) -> bool {
        self.refused_until
            .lock()
            .is_ok_and(|until| until.is_some_and(|t| std::time::Instant::now() < t))
    }

    /// The producer to use now (a cheap handle).
    pub fn get(&self) -> FutureProducer<ProducerCtx> {
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the producer if it is in a fatal state; returns whether it
    /// did.
    pub fn renew_if_fatal(&self) -> bool {
        let Some((code, reason)) = self.get().client().fatal_error() else {
            return false;
        };
        crate::events::ProducerRenewed {
            code,
            reason: &reason,
        }
        .emit();
        self.renew()
    }

    /// Replaces a producer that makes no progress although brokers are
    /// reachable: a broker back without its data may answer its produce
    /// requests with UNKNOWN_PRODUCER_ID forever (Tansu 0.6 does, at
    /// times), which librdkafka retries until `message.timeout.ms` (5
    /// minutes) rather than fail fatally.
    pub fn renew_stalled(&self, stalled: std::time::Duration) -> bool {
        tracing::error!(
            seconds = stalled.as_secs(),
            "producer made no progress with brokers reachable; replacing it and resending what it held"
        );
        metrics::counter!(crate::metrics::PRODUCER_RENEWALS_TOTAL).increment(1);
        self.renew()
    }

    fn renew(&self) -> bool {
        let fresh = match self.config.create_with_context(ProducerCtx {
            health: self.health.clone(),
        }) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot create a new producer; will retry");
                return false;
            }
        };
        let old = match self.current.write() {
            Ok(mut slot) => std::mem::replace(&mut *slot, fresh),
            Err(_) => return false,
        };
        drop(old);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_without_a_named_ca_probes_the_system_store() {
        let props = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let none = |_: &str| false;
        for protocol in ["SSL", "sasl_ssl"] {
            let p = props(&[("security.protocol", protocol)]);
            assert_eq!(default_ca_location(&p, none), Some("probe"), "{protocol}");
        }
        for plain in [vec![], vec![("security.protocol", "SASL_PLAINTEXT")]] {
            assert_eq!(default_ca_location(&props(&plain), none), None);
        }
        for named in ["ssl.ca.location", "ssl.ca.pem", "ssl.ca.certificate.stores"] {
            let p = props(&[("security.protocol", "SSL"), (named, "x")]);
            assert_eq!(default_ca_location(&p, none), None, "{named}");
        }
        let p = props(&[("security.protocol", "SSL")]);
        assert_eq!(default_ca_location(&p, |k| k == "SSL_CERT_FILE"), None);
        assert_eq!(default_ca_location(&p, |k| k == "SSL_CERT_DIR"), None);
        let c = client_config("b:9092", &[], &p);
        let expect_probe = std::env::var_os("SSL_CERT_FILE").is_none()
            && std::env::var_os("SSL_CERT_DIR").is_none();
        assert_eq!(c.get("ssl.ca.location") == Some("probe"), expect_probe);
    }

    #[test]
    fn a_consumer_outage_is_counted_once_each_time_every_broker_goes() {
        let h = Health::new();
        assert_eq!(h.consumer_outages(), 0);
        // Unknown (-1) to none counts: the brokers were never seen.
        for (role, up, outages) in [
            (Role::Consumer, 0, 1),
            (Role::Consumer, 0, 1),
            (Role::Consumer, 2, 1),
            (Role::Producer, 0, 1),
            (Role::Consumer, 1, 1),
            (Role::Consumer, 0, 2),
        ] {
            h.brokers_seen(role, up);
            assert_eq!(h.consumer_outages(), outages, "{role:?} {up}");
        }
    }

    #[test]
    fn properties_of_the_other_role_are_told_apart_from_other_config_warnings() {
        assert!(super::is_other_role_property(
            "Configuration property session.timeout.ms is a consumer property and will be ignored by this producer instance"
        ));
        assert!(super::is_other_role_property(
            "Configuration property linger.ms is a producer property and will be ignored by this consumer instance"
        ));
        assert!(!super::is_other_role_property(
            "Configuration property queue.buffering.max.ms is deprecated"
        ));
    }
}
