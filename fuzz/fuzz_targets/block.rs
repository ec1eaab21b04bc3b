//! Block decoding, as reads, compaction and `perch check` do it on what a
//! block file holds: `store::block::Block::parse` (the header and column
//! table), then every column decoded (raw, gorilla, pco, decimal+pco).
//! A corrupt block must be an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use store::block::Block;

fuzz_target!(|data: &[u8]| {
    let Ok(block) = Block::parse(data) else {
        return;
    };
    let _ = block.byte_breakdown();
    let ids: Vec<u32> = block.series_ids().collect();
    if let Some(first) = ids.first() {
        assert!(block.contains(*first));
        let _ = block.read(Some(&[*first]));
    }
    if let Ok(all) = block.read(None) {
        assert_eq!(all.len(), ids.len());
        for (_, cols) in &all {
            assert_eq!(cols.values.len(), block.kind.value_columns());
            for v in &cols.values {
                assert_eq!(v.len(), cols.ts.len());
            }
        }
    }
});
