//! Background work on the store, run by one thread at a time: syncing the WAL
//! (its own thread, every `flush_interval`), checkpoints, compaction of closed
//! windows into one block per group with their 1 h rollups, retention by age
//! and disk budget, and downsampling expiring raw windows to 1 min rollups.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::block::{Block, BlockBuilder, BlockKind};
use super::files::{BlockEntry, NewBlock, Tier};
use super::head::sort_dedup_last;
use super::head::FrozenHead;
use super::rollup::{rollup, Buckets};
use super::{space, GroupId, SeriesId, Storage, StorageError};

/// One series' columns: timestamps and one or more value columns.
type MultiColumns = (Vec<i64>, Vec<Vec<f64>>);
/// Block entries of one group in one window, with their sequence numbers.
type GroupBlocks = Vec<(u32, BlockEntry)>;
/// One series' samples cut to one window.
type SeriesCut = (SeriesId, Vec<i64>, Vec<f64>);

/// How long after its end a raw window still expects late samples before it
/// is compacted. Later samples are still accepted; they cost a re-merge.
const LATE_GRACE_MS: i64 = 15 * 60_000;
/// Partial blocks per group and window before they are merged regardless.
const MAX_PARTIALS: usize = 8;
/// Merge at most this many groups per append, bounding memory.
const GROUPS_PER_BATCH: usize = 64;
/// How often the disk budget looks at the rest of the data directory
/// (search index, snapshots); their writes in between are reserved or
/// covered by the maintenance reserve.
const OTHERS_LOOK_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Wake {
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Wake {
    pub fn notify(&self) {
        self.state.lock().0 = true;
        self.cv.notify_all();
    }

    pub fn stop(&self) {
        self.state.lock().1 = true;
        self.cv.notify_all();
    }

    /// Waits up to `timeout`; returns false once stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let mut s = self.state.lock();
        if !s.0 && !s.1 {
            self.cv.wait_for(&mut s, timeout);
        }
        s.0 = false;
        !s.1
    }

    fn stopped(&self) -> bool {
        self.state.lock().1
    }
}

/// Handles of the background threads; joined by [`BackgroundTasks::join`].
pub struct BackgroundTasks {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BackgroundTasks {
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

impl Storage {
    /// Starts the WAL flusher and the maintenance thread. Stop them with
    /// [`Storage::close`].
    pub fn start_background(self: &Arc<Self>) -> BackgroundTasks {
        let flusher = {
            let s = Arc::clone(self);
            std::thread::Builder::new()
                .name("perch-wal".into())
                .spawn(move || {
                    let every = s.config.flush_interval.std();
                    let mut last = Instant::now();
                    let mut last_others = Instant::now();
                    while !s.wake.stopped() {
                        std::thread::sleep(every.min(Duration::from_millis(100)));
                        if last.elapsed() < every {
                            continue;
                        }
                        last = Instant::now();
                        s.watch_free_space();
                        // The budget's look at the disk: sled's growth and
                        // deleted files show here.
                        s.budget.look_store(&s.data_dir);
                        if last_others.elapsed() >= OTHERS_LOOK_EVERY {
                            last_others = Instant::now();
                            s.budget.look_others(&s.data_dir);
                        }
                        if s.wal.pending_bytes() > 0 || s.wal_failing.load(Ordering::SeqCst) {
                            s.sync_wal();
                        }
                    }
                })
                .expect("spawn thread")
        };
        let maint = {
            let s = Arc::clone(self);
            std::thread::Builder::new()
                .name("perch-storage".into())
                .spawn(move || {
                    let every = s.config.checkpoint_interval.std();
                    let tick = every.min(Duration::from_secs(10));
                    let mut last_checkpoint = Instant::now();
                    loop {
                        if !s.wake.wait(tick) {
                            break;
                        }
                        let head_full = s.head.lock().samples >= s.config.max_head_samples;
                        let wanted = s.checkpoint_wanted.swap(false, Ordering::SeqCst);
                        if head_full || wanted || last_checkpoint.elapsed() >= every {
                            last_checkpoint = Instant::now();
                            if let Err(e) = s.checkpoint() {
                                s.maintenance_failed("checkpoint", &e);
                                continue;
                            }
                        }
                        if let Err(e) = s.compact() {
                            s.maintenance_failed("compaction", &e);
                        }
                        // Cheap when there is nothing to drop.
                        if let Err(e) = s.enforce_retention() {
                            s.maintenance_failed("retention", &e);
                        }
                    }
                })
                .expect("spawn thread")
        };
        BackgroundTasks {
            threads: vec![flusher, maint],
        }
    }

