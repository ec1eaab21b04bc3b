//! Binary operators: arithmetic, comparisons (filtering or `bool`), the set
//! operators `and`/`or`/`unless`, and vector matching with `on`/`ignoring`
//! and `group_left`/`group_right`, with Prometheus' rules for result labels
//! and its errors for ambiguous matches.

use std::sync::Arc;

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB,
};
use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};
use rustc_hash::FxHashMap;

use super::eval::{duplicate_labelset, merge_same_labels, Evaluator};
use super::value::{drop_name, Grid, Series, Val};
use crate::QueryError;
use base::labels::METRIC_NAME;
use store::Labels;

fn is_comparison(op: u16) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

fn is_set(op: u16) -> bool {
    matches!(op, T_LAND | T_LOR | T_LUNLESS)
}

/// Arithmetic drops the metric name; comparisons keep it, and so does
/// `atan2` in the Prometheus releases perch is compared with (2.x).
fn drops_name(op: u16) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW)
}

/// One operation on two values: the result and whether a comparison holds
/// (arithmetic always "holds").
fn apply(op: u16, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_MOD => (l % r, true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

pub fn eval(ev: &mut Evaluator, b: &BinaryExpr, grid: Grid) -> Result<Val, QueryError> {
    let op = b.op.id();
    let default = BinModifier::default();
    let m = b.modifier.as_ref().unwrap_or(&default);
    if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
        return Err(QueryError::BadData(
            "fill modifiers of binary operators are not supported by perch".into(),
        ));
    }
    let lhs = ev.eval(&b.lhs, grid)?;
    let rhs = ev.eval(&b.rhs, grid)?;
    let held = lhs.points() + rhs.points();
    let out = match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => {
            let v: Vec<f64> = l
                .iter()
                .zip(&r)
                .map(|(&a, &b)| {
                    let (v, keep) = apply(op, a, b);
                    if is_comparison(op) {
                        if keep {
                            1.0
                        } else {
                            0.0
                        }
                    } else {
                        v
                    }
                })
                .collect();
            Val::Scalar(v)
        }
        (Val::Vector(l), Val::Scalar(r)) => {
            Val::Vector(vector_scalar(op, m.return_bool, l, &r, false)?)
        }
        (Val::Scalar(l), Val::Vector(r)) => {
            Val::Vector(vector_scalar(op, m.return_bool, r, &l, true)?)
        }
        (Val::Vector(l), Val::Vector(r)) => {
            if is_set(op) {
                Val::Vector(set_op(ev, op, m, l, r, grid.len())?)
            } else {
                Val::Vector(vector_vector(ev, op, m, l, r, grid.len())?)
            }
        }
        (l, r) => {
            return Err(QueryError::BadData(format!(
                "binary operator {} is not defined between {} and {}",
                b.op,
                l.type_name(),
                r.type_name()
            )))
        }
    };
    ev.release(held);
    ev.hold(out.points())?;
    Ok(out)
}

fn vector_scalar(
    op: u16,
    return_bool: bool,
    v: Vec<Series>,
    scalar: &[f64],
    scalar_left: bool,
) -> Result<Vec<Series>, QueryError> {
    let mut out = Vec::with_capacity(v.len());
    let drop = drops_name(op) || return_bool;
    for s in v {
        let labels = if drop {
            drop_name(&s.labels)
        } else {
            s.labels.clone()
        };
        let mut o = Series::with_capacity(labels, s.len());
        for (k, &i) in s.steps.iter().enumerate() {
            let x = s.values[k];
            let c = scalar[i as usize];
            let (mut value, mut keep) = if scalar_left {
                apply(op, c, x)
            } else {
                apply(op, x, c)
            };
            // A comparison keeps the vector's value even with the scalar on
            // the left.
            if is_comparison(op) && scalar_left {
                value = x;
            }
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            if keep {
                o.push(i, value);
            }
        }
        if !o.is_empty() {
            out.push(o);
        }
    }
    merge_same_labels(out)
}

/// How two series are matched.
struct Matching {
    on: bool,
    labels: Vec<String>,
}

impl Matching {
    fn from(m: &BinModifier) -> Matching {
        match &m.matching {
            Some(LabelModifier::Include(l)) => Matching {
                on: true,
                labels: l.labels.clone(),
            },
            Some(LabelModifier::Exclude(l)) => Matching {
                on: false,
                labels: l.labels.clone(),
            },
            None => Matching {
                on: false,
                labels: Vec::new(),
            },
        }
    }

