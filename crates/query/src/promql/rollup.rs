//! The rollup fast path: `min/max/sum/count/avg/last/present_over_time(x[r])`
//! answered from 1 min or 1 h buckets when every window is a whole number of
//! buckets. A bucket `b` holds the samples in `(b, b + res]`, exactly the
//! left-open shape of a PromQL range, so a window `(t - r, t]` with `t` and
//! `r` multiples of `res` is the union of the buckets `t - r … t - res`.
//!
//! Used by range queries whose step is a multiple of the resolution (and at
//! least it), as the issue asks; it is what keeps long dashboards cheap and
//! what answers at all once raw samples have expired and only rollups remain.

use super::eval::{check_unique_labels, Evaluator, Selected};
use super::numeric::kahan_sum;
use super::range_functions::{for_each_window, RangeFn};
use super::value::{drop_name, is_stale, Grid, Series};
use crate::QueryError;
use promql_parser::parser::VectorSelector;
use store::{Buckets, SeriesId, SeriesRollup, Tier};

/// Whether `func`'s value over a window follows exactly from per-bucket
/// min, max, sum, count and last.
fn has_rollup(func: RangeFn) -> bool {
    matches!(
        func,
        RangeFn::Min
            | RangeFn::Max
            | RangeFn::Sum
            | RangeFn::Count
            | RangeFn::Avg
            | RangeFn::Last
            | RangeFn::Present
    )
}

/// Buckets per storage call: bounds the raw samples read to build them
/// (`read_rollup` reads up to 64 samples per bucket).
const SAMPLES_PER_BUCKET: usize = 64;

/// The tier answering `range_ms` at the given step and window ends, if any.
pub fn eligible_tier(grid: Grid, refs: &[i64], range_ms: i64) -> Option<Tier> {
    if grid.len() < 2 {
        return None;
    }
    let first = *refs.first()?;
    [Tier::Hour, Tier::Minute].into_iter().find(|t| {
        let res = t.resolution_ms();
        grid.step >= res
            && grid.step % res == 0
            && range_ms >= res
            && range_ms % res == 0
            && first.rem_euclid(res) == 0
    })
}

