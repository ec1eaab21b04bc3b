//! The series registry: ids for label sets, groups, and the inverted index
//! (label name → value → series ids) that selectors are answered from.
//!
//! Everything lives in memory and is persisted in the sled tree `series`
//! (id → group, labels) and `series_span` (id → a time range that holds
//! all its samples, in whole raw windows).
//! A new series is also logged to the WAL, which is what makes it durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::{FxHashMap, FxHashSet};

use super::encoding::{get_bytes, get_ivarint, get_uvarint, put_bytes, put_ivarint, put_uvarint};
use super::files::Tier;
use super::labels::{Label, Labels, Matcher};
use super::{GroupId, SeriesId, StorageError};

#[derive(Clone, Debug)]
pub struct SeriesInfo {
    pub labels: Arc<Labels>,
    pub group: GroupId,
}

#[derive(Default)]
struct Inner {
    by_key: FxHashMap<Box<[u8]>, SeriesId>,
    series: FxHashMap<SeriesId, SeriesInfo>,
    groups: FxHashMap<Box<[u8]>, GroupId>,
    postings: FxHashMap<String, BTreeMap<String, Vec<SeriesId>>>,
    /// Times that hold every sample of each series: from the start of its
    /// first raw window to the end of its last (see
    /// [`SeriesIndex::extend_spans`]).
    spans: FxHashMap<SeriesId, (i64, i64)>,
    /// Series whose span changed since it was last written to sled.
    unpersisted: FxHashSet<SeriesId>,
    next_series: SeriesId,
    next_group: GroupId,
    /// Heap bytes of the keys, labels and postings, kept as series come and
    /// go (the maps' tables are counted from their capacities).
    heap_bytes: usize,
}

/// What a posting list's entry costs besides its value's text: the
/// `String`, the `Vec` of ids, and a B-tree node's share.
const POSTING_VALUE_BYTES: usize = 24 + 24 + 16;

/// Heap bytes of one series in the index: its key, its labels (shared by
/// an `Arc`) and its id in each of its labels' postings.
fn series_heap_bytes(labels: &Labels, key_len: usize) -> usize {
    key_len
        + 16
        + labels
            .iter()
            .map(|l| std::mem::size_of::<Label>() + l.name.len() + l.value.len() + 4)
            .sum::<usize>()
}

pub struct SeriesIndex {
    inner: RwLock<Inner>,
    /// Bumped whenever series are removed; see [`SeriesIndex::epoch`].
    epoch: std::sync::atomic::AtomicU64,
    tree: sled::Tree,
    spans_tree: sled::Tree,
    max_series: usize,
}

pub(crate) fn encode_series(group: GroupId, labels: &Labels) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    put_uvarint(&mut v, group as u64);
    put_uvarint(&mut v, labels.len() as u64);
    for l in labels.iter() {
        put_bytes(&mut v, l.name.as_bytes());
        put_bytes(&mut v, l.value.as_bytes());
    }
    v
}

pub(crate) fn decode_series(mut v: &[u8]) -> Option<(GroupId, Labels)> {
    let group = get_uvarint(&mut v).ok()? as GroupId;
    let n = get_uvarint(&mut v).ok()? as usize;
    if n > 1024 {
        return None;
    }
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let name = std::str::from_utf8(get_bytes(&mut v).ok()?)
            .ok()?
            .to_string();
        let value = std::str::from_utf8(get_bytes(&mut v).ok()?)
            .ok()?
            .to_string();
        pairs.push((name, value));
    }
    Some((group, Labels::from_pairs(pairs)))
}

