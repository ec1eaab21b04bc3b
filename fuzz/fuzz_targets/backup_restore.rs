//! Restoring a backup (`perch restore`, `store::backup::restore`): a tar
//! read entry by entry, files written under the new data directory, the
//! sled database rebuilt from `db.export`. A damaged or hostile tar must be
//! an error, never a panic, and nothing may be written outside the data
//! directory. Each input restores into a fresh directory under `$TMPDIR`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let root = tempfile::Builder::new()
        .prefix("perch-fuzz-restore")
        .tempdir()
        .expect("a temporary directory");
    let data_dir = root.path().join("data");
    let result = store::backup::restore(data, &data_dir);
    if let Err(e) = &result {
        let _ = e.to_string();
    }
    // Only the data directory may have appeared.
    let names: Vec<_> = std::fs::read_dir(root.path())
        .expect("the temporary directory")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert!(
        names.iter().all(|n| n == "data"),
        "the restore wrote outside its data directory: {names:?}"
    );
});
