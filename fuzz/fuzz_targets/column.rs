//! The column codecs alone (`store::codec::decode_timestamps`,
//! `decode_values`) on any bytes: first byte the codec, the next three the
//! item count, the rest the column. Reaches the codecs with counts and
//! contents a block header would not lead to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use store::codec::{decode_timestamps, decode_values, CodecId};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let Ok(codec) = CodecId::from_u8(data[0] & 3) else {
        return;
    };
    // At most 2^16 items: a count read from a block is checked against
    // 2^24 first, and the allocation is the caller's, not the codec's.
    let n = u16::from_le_bytes([data[1], data[2]]) as usize;
    let column = &data[4..];
    if data[3] & 1 == 0 {
        let mut out = Vec::new();
        if decode_timestamps(codec, column, n, &mut out).is_ok() {
            assert_eq!(out.len(), n);
        }
    } else {
        let mut out = Vec::new();
        if decode_values(codec, column, n, &mut out).is_ok() {
            assert_eq!(out.len(), n);
        }
    }
});
