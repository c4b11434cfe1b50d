//! Where an assigned partition starts, decided from what is known when it
//! is assigned: the snapshot restored from the state topic (if any), the
//! group's committed offset, and the log's low watermark. Pure: the shells
//! gather the facts (reads of the state topic and the broker) and apply
//! the plan.
//!
//! | snapshot | committed | committed past the log | start | replay until | state from |
//! | --- | --- | --- | --- | --- | --- |
//! | s | c | no | s | c, if max(s, low) < c | snapshot |
//! | s | none | – | s | – | snapshot |
//! | none | c | no | earliest | c, if low < c | rebuild |
//! | none | none | – | the client's (committed, else reset) | – | empty |
//! | any | c | yes | the reset point | – | as above |
//!
//! Replayed records were processed by a previous owner: they go into the
//! state again without alerts, events or dead letters.

use crate::config::OffsetReset;

/// Where a partition's state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFrom {
    /// A snapshot read from the state topic and restored.
    Snapshot,
    /// No usable snapshot but committed work: rebuilt by replaying the log.
    Rebuild,
    /// Neither: the partition is new to the group.
    Empty,
}

impl StateFrom {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            StateFrom::Snapshot => "snapshot",
            StateFrom::Rebuild => "rebuild",
            StateFrom::Empty => "empty",
        }
    }
}

/// Where fetching starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At this offset.
    At(i64),
    /// At the log's first record.
    Earliest,
    /// At the log's end.
    Latest,
    /// Where the client puts it: the group's committed offset, else the
    /// reset point (also when the committed offsets could not be read).
    Client,
}

/// What is known of a partition when it is assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// The offset a restored snapshot continues from.
    pub snapshot: Option<i64>,
    /// The group's committed offset.
    pub committed: Option<i64>,
    /// The log's low watermark, when the broker gave it (else 0).
    pub low: Option<i64>,
    /// The committed offset is past the end of the log (confirmed): it
    /// belongs to another log (the topic recreated or truncated), so what
    /// the log holds now was never processed.
    pub committed_beyond_log: bool,
    /// `--auto-offset-reset`.
    pub reset: OffsetReset,
}

/// Where a partition starts, and what it replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub start: Start,
    /// Records before this offset are replayed without effects.
    pub replay_until: Option<i64>,
    pub from: StateFrom,
}

impl Plan {
    /// The plan for a partition with what is `known` of it.
    pub fn for_partition(known: &Known) -> Plan {
        let from = match (known.snapshot, known.committed) {
            (Some(_), _) => StateFrom::Snapshot,
            (None, Some(_)) => StateFrom::Rebuild,
            (None, None) => StateFrom::Empty,
        };
        let start = match (known.snapshot, known.committed) {
            (Some(s), _) => Start::At(s),
            (None, Some(_)) => Start::Earliest,
            (None, None) => Start::Client,
        };
        let Some(until) = known.committed else {
            return Plan {
                start,
                replay_until: None,
                from,
            };
        };
        if known.committed_beyond_log {
            let start = match known.reset {
                OffsetReset::Earliest => Start::Earliest,
                OffsetReset::Latest => Start::Latest,
            };
            return Plan {
                start,
                replay_until: None,
                from,
            };
        }
        // Replay only what the log still holds. (Not capped by the high
        // watermark: some brokers answer one below the true end.)
        let low = known.low.unwrap_or(0);
        let first = match start {
            Start::At(s) => s.max(low),
            _ => low,
        };
        Plan {
            start,
            replay_until: (first < until).then_some(until),
            from,
        }
    }