/// Answers `func(x[range])` from rollup buckets; `None` when they would not
/// give exactly the answer (or cost more than the raw samples).
pub fn try_over_time(
    ev: &mut Evaluator,
    func: RangeFn,
    vs: &VectorSelector,
    range_ms: i64,
    grid: Grid,
) -> Result<Option<Vec<Series>>, QueryError> {
    if !ev.opts.use_rollups || !has_rollup(func) {
        return Ok(None);
    }
    let refs = ev.ref_times(&vs.at, &vs.offset, grid);
    let Some(tier) = eligible_tier(grid, &refs, range_ms) else {
        return Ok(None);
    };
    let res = tier.resolution_ms();
    let (Some(&first), Some(&last)) = (refs.first(), refs.last()) else {
        return Ok(None);
    };
    // Bucket keys needed: first - range … last - res.
    let (lo, hi) = (first - range_ms, last - res);
    // Where raw samples are all still there, 1 min buckets would be
    // computed from them on the fly, which costs more than windowing the
    // samples directly (and the raw path keeps Prometheus' NaN semantics);
    // 1 h buckets are stored at compaction, so they are always cheaper.
    let raw_gone = lo <= ev.storage.write_floor();
    if !raw_gone && tier == Tier::Minute {
        return Ok(None);
    }
    let sel = ev.select(vs, lo.saturating_add(1), last)?;
    if sel.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let ids: Vec<SeriesId> = sel.iter().map(|(id, _)| *id).collect();
    // Read in slices of time so the raw samples behind one call stay small.
    let slice = match tier {
        Tier::Hour => 7 * 86_400_000,
        _ => 2 * 3_600_000,
    };
    let mut per_series: Vec<Vec<Buckets>> = vec![Vec::new(); ids.len()];
    let pos: rustc_hash::FxHashMap<SeriesId, usize> =
        ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut held = 0usize;
    let mut from = lo;
    while from <= hi {
        ev.check_deadline()?;
        let to = from.saturating_add(slice - res).min(hi);
        let room = ev.opts.max_samples.saturating_sub(held) / SAMPLES_PER_BUCKET;
        for s in read_buckets(ev, &ids, tier, from, to, room)? {
            let n = s.buckets.len();
            held += n;
            ev.hold(n)?;
            if let Some(&i) = pos.get(&s.id) {
                per_series[i].push(s.buckets);
            }
        }
        from = to.saturating_add(res);
    }
    let keep_name = func == RangeFn::Last;
    let mut out = Vec::new();
    let mut points = 0;
    for ((_, labels), parts) in sel.iter().zip(per_series) {
        if parts.is_empty() {
            continue;
        }
        let b = if parts.len() == 1 {
            parts.into_iter().next().unwrap_or_default()
        } else {
            Buckets::merge(parts)
        };
        // Window (r - range, r] ↔ bucket keys in (r - res - range, r - res].
        let shifted: Vec<i64> = refs.iter().map(|r| r - res).collect();
        let l = if keep_name {
            labels.clone()
        } else {
            drop_name(labels)
        };
        let mut o = Series::with_capacity(l, refs.len());
        for_each_window(&b.ts, &shifted, range_ms, |i, a, z| {
            if a >= z {
                return;
            }
            let v = match func {
                RangeFn::Min => b.min[a..z].iter().copied().fold(f64::INFINITY, f64::min),
                RangeFn::Max => b.max[a..z]
                    .iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, f64::max),
                RangeFn::Sum => kahan_sum(&b.sum[a..z]),
                RangeFn::Count => b.count[a..z].iter().sum(),
                RangeFn::Avg => kahan_sum(&b.sum[a..z]) / b.count[a..z].iter().sum::<f64>(),
                RangeFn::Last => b.last[z - 1],
                _ => 1.0, // present_over_time, the only other one has_rollup admits
            };
            o.push(i as u32, v);
        });
        if !o.is_empty() {
            points += o.len();
            out.push(o);
        }
    }
    ev.release(held);
    ev.hold(points)?;
    check_unique_labels(&out)?;
    Ok(Some(out))
}

/// Buckets of `tier` keyed `[from, to]` for `ids`, read over the cores
/// within `room` buckets, counted in the evaluation's statistics.
fn read_buckets(
    ev: &mut Evaluator,
    ids: &[SeriesId],
    tier: Tier,
    from: i64,
    to: i64,
    room: usize,
) -> Result<Vec<SeriesRollup>, QueryError> {
    let began = std::time::Instant::now();
    let storage = ev.storage;
    let got = super::eval::in_parallel(ids, room.max(1), |chunk, room| {
        storage.read_rollup(chunk, tier, from, to, room.max(1))
    })
    .map_err(|e| ev.storage_error(e))?;
    ev.stats.read_time += began.elapsed();
    ev.stats.buckets_read += got.iter().map(|s| s.buckets.len()).sum::<usize>();
    Ok(got)
}

/// Whole hours a window must hold before [`try_instant_extreme`] reads
/// buckets for them: below that the raw samples cost about the same.
const MIN_WHOLE_HOURS: i64 = 3;

