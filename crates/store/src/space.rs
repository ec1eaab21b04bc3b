//! Keeping room on the data partition. sled cannot recover from running out of
//! space while the process lives (its first failed write poisons the database
//! until it is reopened), so perch must never let the partition fill:
//!
//! - below `storage.min_free_disk_bytes` free, maintenance drops the oldest data;
//! - a ballast file (`reserve.bin`, 1–16 MiB), kept while less than 1 GiB is
//!   free, holds back room that is given up the moment free space runs short,
//!   even if something else filled the disk, so the index updates that drop
//!   old data can still be written;
//! - while free space is below the ballast's size, or would be once what
//!   writes hold in memory is written, writes are refused;
//! - the disk budget ([`Budget`]) is kept before anything is written.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use base::disk::partition_usage;

const BALLAST_FILE: &str = "reserve.bin";
/// With more free space than this, a fast-filling disk is far away and the
/// ballast would only take room in the data directory.
const BALLAST_BELOW_FREE: u64 = 1 << 30;

pub struct SpaceGuard {
    data_dir: PathBuf,
    ballast_bytes: u64,
    reserve_bytes: u64,
    critical: AtomicBool,
}

/// What one look at the partition found.
pub struct SpaceCheck {
    pub free_bytes: u64,
    /// Writes must be refused.
    pub critical: bool,
    /// Just became critical or recovered (worth reporting).
    pub changed: bool,
}

impl SpaceGuard {
    pub fn new(data_dir: &Path, partition_bytes: u64, min_free_bytes: u64) -> SpaceGuard {
        let ballast_bytes = (partition_bytes / 50).clamp(1 << 20, 16 << 20);
        let g = SpaceGuard {
            data_dir: data_dir.to_path_buf(),
            ballast_bytes,
            reserve_bytes: min_free_bytes.min(partition_bytes / 10),
            critical: AtomicBool::new(false),
        };
        g.check();
        g
    }

    fn ballast_path(&self) -> PathBuf {
        self.data_dir.join(BALLAST_FILE)
    }

    /// Free space maintenance keeps: the configured reserve, and at least
    /// twice the ballast.
    pub fn target_free(&self) -> u64 {
        self.reserve_bytes.max(2 * self.ballast_bytes)
    }

    pub fn is_critical(&self) -> bool {
        self.critical.load(Ordering::SeqCst)
    }

