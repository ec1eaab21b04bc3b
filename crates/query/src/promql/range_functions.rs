//! Range-vector functions (`rate`, `irate`, `deriv`, `*_over_time`, …): one
//! value per series and window of a range vector, the windows slid over
//! each series once. Holds Prometheus' `rate`/`increase`/`delta`
//! extrapolation and counter-reset handling.

use super::eval::{check_unique_labels, split_over_threads, threads_for, Evaluator};
use super::numeric::{avg, kahan_sum, linear_regression, quantile, variance};
use super::value::{drop_name, Grid, RangeArg, RangeSeries, Series};
use crate::QueryError;

/// Calls `f(step, lo, hi)` with the sample index range `[lo, hi)` of each
/// step's window `(ref - range, ref]`; `refs` must be non-decreasing.
pub fn for_each_window(
    ts: &[i64],
    refs: &[i64],
    range: i64,
    mut f: impl FnMut(usize, usize, usize),
) {
    let (mut lo, mut hi) = (0usize, 0usize);
    for (i, &r) in refs.iter().enumerate() {
        let start = r.saturating_sub(range);
        while hi < ts.len() && ts[hi] <= r {
            hi += 1;
        }
        while lo < hi && ts[lo] <= start {
            lo += 1;
        }
        f(i, lo, hi);
    }
}

/// A range-vector function, as the function table names it; the per-window
/// loop matches on this rather than on the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    /// `predict_linear(range, t)`: takes a scalar beside the range.
    PredictLinear,
    Resets,
    Changes,
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
    Present,
    Stddev,
    Stdvar,
    /// `quantile_over_time(φ, range)`: takes a scalar beside the range.
    Quantile,
}

/// Evaluates a function of a range vector per series and step; `param` is
/// the scalar of `quantile_over_time` and `predict_linear`.
pub fn range_function(
    ev: &mut Evaluator,
    func: RangeFn,
    r: RangeArg,
    param: Option<&[f64]>,
    grid: Grid,
) -> Result<Vec<Series>, QueryError> {
    // Windowing is most of a long range query's time once the samples are
    // read: large range vectors are split over the cores like the reads.
    const MIN_SAMPLES_PER_THREAD: usize = 50_000;
    let threads = threads_for(r.points() / MIN_SAMPLES_PER_THREAD);
    let evaluator: &Evaluator = ev;
    let out = split_over_threads(
        &r.series,
        threads,
        |part| {
            let mut scratch = Vec::new();
            let mut out = Vec::with_capacity(part.len());
            for s in part {
                evaluator.check_deadline()?;
                let o = one_series(func, s, &r.refs, r.range_ms, param, grid, &mut scratch);
                if !o.is_empty() {
                    out.push(o);
                }
            }
            Ok(out)
        },
        || QueryError::Execution("a query thread panicked".into()),
    )?;
    ev.release(r.points());
    ev.hold(out.iter().map(Series::len).sum())?;
    // Prometheus refuses equal label sets among range function results even
    // when they never overlap in time.
    check_unique_labels(&out)?;
    Ok(out)
}

