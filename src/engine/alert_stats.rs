//! An alert's window figures, kept per segment between alerts.
//!
//! Every alert carries its segment's windows merged over the partitions
//! this instance owns. Summed afresh, that is every bucket in use of every
//! window of the segment in every partition (hundreds when answers spread
//! over 30 days), for each alert: in an alert storm it was the largest
//! single cost of the pipeline. So the merged figures are kept per segment
//! once summed, and each answer counted into the segment afterwards is
//! added to them, as the rings add it, so that the next alert reads them
//! in O(windows).
//!
//! Kept figures are only used while they provably equal a fresh sum (up to
//! the rounding of weight sums, below): they are summed again
//!
//! - when `now` moves any window's oldest bucket (buckets left a window:
//!   at most once per bucket width of the shortest window);
//! - for a segment from which an answer was taken back (a revision);
//! - for every segment after anything else changed the rings: a partition
//!   dropped or restored, segments or keys swept (a key id may be reused).
//!
//! An answer that moves its ring's newest bucket keeps them too, so a live
//! feed (answers in time order, most of them their segment's newest) reads
//! kept figures as answers spread over the past do. Moving the head to
//! bucket h closes the old head and clears the slots of buckets h − n and
//! older (n buckets per ring); the answer's time is at most `now`, so h is
//! at most `now`'s bucket, and those buckets are already out of the window
//! at `now` (it holds the buckets after `now`'s − n): a fresh sum counts
//! them neither before nor after. Closing a bucket only rounds its weight
//! sums to f32.
//!
//! Counts are exact. Weight sums differ from a fresh sum only by rounding:
//! closed buckets keep their sums in f32 (see `window`'s "Precision"),
//! the kept figures add each weight in f64, a relative difference of about
//! 1e-7, the precision weight sums have anyway.

use super::KeyId;
use super::nps::{Category, WindowStats};

#[derive(Debug, Clone, Default)]
pub(super) struct AlertStats {
    /// By key id.
    kept: Vec<Option<Kept>>,
    /// Bumped by every change that makes all kept figures stale.
    epoch: u64,
}

#[derive(Debug, Clone)]
struct Kept {
    epoch: u64,
    windows: Box<[WindowStats]>,
}

impl AlertStats {
    /// The kept figures of `key`, if still those of a fresh sum at the
    /// engine's `now`.
    pub(super) fn get(&self, key: KeyId) -> Option<&[WindowStats]> {
        let k = self.kept.get(key.index())?.as_ref()?;
        (k.epoch == self.epoch).then_some(&k.windows)
    }

    /// Keeps `windows`, just summed at the engine's `now`, for `key`.
    pub(super) fn put(&mut self, key: KeyId, windows: &[WindowStats]) {
        if self.kept.len() <= key.index() {
            self.kept.resize_with(key.index() + 1, || None);
        }
        self.kept[key.index()] = Some(Kept {
            epoch: self.epoch,
            windows: windows.into(),
        });
    }

    /// One answer counted into `key`'s rings: added to the kept figures in
    /// the windows the rings placed it in (`placed`, bit w: window w, as
    /// `Segment::insert` returns them).
    pub(super) fn add(&mut self, key: KeyId, placed: u64, category: Category, weight: f64) {
        let epoch = self.epoch;
        let Some(Some(k)) = self.kept.get_mut(key.index()) else {
            return;
        };
        if k.epoch != epoch {
            return;
        }
        for (w, out) in k.windows.iter_mut().enumerate() {
            if placed >> w & 1 == 1 {
                out.add(category, weight);
            }
        }
    }

    /// `key`'s figures are to be summed afresh.
    pub(super) fn forget(&mut self, key: KeyId) {
        if let Some(slot) = self.kept.get_mut(key.index()) {
            *slot = None;
        }
    }

