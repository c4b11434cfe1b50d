//! One record through the pipeline: decoded and validated, counted by the
//! engine, its alert or dead letter sent; or replayed without either while
//! its partition restores.

use std::sync::{Mutex, RwLock};

use rdkafka::Offset;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};

use super::lock;
use crate::alerts;
use crate::clock::Clock;
use crate::config::Settings;
use crate::consumer::context::ConsumerCtx;
use crate::consumer::produce::{Delivery, Outbox};
use crate::engine::{AlertMark, Category, Counted, KeyId, MAX_BREAKDOWNS, Observation, Outcome};
use crate::events::{self, Event};
use crate::metrics::{self as m, View};
use crate::pipeline::{Core, Counters};
use crate::schema::{self, Rejection};
use crate::themes::{Taxonomy, ThemeSet};

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
pub(super) fn caught_up(core: &Mutex<Core>, consumer: &StreamConsumer<ConsumerCtx>) {
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
                .find_partition(&c.topic, **p)
                .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= r.until))
        })
        .map(|(p, _)| *p)
        .collect();
    for p in reached {
        c.restored(p);
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
) -> bool {
    let (partition, offset) = (msg.partition(), msg.offset());
    let mut c = lock(core);
    let Some(until) = c.restoring.get(&partition).map(|r| r.until) else {
        return false;
    };
    if offset >= until {
        c.restored(partition);
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
        let obs = observation(&response, settings, c.themes.as_ref());
        c.engine.record(partition, &obs, now);
    }
    metrics::counter!(m::STATE_REPLAYED_TOTAL).increment(1);
    c.positions.handled(partition, offset);
    c.ledger.read(partition, offset, None);
    if let Some(r) = c.restoring.get_mut(&partition) {
        r.replayed += 1;
    }
    if offset + 1 >= until {
        c.restored(partition);
    }
    true
}

/// What the engine counts of a response, with whether the alert rules
/// alert on it and the themes its comment mentions.
fn observation<'a>(
    response: &'a schema::ValidResponse,
    settings: &Settings,
    themes: Option<&Taxonomy>,
) -> Observation<'a> {
    let mut breakdowns = [None; MAX_BREAKDOWNS];
    for (value, b) in breakdowns.iter_mut().zip(&settings.breakdowns) {
        *value = response
            .msg
            .attributes
            .get(&b.attribute)
            .map(String::as_str);
    }
    Observation {
        alerting: settings.alerts.should_alert(response),
        themes: themes.map_or(ThemeSet(0), |t| t.classify(&response.msg.comment)),
        breakdowns,
        ..response.observation()
    }
}

/// The metrics every record moves, looked up in the exporter's registry
/// once (a lookup hashes the name and takes a lock: on every record it
/// showed in profiles).
pub(super) struct Handles {
    consumed: metrics::Counter,
    delay: metrics::Histogram,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            consumed: metrics::counter!(m::EVENTS_CONSUMED_TOTAL),
            delay: metrics::histogram!(m::END_TO_END_DELAY),
        }
    }
}

/// A record a response sends besides its windows.
enum Emit {
    Alert(Box<crate::pb::DetractorAlert>, KeyId),
    /// With its tier's index.
    Promoter(Box<crate::pb::PromoterEvent>, KeyId, usize),
}

/// Processes one record: engine, alert, promoter event or dead letter,
/// pending offset.
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
    stats.handles.consumed.increment(1);
    let headers = msg
        .headers()
        .into_iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value));
    // At most two records: a revision from promoter to detractor both
    // alerts and withdraws the promoter event.
    let mut deliveries: [Option<Delivery>; 2] = [None, None];
    let decoded = stats
        .decoder
        .decode_and_validate(msg.payload(), headers, now, &settings.limits);
    match decoded {
        Ok(response) => {
            // An error is a dead letter to send once the lock is let go.
            let emits = record(
                &response,
                partition,
                settings,
                core,
                view,
                &stats.handles,
                now,
            );
            match emits {
                Err(rejection) => {
                    stats.reject(&rejection);
                    deliveries[0] = Some(dead_letter(msg, &rejection, out, now).await);
                }
                Ok(emits) => {
                    for (slot, emit) in deliveries.iter_mut().zip(emits) {
                        if let Some(emit) = emit {
                            *slot = Some(send_emit(emit, out, view, stats).await);
                        }
                    }
                }
            }
            stats.decoder.recycle(response);
        }
        Err(rejection) => {
            stats.reject(&rejection);
            deliveries[0] = Some(dead_letter(msg, &rejection, out, now).await);
        }
    }
    let mut c = lock(core);
    c.positions.handled(partition, offset);
    let mut sent = deliveries.into_iter().flatten().peekable();
    if sent.peek().is_none() {
        c.ledger.read(partition, offset, None);
    }
    // Each delivery holds the offset back until it is acknowledged.
    for d in sent {
        c.ledger.read(partition, offset, Some(d));
    }
}

