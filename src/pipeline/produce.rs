//! Sending alerts and dead letters: waiting for room in the producer's
//! queue (never past a shutdown), sending failed records again, and
//! records too large for the broker sent without their value.

use super::*;

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
    let msg = if too_big { without_value(msg) } else { msg };
    match resend(producer, &msg) {
        Ok(f) => Delivery::InFlight(f),
        Err(e) => {
            tracing::debug!(error = %e, "resend refused, will retry");
            Delivery::Retry(msg)
        }
    }
}

/// The record without its value, marked as such (see `send_without_value`).
pub(super) fn without_value(msg: OwnedMessage) -> OwnedMessage {
    tracing::warn!(
        topic = msg.topic(),
        "record too large for the broker: sending it without its value"
    );
    let headers = msg
        .headers()
        .cloned()
        .unwrap_or_else(OwnedHeaders::new)
        .insert(Header {
            key: VALUE_DROPPED,
            value: Some("too_large"),
        });
    OwnedMessage::new(
        None,
        msg.key().map(<[u8]>::to_vec),
        msg.topic().to_string(),
        msg.timestamp(),
        msg.partition(),
        msg.offset(),
        Some(headers),
    )
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
    headers: OwnedHeaders,
) -> Delivery {
    let producer = out.producer;
    loop {
        if out.stop.is_shutdown() {
            tracing::debug!(
                topic,
                "shutdown: record kept unsent, its offset uncommitted"
            );
            return Delivery::Retry(OwnedMessage::new(
                payload.map(<[u8]>::to_vec),
                key.map(<[u8]>::to_vec),
                topic.to_string(),
                rdkafka::Timestamp::NotAvailable,
                -1,
                -1,
                Some(headers),
            ));
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(headers.clone());
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        match producer.get().send_result(record) {
            Ok(f) => return Delivery::InFlight(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((e, _)) if too_large(&e) && payload.is_some() => {
                tracing::warn!(
                    topic,
                    "record too large for the producer: sending it without its value"
                );
                return send_without_value(out, topic, key, headers).await;
            }
            Err((e, _)) => {
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

/// Whether a produce failed because the record exceeds a size limit
/// (`message.max.bytes`, or the topic's `max.message.bytes`).
pub(super) fn too_large(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge)
    )
}

/// Header saying a record's value was dropped because it was too large.
pub const VALUE_DROPPED: &str = "nps.value-dropped";

/// A record whose value cannot be delivered (too large) still goes out,
/// without it and with a header saying so: a poison record must never stall
/// its partition.
pub(super) async fn send_without_value(
    out: &Outbox<'_>,
    topic: &str,
    key: Option<&[u8]>,
    headers: OwnedHeaders,
) -> Delivery {
    let headers = headers.insert(Header {
        key: VALUE_DROPPED,
        value: Some("too_large"),
    });
    Box::pin(send(out, topic, key, None, headers)).await
}

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