/// `func` over each step's window of one series; `resets_before` is
/// scratch space reused between series.
fn one_series(
    func: RangeFn,
    s: &RangeSeries,
    refs: &[i64],
    range: i64,
    param: Option<&[f64]>,
    grid: Grid,
    resets_before: &mut Vec<u32>,
) -> Series {
    let keep_name = func == RangeFn::Last;
    let labels = if keep_name {
        s.labels.clone()
    } else {
        drop_name(&s.labels)
    };
    let mut o = Series::with_capacity(labels, refs.len());
    let (ts, vs) = (&s.ts[..], &s.values[..]);
    // Per sample: how many counter resets happened up to it, so windows
    // without any skip the loop that adds them back.
    if matches!(func, RangeFn::Rate | RangeFn::Increase) {
        resets_before.clear();
        let mut n = 0u32;
        for (i, v) in vs.iter().enumerate() {
            if i > 0 && *v < vs[i - 1] {
                n += 1;
            }
            resets_before.push(n);
        }
    }
    // The deque pays off only where windows overlap; a window per step
    // that shares nothing with the next (an instant query over a day)
    // is one plain scan.
    if matches!(func, RangeFn::Min | RangeFn::Max) && windows_overlap(refs, range) {
        sliding_extreme(ts, vs, refs, range, func == RangeFn::Max, &mut o);
        return o;
    }
    for_each_window(ts, refs, range, |i, lo, hi| {
        if lo >= hi {
            return;
        }
        let (t, v) = (&ts[lo..hi], &vs[lo..hi]);
        let reference = refs[i];
        let start = reference - range;
        let value = match func {
            RangeFn::Rate | RangeFn::Increase => {
                let counter = resets_before[hi - 1] != resets_before[lo];
                extrapolated_rate(
                    t,
                    v,
                    start,
                    reference,
                    range,
                    counter_mode(counter),
                    func == RangeFn::Rate,
                )
            }
            RangeFn::Delta => extrapolated_rate(t, v, start, reference, range, Counter::No, false),
            RangeFn::Irate => instant_value(t, v, true),
            RangeFn::Idelta => instant_value(t, v, false),
            RangeFn::Deriv => (t.len() >= 2).then(|| linear_regression(t, v, t[0]).0),
            RangeFn::PredictLinear => (t.len() >= 2).then(|| {
                let (slope, intercept) = linear_regression(t, v, grid.time(i));
                slope * param.map_or(0.0, |p| p[i]) + intercept
            }),
            RangeFn::Resets => Some(v.windows(2).filter(|w| w[1] < w[0]).count() as f64),
            RangeFn::Changes => Some(
                v.windows(2)
                    .filter(|w| w[1] != w[0] && !(w[1].is_nan() && w[0].is_nan()))
                    .count() as f64,
            ),
            RangeFn::Avg => Some(avg(v)),
            RangeFn::Min => Some(
                v.iter()
                    .fold(v[0], |m, &x| if x < m || m.is_nan() { x } else { m }),
            ),
            RangeFn::Max => Some(
                v.iter()
                    .fold(v[0], |m, &x| if x > m || m.is_nan() { x } else { m }),
            ),
            RangeFn::Sum => Some(kahan_sum(v)),
            RangeFn::Count => Some(v.len() as f64),
            RangeFn::Last => v.last().copied(),
            RangeFn::Present => Some(1.0),
            RangeFn::Stddev => Some(variance(v).sqrt()),
            RangeFn::Stdvar => Some(variance(v)),
            RangeFn::Quantile => Some(quantile(param.map_or(f64::NAN, |p| p[i]), v.to_vec())),
        };
        if let Some(x) = value {
            o.push(i as u32, x);
        }
    });
    o
}

/// Whether some step's window `(ref - range, ref]` shares time with the next.
fn windows_overlap(refs: &[i64], range: i64) -> bool {
    refs.windows(2).any(|w| w[1].saturating_sub(range) < w[0])
}

/// `max_over_time` / `min_over_time` over sliding windows in one pass: a
/// deque of candidate indexes, values decreasing (max) from the front. Ties
/// keep the earliest sample, as Prometheus' scan (which replaces only on a
/// strictly greater value) does; NaN is skipped unless the whole window is
/// NaN, which gives NaN — again Prometheus' result.
fn sliding_extreme(ts: &[i64], vs: &[f64], refs: &[i64], range: i64, max: bool, o: &mut Series) {
    let better = |a: f64, b: f64| if max { a > b } else { a < b };
    let mut deque: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    let mut added = 0usize;
    for_each_window(ts, refs, range, |i, lo, hi| {
        while added < hi {
            let x = vs[added];
            if !x.is_nan() {
                while deque.back().is_some_and(|&b| better(x, vs[b])) {
                    deque.pop_back();
                }
                deque.push_back(added);
            }
            added += 1;
        }
        while deque.front().is_some_and(|&f| f < lo) {
            deque.pop_front();
        }
        if lo >= hi {
            return;
        }
        match deque.front() {
            Some(&f) => o.push(i as u32, vs[f]),
            None => o.push(i as u32, f64::NAN),
        }
    });
}