    pub(super) fn sync_wal(&self) {
        match self.wal.flush() {
            Ok(()) => {
                if self.wal_failing.swap(false, Ordering::SeqCst) {
                    self.clear_problem("cannot sync the write-ahead log");
                }
            }
            Err(e) => {
                self.wal_failing.store(true, Ordering::SeqCst);
                self.report_problem(format!("cannot sync the write-ahead log: {e}"));
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    self.wake.notify();
                }
            }
        }
    }

    /// Refuses writes while the partition is nearly full and has maintenance
    /// drop old data when free space is short (see [`super::space`]).
    fn watch_free_space(&self) {
        let check = self.space.check();
        if check.free_bytes < self.space.target_free() {
            self.wake.notify();
        }
        if check.changed && check.critical {
            self.report_problem(format!(
                "disk almost full: {} bytes free on the data partition; writes are refused until old data is dropped",
                check.free_bytes
            ));
        } else if check.changed {
            self.clear_problem("disk almost full");
        }
    }

    fn maintenance_failed(&self, what: &str, e: &StorageError) {
        if let StorageError::BudgetFull(b) = e {
            self.report_problem(format!("{what} postponed: {b}"));
            if let Err(e) = self.free_space(false) {
                tracing::error!(error = %e, "could not free space");
            }
        } else if e.is_disk_full() {
            self.report_problem(format!(
                "disk full: {what} failed; dropping the oldest data to make room"
            ));
            if let Err(e) = self.free_space(true) {
                tracing::error!(error = %e, "could not free space");
            }
        } else {
            self.report_problem(format!("{what} failed: {e}"));
        }
    }

    /// Writes the live head out as partial blocks, then every frozen head
    /// still pending, and deletes the WAL segments they cover.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        self.checkpoint_inner(false)
    }

