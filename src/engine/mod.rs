//! The NPS engine: rolling-window NPS per segment (product × region), pure
//! and deterministic.
//!
//! Owns the windows, the dedup horizon, the cardinality guard and the
//! snapshots. It never reads a clock, never does I/O and knows nothing of
//! Kafka or metrics: time comes in as `now` (Unix ms) on every call and
//! results come out as values (`Outcome`, `SegmentStats`, `SweepReport`) for
//! the async shell to turn into metrics, alerts and commits.
//!
//! State is kept per source partition and merged when read, so that one
//! partition can be dropped or restored on its own when Kafka moves it.
//! The engine's `now` never goes backwards: a clock that steps back is
//! treated as standing still.

mod alert_stats;
mod breakdowns;
mod config;
mod content;
mod dedup;
mod keys;
mod nps;
mod segments;
pub mod snapshot;
mod themes;
mod trend;
mod window;

use std::collections::BTreeMap;

pub use breakdowns::{
    BreakdownSpec, INVALID, MAX_BREAKDOWNS, MAX_VALUE_BYTES, MAX_VALUES, OTHER_VALUE, UNKNOWN,
    ValueStats, value_of,
};
pub use config::{ConfigError, EngineConfig};
pub(crate) use content::FieldHasher;
pub use dedup::id_hash;
pub use keys::{KeyId, OTHER};
pub use nps::{Category, WindowStats};
pub use snapshot::{FORMAT_VERSION, OLDEST_READ, SnapshotError};
pub use themes::{COMMENTED, ThemeStats};
pub use trend::TrendPoint;
pub use window::{LayoutError, WindowLayout, WindowSpec};

use crate::themes::ThemeSet;
use breakdowns::{Breakdowns, Values};
use dedup::Dedup;
use keys::KeyTable;
use segments::SegmentMap;
use themes::ThemeTotals;
use window::{NowIndex, RowSet, Segment};

/// A response as the engine needs it: already validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation<'a> {
    pub response_id: &'a str,
    pub product: &'a str,
    pub region: &'a str,
    pub category: Category,
    /// Event time, Unix ms.
    pub responded_at_ms: i64,
    /// customer_value, or 1 when absent.
    pub weight: f64,
    pub score: u8,
    /// `updated_at` (None: the first version).
    pub updated_at_ms: Option<i64>,
    /// Tells a duplicate from a revision (`schema::content_hash`).
    pub content: u32,
    /// Of the comment alone (`schema::comment_hash`): 0 without one.
    pub comment: u8,
    /// The themes the comment mentions.
    pub themes: ThemeSet,
    /// The caller's alert rules would alert on this version.
    pub alerting: bool,
    /// The attribute of each breakdown (`Engine::set_breakdowns`), in
    /// order: `None` when the answer lacks it.
    pub breakdowns: [Option<&'a str>; MAX_BREAKDOWNS],
}

impl<'a> Observation<'a> {
    /// A first version with these fields, its content hashed from them:
    /// for benches, tests and tools that build observations by hand.
    pub fn new(
        response_id: &'a str,
        product: &'a str,
        region: &'a str,
        score: u32,
        responded_at_ms: i64,
        weight: f64,
    ) -> Self {
        let mut h = FieldHasher::default();
        h.field(product.as_bytes());
        h.field(region.as_bytes());
        h.field(&score.to_le_bytes());
        h.field(&responded_at_ms.to_le_bytes());
        h.field(&weight.to_bits().to_le_bytes());
        Observation {
            response_id,
            product,
            region,
            category: Category::of_score(score),
            responded_at_ms,
            weight,
            score: score.min(10) as u8,
            updated_at_ms: None,
            content: h.digest() as u32,
            comment: 0,
            themes: ThemeSet(0),
            alerting: score <= 6,
            breakdowns: [None; MAX_BREAKDOWNS],
        }
    }
}

/// Where a response (or a revision of it) was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// The segment it was counted under (`__other__` on overflow).
    pub key: KeyId,
    pub category: Category,
    /// Older than every window at arrival: in no window.
    pub late: bool,
    /// The table was full: counted under `__other__`.
    pub overflowed: bool,
    /// The breakdowns whose value table was full (bit i: breakdown i):
    /// counted under `other` there.
    pub breakdowns_overflowed: u8,
}

