//! Block files: the compressed blocks of each tier and time window, appended
//! to one file per window (`blocks/<tier>/<window start ms>-<generation>.dat`),
//! each with its block index beside it (`…-<generation>.idx`, see
//! [`block_index`](super::block_index)) and the window's totals and file
//! lengths in the sled tree `blocks` (`W tier window` → [`WindowMeta`],
//! big-endian so that sled's order is time order).
//!
//! Why not keep the blocks themselves in sled: measured on sled 0.34, 1.4 MB of
//! 4 KB values take 4.1 MB on disk after a clean close, and deleted values are
//! not given back (see `docs/storage.md`). Whole-window files are freed exactly
//! when retention drops them, and are written sequentially.
//!
//! A record in a `.dat` file is `u32 len, u32 crc32, tier, window, group,
//! seq, block`; the header makes files self-describing for `perch check`.
//!
//! Order of durability: blocks are appended and the `.dat` synced, then the
//! index record appended and the `.idx` synced, then the window's new
//! lengths go to sled (made durable by the caller's flush); a crash in
//! between leaves bytes past the recorded lengths, which are truncated at the
//! next open.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::block::Block;
use super::block_index::{self, IndexCache, IndexOp, WindowIndex};
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
    /// Bytes of the window's `.idx` file that hold its index.
    pub index_len: u64,
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

/// Most bytes a block of `body` takes on disk: its record and its index
/// entry (with a share of the index record's header).
pub(crate) fn stored_bytes(body: &[u8]) -> u64 {
    (body.len() + RECORD_HEADER + block_index::MAX_SET_BYTES) as u64
}

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

/// Format 3's block keys, `B tier window group seq`, read once by
/// [`upgrade_index_from_sled`].
fn format3_window_prefix(tier: Tier, window: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.push(b'B');
    k.push(tier as u8);
    k.extend_from_slice(&flip(window));
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
    put_uvarint(&mut v, m.index_len);
    v
}

/// A window key's value; `index_len` is missing in format 3, whose index
/// was in sled (the flag says whether it was there).
fn decode_meta(mut v: &[u8]) -> Option<(WindowMeta, bool)> {
    let mut meta = WindowMeta {
        generation: get_uvarint(&mut v).ok()? as u32,
        file_len: get_uvarint(&mut v).ok()?,
        live_bytes: get_uvarint(&mut v).ok()?,
        samples: get_uvarint(&mut v).ok()?,
        blocks: get_uvarint(&mut v).ok()?,
        min_ts: get_ivarint(&mut v).ok()?,
        max_ts: get_ivarint(&mut v).ok()?,
        rolled_up: *v.first()? == 1,
        index_len: 0,
    };
    v = &v[1..];
    let index_len = get_uvarint(&mut v).ok();
    meta.index_len = index_len.unwrap_or(0);
    Some((meta, index_len.is_some()))
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
    /// Indexes of the windows used recently.
    indexes: Mutex<IndexCache>,
    /// Serializes whatever appends to or replaces a window's files.
    writing: Mutex<()>,
    /// What rebuilding indexes found, for the problems list
    /// ([`BlockFiles::take_rebuilt`]).
    rebuilt: Mutex<Vec<String>>,
    /// Windows whose index a read found damaged, for
    /// [`BlockFiles::rebuild_damaged`] (a failed rebuild is dropped; the
    /// next read that fails queues it again).
    damaged: Mutex<std::collections::BTreeSet<(Tier, i64)>>,
    /// Held shared by readers and exclusively by whatever deletes or replaces
    /// files, so a reader never loses a file it is reading.
    files_lock: RwLock<()>,
    /// Open files for reading, so a query does not open a file per block.
    /// Bounded; entries of a window go when its file is deleted or replaced,
    /// so no deleted file stays pinned on disk.
    read_handles: Mutex<HashMap<(Tier, i64, u32), Arc<File>>>,
    /// Bytes of block records written since start, by [`BlockWrite`].
    written: [std::sync::atomic::AtomicU64; 5],
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
    /// The block index files (`.idx`), whatever the blocks were written for.
    Index,
}

impl BlockWrite {
    pub const ALL: [BlockWrite; 5] = [
        BlockWrite::Checkpoint,
        BlockWrite::Compaction,
        BlockWrite::Rollups,
        BlockWrite::Rewrite,
        BlockWrite::Index,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BlockWrite::Checkpoint => "checkpoint",
            BlockWrite::Compaction => "compaction",
            BlockWrite::Rollups => "rollups",
            BlockWrite::Rewrite => "rewrite",
            BlockWrite::Index => "index",
        }
    }
}

