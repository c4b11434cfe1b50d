//! One record through the pipeline: decoded and validated, counted by the
//! engine, its alert or dead letter sent; or replayed without either while
//! its partition restores.

use super::*;
use crate::engine::Observation;

/// Counts a response in its segment's `nps_responses_total`: under the
/// view's shared lock (the counters are atomics), or its exclusive one the
/// first time a segment id is seen.
pub(super) fn count_response(
    view: &RwLock<View>,
    key: KeyId,
    channel: crate::pb::Channel,
    category: Category,
) {
    let counted = view
        .read()
        .is_ok_and(|v| v.series.count_response(key, channel, category));
    if !counted && let Ok(mut v) = view.write() {
        v.series.grow(key.index() + 1);
        v.series.count_response(key, channel, category);
    }
}

/// Ends the restores whose partition's position reached its replay end
/// without a record at that offset (compacted, deleted or idle logs).
pub(super) fn caught_up(
    core: &Mutex<Core>,
    consumer: &StreamConsumer<ConsumerCtx>,
    health: &Health,
    topic: &str,
) {
    let mut c = lock(core);
    if c.restoring.is_empty() {
        return;
    }
    let Ok(positions) = consumer.position() else {
        return;
    };
    let reached: Vec<i32> = c
        .restoring
        .iter()
        .filter(|(p, r)| {
            positions
                .find_partition(topic, **p)
                .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= r.until))
        })
        .map(|(p, _)| *p)
        .collect();
    for p in reached {
        c.restored(p, health);
    }
}

/// Replays a record of a restoring partition into the windows, without
/// alerts or dead letters (a previous owner delivered them before it
/// committed). Returns false if the record is live and must be handled.
pub(super) fn replay(
    msg: &BorrowedMessage<'_>,
    settings: &Settings,
    clock: &dyn Clock,
    core: &Mutex<Core>,
    health: &Health,
) -> bool {
    let (partition, offset) = (msg.partition(), msg.offset());
    let mut c = lock(core);
    let Some(until) = c.restoring.get(&partition).map(|r| r.until) else {
        return false;
    };
    if offset >= until {
        c.restored(partition, health);
        return false;
    }
    let now = clock.now_ms();
    let headers = msg
        .headers()
        .into_iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value));
    if let Ok(response) = schema::decode_and_validate(msg.payload(), headers, now, &settings.limits)
    {
        c.engine
            .record(partition, &observation(&response, settings), now);
    }
    metrics::counter!(m::STATE_REPLAYED_TOTAL).increment(1);
    c.next.insert(partition, offset + 1);
    c.ledger.read(partition, offset, None);
    if let Some(r) = c.restoring.get_mut(&partition) {
        r.replayed += 1;
    }
    if offset + 1 >= until {
        c.restored(partition, health);
    }
    true
}

/// What the engine counts of a response, with whether the alert rules
/// alert on it.
fn observation<'a>(response: &'a schema::ValidResponse, settings: &Settings) -> Observation<'a> {
    Observation {
        alerting: settings.alerts.should_alert(response),
        ..response.observation()
    }
}

