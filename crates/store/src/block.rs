//! The sealed block: the columns of one group of series over one time window.
//!
//! Series of a group usually share their timestamps (the fields of one line of
//! line protocol or of one JSON message), so a block stores each distinct
//! timestamp column once and lets series point at it. All metadata comes
//! first, so reading one series skips the others' bytes without decoding them.
//!
//! ```text
//! u8 version, u8 kind (0 raw: 1 value column, 1 rollup: 5 value columns)
//! varint #ts-columns, then per column: varint n, u8 codec, varint byte length
//! varint #series, then per series: varint id, varint ts-column,
//!                                   per value column: u8 codec, varint length
//! payloads in the same order
//! ```

use rustc_hash::FxHashMap;

use super::codec::{self, CodecError, CodecId};
use super::encoding::{get_uvarint, put_uvarint, take, VarintError};
use super::SeriesId;

const BLOCK_VERSION: u8 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// One value per timestamp.
    Raw,
    /// Per bucket: min, max, sum, count, last.
    Rollup,
}

impl BlockKind {
    pub fn value_columns(self) -> usize {
        match self {
            BlockKind::Raw => 1,
            BlockKind::Rollup => 5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("corrupt block: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl base::HasKind for BlockError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        let _ = self;
        K::DataLoss
    }
}

impl From<VarintError> for BlockError {
    fn from(_: VarintError) -> Self {
        BlockError::Corrupt("truncated header".into())
    }
}

/// One series' columns as stored in a block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesColumns {
    pub ts: Vec<i64>,
    /// One vector per value column of the block kind.
    pub values: Vec<Vec<f64>>,
}

pub struct BlockBuilder {
    kind: BlockKind,
    ts_meta: Vec<(usize, CodecId, usize)>,
    ts_payload: Vec<u8>,
    /// Distinct timestamp columns by content, to store shared ones once.
    ts_seen: FxHashMap<u64, Vec<usize>>,
    ts_columns: Vec<Vec<i64>>,
    series_meta: Vec<u8>,
    n_series: usize,
    series_payload: Vec<u8>,
    samples: usize,
}

fn hash_ts(ts: &[i64]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    ts.hash(&mut h);
    h.finish()
}

impl BlockBuilder {
    pub fn new(kind: BlockKind) -> Self {
        BlockBuilder {
            kind,
            ts_meta: Vec::new(),
            ts_payload: Vec::new(),
            ts_seen: FxHashMap::default(),
            ts_columns: Vec::new(),
            series_meta: Vec::new(),
            n_series: 0,
            series_payload: Vec::new(),
            samples: 0,
        }
    }

    /// Adds one series; `values` must hold one column per value column of the
    /// kind, each as long as `ts`.
    pub fn add(&mut self, id: SeriesId, ts: &[i64], values: &[&[f64]]) {
        debug_assert_eq!(values.len(), self.kind.value_columns());
        debug_assert!(values.iter().all(|v| v.len() == ts.len()));
        let h = hash_ts(ts);
        let existing = self
            .ts_seen
            .get(&h)
            .and_then(|cands| cands.iter().copied().find(|&i| self.ts_columns[i] == ts));
        let ts_idx = match existing {
            Some(i) => i,
            None => {
                let before = self.ts_payload.len();
                let codec = codec::encode_timestamps(ts, &mut self.ts_payload);
                let idx = self.ts_columns.len();
                self.ts_meta
                    .push((ts.len(), codec, self.ts_payload.len() - before));
                self.ts_columns.push(ts.to_vec());
                self.ts_seen.entry(h).or_default().push(idx);
                idx
            }
        };
        put_uvarint(&mut self.series_meta, id as u64);
        put_uvarint(&mut self.series_meta, ts_idx as u64);
        for col in values {
            let before = self.series_payload.len();
            let codec = codec::encode_values(col, &mut self.series_payload);
            self.series_meta.push(codec as u8);
            put_uvarint(
                &mut self.series_meta,
                (self.series_payload.len() - before) as u64,
            );
        }
        self.n_series += 1;
        self.samples += ts.len();
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    pub fn is_empty(&self) -> bool {
        self.n_series == 0
    }

    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            16 + self.ts_payload.len() + self.series_payload.len() + self.series_meta.len(),
        );
        out.push(BLOCK_VERSION);
        out.push(match self.kind {
            BlockKind::Raw => 0,
            BlockKind::Rollup => 1,
        });
        put_uvarint(&mut out, self.ts_meta.len() as u64);
        for (n, codec, len) in &self.ts_meta {
            put_uvarint(&mut out, *n as u64);
            out.push(*codec as u8);
            put_uvarint(&mut out, *len as u64);
        }
        put_uvarint(&mut out, self.n_series as u64);
        out.extend_from_slice(&self.series_meta);
        out.extend_from_slice(&self.ts_payload);
        out.extend_from_slice(&self.series_payload);
        out
    }
}

