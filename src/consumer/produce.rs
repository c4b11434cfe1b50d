//! Sending what the cores emit (`outputs::Output`): waiting for room in
//! the producer's queue (never past a shutdown), asking after each
//! delivery, sending failed records again in their place, and records too
//! large for the broker sent without their value.

use std::time::Duration;

use futures::FutureExt;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::ledger::Step;
use super::outputs::{HEADERS_DROPPED, KEY_DROPPED, Output, Outputs, VALUE_DROPPED};
use crate::kafka::RenewableProducer;
use crate::shutdown::Shutdown;

/// A record handed to the producer, until the broker acknowledges it.
pub(crate) enum Delivery {
    InFlight(DeliveryFuture),
    /// Failed, or refused by the producer, and not yet accepted again:
    /// handed to it again at the next look, unless it is refusing
    /// (`RenewableProducer::refusing`).
    Retry(OwnedMessage),
}

impl Delivery {
    /// Where it stands: acknowledged, waiting, or failed and handed to
    /// the producer again (in its place: what it holds back stays held).
    pub(crate) fn step(&mut self, producer: &RenewableProducer) -> Step {
        match poll_delivery(self, producer) {
            Ack::Done => Step::Done,
            Ack::NotYet => Step::Waiting,
            Ack::Failed(msg, too_big) => {
                *self = send_again(producer, msg, too_big);
                Step::Retried
            }
        }
    }
}

enum Ack {
    /// Delivered.
    Done,
    /// Failed after librdkafka's own retries, or waiting to be sent again;
    /// the flag says it failed for its size.
    Failed(OwnedMessage, bool),
    NotYet,
}

fn poll_delivery(d: &mut Delivery, producer: &RenewableProducer) -> Ack {
    match d {
        Delivery::Retry(_) if producer.refusing() => Ack::NotYet,
        Delivery::Retry(msg) => Ack::Failed(msg.clone(), false),
        Delivery::InFlight(fut) => match fut.now_or_never() {
            None => Ack::NotYet,
            Some(Ok(Ok(_))) => Ack::Done,
            Some(Ok(Err((e, msg)))) => {
                tracing::debug!(error = %e, topic = msg.topic(), "delivery failed");
                Ack::Failed(msg, too_large(&e))
            }
            // The producer was dropped without failing it back: only at
            // shutdown; the offset stays uncommitted.
            Some(Err(_)) => Ack::NotYet,
        },
    }
}

/// Hands a failed record to the producer again (renewing it first if it
/// failed fatally); keeps it for the next turn if the producer refuses.
fn send_again(producer: &RenewableProducer, msg: OwnedMessage, too_big: bool) -> Delivery {
    producer.renew_if_fatal();
    // A record at its smallest that is still too large is kept as it is
    // and retried: it can only be a broker whose limit is below a few
    // hundred bytes.
    let msg = if too_big {
        shrink(&msg).unwrap_or(msg)
    } else {
        msg
    };
    match resend(producer, &msg) {
        Ok(f) => Delivery::InFlight(f),
        Err(e) => {
            tracing::debug!(error = %e, "resend refused, will retry");
            producer.refused();
            Delivery::Retry(msg)
        }
    }
}

/// A record too large for the broker, made smaller so that it can still
/// go out (a poison record must never stall its partition), one step at a
/// time, each marked by a header: first without its value
/// (`nps.value-dropped`), then without the record's own headers, keeping
/// nps-stream's (`nps.headers-dropped`), then without its key
/// (`nps.key-dropped`). `None` when there is nothing left to drop.
pub(crate) fn shrink(msg: &OwnedMessage) -> Option<OwnedMessage> {
    let ours = |h: &rdkafka::message::Header<'_, &[u8]>| h.key.starts_with("nps.");
    let headers = msg.headers().cloned().unwrap_or_else(OwnedHeaders::new);
    let has_foreign = headers.iter().any(|h| !ours(&h));
    let mark = |headers: OwnedHeaders, key: &str| {
        headers.insert(Header {
            key,
            value: Some("too_large"),
        })
    };
    let (payload, key, headers, what) = if msg.payload().is_some() {
        (None, msg.key(), mark(headers, VALUE_DROPPED), "its value")
    } else if has_foreign {
        let kept = headers
            .iter()
            .filter(|h| ours(h))
            .fold(OwnedHeaders::new(), |out, h| out.insert(h));
        (None, msg.key(), mark(kept, HEADERS_DROPPED), "its headers")
    } else if msg.key().is_some() {
        (None, None, mark(headers, KEY_DROPPED), "its key")
    } else {
        return None;
    };
    tracing::warn!(
        topic = msg.topic(),
        dropped = what,
        "record too large for the broker: sending it without {what}"
    );
    Some(OwnedMessage::new(
        payload,
        key.map(<[u8]>::to_vec),
        msg.topic().to_string(),
        msg.timestamp(),
        msg.partition(),
        msg.offset(),
        Some(headers),
    ))
}

fn resend(producer: &RenewableProducer, msg: &OwnedMessage) -> Result<DeliveryFuture, KafkaError> {
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(msg.topic());
    if let Some(k) = msg.key() {
        record = record.key(k);
    }
    if let Some(p) = msg.payload() {
        record = record.payload(p);
    }
    if let Some(h) = msg.headers() {
        record = record.headers(h.clone());
    }
    producer.get().send_result(record).map_err(|(e, _)| e)
}

