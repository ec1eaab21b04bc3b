//! The in-memory head: samples written since the last checkpoint, per series,
//! in arrival order. A checkpoint freezes the head (readers keep seeing it)
//! and writes it out as partial blocks.

use rustc_hash::{FxHashMap, FxHashSet};

use super::files::Tier;
use super::SeriesId;

#[derive(Default, Clone)]
pub struct SeriesBuf {
    pub ts: Vec<i64>,
    pub values: Vec<f64>,
    /// Timestamps are strictly increasing (no out-of-order, no duplicates).
    strictly_increasing: bool,
}

impl SeriesBuf {
    /// Heap bytes this buffer holds (capacities, not lengths).
    fn heap_bytes(&self) -> usize {
        self.ts.capacity() * std::mem::size_of::<i64>()
            + self.values.capacity() * std::mem::size_of::<f64>()
    }

    fn push(&mut self, ts: i64, v: f64) {
        if self.ts.is_empty() {
            self.strictly_increasing = true;
        } else if ts <= *self.ts.last().expect("not empty") {
            self.strictly_increasing = false;
        }
        self.ts.push(ts);
        self.values.push(v);
    }

    /// The samples sorted by time with the last write of each timestamp kept.
    pub fn sorted(&self) -> (Vec<i64>, Vec<f64>) {
        if self.strictly_increasing {
            return (self.ts.clone(), self.values.clone());
        }
        sort_dedup_last(&self.ts, &self.values)
    }

    /// Sorted samples within `[start, end]`.
    pub fn range(&self, start: i64, end: i64) -> (Vec<i64>, Vec<f64>) {
        if self.strictly_increasing {
            let lo = self.ts.partition_point(|&t| t < start);
            let hi = self.ts.partition_point(|&t| t <= end);
            return (self.ts[lo..hi].to_vec(), self.values[lo..hi].to_vec());
        }
        let (ts, vs) = self.sorted();
        let lo = ts.partition_point(|&t| t < start);
        let hi = ts.partition_point(|&t| t <= end);
        (ts[lo..hi].to_vec(), vs[lo..hi].to_vec())
    }
}

/// Heap bytes of a head's maps: their tables (a hashbrown table holds
/// `capacity` entries and a control byte each) and the series' buffers.
fn maps_bytes(
    series: &FxHashMap<SeriesId, SeriesBuf>,
    spans: &FxHashMap<SeriesId, (i64, i64)>,
    windows: &FxHashSet<i64>,
) -> usize {
    fn table<K, V>(capacity: usize) -> usize {
        capacity * (std::mem::size_of::<(K, V)>() + 1)
    }
    table::<SeriesId, SeriesBuf>(series.capacity())
        + series.values().map(SeriesBuf::heap_bytes).sum::<usize>()
        + table::<SeriesId, (i64, i64)>(spans.capacity())
        + table::<i64, ()>(windows.capacity())
}

/// Stable sort by timestamp; of equal timestamps the one written last wins.
pub fn sort_dedup_last(ts: &[i64], values: &[f64]) -> (Vec<i64>, Vec<f64>) {
    let mut idx: Vec<u32> = (0..ts.len() as u32).collect();
    idx.sort_by_key(|&i| ts[i as usize]);
    let mut out_ts = Vec::with_capacity(ts.len());
    let mut out_v = Vec::with_capacity(ts.len());
    for &i in &idx {
        let (t, v) = (ts[i as usize], values[i as usize]);
        if out_ts.last() == Some(&t) {
            *out_v.last_mut().expect("parallel") = v;
        } else {
            out_ts.push(t);
            out_v.push(v);
        }
    }
    (out_ts, out_v)
}

#[derive(Default)]
pub struct Head {
    pub series: FxHashMap<SeriesId, SeriesBuf>,
    pub samples: usize,
    /// First and last timestamps seen per series since the last checkpoint.
    pub spans: FxHashMap<SeriesId, (i64, i64)>,
    /// Raw windows that samples in this head fall in.
    pub windows: FxHashSet<i64>,
    last_window: Option<i64>,
    /// Disk budget reserved for this head's blocks (see `space::Budget`).
    pub reserved: u64,
}

impl Head {
    pub fn append(&mut self, id: SeriesId, ts: i64, v: f64) {
        self.series.entry(id).or_default().push(ts, v);
        self.samples += 1;
        let span = self.spans.entry(id).or_insert((ts, ts));
        span.0 = span.0.min(ts);
        span.1 = span.1.max(ts);
        let w = Tier::Raw.window_of(ts);
        if self.last_window != Some(w) {
            self.windows.insert(w);
            self.last_window = Some(w);
        }
    }

    /// Heap bytes the head holds.
    pub fn heap_bytes(&self) -> usize {
        maps_bytes(&self.series, &self.spans, &self.windows)
    }

    pub fn freeze(&mut self, wal_boundary: u64) -> FrozenHead {
        let frozen = FrozenHead {
            series: std::mem::take(&mut self.series),
            samples: self.samples,
            spans: std::mem::take(&mut self.spans),
            windows: std::mem::take(&mut self.windows),
            wal_boundary,
            reserved: std::sync::atomic::AtomicU64::new(std::mem::take(&mut self.reserved)),
        };
        self.samples = 0;
        self.last_window = None;
        frozen
    }
}

/// A head taken out of service by a checkpoint: immutable, still read until
/// its blocks are durable.
pub struct FrozenHead {
    pub series: FxHashMap<SeriesId, SeriesBuf>,
    pub samples: usize,
    pub spans: FxHashMap<SeriesId, (i64, i64)>,
    pub windows: FxHashSet<i64>,
    /// WAL segments below this hold only samples of this or older heads.
    pub wal_boundary: u64,
    /// Disk budget still reserved for its blocks; the checkpoint converts
    /// it as it writes them and gives back the rest.
    pub reserved: std::sync::atomic::AtomicU64,
}

impl FrozenHead {
    /// Heap bytes the frozen head holds until its blocks are written.
    pub fn heap_bytes(&self) -> usize {
        maps_bytes(&self.series, &self.spans, &self.windows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_write_wins_and_order_is_restored() {
        let mut b = SeriesBuf::default();
        for (t, v) in [(3, 3.0), (1, 1.0), (2, 2.0), (1, 10.0), (5, 5.0)] {
            b.push(t, v);
        }
        assert_eq!(b.sorted(), (vec![1, 2, 3, 5], vec![10.0, 2.0, 3.0, 5.0]));
        assert_eq!(b.range(2, 4), (vec![2, 3], vec![2.0, 3.0]));
    }
}