struct ColumnRef {
    codec: CodecId,
    start: usize,
    len: usize,
}

struct SeriesRef {
    ts_col: usize,
    values: Vec<ColumnRef>,
}

/// A parsed block header over borrowed bytes.
pub struct Block<'a> {
    data: &'a [u8],
    pub kind: BlockKind,
    ts_cols: Vec<(usize, ColumnRef)>,
    series: Vec<(SeriesId, SeriesRef)>,
}

impl<'a> Block<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Block<'a>, BlockError> {
        let corrupt = |m: &str| BlockError::Corrupt(m.to_string());
        let mut rest = data;
        let header = take(&mut rest, 2)?;
        if header[0] != BLOCK_VERSION {
            return Err(corrupt(&format!("unknown block version {}", header[0])));
        }
        let kind = match header[1] {
            0 => BlockKind::Raw,
            1 => BlockKind::Rollup,
            k => return Err(corrupt(&format!("unknown block kind {k}"))),
        };
        let n_ts = get_uvarint(&mut rest)? as usize;
        if n_ts > data.len() {
            return Err(corrupt("too many timestamp columns"));
        }
        let mut ts_meta = Vec::with_capacity(n_ts);
        for _ in 0..n_ts {
            let n = get_uvarint(&mut rest)? as usize;
            codec::check_count(n)?;
            let c = CodecId::from_u8(take(&mut rest, 1)?[0])?;
            let len = get_uvarint(&mut rest)? as usize;
            ts_meta.push((n, c, len));
        }
        let n_series = get_uvarint(&mut rest)? as usize;
        if n_series > data.len() {
            return Err(corrupt("too many series"));
        }
        let mut series_meta = Vec::with_capacity(n_series);
        for _ in 0..n_series {
            let id = u32::try_from(get_uvarint(&mut rest)?).map_err(|_| corrupt("series id"))?;
            let ts_col = get_uvarint(&mut rest)? as usize;
            if ts_col >= n_ts {
                return Err(corrupt("series points at a missing timestamp column"));
            }
            let mut cols = Vec::with_capacity(kind.value_columns());
            for _ in 0..kind.value_columns() {
                let c = CodecId::from_u8(take(&mut rest, 1)?[0])?;
                let len = get_uvarint(&mut rest)? as usize;
                cols.push((c, len));
            }
            series_meta.push((id, ts_col, cols));
        }
        let mut offset = data.len() - rest.len();
        let mut advance = |len: usize| -> Result<usize, BlockError> {
            let start = offset;
            offset = offset
                .checked_add(len)
                .filter(|&e| e <= data.len())
                .ok_or_else(|| corrupt("column runs past the end"))?;
            Ok(start)
        };
        let mut ts_cols = Vec::with_capacity(n_ts);
        for (n, codec, len) in ts_meta {
            let start = advance(len)?;
            ts_cols.push((n, ColumnRef { codec, start, len }));
        }
        let mut series = Vec::with_capacity(n_series);
        for (id, ts_col, cols) in series_meta {
            let mut values = Vec::with_capacity(cols.len());
            for (codec, len) in cols {
                let start = advance(len)?;
                values.push(ColumnRef { codec, start, len });
            }
            series.push((id, SeriesRef { ts_col, values }));
        }
        if offset != data.len() {
            return Err(corrupt("trailing bytes after the last column"));
        }
        Ok(Block {
            data,
            kind,
            ts_cols,
            series,
        })
    }

    pub fn series_ids(&self) -> impl Iterator<Item = SeriesId> + '_ {
        self.series.iter().map(|(id, _)| *id)
    }

    pub fn contains(&self, id: SeriesId) -> bool {
        self.series.iter().any(|(s, _)| *s == id)
    }

    /// Decodes the columns of the series in `wanted` (all when `None`),
    /// decoding each shared timestamp column once.
    pub fn read(
        &self,
        wanted: Option<&[SeriesId]>,
    ) -> Result<Vec<(SeriesId, SeriesColumns)>, BlockError> {
        let is_wanted = |id: &SeriesId| wanted.is_none_or(|w| w.contains(id));
        // How many wanted series still need each timestamp column: the last
        // one takes the decoded column instead of a copy (a query for one
        // field of a device reads one series per block).
        let mut ts_users = vec![0usize; self.ts_cols.len()];
        for (id, sref) in &self.series {
            if is_wanted(id) {
                ts_users[sref.ts_col] += 1;
            }
        }
        let mut ts_cache: Vec<Option<Vec<i64>>> = vec![None; self.ts_cols.len()];
        let mut out = Vec::new();
        for (id, sref) in &self.series {
            if !is_wanted(id) {
                continue;
            }
            let (n, tref) = &self.ts_cols[sref.ts_col];
            if ts_cache[sref.ts_col].is_none() {
                let mut ts = Vec::with_capacity(*n);
                codec::decode_timestamps(
                    tref.codec,
                    &self.data[tref.start..tref.start + tref.len],
                    *n,
                    &mut ts,
                )?;
                ts_cache[sref.ts_col] = Some(ts);
            }
            ts_users[sref.ts_col] -= 1;
            let ts = if ts_users[sref.ts_col] == 0 {
                ts_cache[sref.ts_col].take()
            } else {
                ts_cache[sref.ts_col].clone()
            }
            .expect("filled above");
            let mut values = Vec::with_capacity(sref.values.len());
            for c in &sref.values {
                let mut v = Vec::with_capacity(*n);
                codec::decode_values(c.codec, &self.data[c.start..c.start + c.len], *n, &mut v)?;
                values.push(v);
            }
            out.push((*id, SeriesColumns { ts, values }));
        }
        Ok(out)
    }

    /// Bytes spent on timestamps and on values, for `perch bench`.
    pub fn byte_breakdown(&self) -> (usize, usize) {
        let ts = self.ts_cols.iter().map(|(_, c)| c.len).sum();
        let vals = self
            .series
            .iter()
            .flat_map(|(_, s)| s.values.iter().map(|c| c.len))
            .sum();
        (ts, vals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_timestamps_are_stored_once() {
        let ts: Vec<i64> = (0..500)
            .map(|i| 1_000_000 + i * 10_000 + (i * 37) % 500)
            .collect();
        let a: Vec<f64> = (0..500).map(|i| 20.0 + (i % 7) as f64 / 10.0).collect();
        let b: Vec<f64> = (0..500).map(|i| (i * 3) as f64).collect();
        let mut one = BlockBuilder::new(BlockKind::Raw);
        one.add(1, &ts, &[&a]);
        let one = one.finish();
        let mut two = BlockBuilder::new(BlockKind::Raw);
        two.add(1, &ts, &[&a]);
        two.add(2, &ts, &[&b]);
        let other_ts: Vec<i64> = ts.iter().map(|t| t + 1).collect();
        two.add(3, &other_ts, &[&b]);
        let two = two.finish();
        let parsed = Block::parse(&two).unwrap();
        assert_eq!(parsed.ts_cols.len(), 2);
        let cols = parsed.read(Some(&[2, 3])).unwrap();
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[0].1.ts, ts);
        assert_eq!(cols[0].1.values[0], b);
        assert_eq!(cols[1].1.ts, other_ts);
        assert!(two.len() < one.len() * 3);
    }

    #[test]
    fn rollup_blocks_have_five_columns() {
        let ts = [0i64, 60_000];
        let cols: Vec<Vec<f64>> = (0..5).map(|c| vec![c as f64, c as f64 + 1.0]).collect();
        let refs: Vec<&[f64]> = cols.iter().map(|c| c.as_slice()).collect();
        let mut b = BlockBuilder::new(BlockKind::Rollup);
        b.add(7, &ts, &refs);
        let bytes = b.finish();
        let parsed = Block::parse(&bytes).unwrap();
        assert_eq!(parsed.kind, BlockKind::Rollup);
        let r = parsed.read(None).unwrap();
        assert_eq!(r[0].1.values, cols);
    }

    #[test]
    fn garbage_is_an_error() {
        let ts = [1i64, 2, 3];
        let mut b = BlockBuilder::new(BlockKind::Raw);
        b.add(1, &ts, &[&[1.0, 2.0, 3.0]]);
        let bytes = b.finish();
        for cut in 0..bytes.len() {
            assert!(Block::parse(&bytes[..cut]).is_err() || cut == bytes.len());
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] = bad[i].wrapping_add(0x41);
            if let Ok(blk) = Block::parse(&bad) {
                let _ = blk.read(None);
            }
        }
    }
}
