//! The time-series store. Owns everything under the data directory's `db/`,
//! `blocks/` and `wal/`: series and their labels, the head of recent samples,
//! the write-ahead log, compressed blocks with their rollups, retention and
//! the disk budget. It is the one owner of the sled database: other crates
//! get their trees through [`Trees`], by a [`Tree`]. Uses `base` and
//! `config`; ingest's callers write to it, query and http read from it,
//! nothing reaches inside.
//!
//! Write path: [`Storage::append`] → head (memory) + WAL buffer; the WAL is
//! synced every `flush_interval`; a checkpoint writes the head out as partial
//! blocks; compaction merges a window's partials into one block per group once
//! the window is closed and derives its 1 h rollups. Reads merge blocks, frozen
//! heads and the live head, later writes winning on equal timestamps.

pub mod backup;
pub mod block;
mod block_index;
pub mod check;
pub mod codec;
pub mod encoding;
pub(crate) mod files;
pub mod format;
mod head;
mod index;
mod maintenance;
mod measurements;
pub mod metrics;
mod read;
pub mod rollup;
mod space;
mod trees;
mod wal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use thiserror::Error;

use base::Clock;
use config::StorageConfig;

pub use files::Tier;
// The shared model the store's API speaks in.
pub use base::labels::{self, LabelLimits, Labels, MatchOp, Matcher};
pub use base::{MeasurementField, SeriesSamples};
pub use read::{SeriesData, SeriesRollup};
pub use rollup::Buckets;
pub use space::{Reservation as DiskReservation, Usage as DiskUsage};
pub use trees::{Tree, Trees};
/// For the fuzz targets (`fuzz/`): decoding a WAL segment's bytes.
#[doc(hidden)]
pub use wal::{read_records, ReplayStats, WalRecord};

use files::BlockFiles;
use head::{FrozenHead, Head};
use index::SeriesIndex;
use measurements::Measurements;
use wal::Wal;

pub type SeriesId = u32;
pub type GroupId = u32;

/// Timestamps beyond ±2^53 ms (±285 000 years) are refused: they are exact as
/// `f64` (PromQL's `timestamp()`), and window arithmetic cannot overflow.
pub const MAX_TIMESTAMP: i64 = 1 << 53;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("invalid series {labels}: {source}")]
    InvalidSeries {
        labels: String,
        source: labels::LabelError,
    },
    #[error("series limit of {limit} reached (storage.max_series)")]
    TooManySeries { limit: usize },
    #[error("storage is {pending} samples behind; retry shortly")]
    Overloaded { pending: usize },
    #[error("the disk is full or failing; writes are refused until space is freed (see /api/v1/status/tsdb)")]
    CannotPersist,
    #[error("series {labels}: {count} sample(s) refused, e.g. at {ts} ({}): older than the raw data kept (everything up to {floor} ({}) is dropped or past storage.retention; to import older history, raise storage.retention first) or beyond ±2^53 ms", rfc3339(*ts), rfc3339(*floor))]
    OutOfBounds {
        labels: String,
        count: usize,
        ts: i64,
        floor: i64,
    },
    #[error("{count} sample(s) refused, e.g. at {ts} ({}): more than storage.max_future ({allowance}) ahead of the clock ({}); check the sender's clock and the timestamps' unit (ns, ms or s), or raise storage.max_future to store future data such as forecasts", rfc3339(*ts), rfc3339(*now))]
    TooFarAhead {
        labels: String,
        count: usize,
        ts: i64,
        now: i64,
        allowance: config::Duration,
    },
    #[error("{0}")]
    BudgetFull(BudgetFull),
    #[error("query would read more than {limit} samples")]
    TooManySamples { limit: usize },
    #[error("data directory {dir} has format {found}, this perch understands up to {supported}; upgrade perch")]
    FormatTooNew {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(transparent)]
    Block(#[from] block::BlockError),
}

impl base::HasKind for StorageError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        match self {
            StorageError::InvalidSeries { .. }
            | StorageError::TooManySeries { .. }
            | StorageError::OutOfBounds { .. }
            | StorageError::TooFarAhead { .. } => K::InvalidArgument,
            StorageError::TooManySamples { .. } => K::Unprocessable,
            StorageError::Overloaded { .. } => K::Unavailable,
            StorageError::CannotPersist | StorageError::BudgetFull(_) => K::InsufficientStorage,
            StorageError::Corrupt(_) | StorageError::Block(_) => K::DataLoss,
            StorageError::Io(_) | StorageError::Db(_) | StorageError::FormatTooNew { .. } => {
                K::Internal
            }
        }
    }
}

