//! The on-disk format: its version number, the upgrade steps between versions
//! (one function per step, as Moonfire NVR's `db/upgrade/` does), opening sled
//! safely, and moving a database that cannot be opened out of the way.
//!
//! Data directory layout (version 4):
//! ```text
//! FORMAT              "perch data directory format 4"
//! db/                 sled: series, spans, windows, measurements, users, settings
//! blocks/{raw,1m,1h}/ per tier and time window: <start ms>-<generation>.dat (blocks)
//!                     and .idx (where each block lies)
//! wal/                write-ahead log segments NNNNNNNNNNNN.wal
//! quarantine/         databases that could not be opened, with the reason
//! ```

use std::fs;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use super::StorageError;

pub const FORMAT_VERSION: u32 = 4;
pub(super) const FORMAT_FILE: &str = "FORMAT";
const FORMAT_PREFIX: &str = "perch data directory format ";

/// `UPGRADES[i]` turns a version `i + 1` database into version `i + 2`.
/// Steps run on the database [`Storage::open`](crate::Storage::open) opened
/// (opening sled twice in a row races its lock), and each must be safe to
/// re-run after a crash halfway through.
type UpgradeStep = fn(&sled::Db, &Path) -> Result<(), StorageError>;
const UPGRADES: &[UpgradeStep] = &[v1_measurements, v2_decimal_wal, v3_block_index_files];

/// 1 → 2: the tree `measurements` (metric name → the line-protocol
/// measurement and field it was written as). Version 1 never recorded them,
/// so the tree starts empty: those series keep the measurement InfluxQL
/// guesses from their name until a line-protocol write names them again.
fn v1_measurements(db: &sled::Db, _data_dir: &Path) -> Result<(), StorageError> {
    db.open_tree(crate::measurements::TREE)?;
    Ok(())
}

/// 2 → 3: WAL sample records store decimal values as integers (record kind
/// 3, `wal.rs`). Nothing to convert: segments of format 2 still replay; the
/// version only keeps an older perch, which would read the new records as a
/// torn log and drop them, from opening the directory.
fn v2_decimal_wal(_db: &sled::Db, _data_dir: &Path) -> Result<(), StorageError> {
    Ok(())
}

/// 3 → 4: the block index leaves sled for one `.idx` file beside each
/// window's blocks (`block_index.rs` says why).
fn v3_block_index_files(db: &sled::Db, data_dir: &Path) -> Result<(), StorageError> {
    crate::files::upgrade_index_from_sled(db, &data_dir.join("blocks"))
}

/// The format version recorded in the directory, if any.
pub fn read_version(data_dir: &Path) -> Result<Option<u32>, StorageError> {
    match fs::read_to_string(data_dir.join(FORMAT_FILE)) {
        Ok(text) => {
            let v = text
                .trim()
                .strip_prefix(FORMAT_PREFIX)
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    StorageError::Corrupt(format!(
                        "{} does not name a format version",
                        data_dir.join(FORMAT_FILE).display()
                    ))
                })?;
            Ok(Some(v))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn write_version(data_dir: &Path, v: u32) -> Result<(), StorageError> {
    let tmp = data_dir.join("FORMAT.tmp");
    fs::write(&tmp, format!("{FORMAT_PREFIX}{v}\n"))?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, data_dir.join(FORMAT_FILE))?;
    fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

/// What [`prepare`] found.
#[derive(Clone, Copy, Debug, Default)]
pub struct Prepared {
    /// The directory had no format stamp: it is being created now.
    pub new_directory: bool,
    /// The directory's older format, which [`stamp_or_check`] (or
    /// [`Storage::open`](crate::Storage::open)) upgrades once the database
    /// is open.
    pub upgrade_from: Option<u32>,
}

/// Reads the directory's format: stamps a new directory, refuses a newer
/// format, and says whether an older one needs upgrading.
pub fn prepare(data_dir: &Path) -> Result<Prepared, StorageError> {
    match read_version(data_dir)? {
        None => {
            write_version(data_dir, FORMAT_VERSION)?;
            Ok(Prepared {
                new_directory: true,
                upgrade_from: None,
            })
        }
        Some(v) if v == FORMAT_VERSION => Ok(Prepared::default()),
        Some(v) if v > FORMAT_VERSION || v == 0 => Err(StorageError::FormatTooNew {
            dir: data_dir.to_path_buf(),
            found: v,
            supported: FORMAT_VERSION,
        }),
        Some(v) => Ok(Prepared {
            new_directory: false,
            upgrade_from: Some(v),
        }),
    }
}

/// The database alone, with a small cache, for commands that work on other
/// crates' trees while no server runs (`perch user`). Check its format with
/// [`stamp_or_check`] before use.
pub fn open_trees(data_dir: &Path) -> Result<crate::Trees, StorageError> {
    open_db(data_dir, 8 << 20).map(|db| crate::Trees::new(db, Some(data_dir.to_path_buf()), None))
}

/// [`check_db_version`] for trees opened with [`open_trees`].
pub fn stamp_or_check(
    trees: &crate::Trees,
    data_dir: &Path,
    prepared: Prepared,
) -> Result<(), StorageError> {
    check_db_version(trees.db(), data_dir, prepared)
}

/// Opens sled with a bounded cache. sled can panic on a damaged database;
/// that is turned into an error so the caller can move it aside.
pub(crate) fn open_db(data_dir: &Path, cache_bytes: u64) -> Result<sled::Db, StorageError> {
    let config = sled::Config::new()
        .path(data_dir.join("db"))
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::LowSpace)
        .flush_every_ms(Some(1000));
    match catch_unwind(AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        // Always WouldBlock, whatever sled said: [`is_in_use`] tells it so.
        Ok(Err(sled::Error::Io(e))) if is_lock_error(&e) => Err(StorageError::Io(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{} is in use by another perch process", data_dir.display()),
        ))),
        Ok(Err(e)) => Err(e.into()),
        Err(panic) => Err(StorageError::Corrupt(format!(
            "sled panicked while opening: {}",
            panic_message(&panic)
        ))),
    }
}

