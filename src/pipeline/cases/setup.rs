//! Before case tracking starts: the alerts and case-events topics must be
//! co-partitioned; the case-events and escalations topics are created
//! (as many partitions as the alerts topic) when missing.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Settings;
use crate::error::Error;
use crate::kafka::client_config;

/// What the brokers said.
pub(super) enum Ready {
    /// Both topics are there with this many partitions each.
    Partitions(i32),
    /// Not yet (the alerts topic does not exist yet, a topic creation timed
    /// out): ask again.
    Waiting(String),
}

/// Checks (and creates where missing) the topics case tracking uses.
/// Blocking: run it off the async task.
pub(super) fn prepare(settings: &Settings) -> Result<Ready, Error> {
    let client = |what| move |source| Error::Client { what, source };
    let config = client_config(&settings.brokers, &[], &settings.kafka);
    let meta: BaseConsumer = config
        .clone()
        .set("statistics.interval.ms", "0")
        .create()
        .map_err(client("the case tracker's metadata client"))?;
    let admin: AdminClient<DefaultClientContext> = config
        .clone()
        .set("statistics.interval.ms", "0")
        .create()
        .map_err(client("the case tracker's admin client"))?;
    let count = |topic: &str| partition_count(&meta, topic);
    let cases = &settings.cases;
    let Some(alerts) = count(&settings.alerts_topic) else {
        return Ok(Ready::Waiting(format!(
            "the alerts topic {} does not exist yet",
            settings.alerts_topic
        )));
    };
    for topic in [&cases.case_events_topic, &cases.escalations_topic] {
        if count(topic).is_none() {
            if let Err(reason) = create(&admin, topic, alerts)? {
                return Ok(Ready::Waiting(reason));
            }
            // Wait until the metadata shows it (brokers answer before it
            // is usable).
            for _ in 0..50 {
                if count(topic).is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    match count(&cases.case_events_topic) {
        Some(events) if events == alerts => Ok(Ready::Partitions(alerts)),
        Some(events) => Err(Error::CasesPartitions {
            alerts_topic: settings.alerts_topic.clone(),
            alerts,
            events_topic: cases.case_events_topic.clone(),
            events,
        }),
        None => Ok(Ready::Waiting(format!(
            "{} created but not visible yet",
            cases.case_events_topic
        ))),
    }
}

fn partition_count(meta: &BaseConsumer, topic: &str) -> Option<i32> {
    crate::kafka::partition_count(meta.client(), topic, Duration::from_secs(10))
}

/// Creates `topic` with the broker's default replication (then with one
/// replica, for brokers that want a number). Refused for lack of rights,
/// or for a reason no retry changes, it stops the start (the error names
/// the topic and `--cases off`); a request that timed out or failed on the
/// way is `Ok(Err(why))`: ask again.
fn create(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    partitions: i32,
) -> Result<Result<(), String>, Error> {
    let opts = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(10)))
        .operation_timeout(Some(Duration::from_secs(10)));
    let refused = |reason: String| Error::CasesTopic {
        topic: topic.to_string(),
        partitions,
        reason,
    };
    let mut last = String::new();
    for replication in [TopicReplication::Fixed(-1), TopicReplication::Fixed(1)] {
        let new = NewTopic::new(topic, partitions, replication);
        match futures::executor::block_on(admin.create_topics([&new], &opts)) {
            Ok(results) => match results.first() {
                Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
                    tracing::info!(topic, partitions, "case tracking topic created");
                    return Ok(Ok(()));
                }
                Some(Err((_, code @ RDKafkaErrorCode::TopicAuthorizationFailed)))
                | Some(Err((_, code @ RDKafkaErrorCode::ClusterAuthorizationFailed))) => {
                    return Err(refused(format!("{code}")));
                }
                Some(Err((_, code))) => last = format!("{code}"),
                None => last = "no answer".into(),
            },
            Err(e) => return Ok(Err(format!("creating {topic}: {e}"))),
        }
    }
    Err(refused(last))
}