impl Inner {
    fn insert(&mut self, id: SeriesId, group: GroupId, labels: Labels) {
        let mut key = Vec::new();
        labels.write_key(&mut key);
        let mut gkey = Vec::new();
        labels.write_group_key(&mut gkey);
        let gkey_len = gkey.len();
        self.groups
            .entry(gkey.into_boxed_slice())
            .or_insert_with(|| {
                self.heap_bytes += gkey_len;
                group
            });
        self.heap_bytes += series_heap_bytes(&labels, key.len());
        for l in labels.iter() {
            let ids = self
                .postings
                .entry(l.name.clone())
                .or_insert_with(|| {
                    self.heap_bytes += l.name.len() + 24;
                    BTreeMap::new()
                })
                .entry(l.value.clone())
                .or_insert_with(|| {
                    self.heap_bytes += l.value.len() + POSTING_VALUE_BYTES;
                    Vec::new()
                });
            if let Err(pos) = ids.binary_search(&id) {
                ids.insert(pos, id);
            }
        }
        self.by_key.insert(key.into_boxed_slice(), id);
        self.series.insert(
            id,
            SeriesInfo {
                labels: Arc::new(labels),
                group,
            },
        );
        // Never past the largest id: `restore` refuses that one.
        self.next_series = self.next_series.max(id.saturating_add(1));
        self.next_group = self.next_group.max(group.saturating_add(1));
    }

    fn remove(&mut self, id: SeriesId) {
        let Some(info) = self.series.remove(&id) else {
            return;
        };
        let mut key = Vec::new();
        info.labels.write_key(&mut key);
        self.by_key.remove(&key[..]);
        self.spans.remove(&id);
        self.unpersisted.remove(&id);
        self.heap_bytes = self
            .heap_bytes
            .saturating_sub(series_heap_bytes(&info.labels, key.len()));
        for l in info.labels.iter() {
            if let Some(values) = self.postings.get_mut(&l.name) {
                if let Some(ids) = values.get_mut(&l.value) {
                    ids.retain(|&x| x != id);
                    if ids.is_empty() {
                        values.remove(&l.value);
                        self.heap_bytes = self
                            .heap_bytes
                            .saturating_sub(l.value.len() + POSTING_VALUE_BYTES);
                    }
                }
                if values.is_empty() {
                    self.postings.remove(&l.name);
                    self.heap_bytes = self.heap_bytes.saturating_sub(l.name.len() + 24);
                }
            }
        }
    }
}