impl StorageError {
    /// Errors caused by the input (the caller should fix the request).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            StorageError::InvalidSeries { .. }
                | StorageError::TooManySeries { .. }
                | StorageError::OutOfBounds { .. }
                | StorageError::TooFarAhead { .. }
        )
    }

    /// Damaged data (bad checksum, undecodable block), as opposed to an I/O
    /// failure that may pass.
    pub fn is_damage(&self) -> bool {
        matches!(self, StorageError::Corrupt(_) | StorageError::Block(_))
    }

    fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::Io(e) if e.raw_os_error() == Some(libc::ENOSPC))
    }
}

/// A time for people, next to the milliseconds.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "out of range".into())
}

/// The disk budget refused a write: what is full, by how much, and what to
/// do about it.
#[derive(Debug, Clone)]
pub struct BudgetFull {
    /// What was refused: "samples", "a snapshot" …
    pub what: &'static str,
    pub usage: space::Usage,
    /// Bytes the write needed.
    pub needed: u64,
    /// Only the raw window being written remains: nothing older can be
    /// dropped to make room.
    pub nothing_to_drop: bool,
}

impl std::fmt::Display for BudgetFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use space::human;
        let u = &self.usage;
        write!(
            f,
            "the disk budget is full: {} refused, needing {}; perch's data directory holds {} of storage.max_disk_bytes = {}, the last {} of which is kept for maintenance (time series {}, search index and snapshots {}, accepted and not yet written {}). ",
            self.what,
            human(self.needed),
            human(u.total()),
            human(u.budget),
            human(u.reserve),
            human(u.store),
            human(u.others),
            human(u.pending),
        )?;
        if self.nothing_to_drop {
            f.write_str("Only the newest data is left, so nothing can be dropped to make room: raise storage.max_disk_bytes (or lower search.max_disk_bytes and the cameras' snapshot_max_bytes). Stored data stays readable.")
        } else {
            f.write_str("The oldest data is being dropped to make room: retry in a few seconds. To keep more, raise storage.max_disk_bytes or shorten storage.retention. Stored data stays readable.")
        }
    }
}

/// What an append stored and what it refused.
#[derive(Debug, Default)]
pub struct AppendResult {
    pub samples: usize,
    pub series_created: usize,
    /// Index in the batch and the reason.
    pub rejected: Vec<(usize, StorageError)>,
    /// WAL position to wait for with [`Storage::wait_durable`].
    pub wal_position: u64,
}

/// Something that wants to see every sample the store accepted (the
/// forwarding queues). Called on the appending thread after the samples are
/// in the head and the WAL buffer: it must copy what it needs and return at
/// once, never wait.
pub trait AppendObserver: Send + Sync {
    fn appended(&self, batch: &Appended<'_>);
}

/// The accepted part of one [`Storage::append`] batch.
pub struct Appended<'a> {
    batch: &'a [SeriesSamples],
    stored: &'a [bool],
    floor: i64,
    ceiling: i64,
}

impl<'a> Appended<'a> {
    /// Each accepted series with its accepted samples, in batch order.
    pub fn series(
        &self,
    ) -> impl Iterator<Item = (&'a Labels, impl Iterator<Item = (i64, f64)> + 'a)> + '_ {
        let (floor, ceiling) = (self.floor, self.ceiling);
        self.batch
            .iter()
            .zip(self.stored)
            .filter(|(_, ok)| **ok)
            .map(move |(s, _)| {
                (
                    &s.labels,
                    s.samples
                        .iter()
                        .copied()
                        .filter(move |&(t, _)| accepted(t, floor, ceiling)),
                )
            })
    }
}

/// Whether a sample time is inside what the store takes: after the write
/// floor, not beyond the future allowance, within ±2^53 ms.
fn accepted(t: i64, floor: i64, ceiling: i64) -> bool {
    t > floor && t <= ceiling && t.unsigned_abs() <= MAX_TIMESTAMP as u64
}