/// Counts a valid response in the engine and says what it sends: its
/// alert and its promoter event, or why it is refused.
fn record(
    response: &schema::ValidResponse,
    partition: i32,
    settings: &Settings,
    core: &Mutex<Core>,
    view: &RwLock<View>,
    handles: &Handles,
    now: i64,
) -> Result<[Option<Emit>; 2], Rejection> {
    let mut c = lock(core);
    let obs = observation(response, settings, c.themes.as_ref());
    let themes = obs.themes;
    let outcome = c.engine.record(partition, &obs, now);
    let (counted, mark, before) = match outcome {
        Outcome::Duplicate => {
            metrics::counter!(m::DUPLICATES_TOTAL).increment(1);
            return Ok([None, None]);
        }
        Outcome::Stale => {
            metrics::counter!(m::REVISIONS_STALE_TOTAL).increment(1);
            return Ok([None, None]);
        }
        Outcome::RevisionAfterHorizon => return Err(Rejection::RevisionAfterHorizon),
        Outcome::Counted(counted, mark) => {
            count_response(view, counted.key, response.channel, counted.category);
            let delay = (now - response.responded_at_ms).max(0) as f64 / 1000.0;
            handles.delay.record(delay);
            (counted, mark, None)
        }
        // `nps_responses_total` counts a response once, as its first
        // version came (a counter cannot move); the windows follow its
        // revisions.
        Outcome::Revised {
            counted,
            effects,
            alert,
            before,
            ..
        } => {
            for effect in effects.names() {
                metrics::counter!(m::REVISIONS_TOTAL, "effect" => effect).increment(1);
            }
            (counted, alert, Some(before))
        }
    };
    if counted.late {
        metrics::counter!(m::LATE_EVENTS_TOTAL).increment(1);
    }
    if counted.overflowed {
        metrics::counter!(m::CARDINALITY_OVERFLOW_TOTAL).increment(1);
    }
    for (i, b) in settings.breakdowns.iter().enumerate() {
        if counted.breakdowns_overflowed >> i & 1 == 1 {
            metrics::counter!(m::BREAKDOWN_OVERFLOW_TOTAL, "breakdown" => b.label.clone())
                .increment(1);
        }
    }
    Ok(emits(
        &mut c,
        response,
        (&counted, themes),
        mark,
        before,
        settings,
        now,
    ))
}

/// What a counted response sends: its alert (`mark`: the engine says it
/// alerts, and which version) and its promoter event (`before`: the
/// category of the version it revises), both with the themes its comment
/// mentions.
fn emits(
    c: &mut Core,
    response: &schema::ValidResponse,
    (counted, themes): (&Counted, ThemeSet),
    mark: Option<AlertMark>,
    before: Option<Category>,
    settings: &Settings,
    now: i64,
) -> [Option<Emit>; 2] {
    // Named only for what is sent.
    let names = || {
        c.themes
            .as_ref()
            .map(|t| t.names_of(themes))
            .unwrap_or_default()
    };
    let alert = mark.map(|mark| {
        let stats_now = c.engine.segment_stats(counted.key, now);
        let specs = c.engine.layout().specs();
        let windows: Vec<_> = specs.iter().zip(stats_now).collect();
        let context = alerts::Context {
            late: counted.late,
            mark,
            partitions_covered: c.owned.len() as u32,
            partitions_total: c.input_partitions,
            themes: names(),
            breakdowns: alerts::breakdown_values(
                response,
                (settings.breakdowns.iter()).map(|b| (b.label.as_str(), b.attribute.as_str())),
            ),
        };
        let alert = alerts::build(response, &windows, &context, now, &settings.alerts);
        Emit::Alert(Box::new(alert), counted.key)
    });
    let promoter = settings
        .promoters
        .enabled
        .then(|| crate::promoters::transition(counted.category, before))
        .flatten()
        .map(|withdrawn| {
            let (event, tier) = crate::promoters::build(
                response,
                &settings.promoters,
                (counted.late, withdrawn),
                names(),
                now,
            );
            Emit::Promoter(Box::new(event), counted.key, tier)
        });
    [alert, promoter]
}

/// Sends an alert or a promoter event through the registry, and counts
/// it in its segment.
async fn send_emit(
    emit: Emit,
    out: &Outbox<'_>,
    view: &RwLock<View>,
    stats: &mut Counters,
) -> Delivery {
    let output = match &emit {
        Emit::Alert(a, _) => out.outputs.emit(a.as_ref()),
        Emit::Promoter(e, _, _) => out.outputs.emit(e.as_ref()),
    };
    let delivery = out.output(output).await;
    match &emit {
        Emit::Alert(a, segment) => {
            if let Ok(v) = view.read() {
                v.series.count_alert(*segment, a.priority());
            }
            stats.alerts += 1;
        }
        Emit::Promoter(e, segment, tier) => {
            if let Ok(v) = view.read() {
                v.series.count_promoter(*segment, *tier, e.withdrawn);
            }
            if !e.withdrawn {
                stats.promoters += 1;
            }
        }
    }
    delivery
}

pub(super) async fn dead_letter(
    msg: &BorrowedMessage<'_>,
    rejection: &Rejection,
    out: &Outbox<'_>,
    now: i64,
) -> Delivery {
    events::Refused {
        partition: msg.partition(),
        offset: msg.offset(),
        rejection,
    }
    .emit();
    let reason = rejection.reason().as_str();
    let output = out
        .outputs
        .dead_letter(msg, reason, &rejection.to_string(), now);
    out.output(output).await
}
