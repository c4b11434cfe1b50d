//! Helpers for the end-to-end tests: the real binary as a subprocess, a
//! minimal /metrics scraper, topic readers, and test data with its
//! independently computed expectations.
#![allow(dead_code)]

pub mod manifests;
pub mod mock;
pub mod reference;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

pub const BIN: &str = env!("CARGO_BIN_EXE_nps-stream");

/// Whether an external tool the suite installs is on PATH. Under the
/// README's test command (NPS_REQUIRE_TOOLS=1) a missing tool is a failure;
/// under a bare `cargo test` the check is skipped with a note.
pub fn have_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("NPS_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!(
                "{name} is not installed; run the suite with `bash tests/run-all.sh`, which installs it"
            );
        }
        eprintln!("note: {name} not installed, check skipped (bash tests/run-all.sh installs it)");
    }
    found
}

/// Runs `cmd` to completion; fails the test with the command and all it
/// printed unless it exited 0. Returns its standard output.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: cannot run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `promtool check metrics` on an exposition; returns its complaints.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A TCP port on 127.0.0.1 that nothing else in this run will take: ports
/// are handed out once each, from a range below the kernel's ephemeral
/// range (32768–60999 on Linux), so no outgoing connection — a client's,
/// a broker's, the mock cluster's own listeners, which bind port 0 — can
/// be given one between the check here and the bind of the process the
/// port is meant for. Each test process starts at its own offset in the
/// range, and a port found in use is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// Held by a test that starts brokers or services for as long as it runs:
/// such tests take one at a time, in this process and across test
/// processes (a lock file), so two of them never share a 2-core machine's
/// CPU and time-sensitive phases (session timeouts, SLAs) keep their
/// margins.
pub struct Heavy {
    _in_process: std::sync::MutexGuard<'static, ()>,
    _file: std::fs::File,
}

