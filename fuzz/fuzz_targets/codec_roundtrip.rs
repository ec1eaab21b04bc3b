//! What the store writes reads back the same: any sorted, distinct
//! timestamps (line protocol in ms takes any i64) and any values, raw and
//! as rollups, through `store::block::BlockBuilder` (which picks the codec
//! per column) and back through `Block::parse` and `read`. Input: a byte of
//! flags, then 16-byte (timestamp, value) pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use store::block::{Block, BlockBuilder, BlockKind};

fuzz_target!(|data: &[u8]| {
    let Some((flags, rest)) = perch_fuzz::selector(data) else {
        return;
    };
    let mut pairs: Vec<(i64, f64)> = rest
        .chunks_exact(16)
        .map(|c| {
            let t = i64::from_le_bytes(c[..8].try_into().unwrap());
            let v = f64::from_le_bytes(c[8..].try_into().unwrap());
            // Sensors send short decimals: make many of them so, to reach
            // the decimal codec.
            let v = if flags & 1 != 0 && v.is_finite() {
                (v % 1e6 * 100.0).round() / 100.0
            } else {
                v
            };
            // And regular timestamps: every 10 s plus jitter.
            let t = if flags & 2 != 0 {
                1_700_000_000_000 + (t & 0xffff) * 10_000 + (t >> 16 & 0x7)
            } else {
                t
            };
            (t, v)
        })
        .collect();
    pairs.sort_by_key(|p| p.0);
    pairs.dedup_by_key(|p| p.0);
    if pairs.is_empty() {
        return;
    }
    let ts: Vec<i64> = pairs.iter().map(|p| p.0).collect();
    let values: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    for kind in [BlockKind::Raw, BlockKind::Rollup] {
        let columns: Vec<Vec<f64>> = (0..kind.value_columns())
            .map(|c| {
                let mut v = values.clone();
                let n = v.len();
                v.rotate_left(c % n);
                v
            })
            .collect();
        let refs: Vec<&[f64]> = columns.iter().map(|c| &c[..]).collect();
        let mut b = BlockBuilder::new(kind);
        b.add(7, &ts, &refs);
        // A second series sharing the timestamp column.
        b.add(9, &ts, &refs);
        let bytes = b.finish();
        let block = Block::parse(&bytes).expect("a block just written parses");
        let read = block.read(None).expect("a block just written reads");
        assert_eq!(read.len(), 2);
        for (_, cols) in &read {
            assert_eq!(cols.ts, ts);
            for (got, want) in cols.values.iter().zip(&columns) {
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                        "{w:?} read back as {g:?}"
                    );
                }
            }
        }
    }
});