/// Whether [`open_db`] failed because another process (a running perch)
/// holds the database: nothing is wrong with it.
pub fn is_in_use(e: &StorageError) -> bool {
    matches!(e, StorageError::Io(e) if e.kind() == io::ErrorKind::WouldBlock)
}

fn is_lock_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.to_string().contains("lock")
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Whether an open failure means the data is damaged (and moving it aside
/// helps), as opposed to a lock held by another process or a permission or
/// disk problem that a fresh database would hit too.
pub fn is_damage(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::Corrupt(_)
            | StorageError::Block(_)
            | StorageError::Db(
                sled::Error::Corruption { .. }
                    | sled::Error::ReportableBug(_)
                    | sled::Error::Unsupported(_)
            )
    )
}

/// Records the format version inside sled too, and upgrades an older
/// directory step by step. A database without the version in a directory
/// that was already in use has been reset (sled treats a damaged log as torn
/// and opens empty): that is damage, not a fresh start, and must not lead to
/// the block files being cleaned up as orphans.
pub(crate) fn check_db_version(
    db: &sled::Db,
    data_dir: &Path,
    prepared: Prepared,
) -> Result<(), StorageError> {
    let meta = db.open_tree("meta")?;
    let recorded = match meta.get("format")? {
        Some(v) => u32::from_be_bytes(v.as_ref().try_into().map_err(|_| {
            StorageError::Corrupt("meta/format is not 4 bytes".into())
        })?),
        None if prepared.new_directory => {
            meta.insert("format", &FORMAT_VERSION.to_be_bytes())?;
            db.flush()?;
            FORMAT_VERSION
        }
        None => {
            return Err(StorageError::Corrupt(format!(
                "the database in {} has lost its records (it opened empty in a directory that was in use)",
                data_dir.join("db").display()
            )))
        }
    };
    let found = prepared.upgrade_from.unwrap_or(FORMAT_VERSION);
    // A crash during an upgrade leaves sled up to one step ahead of FORMAT.
    if recorded < found || recorded > FORMAT_VERSION {
        return Err(StorageError::Corrupt(format!(
            "database format {recorded} does not match {} ({found})",
            data_dir.join(FORMAT_FILE).display()
        )));
    }
    for v in found..FORMAT_VERSION {
        tracing::info!(from = v, to = v + 1, "upgrading the data directory");
        UPGRADES[v as usize - 1](db, data_dir)?;
        meta.insert("format", &(v + 1).to_be_bytes())?;
        db.flush()?;
        write_version(data_dir, v + 1)?;
    }
    Ok(())
}

/// Moves the database, blocks and WAL into `quarantine/<time>/` with a file
/// saying why, leaving the directory ready for a fresh start.
pub fn quarantine(data_dir: &Path, reason: &str) -> Result<PathBuf, StorageError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let dest = data_dir.join("quarantine").join(stamp);
    fs::create_dir_all(&dest)?;
    for part in ["db", "blocks", "wal", FORMAT_FILE] {
        let src = data_dir.join(part);
        if src.exists() {
            fs::rename(&src, dest.join(part))?;
        }
    }
    fs::write(dest.join("REASON"), format!("{reason}\n"))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_directories_are_stamped_and_newer_ones_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(prepare(d.path()).unwrap().new_directory);
        assert!(!prepare(d.path()).unwrap().new_directory);
        assert_eq!(read_version(d.path()).unwrap(), Some(FORMAT_VERSION));
        write_version(d.path(), FORMAT_VERSION + 1).unwrap();
        let e = prepare(d.path()).unwrap_err();
        assert!(e.to_string().contains("upgrade perch"), "{e}");
    }
}
