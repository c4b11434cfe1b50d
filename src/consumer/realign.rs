//! Starting a restored partition a little before its snapshot's offset.
//!
//! Tansu 0.6 answers a fetch from inside a record batch with the batch
//! after it, which would skip the rest of the snapshot's batch (Kafka
//! returns the batch holding the offset, and the client drops what
//! precedes it); and a fetch from inside the log's last batch with nothing
//! at all. So fetching starts `REALIGN_BACK` records before the snapshot's
//! offset (`want`): records before `want` are in the snapshot already and
//! are skipped; if the first record is past `want`, or nothing comes for a
//! second, the start was still inside the same batch, and it starts eight
//! times further back, down to the log's start.
//!
//! Pure: the shell tells it what came and when, and seeks where it says.
//! Used by the pipeline (input partitions) and the case tracker (alerts and
//! case-events partitions).

use std::time::{Duration, Instant};

/// How far before a snapshot's offset fetching starts at first; each
/// retry goes eight times further.
pub(crate) const REALIGN_BACK: i64 = 1_000;

/// How long a start may get nothing before it is taken for a start inside
/// the log's last batch.
const SILENCE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Realign {
    /// The snapshot's offset: the first record not in it.
    want: i64,
    /// Where fetching starts now.
    from: i64,
    /// The log's start: never further back than this.
    low: i64,
    /// A record before `want` came: the position is right.
    aligned: bool,
    /// When fetching started at `from`.
    since: Instant,
}

/// What to do with a record of a realigning partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// In the snapshot already: skip it.
    Skip,
    /// The first record after the snapshot: handle it; realigning is over.
    Take,
    /// Past the snapshot's offset with records between missing, and no
    /// further back to go: handle it (and say so); realigning is over.
    Gap,
    /// The start was inside the snapshot's batch: seek to `further_back`.
    FurtherBack,
}

impl Realign {
    /// Where to start a partition whose snapshot ends at `want`, in a log
    /// starting at `low`; None when there is no room before it.
    pub(crate) fn start(want: i64, low: i64, now: Instant) -> Option<Realign> {
        let from = want.saturating_sub(REALIGN_BACK).max(low);
        (from < want).then_some(Realign {
            want,
            from,
            low,
            aligned: false,
            since: now,
        })
    }

    /// Where fetching starts.
    pub(crate) fn from(&self) -> i64 {
        self.from
    }

    /// The snapshot's offset.
    pub(crate) fn want(&self) -> i64 {
        self.want
    }

    /// A record at offset `at` came.
    pub(crate) fn seen(&mut self, at: i64) -> Seen {
        if at < self.want {
            self.aligned = true;
            return Seen::Skip;
        }
        if at == self.want {
            Seen::Take
        } else if self.aligned || self.from <= self.low {
            Seen::Gap
        } else {
            Seen::FurtherBack
        }
    }

    /// Nothing came for a second since fetching started, and there is room
    /// further back.
    pub(crate) fn silent(&self, now: Instant) -> bool {
        !self.aligned && self.from > self.low && now.saturating_duration_since(self.since) > SILENCE
    }

    /// Starts eight times further back (never before the log's start);
    /// where to seek.
    pub(crate) fn further_back(&mut self, now: Instant) -> i64 {
        self.from = self
            .want
            .saturating_sub((self.want - self.from).saturating_mul(8))
            .max(self.low);
        self.since = now;
        self.from
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_before_the_snapshot_are_skipped_and_the_next_one_taken() {
        let t = Instant::now();
        let mut r = Realign::start(5_000, 0, t).unwrap();
        assert_eq!(r.from(), 4_000);
        assert_eq!(r.seen(4_000), Seen::Skip);
        assert_eq!(r.seen(4_999), Seen::Skip);
        assert_eq!(r.seen(5_000), Seen::Take);
    }

    #[test]
    fn a_start_inside_the_snapshot_s_batch_goes_eight_times_further_back() {
        let t = Instant::now();
        let mut r = Realign::start(50_000, 0, t).unwrap();
        // The broker answered with the batch after the snapshot's.
        assert_eq!(r.seen(50_200), Seen::FurtherBack);
        assert_eq!(r.further_back(t), 42_000);
        assert_eq!(r.seen(50_200), Seen::FurtherBack);
        assert_eq!(r.further_back(t), 0, "never before the log's start");
        // At the log's start: whatever comes is taken, with the gap said.
        assert_eq!(r.seen(50_200), Seen::Gap);
    }

    #[test]
    fn once_aligned_a_later_first_record_is_a_gap_not_a_step_back() {
        let t = Instant::now();
        let mut r = Realign::start(3_000, 0, t).unwrap();
        assert_eq!(r.seen(2_500), Seen::Skip);
        assert_eq!(r.seen(3_100), Seen::Gap);
    }

    #[test]
    fn silence_for_a_second_means_a_start_inside_the_last_batch() {
        let t = Instant::now();
        let mut r = Realign::start(3_000, 1_500, t).unwrap();
        assert_eq!(r.from(), 2_000);
        assert!(!r.silent(t + Duration::from_millis(900)));
        assert!(r.silent(t + Duration::from_millis(1_100)));
        let later = t + Duration::from_millis(1_100);
        assert_eq!(r.further_back(later), 1_500);
        assert!(
            !r.silent(later + Duration::from_secs(5)),
            "no room further back"
        );
        let mut aligned = Realign::start(3_000, 0, t).unwrap();
        aligned.seen(2_999);
        assert!(!aligned.silent(t + Duration::from_secs(5)));
    }

    #[test]
    fn no_room_before_the_snapshot_needs_no_realigning() {
        assert_eq!(Realign::start(0, 0, Instant::now()), None);
        assert_eq!(Realign::start(700, 700, Instant::now()), None);
    }
}
