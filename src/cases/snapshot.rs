//! The tracker's state of one partition, written out and read back
//! exactly (`CasesPartitionSnapshot` in proto/nps/v1/cases.proto). Events
//! waiting for their alert are not in it (their records are read again).

use super::{Case, Last, NEVER, SegmentId, Tracker, halves, join};
use crate::pb::{self, AlertPriority, CaseState};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CasesSnapshotError {
    #[error("cases snapshot is inconsistent: {0}")]
    Corrupt(String),
    #[error(
        "cases snapshot format version {0} is not read (this build reads {CASES_OLDEST_READ} to {CASES_FORMAT_VERSION})"
    )]
    Version(u32),
}

impl CasesSnapshotError {
    pub fn reason(&self) -> &'static str {
        match self {
            CasesSnapshotError::Corrupt(_) => "corrupt",
            CasesSnapshotError::Version(_) => "version",
        }
    }
}

impl<O> Tracker<O> {
    /// One partition's cases and customers, with the input positions they
    /// reflect.
    pub fn partition_snapshot(
        &self,
        partition: i32,
        alerts_next_offset: i64,
        events_next_offset: i64,
    ) -> pb::CasesPartitionSnapshot {
        let mut cases: Vec<pb::CaseRecord> = self
            .cases
            .iter()
            .filter(|(_, c)| c.partition == partition)
            .map(|(alert, c)| {
                let [alert_hi, alert_lo] = halves(alert);
                let [previous_hi, previous_lo] = c.previous;
                let (product, region) = self.segment_name(c.segment);
                pb::CaseRecord {
                    alert_hi,
                    alert_lo,
                    alert_offset: c.alert_offset,
                    opened_at_ms: c.opened_at,
                    state_at_ms: c.state_at,
                    contacted_at_ms: c.contacted().then_some(c.contacted_at),
                    previous_offset: None,
                    previous_hi,
                    previous_lo,
                    product: product.into(),
                    region: region.into(),
                    priority: i32::from(c.priority),
                    state: i32::from(c.state),
                    escalated: u32::from(c.escalated),
                    overdue: c.overdue,
                }
            })
            .collect();
        cases.sort_by_key(|c| (c.opened_at_ms, c.alert_hi, c.alert_lo));
        let mut customers: Vec<pb::CustomerRecord> = self
            .customers
            .get(&partition)
            .into_iter()
            .flat_map(|known| known.iter())
            .map(|(hash, c)| {
                let [alert_hi, alert_lo] = halves(c.alert);
                pb::CustomerRecord {
                    hash,
                    last_opened_ms: c.opened_ms,
                    alert_offset: 0,
                    alert_hi,
                    alert_lo,
                }
            })
            .collect();
        customers.sort_by_key(|c| (c.last_opened_ms, c.hash));
        pb::CasesPartitionSnapshot {
            partition,
            cases,
            customers,
            alerts_next_offset,
            events_next_offset,
        }
    }

    /// Replaces what the tracker holds of the snapshot's partition with it.
    /// All or nothing: a snapshot that contradicts itself changes nothing.
    pub fn restore_partition(
        &mut self,
        snap: &pb::CasesPartitionSnapshot,
    ) -> Result<(), CasesSnapshotError> {
        let corrupt = |s: String| Err(CasesSnapshotError::Corrupt(s));
        let p = snap.partition;
        let mut seen = std::collections::HashSet::new();
        for c in &snap.cases {
            let alert = join([c.alert_hi, c.alert_lo]);
            if alert == 0 || !seen.insert(alert) {
                return corrupt("a zero or repeated alert id".into());
            }
            if self.cases.get(&alert).is_some_and(|x| x.partition != p) {
                return corrupt("an alert held by another partition".into());
            }
            if AlertPriority::try_from(c.priority).is_err()
                || CaseState::try_from(c.state).is_err()
                || c.escalated > 3
                || c.contacted_at_ms == Some(NEVER)
                || c.previous_offset.is_some_and(|o| o < 0)
            {
                return corrupt("an unknown priority, state or escalation".into());
            }
        }
        self.drop_partition(p);
        for c in &snap.cases {
            let alert = join([c.alert_hi, c.alert_lo]);
            let segment: SegmentId = self.segment(&c.product, &c.region);
            let case = Case {
                alert_offset: c.alert_offset,
                opened_at: c.opened_at_ms,
                state_at: c.state_at_ms,
                contacted_at: c.contacted_at_ms.unwrap_or(NEVER),
                // Format 2 kept an offset: the id is not known.
                previous: [c.previous_hi, c.previous_lo],
                segment,
                partition: p,
                priority: AlertPriority::try_from(c.priority).unwrap_or_default() as u8,
                state: CaseState::try_from(c.state).unwrap_or_default() as u8,
                escalated: c.escalated as u8,
                overdue: c.overdue && c.contacted_at_ms.is_none(),
            };
            self.make_room();
            if case.open() {
                let counts = self.count(&case);
                counts.open += 1;
                if case.overdue {
                    counts.overdue += 1;
                }
                if !case.contacted() {
                    // The next check: level 1 until it ran (it marks the
                    // case overdue), then level 2 until that one was sent.
                    if !case.overdue {
                        self.due.insert(case.due_at(&self.config, 1), alert);
                    } else if case.escalated & 2 == 0 {
                        self.due.insert(case.due_at(&self.config, 2), alert);
                    }
                }
            } else {
                self.closed.insert((case.forget_at(&self.config), alert));
            }
            self.cases.insert(alert, case);
        }
        let known = self.customers.entry(p).or_default();
        for c in &snap.customers {
            let last = Last {
                opened_ms: c.last_opened_ms,
                alert: join([c.alert_hi, c.alert_lo]),
            };
            if known.set(c.hash, last) {
                self.customer_count += 1;
            }
        }
        Ok(())
    }
}

