//! Trends from the engine's own buckets: a segment's (or a breakdown
//! value's) answers in each bucket of one window, merged over partitions,
//! so that a trend shows the window's history at once instead of what a
//! viewer has watched since opening the page.

use super::window::Segment;
use super::{Engine, KeyId, WindowStats};

/// One bucket of a trend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrendPoint {
    /// The bucket's start, Unix ms.
    pub start_ms: i64,
    /// Its answers (counts; weights are not kept per bucket here).
    pub stats: WindowStats,
}

impl Engine {
    /// Every bucket of window `w` at `now`, oldest first: the answers of
    /// the states `each` yields, merged.
    fn trend<'a>(
        &'a self,
        w: usize,
        now: i64,
        each: impl Iterator<Item = &'a Segment>,
    ) -> Vec<TrendPoint> {
        let now = self.now_ms.max(now);
        let Some(spec) = self.layout.specs().get(w) else {
            return Vec::new();
        };
        let mut stats = vec![WindowStats::default(); spec.buckets as usize];
        for seg in each {
            seg.accumulate_buckets(&self.layout, w, now, &mut stats);
        }
        let first = Segment::oldest_bucket_ms(&self.layout, w, now);
        stats
            .into_iter()
            .enumerate()
            .map(|(i, stats)| TrendPoint {
                start_ms: first + i as i64 * spec.bucket_ms,
                stats,
            })
            .collect()
    }

    /// A segment's trend in window `w`; `None` when the engine does not
    /// know the segment.
    pub fn segment_trend(
        &self,
        product: &str,
        region: &str,
        w: usize,
        now: i64,
    ) -> Option<Vec<TrendPoint>> {
        let key: KeyId = self.keys.lookup(product, region)?;
        let states = self
            .partitions
            .values()
            .filter_map(move |p| p.segments.get(key));
        Some(self.trend(w, now, states))
    }

    /// A breakdown value's trend in window `w`; `None` when breakdown `i`
    /// does not hold the value.
    pub fn breakdown_trend(
        &self,
        i: usize,
        value: &str,
        w: usize,
        now: i64,
    ) -> Option<Vec<TrendPoint>> {
        let key = self.breakdowns.lookup(i, value)?;
        let states = (self.partitions.values())
            .filter_map(move |p| p.breakdowns.get(i).and_then(|m| m.get(key)));
        Some(self.trend(w, now, states))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{BreakdownSpec, EngineConfig, Observation};

    const T0: i64 = 1_763_812_800_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_trend_holds_each_bucket_of_the_window_merged_over_partitions() {
        let mut e = Engine::new(&EngineConfig::default()).unwrap();
        e.set_breakdowns(&[BreakdownSpec {
            label: "team".into(),
            max_values: 10,
        }]);
        // 24h has 48 buckets of 30 minutes.
        let answers = [
            ("a", 0, 10, 0),
            ("b", 1, 2, 0),
            ("c", 0, 9, 5 * HOUR),
            ("d", 2, 8, 30 * HOUR),
        ];
        for (id, partition, score, age) in answers {
            let mut o = Observation::new(id, "P", "R", score, T0 - age, 1.0);
            o.breakdowns[0] = Some("Cobros");
            e.record(partition, &o, T0);
        }
        let w = e
            .layout()
            .specs()
            .iter()
            .position(|s| s.name == "24h")
            .unwrap();
        let trend = e.segment_trend("P", "R", w, T0).unwrap();
        assert_eq!(trend.len(), 48);
        let bucket = 30 * 60_000;
        assert_eq!(trend[47].start_ms, T0 - T0.rem_euclid(bucket));
        assert_eq!(trend[0].start_ms, trend[47].start_ms - 47 * bucket);
        let last = trend[47].stats;
        assert_eq!(
            (last.promoters, last.detractors),
            (1, 1),
            "two partitions, one bucket"
        );
        assert_eq!(trend[37].stats.promoters, 1, "five hours back: ten buckets");
        assert_eq!(
            trend.iter().map(|p| p.stats.responses()).sum::<u64>(),
            3,
            "30h is out of 24h"
        );
        assert_eq!(e.breakdown_trend(0, "Cobros", w, T0).unwrap(), trend);
        assert!(e.segment_trend("P", "X", w, T0).is_none());
        assert!(e.breakdown_trend(0, "Otro", w, T0).is_none());
        assert!(e.segment_trend("P", "R", 9, T0).unwrap().is_empty());
    }
}
