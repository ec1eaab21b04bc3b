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
    let Some(segment) = perch_fuzz::wal_segment(data) else {
        return;
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
