//! Starting on a damaged or hostile WAL (a restored backup carries its WAL
//! segments): `store::Storage::open` replays the segment into the series
//! index and the head and checkpoints it into blocks, then `perch check`
//! (`store::check::check`) reads the directory. Either may report damage;
//! neither may panic. Input as for `wal`: first byte bit 0 clear, a
//! segment's bytes; set, record payloads separated by 0xA5, each framed
//! with its right length and checksum. Each input gets a fresh copy of an
//! empty data directory under `$TMPDIR`.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use base::{Clock, ManualClock};
use libfuzzer_sys::fuzz_target;

fn config() -> config::StorageConfig {
    config::StorageConfig {
        retention: config::Duration::from_secs(20 * 365 * 86_400),
        ..Default::default()
    }
}

/// An empty data directory, made once by the store itself.
static TEMPLATE: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = tempfile::Builder::new()
        .prefix("perch-fuzz-template")
        .tempdir()
        .expect("a temporary directory")
        .keep()
        .join("data");
    let clock: Arc<dyn Clock> = ManualClock::new(perch_fuzz::NOW_MS);
    let (s, _) = store::Storage::open(&config(), &dir, clock).expect("a new store opens");
    s.close().expect("it closes");
    drop(s);
    for e in std::fs::read_dir(dir.join("wal")).expect("its WAL") {
        std::fs::remove_file(e.expect("a segment").path()).expect("removed");
    }
    dir
});

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("a directory");
    for e in std::fs::read_dir(from).expect("a directory") {
        let e = e.expect("an entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("a type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("a copy");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(segment) = perch_fuzz::wal_segment(data) else {
        return;
    };
    let root = tempfile::Builder::new()
        .prefix("perch-fuzz-open")
        .tempdir()
        .expect("a temporary directory");
    let dir = root.path().join("data");
    copy_dir(&TEMPLATE, &dir);
    std::fs::write(dir.join("wal").join("000000000001.wal"), &segment).expect("the segment");
    let clock: Arc<dyn Clock> = ManualClock::new(perch_fuzz::NOW_MS);
    match store::Storage::open(&config(), &dir, clock) {
        Ok((s, _)) => {
            let _ = s.close();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let report = store::check::check(&dir);
    let _ = report.ok();
});