/// Files kept open for reading (a month of raw windows is 360).
const READ_HANDLES: usize = 512;

/// Heap the cached window indexes may take: a day of raw windows of 1 000
/// groups after compaction is about 1 MB (indexes read from their files are
/// shrunk to fit).
const INDEX_CACHE_BYTES: usize = 2 << 20;

/// What opening the block files repaired.
#[derive(Debug, Default)]
pub struct FilesRepair {
    /// Bytes past the recorded end of files (torn appends).
    pub truncated_bytes: u64,
    pub removed_orphans: usize,
    /// Files shorter than recorded (cut by damage, or by a copy that did
    /// not finish) and indexes rebuilt: what was lost or done, for the
    /// problems list.
    pub lost: Vec<String>,
}

/// The two files of a window generation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    Blocks,
    Index,
}

impl Part {
    /// The file's length as the window's key records it.
    fn recorded(self, meta: &WindowMeta) -> u64 {
        match self {
            Part::Blocks => meta.file_len,
            Part::Index => meta.index_len,
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Part::Blocks => "dat",
            Part::Index => "idx",
        }
    }
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
            let (Some(tier), Some((meta, true))) =
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
            indexes: Mutex::new(IndexCache::new(INDEX_CACHE_BYTES)),
            writing: Mutex::new(()),
            rebuilt: Mutex::new(Vec::new()),
            damaged: Mutex::new(Default::default()),
            read_handles: Mutex::new(HashMap::new()),
            files_lock: RwLock::new(()),
            written: Default::default(),
        };
        let repair = files.repair(repair)?;
        Ok((files, repair))
    }

    fn path(&self, tier: Tier, window: i64, generation: u32, part: Part) -> PathBuf {
        window_path(&self.root, tier, window, generation, part)
    }

    /// Truncates bytes past the recorded end of each file, repairs windows
    /// whose files are shorter than recorded, and removes files that no
    /// window refers to (left by a crash during a rewrite).
    fn repair(&self, apply: bool) -> Result<FilesRepair, StorageError> {
        let mut repair = FilesRepair::default();
        let windows = self.windows.lock().clone();
        let mut short = Vec::new();
        let mut listed = std::collections::HashSet::new();
        for t in TIERS {
            for e in fs::read_dir(self.root.join(t.dir_name()))? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                let parsed = parse_file_name(&name);
                let keep = parsed.and_then(|(w, g, part)| {
                    let meta = windows.get(&(t, w)).filter(|m| m.generation == g)?;
                    Some((w, part, *meta))
                });
                match keep {
                    Some((w, part, meta)) => {
                        listed.insert((t, w, part));
                        let len = e.metadata()?.len();
                        let recorded = part.recorded(&meta);
                        if len < recorded {
                            short.push((t, w, part, len));
                        } else if len > recorded {
                            if apply {
                                OpenOptions::new()
                                    .write(true)
                                    .open(e.path())?
                                    .set_len(recorded)?;
                            }
                            repair.truncated_bytes += len - recorded;
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
        // A missing file is as short as can be.
        for (&(t, w), meta) in &windows {
            for part in [Part::Blocks, Part::Index] {
                let recorded = part.recorded(meta);
                if recorded > 0 && !listed.contains(&(t, w, part)) {
                    short.push((t, w, part, 0));
                }
            }
        }
        // The index first: rebuilding it reads what the blocks file still
        // holds, which then needs no repair of its own.
        short.sort_by_key(|&(t, w, part, _)| (t, w, part == Part::Blocks));
        for (t, w, part, len) in short {
            // A window whose index was rebuilt has new files: its blocks
            // file's length was looked at with the old ones.
            let Some(meta) = self
                .window_meta(t, w)
                .filter(|m| m.generation == windows.get(&(t, w)).map_or(0, |old| old.generation))
            else {
                continue;
            };
            let lost = match part {
                Part::Index if apply => {
                    let _writing = self.writing.lock();
                    let why = format!("is {len} bytes where {} were recorded", meta.index_len);
                    self.rebuild_index(t, w, meta, &why)?.2
                }
                Part::Index => format!(
                    "block index {} is {len} bytes, its window expects {}: it will be rebuilt from the blocks file at the next start",
                    self.path(t, w, meta.generation, Part::Index).display(),
                    meta.index_len
                ),
                Part::Blocks => self.cut_short(t, w, meta, len, apply)?,
            };
            repair.lost.push(lost);
        }
        Ok(repair)
    }

    /// Rebuilds a window's index from its blocks file, whose records name
    /// their group and sequence number, when the index is shorter than
    /// recorded, gone, or fails its checksum: nothing the blocks hold is
    /// lost. The window gets a new generation of both files (written and
    /// synced before its key names them, as a rewrite does). Where a
    /// (group, seq) appears twice the later record wins, as the index's own
    /// order would; blocks that a merge had superseded come back as well,
    /// which is harmless (a merge gives its block the highest sequence
    /// number of those it replaces, and reads and merges let the highest
    /// win) and undone by the window's next compaction. Call with `writing`
    /// held.
    fn rebuild_index(
        &self,
        tier: Tier,
        window: i64,
        meta: WindowMeta,
        why: &str,
    ) -> Result<(WindowMeta, WindowIndex, String), StorageError> {
        let path = self.path(tier, window, meta.generation, Part::Blocks);
        let mut bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let missing = meta.file_len.saturating_sub(bytes.len() as u64);
        // Past the recorded end lie only appends that were never indexed.
        bytes.truncate(meta.file_len as usize);
        let mut found: BTreeMap<(GroupId, u32), (BlockEntry, &[u8])> = BTreeMap::new();
        let mut unreadable = 0usize;
        let mut pos = 0usize;
        while let Some(header) = bytes.get(pos..pos + RECORD_HEADER) {
            let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
            let Some(record) = pos.checked_add(8 + len).and_then(|end| bytes.get(pos..end)) else {
                break;
            };
            let group = u32::from_le_bytes(header[17..21].try_into().expect("4 bytes"));
            let seq = u32::from_le_bytes(header[21..25].try_into().expect("4 bytes"));
            let named = header[8] == tier as u8
                && i64::from_le_bytes(header[9..17].try_into().expect("8 bytes")) == window;
            let entry = (named && record_intact(record))
                .then(|| block_entry(&record[RECORD_HEADER..], pos as u64, record.len() as u32))
                .flatten();
            match entry {
                Some(e) => {
                    found.insert((group, seq), (e, &record[RECORD_HEADER..]));
                }
                None => unreadable += 1,
            }
            pos += record.len();
        }
        // Bytes left over: a record whose length does not fit the file.
        let torn = pos < bytes.len();
        let entries: Vec<_> = found
            .into_iter()
            .map(|((g, seq), (e, body))| (g, seq, e, body))
            .collect();
        let (new_meta, index) = self.write_generation(tier, window, meta, &entries, true)?;
        let msg = format!(
            "the block index of window {window} ({}) {why}; rebuilt from its blocks file: {} block(s) with {} samples kept{}{}",
            tier.dir_name(),
            index.len(),
            new_meta.samples,
            if unreadable > 0 {
                format!(", {unreadable} unreadable record(s) skipped")
            } else {
                String::new()
            },
            match (missing, torn) {
                (0, false) => String::new(),
                (0, true) => "; its last record does not fit the file and is lost".into(),
                (n, _) => format!(
                    "; the blocks file is {n} bytes short of its recorded length and the blocks there are lost"
                ),
            }
        );
        tracing::warn!("{msg}");
        Ok((new_meta, index, msg))
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
        let index = match self.window_index(tier, window) {
            Ok(index) => index,
            // It is rebuilt from the blocks file by the next maintenance
            // pass or append, which says what the blocks file lost.
            Err(e) if e.is_damage() => {
                return Ok(format!(
                    "block file {} is {len} bytes, its index expects {}; the index itself is damaged: {e}",
                    self.path(tier, window, meta.generation, Part::Blocks).display(),
                    meta.file_len
                ))
            }
            Err(e) => return Err(e),
        };
        let (kept, lost): (Vec<_>, Vec<_>) = index
            .all()
            .into_iter()
            .partition(|(_, _, e)| e.offset + e.len as u64 <= len);
        let lost_samples: u64 = lost.iter().map(|(_, _, e)| e.samples as u64).sum();
        let path = self.path(tier, window, meta.generation, Part::Blocks);
        let msg = format!(
            "block file {} is {len} bytes, its index expects {}: {} block(s) with {lost_samples} samples past its end are lost{}",
            path.display(),
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
        let ops: Vec<_> = lost
            .iter()
            .map(|&(g, seq, _)| IndexOp::Remove(g, seq))
            .collect();
        let mut index = (*index).clone();
        for op in &ops {
            index.apply(op);
        }
        let mut new_meta = totals_of(&index, meta);
        new_meta.file_len = end;
        if !ops.is_empty() {
            new_meta.index_len = self.append_index(tier, window, meta, &ops)?.0;
        }
        // Rollups of a raw window are derived again from what is left.
        if tier == Tier::Raw {
            new_meta.rolled_up = false;
        }
        self.tree
            .insert(meta_key(tier, window), encode_meta(&new_meta))?;
        self.tree.flush()?;
        if path.exists() {
            OpenOptions::new().write(true).open(&path)?.set_len(end)?;
        } else {
            File::create(&path)?;
            sync_dir(path.parent().expect("in a directory"))?;
        }
        self.windows.lock().insert((tier, window), new_meta);
        self.indexes.lock().forget((tier, window));
        Ok(msg)
    }

    /// Appends one record of `ops` to a window's index file at its recorded
    /// end and syncs it; returns the file's new length and whether the file
    /// was created (its directory then needs a sync).
    fn append_index(
        &self,
        tier: Tier,
        window: i64,
        meta: WindowMeta,
        ops: &[IndexOp],
    ) -> Result<(u64, bool), StorageError> {
        let path = self.path(tier, window, meta.generation, Part::Index);
        let record = block_index::encode_record(ops);
        let created = write_at_end(&path, &record, meta.index_len)?;
        self.count_written(BlockWrite::Index, record.len());
        Ok((meta.index_len + record.len() as u64, created))
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

    /// A window's block index: from the cache, or read from its file.
    pub fn window_index(&self, tier: Tier, window: i64) -> Result<Arc<WindowIndex>, StorageError> {
        let Some(meta) = self.window_meta(tier, window) else {
            return Ok(Arc::default());
        };
        let key = (tier, window);
        let version = (meta.generation, meta.index_len);
        if let Some(index) = self.indexes.lock().get(key, version) {
            return Ok(index);
        }
        let index = match self.read_index(tier, window, meta) {
            Ok(index) => Arc::new(index),
            Err(e) => {
                if e.is_damage() {
                    self.damaged.lock().insert(key);
                }
                return Err(e);
            }
        };
        self.indexes.lock().put(key, version, index.clone());
        Ok(index)
    }

    /// Reads a window's index file as far as its recorded length.
    fn read_index(
        &self,
        tier: Tier,
        window: i64,
        meta: WindowMeta,
    ) -> Result<WindowIndex, StorageError> {
        if meta.index_len == 0 {
            return Ok(WindowIndex::default());
        }
        let path = self.path(tier, window, meta.generation, Part::Index);
        let mut bytes = vec![0u8; meta.index_len as usize];
        match File::open(&path).and_then(|f| f.read_exact_at(&mut bytes, 0)) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::NotFound
                ) =>
            {
                return Err(StorageError::Corrupt(format!(
                    "block index {} is shorter than the {} bytes its window expects",
                    path.display(),
                    meta.index_len
                )))
            }
            Err(e) => return Err(e.into()),
        }
        block_index::replay(&bytes)
            .map_err(|why| StorageError::Corrupt(format!("block index {}: {why}", path.display())))
    }

    /// Every block entry of a window: (group, seq, entry).
    pub fn window_blocks(
        &self,
        tier: Tier,
        window: i64,
    ) -> Result<Vec<(GroupId, u32, BlockEntry)>, StorageError> {
        Ok(self.window_index(tier, window)?.all())
    }

    /// Heap bytes of the cached window indexes.
    pub fn index_cache_bytes(&self) -> usize {
        self.indexes.lock().bytes()
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
        let file = Arc::new(File::open(self.path(
            tier,
            window,
            generation,
            Part::Blocks,
        ))?);
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
        let path = || self.path(tier, window, meta.generation, Part::Blocks);
        let file = self.read_handle(tier, window, meta.generation)?;
        let mut buf = vec![0u8; entry.len as usize];
        match file.read_exact_at(&mut buf, entry.offset) {
            Ok(()) => {}
            // The file ends before the block: damage, like a bad checksum.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(StorageError::Corrupt(format!(
                    "block at {}:{} lies past the end of the file",
                    path().display(),
                    entry.offset
                )))
            }
            Err(e) => return Err(e.into()),
        }
        if buf.len() < RECORD_HEADER {
            return Err(StorageError::Corrupt("short block record".into()));
        }
        if !record_intact(&buf) {
            return Err(StorageError::Corrupt(format!(
                "block at {}:{} fails its checksum",
                path().display(),
                entry.offset
            )));
        }
        buf.drain(..RECORD_HEADER);
        Ok(buf)
    }

    /// Appends blocks (each with the next sequence number of its group and
    /// window) and removes `replaced` from the index: blocks file synced,
    /// index record synced, then the windows' keys in one sled batch. The
    /// caller flushes sled to make it durable.
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
        type Changes = (Vec<(NewBlock, Option<u32>)>, Vec<(GroupId, u32)>);
        let mut by_window: BTreeMap<i64, Changes> = BTreeMap::new();
        for b in blocks {
            by_window.entry(b.0.window).or_default().0.push(b);
        }
        for &(w, g, seq) in replaced {
            by_window.entry(w).or_default().1.push((g, seq));
        }
        let _writing = self.writing.lock();
        let mut batch = sled::Batch::default();
        let mut updated = Vec::new();
        // A new file's name must be durable before a window key names it.
        let mut new_files = false;
        for (window, (blocks, removed)) in by_window {
            let known = self.window_meta(tier, window);
            let (mut meta, mut index) = match known {
                Some(meta) => self.index_to_change(tier, window, meta)?,
                None if blocks.is_empty() => continue,
                None => {
                    new_files = true;
                    let meta = WindowMeta {
                        generation: 1,
                        min_ts: i64::MAX,
                        max_ts: i64::MIN,
                        ..Default::default()
                    };
                    (meta, WindowIndex::default())
                }
            };
            let mut ops = Vec::with_capacity(removed.len() + blocks.len());
            // Entries removed or replaced: their bytes and samples leave the
            // window's totals.
            let drop_entry = |meta: &mut WindowMeta, old: Option<BlockEntry>| {
                if let Some(e) = old {
                    meta.live_bytes = meta.live_bytes.saturating_sub(e.len as u64);
                    meta.samples = meta.samples.saturating_sub(e.samples as u64);
                    meta.blocks = meta.blocks.saturating_sub(1);
                }
            };
            for (g, seq) in removed {
                let op = IndexOp::Remove(g, seq);
                let old = index.apply(&op);
                if old.is_some() {
                    ops.push(op);
                }
                drop_entry(&mut meta, old);
            }
            let mut data = Vec::new();
            let mut offset = meta.file_len;
            for (b, seq) in blocks {
                let seq = seq.unwrap_or_else(|| index.next_seq(b.group));
                let start = data.len();
                write_record(&mut data, tier, window, b.group, seq, &b.bytes);
                let len = (data.len() - start) as u32;
                let op = IndexOp::Set(
                    b.group,
                    seq,
                    BlockEntry {
                        offset,
                        len,
                        samples: b.samples,
                        min_ts: b.min_ts,
                        max_ts: b.max_ts,
                    },
                );
                // A merge overwrites the entry it takes the place of.
                let old = index.apply(&op);
                drop_entry(&mut meta, old);
                ops.push(op);
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
            if !data.is_empty() {
                let path = self.path(tier, window, meta.generation, Part::Blocks);
                new_files |= write_at_end(&path, &data, meta.file_len)?;
                let why = match tier {
                    _ if !replaced.is_empty() => BlockWrite::Compaction,
                    Tier::Raw => BlockWrite::Checkpoint,
                    Tier::Minute | Tier::Hour => BlockWrite::Rollups,
                };
                self.count_written(why, data.len());
                meta.file_len = offset;
            }
            if ops.is_empty() {
                continue;
            }
            let (index_len, created) = self.append_index(tier, window, meta, &ops)?;
            meta.index_len = index_len;
            new_files |= created;
            batch.insert(meta_key(tier, window), encode_meta(&meta));
            updated.push((window, meta, index));
        }
        if new_files {
            sync_dir(&self.root.join(tier.dir_name()))?;
        }
        self.tree.apply_batch(batch)?;
        let mut windows = self.windows.lock();
        let mut indexes = self.indexes.lock();
        for (window, meta, index) in updated {
            windows.insert((tier, window), meta);
            indexes.put(
                (tier, window),
                (meta.generation, meta.index_len),
                Arc::new(index),
            );
        }
        Ok(())
    }

    /// A window's index to change: taken out of the cache when nobody else
    /// holds it, copied otherwise; rebuilt from the blocks file if damaged,
    /// so that new blocks can still be written to the window.
    fn index_to_change(
        &self,
        tier: Tier,
        window: i64,
        meta: WindowMeta,
    ) -> Result<(WindowMeta, WindowIndex), StorageError> {
        let version = (meta.generation, meta.index_len);
        let taken = self.indexes.lock().take((tier, window), version);
        if let Some(index) = taken {
            return Ok((
                meta,
                Arc::try_unwrap(index).unwrap_or_else(|shared| (*shared).clone()),
            ));
        }
        self.read_or_rebuild_index(tier, window, meta)
    }

    /// A window's index read from its file, or rebuilt from its blocks if
    /// the file is damaged (what the rebuild found goes to
    /// [`BlockFiles::take_rebuilt`]). Call with `writing` held.
    fn read_or_rebuild_index(
        &self,
        tier: Tier,
        window: i64,
        meta: WindowMeta,
    ) -> Result<(WindowMeta, WindowIndex), StorageError> {
        match self.read_index(tier, window, meta) {
            Ok(index) => Ok((meta, index)),
            Err(e) if e.is_damage() => {
                let (meta, index, msg) =
                    self.rebuild_index(tier, window, meta, &format!("is damaged ({e})"))?;
                self.rebuilt.lock().push(msg);
                Ok((meta, index))
            }
            Err(e) => Err(e),
        }
    }

    /// The windows whose index a read found damaged, with the bytes a
    /// rebuild writes (a new generation of both files), for maintenance to
    /// reserve before [`BlockFiles::rebuild_damaged`].
    pub fn damaged_windows(&self) -> Vec<(Tier, i64, u64)> {
        let mut found = Vec::new();
        // Windows dropped since (retention) need no rebuild.
        self.damaged
            .lock()
            .retain(|&(tier, window)| match self.window_meta(tier, window) {
                Some(meta) => {
                    found.push((tier, window, meta.file_len + meta.index_len));
                    true
                }
                None => false,
            });
        found
    }

    /// Rebuilds a window's index that a read found damaged (maintenance
    /// calls this; a read cannot, holding the files shared).
    pub fn rebuild_damaged(&self, tier: Tier, window: i64) -> Result<(), StorageError> {
        let _writing = self.writing.lock();
        self.damaged.lock().remove(&(tier, window));
        let Some(meta) = self.window_meta(tier, window) else {
            return Ok(());
        };
        self.read_or_rebuild_index(tier, window, meta).map(|_| ())
    }

    /// What rebuilding indexes found since the last call.
    pub fn take_rebuilt(&self) -> Vec<String> {
        std::mem::take(&mut *self.rebuilt.lock())
    }

    fn count_written(&self, why: BlockWrite, bytes: usize) {
        self.written[why as usize].fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes of block records written since start for `why`.
    pub fn written(&self, why: BlockWrite) -> u64 {
        self.written[why as usize].load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_rolled_up(&self, window: i64, rolled_up: bool) -> Result<(), StorageError> {
        let _writing = self.writing.lock();
        let mut windows = self.windows.lock();
        if let Some(m) = windows.get_mut(&(Tier::Raw, window)) {
            m.rolled_up = rolled_up;
            self.tree
                .insert(meta_key(Tier::Raw, window), encode_meta(m))?;
        }
        Ok(())
    }

    /// Removes a whole window: its key first, then the files.
    pub fn drop_window(&self, tier: Tier, window: i64) -> Result<u64, StorageError> {
        let _writing = self.writing.lock();
        let _guard = self.files_lock.write();
        let Some(meta) = self.window_meta(tier, window) else {
            return Ok(0);
        };
        self.tree.remove(meta_key(tier, window))?;
        self.windows.lock().remove(&(tier, window));
        self.indexes.lock().forget((tier, window));
        self.tree.flush()?;
        self.forget_handles(tier, window);
        self.remove_files(tier, window, meta.generation)?;
        Ok(meta.file_len + meta.index_len)
    }

    /// Rewrites a window's files with only its live records, freeing what
    /// merges replaced. Returns the bytes freed.
    pub fn rewrite_window(&self, tier: Tier, window: i64) -> Result<u64, StorageError> {
        let _writing = self.writing.lock();
        let Some(meta) = self.window_meta(tier, window) else {
            return Ok(0);
        };
        let mut bodies = Vec::new();
        let entries = self.window_blocks(tier, window)?;
        for (_, _, e) in &entries {
            bodies.push(self.read_record(tier, window, e)?);
        }
        let live: Vec<_> = entries
            .iter()
            .zip(&bodies)
            .map(|(&(g, seq, e), body)| (g, seq, e, &body[..]))
            .collect();
        let (new_meta, _) = self.write_generation(tier, window, meta, &live, false)?;
        Ok((meta.file_len + meta.index_len).saturating_sub(new_meta.file_len + new_meta.index_len))
    }

    /// Writes the next generation of a window's files with `blocks` (group,
    /// seq, entry, body), syncs them, switches the window's key to them and
    /// deletes the old ones: a crash before the switch leaves orphans that
    /// the next open removes, after it only the old files to delete. With
    /// `redo_rollups`, a raw window's rollups are marked for redoing. Call
    /// with `writing` held.
    fn write_generation(
        &self,
        tier: Tier,
        window: i64,
        meta: WindowMeta,
        blocks: &[(GroupId, u32, BlockEntry, &[u8])],
        redo_rollups: bool,
    ) -> Result<(WindowMeta, WindowIndex), StorageError> {
        let new_gen = meta.generation + 1;
        let new_data = self.path(tier, window, new_gen, Part::Blocks);
        let new_index = self.path(tier, window, new_gen, Part::Index);
        let mut data = Vec::new();
        let mut ops = Vec::with_capacity(blocks.len());
        for &(g, seq, e, body) in blocks {
            let offset = data.len() as u64;
            write_record(&mut data, tier, window, g, seq, body);
            ops.push(IndexOp::Set(
                g,
                seq,
                BlockEntry {
                    offset,
                    len: (data.len() as u64 - offset) as u32,
                    ..e
                },
            ));
        }
        let (record, index) = block_index::snapshot(&ops);
        let write = |path: &Path, bytes: &[u8]| {
            File::create(path).and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_data()
            })
        };
        let written = write(&new_data, &data)
            .and_then(|_| write(&new_index, &record))
            .and_then(|_| sync_dir(new_data.parent().expect("in a directory")));
        if let Err(e) = written {
            let _ = fs::remove_file(&new_data);
            let _ = fs::remove_file(&new_index);
            return Err(e.into());
        }
        self.count_written(BlockWrite::Rewrite, data.len());
        self.count_written(BlockWrite::Index, record.len());
        let mut new_meta = WindowMeta {
            generation: new_gen,
            file_len: data.len() as u64,
            index_len: record.len() as u64,
            ..totals_of(&index, meta)
        };
        if tier == Tier::Raw && redo_rollups {
            new_meta.rolled_up = false;
        }
        let _guard = self.files_lock.write();
        self.tree
            .insert(meta_key(tier, window), encode_meta(&new_meta))?;
        self.tree.flush()?;
        self.windows.lock().insert((tier, window), new_meta);
        self.indexes.lock().put(
            (tier, window),
            (new_gen, new_meta.index_len),
            Arc::new(index.clone()),
        );
        self.forget_handles(tier, window);
        self.remove_files(tier, window, meta.generation)?;
        Ok((new_meta, index))
    }

    /// Deletes both files of a window generation (either may be gone).
    fn remove_files(&self, tier: Tier, window: i64, generation: u32) -> Result<(), StorageError> {
        for part in [Part::Blocks, Part::Index] {
            match fs::remove_file(self.path(tier, window, generation, part)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
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
            let path = self.path(tier, window, meta.generation, Part::Blocks);
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
            let index = match self.read_index(tier, window, meta) {
                Ok(index) => index,
                Err(e) => {
                    on_damage(e.to_string());
                    continue;
                }
            };
            let totals = totals_of(&index, meta);
            if (totals.blocks, totals.samples, totals.live_bytes)
                != (meta.blocks, meta.samples, meta.live_bytes)
            {
                on_damage(format!(
                    "window {window} ({}): its index lists {} blocks, {} samples, {} bytes; its totals say {}, {}, {}",
                    tier.dir_name(),
                    totals.blocks,
                    totals.samples,
                    totals.live_bytes,
                    meta.blocks,
                    meta.samples,
                    meta.live_bytes
                ));
            }
            for (g, _, e) in index.all() {
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

/// The index entry of a block record at `offset` of `len` bytes, from its
/// body; `None` if the body does not decode.
fn block_entry(body: &[u8], offset: u64, len: u32) -> Option<BlockEntry> {
    let columns = Block::parse(body).ok()?.read(None).ok()?;
    let mut entry = BlockEntry {
        offset,
        len,
        samples: 0,
        min_ts: i64::MAX,
        max_ts: i64::MIN,
    };
    for (_, c) in columns {
        if let (Some(&first), Some(&last)) = (c.ts.first(), c.ts.last()) {
            entry.samples += c.ts.len() as u32;
            entry.min_ts = entry.min_ts.min(first);
            entry.max_ts = entry.max_ts.max(last);
        }
    }
    Some(entry)
}

/// `meta` with its block totals and time range recomputed from `index`.
fn totals_of(index: &WindowIndex, meta: WindowMeta) -> WindowMeta {
    let entries = index.all();
    WindowMeta {
        live_bytes: entries.iter().map(|(_, _, e)| e.len as u64).sum(),
        samples: entries.iter().map(|(_, _, e)| e.samples as u64).sum(),
        blocks: entries.len() as u64,
        min_ts: entries
            .iter()
            .map(|(_, _, e)| e.min_ts)
            .min()
            .unwrap_or(i64::MAX),
        max_ts: entries
            .iter()
            .map(|(_, _, e)| e.max_ts)
            .max()
            .unwrap_or(i64::MIN),
        ..meta
    }
}

fn window_path(root: &Path, tier: Tier, window: i64, generation: u32, part: Part) -> PathBuf {
    root.join(tier.dir_name())
        .join(format!("{window}-{generation}.{}", part.extension()))
}

/// (window, generation, part) of a file name `<window>-<generation>.<ext>`.
fn parse_file_name(name: &str) -> Option<(i64, u32, Part)> {
    let (stem, part) = if let Some(s) = name.strip_suffix(".dat") {
        (s, Part::Blocks)
    } else {
        (name.strip_suffix(".idx")?, Part::Index)
    };
    let (w, g) = stem.split_once('-')?;
    Some((w.parse().ok()?, g.parse().ok()?, part))
}

/// Format 3 → 4: moves the block index out of sled into one `.idx` file
/// per window. Safe to re-run after a crash: a window whose key already
/// records an index length was done; the format 3 keys are removed last.
pub(crate) fn upgrade_index_from_sled(db: &sled::Db, root: &Path) -> Result<(), StorageError> {
    let tree = db.open_tree("blocks")?;
    let mut todo = Vec::new();
    for item in tree.scan_prefix(b"W") {
        let (k, v) = item?;
        let (Some(tier), Some((meta, false)), 10) = (
            k.get(1).and_then(|&b| Tier::from_u8(b)),
            decode_meta(&v),
            k.len(),
        ) else {
            continue;
        };
        todo.push((tier, unflip(&k[2..10]), meta));
    }
    // Every index file written and synced before any window key names it
    // (sled flushes on its own every second).
    let mut done = Vec::new();
    for (tier, window, mut meta) in todo {
        let mut ops = Vec::new();
        for item in tree.scan_prefix(format3_window_prefix(tier, window)) {
            let (k, v) = item?;
            // One bad key cost format 3 only that block: so here.
            match (parse_block_key(&k), decode_entry(&v)) {
                (Some((g, seq)), Some(e)) => ops.push(IndexOp::Set(g, seq, e)),
                _ => tracing::error!(
                    window,
                    tier = tier.dir_name(),
                    "a block index entry in sled does not parse: that block is left out"
                ),
            }
        }
        let (record, index) = block_index::snapshot(&ops);
        // Totals as the entries say, whatever format 3 had counted.
        meta = totals_of(&index, meta);
        fs::create_dir_all(root.join(tier.dir_name()))?;
        let mut f = File::create(window_path(
            root,
            tier,
            window,
            meta.generation,
            Part::Index,
        ))?;
        f.write_all(&record)?;
        f.sync_data()?;
        meta.index_len = record.len() as u64;
        done.push((tier, window, meta));
    }
    for t in TIERS {
        if root.join(t.dir_name()).exists() {
            sync_dir(&root.join(t.dir_name()))?;
        }
    }
    for (tier, window, meta) in done {
        tree.insert(meta_key(tier, window), encode_meta(&meta))?;
    }
    db.flush()?;
    let mut batch = sled::Batch::default();
    for k in tree.scan_prefix(b"B").keys() {
        batch.remove(k?);
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// Writes `data` at `end` of the file at `path`, created if missing (`end`
/// is the file's recorded end, not its actual one: bytes of an earlier
/// failed write past it are overwritten, never indexed), and syncs it; on
/// failure the file is cut back to `end`. Returns whether the file was
/// created (its directory then needs a sync).
fn write_at_end(path: &Path, data: &[u8], end: u64) -> io::Result<bool> {
    let created = !path.exists();
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    let written = file.write_all_at(data, end).and_then(|_| file.sync_data());
    if written.is_err() {
        let _ = file.set_len(end);
    }
    written.map(|_| created)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether a block record (as [`write_record`] lays it out) is whole: a
/// full header, the length it gives, and its checksum.
fn record_intact(record: &[u8]) -> bool {
    record.len() >= RECORD_HEADER
        && u32::from_le_bytes(record[0..4].try_into().expect("4 bytes")) as usize + 8
            == record.len()
        && crc32fast::hash(&record[8..])
            == u32::from_le_bytes(record[4..8].try_into().expect("4 bytes"))
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
