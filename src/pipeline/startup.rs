//! Before the first record: the state topic opened, the output topics
//! created like the input made sure of and watched, the input consumer
//! subscribed.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::Producer as _;

use crate::config::Settings;
use crate::consumer::context::{ConsumerCtx, Recipe, subscribe};
use crate::consumer::holds::Holds;
use crate::consumer::outputs::{Creation, Outputs};
use crate::consumer::produce::producer;
use crate::consumer::ready::{Ready, open_store, wait_until_ready};
use crate::events::Event;
use crate::kafka::{Health, RenewableProducer, client_config};
use crate::pipeline::Rebalancer;
use crate::shutdown::Shutdown;
use crate::state::StateStore;
use crate::topics::Missing;

/// What the pipeline starts with: its producer, the state store, and the
/// watch over the output topics it created (held while it runs). None
/// when a shutdown came first.
pub(super) async fn prepare(
    settings: &Settings,
    health: &Arc<Health>,
    shutdown: &mut Shutdown,
) -> crate::error::Result<Option<(Arc<RenewableProducer>, Arc<StateStore>, Option<TopicWatch>)>> {
    let producer = producer(
        &settings.brokers,
        &settings.kafka,
        health.clone(),
        true,
        "the Kafka producer",
    )?;

    // Beside the state topic's opening: both may wait for a broker's answer.
    let outputs_ready = {
        let (settings, shutdown) = (settings.clone(), shutdown.clone());
        let producer = producer.clone();
        tokio::spawn(async move { output_topics(&settings, producer, shutdown).await })
    };
    let opened = open_store(settings, &settings.input_topic, health, shutdown);
    let Some(store) = opened.await else {
        return Ok(None);
    };
    check_input_retention(settings);

    // Held while the pipeline runs: the output topics' watch.
    let output_watch = match outputs_ready.await {
        Ok(Ok(Some(watch))) => Some(watch),
        Ok(Ok(None)) => return Ok(None),
        Ok(Err(e)) => return Err(e),
        // Only a panic: the process is ending.
        Err(e) => {
            tracing::error!(error = %e, "preparing the output topics failed");
            None
        }
    };
    Ok(Some((producer, store, output_watch)))
}

/// Makes sure the output topics created like the input
/// (`Creation::LikeInput`: the promoter events topic, when on) exist,
/// created with as many partitions as the input when missing, asking again
/// while the brokers cannot say; then keeps them there (see
/// `watch_topics`). None when a shutdown came first.
pub(super) async fn output_topics(
    settings: &Settings,
    producer: Arc<RenewableProducer>,
    mut shutdown: Shutdown,
) -> crate::error::Result<Option<TopicWatch>> {
    let outputs = Outputs::new(settings);
    let topics: Vec<(&'static str, String)> = outputs
        .created(Creation::LikeInput)
        .map(|(name, topic)| (name, topic.to_string()))
        .collect();
    let mut made = Vec::new();
    for (name, topic) in topics {
        let s = settings.clone();
        let wanted = topic.clone();
        let ready = wait_until_ready(name, &mut shutdown, move || {
            let config = client_config(&s.brokers, &[], &s.kafka);
            let admin = crate::topics::Admin::new(&config, "the output topics' admin client")
                .map_err(|e| e.to_string());
            let partitions = match admin {
                Ok(admin) => {
                    let partitions = admin.partitions(&s.input_topic).unwrap_or(1);
                    admin.ensure_any(&wanted, partitions)
                }
                Err(e) => Err(Missing::Waiting(e)),
            };
            match partitions {
                Ok(n) => Ok(Ready::Yes(n)),
                Err(Missing::Waiting(why)) => Ok(Ready::Waiting(why)),
                Err(Missing::Refused(reason)) => Err(reason),
            }
        });
        match ready.await {
            Ok(Some(partitions)) => {
                tracing::info!(topic = %topic, partitions, "{name} topic ready");
                made.push((name, topic, partitions));
            }
            Ok(None) => return Ok(None),
            Err(reason) => return Err(crate::error::Error::PromoterTopic { topic, reason }),
        }
    }
    Ok(Some(watch_topics(settings.clone(), producer, made)))
}

/// Keeps a topic nps-stream created while it runs; dropping it stops the
/// watching.
pub(super) struct TopicWatch(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

/// How often the watched topics' presence is checked.
const TOPIC_CHECK: Duration = Duration::from_secs(10);

/// Creates each watched topic again (as many partitions as before) when
/// the brokers no longer list it, as the state topic is: a broker back
/// without its data would otherwise fail every record sent to it, and
/// hold back every later offset, until someone created it by hand.
/// Checked every 10 s, on a thread of its own (blocking requests), with
/// the pipeline's producer's client (a metadata request for every topic,
/// which creates none): clients of its own would hold about ten threads
/// and as many connections for a check that is almost always fine. The
/// admin client is made only when a topic is missing.
fn watch_topics(
    settings: Settings,
    producer: Arc<RenewableProducer>,
    topics: Vec<(&'static str, String, i32)>,
) -> TopicWatch {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    if topics.is_empty() {
        return TopicWatch(tx);
    }
    std::thread::spawn(move || {
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(TOPIC_CHECK) {
            let Ok(md) = producer
                .get()
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
            else {
                // No answer (brokers away): nothing to say yet.
                continue;
            };
            for (name, topic, partitions) in &topics {
                let listed = md
                    .topics()
                    .iter()
                    .any(|t| t.name() == topic.as_str() && t.error().is_none());
                if listed {
                    continue;
                }
                tracing::warn!(topic = %topic, "{name} topic missing (a broker back without its data?): creating it again");
                let config = client_config(&settings.brokers, &[], &settings.kafka);
                let made = crate::topics::Admin::new(&config, "the output topics' admin client")
                    .map(|admin| admin.ensure_any(topic, *partitions));
                if !matches!(made, Ok(Ok(_))) {
                    tracing::warn!(topic = %topic, "{name} topic not created yet; trying again");
                }
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
    holds: &Holds,
) -> crate::error::Result<StreamConsumer<ConsumerCtx>> {
    let recipe = Recipe {
        brokers: &settings.brokers,
        properties: &settings.kafka,
        group: &settings.group_id,
        topics: &[&settings.input_topic],
        reset: settings.auto_offset_reset,
        co_partitioned: false,
        reports: true,
        what: "the Kafka consumer",
        beat: health
            .heartbeats
            .beat("pipeline", std::time::Instant::now()),
        defaults: &[],
    };
    subscribe(&recipe, health.clone(), handler.clone(), holds.clone())
}

/// Checks, on a thread of its own and once, that the input topic keeps
/// its records at least as long as the longest window
/// (`events::InputRetention`): a partition without a usable snapshot is
/// rebuilt from the input, and a shorter retention leaves its longest
/// windows short without a word otherwise.
fn check_input_retention(settings: &Settings) {
    let engine = &settings.engine;
    let Ok(layout) = crate::engine::WindowLayout::new(&engine.windows, engine.buckets_per_window)
    else {
        return;
    };
    let longest = layout.longest();
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let config = client_config(&settings.brokers, &[], &settings.kafka);
        let retention = crate::topics::Admin::new(&config, "the retention check's admin client")
            .map_err(|e| e.to_string())
            .and_then(|admin| admin.retention(&settings.input_topic));
        crate::events::InputRetention {
            topic: &settings.input_topic,
            retention,
            longest,
        }
        .emit();
    });
}
