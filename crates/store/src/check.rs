//! `perch check`: verifies a data directory without changing it — format
//! version, the sled database, every series record, every remembered
//! measurement, every block (checksum, header, each column decoded) against
//! the index, and the WAL.

use std::path::Path;

use serde::Serialize;

use super::block::Block;
use super::files::{BlockFiles, Tier, TIERS};
use super::index::SeriesIndex;
use super::{format, measurements, wal, StorageError};

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub format_version: Option<u32>,
    pub series: usize,
    /// Metric names with the line-protocol measurement they were written as.
    pub measurements: usize,
    pub blocks: usize,
    pub samples: u64,
    pub windows: usize,
    pub wal_segments: usize,
    pub wal_samples: usize,
    /// A running perch holds the database, so nothing was checked (which
    /// says nothing about damage): stop it, or check a backup.
    pub in_use: bool,
    /// Problems found; empty (and not `in_use`) means the directory is sound.
    pub problems: Vec<String>,
    /// Harmless leftovers of an unclean stop, repaired at the next start.
    pub notes: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && !self.in_use
    }
}

pub fn check(data_dir: &Path) -> CheckReport {
    let mut r = CheckReport::default();
    match format::read_version(data_dir) {
        Ok(Some(v)) => {
            r.format_version = Some(v);
            if v != format::FORMAT_VERSION {
                r.problems.push(format!(
                    "format {v}, this perch writes {}; `perch serve` upgrades it",
                    format::FORMAT_VERSION
                ));
                return r;
            }
        }
        Ok(None) => {
            r.problems.push(format!(
                "{} is not a perch data directory (no FORMAT file)",
                data_dir.display()
            ));
            return r;
        }
        Err(e) => {
            r.problems.push(e.to_string());
            return r;
        }
    }
    let db = match format::open_db(data_dir, 16 << 20) {
        Ok(db) => db,
        Err(e) if format::is_in_use(&e) => {
            r.in_use = true;
            return r;
        }
        Err(e) => {
            r.problems.push(format!("database: {e}"));
            return r;
        }
    };
    if let Err(e) = format::check_db_version(&db, data_dir, format::Prepared::default()) {
        r.problems.push(e.to_string());
    }
    let index = match SeriesIndex::load(&db, usize::MAX) {
        Ok(i) => i,
        Err(e) => {
            r.problems.push(format!("series index: {e}"));
            return r;
        }
    };
    r.series = index.len();
    match db.open_tree(measurements::TREE) {
        Ok(tree) => {
            for entry in tree.iter() {
                match entry
                    .map_err(StorageError::from)
                    .and_then(|(k, v)| measurements::decode(&k, &v))
                {
                    Ok(_) => r.measurements += 1,
                    Err(e) => r.problems.push(e.to_string()),
                }
            }
        }
        Err(e) => r.problems.push(format!("measurements: {e}")),
    }
    let (files, repair) = match BlockFiles::open(&data_dir.join("blocks"), &db, false) {
        Ok(f) => f,
        Err(e) => {
            r.problems.push(format!("block index: {e}"));
            return r;
        }
    };
    if repair.truncated_bytes > 0 {
        r.notes.push(format!(
            "{} bytes of unindexed appends at the ends of block files (an unclean stop)",
            repair.truncated_bytes
        ));
    }
    r.problems.extend(repair.lost.iter().cloned());
    if repair.removed_orphans > 0 {
        r.notes
            .push(format!("{} orphaned block files", repair.removed_orphans));
    }
    for t in TIERS {
        r.windows += files.windows(t).len();
    }
    let problems = std::cell::RefCell::new(Vec::new());
    let mut samples = 0u64;
    let verified = files.verify(
        |tier, window, group, body| {
            let mut problems = problems.borrow_mut();
            match Block::parse(body) {
                Ok(block) => match block.read(None) {
                    Ok(cols) => {
                        for (id, c) in cols {
                            if tier == Tier::Raw {
                                samples += c.ts.len() as u64;
                            }
                            match index.get(id) {
                                None => problems.push(format!(
                                    "block of window {window} ({}) holds unknown series {id}",
                                    tier.dir_name()
                                )),
                                Some(info) if info.group != group => problems.push(format!(
                                    "series {id} is stored under group {group}, the index says {}",
                                    info.group
                                )),
                                Some(_) => {}
                            }
                            if c.ts
                                .iter()
                                .any(|t| tier.window_of(*t) != window && tier == Tier::Raw)
                            {
                                problems.push(format!(
                                    "series {id} has samples outside window {window}"
                                ));
                            }
                        }
                    }
                    Err(e) => problems.push(format!("window {window} ({}): {e}", tier.dir_name())),
                },
                Err(e) => problems.push(format!("window {window} ({}): {e}", tier.dir_name())),
            }
        },
        |damage| problems.borrow_mut().push(damage),
    );
    let mut problems = problems.into_inner();
    match verified {
        Ok(n) => r.blocks = n,
        Err(e) => problems.push(e.to_string()),
    }
    r.samples = samples;
    r.problems.extend(problems);
    let wal_dir = data_dir.join("wal");
    match wal::list_segments(&wal_dir) {
        Ok(ids) => {
            r.wal_segments = ids.len();
            for id in ids {
                match wal::read_segment(&wal::segment_file(&wal_dir, id), |_| {}) {
                    Ok(s) => {
                        r.wal_samples += s.samples;
                        if s.torn_bytes > 0 {
                            r.notes.push(format!(
                                "WAL segment {id} ends with {} bytes of a torn write (an unclean stop)",
                                s.torn_bytes
                            ));
                        }
                    }
                    Err(e) => r.problems.push(format!("WAL segment {id}: {e}")),
                }
            }
        }
        Err(e) => r.problems.push(format!("WAL: {e}")),
    }
    r
}