    /// The matching signature: values of the `on` labels, or every label
    /// but the `ignoring` ones and the metric name.
    fn signature(&self, l: &Labels) -> Vec<u8> {
        let mut key = Vec::with_capacity(64);
        if self.on {
            for n in &self.labels {
                key.extend_from_slice(l.get(n).unwrap_or("").as_bytes());
                key.push(0xff);
            }
        } else {
            for x in l.iter() {
                if x.name == METRIC_NAME || self.labels.contains(&x.name) {
                    continue;
                }
                key.extend_from_slice(x.name.as_bytes());
                key.push(0xfe);
                key.extend_from_slice(x.value.as_bytes());
                key.push(0xff);
            }
        }
        key
    }

    /// The matched labels, for error messages.
    fn matched_labels(&self, l: &Labels) -> Labels {
        let mut out = l.clone();
        if self.on {
            out.retain(|x| self.labels.contains(&x.name));
        } else {
            out.retain(|x| x.name != METRIC_NAME && !self.labels.contains(&x.name));
        }
        out
    }
}

/// Interns signatures to small ids shared by both sides.
fn signatures(m: &Matching, l: &[Series], r: &[Series]) -> (Vec<usize>, Vec<usize>, usize) {
    let mut ids: FxHashMap<Vec<u8>, usize> = FxHashMap::default();
    let mut id = |s: &Series| {
        let n = ids.len();
        *ids.entry(m.signature(&s.labels)).or_insert(n)
    };
    let li: Vec<usize> = l.iter().map(&mut id).collect();
    let ri: Vec<usize> = r.iter().map(&mut id).collect();
    (li, ri, ids.len())
}

/// The points of a vector regrouped by step: `(series, value)` per step.
struct ByStep {
    offsets: Vec<usize>,
    items: Vec<(u32, f64)>,
}

