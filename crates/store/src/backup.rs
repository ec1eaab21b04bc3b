//! Backups of the data directory while perch runs, and their restore.
//!
//! A backup is a plain tar: `FORMAT`, the block files, the WAL segments,
//! the camera snapshots, and `db.export` (every sled tree, written out
//! entry by entry). Consistency: under the maintenance lock (no checkpoint,
//! compaction or retention meanwhile) the WAL is synced, every file is
//! hard-linked into a staging directory with its size at that instant, and
//! only then is sled exported — so every series the copied WAL mentions is
//! in the export. The lock is held for the links only; the slow part,
//! streaming to the client, reads the links (append-only files, read up to
//! the recorded size), so ingestion and maintenance go on meanwhile.
//! The full-text search index (`search/`) is not included: it is rebuilt
//! empty after a restore (docs/ARCHITECTURE.md).

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{format, Storage, StorageError};

const EXPORT_FILE: &str = "db.export";
const STAGING_DIR: &str = "backup-staging";
/// Parts of the data directory that a backup carries, besides the export.
const PARTS: [&str; 3] = ["blocks", "wal", "snapshots"];

/// A backup ready to stream: staged links and their sizes. Dropping it
/// removes the staging directory.
pub struct BackupPlan {
    staging: PathBuf,
    /// (name in the tar, staged path, bytes)
    files: Vec<(String, PathBuf, u64)>,
}

impl Drop for BackupPlan {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.staging);
    }
}

fn tar_size(bytes: u64) -> u64 {
    512 + bytes.div_ceil(512) * 512
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{rel}/{name}");
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else if ty.is_file() {
            out.push((rel, entry.path()));
        }
    }
    Ok(())
}

/// Removes what backups interrupted by a crash left behind; called when the
/// store opens, when no backup can be running.
pub fn remove_stale_staging(data_dir: &Path) {
    let _ = fs::remove_dir_all(data_dir.join(STAGING_DIR));
}

impl Storage {
    /// Stages a consistent backup (see the module comment). Backups running
    /// at once each have their own staging directory.
    pub fn prepare_backup(&self) -> Result<BackupPlan, StorageError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let staging = self.data_dir.join(STAGING_DIR).join(n.to_string());
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging)?;
        let mut plan = BackupPlan {
            staging: staging.clone(),
            files: Vec::new(),
        };
        {
            let _serial = self.maintenance.lock();
            self.wal.flush()?;
            let mut found = vec![(
                format::FORMAT_FILE.to_string(),
                self.data_dir.join(format::FORMAT_FILE),
            )];
            for part in PARTS {
                walk(&self.data_dir.join(part), part, &mut found)?;
            }
            for (i, (name, path)) in found.into_iter().enumerate() {
                let link = staging.join(i.to_string());
                match fs::hard_link(&path, &link) {
                    Ok(()) => {}
                    // Deleted between listing and linking (a snapshot
                    // expiring): not part of this backup.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                let len = fs::metadata(&link)?.len();
                plan.files.push((name, link, len));
            }
            // Still under the lock: the window keys in sled must give
            // exactly the lengths of the block and index files just linked.
            let export = staging.join(EXPORT_FILE);
            let mut w = BufWriter::new(fs::File::create(&export)?);
            for name in self.db.tree_names() {
                let tree = self.db.open_tree(&name)?;
                w.write_all(&[1])?;
                write_chunk(&mut w, &name)?;
                for item in tree.iter() {
                    let (k, v) = item?;
                    w.write_all(&[2])?;
                    write_chunk(&mut w, &k)?;
                    write_chunk(&mut w, &v)?;
                }
            }
            w.write_all(&[0])?;
            w.into_inner().map_err(|e| e.into_error())?;
        }
        let export = staging.join(EXPORT_FILE);
        let len = fs::metadata(&export)?.len();
        plan.files.push((EXPORT_FILE.to_string(), export, len));
        Ok(plan)
    }
}

