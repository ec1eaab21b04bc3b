//! WAL segments as start-up replays them and `perch check` reads them
//! (`store::read_records`): torn or corrupt records end the replay, never
//! panic. First byte: bit 0 clear takes the rest as a segment's bytes as
//! they are; set, it takes the rest as record payloads separated by the
//! byte 0xA5, each framed with its right length and checksum, so that the
//! record decoder itself is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use store::WalRecord;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = perch_fuzz::selector(data) else {
        return;
    };
    let segment: Vec<u8> = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut out = Vec::new();
        for payload in rest.split(|&b| b == 0xA5) {
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            out.extend_from_slice(payload);
        }
        out
    };
    let mut samples = 0;
    let stats = store::read_records(&segment, |rec| match rec {
        WalRecord::Series { labels, .. } => {
            let _ = labels.to_string();
        }
        WalRecord::Samples(s) => samples += s.len(),
    });
    assert_eq!(stats.samples, samples);
    assert!(stats.torn_bytes as usize <= segment.len());
});