impl SeriesIndex {
    pub fn load(db: &sled::Db, max_series: usize) -> Result<SeriesIndex, StorageError> {
        let tree = db.open_tree("series")?;
        let spans_tree = db.open_tree("series_span")?;
        let mut inner = Inner {
            next_series: 1,
            next_group: 1,
            ..Default::default()
        };
        for item in tree.iter() {
            let (k, v) = item?;
            let id = u32::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("series key is not 4 bytes".into()))?,
            );
            let (group, labels) = decode_series(&v)
                .ok_or_else(|| StorageError::Corrupt(format!("series {id} record")))?;
            inner.insert(id, group, labels);
        }
        for item in spans_tree.iter() {
            let (k, v) = item?;
            let (Ok(kb), mut rest) = (<[u8; 4]>::try_from(k.as_ref()), v.as_ref()) else {
                continue;
            };
            if let (Ok(a), Ok(b)) = (get_ivarint(&mut rest), get_ivarint(&mut rest)) {
                inner.spans.insert(u32::from_be_bytes(kb), (a, b));
            }
        }
        Ok(SeriesIndex {
            inner: RwLock::new(inner),
            epoch: Default::default(),
            tree,
            spans_tree,
            max_series,
        })
    }

    pub fn lookup(&self, key: &[u8]) -> Option<SeriesId> {
        self.inner.read().by_key.get(key).copied()
    }

    /// Changes whenever series are removed: a writer that resolved ids under
    /// one epoch and finds another must resolve them again.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Returns the id of the series with these labels, creating it if needed.
    /// A new series is passed to `log` while the index is still locked, so no
    /// other writer can use (and log samples of) it before its definition is
    /// in the WAL.
    pub fn get_or_create(
        &self,
        labels: &Labels,
        key: &[u8],
        log: impl FnOnce(SeriesId, GroupId),
    ) -> Result<SeriesId, StorageError> {
        let mut inner = self.inner.write();
        if let Some(&id) = inner.by_key.get(key) {
            return Ok(id);
        }
        if inner.series.len() >= self.max_series {
            return Err(StorageError::TooManySeries {
                limit: self.max_series,
            });
        }
        let mut gkey = Vec::new();
        labels.write_group_key(&mut gkey);
        let group = match inner.groups.get(&gkey[..]) {
            Some(&g) => g,
            None => inner.next_group,
        };
        let id = inner.next_series;
        inner.insert(id, group, labels.clone());
        log(id, group);
        self.tree
            .insert(id.to_be_bytes(), encode_series(group, labels))?;
        Ok(id)
    }

    /// Re-creates a series read from the WAL, if the database lost it.
    pub fn restore(
        &self,
        id: SeriesId,
        group: GroupId,
        labels: Labels,
    ) -> Result<(), StorageError> {
        // Ids are handed out from 0 up; the largest would leave none for
        // the next series. Only a damaged log holds one.
        if id == SeriesId::MAX || group == GroupId::MAX {
            return Err(StorageError::Corrupt(format!(
                "a series record with id {id} and group {group}, past the ids perch hands out"
            )));
        }
        let mut inner = self.inner.write();
        if inner.series.contains_key(&id) {
            return Ok(());
        }
        self.tree
            .insert(id.to_be_bytes(), encode_series(group, &labels))?;
        inner.insert(id, group, labels);
        Ok(())
    }

    pub fn get(&self, id: SeriesId) -> Option<SeriesInfo> {
        self.inner.read().series.get(&id).cloned()
    }

    pub fn group_of(&self, id: SeriesId) -> Option<GroupId> {
        self.inner.read().series.get(&id).map(|s| s.group)
    }

    /// Heap bytes the index holds: its maps' tables and what their
    /// entries point to.
    pub fn heap_bytes(&self) -> usize {
        fn table<K, V>(capacity: usize) -> usize {
            capacity * (std::mem::size_of::<(K, V)>() + 1)
        }
        let inner = self.inner.read();
        inner.heap_bytes
            + table::<Box<[u8]>, SeriesId>(inner.by_key.capacity())
            + table::<SeriesId, SeriesInfo>(inner.series.capacity())
            + table::<Box<[u8]>, GroupId>(inner.groups.capacity())
            + table::<String, BTreeMap<String, Vec<SeriesId>>>(inner.postings.capacity())
            + table::<SeriesId, (i64, i64)>(inner.spans.capacity())
            + table::<SeriesId, ()>(inner.unpersisted.capacity())
    }

    pub fn len(&self) -> usize {
        self.inner.read().series.len()
    }

    /// Widens the recorded span of each series to whole raw windows: a
    /// span only has to hold the series' samples (queries and retention
    /// use it to skip series), and a live series then changes its span,
    /// and is written to sled, once per window (2 h) instead of at every
    /// checkpoint (5 min) — 10 000 series' spans at each checkpoint were
    /// a good part of what sled wrote.
    pub fn extend_spans(&self, spans: &FxHashMap<SeriesId, (i64, i64)>) {
        let mut inner = self.inner.write();
        let Inner {
            spans: recorded,
            unpersisted,
            ..
        } = &mut *inner;
        for (&id, &(lo, hi)) in spans {
            let lo = Tier::Raw.window_of(lo);
            let hi = Tier::Raw
                .window_of(hi)
                .saturating_add(Tier::Raw.window_ms());
            let e = recorded.entry(id).or_insert((i64::MAX, i64::MIN));
            if lo < e.0 || hi > e.1 {
                e.0 = e.0.min(lo);
                e.1 = e.1.max(hi);
                unpersisted.insert(id);
            }
        }
    }

    /// Writes the spans that changed since they were last written to sled
    /// (at checkpoints).
    pub fn persist_spans(&self) -> Result<(), StorageError> {
        let (ids, batch) = {
            let mut inner = self.inner.write();
            let ids = std::mem::take(&mut inner.unpersisted);
            let mut batch = sled::Batch::default();
            for id in &ids {
                if let Some(&(lo, hi)) = inner.spans.get(id) {
                    let mut v = Vec::with_capacity(16);
                    put_ivarint(&mut v, lo);
                    put_ivarint(&mut v, hi);
                    batch.insert(&id.to_be_bytes(), v);
                }
            }
            (ids, batch)
        };
        // Without the lock: appends look series up meanwhile.
        if let Err(e) = self.spans_tree.apply_batch(batch) {
            // Written at the next checkpoint.
            self.inner.write().unpersisted.extend(ids);
            return Err(e.into());
        }
        Ok(())
    }

    /// Series matching every matcher whose recorded span overlaps
    /// `[start, end]`, or that are in `also` (series with samples in memory
    /// that the recorded spans do not cover yet). Series without a recorded
    /// span are included.
    pub fn select(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        also: &rustc_hash::FxHashSet<SeriesId>,
    ) -> Vec<(SeriesId, SeriesInfo)> {
        let inner = self.inner.read();
        let mut candidates: Option<Vec<SeriesId>> = None;
        let mut exclusions: Vec<&Matcher> = Vec::new();
        for m in matchers {
            if m.matches_empty() {
                // Matches series without the label too: filter afterwards.
                exclusions.push(m);
                continue;
            }
            let mut set: Vec<SeriesId> = Vec::new();
            if let Some(values) = inner.postings.get(&m.name) {
                match &m.op {
                    super::labels::MatchOp::Equal => {
                        if let Some(ids) = values.get(&m.value) {
                            set.extend_from_slice(ids);
                        }
                    }
                    _ => {
                        for (v, ids) in values {
                            if m.matches(v) {
                                set.extend_from_slice(ids);
                            }
                        }
                        set.sort_unstable();
                        set.dedup();
                    }
                }
            }
            candidates = Some(match candidates {
                None => set,
                Some(c) => intersect(&c, &set),
            });
        }
        let ids: Vec<SeriesId> = match candidates {
            Some(c) => c,
            None => {
                let mut all: Vec<SeriesId> = inner.series.keys().copied().collect();
                all.sort_unstable();
                all
            }
        };
        ids.into_iter()
            .filter_map(|id| {
                let info = inner.series.get(&id)?;
                if !exclusions.iter().all(|m| m.matches_labels(&info.labels)) {
                    return None;
                }
                if let Some(&(lo, hi)) = inner.spans.get(&id) {
                    if (hi < start || lo > end) && !also.contains(&id) {
                        return None;
                    }
                }
                Some((id, info.clone()))
            })
            .collect()
    }

    /// Label names present on any series.
    pub fn label_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.read().postings.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.inner
            .read()
            .postings
            .get(name)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets series whose last sample is older than `cutoff`, except those
    /// in `keep`.
    pub fn remove_older_than(
        &self,
        cutoff: i64,
        keep: &rustc_hash::FxHashSet<SeriesId>,
    ) -> Result<usize, StorageError> {
        let mut inner = self.inner.write();
        let old: Vec<SeriesId> = inner
            .spans
            .iter()
            .filter(|(id, &(_, hi))| hi < cutoff && !keep.contains(id))
            .map(|(&id, _)| id)
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut batch = sled::Batch::default();
        let mut spans = sled::Batch::default();
        for &id in &old {
            inner.remove(id);
            batch.remove(&id.to_be_bytes());
            spans.remove(&id.to_be_bytes());
        }
        self.tree.apply_batch(batch)?;
        self.spans_tree.apply_batch(spans)?;
        Ok(old.len())
    }
}

fn intersect(a: &[SeriesId], b: &[SeriesId]) -> Vec<SeriesId> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}