    /// With `force` (at open, for what the WAL replayed: acknowledged
    /// data), blocks are written even past the disk budget.
    pub(super) fn checkpoint_inner(&self, force: bool) -> Result<(), StorageError> {
        // Writing blocks needs room: make it first when space is short rather
        // than let sled hit ENOSPC, which poisons it until it is reopened.
        if self.space.free_bytes() < self.space.target_free() {
            self.free_space(false)?;
        }
        let _serial = self.maintenance.lock();
        {
            let mut head = self.head.lock();
            if head.samples > 0 {
                let boundary = self.wal.rotate()?;
                let frozen = Arc::new(head.freeze(boundary));
                self.frozen.write().push(frozen);
            }
        }
        loop {
            let Some(frozen) = self.frozen.read().first().cloned() else {
                break;
            };
            self.write_partials(&frozen, force)?;
            self.index.extend_spans(&frozen.spans);
            self.index.persist_spans()?;
            self.db.flush()?;
            self.frozen.write().remove(0);
            // What the estimate reserved beyond the real blocks goes back.
            self.budget
                .settle_pending(frozen.reserved.swap(0, Ordering::SeqCst));
            self.wal.remove_before(frozen.wal_boundary)?;
            self.budget.look_store(&self.data_dir);
            self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
        self.clear_problem("checkpoint failed");
        self.clear_problem("checkpoint postponed");
        self.clear_problem("disk full");
        Ok(())
    }

    fn write_partials(&self, frozen: &FrozenHead, force: bool) -> Result<(), StorageError> {
        let series = &frozen.series;
        // (window, group) → series columns
        let mut cells: BTreeMap<(i64, GroupId), Vec<SeriesCut>> = BTreeMap::new();
        for (&id, buf) in series {
            let Some(group) = self.index.group_of(id) else {
                // Series are forgotten only when no head holds them.
                self.report_problem(format!(
                    "samples of unknown series {id} could not be written"
                ));
                continue;
            };
            let (ts, vs) = buf.sorted();
            let mut i = 0;
            while i < ts.len() {
                let w = Tier::Raw.window_of(ts[i]);
                // Appends keep timestamps within ±2^53, so this cannot overflow.
                let end = w + Tier::Raw.window_ms();
                let j = i + ts[i..].partition_point(|&t| t <= end);
                cells.entry((w, group)).or_default().push((
                    id,
                    ts[i..j].to_vec(),
                    vs[i..j].to_vec(),
                ));
                i = j;
            }
        }
        let mut blocks = Vec::new();
        for ((window, group), mut members) in cells {
            members.sort_by_key(|m| m.0);
            let cols = members
                .iter()
                .map(|(id, ts, vs)| (*id, &ts[..], vec![&vs[..]]));
            blocks.push(new_block(Tier::Raw, window, group, cols));
            if blocks.len() >= GROUPS_PER_BATCH * 4 {
                let blocks = std::mem::take(&mut blocks);
                let _room = self.reserve_checkpoint(frozen, &blocks, force)?;
                self.files.append(Tier::Raw, blocks, &[])?;
            }
        }
        if !blocks.is_empty() {
            let _room = self.reserve_checkpoint(frozen, &blocks, force)?;
            self.files.append(Tier::Raw, blocks, &[])?;
        }
        Ok(())
    }

    /// Takes room in the disk budget for a checkpoint's blocks, converting
    /// what the head reserved for them; when they are larger than that
    /// (many tiny groups), old data is dropped first to make room.
    fn reserve_checkpoint(
        &self,
        frozen: &FrozenHead,
        blocks: &[NewBlock],
        force: bool,
    ) -> Result<space::Reservation, StorageError> {
        let bytes = record_bytes(blocks);
        if !force {
            // The partition too: a checkpoint must not take it below the
            // ballast's worth the database needs to drop old data.
            if self.space.free_bytes() < bytes.saturating_add(self.space.keep_free_for_writes()) {
                // As the disk would say it: maintenance then drops old data.
                return Err(StorageError::Io(std::io::Error::from_raw_os_error(
                    libc::ENOSPC,
                )));
            }
        }
        let reserved = frozen.reserved.load(Ordering::SeqCst);
        let release = bytes.min(reserved);
        let mut r = self.budget.reserve_maintenance(bytes, release, false);
        if r.is_err() {
            self.free_space_locked(false)?;
            r = self.budget.reserve_maintenance(bytes, release, force);
        }
        let room = r.map_err(|usage| {
            StorageError::BudgetFull(super::BudgetFull {
                what: "a checkpoint",
                usage,
                needed: bytes,
                nothing_to_drop: self.nothing_to_drop(),
            })
        })?;
        frozen.reserved.fetch_sub(release, Ordering::SeqCst);
        Ok(room)
    }

    /// Takes room in the disk budget for a maintenance write (merges,
    /// rollups, rewrites), from the reserve if need be.
    fn reserve_maintenance(
        &self,
        what: &'static str,
        bytes: u64,
    ) -> Result<space::Reservation, StorageError> {
        // Optional work: only with room to spare on the partition.
        self.partition_room(bytes, self.space.target_free())?;
        self.budget
            .reserve_maintenance(bytes, 0, false)
            .map_err(|usage| {
                StorageError::BudgetFull(super::BudgetFull {
                    what,
                    usage,
                    needed: bytes,
                    nothing_to_drop: self.nothing_to_drop(),
                })
            })
    }

    /// Writes a new generation of a window's files (a rewrite, an index
    /// rebuild) with room for its `bytes` taken first, then looks at the
    /// store again: the old generation is gone. The reservation ends before
    /// the look, which then sees the new files as written, not in flight.
    fn replace_window(
        &self,
        what: &'static str,
        bytes: u64,
        write: impl FnOnce() -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let room = self.reserve_maintenance(what, bytes)?;
        write()?;
        drop(room);
        self.budget.look_store(&self.data_dir);
        Ok(())
    }

    /// Refuses optional work (merges, rollups, rewrites) of `bytes` that
    /// would leave less than `keep` free on the partition, before anything
    /// is written: it waits until old data is dropped.
    fn partition_room(&self, bytes: u64, keep: u64) -> Result<(), StorageError> {
        if self.space.free_bytes() < bytes.saturating_add(keep) {
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                NO_ROOM_YET,
            )));
        }
        Ok(())
    }

    /// Merges closed raw windows into one block per group and derives their
    /// 1 h rollups; merges any group with too many partial blocks; rewrites
    /// files that are mostly garbage.
    pub fn compact(&self) -> Result<(), StorageError> {
        let _serial = self.maintenance.lock();
        // Merging writes before it frees: not while space is short.
        if self.space.free_bytes() < self.space.target_free() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        // A window that fails is reported and skipped; the others go on.
        let mut first_error = None;
        let mut note = |r: Result<(), StorageError>, what: &str, tier: Tier, window: i64| {
            if let Err(e) = r {
                if matches!(e, StorageError::BudgetFull(_)) || is_no_room_yet(&e) {
                    // Dropping old data (retention, next) makes room for it.
                    tracing::debug!(window, tier = tier.dir_name(), "{what} postponed: {e}");
                } else if e.is_disk_full() {
                    first_error.get_or_insert(e);
                } else {
                    self.report_problem(format!(
                        "{what} of window {window} ({}) failed: {e}",
                        tier.dir_name()
                    ));
                }
            }
        };
        for (tier, window, bytes) in self.files.damaged_windows() {
            // Without room the rebuild waits (reads skip the window
            // meanwhile) until retention makes some.
            let r = self.replace_window("an index rebuild", bytes, || {
                self.files.rebuild_damaged(tier, window)
            });
            note(r, "index rebuild", tier, window);
        }
        for (window, meta) in self.files.windows(Tier::Raw) {
            let closed = window.saturating_add(Tier::Raw.window_ms() + LATE_GRACE_MS) <= now;
            if closed && !meta.rolled_up {
                note(
                    self.finalize_raw_window(window),
                    "compaction",
                    Tier::Raw,
                    window,
                );
            } else if meta.blocks > 1 {
                note(
                    self.merge_crowded(Tier::Raw, window),
                    "merge",
                    Tier::Raw,
                    window,
                );
            }
        }
        self.uncrowded
            .lock()
            .retain(|&(tier, window), _| self.files.window_meta(tier, window).is_some());
        for tier in [Tier::Minute, Tier::Hour] {
            for (window, meta) in self.files.windows(tier) {
                if meta.blocks > 1 {
                    note(self.merge_crowded(tier, window), "merge", tier, window);
                }
            }
        }
        for tier in super::files::TIERS {
            for (window, meta) in self.files.windows(tier) {
                let room = self.space.free_bytes() > meta.live_bytes + self.space.target_free();
                if meta.file_len > 64 * 1024 && meta.live_bytes * 2 < meta.file_len && room {
                    let r = self.replace_window("a rewrite", meta.live_bytes, || {
                        self.files.rewrite_window(tier, window).map(|_| ())
                    });
                    note(r, "rewrite", tier, window);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Decodes and merges one group's blocks of a window, later blocks winning.
    fn merged_group(
        &self,
        tier: Tier,
        window: i64,
        entries: &[(u32, BlockEntry)],
    ) -> Result<BTreeMap<SeriesId, MultiColumns>, StorageError> {
        let mut parts: BTreeMap<SeriesId, Vec<MultiColumns>> = BTreeMap::new();
        self.files
            .with_read_lock(|reader| -> Result<(), StorageError> {
                for (_, e) in entries {
                    let decoded = reader
                        .read(tier, window, e)
                        .and_then(|body| Ok(Block::parse(&body)?.read(None)?));
                    match decoded {
                        Ok(cols) => {
                            for (id, c) in cols {
                                parts.entry(id).or_default().push((c.ts, c.values));
                            }
                        }
                        // The merge replaces what it cannot read: it is lost
                        // either way, and keeping it would stop compaction.
                        Err(err) if err.is_damage() => {
                            self.report_problem(format!(
                                "dropped a damaged block while merging: {err}"
                            ));
                        }
                        Err(err) => return Err(err),
                    }
                }
                Ok(())
            })?;
        let mut out = BTreeMap::new();
        for (id, p) in parts {
            out.insert(id, merge_columns(p));
        }
        Ok(out)
    }

    fn finalize_raw_window(&self, window: i64) -> Result<(), StorageError> {
        let groups = self.blocks_by_group(Tier::Raw, window)?;
        for chunk in groups.chunks(GROUPS_PER_BATCH) {
            let mut merged_blocks = Vec::new();
            let mut replaced = Vec::new();
            let mut rollups = Vec::new();
            for (group, entries) in chunk {
                let merged = self.merged_group(Tier::Raw, window, entries)?;
                if entries.len() > 1 {
                    merged_blocks.push(merged_block(Tier::Raw, window, *group, entries, &merged));
                    replaced.extend(superseded(window, *group, entries));
                }
                let hourly: Vec<(SeriesId, Buckets)> = merged
                    .iter()
                    .map(|(id, (ts, cols))| (*id, rollup(ts, &cols[0], Tier::Hour.resolution_ms())))
                    .filter(|(_, b)| !b.is_empty())
                    .collect();
                if !hourly.is_empty() {
                    let members = hourly
                        .iter()
                        .map(|(id, b)| (*id, &b.ts[..], b.columns().to_vec()));
                    rollups.push(new_block(
                        Tier::Hour,
                        Tier::Hour.window_for_raw(window),
                        *group,
                        members,
                    ));
                }
            }
            let bytes = record_bytes(&rollups) + record_bytes_seq(&merged_blocks);
            let _room = self.reserve_maintenance("compaction", bytes)?;
            // Rollups first: after a crash in between, the raw window is
            // finalized again and the newer rollup partial wins.
            if !rollups.is_empty() {
                self.files.append(Tier::Hour, rollups, &[])?;
            }
            if !merged_blocks.is_empty() {
                self.files
                    .append_with_seq(Tier::Raw, merged_blocks, &replaced)?;
            }
        }
        self.files.set_rolled_up(window, true)?;
        self.db.flush()?;
        Ok(())
    }

    fn blocks_by_group(
        &self,
        tier: Tier,
        window: i64,
    ) -> Result<Vec<(GroupId, GroupBlocks)>, StorageError> {
        let mut by_group: BTreeMap<GroupId, GroupBlocks> = BTreeMap::new();
        for (g, seq, e) in self.files.window_blocks(tier, window)? {
            by_group.entry(g).or_default().push((seq, e));
        }
        Ok(by_group.into_iter().collect())
    }

    /// Merges the blocks of groups that have too many: more than one in a
    /// rollup tier, more than `MAX_PARTIALS` in a raw window still open.
    fn merge_crowded(&self, tier: Tier, window: i64) -> Result<(), StorageError> {
        let Some(meta) = self.files.window_meta(tier, window) else {
            return Ok(());
        };
        let version = (meta.generation, meta.index_len);
        if self.uncrowded.lock().get(&(tier, window)) == Some(&version) {
            return Ok(());
        }
        let threshold = if tier == Tier::Raw { MAX_PARTIALS } else { 1 };
        let crowded: Vec<_> = self
            .blocks_by_group(tier, window)?
            .into_iter()
            .filter(|(_, e)| e.len() > threshold)
            .collect();
        if crowded.is_empty() {
            self.uncrowded.lock().insert((tier, window), version);
            return Ok(());
        }
        for chunk in crowded.chunks(GROUPS_PER_BATCH) {
            let mut blocks = Vec::new();
            let mut replaced = Vec::new();
            for (group, entries) in chunk {
                let merged = self.merged_group(tier, window, entries)?;
                blocks.push(merged_block(tier, window, *group, entries, &merged));
                replaced.extend(superseded(window, *group, entries));
            }
            let _room = self.reserve_maintenance("a merge", record_bytes_seq(&blocks))?;
            self.files.append_with_seq(tier, blocks, &replaced)?;
        }
        self.db.flush()?;
        Ok(())
    }

    /// Drops data past its retention, then the oldest data while over the
    /// disk budget, then forgets series that no longer have any data.
    pub fn enforce_retention(&self) -> Result<(), StorageError> {
        let now = self.clock.now_ms();
        {
            let _serial = self.maintenance.lock();
            let limits = [
                (Tier::Raw, self.config.retention.as_millis_i64()),
                (
                    Tier::Minute,
                    self.config.rollup_1m_retention.as_millis_i64(),
                ),
                (Tier::Hour, self.config.rollup_1h_retention.as_millis_i64()),
            ];
            for (tier, keep_ms) in limits {
                let cutoff = now.saturating_sub(keep_ms);
                for (window, _) in self.files.windows(tier) {
                    if window.saturating_add(tier.window_ms()) <= cutoff {
                        if let Err(e) = self.expire_window(tier, window) {
                            // One unreadable window must not stop retention.
                            self.report_problem(format!(
                                "expiring window {window} ({}) failed: {e}",
                                tier.dir_name()
                            ));
                        }
                    }
                }
            }
        }
        self.free_space(false)?;
        self.forget_empty_series()
    }

    /// Drops a window; a raw window is first downsampled to 1 min rollups if
    /// those are kept longer than raw data.
    fn expire_window(&self, tier: Tier, window: i64) -> Result<(), StorageError> {
        if tier == Tier::Raw && self.config.rollup_1m_retention.0 > self.config.retention.0 {
            if let Err(e) = self.downsample_to_minutes(window) {
                if e.is_disk_full() {
                    return Err(e);
                }
                // Expire it anyway: keeping an unreadable window forever
                // would stop retention and the disk budget.
                self.report_problem(format!(
                    "could not keep 1 min rollups of window {window}: {e}"
                ));
            }
        }
        let freed = self.drop_window(tier, window)?;
        self.counters
            .windows_dropped
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(tier = tier.dir_name(), window, freed, "dropped a window");
        Ok(())
    }

    fn downsample_to_minutes(&self, window: i64) -> Result<(), StorageError> {
        let groups = self.blocks_by_group(Tier::Raw, window)?;
        for chunk in groups.chunks(GROUPS_PER_BATCH) {
            let mut blocks = Vec::new();
            for (group, entries) in chunk {
                let merged = self.merged_group(Tier::Raw, window, entries)?;
                let minutes: Vec<(SeriesId, Buckets)> = merged
                    .iter()
                    .map(|(id, (ts, cols))| {
                        (*id, rollup(ts, &cols[0], Tier::Minute.resolution_ms()))
                    })
                    .filter(|(_, b)| !b.is_empty())
                    .collect();
                if !minutes.is_empty() {
                    let members = minutes
                        .iter()
                        .map(|(id, b)| (*id, &b.ts[..], b.columns().to_vec()));
                    blocks.push(new_block(
                        Tier::Minute,
                        Tier::Minute.window_for_raw(window),
                        *group,
                        members,
                    ));
                }
            }
            if !blocks.is_empty() {
                let _room = self.reserve_maintenance("1 min rollups", record_bytes(&blocks))?;
                self.files.append(Tier::Minute, blocks, &[])?;
            }
        }
        Ok(())
    }

    /// Drops the oldest windows while the disk budget is above its low-water
    /// mark or the partition short of free space: raw first (never the
    /// window of the present, nor a future one), then 1 min, then 1 h
    /// rollups. With `urgent` (the disk is full) at least one window goes
    /// even if the budget holds.
    pub(crate) fn free_space(&self, urgent: bool) -> Result<(), StorageError> {
        let _serial = self.maintenance.lock();
        self.free_space_locked(urgent)
    }

    /// [`Storage::free_space`] with the maintenance lock held.
    fn free_space_locked(&self, urgent: bool) -> Result<(), StorageError> {
        let mut must_drop = urgent;
        loop {
            let usage = self.budget.usage();
            let used = usage.total();
            let free = self.space.free_bytes();
            let over = used > self.budget.low_water();
            if !over && free >= self.space.target_free() && !must_drop {
                self.clear_problem("over the disk budget");
                break;
            }
            must_drop = false;
            let Some((tier, window)) = self.drop_victim(over) else {
                if over {
                    self.report_problem(format!(
                        "over the disk budget ({} of {}) with only the newest window left",
                        space::human(used),
                        space::human(self.budget.limit())
                    ));
                }
                break;
            };
            tracing::warn!(
                used,
                budget = self.budget.limit(),
                free,
                tier = tier.dir_name(),
                window,
                "over the disk budget or short of free space: dropping the oldest window"
            );
            // Under pressure raw windows go without a 1 min summary: writing
            // one would spend the space being freed.
            self.drop_window(tier, window)?;
            self.budget.look_store(&self.data_dir);
            self.counters
                .windows_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The window to drop for space: the oldest raw window, else the
    /// oldest 1 min, else the oldest 1 h window. Never the raw window of
    /// the present (or a future one); for the partition's free space
    /// (`over_budget` false: something else may have filled it, and
    /// dropping everything would not help) never the newest raw window
    /// either. Over the budget the newest may go once the present has moved
    /// past it, or writes to the new window could never be made room for.
    pub(super) fn drop_victim(&self, over_budget: bool) -> Option<(Tier, i64)> {
        let present = Tier::Raw.window_of(self.clock.now_ms());
        let raw = self.files.windows(Tier::Raw);
        match raw.first() {
            Some(&(w, _)) if w < present && (over_budget || raw.len() > 1) => Some((Tier::Raw, w)),
            _ => [Tier::Minute, Tier::Hour]
                .into_iter()
                .find_map(|t| self.files.windows(t).first().map(|(w, _)| (t, *w))),
        }
    }

    /// Drops a window and, for raw data, raises the floor below which writes
    /// are refused, so a late sample cannot re-create the window and have its
    /// partial rollups replace the complete ones.
    fn drop_window(&self, tier: Tier, window: i64) -> Result<u64, StorageError> {
        if tier == Tier::Raw {
            self.raise_raw_floor(window + Tier::Raw.window_ms())?;
        }
        self.files.drop_window(tier, window)
    }

    /// Forgets series that have no data left anywhere: not in any stored
    /// window, not in the live or a frozen head. Runs under the head lock and
    /// bumps the index epoch, so an append that resolved a series id before
    /// cannot write to it afterwards (it resolves again).
    fn forget_empty_series(&self) -> Result<(), StorageError> {
        let _serial = self.maintenance.lock();
        let oldest = super::files::TIERS
            .iter()
            .filter_map(|&t| self.files.windows(t).first().map(|(_, m)| m.min_ts))
            .min();
        let Some(cutoff) = oldest else {
            // No stored data at all: keep series, the head may hold them.
            return Ok(());
        };
        let head = self.head.lock();
        let mut in_memory: rustc_hash::FxHashSet<SeriesId> = head.spans.keys().copied().collect();
        for f in self.frozen.read().iter() {
            in_memory.extend(f.spans.keys().copied());
        }
        let removed = self.index.remove_older_than(cutoff, &in_memory)?;
        if removed > 0 {
            let names = self.index.label_values(base::METRIC_NAME);
            let names: rustc_hash::FxHashSet<&str> = names.iter().map(String::as_str).collect();
            self.measurements.retain(&names)?;
        }
        drop(head);
        if removed > 0 {
            tracing::info!(removed, "forgot series without data");
        }
        Ok(())
    }
}

fn merge_columns(parts: Vec<MultiColumns>) -> MultiColumns {
    if parts.len() == 1 {
        return parts.into_iter().next().expect("one part");
    }
    let ncols = parts.first().map_or(0, |p| p.1.len());
    // Merge by row index so every column follows the same order.
    let mut ts = Vec::new();
    let mut rows: Vec<(usize, usize)> = Vec::new();
    for (p, (t, _)) in parts.iter().enumerate() {
        ts.extend_from_slice(t);
        rows.extend((0..t.len()).map(|i| (p, i)));
    }
    let idx: Vec<f64> = (0..ts.len()).map(|i| i as f64).collect();
    let (ts, order) = sort_dedup_last(&ts, &idx);
    let mut cols = vec![Vec::with_capacity(ts.len()); ncols];
    for o in order {
        let (p, i) = rows[o as usize];
        for (c, col) in cols.iter_mut().enumerate() {
            col.push(parts[p].1[c][i]);
        }
    }
    (ts, cols)
}

/// The keys a merged block supersedes: all but the highest sequence number,
/// which the merged block itself takes over.
fn superseded(
    window: i64,
    group: GroupId,
    entries: &[(u32, BlockEntry)],
) -> Vec<(i64, GroupId, u32)> {
    let max_seq = entries.iter().map(|(s, _)| *s).max().unwrap_or(0);
    entries
        .iter()
        .filter(|(s, _)| *s != max_seq)
        .map(|(s, _)| (window, group, *s))
        .collect()
}

fn merged_block(
    tier: Tier,
    window: i64,
    group: GroupId,
    entries: &[(u32, BlockEntry)],
    merged: &BTreeMap<SeriesId, MultiColumns>,
) -> (NewBlock, Option<u32>) {
    let members = merged
        .iter()
        .map(|(id, (ts, cols))| (*id, &ts[..], cols.iter().map(|c| &c[..]).collect()));
    // Takes over the highest sequence number, so blocks written after the
    // merged ones still win over it.
    let max_seq = entries.iter().map(|(s, _)| *s).max().unwrap_or(0);
    (new_block(tier, window, group, members), Some(max_seq))
}

fn new_block<'a>(
    tier: Tier,
    window: i64,
    group: GroupId,
    members: impl Iterator<Item = (SeriesId, &'a [i64], Vec<&'a [f64]>)>,
) -> NewBlock {
    let kind = if tier == Tier::Raw {
        BlockKind::Raw
    } else {
        BlockKind::Rollup
    };
    let mut b = BlockBuilder::new(kind);
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for (id, ts, cols) in members {
        if ts.is_empty() {
            continue;
        }
        b.add(id, ts, &cols);
        lo = lo.min(ts[0]);
        hi = hi.max(*ts.last().expect("not empty"));
    }
    let samples = b.samples() as u32;
    NewBlock {
        window,
        group,
        bytes: b.finish(),
        samples,
        min_ts: lo,
        max_ts: hi,
    }
}

const NO_ROOM_YET: &str = "not enough free space on the data partition yet";

/// A maintenance write postponed by [`Storage::partition_room`].
fn is_no_room_yet(e: &StorageError) -> bool {
    matches!(e, StorageError::Io(io) if io.raw_os_error().is_none() && io.to_string() == NO_ROOM_YET)
}

/// Bytes blocks take in a file, record headers included.
fn record_bytes(blocks: &[NewBlock]) -> u64 {
    blocks
        .iter()
        .map(|b| super::files::stored_bytes(&b.bytes))
        .sum()
}

fn record_bytes_seq(blocks: &[(NewBlock, Option<u32>)]) -> u64 {
    blocks
        .iter()
        .map(|(b, _)| super::files::stored_bytes(&b.bytes))
        .sum()
}
