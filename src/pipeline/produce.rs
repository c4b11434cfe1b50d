//! Sending alerts and dead letters: waiting for room in the producer's
//! queue (never past a shutdown), sending failed records again, and
//! records too large for the broker sent without their value.

use std::time::Duration;

use futures::FutureExt;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::consumer::ledger::Step;
use crate::events::{self, Event};
use crate::kafka::RenewableProducer;
use crate::pipeline::{CONTENT_TYPE, Core, Delivery, MESSAGE_TYPE_HEADER};
use crate::shutdown::Shutdown;

pub(super) enum Ack {
    /// Delivered.
    Done,
    /// Failed after librdkafka's own retries, or waiting to be sent again;
    /// the flag says it failed for its size.
    Failed(OwnedMessage, bool),
    NotYet,
}

pub(super) fn poll_delivery(d: &mut Delivery) -> Ack {
    match d {
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
pub(super) fn send_again(
    producer: &RenewableProducer,
    msg: OwnedMessage,
    too_big: bool,
) -> Delivery {
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
pub(super) fn shrink(msg: &OwnedMessage) -> Option<OwnedMessage> {
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

pub(super) fn resend(
    producer: &RenewableProducer,
    msg: &OwnedMessage,
) -> Result<DeliveryFuture, KafkaError> {
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
pub(super) struct Outbox<'a> {
    pub(super) producer: &'a RenewableProducer,
    pub(super) stop: &'a Shutdown,
}

/// Sends a record, waiting while the producer's local queue is full or
/// it refuses the record. Once shutdown is asked for it waits no more:
/// the record is kept as a delivery to retry, which holds its offset back
/// (uncommitted, so the next owner sends it), and the shutdown bound
/// holds whatever the broker does.
pub(super) async fn send(
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
                // A producer in a fatal state is replaced; anything else is
                // a local problem: wait and try again, never drop or skip.
                if !producer.renew_if_fatal() {
                    tracing::warn!(topic, error = %e, "produce refused, retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
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
pub(super) fn too_large(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge)
    )
}

/// Headers saying what of a record too large for the broker was dropped
/// so that it could go out.
pub const VALUE_DROPPED: &str = "nps.value-dropped";
pub const HEADERS_DROPPED: &str = "nps.headers-dropped";
pub const KEY_DROPPED: &str = "nps.key-dropped";

impl Core {
    /// Asks after every pending delivery (acknowledged, failed, waiting),
    /// sends failed ones again in their place, and lets the ledger move
    /// the committable offsets. Returns the partitions whose committable
    /// offset moved.
    pub(super) fn drain(&mut self, producer: &RenewableProducer) -> Vec<(i32, i64)> {
        let drained = self.ledger.drain(|delivery| match poll_delivery(delivery) {
            Ack::Done => Step::Done,
            Ack::NotYet => Step::Waiting,
            Ack::Failed(msg, too_big) => {
                *delivery = send_again(producer, msg, too_big);
                Step::Retried
            }
        });
        events::DeliveriesRetried {
            count: drained.retried,
        }
        .emit();
        drained.moved
    }
}

/// The headers of a record nps-stream emits: its content type, its
/// message type and its id (`nps.alert-id` or `nps.event-id`).
pub(crate) fn emitted_headers(
    content_type: &str,
    message_type: &str,
    id: (&str, &str),
) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: CONTENT_TYPE,
            value: Some(content_type),
        })
        .insert(Header {
            key: MESSAGE_TYPE_HEADER,
            value: Some(message_type),
        })
        .insert(Header {
            key: id.0,
            value: Some(id.1),
        })
}
