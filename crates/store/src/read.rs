//! Reading: raw samples and rollup buckets, merged from blocks, frozen heads
//! and the live head. Memory sources are captured before blocks are read so a
//! checkpoint running meanwhile can only make a sample appear twice (which the
//! merge removes), never vanish.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::block::Block;
use super::files::Tier;
use super::head::{sort_dedup_last, FrozenHead};
use super::labels::Labels;
use super::rollup::{rollup, Buckets};
use super::{GroupId, SeriesId, Storage, StorageError};

/// The samples of one series in a time range, sorted, one per timestamp.
#[derive(Clone, Debug)]
pub struct SeriesData {
    pub id: SeriesId,
    pub labels: Arc<Labels>,
    pub ts: Vec<i64>,
    pub values: Vec<f64>,
}

/// Rollup buckets of one series.
#[derive(Clone, Debug)]
pub struct SeriesRollup {
    pub id: SeriesId,
    pub labels: Arc<Labels>,
    pub buckets: Buckets,
}

/// Timestamps and values of one series.
type Samples = (Vec<i64>, Vec<f64>);
/// Sources of one series in priority order (later wins).
type Sources = Vec<Samples>;

fn merge(mut sources: Sources, start: i64, end: i64) -> Samples {
    // One block or head alone (most reads of a short range) is used as it
    // is: copying it would cost as much as decoding it.
    let (mut ts, mut vs) = if sources.len() == 1 {
        sources.swap_remove(0)
    } else {
        let total: usize = sources.iter().map(|s| s.0.len()).sum();
        let mut ts = Vec::with_capacity(total);
        let mut vs = Vec::with_capacity(total);
        for (t, v) in sources {
            ts.extend(t);
            vs.extend(v);
        }
        (ts, vs)
    };
    if !ts.windows(2).all(|w| w[0] < w[1]) {
        (ts, vs) = sort_dedup_last(&ts, &vs);
    }
    let hi = ts.partition_point(|&t| t <= end);
    ts.truncate(hi);
    vs.truncate(hi);
    let lo = ts.partition_point(|&t| t < start);
    if lo > 0 {
        ts.drain(..lo);
        vs.drain(..lo);
    }
    (ts, vs)
}

impl Storage {
    fn memory_sources(
        &self,
        ids: &[SeriesId],
        start: i64,
        end: i64,
    ) -> (Vec<Arc<FrozenHead>>, FxHashMap<SeriesId, Samples>) {
        let head = self.head.lock();
        let frozen = self.frozen.read().clone();
        let mut live = FxHashMap::default();
        for id in ids {
            if let Some(buf) = head.series.get(id) {
                let r = buf.range(start, end);
                if !r.0.is_empty() {
                    live.insert(*id, r);
                }
            }
        }
        (frozen, live)
    }

    fn groups_of(&self, ids: &[SeriesId]) -> FxHashMap<GroupId, Vec<SeriesId>> {
        let mut by_group: FxHashMap<GroupId, Vec<SeriesId>> = FxHashMap::default();
        for &id in ids {
            if let Some(g) = self.index.group_of(id) {
                by_group.entry(g).or_default().push(id);
            }
        }
        by_group
    }

