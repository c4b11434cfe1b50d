//! Before case tracking starts: the alerts and case-events topics must be
//! co-partitioned; the case-events and escalations topics are created
//! (as many partitions as the alerts topic) when missing.

use crate::config::Settings;
use crate::error::Error;
use crate::topics::{Admin, Missing};

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
    let config = crate::kafka::client_config(&settings.brokers, &[], &settings.kafka);
    let admin = Admin::new(&config, "the case tracker's admin client")?;
    let cases = &settings.cases;
    let Some(alerts) = admin.partitions(&settings.alerts_topic) else {
        return Ok(Ready::Waiting(format!(
            "the alerts topic {} does not exist yet",
            settings.alerts_topic
        )));
    };
    for topic in [&cases.case_events_topic, &cases.escalations_topic] {
        match admin.ensure(topic, alerts) {
            Ok(_) => {}
            Err(Missing::Waiting(why)) => return Ok(Ready::Waiting(why)),
            Err(Missing::Refused(reason)) => {
                return Err(Error::CasesTopic {
                    topic: topic.clone(),
                    partitions: alerts,
                    reason,
                });
            }
        }
    }
    match admin.partitions(&cases.case_events_topic) {
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
