//! The engine's settings (`[engine]`) and why a setting is refused.

use std::time::Duration;

use serde::Deserialize;

use super::{LayoutError, snapshot};

/// The engine's settings. Deserialized from the `[engine]` table of the
/// config file; every field has a default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Window lengths, e.g. `["1h", "24h", "7d", "30d"]`.
    pub windows: Vec<String>,
    /// Buckets per window; the bucket width (and edge error) is W / buckets.
    pub buckets_per_window: u32,
    /// Most (product, region) segments kept; beyond it, `__other__`.
    pub max_keys: usize,
    /// How long (processing time) a response_id is remembered.
    #[serde(with = "humantime_serde")]
    pub dedup_horizon: Duration,
    /// Most response_ids remembered per partition (0 disables dedup).
    pub dedup_max_ids: usize,
    /// The snapshot format written: this build's (`FORMAT_VERSION`), or
    /// the one before it while some instances still run a release that
    /// reads only that (docs/operations.md, "Upgrading and rolling back").
    pub snapshot_format: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            windows: ["1h", "24h", "7d", "30d"].map(String::from).to_vec(),
            buckets_per_window: 48,
            max_keys: 10_000,
            dedup_horizon: Duration::from_secs(24 * 3600),
            dedup_max_ids: 1_000_000,
            snapshot_format: snapshot::FORMAT_VERSION,
        }
    }
}

mod humantime_serde {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Settings that are not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("windows: {0}")]
    Windows(#[from] LayoutError),
    #[error("dedup_horizon is too long")]
    DedupHorizon,
    #[error("max_keys must be below 16,777,215")]
    MaxKeys,
    #[error("dedup_max_ids must be at most 16,777,216 per partition")]
    DedupMaxIds,
    #[error(
        "snapshot_format must be {} or {}",
        snapshot::OLDEST_READ,
        snapshot::FORMAT_VERSION
    )]
    SnapshotFormat,
    #[error(
        "windows and dedup_horizon together span more than 2^32 of the windows' common bucket width; use bucket widths with a larger common divisor"
    )]
    WindowsTooFine,
}
