//! The block index of one window: where each group's blocks lie in the
//! window's `.dat` file. It is kept beside that file as
//! `<window start ms>-<generation>.idx`, an append-only log with one record
//! per append to the window, replayed when the window is first read; the
//! windows read recently stay in an [`IndexCache`].
//!
//! Why a file of its own rather than sled keys (format 3 kept one key per
//! block in the tree `blocks`): every checkpoint added one key per group,
//! and sled's copy-on-write pages and log cleaning turned each of those
//! ~30-byte keys into about 4 KB written to the card (16 MiB for 4 000
//! keys in a 4-minute benchmark, `docs/storage.md`); here an entry is
//! written once, in about 15 bytes, and a query finds a window's entries
//! without a tree scan per group.
//!
//! A record is `u32 len, u32 crc32, ops` (little-endian, the checksum over
//! the ops). An op is `1 group seq offset len samples min_ts span`, which
//! sets the entry of `(group, seq)` (a merge replaces one in place), or
//! `2 group seq`, which removes it; numbers are varints, `min_ts` zigzag,
//! `span` is `max_ts - min_ts`.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::encoding::{get_ivarint, get_uvarint, put_ivarint, put_uvarint};
use super::files::{BlockEntry, Tier};
use super::GroupId;

const SET: u8 = 1;
const REMOVE: u8 = 2;
const INDEX_RECORD_HEADER: usize = 8;
/// Most bytes one set op takes, with its record's header: a bound for the
/// disk budget's reservations.
pub(crate) const MAX_SET_BYTES: usize = 1 + 5 + 5 + 10 + 5 + 5 + 10 + 10 + INDEX_RECORD_HEADER;

/// A change to a window's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IndexOp {
    Set(GroupId, u32, BlockEntry),
    Remove(GroupId, u32),
}

/// The block entries of one window: per group, in sequence (write) order.
#[derive(Clone, Debug, Default)]
pub struct WindowIndex {
    groups: FxHashMap<GroupId, Vec<(u32, BlockEntry)>>,
    entries: usize,
}

impl WindowIndex {
    /// The blocks of `group`, oldest first.
    pub fn group(&self, group: GroupId) -> &[(u32, BlockEntry)] {
        self.groups.get(&group).map_or(&[], |v| v.as_slice())
    }