/// Processes one record: engine, alert or dead letter, pending offset.
pub(super) async fn handle(
    msg: &BorrowedMessage<'_>,
    settings: &Settings,
    clock: &dyn Clock,
    core: &Mutex<Core>,
    out: &Outbox<'_>,
    view: &RwLock<View>,
    stats: &mut Counters,
) {
    let now = clock.now_ms();
    let partition = msg.partition();
    let offset = msg.offset();
    stats.consumed += 1;
    metrics::counter!(m::EVENTS_CONSUMED_TOTAL).increment(1);
    let headers = msg
        .headers()
        .into_iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value));
    let delivery = match schema::decode_and_validate(msg.payload(), headers, now, &settings.limits)
    {
        Ok(response) => {
            // An error is a dead letter to send once the lock is let go.
            let alert: Result<_, Rejection> = 'engine: {
                let mut c = lock(core);
                let outcome = c
                    .engine
                    .record(partition, &observation(&response, settings), now);
                let (counted, mark) = match outcome {
                    Outcome::Duplicate => {
                        metrics::counter!(m::DUPLICATES_TOTAL).increment(1);
                        (None, None)
                    }
                    Outcome::Stale => {
                        metrics::counter!(m::REVISIONS_STALE_TOTAL).increment(1);
                        (None, None)
                    }
                    Outcome::RevisionAfterHorizon => {
                        break 'engine Err(Rejection::RevisionAfterHorizon);
                    }
                    Outcome::Counted(counted, mark) => {
                        count_response(view, counted.key, response.channel, counted.category);
                        let delay = (now - response.responded_at_ms).max(0) as f64 / 1000.0;
                        metrics::histogram!(m::END_TO_END_DELAY).record(delay);
                        (Some(counted), mark)
                    }
                    // `nps_responses_total` counts a response once, as its
                    // first version came (a counter cannot move); the
                    // windows follow its revisions.
                    Outcome::Revised {
                        counted,
                        effects,
                        alert,
                        ..
                    } => {
                        for effect in effects.names() {
                            metrics::counter!(m::REVISIONS_TOTAL, "effect" => effect).increment(1);
                        }
                        (Some(counted), alert)
                    }
                };
                if let Some(k) = counted {
                    if k.late {
                        metrics::counter!(m::LATE_EVENTS_TOTAL).increment(1);
                    }
                    if k.overflowed {
                        metrics::counter!(m::CARDINALITY_OVERFLOW_TOTAL).increment(1);
                    }
                }
                Ok(match (counted, mark) {
                    (Some(k), Some(mark)) => {
                        let stats_now = c.engine.segment_stats(k.key, now);
                        let specs = c.engine.layout().specs();
                        let windows: Vec<_> = specs.iter().zip(stats_now).collect();
                        let mut alert =
                            alerts::build(&response, &windows, k.late, now, &settings.alerts);
                        alert.revision = mark.revision;
                        alert.withdrawn = mark.withdrawn;
                        alert.partitions_covered = c.owned.len() as u32;
                        alert.partitions_total = c.input_partitions;
                        if mark.withdrawn {
                            alert.priority_reasons = vec!["withdrawn".into()];
                        }
                        Some((alert, k.key))
                    }
                    _ => None,
                })
            };
            match alert {
                Err(rejection) => {
                    stats.rejected += 1;
                    Some(dead_letter(msg, &rejection, settings, out, now).await)
                }
                Ok(None) => None,
                Ok(Some((alert, key))) => {
                    let (bytes, content_type) = alerts::encode(&alert, settings.alerts_format);
                    let headers = OwnedHeaders::new()
                        .insert(Header {
                            key: CONTENT_TYPE,
                            value: Some(content_type),
                        })
                        .insert(Header {
                            key: MESSAGE_TYPE_HEADER,
                            value: Some(MESSAGE_TYPE),
                        })
                        .insert(Header {
                            key: ALERT_ID_HEADER,
                            value: Some(alert.alert_id.as_str()),
                        });
                    let fut = send(
                        out,
                        &settings.alerts_topic,
                        Some(alerts::key(&alert).as_bytes()),
                        Some(&bytes),
                        headers,
                    )
                    .await;
                    if let Ok(v) = view.read() {
                        v.series.count_alert(key, alert.priority());
                    }
                    stats.alerts += 1;
                    Some(fut)
                }
            }
        }
        Err(rejection) => {
            stats.rejected += 1;
            Some(dead_letter(msg, &rejection, settings, out, now).await)
        }
    };
    {
        let mut c = lock(core);
        c.next.insert(partition, offset + 1);
        c.ledger.read(partition, offset, delivery);
    }
}

pub(super) async fn dead_letter(
    msg: &BorrowedMessage<'_>,
    rejection: &Rejection,
    settings: &Settings,
    out: &Outbox<'_>,
    now: i64,
) -> Delivery {
    events::Refused {
        partition: msg.partition(),
        offset: msg.offset(),
        rejection,
    }
    .emit();
    let headers = dlq_headers(
        msg,
        rejection.reason().as_str(),
        &rejection.to_string(),
        now,
    );
    send(out, &settings.dlq_topic, msg.key(), msg.payload(), headers).await
}

/// A dead letter's headers: the record's own, then why it was refused and
/// where it came from.
pub(super) fn dlq_headers(
    msg: &impl Message,
    reason: &str,
    detail: &str,
    now: i64,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(h) = msg.headers() {
        for header in h.iter() {
            headers = headers.insert(header);
        }
    }
    let (partition, offset, failed_at) = (
        msg.partition().to_string(),
        msg.offset().to_string(),
        now.to_string(),
    );
    headers
        .insert(Header {
            key: DLQ_REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: DLQ_ERROR,
            value: Some(detail),
        })
        .insert(Header {
            key: DLQ_TOPIC,
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: DLQ_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: DLQ_OFFSET,
            value: Some(offset.as_str()),
        })
        .insert(Header {
            key: DLQ_FAILED_AT,
            value: Some(failed_at.as_str()),
        })
}
