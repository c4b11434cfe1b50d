//! Liveness of the consuming loops. Each loop beats on its one-second
//! tick, whether or not records wait, so a loop silent for longer than the
//! bound is stuck (a deadlock, a call that never returns, a task starved)
//! and `/healthz` fails for the kubelet to restart the pod. A loop inside
//! a rebalance is not late: restoring a partition's state runs there and
//! can take minutes; its beat restarts when the rebalance ends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One loop's heartbeat.
#[derive(Debug)]
pub struct Beat {
    epoch: Instant,
    /// When the loop last turned, in ms since `epoch`.
    last_ms: AtomicU64,
    /// Inside a rebalance (see the module's note).
    rebalancing: AtomicBool,
}

impl Beat {
    fn new(now: Instant) -> Beat {
        Beat {
            epoch: now,
            last_ms: AtomicU64::new(0),
            rebalancing: AtomicBool::new(false),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// The loop turned at `now`.
    pub fn turn(&self, now: Instant) {
        self.last_ms.fetch_max(self.ms(now), Ordering::Relaxed);
    }

    /// A rebalance starts (`true`) or ends at `now` (`false`, which counts
    /// as a turn).
    pub fn rebalancing(&self, on: bool, now: Instant) {
        self.rebalancing.store(on, Ordering::Relaxed);
        if !on {
            self.turn(now);
        }
    }

    /// Whether the loop has not turned within `bound` before `now`, outside
    /// a rebalance.
    fn late(&self, now: Instant, bound: Duration) -> bool {
        let silent = self
            .ms(now)
            .saturating_sub(self.last_ms.load(Ordering::Relaxed));
        !self.rebalancing.load(Ordering::Relaxed) && silent > bound.as_millis() as u64
    }
}

/// Every loop's beat, by name, and how long one may stay silent.
#[derive(Debug)]
pub struct Heartbeats {
    beats: Mutex<Vec<(&'static str, Arc<Beat>)>>,
    bound_ms: AtomicU64,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats {
            beats: Mutex::default(),
            bound_ms: AtomicU64::new(60_000),
        }
    }
}

impl Heartbeats {
    /// How long a loop may stay silent (`--stall-timeout`).
    pub fn set_bound(&self, bound: Duration) {
        self.bound_ms
            .store(bound.as_millis() as u64, Ordering::Relaxed);
    }

    /// The loops silent for longer than the bound at `now`.
    pub fn stalled(&self, now: Instant) -> Vec<&'static str> {
        let bound = Duration::from_millis(self.bound_ms.load(Ordering::Relaxed));
        self.late(now, bound)
    }

    /// The beat of the loop `name`, made at `now` the first time (a loop
    /// that replaces its consumer keeps its beat).
    pub fn beat(&self, name: &'static str, now: Instant) -> Arc<Beat> {
        let Ok(mut beats) = self.beats.lock() else {
            return Arc::new(Beat::new(now));
        };
        if let Some((_, b)) = beats.iter().find(|(n, _)| *n == name) {
            return b.clone();
        }
        let b = Arc::new(Beat::new(now));
        beats.push((name, b.clone()));
        b
    }

    /// The loops that have not turned within `bound` before `now`.
    pub fn late(&self, now: Instant, bound: Duration) -> Vec<&'static str> {
        match self.beats.lock() {
            Ok(beats) => beats
                .iter()
                .filter(|(_, b)| b.late(now, bound))
                .map(|(n, _)| *n)
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(60);

    #[test]
    fn a_loop_is_late_only_when_silent_past_the_bound_outside_a_rebalance() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let hb = Heartbeats::default();
        let pipeline = hb.beat("pipeline", t0);
        let tracker = hb.beat("case tracker", t0);
        assert!(Arc::ptr_eq(&pipeline, &hb.beat("pipeline", at(5))));
        assert!(hb.late(at(60), BOUND).is_empty(), "at the bound is in time");
        for s in 1..=90 {
            pipeline.turn(at(s));
        }
        assert_eq!(hb.late(at(90), BOUND), vec!["case tracker"]);
        tracker.turn(at(90));
        // A rebalance of ten minutes (a long restore) is not a stall…
        pipeline.rebalancing(true, at(91));
        assert_eq!(hb.late(at(700), BOUND), vec!["case tracker"]);
        // …and the bound runs again from its end.
        pipeline.rebalancing(false, at(700));
        assert_eq!(hb.late(at(759), BOUND), vec!["case tracker"]);
        assert_eq!(hb.late(at(761), BOUND), vec!["pipeline", "case tracker"]);
        // A turn seen late never moves the beat back.
        pipeline.turn(at(10));
        assert_eq!(hb.late(at(761), BOUND).len(), 2);
        // The bound set is the one `stalled` uses (60 s by default).
        hb.set_bound(Duration::from_secs(5));
        tracker.turn(at(756));
        assert_eq!(hb.late(at(761), BOUND), vec!["pipeline"]);
        assert_eq!(hb.stalled(at(762)), vec!["pipeline", "case tracker"]);
    }
}
