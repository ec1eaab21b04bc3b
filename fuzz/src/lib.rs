//! Helpers shared by perch's fuzz targets (`fuzz_targets/`).

use std::collections::HashSet;
use std::panic::PanicHookInfo;
use std::sync::{Mutex, Once};

/// The time every target reads as "now" and "received": fixed, so that a
/// crashing input replays the same way.
pub const NOW_MS: i64 = 1_700_000_000_000;

/// perch wraps a few third-party decoders in `catch_unwind` (rumqttd's MQTT
/// codecs, promql-parser) because they are known to panic on some inputs: a
/// panic raised inside one of `crates` and caught by perch is the defence
/// working, not a crash. libFuzzer's hook aborts on every panic, caught or
/// not; this hook lets those through (each place printed once) and aborts
/// on any other. A panic that escapes perch's guard still aborts the run
/// (libfuzzer-sys aborts when the target unwinds).
pub fn tolerate_caught_panics_in(crates: &'static [&'static str]) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo| {
            let file = info.location().map(|l| l.file()).unwrap_or_default();
            // Raised in the crate itself, or in the standard library on its
            // behalf (`Duration::from_secs_f64` inside promql-parser): a
            // frame of the crate is on the stack.
            let caught = crates
                .iter()
                .any(|c| file.contains(&format!("/{c}-")) || file.contains(&format!("/{c}/")))
                || {
                    let trace = std::backtrace::Backtrace::force_capture().to_string();
                    crates
                        .iter()
                        .any(|c| trace.contains(&format!("{}::", c.replace('-', "_"))))
                };
            if caught {
                static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
                let place = info.location().map(|l| l.to_string()).unwrap_or_default();
                let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
                if seen.get_or_insert_with(HashSet::new).insert(place.clone()) {
                    eprintln!("NOTE: tolerated a panic that perch catches, at {place}");
                }
                return;
            }
            abort_hook(info);
        }));
    });
}

/// Splits `data` at every zero byte.
pub fn zero_split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == 0)
}

/// A WAL segment from fuzz input: the first byte's low bit chooses the
/// bytes as they are, or record payloads (split at 0xA5) framed with a
/// right length and checksum, so that the record decoder is reached.
pub fn wal_segment(data: &[u8]) -> Option<Vec<u8>> {
    let (mode, rest) = selector(data)?;
    if mode & 1 == 0 {
        return Some(rest.to_vec());
    }
    let mut out = Vec::new();
    for payload in rest.split(|&b| b == 0xA5) {
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
    }
    Some(out)
}

/// The first byte as a selector and the rest.
pub fn selector(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(&s, rest)| (s, rest))
}

/// A small store for the query targets, opened once per process under
/// `$TMPDIR` (scripts/fuzz points it at a directory it removes): the
/// station's record of docs (seed-payloads.md §3) and a few sensors, an hour
/// of samples each, all in the head.
pub fn store() -> &'static std::sync::Arc<store::Storage> {
    use std::sync::{Arc, LazyLock};

    use base::{Clock, Labels, ManualClock, SeriesSamples};

    static STORE: LazyLock<Arc<store::Storage>> = LazyLock::new(|| {
        let dir = tempfile::Builder::new()
            .prefix("perch-fuzz-store")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let clock: Arc<dyn Clock> = ManualClock::new(NOW_MS);
        let cfg = config::StorageConfig {
            retention: config::Duration::from_secs(20 * 365 * 86_400),
            ..Default::default()
        };
        let storage = store::Storage::open(&cfg, &dir, clock)
            .expect("the store opens")
            .0;
        let mut batch = Vec::new();
        for (metric, labels) in [
            ("JNU_rasp_temp", &[("id", "RaspberryPi")][..]),
            ("JNU_rasp_light", &[("id", "RaspberryPi")][..]),
            ("env_temp", &[("site", "s1"), ("dev", "d1")][..]),
            ("env_temp", &[("site", "s2"), ("dev", "d2")][..]),
            ("http_requests_total", &[("code", "200"), ("le", "0.5")][..]),
            (
                "http_requests_total",
                &[("code", "500"), ("le", "+Inf")][..],
            ),
        ] {
            let mut l = Labels::from_pairs(labels.iter().copied());
            l.set(base::labels::METRIC_NAME, metric);
            let samples = (0..240)
                .map(|i| {
                    let t = NOW_MS - 3_600_000 + i * 15_000;
                    let v = match i % 17 {
                        0 => f64::NAN,
                        5 => -0.0,
                        _ => (i as f64 * 1.5).sin() * 100.0 + i as f64,
                    };
                    (t, v)
                })
                .collect();
            batch.push(SeriesSamples::new(l, samples));
        }
        storage.append(&batch).expect("the samples are stored");
        storage
    });
    &STORE
}
