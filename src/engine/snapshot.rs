//! Snapshots: the engine's state written out and read back exactly.
//!
//! The bytes are a `SnapshotEnvelope` (proto/nps/v1/snapshot.proto): a
//! format version, the encoded `EngineSnapshot`, and a CRC-32 of it. A
//! snapshot that fails the checksum, has an unknown version, was written
//! with another window layout, or contradicts itself is refused with a
//! `SnapshotError` and nothing is loaded.

use prost::Message;

use super::breakdowns::Values;
use super::{Engine, EngineConfig, PartitionState, Segment};
use crate::pb;

/// The format this build writes by default, and the newest it reads.
/// 2: dedup entries carry each response's latest version (1 kept ids
/// and first-sight times only).
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format this build reads: each format reads the one before
/// it, so a rolling update or a rollback across one release keeps every
/// window (docs/operations.md, "Upgrading and rolling back").
pub const OLDEST_READ: u32 = 1;

/// Whether this build reads (and so may write) snapshot `format`.
pub fn readable(format: u32) -> bool {
    (OLDEST_READ..=FORMAT_VERSION).contains(&format)
}

/// The `updated_at` given to an id read from a format-1 snapshot: later
/// than any version can be, so every later version of it is stale.
const UNREPLACEABLE_MS: i64 = i64::MAX;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot cannot be decoded: {0}")]
    Undecodable(String),
    #[error("snapshot checksum mismatch")]
    Checksum,
    #[error("snapshot format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    Version(u32),
    #[error("snapshot was written with other windows")]
    Layout,
    #[error("snapshot is inconsistent: {0}")]
    Corrupt(String),
    #[error("engine config: {0}")]
    Config(#[from] super::ConfigError),
}

impl SnapshotError {
    /// A short name for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            SnapshotError::Undecodable(_) => "undecodable",
            SnapshotError::Checksum => "checksum",
            SnapshotError::Version(_) => "version",
            SnapshotError::Layout => "layout",
            SnapshotError::Corrupt(_) => "corrupt",
            SnapshotError::Config(_) => "config",
        }
    }
}

/// Wraps a snapshot body in the versioned, checksummed envelope.
pub fn encode(snapshot: &pb::EngineSnapshot) -> Vec<u8> {
    encode_as(snapshot, FORMAT_VERSION)
}

/// `encode`, marked as `format` (`OLDEST_READ..=FORMAT_VERSION`). Format
/// 2 only adds fields, which a format-1 reader skips (the versions, the
/// theme rows), so the body is the same: a format-1 build reads the
/// windows and the remembered ids, and this build reads it all back.
pub fn encode_as(snapshot: &pb::EngineSnapshot, format: u32) -> Vec<u8> {
    let body = snapshot.encode_to_vec();
    pb::SnapshotEnvelope {
        format_version: format,
        crc32: crc32fast::hash(&body),
        body,
    }
    .encode_to_vec()
}

/// Opens an envelope, checking version and checksum.
pub fn decode(bytes: &[u8]) -> Result<pb::EngineSnapshot, SnapshotError> {
    let env = pb::SnapshotEnvelope::decode(bytes)
        .map_err(|e| SnapshotError::Undecodable(e.to_string()))?;
    if !readable(env.format_version) {
        return Err(SnapshotError::Version(env.format_version));
    }
    if crc32fast::hash(&env.body) != env.crc32 {
        return Err(SnapshotError::Checksum);
    }
    let mut snapshot = pb::EngineSnapshot::decode(env.body.as_slice())
        .map_err(|e| SnapshotError::Undecodable(e.to_string()))?;
    if env.format_version == 1 {
        versions_from_format_1(&mut snapshot);
    }
    Ok(snapshot)
}

/// A format-1 build kept a remembered id's first sight only. Each such id
/// gets a version that no later one replaces: a later version of it is
/// stale (`Outcome::Stale`, counted, as format 1 took it for a duplicate),
/// and nothing is ever taken out of the windows for it. A body a later
/// build wrote as format 1 (`encode_as`) keeps its versions and is left
/// as it is.
fn versions_from_format_1(snapshot: &mut pb::EngineSnapshot) {
    for dedup in snapshot
        .partitions
        .iter_mut()
        .filter_map(|p| p.dedup.as_mut())
    {
        if !dedup.versions.is_empty() || dedup.id_hashes.is_empty() {
            continue;
        }
        let segment = dedup.products.len() as u32;
        dedup.products.push(super::OTHER.into());
        dedup.regions.push(super::OTHER.into());
        dedup.versions = dedup
            .seen_at_ms
            .iter()
            .map(|&seen| pb::VersionRecord {
                updated_at_ms: Some(UNREPLACEABLE_MS),
                t_ms: seen,
                segment,
                ..Default::default()
            })
            .collect();
    }
}