pub fn heavy() -> Heavy {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = std::env::temp_dir().join("nps-stream-heavy-tests.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // SAFETY: flock on a descriptor this function owns; the lock goes
    // with the descriptor when `Heavy` drops the file.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
    assert_eq!(
        locked,
        0,
        "lock {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    Heavy {
        _in_process: guard,
        _file: file,
    }
}

/// The service (or demo) as a child process; killed if still running when
/// dropped.
pub struct Service {
    pub child: Child,
    pub metrics_addr: String,
    pub log_path: std::path::PathBuf,
}

impl Service {
    pub fn start(args: &[&str], metrics_port: u16, name: &str) -> Service {
        let log_path =
            std::env::temp_dir().join(format!("nps-test-{name}-{}.log", std::process::id()));
        let log = std::fs::File::create(&log_path).unwrap();
        // NPS_TEST_WRAP (e.g. "gdb -batch -ex run -ex bt --args") runs the
        // binary under a debugger when chasing a crash.
        let wrap = std::env::var("NPS_TEST_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(w) => {
                let mut c = Command::new(w);
                c.args(words).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("NPS_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn nps-stream");
        Service {
            child,
            metrics_addr: format!("127.0.0.1:{metrics_port}"),
            log_path,
        }
    }

    pub fn run(brokers: &str, group: &str, extra: &[&str], name: &str) -> Service {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec![
            "run",
            "--brokers",
            brokers,
            "--group-id",
            group,
            "--metrics-addr",
            &addr,
        ];
        args.extend_from_slice(extra);
        Service::start(&args, port, name)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits for the process to exit by itself; its status and logs.
    pub fn exit_within(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "still running after {timeout:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn metrics(&self) -> Option<Metrics> {
        http_get(&self.metrics_addr, "/metrics").map(|(_, body)| Metrics::parse(&body))
    }

    pub fn status(&self, path: &str) -> Option<u16> {
        http_get(&self.metrics_addr, path).map(|(code, _)| code)
    }

    /// Waits until `f` holds on a scrape, or panics with the logs.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.metrics() {
                if f(&m) {
                    return m;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "service exited ({status}) while waiting for {what}:\n{}",
                    self.logs()
                );
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM", timeout)
    }

    /// Sends SIGNAME (`TERM`, `INT`, ...), then waits for the exit.
    pub fn signal(&mut self, name: &str, timeout: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "did not exit within {timeout:?} of SIG{name}:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Pieces of customer data in the tests' datasets and the demo's: the
/// customer ids' prefixes and the detractors' comments. None may appear in
/// a log at info level or above.
pub fn customer_data_markers() -> Vec<&'static str> {
    let mut m = vec![
        "cust-",                      // tests' customer ids
        "cli-",                       // the generator's customer ids
        "queja ",                     // tests/service_mock.rs comments
        "me encanta ",                // tests/service_mock.rs promoters
        "No resolvieron mi problema", // tests/real_broker.rs comments
        "Nadie me llam",              // tests/cases_e2e.rs comments
    ];
    m.extend_from_slice(&nps_stream::generator::COMPLAINTS);
    m.extend_from_slice(&nps_stream::generator::PRAISES);
    m
}

/// The customer data markers found in `logs`.
pub fn customer_data_in(logs: &str) -> Vec<&'static str> {
    customer_data_markers()
        .into_iter()
        .filter(|m| logs.contains(m))
        .collect()
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Every instance any test ran, at the default level (info): its
        // logs carry no customer id and no comment. Skipped while a test
        // is already failing, and when a test asked for debug logs.
        let info = std::env::var("NPS_TEST_LOG").is_err();
        if info && !std::thread::panicking() {
            let logs = self.logs();
            let found = customer_data_in(&logs);
            assert!(
                found.is_empty(),
                "customer data {found:?} in the logs ({}):\n{logs}",
                self.log_path.display()
            );
        }
    }
}

/// GET over a plain TCP connection; (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A parsed Prometheus text exposition.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let value: f64 = match value.parse() {
                Ok(v) => v,
                Err(_) => continue,
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((n, rest)) => (n.to_string(), parse_labels(rest.trim_end_matches('}'))),
            };
            samples.push((name, labels, value));
        }
        Metrics { samples }
    }

    /// The value of the series with exactly these labels (others ignored
    /// if not named).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
    }

    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
            .sum()
    }

    pub fn count(&self, name: &str) -> usize {
        self.samples.iter().filter(|(n, _, _)| n == name).count()
    }

    /// The label sets of every series named `name`.
    pub fn series(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, _)| l.clone())
            .collect()
    }

    /// The distinct series names.
    #[allow(dead_code)]
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.samples.iter().map(|(n, _, _)| n.clone()).collect()
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        rest = &after[end..];
    }
    out
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: BTreeMap<String, Vec<u8>>,
}

impl Record {
    pub fn header(&self, k: &str) -> Option<String> {
        self.headers
            .get(k)
            .map(|v| String::from_utf8_lossy(v).to_string())
    }
}

/// Reads every record of `topic` (all partitions, from the beginning)
/// until `expected` were read or `timeout` passed; then on to each
/// partition's end offset as the broker gives it at that moment, and a
/// further second, so that records beyond the expected count (a late
/// duplicate) are read too.
pub fn read_topic(brokers: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", rand_suffix()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let poll = |out: &mut Vec<Record>, next: &mut BTreeMap<i32, i64>| {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            next.insert(m.partition(), m.offset() + 1);
            out.push(Record::of(&m));
        }
    };
    let deadline = Instant::now() + timeout;
    while out.len() < expected && Instant::now() < deadline {
        poll(&mut out, &mut next);
    }
    let ends: Vec<(i32, i64, i64)> = (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            (p, low, high)
        })
        .collect();
    let to_end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < to_end
        && ends
            .iter()
            .any(|(p, low, high)| next.get(p).copied().unwrap_or(*low) < *high)
    {
        poll(&mut out, &mut next);
    }
    let linger = Instant::now() + Duration::from_secs(1);
    while Instant::now() < linger {
        poll(&mut out, &mut next);
    }
    out
}

