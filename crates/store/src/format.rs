//! The on-disk format: its version number, the upgrade steps between versions
//! (one function per step, as Moonfire NVR's `db/upgrade/` does), opening sled
//! safely, and moving a database that cannot be opened out of the way.
//!
//! Data directory layout (version 2):
//! ```text
//! FORMAT              "perch data directory format 2"
//! db/                 sled: series, spans, block index, measurements, users, settings
//! blocks/{raw,1m,1h}/ one file per tier and time window: <start ms>-<generation>.dat
//! wal/                write-ahead log segments NNNNNNNNNNNN.wal
//! quarantine/         databases that could not be opened, with the reason
//! ```

use std::fs;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use super::StorageError;

pub const FORMAT_VERSION: u32 = 2;
pub(super) const FORMAT_FILE: &str = "FORMAT";
const FORMAT_PREFIX: &str = "perch data directory format ";

/// `UPGRADES[i]` turns a version `i + 1` directory into version `i + 2`.
/// Each step must be safe to re-run after a crash halfway through.
type UpgradeStep = fn(&Path) -> Result<(), StorageError>;
const UPGRADES: &[UpgradeStep] = &[v1_measurements];

/// 1 → 2: the tree `measurements` (metric name → the line-protocol
/// measurement and field it was written as). Version 1 never recorded them,
/// so the tree starts empty: those series keep the measurement InfluxQL
/// guesses from their name until a line-protocol write names them again.
fn v1_measurements(data_dir: &Path) -> Result<(), StorageError> {
    let db = open_db(data_dir, 8 << 20)?;
    db.open_tree(crate::measurements::TREE)?;
    set_db_version(&db, 2)?;
    db.flush()?;
    Ok(())
}

/// The version sled records, when it records one: a database that lost it
/// is damage that [`check_db_version`] reports, not something to upgrade.
fn set_db_version(db: &sled::Db, v: u32) -> Result<(), StorageError> {
    let meta = db.open_tree("meta")?;
    if meta.get("format")?.is_some() {
        meta.insert("format", &v.to_be_bytes())?;
    }
    Ok(())
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
    pub upgraded_from: Option<u32>,
}

/// Brings the directory to the current format: stamps a new one, upgrades an
/// old one step by step, refuses a newer one.
pub fn prepare(data_dir: &Path) -> Result<Prepared, StorageError> {
    match read_version(data_dir)? {
        None => {
            write_version(data_dir, FORMAT_VERSION)?;
            Ok(Prepared {
                new_directory: true,
                upgraded_from: None,
            })
        }
        Some(v) if v == FORMAT_VERSION => Ok(Prepared::default()),
        Some(v) if v > FORMAT_VERSION || v == 0 => Err(StorageError::FormatTooNew {
            dir: data_dir.to_path_buf(),
            found: v,
            supported: FORMAT_VERSION,
        }),
        Some(v) => {
            for (step, upgrade) in UPGRADES.iter().enumerate().skip(v as usize - 1) {
                tracing::info!(
                    from = step + 1,
                    to = step + 2,
                    "upgrading the data directory"
                );
                upgrade(data_dir)?;
                write_version(data_dir, step as u32 + 2)?;
            }
            Ok(Prepared {
                new_directory: false,
                upgraded_from: Some(v),
            })
        }
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
    new_directory: bool,
) -> Result<(), StorageError> {
    check_db_version(trees.db(), data_dir, new_directory)
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

/// Records the format version inside sled too. A database without it in a
/// directory that was already in use has been reset (sled treats a damaged
/// log as torn and opens empty): that is damage, not a fresh start, and must
/// not lead to the block files being cleaned up as orphans.
pub(crate) fn check_db_version(
    db: &sled::Db,
    data_dir: &Path,
    new_directory: bool,
) -> Result<(), StorageError> {
    let meta = db.open_tree("meta")?;
    match meta.get("format")? {
        Some(v) => {
            let v = u32::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("meta/format is not 4 bytes".into()))?,
            );
            if v != FORMAT_VERSION {
                return Err(StorageError::Corrupt(format!(
                    "database format {v} does not match {} ({FORMAT_VERSION})",
                    data_dir.join(FORMAT_FILE).display()
                )));
            }
        }
        None if new_directory => {
            meta.insert("format", &FORMAT_VERSION.to_be_bytes())?;
            db.flush()?;
        }
        None => {
            return Err(StorageError::Corrupt(format!(
                "the database in {} has lost its records (it opened empty in a directory that was in use)",
                data_dir.join("db").display()
            )))
        }
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
