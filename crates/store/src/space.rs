//! Keeping room on the data partition. sled cannot recover from running out of
//! space while the process lives (its first failed write poisons the database
//! until it is reopened), so perch must never let the partition fill:
//!
//! - below `storage.min_free_disk_bytes` free, maintenance drops the oldest data;
//! - a ballast file (`reserve.bin`, 1–16 MiB), kept while less than 1 GiB is
//!   free, holds back room that is given up the moment free space runs short,
//!   even if something else filled the disk, so the index updates that drop
//!   old data can still be written;
//! - while free space is below the ballast's size, writes are refused.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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
    pub fn refuse_writes(&self) -> bool {
        if self.is_critical() {
            return true;
        }
        if self.free_bytes() < self.ballast_bytes {
            self.critical.store(true, Ordering::SeqCst);
            return true;
        }
        false
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