    /// Reads blocks of `tier` for the given series within `[start, end]`,
    /// restricted to windows accepted by `window_filter`, appending each
    /// series' columns to `out` in priority order.
    fn read_tier(
        &self,
        tier: Tier,
        ids: &[SeriesId],
        start: i64,
        end: i64,
        max_samples: usize,
        mut on_series: impl FnMut(SeriesId, i64, Vec<i64>, Vec<Vec<f64>>),
    ) -> Result<usize, StorageError> {
        let by_group = self.groups_of(ids);
        let windows = self.files.windows_in(tier, start, end);
        let mut read = 0usize;
        self.files.with_read_lock(|reader| {
            for (window, _) in &windows {
                let index = match self.files.window_index(tier, *window) {
                    Ok(index) => index,
                    Err(e) if e.is_damage() => {
                        self.report_problem(format!("skipped a window with a damaged index: {e}"));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for (group, wanted) in &by_group {
                    for (_, entry) in index.group(*group) {
                        if entry.max_ts < start || entry.min_ts > end {
                            continue;
                        }
                        let decoded = reader
                            .read(tier, *window, entry)
                            .and_then(|body| Ok(Block::parse(&body)?.read(Some(wanted))?));
                        let columns = match decoded {
                            Ok(c) => c,
                            Err(e) if e.is_damage() => {
                                // One damaged block must not hide all the rest.
                                self.report_problem(format!("skipped a damaged block: {e}"));
                                continue;
                            }
                            Err(e) => return Err(e),
                        };
                        for (id, cols) in columns {
                            // What the range takes of the block: a dense
                            // series' block can hold more than the limit
                            // while a slice of it is small (an export
                            // narrowing its slices failed on one).
                            let from = cols.ts.partition_point(|&t| t < start);
                            let to = cols.ts.partition_point(|&t| t <= end);
                            read += to.saturating_sub(from);
                            if read > max_samples {
                                return Err(StorageError::TooManySamples { limit: max_samples });
                            }
                            on_series(id, *window, cols.ts, cols.values);
                        }
                    }
                }
            }
            Ok(read)
        })
    }

    /// Raw samples of the given series in `[start, end]`. Fails with
    /// `TooManySamples` rather than use unbounded memory.
    pub fn read(
        &self,
        ids: &[SeriesId],
        start: i64,
        end: i64,
        max_samples: usize,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let (frozen, mut live) = self.memory_sources(ids, start, end);
        let mut sources: FxHashMap<SeriesId, Sources> = FxHashMap::default();
        self.read_tier(
            Tier::Raw,
            ids,
            start,
            end,
            max_samples,
            |id, _, ts, mut cols| {
                sources
                    .entry(id)
                    .or_default()
                    .push((ts, cols.swap_remove(0)));
            },
        )?;
        for f in &frozen {
            for id in ids {
                if let Some(buf) = f.series.get(id) {
                    let r = buf.range(start, end);
                    if !r.0.is_empty() {
                        sources.entry(*id).or_default().push(r);
                    }
                }
            }
        }
        for id in ids {
            if let Some(r) = live.remove(id) {
                sources.entry(*id).or_default().push(r);
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        let mut total = 0usize;
        for &id in ids {
            let Some(src) = sources.remove(&id) else {
                continue;
            };
            let Some(labels) = self.series_labels(id) else {
                continue;
            };
            let (ts, values) = merge(src, start, end);
            total += ts.len();
            if total > max_samples {
                return Err(StorageError::TooManySamples { limit: max_samples });
            }
            if !ts.is_empty() {
                out.push(SeriesData {
                    id,
                    labels,
                    ts,
                    values,
                });
            }
        }
        Ok(out)
    }

    /// Rollup buckets (`resolution` = [`Tier::Minute`] or [`Tier::Hour`]) of
    /// the given series whose key `b` is in `[start, end]`; bucket `b` holds
    /// the samples in `(b, b + resolution]`, so the bucket answering PromQL's
    /// `x[1h]` at an hour boundary `t` is `b = t - 1h`.
    ///
    /// Where raw samples exist the buckets are computed from them, so they are
    /// exact and include late writes; a raw window whose stored 1 h rollups are
    /// up to date reads those instead; where raw data has expired, the stored
    /// rollups are used.
    pub fn read_rollup(
        &self,
        ids: &[SeriesId],
        resolution: Tier,
        start: i64,
        end: i64,
        max_buckets: usize,
    ) -> Result<Vec<SeriesRollup>, StorageError> {
        assert!(resolution != Tier::Raw, "raw is not a rollup resolution");
        let res = resolution.resolution_ms();
        let raw_ms = Tier::Raw.window_ms();
        // Clamp to where data can be, so absurd ranges cost nothing.
        let Some((data_lo, data_hi)) = self.data_extent() else {
            return Ok(Vec::new());
        };
        // Buckets are keyed by start; the first one with data ends after data_lo.
        let start = start.max(super::files::slot_start(data_lo, res));
        let end = end.min(data_hi);
        if start > end {
            return Ok(Vec::new());
        }
        // Decide per raw window where its buckets come from: raw samples
        // where there are any (stored or in memory) unless the window's
        // stored 1 h rollups are up to date; stored rollups otherwise.
        let raw_windows: FxHashMap<i64, bool> = self
            .files
            .windows_in(Tier::Raw, start.saturating_add(1), end.saturating_add(res))
            .into_iter()
            .map(|(w, m)| (w, m.rolled_up))
            .collect();
        let memory_windows: rustc_hash::FxHashSet<i64> = {
            let head = self.head.lock();
            let mut set = head.windows.clone();
            for f in self.frozen.read().iter() {
                set.extend(f.windows.iter().copied());
            }
            set
        };
        let from_raw = |w: i64| -> bool {
            memory_windows.contains(&w)
                || raw_windows
                    .get(&w)
                    .is_some_and(|&rolled_up| !(rolled_up && resolution == Tier::Hour))
        };
        // A bucket (b, b + res] lies in the raw window holding b + 1.
        let window_of_bucket = |b: i64| Tier::Raw.window_of(b.saturating_add(1));
        let mut per_series: FxHashMap<SeriesId, Vec<Buckets>> = FxHashMap::default();
        // Stored rollups for windows not computed from raw.
        self.read_tier(
            resolution,
            ids,
            start,
            end,
            max_buckets,
            |id, _, ts, cols| {
                if let Some(mut b) = Buckets::from_columns(ts, cols) {
                    b.retain(|t| t >= start && t <= end && !from_raw(window_of_bucket(t)));
                    per_series.entry(id).or_default().push(b);
                }
            },
        )?;
        // Raw-derived buckets, run of consecutive raw windows by run.
        // Only windows that hold data can be runs; walking every window of a
        // huge range would cost time for nothing.
        let (first, last) = (window_of_bucket(start), window_of_bucket(end));
        let mut candidates: Vec<i64> = raw_windows
            .keys()
            .chain(memory_windows.iter())
            .copied()
            .filter(|&w| w >= first && w <= last && from_raw(w))
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut runs: Vec<(i64, i64)> = Vec::new();
        for w in candidates {
            match runs.last_mut() {
                Some(r) if r.1 == w => r.1 = w + raw_ms,
                _ => runs.push((w, w + raw_ms)),
            }
        }
        for (lo, hi) in runs {
            // Samples of buckets [start, end] lie in (start, end + res].
            let from = lo.max(start).saturating_add(1);
            let to = hi.min(end.saturating_add(res));
            for s in self.read(ids, from, to, max_buckets.saturating_mul(64))? {
                let mut b = rollup(&s.ts, &s.values, res);
                b.retain(|t| t >= start && t <= end);
                per_series.entry(s.id).or_default().push(b);
            }
        }
        let mut out = Vec::new();
        let mut total = 0;
        for &id in ids {
            let Some(parts) = per_series.remove(&id) else {
                continue;
            };
            let Some(labels) = self.series_labels(id) else {
                continue;
            };
            let buckets = Buckets::merge(parts);
            total += buckets.len();
            if total > max_buckets {
                return Err(StorageError::TooManySamples { limit: max_buckets });
            }
            if !buckets.is_empty() {
                out.push(SeriesRollup {
                    id,
                    labels,
                    buckets,
                });
            }
        }
        Ok(out)
    }
}