/// An alert record to send for this version: its revision number (0 for
/// the response's first alert) and whether it withdraws the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlertMark {
    pub revision: u32,
    pub withdrawn: bool,
}

/// What a revision changed (several at once, as bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects(pub u8);

impl Effects {
    pub const COMMENT: u8 = 1;
    pub const SCORE: u8 = 2;
    pub const SEGMENT: u8 = 4;
    pub const EVENT_TIME: u8 = 8;
    pub const WEIGHT: u8 = 16;
    /// None of the above (the channel, customer, attributes...).
    pub const OTHER: u8 = 32;
    /// Label values, in bit order.
    pub const NAMES: [&'static str; 6] = [
        "comment",
        "score",
        "segment",
        "event_time",
        "weight",
        "other",
    ];

    fn between(old: &dedup::Version, new: &dedup::Version, grain: i64) -> Effects {
        let mut e = 0;
        let set = |e: &mut u8, bit: u8, changed: bool| {
            if changed {
                *e |= bit;
            }
        };
        set(&mut e, Self::COMMENT, old.comment != new.comment);
        set(&mut e, Self::SCORE, old.score != new.score);
        set(&mut e, Self::SEGMENT, old.key != new.key);
        set(
            &mut e,
            Self::EVENT_TIME,
            old.t_ms.div_euclid(grain) != new.t_ms.div_euclid(grain),
        );
        set(
            &mut e,
            Self::WEIGHT,
            old.weight.to_bits() != new.weight.to_bits(),
        );
        if e == 0 {
            e = Self::OTHER;
        }
        Effects(e)
    }

    /// The label values of the effects present.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| n)
    }
}

/// What recording one response did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new response: counted in the windows (or only in all-time
    /// totals when `late`), with its first alert when it alerts.
    Counted(Counted, Option<AlertMark>),
    /// A revision: the previous version's contribution taken back (from
    /// the windows that still held it) and this one counted instead.
    Revised {
        counted: Counted,
        /// The previous version's category and segment.
        before: Category,
        before_key: KeyId,
        effects: Effects,
        alert: Option<AlertMark>,
    },
    /// Its response_id was seen within the dedup horizon with the same
    /// content: nothing changed.
    Duplicate,
    /// An older version (by updated_at) than the one counted: nothing
    /// changed.
    Stale,
    /// A revision (it has updated_at) of a response not remembered: its
    /// first version left the dedup horizon (or never came), so it cannot
    /// replace it exactly. Nothing changed; the caller dead-letters it.
    RevisionAfterHorizon,
}

/// One segment's windows, merged over all partitions.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentStats<'a> {
    pub key: KeyId,
    pub product: &'a str,
    pub region: &'a str,
    /// One per window, in layout order.
    pub windows: Vec<WindowStats>,
}

/// What a sweep removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepReport {
    /// Per-partition segment states that left every window.
    pub segments_expired: usize,
    /// Segments gone from the table: (product, region).
    pub keys_removed: Vec<(String, String)>,
}

/// Sizes, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineGauges {
    pub keys: usize,
    pub segment_states: usize,
    pub dedup_ids: usize,
    pub dedup_evicted_early: u64,
    pub partitions: usize,
    /// Heap bytes estimated from the data structures' sizes.
    pub heap_bytes: usize,
}

#[derive(Clone)]
struct PartitionState {
    segments: SegmentMap,
    dedup: Dedup,
    /// Per breakdown, its values' windows.
    breakdowns: Vec<SegmentMap>,
}

impl PartitionState {
    /// An empty state, with `breakdowns`' maps.
    fn new(horizon_ms: i64, max_ids: usize, time: dedup::TimeCode, b: &Breakdowns) -> Self {
        let maps = b.maps();
        PartitionState {
            segments: SegmentMap::default(),
            dedup: Dedup::new(horizon_ms, max_ids, time, !maps.is_empty()),
            breakdowns: maps,
        }
    }
}

