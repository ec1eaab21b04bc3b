//! Aggregation operators (`sum`, `avg`, `min`, `max`, `count`, `group`,
//! `stddev`, `stdvar`, `topk`, `bottomk`, `quantile`, `count_values`) with
//! `by` / `without`. Groups are worked out once per input series (labels do
//! not change between steps), then values are accumulated step by step in
//! input order, so floating-point results match Prometheus' own order.

use std::sync::Arc;

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};
use rustc_hash::FxHashMap;

use super::eval::Evaluator;
use super::numeric::quantile;
use super::value::{format_go_f, Grid, Series, Val};
use crate::QueryError;
use base::labels::{is_valid_label_name, METRIC_NAME};
use store::Labels;

/// How series are grouped.
struct Grouping {
    without: bool,
    labels: Vec<String>,
}

impl Grouping {
    fn from(m: &Option<LabelModifier>) -> Grouping {
        match m {
            None => Grouping {
                without: false,
                labels: Vec::new(),
            },
            Some(LabelModifier::Include(l)) => Grouping {
                without: false,
                labels: l.labels.clone(),
            },
            Some(LabelModifier::Exclude(l)) => Grouping {
                without: true,
                labels: l.labels.clone(),
            },
        }
    }

    /// The labels of the group a series belongs to (also its key).
    fn group_labels(&self, l: &Labels) -> Labels {
        let mut out = l.clone();
        if self.without {
            out.retain(|x| x.name != METRIC_NAME && !self.labels.contains(&x.name));
        } else {
            out.retain(|x| self.labels.contains(&x.name));
        }
        out
    }
}

pub fn eval(ev: &mut Evaluator, a: &AggregateExpr, grid: Grid) -> Result<Val, QueryError> {
    let op = a.op.id();
    let grouping = Grouping::from(&a.modifier);
    let n = grid.len();
    // The parameter first, as Prometheus evaluates it.
    let mut param_scalar: Option<Vec<f64>> = None;
    let mut param_string: Option<String> = None;
    if let Some(p) = &a.param {
        match ev.eval(p, grid)? {
            Val::Scalar(v) => param_scalar = Some(v),
            Val::String(s) => param_string = Some(s),
            other => {
                return Err(QueryError::BadData(format!(
                    "unexpected {} parameter of {}",
                    other.type_name(),
                    a.op
                )))
            }
        }
    }
    let input = ev.eval_vector(&a.expr, grid)?;
    let held_in: usize = input.iter().map(Series::len).sum();
    let out = match op {
        T_TOPK | T_BOTTOMK => {
            let k = param_scalar.as_deref().unwrap_or(&[]);
            top_bottom(ev, &input, &grouping, k, op == T_TOPK, n)?
        }
        T_COUNT_VALUES => {
            let label = param_string.unwrap_or_default();
            count_values(ev, &input, &grouping, &label, n)?
        }
        T_SUM | T_AVG | T_MIN | T_MAX | T_COUNT | T_GROUP | T_STDDEV | T_STDVAR | T_QUANTILE => {
            simple(ev, op, &input, &grouping, param_scalar.as_deref(), n)?
        }
        _ => {
            return Err(QueryError::BadData(format!(
                "aggregation {} is not supported by perch",
                a.op
            )))
        }
    };
    ev.release(held_in);
    if let Some(p) = &param_scalar {
        ev.release(p.len());
    }
    ev.hold(out.iter().map(Series::len).sum())?;
    Ok(Val::Vector(out))
}

/// Assigns each input series to a group; groups are numbered in order of
/// first appearance.
fn assign_groups(input: &[Series], g: &Grouping) -> (Vec<usize>, Vec<Arc<Labels>>) {
    let mut index: FxHashMap<Labels, usize> = FxHashMap::default();
    let mut groups = Vec::new();
    let mut member = Vec::with_capacity(input.len());
    for s in input {
        let key = g.group_labels(&s.labels);
        let gi = match index.get(&key) {
            Some(&i) => i,
            None => {
                index.insert(key.clone(), groups.len());
                groups.push(Arc::new(key));
                groups.len() - 1
            }
        };
        member.push(gi);
    }
    (member, groups)
}

#[derive(Clone, Copy, Default)]
struct Acc {
    seen: bool,
    value: f64,
    mean: f64,
    count: f64,
}