/// An instant `max_over_time(x[r])` or `min_over_time(x[r])` over hours (a
/// stat panel's "highest in the last day"): the whole hours inside the
/// window from 1 h buckets, the partial hours at its two edges from raw
/// samples, so a day reads about a twentieth of its samples. Exact: the
/// extreme of the parts is the extreme of the whole, and buckets come from
/// raw samples wherever stored rollups are not up to date. Buckets leave
/// NaN out, so a series with nothing in the window but NaN in the whole
/// hours has its raw samples there scanned too: NaN, as the raw path says.
pub fn try_instant_extreme(
    ev: &mut Evaluator,
    func: RangeFn,
    vs: &VectorSelector,
    range_ms: i64,
    grid: Grid,
) -> Result<Option<Vec<Series>>, QueryError> {
    if !ev.opts.use_rollups || grid.len() != 1 || !matches!(func, RangeFn::Min | RangeFn::Max) {
        return Ok(None);
    }
    let refs = ev.ref_times(&vs.at, &vs.offset, grid);
    let Some(&t) = refs.first() else {
        return Ok(None);
    };
    let res = Tier::Hour.resolution_ms();
    // The window is (window_start, t]; buckets with keys inner_lo …
    // inner_hi - res cover (inner_lo, inner_hi].
    let window_start = t.saturating_sub(range_ms);
    let inner_lo = window_start
        .div_euclid(res)
        .saturating_add(i64::from(window_start.rem_euclid(res) != 0))
        .saturating_mul(res);
    let inner_hi = t.div_euclid(res).saturating_mul(res);
    if inner_hi.saturating_sub(inner_lo) < MIN_WHOLE_HOURS * res {
        return Ok(None);
    }
    let sel = ev.select(vs, window_start.saturating_add(1), t)?;
    if sel.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let max = func == RangeFn::Max;
    // Prometheus' scan: the first sample, replaced by a greater (smaller)
    // one or when it is NaN; staleness markers are not samples.
    let better = |x: f64, m: f64| if max { x > m } else { x < m };
    let mut extreme: Vec<Option<f64>> = vec![None; sel.len()];
    let pos: rustc_hash::FxHashMap<SeriesId, usize> = sel
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let mut fold = |i: usize, x: f64| {
        let e = &mut extreme[i];
        match e {
            Some(m) if !(better(x, *m) || m.is_nan()) => {}
            _ => *e = Some(x),
        }
    };
    // In time order, as the raw scan goes: the partial hour at the start,
    // the whole hours, the partial hour at the end.
    let edge = |ev: &mut Evaluator,
                fold: &mut dyn FnMut(usize, f64),
                lo: i64,
                hi: i64|
     -> Result<(), QueryError> {
        let data = ev.read(&sel, lo, hi)?;
        for d in &data {
            if let Some(&i) = pos.get(&d.id) {
                for &v in d.values.iter().filter(|v| !is_stale(**v)) {
                    fold(i, v);
                }
            }
        }
        ev.release(data.iter().map(|d| d.ts.len()).sum());
        Ok(())
    };
    edge(ev, &mut fold, window_start.saturating_add(1), inner_lo)?;
    let ids: Vec<SeriesId> = sel.iter().map(|(id, _)| *id).collect();
    let room = ev.opts.max_samples / SAMPLES_PER_BUCKET;
    for s in read_buckets(ev, &ids, Tier::Hour, inner_lo, inner_hi - res, room)? {
        if let Some(&i) = pos.get(&s.id) {
            let column = if max { &s.buckets.max } else { &s.buckets.min };
            for &v in column {
                fold(i, v);
            }
        }
    }
    edge(ev, &mut fold, inner_hi.saturating_add(1), t)?;
    let only_nan: Selected = sel
        .iter()
        .zip(&extreme)
        .filter(|(_, e)| e.is_none())
        .map(|(s, _)| s.clone())
        .collect();
    if !only_nan.is_empty() {
        let data = ev.read(&only_nan, inner_lo.saturating_add(1), inner_hi)?;
        for d in &data {
            if d.values.iter().any(|v| !is_stale(*v)) {
                if let Some(&i) = pos.get(&d.id) {
                    extreme[i] = Some(f64::NAN);
                }
            }
        }
        ev.release(data.iter().map(|d| d.ts.len()).sum());
    }
    let mut out = Vec::new();
    for ((_, labels), e) in sel.iter().zip(extreme) {
        if let Some(v) = e {
            let mut o = Series::with_capacity(drop_name(labels), 1);
            o.push(0, v);
            out.push(o);
        }
    }
    ev.hold(out.len())?;
    check_unique_labels(&out)?;
    Ok(Some(out))
}
