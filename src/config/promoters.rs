//! Settings of promoter events: flags, variables and the `[promoters]`
//! table of the settings file (tiers and actions are in the file only).

use clap::Args;

use super::{ConfigError, Settings, check_topic, invalid, on_off};

/// Flags of `run` for promoter events (flattened into its flags).
#[derive(Debug, Clone, Default, Args)]
pub struct PromotersArgs {
    /// Promoter events: `on` (an event per accepted promoter, for referral
    /// and advocacy programmes) or `off` [default: on].
    #[arg(long, env = "NPS_PROMOTERS")]
    pub promoters: Option<String>,
    /// Topic promoter events go to, created when missing
    /// [default: nps-promoter-events].
    #[arg(long, env = "NPS_PROMOTER_TOPIC")]
    pub promoter_topic: Option<String>,
}

/// Overrides what the flags (or their variables) name.
pub(super) fn apply(s: &mut Settings, args: &PromotersArgs) -> Result<(), ConfigError> {
    if let Some(v) = &args.promoters {
        s.promoters.enabled = on_off("--promoters", v)?;
    }
    if let Some(v) = &args.promoter_topic {
        s.promoters.topic.clone_from(v);
    }
    Ok(())
}

/// The topic is a topic name of its own; tiers and actions make sense.
pub(super) fn validate(s: &mut Settings) -> Result<(), ConfigError> {
    check_topic("--promoter-topic", &s.promoters.topic)?;
    let taken = [
        &s.input_topic,
        &s.alerts_topic,
        &s.dlq_topic,
        &s.state_topic,
        &s.cases.case_events_topic,
        &s.cases.escalations_topic,
    ];
    if s.promoters.enabled && taken.contains(&&s.promoters.topic) {
        return Err(invalid(
            "--promoter-topic",
            format!("`{}` is another of nps-stream's topics", s.promoters.topic),
        ));
    }
    s.promoters
        .validate()
        .map_err(|reason| invalid("[promoters]", reason))
}
