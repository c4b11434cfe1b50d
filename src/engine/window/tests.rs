//! Unit tests of the bucketed windows.

use super::*;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn layout() -> WindowLayout {
    WindowLayout::new(&["1h", "24h", "7d", "30d"], 48).unwrap()
}

fn ins(seg: &mut Segment, l: &WindowLayout, t: i64, now: i64, c: Category, weight: f64) -> bool {
    seg.insert(l, t, &l.now_index(now), c, weight, RowSet::NONE) != 0
}

fn stats(seg: &Segment, l: &WindowLayout, w: usize, now: i64) -> WindowStats {
    let mut s = WindowStats::default();
    seg.accumulate(l, w, now, &mut s);
    s
}

#[test]
fn default_bucket_widths_are_w_over_48() {
    let l = layout();
    let widths: Vec<i64> = l.specs().iter().map(|s| s.bucket_ms).collect();
    assert_eq!(widths, vec![75_000, 30 * MIN, 210 * MIN, 15 * HOUR]);
    assert_eq!(l.longest(), Duration::from_secs(30 * 86_400));
}

#[test]
fn bad_window_lists_are_refused() {
    assert_eq!(WindowLayout::new::<&str>(&[], 48), Err(LayoutError::Empty));
    assert!(matches!(
        WindowLayout::new(&["soon"], 48),
        Err(LayoutError::Unparsable(_))
    ));
    assert!(matches!(
        WindowLayout::new(&["24h", "1day"], 48),
        Err(LayoutError::Duplicate(_))
    ));
    assert!(matches!(
        WindowLayout::new(&["10ms"], 48),
        Err(LayoutError::TooShort { .. })
    ));
    assert_eq!(WindowLayout::new(&["1h"], 1), Err(LayoutError::Buckets(1)));
}

#[test]
fn a_response_leaves_the_1h_window_but_stays_in_24h() {
    let l = layout();
    let mut seg = Segment::new(&l);
    let t0 = 1_700_000_000_000;
    assert!(ins(&mut seg, &l, t0, t0, Category::Promoter, 1.0));
    assert_eq!(stats(&seg, &l, 0, t0).promoters, 1);
    // 59 minutes later: still in the hour.
    assert_eq!(stats(&seg, &l, 0, t0 + 59 * MIN).promoters, 1);
    // 61 minutes later: gone from 1h, still in 24h.
    assert_eq!(stats(&seg, &l, 0, t0 + 61 * MIN).promoters, 0);
    assert_eq!(stats(&seg, &l, 1, t0 + 61 * MIN).promoters, 1);
    assert!(!seg.is_expired(&l, t0 + 61 * MIN));
    assert!(seg.is_expired(&l, t0 + 31 * 24 * HOUR));
}

#[test]
fn edge_error_is_at_most_one_bucket_and_never_older_than_w() {
    let l = WindowLayout::new(&["1h"], 48).unwrap();
    let b = 75_000;
    let start = b * 1_000_000; // first ms of a bucket
    let end = start + b - 1; // last ms of the same bucket
    // The bucket leaves the window when the clock enters bucket k + 48:
    // an answer from its first ms at age exactly W, one from its last
    // ms at age W − b + 1 (one bucket early, never late).
    let first = {
        let mut seg = Segment::new(&l);
        ins(&mut seg, &l, start, end, Category::Detractor, 1.0);
        seg
    };
    assert_eq!(stats(&first, &l, 0, start + HOUR - 1).detractors, 1);
    assert_eq!(stats(&first, &l, 0, start + HOUR).detractors, 0);
    let last = {
        let mut seg = Segment::new(&l);
        ins(&mut seg, &l, end, end, Category::Promoter, 1.0);
        seg
    };
    assert_eq!(stats(&last, &l, 0, end + HOUR - b).promoters, 1);
    assert_eq!(stats(&last, &l, 0, end + HOUR - b + 1).promoters, 0);
}

