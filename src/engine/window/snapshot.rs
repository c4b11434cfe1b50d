//! A segment's rings as snapshot records, and back.

use super::{CorruptSegment, NO_EVENT, Segment, WindowLayout};
use crate::pb;

impl Segment {
    pub(crate) fn to_proto(
        &self,
        layout: &WindowLayout,
        product: &str,
        region: &str,
    ) -> pb::SegmentSnapshot {
        let rings = (0..layout.len())
            .map(|w| {
                let mut buckets = Vec::new();
                self.ring_buckets(layout, w, |idx, r| {
                    let b = &self.buckets[r];
                    if !b.is_empty() {
                        buckets.push(pb::BucketSnapshot {
                            index: idx,
                            promoters: b.promoters,
                            passives: b.passives,
                            detractors: b.detractors,
                            weight_net: b.weight_net,
                            weight_total: b.weight_total,
                        });
                    }
                });
                buckets.sort_unstable_by_key(|b| b.index);
                let [open_weight_net, open_weight_total] = self.open(layout, w);
                pb::RingSnapshot {
                    open_weight_net,
                    open_weight_total,
                    buckets,
                }
            })
            .collect();
        pb::SegmentSnapshot {
            product: product.to_string(),
            region: region.to_string(),
            latest_ms: self.latest_ms,
            rings,
            ..Default::default()
        }
    }

    /// Adds a snapshotted segment into this one. Into an empty segment this
    /// restores it exactly; into a live one (two segments folded into
    /// `__other__`) it merges them.
    pub(crate) fn absorb(
        &mut self,
        layout: &WindowLayout,
        s: &pb::SegmentSnapshot,
    ) -> Result<(), CorruptSegment> {
        // Check everything before changing anything.
        if !check(layout, s)? {
            return Ok(());
        }
        self.advance_to(layout, s.latest_ms);
        for (w, ring) in s.rings.iter().enumerate() {
            let spec = &layout.specs[w];
            let n = i64::from(spec.buckets);
            let own_head = self.latest_ms.div_euclid(spec.bucket_ms);
            let their_head = s.latest_ms.div_euclid(spec.bucket_ms);
            for b in &ring.buckets {
                if b.index <= own_head - n || (b.promoters | b.passives | b.detractors) == 0 {
                    continue; // older than what this ring still holds, or nothing
                }
                let (net, total) = if b.index == their_head {
                    (ring.open_weight_net, ring.open_weight_total)
                } else {
                    (f64::from(b.weight_net), f64::from(b.weight_total))
                };
                let r = self.bucket_or_new(layout, w, layout.ring_slot(w, b.index));
                let slot = &mut self.buckets[r];
                slot.promoters = slot.promoters.saturating_add(b.promoters);
                slot.passives = slot.passives.saturating_add(b.passives);
                slot.detractors = slot.detractors.saturating_add(b.detractors);
                if b.index == own_head {
                    self.add_open(layout, w, net, total);
                } else {
                    slot.weight_net += net as f32;
                    slot.weight_total += total as f32;
                }
            }
        }
        Ok(())
    }
}

/// Whether a snapshotted segment fits the layout and its own head (buckets
/// inside their rings, in order; finite weights). `Ok(false)`: it holds no
/// event.
pub(crate) fn check(
    layout: &WindowLayout,
    s: &pb::SegmentSnapshot,
) -> Result<bool, CorruptSegment> {
    if s.rings.len() != layout.len() {
        return Err(CorruptSegment("ring count differs from the window layout"));
    }
    if s.latest_ms == NO_EVENT {
        return if s.rings.iter().all(|r| r.buckets.is_empty()) {
            Ok(false)
        } else {
            Err(CorruptSegment("buckets in a segment with no event"))
        };
    }
    for (w, ring) in s.rings.iter().enumerate() {
        let spec = &layout.specs[w];
        let head = s.latest_ms.div_euclid(spec.bucket_ms);
        let mut prev = i64::MIN;
        for b in &ring.buckets {
            if b.index <= head - i64::from(spec.buckets) || b.index > head || b.index <= prev {
                return Err(CorruptSegment("bucket outside its ring or out of order"));
            }
            prev = b.index;
        }
        let weights = [ring.open_weight_net, ring.open_weight_total];
        if weights.iter().any(|x| !x.is_finite())
            || ring
                .buckets
                .iter()
                .any(|b| !b.weight_net.is_finite() || !b.weight_total.is_finite())
        {
            return Err(CorruptSegment("weight is not finite"));
        }
    }
    Ok(true)
}