/// Where records go out: the producer, and the shutdown signal that ends
/// any wait for it.
pub(crate) struct Outbox<'a> {
    pub(crate) producer: &'a RenewableProducer,
    pub(crate) stop: &'a Shutdown,
    /// Which topic each sink writes to, and how records are encoded.
    pub(crate) outputs: &'a Outputs,
}

/// Sends a record, waiting while the producer's local queue is full or
/// it refuses the record. Once shutdown is asked for it waits no more:
/// the record is kept as a delivery to retry, which holds its offset back
/// (uncommitted, so the next owner sends it), and the shutdown bound
/// holds whatever the broker does.
pub(crate) async fn send(
    out: &Outbox<'_>,
    topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    mut headers: OwnedHeaders,
) -> Delivery {
    let producer = out.producer;
    loop {
        if out.stop.is_shutdown() {
            tracing::debug!(
                topic,
                "shutdown: record kept unsent, its offset uncommitted"
            );
            return Delivery::Retry(owned(topic, key, payload, headers));
        }
        // The headers go with the record and come back with a refusal: no
        // copy on the common path.
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        let refused = match producer.get().send_result(record) {
            Ok(f) => return Delivery::InFlight(f),
            Err((e, back)) => {
                headers = back.headers.unwrap_or_else(OwnedHeaders::new);
                e
            }
        };
        match refused {
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            e if too_large(&e) => {
                if let Some(smaller) = shrink(&owned(topic, key, payload, headers.clone())) {
                    let headers = smaller.headers().cloned().unwrap_or_else(OwnedHeaders::new);
                    return Box::pin(send(out, topic, smaller.key(), smaller.payload(), headers))
                        .await;
                }
                tracing::warn!(topic, error = %e, "produce refused, retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            e => {
                // A producer in a fatal state is replaced, and the record
                // tried again at once. Any other refusal keeps the record
                // as a delivery to retry: its offset stays held back, never
                // dropped or skipped, and the loop reads on, so that one
                // topic refusing does not stop the partitions whose records
                // do not write to it.
                if !producer.renew_if_fatal() {
                    // Every record to a refusing topic is refused: said
                    // once a minute per kind.
                    if producer.should_log(&e) {
                        tracing::warn!(topic, error = %e, "produce refused, retrying");
                    } else {
                        tracing::debug!(topic, error = %e, "produce refused, retrying");
                    }
                    producer.refused();
                    return Delivery::Retry(owned(topic, key, payload, headers));
                }
            }
        }
    }
}

/// A record to send, owned: to keep for a retry, or to shrink.
fn owned(
    topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: OwnedHeaders,
) -> OwnedMessage {
    OwnedMessage::new(
        payload.map(<[u8]>::to_vec),
        key.map(<[u8]>::to_vec),
        topic.to_string(),
        rdkafka::Timestamp::NotAvailable,
        -1,
        -1,
        Some(headers),
    )
}

/// Whether a produce failed because the record exceeds a size limit
/// (`message.max.bytes`, or the topic's `max.message.bytes`).
fn too_large(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge)
    )
}

impl Outbox<'_> {
    /// Sends what a core emitted to its sink's topic (see `send`).
    pub(crate) async fn output(&self, output: Output) -> Delivery {
        send(
            self,
            self.outputs.topic(output.sink),
            output.key.as_deref(),
            output.value.as_deref(),
            output.headers,
        )
        .await
    }
}

/// Longest wait for the producer between two looks at what is left.
const FINISH_SLICE: Duration = Duration::from_millis(50);

/// Waits until `busy` says nothing is left, or until `deadline`; returns
/// whether something was still left. `busy` drains (asks after every
/// delivery, sends failed ones again) and says whether any is still on its
/// way. Between two calls the wait is librdkafka's flush, woken by the
/// broker's answers (not a polling loop), cut in slices of at most 50 ms
/// so that a failed delivery is sent again promptly. Blocking: from an
/// async task, run it through `crate::kafka::blocking`.
pub(crate) fn finish_until(
    deadline: std::time::Instant,
    producer: &RenewableProducer,
    mut busy: impl FnMut() -> bool,
) -> bool {
    loop {
        if !busy() {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return true;
        }
        let slice = (deadline - now).min(FINISH_SLICE);
        if producer.get().flush(slice).is_err() && std::time::Instant::now() < now + slice {
            // Flush refused at once (a fatal producer, renewed by the next
            // drain): no spinning until the deadline.
            std::thread::sleep(slice.min(Duration::from_millis(10)));
        }
    }
}

/// A loop's producer: idempotent (a record retried by librdkafka is
/// written once), batching for 5 ms. `reports`: its statistics feed
/// `health` (the pipeline's); the case tracker's producer reports none,
/// so that two producers never flip one readiness gauge.
pub(crate) fn producer(
    brokers: &str,
    properties: &std::collections::BTreeMap<String, String>,
    health: std::sync::Arc<crate::kafka::Health>,
    reports: bool,
    what: &'static str,
) -> crate::error::Result<std::sync::Arc<RenewableProducer>> {
    let mut config = crate::kafka::client_config(
        brokers,
        &[("enable.idempotence", "true"), ("linger.ms", "5")],
        properties,
    );
    if !reports {
        config.set("statistics.interval.ms", "0");
    }
    RenewableProducer::new(config, health)
        .map(std::sync::Arc::new)
        .map_err(|source| crate::error::Error::Client { what, source })
}