/// The segments a partition's dedup entries name, by index in order of
/// first use: `DedupSnapshot.products` / `regions`.
struct SegmentNames<'a> {
    engine: &'a Engine,
    index: std::collections::HashMap<super::KeyId, u32>,
    products: Vec<&'a str>,
    regions: Vec<&'a str>,
    /// The breakdown values versions name, by index in order of first use:
    /// `DedupSnapshot.breakdown_labels` / `breakdown_values`.
    value_index: std::collections::HashMap<(usize, super::KeyId), u32>,
    labels: Vec<&'a str>,
    values: Vec<&'a str>,
}

impl<'a> SegmentNames<'a> {
    fn new(engine: &'a Engine) -> Self {
        SegmentNames {
            engine,
            index: Default::default(),
            products: Vec::new(),
            regions: Vec::new(),
            value_index: Default::default(),
            labels: Vec::new(),
            values: Vec::new(),
        }
    }

    /// A version's segment and breakdown values by index, named on first
    /// use.
    fn version(&mut self, v: &super::dedup::Version) -> (u32, Vec<u32>) {
        let segment = self.index(v.key);
        let values = Values(v.values)
            .iter()
            .map(|(i, key)| {
                if let Some(&j) = self.value_index.get(&(i, key)) {
                    return j;
                }
                let b = &self.engine.breakdowns;
                self.labels
                    .push(b.labels().get(i).map_or("", String::as_str));
                self.values.push(b.name(i, key).unwrap_or(super::UNKNOWN));
                let j = self.labels.len() as u32 - 1;
                self.value_index.insert((i, key), j);
                j
            })
            .collect();
        (segment, values)
    }

    /// The index of `key`'s segment, named on first use.
    fn index(&mut self, key: super::KeyId) -> u32 {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let (p, r) = self
            .engine
            .keys
            .name(key)
            .unwrap_or((super::OTHER, super::OTHER));
        self.products.push(p);
        self.regions.push(r);
        let i = self.products.len() as u32 - 1;
        self.index.insert(key, i);
        i
    }
}

impl Engine {
    /// The whole engine's state.
    pub fn snapshot(&self) -> pb::EngineSnapshot {
        pb::EngineSnapshot {
            windows: self.layout.to_proto(),
            now_ms: self.now_ms,
            partitions: self
                .partitions
                .keys()
                .filter_map(|&p| self.partition_snapshot(p))
                .collect(),
        }
    }

    /// One partition's state (its segments and its dedup ids), or `None`
    /// if the engine holds nothing for it.
    pub fn partition_snapshot(&self, partition: i32) -> Option<pb::PartitionSnapshot> {
        let part = self.partitions.get(&partition)?;
        let segments = self
            .named_segments(part)
            .into_iter()
            .map(|(product, region, seg)| seg.to_proto(&self.layout, product, region))
            .collect();
        Some(pb::PartitionSnapshot {
            partition,
            segments,
            dedup: Some(self.dedup_proto(part)),
            theme_segments: self.theme_rings_proto(part),
            breakdown_segments: self.breakdowns.to_proto(&part.breakdowns, &self.layout),
            ..Default::default()
        })
    }