    /// The write path's check: one statvfs, which notices a filling disk
    /// between the flusher's looks. Only ever raises the alarm; `check`
    /// lowers it.
    pub fn refuse_writes(&self, free: u64) -> bool {
        if self.is_critical() {
            return true;
        }
        if free < self.ballast_bytes {
            self.critical.store(true, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// Free space writes must leave on the partition, counting what they
    /// hold in memory: one ballast's worth.
    pub fn keep_free_for_writes(&self) -> u64 {
        self.ballast_bytes
    }

    pub fn free_bytes(&self) -> u64 {
        partition_usage(&self.data_dir)
            .map(|u| u.free_bytes)
            .unwrap_or(u64::MAX)
    }

    /// Looks at the partition: gives up the ballast when space is short and
    /// takes it back when there is plenty.
    pub fn check(&self) -> SpaceCheck {
        let mut free = self.free_bytes();
        let ballast = self.ballast_path();
        let has_ballast = ballast.exists();
        if free < self.ballast_bytes && has_ballast && std::fs::remove_file(&ballast).is_ok() {
            tracing::warn!(free, "disk nearly full: released the space reserve");
            free = self.free_bytes();
        } else if !has_ballast && free >= 3 * self.ballast_bytes && free < BALLAST_BELOW_FREE {
            if let Err(e) = create_ballast(&ballast, self.ballast_bytes) {
                tracing::debug!(error = %e, "could not create the space reserve");
                let _ = std::fs::remove_file(&ballast);
            }
        } else if has_ballast && free > 2 * BALLAST_BELOW_FREE {
            let _ = std::fs::remove_file(&ballast);
        }
        let was = self.is_critical();
        // Refuse below one ballast's worth, accept again from two.
        let critical = if was {
            free < 2 * self.ballast_bytes
        } else {
            free < self.ballast_bytes
        };
        self.critical.store(critical, Ordering::SeqCst);
        SpaceCheck {
            free_bytes: free,
            critical,
            changed: was != critical,
        }
    }
}

fn create_ballast(path: &Path, bytes: u64) -> io::Result<()> {
    let f = File::create(path)?;
    // Allocate for real (a sparse file would hold nothing back).
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < bytes {
        let n = (bytes - written).min(chunk.len() as u64) as usize;
        std::io::Write::write_all(&mut &f, &chunk[..n])?;
        written += n as u64;
    }
    f.sync_all()
}

/// The disk budget (`storage.max_disk_bytes`) kept as a ledger, so that it
/// holds before anything is written rather than being restored afterwards:
///
/// - *used*: what the data directory held at the last look (the store's
///   files every `flush_interval`, the rest of the directory — search
///   index, snapshots — every few seconds), plus every byte written or
///   reserved since (block appends, WAL writes, snapshots); a write still
///   in flight at a look is counted as not yet on disk;
/// - *pending*: what was accepted into memory and will be written: the WAL
///   buffer, and for the samples not yet in blocks an estimate of their
///   blocks (12 bytes a sample, which blocks rarely exceed; a checkpoint
///   reserves the exact difference when it does).
///
/// Writes (appends, snapshots) are admitted while used + pending + their
/// cost stays within the budget less a maintenance reserve; maintenance
/// (checkpoints, merges, rollups) may use the reserve, never more; dropping
/// old data needs none. The quarantine, the space ballast and backup staging
/// are not counted (see [`NOT_COUNTED`]).
pub struct Budget {
    limit: std::sync::atomic::AtomicU64,
    reserve: std::sync::atomic::AtomicU64,
    ledger: parking_lot::Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    /// The store's files (db/, blocks/, wal/) at the last look, and what of
    /// `written` was on disk by then.
    store_seen: u64,
    store_base: u64,
    /// The rest of the data directory at the last look, likewise.
    others_seen: u64,
    others_base: u64,
    /// Bytes written or reserved since start: by the store, by others; and
    /// of those, the ones whose write has not finished.
    written: u64,
    inflight: u64,
    others_written: u64,
    others_inflight: u64,
    /// Accepted into memory, not yet on disk.
    pending: u64,
}

impl Ledger {
    fn store(&self) -> u64 {
        self.store_seen + self.written.saturating_sub(self.store_base)
    }

    fn others(&self) -> u64 {
        self.others_seen + self.others_written.saturating_sub(self.others_base)
    }

    fn total(&self) -> u64 {
        self.store() + self.others() + self.pending
    }

    fn usage(&self, budget: u64, reserve: u64) -> Usage {
        Usage {
            budget,
            reserve,
            store: self.store(),
            others: self.others(),
            pending: self.pending,
        }
    }
}

/// Where the budget stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub budget: u64,
    /// Of the budget, kept for maintenance: writes stop short of it.
    pub reserve: u64,
    /// The store's files: database, blocks, WAL.
    pub store: u64,
    /// Other files in the data directory: search index, snapshots.
    pub others: u64,
    /// Accepted, in memory, not yet written.
    pub pending: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.store + self.others + self.pending
    }
}

/// Room taken in the disk budget for a write about to happen; dropped once
/// the write is done (or failed), so that the next look at the disk counts
/// it from the file.
#[must_use = "hold the reservation until the write is done"]
pub struct Reservation {
    budget: Option<Arc<Budget>>,
    bytes: u64,
    other: bool,
}

impl Reservation {
    /// A reservation of nothing (no budget is kept, as for the command line).
    pub fn none() -> Reservation {
        Reservation {
            budget: None,
            bytes: 0,
            other: false,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            let mut l = b.ledger.lock();
            if self.other {
                l.others_inflight = l.others_inflight.saturating_sub(self.bytes);
            } else {
                l.inflight = l.inflight.saturating_sub(self.bytes);
            }
        }
    }
}

/// Names in the data directory the budget does not count: not perch's
/// data (a damaged database set aside, the space ballast) or transient
/// (backup staging: hard links to the store's files and an export of the
/// database, removed when the download ends).
const NOT_COUNTED: [&str; 3] = ["quarantine", BALLAST_FILE, "backup-staging"];
/// The store's own parts of the data directory.
pub(crate) const STORE_PARTS: [&str; 3] = ["db", "blocks", "wal"];

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit: limit.into(),
            reserve: maintenance_reserve(limit).into(),
            ledger: Default::default(),
        }
    }

    /// Another limit, for tests that shrink the budget under stored data.
    #[cfg(test)]
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::SeqCst);
        self.reserve
            .store(maintenance_reserve(limit), Ordering::SeqCst);
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::SeqCst)
    }

    fn reserve(&self) -> u64 {
        self.reserve.load(Ordering::SeqCst)
    }

    /// Writes are admitted up to here.
    pub fn write_limit(&self) -> u64 {
        self.limit().saturating_sub(self.reserve())
    }

    /// Maintenance drops old data while usage is above here, so that writes
    /// find room before they reach [`Budget::write_limit`].
    pub fn low_water(&self) -> u64 {
        self.limit().saturating_sub(2 * self.reserve())
    }

    pub fn usage(&self) -> Usage {
        self.ledger.lock().usage(self.limit(), self.reserve())
    }

    /// Admits samples about to be appended, `wal` bytes of log and an
    /// estimate of their blocks: there must be room below the write limit
    /// for both, and on the partition above `keep_free` of `free` bytes.
    /// Reserves the blocks' share; the WAL reserves its own as it buffers
    /// ([`Budget::add_pending`]). The caller holds the head lock, so
    /// admissions do not race each other.
    pub fn admit(&self, wal: u64, blocks: u64, free: u64, keep_free: u64) -> Result<(), Refusal> {
        let mut l = self.ledger.lock();
        let need = wal.saturating_add(blocks);
        if l.total().saturating_add(need) > self.write_limit() {
            return Err(Refusal::Budget(l.usage(self.limit(), self.reserve())));
        }
        // Free space counts what is already written; what is in memory
        // still has to fit.
        if free < keep_free.saturating_add(l.pending).saturating_add(need) {
            return Err(Refusal::Partition);
        }
        l.pending += blocks;
        Ok(())
    }

    /// Room for a file another part of perch is about to write (a snapshot).
    pub fn reserve_other(self: &Arc<Self>, bytes: u64) -> Result<Reservation, Usage> {
        let mut l = self.ledger.lock();
        if l.total().saturating_add(bytes) > self.write_limit() {
            return Err(l.usage(self.limit(), self.reserve()));
        }
        l.others_written += bytes;
        l.others_inflight += bytes;
        Ok(Reservation {
            budget: Some(self.clone()),
            bytes,
            other: true,
        })
    }

    /// Room for `bytes` a maintenance step is about to write, taken from
    /// the reserve if need be; `release` of them were reserved as pending
    /// already (a checkpoint's estimate) and are converted. With `force`
    /// (acknowledged data being made durable at start) it is taken even
    /// past the budget.
    pub fn reserve_maintenance(
        self: &Arc<Self>,
        bytes: u64,
        release: u64,
        force: bool,
    ) -> Result<Reservation, Usage> {
        let mut l = self.ledger.lock();
        let release = release.min(l.pending);
        let after = l.total() - release + bytes;
        if after > self.limit() && bytes > release && !force {
            return Err(l.usage(self.limit(), self.reserve()));
        }
        l.pending -= release;
        l.written += bytes;
        l.inflight += bytes;
        Ok(Reservation {
            budget: Some(self.clone()),
            bytes,
            other: false,
        })
    }

    /// Bytes accepted into memory (WAL records buffered).
    pub fn add_pending(&self, bytes: u64) {
        self.ledger.lock().pending += bytes;
    }

    /// Pending bytes written out or given up.
    pub fn settle_pending(&self, bytes: u64) {
        let mut l = self.ledger.lock();
        l.pending = l.pending.saturating_sub(bytes);
    }

    /// Pending bytes the store is about to write (the WAL buffer): counted
    /// as written before the write, as pending until it succeeded — counted
    /// twice for a moment, never not at all. Settle with
    /// [`Budget::written_out`].
    pub fn writing(self: &Arc<Self>, bytes: u64) -> Reservation {
        let mut l = self.ledger.lock();
        l.written += bytes;
        l.inflight += bytes;
        Reservation {
            budget: Some(self.clone()),
            bytes,
            other: false,
        }
    }

    /// Looks at the store's files. A write in flight is counted from the
    /// ledger until the look after it finished: counted twice at times,
    /// never missed.
    pub fn look_store(&self, data_dir: &Path) {
        let base = {
            let l = self.ledger.lock();
            l.written - l.inflight
        };
        let seen: u64 = STORE_PARTS.iter().map(|p| du(&data_dir.join(p))).sum();
        let mut l = self.ledger.lock();
        l.store_seen = seen;
        l.store_base = base;
    }

    /// Looks at the rest of the data directory.
    pub fn look_others(&self, data_dir: &Path) {
        let base = {
            let l = self.ledger.lock();
            l.others_written - l.others_inflight
        };
        let mut seen = 0;
        if let Ok(rd) = std::fs::read_dir(data_dir) {
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if STORE_PARTS.contains(&name.as_ref()) || NOT_COUNTED.contains(&name.as_ref()) {
                    continue;
                }
                seen += du(&e.path());
            }
        }
        let mut l = self.ledger.lock();
        l.others_seen = seen;
        l.others_base = base;
    }
}

/// Why an append was refused.
pub enum Refusal {
    Budget(Usage),
    Partition,
}

/// The reserve for maintenance: 1/16 of the budget, 256 KiB to 64 MiB, at
/// most a quarter of the budget.
pub fn maintenance_reserve(limit: u64) -> u64 {
    (limit / 16).clamp(256 << 10, 64 << 20).min(limit / 4)
}

/// Bytes a file or directory takes on disk, as `du` counts them: allocated
/// blocks, or the length rounded up to 4 KiB if more (a sparse file may be
/// filled in later).
pub fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if m.is_dir() {
        let Ok(rd) = std::fs::read_dir(path) else {
            return 0;
        };
        rd.flatten().map(|e| du(&e.path())).sum::<u64>() + m.blocks() * 512
    } else {
        (m.blocks() * 512).max(m.len().div_ceil(4096) * 4096)
    }
}

/// Bytes for people: `31.2 MiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