/// Facts for `GET /api/v1/status/tsdb` and the status page.
#[derive(Clone, Debug, Serialize)]
pub struct TsdbStatus {
    pub series: usize,
    pub samples: u64,
    pub head_samples: u64,
    pub bytes_on_disk: u64,
    pub bytes_per_sample: f64,
    pub disk_budget_bytes: u64,
    pub oldest_timestamp: Option<i64>,
    pub newest_timestamp: Option<i64>,
    pub windows: WindowCounts,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WindowCounts {
    pub raw: usize,
    pub rollup_1m: usize,
    pub rollup_1h: usize,
}

/// Counters for self-metrics.
#[derive(Default)]
pub struct StorageCounters {
    pub samples_appended: AtomicU64,
    pub samples_rejected: AtomicU64,
    /// Samples of perch's own metrics (`metrics::record`).
    pub self_samples: AtomicU64,
    pub checkpoints: AtomicU64,
    pub windows_dropped: AtomicU64,
}

/// Heap bytes of the store's structures, see [`Storage::memory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreMemory {
    /// Samples not yet written out as blocks (the head and frozen heads).
    pub head: usize,
    /// WAL records not yet written to the segment.
    pub wal_buffer: usize,
    /// Series labels, ids, groups, postings and spans.
    pub series_index: usize,
    /// The block indexes of the windows read or written recently.
    pub block_index: usize,
}

/// What [`Storage::open`] had to do to come up.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub wal_samples_replayed: usize,
    pub wal_torn_bytes: u64,
    pub quarantined: Option<PathBuf>,
    pub upgraded_from: Option<u32>,
    pub repaired_bytes: u64,
}

pub struct Storage {
    config: StorageConfig,
    limits: LabelLimits,
    clock: Arc<dyn Clock>,
    data_dir: PathBuf,
    db: sled::Db,
    index: SeriesIndex,
    measurements: Measurements,
    files: BlockFiles,
    wal: Wal,
    head: Mutex<Head>,
    frozen: RwLock<Vec<Arc<FrozenHead>>>,
    /// Serializes checkpoints, compaction and retention.
    maintenance: Mutex<()>,
    /// Wakes the maintenance thread early (head over its limit).
    wake: maintenance::Wake,
    /// `storage.max_disk_bytes`, kept before anything is written.
    budget: Arc<space::Budget>,
    /// Writes were refused for space: the next maintenance pass checkpoints
    /// (turning the head's reservation into its real, smaller blocks) and
    /// drops old data.
    checkpoint_wanted: std::sync::atomic::AtomicBool,
    problems: Mutex<Vec<String>>,
    /// The last WAL sync failed; appends are refused until one succeeds.
    wal_failing: std::sync::atomic::AtomicBool,
    space: space::SpaceGuard,
    /// Windows compaction found with no group to merge, with the file
    /// generation and index length they had then: its passes (every 10 s)
    /// skip them, without reading their index, until they change.
    uncrowded: Mutex<rustc_hash::FxHashMap<(Tier, i64), (u32, u64)>>,
    /// See [`Storage::write_floor`]; persisted in the sled tree `meta`.
    raw_floor: std::sync::atomic::AtomicI64,
    pub counters: StorageCounters,
    observers: RwLock<Vec<Arc<dyn AppendObserver>>>,
}

