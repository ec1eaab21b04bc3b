//! Rollups: per bucket of a fixed width, the min, max, sum, count and last of
//! the samples in it. NaN samples (including Prometheus staleness markers) are
//! not counted; a bucket with only NaNs does not exist.

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets {
    /// Bucket start times; a bucket covers `[ts, ts + resolution)`.
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

impl Buckets {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    fn push(&mut self, ts: i64, min: f64, max: f64, sum: f64, count: f64, last: f64, last_ts: Option<i64>) {
        self.ts.push(ts);
        self.min.push(min);
        self.max.push(max);
        self.sum.push(sum);
        self.count.push(count);
        self.last.push(last);
        self.last_ts.push(last_ts);
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
                out.push(
                    self.ts[i],
                    self.min[i],
                    self.max[i],
                    self.sum[i],
                    self.count[i],
                    self.last[i],
                    self.last_ts[i],
                );
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
            let b = &sources[s];
            out.push(t, b.min[i], b.max[i], b.sum[i], b.count[i], b.last[i], b.last_ts[i]);
        }
        out
    }
}

/// Rolls sorted samples up into buckets of `resolution` ms.
pub fn rollup(ts: &[i64], values: &[f64], resolution: i64) -> Buckets {
    let mut out = Buckets::default();
    let mut current: Option<(i64, f64, f64, f64, f64, f64, i64)> = None;
    for (&t, &v) in ts.iter().zip(values) {
        if v.is_nan() {
            continue;
        }
        let b = t.div_euclid(resolution).saturating_mul(resolution);
        match &mut current {
            Some(c) if c.0 == b => {
                c.1 = c.1.min(v);
                c.2 = c.2.max(v);
                c.3 += v;
                c.4 += 1.0;
                c.5 = v;
                c.6 = t;
            }
            _ => {
                if let Some(c) = current.take() {
                    out.push(c.0, c.1, c.2, c.3, c.4, c.5, Some(c.6));
                }
                current = Some((b, v, v, v, 1.0, v, t));
            }
        }
    }
    if let Some(c) = current {
        out.push(c.0, c.1, c.2, c.3, c.4, c.5, Some(c.6));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_summarize_and_skip_nan() {
        let ts = [0, 10_000, 59_999, 60_000, 130_000];
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
        let a = rollup(&[0, 60_000], &[1.0, 2.0], 60_000);
        let b = rollup(&[60_000], &[9.0], 60_000);
        let m = Buckets::merge(vec![a, b]);
        assert_eq!(m.ts, vec![0, 60_000]);
        assert_eq!(m.last, vec![1.0, 9.0]);
    }
}