    /// `dedup_proto`'s message, encoded as field `tag` straight into
    /// `buf` (room reserved for it and the record's last fields): the
    /// message's arrays, about 70 bytes an entry against 44 encoded and
    /// grown by doubling, are never made. Two passes
    /// over the entries: the first for the lengths and the segments'
    /// indexes, the second writes. The bytes are `dedup_proto`'s (a test
    /// holds it).
    pub(super) fn encode_dedup(&self, part: &PartitionState, tag: u32, buf: &mut Vec<u8>) {
        use prost::encoding::{
            WireType, encode_key, encode_varint, encoded_len_varint, key_len, message, string,
        };
        /// Room for the fields written after the dedup entries.
        const TAIL: usize = 4096;
        let mut names = SegmentNames::new(self);
        let (mut n, mut seen_len, mut versions_len) = (0usize, 0usize, 0usize);
        for (_, seen, v) in part.dedup.iter() {
            let (segment, values) = names.version(&v);
            n += 1;
            seen_len += encoded_len_varint(seen as u64);
            let len = v.to_proto(segment, values).encoded_len();
            versions_len += key_len(3) + encoded_len_varint(len as u64) + len;
        }
        let packed = |field: u32, len: usize| match len {
            0 => 0,
            _ => key_len(field) + encoded_len_varint(len as u64) + len,
        };
        let strings = |field: u32, names: &[&str]| -> usize {
            names
                .iter()
                .map(|s| key_len(field) + encoded_len_varint(s.len() as u64) + s.len())
                .sum()
        };
        let themes: Vec<&str> = self.themes.iter().map(String::as_str).collect();
        let len = packed(1, 8 * n)
            + packed(2, seen_len)
            + versions_len
            + strings(4, &names.products)
            + strings(5, &names.regions)
            + strings(6, &themes)
            + strings(7, &names.labels)
            + strings(8, &names.values);
        buf.reserve(key_len(tag) + encoded_len_varint(len as u64) + len + TAIL);
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        if n > 0 {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint((8 * n) as u64, buf);
            for (id, _, _) in part.dedup.iter() {
                buf.extend_from_slice(&id.to_le_bytes());
            }
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(seen_len as u64, buf);
            for (_, seen, _) in part.dedup.iter() {
                encode_varint(seen as u64, buf);
            }
            for (_, _, v) in part.dedup.iter() {
                let (segment, values) = names.version(&v);
                message::encode(3, &v.to_proto(segment, values), buf);
            }
        }
        for p in &names.products {
            string::encode(4, &p.to_string(), buf);
        }
        for r in &names.regions {
            string::encode(5, &r.to_string(), buf);
        }
        for t in &self.themes {
            string::encode(6, t, buf);
        }
        for l in &names.labels {
            string::encode(7, &l.to_string(), buf);
        }
        for v in &names.values {
            string::encode(8, &v.to_string(), buf);
        }
    }

    /// A partition's dedup entries, versions naming their segments.
    pub(super) fn dedup_proto(&self, part: &PartitionState) -> pb::DedupSnapshot {
        let mut names = SegmentNames::new(self);
        let mut snap = part.dedup.to_proto(|v| names.version(v));
        let strings = |s: &[&str]| s.iter().map(|p| p.to_string()).collect();
        snap.products = strings(&names.products);
        snap.regions = strings(&names.regions);
        snap.themes.clone_from(&self.themes);
        snap.breakdown_labels = strings(&names.labels);
        snap.breakdown_values = strings(&names.values);
        snap
    }