/// Version of the cases snapshot envelope written. 3: previous and last
/// alerts by id (a repeat's escalation needs no read-back); 2 kept their
/// offsets and is still read (those ids are then not known); 1 is not.
pub const CASES_FORMAT_VERSION: u32 = 3;

/// The oldest version still read.
pub const CASES_OLDEST_READ: u32 = 2;

/// Wraps a partition's snapshot in the versioned, checksummed envelope.
///
/// Written in one buffer of the exact size, the body first: protobuf
/// fields may come in any order, and the checksum is known only once the
/// body is written. The snapshot is held once, never copied into an
/// envelope.
pub fn encode_snapshot(snap: &pb::CasesPartitionSnapshot) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_snapshot_into(snap, &mut buf);
    buf
}

/// `encode_snapshot` into `buf` (cleared first), whose memory a caller may
/// keep from one snapshot to the next.
pub fn encode_snapshot_into(snap: &pb::CasesPartitionSnapshot, buf: &mut Vec<u8>) {
    use prost::Message;
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    let len = snap.encoded_len();
    buf.clear();
    // Body's key and length, body, version (key + varint), checksum.
    buf.reserve_exact(key_len(2) + encoded_len_varint(len as u64) + len + 16);
    encode_key(2, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    let start = buf.len();
    snap.encode_raw(buf);
    let crc = crc32fast::hash(&buf[start..]);
    prost::encoding::uint32::encode(1, &CASES_FORMAT_VERSION, buf);
    prost::encoding::fixed32::encode(3, &crc, buf);
}

/// Opens an envelope written by `encode_snapshot`.
pub fn decode_snapshot(bytes: &[u8]) -> Result<pb::CasesPartitionSnapshot, CasesSnapshotError> {
    use prost::Message;
    let env = pb::SnapshotEnvelope::decode(bytes)
        .map_err(|e| CasesSnapshotError::Corrupt(e.to_string()))?;
    if !(CASES_OLDEST_READ..=CASES_FORMAT_VERSION).contains(&env.format_version) {
        return Err(CasesSnapshotError::Version(env.format_version));
    }
    if crc32fast::hash(&env.body) != env.crc32 {
        return Err(CasesSnapshotError::Corrupt("checksum".into()));
    }
    pb::CasesPartitionSnapshot::decode(env.body.as_slice())
        .map_err(|e| CasesSnapshotError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{AlertIn, CaseConfig, Opened};
    use prost::Message;

    /// `encode_snapshot`'s envelope, marked as another version.
    fn envelope(version: u32, snap: &pb::CasesPartitionSnapshot) -> Vec<u8> {
        let mut env = pb::SnapshotEnvelope::decode(encode_snapshot(snap).as_slice()).unwrap();
        env.format_version = version;
        env.encode_to_vec()
    }

    fn alert(n: u128, at: i64) -> AlertIn<'static> {
        AlertIn {
            alert: n,
            customer_id: "ana",
            product: "p",
            region: "r",
            priority: AlertPriority::Normal,
            emitted_at_ms: at,
            partition: 0,
            offset: n as i64,
        }
    }

    #[test]
    fn format_3_keeps_the_previous_alert_id_and_format_2_is_still_read() {
        let mut t = Tracker::<()>::new(CaseConfig::default());
        t.open(&alert(11, 1_000));
        t.open(&alert(12, 2_000));
        let snap = t.partition_snapshot(0, 13, 0);
        let back = decode_snapshot(&encode_snapshot(&snap)).unwrap();
        assert_eq!(back, snap);
        let mut u = Tracker::<()>::new(CaseConfig::default());
        u.restore_partition(&back).unwrap();
        // The customer's last alert (12) is named by the next repeat.
        let Opened::New {
            repeat: Some(e), ..
        } = u.open(&alert(13, 3_000))
        else {
            panic!("not a repeat");
        };
        assert_eq!(e.previous, Some(12));

        // Format 2 (offsets, no ids): read; the customer is still known,
        // the previous alert's id is not.
        let mut old = snap.clone();
        for c in &mut old.cases {
            (c.previous_hi, c.previous_lo) = (0, 0);
            c.previous_offset = (c.alert_lo == 12).then_some(11);
        }
        for c in &mut old.customers {
            (c.alert_hi, c.alert_lo, c.alert_offset) = (0, 0, 12);
        }
        let back = decode_snapshot(&envelope(2, &old)).unwrap();
        let mut v = Tracker::<()>::new(CaseConfig::default());
        v.restore_partition(&back).unwrap();
        assert_eq!(v.len(), 2);
        let Opened::New {
            repeat: Some(e), ..
        } = v.open(&alert(13, 3_000))
        else {
            panic!("not a repeat");
        };
        assert_eq!(e.previous, None);

        for version in [1, 4] {
            assert_eq!(
                decode_snapshot(&envelope(version, &snap)),
                Err(CasesSnapshotError::Version(version))
            );
        }
        let mut bad = pb::SnapshotEnvelope::decode(encode_snapshot(&snap).as_slice()).unwrap();
        bad.crc32 ^= 1;
        assert!(decode_snapshot(&bad.encode_to_vec()).is_err());
    }
}
