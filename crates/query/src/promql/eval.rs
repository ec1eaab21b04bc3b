//! The evaluator: walks the expression tree once per node over a grid of
//! steps. Selectors read their series once over the whole span the grid needs
//! (`[first step - range - lookback, last step]`) and slide over it, so a
//! range query costs one read per selector however many steps it has.
//!
//! Limits are enforced here: series per selector, samples held in memory
//! (raw samples read plus points of intermediate results), and the deadline,
//! checked between series and steps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};

use super::value::{is_stale, Grid, RangeArg, RangeSeries, Series, Val};
use super::{aggregate, binary, functions};
use crate::QueryError;
use base::selector::convert_selector;
use store::{Labels, SeriesId, Storage, StorageError};

/// Settings of one evaluation.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub lookback_ms: i64,
    pub max_samples: usize,
    pub max_series: usize,
    pub timeout: Duration,
    /// Step of subqueries that do not give one (Prometheus' default
    /// evaluation interval, 1 m).
    pub default_subquery_step_ms: i64,
    /// Whether `*_over_time` may be answered from rollup buckets.
    pub use_rollups: bool,
}

/// What an evaluation did, for logs and the benchmark.
#[derive(Clone, Debug, Default)]
pub struct EvalStats {
    pub series_selected: usize,
    pub samples_read: usize,
    pub buckets_read: usize,
    pub peak_samples: usize,
    /// Time spent in the store (reads of samples and buckets).
    pub read_time: Duration,
}

pub struct Evaluator<'a> {
    pub storage: &'a Storage,
    pub opts: EvalOptions,
    deadline: Instant,
    /// Samples and points currently held (`query.max_samples` bounds it).
    held: usize,
    /// The query's own start and end, which `@ start()` and `@ end()` mean.
    pub query_start: i64,
    pub query_end: i64,
    pub stats: EvalStats,
}

/// Samples held by all queries running, for the memory report
/// ([`held_samples`]).
static HELD_SAMPLES: AtomicUsize = AtomicUsize::new(0);

/// Samples and points the queries running now hold (each bounded by
/// `query.max_samples`).
pub fn held_samples() -> usize {
    HELD_SAMPLES.load(Ordering::Relaxed)
}

impl Drop for Evaluator<'_> {
    fn drop(&mut self) {
        HELD_SAMPLES.fetch_sub(self.held, Ordering::Relaxed);
    }
}

/// Series ids and labels of a selector, sorted by labels like Prometheus'
/// storage returns them.
pub type Selected = Vec<(SeriesId, Arc<Labels>)>;

