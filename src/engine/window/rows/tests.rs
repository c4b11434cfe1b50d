use super::{Blocks, Cells};
use proptest::prelude::*;

/// Sets row `i` of the bucket at `r` to `to`, from `from`.
fn set(rows: &mut Blocks, (r, i): (usize, usize), from: [u32; 3], to: [u32; 3]) {
    let delta = [0, 1, 2].map(|c| i64::from(to[c]) - i64::from(from[c]));
    rows.add(r, i, delta);
}

proptest! {
    /// Buckets put in use and freed in any order keep each bucket's
    /// rows, narrow or wide: what a model holding them in the buckets'
    /// order says.
    #[test]
    fn each_bucket_keeps_its_rows_as_buckets_come_and_go(
        steps in proptest::collection::vec((any::<bool>(), 0usize..64, 1usize..8), 1..300),
        big in 0usize..400,
    ) {
        let k = 7;
        let mut rows = Blocks { per_bucket: k as u8, ..Blocks::default() };
        let mut model: Vec<Vec<[u32; 3]>> = Vec::new();
        let mut widened = false;
        for (n, (put, at, len)) in steps.into_iter().enumerate() {
            if put || model.is_empty() {
                let r = at % (model.len() + 1);
                rows.insert(r);
                model.insert(r, vec![[0; 3]; k]);
            } else if at % 3 != 0 {
                // A count in one of the rows of a bucket in use; one
                // step's count is past what a narrow cell holds.
                let (r, i) = (at % model.len(), len % k);
                let first = if n == big { 70_000 } else { n as u32 + 1 };
                let mark = [first, 1, 2];
                set(&mut rows, (r, i), model[r][i], mark);
                model[r][i] = mark;
                widened |= n == big;
            } else {
                let r = at % model.len();
                let end = (r + len).min(model.len());
                rows.remove(r..end);
                model.drain(r..end);
            }
            for (r, block) in model.iter().enumerate() {
                let kept: Vec<[u32; 3]> = (0..k).map(|i| rows.get(r, i)).collect();
                prop_assert_eq!(&kept, block);
            }
            // One cell per row counted in a bucket in use, none for
            // the others; wide once a count passed 65,535.
            let counted: usize = model.iter().flatten().filter(|c| **c != [0; 3]).count();
            prop_assert_eq!(rows.len(), counted);
            prop_assert_eq!(rows.starts.len(), model.len());
            prop_assert_eq!(matches!(rows.cells, Cells::Wide(_)), widened);
        }
    }
}

#[test]
fn a_count_past_16_bits_widens_every_cell() {
    let mut rows = Blocks {
        per_bucket: 3,
        ..Blocks::default()
    };
    for r in 0..3 {
        rows.insert(r);
        rows.add(r, r, [1, 0, 2]);
    }
    rows.add(1, 0, [0, 65_535, 0]);
    assert!(matches!(rows.cells, Cells::Narrow(_)));
    rows.add(1, 0, [0, 1, 0]);
    assert!(matches!(rows.cells, Cells::Wide(_)));
    assert_eq!(rows.get(1, 0), [0, 65_536, 0]);
    for r in 0..3 {
        assert_eq!(rows.get(r, r), [1, 0, 2]);
    }
    rows.add(1, 0, [0, -65_536, 0]);
    assert_eq!(rows.get(1, 0), [0, 0, 0]);
}