    /// Every key's figures are to be summed afresh (also when `now` moves a
    /// window's oldest bucket: the engine's clock calls it).
    pub(super) fn forget_all(&mut self) {
        self.epoch += 1;
    }

    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.kept.capacity() * std::mem::size_of::<Option<Kept>>()
            + self
                .kept
                .iter()
                .flatten()
                .map(|k| std::mem::size_of_val(&*k.windows))
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{DAY, HOUR, T0, buckets, ev, observe, windows};
    use super::super::{Engine, EngineConfig, Observation, Outcome};
    use super::WindowStats;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// The first window in which kept figures `got` differ from a fresh
    /// sum `want`: in a count, or in a weight sum beyond its rounding.
    fn differs(got: &[WindowStats], want: &[WindowStats]) -> Option<String> {
        let counts = |s: &WindowStats| (s.promoters, s.passives, s.detractors);
        got.iter().zip(want).enumerate().find_map(|(w, (a, b))| {
            let tol = 1e-6 * b.weight_total.max(1.0);
            let off = counts(a) != counts(b)
                || (a.weight_net - b.weight_net).abs() > tol
                || (a.weight_total - b.weight_total).abs() > tol;
            off.then(|| format!("window {w}: kept {a:?}, summed {b:?}"))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// After every answer, revision, clock step, sweep and partition
        /// drop, the figures an alert reads (kept or summed) are those
        /// summed afresh over the rings.
        #[test]
        fn kept_figures_equal_a_fresh_sum(
            windows in windows(),
            buckets_per_window in buckets(),
            events in proptest::collection::vec(ev(), 1..300),
            // Mostly within one bucket of the shortest window, so that
            // figures are kept from one answer to the next.
            steps in proptest::collection::vec(prop_oneof![8 => 0..2_000i64, 1 => 0..3 * DAY], 300),
            drops in proptest::collection::vec((0..300usize, 0..3i32), 0..3),
        ) {
            let cfg = EngineConfig { windows, buckets_per_window, ..EngineConfig::default() };
            let mut e = Engine::new(&cfg).unwrap();
            let mut last = HashMap::new();
            let mut now = T0;
            for (i, (ev, step)) in events.iter().zip(steps).enumerate() {
                now += step;
                let mut names = Default::default();
                let (o, ev) = observe(ev, &mut last, now, &mut names);
                let key = match e.record(ev.partition, &o, now) {
                    Outcome::Counted(c, _) => c.key,
                    Outcome::Revised { counted, .. } => counted.key,
                    _ => continue,
                };
                for &(at, p) in &drops {
                    if at == i {
                        e.drop_partition(p);
                    }
                }
                if step > DAY {
                    e.sweep(now);
                }
                // Twice: the second read is the kept figures.
                for _ in 0..2 {
                    let got = e.segment_stats(key, now);
                    let want = e.segment_stats_summed(key, now);
                    let differs = differs(&got, &want);
                    prop_assert!(differs.is_none(), "after event {}: {:?}", i, differs);
                }
            }
            // And an hour later, with no answer in between.
            let later = now + HOUR;
            let key = e.segments(later).first().map(|s| s.key);
            if let Some(key) = key {
                prop_assert_eq!(e.segment_stats(key, later), e.segment_stats_summed(key, later));
            }
        }
    }

    /// A live feed: answers in time order, each the newest of its segment,
    /// the clock moving with them, a new bucket of the shortest window
    /// every few answers. An alert finds its figures kept unless `now`
    /// just moved a window's oldest bucket, and they are a fresh sum.
    #[test]
    fn a_live_feed_reads_kept_figures_equal_to_a_fresh_sum() {
        let cfg = EngineConfig {
            dedup_max_ids: 0,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(&cfg).unwrap();
        let (mut now, mut kept) = (T0, 0);
        for i in 0..2_000u32 {
            // 7 s apart: the 1h window's buckets are 75 s wide.
            now += 7_000;
            let weight = 1.0 + f64::from(i);
            let o = Observation::new("", "p", "r", i % 11, now - 500, weight);
            let Outcome::Counted(c, _) = e.record((i % 3) as i32, &o, now) else {
                panic!("answer {i} not counted");
            };
            kept += usize::from(e.alert_stats.get(c.key).is_some());
            let got = e.segment_stats(c.key, now);
            let want = e.segment_stats_summed(c.key, now);
            assert_eq!(differs(&got, &want), None, "answer {i}");
        }
        // `now` moves the 1h window's oldest bucket about every 11th
        // answer; every other answer reads kept figures.
        assert!(kept > 1_700, "{kept} of 2,000 alerts read kept figures");
    }
}