fn simple(
    ev: &mut Evaluator,
    op: u16,
    input: &[Series],
    grouping: &Grouping,
    param: Option<&[f64]>,
    n: usize,
) -> Result<Vec<Series>, QueryError> {
    let (member, groups) = assign_groups(input, grouping);
    let cells = groups.len().saturating_mul(n);
    ev.hold(cells)?;
    let mut acc = vec![Acc::default(); cells];
    let mut values: Vec<Vec<f64>> = if op == T_QUANTILE {
        vec![Vec::new(); cells]
    } else {
        Vec::new()
    };
    for (s, &g) in input.iter().zip(&member) {
        ev.check_deadline()?;
        for (k, &i) in s.steps.iter().enumerate() {
            let v = s.values[k];
            let cell = g * n + i as usize;
            let a = &mut acc[cell];
            if op == T_QUANTILE {
                values[cell].push(v);
                a.seen = true;
                continue;
            }
            if !a.seen {
                *a = Acc {
                    seen: true,
                    value: match op {
                        T_STDDEV | T_STDVAR => 0.0,
                        T_GROUP => 1.0,
                        _ => v,
                    },
                    mean: v,
                    count: 1.0,
                };
                continue;
            }
            match op {
                T_SUM => a.value += v,
                T_AVG => {
                    a.count += 1.0;
                    if a.mean.is_infinite() {
                        // Inf plus anything finite, or the same Inf, stays.
                        if v.is_infinite() && (a.mean > 0.0) == (v > 0.0) {
                            continue;
                        }
                        if !v.is_infinite() && !v.is_nan() {
                            continue;
                        }
                    }
                    a.mean += v / a.count - a.mean / a.count;
                }
                T_MAX if a.value < v || a.value.is_nan() => a.value = v,
                T_MIN if a.value > v || a.value.is_nan() => a.value = v,
                T_COUNT => a.count += 1.0,
                T_STDDEV | T_STDVAR => {
                    a.count += 1.0;
                    let delta = v - a.mean;
                    a.mean += delta / a.count;
                    a.value += delta * (v - a.mean);
                }
                _ => {} // group
            }
        }
    }
    let mut out: Vec<Series> = Vec::with_capacity(groups.len());
    for (g, labels) in groups.into_iter().enumerate() {
        let mut s = Series::new(labels);
        for i in 0..n {
            let cell = g * n + i;
            let a = acc[cell];
            if !a.seen {
                continue;
            }
            let v = match op {
                T_AVG => a.mean,
                T_COUNT => a.count,
                T_STDVAR => a.value / a.count,
                T_STDDEV => (a.value / a.count).sqrt(),
                T_QUANTILE => quantile(
                    param.map_or(f64::NAN, |p| p[i]),
                    std::mem::take(&mut values[cell]),
                ),
                _ => a.value,
            };
            s.push(i as u32, v);
        }
        if !s.is_empty() {
            out.push(s);
        }
    }
    ev.release(cells);
    Ok(out)
}

/// `count_values("label", v)`: the value becomes a label, so groups differ
/// per step.
fn count_values(
    ev: &mut Evaluator,
    input: &[Series],
    grouping: &Grouping,
    label: &str,
    n: usize,
) -> Result<Vec<Series>, QueryError> {
    if !is_valid_label_name(label) {
        return Err(QueryError::Execution(format!(
            "invalid label name {label:?}"
        )));
    }
    let mut g = Grouping {
        without: grouping.without,
        labels: grouping.labels.clone(),
    };
    if !g.without {
        g.labels.push(label.to_string());
    }
    let mut index: FxHashMap<Labels, usize> = FxHashMap::default();
    let mut out: Vec<Series> = Vec::new();
    let mut counts: Vec<FxHashMap<u32, f64>> = Vec::new();
    // Series-major input, step-minor output: collect counts per output
    // series then sort their steps.
    for s in input {
        ev.check_deadline()?;
        for (k, &i) in s.steps.iter().enumerate() {
            let mut l = (*s.labels).clone();
            l.set(label, &format_go_f(s.values[k]));
            let key = g.group_labels(&l);
            let o = match index.get(&key) {
                Some(&o) => o,
                None => {
                    index.insert(key.clone(), out.len());
                    out.push(Series::new(Arc::new(key)));
                    counts.push(FxHashMap::default());
                    out.len() - 1
                }
            };
            *counts[o].entry(i).or_insert(0.0) += 1.0;
        }
    }
    let _ = n;
    for (s, c) in out.iter_mut().zip(counts) {
        let mut c: Vec<(u32, f64)> = c.into_iter().collect();
        c.sort_by_key(|x| x.0);
        for (i, v) in c {
            s.push(i, v);
        }
    }
    Ok(out)
}