/// How `extrapolated_rate` treats the samples.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A gauge (`delta`).
    No,
    /// A counter whose window holds no reset.
    NoResets,
    /// A counter with resets in the window.
    Resets,
}

fn counter_mode(resets: bool) -> Counter {
    if resets {
        Counter::Resets
    } else {
        Counter::NoResets
    }
}

/// `rate`, `increase` and `delta` as Prometheus computes them: the change
/// over the samples (adding back counter resets), extrapolated towards the
/// window's edges when the first and last sample are close enough to them,
/// never extrapolating a counter below zero.
pub fn extrapolated_rate(
    ts: &[i64],
    vs: &[f64],
    range_start: i64,
    range_end: i64,
    range_ms: i64,
    counter: Counter,
    is_rate: bool,
) -> Option<f64> {
    let n = ts.len();
    if n < 2 {
        return None;
    }
    let is_counter = counter != Counter::No;
    let mut result = vs[n - 1] - vs[0];
    if counter == Counter::Resets {
        let mut prev = vs[0];
        for &v in &vs[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let mut to_start = (ts[0] - range_start) as f64 / 1000.0;
    let to_end = (range_end - ts[n - 1]) as f64 / 1000.0;
    let sampled = (ts[n - 1] - ts[0]) as f64 / 1000.0;
    let avg_gap = sampled / (n - 1) as f64;
    if is_counter && result > 0.0 && vs[0] >= 0.0 {
        let to_zero = sampled * (vs[0] / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg_gap * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg_gap / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        avg_gap / 2.0
    };
    result *= interval / sampled;
    if is_rate {
        result /= range_ms as f64 / 1000.0;
    }
    Some(result)
}

/// `irate` and `idelta`: from the last two samples.
fn instant_value(ts: &[i64], vs: &[f64], is_rate: bool) -> Option<f64> {
    let n = ts.len();
    if n < 2 {
        return None;
    }
    let (last, prev) = (vs[n - 1], vs[n - 2]);
    let mut result = if is_rate && last < prev {
        last // counter reset
    } else {
        last - prev
    };
    let interval = ts[n - 1] - ts[n - 2];
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // Samples every 10 s from 5 s to 55 s in a 60 s window: 5 s is
        // within 1.1 × 10 s of both edges, so extrapolated to both.
        let ts: Vec<i64> = (0..6).map(|i| 5_000 + i * 10_000).collect();
        let vs: Vec<f64> = (0..6).map(|i| 100.0 + 10.0 * i as f64).collect();
        let inc = extrapolated_rate(&ts, &vs, 0, 60_000, 60_000, Counter::NoResets, false).unwrap();
        assert!((inc - 60.0).abs() < 1e-9, "{inc}");
        // A reset adds the value before it.
        let vs2 = [5.0, 10.0, 2.0, 4.0];
        let ts2 = [10_000, 20_000, 30_000, 40_000];
        let inc = extrapolated_rate(&ts2, &vs2, 0, 50_000, 50_000, Counter::Resets, false).unwrap();
        // raw increase 4 - 5 + 10 = 9 over 30 s; start clamped at zero point
        // (30 × 5/9 = 16.7 s > 10 s, so 10 s) → 9 × 50/30.
        assert!((inc - 15.0).abs() < 1e-9, "{inc}");
    }

    #[test]
    fn windows_are_left_open() {
        let ts = [10, 20, 30, 40];
        let mut got = Vec::new();
        for_each_window(&ts, &[20, 30, 45], 10, |i, lo, hi| got.push((i, lo, hi)));
        // (10, 20] holds 20 only; (20, 30] holds 30; (35, 45] holds 40.
        assert_eq!(got, vec![(0, 1, 2), (1, 2, 3), (2, 3, 4)]);
    }
}