/// The engine. See the module doc.
#[derive(Clone)]
pub struct Engine {
    layout: WindowLayout,
    dedup_horizon_ms: i64,
    dedup_max_ids: usize,
    /// The snapshot format written (`EngineConfig::snapshot_format`).
    snapshot_format: u32,
    /// How remembered versions keep event times (from the layout).
    time: dedup::TimeCode,
    keys: KeyTable,
    partitions: BTreeMap<i32, PartitionState>,
    /// High-water mark of the `now` values seen.
    now_ms: i64,
    /// `now_ms`'s bucket numbers, recomputed when the clock moves.
    now_index: NowIndex,
    /// Alerts' window figures, kept between alerts.
    alert_stats: alert_stats::AlertStats,
    /// Theme names by number (`set_themes`), for snapshots.
    themes: Vec<String>,
    /// Whether theme rows are counted (`set_themes` was called).
    counting_themes: bool,
    /// The theme rows merged over partitions (see `themes`).
    theme_totals: ThemeTotals,
    /// The breakdowns counted (`set_breakdowns`) and their values.
    breakdowns: Breakdowns,
}

impl Engine {
    pub fn new(config: &EngineConfig) -> Result<Self, ConfigError> {
        let layout = WindowLayout::new(&config.windows, config.buckets_per_window)?;
        let dedup_horizon_ms = i64::try_from(config.dedup_horizon.as_millis())
            .map_err(|_| ConfigError::DedupHorizon)?;
        if config.max_keys >= dedup::MAX_KEY as usize {
            return Err(ConfigError::MaxKeys);
        }
        if config.dedup_max_ids > dedup::MAX_IDS {
            return Err(ConfigError::DedupMaxIds);
        }
        if !snapshot::readable(config.snapshot_format) {
            return Err(ConfigError::SnapshotFormat);
        }
        // A remembered version keeps its event time in 32 bits of grains,
        // from the longest window before first sight to a horizon after.
        let longest = layout
            .specs()
            .iter()
            .map(|s| s.length_ms)
            .max()
            .unwrap_or(0);
        let time = dedup::TimeCode::new(layout.grain_ms(), longest);
        if (time.reach + dedup_horizon_ms / time.grain) >= i64::from(u32::MAX) {
            return Err(ConfigError::WindowsTooFine);
        }
        Ok(Engine {
            now_index: layout.now_index(i64::MIN),
            time,
            layout,
            dedup_horizon_ms,
            dedup_max_ids: config.dedup_max_ids,
            snapshot_format: config.snapshot_format,
            keys: KeyTable::new(config.max_keys),
            partitions: BTreeMap::new(),
            now_ms: i64::MIN,
            alert_stats: alert_stats::AlertStats::default(),
            themes: Vec::new(),
            counting_themes: false,
            theme_totals: ThemeTotals::default(),
            breakdowns: Breakdowns::default(),
        })
    }

    /// An empty partition state.
    fn new_partition(&self) -> PartitionState {
        let (horizon, max_ids) = (self.dedup_horizon_ms, self.dedup_max_ids);
        PartitionState::new(horizon, max_ids, self.time, &self.breakdowns)
    }

    pub fn layout(&self) -> &WindowLayout {
        &self.layout
    }

    /// Moves the engine's clock to `now` (never backwards); returns it.
    fn tick(&mut self, now: i64) -> i64 {
        if now > self.now_ms {
            self.now_ms = now;
            let index = self.layout.now_index(now);
            if !index.same_buckets(&self.now_index) {
                // Buckets left a window: kept figures no longer hold.
                self.alert_stats.forget_all();
                self.theme_totals.invalidate(index.moved(&self.now_index));
            }
            self.now_index = index;
        }
        self.now_ms
    }

