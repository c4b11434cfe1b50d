//! Before the first record: the state topic opened, the promoter topic
//! made sure of, the input consumer subscribed.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::Producer as _;

use crate::config::Settings;
use crate::kafka::{ConsumerCtx, Health, RenewableProducer, client_config};
use crate::pipeline::Rebalancer;
use crate::shutdown::Shutdown;
use crate::state::{StateConfig, StateStore};
use crate::topics::Missing;

/// Opens the state store, asking again until the brokers answer. None
/// when a shutdown came first.
pub(super) async fn open_store(
    settings: &Settings,
    health: &Arc<Health>,
    shutdown: &mut Shutdown,
) -> Option<Arc<StateStore>> {
    loop {
        // On a thread of its own (blocking requests), which a shutdown
        // does not wait for.
        let (tx, opening) = tokio::sync::oneshot::channel();
        {
            let (settings, health) = (settings.clone(), health.clone());
            std::thread::spawn(move || {
                let config = StateConfig {
                    brokers: &settings.brokers,
                    properties: &settings.kafka,
                    state_topic: &settings.state_topic,
                    input_topic: &settings.input_topic,
                    snapshot_max_bytes: settings.snapshot_max_bytes,
                };
                tx.send(StateStore::open(&config, health).map(Box::new))
            });
        }
        let opened = tokio::select! {
            _ = shutdown.recv() => return None,
            r = opening => r.unwrap_or(Err(crate::error::Error::StateTopicUnavailable {
                topic: settings.state_topic.clone(),
            })),
        };
        match opened {
            Ok(store) => return Some(Arc::<StateStore>::from(store)),
            Err(e) => {
                tracing::warn!(error = %e, "state topic not available yet; retrying");
                tokio::select! {
                    _ = shutdown.recv() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    }
}

/// Makes sure the promoter events topic exists (created, as many
/// partitions as the input, when missing), asking again while the brokers
/// cannot say; then keeps it there (see `watch_promoter_topic`). None
/// when a shutdown came first.
pub(super) async fn promoter_topic(
    settings: &Settings,
    producer: Arc<RenewableProducer>,
    mut shutdown: Shutdown,
) -> crate::error::Result<Option<TopicWatch>> {
    let mut warned = false;
    loop {
        // On a thread of its own (blocking requests), which a shutdown
        // does not wait for (the runtime would wait for spawn_blocking).
        let (tx, asking) = tokio::sync::oneshot::channel();
        let s = settings.clone();
        std::thread::spawn(move || {
            let config = client_config(&s.brokers, &[], &s.kafka);
            let ready = crate::topics::Admin::new(&config, "the promoter topic's admin client")
                .map(|admin| {
                    let partitions = admin.partitions(&s.input_topic).unwrap_or(1);
                    admin.ensure_any(&s.promoters.topic, partitions)
                });
            tx.send(ready)
        });
        let ready = tokio::select! {
            _ = shutdown.recv() => return Ok(None),
            r = asking => r.unwrap_or_else(|_| Ok(Err(Missing::Waiting("no answer".into()))))?,
        };
        let why = match ready {
            Ok(partitions) => {
                tracing::info!(topic = %settings.promoters.topic, partitions, "promoter events on");
                return Ok(Some(watch_promoter_topic(
                    settings.clone(),
                    producer,
                    partitions,
                )));
            }
            Err(Missing::Refused(reason)) => {
                return Err(crate::error::Error::PromoterTopic {
                    topic: settings.promoters.topic.clone(),
                    reason,
                });
            }
            Err(Missing::Waiting(why)) => why,
        };
        if !warned {
            tracing::warn!(reason = %why, "promoter events wait for their topic");
            warned = true;
        }
        tokio::select! {
            _ = shutdown.recv() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Keeps a topic nps-stream created while it runs; dropping it stops the
/// watching.
pub(super) struct TopicWatch(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

/// How often the promoter topic's presence is checked.
const TOPIC_CHECK: Duration = Duration::from_secs(10);

/// Creates the promoter topic again (as many partitions as before) when
/// the brokers no longer list it, as the state topic is: a broker back
/// without its data would otherwise fail every promoter event, and hold
/// back every later offset, until someone created it by hand. Checked
/// every 10 s, on a thread of its own (blocking requests), with the
/// pipeline's producer's client (a metadata request for every topic,
/// which creates none): clients of its own would hold about ten threads
/// and as many connections for a check that is almost always fine. The
/// admin client is made only when the topic is missing.
fn watch_promoter_topic(
    settings: Settings,
    producer: Arc<RenewableProducer>,
    partitions: i32,
) -> TopicWatch {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let topic = &settings.promoters.topic;
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(TOPIC_CHECK) {
            let listed = producer
                .get()
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|md| {
                    md.topics()
                        .iter()
                        .any(|t| t.name() == topic.as_str() && t.error().is_none())
                });
            // No answer (brokers away): nothing to say yet.
            if listed.unwrap_or(true) {
                continue;
            }
            tracing::warn!(topic = %topic, "promoter topic missing (a broker back without its data?): creating it again");
            let config = client_config(&settings.brokers, &[], &settings.kafka);
            let made = crate::topics::Admin::new(&config, "the promoter topic's admin client")
                .map(|admin| admin.ensure_any(topic, partitions));
            if !matches!(made, Ok(Ok(_))) {
                tracing::warn!(topic = %topic, "promoter topic not created yet; trying again");
            }
        }
    });
    TopicWatch(tx)
}

/// The input topic's consumer, subscribed.
pub(super) fn subscribed_consumer(
    settings: &Settings,
    health: &Arc<Health>,
    handler: &Arc<Rebalancer>,
) -> crate::error::Result<StreamConsumer<ConsumerCtx>> {
    let consumer: StreamConsumer<ConsumerCtx> = client_config(
        &settings.brokers,
        &[
            ("auto.offset.reset", settings.auto_offset_reset.as_str()),
            // librdkafka's default is 5 minutes: a group that formed while
            // the input topic was missing (created after nps-stream
            // started) would wait that long to notice it. One small
            // metadata request every 10 s.
            ("topic.metadata.refresh.interval.ms", "10000"),
        ],
        &settings.kafka,
    )
    // Owned by nps-stream: offsets are committed by the pipeline itself,
    // every second and on revoke and shutdown, only behind finished work.
    .set("group.id", &settings.group_id)
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .create_with_context(ConsumerCtx {
        health: health.clone(),
        input_topic: settings.input_topic.clone(),
        handler: handler.clone(),
    })
    .map_err(|source| crate::error::Error::Client {
        what: "the Kafka consumer",
        source,
    })?;
    consumer
        .subscribe(&[&settings.input_topic])
        .map_err(|source| crate::error::Error::Subscribe {
            topic: settings.input_topic.clone(),
            source,
        })?;
    Ok(consumer)
}