impl Record {
    fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> Record {
        let mut headers = BTreeMap::new();
        if let Some(h) = m.headers() {
            for x in h.iter() {
                headers.insert(
                    x.key.to_string(),
                    x.value.map(<[u8]>::to_vec).unwrap_or_default(),
                );
            }
        }
        Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// A settings file (`--config`) holding `text`, in the temporary
/// directory.
pub fn settings_file(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("nps-settings-{}.toml", rand_suffix()));
    std::fs::write(&path, text).unwrap();
    path
}

/// An independent count's rows (JSON arrays: `labels` label values, then
/// a number), keyed by the label values.
pub fn oracle_rows(rows: &serde_json::Value, labels: usize) -> BTreeMap<Vec<String>, f64> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = r.as_array().unwrap();
            let key = r[..labels]
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            (key, r[labels].as_f64().unwrap())
        })
        .collect()
}

pub fn rand_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `send --generate`: `history` answers spread over the past, then a live
/// stream of `rate` a second until stopped; stderr piped (its summary),
/// stdout discarded.
pub fn generate_feed(brokers: &str, history: u32, rate: u32) -> Child {
    Command::new(BIN)
        .args([
            "send",
            "--brokers",
            brokers,
            "--generate",
            "--history",
            &history.to_string(),
            "--rate",
            &rate.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start send --generate")
}

/// The topics the cluster holds, from a metadata request for all topics
/// (which creates none).
pub fn topic_names(brokers: &str) -> std::collections::BTreeSet<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    c.fetch_metadata(None, Duration::from_secs(10))
        .unwrap()
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .collect()
}

/// A Tansu broker (memory storage) on 127.0.0.1, killed when dropped.
pub struct Tansu {
    pub child: Option<Child>,
    pub port: u16,
    log_path: std::path::PathBuf,
}

impl Tansu {
    pub fn start(port: u16) -> Tansu {
        Tansu::start_advertising(port, port)
    }

    /// A broker on `port` that tells clients to reach it on `advertised`
    /// (where a proxy in front of it listens).
    pub fn start_advertising(port: u16, advertised: u16) -> Tansu {
        let log_path = std::env::temp_dir().join(format!("nps-tansu-{port}-{}.log", rand_suffix()));
        let log = std::fs::File::create(&log_path).unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = format!("tcp://127.0.0.1:{advertised}");
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
                "--storage-engine",
                "memory://tansu/",
            ])
            // Its tracing goes to stdout (RUST_LOG picks what).
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        let t = Tansu {
            child: Some(child),
            port,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen:\n{}",
                t.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        t
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        run_ok(Command::new("tansu").args([
            "topic",
            "create",
            "--broker",
            &format!("tcp://127.0.0.1:{}", self.port),
            "--partitions",
            &partitions.to_string(),
            "--config",
            "retention.ms=604800000",
            name,
        ]));
    }

    /// Kills the broker process (SIGKILL): an outage.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Prometheus server scraping the given targets every second.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    dir: std::path::PathBuf,
}