    /// The engine's clock: the latest `now` it has been given.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Records one validated response read from `partition` at processing
    /// time `now`. A response stamped in the future (within the allowed
    /// skew, which validation enforces) is placed at `now`.
    pub fn record(&mut self, partition: i32, obs: &Observation<'_>, now: i64) -> Outcome {
        let now = self.tick(now);
        let layout = &self.layout;
        let keys = &mut self.keys;
        let (horizon, max_ids, time) = (self.dedup_horizon_ms, self.dedup_max_ids, self.time);
        let themed = self.counting_themes;
        let rows_per_key = self.theme_totals.per_key();
        let breakdowns = &self.breakdowns;
        let part = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionState::new(horizon, max_ids, time, breakdowns));
        let id = id_hash(obs.response_id);
        let before = part.dedup.find(id, now);
        if let Some((_, v)) = &before {
            if v.content == obs.content {
                return Outcome::Duplicate;
            }
            // Versions in updated_at order, then arrival: an earlier one
            // arriving after a later one changes nothing.
            if obs.updated_at_ms < v.updated_ms {
                return Outcome::Stale;
            }
        } else if obs.updated_at_ms.is_some() && !part.dedup.disabled() {
            return Outcome::RevisionAfterHorizon;
        }
        // Weights are kept to f32 (as closed buckets and versions keep
        // them), so that a revision takes back exactly what was added.
        let weight = f64::from(obs.weight as f32);
        let t = obs.responded_at_ms.min(now);
        let resolved = keys.resolve(obs.product, obs.region, now);
        let (values, breakdowns_overflowed) = self.breakdowns.resolve(&obs.breakdowns, now);
        let windows = (layout, &self.now_index);
        if let Some((_, v)) = &before {
            // The old contribution out, wherever it still is.
            let old = Category::of_score(u32::from(v.score));
            let rows = RowSet::counted(v.themed, v.themes, v.comment != 0);
            if layout.in_any_window_at(v.t_ms, &self.now_index)
                && let Some(seg) = part.segments.get_mut(v.key)
            {
                let weight = f64::from(v.weight);
                let taken = seg.remove(layout, v.t_ms, &self.now_index, old, weight, rows);
                self.theme_totals.add(v.key, rows, (taken, old), -1);
                self.alert_stats.forget(v.key);
            }
            if layout.in_any_window_at(v.t_ms, &self.now_index) {
                let old = (v.t_ms, old, f64::from(v.weight));
                Breakdowns::remove(&mut part.breakdowns, Values(v.values), windows, old);
            }
        }
        let late = !layout.in_any_window_at(t, &self.now_index);
        if !late {
            let (seg, created) = part
                .segments
                .get_or_insert_with(resolved.key, || Segment::with_rows(layout, rows_per_key));
            if created {
                keys.hold(resolved.key);
            }
            let rows = RowSet::counted(themed, obs.themes.0, obs.comment != 0);
            let placed = seg.insert(layout, t, &self.now_index, obs.category, weight, rows);
            self.theme_totals
                .add(resolved.key, rows, (placed, obs.category), 1);
            let answer = (t, obs.category, weight);
            self.breakdowns
                .insert(&mut part.breakdowns, values, windows, answer);
            self.alert_stats
                .add(resolved.key, placed, obs.category, weight);
        }
        let mut version = dedup::Version {
            content: obs.content,
            comment: obs.comment,
            score: obs.score,
            updated_ms: obs.updated_at_ms,
            t_ms: t,
            key: resolved.key,
            weight: weight as f32,
            alerts: 0,
            withdrawn: false,
            themes: obs.themes.0,
            themed,
            values: values.0,
        };
        let counted = Counted {
            key: resolved.key,
            category: obs.category,
            late,
            overflowed: resolved.overflowed,
            breakdowns_overflowed,
        };
        match before {
            None => {
                let alert = obs.alerting.then_some(AlertMark {
                    revision: 0,
                    withdrawn: false,
                });
                version.alerts = u8::from(obs.alerting);
                part.dedup.insert(id, now, &version);
                Outcome::Counted(counted, alert)
            }
            Some((slot, v)) => {
                let live = v.alerts > 0 && !v.withdrawn;
                let alert = (obs.alerting || live).then_some(AlertMark {
                    revision: u32::from(v.alerts),
                    withdrawn: !obs.alerting,
                });
                version.alerts = v.alerts.saturating_add(u8::from(alert.is_some()));
                version.withdrawn =
                    alert.is_some_and(|a| a.withdrawn) || (v.withdrawn && alert.is_none());
                let effects = Effects::between(&v, &version, time.grain);
                part.dedup.update(slot, &version);
                Outcome::Revised {
                    counted,
                    before: Category::of_score(u32::from(v.score)),
                    before_key: v.key,
                    effects,
                    alert,
                }
            }
        }
    }

    /// (product, region) of a segment id from an `Outcome`.
    pub fn segment_name(&self, key: KeyId) -> Option<(&str, &str)> {
        self.keys.name(key)
    }

    /// Every segment with anything in any window at `now`, merged over
    /// partitions. Segments are listed in id order.
    pub fn segments(&self, now: i64) -> Vec<SegmentStats<'_>> {
        let now = self.now_ms.max(now);
        let maps = self.partitions.values().map(|p| &p.segments);
        SegmentMap::merged(maps, self.keys.id_bound(), &self.layout, now)
            .into_iter()
            .enumerate()
            .filter_map(|(i, windows)| {
                let key = KeyId(i as u32);
                let (product, region) = self.keys.name(key)?;
                Some(SegmentStats {
                    key,
                    product,
                    region,
                    windows: windows?,
                })
            })
            .collect()
    }

    /// One segment's windows at `now`, merged over partitions (all empty if
    /// no partition holds it): what an alert carries. Kept between calls
    /// while `now` leaves every window's oldest bucket in place (see
    /// `alert_stats`).
    pub fn segment_stats(&mut self, key: KeyId, now: i64) -> Vec<WindowStats> {
        if now <= self.now_ms {
            if let Some(kept) = self.alert_stats.get(key) {
                return kept.to_vec();
            }
            let windows = self.segment_stats_summed(key, now);
            self.alert_stats.put(key, &windows);
            return windows;
        }
        self.segment_stats_summed(key, now)
    }

    /// `segment_stats` summed afresh over the rings.
    pub fn segment_stats_summed(&self, key: KeyId, now: i64) -> Vec<WindowStats> {
        let now = self.now_ms.max(now);
        let mut windows = vec![WindowStats::default(); self.layout.len()];
        for part in self.partitions.values() {
            if let Some(seg) = part.segments.get(key) {
                for (w, out) in windows.iter_mut().enumerate() {
                    seg.accumulate(&self.layout, w, now, out);
                }
            }
        }
        windows
    }

    /// Drops segment states that left every window, forgets expired
    /// response_ids, and removes idle segments from the table.
    pub fn sweep(&mut self, now: i64) -> SweepReport {
        let now = self.tick(now);
        let mut report = SweepReport::default();
        for part in self.partitions.values_mut() {
            part.dedup.expire(now);
            self.breakdowns
                .expire(&mut part.breakdowns, &self.layout, now);
            let layout = &self.layout;
            let keys = &mut self.keys;
            part.segments.retain(|key, seg| {
                let keep = !seg.is_expired(layout, now);
                if !keep {
                    keys.release(key);
                    report.segments_expired += 1;
                }
                keep
            });
        }
        let longest = i64::try_from(self.layout.longest().as_millis()).unwrap_or(i64::MAX);
        report.keys_removed = self.keys.sweep(now.saturating_sub(longest));
        self.breakdowns.sweep(now.saturating_sub(longest));
        if report.segments_expired > 0 || !report.keys_removed.is_empty() {
            // Key ids may be handed out again.
            self.alert_stats.forget_all();
        }
        report
    }

    /// Partitions with state.
    pub fn partitions(&self) -> Vec<i32> {
        self.partitions.keys().copied().collect()
    }

    /// Forgets a partition's state (its windows and dedup ids), e.g. when
    /// Kafka revokes it. Returns whether there was any.
    pub fn drop_partition(&mut self, partition: i32) -> bool {
        self.alert_stats.forget_all();
        self.theme_totals.invalidate(u64::MAX);
        match self.partitions.remove(&partition) {
            Some(part) => {
                for (key, _) in part.segments.iter() {
                    self.keys.release(key);
                }
                self.breakdowns.release(&part.breakdowns);
                true
            }
            None => false,
        }
    }

    /// Sizes, for metrics and memory accounting.
    pub fn gauges(&self) -> EngineGauges {
        let mut g = EngineGauges {
            keys: self.keys.len(),
            partitions: self.partitions.len(),
            ..Default::default()
        };
        let mut heap = self.keys.heap_bytes()
            + self.alert_stats.heap_bytes()
            + self.theme_totals.heap_bytes()
            + self.breakdowns.heap_bytes();
        for part in self.partitions.values() {
            g.segment_states += part.segments.len();
            g.dedup_ids += part.dedup.len();
            g.dedup_evicted_early += part.dedup.evicted_early;
            heap += part.segments.heap_bytes();
            heap += part
                .breakdowns
                .iter()
                .map(|m| m.heap_bytes())
                .sum::<usize>();
            heap += part.dedup.heap_bytes();
        }
        g.heap_bytes = heap;
        g
    }
}

#[cfg(test)]
mod tests;
