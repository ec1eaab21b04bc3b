//! Block files: the compressed blocks of each tier and time window, appended
//! to one file per window (`blocks/<tier>/<window start ms>-<generation>.dat`),
//! with their index in the sled tree `blocks`.
//!
//! Why not keep the blocks themselves in sled: measured on sled 0.34, 1.4 MB of
//! 4 KB values take 4.1 MB on disk after a clean close, and deleted values are
//! not given back (see `docs/storage.md`). Whole-window files are freed exactly
//! when retention drops them, and are written sequentially.
//!
//! Index keys (big-endian, so sled's order is time order):
//! `W tier window` → [`WindowMeta`]; `B tier window group seq` → [`BlockEntry`].
//! A record in a file is `u32 len, u32 crc32, tier, window, group, seq, block`;
//! the header makes files self-describing for `perch check`.
//!
//! Order of durability: records are appended and the file synced before the
//! index batch that refers to them is applied; a crash in between leaves bytes
//! past the recorded file length, which are truncated at the next open.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::encoding::{get_ivarint, get_uvarint, put_ivarint, put_uvarint};
use super::{GroupId, StorageError};

/// A resolution of stored data, each with its own window length and retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Raw = 0,
    Minute = 1,
    Hour = 2,
}

pub const TIERS: [Tier; 3] = [Tier::Raw, Tier::Minute, Tier::Hour];

impl Tier {
    pub fn from_u8(b: u8) -> Option<Tier> {
        TIERS.get(b as usize).copied()
    }

    pub fn dir_name(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Minute => "1m",
            Tier::Hour => "1h",
        }
    }

    /// Length of a window of this tier, in ms.
    pub fn window_ms(self) -> i64 {
        match self {
            Tier::Raw => 2 * 3_600_000,
            Tier::Minute => 24 * 3_600_000,
            Tier::Hour => 30 * 24 * 3_600_000,
        }
    }

    /// The window holding `ts`. Windows are left-open like PromQL ranges:
    /// window `s` holds `(s, s + window_ms]`.
    pub fn window_of(self, ts: i64) -> i64 {
        slot_start(ts, self.window_ms())
    }

    /// The window of this (rollup) tier that holds the buckets of raw window
    /// `raw_window`; tier windows are whole multiples of raw windows.
    pub fn window_for_raw(self, raw_window: i64) -> i64 {
        self.window_of(raw_window.saturating_add(1))
    }

    /// Bucket width of a rollup tier.
    pub fn resolution_ms(self) -> i64 {
        match self {
            Tier::Raw => 0,
            Tier::Minute => 60_000,
            Tier::Hour => 3_600_000,
        }
    }
}

