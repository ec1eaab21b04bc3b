//! Rollups: per bucket of a fixed width, the min, max, sum, count and last of
//! the samples in it. Bucket `b` holds the samples in `(b, b + width]`. NaN samples (including Prometheus staleness markers) are
//! not counted; a bucket with only NaNs does not exist.

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets {
    /// Bucket start times; a bucket covers `(ts, ts + resolution]`.
    pub ts: Vec<i64>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    pub sum: Vec<f64>,
    pub count: Vec<f64>,
    pub last: Vec<f64>,
    /// Time of the last sample of each bucket, which `last` is the value of.
    /// Not stored in rollup blocks; `None` for buckets read from them.
    pub last_ts: Vec<Option<i64>>,
}

/// One bucket, as a row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub ts: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: f64,
    pub last: f64,
    pub last_ts: Option<i64>,
}

impl Buckets {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    fn push(&mut self, b: Bucket) {
        self.ts.push(b.ts);
        self.min.push(b.min);
        self.max.push(b.max);
        self.sum.push(b.sum);
        self.count.push(b.count);
        self.last.push(b.last);
        self.last_ts.push(b.last_ts);
    }

    fn row(&self, i: usize) -> Bucket {
        Bucket {
            ts: self.ts[i],
            min: self.min[i],
            max: self.max[i],
            sum: self.sum[i],
            count: self.count[i],
            last: self.last[i],
            last_ts: self.last_ts[i],
        }
    }

    pub fn columns(&self) -> [&[f64]; 5] {
        [&self.min, &self.max, &self.sum, &self.count, &self.last]
    }

    pub fn from_columns(ts: Vec<i64>, mut cols: Vec<Vec<f64>>) -> Option<Buckets> {
        if cols.len() != 5 || cols.iter().any(|c| c.len() != ts.len()) {
            return None;
        }
        let last = cols.pop()?;
        let count = cols.pop()?;
        let sum = cols.pop()?;
        let max = cols.pop()?;
        let min = cols.pop()?;
        let n = ts.len();
        Some(Buckets {
            ts,
            min,
            max,
            sum,
            count,
            last,
            last_ts: vec![None; n],
        })
    }

    /// Keeps the buckets whose start satisfies `keep`.
    pub fn retain(&mut self, keep: impl Fn(i64) -> bool) {
        let mut out = Buckets::default();
        for i in 0..self.len() {
            if keep(self.ts[i]) {
                out.push(self.row(i));
            }
        }
        *self = out;
    }

    /// Concatenates sources given in priority order (later wins on equal
    /// bucket start) into one sorted set.
    pub fn merge(sources: Vec<Buckets>) -> Buckets {
        let mut all: Vec<(i64, usize, usize)> = Vec::new();
        for (s, b) in sources.iter().enumerate() {
            all.extend((0..b.len()).map(|i| (b.ts[i], s, i)));
        }
        all.sort_by_key(|&(t, s, _)| (t, s));
        let mut out = Buckets::default();
        for (k, &(t, s, i)) in all.iter().enumerate() {
            if all.get(k + 1).is_some_and(|n| n.0 == t) {
                continue;
            }
            out.push(sources[s].row(i));
        }
        out
    }
}

/// Rolls sorted samples up into buckets of `resolution` ms.
pub fn rollup(ts: &[i64], values: &[f64], resolution: i64) -> Buckets {
    let mut out = Buckets::default();
    let mut current: Option<Bucket> = None;
    for (&t, &v) in ts.iter().zip(values) {
        if v.is_nan() {
            continue;
        }
        let start = super::files::slot_start(t, resolution);
        match &mut current {
            Some(c) if c.ts == start => {
                // Strict comparisons, not f64::min/max (whose choice
                // between -0.0 and +0.0 differs between x86 and ARM): the
                // first of equal values stays, as in Prometheus' scan.
                if v < c.min {
                    c.min = v;
                }
                if v > c.max {
                    c.max = v;
                }
                c.sum += v;
                c.count += 1.0;
                c.last = v;
                c.last_ts = Some(t);
            }
            _ => {
                if let Some(c) = current.take() {
                    out.push(c);
                }
                current = Some(Bucket {
                    ts: start,
                    min: v,
                    max: v,
                    sum: v,
                    count: 1.0,
                    last: v,
                    last_ts: Some(t),
                });
            }
        }
    }
    if let Some(c) = current {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_summarize_and_skip_nan() {
        let ts = [1, 10_000, 59_999, 60_001, 180_000];
        let vs = [1.0, 3.0, 2.0, f64::NAN, 5.0];
        let b = rollup(&ts, &vs, 60_000);
        assert_eq!(b.ts, vec![0, 120_000]);
        assert_eq!(b.min, vec![1.0, 5.0]);
        assert_eq!(b.max, vec![3.0, 5.0]);
        assert_eq!(b.sum, vec![6.0, 5.0]);
        assert_eq!(b.count, vec![3.0, 1.0]);
        assert_eq!(b.last, vec![2.0, 5.0]);
    }

    #[test]
    fn later_sources_win() {
        let a = rollup(&[60_000, 120_000], &[1.0, 2.0], 60_000);
        let b = rollup(&[120_000], &[9.0], 60_000);
        let m = Buckets::merge(vec![a, b]);
        assert_eq!(m.ts, vec![0, 60_000]);
        assert_eq!(m.last, vec![1.0, 9.0]);
    }
}