impl ByStep {
    fn new(v: &[Series], n: usize) -> ByStep {
        let mut offsets = vec![0usize; n + 1];
        for s in v {
            for &i in &s.steps {
                offsets[i as usize + 1] += 1;
            }
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut items = vec![(0u32, 0.0); offsets[n]];
        for (si, s) in v.iter().enumerate() {
            for (k, &i) in s.steps.iter().enumerate() {
                items[fill[i as usize]] = (si as u32, s.values[k]);
                fill[i as usize] += 1;
            }
        }
        ByStep { offsets, items }
    }

    fn at(&self, i: usize) -> &[(u32, f64)] {
        &self.items[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// Output series keyed by labels, filled step by step in order.
struct Output {
    series: Vec<Series>,
    index: FxHashMap<Arc<Labels>, usize>,
}

impl Output {
    fn new() -> Output {
        Output {
            series: Vec::new(),
            index: FxHashMap::default(),
        }
    }

    fn slot(&mut self, labels: Arc<Labels>) -> usize {
        if let Some(&o) = self.index.get(&labels) {
            return o;
        }
        self.index.insert(labels.clone(), self.series.len());
        self.series.push(Series::new(labels));
        self.series.len() - 1
    }

    fn push(&mut self, o: usize, step: usize, v: f64) -> Result<(), QueryError> {
        let s = &mut self.series[o];
        if s.steps.last() == Some(&(step as u32)) {
            return Err(duplicate_labelset());
        }
        s.push(step as u32, v);
        Ok(())
    }
}

fn set_op(
    ev: &mut Evaluator,
    op: u16,
    m: &BinModifier,
    l: Vec<Series>,
    r: Vec<Series>,
    n: usize,
) -> Result<Vec<Series>, QueryError> {
    let matching = Matching::from(m);
    let (lsig, rsig, nsig) = signatures(&matching, &l, &r);
    let lb = ByStep::new(&l, n);
    let rb = ByStep::new(&r, n);
    let mut out = Output::new();
    let lslot: Vec<usize> = l.iter().map(|s| out.slot(s.labels.clone())).collect();
    let rslot: Vec<usize> = if op == T_LOR {
        r.iter().map(|s| out.slot(s.labels.clone())).collect()
    } else {
        Vec::new()
    };
    let mut mark = vec![false; nsig];
    for i in 0..n {
        if i % 256 == 0 {
            ev.check_deadline()?;
        }
        match op {
            T_LAND | T_LUNLESS => {
                for &(s, _) in rb.at(i) {
                    mark[rsig[s as usize]] = true;
                }
                for &(s, v) in lb.at(i) {
                    let hit = mark[lsig[s as usize]];
                    if hit == (op == T_LAND) {
                        out.push(lslot[s as usize], i, v)?;
                    }
                }
                for &(s, _) in rb.at(i) {
                    mark[rsig[s as usize]] = false;
                }
            }
            _ => {
                for &(s, v) in lb.at(i) {
                    mark[lsig[s as usize]] = true;
                    out.push(lslot[s as usize], i, v)?;
                }
                for &(s, v) in rb.at(i) {
                    if !mark[rsig[s as usize]] {
                        out.push(rslot[s as usize], i, v)?;
                    }
                }
                for &(s, _) in lb.at(i) {
                    mark[lsig[s as usize]] = false;
                }
            }
        }
    }
    Ok(out.series.into_iter().filter(|s| !s.is_empty()).collect())
}

fn vector_vector(
    ev: &mut Evaluator,
    op: u16,
    m: &BinModifier,
    l: Vec<Series>,
    r: Vec<Series>,
    n: usize,
) -> Result<Vec<Series>, QueryError> {
    let matching = Matching::from(m);
    let (card, include): (u8, Vec<String>) = match &m.card {
        VectorMatchCardinality::ManyToOne(ls) => (1, ls.labels.clone()),
        VectorMatchCardinality::OneToMany(ls) => (2, ls.labels.clone()),
        _ => (0, Vec::new()),
    };
    // group_right: the right side is the "many" side; swap so the loop
    // below always walks the many side.
    let swapped = card == 2;
    let (many, one) = if swapped { (r, l) } else { (l, r) };
    let (msig, osig, nsig) = signatures(&matching, &many, &one);
    let mb = ByStep::new(&many, n);
    let ob = ByStep::new(&one, n);
    let mut out = Output::new();
    // Result labels per (many series, one series) pair.
    let mut pair_slot: FxHashMap<(u32, u32), usize> = FxHashMap::default();
    let mut one_at: Vec<Option<(u32, f64)>> = vec![None; nsig];
    // One-to-one: whether the signature matched already at this step;
    // many-to-one: which result label sets it produced.
    let mut matched: Vec<bool> = vec![false; nsig];
    let mut produced: FxHashMap<(usize, usize), ()> = FxHashMap::default();
    for i in 0..n {
        if i % 256 == 0 {
            ev.check_deadline()?;
        }
        for &(s, v) in ob.at(i) {
            let sig = osig[s as usize];
            if let Some((dup, _)) = one_at[sig] {
                let side = if swapped { "left" } else { "right" };
                return Err(QueryError::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    matching.matched_labels(&one[s as usize].labels),
                    one[s as usize].labels,
                    one[dup as usize].labels,
                )));
            }
            one_at[sig] = Some((s, v));
        }
        for &(s, v) in mb.at(i) {
            let sig = msig[s as usize];
            let Some((os, ov)) = one_at[sig] else {
                continue;
            };
            let (vl, vr) = if swapped { (ov, v) } else { (v, ov) };
            let (mut value, keep) = apply(op, vl, vr);
            if m.return_bool {
                value = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            let slot = match pair_slot.get(&(s, os)) {
                Some(&o) => o,
                None => {
                    let labels = result_labels(
                        &many[s as usize].labels,
                        &one[os as usize].labels,
                        op,
                        &matching,
                        card,
                        &include,
                        m.return_bool,
                    );
                    let o = out.slot(Arc::new(labels));
                    pair_slot.insert((s, os), o);
                    o
                }
            };
            if card == 0 {
                if matched[sig] {
                    return Err(QueryError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                    ));
                }
                matched[sig] = true;
            } else if produced.insert((sig, slot), ()).is_some() {
                return Err(QueryError::Execution(format!(
                    "multiple matches for labels {}: grouping labels must ensure unique matches",
                    matching.matched_labels(&many[s as usize].labels)
                )));
            }
            out.push(slot, i, value)?;
        }
        for &(s, _) in ob.at(i) {
            one_at[osig[s as usize]] = None;
        }
        if card == 0 {
            for &(s, _) in mb.at(i) {
                matched[msig[s as usize]] = false;
            }
        } else {
            produced.clear();
        }
    }
    Ok(out.series.into_iter().filter(|s| !s.is_empty()).collect())
}

/// Prometheus' `resultMetric`: the many side's labels, without the metric
/// name for arithmetic, reduced to the matching labels for one-to-one `on`
/// (or without the `ignoring` ones), plus `group_x` labels from the one side.
fn result_labels(
    many: &Labels,
    one: &Labels,
    op: u16,
    m: &Matching,
    card: u8,
    include: &[String],
    return_bool: bool,
) -> Labels {
    let mut l = many.clone();
    if drops_name(op) {
        l.set(METRIC_NAME, "");
    }
    if card == 0 {
        if m.on {
            l.retain(|x| m.labels.contains(&x.name));
        } else {
            l.retain(|x| !m.labels.contains(&x.name));
        }
    }
    for name in include {
        l.set(name, one.get(name).unwrap_or(""));
    }
    if return_bool {
        l.set(METRIC_NAME, "");
    }
    l
}
