//! The most memory an instance can hold at given settings: each bounded
//! structure's measured worst-case unit cost times its bound, plus the
//! buffers the Kafka clients are allowed. `check-config` prints it, and
//! the Kubernetes manifests' limit is tested against it.
//!
//! The unit costs are the worst cases `tests/memory.rs` measures with a
//! counting allocator and holds below these constants: a segment state
//! with every bucket of every window filled, theme rows with every theme
//! mentioned in every bucket, a remembered `response_id`, an open case, a
//! remembered customer.

use crate::config::Settings;

/// A segment state (one key in one partition): fixed part.
pub const SEGMENT_BASE_BYTES: u64 = 64;
/// A segment state: per bucket of its windows, every one filled.
pub const SEGMENT_BUCKET_BYTES: u64 = 21;
/// Theme rows of a segment state: per bucket in use.
pub const THEME_BUCKET_BYTES: u64 = 8;
/// Theme rows of a segment state: per bucket and row that counts something
/// (each theme, and the answers with a comment), its slack included.
pub const THEME_ROW_BYTES: u64 = 18;
/// A remembered `response_id` with its latest version.
pub const DEDUP_ID_BYTES: u64 = 48;
/// What a remembered `response_id` adds when breakdowns are counted: its
/// values, 16 bits per breakdown.
pub const DEDUP_VALUES_BYTES: u64 = 8;
/// A breakdown value, once per process: its place in the value table and
/// its figures in the view (a value's windows in each partition are
/// segment states, counted as the segments' are).
pub const BREAKDOWN_VALUE_BYTES: u64 = 512;
/// An open or retained case.
pub const CASE_BYTES: u64 = 160;
/// A customer remembered for repeat detection.
pub const CUSTOMER_BYTES: u64 = 36;
/// Per key, once per process: its metric series (numbers; the names are
/// rendered at scrape) and its place in the key table.
pub const KEY_SHARED_BYTES: u64 = 2048;
/// An output record awaiting the broker's acknowledgement (an alert, a
/// promoter event, a dead letter: headers, key and value).
pub const PENDING_RECORD_BYTES: u64 = 1024;
/// The binary, the runtime's threads and librdkafka's own state.
pub const RUNTIME_BYTES: u64 = 32 << 20;
/// The allocator's holes around the heap structures: RSS against live
/// heap measured 1.25 at most (docs/performance.md, "Memory").
pub const HEAP_SLACK: (u64, u64) = (5, 4);

/// `bytes` of live heap with the allocator's holes around them.
fn slack(bytes: u64) -> u64 {
    bytes * HEAP_SLACK.0 / HEAP_SLACK.1
}

/// librdkafka's defaults for the fetch bounds.
const QUEUED_KBYTES: u64 = 65_536;
const FETCH_BYTES: u64 = 52_428_800;
const PARTITION_FETCH_BYTES: u64 = 1_048_576;

/// A fetch bound of a consumer whose own defaults are `defaults`: the
/// user's `-X` value (which overrides every consumer's), else its own,
/// else librdkafka's.
fn fetch_bound(settings: &Settings, defaults: &[(&str, &str)], key: &str, librdkafka: u64) -> u64 {
    settings
        .kafka
        .get(key)
        .map(String::as_str)
        .or_else(|| defaults.iter().find(|(k, _)| *k == key).map(|(_, v)| *v))
        .and_then(|v| v.parse().ok())
        .unwrap_or(librdkafka)
}

/// What a consumer with its own `defaults` holds fetched at most: its
/// queue and one fetch in flight.
fn consumer_buffers(settings: &Settings, defaults: &[(&str, &str)]) -> u64 {
    fetch_bound(
        settings,
        defaults,
        "queued.max.messages.kbytes",
        QUEUED_KBYTES,
    ) * 1024
        + fetch_bound(settings, defaults, "fetch.max.bytes", FETCH_BYTES)
}

/// One part of the bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub what: &'static str,
    /// Per input partition held (multiplied by their number), or once.
    pub per_partition: bool,
    pub bytes: u64,
}

/// The bound, part by part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub parts: Vec<Part>,
}