impl<'a> Evaluator<'a> {
    pub fn new(
        storage: &'a Storage,
        opts: EvalOptions,
        query_start: i64,
        query_end: i64,
    ) -> Evaluator<'a> {
        let deadline = Instant::now() + opts.timeout;
        Evaluator {
            storage,
            opts,
            deadline,
            held: 0,
            query_start,
            query_end,
            stats: EvalStats::default(),
        }
    }

    /// Fails once the query has run out of time.
    pub fn check_deadline(&self) -> Result<(), QueryError> {
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout(self.opts.timeout));
        }
        Ok(())
    }

    pub fn too_many_samples(&self) -> QueryError {
        QueryError::Execution(format!(
            "query processing would load too many samples into memory in query execution (limit query.max_samples = {})",
            self.opts.max_samples
        ))
    }

    /// Accounts for `n` more samples held; fails past `query.max_samples`.
    pub fn hold(&mut self, n: usize) -> Result<(), QueryError> {
        let before = self.held;
        self.held = self.held.saturating_add(n);
        HELD_SAMPLES.fetch_add(self.held - before, Ordering::Relaxed);
        self.stats.peak_samples = self.stats.peak_samples.max(self.held);
        if self.held > self.opts.max_samples {
            return Err(self.too_many_samples());
        }
        Ok(())
    }

    pub fn release(&mut self, n: usize) {
        let before = self.held;
        self.held = self.held.saturating_sub(n);
        HELD_SAMPLES.fetch_sub(before - self.held, Ordering::Relaxed);
    }

    /// Samples that may still be loaded.
    fn room(&self) -> usize {
        self.opts.max_samples.saturating_sub(self.held)
    }

    pub fn eval(&mut self, expr: &Expr, grid: Grid) -> Result<Val, QueryError> {
        self.check_deadline()?;
        let n = grid.len();
        match expr {
            Expr::NumberLiteral(l) => {
                self.hold(n)?;
                Ok(Val::Scalar(vec![l.val; n]))
            }
            Expr::StringLiteral(s) => Ok(Val::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, grid),
            Expr::Unary(u) => match self.eval(&u.expr, grid)? {
                Val::Scalar(mut v) => {
                    v.iter_mut().for_each(|x| *x = -*x);
                    Ok(Val::Scalar(v))
                }
                Val::Vector(mut series) => {
                    for s in &mut series {
                        s.labels = super::value::drop_name(&s.labels);
                        s.values.iter_mut().for_each(|x| *x = -*x);
                    }
                    check_unique_labels(&series)?;
                    Ok(Val::Vector(series))
                }
                other => Err(QueryError::BadData(format!(
                    "unary minus is not allowed on a {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => self.vector_selector(vs, grid, false).map(Val::Vector),
            Expr::MatrixSelector(ms) => self
                .range_selector(&ms.vs, ms.range.as_millis() as i64, grid)
                .map(Val::Range),
            Expr::Subquery(sq) => self.subquery(sq, grid).map(Val::Range),
            Expr::Call(c) => functions::call(self, c, grid),
            Expr::Aggregate(a) => aggregate::eval(self, a, grid),
            Expr::Binary(b) => binary::eval(self, b, grid),
            Expr::Extension(_) => Err(QueryError::BadData(
                "extension expressions are not supported".into(),
            )),
        }
    }

    /// Evaluates an expression that must be an instant vector.
    pub fn eval_vector(&mut self, expr: &Expr, grid: Grid) -> Result<Vec<Series>, QueryError> {
        match self.eval(expr, grid)? {
            Val::Vector(v) => Ok(v),
            other => Err(QueryError::BadData(format!(
                "expected an instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates an expression that must be a scalar (one value per step).
    pub fn eval_scalar(&mut self, expr: &Expr, grid: Grid) -> Result<Vec<f64>, QueryError> {
        match self.eval(expr, grid)? {
            Val::Scalar(v) => Ok(v),
            other => Err(QueryError::BadData(format!(
                "expected a scalar, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates a range vector argument (range selector or subquery).
    pub fn eval_range(&mut self, expr: &Expr, grid: Grid) -> Result<RangeArg, QueryError> {
        match self.eval(expr, grid)? {
            Val::Range(r) => Ok(r),
            other => Err(QueryError::BadData(format!(
                "expected a range vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// The time each step of `grid` looks at: the step itself, or the `@`
    /// time, minus the offset. Non-decreasing.
    pub fn ref_times(
        &self,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        grid: Grid,
    ) -> Vec<i64> {
        let off = offset_ms(offset);
        match at_ms(at, self.query_start, self.query_end) {
            Some(t) => vec![t.saturating_sub(off); grid.len()],
            None => grid.times().map(|t| t.saturating_sub(off)).collect(),
        }
    }

    /// The series a selector matches with data in `[lo, hi]`, sorted by
    /// labels, within `query.max_series`.
    pub fn select(
        &mut self,
        vs: &VectorSelector,
        lo: i64,
        hi: i64,
    ) -> Result<Selected, QueryError> {
        let sets = convert_selector(vs)?;
        let mut out: Selected = Vec::new();
        for set in &sets {
            out.extend(self.storage.select(set, lo, hi));
        }
        if sets.len() > 1 {
            out.sort_by_key(|(id, _)| *id);
            out.dedup_by_key(|(id, _)| *id);
        }
        if out.len() > self.opts.max_series {
            return Err(QueryError::Execution(format!(
                "the selector {} matches {} series, more than query.max_series ({}); narrow it down with more label matchers",
                vs,
                out.len(),
                self.opts.max_series
            )));
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        self.stats.series_selected += out.len();
        Ok(out)
    }

    /// Reads raw samples of the selected series in `[lo, hi]`, counting them
    /// against the budget (the caller releases them).
    pub fn read(
        &mut self,
        sel: &Selected,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<store::SeriesData>, QueryError> {
        if sel.is_empty() || lo > hi {
            return Ok(Vec::new());
        }
        let ids: Vec<SeriesId> = sel.iter().map(|(id, _)| *id).collect();
        let began = Instant::now();
        let room = self.room();
        let storage = self.storage;
        let data = in_parallel(&ids, room, |chunk, room| storage.read(chunk, lo, hi, room))
            .map_err(|e| self.storage_error(e))?;
        self.stats.read_time += began.elapsed();
        let n: usize = data.iter().map(|d| d.ts.len()).sum();
        self.stats.samples_read += n;
        self.hold(n)?;
        self.check_deadline()?;
        Ok(data)
    }

    pub fn storage_error(&self, e: StorageError) -> QueryError {
        match e {
            StorageError::TooManySamples { .. } => self.too_many_samples(),
            e => QueryError::Storage(e),
        }
    }

    /// An instant vector selector: per step the latest sample within the
    /// lookback window `(ref - lookback, ref]`, unless that sample is a
    /// staleness marker. With `timestamps` the value is the sample's time in
    /// seconds (for `timestamp()`).
    pub fn vector_selector(
        &mut self,
        vs: &VectorSelector,
        grid: Grid,
        timestamps: bool,
    ) -> Result<Vec<Series>, QueryError> {
        let refs = self.ref_times(&vs.at, &vs.offset, grid);
        let (Some(&first), Some(&last)) = (refs.first(), refs.last()) else {
            return Ok(Vec::new());
        };
        let lookback = self.opts.lookback_ms;
        let lo = first.saturating_sub(lookback).saturating_add(1);
        let sel = self.select(vs, lo, last)?;
        let data = self.read(&sel, lo, last)?;
        let raw: usize = data.iter().map(|d| d.ts.len()).sum();
        let mut out = Vec::with_capacity(data.len());
        let mut points = 0;
        for d in data {
            self.check_deadline()?;
            let mut s = Series::with_capacity(d.labels.clone(), refs.len().min(d.ts.len() * 64));
            let mut j = 0;
            for (i, &r) in refs.iter().enumerate() {
                while j < d.ts.len() && d.ts[j] <= r {
                    j += 1;
                }
                if j == 0 {
                    continue;
                }
                let (t, v) = (d.ts[j - 1], d.values[j - 1]);
                if t <= r - lookback || is_stale(v) {
                    continue;
                }
                s.push(i as u32, if timestamps { t as f64 / 1000.0 } else { v });
            }
            if !s.is_empty() {
                points += s.len();
                self.hold(s.len())?;
                out.push(s);
            }
        }
        let _ = points;
        self.release(raw);
        Ok(out)
    }

    /// A range selector `x[range]`: the samples each step's window
    /// `(ref - range, ref]` needs, staleness markers removed.
    pub fn range_selector(
        &mut self,
        vs: &VectorSelector,
        range_ms: i64,
        grid: Grid,
    ) -> Result<RangeArg, QueryError> {
        let refs = self.ref_times(&vs.at, &vs.offset, grid);
        let (Some(&first), Some(&last)) = (refs.first(), refs.last()) else {
            return Ok(RangeArg {
                series: Vec::new(),
                range_ms,
                refs,
            });
        };
        let lo = first.saturating_sub(range_ms).saturating_add(1);
        let sel = self.select(vs, lo, last)?;
        let data = self.read(&sel, lo, last)?;
        let mut series = Vec::with_capacity(data.len());
        for d in data {
            let (ts, values) = if d.values.iter().any(|v| is_stale(*v)) {
                let keep: Vec<usize> = (0..d.ts.len())
                    .filter(|&i| !is_stale(d.values[i]))
                    .collect();
                self.release(d.ts.len() - keep.len());
                (
                    keep.iter().map(|&i| d.ts[i]).collect(),
                    keep.iter().map(|&i| d.values[i]).collect(),
                )
            } else {
                (d.ts, d.values)
            };
            series.push(RangeSeries {
                labels: d.labels,
                ts,
                values,
            });
        }
        Ok(RangeArg {
            series,
            range_ms,
            refs,
        })
    }

    /// A subquery `expr[range:step]`: `expr` evaluated on its own grid of
    /// absolute multiples of `step`, then windowed like a range selector.
    pub fn subquery(&mut self, sq: &SubqueryExpr, grid: Grid) -> Result<RangeArg, QueryError> {
        let refs = self.ref_times(&sq.at, &sq.offset, grid);
        let range_ms = sq.range.as_millis().min(i64::MAX as u128) as i64;
        let step = match sq.step {
            Some(s) => s.as_millis().min(i64::MAX as u128) as i64,
            None => self.opts.default_subquery_step_ms,
        };
        let empty = |refs| RangeArg {
            series: Vec::new(),
            range_ms,
            refs,
        };
        if step <= 0 {
            return Err(QueryError::BadData(
                "a subquery step must be positive".into(),
            ));
        }
        let (Some(&first), Some(&last)) = (refs.first(), refs.last()) else {
            return Ok(empty(refs));
        };
        // The first multiple of step after first - range (ranges are
        // left-open), up to the last reference time.
        let lo = first.saturating_sub(range_ms);
        let start = lo.div_euclid(step).saturating_add(1).saturating_mul(step);
        if start > last {
            return Ok(empty(refs));
        }
        let steps = (last - start) / step + 1;
        if steps as u128 > self.opts.max_samples as u128 {
            return Err(self.too_many_samples());
        }
        let inner = Grid {
            start,
            end: start + (steps - 1) * step,
            step,
        };
        let val = self.eval(&sq.expr, inner)?;
        let series = match val {
            Val::Vector(v) => v
                .into_iter()
                .map(|s| RangeSeries {
                    labels: s.labels,
                    ts: s.steps.iter().map(|&i| inner.time(i as usize)).collect(),
                    values: s.values,
                })
                .collect(),
            Val::Scalar(v) => vec![RangeSeries {
                labels: Arc::new(Labels::empty()),
                ts: inner.times().collect(),
                values: v,
            }],
            other => {
                return Err(QueryError::BadData(format!(
                    "subquery is only allowed on instant vector, got {}",
                    other.type_name()
                )))
            }
        };
        Ok(RangeArg {
            series,
            range_ms,
            refs,
        })
    }
}

/// Reads of many series are split over a few threads: decoding blocks is
/// most of a query's time, and an appliance has idle cores while it waits.
/// Each part gets an equal share of the sample budget, so together they stay
/// within it.
pub fn in_parallel<T: Send>(
    ids: &[SeriesId],
    room: usize,
    read: impl Fn(&[SeriesId], usize) -> Result<Vec<T>, StorageError> + Sync,
) -> Result<Vec<T>, StorageError> {
    const MIN_SERIES_PER_THREAD: usize = 4;
    let threads = threads_for(ids.len() / MIN_SERIES_PER_THREAD);
    let share = room / threads;
    split_over_threads(
        ids,
        threads,
        |chunk| read(chunk, share),
        || StorageError::Corrupt("a read thread panicked".into()),
    )
}

/// Threads for `parts` independent parts of work: up to the cores there
/// are, at most 4, at least 1.
pub fn threads_for(parts: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(parts)
        .max(1)
}

/// Runs `work` over `threads` consecutive chunks of `items` at once and
/// concatenates the results in order, as one call over all of them would
/// return them.
pub fn split_over_threads<I: Sync, T: Send, E: Send>(
    items: &[I],
    threads: usize,
    work: impl Fn(&[I]) -> Result<Vec<T>, E> + Sync,
    panicked: impl Fn() -> E,
) -> Result<Vec<T>, E> {
    if threads <= 1 || items.len() < 2 {
        return work(items);
    }
    let per = items.len().div_ceil(threads);
    let parts: Vec<Result<Vec<T>, E>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|chunk| {
                let work = &work;
                s.spawn(move || work(chunk))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(panicked())))
            .collect()
    });
    let mut out = Vec::new();
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

pub fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis().min(i64::MAX as u128) as i64,
        Some(Offset::Neg(d)) => -(d.as_millis().min(i64::MAX as u128) as i64),
    }
}

pub fn at_ms(at: &Option<AtModifier>, start: i64, end: i64) -> Option<i64> {
    match at {
        None => None,
        Some(AtModifier::Start) => Some(start),
        Some(AtModifier::End) => Some(end),
        Some(AtModifier::At(t)) => Some(system_time_ms(*t)),
    }
}

fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_millis().min(i64::MAX as u128) as i64),
    }
}

/// Prometheus refuses results in which two series have the same labels.
pub fn check_unique_labels(series: &[Series]) -> Result<(), QueryError> {
    if series.len() < 2 {
        return Ok(());
    }
    let mut seen = rustc_hash::FxHashSet::default();
    for s in series.iter().filter(|s| !s.is_empty()) {
        if !seen.insert(&*s.labels) {
            return Err(duplicate_labelset());
        }
    }
    Ok(())
}

pub fn duplicate_labelset() -> QueryError {
    QueryError::Execution("vector cannot contain metrics with the same labelset".into())
}

/// Merges series that ended up with the same labels (e.g. after a function
/// dropped the metric name) when they never have a value at the same step;
/// two values for the same labels at one step are an error, as in Prometheus.
pub fn merge_same_labels(series: Vec<Series>) -> Result<Vec<Series>, QueryError> {
    if series.len() < 2 {
        return Ok(series);
    }
    let mut index: rustc_hash::FxHashMap<Arc<Labels>, usize> = Default::default();
    let mut dup = false;
    for (i, s) in series.iter().enumerate() {
        if index.insert(s.labels.clone(), i).is_some() {
            dup = true;
            break;
        }
    }
    if !dup {
        return Ok(series);
    }
    let mut out: Vec<Series> = Vec::new();
    let mut index: rustc_hash::FxHashMap<Arc<Labels>, usize> = Default::default();
    for s in series {
        match index.get(&s.labels) {
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
            Some(&k) => {
                let t = &mut out[k];
                let mut merged: Vec<(u32, f64)> = t
                    .steps
                    .iter()
                    .copied()
                    .zip(t.values.iter().copied())
                    .chain(s.steps.iter().copied().zip(s.values.iter().copied()))
                    .collect();
                merged.sort_by_key(|p| p.0);
                if merged.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err(duplicate_labelset());
                }
                t.steps = merged.iter().map(|p| p.0).collect();
                t.values = merged.iter().map(|p| p.1).collect();
            }
        }
    }
    Ok(out)
}