/// Go's `container/heap` operations over a slice with a `less` function, so
/// that ties are broken exactly as Prometheus' heaps break them.
mod goheap {
    pub fn up<T>(h: &mut [T], mut j: usize, less: &impl Fn(&T, &T) -> bool) {
        while j > 0 {
            let i = (j - 1) / 2;
            if !less(&h[j], &h[i]) {
                break;
            }
            h.swap(i, j);
            j = i;
        }
    }

    pub fn down<T>(h: &mut [T], i0: usize, n: usize, less: &impl Fn(&T, &T) -> bool) {
        let mut i = i0;
        loop {
            let j1 = 2 * i + 1;
            if j1 >= n {
                break;
            }
            let mut j = j1;
            let j2 = j1 + 1;
            if j2 < n && less(&h[j2], &h[j1]) {
                j = j2;
            }
            if !less(&h[j], &h[i]) {
                break;
            }
            h.swap(i, j);
            i = j;
        }
    }

    pub fn push<T>(h: &mut Vec<T>, x: T, less: &impl Fn(&T, &T) -> bool) {
        h.push(x);
        let n = h.len();
        up(h, n - 1, less);
    }

    pub fn pop<T>(h: &mut Vec<T>, less: &impl Fn(&T, &T) -> bool) -> Option<T> {
        let n = h.len().checked_sub(1)?;
        h.swap(0, n);
        down(h, 0, n, less);
        h.pop()
    }
}

fn top_bottom(
    ev: &mut Evaluator,
    input: &[Series],
    grouping: &Grouping,
    k_param: &[f64],
    top: bool,
    n: usize,
) -> Result<Vec<Series>, QueryError> {
    let (member, groups) = assign_groups(input, grouping);
    // Per step: k, or None when k < 1 (nothing is returned then).
    let mut ks = Vec::with_capacity(n);
    for i in 0..n {
        let f = k_param.get(i).copied().unwrap_or(f64::NAN);
        // Prometheus: values beyond int64 are an error; NaN converts to the
        // minimum int64 in Go, so k < 1.
        if f.is_nan() {
            ks.push(None);
            continue;
        }
        if !(-9.223_372_036_854_775e18..=9.223_372_036_854_774e18).contains(&f) {
            return Err(QueryError::Execution(format!(
                "Scalar value {f} overflows int64"
            )));
        }
        let k = f as i64;
        ks.push(if k < 1 { None } else { Some(k as usize) });
    }
    // The heap orders the "worst kept" element first.
    let less = move |a: &(f64, usize), b: &(f64, usize)| -> bool {
        if a.0.is_nan() {
            return true;
        }
        if top {
            a.0 < b.0
        } else {
            a.0 > b.0
        }
    };
    let cells = groups.len().saturating_mul(n);
    ev.hold(cells)?;
    let mut heaps: Vec<Vec<(f64, usize)>> = vec![Vec::new(); cells];
    for (si, (s, &g)) in input.iter().zip(&member).enumerate() {
        ev.check_deadline()?;
        for (j, &i) in s.steps.iter().enumerate() {
            let Some(k) = ks[i as usize] else { continue };
            let v = s.values[j];
            let h = &mut heaps[g * n + i as usize];
            if h.is_empty() {
                h.push((v, si));
                continue;
            }
            let root = h[0].0;
            let better = if top { root < v } else { root > v };
            if h.len() < k || better || root.is_nan() {
                if h.len() == k {
                    if k == 1 {
                        h[0] = (v, si);
                        continue;
                    }
                    goheap::pop(h, &less);
                }
                goheap::push(h, (v, si), &less);
            }
        }
    }
    // Output: the chosen samples under their own labels; for an instant
    // query in group order, best first.
    let mut out_index: FxHashMap<usize, usize> = FxHashMap::default();
    let mut out: Vec<Series> = Vec::new();
    for i in 0..n {
        for g in 0..groups.len() {
            let h = &mut heaps[g * n + i];
            if h.is_empty() {
                continue;
            }
            let mut chosen = std::mem::take(h);
            chosen.sort_by(|a, b| {
                let o = if top {
                    b.0.total_cmp(&a.0)
                } else {
                    a.0.total_cmp(&b.0)
                };
                // NaN last either way.
                match (a.0.is_nan(), b.0.is_nan()) {
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ => o,
                }
            });
            for (v, si) in chosen {
                let o = *out_index.entry(si).or_insert_with(|| {
                    out.push(Series::new(input[si].labels.clone()));
                    out.len() - 1
                });
                out[o].push(i as u32, v);
            }
        }
    }
    ev.release(cells);
    Ok(out)
}