    /// A partition's segments with their product and region, sorted by
    /// them: equal states give equal snapshot bytes.
    pub(super) fn named_segments<'a>(
        &'a self,
        part: &'a PartitionState,
    ) -> Vec<(&'a str, &'a str, &'a Segment)> {
        let mut segments: Vec<(&str, &str, &Segment)> = part
            .segments
            .iter()
            .filter_map(|(key, seg)| {
                let (product, region) = self.keys.name(key)?;
                Some((product, region, seg))
            })
            .collect();
        segments.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        segments
    }

    /// A state record for recovery through Kafka: one partition's state
    /// (empty if the engine holds nothing for it), the window layout, the
    /// engine's clock, and the input position it reflects, in the envelope.
    ///
    /// Written straight into the record, one segment at a time: the bytes
    /// are the only copy of the state made (no message tree of the whole
    /// partition, no second buffer for the envelope). Protobuf fields may
    /// come in any order, so each message's repeated payload goes first and
    /// the lengths, known last, go into room kept at the front.
    pub fn partition_state_record(
        &self,
        partition: i32,
        source_topic: &str,
        next_offset: i64,
    ) -> Vec<u8> {
        let mut buf = Vec::new();
        self.partition_state_record_into(partition, source_topic, next_offset, &mut buf);
        buf
    }

    /// `partition_state_record` written into `buf` (cleared first), whose
    /// memory a caller may keep from one record to the next.
    pub fn partition_state_record_into(
        &self,
        partition: i32,
        source_topic: &str,
        next_offset: i64,
        buf: &mut Vec<u8>,
    ) {
        use prost::encoding::{WireType, encode_key, encode_varint, message};
        // Envelope key + body length + EngineSnapshot.partitions key + length.
        const ROOM: usize = 2 * (1 + 10);
        buf.clear();
        buf.resize(ROOM, 0);
        // PartitionSnapshot: segments, partition, dedup, source topic, offset.
        if let Some(part) = self.partitions.get(&partition) {
            let segments = self.named_segments(part);
            for &(product, region, seg) in &segments {
                message::encode(2, &seg.to_proto(&self.layout, product, region), buf);
            }
            self.encode_dedup(part, 3, buf);
            for (product, region, seg) in segments {
                let names = (product, region);
                seg.encode_rows(&self.layout, names, |i| self.row_name(i), (6, buf));
            }
            for s in self.breakdowns.to_proto(&part.breakdowns, &self.layout) {
                message::encode(7, &s, buf);
            }
        }
        prost::encoding::int32::encode(1, &partition, buf);
        prost::encoding::string::encode(4, &source_topic.to_string(), buf);
        prost::encoding::int64::encode(5, &next_offset, buf);
        let part_len = buf.len() - ROOM;
        // EngineSnapshot: partitions (above), windows, clock.
        for w in self.layout.to_proto() {
            message::encode(1, &w, buf);
        }
        prost::encoding::int64::encode(2, &self.now_ms, buf);
        let body_end = buf.len();
        // The two headers, right-aligned in the room.
        let mut head = Vec::with_capacity(ROOM);
        encode_key(3, WireType::LengthDelimited, &mut head);
        encode_varint(part_len as u64, &mut head);
        let body_len = head.len() + (body_end - ROOM);
        let mut outer = Vec::with_capacity(ROOM);
        encode_key(2, WireType::LengthDelimited, &mut outer);
        encode_varint(body_len as u64, &mut outer);
        let body_start = ROOM - head.len();
        let start = body_start - outer.len();
        buf[body_start..ROOM].copy_from_slice(&head);
        buf[start..body_start].copy_from_slice(&outer);
        let crc = crc32fast::hash(&buf[body_start..body_end]);
        // Envelope: body (above), version, checksum.
        prost::encoding::uint32::encode(1, &self.snapshot_format, buf);
        prost::encoding::fixed32::encode(3, &crc, buf);
        buf.drain(..start);
    }

    /// Loads a state record written by `partition_state_record` for this
    /// partition of this topic; returns the input offset it reflects. On
    /// error (damaged, other version, other windows, another partition's)
    /// the engine is unchanged.
    pub fn restore_state_record(
        &mut self,
        bytes: &[u8],
        partition: i32,
        source_topic: &str,
    ) -> Result<i64, SnapshotError> {
        let snap = decode(bytes)?;
        self.check_layout(&snap)?;
        let [part] = snap.partitions.as_slice() else {
            return Err(SnapshotError::Corrupt(format!(
                "{} partitions in a state record",
                snap.partitions.len()
            )));
        };
        if part.partition != partition || part.source_topic != source_topic {
            return Err(SnapshotError::Corrupt(format!(
                "state of {}/{} found for {source_topic}/{partition}",
                part.source_topic, part.partition
            )));
        }
        if part.next_offset < 0 {
            return Err(SnapshotError::Corrupt("negative offset".into()));
        }
        self.restore_partition(part)?;
        self.tick(snap.now_ms);
        Ok(part.next_offset)
    }

    /// Builds an engine from a snapshot taken with the same windows (not
    /// counting themes: see `restore_themed`).
    pub fn restore(
        config: &EngineConfig,
        snapshot: &pb::EngineSnapshot,
    ) -> Result<Engine, SnapshotError> {
        Engine::new(config)?.restored(snapshot)
    }

    /// Builds an engine counting `themes` (`set_themes`) from a snapshot
    /// taken with the same windows.
    pub fn restore_themed(
        config: &EngineConfig,
        themes: &[String],
        snapshot: &pb::EngineSnapshot,
    ) -> Result<Engine, SnapshotError> {
        let mut engine = Engine::new(config)?;
        engine.set_themes(themes);
        engine.restored(snapshot)
    }

    /// This engine with `snapshot` loaded.
    fn restored(mut self, snapshot: &pb::EngineSnapshot) -> Result<Engine, SnapshotError> {
        self.check_layout(snapshot)?;
        self.tick(snapshot.now_ms);
        for p in &snapshot.partitions {
            self.restore_partition(p)?;
        }
        Ok(self)
    }

    /// Whether a snapshot's rings fit this engine's windows.
    pub fn check_layout(&self, snapshot: &pb::EngineSnapshot) -> Result<(), SnapshotError> {
        if self.layout.matches_proto(&snapshot.windows) {
            Ok(())
        } else {
            Err(SnapshotError::Layout)
        }
    }

    /// Loads a partition's remembered answers into `part` (being built
    /// aside), their segments and breakdown values admitted by name.
    fn absorb_dedup(
        &mut self,
        part: &mut PartitionState,
        d: &pb::DedupSnapshot,
    ) -> Result<(), SnapshotError> {
        if d.products.len() != d.regions.len()
            || d.breakdown_labels.len() != d.breakdown_values.len()
        {
            return Err(SnapshotError::Corrupt(
                "segment names differ in length".into(),
            ));
        }
        let now = self.now_ms;
        let keys = &mut self.keys;
        let names: Vec<super::KeyId> = d
            .products
            .iter()
            .zip(&d.regions)
            .map(|(p, r)| keys.resolve(p, r, now).key)
            .collect();
        let numbers = self.theme_numbers(&d.themes);
        let b = &mut self.breakdowns;
        let pairs: Vec<Option<(usize, super::KeyId)>> = d
            .breakdown_labels
            .iter()
            .zip(&d.breakdown_values)
            .map(|(l, v)| {
                let i = b.index_of(l)?;
                Some((i, b.resolve_name(i, v, now)?))
            })
            .collect();
        let values = |indexes: &[u32]| {
            let mut values = Values::default();
            for (i, key) in indexes
                .iter()
                .filter_map(|&j| pairs.get(j as usize).copied().flatten())
            {
                values.set(i, key);
            }
            values.0
        };
        part.dedup
            .absorb(
                d,
                |i| names.get(i as usize).copied(),
                |bits| super::themes::renumber(bits, &numbers),
                values,
            )
            .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        Ok(())
    }

    /// Loads one partition's snapshot, replacing whatever the engine held
    /// for that partition. Segments beyond the cardinality limit fold into
    /// `__other__`. All or nothing: on error the engine is unchanged.
    pub fn restore_partition(&mut self, snap: &pb::PartitionSnapshot) -> Result<(), SnapshotError> {
        // Build the partition aside so a corrupt snapshot changes nothing.
        let mut part = self.new_partition();
        let value_windows = self
            .breakdowns
            .stage(&self.layout, &snap.breakdown_segments, self.now_ms)
            .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        if let Some(d) = &snap.dedup {
            self.absorb_dedup(&mut part, d)?;
        }
        let mut staged: Vec<(&pb::SegmentSnapshot, Segment)> =
            Vec::with_capacity(snap.segments.len());
        for s in &snap.segments {
            let mut seg = Segment::with_rows(&self.layout, self.theme_totals.per_key());
            seg.absorb(&self.layout, s)
                .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
            staged.push((s, seg));
        }
        let theme_rings = self.stage_theme_rings(&snap.theme_segments)?;
        self.drop_partition(snap.partition);
        let newest = staged
            .iter()
            .map(|(_, seg)| seg.latest_ms())
            .max()
            .unwrap_or(i64::MIN);
        let now = self.tick(newest);
        for (s, seg) in staged {
            let key = self.keys.resolve(&s.product, &s.region, now).key;
            // Segments beyond the table fold into `__other__`, merged.
            let placed = (part.segments.place(key, seg, (&self.layout, s)))
                .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
            if placed {
                self.keys.hold(key);
            }
        }
        self.place_theme_rings(&mut part, theme_rings, now)?;
        self.breakdowns
            .place(&mut part.breakdowns, &self.layout, value_windows)
            .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        self.partitions.insert(snap.partition, part);
        self.theme_totals.invalidate(u64::MAX);
        self.alert_stats.forget_all();
        Ok(())
    }
}