/// Start of the left-open slot `(start, start + len]` holding `ts`: the one
/// rule for windows and rollup buckets, so that a bucket lines up exactly with
/// PromQL's `(t - range, t]`.
pub fn slot_start(ts: i64, len: i64) -> i64 {
    ts.saturating_sub(1).div_euclid(len).saturating_mul(len)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowMeta {
    pub generation: u32,
    pub file_len: u64,
    pub live_bytes: u64,
    pub samples: u64,
    pub blocks: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    /// Raw windows only: the 1 h rollups of every group are up to date.
    pub rolled_up: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockEntry {
    pub offset: u64,
    pub len: u32,
    pub samples: u32,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// A block to append.
pub struct NewBlock {
    pub window: i64,
    pub group: GroupId,
    pub bytes: Vec<u8>,
    pub samples: u32,
    pub min_ts: i64,
    pub max_ts: i64,
}

pub(crate) const RECORD_HEADER: usize = 8 + 1 + 8 + 4 + 4;

fn flip(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn unflip(b: &[u8]) -> i64 {
    (u64::from_be_bytes(b.try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

fn meta_key(tier: Tier, window: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(10);
    k.push(b'W');
    k.push(tier as u8);
    k.extend_from_slice(&flip(window));
    k
}

fn window_prefix(tier: Tier, window: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.push(b'B');
    k.push(tier as u8);
    k.extend_from_slice(&flip(window));
    k
}

fn group_prefix(tier: Tier, window: i64, group: GroupId) -> Vec<u8> {
    let mut k = window_prefix(tier, window);
    k.extend_from_slice(&group.to_be_bytes());
    k
}

fn block_key(tier: Tier, window: i64, group: GroupId, seq: u32) -> Vec<u8> {
    let mut k = group_prefix(tier, window, group);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// (group, seq) of a block key.
fn parse_block_key(k: &[u8]) -> Option<(GroupId, u32)> {
    if k.len() != 18 {
        return None;
    }
    Some((
        u32::from_be_bytes(k[10..14].try_into().ok()?),
        u32::from_be_bytes(k[14..18].try_into().ok()?),
    ))
}

fn encode_meta(m: &WindowMeta) -> Vec<u8> {
    let mut v = Vec::with_capacity(40);
    put_uvarint(&mut v, m.generation as u64);
    put_uvarint(&mut v, m.file_len);
    put_uvarint(&mut v, m.live_bytes);
    put_uvarint(&mut v, m.samples);
    put_uvarint(&mut v, m.blocks);
    put_ivarint(&mut v, m.min_ts);
    put_ivarint(&mut v, m.max_ts);
    v.push(m.rolled_up as u8);
    v
}

fn decode_meta(mut v: &[u8]) -> Option<WindowMeta> {
    Some(WindowMeta {
        generation: get_uvarint(&mut v).ok()? as u32,
        file_len: get_uvarint(&mut v).ok()?,
        live_bytes: get_uvarint(&mut v).ok()?,
        samples: get_uvarint(&mut v).ok()?,
        blocks: get_uvarint(&mut v).ok()?,
        min_ts: get_ivarint(&mut v).ok()?,
        max_ts: get_ivarint(&mut v).ok()?,
        rolled_up: *v.first()? == 1,
    })
}

fn encode_entry(e: &BlockEntry) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    put_uvarint(&mut v, e.offset);
    put_uvarint(&mut v, e.len as u64);
    put_uvarint(&mut v, e.samples as u64);
    put_ivarint(&mut v, e.min_ts);
    put_ivarint(&mut v, e.max_ts);
    v
}

fn decode_entry(mut v: &[u8]) -> Option<BlockEntry> {
    Some(BlockEntry {
        offset: get_uvarint(&mut v).ok()?,
        len: get_uvarint(&mut v).ok()? as u32,
        samples: get_uvarint(&mut v).ok()? as u32,
        min_ts: get_ivarint(&mut v).ok()?,
        max_ts: get_ivarint(&mut v).ok()?,
    })
}

pub struct BlockFiles {
    root: PathBuf,
    tree: sled::Tree,
    /// Mirror of the `W` keys.
    windows: Mutex<BTreeMap<(Tier, i64), WindowMeta>>,
    /// Held shared by readers and exclusively by whatever deletes or replaces
    /// files, so a reader never loses a file it is reading.
    files_lock: RwLock<()>,
    /// Open files for reading, so a query does not open a file per block.
    /// Bounded; entries of a window go when its file is deleted or replaced,
    /// so no deleted file stays pinned on disk.
    read_handles: Mutex<HashMap<(Tier, i64, u32), Arc<File>>>,
    /// Bytes of block records written since start, by [`BlockWrite`].
    written: [std::sync::atomic::AtomicU64; 4],
}

/// Why block records were written, as `/metrics` tells SD-card writes apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockWrite {
    /// Partial raw blocks from the head.
    Checkpoint,
    /// Partial blocks of a group merged into one.
    Compaction,
    /// 1 min and 1 h rollups.
    Rollups,
    /// A window's file rewritten with only its live records.
    Rewrite,
}

impl BlockWrite {
    pub const ALL: [BlockWrite; 4] = [
        BlockWrite::Checkpoint,
        BlockWrite::Compaction,
        BlockWrite::Rollups,
        BlockWrite::Rewrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BlockWrite::Checkpoint => "checkpoint",
            BlockWrite::Compaction => "compaction",
            BlockWrite::Rollups => "rollups",
            BlockWrite::Rewrite => "rewrite",
        }
    }
}

/// Files kept open for reading (a month of raw windows is 360).
const READ_HANDLES: usize = 512;

/// What opening the block files repaired.
#[derive(Debug, Default)]
pub struct FilesRepair {
    /// Bytes past the recorded end of files (torn appends).
    pub truncated_bytes: u64,
    pub removed_orphans: usize,
    /// Files shorter than their index says (cut by damage, or by a copy
    /// that did not finish): what was lost, for the problems list.
    pub lost: Vec<String>,
}

impl BlockFiles {
    /// Opens the files; with `repair`, truncates torn appends and deletes
    /// orphans, otherwise only reports them.
    pub fn open(
        root: &Path,
        db: &sled::Db,
        repair: bool,
    ) -> Result<(BlockFiles, FilesRepair), StorageError> {
        for t in TIERS {
            fs::create_dir_all(root.join(t.dir_name()))?;
        }
        let tree = db.open_tree("blocks")?;
        let mut windows = BTreeMap::new();
        for item in tree.scan_prefix(b"W") {
            let (k, v) = item?;
            let (Some(tier), Some(meta)) =
                (k.get(1).and_then(|&b| Tier::from_u8(b)), decode_meta(&v))
            else {
                return Err(StorageError::Corrupt("window index entry".into()));
            };
            if k.len() != 10 {
                return Err(StorageError::Corrupt("window index key".into()));
            }
            windows.insert((tier, unflip(&k[2..10])), meta);
        }
        let files = BlockFiles {
            root: root.to_path_buf(),
            tree,
            windows: Mutex::new(windows),
            read_handles: Mutex::new(HashMap::new()),
            files_lock: RwLock::new(()),
            written: Default::default(),
        };
        let repair = files.repair(repair)?;
        Ok((files, repair))
    }

    fn path(&self, tier: Tier, window: i64, generation: u32) -> PathBuf {
        self.root
            .join(tier.dir_name())
            .join(format!("{window}-{generation}.dat"))
    }

    /// Truncates bytes past the recorded end of each file and removes files
    /// that no window refers to (left by a crash during a rewrite).
    fn repair(&self, apply: bool) -> Result<FilesRepair, StorageError> {
        let mut repair = FilesRepair::default();
        let windows = self.windows.lock().clone();
        for t in TIERS {
            for e in fs::read_dir(self.root.join(t.dir_name()))? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                let parsed = name.strip_suffix(".dat").and_then(|s| {
                    let (w, g) = s.split_once('-')?;
                    Some((w.parse::<i64>().ok()?, g.parse::<u32>().ok()?))
                });
                let keep = parsed
                    .and_then(|(w, g)| windows.get(&(t, w)).filter(|m| m.generation == g).copied());
                match keep {
                    Some(meta) => {
                        let len = e.metadata()?.len();
                        if len < meta.file_len {
                            let (w, _) = parsed.expect("kept files parse");
                            repair.lost.push(self.cut_short(t, w, meta, len, apply)?);
                        } else if len > meta.file_len {
                            if apply {
                                OpenOptions::new()
                                    .write(true)
                                    .open(e.path())?
                                    .set_len(meta.file_len)?;
                            }
                            repair.truncated_bytes += len - meta.file_len;
                        }
                    }
                    None => {
                        if apply {
                            fs::remove_file(e.path())?;
                        }
                        repair.removed_orphans += 1;
                    }
                }
            }
        }
        Ok(repair)
    }

    /// A window file shorter than its index: the blocks past its end are
    /// lost; with `apply` their index entries go and the window's totals are
    /// recomputed, so that reads, compaction and `perch check` see a
    /// consistent (smaller) window. Returns what was lost, in words.
    fn cut_short(
        &self,
        tier: Tier,
        window: i64,
        meta: WindowMeta,
        len: u64,
        apply: bool,
    ) -> Result<String, StorageError> {
        let entries = self.window_blocks(tier, window)?;
        let (kept, lost): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|(_, _, e)| e.offset + e.len as u64 <= len);
        let lost_samples: u64 = lost.iter().map(|(_, _, e)| e.samples as u64).sum();
        let msg = format!(
            "block file {} is {len} bytes, its index expects {}: {} block(s) with {lost_samples} samples past its end are lost{}",
            self.path(tier, window, meta.generation).display(),
            meta.file_len,
            lost.len(),
            if apply { " (removed from the index; the rest of the window is kept)" } else { "" }
        );
        if !apply {
            return Ok(msg);
        }
        let end = kept
            .iter()
            .map(|(_, _, e)| e.offset + e.len as u64)
            .max()
            .unwrap_or(0);
        let mut new_meta = WindowMeta {
            file_len: end,
            live_bytes: kept.iter().map(|(_, _, e)| e.len as u64).sum(),
            samples: kept.iter().map(|(_, _, e)| e.samples as u64).sum(),
            blocks: kept.len() as u64,
            min_ts: kept
                .iter()
                .map(|(_, _, e)| e.min_ts)
                .min()
                .unwrap_or(i64::MAX),
            max_ts: kept
                .iter()
                .map(|(_, _, e)| e.max_ts)
                .max()
                .unwrap_or(i64::MIN),
            ..meta
        };
        // Rollups of a raw window are derived again from what is left.
        if tier == Tier::Raw {
            new_meta.rolled_up = false;
        }
        let mut batch = sled::Batch::default();
        for (g, seq, _) in &lost {
            batch.remove(block_key(tier, window, *g, *seq));
        }
        batch.insert(meta_key(tier, window), encode_meta(&new_meta));
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        OpenOptions::new()
            .write(true)
            .open(self.path(tier, window, meta.generation))?
            .set_len(end)?;
        self.windows.lock().insert((tier, window), new_meta);
        Ok(msg)
    }

    /// Blocks of a window that cannot be read back (checksum, short file).
    pub fn damaged_blocks(&self, tier: Tier, window: i64) -> Vec<String> {
        let entries = match self.window_blocks(tier, window) {
            Ok(e) => e,
            Err(e) => return vec![e.to_string()],
        };
        let mut out = Vec::new();
        for (_, _, e) in entries {
            if let Err(err) = self.read_record(tier, window, &e) {
                out.push(err.to_string());
            }
        }
        out
    }

    pub fn windows(&self, tier: Tier) -> Vec<(i64, WindowMeta)> {
        self.windows
            .lock()
            .iter()
            .filter(|((t, _), _)| *t == tier)
            .map(|((_, w), m)| (*w, *m))
            .collect()
    }

    pub fn window_meta(&self, tier: Tier, window: i64) -> Option<WindowMeta> {
        self.windows.lock().get(&(tier, window)).copied()
    }

    /// Windows of `tier` that overlap `[start, end]`.
    pub fn windows_in(&self, tier: Tier, start: i64, end: i64) -> Vec<(i64, WindowMeta)> {
        let lo = tier.window_of(start);
        self.windows
            .lock()
            .range((tier, lo)..=(tier, end))
            .map(|((_, w), m)| (*w, *m))
            .collect()
    }

    /// Block entries of one group in one window, in write order.
    pub fn group_blocks(
        &self,
        tier: Tier,
        window: i64,
        group: GroupId,
    ) -> Result<Vec<(u32, BlockEntry)>, StorageError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(group_prefix(tier, window, group)) {
            let (k, v) = item?;
            let (_, seq) =
                parse_block_key(&k).ok_or_else(|| StorageError::Corrupt("block key".into()))?;
            let e = decode_entry(&v).ok_or_else(|| StorageError::Corrupt("block entry".into()))?;
            out.push((seq, e));
        }
        Ok(out)
    }

    /// Every block entry of a window: (group, seq, entry).
    pub fn window_blocks(
        &self,
        tier: Tier,
        window: i64,
    ) -> Result<Vec<(GroupId, u32, BlockEntry)>, StorageError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(window_prefix(tier, window)) {
            let (k, v) = item?;
            let (g, seq) =
                parse_block_key(&k).ok_or_else(|| StorageError::Corrupt("block key".into()))?;
            let e = decode_entry(&v).ok_or_else(|| StorageError::Corrupt("block entry".into()))?;
            out.push((g, seq, e));
        }
        Ok(out)
    }

    /// Runs `f` with files guaranteed not to be deleted or replaced meanwhile.
    pub fn with_read_lock<T>(&self, f: impl FnOnce(&Reader<'_>) -> T) -> T {
        let _guard = self.files_lock.read();
        f(&Reader { files: self })
    }

    fn read_handle(&self, tier: Tier, window: i64, generation: u32) -> io::Result<Arc<File>> {
        let key = (tier, window, generation);
        if let Some(f) = self.read_handles.lock().get(&key) {
            return Ok(f.clone());
        }
        let file = Arc::new(File::open(self.path(tier, window, generation))?);
        let mut handles = self.read_handles.lock();
        if handles.len() >= READ_HANDLES {
            handles.clear();
        }
        handles.insert(key, file.clone());
        Ok(file)
    }

    /// Closes the cached handles of a window whose file goes away.
    fn forget_handles(&self, tier: Tier, window: i64) {
        self.read_handles
            .lock()
            .retain(|&(t, w, _), _| (t, w) != (tier, window));
    }

    fn read_record(
        &self,
        tier: Tier,
        window: i64,
        entry: &BlockEntry,
    ) -> Result<Vec<u8>, StorageError> {
        let meta = self.window_meta(tier, window).ok_or_else(|| {
            StorageError::Corrupt(format!("no window {window} in tier {}", tier.dir_name()))
        })?;
        let file = self.read_handle(tier, window, meta.generation)?;
        let mut buf = vec![0u8; entry.len as usize];
        match file.read_exact_at(&mut buf, entry.offset) {
            Ok(()) => {}
            // The file ends before the block: damage, like a bad checksum.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(StorageError::Corrupt(format!(
                    "block at {}:{} lies past the end of the file",
                    self.path(tier, window, meta.generation).display(),
                    entry.offset
                )))
            }
            Err(e) => return Err(e.into()),
        }
        if buf.len() < RECORD_HEADER {
            return Err(StorageError::Corrupt("short block record".into()));
        }
        let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
        if len + 8 != buf.len() || crc32fast::hash(&buf[8..]) != crc {
            return Err(StorageError::Corrupt(format!(
                "block at {}:{} fails its checksum",
                self.path(tier, window, meta.generation).display(),
                entry.offset
            )));
        }
        buf.drain(..RECORD_HEADER);
        Ok(buf)
    }

    /// Appends blocks (each with the next sequence number of its group and
    /// window), syncs the files, then applies one index batch that also
    /// removes `replaced`. The caller flushes sled to make it durable.
    pub fn append(
        &self,
        tier: Tier,
        blocks: Vec<NewBlock>,
        replaced: &[(i64, GroupId, u32)],
    ) -> Result<(), StorageError> {
        self.append_with_seq(
            tier,
            blocks.into_iter().map(|b| (b, None)).collect(),
            replaced,
        )
    }

    /// Like [`BlockFiles::append`], with an explicit sequence number where given
    /// (a merge keeps the highest number of what it replaces).
    pub fn append_with_seq(
        &self,
        tier: Tier,
        blocks: Vec<(NewBlock, Option<u32>)>,
        replaced: &[(i64, GroupId, u32)],
    ) -> Result<(), StorageError> {
        let mut by_window: BTreeMap<i64, Vec<(NewBlock, Option<u32>)>> = BTreeMap::new();
        for b in blocks {
            by_window.entry(b.0.window).or_default().push(b);
        }
        let mut batch = sled::Batch::default();
        let mut metas = self.windows.lock().clone();
        let mut assigned: rustc_hash::FxHashMap<(i64, GroupId), u32> = Default::default();
        // Entries removed: subtract their bytes and samples from their windows.
        for &(w, g, seq) in replaced {
            let key = block_key(tier, w, g, seq);
            if let Some(v) = self.tree.get(&key)? {
                if let (Some(e), Some(m)) = (decode_entry(&v), metas.get_mut(&(tier, w))) {
                    m.live_bytes = m.live_bytes.saturating_sub(e.len as u64);
                    m.samples = m.samples.saturating_sub(e.samples as u64);
                    m.blocks = m.blocks.saturating_sub(1);
                }
                batch.remove(key);
            }
        }
        for (window, blocks) in by_window {
            let mut meta = metas.get(&(tier, window)).copied().unwrap_or(WindowMeta {
                generation: 1,
                min_ts: i64::MAX,
                max_ts: i64::MIN,
                ..Default::default()
            });
            let path = self.path(tier, window, meta.generation);
            let new_file = !path.exists();
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)?;
            if new_file {
                // The index will point at this file: its name must be durable.
                sync_dir(path.parent().expect("file in a directory"))?;
            }
            let mut data = Vec::new();
            let mut offset = meta.file_len;
            for (b, seq) in blocks {
                let seq = match (seq, assigned.get(&(window, b.group))) {
                    (Some(s), _) => s,
                    (None, Some(prev)) => prev + 1,
                    (None, None) => self.next_seq(tier, window, b.group)?,
                };
                assigned.insert((window, b.group), seq);
                let key = block_key(tier, window, b.group, seq);
                // A merge overwrites the entry it takes the place of.
                if let Some(old) = self.tree.get(&key)?.as_deref().and_then(decode_entry) {
                    meta.live_bytes = meta.live_bytes.saturating_sub(old.len as u64);
                    meta.samples = meta.samples.saturating_sub(old.samples as u64);
                    meta.blocks = meta.blocks.saturating_sub(1);
                }
                let start = data.len();
                write_record(&mut data, tier, window, b.group, seq, &b.bytes);
                let len = (data.len() - start) as u32;
                batch.insert(
                    key,
                    encode_entry(&BlockEntry {
                        offset,
                        len,
                        samples: b.samples,
                        min_ts: b.min_ts,
                        max_ts: b.max_ts,
                    }),
                );
                offset += len as u64;
                meta.live_bytes += len as u64;
                meta.samples += b.samples as u64;
                meta.blocks += 1;
                meta.min_ts = meta.min_ts.min(b.min_ts);
                meta.max_ts = meta.max_ts.max(b.max_ts);
                if tier == Tier::Raw {
                    meta.rolled_up = false;
                }
            }
            // Written at the recorded end, not appended: bytes of an earlier
            // failed write past it (disk full) are overwritten, never indexed.
            let written = file
                .write_all_at(&data, meta.file_len)
                .and_then(|_| file.sync_data());
            if let Err(e) = written {
                let _ = file.set_len(meta.file_len);
                return Err(e.into());
            }
            let why = match tier {
                _ if !replaced.is_empty() => BlockWrite::Compaction,
                Tier::Raw => BlockWrite::Checkpoint,
                Tier::Minute | Tier::Hour => BlockWrite::Rollups,
            };
            self.count_written(why, data.len());
            meta.file_len = offset;
            metas.insert((tier, window), meta);
            batch.insert(meta_key(tier, window), encode_meta(&meta));
        }
        for &(w, _, _) in replaced {
            if let Some(m) = metas.get(&(tier, w)) {
                batch.insert(meta_key(tier, w), encode_meta(m));
            }
        }
        self.tree.apply_batch(batch)?;
        *self.windows.lock() = metas;
        Ok(())
    }

    fn next_seq(&self, tier: Tier, window: i64, group: GroupId) -> Result<u32, StorageError> {
        let last = self
            .tree
            .scan_prefix(group_prefix(tier, window, group))
            .next_back();
        Ok(match last {
            Some(item) => {
                let (k, _) = item?;
                parse_block_key(&k).map_or(0, |(_, s)| s) + 1
            }
            None => 0,
        })
    }

    fn count_written(&self, why: BlockWrite, bytes: usize) {
        self.written[why as usize].fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes of block records written since start for `why`.
    pub fn written(&self, why: BlockWrite) -> u64 {
        self.written[why as usize].load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_rolled_up(&self, window: i64, rolled_up: bool) -> Result<(), StorageError> {
        let mut windows = self.windows.lock();
        if let Some(m) = windows.get_mut(&(Tier::Raw, window)) {
            m.rolled_up = rolled_up;
            self.tree
                .insert(meta_key(Tier::Raw, window), encode_meta(m))?;
        }
        Ok(())
    }

    /// Removes a whole window: index first, then the file.
    pub fn drop_window(&self, tier: Tier, window: i64) -> Result<u64, StorageError> {
        let _guard = self.files_lock.write();
        let Some(meta) = self.window_meta(tier, window) else {
            return Ok(0);
        };
        let mut batch = sled::Batch::default();
        for item in self.tree.scan_prefix(window_prefix(tier, window)) {
            batch.remove(item?.0);
        }
        batch.remove(meta_key(tier, window));
        self.tree.apply_batch(batch)?;
        self.windows.lock().remove(&(tier, window));
        self.tree.flush()?;
        self.forget_handles(tier, window);
        match fs::remove_file(self.path(tier, window, meta.generation)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        Ok(meta.file_len)
    }

    /// Rewrites a window's file with only its live records, freeing what
    /// merges replaced. Returns the bytes freed.
    pub fn rewrite_window(&self, tier: Tier, window: i64) -> Result<u64, StorageError> {
        let Some(meta) = self.window_meta(tier, window) else {
            return Ok(0);
        };
        let entries = self.window_blocks(tier, window)?;
        let new_gen = meta.generation + 1;
        let new_path = self.path(tier, window, new_gen);
        let mut data = Vec::with_capacity(meta.live_bytes as usize);
        let mut batch = sled::Batch::default();
        for (g, seq, e) in &entries {
            let body = self.read_record(tier, window, e)?;
            let offset = data.len() as u64;
            write_record(&mut data, tier, window, *g, *seq, &body);
            batch.insert(
                block_key(tier, window, *g, *seq),
                encode_entry(&BlockEntry {
                    offset,
                    len: (data.len() as u64 - offset) as u32,
                    ..*e
                }),
            );
        }
        let written = File::create(&new_path).and_then(|mut f| {
            f.write_all(&data)?;
            f.sync_data()
        });
        if let Err(e) = written.and_then(|_| sync_dir(new_path.parent().expect("in a directory"))) {
            let _ = fs::remove_file(&new_path);
            return Err(e.into());
        }
        self.count_written(BlockWrite::Rewrite, data.len());
        let new_meta = WindowMeta {
            generation: new_gen,
            file_len: data.len() as u64,
            live_bytes: data.len() as u64,
            ..meta
        };
        batch.insert(meta_key(tier, window), encode_meta(&new_meta));
        let _guard = self.files_lock.write();
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        self.windows.lock().insert((tier, window), new_meta);
        self.forget_handles(tier, window);
        fs::remove_file(self.path(tier, window, meta.generation))?;
        Ok(meta.file_len.saturating_sub(new_meta.file_len))
    }

    /// Reads and checks every record of every window, for `perch check`:
    /// each readable block goes to `on_block`, each problem to `on_damage`.
    pub fn verify(
        &self,
        mut on_block: impl FnMut(Tier, i64, GroupId, &[u8]),
        mut on_damage: impl FnMut(String),
    ) -> Result<usize, StorageError> {
        let mut n = 0;
        let windows = self.windows.lock().clone();
        for ((tier, window), meta) in windows {
            let path = self.path(tier, window, meta.generation);
            let len = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) => {
                    on_damage(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            if len < meta.file_len {
                on_damage(format!(
                    "{} is {len} bytes, the index expects {}",
                    path.display(),
                    meta.file_len
                ));
            }
            for (g, _, e) in self.window_blocks(tier, window)? {
                match self.read_record(tier, window, &e) {
                    Ok(body) => {
                        on_block(tier, window, g, &body);
                        n += 1;
                    }
                    Err(err) => on_damage(format!("window {window} ({}): {err}", tier.dir_name())),
                }
            }
        }
        Ok(n)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn write_record(out: &mut Vec<u8>, tier: Tier, window: i64, group: GroupId, seq: u32, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&((body.len() + RECORD_HEADER - 8) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(tier as u8);
    out.extend_from_slice(&window.to_le_bytes());
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Access to block bodies while holding the files lock.
pub struct Reader<'a> {
    files: &'a BlockFiles,
}

impl Reader<'_> {
    pub fn read(
        &self,
        tier: Tier,
        window: i64,
        entry: &BlockEntry,
    ) -> Result<Vec<u8>, StorageError> {
        self.files.read_record(tier, window, entry)
    }
}
