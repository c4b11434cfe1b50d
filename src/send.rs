//! `nps-stream send`: JSON lines (one SurveyResponse per line, protobuf JSON
//! mapping) in, protobuf records out, keyed by response_id so a resent
//! response lands on the same partition. Bad lines are reported with their
//! line number and skipped; the content is not validated (that is the
//! service's job), so this also serves to test dead-lettering.
//!
//! With `--case-events`, each line is a `CaseEvent` (what a CRM
//! integration writes to the case-events topic), validated here (an
//! integrator trying the contract wants to hear what is wrong at once),
//! keyed by customer_id (else alert_id) like the alert it is about.

use std::io::{BufRead, BufReader};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prost::Message;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::clock::{Clock, SystemClock};
use crate::config::SendArgs;
use crate::error::Error;
use crate::generator::Generator;
use crate::pb::SurveyResponse;

/// What a `send` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SendReport {
    pub sent: u64,
    pub bad_lines: u64,
    pub failed_deliveries: u64,
    /// Stopped early by SIGTERM or SIGINT (what was read was still
    /// flushed).
    pub interrupted: bool,
}

/// How long a stop by signal waits for the broker to take what is queued:
/// well inside Compose's and Kubernetes' grace periods.
const FLUSH_ON_SIGNAL: Duration = Duration::from_secs(10);

/// Set by the first SIGTERM or SIGINT: `send` stops reading, flushes and
/// exits. A second one exits at once (status 1), without flushing.
fn stop_on_signals() -> crate::error::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .map_err(Error::Signals)?;
        signal_hook::flag::register(sig, stop.clone()).map_err(Error::Signals)?;
    }
    Ok(stop)
}

impl SendReport {
    /// 0: everything sent; 1: some lines were skipped; 2: deliveries failed.
    pub fn exit_code(&self) -> ExitCode {
        if self.failed_deliveries > 0 {
            ExitCode::from(2)
        } else if self.bad_lines > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                tracing::warn!(error = %e, "delivery failed");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Parses one line; `None` for a blank line.
pub fn parse_line(line: &str) -> Option<Result<SurveyResponse, serde_json::Error>> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    Some(serde_json::from_str(line))
}

/// Parses and validates one case-event line at `now_ms`; `None` for a
/// blank line, else the record's key and protobuf value, or why the line
/// is refused (its reason and details, never its content).
pub fn parse_case_event_line(line: &str, now_ms: i64) -> Option<Result<(String, Vec<u8>), String>> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let limits = crate::schema::Limits::default();
    Some(
        crate::cases::event::decode_event(Some(line.as_bytes()), [], now_ms, &limits)
            .map(|(msg, _)| {
                let key = if msg.customer_id.is_empty() {
                    msg.alert_id.clone()
                } else {
                    msg.customer_id.clone()
                };
                (key, msg.encode_to_vec())
            })
            .map_err(|e| format!("{} ({e})", e.reason())),
    )
}

pub fn run(args: &SendArgs) -> crate::error::Result<SendReport> {
    let extra = crate::config::parse_properties(&args.kafka)?;
    let config = crate::kafka::client_config(
        &args.brokers,
        &[
            ("statistics.interval.ms", "0"),
            ("linger.ms", "20"),
            ("enable.idempotence", "true"),
        ],
        &extra,
    );
    let producer: ThreadedProducer<Deliveries> = config
        .create_with_context(Deliveries::default())
        .map_err(|source| Error::Client {
            what: "the Kafka producer",
            source,
        })?;

    let stop = stop_on_signals()?;
    let mut report = SendReport::default();
    if args.generate {
        generate(&producer, args, &stop)?;
    } else {
        send_lines(&producer, args, &mut report, &stop)?;
    }
    report.interrupted = stop.load(Ordering::Relaxed);
    let bound = if report.interrupted {
        eprintln!("stop requested: flushing what was read, then exiting");
        FLUSH_ON_SIGNAL
    } else {
        Duration::from_secs(60)
    };
    let flushed = producer.flush(bound);
    let ctx = producer.context();
    report.sent = ctx.ok.load(Ordering::Relaxed);
    report.failed_deliveries = ctx.failed.load(Ordering::Relaxed);
    if flushed.is_err() {
        // Whatever is still queued is lost with the process: count it.
        report.failed_deliveries += producer.in_flight_count().max(0) as u64;
    }
    eprintln!(
        "sent {} {} to {}; {} bad lines skipped; {} deliveries failed{}",
        report.sent,
        if args.case_events {
            "case events"
        } else {
            "responses"
        },
        args.destination(),
        report.bad_lines,
        report.failed_deliveries,
        if report.interrupted {
            "; stopped by signal"
        } else {
            ""
        }
    );
    Ok(report)
}