impl Storage {
    /// Opens (or creates) the store under `data_dir`. A database that cannot
    /// be opened is moved aside and a fresh one started, so the appliance
    /// always comes up; the report says so.
    pub fn open(
        config: &StorageConfig,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<Storage>, OpenReport), StorageError> {
        std::fs::create_dir_all(data_dir)?;
        let mut report = OpenReport::default();
        let mut problems = Vec::new();
        let prepared = format::prepare(data_dir)?;
        let opened = match format::open_db(data_dir, config.cache_bytes.0) {
            Ok(db) => Self::open_parts(db, data_dir, config, prepared),
            Err(e) => Err(e),
        };
        let (db, index, measurements, (files, repair)) = match opened {
            Ok(parts) => {
                report.upgraded_from = prepared.upgrade_from;
                parts
            }
            Err(e) if format::is_damage(&e) => {
                let moved = format::quarantine(data_dir, &e.to_string())?;
                let msg = format!(
                    "the database could not be opened ({e}); it was moved to {} and a new one started",
                    moved.display()
                );
                tracing::error!("{msg}");
                problems.push(msg);
                report.quarantined = Some(moved);
                let fresh = format::prepare(data_dir)?;
                let db = format::open_db(data_dir, config.cache_bytes.0)?;
                Self::open_parts(db, data_dir, config, fresh)?
            }
            Err(e) => return Err(e),
        };
        report.repaired_bytes = repair.truncated_bytes;
        // The database is ours (sled's lock): no backup can be running.
        backup::remove_stale_staging(data_dir);
        let partition = base::disk::partition_usage(data_dir)
            .map(|p| p.total_bytes)
            .unwrap_or(u64::MAX);
        let budget = Arc::new(space::Budget::new(config.max_disk_bytes.resolve(partition)));
        let wal = Wal::open(&data_dir.join("wal"), budget.clone())?;
        let storage = Storage {
            config: config.clone(),
            limits: LabelLimits {
                max_labels: config.max_labels,
                max_name_len: config.max_label_name_bytes,
                max_value_len: config.max_label_value_bytes,
            },
            clock,
            data_dir: data_dir.to_path_buf(),
            db,
            index,
            measurements,
            files,
            wal,
            head: Mutex::new(Head::default()),
            frozen: RwLock::new(Vec::new()),
            maintenance: Mutex::new(()),
            wake: maintenance::Wake::default(),
            budget,
            checkpoint_wanted: Default::default(),
            problems: Mutex::new(problems),
            wal_failing: Default::default(),
            space: space::SpaceGuard::new(data_dir, partition, config.min_free_disk_bytes.0),
            uncrowded: Mutex::new(Default::default()),
            raw_floor: std::sync::atomic::AtomicI64::new(i64::MIN),
            counters: StorageCounters::default(),
            observers: RwLock::new(Vec::new()),
        };
        if let Some(v) = storage.db.open_tree("meta")?.get("raw_floor")? {
            if let Ok(b) = <[u8; 8]>::try_from(v.as_ref()) {
                storage
                    .raw_floor
                    .store(i64::from_be_bytes(b), Ordering::SeqCst);
            }
        }
        let replay = storage.replay_wal()?;
        report.wal_samples_replayed = replay.samples;
        report.wal_torn_bytes = replay.torn_bytes;
        if replay.torn_bytes > 0 {
            // A write torn by a power cut, or damage: either way, what
            // followed in that segment is lost.
            storage.report_problem(format!(
                "the write-ahead log had {} bytes that are not valid records (a write cut short by a power loss, or damage): they and anything after them in their segment were ignored; {} samples were recovered from the log",
                replay.torn_bytes, replay.samples
            ));
        }
        for msg in &repair.lost {
            storage.report_problem(msg.clone());
        }
        storage.check_newest_blocks();
        storage.budget.look_others(data_dir);
        storage.budget.look_store(data_dir);
        let storage = Arc::new(storage);
        // Make the replayed samples durable as blocks and start a clean log:
        // they were acknowledged, so this writes even past the budget.
        storage.checkpoint_inner(true)?;
        Ok((storage, report))
    }

    fn open_parts(
        db: sled::Db,
        data_dir: &Path,
        config: &StorageConfig,
        prepared: format::Prepared,
    ) -> Result<
        (
            sled::Db,
            SeriesIndex,
            Measurements,
            (BlockFiles, files::FilesRepair),
        ),
        StorageError,
    > {
        format::check_db_version(&db, data_dir, prepared)?;
        let index = SeriesIndex::load(&db, config.max_series)?;
        let measurements = Measurements::load(&db)?;
        let files = BlockFiles::open(&data_dir.join("blocks"), &db, true)?;
        Ok((db, index, measurements, files))
    }

    fn replay_wal(&self) -> Result<wal::ReplayStats, StorageError> {
        let mut total = wal::ReplayStats::default();
        let dir = self.wal.dir().to_path_buf();
        let current = self.wal.current_segment();
        let mut head = self.head.lock();
        for segment in wal::list_segments(&dir)? {
            if segment >= current {
                continue;
            }
            let mut restore_err = None;
            let stats = wal::read_segment(&wal::segment_file(&dir, segment), |rec| match rec {
                wal::WalRecord::Series { id, group, labels } => {
                    match self.index.restore(id, group, labels) {
                        Ok(()) => {}
                        // One damaged record: the rest of the log still counts.
                        Err(e @ StorageError::Corrupt(_)) => {
                            tracing::warn!(segment, error = %e, "WAL series record skipped")
                        }
                        Err(e) => restore_err = Some(e),
                    }
                }
                wal::WalRecord::Samples(samples) => {
                    for (id, ts, v) in samples {
                        head.append(id, ts, v);
                    }
                }
            })?;
            if let Some(e) = restore_err {
                return Err(e);
            }
            total.records += stats.records;
            total.samples += stats.samples;
            total.torn_bytes += stats.torn_bytes;
        }
        Ok(total)
    }