fn write_chunk(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    w.write_all(&(bytes.len() as u32).to_le_bytes())?;
    w.write_all(bytes)
}

/// No sled key or value perch writes comes near this.
const MAX_CHUNK: usize = 64 << 20;

fn read_chunk(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_CHUNK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{EXPORT_FILE}: a record of {len} bytes: the export is damaged"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

impl BackupPlan {
    /// The tar's exact length, for `Content-Length` and progress bars.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|(_, _, n)| tar_size(*n)).sum::<u64>() + 1024
    }

    pub fn write_tar(&self, out: impl Write) -> Result<(), StorageError> {
        let mut tar = tar::Builder::new(out);
        for (name, path, len) in &self.files {
            let mut header = tar::Header::new_ustar();
            header.set_size(*len);
            header.set_mode(0o644);
            header.set_mtime(
                fs::metadata(path)?
                    .modified()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
            header.set_entry_type(tar::EntryType::Regular);
            // A file cut shorter after it was linked (a rolled-back append)
            // is padded: the tar keeps the length it announced.
            let data = fs::File::open(path)?.chain(io::repeat(0)).take(*len);
            tar.append_data(&mut header, name, data)?;
        }
        tar.into_inner()?.flush()?;
        Ok(())
    }
}

/// What a restore put back.
#[derive(Debug, Default)]
pub struct RestoreSummary {
    pub files: usize,
    pub trees: usize,
    pub entries: usize,
}

/// Unpacks a backup into `data_dir`, which must be empty or absent (perch
/// stopped), and rebuilds the database from its export.
pub fn restore(input: impl Read, data_dir: &Path) -> Result<RestoreSummary, StorageError> {
    if data_dir.exists() && fs::read_dir(data_dir)?.next().is_some() {
        return Err(StorageError::Io(io::Error::other(format!(
            "{} is not empty: restore into a new directory, then point perch at it",
            data_dir.display()
        ))));
    }
    fs::create_dir_all(data_dir)?;
    let mut summary = RestoreSummary::default();
    let mut archive = tar::Archive::new(input);
    let mut export = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let allowed = name == format::FORMAT_FILE
            || name == EXPORT_FILE
            || PARTS.iter().any(|p| name.starts_with(&format!("{p}/")));
        if !allowed || name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(StorageError::Corrupt(format!(
                "the backup holds {name:?}, which is not part of a perch data directory"
            )));
        }
        let dest = if name == EXPORT_FILE {
            let p = data_dir.join(STAGING_DIR).join(EXPORT_FILE);
            export = Some(p.clone());
            p
        } else {
            data_dir.join(&name)
        };
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut f = fs::File::create(&dest)?;
        io::copy(&mut entry, &mut f)?;
        f.sync_all()?;
        summary.files += 1;
    }
    let Some(export) = export else {
        return Err(StorageError::Corrupt(format!(
            "the backup has no {EXPORT_FILE}: not a perch backup"
        )));
    };
    let db = format::open_db(data_dir, 8 << 20)?;
    let mut r = io::BufReader::new(fs::File::open(&export)?);
    let mut tree: Option<sled::Tree> = None;
    loop {
        let mut kind = [0u8; 1];
        r.read_exact(&mut kind)?;
        match kind[0] {
            0 => break,
            1 => {
                tree = Some(db.open_tree(read_chunk(&mut r)?)?);
                summary.trees += 1;
            }
            2 => {
                let (k, v) = (read_chunk(&mut r)?, read_chunk(&mut r)?);
                let Some(t) = &tree else {
                    return Err(StorageError::Corrupt(format!(
                        "{EXPORT_FILE}: an entry before any tree"
                    )));
                };
                t.insert(k, v)?;
                summary.entries += 1;
            }
            other => {
                return Err(StorageError::Corrupt(format!(
                    "{EXPORT_FILE}: unknown record kind {other}"
                )))
            }
        }
    }
    db.flush()?;
    drop(db);
    fs::remove_dir_all(data_dir.join(STAGING_DIR))?;
    Ok(summary)
}