/// Produces one record, waiting while the local queue is full (unless a
/// stop is requested: the record is then not sent, and `Ok(false)` says
/// so).
fn produce(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    stop: &AtomicBool,
) -> Result<bool, KafkaError> {
    let mut record = BaseRecord::to(topic).payload(payload).key(key);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(true),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

fn send_lines(
    producer: &ThreadedProducer<Deliveries>,
    args: &SendArgs,
    report: &mut SendReport,
    stop: &AtomicBool,
) -> crate::error::Result<()> {
    let input: Box<dyn BufRead> = match &args.file {
        Some(p) if p.as_os_str() != "-" => Box::new(BufReader::new(
            std::fs::File::open(p).map_err(|source| Error::File {
                path: p.display().to_string(),
                source,
            })?,
        )),
        _ => Box::new(BufReader::new(std::io::stdin())),
    };
    for (n, line) in input.lines().enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let line = line.map_err(|source| Error::ReadLine {
            line: n + 1,
            source,
        })?;
        let parsed = if args.case_events {
            parse_case_event_line(&line, SystemClock.now_ms())
        } else {
            parse_line(&line).map(|r| {
                r.map(|m| (m.response_id.clone(), m.encode_to_vec()))
                    .map_err(|e| e.to_string())
            })
        };
        let (key, value) = match parsed {
            None => continue,
            Some(Ok(kv)) => kv,
            Some(Err(e)) => {
                eprintln!("line {}: skipped: {e}", n + 1);
                report.bad_lines += 1;
                continue;
            }
        };
        produce(producer, args.destination(), key.as_bytes(), &value, stop).map_err(|source| {
            Error::Produce {
                what: format!("line {}", n + 1),
                source,
            }
        })?;
    }
    Ok(())
}

fn generated(source: KafkaError) -> Error {
    Error::Produce {
        what: "a generated answer".into(),
        source,
    }
}

/// `--generate`: the history first, as fast as the broker takes it, then
/// live answers at `--rate` per second, paced in 50 ms steps.
fn generate(
    producer: &ThreadedProducer<Deliveries>,
    args: &SendArgs,
    stop: &AtomicBool,
) -> crate::error::Result<()> {
    let now_ms = || SystemClock.now_ms();
    // Ids unique to this run: a restarted producer must not send
    // duplicates of its earlier answers.
    let seed = now_ms() as u64;
    let mut answers = Generator::new(seed, format!("gen-{seed:x}"));
    let start = now_ms();
    for _ in 0..args.history {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (key, payload) = answers.history(start);
        produce(producer, &args.topic, key.as_bytes(), &payload, stop).map_err(generated)?;
    }
    eprintln!(
        "sent {} answers of the past 30 days; now {} per second",
        args.history, args.rate
    );
    let step = Duration::from_millis(50);
    let per_step = f64::from(args.rate) * step.as_secs_f64();
    let began = std::time::Instant::now();
    let mut sent = 0u64;
    let mut steps = 0u32;
    loop {
        steps += 1;
        // Due by the end of this step; rounding never drifts.
        let due = (per_step * f64::from(steps)) as u64;
        let due = args.count.map_or(due, |c| due.min(c));
        while sent < due {
            let (key, payload) = answers.live(now_ms());
            produce(producer, &args.topic, key.as_bytes(), &payload, stop).map_err(generated)?;
            sent += 1;
        }
        if args.count.is_some_and(|c| sent >= c) || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(wait) = (step * steps).checked_sub(began.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_the_protobuf_json_mapping() {
        let m = parse_line(r#"{"responseId":"r","score":0,"channel":"CHANNEL_WEB","respondedAt":"2025-01-01T00:00:00Z"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(m.score, Some(0));
        assert!(parse_line("   ").is_none());
        assert!(parse_line("{not json").unwrap().is_err());
        assert!(parse_line(r#"{"score":"high"}"#).unwrap().is_err());
    }

    /// Found by fuzzing: serde_json's default float parser can be one unit
    /// in the last place off, so a customer value was not the one written.
    #[test]
    fn numbers_are_read_exactly() {
        for v in [
            "2.1633602230511581e-75",
            "0.1",
            "1234.5678",
            "9.999999999999999e11",
        ] {
            let line =
                format!(r#"{{"responseId":"r","customerValue":{v},"channel":"CHANNEL_WEB"}}"#);
            let m = parse_line(&line).unwrap().unwrap();
            assert_eq!(m.customer_value, Some(v.parse::<f64>().unwrap()), "{v}");
        }
    }

    #[test]
    fn case_event_lines_carry_their_root_cause() {
        let id = crate::alerts::alert_id("r-1");
        let now = 1_767_225_600_000;
        for field in ["rootCause", "root_cause"] {
            let line = format!(
                r#"{{"alertId":"{id}","customerId":"c-1","state":"CASE_STATE_RESOLVED","occurredAt":"2025-12-31T23:00:00Z","outcome":"CASE_OUTCOME_RECOVERED","{field}":"billing_error"}}"#
            );
            let (key, bytes) = parse_case_event_line(&line, now).unwrap().unwrap();
            assert_eq!(key, "c-1");
            let back = <crate::pb::CaseEvent as Message>::decode(bytes.as_slice()).unwrap();
            assert_eq!(back.root_cause, "billing_error");
        }
        let long = "x".repeat(300);
        let line = format!(
            r#"{{"alertId":"{id}","state":"CASE_STATE_RESOLVED","occurredAt":"2025-12-31T23:00:00Z","rootCause":"{long}"}}"#
        );
        let refused = parse_case_event_line(&line, now).unwrap().unwrap_err();
        assert!(refused.starts_with("field_too_long"), "{refused}");
    }
}