impl Bound {
    /// At these settings, holding `partitions` input partitions.
    pub fn of(settings: &Settings, partitions: u64) -> Bound {
        let e = &settings.engine;
        let keys = e.max_keys as u64;
        let buckets = e.windows.len() as u64 * u64::from(e.buckets_per_window);
        let rows = match settings.themes.enabled {
            true => settings.themes.taxonomy.len() as u64 + 1,
            false => 0,
        };
        let themes = match rows {
            0 => 0,
            _ => keys * buckets * (THEME_BUCKET_BYTES + THEME_ROW_BYTES * rows),
        };
        let segment = SEGMENT_BASE_BYTES + SEGMENT_BUCKET_BYTES * buckets;
        let segments = keys * segment;
        // Every breakdown's values, and `unknown`, `other` and `invalid`.
        let values: u64 = (settings.breakdowns.iter())
            .map(|b| b.max_values as u64 + 3)
            .sum();
        let value_windows = values * segment;
        let per_id = match values {
            0 => DEDUP_ID_BYTES,
            _ => DEDUP_ID_BYTES + DEDUP_VALUES_BYTES,
        };
        let dedup = e.dedup_max_ids as u64 * per_id;
        // A partition's state record holds at most what its heap does.
        let state_record = (settings.snapshot_max_bytes as u64)
            .min(slack(segments + themes + dedup + value_windows));
        let mut parts = vec![
            Part::each(
                "segment states (max_keys, every bucket filled)",
                slack(segments),
            ),
            Part::each("theme rows (every theme in every bucket)", slack(themes)),
            Part::each(
                "breakdown values (max_values, every bucket filled)",
                slack(value_windows),
            ),
            Part::each("dedup (dedup_max_ids)", slack(dedup)),
            Part::each(
                "input fetch in flight (max.partition.fetch.bytes)",
                fetch_bound(
                    settings,
                    &[],
                    "max.partition.fetch.bytes",
                    PARTITION_FETCH_BYTES,
                ),
            ),
            Part::once(
                "metric series and key table (max_keys)",
                slack(keys * KEY_SHARED_BYTES),
            ),
            Part::once(
                "breakdown values' names and figures (max_values)",
                slack(values * BREAKDOWN_VALUE_BYTES),
            ),
            Part::once(
                "input fetch queue (queued.max.messages.kbytes)",
                fetch_bound(settings, &[], "queued.max.messages.kbytes", QUEUED_KBYTES) * 1024,
            ),
            Part::once(
                "outputs awaiting acknowledgement (max_pending)",
                settings.max_pending as u64 * PENDING_RECORD_BYTES,
            ),
            Part::once(
                "state records: one written, one in the producer, one restored",
                3 * state_record,
            ),
            Part::once("runtime", RUNTIME_BYTES),
        ];
        if settings.cases.enabled {
            parts.extend(case_parts(settings));
        }
        let partitions = partitions.max(1);
        for p in parts.iter_mut().filter(|p| p.per_partition) {
            p.bytes *= partitions;
        }
        Bound { parts }
    }

    pub fn total(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}

/// What the case tracker holds at most.
fn case_parts(settings: &Settings) -> [Part; 3] {
    let c = &settings.cases;
    [
        Part::once("cases (max_cases)", slack(c.max_cases as u64 * CASE_BYTES)),
        Part::once(
            "customers (max_customers)",
            slack(c.max_customers as u64 * CUSTOMER_BYTES),
        ),
        Part::once(
            "case tracker's fetch buffers (its consumer and its read-back)",
            consumer_buffers(settings, &crate::tracker::FETCH)
                + consumer_buffers(settings, &crate::tracker::READBACK_FETCH),
        ),
    ]
}

impl Part {
    fn each(what: &'static str, bytes: u64) -> Part {
        Part {
            what,
            per_partition: true,
            bytes,
        }
    }

    fn once(what: &'static str, bytes: u64) -> Part {
        Part {
            what,
            per_partition: false,
            bytes,
        }
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: f64 = (1u64 << 20) as f64;
        for p in self.parts.iter().filter(|p| p.bytes > 0) {
            let each = if p.per_partition {
                ", per input partition"
            } else {
                ""
            };
            writeln!(f, "  {:>8.1} MiB  {}{each}", p.bytes as f64 / MIB, p.what)?;
        }
        write!(f, "  {:>8.1} MiB  in all", self.total() as f64 / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_grows_with_each_setting_it_names_and_with_the_partitions() {
        let s = Settings::default();
        let base = Bound::of(&s, 1).total();
        assert!(Bound::of(&s, 2).total() > base);
        let mut more = s.clone();
        more.engine.max_keys *= 2;
        assert!(Bound::of(&more, 1).total() > base);
        let mut teams = s.clone();
        teams.breakdowns = vec![crate::config::Breakdown {
            attribute: "team".into(),
            label: "team".into(),
            min_responses: 30,
            max_values: 500,
            prometheus: true,
        }];
        let with_teams = Bound::of(&teams, 1).total();
        let segment = SEGMENT_BASE_BYTES + SEGMENT_BUCKET_BYTES * 4 * 48;
        let each = 503 * (segment + BREAKDOWN_VALUE_BYTES) + 1_000_000 * DEDUP_VALUES_BYTES;
        assert!(with_teams - base >= each * HEAP_SLACK.0 / HEAP_SLACK.1 - 1);
        let mut off = s.clone();
        off.themes.enabled = false;
        off.cases.enabled = false;
        let lean = Bound::of(&off, 1);
        assert!(lean.total() < base);
        assert!(lean.parts.iter().all(|p| !p.what.starts_with("cases")));
        let mut small_queue = s.clone();
        small_queue
            .kafka
            .insert("queued.max.messages.kbytes".into(), "1024".into());
        // `-X` sets it for every consumer: the input's (librdkafka's 64 MiB),
        // the case tracker's (8 MiB) and its read-back's (4 MiB).
        assert_eq!(
            base - Bound::of(&small_queue, 1).total(),
            ((65_536 - 1024) + (8192 - 1024) + (4096 - 1024)) * 1024
        );
    }
}