impl Prometheus {
    pub fn start(targets: &[&str]) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("nps-prom-{}", rand_suffix()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let rules = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/prometheus/nps-rules.yml"
        );
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - '{rules}'\n\
             scrape_configs:\n  - job_name: nps-stream\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let p = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(&p.addr, "/-/ready").map(|(c, _)| c) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                p.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query; (labels, value) per series.
    pub fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let path = format!("/api/v1/query?query={}", urlencode(promql));
        let (code, body) = http_get(&self.addr, &path).expect("prometheus query");
        assert_eq!(code, 200, "{promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The harness' Python (a venv with confluent-kafka), from NPS_PYTHON.
pub fn python() -> Option<String> {
    match std::env::var("NPS_PYTHON") {
        Ok(p) if std::path::Path::new(&p).exists() => Some(p),
        _ => {
            if std::env::var("NPS_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!(
                    "NPS_PYTHON is not set to a Python with confluent-kafka; run bash tests/run-all.sh"
                );
            }
            eprintln!(
                "note: NPS_PYTHON not set, real-broker checks skipped (bash tests/run-all.sh sets it)"
            );
            None
        }
    }
}

const PY_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/kafka_client.py");

/// A topic's partition count and configs, as the broker describes them
/// to the independent Python client.
pub fn py_describe(python: &str, brokers: &str, topic: &str) -> serde_json::Value {
    let stdout = run_ok(Command::new(python).args([
        PY_CLIENT,
        "describe",
        "--brokers",
        brokers,
        "--topic",
        topic,
    ]));
    serde_json::from_str(stdout.trim()).unwrap()
}

/// Reads a topic with the independent Python client.
pub fn py_read(
    python: &str,
    brokers: &str,
    topic: &str,
    expect: usize,
    timeout_s: u64,
) -> Vec<serde_json::Value> {
    let stdout = run_ok(Command::new(python).args([
        PY_CLIENT,
        "read",
        "--brokers",
        brokers,
        "--topic",
        topic,
        "--expect",
        &expect.to_string(),
        "--timeout",
        &timeout_s.to_string(),
    ]));
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (key, value, headers) of a raw record.
pub type RawRecord = (Option<String>, Option<Vec<u8>>, Vec<(String, String)>);

/// Produces raw records with the independent Python client.
pub fn py_produce(python: &str, brokers: &str, topic: &str, records: &[RawRecord]) {
    use base64::Engine as _;
    let file = std::env::temp_dir().join(format!("nps-py-produce-{}.jsonl", rand_suffix()));
    let mut text = String::new();
    for (key, value, headers) in records {
        let headers: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
            .collect();
        let line = serde_json::json!({
            "key": key,
            "value_b64": value.as_ref().map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
            "headers": headers,
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(&file, text).unwrap();
    run_ok(Command::new(python).args([
        PY_CLIENT,
        "produce",
        "--brokers",
        brokers,
        "--topic",
        topic,
        "--file",
        file.to_str().unwrap(),
    ]));
    let _ = std::fs::remove_file(&file);
}

pub fn b64decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Committed offsets of `group` and end offsets, per input partition.
pub fn committed_and_end(
    brokers: &str,
    group: &str,
    partitions: i32,
) -> (Vec<Offset>, Vec<Offset>) {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition("survey-responses", p);
    }
    let committed = probe
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let mut c = Vec::new();
    let mut e = Vec::new();
    for p in 0..partitions {
        let (_, high) = probe
            .fetch_watermarks("survey-responses", p, Duration::from_secs(10))
            .unwrap();
        c.push(
            committed
                .find_partition("survey-responses", p)
                .unwrap()
                .offset(),
        );
        e.push(Offset::Offset(high));
    }
    (c, e)
}

/// Alert ids per response_id, from every alert on the topic.
pub fn alerts_by_response(brokers: &str, at_least: usize) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rec in read_topic(
        brokers,
        "nps-detractor-alerts",
        at_least,
        Duration::from_secs(30),
    ) {
        let a = nps_stream::pb::DetractorAlert::decode(rec.payload.as_deref().unwrap()).unwrap();
        out.entry(a.response_id).or_default().push(a.alert_id);
    }
    out
}

/// The sum of `topic`'s end offsets over its partitions: how many records
/// were ever written to it (topics the tests make are never compacted).
pub fn topic_end_total(brokers: &str, topic: &str) -> i64 {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let md = probe
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            probe
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .map_or(0, |(_, high)| high)
        })
        .sum()
}

/// An alert's id as README documents it, computed here rather than by the
/// crate: the 128-bit XXH3 of the response id, as 32 lowercase hex digits.
pub fn expected_alert_id(response_id: &str) -> String {
    format!(
        "{:032x}",
        xxhash_rust::xxh3::xxh3_128(response_id.as_bytes())
    )
}