    /// Registers an observer of every accepted sample from now on.
    pub fn observe(&self, observer: Arc<dyn AppendObserver>) {
        self.observers.write().push(observer);
    }

    /// The trees other crates keep in the store's database (accounts,
    /// dashboards, retained messages, cameras, forwarding queues).
    pub fn trees(&self) -> Trees {
        Trees::new(
            self.db.clone(),
            Some(self.data_dir.clone()),
            Some(self.budget.clone()),
        )
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn label_limits(&self) -> LabelLimits {
        self.limits
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Samples in memory (live head plus frozen heads being written).
    pub fn pending_samples(&self) -> usize {
        self.head.lock().samples + self.frozen.read().iter().map(|f| f.samples).sum::<usize>()
    }

    /// Stores a batch. Series that are invalid are reported in `rejected`,
    /// the rest is stored. Fails as a whole only when storage is overloaded
    /// (memory bound reached) — the caller should retry later.
    pub fn append(&self, batch: &[SeriesSamples]) -> Result<AppendResult, StorageError> {
        // Acknowledging writes that cannot be made durable would be a lie.
        let free = self.space.free_bytes();
        if self.wal_failing.load(Ordering::SeqCst) || self.space.refuse_writes(free) {
            self.want_room();
            return Err(StorageError::CannotPersist);
        }
        let pending = self.pending_samples();
        if pending >= self.config.max_head_samples.saturating_mul(4) {
            self.wake.notify();
            return Err(StorageError::Overloaded { pending });
        }
        let floor = self.write_floor();
        let now = self.clock.now_ms();
        let ceiling = self.write_ceiling(now);
        let accept = |t: i64| accepted(t, floor, ceiling);
        loop {
            let epoch = self.index.epoch();
            let mut result = AppendResult::default();
            let mut ids = Vec::with_capacity(batch.len());
            let mut key = Vec::with_capacity(128);
            for (i, s) in batch.iter().enumerate() {
                if s.samples.is_empty() {
                    ids.push(None);
                    continue;
                }
                let mut refused = 0;
                let (mut past, mut future) = ((0usize, 0i64), (0usize, 0i64));
                for &(t, _) in &s.samples {
                    if accept(t) {
                        continue;
                    }
                    refused += 1;
                    // Beyond the allowance but within ±2^53: the future's.
                    let slot = if t > ceiling && t <= MAX_TIMESTAMP {
                        &mut future
                    } else {
                        &mut past
                    };
                    if slot.0 == 0 {
                        slot.1 = t;
                    }
                    slot.0 += 1;
                }
                if past.0 > 0 {
                    result.rejected.push((
                        i,
                        StorageError::OutOfBounds {
                            labels: s.labels.to_string(),
                            count: past.0,
                            ts: past.1,
                            floor,
                        },
                    ));
                }
                if future.0 > 0 {
                    result.rejected.push((
                        i,
                        StorageError::TooFarAhead {
                            labels: s.labels.to_string(),
                            count: future.0,
                            ts: future.1,
                            now,
                            allowance: self.config.max_future,
                        },
                    ));
                }
                if refused == s.samples.len() {
                    ids.push(None);
                    continue;
                }
                s.labels.write_key(&mut key);
                let id = match self.index.lookup(&key) {
                    Some(id) => Some(id),
                    None => match self.create_series(&s.labels, &key) {
                        Ok(id) => {
                            result.series_created += 1;
                            Some(id)
                        }
                        Err(e) => {
                            result.rejected.push((i, e));
                            None
                        }
                    },
                };
                ids.push(id);
            }
            let mut log = Vec::with_capacity(batch.iter().map(|s| s.samples.len()).sum());
            for (s, id) in batch.iter().zip(&ids) {
                let Some(id) = *id else { continue };
                log.extend(
                    s.samples
                        .iter()
                        .filter(|x| accept(x.0))
                        .map(|&(t, v)| (id, t, v)),
                );
            }
            let records = wal::encode_samples(&log);
            let new_names = self.measurements.unknown(batch, &ids);
            {
                let mut head = self.head.lock();
                // Series forgotten since the ids were resolved: resolve again.
                if self.index.epoch() != epoch {
                    continue;
                }
                // Room on disk for the log and, later, the blocks: reserved
                // before anything is written (or acknowledged).
                let bytes = records.len() as u64;
                let blocks = block_estimate(bytes, log.len());
                if bytes > 0 {
                    if let Err(refusal) =
                        self.budget
                            .admit(bytes, blocks, free, self.space.keep_free_for_writes())
                    {
                        drop(head);
                        self.want_room();
                        return Err(self.refusal_error(refusal, bytes + blocks));
                    }
                }
                for &(id, t, v) in &log {
                    head.append(id, t, v);
                }
                // Under the head lock: maintenance forgets names of series
                // it forgets under it too.
                if !new_names.is_empty() {
                    if let Err(e) = self.measurements.remember(&new_names) {
                        tracing::warn!(error = %e, "measurement names not remembered");
                    }
                }
                head.reserved += blocks;
                result.samples = log.len();
                if !log.is_empty() {
                    result.wal_position = self.wal.append_encoded(&records);
                }
                if head.samples >= self.config.max_head_samples {
                    self.wake.notify();
                }
            }
            // Past the low-water mark: checkpoint and make room before
            // writes have to be refused.
            if self.budget.usage().total() > self.budget.low_water() {
                self.want_room();
            }
            let total: usize = batch.iter().map(|s| s.samples.len()).sum();
            self.counters
                .samples_appended
                .fetch_add(result.samples as u64, Ordering::Relaxed);
            self.counters
                .samples_rejected
                .fetch_add((total - result.samples) as u64, Ordering::Relaxed);
            let observers = self.observers.read();
            if !observers.is_empty() && result.samples > 0 {
                let stored: Vec<bool> = ids.iter().map(Option::is_some).collect();
                let appended = Appended {
                    batch,
                    stored: &stored,
                    floor,
                    ceiling,
                };
                for o in observers.iter() {
                    o.appended(&appended);
                }
            }
            return Ok(result);
        }
    }

    /// Asks maintenance to checkpoint and drop old data now.
    fn want_room(&self) {
        if !self.checkpoint_wanted.swap(true, Ordering::SeqCst) {
            self.wake.notify();
        }
    }

    fn refusal_error(&self, refusal: space::Refusal, needed: u64) -> StorageError {
        match refusal {
            space::Refusal::Budget(usage) => StorageError::BudgetFull(BudgetFull {
                what: "samples",
                usage,
                needed,
                nothing_to_drop: self.nothing_to_drop(),
            }),
            space::Refusal::Partition => StorageError::CannotPersist,
        }
    }

    /// Whether no stored window is left that could be dropped for space.
    pub(crate) fn nothing_to_drop(&self) -> bool {
        self.drop_victim(true).is_none()
    }

    /// Samples after this time are refused: more than `storage.max_future`
    /// ahead of the clock.
    pub fn write_ceiling(&self, now: i64) -> i64 {
        now.saturating_add(self.config.max_future.as_millis_i64())
    }

    fn create_series(&self, labels: &Labels, key: &[u8]) -> Result<SeriesId, StorageError> {
        labels
            .validate(&self.limits)
            .map_err(|source| StorageError::InvalidSeries {
                labels: labels.to_string(),
                source,
            })?;
        self.index.get_or_create(labels, key, |id, group| {
            self.wal.append_series(id, group, labels);
        })
    }

    /// Samples at or before this time are refused: they are older than the
    /// raw retention, or fall in raw windows already dropped.
    pub fn write_floor(&self) -> i64 {
        let by_age = self
            .clock
            .now_ms()
            .saturating_sub(self.config.retention.as_millis_i64());
        self.raw_floor.load(Ordering::SeqCst).max(by_age)
    }

    pub(crate) fn raise_raw_floor(&self, floor: i64) -> Result<(), StorageError> {
        if self.raw_floor.fetch_max(floor, Ordering::SeqCst) < floor {
            self.db
                .open_tree("meta")?
                .insert("raw_floor", &floor.to_be_bytes())?;
        }
        Ok(())
    }

    /// Waits until the WAL is synced up to `position`.
    pub async fn wait_durable(&self, position: u64) {
        let mut rx = self.wal.durable_watch();
        let _ = rx.wait_for(|&p| p >= position).await;
    }

    /// Whether appends are acknowledged only once synced.
    pub fn sync_writes(&self) -> bool {
        self.config.sync_writes
    }

    /// Syncs the WAL now.
    pub fn flush_wal(&self) -> Result<(), StorageError> {
        self.wal.flush()?;
        Ok(())
    }

    /// Series matching the selector with data overlapping `[start, end]`.
    pub fn select(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Vec<(SeriesId, Arc<Labels>)> {
        // Spans recorded in the index lag behind the heads by a checkpoint.
        let mut in_memory = rustc_hash::FxHashSet::default();
        {
            let head = self.head.lock();
            let frozen = self.frozen.read();
            let spans = std::iter::once(&head.spans).chain(frozen.iter().map(|f| &f.spans));
            for m in spans {
                for (&id, &(lo, hi)) in m {
                    if hi >= start && lo <= end {
                        in_memory.insert(id);
                    }
                }
            }
        }
        self.index
            .select(matchers, start, end, &in_memory)
            .into_iter()
            .map(|(id, info)| (id, info.labels))
            .collect()
    }

    pub fn series_labels(&self, id: SeriesId) -> Option<Arc<Labels>> {
        self.index.get(id).map(|i| i.labels)
    }

    /// The measurement and field that series named `metric` were written
    /// as, when a write named them (line protocol, Telegraf's JSON).
    pub fn measurement_of(&self, metric: &str) -> Option<Arc<MeasurementField>> {
        self.measurements.get(metric)
    }

    /// The metric names written as fields of `measurement`, with the field
    /// each stands for.
    pub fn measurement_metrics(&self, measurement: &str) -> Vec<(String, String)> {
        self.measurements.metrics_of(measurement)
    }

    pub fn label_names(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<String> {
        if matchers.is_empty() {
            return self.index.label_names();
        }
        let mut names: Vec<String> = self
            .select(matchers, start, end)
            .iter()
            .flat_map(|(_, l)| l.iter().map(|l| l.name.clone()).collect::<Vec<_>>())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Vec<String> {
        if matchers.is_empty() {
            return self.index.label_values(name);
        }
        let mut values: Vec<String> = self
            .select(matchers, start, end)
            .iter()
            .filter_map(|(_, l)| l.get(name).map(str::to_string))
            .collect();
        values.sort();
        values.dedup();
        values
    }

    /// Memory the store's own structures hold, by part (sled's cache
    /// aside: sled does not say; `storage.cache_bytes` bounds it).
    pub fn memory(&self) -> StoreMemory {
        // One lock at a time: appends wait for the head's.
        let head = self.head.lock().heap_bytes();
        let frozen: usize = self.frozen.read().iter().map(|f| f.heap_bytes()).sum();
        let wal_buffer = self.wal.buffer_bytes();
        let series_index = self.index.heap_bytes();
        StoreMemory {
            head: head + frozen,
            wal_buffer,
            series_index,
            block_index: self.files.index_cache_bytes(),
        }
    }

    pub fn series_count(&self) -> usize {
        self.index.len()
    }

    /// Bytes this store occupies on disk (as of the disk budget's last
    /// look, plus what it wrote since).
    pub fn disk_usage(&self) -> u64 {
        self.budget.usage().store
    }

    /// `storage.max_disk_bytes`, resolved: the most perch's data directory
    /// may hold (quarantine and space ballast aside).
    pub fn disk_budget(&self) -> u64 {
        self.budget.limit()
    }

    /// Where the disk budget stands: the store's files, the rest of the
    /// data directory, what is in memory and will be written.
    pub fn disk_budget_usage(&self) -> space::Usage {
        self.budget.usage()
    }

    /// Reports damaged blocks of the newest raw window, the one a crash or
    /// a failing card most likely hit, at start: reads skip them, `perch
    /// check` lists them, compaction drops them.
    fn check_newest_blocks(&self) {
        let Some((window, _)) = self.files.windows(Tier::Raw).last().copied() else {
            return;
        };
        let damaged = self.files.damaged_blocks(Tier::Raw, window);
        if let Some(first) = damaged.first() {
            self.report_problem(format!(
                "{} damaged block(s) in the newest raw window {window} ({}), e.g. {first}; their samples cannot be read (the rest can); run `perch check` with perch stopped for the whole directory",
                damaged.len(),
                rfc3339(window)
            ));
        }
    }

    pub fn problems(&self) -> Vec<String> {
        for msg in self.files.take_rebuilt() {
            self.report_problem(msg);
        }
        self.problems.lock().clone()
    }

    fn report_problem(&self, msg: String) {
        let mut p = self.problems.lock();
        if !p.contains(&msg) {
            tracing::error!("{msg}");
            p.push(msg);
            // Keep the most recent few.
            let n = p.len();
            if n > 20 {
                p.drain(..n - 20);
            }
        }
    }

    fn clear_problem(&self, prefix: &str) {
        self.problems.lock().retain(|p| !p.starts_with(prefix));
    }

    pub fn status(&self) -> TsdbStatus {
        let raw = self.files.windows(Tier::Raw);
        let head_samples = self.pending_samples() as u64;
        let stored: u64 = raw.iter().map(|(_, m)| m.samples).sum();
        let samples = stored + head_samples;
        let bytes = base::disk::dir_size(&self.data_dir.join("db"))
            + base::disk::dir_size(&self.data_dir.join("blocks"))
            + base::disk::dir_size(&self.data_dir.join("wal"));
        let mut oldest = TIERS_OLDEST
            .iter()
            .flat_map(|&t| self.files.windows(t).into_iter().map(|(_, m)| m.min_ts))
            .min();
        let mut newest = raw.iter().map(|(_, m)| m.max_ts).max();
        {
            let head = self.head.lock();
            for &(lo, hi) in head.spans.values() {
                oldest = Some(oldest.map_or(lo, |o| o.min(lo)));
                newest = Some(newest.map_or(hi, |n| n.max(hi)));
            }
        }
        TsdbStatus {
            series: self.index.len(),
            samples,
            head_samples,
            bytes_on_disk: bytes,
            bytes_per_sample: if samples > 0 {
                bytes as f64 / samples as f64
            } else {
                0.0
            },
            disk_budget_bytes: self.budget.limit(),
            oldest_timestamp: oldest,
            newest_timestamp: newest,
            windows: WindowCounts {
                raw: raw.len(),
                rollup_1m: self.files.windows(Tier::Minute).len(),
                rollup_1h: self.files.windows(Tier::Hour).len(),
            },
            problems: self.problems(),
        }
    }

    /// The first and last timestamp of any data, stored or in memory.
    pub fn data_extent(&self) -> Option<(i64, i64)> {
        let mut lo: Option<i64> = None;
        let mut hi: Option<i64> = None;
        let mut widen = |a: i64, b: i64| {
            lo = Some(lo.map_or(a, |l| l.min(a)));
            hi = Some(hi.map_or(b, |h| h.max(b)));
        };
        for t in TIERS_OLDEST {
            for (_, m) in self.files.windows(t) {
                if m.min_ts <= m.max_ts {
                    widen(m.min_ts, m.max_ts);
                }
            }
        }
        let head = self.head.lock();
        for &(a, b) in head.spans.values() {
            widen(a, b);
        }
        for f in self.frozen.read().iter() {
            for &(a, b) in f.spans.values() {
                widen(a, b);
            }
        }
        lo.zip(hi)
    }

    /// Writes everything out and syncs: the clean-stop path.
    pub fn close(&self) -> Result<(), StorageError> {
        self.wake.stop();
        self.wal.flush()?;
        self.checkpoint()?;
        self.db.flush()?;
        Ok(())
    }
}

const TIERS_OLDEST: [Tier; 3] = [Tier::Raw, Tier::Minute, Tier::Hour];

/// What samples' blocks may take, reserved in the disk budget until a
/// checkpoint writes them: 12 bytes a sample, the raw WAL size that blocks
/// rarely exceed (a checkpoint reserves the difference when they do), or
/// the WAL's size if larger. The WAL's decimal records are too small an
/// estimate: a sparse checkpoint's block headers outweigh them.
fn block_estimate(wal_bytes: u64, samples: usize) -> u64 {
    wal_bytes.max(12 * samples as u64)
}

#[cfg(test)]
mod tests;