    /// The first offset to read as a number, given the log's watermarks
    /// (a snapshot's offset no lower than the log's start).
    pub fn first_offset(&self, low: i64, high: i64, reset: OffsetReset) -> i64 {
        match self.start {
            Start::At(s) => s.max(low),
            Start::Earliest => low,
            Start::Latest => high,
            Start::Client => match reset {
                OffsetReset::Earliest => low,
                OffsetReset::Latest => high,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(snapshot: Option<i64>, committed: Option<i64>, low: Option<i64>) -> Known {
        Known {
            snapshot,
            committed,
            low,
            committed_beyond_log: false,
            reset: OffsetReset::Earliest,
        }
    }

    fn plan(start: Start, replay_until: Option<i64>, from: StateFrom) -> Plan {
        Plan {
            start,
            replay_until,
            from,
        }
    }

    /// The table of the module's documentation, row by row.
    #[test]
    fn decision_table() {
        use StateFrom::*;
        let rows = [
            // A snapshot behind the commit: replay from it to the commit.
            (
                known(Some(100), Some(150), Some(0)),
                plan(Start::At(100), Some(150), Snapshot),
            ),
            // A snapshot at the commit (or past it): nothing to replay.
            (
                known(Some(150), Some(150), Some(0)),
                plan(Start::At(150), None, Snapshot),
            ),
            (
                known(Some(160), Some(150), Some(0)),
                plan(Start::At(160), None, Snapshot),
            ),
            // The log's start past both: only what the log holds is replayed.
            (
                known(Some(100), Some(150), Some(150)),
                plan(Start::At(100), None, Snapshot),
            ),
            (
                known(Some(100), Some(150), Some(120)),
                plan(Start::At(100), Some(150), Snapshot),
            ),
            // A snapshot and no commit.
            (
                known(Some(100), None, Some(0)),
                plan(Start::At(100), None, Snapshot),
            ),
            // No snapshot, committed work: rebuilt from the log's start.
            (
                known(None, Some(150), Some(0)),
                plan(Start::Earliest, Some(150), Rebuild),
            ),
            (
                known(None, Some(150), Some(150)),
                plan(Start::Earliest, None, Rebuild),
            ),
            // Watermarks unknown: the log is taken to start at 0.
            (
                known(None, Some(150), None),
                plan(Start::Earliest, Some(150), Rebuild),
            ),
            // Nothing at all: the client's start.
            (known(None, None, Some(0)), plan(Start::Client, None, Empty)),
        ];
        for (k, want) in rows {
            assert_eq!(Plan::for_partition(&k), want, "{k:?}");
        }
    }

    #[test]
    fn a_commit_past_the_log_starts_from_the_reset_point_without_replay() {
        for (reset, start) in [
            (OffsetReset::Earliest, Start::Earliest),
            (OffsetReset::Latest, Start::Latest),
        ] {
            for (snapshot, from) in [(Some(100), StateFrom::Snapshot), (None, StateFrom::Rebuild)] {
                let k = Known {
                    committed_beyond_log: true,
                    reset,
                    ..known(snapshot, Some(500), Some(0))
                };
                assert_eq!(Plan::for_partition(&k), plan(start, None, from));
            }
        }
        // Without a commit there is nothing to be past.
        let k = Known {
            committed_beyond_log: true,
            ..known(None, None, Some(0))
        };
        assert_eq!(
            Plan::for_partition(&k),
            plan(Start::Client, None, StateFrom::Empty)
        );
    }

    #[test]
    fn first_offset_resolves_each_start_against_the_watermarks() {
        let at = |start| plan(start, None, StateFrom::Empty);
        use OffsetReset::{Earliest, Latest};
        assert_eq!(at(Start::At(5)).first_offset(10, 50, Earliest), 10);
        assert_eq!(at(Start::At(20)).first_offset(10, 50, Earliest), 20);
        assert_eq!(at(Start::Earliest).first_offset(10, 50, Latest), 10);
        assert_eq!(at(Start::Latest).first_offset(10, 50, Earliest), 50);
        assert_eq!(at(Start::Client).first_offset(10, 50, Earliest), 10);
        assert_eq!(at(Start::Client).first_offset(10, 50, Latest), 50);
    }

    #[test]
    fn names() {
        assert_eq!(StateFrom::Snapshot.as_str(), "snapshot");
        assert_eq!(StateFrom::Rebuild.as_str(), "rebuild");
        assert_eq!(StateFrom::Empty.as_str(), "empty");
    }
}