    /// The sequence number the group's next block takes.
    pub(crate) fn next_seq(&self, group: GroupId) -> u32 {
        self.groups
            .get(&group)
            .and_then(|b| b.last())
            .map_or(0, |(s, _)| s + 1)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    /// Every entry as (group, seq, entry), by group, then sequence.
    pub(crate) fn all(&self) -> Vec<(GroupId, u32, BlockEntry)> {
        let mut groups: Vec<_> = self.groups.iter().collect();
        groups.sort_unstable_by_key(|(g, _)| **g);
        groups
            .into_iter()
            .flat_map(|(g, blocks)| blocks.iter().map(move |(s, e)| (*g, *s, *e)))
            .collect()
    }

    /// Applies `op`, returning the entry it replaced or removed.
    pub(crate) fn apply(&mut self, op: &IndexOp) -> Option<BlockEntry> {
        match *op {
            IndexOp::Set(group, seq, entry) => {
                let blocks = self.groups.entry(group).or_default();
                match blocks.binary_search_by_key(&seq, |(s, _)| *s) {
                    Ok(i) => Some(std::mem::replace(&mut blocks[i].1, entry)),
                    Err(i) => {
                        blocks.insert(i, (seq, entry));
                        self.entries += 1;
                        None
                    }
                }
            }
            IndexOp::Remove(group, seq) => {
                let Entry::Occupied(mut blocks) = self.groups.entry(group) else {
                    return None;
                };
                let i = blocks.get().binary_search_by_key(&seq, |(s, _)| *s).ok()?;
                let (_, old) = blocks.get_mut().remove(i);
                if blocks.get().is_empty() {
                    blocks.remove();
                }
                self.entries -= 1;
                Some(old)
            }
        }
    }

    /// Gives back what the group lists and the table hold beyond their
    /// entries: a window read from its file is mostly read, not appended to.
    fn shrink(&mut self) {
        for blocks in self.groups.values_mut() {
            blocks.shrink_to_fit();
        }
        self.groups.shrink_to_fit();
    }

    /// Heap bytes, from capacities.
    pub(crate) fn heap_bytes(&self) -> usize {
        let per_group = std::mem::size_of::<(GroupId, Vec<(u32, BlockEntry)>)>() + 1;
        self.groups.capacity() * per_group
            + self
                .groups
                .values()
                .map(|v| v.capacity() * std::mem::size_of::<(u32, BlockEntry)>())
                .sum::<usize>()
    }
}

/// One record holding `ops` (at least one), ready to append to an index
/// file.
pub(crate) fn encode_record(ops: &[IndexOp]) -> Vec<u8> {
    debug_assert!(!ops.is_empty(), "no empty records");
    let mut out = vec![0u8; INDEX_RECORD_HEADER];
    for op in ops {
        match *op {
            IndexOp::Set(group, seq, e) => {
                out.push(SET);
                put_uvarint(&mut out, group as u64);
                put_uvarint(&mut out, seq as u64);
                put_uvarint(&mut out, e.offset);
                put_uvarint(&mut out, e.len as u64);
                put_uvarint(&mut out, e.samples as u64);
                put_ivarint(&mut out, e.min_ts);
                put_uvarint(&mut out, e.max_ts.wrapping_sub(e.min_ts) as u64);
            }
            IndexOp::Remove(group, seq) => {
                out.push(REMOVE);
                put_uvarint(&mut out, group as u64);
                put_uvarint(&mut out, seq as u64);
            }
        }
    }
    let len = (out.len() - INDEX_RECORD_HEADER) as u32;
    let crc = crc32fast::hash(&out[INDEX_RECORD_HEADER..]);
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The index an index file's bytes hold, or why they do not: a record cut
/// short, failing its checksum or not parsing.
pub(crate) fn replay(bytes: &[u8]) -> Result<WindowIndex, String> {
    let mut index = WindowIndex::default();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < INDEX_RECORD_HEADER {
            return Err(format!("a record header cut short at byte {pos}"));
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        // No record is empty: zeroed bytes (a write the card lost) are not
        // one, though the checksum of nothing is 0.
        if len == 0 {
            return Err(format!("an empty record at byte {pos}"));
        }
        let Some(body) = INDEX_RECORD_HEADER
            .checked_add(len)
            .and_then(|end| rest.get(INDEX_RECORD_HEADER..end))
        else {
            return Err(format!("a record of {len} bytes cut short at byte {pos}"));
        };
        if crc32fast::hash(body) != crc {
            return Err(format!("the record at byte {pos} fails its checksum"));
        }
        let ops =
            decode_ops(body).ok_or_else(|| format!("the record at byte {pos} does not parse"))?;
        for op in &ops {
            index.apply(op);
        }
        pos += INDEX_RECORD_HEADER + len;
    }
    index.shrink();
    Ok(index)
}

/// A whole index written at once (a window's new generation): its file's
/// bytes — nothing when there are no entries, as no record is empty — and
/// the index itself.
pub(crate) fn snapshot(ops: &[IndexOp]) -> (Vec<u8>, WindowIndex) {
    let mut index = WindowIndex::default();
    for op in ops {
        index.apply(op);
    }
    index.shrink();
    let bytes = if ops.is_empty() {
        Vec::new()
    } else {
        encode_record(ops)
    };
    (bytes, index)
}

fn decode_ops(mut body: &[u8]) -> Option<Vec<IndexOp>> {
    let mut ops = Vec::new();
    let u32_of = |v: u64| u32::try_from(v).ok();
    while let Some((&kind, rest)) = body.split_first() {
        body = rest;
        let group = u32_of(get_uvarint(&mut body).ok()?)?;
        let seq = u32_of(get_uvarint(&mut body).ok()?)?;
        ops.push(match kind {
            SET => {
                let offset = get_uvarint(&mut body).ok()?;
                let len = u32_of(get_uvarint(&mut body).ok()?)?;
                let samples = u32_of(get_uvarint(&mut body).ok()?)?;
                let min_ts = get_ivarint(&mut body).ok()?;
                let span = get_uvarint(&mut body).ok()? as i64;
                IndexOp::Set(
                    group,
                    seq,
                    BlockEntry {
                        offset,
                        len,
                        samples,
                        min_ts,
                        max_ts: min_ts.wrapping_add(span),
                    },
                )
            }
            REMOVE => IndexOp::Remove(group, seq),
            _ => return None,
        });
    }
    Some(ops)
}

/// The indexes of the windows read or written recently, bounded in bytes.
/// An index is cached with the generation and length of the file it was
/// read from, and found only by the same ones, so a stale copy is never
/// answered.
pub(crate) struct IndexCache {
    windows: FxHashMap<(Tier, i64), Cached>,
    bytes: usize,
    limit: usize,
    tick: u64,
}

struct Cached {
    version: (u32, u64),
    index: Arc<WindowIndex>,
    bytes: usize,
    used: u64,
}

impl IndexCache {
    pub(crate) fn new(limit: usize) -> IndexCache {
        IndexCache {
            windows: FxHashMap::default(),
            bytes: 0,
            limit,
            tick: 0,
        }
    }

    /// The index of `(tier, window)` as of file generation and length
    /// `version`, if cached.
    pub(crate) fn get(
        &mut self,
        key: (Tier, i64),
        version: (u32, u64),
    ) -> Option<Arc<WindowIndex>> {
        self.tick += 1;
        let c = self
            .windows
            .get_mut(&key)
            .filter(|c| c.version == version)?;
        c.used = self.tick;
        Some(c.index.clone())
    }

    /// Takes the index out, for a writer to change it without a copy when
    /// nobody else holds it.
    pub(crate) fn take(
        &mut self,
        key: (Tier, i64),
        version: (u32, u64),
    ) -> Option<Arc<WindowIndex>> {
        match self.windows.get(&key) {
            Some(c) if c.version == version => {
                let c = self.windows.remove(&key).expect("just found");
                self.bytes -= c.bytes;
                Some(c.index)
            }
            _ => None,
        }
    }

    /// Caches an index unless a newer one of the window is cached already
    /// (a reader that loaded it while a writer appended), then evicts the
    /// least recently used windows over the limit.
    pub(crate) fn put(&mut self, key: (Tier, i64), version: (u32, u64), index: Arc<WindowIndex>) {
        if self.windows.get(&key).is_some_and(|c| c.version > version) {
            return;
        }
        self.tick += 1;
        let bytes = index.heap_bytes() + std::mem::size_of::<Cached>();
        if let Some(old) = self.windows.insert(
            key,
            Cached {
                version,
                index,
                bytes,
                used: self.tick,
            },
        ) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        while self.bytes > self.limit && self.windows.len() > 1 {
            let oldest = self
                .windows
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| *k)
                .expect("more than one window");
            self.forget(oldest);
        }
    }

    pub(crate) fn forget(&mut self, key: (Tier, i64)) {
        if let Some(c) = self.windows.remove(&key) {
            self.bytes -= c.bytes;
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, min_ts: i64, max_ts: i64) -> BlockEntry {
        BlockEntry {
            offset,
            len: 100,
            samples: 10,
            min_ts,
            max_ts,
        }
    }

    #[test]
    fn records_replay_to_the_same_index() {
        let mut ops = vec![
            IndexOp::Set(7, 0, entry(0, -5, i64::MAX)),
            IndexOp::Set(7, 1, entry(100, i64::MIN, 10)),
            IndexOp::Set(3, 0, entry(200, 1_700_000_000_000, 1_700_000_007_200)),
        ];
        let mut bytes = encode_record(&ops);
        ops = vec![
            IndexOp::Remove(7, 0),
            IndexOp::Set(7, 1, entry(300, 0, 1)),
            IndexOp::Remove(9, 9),
        ];
        bytes.extend(encode_record(&ops));
        let index = replay(&bytes).unwrap();
        assert_eq!(
            index.all(),
            vec![
                (3, 0, entry(200, 1_700_000_000_000, 1_700_000_007_200)),
                (7, 1, entry(300, 0, 1)),
            ]
        );
        assert_eq!(index.len(), 2);
        assert_eq!(index.next_seq(7), 2);
        assert_eq!(index.next_seq(8), 0);
    }

    #[test]
    fn torn_damaged_or_zeroed_records_are_refused() {
        let first = encode_record(&[IndexOp::Set(1, 0, entry(0, 1, 2))]);
        let second = encode_record(&[IndexOp::Set(2, 0, entry(100, 1, 2))]);
        let whole = [first.clone(), second.clone()].concat();
        assert_eq!(replay(&whole).unwrap().len(), 2);
        for cut in first.len() + 1..whole.len() {
            let why = replay(&whole[..cut]).unwrap_err();
            assert!(why.contains("cut short"), "cut at {cut}: {why}");
        }
        let mut damaged = whole.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(replay(&damaged).unwrap_err().contains("checksum"));
        let mut zeroed = whole.clone();
        zeroed[first.len()..].fill(0);
        assert!(replay(&zeroed).unwrap_err().contains("empty record"));
    }

    #[test]
    fn the_cache_answers_only_the_version_asked_and_stays_bounded() {
        let mut index = WindowIndex::default();
        for g in 0..100 {
            index.apply(&IndexOp::Set(g, 0, entry(0, 0, 1)));
        }
        let one = index.heap_bytes() + std::mem::size_of::<Cached>();
        let mut cache = IndexCache::new(one * 2 + one / 2);
        let index = Arc::new(index);
        cache.put((Tier::Raw, 0), (1, 10), index.clone());
        assert!(cache.get((Tier::Raw, 0), (1, 11)).is_none());
        assert!(cache.get((Tier::Raw, 0), (1, 10)).is_some());
        // An older version does not replace a newer one.
        cache.put((Tier::Raw, 0), (1, 20), index.clone());
        cache.put((Tier::Raw, 0), (1, 10), index.clone());
        assert!(cache.get((Tier::Raw, 0), (1, 20)).is_some());
        cache.put((Tier::Raw, 1), (1, 10), index.clone());
        assert!(cache.get((Tier::Raw, 0), (1, 20)).is_some());
        // Over the limit: the least recently used window goes.
        cache.put((Tier::Raw, 2), (1, 10), index.clone());
        assert!(cache.get((Tier::Raw, 1), (1, 10)).is_none());
        assert!(cache.get((Tier::Raw, 0), (1, 20)).is_some());
        assert!(cache.bytes() <= one * 2 + one / 2);
        assert!(cache.take((Tier::Raw, 2), (1, 10)).is_some());
        assert!(cache.get((Tier::Raw, 2), (1, 10)).is_none());
    }
}