#[test]
fn only_buckets_in_use_take_memory_and_leave_with_the_window() {
    let l = layout();
    let mut seg = Segment::new(&l);
    let empty = seg.heap_bytes();
    let now = 1_700_000_000_000;
    // One answer: a bucket in each of the 4 rings.
    ins(&mut seg, &l, now, now, Category::Promoter, 1.0);
    assert_eq!(seg.buckets_in_use(), 4);
    // A second in the same 75 s: the same buckets.
    ins(&mut seg, &l, now + 1, now + 1, Category::Detractor, 1.0);
    assert_eq!(seg.buckets_in_use(), 4);
    // Three days old: only 7d and 30d hold it.
    ins(
        &mut seg,
        &l,
        now - 72 * HOUR,
        now + 1,
        Category::Passive,
        1.0,
    );
    assert_eq!(seg.buckets_in_use(), 6);
    // Two hours on, the 1h ring's bucket is gone, a new one is in use.
    ins(
        &mut seg,
        &l,
        now + 2 * HOUR,
        now + 2 * HOUR,
        Category::Promoter,
        1.0,
    );
    assert_eq!(seg.buckets_in_use(), 6 + 2);
    assert_eq!(stats(&seg, &l, 0, now + 2 * HOUR).responses(), 1);
    assert_eq!(stats(&seg, &l, 3, now + 2 * HOUR).responses(), 4);
    // 40 days on: every ring starts again from its one new bucket.
    let later = now + 40 * 24 * HOUR;
    ins(&mut seg, &l, later, later, Category::Detractor, 1.0);
    assert_eq!(seg.buckets_in_use(), 4);
    assert!(seg.heap_bytes() - empty <= 8 * std::mem::size_of::<Bucket>());
    // Every slot in use: 20 bytes a slot, and no more slots than that.
    let mut full = Segment::new(&l);
    for (w, spec) in l.specs().iter().enumerate() {
        for b in 0..48 {
            let t = now - b * spec.bucket_ms;
            ins(&mut full, &l, t, now, Category::Promoter, 1.0);
        }
        assert!(stats(&full, &l, w, now).responses() >= 48);
    }
    assert_eq!(full.buckets_in_use(), 4 * 48);
    assert!(full.heap_bytes() <= l.dense_segment_heap_bytes());
}

#[test]
fn too_old_for_every_window_is_not_placed() {
    let l = layout();
    let mut seg = Segment::new(&l);
    let now = 1_700_000_000_000;
    assert!(!ins(
        &mut seg,
        &l,
        now - 31 * 24 * HOUR,
        now,
        Category::Passive,
        1.0
    ));
    assert!(seg.is_expired(&l, now));
    for w in 0..4 {
        assert_eq!(stats(&seg, &l, w, now).responses(), 0);
    }
}

#[test]
fn out_of_order_response_lands_in_its_own_bucket() {
    let l = layout();
    let mut seg = Segment::new(&l);
    let now = 1_700_000_000_000;
    ins(&mut seg, &l, now, now, Category::Promoter, 2.0);
    ins(&mut seg, &l, now - 2 * HOUR, now, Category::Detractor, 4.0);
    let h = stats(&seg, &l, 0, now);
    assert_eq!((h.promoters, h.detractors), (1, 0));
    let d = stats(&seg, &l, 1, now);
    assert_eq!((d.promoters, d.detractors), (1, 1));
    assert_eq!((d.weight_net, d.weight_total), (-2.0, 6.0));
}

#[test]
fn snapshot_restores_exactly_and_merges_additively() {
    let l = layout();
    let mut seg = Segment::new(&l);
    let now = 1_700_000_000_000;
    for i in 0..500i64 {
        let c = Category::of_score((i % 11) as u32);
        ins(&mut seg, &l, now - i * 7 * MIN, now, c, 0.5 + i as f64);
    }
    let snap = seg.to_proto(&l, "p", "r");
    let mut back = Segment::new(&l);
    back.absorb(&l, &snap).unwrap();
    assert_eq!(back, seg);

    let mut twice = seg.clone();
    twice.absorb(&l, &snap).unwrap();
    for w in 0..4 {
        let one = stats(&seg, &l, w, now);
        let two = stats(&twice, &l, w, now);
        assert_eq!(two.responses(), 2 * one.responses());
        assert!(
            (two.weight_total - 2.0 * one.weight_total).abs() < 1e-6 * one.weight_total.max(1.0)
        );
    }
}

#[test]
fn inconsistent_snapshots_are_refused_untouched() {
    let l = layout();
    let mut seg = Segment::new(&l);
    let now = 1_700_000_000_000;
    ins(&mut seg, &l, now, now, Category::Promoter, 1.0);
    let mut snap = seg.to_proto(&l, "p", "r");
    snap.rings[0].buckets[0].index += 1000;
    let mut target = Segment::new(&l);
    assert!(target.absorb(&l, &snap).is_err());
    assert_eq!(target, Segment::new(&l));
    snap.rings.pop();
    assert!(target.absorb(&l, &snap).is_err());
}
